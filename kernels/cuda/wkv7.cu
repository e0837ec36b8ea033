// RWKV-7 WKV (generalized delta rule), forward and backward, sequential over time.
// Per (batch, head) one block of N threads. State S [N, N] indexed [value, key]; per step t:
//   sa = S @ a;  S = S * exp(w)[None, :] + sa[:, None] * b[None, :] + v[:, None] * k[None, :];  y = S @ r
// Forward: thread i keeps row i of S in registers. Backward: thread i keeps column i of S and both row i and
// column i of the state gradient G (the same matrix twice, so that no step needs a cross-thread reduction).
// Backward walks each chunk of K steps in reverse from the checkpoint at its end. When every decay of the
// chunk is >= exp(MMRWKV_BACKSTEP_MIN_W) (always so for the model's w >= -exp(-0.5)) it steps the state
// back by inverting the update (S_{t-1} = (S_t - sa b^T - v k^T) / exp(w), as the authors' kernel does),
// which costs no memory traffic; otherwise it recomputes the chunk forward from the checkpoint at its start
// into a scratch buffer, exact for any decay.
#include "wkv_api.h"
#include "wkv_common.cuh"

namespace {

constexpr int N = MMRWKV_N;
constexpr int K = MMRWKV_CHUNK;

template <class F>
__global__ void wkv7_forward_kernel(int T, int H, const F* __restrict__ r_, const F* __restrict__ w_,
                                    const F* __restrict__ k_, const F* __restrict__ v_, const F* __restrict__ a_,
                                    const F* __restrict__ b_, const float* __restrict__ s0, F* __restrict__ y_,
                                    float* __restrict__ sT, float* __restrict__ sa_, float* __restrict__ ckpt) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    const int slots = mmrwkv_chunks(T) + 1;  // the state before every chunk, then the final state
    __shared__ float r[N], d[N], k[N], a[N], b[N];
    float S[N];  // row i: S[i, :]
#pragma unroll
    for (int j = 0; j < N; j++) S[j] = s0[(size_t)bh * N * N + i * N + j];

    for (int t = 0; t < T; t++) {
        const size_t idx = ((size_t)(bi * T + t) * H + h) * N + i;
        // the previous step's readers of the shared vectors are done
        __syncthreads();
        r[i] = to_f(r_[idx]);
        d[i] = expf(to_f(w_[idx]));
        k[i] = to_f(k_[idx]);
        a[i] = to_f(a_[idx]);
        b[i] = to_f(b_[idx]);
        const float v = to_f(v_[idx]);
        __syncthreads();
        if (ckpt != nullptr && t % K == 0) {
            float* c = ckpt + ((size_t)bh * slots + t / K) * N * N + i * N;
#pragma unroll
            for (int j = 0; j < N; j++) c[j] = S[j];
        }
        float sa = 0.f;
#pragma unroll
        for (int j = 0; j < N; j++) sa += S[j] * a[j];
        float y = 0.f;
#pragma unroll
        for (int j = 0; j < N; j++) {
            S[j] = S[j] * d[j] + sa * b[j] + v * k[j];
            y += S[j] * r[j];
        }
        y_[idx] = from_f<F>(y);
        if (sa_ != nullptr) sa_[idx] = sa;
    }
#pragma unroll
    for (int j = 0; j < N; j++) sT[(size_t)bh * N * N + i * N + j] = S[j];
    if (ckpt != nullptr) {
        float* c = ckpt + ((size_t)bh * slots + slots - 1) * N * N + i * N;
#pragma unroll
        for (int j = 0; j < N; j++) c[j] = S[j];
    }
}

// Recomputes the states of steps [t0, t1) from the checkpoint; stores S_{t-1} (column i) for each step in
// scratch [K, N, N] laid out [step, value j, key i] and leaves S_{t1 - 1} in Scol.
template <class F>
__device__ __forceinline__ void wkv7_recompute_chunk(int T, int H, int t0, int t1, const F* __restrict__ w_,
                                                     const F* __restrict__ k_, const F* __restrict__ v_,
                                                     const F* __restrict__ b_, const float* __restrict__ sa_,
                                                     const float* __restrict__ ck, float* __restrict__ scr,
                                                     float* v, float* sa, float (&Scol)[N]) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
