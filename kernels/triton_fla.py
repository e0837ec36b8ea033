"""Backend "fla": flash-linear-attention's `chunk_rwkv7` (the field's maintained Triton kernels) for wkv7.

Install with `pip install 'mmrwkv[fla]'`. Its recurrence and decay are ours (w is the log decay, a and b as the
model passes them); its state is [key, value], the transpose of ours, and it takes a scale (1 here). It serves
as a baseline for the GPU report and as a second oracle for backend "triton". GPU only: fla 0.6.0's kernels do
not run under the Triton interpreter (autotuning times configs; loop indices are used as tensors).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

__all__ = ["available", "wkv7"]


def available(device: torch.device) -> tuple[bool, str]:
    """(True, "") when fla's chunk_rwkv7 can run on `device`, else (False, the reason)."""
    try:
        _chunk_rwkv7()
    except ImportError as err:
        return False, f"flash-linear-attention is not importable ({err}); pip install 'mmrwkv[fla]'"
    if device.type != "cuda":
        return False, f"the tensors are on {device}, not a CUDA GPU"
    return True, ""


def wkv7(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
    *,
    lower_bound: float | None = None,
) -> tuple[Tensor, Tensor]:
    """RWKV-7 over [B, T, H, N] by fla's chunk_rwkv7; state [B, H, N, N] fp32 indexed [value, key].

    lower_bound: a promise that w >= lower_bound everywhere (fla then uses its faster tensor-core scheme).
    Returns (y in v's dtype, final state fp32).
    """
    bsz, t, h, n = r.shape
    s0 = r.new_zeros(bsz, h, n, n, dtype=torch.float32) if state is None else state.float()
    if t == 0:
        return v.new_zeros(v.shape), s0
    chunk_rwkv7 = _chunk_rwkv7()
    xs = [x.contiguous() for x in (r, w, k, v, a, b)]
    if len({x.dtype for x in xs}) > 1 or xs[0].dtype not in (torch.bfloat16, torch.float16, torch.float32):
        xs = [x.float() for x in xs]
    y, s_kv = chunk_rwkv7(
        *xs,
        scale=1.0,
        initial_state=s0.transpose(-1, -2).contiguous(),
        output_final_state=True,
        lower_bound=lower_bound,
    )
    return y.to(v.dtype), s_kv.transpose(-1, -2).float()


def _chunk_rwkv7() -> Any:
    with warnings.catch_warnings():
        # fla warns at import on a machine without a GPU ("roll back to CPU")
        warnings.simplefilter("ignore", UserWarning)
        from fla.ops.rwkv7 import chunk_rwkv7
    return chunk_rwkv7
