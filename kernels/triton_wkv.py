"""Chunked RWKV-7 WKV in Triton (backend "triton"): forward and backward, state in and out.

Notation: B batch, T time, H heads, N head size, L = `chunk` steps per chunk. State S [N, N] fp32 indexed
[value, key], as everywhere in mmrwkv.kernels. One program per (batch, head) walks the chunks in order
(backward: in reverse); everything inside a chunk is a handful of [L, N] x [N, N] and [L, L] products, which
run on tensor cores. Within a chunk, with g the inclusive cumulative log decay, gx = g - w, sa_t = S_{t-1} a_t:

    U  = (I - tril<(A~ B^T))^{-1} (A~_0 S0^T + tril<(A~ K^T) V)           the sa_t of every step (the UT form)
    Y  = R~_0 S0^T + tril<=(R~ B^T) U + tril<=(R~ K^T) V
    S' = S0 diag(e^{g_L}) + U^T (B e^{g_L - g}) + V^T (K e^{g_L - g})

where A~_0 = a e^{gx}, R~_0 = r e^{g} (relative to the chunk start) and A~ = a e^{gx - g_m}, R~ = r e^{g - g_m},
B = b e^{g_m - g}, K = k e^{g_m - g} are taken relative to the chunk's middle step m, so that the factors stay
within fp32 range for log decays down to about -160 / L per step (RWKV-7's are >= -exp(-0.5)). The strictly
lower triangular inverse is the product (I + A)(I + A^2)(I + A^4)... (A is nilpotent). Forward saves the state
before every chunk; backward recomputes the chunk from it and applies the adjoint of each line above.

Schedules (MMRWKV_TRITON_SCHEDULE): "parallel" (default) writes U = WY S0^T + UV's factors for every chunk at once,
runs a light scan per (batch, head) for the chunk states (S' = S e^{g_L} + U^T B_L + V^T K_L) and backward's
state gradients (dS0 = dS e^{g_L} + (dS B_L^T) WY + dy^T (R~_0 + tril<=(R~ B^T) WY)), and does everything else
one program per (batch, head, chunk); "sequential" walks the chunks in one program per (batch, head).

Inputs run in bf16 when all of them are bf16 (products then use tf32), otherwise in fp32 (exact fp32 products);
`y` comes back in the dtype of `v`. On CPU tensors it runs under the Triton interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["CHUNK", "SCHEDULE", "available", "wkv7"]

# steps per chunk: 16, 32 or 64 (a tensor-core tile side); MMRWKV_TRITON_CHUNK overrides it
CHUNK = 32
# "parallel" or "sequential"; MMRWKV_TRITON_SCHEDULE overrides it
SCHEDULE = "parallel"
_kernels: dict[bool, Any] = {}


def available(device: torch.device) -> tuple[bool, str]:
    """(True, "") when the Triton backend can run on `device`, else (False, the reason)."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return False, f"triton is not importable ({err})"
    if device.type == "cpu" and not _interpret():
        return False, "CPU tensors need the Triton interpreter (set TRITON_INTERPRET=1)"
    if device.type not in ("cpu", "cuda"):
        return False, f"the tensors are on {device}, not a CUDA GPU"
    return True, ""


def schedule() -> str:
    """The schedule in use: MMRWKV_TRITON_SCHEDULE ("parallel" or "sequential") or SCHEDULE."""
    value = os.environ.get("MMRWKV_TRITON_SCHEDULE", SCHEDULE)
    if value not in ("parallel", "sequential"):
        raise ValueError(f"MMRWKV_TRITON_SCHEDULE={value!r} is not a schedule; choose parallel or sequential")
    return value


def chunk_size() -> int:
    """The chunk length in use: MMRWKV_TRITON_CHUNK (16, 32 or 64) or CHUNK."""
    value = os.environ.get("MMRWKV_TRITON_CHUNK", str(CHUNK))
    if value not in ("16", "32", "64"):
        raise ValueError(f"MMRWKV_TRITON_CHUNK={value!r} is not a chunk length; choose 16, 32 or 64")
    return int(value)


