"""Prefill of a prompt piece: one sequence-mode forward, or, for a short piece of an RWKV-7 on CPU, one compiled call.

A sequence-mode forward has a fixed cost of a few hundred Python-dispatched ops per layer (about 1 ms per layer of a
C=128 RWKV-7 on one CPU thread, whatever T up to a chunk). A chat's pieces after a cached image or a previous turn
are often 3-30 tokens, so that fixed cost is most of their prefill. The short path runs the same equation functions
as both modes (`v7.projections`, `v7.mixed_output`, `v7.channel_mix`) over all T tokens at once, and the WKV
recurrence token by token with the kernels' reference step, all blocks in one TorchScript call; at batch 1 where the
native CPU decode builds (`mmrwkv.kernels.cpu`), the same equations run token by token in one native call instead
(about 3x faster on the C=64 L=2 default model, ~25 us a token). Either way its cost grows with T faster than the
chunked kernel's. Where the two cross depends on the model, the CPU and the thread count, so it is
measured once per backbone and remembered: two lengths per path, a few hundred ms for that C=128 model; skipped (no
short path) for a model whose short sequence-mode forward already takes over 20 ms, where compute dominates. Both
paths compute the same function (to ~1e-7, not bit for bit); a given backbone, thread count, native switch and length
always takes the same one.

Notation: B batch (1 here), T time, L layers, H heads, N head size, C = H * N, V vocabulary.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrwkv.kernels import cpu as native
from mmrwkv.rwkv import v7

# longest piece the short path may take, and the two lengths it is timed at against sequence mode
MAX_SHORT_TOKENS = 64
_PROBES = (4, 32)
_REPEATS = 3
# a model whose sequence-mode forward of the short probe costs more than this is compute-bound: the short path
# gains little there and timing it would cost seconds, so it is not used
MAX_PROBE_SECONDS = 0.02
_CROSSOVER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.inference_mode()
def prefill_embeddings(backbone: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """Embeddings x (1, T, C) (ln0 not applied) from `state` (None: zeros) -> (last logits (V,), new state)."""
    if 1 < x.shape[1] <= short_prefill_max(backbone):
        return _short(backbone, x, state)
    logits, state = backbone(x, state, last_only=True)
    return logits[0, -1], state


def short_prefill_max(backbone: Any) -> int:
    """Longest piece the short path prefills faster than sequence mode; 0 where it does not apply (not an fp32
    RWKV-7 on CPU). Measured on first use per backbone and thread count (see the module docstring)."""
    weight = backbone.head.weight
    if backbone.config.generation != 7 or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return 0
    # the thread count and whether the native loop is on (MMRWKV_NATIVE_DECODE) decide which path is faster where
    setting = (torch.get_num_threads(), native.enabled())
    known = _CROSSOVER.get(backbone)
    if known is None or known[0] != setting:
        known = _CROSSOVER[backbone] = (setting, measure_crossover(backbone))
    return known[1]


@torch.inference_mode()
def measure_crossover(backbone: Any) -> int:
    """The length (0..MAX_SHORT_TOKENS) below which the short path beats sequence mode, from straight lines through
    both paths' times at two lengths; 0 without timing the short path for a compute-bound model (MAX_PROBE_SECONDS)."""
    state = backbone.init_state(1)
    x = backbone.embed(torch.ones(1, max(_PROBES), dtype=torch.long, device=state.wkv.device))  # (1, T, C)
    t1, t2 = _PROBES
    if _fastest(lambda: backbone(x[:, :t1], state, last_only=True), repeats=1) > MAX_PROBE_SECONDS:
        return 0
    short = [_fastest(lambda t=t: _short(backbone, x[:, :t], state)) for t in _PROBES]
    seq = [_fastest(lambda t=t: backbone(x[:, :t], state, last_only=True)) for t in _PROBES]
    gap = [a - b for a, b in zip(short, seq, strict=True)]  # short minus sequence: negative where short wins
    if gap[0] >= 0:
        return 0
    if gap[1] <= gap[0]:
        return MAX_SHORT_TOKENS
    # the gap grows linearly with T: zero at t1 - gap1 (t2 - t1) / (gap2 - gap1)
    return int(min(MAX_SHORT_TOKENS, t1 - gap[0] * (t2 - t1) / (gap[1] - gap[0])))


