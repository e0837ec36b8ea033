"""RWKV-7 "Goose": generalized delta rule with in-context learning rate `a` and the value residual.

Notation: B batch, T time, H heads, N head size, C = H*N, F = dim_ffn; LoRA widths Dw, Da, Dv, Dg.
Mixing convention: x + (x_prev - x)*mu. Layer 0 has no v0/v1/v2: its values become `v_first` for later layers.

The equations exist once, as TorchScript-compatible functions of a parameter dict (`projections`, `mixed_output`,
`channel_mix`). Sequence mode runs them eagerly around `kernels.wkv7`; one token (T == 1) runs `layers_step`: the
same functions and the kernels' reference WKV step, compiled into one TorchScript call for all blocks, because
batch-1 decode is bound by weight reads plus per-op dispatch, and ~100 Python-dispatched ops per layer cost as much
as a large mat-vec.
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrwkv import kernels
from mmrwkv.kernels import cpu as native
from mmrwkv.kernels.reference import wkv7_step
from mmrwkv.rwkv import packed as packed_weights
from mmrwkv.rwkv.common import shifted
from mmrwkv.rwkv.config import RWKVConfig
from mmrwkv.rwkv.packed import linear
from mmrwkv.rwkv.state import State


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

    def params(self) -> dict[str, Tensor]:
        """The parameters by the names the equation functions read: the Parameter objects themselves, built per
        call (never stale), from the registries directly because nn.Module attribute lookup costs ~1 us each."""
        sub = self._modules
        p = dict(self._parameters)  # x_r .. x_g, w0 .. g2, (v0 v1 v2), k_k, k_a, r_k
        p.update(W_r=_weight(sub["receptance"]), W_k=_weight(sub["key"]), W_v=_weight(sub["value"]),
                 W_o=_weight(sub["output"]),
                 ln_x_w=sub["ln_x"]._parameters["weight"], ln_x_b=sub["ln_x"]._parameters["bias"])  # fmt: skip
        return p

    def forward(self, x: Tensor, x_prev: Tensor, wkv: Tensor, v_first: Tensor | None = None, *,
                backend: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (B, T, C) post-ln1, x_prev (B, C), wkv (B, H, N, N) [value, key] -> (out, wkv, v_first)."""
        p = self.params()
        dx = shifted(x, x_prev) - x
        r, w, k, v, kk, a, g, v_first = projections(x, dx, v_first, self.layer_id == 0, self.n_head, p)
        y, wkv = kernels.wkv7(r, w, k, v, -kk, kk * a, wkv, backend=backend)
        return mixed_output(y, r, k, v, g, p), wkv, v_first


