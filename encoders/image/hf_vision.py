"""`hf_vision`: a Hugging Face vision tower (CLIPVisionModel, SiglipVisionModel, Siglip2VisionModel) from a local
directory, as a token encoder.

The directory holds what `save_pretrained` writes: config.json (a vision config, or a full CLIP/SigLIP config whose
`vision_config` is used), model.safetensors (a vision model's or a whole CLIP/SigLIP model's: the text tower is left
out) and preprocessor_config.json (the image processor's size, crop, resample, mean and std). Nothing is fetched:
the model is built from the config and the file is read directly. Tokens are the hidden states after block `layer`
as transformers indexes `hidden_states` (0 = the embeddings, -1 = the last block, -2 = the second-to-last, as
LLaVA takes), CLIP's CLS token left out unless `cls_token`; the blocks after it, the final norm and SigLIP's pooling
head are dropped. Fixed-resolution SigLIP2 checkpoints are SigLIP ones; SigLIP2 NaFlex (model_type siglip2) sizes
each image to its patch budget keeping its aspect ratio, so its token count varies by image (`num_tokens`; padded
rows are zero). The count (NaFlex: its upper bound) is known from the directory's JSON alone (`planned_tokens`).
Needs `transformers` (the optional extra mmrwkv[hf]).

Notation: B batch, N tokens (patches, +1 CLS), D tower width, p patch size.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmrwkv.encoders.base import ImageEncoder, ImagePreprocess
from mmrwkv.encoders.media import load_image
from mmrwkv.encoders.registry import register
from mmrwkv.errors import CheckpointError, ConfigError, MediaError

# model_type -> family; family -> (transformers config class, model class)
_FAMILIES = {
    "clip_vision_model": "clip",
    "clip": "clip",
    "siglip_vision_model": "siglip",
    "siglip": "siglip",
    "siglip2_vision_model": "siglip2",
    "siglip2": "siglip2",
}
_CLASSES = {
    "clip": ("CLIPVisionConfig", "CLIPVisionModel"),
    "siglip": ("SiglipVisionConfig", "SiglipVisionModel"),
    "siglip2": ("Siglip2VisionConfig", "Siglip2VisionModel"),
}
# PIL resample codes the processors store
_RESAMPLE = {2: "bilinear", 3: "bicubic"}
_TEXT_PARTS = ("text_model.", "visual_projection.", "text_projection.", "logit_scale", "logit_bias")


def read_vision_config(path: str | os.PathLike) -> tuple[str, dict]:
    """(family, vision config dict) of a local tower directory; CheckpointError/ConfigError naming the file."""
    directory = Path(path)
    file = directory / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"hf_vision: {directory} is not a local model directory (no config.json); "
            "save the tower there with save_pretrained (nothing is downloaded here)"
        )
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{file}: invalid JSON ({err})") from None
    model_type = config.get("model_type")
    if model_type not in _FAMILIES:
        raise ConfigError(
            f"{file}: model_type {model_type!r} is not a supported vision tower ({', '.join(sorted(_FAMILIES))})"
        )
    vision = config.get("vision_config", config) if model_type in ("clip", "siglip", "siglip2") else config
    return _FAMILIES[model_type], dict(vision)


def _hidden_index(layer: int, n_layers: int, where: str) -> int:
    index = layer if layer >= 0 else n_layers + 1 + layer
    if not 0 <= index <= n_layers:
        raise ConfigError(f"{where}: layer {layer} is out of range for {n_layers} blocks (-{n_layers + 1}..{n_layers})")
    return index


def _preprocess(directory: Path, vision: dict) -> ImagePreprocess:
    """The image processor's constants (preprocessor_config.json), as our ImagePreprocess."""
    file = directory / "preprocessor_config.json"
    if not file.is_file():
        raise CheckpointError(
            f"hf_vision: {directory} has no preprocessor_config.json (save the image processor "
            "there too: processor.save_pretrained(dir))"
        )
    cfg = json.loads(file.read_text())
    resample = _RESAMPLE.get(cfg.get("resample", 3))
    if resample is None:
        raise ConfigError(f"{file}: resample {cfg.get('resample')!r} is not bilinear (2) or bicubic (3)")
    size = cfg.get("size") or {}
    crop = cfg.get("crop_size") or {}
    if cfg.get("do_center_crop") and "shortest_edge" in size:
        out, mode = (crop.get("height", size["shortest_edge"]), crop.get("width", size["shortest_edge"])), "shortest"
    elif "height" in size:
        out, mode = (size["height"], size["width"]), "squash"
    else:
        raise ConfigError(f"{file}: size {size!r} / crop {crop!r} is not a layout hf_vision reproduces")
    if tuple(out) != (vision.get("image_size"),) * 2:
        raise ConfigError(
            f"{file}: images of {tuple(out)} do not match the tower's image_size {vision.get('image_size')}"
        )
    scale = cfg.get("rescale_factor", 1 / 255) if cfg.get("do_rescale", True) else 1.0
    if abs(scale * 255 - 1) > 1e-6:
        raise ConfigError(f"{file}: rescale_factor {scale} is not 1/255")
    mean, std = (cfg.get("image_mean"), cfg.get("image_std")) if cfg.get("do_normalize", True) else ((0,) * 3, (1,) * 3)
    return ImagePreprocess(tuple(out), tuple(mean), tuple(std), resample, mode)