def _fastest(run, repeats: int = _REPEATS) -> float:
    # one thread: CPU time is the cost and ignores other work on a busy machine; several threads: wall time
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    # the first call may compile or pack weights: not timed
    run()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        run()
        best = min(best, clock() - start)
    return best


def _short(backbone: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """The short path for x (1, T, C) embeddings: ln0, all blocks in one call (native where it applies, else
    TorchScript), ln_out and head on the last token."""
    state = backbone.init_state(1, device=x.device) if state is None else state
    H = backbone.blocks[0].att.n_head
    x = backbone.blocks[0].ln0(x)
    out = None
    if native.enabled():
        params = [v7.block_params(block, packed=False) for block in backbone.blocks]
        out = native.layers_prefill(x[0], state.att_x_prev, state.wkv, state.ffn_x_prev, H, params)
    if out is None:
        params = [v7.block_params(block) for block in backbone.blocks]
        out = v7.compiled(layers_short)(x, state.att_x_prev, state.wkv, state.ffn_x_prev, H, params)
    x, att, wkv, ffn = out
    last = x[:, -1:] if x.dim() == 3 else x.unsqueeze(1)  # (1, 1, C): TorchScript gives every token, native the last
    return backbone.logits(backbone.ln_out(last))[0, -1], type(state)(att, wkv, ffn)


def layers_short(
    x: Tensor, att_prev: Tensor, wkv: Tensor, ffn_prev: Tensor, H: int, params: list[dict[str, Tensor]]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every block on x (B, T, C) after ln0 and the stacked state (L, B, ...) -> (x, att_x_prev, wkv, ffn_x_prev)."""
    att_out, wkv_out, ffn_out = [], [], []
    v_first: Tensor | None = None
    for i, p in enumerate(params):
        x, h, S, h2, v_first = block_short(x, att_prev[i], wkv[i], ffn_prev[i], v_first, i == 0, H, p)
        att_out.append(h)
        wkv_out.append(S)
        ffn_out.append(h2)
    return x, torch.stack(att_out), torch.stack(wkv_out), torch.stack(ffn_out)


def block_short(
    x: Tensor, att_prev: Tensor, S: Tensor, ffn_prev: Tensor, v_first: Tensor | None, first: bool, H: int,
    p: dict[str, Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One block on x (B, T, C): `v7.block_step`'s equations with the projections over all T at once, the WKV state
    (B, H, N, N) [value, key] stepped token by token in fp32 -> (x, last ln1 out (B, C), S, last ln2 out, v_first)."""
    C = x.shape[-1]
    h = F.layer_norm(x, [C], p["ln1_w"], p["ln1_b"], 1e-5)
    dx = torch.cat((att_prev.unsqueeze(1), h[:, :-1]), 1) - h  # token shift: x_prev - x
    r, w, k, v, kk, a, g, v_first = v7.projections(h, dx, v_first, first, H, p)  # (B, T, H, N)
    y, S = wkv7_steps(r.float(), w.float(), k.float(), v.float(), -kk.float(), (kk * a).float(), S.float())
    x = x + v7.mixed_output(y.to(v.dtype), r, k, v, g, p)
    h2 = F.layer_norm(x, [C], p["ln2_w"], p["ln2_b"], 1e-5)
    x = x + v7.channel_mix(h2, torch.cat((ffn_prev.unsqueeze(1), h2[:, :-1]), 1) - h2, p)
    return x, h[:, -1], S, h2[:, -1], v_first


def wkv7_steps(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """`kernels.reference.wkv7_step` over T tokens: r..b (B, T, H, N), S (B, H, N, N) [value, key] -> y (B, T, H, N), S.

    Per token S = S * exp(w)[None, :] + (S @ a)[:, None] * b[None, :] + v[:, None] * k[None, :];  y = S @ r.
    The exp and every reshape are done once for all T, leaving seven ops per token.
    """
    rows = [t.unbind(1) for t in (w.exp().unsqueeze(-2), b.unsqueeze(-2), k.unsqueeze(-2))]  # each (B, H, 1, N)
    cols = [t.unbind(1) for t in (a.unsqueeze(-1), v.unsqueeze(-1), r.unsqueeze(-1))]  # each (B, H, N, 1)
    ys: list[Tensor] = []
    for t in range(r.shape[1]):
        S = S * rows[0][t] + (S @ cols[0][t]) * rows[1][t] + cols[1][t] * rows[2][t]
        ys.append(S @ cols[2][t])
    return torch.stack(ys, 1).squeeze(-1), S
