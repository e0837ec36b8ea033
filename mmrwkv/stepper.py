"""A lean RNN-mode step for RWKV-7: the model's equations for one token per row, with few, large ops.

Notation: B batch, C channels, H heads, N head size, V vocabulary. Decode at batch 1 reads every weight once
per token, so its speed is set by memory bandwidth plus the per-op dispatch cost. `RWKV.forward` serves any
(B, T) and pays for generality at T = 1 (3-D views, token-shift concatenation, GroupNorm over B*T, the WKV
dispatcher's checks); this path works on (B, C) rows, batches the six token-shift mixes into one op, and reads
the model's own parameters (no copies), so it stays in step with training. `RWKVStepper(model)(ids, state)`
equals `model(ids[:, None], state)` up to float rounding (tested).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrwkv.rwkv.state import State


class _Layer:
    """One RWKV-7 block's parameters as flat views, in the order `_layer_step` takes them."""

    def __init__(self, block):
        att, ffn = block.att, block.ffn
        self.first = att.layer_id == 0
        self.H = att.n_head
        mix = torch.cat([getattr(att, f"x_{n}").view(1, -1) for n in "rwkvag"])  # (6, C) r w k v a g
        # layer 0 has no v0/v1/v2 (its values are v_first); pass w's LoRA as unused stand-ins
        v_lora = (att.w0, att.w1, att.w2) if self.first else (att.v0, att.v1, att.v2)
        self.params = [
            block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias, mix,
            att.receptance.weight, att.key.weight, att.value.weight, att.output.weight,
            att.w0.view(-1), att.w1, att.w2, att.a0.view(-1), att.a1, att.a2,
            v_lora[0].view(-1), v_lora[1], v_lora[2], att.g1, att.g2,
            att.k_k.view(-1), att.k_a.view(-1), att.r_k, att.ln_x.weight, att.ln_x.bias,
            ffn.x_k.view(-1), ffn.key.weight, ffn.value.weight,
        ]  # fmt: skip


class RWKVStepper:
    """One-token steps of an RWKV-7 model: `stepper(ids (B,), state) -> (logits (B, V), state)`."""

    def __init__(self, model):
        if model.config.generation != 7:
            raise ValueError(f"RWKVStepper supports RWKV-7 only, got version {model.config.version}")
        self.model = model
        self.layers = [_Layer(block) for block in model.blocks]
        self.layer_step = _compiled_layer_step()
        # The mixes are small (6, C) copies; rebuild them when the model's parameters change (training).
        self.version = _param_version(model)

    def _refresh(self) -> None:
        if _param_version(self.model) != self.version:
            self.__init__(self.model)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = self.model.blocks[0].ln0(self.model.emb(ids.view(-1)))  # (B, C)
        return self.step_embedding(x, state, ln0=False)

    @torch.inference_mode()
    def step_embedding(self, x: torch.Tensor, state: State, *, ln0: bool = True) -> tuple[torch.Tensor, State]:
        """One step from embeddings (B, C) (raw rows, ln0 applied here unless `ln0=False`)."""
        self._refresh()
        model = self.model
        if ln0:
            x = model.blocks[0].ln0(x)
        att_prev, wkv, ffn_prev = [], [], []
        v_first = x  # replaced by layer 0's values
        for i, layer in enumerate(self.layers):
            x, h, s, h2, v_first = self.layer_step(
                x, state.att_x_prev[i], state.wkv[i], state.ffn_x_prev[i], v_first, layer.first, layer.H, layer.params
            )
            att_prev.append(h)
            wkv.append(s)
            ffn_prev.append(h2)
        x = F.layer_norm(x, x.shape[-1:], model.ln_out.weight, model.ln_out.bias, model.ln_out.eps)
        new_state = type(state)(torch.stack(att_prev), torch.stack(wkv), torch.stack(ffn_prev))
        return F.linear(x, model.head.weight), new_state


