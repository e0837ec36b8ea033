"""RWKV-5 "Eagle": matrix-valued heads with a static per-channel decay (5.0, 5.1, 5.2).

Notation: B batch, T time, H heads, N head size, C = H*N. Sub-versions, as the official checkpoints store them:
5.0 no gate, `time_decay` [H], `time_first` = log u [H]; 5.1 adds the SiLU gate; 5.2 has `time_decay` [H, N]
and `time_faaaa` = u [H, N]. The WKV is `wkv6` with the constant decay expanded over B and T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrwkv import kernels
from mmrwkv.rwkv.common import heads, shifted
from mmrwkv.rwkv.config import RWKVConfig
from mmrwkv.rwkv.v4 import ChannelMix, lerp4

__all__ = ["TimeMix", "ChannelMix"]


class TimeMix(nn.Module):
    """RWKV-5 attention: wkv over heads, GroupNorm ln_x, optional SiLU gate, output projection."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, H, N = config.n_embd, config.n_head, config.head_size
        self.n_head, self.head_size = H, N
        self.has_gate = config.version != "5.0"
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C))
        if config.version == "5.2":
            self.time_decay = nn.Parameter(torch.empty(H, N))
            self.time_faaaa = nn.Parameter(torch.empty(H, N))
        else:
            self.time_decay = nn.Parameter(torch.empty(H))
            self.time_first = nn.Parameter(torch.empty(H))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        if self.has_gate:
            self.time_mix_g = nn.Parameter(torch.empty(1, 1, C))
            self.gate = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    def bonus(self) -> torch.Tensor:
        """u [H, N] in fp32 (5.0/5.1 store its log per head)."""
        if hasattr(self, "time_faaaa"):
            return self.time_faaaa.float()
        return torch.exp(self.time_first.float())[:, None].expand(self.n_head, self.head_size)

    def log_decay(self) -> torch.Tensor:
        """-exp(time_decay) as [H, N] fp32 (5.0/5.1: one value per head)."""
        w = -torch.exp(self.time_decay.float())
        return w if w.dim() == 2 else w[:, None].expand(self.n_head, self.head_size)

    def forward(self, x: Tensor, x_prev: Tensor, wkv: Tensor, v_first: Tensor | None = None, *,
                backend: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, T, C) post-ln1, x_prev (B, C), wkv (B, H, N, N) -> (out, wkv, v_first unchanged)."""
        B, T, C = x.shape
        H = self.n_head
        xs = shifted(x, x_prev)
        r = heads(self.receptance(lerp4(x, xs, self.time_mix_r)), H)  # (B, T, H, N)
        k = heads(self.key(lerp4(x, xs, self.time_mix_k)), H)
        v = heads(self.value(lerp4(x, xs, self.time_mix_v)), H)
        u = self.bonus()
        w = self.log_decay().expand(B, T, H, self.head_size)
        y, wkv = kernels.wkv6(r, w, k, v, u, wkv, backend=backend)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        if self.has_gate:
            y = y * F.silu(self.gate(lerp4(x, xs, self.time_mix_g)))
        return self.output(y), wkv, v_first
