"""The RWKV inference engine: one-token steps and prompt prefill for every generation, by one of two routes.

Notation: B batch, T time, C channels, V vocabulary, L layers.

Routes, chosen by what the call is (never by timing itself):
- sequence mode, the model's own forward (`RWKV.forward`): any generation, batch, length, device and dtype. For one
  token it is also the plain torch route, wherever the native one does not apply.
- native (`mmrwkv.kernels.cpu`): RWKV-7 on CPU without autograd, fp32 or bf16 weights, an fp32 state, one sequence
  at a time: one token (ln0, every block, ln_out and the head) in one call on a plan of the model's weights taken
  once, or a short prompt piece token by token in one call. A batch's rows step one after another on it, so batched
  greedy decoding gives the tokens, logits and states of one sequence at a time, bit for bit.

The native route reads each block's weights by their module names (the checkpoint keys, `native_weights`), the
names the equations in `mmrwkv.rwkv.v7` read them by. MMRWKV_NATIVE_DECODE=0 switches it off.
"""

from __future__ import annotations

import functools
import weakref

import torch
from torch import Tensor, nn

from mmrwkv.kernels import cpu as native
from mmrwkv.rwkv.state import FIELDS, State

# a prompt piece takes the native route token by token where its model is small enough that the weights stay in the
# CPU's caches between tokens (NATIVE_PREFILL_MODEL_BYTES of blocks) and the piece reads each layer's weights at
# most NATIVE_PREFILL_LAYER_BYTES in all; sequence mode reads them once but pays a fixed cost of a few hundred
# dispatched ops per layer (docs/performance.md "Inference routes" has the measurement behind these bounds)
NATIVE_PREFILL_MODEL_BYTES = 64 << 20
NATIVE_PREFILL_LAYER_BYTES = 100 << 20
MAX_NATIVE_PREFILL = 64
# a batch of at most this many rows steps row by row on the native route even where it need not (sampled rows): the
# rows cost less there, the batched step (one weight read for all rows) less from 4 rows in bf16
ROWS_BATCH_MAX = 2


def step(model: nn.Module, ids: Tensor, state: State, *, exact: bool = True) -> tuple[Tensor, State]:
    """One token per row: ids (B,) -> (logits (B, V), state). exact=False lets a batch of more than ROWS_BATCH_MAX
    rows take one sequence-mode step for all rows (one weight read for all of them) rather than each row the native
    step."""
    ids = ids.reshape(-1)
    if _native_call(model, state):
        if ids.numel() == 1:
            out = _native_ids(model, ids, state)
            if out is not None:
                return out
        elif exact or ids.numel() <= ROWS_BATCH_MAX:
            return _by_rows(model, ids, state)
    logits, state = model(ids.view(-1, 1), state)
    return logits[:, 0], state


def step_embedding(model: nn.Module, x: Tensor, state: State) -> tuple[Tensor, State]:
    """One step from raw embedding rows x (B, C) (ln0 is applied here) -> (logits (B, V), state)."""
    if x.shape[0] == 1 and _native_call(model, state):
        out = _native_token(model, x, state)
        if out is not None:
            return out
    logits, state = model(x.unsqueeze(1), state)
    return logits[:, 0], state


