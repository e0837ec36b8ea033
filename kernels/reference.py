"""Reference WKV recurrences: one step function per op and a loop over time.

This is the specification the chunked and CUDA backends are tested against. It favours clarity
over speed: each step is written exactly as the recurrence in docs/ARCHITECTURE.md "Kernels".

Notation: B batch, T time, H heads, N head size, C = H * N channels. Math runs in fp32 (fp64 when
the inputs are fp64, so `torch.autograd.gradcheck` can use it); `y` comes back in the dtype of `v`.
"""

from __future__ import annotations

import torch
from torch import Tensor

# pp of an empty RWKV-4 state: exp(pp - anything finite) is exactly 0
V4_EMPTY_PP = -1e38


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """fp64 if any input is fp64, else fp32: the precision every backend computes in."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def wkv7_step(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One RWKV-7 step on [B, H, N] inputs and a [B, H, N, N] state indexed [value, key].

    S = S * exp(w)[None, :] + (S @ a)[:, None] * b[None, :] + v[:, None] * k[None, :];  y = S @ r
    """
    sa = (state @ a.unsqueeze(-1)).squeeze(-1)  # (B, H, Nv)
    state = state * torch.exp(w).unsqueeze(-2) + sa.unsqueeze(-1) * b.unsqueeze(-2) + v.unsqueeze(-1) * k.unsqueeze(-2)
    y = (state @ r.unsqueeze(-1)).squeeze(-1)  # (B, H, Nv)
    return y, state


def wkv6_step(r: Tensor, w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One RWKV-5/6 step on [B, H, N] inputs, bonus u [H, N] and a [B, H, N, N] state indexed [key, value].

    y = r @ (u[:, None] * k[:, None] * v[None, :] + S);  S = exp(w)[:, None] * S + k[:, None] * v[None, :]
    """
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, H, Nk, Nv)
    y = (r.unsqueeze(-2) @ (u.unsqueeze(-1) * kv + state)).squeeze(-2)  # (B, H, Nv)
    state = torch.exp(w).unsqueeze(-1) * state + kv
    return y, state


def wkv4_step(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One RWKV-4 step on k, v [B, C], w, u [C] and a [B, 3, C] state (aa, bb, pp), with a running max pp.

    y = (e^pp aa + e^(u+k) v) / (e^pp bb + e^(u+k)); then the state absorbs e^k v after decaying by e^w.
    """
    aa, bb, pp = state.unbind(1)  # each (B, C)
    ww = u + k
    p = torch.maximum(pp, ww)
    e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
    y = (e1 * aa + e2 * v) / (e1 * bb + e2)
    ww = w + pp
    p = torch.maximum(ww, k)
    e1, e2 = torch.exp(ww - p), torch.exp(k - p)
    state = torch.stack((e1 * aa + e2 * v, e1 * bb + e2, p), dim=1)
    return y, state


def empty_state_heads(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Zero [B, H, N, N] state for a [B, T, H, N] input."""
    bsz, _, h, n = x.shape
    return torch.zeros(bsz, h, n, n, dtype=dtype, device=x.device)


def empty_state_v4(k: Tensor, dtype: torch.dtype) -> Tensor:
    """Empty [B, 3, C] RWKV-4 state: aa = bb = 0, pp = -1e38."""
    state = torch.zeros(k.shape[0], 3, k.shape[2], dtype=dtype, device=k.device)
    state[:, 2] = V4_EMPTY_PP
    return state


def wkv7(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None):
    """RWKV-7 over [B, T, H, N] inputs by looping `wkv7_step`; returns (y in v's dtype, final state)."""
    dt = compute_dtype(r, w, k, v, a, b)
    s = empty_state_heads(r, dt) if state is None else state.to(dt)
    ys = []
    for t in range(r.shape[1]):
        y, s = wkv7_step(*(x[:, t].to(dt) for x in (r, w, k, v, a, b)), s)
        ys.append(y)
    return _stack_time(ys, v), s


def wkv6(r: Tensor, w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None):
    """RWKV-5/6 over [B, T, H, N] inputs by looping `wkv6_step`; returns (y in v's dtype, final state)."""
    dt = compute_dtype(r, w, k, v, u)
    s = empty_state_heads(r, dt) if state is None else state.to(dt)
    u = u.to(dt)
    ys = []
    for t in range(r.shape[1]):
        y, s = wkv6_step(*(x[:, t].to(dt) for x in (r, w, k, v)), u, s)
        ys.append(y)
    return _stack_time(ys, v), s


def wkv4(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: Tensor | None = None):
    """RWKV-4 over k, v [B, T, C] by looping `wkv4_step`; returns (y in v's dtype, final state)."""
    dt = compute_dtype(w, u, k, v)
    s = empty_state_v4(k, dt) if state is None else state.to(dt)
    w, u = w.to(dt), u.to(dt)
    ys = []
    for t in range(k.shape[1]):
        y, s = wkv4_step(w, u, k[:, t].to(dt), v[:, t].to(dt), s)
        ys.append(y)
    return _stack_time(ys, v), s


def _stack_time(ys: list[Tensor], v: Tensor) -> Tensor:
    if not ys:
        return v.new_zeros(v.shape)
    return torch.stack(ys, dim=1).to(v.dtype)


def random_inputs(op: str, batch: int, time: int, heads: int, head_size: int, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None, with_state: bool = True) -> dict[str, Tensor]:
    """Random keyword arguments for `op` ("wkv4" | "wkv6" | "wkv7") in the ranges the models produce.

    v7: decay in (0.545, 1), a = -kk and b = kk * gate with kk unit per head (as the model passes them);
    v6: w = -exp(N(-1, 1)); v4: C = heads * head_size, w = -exp(N(0, 1)). For tests and benchmarks.
    """
    shape = (batch, time, heads, head_size)
    if op == "wkv7":
        kk = torch.nn.functional.normalize(torch.randn(shape), dim=-1)
        args = {"r": torch.randn(shape), "w": -0.6065 * torch.sigmoid(torch.randn(shape)), "k": torch.randn(shape),
                "v": torch.randn(shape), "a": -kk, "b": kk * torch.rand(shape)}
        state = 0.5 * torch.randn(batch, heads, head_size, head_size)
    elif op == "wkv6":
        args = {"r": torch.randn(shape), "w": -torch.exp(torch.randn(shape) - 1), "k": torch.randn(shape),
                "v": torch.randn(shape), "u": torch.randn(heads, head_size)}
        state = 0.5 * torch.randn(batch, heads, head_size, head_size)
    elif op == "wkv4":
        c = heads * head_size
        args = {"w": -torch.exp(torch.randn(c)), "u": torch.randn(c), "k": torch.randn(batch, time, c),
                "v": torch.randn(batch, time, c)}
        state = torch.stack((torch.randn(batch, c), torch.rand(batch, c) + 0.5, torch.randn(batch, c)), dim=1)
    else:
        raise ValueError(f"random_inputs: op must be 'wkv4', 'wkv6' or 'wkv7', got {op!r}")
    args = {name: x.to(dtype=dtype, device=device) for name, x in args.items()}
    if with_state:
        args["state"] = state.to(device=device)
    return args