class ChannelMix(nn.Module):
    """RWKV-7 feed-forward: W_v relu(W_k xk)^2, no receptance."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, F_ = config.n_embd, config.dim_ffn
        self.x_k = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, F_, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def params(self) -> dict[str, Tensor]:
        """The parameters by the names `channel_mix` reads."""
        sub = self._modules
        return {"ffn_x_k": self._parameters["x_k"], "ffn_W_k": _weight(sub["key"]),
                "ffn_W_v": _weight(sub["value"])}  # fmt: skip

    def forward(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """x (B, T, C) post-ln2, x_prev (B, C) -> (B, T, C)."""
        return channel_mix(x, shifted(x, x_prev) - x, self.params())


def _weight(linear_module: nn.Module) -> Tensor:
    """A linear layer's weight as the equations read it: the Parameter itself, or, for a layer that wraps an
    adapter (LoRA), its effective weight, so adapters act in every mode (sequence and one-token)."""
    if type(linear_module) is nn.Linear:  # the common case, without getattr's failed lookup (~2 us, 72 per token)
        return linear_module._parameters["weight"]
    effective = getattr(linear_module, "effective_weight", None)
    return linear_module._parameters["weight"] if effective is None else effective()


def projections(
    x: Tensor, dx: Tensor, v_first: Tensor | None, first: bool, H: int, p: dict[str, Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The WKV inputs of x (..., C) post-ln1 and dx = x_prev - x -> r, w (log decay), k, v, kk, a as (..., H, N);
    g, v_first (..., C). Leading dims are (B, T) in sequence mode, (B,) for one token."""
    # the six token-shift mixes in one op; the (1, 1, C) vectors are read as (C,) so that they broadcast over
    # (B, T, C) and the one-token (B, C) alike
    mix = torch.cat((p["x_r"], p["x_w"], p["x_k"], p["x_v"], p["x_a"], p["x_g"]), dim=1).view(6, -1)  # (6, C)
    xr, xw, xk, xv, xa, xg = torch.addcmul(x.unsqueeze(-2), dx.unsqueeze(-2), mix).unbind(-2)  # (..., C)
    r, k, v = linear(xr, p, "W_r"), linear(xk, p, "W_k"), linear(xv, p, "W_v")  # (..., C)
    # w = -e^-0.5 * sigmoid(.), so decay = exp(w) lies in (0.545, 1); TorchScript reads no module-level floats
    w = -0.6065306597126334 * torch.sigmoid((p["w0"].view(-1) + torch.tanh(xw @ p["w1"]) @ p["w2"]).float())
    a = torch.sigmoid(p["a0"].view(-1) + (xa @ p["a1"]) @ p["a2"])
    g = torch.sigmoid(xg @ p["g1"]) @ p["g2"]
    kk = F.normalize(_heads(k * p["k_k"].view(-1), H), dim=-1, p=2.0, eps=1e-12)  # (..., H, N)
    k = k * (1 + (a - 1) * p["k_a"].view(-1))
    if first:
        v_first = v
    else:
        assert v_first is not None, "RWKV-7 layers after the first need layer 0's values"
        v = v + (v_first - v) * torch.sigmoid(p["v0"].view(-1) + (xv @ p["v1"]) @ p["v2"])
    return _heads(r, H), _heads(w, H), _heads(k, H), _heads(v, H), kk, _heads(a, H), g, v_first


def mixed_output(y: Tensor, r: Tensor, k: Tensor, v: Tensor, g: Tensor, p: dict[str, Tensor]) -> Tensor:
    """WKV output y and r, k, v (..., H, N), gate g (..., C) -> the time mix's output (..., C)."""
    H = y.shape[-2]
    y = F.group_norm(y.reshape(-1, g.shape[-1]), H, p["ln_x_w"], p["ln_x_b"], 64e-5).view(y.shape)
    bonus = (r * k * p["r_k"]).sum(dim=-1, keepdim=True) * v  # (..., H, N)
    return linear((y + bonus).view(g.shape) * g, p, "W_o")


def channel_mix(x: Tensor, dx: Tensor, p: dict[str, Tensor]) -> Tensor:
    """x (..., C) post-ln2 and dx = x_prev - x -> W_v relu(W_k xk)^2 (..., C)."""
    xk = torch.addcmul(x, dx, p["ffn_x_k"].view(-1))
    return linear(torch.square(torch.relu(linear(xk, p, "ffn_W_k"))), p, "ffn_W_v")


def _heads(x: Tensor, H: int) -> Tensor:
    """(..., C) -> (..., H, N), a view."""
    return x.unflatten(-1, [H, -1])


