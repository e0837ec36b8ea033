"""`hf_vision`: a Hugging Face vision tower (CLIPVisionModel, SiglipVisionModel, fixed-resolution SigLIP2) from a
local directory, as a token encoder.

The directory holds what `save_pretrained` writes: config.json (a vision config, or a full CLIP/SigLIP config whose
`vision_config` is used), model.safetensors (a vision model's or a whole CLIP/SigLIP model's: the text tower is left
out) and preprocessor_config.json (the image processor's size, crop, resample, mean and std). Nothing is fetched:
the model is built from the config and the file is read directly. Tokens are the hidden states after block `layer`
as transformers indexes `hidden_states` (0 = the embeddings, -1 = the last block, -2 = the second-to-last, as
LLaVA takes), CLIP's CLS token left out unless `cls_token`; the blocks after it, the final norm and SigLIP's pooling
head are dropped. The token count is known from config.json alone (`planned_tokens`), before any weights load.
Needs `transformers` (the optional extra mmrwkv[hf]).

Notation: B batch, N tokens (patches, +1 CLS), D tower width.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from mmrwkv.encoders.base import ImageEncoder, ImagePreprocess
from mmrwkv.encoders.registry import register
from mmrwkv.errors import CheckpointError, ConfigError

# model_type -> (family, transformers config class, model class)
_FAMILIES = {
    "clip_vision_model": ("clip", "CLIPVisionConfig", "CLIPVisionModel"),
    "clip": ("clip", "CLIPVisionConfig", "CLIPVisionModel"),
    "siglip_vision_model": ("siglip", "SiglipVisionConfig", "SiglipVisionModel"),
    "siglip": ("siglip", "SiglipVisionConfig", "SiglipVisionModel"),
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
    if model_type in ("siglip2", "siglip2_vision_model"):
        raise ConfigError(
            f"{file}: SigLIP2 NaFlex towers (variable patches) are not supported; the fixed-resolution "
            "SigLIP2 checkpoints are saved as 'siglip' and load"
        )
    if model_type not in _FAMILIES:
        raise ConfigError(
            f"{file}: model_type {model_type!r} is not a supported vision tower ({', '.join(sorted(_FAMILIES))})"
        )
    vision = config.get("vision_config", config) if model_type in ("clip", "siglip") else config
    return _FAMILIES[model_type][0], dict(vision)


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
        super().__init__(_preprocess(directory, vision), max_pixels=max_pixels)
        names = _FAMILIES["clip" if family == "clip" else "siglip"]
        config = getattr(transformers, names[1])(**{k: v for k, v in vision.items() if k != "model_type"})
        if family == "siglip":
            config.vision_use_head = False
        self.family, self.cls_token = family, cls_token
        if cls_token and family != "clip":
            raise ConfigError(f"hf_vision: {directory}: cls_token=True needs a CLIP tower (SigLIP has no CLS token)")
        self.index = _hidden_index(layer, config.num_hidden_layers, f"hf_vision {directory}")
        model = getattr(transformers, names[2])(config)
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
        grid = vision.get("image_size", 224) // vision.get("patch_size", 32)
        return grid * grid + int(cls_token and family == "clip")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D): hidden state `layer` (CLIP: without CLS unless `cls_token`)."""
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
