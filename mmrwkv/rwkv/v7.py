"""RWKV-7 "Goose": generalized delta rule with in-context learning rate `a` and the value residual.

Notation: B batch, T time, H heads, N head size, C = H*N, F = dim_ffn; LoRA widths Dw, Da, Dv, Dg.
Mixing convention: x + (x_prev - x)*mu. Layer 0 has no v0/v1/v2: its values become `v_first` for later layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrwkv import kernels
from mmrwkv.rwkv.common import heads, shifted
from mmrwkv.rwkv.config import RWKVConfig

# decay = exp(-e^-0.5 * sigmoid(.)) lies in (0.545, 1)
_DECAY_SCALE = math.exp(-0.5)


class TimeMix(nn.Module):
    """RWKV-7 attention (x070)."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, H, N = config.n_embd, config.n_head, config.head_size
        self.n_head = H
        self.layer_id = layer_id
        for name in ("r", "w", "k", "v", "a", "g"):
            setattr(self, f"x_{name}", nn.Parameter(torch.empty(1, 1, C)))
        self.w0, self.w1, self.w2 = self._lora(C, config.dim_w, bias=True)
        self.a0, self.a1, self.a2 = self._lora(C, config.dim_a, bias=True)
        if layer_id > 0:
            self.v0, self.v1, self.v2 = self._lora(C, config.dim_v, bias=True)
        _, self.g1, self.g2 = self._lora(C, config.dim_g, bias=False)
        self.k_k = nn.Parameter(torch.empty(1, 1, C))
        self.k_a = nn.Parameter(torch.empty(1, 1, C))
        self.r_k = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    @staticmethod
    def _lora(C: int, D: int, *, bias: bool):
        b = nn.Parameter(torch.empty(1, 1, C)) if bias else None
        return b, nn.Parameter(torch.empty(C, D)), nn.Parameter(torch.empty(D, C))

    def forward(self, x: Tensor, x_prev: Tensor, wkv: Tensor, v_first: Tensor | None = None, *,
                backend: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, T, C) post-ln1, x_prev (B, C), wkv (B, H, N, N) [value, key] -> (out, wkv, v_first)."""
        B, T, C = x.shape
        H = self.n_head
        dx = shifted(x, x_prev) - x
        # the six token-shift mixes in one op (fewer dispatches in the T = 1 decode path)
        mix = torch.cat((self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g), dim=1)  # (1, 6, C)
        xr, xw, xk, xv, xa, xg = torch.addcmul(x.unsqueeze(2), dx.unsqueeze(2), mix).unbind(2)  # (B, T, C)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)  # (B, T, C)
        w = -_DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize(heads(k * self.k_k, H), dim=-1, p=2.0, eps=1e-12)  # (B, T, H, N)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a_h = heads(a, H)
        y, wkv = kernels.wkv7(heads(r, H), heads(w, H), heads(k, H), heads(v, H), -kk, kk * a_h, wkv, backend=backend)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        bonus = (heads(r * k, H) * self.r_k).sum(dim=-1, keepdim=True) * heads(v, H)  # (B, T, H, N)
        return self.output((y + bonus.view(B, T, C)) * g), wkv, v_first


class ChannelMix(nn.Module):
    """RWKV-7 feed-forward: W_v relu(W_k xk)^2, no receptance."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, F_ = config.n_embd, config.dim_ffn
        self.x_k = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, F_, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def forward(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """x (B, T, C) post-ln2, x_prev (B, C) -> (B, T, C)."""
        xk = x + (shifted(x, x_prev) - x) * self.x_k
        return self.value(torch.square(F.relu(self.key(xk))))