def wkv7(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """RWKV-7 over [B, T, H, N] (N a power of two >= 16); w is the log decay; state [B, H, N, N] fp32.

    Returns (y [B, T, H, N] in v's dtype, final state [B, H, N, N] fp32).
    """
    bsz, t, h, n = r.shape
    if n < 16 or n & (n - 1):
        raise ValueError(f"wkv7 triton: head size N={n} is not supported; use a power of two >= 16")
    s0 = r.new_zeros(bsz, h, n, n, dtype=torch.float32) if state is None else state.float().contiguous()
    if t == 0:
        return v.new_zeros(v.shape), s0
    xs = [x.contiguous() for x in (r, w, k, v, a, b)]
    if not all(x.dtype == torch.bfloat16 for x in xs):
        xs = [x.float() for x in xs]
    y, s_t = _Wkv7.apply(*xs, s0)
    return y.to(v.dtype), s_t


class _Wkv7(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, s0):
        save = any(ctx.needs_input_grad)
        y, s_t, ckpt, wy = _forward(r, w, k, v, a, b, s0, save)
        if save:
            ctx.save_for_backward(r, w, k, v, a, b, ckpt, wy)
            ctx.dtypes = [x.dtype for x in (r, w, k, v, a, b)]
        return y, s_t

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, ds_t):
        r, w, k, v, a, b, ckpt, wy = ctx.saved_tensors
        dy = torch.zeros_like(v) if dy is None else dy.to(v.dtype).contiguous()
        bsz, _, h, n = r.shape
        ds_t = r.new_zeros(bsz, h, n, n, dtype=torch.float32) if ds_t is None else ds_t.float().contiguous()
        grads = _backward(r, w, k, v, a, b, ckpt, wy, dy, ds_t)
        return *(g.to(dt) for g, dt in zip(grads[:6], ctx.dtypes, strict=True)), grads[6]


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _launch_args(r: Tensor) -> dict[str, Any]:
    _, t, h, n = r.shape
    chunk = chunk_size()
    return {
        "T": t,
        "H": h,
        "N": n,
        "BT": chunk,
        "PREC": "tf32" if r.dtype == torch.bfloat16 else "ieee",
        # 8 warps keep the per-chunk kernels free of register spills at N = 64 (ptxas, sm_90)
        "num_warps": int(os.environ.get("MMRWKV_TRITON_WARPS", "8")),
    }


def _scan_warps(args: dict[str, Any]) -> dict[str, Any]:
    """The scans run one program per (batch, head): 4 warps leave room for two of them per SM at chunk 16."""
    return {**args, "num_warps": 4 if args["BT"] == 16 else args["num_warps"]}


