"""One-token steps of an RWKV model (any generation) in the shape generation loops want, and a batch-1 friendly
weight layout.

Notation: B batch, C channels, V vocabulary. `RWKVStepper` adapts `mmrwkv.inference.engine.step` (which picks the
route) to (B,) ids -> (B, V) logits without autograd bookkeeping.
"""

from __future__ import annotations

import torch

from mmrwkv.inference import engine
from mmrwkv.rwkv.state import State


class RWKVStepper:
    """One-token steps of an RWKV model (any generation): `stepper(ids (B,), state) -> (logits (B, V), state)`."""

    def __init__(self, model):
        self.model = model

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, state: State, *, by_rows: bool = True) -> tuple[torch.Tensor, State]:
        """by_rows=False: a batch of more than `engine.ROWS_BATCH_MAX` rows takes one sequence-mode step for all
        rows even where each row could take the native step (not bit-equal to one-at-a-time steps; for sampled
        rows)."""
        return engine.step(self.model, ids, state, exact=by_rows)

    @torch.inference_mode()
    def step_embedding(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step from raw embedding rows x (B, C) (ln0 is applied by the model)."""
        return engine.step_embedding(self.model, x, state)


def column_major_linears(model) -> None:
    """Re-store every `nn.Linear` weight of `model` column-major: same shape and values, transposed memory.

    A batch-1 step multiplies a vector by each weight; BLAS streams an [in, out]-contiguous matrix faster than an
    [out, in] one on CPU, and `F.linear` then reads it with no copy. The native step reads both layouts alike.
    No extra memory; sequence mode, training and saving (which makes tensors contiguous) work unchanged.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
                module.weight.data = module.weight.data.t().contiguous().t()
