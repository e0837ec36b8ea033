"""CUDA WKV kernels (forward and backward, state in and out) behind the dispatch signatures.

Notation: B batch, T time, H heads, N head size, C = H * N channels. States are fp32.

The sources live in `cuda/` next to this file: `wkv4.cu`, `wkv6.cu`, `wkv7.cu` hold device code and launch
wrappers only, `wkv_ops.cpp` registers them as torch custom ops (namespace `mmrwkv_wkv_cuda_n<N>`). They are
built on first use (never at import) with `torch.utils.cpp_extension.load` + ninja into
`~/.cache/mmrwkv/kernels/<name>-<hash>`, one build per head size (a `-D` define). `EMULATOR` runs the same
sources compiled as C++ for CPU tensors (`cuda/emu/cuda_emu.h`); the tests use it where no GPU exists.

Each kernel runs one block per (batch, head) sequentially over time, so any T and any B work without
padding. Forward saves the state every `CHUNK` steps (and at the end); backward walks each chunk back from
the checkpoint at its end by inverting the update when all the chunk's decays are >= exp(-0.61) (always so
for RWKV-7's model decays; no memory traffic), and otherwise replays the chunk from its start (exact).
Inputs run in bf16 when all of them are bf16, otherwise in fp32; `y` comes back in the dtype of `v`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["CHUNK", "EMULATOR", "MAX_HEAD_SIZE", "WKVKernels", "is_available", "load_ops", "wkv4", "wkv6", "wkv7"]

SOURCE_DIR = Path(__file__).resolve().parent / "cuda"
# steps between the state checkpoints that backward restarts from (the MMRWKV_CHUNK define)
CHUNK = 16
# one thread per state row and two rows in registers in backward (the state and its gradient): 128 would need
# about 384 registers per thread and 66 KB of shared memory for the gradient's copy
MAX_HEAD_SIZE = 64
_V4_EMPTY_PP = -1e38
# RWKV-4 has no heads: its kernel comes from the build of this head size
_V4_BUILD = 64
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_lock = threading.Lock()
_built: dict[tuple[int, bool], Any] = {}
_failed: dict[tuple[int, bool], str] = {}


def cache_dir() -> Path:
    """Where the builds go: $XDG_CACHE_HOME/mmrwkv/kernels (default ~/.cache/mmrwkv/kernels).

    Falls back to a per-user folder in the temp directory when that one cannot be created.
    """
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    path = Path(root) / "mmrwkv" / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir()) / f"mmrwkv-kernels-{os.getuid()}"
    return path


def is_available() -> tuple[bool, str]:
    """(True, "") when the CUDA kernels can run here, else (False, the reason). Builds head size 64 once."""
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return False, f"nvcc not found (CUDA_HOME={CUDA_HOME}); install the CUDA toolkit or set CUDA_HOME"
    try:
        load_ops(64)
    except RuntimeError as err:
        return False, str(err)
    return True, ""


def load_ops(head_size: int, *, emulate: bool = False) -> Any:
    """The custom ops (a `torch.ops` namespace) of one build (compiled on first use, then cached on disk and in memory).

    emulate=True builds the same kernel sources as C++ for CPU tensors. Raises RuntimeError naming the
    build directory when the build fails (and remembers the failure for this process).
    """
    _check_head_size(head_size)
    key = (head_size, emulate)
    # lock-free once built: also keeps torch.compile from breaking the graph here
    if key in _built:
        return _built[key]
    with _lock:
        if key in _built:
            return _built[key]
        if key in _failed:
            raise RuntimeError(_failed[key])
        try:
            _built[key] = _build(head_size, emulate)
        # any compiler or loader failure becomes one clear message, remembered so it is not retried
        except Exception as err:
            what = f"building the {'emulated' if emulate else 'CUDA'} WKV kernels (N={head_size}) failed"
            _failed[key] = f"{what}: {_summary(str(err))}"
            raise RuntimeError(_failed[key]) from err
        return _built[key]


def _summary(log: str, limit: int = 2000) -> str:
    """First line of a build failure plus its lines that mention an error: the full log can be pages long."""
    lines = log.splitlines() or [""]
    errors = [line for line in lines[1:] if "error" in line.lower()][:10]
    return "\n".join([lines[0], *errors])[:limit]


def _build(head_size: int, emulate: bool) -> Any:
    from torch.utils import cpp_extension

    name = f"mmrwkv_wkv_{'emu' if emulate else 'cuda'}_n{head_size}"
    defines = [f"-DMMRWKV_N={head_size}", f"-DMMRWKV_CHUNK={CHUNK}", f"-DMMRWKV_NS={name}"]
    if emulate:
        kernels = [SOURCE_DIR / "emu" / f"wkv{v}_emu.cpp" for v in (4, 6, 7)]
        cflags, cuda_flags, ldflags = [*defines, "-DMMRWKV_EMU", "-std=c++20", "-O2", "-pthread"], [], ["-pthread"]
    else:
        kernels = [SOURCE_DIR / f"wkv{v}.cu" for v in (4, 6, 7)]
        cflags, cuda_flags, ldflags = [*defines, "-O3"], [*defines, "-O3", "-Xptxas", "-O3"], []
    sources = [SOURCE_DIR / "wkv_ops.cpp", *kernels]
    build_dir = cache_dir() / f"{name}-{_digest(cflags + cuda_flags)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=name,
        sources=[str(s) for s in sources],
        extra_cflags=cflags,
        extra_cuda_cflags=cuda_flags,
        extra_ldflags=ldflags,
        extra_include_paths=[str(SOURCE_DIR)],
        build_directory=str(build_dir),
        with_cuda=not emulate,
        is_python_module=False,
        verbose=False,
    )
    _register_fakes(name, head_size)
    return getattr(torch.ops, name)


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\w+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def ptxas_usage(log: str) -> list[dict[str, Any]]:
    """Per kernel entry of an `nvcc -Xptxas -v` log: name, arch, registers, stack, spill stores/loads, smem (bytes).

    Names are the mangled entry names; `kernel` is the readable part (e.g. "wkv7_backward_kernel<bf16>").
    """
    rows: list[dict[str, Any]] = []
    for line in log.splitlines():
        if m := _PTXAS_ENTRY.search(line):
            name = m["name"]
            base = re.search(r"(wkv\d_(?:forward|backward)_kernel)", name)
            kind = "bf16" if "bfloat16" in name else "fp32"
            readable = f"{base[1]}<{kind}>" if base else name
            rows.append({"kernel": readable, "arch": m["arch"], "entry": name})
        elif rows and (m := _PTXAS_FRAME.search(line)):
            rows[-1].update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif rows and (m := _PTXAS_USED.search(line)):
            rows[-1].update(registers=int(m[1]), smem=int(m[2] or 0))
    return rows


def _register_fakes(ns: str, n: int) -> None:
    """Shape-only versions of the ops, so that torch.compile / FakeTensor tracing can pass through them."""
    lib = torch.library

    def ckpt(like: Tensor, save: bool, extra: int) -> Tensor:
        bsz, t, h = like.shape[:3]
        chunks = (t + CHUNK - 1) // CHUNK + extra
        return like.new_empty((bsz, h, chunks, n, n) if save else (0,), dtype=torch.float32)

    def state(like: Tensor) -> Tensor:
        return like.new_empty((like.shape[0], like.shape[2], n, n), dtype=torch.float32)

    @lib.register_fake(f"{ns}::wkv7_forward")
    def _(r, w, k, v, a, b, s0, save):
        sa = r.new_empty(r.shape if save else (0,), dtype=torch.float32)
        return torch.empty_like(v), state(r), sa, ckpt(r, save, 1)

    @lib.register_fake(f"{ns}::wkv7_backward")
    def _(r, w, k, v, a, b, sa, ck, dy, ds):
        return [torch.empty_like(x) for x in (r, w, k, v, a, b)] + [state(r)]

    @lib.register_fake(f"{ns}::wkv6_forward")
    def _(r, w, k, v, u, s0, save):
        return torch.empty_like(v), state(r), ckpt(r, save, 1)

    @lib.register_fake(f"{ns}::wkv6_backward")
    def _(r, w, k, v, u, ck, dy, ds):
        return [torch.empty_like(x) for x in (r, w, k, v, u)] + [state(r)]

    @lib.register_fake(f"{ns}::wkv4_forward")
    def _(w, u, k, v, s0, save):
        bsz, t, c = k.shape
        ck = k.new_empty((bsz, (t + CHUNK - 1) // CHUNK, 3, c) if save else (0,), dtype=torch.float32)
        return torch.empty_like(v), torch.empty_like(s0), ck

    @lib.register_fake(f"{ns}::wkv4_backward")
    def _(w, u, k, v, ck, dy, ds):
        return [torch.empty_like(x) for x in (w, u, k, v)] + [torch.empty_like(ds)]


def _digest(flags: list[str]) -> str:
    """Hash of every source file, the flags and the torch build: a change means a fresh build directory."""
    h = hashlib.sha256()
    for path in sorted(p for p in SOURCE_DIR.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(SOURCE_DIR)).encode())
        h.update(path.read_bytes())
    h.update(" ".join(flags).encode())
    h.update(f"{torch.__version__} {torch.version.cuda}".encode())
    return h.hexdigest()[:16]


def _check_head_size(n: int) -> None:
    if not isinstance(n, int) or not 1 <= n <= MAX_HEAD_SIZE:
        raise ValueError(
            f"wkv cuda: head size N={n!r} is not supported by the CUDA kernels (1 <= N <= {MAX_HEAD_SIZE}); "
            "use backend='triton' or 'chunked'"
        )


class _Wkv7(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ops, r, w, k, v, a, b, s0):
        save = any(ctx.needs_input_grad[1:])
        y, s_t, sa, ckpt = ops.wkv7_forward(r, w, k, v, a, b, s0, save)
        if save:
            ctx.ops = ops
            ctx.save_for_backward(r, w, k, v, a, b, sa, ckpt)
        return y, s_t

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, ds_t):
        r, w, k, v, a, b, sa, ckpt = ctx.saved_tensors
        grads = ctx.ops.wkv7_backward(r, w, k, v, a, b, sa, ckpt, _grad(dy, r), _state_grad(ds_t, r, ckpt))
        return None, *grads


class _Wkv6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ops, r, w, k, v, u, s0):
        save = any(ctx.needs_input_grad[1:])
        y, s_t, ckpt = ops.wkv6_forward(r, w, k, v, u, s0, save)
        if save:
            ctx.ops = ops
            ctx.save_for_backward(r, w, k, v, u, ckpt)
        return y, s_t

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, ds_t):
        r, w, k, v, u, ckpt = ctx.saved_tensors
        grads = ctx.ops.wkv6_backward(r, w, k, v, u, ckpt, _grad(dy, r), _state_grad(ds_t, r, ckpt))
        return None, *grads


class _Wkv4(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ops, w, u, k, v, s0):
        save = any(ctx.needs_input_grad[1:])
        y, s_t, ckpt = ops.wkv4_forward(w, u, k, v, s0, save)
        if save:
            ctx.ops = ops
            ctx.save_for_backward(w, u, k, v, ckpt)
        return y, s_t

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, ds_t):
        w, u, k, v, ckpt = ctx.saved_tensors
        bsz, _, c = k.shape
        ds_t = ds_t.contiguous() if ds_t is not None else k.new_zeros(bsz, 3, c, dtype=torch.float32)
        return None, *ctx.ops.wkv4_backward(w, u, k, v, ckpt, _grad(dy, k), ds_t)


def _grad(dy: Tensor | None, like: Tensor) -> Tensor:
    """Output gradient in the kernel dtype; zeros when y did not reach the loss."""
    return torch.zeros_like(like) if dy is None else dy.to(like.dtype).contiguous()


def _state_grad(ds: Tensor | None, like: Tensor, ckpt: Tensor) -> Tensor:
    bsz, _, h, n = like.shape
    return ds.contiguous() if ds is not None else ckpt.new_zeros(bsz, h, n, n)


class WKVKernels:
    """wkv4 / wkv6 / wkv7 on one build variant: CUDA tensors (`emulate=False`) or the CPU emulator."""

    def __init__(self, *, emulate: bool) -> None:
        self.emulate = emulate

    def wkv7(
        self, r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """RWKV-7 over [B, T, H, N]; w is the log decay; state [B, H, N, N] fp32 indexed [value, key]."""
        self._check_heads("wkv7", {"r": r, "w": w, "k": k, "v": v, "a": a, "b": b}, state)
        s0 = self._initial_heads_state(r, state)
        if r.shape[1] == 0:
            return v.new_zeros(v.shape), s0
        xs = _to_kernel_dtype(r, w, k, v, a, b)
        y, s_t = _Wkv7.apply(load_ops(r.shape[3], emulate=self.emulate), *xs, s0)
        return y.to(v.dtype), s_t

    def wkv6(
        self, r: Tensor, w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """RWKV-5/6 over [B, T, H, N] with bonus u [H, N]; state [B, H, N, N] fp32 indexed [key, value]."""
        self._check_heads("wkv6", {"r": r, "w": w, "k": k, "v": v}, state)
        self._check_tensor("wkv6", "u", u, r.device, (r.shape[2], r.shape[3]), "[H, N]")
        s0 = self._initial_heads_state(r, state)
        if r.shape[1] == 0:
            return v.new_zeros(v.shape), s0
        xs = _to_kernel_dtype(r, w, k, v)
        y, s_t = _Wkv6.apply(load_ops(r.shape[3], emulate=self.emulate), *xs, u.float().contiguous(), s0)
        return y.to(v.dtype), s_t

    def wkv4(self, w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """RWKV-4 over k, v [B, T, C]; w, u [C]; state [B, 3, C] = (aa, bb, pp), None = empty."""
        self._check_tensor("wkv4", "k", k, None, None, "[B, T, C]")
        if k.dim() != 3:
            raise ValueError(f"wkv4 cuda: k must be [B, T, C], got shape {tuple(k.shape)}")
        bsz, _, c = k.shape
        self._check_tensor("wkv4", "v", v, k.device, tuple(k.shape), "[B, T, C] like k")
        for name, x in (("w", w), ("u", u)):
            self._check_tensor("wkv4", name, x, k.device, (c,), "[C]")
        if state is None:
            s0 = torch.zeros(bsz, 3, c, dtype=torch.float32, device=k.device)
            s0[:, 2] = _V4_EMPTY_PP
        else:
            self._check_tensor("wkv4", "state", state, k.device, (bsz, 3, c), "[B, 3, C]")
            s0 = state.float().contiguous()
        if k.shape[1] == 0:
            return v.new_zeros(v.shape), s0
        kk, vv = _to_kernel_dtype(k, v)
        wf, uf = w.float().contiguous(), u.float().contiguous()
        y, s_t = _Wkv4.apply(load_ops(_V4_BUILD, emulate=self.emulate), wf, uf, kk, vv, s0)
        return y.to(v.dtype), s_t

    def _initial_heads_state(self, r: Tensor, state: Tensor | None) -> Tensor:
        bsz, _, h, n = r.shape
        if state is None:
            return torch.zeros(bsz, h, n, n, dtype=torch.float32, device=r.device)
        return state.float().contiguous()

    def _check_heads(self, op: str, xs: dict[str, Tensor], state: Tensor | None) -> None:
        first = xs["r"]
        self._check_tensor(op, "r", first, None, None, "[B, T, H, N]")
        if first.dim() != 4:
            raise ValueError(f"{op} cuda: r must be [B, T, H, N], got shape {tuple(first.shape)}")
        _check_head_size(first.shape[3])
        for name, x in xs.items():
            self._check_tensor(op, name, x, first.device, tuple(first.shape), "[B, T, H, N] like r")
        if state is not None:
            bsz, _, h, n = first.shape
            self._check_tensor(op, "state", state, first.device, (bsz, h, n, n), "[B, H, N, N]")

    def _check_tensor(
        self, op: str, name: str, x: object, device: torch.device | None, shape: tuple[int, ...] | None, desc: str
    ) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{op} cuda: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{op} cuda: {name} has dtype {x.dtype}; expected float16, bfloat16, float32 or float64")
        wanted = "cpu" if self.emulate else "cuda"
        if x.device.type != wanted:
            where = "the CPU emulator takes CPU tensors" if self.emulate else "the CUDA kernels take GPU tensors"
            raise ValueError(f"{op} cuda: {name} is on {x.device}; {where}")
        if device is not None and x.device != device:
            raise ValueError(f"{op} cuda: {name} is on {x.device} but r is on {device}")
        if shape is not None and tuple(x.shape) != shape:
            raise ValueError(f"{op} cuda: {name} must be {desc} = {shape}, got shape {tuple(x.shape)}")


def _to_kernel_dtype(*xs: Tensor) -> list[Tensor]:
    """bf16 when every input is bf16, else fp32 (fp16 and fp64 run in fp32); contiguous."""
    dtype = torch.bfloat16 if all(x.dtype == torch.bfloat16 for x in xs) else torch.float32
    return [x.to(dtype).contiguous() for x in xs]


_CUDA = WKVKernels(emulate=False)
EMULATOR = WKVKernels(emulate=True)


def wkv7(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV on the GPU; see docs/ARCHITECTURE.md "Kernels" and `WKVKernels.wkv7`."""
    return _CUDA.wkv7(r, w, k, v, a, b, state)


def wkv6(r: Tensor, w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-5/6 WKV on the GPU; see docs/ARCHITECTURE.md "Kernels" and `WKVKernels.wkv6`."""
    return _CUDA.wkv6(r, w, k, v, u, state)


def wkv4(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-4 WKV on the GPU; see docs/ARCHITECTURE.md "Kernels" and `WKVKernels.wkv4`."""
    return _CUDA.wkv4(w, u, k, v, state)