@dataclass(frozen=True)
class NaFlex:
    """SigLIP2 NaFlex preprocessing (Siglip2ImageProcessor): resize to the largest size whose patch grid fits
    `max_patches` (sides multiples of `patch`, aspect ratio kept), rescale, normalize, cut into patches."""

    patch: int
    max_patches: int
    resample: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def read(cls, directory: Path) -> NaFlex:
        file = directory / "preprocessor_config.json"
        if not file.is_file():
            raise CheckpointError(f"hf_vision: {directory} has no preprocessor_config.json")
        cfg = json.loads(file.read_text())
        resample = _RESAMPLE.get(cfg.get("resample", 2))
        if resample is None:
            raise ConfigError(f"{file}: resample {cfg.get('resample')!r} is not bilinear (2) or bicubic (3)")
        return cls(
            int(cfg.get("patch_size", 16)),
            int(cfg.get("max_num_patches", 256)),
            resample,
            tuple(cfg.get("image_mean", (0.5,) * 3)),
            tuple(cfg.get("image_std", (0.5,) * 3)),
        )

    def constants(self) -> ImagePreprocess:
        """The constants as an ImagePreprocess (its size is one patch: NaFlex sizes vary by image)."""
        return ImagePreprocess((self.patch, self.patch), self.mean, self.std, self.resample, "squash")

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The target (height, width): the largest scale (bisected to 1e-5) whose grid fits the patch budget."""
        p = self.patch

        def side(scale: float, n: int) -> int:
            return max(p, math.ceil(n * scale / p) * p)

        low, high = 1e-6, 100.0
        while high - low >= 1e-5:
            mid = (low + high) / 2
            if (side(mid, height) // p) * (side(mid, width) // p) <= self.max_patches:
                low = mid
            else:
                high = mid
        return side(low, height), side(low, width)

    def pixels(self, image) -> torch.Tensor:
        """RGB PIL image -> (3, H, W) float, resized as the processor does (torchvision, antialiased)."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        raw = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W) uint8
        mode = InterpolationMode.BICUBIC if self.resample == "bicubic" else InterpolationMode.BILINEAR
        raw = tvf.resize(raw, list(self.size(raw.shape[1], raw.shape[2])), interpolation=mode, antialias=True)
        mean, std = torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1)
        return (raw.float() / 255.0 - mean) / std

    def packed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, H, W) -> (max_patches, 3 p^2 + 3): patches in the processor's order (row, col, y, x, channel),
        zero-padded, then the validity mask and the grid's rows and columns on every row."""
        p = self.patch
        c, height, width = pixels.shape
        rows, cols = height // p, width // p
        patches = pixels.reshape(c, rows, p, cols, p).permute(1, 3, 2, 4, 0).reshape(rows * cols, -1)
        if rows * cols > self.max_patches:
            raise MediaError(f"NaFlex image of {rows}x{cols} patches exceeds max_num_patches {self.max_patches}")
        out = pixels.new_zeros(self.max_patches, patches.shape[1] + 3)
        out[: rows * cols, :-3] = patches
        out[: rows * cols, -3] = 1.0
        out[:, -2], out[:, -1] = rows, cols
        return out