def column_major_linears(model) -> None:
    """Re-store every `nn.Linear` weight of `model` column-major: same shape and values, transposed memory.

    A batch-1 step multiplies a vector by each weight; BLAS streams an [in, out]-contiguous matrix ~25% faster
    than an [out, in] one on CPU (measured on the 65536 x 768 head), and `F.linear` then reads it with no copy.
    No extra memory; sequence mode, training and saving (which makes tensors contiguous) work unchanged.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
                module.weight.data = module.weight.data.t().contiguous().t()


def _param_version(model) -> int:
    return sum(p._version for p in model.parameters())


@functools.cache
def _compiled_layer_step():
    """`_layer_step` under TorchScript: one interpreter call per layer instead of ~70 Python-dispatched ops.
    Scripted on first use (not at import); the eager function is the fallback."""
    try:
        return torch.jit.script(_layer_step)
    except Exception:  # TorchScript is optional: an unsupported build just runs the same code eagerly
        return _layer_step


def _layer_step(
    x: Tensor, att_prev: Tensor, S: Tensor, ffn_prev: Tensor, v_first: Tensor, first: bool, H: int, p: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One block for B rows: x (B, C), S (B, H, N, N) fp32 [value, key] -> (x, ln1 out, S, ln2 out, v_first)."""
    h = F.layer_norm(x, [x.shape[-1]], p[0], p[1], 1e-5)
    dx, S, v_first = _time_mix(h, att_prev, S, v_first, first, H, p)
    x = x + dx
    h2 = F.layer_norm(x, [x.shape[-1]], p[2], p[3], 1e-5)
    xk = torch.addcmul(h2, ffn_prev - h2, p[25])
    x = x + F.linear(torch.relu(F.linear(xk, p[26])).square(), p[27])
    return x, h, S, h2, v_first


def _time_mix(
    x: Tensor, x_prev: Tensor, S: Tensor, v_first: Tensor, first: bool, H: int, p: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """x, x_prev (B, C) post-ln1; S (B, H, N, N) -> (out (B, C), S, v_first). Indices follow `_Layer.params`."""
    B, C = x.shape
    xs = torch.addcmul(x.unsqueeze(1), (x_prev - x).unsqueeze(1), p[4])  # (B, 6, C)
    xr, xw, xk, xv, xa, xg = xs.unbind(1)
    r, k, v = F.linear(xr, p[5]), F.linear(xk, p[6]), F.linear(xv, p[7])
    # decay = exp(-e^-0.5 * sigmoid(.)); TorchScript cannot read a module-level float, hence the literal
    decay = torch.exp(torch.sigmoid((p[9] + torch.tanh(xw @ p[10]) @ p[11]).float()) * -0.6065306597126334)  # (B, C)
    a = torch.sigmoid(p[12] + (xa @ p[13]) @ p[14])
    g = torch.sigmoid(xg @ p[18]) @ p[19]
    kk = F.normalize((k * p[20]).view(B, H, -1), dim=-1, p=2.0, eps=1e-12)  # (B, H, N)
    k = k * (1 + (a - 1) * p[21])
    if first:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(p[15] + (xv @ p[16]) @ p[17])
    rh, kh, vh = r.view(B, H, -1).float(), k.view(B, H, -1).float(), v.view(B, H, -1).float()
    N = kh.shape[-1]
    # S = S diag(decay) + (S @ -kk) (kk*a)^T + v k^T, the two rank-1 terms as one batched product
    left = torch.cat([-(S @ kk.float().unsqueeze(-1)), vh.unsqueeze(-1)], -1).view(B * H, N, 2)
    right = torch.stack([(kk * a.view(B, H, -1)).float(), kh], -2).view(B * H, 2, N)
    S = torch.baddbmm((S * decay.view(B, H, 1, N)).view(B * H, N, N), left, right).view(B, H, N, N)
    y = F.group_norm((S @ rh.unsqueeze(-1)).view(B, C).to(x.dtype), H, p[23], p[24], 64e-5)
    bonus = ((rh * kh * p[22]).sum(-1, keepdim=True) * vh).view(B, C).to(x.dtype)
    return F.linear((y + bonus) * g, p[8]), S, v_first
