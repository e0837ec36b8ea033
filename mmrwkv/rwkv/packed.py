"""oneDNN-packed copies of bf16 weights for batch-1 decode on CPU.

Decode multiplies one row per sequence by every weight, so it is bound by how fast the mat-vecs read weights.
For bf16 weights on CPU, PyTorch's dense path reads them no faster than fp32 (it widens as it goes), while
oneDNN's kernel on a weight packed once (`torch.ops.mkldnn`) reads them 1.6-2.6x faster (measured on the 0.1B
shapes, 1 thread, AVX-512). The packed copy costs one more copy of each packed bf16 weight in memory; it is built
on first use and rebuilt when the weight changes (in place or replaced), and it is used only without autograd
(the packed op has no gradient). MMRWKV_PACKED_DECODE=0 turns it off.
"""

from __future__ import annotations

import os
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

ENV_VAR = "MMRWKV_PACKED_DECODE"
SUFFIX = "#packed"

# `Scalar?[]` has no Python-side TorchScript annotation; TorchScript source can spell it.
_cu = torch.jit.CompilationUnit(
    """
def packed_linear(x: Tensor, packed: Tensor) -> Tensor:
    no_scalars: List[Optional[number]] = []
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", no_scalars, "")
"""
)
packed_linear = _cu.packed_linear

# id(weight) -> (weakref to it, its layout key, packed copy); keyed by id because tensors have elementwise `==`
_CACHE: dict[int, tuple[weakref.ref, tuple, Tensor]] = {}


def supported() -> bool:
    """Whether this build can pack weights (oneDNN present and not switched off by MMRWKV_PACKED_DECODE=0)."""
    return (
        os.environ.get(ENV_VAR, "1") != "0"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def packed_weight(weight: Tensor) -> Tensor | None:
    """The packed copy of a 2-D bf16 CPU `weight` [out, in], or None when it does not qualify."""
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or weight.dim() != 2 or not supported():
        return None
    key = (weight.data_ptr(), weight._version, tuple(weight.stride()))
    hit = _CACHE.get(id(weight))
    if hit is None or hit[0]() is not weight or hit[1] != key:
        with torch.no_grad():
            copy = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 1)
        ident = id(weight)
        hit = (weakref.ref(weight, lambda _: _CACHE.pop(ident, None)), key, copy)
        _CACHE[ident] = hit
    return hit[2]


def add_packed(p: dict[str, Tensor], names: tuple[str, ...]) -> None:
    """Add `name + SUFFIX` entries for the weights in `p` that qualify (no-op with autograd on)."""
    if torch.is_grad_enabled():
        return
    for name in names:
        packed = packed_weight(p[name])
        if packed is not None:
            p[name + SUFFIX] = packed


def linear(x: Tensor, p: dict[str, Tensor], name: str) -> Tensor:
    """x @ p[name].T, through the packed copy when `p` carries one (see `add_packed`)."""
    key = name + "#packed"  # TorchScript reads no module-level strings
    if key in p:
        return packed_linear(x, p[key])
    return F.linear(x, p[name])


def decode_linear(x: Tensor, weight: Tensor) -> Tensor:
    """x @ weight.T through the packed copy when there is no autograd and the weight qualifies."""
    packed = None if torch.is_grad_enabled() else packed_weight(weight)
    return F.linear(x, weight) if packed is None else packed_linear(x, packed)
