"""RWKV-7 "Goose": generalized delta rule with in-context learning rate `a` and the value residual.

Notation: B batch, T time, H heads, N head size, C = H*N, F = dim_ffn; LoRA widths Dw, Da, Dv, Dg.
Mixing convention: x + (x_prev - x)*mu. Layer 0 has no v0/v1/v2: its values become `v_first` for later layers.

The equations only, over (B, T, C) for any T, any device, with autograd: each weight is read by its module name
(the official checkpoint key). One token on CPU may also run natively (`mmrwkv.inference.engine`), which reads the
same weights by the same names and is tested against these equations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrwkv import kernels
from mmrwkv.rwkv.common import shifted
from mmrwkv.rwkv.config import RWKVConfig


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

    def forward(
        self, x: Tensor, x_prev: Tensor, wkv: Tensor, v_first: Tensor | None = None, *, backend: str | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, T, C) post-ln1, x_prev (B, C), wkv (B, H, N, N) [value, key] -> (out, wkv, v_first)."""
        B, T, C = x.shape
        H = self.n_head
        dx = shifted(x, x_prev) - x
        # the six token-shift mixes in one op
        mix = torch.cat((self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g), dim=1).view(6, C)
        xr, xw, xk, xv, xa, xg = torch.addcmul(x.unsqueeze(-2), dx.unsqueeze(-2), mix).unbind(-2)  # (B, T, C)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        # w = -e^-0.5 * sigmoid(.), so decay = exp(w) lies in (0.545, 1)
        w = -0.6065306597126334 * torch.sigmoid((self.w0.view(C) + torch.tanh(xw @ self.w1) @ self.w2).float())
        a = torch.sigmoid(self.a0.view(C) + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k.view(C)).view(B, T, H, -1), dim=-1, p=2.0, eps=1e-12)  # (B, T, H, N)
        k = k * (1 + (a - 1) * self.k_a.view(C))
        if self.layer_id == 0:
            v_first = v
        else:
            assert v_first is not None, "RWKV-7 layers after the first need layer 0's values"
            v = v + (v_first - v) * torch.sigmoid(self.v0.view(C) + (xv @ self.v1) @ self.v2)
        r, w, k, v, a = (t.view(B, T, H, -1) for t in (r, w, k, v, a))
        y, wkv = kernels.wkv7(r, w, k, v, -kk, kk * a, wkv, backend=backend)
        y = F.group_norm(y.reshape(B * T, C), H, self.ln_x.weight, self.ln_x.bias, 64e-5).view(B, T, H, -1)
        bonus = (r * k * self.r_k).sum(dim=-1, keepdim=True) * v  # (B, T, H, N)
        return self.output((y + bonus).view(B, T, C) * g), wkv, v_first


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
        xk = torch.addcmul(x, shifted(x, x_prev) - x, self.x_k.view(-1))
        return self.value(torch.square(torch.relu(self.key(xk))))