@register("hf_vision")
class HFVisionEncoder(ImageEncoder):
    """A transformers CLIP/SigLIP vision tower read from `path`, cut after hidden state `layer`."""

    def __init__(
        self,
        *,
        path: str | os.PathLike,
        layer: int = -2,
        cls_token: bool = False,
        max_pixels: int = 64_000_000,
    ):
        try:
            import transformers
        except ImportError:
            raise ConfigError("hf_vision needs transformers: pip install 'mmrwkv[hf]'") from None
        directory = Path(path)
        family, vision = read_vision_config(directory)
        naflex = NaFlex.read(directory) if family == "siglip2" else None
        super().__init__(naflex.constants() if naflex else _preprocess(directory, vision), max_pixels=max_pixels)
        self.naflex = naflex
        names = _CLASSES[family]
        config = getattr(transformers, names[0])(**{k: v for k, v in vision.items() if k != "model_type"})
        if family != "clip":
            config.vision_use_head = False
        self.family, self.cls_token = family, cls_token
        if cls_token and family != "clip":
            raise ConfigError(f"hf_vision: {directory}: cls_token=True needs a CLIP tower (SigLIP has no CLS token)")
        self.index = _hidden_index(layer, config.num_hidden_layers, f"hf_vision {directory}")
        model = getattr(transformers, names[1])(config)
        tower = getattr(model, "vision_model", model)
        tower.encoder.layers = tower.encoder.layers[: self.index]
        tower.post_layernorm = nn.Identity()
        self.tower = tower
        _load(tower, directory)
        self.out_dim = config.hidden_size
        self.tokens_per_image = self.planned_tokens(path=path, cls_token=cls_token)

    @classmethod
    def planned_tokens(cls, *, path: str | os.PathLike, cls_token: bool = False, **_) -> int:
        """Tokens per image from config.json alone (patch grid, + CLS when kept), without building the tower."""
        family, vision = read_vision_config(path)
        if family == "siglip2":  # NaFlex: an upper bound, each image takes what its aspect ratio allows
            return NaFlex.read(Path(path)).max_patches
        grid = vision.get("image_size", 224) // vision.get("patch_size", 32)
        return grid * grid + int(cls_token and family == "clip")

    def preprocess(self, item) -> torch.Tensor:
        """Path / bytes / PIL image -> (3, H, W) normalized; NaFlex: at the size its patch budget allows."""
        if self.naflex is None:
            return super().preprocess(item)
        return self.naflex.pixels(load_image(item, max_pixels=self.max_pixels))

    def num_tokens(self, preprocessed: torch.Tensor) -> int:
        if self.naflex is None:
            return self.tokens_per_image
        p = self.naflex.patch
        return (preprocessed.shape[-2] // p) * (preprocessed.shape[-1] // p)

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W); NaFlex: (B, max_patches, 3 p^2 + 3) = patches padded, then mask, patch rows, patch cols."""
        if self.naflex is None:
            return super().collate(items)
        return torch.stack([self.naflex.packed(item) for item in items])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D): hidden state `layer` (CLIP: without CLS unless `cls_token`); NaFlex: the
        patches' hidden states, padding zeroed."""
        if self.naflex is not None:
            patches, mask, shapes = pixels[..., :-3], pixels[..., -3], pixels[:, 0, -2:].long()
            out = self.tower(
                pixel_values=patches, pixel_attention_mask=mask.long(), spatial_shapes=shapes, output_hidden_states=True
            )
            return out.hidden_states[self.index] * mask.unsqueeze(-1).to(patches.dtype)
        out = self.tower(pixel_values=pixels, output_hidden_states=True)
        tokens = out.hidden_states[self.index]
        if self.family == "clip" and not self.cls_token:
            tokens = tokens[:, 1:]
        return tokens


def _load(tower: nn.Module, directory: Path) -> None:
    """The tower's weights from model.safetensors (a vision model's or a whole model's); every kept parameter must
    be there, and nothing but the dropped parts (later blocks, final norm, pooling head, text tower) left over."""
    from safetensors.torch import load_file

    file = directory / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"hf_vision: {directory} has no model.safetensors")
    try:
        state = load_file(str(file))
    except Exception as err:  # noqa: BLE001 - any reader failure means an unreadable file
        raise CheckpointError(f"{file}: cannot read safetensors ({err})") from None
    state = {k: v for k, v in state.items() if not k.startswith(_TEXT_PARTS)}
    if any(k.startswith("vision_model.") for k in state):
        state = {k.removeprefix("vision_model."): v for k, v in state.items() if k.startswith("vision_model.")}
    own = tower.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"{file}: missing {len(missing)} tower weights, e.g. {missing[:3]}")
    kept = len(tower.encoder.layers)
    dropped = [k for k in state if k not in own and not _droppable(k, kept)]
    if dropped:
        raise CheckpointError(f"{file}: weights that are not this tower's: {dropped[:3]}")
    for key, value in own.items():
        if state[key].shape != value.shape:
            raise CheckpointError(f"{file}: {key} has shape {list(state[key].shape)}, expected {list(value.shape)}")
    tower.load_state_dict({k: state[k] for k in own})


def _droppable(key: str, kept_layers: int) -> bool:
    if key.startswith(("post_layernorm.", "head.")):
        return True
    parts = key.split(".")
    return key.startswith("encoder.layers.") and int(parts[2]) >= kept_layers