#pragma unroll
    for (int j = 0; j < N; j++) Scol[j] = ck[j * N + i];
    for (int t = t0; t < t1; t++) {
        const size_t idx = ((size_t)(bi * T + t) * H + h) * N + i;
        __syncthreads();
        v[i] = to_f(v_[idx]);
        sa[i] = sa_[idx];
        __syncthreads();
        const float di = expf(to_f(w_[idx])), ki = to_f(k_[idx]), bi_ = to_f(b_[idx]);
        float* s = scr + (size_t)(t - t0) * N * N;
#pragma unroll
        for (int j = 0; j < N; j++) {
            s[j * N + i] = Scol[j];
            Scol[j] = Scol[j] * di + sa[j] * bi_ + v[j] * ki;
        }
    }
}

// Sets Scol to column i of the state at the end of chunk [t0, t1) and returns whether the chunk can be
// walked back by inverting the update; if not, recomputes the chunk into scratch (see wkv7_recompute_chunk).
template <class F>
__device__ __forceinline__ bool wkv7_chunk_start(int T, int H, int t0, int t1, const F* __restrict__ w_,
                                                 const F* __restrict__ k_, const F* __restrict__ v_,
                                                 const F* __restrict__ b_, const float* __restrict__ sa_,
                                                 const float* __restrict__ ck, float* __restrict__ scr, float* v,
                                                 float* sa, float (&Scol)[N]) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    bool mine = false;
    for (int t = t0; t < t1; t++) mine |= to_f(w_[((size_t)(bi * T + t) * H + h) * N + i]) < MMRWKV_BACKSTEP_MIN_W;
    // one block-wide decision, so that every thread takes the same path through the barriers below
    if (__syncthreads_or(mine)) {
        wkv7_recompute_chunk<F>(T, H, t0, t1, w_, k_, v_, b_, sa_, ck, scr, v, sa, Scol);
        return false;
    }
    const float* end = ck + N * N;  // the next checkpoint: the state after step t1 - 1
#pragma unroll
    for (int j = 0; j < N; j++) Scol[j] = end[j * N + i];
    return true;
}

template <class F>
__global__ void wkv7_backward_kernel(int T, int H, const F* __restrict__ r_, const F* __restrict__ w_,
                                     const F* __restrict__ k_, const F* __restrict__ v_, const F* __restrict__ a_,
                                     const F* __restrict__ b_, const F* __restrict__ dy_,
                                     const float* __restrict__ sa_, const float* __restrict__ ckpt,
                                     const float* __restrict__ dsT, F* __restrict__ dr_, F* __restrict__ dw_,
                                     F* __restrict__ dk_, F* __restrict__ dv_, F* __restrict__ da_,
                                     F* __restrict__ db_, float* __restrict__ ds0, float* __restrict__ scratch) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    const int chunks = mmrwkv_chunks(T), slots = chunks + 1;
    __shared__ float r[N], d[N], k[N], v[N], a[N], b[N], sa[N], dy[N], dsa[N];
    float Scol[N], Grow[N], Gcol[N];  // S[:, i], G[i, :], G[:, i]
    const float* g = dsT + (size_t)bh * N * N;
