"""Chunk-parallel WKV in plain PyTorch: device-agnostic, differentiable through torch ops.

Each op splits time into chunks of length L. Inside a chunk, every output is a small matrix product
(all chunks at once); across chunks, only the [N, N] state is carried in a short sequential scan.
Same signatures and results as `mmrwkv.kernels.reference` (tested against it).

Notation: B batch, T time, H heads, N head size, C = H * N, NC chunks of length L, t/i positions in a chunk,
g the cumulative LOG decay inside a chunk: g_t = sum_{j<=t} w_j (inclusive), ge_t = sum_{j<t} w_j (exclusive).
Decay products between positions are exp(g_t - g_i). The factored form exp(g_t) * exp(-g_i) turns them into
matmuls; it is used only when L * max|w| <= MAX_EXP, so neither factor can overflow fp32.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmrwkv.kernels.reference import compute_dtype, empty_state_heads, empty_state_v4

__all__ = ["wkv4", "wkv6", "wkv7"]

# largest |exponent| a factored decay may reach: e^40 ~ 2e17 leaves fp32 ample headroom for the products
MAX_EXP = 40.0
# longest chunk: the [L, L] intra-chunk work grows with L, the sequential scan shrinks with it
MAX_CHUNK = 64
# elements per [B, H, NC, L, N] tensor in one segment of time (8 MiB in fp32)
SEGMENT_ELEMENTS = 1 << 21
# recompute each segment's intermediates in the backward pass when there are several segments and the whole
# sequence's would pass CHECKPOINT_BYTES: more time, but memory that does not grow with T. The saved tensors of v7
# are ~SAVED_PER_INPUT times one input's size; below the budget, recomputing a few segments costs that time and keeps
# a higher peak than saving everything (a segment's temporaries during its recompute, next to the others' inputs)
CHECKPOINT = True
CHECKPOINT_BYTES = 1 << 30
SAVED_PER_INPUT = 50
# chunk length of the explicit (never overflowing) forms used for v4 and for v6 with very strong decay
EXPLICIT_CHUNK = 8


def wkv7(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None,
         *, chunk_len: int | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-7 generalized delta rule; same contract as `reference.wkv7`. `chunk_len` overrides the choice of L.

    Per chunk, with u_t = S_{t-1} a_t, the recurrence unrolls to a unit lower-triangular system
    (I - M_ab) U = A_g S0^T + M_ak V, solved once per chunk (the WY/UT form); outputs and the chunk's
    end state are then linear in the start state S0 (see `_v7_chunks`).
    """
    dt = compute_dtype(r, w, k, v, a, b)
    s0 = empty_state_heads(r, dt) if state is None else state.to(dt)
    # a step decay below e^-40 is below fp32 resolution next to that step's new v k^T term
    w = w.to(dt).clamp(min=-MAX_EXP)
    size = chunk_len or _factored_chunk_len(w, MAX_CHUNK)
    y, s = _segments(_v7_chunks, (r, w, k, v, a, b), s0, size, dt)
    return y.to(v.dtype), s


