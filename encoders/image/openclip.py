"""`open_clip` image towers (any `open_clip.list_models()` name: ViT-B-32, ViT-L-14-336, RN50, ...) as token encoders.

Tokens are the patch tokens of one transformer block (default the penultimate, as LLaVA does), optionally with
the CLS token first. Preprocessing (size, mean/std, interpolation) comes from the architecture and, with a
`pretrained` tag, from that tag's config. Weights: random init, `weights=PATH` (a full CLIP state_dict or the
visual tower's alone), or `pretrained=TAG` when that tag's file is already in the local cache (no downloads).

Notation: B batch, N tokens (grid cells, +1 CLS), D tower width.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from mmrwkv.encoders.base import ImageEncoder, ImagePreprocess
from mmrwkv.encoders.registry import register
from mmrwkv.encoders.weights import load_strict, read_state_dict, skip_weight_files, strip_prefix
from mmrwkv.errors import ConfigError


@register("open_clip")
class OpenCLIPEncoder(ImageEncoder):
    """The visual tower of an open_clip model, cut after block `layer`."""

    def __init__(
        self,
        *,
        arch: str = "ViT-B-32",
        pretrained: str | None = None,
        weights: str | os.PathLike | None = None,
        layer: int = -2,
        cls_token: bool = False,
        image_size: int | None = None,
        model_overrides: dict | None = None,
        max_pixels: int = 64_000_000,
    ):
        import open_clip

        if arch not in open_clip.list_models():
            raise ConfigError(f"open_clip: unknown arch {arch!r}; known: {', '.join(open_clip.list_models())}")
        tag_cfg = _tag_config(arch, pretrained) if pretrained else {}
        path = None
        if not skip_weight_files():  # a saved checkpoint holds the weights (the tag still sets the preprocessing)
            path = weights
            if path is None and tag_cfg:
                path = _cached_tag_file(arch, pretrained, tag_cfg)
        visual = _create_visual(arch, image_size, bool(tag_cfg.get("quick_gelu")), model_overrides or {})
        if path is not None:
            _load_visual(visual, read_state_dict(path), path)
        super().__init__(_preprocess_from(visual.preprocess_cfg, tag_cfg), max_pixels=max_pixels)
        self.is_vit = hasattr(visual, "transformer") and hasattr(visual, "grid_size")
        if cls_token and not self.is_vit:
            raise ConfigError(f"open_clip: cls_token=True needs a ViT tower; {arch} has {type(visual).__name__}")
        self.layer = _resolve_layer(visual, layer, arch)
        self.cls_token = cls_token
        _prune(visual, self.layer)
        self.visual = visual
        self.out_dim, self.tokens_per_image = self._token_shape()

    def _token_shape(self) -> tuple[int, int]:
        if self.is_vit:
            grid = self.visual.grid_size
            return self.visual.transformer.width, grid[0] * grid[1] + int(self.cls_token)
        with torch.no_grad():
            out = self.forward(torch.zeros(1, 3, *self.image_preprocess.size))
        return out.shape[-1], out.shape[1]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D) tokens of block `layer`; with `cls_token` the CLS token comes first."""
        fmt = "NLC" if self.is_vit else "NCHW"
        out = self.visual.forward_intermediates(
            pixels,
            indices=[self.layer],
            stop_early=True,
            intermediates_only=True,
            output_fmt=fmt,
            output_extra_tokens=self.cls_token,
        )
        tokens = out["image_intermediates"][0]
        if not self.is_vit:
            return tokens.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)
        if self.cls_token:
            tokens = torch.cat([out["image_intermediates_prefix"][0], tokens], dim=1)
        return tokens


def _tag_config(arch: str, tag: str) -> dict:
    import open_clip

    if os.path.isfile(tag):
        raise ConfigError(f"open_clip: pretrained={tag!r} is a file; pass it as weights= instead")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ConfigError(f"open_clip: unknown pretrained tag {tag!r} for {arch}; known: {', '.join(tags) or 'none'}")
    return cfg


def _cached_tag_file(arch: str, tag: str, cfg: dict) -> str:
    """A locally cached weights file for the tag (Hugging Face cache, then open_clip's URL cache), else raise."""
    for path in _candidate_files(cfg):
        if path and os.path.isfile(path):
            return path
    hub = cfg.get("hf_hub")
    source = f"https://huggingface.co/{hub.strip('/')}" if hub else cfg.get("url")
    raise ConfigError(
        f"open_clip: weights for {arch} pretrained={tag!r} are not in the local cache and nothing is downloaded "
        f"here; fetch them elsewhere ({source}) and pass weights='/path/to/open_clip_model.safetensors' "
        f"(in a recipe: encoders.image.weights=PATH; keep pretrained={tag!r} to use its preprocessing)"
    )


