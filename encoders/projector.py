"""Projectors: encoder features (B, N, D_in) -> optional token reduction -> linear / MLP -> (B, N', D_out).

Specs (LLaVA's spelling): "linear", "mlp2x_gelu" (MLP of depth N: Linear, then N-1 x [GELU, Linear]),
optionally combined with a reduction as "avgpool:4+mlp2x_gelu" or via `reduction="avgpool:4"`:
  "avgpool:k"  average k consecutive tokens (with grid=True: k x k cells of a square token grid)
  "conv:k"     a learned conv with kernel = stride = k (1-D over tokens, or 2-D over the grid)
A last partial window is zero-padded, so N' = ceil(N / k) (grid: ceil(G / k)^2 for N = G * G).

Notation: B batch, N tokens in, N' tokens out, G grid side, D feature width.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn import functional as F

from mmrwkv.errors import ConfigError

_MLP = re.compile(r"^mlp(\d+)x_gelu$")
_REDUCTION = re.compile(r"^(avgpool|conv):(\d+)$")


class TokenReduction(nn.Module):
    """Reduce N tokens to ceil(N / k) (1-D) or a G x G grid to ceil(G / k)^2 (2-D) by averaging or a strided conv."""

    def __init__(self, mode: str, k: int, dim: int, *, grid: bool = False):
        super().__init__()
        self.mode, self.k, self.grid = mode, k, grid
        conv = nn.Conv2d if grid else nn.Conv1d
        self.conv = conv(dim, dim, k, stride=k) if mode == "conv" else None

    def num_tokens(self, n_in: int) -> int:
        """Tokens out for `n_in` tokens in."""
        if not self.grid:
            return math.ceil(n_in / self.k)
        side = self._grid_side(n_in)
        return math.ceil(side / self.k) ** 2

    def _grid_side(self, n: int) -> int:
        side = math.isqrt(n)
        if side * side != n:
            raise ConfigError(f"projector reduction grid=True needs a square number of tokens, got {n} (a CLS token?)")
        return side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N', D)."""
        return self._reduce_grid(x) if self.grid else self._reduce_sequence(x)

    def _reduce_sequence(self, x: torch.Tensor) -> torch.Tensor:
        pad = (-x.shape[1]) % self.k
        x = F.pad(x, (0, 0, 0, pad))  # (B, N + pad, D)
        if self.conv is None:
            return x.unflatten(1, (-1, self.k)).mean(dim=2)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)

    def _reduce_grid(self, x: torch.Tensor) -> torch.Tensor:
        side = self._grid_side(x.shape[1])
        pad = (-side) % self.k
        cells = x.transpose(1, 2).unflatten(2, (side, side))  # (B, D, G, G)
        cells = F.pad(cells, (0, pad, 0, pad))
        out = F.avg_pool2d(cells, self.k) if self.conv is None else self.conv(cells)  # (B, D, G', G')
        return out.flatten(2).transpose(1, 2)


class Projector(nn.Module):
    """Token reduction (optional) followed by a linear map or a GELU MLP into the language model's width."""

    def __init__(self, mlp: nn.Module, reduction: TokenReduction | None, in_dim: int, out_dim: int, spec: str):
        super().__init__()
        self.reduction = reduction
        self.mlp = mlp
        self.in_dim, self.out_dim, self.spec = in_dim, out_dim, spec

    def num_tokens(self, n_in: int) -> int:
        """Tokens out for `n_in` encoder tokens in."""
        return n_in if self.reduction is None else self.reduction.num_tokens(n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D_in) -> (B, N', D_out)."""
        if x.shape[-1] != self.in_dim:
            raise ConfigError(f"projector {self.spec!r}: features have width {x.shape[-1]}, expected {self.in_dim}")
        if self.reduction is not None:
            x = self.reduction(x)
        return self.mlp(x)


def build_projector(
    kind: str, in_dim: int, out_dim: int, *, reduction: str | None = None, grid: bool = False
) -> Projector:
    """Build a projector from a spec like "linear", "mlp2x_gelu" or "avgpool:4+mlp2x_gelu" (see module doc)."""
    parts = [p.strip() for p in str(kind).split("+") if p.strip()]
    reductions = [p for p in parts if _REDUCTION.match(p)] + ([reduction] if reduction else [])
    maps = [p for p in parts if not _REDUCTION.match(p)]
    if len(maps) != 1 or len(reductions) > 1:
        raise ConfigError(
            f"projector spec {kind!r} (reduction={reduction!r}): expected one of 'linear' / 'mlpNx_gelu', "
            "optionally with one 'avgpool:k' or 'conv:k'"
        )
    if in_dim < 1 or out_dim < 1:
        raise ConfigError(f"projector {kind!r}: in_dim {in_dim} and out_dim {out_dim} must be positive")
    red = _build_reduction(reductions[0], in_dim, grid) if reductions else None
    return Projector(_build_map(maps[0], in_dim, out_dim), red, in_dim, out_dim, spec=str(kind))


def _build_map(spec: str, in_dim: int, out_dim: int) -> nn.Module:
    if spec == "linear":
        return nn.Linear(in_dim, out_dim)
    match = _MLP.match(spec)
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(f"projector kind {spec!r}: use 'linear' or 'mlpNx_gelu' with N >= 1 (e.g. 'mlp2x_gelu')")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def _build_reduction(spec: str, dim: int, grid: bool) -> TokenReduction:
    match = _REDUCTION.match(spec)
    if match is None or int(match.group(2)) < 1:
        raise ConfigError(f"projector reduction {spec!r}: use 'avgpool:k' or 'conv:k' with an integer k >= 1")
    return TokenReduction(match.group(1), int(match.group(2)), dim, grid=grid)
