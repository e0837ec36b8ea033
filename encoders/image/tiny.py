"""Small image encoders for from-scratch experiments on CPU: `tiny_cnn` (conv grid) and `tiny_vit` (patches).

Notation: B batch, S image side, G grid side, N = G * G tokens (+1 with a CLS token), D width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmrwkv.encoders.base import ImageEncoder, ImagePreprocess, as_size, transformer_encoder
from mmrwkv.encoders.registry import register
from mmrwkv.errors import ConfigError

# symmetric constants map [0, 1] pixels to [-1, 1]; from-scratch encoders have no dataset statistics
_HALF = (0.5, 0.5, 0.5)


@register("tiny_cnn")
class TinyCNN(ImageEncoder):
    """VGG-style stages down to a G x G grid; each grid cell is one token of width `width`.

    Each stage is a stride-1 3x3 conv, GroupNorm, GELU and a 2x2 max pool. Convolving at full resolution before
    pooling is what lets a from-scratch encoder learn shapes quickly: a stack of stride-2 convs (the previous design)
    learned colours but stayed at chance on easy-VQA's circle/rectangle/triangle after 1,000 steps, where this one
    reaches 0.98 in 500 (probe: encoder + linear head, 32 px, width 32).
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        width: int = 64,
        grid: int = 4,
        norm_groups: int = 8,
        max_pixels: int = 64_000_000,
    ):
        size = as_size(image_size)
        super().__init__(ImagePreprocess(size, _HALF, _HALF, "bilinear", "squash"), max_pixels=max_pixels)
        if size[0] != size[1] or grid < 1 or size[0] % grid or not _is_power_of_two(size[0] // grid):
            raise ConfigError(
                f"tiny_cnn: image_size {image_size} must be square and grid {grid} must divide it by a power of two"
            )
        if norm_groups < 1 or width % norm_groups:
            raise ConfigError(f"tiny_cnn: norm_groups {norm_groups} must divide width {width}")
        n_down = int(math.log2(size[0] // grid))
        layers: list[nn.Module] = []
        channels = 3
        for stage in range(max(n_down, 1)):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(norm_groups, width), nn.GELU()]
            if stage < n_down:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.body = nn.Sequential(*layers)
        self.out_dim = width
        self.tokens_per_image = grid * grid

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, G * G, D), tokens in row-major grid order."""
        grid = self.body(pixels)  # (B, D, G, G)
        return grid.flatten(2).transpose(1, 2)


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@register("tiny_vit")
class TinyViT(ImageEncoder):
    """A small pre-norm ViT: patch embedding, learned positions, `depth` transformer layers, final LayerNorm."""

    def __init__(
        self,
        *,
        image_size: int = 64,
        patch_size: int = 8,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        cls_token: bool = False,
        max_pixels: int = 64_000_000,
    ):
        size = as_size(image_size)
        super().__init__(ImagePreprocess(size, _HALF, _HALF, "bilinear", "squash"), max_pixels=max_pixels)
        if size[0] % patch_size or size[1] % patch_size or width % heads:
            raise ConfigError(
                f"tiny_vit: patch_size {patch_size} must divide image_size {image_size} and heads {heads} "
                f"must divide width {width}"
            )
        n_patches = (size[0] // patch_size) * (size[1] // patch_size)
        self.patch = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if cls_token else None
        self.pos = nn.Parameter(torch.randn(1, n_patches + int(cls_token), width) * 0.02)
        self.blocks = transformer_encoder(width, heads, depth)
        self.norm = nn.LayerNorm(width)
        self.out_dim = width
        self.tokens_per_image = n_patches + int(cls_token)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, N, D); with `cls_token` the CLS token comes first."""
        x = self.patch(pixels).flatten(2).transpose(1, 2)  # (B, N, D)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(self.blocks(x + self.pos))
