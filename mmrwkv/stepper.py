"""One-token decode steps and a batch-1 friendly weight layout.

Notation: B batch, C channels, V vocabulary. The one-token path lives with the model: `RWKV.forward` at T = 1
runs each generation's compiled step when it has one (RWKV-7: `mmrwkv.rwkv.v7.layers_step`, one TorchScript call
for all blocks, or at batch 1 on CPU the same equations natively, `mmrwkv.kernels.cpu`), so the equations exist
once. `RWKVStepper` only adapts that to the (B,) ids -> (B, V) logits shape generation loops want, without autograd
bookkeeping.

Rows of a batch are stepped one at a time where one sequence would take the native step (RWKV-7 on CPU): the native
step computes in fp32 with its own rounding points, the batched TorchScript step in the model's dtype, ~1e-2 apart
in bf16 logits, enough to flip a greedy near-tie; stepped by rows, batched generation gives exactly the tokens of
one-at-a-time generation (`mmrwkv.generate.generate_batch`), bit for bit. The cost: each row reads the weights, where
the batched step reads them once; per token on a 0.1B shape, 1 thread (`mmrwkv bench batch`), bf16 0.97x / 1.6x / 2.4x
the batched step's time at B = 2 / 4 / 8, fp32 1.2x / 1.4x / 1.8x. A native batched step doing each row's arithmetic
as the one-row step does would keep both.
"""

from __future__ import annotations

import torch
from torch import nn

from mmrwkv.kernels import cpu as native
from mmrwkv.rwkv.model import GENERATIONS
from mmrwkv.rwkv.state import FIELDS, State


class RWKVStepper:
    """One-token steps of an RWKV model (any generation): `stepper(ids (B,), state) -> (logits (B, V), state)`."""

    def __init__(self, model):
        self.model = model
        # one token of one sequence straight on the native plan where the generation has one (mmrwkv.rwkv.v7)
        config = getattr(model, "config", None)
        self._native = getattr(GENERATIONS.get(getattr(config, "generation", None)), "native_step", None)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, state: State, *, by_rows: bool = True) -> tuple[torch.Tensor, State]:
        """by_rows=False: a batch takes the batched step even where its rows could take the one-sequence native
        step (faster from B = 4, not bit-equal to one-at-a-time steps; for sampled rows)."""
        if self._native is not None and ids.numel() == 1:
            out = self._native(self.model, ids, state)
            if out is not None:
                return out
        if by_rows and ids.numel() > 1 and self._rows_native(ids, state):
            return self._by_rows(ids.view(-1), state)
        logits, state = self.model(ids.view(-1, 1), state)  # (B, 1, V)
        return logits[:, 0], state

    def _rows_native(self, ids: torch.Tensor, state: State) -> bool:
        """Whether one row of this batch would take the native one-token step (see the module docstring); the
        native step itself still decides, so this only has to rule out where stepping by rows would be slow."""
        emb, head = getattr(self.model, "emb", None), getattr(self.model, "head", None)
        if self._native is None or type(emb) is not nn.Embedding or type(head) is not nn.Linear:
            return False
        on_cpu = ids.device.type == "cpu" and state.wkv.device.type == "cpu" and state.wkv.dtype == torch.float32
        return on_cpu and emb.weight.dtype in (torch.float32, torch.bfloat16) and native.enabled()

    def _by_rows(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids (B,) stepped one row at a time, each as a batch of one (the native step reads a contiguous state)."""
        logits, states = [], []
        for row in range(ids.shape[0]):
            one = state[row]
            one = type(state)(**{name: getattr(one, name).contiguous() for name in FIELDS})
            lg, one = self(ids[row : row + 1], one)
            logits.append(lg.view(1, -1))
            states.append(one)
        return torch.cat(logits), State.cat(states)

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