#pragma unroll
    for (int j = 0; j < N; j++) {
        Grow[j] = g[i * N + j];
        Gcol[j] = g[j * N + i];
    }
    float* scr = scratch + (size_t)bh * K * N * N;

    for (int c = chunks - 1; c >= 0; c--) {
        const int t0 = c * K, t1 = t0 + K < T ? t0 + K : T;
        const float* ck = ckpt + ((size_t)bh * slots + c) * N * N;
        const bool invert = wkv7_chunk_start<F>(T, H, t0, t1, w_, k_, v_, b_, sa_, ck, scr, v, sa, Scol);
        for (int t = t1 - 1; t >= t0; t--) {
            const size_t idx = ((size_t)(bi * T + t) * H + h) * N + i;
            __syncthreads();
            r[i] = to_f(r_[idx]);
            d[i] = expf(to_f(w_[idx]));
            k[i] = to_f(k_[idx]);
            v[i] = to_f(v_[idx]);
            a[i] = to_f(a_[idx]);
            b[i] = to_f(b_[idx]);
            sa[i] = sa_[idx];
            dy[i] = to_f(dy_[idx]);
            __syncthreads();
            const float ri = r[i], di = d[i], ki = k[i], ai = a[i], bi_ = b[i], dyi = dy[i];
            // y_t = S_t @ r_t: gradients to r and to S_t
            float dr = 0.f;
#pragma unroll
            for (int j = 0; j < N; j++) {
                dr += dy[j] * Scol[j];
                Grow[j] += dyi * r[j];
                Gcol[j] += dy[j] * ri;
            }
            float dv = 0.f, dsai = 0.f, dk = 0.f, db = 0.f;
#pragma unroll
            for (int j = 0; j < N; j++) {
                dv += Grow[j] * k[j];
                dsai += Grow[j] * b[j];
                dk += Gcol[j] * v[j];
                db += Gcol[j] * sa[j];
            }
            dsa[i] = dsai;
            const float* s = scr + (size_t)(t - t0) * N * N;
            const float inv_di = 1.f / di;
            // Scol becomes S_{t-1}
            if (invert) {
#pragma unroll
                for (int j = 0; j < N; j++) Scol[j] = (Scol[j] - sa[j] * bi_ - v[j] * ki) * inv_di;
            } else {
#pragma unroll
                for (int j = 0; j < N; j++) Scol[j] = s[j * N + i];
            }
            float dd = 0.f;
#pragma unroll
            for (int j = 0; j < N; j++) dd += Gcol[j] * Scol[j];
            __syncthreads();
            float da = 0.f;
#pragma unroll
            for (int j = 0; j < N; j++) {
                da += dsa[j] * Scol[j];
                Grow[j] = Grow[j] * d[j] + dsai * a[j];
                Gcol[j] = Gcol[j] * di + dsa[j] * ai;
            }
            dr_[idx] = from_f<F>(dr);
            dw_[idx] = from_f<F>(dd * di);
            dk_[idx] = from_f<F>(dk);
            dv_[idx] = from_f<F>(dv);
            da_[idx] = from_f<F>(da);
            db_[idx] = from_f<F>(db);
        }
    }
#pragma unroll
    for (int j = 0; j < N; j++) ds0[(size_t)bh * N * N + i * N + j] = Grow[j];
}

template <class F>
const char* forward(const Wkv7Fwd& p) {
    const dim3 grid(p.B * p.H), block(N);
    MMRWKV_LAUNCH(wkv7_forward_kernel<F>, grid, block, p.stream, p.T, p.H, (const F*)p.r, (const F*)p.w,
                  (const F*)p.k, (const F*)p.v, (const F*)p.a, (const F*)p.b, p.s0, (F*)p.y, p.sT, p.sa, p.ckpt);
    return MMRWKV_LAST_ERROR();
}

template <class F>
const char* backward(const Wkv7Bwd& p) {
    const dim3 grid(p.B * p.H), block(N);
    MMRWKV_LAUNCH(wkv7_backward_kernel<F>, grid, block, p.stream, p.T, p.H, (const F*)p.r, (const F*)p.w,
                  (const F*)p.k, (const F*)p.v, (const F*)p.a, (const F*)p.b, (const F*)p.dy, p.sa, p.ckpt, p.dsT,
                  (F*)p.dr, (F*)p.dw, (F*)p.dk, (F*)p.dv, (F*)p.da, (F*)p.db, p.ds0, p.scratch);
    return MMRWKV_LAST_ERROR();
}

}  // namespace

const char* mmrwkv_wkv7_forward(const Wkv7Fwd& p) { return p.is_bf16 ? forward<bf16>(p) : forward<float>(p); }

const char* mmrwkv_wkv7_backward(const Wkv7Bwd& p) { return p.is_bf16 ? backward<bf16>(p) : backward<float>(p); }
