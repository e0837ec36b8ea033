"""A lean RNN-mode step for RWKV-7: the model's equations for one token per row, with few, large ops.

Notation: B batch, C channels, H heads, N head size, V vocabulary. Decode at batch 1 reads every weight once
per token, so its speed is set by memory bandwidth plus the per-op dispatch cost. `RWKV.forward` serves any
(B, T) and pays for generality at T = 1 (3-D views, token-shift concatenation, GroupNorm over B*T, the WKV
dispatcher's checks); this path works on (B, C) rows, batches the six token-shift mixes into one op, and reads
the model's own parameters (no copies), so it stays in step with training. `RWKVStepper(model)(ids, state)`
equals `model(ids[:, None], state)` up to float rounding (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmrwkv.rwkv.state import State

_DECAY_SCALE = math.exp(-0.5)


class _Layer:
    """One RWKV-7 block's parameters as flat views: (C,) vectors, (6, C) mixes, (in, out) LoRA matrices."""

    def __init__(self, block):
        att, ffn = block.att, block.ffn
        self.ln1, self.ln2 = block.ln1, block.ln2
        self.mix = torch.cat([getattr(att, f"x_{n}").view(1, -1) for n in "rwkvag"])  # (6, C)
        self.w0, self.w1, self.w2 = att.w0.view(-1), att.w1, att.w2
        self.a0, self.a1, self.a2 = att.a0.view(-1), att.a1, att.a2
        self.first = att.layer_id == 0
        if not self.first:
            self.v0, self.v1, self.v2 = att.v0.view(-1), att.v1, att.v2
        self.g1, self.g2 = att.g1, att.g2
        self.k_k, self.k_a, self.r_k = att.k_k.view(-1), att.k_a.view(-1), att.r_k  # r_k (H, N)
        self.wr, self.wk, self.wv, self.wo = (
            att.receptance.weight,
            att.key.weight,
            att.value.weight,
            att.output.weight,
        )
        self.ln_x = att.ln_x
        self.ffn_mix, self.ffn_key, self.ffn_value = ffn.x_k.view(-1), ffn.key.weight, ffn.value.weight
        self.H = att.n_head


class RWKVStepper:
    """One-token steps of an RWKV-7 model: `stepper(ids (B,), state) -> (logits (B, V), state)`."""

    def __init__(self, model):
        if model.config.generation != 7:
            raise ValueError(f"RWKVStepper supports RWKV-7 only, got version {model.config.version}")
        self.model = model
        self.layers = [_Layer(block) for block in model.blocks]
        # The mixes are small (6, C) copies; refresh if the model's parameters change (training).
        self.version = _param_version(model)

    def _refresh(self) -> None:
        if _param_version(self.model) != self.version:
            self.__init__(self.model)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        self._refresh()
        x = self.model.blocks[0].ln0(self.model.emb(ids.view(-1)))  # (B, C)
        return self.step_embedding(x, state, ln0=False)

    @torch.inference_mode()
    def step_embedding(self, x: torch.Tensor, state: State, *, ln0: bool = True) -> tuple[torch.Tensor, State]:
        """One step from embeddings (B, C) (raw rows, ln0 applied here unless `ln0=False`)."""
        model = self.model
        if ln0:
            x = model.blocks[0].ln0(x)
        att_prev, wkv, ffn_prev = [], [], []
        v_first = None
        for i, layer in enumerate(self.layers):
            h = F.layer_norm(x, x.shape[-1:], layer.ln1.weight, layer.ln1.bias, layer.ln1.eps)
            dx, s, v_first = _time_mix(layer, h, state.att_x_prev[i], state.wkv[i], v_first)
            x = x + dx
            h2 = F.layer_norm(x, x.shape[-1:], layer.ln2.weight, layer.ln2.bias, layer.ln2.eps)
            x = x + _channel_mix(layer, h2, state.ffn_x_prev[i])
            att_prev.append(h)
            wkv.append(s)
            ffn_prev.append(h2)
        x = F.layer_norm(x, x.shape[-1:], model.ln_out.weight, model.ln_out.bias, model.ln_out.eps)
        new_state = type(state)(torch.stack(att_prev), torch.stack(wkv), torch.stack(ffn_prev))
        return F.linear(x, model.head.weight), new_state


def _param_version(model) -> int:
    return sum(p._version for p in model.parameters())


def _time_mix(p: _Layer, x, x_prev, S, v_first):
    """x, x_prev (B, C); S (B, H, N, N) fp32 [value, key] -> (out (B, C), S, v_first)."""
    B, C = x.shape
    H = p.H
    xs = torch.addcmul(x.unsqueeze(1), (x_prev - x).unsqueeze(1), p.mix)  # (B, 6, C): r w k v a g
    xr, xw, xk, xv, xa, xg = xs.unbind(1)
    r, k, v = F.linear(xr, p.wr), F.linear(xk, p.wk), F.linear(xv, p.wv)
    w = torch.sigmoid((p.w0 + torch.tanh(xw @ p.w1) @ p.w2).float()).mul_(-_DECAY_SCALE).exp_()  # decay (B, C)
    a = torch.sigmoid(p.a0 + (xa @ p.a1) @ p.a2)
    g = torch.sigmoid(xg @ p.g1) @ p.g2
    kk = F.normalize((k * p.k_k).view(B, H, -1), dim=-1, p=2.0, eps=1e-12)  # (B, H, N)
    k = k * (1 + (a - 1) * p.k_a)
    if p.first:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(p.v0 + (xv @ p.v1) @ p.v2)
    rh, kh, vh = (t.view(B, H, -1).float() for t in (r, k, v))
    ah = (kk * a.view(B, H, -1)).float()  # b = kk * a; the a-term is -kk
    # S = S diag(w) + (S @ -kk) b^T + v k^T  (B, H, Nv, Nk)
    Sa = (S @ kk.float().unsqueeze(-1)).neg_()  # (B, H, N, 1)
    S = torch.baddbmm(
        (S * w.view(B, H, 1, -1)).view(B * H, *S.shape[-2:]),
        torch.cat([Sa, vh.unsqueeze(-1)], -1).view(B * H, -1, 2),
        torch.stack([ah, kh], -2).view(B * H, 2, -1),
    ).view(S.shape)
    y = (S @ rh.unsqueeze(-1)).view(B, C).to(x.dtype)
    y = F.group_norm(y, H, p.ln_x.weight, p.ln_x.bias, p.ln_x.eps)
    bonus = ((rh * kh * p.r_k).sum(-1, keepdim=True) * vh).view(B, C).to(x.dtype)
    return F.linear((y + bonus) * g, p.wo), S, v_first


def _channel_mix(p: _Layer, x, x_prev):
    """x, x_prev (B, C) -> (B, C)."""
    xk = torch.addcmul(x, x_prev - x, p.ffn_mix)
    return F.linear(torch.relu(F.linear(xk, p.ffn_key)).square_(), p.ffn_value)