def prefill(model: nn.Module, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
    """A prompt piece of one sequence, ids (1, T) or raw embeddings (1, T, C), from `state` (None: the start state)
    -> (last logits (V,), state after it)."""
    if x.shape[0] != 1:
        raise ValueError(f"prefill: one sequence at a time, got a batch of {x.shape[0]}")
    state = model.init_state(1, device=x.device) if state is None else state
    T = x.shape[1]
    if T <= native_prefill_max(model) and _native_call(model, state) and not _called_with_more(model):
        out = _native_piece(model, x, state)
        if out is not None:
            return out[0].view(-1), out[1]
    h, state = model.forward_hidden(x, state)
    return head(model, h[:, -1:]).view(-1), state


def head(model: nn.Module, h: Tensor) -> Tensor:
    """The head on hidden states h (B, T, C) after ln_out -> (B, T, V): one row natively where that applies."""
    if h.shape[0] * h.shape[1] == 1 and type(model.head) is nn.Linear:  # (a LoRA head runs its own forward)
        logits = native.linear(h, model.head.weight)
        if logits is not None:
            return logits
    return model.logits(h)


def native_prefill_max(model: nn.Module) -> int:
    """Longest prompt piece the native route takes (0: none) for this model (see NATIVE_PREFILL_MODEL_BYTES)."""
    if not _native_model(model):
        return 0
    if model.head.weight.dtype != torch.float32:
        return 1
    layer = sum(p.numel() * p.element_size() for p in model.blocks[-1].parameters())
    if layer * len(model.blocks) > NATIVE_PREFILL_MODEL_BYTES:
        return 1
    return max(1, min(MAX_NATIVE_PREFILL, NATIVE_PREFILL_LAYER_BYTES // layer))


def native_weights(block: nn.Module) -> dict[str, Tensor]:
    """A block's weights by their module names (`native.LAYER_PARAMS`); an adapted linear layer (LoRA) gives its
    effective weight, so adapters act on the native route as in sequence mode."""
    weights = {}
    for name in native.LAYER_PARAMS:
        owner, _, leaf = name.rpartition(".")
        module = block.get_submodule(owner) if owner else block
        if leaf == "weight" and hasattr(module, "effective_weight"):
            weights[name] = module.effective_weight()
        elif leaf in module._parameters and module._parameters[leaf] is not None:
            weights[name] = module._parameters[leaf]
    return weights


def _native_call(model: nn.Module, state: State) -> bool:
    """Whether the native route may take this call: the model (`_native_model`), an fp32 CPU state, no autograd."""
    cpu_fp32 = state.wkv.device.type == "cpu" and state.wkv.dtype == torch.float32
    return cpu_fp32 and not torch.is_grad_enabled() and _native_model(model)


def _native_model(model: nn.Module) -> bool:
    """Whether the native route may take this model: an RWKV-7 on CPU in fp32 or bf16, with a plain embedding and
    head, the native build on (built here on first use)."""
    config, head_, emb = getattr(model, "config", None), getattr(model, "head", None), getattr(model, "emb", None)
    if getattr(config, "generation", None) != 7 or type(head_) is not nn.Linear or type(emb) is not nn.Embedding:
        return False
    weight = head_.weight
    ok = weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16) and emb.max_norm is None
    return ok and native.enabled()


def _native_ids(model: nn.Module, ids: Tensor, state: State) -> tuple[Tensor, State] | None:
    """One token of one sequence by id, from its embedding row (forward hooks or a replaced forward leave the
    call to the model, so that they run)."""
    if _called_with_more(model):
        return None
    token, weight = int(ids[0]), model.emb.weight
    if not 0 <= token < weight.shape[0]:
        return None  # the model's embedding says what is wrong
    return _native_token(model, weight[token], state)


def _native_token(model: nn.Module, x: Tensor, state: State) -> tuple[Tensor, State] | None:
    """One token from its raw embedding row x (C,) or (1, C) -> (logits (1, V), state); None where it declines."""
    args = (x.reshape(1, -1), state.att_x_prev, state.wkv, state.ffn_x_prev)
    plan = _plan(model)
    if plan is not None:
        out = plan.step(*args)
    else:  # adapters: their effective weights, taken per token
        blocks = model.blocks
        out = native.token_step(*args, blocks[0].att.n_head, [native_weights(b) for b in blocks], _ends(model))
    if not out:
        return None
    logits, att, wkv, ffn = out
    return logits.view(1, -1), type(state)(att, wkv, ffn)


def _native_piece(model: nn.Module, x: Tensor, state: State) -> tuple[Tensor, State] | None:
    """A prompt piece x (1, T) ids or (1, T, C) embeddings, token by token in one native call."""
    if not torch.is_floating_point(x):
        if x.shape[1] == 1:
            return _native_ids(model, x[0], state)
        x = model.embed(x)
    elif x.shape[1] == 1:
        return _native_token(model, x[0], state)
    blocks = model.blocks
    h = model.apply_ln0(x)[0]  # (T, C)
    weights = [native_weights(b) for b in blocks]
    out = native.layers_prefill(h, state.att_x_prev, state.wkv, state.ffn_x_prev, blocks[0].att.n_head, weights)
    if out is None:
        return None
    last, att, wkv, ffn = out
    return head(model, model.ln_out(last.view(1, 1, -1)))[0], type(state)(att, wkv, ffn)


def _by_rows(model: nn.Module, ids: Tensor, state: State) -> tuple[Tensor, State]:
    """ids (B,) stepped one row at a time, each as a batch of one (the native step reads a contiguous state)."""
    logits, states = [], []
    for row in range(ids.shape[0]):
        one = state[row]
        one = type(state)(**{name: getattr(one, name).contiguous() for name in FIELDS})
        lg, one = step(model, ids[row : row + 1], one)
        logits.append(lg.view(1, -1))
        states.append(one)
    return torch.cat(logits), State.cat(states)


def _ends(model: nn.Module) -> tuple[Tensor, ...]:
    ln0, ln_out = model.blocks[0].ln0, model.ln_out
    return ln0.weight, ln0.bias, ln_out.weight, ln_out.bias, model.head.weight


def _called_with_more(model: nn.Module) -> bool:
    """Whether calling the model does more than its class's forward: forward hooks (its own or global ones), or a
    forward replaced on the instance. The native route then leaves the call to the model, so they run."""
    from torch.nn.modules import module

    hooks = (model._forward_hooks, model._forward_pre_hooks, module._global_forward_hooks,
             module._global_forward_pre_hooks)  # fmt: skip
    return any(hooks) or "forward" in model.__dict__


# The native plan of each model (`native.token_plan`): its weights taken once, with the count of module and parameter
# registrations (anywhere, torch's global hooks) when taken: a block, linear layer or parameter swapped for another
# since (an adapter put in, a layer replaced) makes the next token take a new plan.
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_registrations = [0]


def _plan(model: nn.Module):
    """The model's current native plan, taken here where there is none; None where none may be taken (adapters, or
    torch conversions that replace parameters unseen)."""
    if _conversions_replace_parameters():
        return None
    plan = _plans.get(model)
    if plan is not None and plan[0] == _registrations[0]:
        return plan[1]
    blocks = model.blocks
    if not _plannable(blocks):
        return None
    _watch_registrations()
    taken = native.token_plan(blocks[0].att.n_head, [native_weights(b) for b in blocks], _ends(model))
    _plans[model] = (_registrations[0], taken)
    return taken


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
