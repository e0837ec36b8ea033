"""oneDNN-packed copies of bf16 weights for batch-1 decode on CPU.

Decode multiplies one row per sequence by every weight, so it is bound by how fast the mat-vecs read weights.
For bf16 weights on CPU, PyTorch's dense path reads them no faster than fp32 (it widens as it goes), while
oneDNN's kernel on a weight packed once (`torch.ops.mkldnn`) reads them 1.6-2.6x faster (measured on the 0.1B
shapes, 1 thread, AVX-512). The packed copy costs one more copy of each packed bf16 weight in memory; it is built
on first use and rebuilt when the weight changes (in place or replaced), and it is used only without autograd
(the packed op has no gradient). MMRWKV_PACKED_DECODE=0 turns it off.

oneDNN packs bf16 weights only on CPUs with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT and raises elsewhere, so packing
is chosen only after `cpu_features()` reports what it needs; other CPUs take the dense path.
"""

from __future__ import annotations

import functools
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


# the features oneDNN's bf16 weight packing needs (either set)
BF16_PACKING_FEATURES = (frozenset({"avx512"}), frozenset({"avx_ne_convert"}))


@functools.cache
def cpu_features() -> frozenset[str]:
    """The CPU features this module may choose on, as torch detects them ("avx2", "avx512" (F, BW, VL, DQ),
    "avx512_bf16", "vnni", "amx_tile") plus "avx_ne_convert" from /proc/cpuinfo; the one place they are read, so
    a test can report another CPU."""
    checks = {"avx2": "_is_avx2_supported", "avx512": "_is_avx512_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "vnni": "_is_vnni_supported",
              "amx_tile": "_is_amx_tile_supported"}  # fmt: skip
    found = {name for name, check in checks.items() if getattr(torch.cpu, check, lambda: False)()}
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split() for line in info if line.startswith("flags")), [])
    except OSError:
        flags = []
    return frozenset(found | ({"avx_ne_convert"} & set(flags)))


def supported() -> bool:
    """Whether weights can be packed here: oneDNN present, the CPU has what its bf16 packing needs
    (`BF16_PACKING_FEATURES`), and not switched off by MMRWKV_PACKED_DECODE=0."""
    return (
        os.environ.get(ENV_VAR, "1") != "0"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and any(needed <= cpu_features() for needed in BF16_PACKING_FEATURES)
    )


def packed_weight(weight: Tensor) -> Tensor | None:
    """The packed copy of a 2-D bf16 CPU `weight` [out, in], or None when it does not qualify."""
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or weight.dim() != 2 or not supported():
        return None
    key = (weight.data_ptr(), weight._version, tuple(weight.stride()))
    hit = _CACHE.get(id(weight))
    if hit is None or hit[0]() is not weight or hit[1] != key:
        with torch.no_grad():
            copy = _pack(weight.detach().contiguous())
        ident = id(weight)
        hit = (weakref.ref(weight, lambda _: _CACHE.pop(ident, None)), key, copy)
        _CACHE[ident] = hit
    return hit[2]


def _pack(weight: Tensor) -> Tensor:
    """oneDNN's packed copy of a contiguous bf16 weight (raises on a CPU without `BF16_PACKING_FEATURES`)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


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
