"""The Triton kernels of backend "triton" (see kernels/triton_wkv.py for the chunked form they compute).

Imported by `triton_wkv._get_kernels` once per mode (compiled or TRITON_INTERPRET=1), because triton.jit picks
the mode when it wraps a function. Inputs [B, T, H, N] contiguous, any float dtype (computed in fp32); states,
checkpoints and the per-step WY factors fp32. Two schedules over the same chunk algebra (`_chunk_fwd`,
`_chunk_bwd`): "sequential", one program per (batch, head) walking its chunks; "parallel", where only a light
scan walks the chunks (one [L, N] x [N, N] product pair per chunk, from factors a parallel pass prepared) and
everything else runs one program per (batch, head, chunk).
"""

import triton
import triton.language as tl


@triton.jit
def _tri_inverse(A, BT: tl.constexpr, LOG2BT: tl.constexpr):
    """(I - A)^{-1} of a strictly lower triangular [BT, BT] A: (I + A)(I + A^2)(I + A^4)... (A^BT = 0)."""
    ot = tl.arange(0, BT)
    eye = tl.where(ot[:, None] == ot[None, :], 1.0, 0.0)
    P = eye + A
    Ak = A
    for _ in tl.static_range(LOG2BT - 1):
        Ak = tl.dot(Ak, Ak, input_precision="ieee")
        P = tl.dot(P, eye + Ak, input_precision="ieee")
    return P


