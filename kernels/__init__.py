"""WKV operators: the one entry point per op the models call, whatever the backend.

Notation: B batch, T time, H heads, N head size, C = H * N channels. States are fp32 (fp64 when the
inputs are fp64). Signatures and the exact recurrences are in docs/ARCHITECTURE.md "Kernels".

Backend choice: `backend=` argument > `MMRWKV_WKV_BACKEND` env > "cuda" when the tensors are on a GPU and
the build works > "chunked". One token (T == 1) always runs the reference step. Asking for "cuda", "triton"
(our chunked Triton kernels, wkv7 only) or "fla" (flash-linear-attention's chunk_rwkv7, wkv7 only, the
`mmrwkv[fla]` extra) when it cannot run falls back to "chunked" with a one-time warning that names the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from mmrwkv.errors import ConfigError

__all__ = ["BACKENDS", "ENV_VAR", "resolve_backend", "scoped_env", "wkv4", "wkv6", "wkv7"]

BACKENDS = ("reference", "chunked", "cuda", "triton", "fla")
# the module of each backend whose name is not its module's
_MODULES = {"triton": "triton_wkv", "fla": "triton_fla"}
ENV_VAR = "MMRWKV_WKV_BACKEND"
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_warned: set[str] = set()


class WKVBackendError(ConfigError, ValueError):
    """A backend name (argument or MMRWKV_WKV_BACKEND) that is not one of BACKENDS: a ConfigError, so the command
    line prints it as one line, and a ValueError, as the kernel API's other argument errors."""


