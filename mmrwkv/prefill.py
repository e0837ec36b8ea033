"""Prefill of a prompt piece: one sequence-mode forward, or one-token steps when the piece is short enough that
steps cost less.

A sequence-mode forward has a fixed cost of a few hundred dispatched ops per layer (about 1 ms per layer of a C=128
RWKV-7 on one CPU thread, whatever T up to a chunk), which a compiled one-token step avoids; but steps read every
weight once per token. Which wins for T tokens depends on the model, its dtype, the CPU and the thread count, so it
is measured once per backbone on CPU (a few forwards, ~20 ms for that C=128 model) and remembered. On other devices
prefill always runs in sequence mode. Both paths compute the same function (equal to ~1e-6, not bit for bit).

Notation: B batch (1 here), T time, C width, V vocabulary.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch
from torch import Tensor

# longest piece ever stepped; also the length the sequence-mode forward is timed at
MAX_STEP_TOKENS = 16
_REPEATS = 3
_CROSSOVER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.inference_mode()
def prefill_embeddings(backbone: Any, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    """Embeddings x (1, T, C) (ln0 not applied) from `state` -> (last logits (V,), new state)."""
    if x.shape[1] <= step_prefill_max(backbone):
        for t in range(x.shape[1] - 1):
            _, state = backbone.forward_hidden(x[:, t : t + 1], state)
        x = x[:, -1:]
    logits, state = backbone(x, state, last_only=True)
    return logits[0, -1], state


def step_prefill_max(backbone: Any) -> int:
    """Longest piece that one-token steps prefill faster than a sequence-mode forward (1: always sequence mode).

    Measured on first use per backbone, thread count and dtype (see the module docstring).
    """
    weight = next(backbone.parameters())
    if weight.device.type != "cpu":
        return 1
    setting = (torch.get_num_threads(), weight.dtype)
    known = _CROSSOVER.get(backbone)
    if known is None or known[0] != setting:
        known = _CROSSOVER[backbone] = (setting, measure_crossover(backbone))
    return known[1]


@torch.inference_mode()
def measure_crossover(backbone: Any) -> int:
    """How many one-token steps cost as much as one sequence-mode forward of MAX_STEP_TOKENS tokens (1..16)."""
    state = backbone.init_state(1)
    x = backbone.embed(torch.ones(1, MAX_STEP_TOKENS, dtype=torch.long, device=state.wkv.device))  # (1, T, C)
    sequence = _fastest(lambda: backbone.forward_hidden(x, state))
    step = _fastest(lambda: backbone.forward_hidden(x[:, :1], state))
    return max(1, min(MAX_STEP_TOKENS, int(sequence / max(step, 1e-9))))


def _fastest(run) -> float:
    # one thread: CPU time is the cost and ignores other work on a busy machine; several threads: wall time
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    # the first call may compile or pack weights: not timed
    run()
    best = float("inf")
    for _ in range(_REPEATS):
        start = clock()
        run()
        best = min(best, clock() - start)
    return best