def wkv6(r: Tensor, w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None,
         *, chunk_len: int | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-5/6 WKV; same contract as `reference.wkv6`. `chunk_len` overrides the choice of L.

    Moderate decays use factored matmuls; when one step's decay is so strong that a chunk of
    EXPLICIT_CHUNK could overflow the factored form, the decay matrix is built explicitly instead.
    """
    dt = compute_dtype(r, w, k, v, u)
    s0 = empty_state_heads(r, dt) if state is None else state.to(dt)
    w = w.to(dt)
    size = chunk_len or _factored_chunk_len(w, MAX_CHUNK)
    if chunk_len is None and size < EXPLICIT_CHUNK:
        size = EXPLICIT_CHUNK
    explicit = size * _max_abs(w) > MAX_EXP
    u = u.to(dt)
    y, s = _segments(lambda r, w, k, v, s: _v6_chunks(r, w, k, v, u, explicit, s), (r, w, k, v), s0, size, dt)
    return y.to(v.dtype), s


def _segments(chunk_fn, xs: tuple[Tensor, ...], s0: Tensor, size: int, dt: torch.dtype) -> tuple[Tensor, Tensor]:
    """Run `chunk_fn(*chunked inputs, state)` over time segments of at most SEGMENT_ELEMENTS per tensor.

    When gradients are needed, there is more than one segment and saving every intermediate would pass
    CHECKPOINT_BYTES, each segment keeps only its inputs for the backward pass and recomputes its intermediates there
    (activation checkpointing): memory stays bounded whatever T, so the allocator reuses it instead of mapping fresh
    pages, and time stays linear in T.
    xs are [B, T, H, N]; returns (y [B, T, H, N] fp32, final state).
    """
    bsz, t, h, n = xs[0].shape
    seg = max(1, SEGMENT_ELEMENTS // (bsz * h * n * size)) * size
    run = partial(_segment, chunk_fn, size, dt)
    saved = xs[0].numel() * torch.finfo(dt).bits // 8 * SAVED_PER_INPUT
    needed = torch.is_grad_enabled() and any(x.requires_grad for x in (*xs, s0))
    if CHECKPOINT and seg < t and saved > CHECKPOINT_BYTES and needed:
        run = partial(checkpoint, run, use_reentrant=False)
    ys, s = [], s0
    # split (not slicing) so the backward pass concatenates the input gradients once, not once per segment
    for pieces in zip(*(x.split(seg, dim=1) for x in xs), strict=True):
        y, s = run(s, *pieces)
        ys.append(y)
    return (torch.cat(ys, 1) if ys else xs[-1].new_zeros(xs[-1].shape, dtype=dt)), s


def _segment(chunk_fn, size: int, dt: torch.dtype, s: Tensor, *xs: Tensor) -> tuple[Tensor, Tensor]:
    # autocast off: under bf16/fp16 autocast the matmuls would run in half precision and feed solve_triangular
    # (no bf16 kernel on CPU) and the decay factors (up to e^40) values they cannot hold; the op is fp32 inside
    with torch.autocast(s.device.type, enabled=False):
        chunks = [_to_chunks(x.to(dt), size) for x in xs]  # each (B, H, NC, L, N)
        y, s = chunk_fn(*chunks, s)
    return _from_chunks(y, xs[0].shape[1]), s


def _max_abs(w: Tensor) -> float:
    return float(w.detach().abs().max()) if w.numel() else 0.0


def _factored_chunk_len(w: Tensor, cap: int) -> int:
    """Largest power of two L <= cap with L * max|w| <= MAX_EXP (at least 1), and no longer than T rounded up to a
    power of two: a short prefill (w is [B, T, H, N]) then pads to L instead of to `cap`."""
    size = min(cap, 1 << max(0, w.shape[1] - 1).bit_length())
    worst = _max_abs(w)
    while size > 1 and size * worst > MAX_EXP:
        size //= 2
    return size


def _to_chunks(x: Tensor, size: int) -> Tensor:
    """[B, T, H, N] -> [B, H, NC, L, N], zero-padded at the end (zero w, k, v, a, b leave the state unchanged)."""
    bsz, t, h, n = x.shape
    pad = -t % size
    x = F.pad(x, (0, 0, 0, 0, 0, pad))
    return x.view(bsz, (t + pad) // size, size, h, n).permute(0, 3, 1, 2, 4).contiguous()


def _from_chunks(y: Tensor, t: int) -> Tensor:
    """[B, H, NC, L, N] -> [B, T, H, N], dropping the padding."""
    bsz, h, nc, size, n = y.shape
    return y.permute(0, 2, 3, 1, 4).reshape(bsz, nc * size, h, n)[:, :t]


def _cumsums(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inclusive g, exclusive ge, and to-the-end sum_{j>i} w_j, each (.., L, N), without cancellation."""
    g = w.cumsum(-2)
    ge = F.pad(w[..., :-1, :].cumsum(-2), (0, 0, 1, 0))
    tail = F.pad(w[..., 1:, :].flip(-2).cumsum(-2).flip(-2), (0, 0, 0, 1))
    return g, ge, tail


def _scan(s0: Tensor, mats: Tensor | None, scales: Tensor | None, adds: Tensor) -> tuple[Tensor, Tensor]:
    """Carry the state through the chunks: S -> S @ mat_c + add_c (v7) or S -> scale_c * S + add_c (v6).

    mats/scales/adds are (NC, B, H, .., ..). Returns (every chunk's start state (B, H, NC, .., ..), final state).
    """
    bsz, h = s0.shape[:2]
    flat = s0.reshape(bsz * h, *s0.shape[2:])
    # unbind (not indexing) so the backward pass stacks the per-chunk gradients once instead of once per chunk
    steps = zip(mats.flatten(1, 2).unbind(0) if mats is not None else scales.flatten(1, 2).unbind(0),
                adds.flatten(1, 2).unbind(0), strict=True)
    starts = []
    for factor, add in steps:
        starts.append(flat)
        flat = torch.baddbmm(add, flat, factor) if mats is not None else torch.addcmul(add, factor, flat)
    return torch.stack(starts, dim=1).view(bsz, h, len(starts), *s0.shape[2:]), flat.view(s0.shape)


def _causal_masks(size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(2L, L) mask for [a-rows; r-rows] against one column block: strictly causal for a, causal for r."""
    ones = torch.ones(size, size, dtype=dtype, device=device)
    return torch.cat((ones.tril(-1), ones.tril()), 0)


def _v7_chunks(r, w, k, v, a, b, s0):
    """All chunks of RWKV-7: r..b (B, H, NC, L, N), s0 (B, H, Nv, Nk) -> y (B, H, NC, L, N), final state."""
    size, n = w.shape[-2:]
    g = w.cumsum(-2)  # |g| <= MAX_EXP, so differences of g lose at most ~1e-6 in the exponent
    inv, decay_end = (-g).exp(), (g[..., -1:, :] - g).exp()
    rows = torch.cat((a * (g - w).exp(), r * g.exp()), -2)  # (B, H, NC, 2L, N): a_t Gamma_{t-1}; r_t Gamma_t
    mask = _causal_masks(size, w.device, w.dtype)
    # rows against b and k: b_i.(Gamma_{t-1}/Gamma_i a_t) for i < t and b_i.(Gamma_t/Gamma_i r_t) for i <= t
    # in-place masking is safe: a matmul keeps its inputs for the backward pass, not its output
    m_ab, q_rb = (rows @ (b * inv).mT).mul_(mask).split(size, -2)  # each (B, H, NC, L, L)
    m_akv, q_rkv = ((rows @ (k * inv).mT).mul_(mask) @ v).split(size, -2)  # each (B, H, NC, L, Nv)
    a_dec, r_dec = rows.split(size, -2)
    # U = W S0^T + U_v with W = (I - M_ab)^-1 A_g and U_v = (I - M_ab)^-1 M_ak V; the unit diagonal is implied
    sol = torch.linalg.solve_triangular(-m_ab, torch.cat((a_dec, m_akv), -1), upper=False, unitriangular=True)
    wy, u_v = sol.split(n, -1)  # (B, H, NC, L, Nk), (B, H, NC, L, Nv)
    b_end = b * decay_end  # (B, H, NC, L, Nk): decayed to the chunk's end
    # chunk end: S_end = S0 (diag(Gamma_L) + W^T B_end) + U_v^T B_end + V^T K_end
    mats = torch.diag_embed(g[..., -1, :].exp()) + wy.mT @ b_end  # (B, H, NC, Nk, Nk)
    adds = (u_v.mT @ b_end).add_(v.mT @ (k * decay_end))  # (B, H, NC, Nv, Nk)
    starts, s = _scan(s0, mats.movedim(2, 0), None, adds.movedim(2, 0))
    rs_w, rs_u = (q_rb @ sol).split(n, -1)  # (B, H, NC, L, Nk), (B, H, NC, L, Nv)
    y = (r_dec + rs_w) @ starts.mT + rs_u + q_rkv
    return y, s


def _v6_chunks(r, w, k, v, u, explicit: bool, s0):
    """All chunks of RWKV-5/6: r, w, k, v (B, H, NC, L, N), u (H, N), s0 (B, H, Nk, Nv) -> y, final state."""
    g, ge, tail = _cumsums(w)
    attn = _v6_explicit_attn(r, w, k) if explicit else (r * ge.exp()) @ (k * (-g).exp()).mT
    attn = attn.tril(-1) + torch.diag_embed((r * u[:, None, None, :] * k).sum(-1))  # (B, H, NC, L, L)
    adds = ((k * tail.exp()).mT @ v).movedim(2, 0)  # (NC, B, H, Nk, Nv)
    scales = g[..., -1, :].exp().unsqueeze(-1).movedim(2, 0)  # (NC, B, H, Nk, 1)
    starts, s = _scan(s0, None, scales, adds)
    y = (r * ge.exp()) @ starts + attn @ v
    return y, s


def _v6_explicit_attn(r: Tensor, w: Tensor, k: Tensor) -> Tensor:
    """sum_n r_t k_i exp(sum_{i<j<t} w_j) as (.., L, L), valid below the diagonal; every exponent is <= 0."""
    size = w.shape[-2]
    later = torch.ones(size, size, dtype=torch.bool, device=w.device).tril(-1)  # [t', i]: t' > i
    # seg[t', i] = sum_{i < j <= t'} w_j, summed from i + 1 upward so no large terms cancel
    seg = (w.unsqueeze(-2) * later.unsqueeze(-1)).cumsum(-3)  # (.., L, L, N)
    seg = F.pad(seg[..., :-1, :, :], (0, 0, 0, 0, 1, 0))  # row t holds the sum up to t - 1
    return (r.unsqueeze(-2) * k.unsqueeze(-3) * seg.exp()).sum(-1)


def wkv4(w: Tensor, u: Tensor, k: Tensor, v: Tensor, state: Tensor | None = None,
         *, chunk_len: int = EXPLICIT_CHUNK) -> tuple[Tensor, Tensor]:
    """RWKV-4 WKV in log space; same contract as `reference.wkv4`.

    Inside a chunk every exponent (t-1-i) w + k_i, u + k_t and pp + t w is formed explicitly and a
    running max is subtracted before exp, so neither large k nor very negative w can overflow.
    """
    dt = compute_dtype(w, u, k, v)
    s = empty_state_v4(k, dt) if state is None else state.to(dt)
    out_dtype = v.dtype
    w, u, k, v = (x.to(dt) for x in (w, u, k, v))
    # the explicit exponents are (B, L, L, C) per chunk: segments of time bound them like the other ops
    seg = max(1, SEGMENT_ELEMENTS // (k.shape[0] * k.shape[2] * chunk_len)) * chunk_len
    ys = []
    for kp, vp in zip(k.split(seg, 1), v.split(seg, 1), strict=True):
        full = kp.shape[1] - kp.shape[1] % chunk_len
        # full chunks in parallel, then the remainder as one shorter chunk: padding would decay the state
        for lo, hi, size in ((0, full, chunk_len), (full, kp.shape[1], kp.shape[1] - full)):
            if hi > lo:
                with torch.autocast(k.device.type, enabled=False):  # fp32 inside, as _segment
                    y, s = _v4_chunks(w, u, kp[:, lo:hi], vp[:, lo:hi], s, size)
                ys.append(y)
    y = torch.cat(ys, 1) if ys else v.new_zeros(v.shape)
    return y.to(out_dtype), s


def _v4_chunks(w, u, k, v, s0, size: int):
    """RWKV-4 over k, v [B, NC*L, C] in chunks of L from state s0 [B, 3, C] -> (y [B, NC*L, C], state)."""
    bsz, t, c = k.shape
    k = k.view(bsz, t // size, size, c)  # (B, NC, L, C)
    v = v.view(bsz, t // size, size, c)
    pos = torch.arange(size, dtype=w.dtype, device=w.device)
    gap = pos[:, None] - 1 - pos[None, :]  # [t, i]: steps of decay between i and t's state
    gap = gap[..., None]  # (L, L, 1)
    # exponent of v_i in y_t: (t-1-i) w + k_i before t, u + k_t at t itself, nothing after t
    expo = gap * w + k.unsqueeze(-3)  # (B, NC, L, L, C)
    expo = torch.where(gap == -1, u + k.unsqueeze(-3), expo).masked_fill(gap < -1, float("-inf"))
    # the chunk's own contribution to the state after its last step: exponents (L-1-i) w + k_i
    end = (size - 1 - pos)[:, None] * w + k  # (B, NC, L, C)
    end_max = end.amax(-2)  # (B, NC, C)
    end_e = (end - end_max.unsqueeze(-2)).exp()
    summary = torch.stack(((end_e * v).sum(-2), end_e.sum(-2), end_max), dim=2)  # (B, NC, 3, C)
    starts, s = _v4_scan(s0, summary, w * size)
    aa, bb, pp = starts.unbind(2)  # each (B, NC, C)
    init = pp.unsqueeze(-2) + pos[:, None] * w  # (B, NC, L, C): the start state decayed to t
    # every exponent shares one max per output, which cancels in the ratio: no gradient through it
    top = torch.maximum(expo.amax(-2), init).detach()  # (B, NC, L, C)
    e = (expo - top.unsqueeze(-2)).exp()
    e0 = (init - top).exp()
    num = (e * v.unsqueeze(-3)).sum(-2) + e0 * aa.unsqueeze(-2)
    den = e.sum(-2) + e0 * bb.unsqueeze(-2)
    return (num / den).view(bsz, t, c), s


def _v4_scan(s0: Tensor, summary: Tensor, decay: Tensor) -> tuple[Tensor, Tensor]:
    """Chunk start states (B, NC, 3, C) and the final state from per-chunk summaries (aa, bb, pp)."""
    starts = []
    s = s0
    for c in range(summary.shape[1]):
        starts.append(s)
        aa, bb, pp = s.unbind(1)
        ca, cb, cp = summary[:, c].unbind(1)
        old = pp + decay
        p = torch.maximum(old, cp)
        e1, e2 = (old - p).exp(), (cp - p).exp()
        s = torch.stack((e1 * aa + e2 * ca, e1 * bb + e2 * cb, p), dim=1)
    return torch.stack(starts, dim=1), s