def _forward(r, w, k, v, a, b, s0, save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """y (fp32), final state, the state before every chunk and (parallel schedule) the WY factors."""
    kern = _get_kernels()
    bsz, t, h, n = r.shape
    args = _launch_args(r)
    nc, log2 = math.ceil(t / args["BT"]), int(math.log2(args["BT"]))
    f32 = {"dtype": torch.float32, "device": r.device}
    y, s_t = torch.empty(r.shape, **f32), torch.empty_like(s0)
    parallel = schedule() == "parallel"
    ckpt = torch.empty((bsz, h, nc, n, n) if save or parallel else (1,), **f32)
    if not parallel:
        kern.wkv7_fwd_kernel[(bsz * h,)](r, w, k, v, a, b, s0, y, s_t, ckpt, NC=nc, LOG2BT=log2, SAVE=save, **args)
        return y, s_t, ckpt, ckpt.new_empty(0)
    wy, uv = torch.empty(r.shape, **f32), torch.empty(r.shape, **f32)
    kern.wkv7_prep_kernel[(bsz * h, nc)](w, k, v, a, b, wy, uv, LOG2BT=log2, **args)
    kern.wkv7_scan_kernel[(bsz * h,)](w, k, v, b, wy, uv, s0, s_t, ckpt, NC=nc, **_scan_warps(args))
    kern.wkv7_out_kernel[(bsz * h, nc)](r, w, k, v, a, b, ckpt, y, NC=nc, LOG2BT=log2, **args)
    return y, s_t, ckpt, wy


def _backward(r, w, k, v, a, b, ckpt, wy, dy, ds_t) -> list[Tensor]:
    kern = _get_kernels()
    bsz, _, h, _ = r.shape
    args = _launch_args(r)
    nc, log2 = ckpt.shape[2], int(math.log2(args["BT"]))
    grads = [torch.empty(r.shape, dtype=torch.float32, device=r.device) for _ in range(6)]
    ds0 = torch.empty_like(ds_t)
    if wy.numel() == 0:  # the sequential schedule's forward
        kern.wkv7_bwd_kernel[(bsz * h,)](r, w, k, v, a, b, ckpt, dy, ds_t, *grads, ds0, NC=nc, LOG2BT=log2, **args)
        return [*grads, ds0]
    dck = torch.empty_like(ckpt)
    kern.wkv7_bscan_kernel[(bsz * h,)](r, w, b, wy, dy, ds_t, dck, ds0, NC=nc, **_scan_warps(args))
    kern.wkv7_grads_kernel[(bsz * h, nc)](r, w, k, v, a, b, ckpt, dck, dy, *grads, NC=nc, LOG2BT=log2, **args)
    return [*grads, ds0]


def _get_kernels() -> Any:
    """The module of jitted kernels, loaded on first use: triton.jit reads TRITON_INTERPRET when it wraps a function."""
    key = _interpret()
    if key not in _kernels:
        name = f"mmrwkv.kernels.triton_wkv_kernels_{'interpreted' if key else 'compiled'}"
        path = Path(__file__).with_name("triton_wkv_kernels.py")
        spec = importlib.util.spec_from_file_location(name, path)
        src = importlib.util.module_from_spec(spec)
        sys.modules[name] = src
        spec.loader.exec_module(src)
        _kernels[key] = src
    return _kernels[key]


def compile_usage(chunk: int = 16, arch: int = 90, schedule: str | None = None) -> list[dict[str, Any]]:
    """Compiles the kernels of a schedule for sm_<arch> without a GPU (bf16 inputs, N = 64) and returns per kernel
    its registers, stack bytes (spills) and shared memory, read from the cubin with Triton's cuobjdump.

    Needs triton imported without TRITON_INTERPRET (the interpreter replaces the code generator).
    """
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kern, rows = _get_kernels(), []
    names = ["prep", "scan", "out", "bscan", "grads"] if (schedule or SCHEDULE) == "parallel" else ["fwd", "bwd"]
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    consts = {"N": 64, "BT": chunk, "LOG2BT": int(math.log2(chunk)), "PREC": "tf32", "SAVE": True}
    for name in names:
        fn = getattr(kern, f"wkv7_{name}_kernel")
        params = fn.arg_names
        bf16 = {"r_", "w_", "k_", "v_", "a_", "b_", "dy_"}
        sig = {p: "constexpr" if p in consts else ("*bf16" if p in bf16 else "*fp32") if p.endswith("_") else "i32"
               for p in params}  # fmt: skip
        warps = 4 if name in ("scan", "bscan") and chunk == 16 else 8
        src = ASTSource(fn=fn, signature=sig, constexprs={p: consts[p] for p in params if p in consts})
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            out = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True)
        found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", out.stdout)
        if found is None:
            raise RuntimeError(f"cuobjdump gave no resource usage for wkv7_{name}_kernel: {out.stdout}{out.stderr}")
        regs, stack, smem = map(int, found.groups())
        rows.append({"kernel": name, "warps": warps, "registers": regs, "stack": stack, "smem": smem})
    return rows