def block_step(
    x: Tensor, att_prev: Tensor, S: Tensor, ffn_prev: Tensor, v_first: Tensor | None, first: bool, H: int,
    p: dict[str, Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One block on one token: x (B, C), S (B, H, N, N) [value, key] -> (x, ln1 out (B, C), S, ln2 out, v_first).

    The same equations as sequence mode; the WKV update is the kernels' reference step (what `kernels.wkv7` runs
    for T == 1), in fp32 (fp64 for fp64 inputs) with the state kept in that precision.
    """
    C = x.shape[-1]
    h = F.layer_norm(x, [C], p["ln1_w"], p["ln1_b"], 1e-5)
    r, w, k, v, kk, a, g, v_first = projections(h, att_prev - h, v_first, first, H, p)
    dt = torch.float64 if v.dtype == torch.float64 or S.dtype == torch.float64 else torch.float32
    y, S = wkv7_step(r.to(dt), w.to(dt), k.to(dt), v.to(dt), -kk.to(dt), (kk * a).to(dt), S.to(dt))
    x = x + mixed_output(y.to(v.dtype), r, k, v, g, p)
    h2 = F.layer_norm(x, [C], p["ln2_w"], p["ln2_b"], 1e-5)
    x = x + channel_mix(h2, ffn_prev - h2, p)
    return x, h, S, h2, v_first


def layers_step(
    x: Tensor, att_prev: Tensor, wkv: Tensor, ffn_prev: Tensor, H: int, params: list[dict[str, Tensor]]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every block on one token: x (B, C) and the stacked state (L, B, ...) -> (x, att_x_prev, wkv, ffn_x_prev)."""
    att_out, wkv_out, ffn_out = [], [], []
    v_first: Tensor | None = None
    for i, p in enumerate(params):
        x, h, S, h2, v_first = block_step(x, att_prev[i], wkv[i], ffn_prev[i], v_first, i == 0, H, p)
        att_out.append(h)
        wkv_out.append(S)
        ffn_out.append(h2)
    return x, torch.stack(att_out), torch.stack(wkv_out), torch.stack(ffn_out)


def block_params(block: nn.Module, *, packed: bool = True) -> dict[str, Tensor]:
    """A block's parameters by the names `block_step` reads, with packed weights when they apply (no autograd)."""
    sub = block._modules
    ln1, ln2 = sub["ln1"]._parameters, sub["ln2"]._parameters
    p = sub["att"].params()
    p.update(sub["ffn"].params())
    p.update(ln1_w=ln1["weight"], ln1_b=ln1["bias"], ln2_w=ln2["weight"], ln2_b=ln2["bias"])
    if packed:
        packed_weights.add_packed(p, _LINEARS)
    return p


def run_layers_step(blocks: nn.ModuleList, x: Tensor, state: State) -> tuple[Tensor, State]:
    """`RWKV.forward_hidden`'s blocks for T == 1: x (B, 1, C) after ln0 -> (x (B, 1, C), new state), one compiled
    call for the whole stack (no Python between layers)."""
    H = blocks[0].att.n_head
    args = (x[:, 0], state.att_x_prev, state.wkv, state.ffn_x_prev, H)
    out = None
    if native.applies(x, state.wkv):
        # batch 1 without autograd on CPU: the same equations fused natively (mmrwkv.kernels.cpu), when it builds
        out = native.layers_step(*args, [block_params(block, packed=False) for block in blocks])
    if out is None:
        out = compiled(layers_step)(*args, [block_params(block) for block in blocks])
    x, att, wkv, ffn = out
    return x.unsqueeze(1), type(state)(att, wkv, ffn)


def run_token_step(model: nn.Module, x: Tensor, state: State) -> tuple[Tensor, State] | None:
    """`RWKV.forward` for one token of one sequence, x (1, 1, C) raw embeddings, in one native call (ln0, every block,
    ln_out, the head: `mmrwkv.kernels.cpu.token_step`) -> (logits (1, 1, V), state); None where that does not apply
    (the caller runs the usual path)."""
    blocks, head = model.blocks, model.head
    # an adapter (LoRA) on the head: its own forward is cheaper than the effective 65536 x C weight per token
    if state.batch_size != 1 or type(head) is not nn.Linear or not native.applies(x[:, 0], state.wkv):
        return None
    args = (x[:, 0], state.att_x_prev, state.wkv, state.ffn_x_prev)
    plan = _plans.get(model)
    current = plan is not None and plan[0] == _registrations[0] and not _conversions_replace_parameters()
    out = native.plan_step(plan[1], *args) if current else None
    if out is None:
        ln0, ln_out = blocks[0].ln0, model.ln_out
        ends = (ln0.weight, ln0.bias, ln_out.weight, ln_out.bias, head.weight)
        params = [block_params(block, packed=False) for block in blocks]
        out = native.token_step(*args, blocks[0].att.n_head, params, ends)
        if out is not None and _plannable(blocks) and not _conversions_replace_parameters():
            _watch_registrations()
            _plans[model] = (_registrations[0], native.token_plan(blocks[0].att.n_head, params, ends))
    if out is None:
        return None
    logits, att, wkv, ffn = out
    return logits.unsqueeze(1), type(state)(att, wkv, ffn)


def native_step(model: nn.Module, ids: Tensor, state: State) -> tuple[Tensor, State] | None:
    """One token of one sequence, ids (1,) or (1, 1), straight on the model's current native plan -> (logits (1, V),
    state): `run_token_step` without `RWKV.forward` around it (module calls, checks and views cost ~0.5 ms per
    token with the caches cold from streaming the weights: 2-5% of a 0.1B token here). None where there is no
    current plan (the first token takes one through `RWKV.forward`), autograd is on, or the plan declines."""
    plan = _plans.get(model)
    if plan is None or plan[0] != _registrations[0] or ids.numel() != 1 or torch.is_grad_enabled():
        return None
    if not native.enabled():  # switched off since the plan was taken (MMRWKV_NATIVE_DECODE=0)
        return None
    if _called_with_more(model):
        return None
    emb = model.emb
    if type(emb) is not nn.Embedding or emb.max_norm is not None or _conversions_replace_parameters():
        return None
    token, weight = int(ids.reshape(-1)[0]), emb.weight
    if not 0 <= token < weight.shape[0]:
        return None  # RWKV.forward's embedding says what is wrong
    out = plan[1].step(weight[token], state.att_x_prev, state.wkv, state.ffn_x_prev)
    if not out:
        return None
    logits, att, wkv, ffn = out
    return logits, type(state)(att, wkv, ffn)


def _called_with_more(model: nn.Module) -> bool:
    """Whether calling the model does more than its class's forward: forward hooks (its own or global ones), or a
    forward replaced on the instance. `native_step` then leaves the call to `RWKV.forward`, so they run."""
    from torch.nn.modules import module

    hooks = (model._forward_hooks, model._forward_pre_hooks, module._global_forward_hooks,
             module._global_forward_pre_hooks)  # fmt: skip
    return any(hooks) or "forward" in model.__dict__


# The native plan of each model (`mmrwkv.kernels.cpu.token_plan`): its parameters taken once, with the count of
# module and parameter registrations (anywhere, torch's global hooks) when taken: a block, linear layer or parameter
# swapped for another since (an adapter put in, a layer replaced) makes the next token take a new plan.
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_registrations = [0]


def release_plans(model: nn.Module | None = None) -> None:
    """Drop the native plan of `model` (of every model when None). A plan refers to the parameters (weakly: it keeps
    none alive), which torch's opt-in swap-style conversion (`torch.__future__.set_swap_module_params_on_conversion`)
    refuses, as it refuses any other holder (an optimizer): release before such a conversion."""
    if model is None:
        _plans.clear()
    else:
        _plans.pop(model, None)


def _count_registration(*_args) -> None:
    _registrations[0] += 1


@functools.cache
def _watch_registrations() -> None:
    from torch.nn.modules import module

    module.register_module_module_registration_hook(_count_registration)
    module.register_module_parameter_registration_hook(_count_registration)
    module.register_module_buffer_registration_hook(_count_registration)


def _conversions_replace_parameters() -> bool:
    """torch's opt-in conversions (`model.to(...)`) that put new tensors in place of the parameters without
    registering them (no hook sees them): with either on, no plans are taken."""
    future = torch.__future__
    return future.get_overwrite_module_params_on_conversion() or future.get_swap_module_params_on_conversion()


def _plannable(blocks: nn.ModuleList) -> bool:
    """Whether every linear layer is a plain one (an adapter's effective weight is computed per token instead)."""
    linears = [(b.att.receptance, b.att.key, b.att.value, b.att.output, b.ffn.key, b.ffn.value) for b in blocks]
    return all(type(m) is nn.Linear for group in linears for m in group)


_LINEARS = ("W_r", "W_k", "W_v", "W_o", "ffn_W_k", "ffn_W_v")


@functools.cache
def compiled(fn):
    """`fn` under TorchScript (compiled on first use, not at import); the eager function is the fallback."""
    try:
        return torch.jit.script(fn)
    except Exception:  # TorchScript is optional: an unsupported build runs the same code eagerly
        return fn
