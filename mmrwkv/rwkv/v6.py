"""RWKV-6 "Finch": data-dependent token shift (ddlerp) and data-dependent decay.

Notation: B batch, T time, H heads, N head size, C = H*N, D = dim_maa, Dd = dim_decay, F = dim_ffn.
Mixing convention: x + (x_prev - x)*mu. The five ddlerp branches unbind in the order w, k, v, r, g.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrwkv import kernels
from mmrwkv.rwkv.common import heads, shifted
from mmrwkv.rwkv.config import RWKVConfig


class TimeMix(nn.Module):
    """RWKV-6 attention: ddlerp inputs, LoRA decay, wkv over heads, GroupNorm ln_x, SiLU gate."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, H, N = config.n_embd, config.n_head, config.head_size
        D, Dd = config.dim_maa, config.dim_decay
        self.n_head = H
        for name in ("x", "w", "k", "v", "r", "g"):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.empty(1, 1, C)))
        self.time_maa_w1 = nn.Parameter(torch.empty(C, 5 * D))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, D, C))
        self.time_decay = nn.Parameter(torch.empty(1, 1, C))
        self.time_decay_w1 = nn.Parameter(torch.empty(C, Dd))
        self.time_decay_w2 = nn.Parameter(torch.empty(Dd, C))
        self.time_faaaa = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    def ddlerp(self, x, dx):
        """The five mixed inputs (xw, xk, xv, xr, xg), each (B, T, C)."""
        B, T, C = x.shape
        m = torch.tanh((x + dx * self.time_maa_x) @ self.time_maa_w1)  # (B, T, 5*D)
        m = torch.bmm(m.view(B * T, 5, -1).transpose(0, 1), self.time_maa_w2)  # (5, B*T, C)
        mu = torch.cat((self.time_maa_w, self.time_maa_k, self.time_maa_v, self.time_maa_r, self.time_maa_g))
        m = m.view(5, B, T, C) + mu.unsqueeze(1)  # (5, B, T, C)
        return torch.addcmul(x, dx, m).unbind(0)

    def forward(self, x: Tensor, x_prev: Tensor, wkv: Tensor, v_first: Tensor | None = None, *,
                backend: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, T, C) post-ln1, x_prev (B, C), wkv (B, H, N, N) -> (out, wkv, v_first unchanged)."""
        B, T, C = x.shape
        H = self.n_head
        xw, xk, xv, xr, xg = self.ddlerp(x, shifted(x, x_prev) - x)
        decay = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2  # (B, T, C)
        w = heads(-torch.exp(decay.float()), H)  # (B, T, H, N) log decay
        r, k, v = heads(self.receptance(xr), H), heads(self.key(xk), H), heads(self.value(xv), H)
        y, wkv = kernels.wkv6(r, w, k, v, self.time_faaaa.float(), wkv, backend=backend)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C) * F.silu(self.gate(xg))
        return self.output(y), wkv, v_first


class ChannelMix(nn.Module):
    """RWKV-6 feed-forward: sigmoid(W_r xr) * W_v relu(W_k xk)^2 with x + (x_prev - x)*mu mixing."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, F_ = config.n_embd, config.dim_ffn
        self.time_maa_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_r = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, F_, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def forward(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """x (B, T, C) post-ln2, x_prev (B, C) -> (B, T, C)."""
        dx = shifted(x, x_prev) - x
        k = torch.square(F.relu(self.key(x + dx * self.time_maa_k)))  # (B, T, F)
        return torch.sigmoid(self.receptance(x + dx * self.time_maa_r)) * self.value(k)
