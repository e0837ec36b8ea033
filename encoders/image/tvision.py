"""`torchvision` image backbones (resnet18/50, convnext_tiny, efficientnet_b0, vit_b_16, swin_t, ...) as token encoders.

CNNs give their last spatial feature map, one token per cell (row-major); ViTs give their final patch tokens.
Weights: random init, a local file (`weights=PATH`), or a torchvision tag (`pretrained="DEFAULT"`) that is only
used when its file is already in the torch hub cache (no downloads at run time).

Notation: B batch, D channels of the last feature map, h x w its grid, N = h * w tokens.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mmrwkv.encoders.base import ImageEncoder, ImagePreprocess, as_size
from mmrwkv.encoders.registry import register
from mmrwkv.encoders.weights import load_strict, read_state_dict, skip_weight_files
from mmrwkv.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register("torchvision")
class TorchvisionEncoder(ImageEncoder):
    """A torchvision classification model without its pooling and classifier head."""

    def __init__(
        self,
        *,
        arch: str = "resnet18",
        weights: str | os.PathLike | None = None,
        pretrained: str | None = None,
        image_size: int | tuple[int, int] = 224,
        cls_token: bool = False,
        max_pixels: int = 64_000_000,
    ):
        import torchvision

        size = as_size(image_size)
        super().__init__(
            ImagePreprocess(size, IMAGENET_MEAN, IMAGENET_STD, "bilinear", "shortest"), max_pixels=max_pixels
        )
        known = torchvision.models.list_models(module=torchvision.models)
        if arch not in known:
            raise ConfigError(f"torchvision: unknown arch {arch!r}; known: {', '.join(known)}")
        extra = {"image_size": size[0]} if arch.startswith("vit_") else {}
        model = torchvision.models.get_model(arch, weights=None, **extra)
        path = None
        if not skip_weight_files():  # a saved checkpoint holds the weights
            path = weights or (_cached_torchvision_file(arch, pretrained) if pretrained else None)
        if path is not None:
            load_strict(model, read_state_dict(path), path)
        self.arch = arch
        self.cls_token = cls_token
        self.kind, self.trunk = _trunk(arch, model)
        self.out_dim, self.tokens_per_image = self._probe(size)

    def _probe(self, size: tuple[int, int]) -> tuple[int, int]:
        """(D, N) from one forward pass on a blank image (cheaper than per-arch bookkeeping)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            out = self.forward(torch.zeros(1, 3, *size))
        self.train(was_training)
        return out.shape[-1], out.shape[1]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D)."""
        if self.kind == "vit":
            return self._vit_tokens(pixels)
        fmap = self.trunk(pixels)
        if self.kind == "channels_last":
            # swin: (B, h, w, D)
            return fmap.flatten(1, 2)
        return fmap.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)

    def _vit_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        vit = self.trunk
        x = vit._process_input(pixels)  # (B, N, D)
        cls = vit.class_token.expand(x.shape[0], -1, -1)
        x = vit.encoder(torch.cat([cls, x], dim=1))  # (B, 1 + N, D)
        return x if self.cls_token else x[:, 1:]


def _trunk(arch: str, model: nn.Module) -> tuple[str, nn.Module]:
    """Split off the feature extractor: ("vit" | "channels_first" | "channels_last", module)."""
    if hasattr(model, "conv_proj") and hasattr(model, "encoder"):
        del model.heads
        return "vit", model
    if hasattr(model, "layer4"):
        return "channels_first", nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4
        )
    if hasattr(model, "trunk_output"):
        return "channels_first", nn.Sequential(model.stem, model.trunk_output)
    if arch.startswith("swin"):
        return "channels_last", nn.Sequential(model.features, model.norm)
    if hasattr(model, "features"):
        return "channels_first", model.features
    raise ConfigError(
        f"torchvision: arch {arch!r} has no supported feature trunk; use a resnet / resnext / regnet / convnext / "
        "efficientnet / mobilenet / densenet / vgg / swin / vit model"
    )


def _cached_torchvision_file(arch: str, tag: str) -> str:
    """The torch hub cache file of torchvision weights `arch`/`tag`; ConfigError when it would need a download."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        url = enum[tag].url
    except KeyError:
        tags = [w.name for w in enum] + ["DEFAULT"]
        raise ConfigError(f"torchvision: unknown weights tag {tag!r} for {arch}; known: {', '.join(tags)}") from None
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if not os.path.isfile(path):
        raise ConfigError(
            f"torchvision: weights {arch}/{tag} are not in the local cache ({path}) and nothing is downloaded here; "
            f"download {url} elsewhere and pass weights='/path/to/{os.path.basename(url)}'"
        )
    return path