def _candidate_files(cfg: dict) -> list[str]:
    paths = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        # "org/repo/" names the repo with open_clip's default file names; "org/repo/file.bin" names one file
        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        paths += [try_to_load_from_cache(repo, name) for name in names]
    if cfg.get("url"):
        paths.append(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"])))
    return [p for p in paths if isinstance(p, str)]


class _DropNoWeightsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _create_visual(arch: str, image_size: int | None, quick_gelu: bool, overrides: dict):
    import open_clip

    quiet = _DropNoWeightsWarning()
    logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(
            arch,
            pretrained=None,
            load_weights=False,
            force_image_size=image_size,
            force_quick_gelu=quick_gelu,
            **overrides,
        )
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(f"open_clip: cannot build {arch} with model_overrides={overrides}: {err}") from None
    finally:
        logging.getLogger().removeFilter(quiet)
    return model.visual


def _load_visual(visual, state: dict, path) -> None:
    # a full CLIP state_dict has the tower under "visual."; a tower-only file has no prefix
    if any(k.startswith(("vision_model.", "embeddings.patch_embedding.")) for k in state):
        raise ConfigError(
            f"weights file {path}: a Hugging Face transformers vision tower (CLIPVisionModel / SiglipVisionModel "
            "keys), not an open_clip one; use encoder hf_vision with path=<its directory> (config.json, "
            "model.safetensors, preprocessor_config.json)"
        )
    state = strip_prefix(state, "visual.")
    load_strict(visual, state, path)


def _preprocess_from(visual_cfg: dict, tag_cfg: dict) -> ImagePreprocess:
    cfg = {**visual_cfg, **{k: v for k, v in tag_cfg.items() if k in ("mean", "std", "interpolation", "resize_mode")}}
    size = cfg["size"] if isinstance(cfg["size"], tuple | list) else (cfg["size"], cfg["size"])
    interpolation = cfg.get("interpolation", "bicubic")
    return ImagePreprocess(
        size=(int(size[0]), int(size[1])),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=interpolation if interpolation in ("bicubic", "bilinear") else "bicubic",
        # open_clip's "longest" (pad to square) is approximated by resize-shortest + center crop
        resize_mode="squash" if cfg.get("resize_mode") == "squash" else "shortest",
    )


def _prune(visual, index: int) -> None:
    """Drop the parameters after block `index` (later blocks, final norm, pooling head): they are never used."""
    if hasattr(visual, "prune_intermediate_layers"):
        visual.prune_intermediate_layers(indices=[index], prune_norm=True, prune_head=True)
    elif hasattr(visual, "trunk"):
        # TimmModel: timm's own pruning on the trunk, and open_clip's projection head
        visual.trunk.prune_intermediate_layers(indices=[index], prune_norm=True, prune_head=True)
        visual.head = nn.Identity()
    else:
        # ModifiedResNet: blocks are stem, layer1..layer4, then the attention pool
        visual.attnpool = nn.Identity()
        for i in range(index + 1, 5):
            setattr(visual, f"layer{i}", nn.Identity())


def _n_blocks(visual, arch: str) -> int:
    """Blocks `layer` indexes: ViT transformer blocks, timm trunk blocks / stages, or ModifiedResNet stem + 4 stages."""
    if hasattr(visual, "transformer"):
        return len(visual.transformer.resblocks)
    trunk = getattr(visual, "trunk", None)
    if trunk is None:
        return 5
    for name in ("blocks", "stages"):
        if hasattr(trunk, name):
            return len(getattr(trunk, name))
    raise ConfigError(f"open_clip: cannot find the blocks of {arch}'s timm trunk {type(trunk).__name__}")


def _resolve_layer(visual, layer: int, arch: str) -> int:
    n_blocks = _n_blocks(visual, arch)
    index = layer + n_blocks if layer < 0 else layer
    if not 0 <= index < n_blocks:
        raise ConfigError(f"open_clip: layer {layer} is out of range for {arch} ({n_blocks} blocks: 0..{n_blocks - 1})")
    return index
