"""One-token decode steps and a batch-1 friendly weight layout.

Notation: B batch, C channels, V vocabulary. The one-token path lives with the model: `RWKV.forward` at T = 1
runs each generation's compiled step when it has one (RWKV-7: `mmrwkv.rwkv.v7.layers_step`, one TorchScript call
for all blocks, or at batch 1 on CPU the same equations natively, `mmrwkv.kernels.cpu`), so the equations exist
once. `RWKVStepper` only adapts that to the (B,) ids -> (B, V) logits shape generation loops want, without autograd
bookkeeping.
"""

from __future__ import annotations

import torch

from mmrwkv.rwkv.model import GENERATIONS
from mmrwkv.rwkv.state import State


class RWKVStepper:
    """One-token steps of an RWKV model (any generation): `stepper(ids (B,), state) -> (logits (B, V), state)`."""

    def __init__(self, model):
        self.model = model
        # one token of one sequence straight on the native plan where the generation has one (mmrwkv.rwkv.v7)
        config = getattr(model, "config", None)
        self._native = getattr(GENERATIONS.get(getattr(config, "generation", None)), "native_step", None)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self._native is not None and ids.numel() == 1:
            out = self._native(self.model, ids, state)
            if out is not None:
                return out
        logits, state = self.model(ids.view(-1, 1), state)  # (B, 1, V)
        return logits[:, 0], state

    @torch.inference_mode()
    def step_embedding(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step from raw embedding rows x (B, C) (ln0 is applied by the model)."""
        logits, state = self.model(x.unsqueeze(1), state)
        return logits[:, 0], state


def column_major_linears(model) -> None:
    """Re-store every `nn.Linear` weight of `model` column-major: same shape and values, transposed memory.

    A batch-1 step multiplies a vector by each weight; BLAS streams an [in, out]-contiguous matrix ~25% faster
    than an [out, in] one on CPU (measured on the 65536 x 768 head), and `F.linear` then reads it with no copy.
    The native batch-1 decode (`mmrwkv.kernels.cpu`) reads both layouts at the same speed.
    No extra memory; sequence mode, training and saving (which makes tensors contiguous) work unchanged.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
                module.weight.data = module.weight.data.t().contiguous().t()