def wkv7(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """RWKV-7 generalized delta rule over [B, T, H, N] inputs.

    w is the LOG decay (w <= 0); state is [B, H, N, N] indexed [value, key] (None means zeros).
    Returns (y [B, T, H, N] in v's dtype, final state [B, H, N, N] fp32).
    """
    _check_heads("wkv7", {"r": r, "w": w, "k": k, "v": v, "a": a, "b": b}, state)
    return _call("wkv7", r, (r, w, k, v, a, b, state), backend)


def wkv6(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None, *, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """RWKV-5/6 WKV over [B, T, H, N] inputs with per-token LOG decay w (<= 0) and bonus u [H, N].

    state is [B, H, N, N] indexed [key, value] (None means zeros).
    Returns (y [B, T, H, N] in v's dtype, final state [B, H, N, N] fp32).
    """
    _check_heads("wkv6", {"r": r, "w": w, "k": k, "v": v}, state)
    _check_tensor("wkv6", "u", u, r.device)
    _check_shape("wkv6", "u", u, (r.shape[2], r.shape[3]), "[H, N]")
    return _call("wkv6", r, (r, w, k, v, u, state), backend)


def wkv4(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: Tensor | None = None, *, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """RWKV-4 WKV over k, v [B, T, C] with w [C] = -exp(time_decay) and u [C] = time_first.

    state is [B, 3, C] = (aa, bb, pp); None means aa = bb = 0, pp = -1e38.
    Returns (y [B, T, C] in v's dtype, final state [B, 3, C] fp32).
    """
    _check_tensor("wkv4", "k", k, k.device if isinstance(k, Tensor) else None)
    if k.dim() != 3:
        raise ValueError(f"wkv4: k must be [B, T, C], got shape {tuple(k.shape)}")
    bsz, _, c = k.shape
    _check_tensor("wkv4", "v", v, k.device)
    _check_shape("wkv4", "v", v, tuple(k.shape), "[B, T, C] like k")
    for name, x in (("w", w), ("u", u)):
        _check_tensor("wkv4", name, x, k.device)
        _check_shape("wkv4", name, x, (c,), "[C]")
    if state is not None:
        _check_tensor("wkv4", "state", state, k.device)
        _check_shape("wkv4", "state", state, (bsz, 3, c), "[B, 3, C]")
    return _call("wkv4", k, (w, u, k, v, state), backend)


@contextlib.contextmanager
def scoped_env(name: str, value: str | None) -> Iterator[None]:
    """Set environment variable `name` to `value` for a block (None: leave it as it is), then restore it.

    The kernel paths are chosen by environment variables (`MMRWKV_WKV_BACKEND`, `MMRWKV_NATIVE_DECODE`).
    """
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def resolve_backend(backend: str | None, device: torch.device, op: str = "wkv7", head_size: int | None = None) -> str:
    """The backend that will run `op` on `device`: argument > env > cuda on a GPU > chunked.

    "cuda" that cannot run here resolves to "chunked" after a one-time warning naming the reason.
    """
    source = "backend"
    if backend is None and os.environ.get(ENV_VAR):
        backend, source = os.environ[ENV_VAR].strip(), ENV_VAR
    if backend is None:
        backend = "cuda" if device.type == "cuda" else "chunked"
    if backend not in BACKENDS:
        raise WKVBackendError(f"{source}={backend!r} is not a WKV backend; choose one of {', '.join(BACKENDS)}")
    if backend in ("cuda", "triton", "fla"):
        status = _cuda_status if backend == "cuda" else _triton_status
        ok, reason = status(device, op, head_size) if backend == "cuda" else status(backend, device, op)
        if not ok:
            label = "CUDA" if backend == "cuda" else backend
            _warn_once(f"mmrwkv.kernels: the {label} WKV backend cannot run {op} ({reason}); using 'chunked' instead")
            return "chunked"
    return backend


def _call(op: str, like: Tensor, args: tuple, backend: str | None) -> tuple[Tensor, Tensor]:
    if like.shape[1] <= 1:
        name = "reference"
    else:
        name = resolve_backend(backend, like.device, op, like.shape[3] if op != "wkv4" else None)
    module = importlib.import_module(f"mmrwkv.kernels.{_MODULES.get(name, name)}")
    y, state = getattr(module, op)(*args)
    if state.dtype != torch.float64:
        state = state.float()
    return y, state


def _cuda_status(device: torch.device, op: str, head_size: int | None) -> tuple[bool, str]:
    if device.type != "cuda":
        return False, f"the tensors are on {device}, not a CUDA GPU"
    try:
        cuda = importlib.import_module("mmrwkv.kernels.cuda")
    except ImportError as err:
        return False, f"cannot import mmrwkv.kernels.cuda: {err}"
    if not hasattr(cuda, op):
        return False, f"mmrwkv.kernels.cuda has no {op}"
    limit = getattr(cuda, "MAX_HEAD_SIZE", None)
    if head_size is not None and limit is not None and head_size > limit:
        return False, f"head size {head_size} is above the CUDA kernels' maximum {limit}"
    return cuda.is_available()


def _triton_status(backend: str, device: torch.device, op: str) -> tuple[bool, str]:
    if op != "wkv7":
        return False, f"it implements wkv7 only, not {op}"
    try:
        module = importlib.import_module(f"mmrwkv.kernels.{_MODULES[backend]}")
    except ImportError as err:
        return False, f"cannot import mmrwkv.kernels.{_MODULES[backend]}: {err}"
    return module.available(device)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _check_heads(op: str, tensors: dict[str, Tensor], state: Tensor | None) -> None:
    """All inputs [B, T, H, N] of one shape, floating, on one device; state [B, H, N, N]."""
    first_name, first = next(iter(tensors.items()))
    _check_tensor(op, first_name, first, first.device if isinstance(first, Tensor) else None)
    if first.dim() != 4 or first.shape[3] == 0:
        shape = tuple(first.shape)
        raise ValueError(f"{op}: {first_name} must be [B, T, H, N] with head size N > 0, got shape {shape}")
    for name, x in tensors.items():
        _check_tensor(op, name, x, first.device)
        _check_shape(op, name, x, tuple(first.shape), f"[B, T, H, N] like {first_name}")
    if state is not None:
        bsz, _, h, n = first.shape
        _check_tensor(op, "state", state, first.device)
        _check_shape(op, "state", state, (bsz, h, n, n), "[B, H, N, N]")


def _check_tensor(op: str, name: str, x: object, device: torch.device | None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} has dtype {x.dtype}; expected one of float16, bfloat16, float32, float64")
    if device is not None and x.device != device:
        raise ValueError(f"{op}: {name} is on {x.device} but the other inputs are on {device}")


def _check_shape(op: str, name: str, x: Tensor, shape: tuple[int, ...], desc: str) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{op}: {name} must be {desc} = {shape}, got shape {tuple(x.shape)}")