@triton.jit
def _decays(w, BT: tl.constexpr):
    """Cumulative log decays of a chunk: inclusive g, exclusive gx [BT, N]; middle step gm and total gL [N]."""
    ot = tl.arange(0, BT)
    g = tl.cumsum(w, axis=0)
    gm = tl.sum(tl.where(ot[:, None] == BT // 2 - 1, g, 0.0), axis=0)
    gL = tl.sum(w, axis=0)
    return g, g - w, gm, gL


@triton.jit
def _load(ptr, off, m):
    return tl.load(ptr + off, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _chunk_sa(As, Am, Bm, Km, v, S, BT: tl.constexpr, LOG2BT: tl.constexpr, PREC: tl.constexpr):
    """U (the sa of every step [BT, N]) and the two strictly lower matrices A_ab, A_ak [BT, BT], and (I - A_ab)^-1."""
    ot = tl.arange(0, BT)
    strict = ot[:, None] > ot[None, :]
    A_ab = tl.where(strict, tl.dot(Am, tl.trans(Bm), input_precision=PREC), 0.0)
    A_ak = tl.where(strict, tl.dot(Am, tl.trans(Km), input_precision=PREC), 0.0)
    Z = tl.dot(As, tl.trans(S), input_precision=PREC) + tl.dot(A_ak, v, input_precision=PREC)
    Wi = _tri_inverse(A_ab, BT, LOG2BT)
    U = tl.dot(Wi, Z, input_precision=PREC)
    return U, A_ak, Wi


@triton.jit
def _offsets(pid, c, T, H, N: tl.constexpr, BT: tl.constexpr):
    """Element offsets [BT, N] of chunk c of program (batch, head) pid, and the mask of its steps < T."""
    bi, h = pid // H, pid % H
    t = c * BT + tl.arange(0, BT)
    off = bi * T * H * N + h * N + t[:, None].to(tl.int64) * (H * N) + tl.arange(0, N)[None, :]
    return off, (t < T)[:, None]


@triton.jit
def _chunk_fwd(r, w, k, v, a, b, S, BT: tl.constexpr, LOG2BT: tl.constexpr, PREC: tl.constexpr):
    """y [BT, N] of one chunk from the state S before it, and the state after it."""
    ot = tl.arange(0, BT)
    incl = ot[:, None] >= ot[None, :]
    g, gx, gm, gL = _decays(w, BT)
    Bm, Km = b * tl.exp(gm[None, :] - g), k * tl.exp(gm[None, :] - g)
    Rm = r * tl.exp(g - gm[None, :])
    U, A_ak, Wi = _chunk_sa(a * tl.exp(gx), a * tl.exp(gx - gm[None, :]), Bm, Km, v, S, BT, LOG2BT, PREC)
    M_rb = tl.where(incl, tl.dot(Rm, tl.trans(Bm), input_precision=PREC), 0.0)
    M_rk = tl.where(incl, tl.dot(Rm, tl.trans(Km), input_precision=PREC), 0.0)
    y = tl.dot(r * tl.exp(g), tl.trans(S), input_precision=PREC)
    y += tl.dot(M_rb, U, input_precision=PREC) + tl.dot(M_rk, v, input_precision=PREC)
    tail = tl.exp(gL[None, :] - g)
    S_next = S * tl.exp(gL)[None, :]
    S_next += tl.dot(tl.trans(U), b * tail, input_precision=PREC)
    S_next += tl.dot(tl.trans(v), k * tail, input_precision=PREC)
    return y, S_next


@triton.jit
def _decay_grad(dg, dgx, dgm, dgL, BT: tl.constexpr):
    """dw from the gradients of g (inclusive cumsum), gx (exclusive), gm (g at the middle step) and gL (the total)."""
    ot = tl.arange(0, BT)
    dw = tl.cumsum(dg + dgx, axis=0, reverse=True) - dgx + dgL[None, :]
    return dw + tl.where(ot[:, None] <= BT // 2 - 1, dgm[None, :], 0.0)


@triton.jit
def _chunk_bwd(r_, w_, k_, v_, a_, b_, dy_, dr_, dw_, dk_, dv_, da_, db_, off, m, S, dS, BT: tl.constexpr,
               LOG2BT: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """Stores the input gradients of one chunk given the state S before it and the gradient dS of the state
    after it; returns the gradient of S."""
    ot = tl.arange(0, BT)
    incl = ot[:, None] >= ot[None, :]
    strict = ot[:, None] > ot[None, :]
    r, w, k = _load(r_, off, m), _load(w_, off, m), _load(k_, off, m)
    v, a, b = _load(v_, off, m), _load(a_, off, m), _load(b_, off, m)
    dy = _load(dy_, off, m)
    # the chunk's forward, recomputed
    g, gx, gm, gL = _decays(w, BT)
    e_g, e_gx = tl.exp(g), tl.exp(gx)
    e_mg, e_gm, e_xm = tl.exp(gm[None, :] - g), tl.exp(g - gm[None, :]), tl.exp(gx - gm[None, :])
    e_tail, e_L = tl.exp(gL[None, :] - g), tl.exp(gL)
    Rs, Rm, As, Am = r * e_g, r * e_gm, a * e_gx, a * e_xm
    Bm, Km, Bl, Kl = b * e_mg, k * e_mg, b * e_tail, k * e_tail
    U, A_ak, Wi = _chunk_sa(As, Am, Bm, Km, v, S, BT, LOG2BT, PREC)
    M_rb = tl.where(incl, tl.dot(Rm, tl.trans(Bm), input_precision=PREC), 0.0)
    M_rk = tl.where(incl, tl.dot(Rm, tl.trans(Km), input_precision=PREC), 0.0)
    # S' = S diag(e^gL) + U^T Bl + V^T Kl
    dS0 = dS * e_L[None, :]
    dgL = tl.sum(S * dS0, axis=0)
    dU = tl.dot(Bl, tl.trans(dS), input_precision=PREC)
    dV = tl.dot(Kl, tl.trans(dS), input_precision=PREC)
    dBl = tl.dot(U, dS, input_precision=PREC)
    dKl = tl.dot(v, dS, input_precision=PREC)
    # Y = Rs S^T + M_rb U + M_rk V
    dRs = tl.dot(dy, S, input_precision=PREC)
    dS0 += tl.dot(tl.trans(dy), Rs, input_precision=PREC)
    dM_rb = tl.where(incl, tl.dot(dy, tl.trans(U), input_precision=PREC), 0.0)
    dM_rk = tl.where(incl, tl.dot(dy, tl.trans(v), input_precision=PREC), 0.0)
    dU += tl.dot(tl.trans(M_rb), dy, input_precision=PREC)
    dV += tl.dot(tl.trans(M_rk), dy, input_precision=PREC)
    dRm = tl.dot(dM_rb, Bm, input_precision=PREC) + tl.dot(dM_rk, Km, input_precision=PREC)
    dBm = tl.dot(tl.trans(dM_rb), Rm, input_precision=PREC)
    dKm = tl.dot(tl.trans(dM_rk), Rm, input_precision=PREC)
    # U = (I - A_ab)^{-1} Z, Z = As S^T + A_ak V
    dZ = tl.dot(tl.trans(Wi), dU, input_precision="ieee")
    dA_ab = tl.where(strict, tl.dot(dZ, tl.trans(U), input_precision=PREC), 0.0)
    dA_ak = tl.where(strict, tl.dot(dZ, tl.trans(v), input_precision=PREC), 0.0)
    dAs = tl.dot(dZ, S, input_precision=PREC)
    dS0 += tl.dot(tl.trans(dZ), As, input_precision=PREC)
    dV += tl.dot(tl.trans(A_ak), dZ, input_precision=PREC)
    # A_ab = tril<(Am Bm^T), A_ak = tril<(Am Km^T)
    dAm = tl.dot(dA_ab, Bm, input_precision=PREC) + tl.dot(dA_ak, Km, input_precision=PREC)
    dBm += tl.dot(tl.trans(dA_ab), Am, input_precision=PREC)
    dKm += tl.dot(tl.trans(dA_ak), Am, input_precision=PREC)
    # the decay factors: through g, gx, gm and gL to w
    dg = dRs * Rs + dRm * Rm - dBm * Bm - dKm * Km - dBl * Bl - dKl * Kl
    dgm = tl.sum(dBm * Bm + dKm * Km - dRm * Rm - dAm * Am, axis=0)
    dgL += tl.sum(dBl * Bl + dKl * Kl, axis=0)
    tl.store(dw_ + off, _decay_grad(dg, dAs * As + dAm * Am, dgm, dgL, BT), mask=m)
    tl.store(dr_ + off, dRs * e_g + dRm * e_gm, mask=m)
    tl.store(dk_ + off, dKm * e_mg + dKl * e_tail, mask=m)
    tl.store(dv_ + off, dV, mask=m)
    tl.store(da_ + off, dAs * e_gx + dAm * e_xm, mask=m)
    tl.store(db_ + off, dBm * e_mg + dBl * e_tail, mask=m)
    return dS0


# ---- sequential schedule: one program per (batch, head) ----


@triton.jit
def wkv7_fwd_kernel(r_, w_, k_, v_, a_, b_, s0_, y_, sT_, ck_, T, H, NC, N: tl.constexpr, BT: tl.constexpr,
                    LOG2BT: tl.constexpr, PREC: tl.constexpr, SAVE: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    on = tl.arange(0, N)
    mat = on[:, None] * N + on[None, :]
    S = tl.load(s0_ + pid * N * N + mat)
    for c in range(0, NC):
        off, m = _offsets(pid, c, T, H, N, BT)
        r, w, k = _load(r_, off, m), _load(w_, off, m), _load(k_, off, m)
        v, a, b = _load(v_, off, m), _load(a_, off, m), _load(b_, off, m)
        if SAVE:
            tl.store(ck_ + (pid * NC + c) * N * N + mat, S)
        y, S = _chunk_fwd(r, w, k, v, a, b, S, BT, LOG2BT, PREC)
        tl.store(y_ + off, y, mask=m)
    tl.store(sT_ + pid * N * N + mat, S)


@triton.jit
def wkv7_bwd_kernel(r_, w_, k_, v_, a_, b_, ck_, dy_, dsT_, dr_, dw_, dk_, dv_, da_, db_, ds0_, T, H, NC,
                    N: tl.constexpr, BT: tl.constexpr, LOG2BT: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    on = tl.arange(0, N)
    mat = on[:, None] * N + on[None, :]
    dS = tl.load(dsT_ + pid * N * N + mat)
    for i in range(0, NC):
        c = NC - 1 - i
        off, m = _offsets(pid, c, T, H, N, BT)
        S = tl.load(ck_ + (pid * NC + c) * N * N + mat)
        dS = _chunk_bwd(r_, w_, k_, v_, a_, b_, dy_, dr_, dw_, dk_, dv_, da_, db_, off, m, S, dS, BT, LOG2BT, PREC)
    tl.store(ds0_ + pid * N * N + mat, dS)


# ---- parallel schedule: grids (batch * head, chunk) around one light scan per (batch, head) ----


@triton.jit
def wkv7_prep_kernel(w_, k_, v_, a_, b_, wy_, uv_, T, H, N: tl.constexpr, BT: tl.constexpr, LOG2BT: tl.constexpr,
                     PREC: tl.constexpr):  # fmt: skip
    """Per chunk, the WY factors of the sa of every step: U = WY S^T + UV (S the state before the chunk)."""
    pid, c = tl.program_id(0).to(tl.int64), tl.program_id(1)
    off, m = _offsets(pid, c, T, H, N, BT)
    w, k, v = _load(w_, off, m), _load(k_, off, m), _load(v_, off, m)
    a, b = _load(a_, off, m), _load(b_, off, m)
    ot = tl.arange(0, BT)
    g, gx, gm, gL = _decays(w, BT)
    Am, Bm, Km = a * tl.exp(gx - gm[None, :]), b * tl.exp(gm[None, :] - g), k * tl.exp(gm[None, :] - g)
    strict = ot[:, None] > ot[None, :]
    A_ab = tl.where(strict, tl.dot(Am, tl.trans(Bm), input_precision=PREC), 0.0)
    A_ak = tl.where(strict, tl.dot(Am, tl.trans(Km), input_precision=PREC), 0.0)
    Wi = _tri_inverse(A_ab, BT, LOG2BT)
    tl.store(wy_ + off, tl.dot(Wi, a * tl.exp(gx), input_precision="ieee"), mask=m)
    tl.store(uv_ + off, tl.dot(Wi, tl.dot(A_ak, v, input_precision=PREC), input_precision="ieee"), mask=m)


@triton.jit
def wkv7_scan_kernel(w_, k_, v_, b_, wy_, uv_, s0_, sT_, ck_, T, H, NC, N: tl.constexpr, BT: tl.constexpr,
                     PREC: tl.constexpr):  # fmt: skip
    """The state before every chunk (into ck_) and after the last: S' = S e^gL + U^T Bl + V^T Kl."""
    pid = tl.program_id(0).to(tl.int64)
    on = tl.arange(0, N)
    mat = on[:, None] * N + on[None, :]
    S = tl.load(s0_ + pid * N * N + mat)
    for c in range(0, NC):
        off, m = _offsets(pid, c, T, H, N, BT)
        tl.store(ck_ + (pid * NC + c) * N * N + mat, S)
        w, k, v, b = _load(w_, off, m), _load(k_, off, m), _load(v_, off, m), _load(b_, off, m)
        g = tl.cumsum(w, axis=0)
        gL = tl.sum(w, axis=0)
        tail = tl.exp(gL[None, :] - g)
        U = tl.dot(_load(wy_, off, m), tl.trans(S), input_precision=PREC) + _load(uv_, off, m)
        S = S * tl.exp(gL)[None, :]
        S += tl.dot(tl.trans(U), b * tail, input_precision=PREC) + tl.dot(tl.trans(v), k * tail, input_precision=PREC)
    tl.store(sT_ + pid * N * N + mat, S)


@triton.jit
def wkv7_out_kernel(r_, w_, k_, v_, a_, b_, ck_, y_, T, H, NC, N: tl.constexpr, BT: tl.constexpr,
                    LOG2BT: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    pid, c = tl.program_id(0).to(tl.int64), tl.program_id(1)
    on = tl.arange(0, N)
    off, m = _offsets(pid, c, T, H, N, BT)
    S = tl.load(ck_ + (pid * NC + c) * N * N + on[:, None] * N + on[None, :])
    r, w, k = _load(r_, off, m), _load(w_, off, m), _load(k_, off, m)
    v, a, b = _load(v_, off, m), _load(a_, off, m), _load(b_, off, m)
    y, _ = _chunk_fwd(r, w, k, v, a, b, S, BT, LOG2BT, PREC)
    tl.store(y_ + off, y, mask=m)


@triton.jit
def wkv7_bscan_kernel(r_, w_, b_, wy_, dy_, dsT_, dck_, ds0_, T, H, NC, N: tl.constexpr, BT: tl.constexpr,
                      PREC: tl.constexpr):  # fmt: skip
    """The gradient of the state after every chunk (into dck_) and of the initial state:
    dS_before = dS e^gL + (dS Bl^T) WY + dy^T (Rs + tril<=(Rm Bm^T) WY)."""
    pid = tl.program_id(0).to(tl.int64)
    on, ot = tl.arange(0, N), tl.arange(0, BT)
    mat = on[:, None] * N + on[None, :]
    incl = ot[:, None] >= ot[None, :]
    dS = tl.load(dsT_ + pid * N * N + mat)
    for i in range(0, NC):
        c = NC - 1 - i
        off, m = _offsets(pid, c, T, H, N, BT)
        tl.store(dck_ + (pid * NC + c) * N * N + mat, dS)
        r, w, b = _load(r_, off, m), _load(w_, off, m), _load(b_, off, m)
        wy, dy = _load(wy_, off, m), _load(dy_, off, m)
        g, _, gm, gL = _decays(w, BT)
        Bm, Rm = b * tl.exp(gm[None, :] - g), r * tl.exp(g - gm[None, :])
        M_rb = tl.where(incl, tl.dot(Rm, tl.trans(Bm), input_precision=PREC), 0.0)
        X = r * tl.exp(g) + tl.dot(M_rb, wy, input_precision=PREC)
        dSB = tl.dot(dS, tl.trans(b * tl.exp(gL[None, :] - g)), input_precision=PREC)
        dS = dS * tl.exp(gL)[None, :] + tl.dot(dSB, wy, input_precision=PREC)
        dS += tl.dot(tl.trans(dy), X, input_precision=PREC)
    tl.store(ds0_ + pid * N * N + mat, dS)


@triton.jit
def wkv7_grads_kernel(r_, w_, k_, v_, a_, b_, ck_, dck_, dy_, dr_, dw_, dk_, dv_, da_, db_, T, H, NC,
                      N: tl.constexpr, BT: tl.constexpr, LOG2BT: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    pid, c = tl.program_id(0).to(tl.int64), tl.program_id(1)
    on = tl.arange(0, N)
    mat = on[:, None] * N + on[None, :]
    off, m = _offsets(pid, c, T, H, N, BT)
    S = tl.load(ck_ + (pid * NC + c) * N * N + mat)
    dS = tl.load(dck_ + (pid * NC + c) * N * N + mat)
    _chunk_bwd(r_, w_, k_, v_, a_, b_, dy_, dr_, dw_, dk_, dv_, da_, db_, off, m, S, dS, BT, LOG2BT, PREC)
