"""RWKV-4: per-channel WKV with a running-max stable state (aa, bb, pp).

Notation: B batch, T time, C channels, F = dim_ffn. Mixing convention: x*mu + x_prev*(1-mu).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrwkv import kernels
from mmrwkv.rwkv.common import shifted
from mmrwkv.rwkv.config import RWKVConfig


def lerp4(x: torch.Tensor, xs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The v4/v5 token mix `x*mu + xs*(1-mu)`."""
    return xs + (x - xs) * mu


class TimeMix(nn.Module):
    """RWKV-4 attention: sigmoid(r) * wkv4(k, v), output projection."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        self.time_decay = nn.Parameter(torch.empty(C))
        self.time_first = nn.Parameter(torch.empty(C))
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)

    def forward(self, x: Tensor, x_prev: Tensor, wkv: Tensor, v_first: Tensor | None = None, *,
                backend: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, T, C) post-ln1, x_prev (B, C), wkv (B, 3, C) -> (out, wkv, v_first unchanged)."""
        xs = shifted(x, x_prev)
        r = torch.sigmoid(self.receptance(lerp4(x, xs, self.time_mix_r)))
        k = self.key(lerp4(x, xs, self.time_mix_k))  # (B, T, C)
        v = self.value(lerp4(x, xs, self.time_mix_v))
        w = -torch.exp(self.time_decay.float())
        y, wkv = kernels.wkv4(w, self.time_first.float(), k, v, wkv, backend=backend)
        return self.output(r * y), wkv, v_first


class ChannelMix(nn.Module):
    """RWKV-4/5 feed-forward: sigmoid(W_r xr) * W_v relu(W_k xk)^2."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, F_ = config.n_embd, config.dim_ffn
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, F_, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def forward(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """x (B, T, C) post-ln2, x_prev (B, C) -> (B, T, C)."""
        xs = shifted(x, x_prev)
        k = torch.square(F.relu(self.key(lerp4(x, xs, self.time_mix_k))))  # (B, T, F)
        return torch.sigmoid(self.receptance(lerp4(x, xs, self.time_mix_r))) * self.value(k)
