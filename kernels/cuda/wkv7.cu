// RWKV-7 WKV (generalized delta rule), forward and backward, sequential over time.
// Per (batch, head) one block of N threads. State S [N, N] indexed [value, key]; per step t:
//   sa = S @ a;  S = S * exp(w)[None, :] + sa[:, None] * b[None, :] + v[:, None] * k[None, :];  y = S @ r
// Inputs are staged through shared memory MMRWKV_STAGE steps at a time (one burst of loads per stage).
// Forward: thread i keeps row i of S in registers; states go to memory through a shared tile (coalesced).
// Backward: thread i keeps column i of S and row i of the state gradient G in registers; the column of G that
// the key-side gradients need is read from a shared copy of G (registers for a third matrix would spill).
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
constexpr int ST = MMRWKV_STAGE;
static_assert(N <= 64, "wkv7: the CUDA kernels support head sizes up to 64");

template <class F>
__global__ void wkv7_forward_kernel(int T, int H, const F* __restrict__ r_, const F* __restrict__ w_,
                                    const F* __restrict__ k_, const F* __restrict__ v_, const F* __restrict__ a_,
                                    const F* __restrict__ b_, const float* __restrict__ s0, F* __restrict__ y_,
                                    float* __restrict__ sT, float* __restrict__ sa_, float* __restrict__ ckpt) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    const int slots = mmrwkv_chunks(T) + 1;  // the state before every chunk, then the final state
    __shared__ float r[ST][N], d[ST][N], k[ST][N], a[ST][N], b[ST][N], v[ST][N];
    __shared__ mmrwkv_tile<N> tile;
    float S[N];  // row i: S[i, :]
    mmrwkv_load_rows<N>(s0 + (size_t)bh * N * N, S, tile);

    for (int ts = 0; ts < T; ts += ST) {
        const int n = T - ts < ST ? T - ts : ST;
        __syncthreads();  // the previous stage's readers are done
        for (int s = 0; s < n; s++) {
            const size_t idx = ((size_t)(bi * T + ts + s) * H + h) * N + i;
            r[s][i] = to_f(r_[idx]);
            d[s][i] = expf(to_f(w_[idx]));
            k[s][i] = to_f(k_[idx]);
            a[s][i] = to_f(a_[idx]);
            b[s][i] = to_f(b_[idx]);
            v[s][i] = to_f(v_[idx]);
        }
        __syncthreads();
        for (int s = 0; s < n; s++) {
            const int t = ts + s;
            if (ckpt != nullptr && t % K == 0) mmrwkv_store_rows<N>(ckpt + ((size_t)bh * slots + t / K) * N * N, S, tile);
            float sa = 0.f;
#pragma unroll
            for (int j = 0; j < N; j++) sa += S[j] * a[s][j];
            const float vi = v[s][i];
            float y = 0.f;
#pragma unroll
            for (int j = 0; j < N; j++) {
                S[j] = S[j] * d[s][j] + sa * b[s][j] + vi * k[s][j];
                y += S[j] * r[s][j];
            }
            const size_t idx = ((size_t)(bi * T + t) * H + h) * N + i;
            y_[idx] = from_f<F>(y);
            if (sa_ != nullptr) sa_[idx] = sa;
        }
    }
    mmrwkv_store_rows<N>(sT + (size_t)bh * N * N, S, tile);
    if (ckpt != nullptr) mmrwkv_store_rows<N>(ckpt + ((size_t)bh * slots + slots - 1) * N * N, S, tile);
}

// Recomputes the states of steps [t0, t1) from the checkpoint; stores S_{t-1} (column i) for each step in
// scratch [K, N, N] laid out [step, value j, key i] and leaves S_{t1 - 1} in Scol. v and sa: shared [N] space.
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

// The inputs of one backward stage in shared memory (decays as exp(w)).
struct Wkv7Stage {
    float r[ST][N], d[ST][N], k[ST][N], v[ST][N], a[ST][N], b[ST][N], sa[ST][N], dy[ST][N];
};

template <class F>
__device__ __forceinline__ void wkv7_load_stage(int T, int H, int ts, int n, const F* __restrict__ r_,
                                                const F* __restrict__ w_, const F* __restrict__ k_,
                                                const F* __restrict__ v_, const F* __restrict__ a_,
                                                const F* __restrict__ b_, const F* __restrict__ dy_,
                                                const float* __restrict__ sa_, Wkv7Stage& x) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    __syncthreads();  // the previous stage's readers (and the chunk start's users of x.v / x.sa) are done
    for (int s = 0; s < n; s++) {
        const size_t idx = ((size_t)(bi * T + ts + s) * H + h) * N + i;
        x.r[s][i] = to_f(r_[idx]);
        x.d[s][i] = expf(to_f(w_[idx]));
        x.k[s][i] = to_f(k_[idx]);
        x.v[s][i] = to_f(v_[idx]);
        x.a[s][i] = to_f(a_[idx]);
        x.b[s][i] = to_f(b_[idx]);
        x.sa[s][i] = sa_[idx];
        x.dy[s][i] = to_f(dy_[idx]);
    }
    __syncthreads();
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
    __shared__ Wkv7Stage x;
    __shared__ mmrwkv_tile<N> G;  // a copy of the state gradient, for its columns
    __shared__ float dsa[N];
    float Scol[N], Grow[N];  // S[:, i], G[i, :]
    mmrwkv_load_rows<N>(dsT + (size_t)bh * N * N, Grow, G);
    float* scr = scratch + (size_t)bh * K * N * N;

    for (int c = chunks - 1; c >= 0; c--) {
        const int t0 = c * K, t1 = t0 + K < T ? t0 + K : T;
        const float* ck = ckpt + ((size_t)bh * slots + c) * N * N;
        const bool invert = wkv7_chunk_start<F>(T, H, t0, t1, w_, k_, v_, b_, sa_, ck, scr, x.v[0], x.sa[0], Scol);
        for (int ts = t0 + (t1 - 1 - t0) / ST * ST; ts >= t0; ts -= ST) {
            const int n = t1 - ts < ST ? t1 - ts : ST;
            wkv7_load_stage<F>(T, H, ts, n, r_, w_, k_, v_, a_, b_, dy_, sa_, x);
            for (int s = n - 1; s >= 0; s--) {
                const int t = ts + s;
                const float di = x.d[s][i], dyi = x.dy[s][i];
                // y_t = S_t @ r_t: gradients to r and to S_t
                float dr = 0.f, dv = 0.f, dsai = 0.f;
#pragma unroll
                for (int j = 0; j < N; j++) {
                    dr += x.dy[s][j] * Scol[j];
                    Grow[j] += dyi * x.r[s][j];
                    dv += Grow[j] * x.k[s][j];
                    dsai += Grow[j] * x.b[s][j];
                    G[i][j] = Grow[j];
                }
                dsa[i] = dsai;
                // Scol becomes S_{t-1}
                if (invert) {
                    const float ki = x.k[s][i], bi_ = x.b[s][i], inv_di = 1.f / di;
#pragma unroll
                    for (int j = 0; j < N; j++) Scol[j] = (Scol[j] - x.sa[s][j] * bi_ - x.v[s][j] * ki) * inv_di;
                } else {
                    const float* sp = scr + (size_t)(t - t0) * N * N;
#pragma unroll
                    for (int j = 0; j < N; j++) Scol[j] = sp[j * N + i];
                }
                __syncthreads();
                float dk = 0.f, db = 0.f, dd = 0.f, da = 0.f;
#pragma unroll
                for (int j = 0; j < N; j++) {
                    const float gc = G[j][i];  // G[j, i]: column i
                    dk += gc * x.v[s][j];
                    db += gc * x.sa[s][j];
                    dd += gc * Scol[j];
                    da += dsa[j] * Scol[j];
                    Grow[j] = Grow[j] * x.d[s][j] + dsai * x.a[s][j];
                }
                const size_t idx = ((size_t)(bi * T + t) * H + h) * N + i;
                dr_[idx] = from_f<F>(dr);
                dw_[idx] = from_f<F>(dd * di);
                dk_[idx] = from_f<F>(dk);
                dv_[idx] = from_f<F>(dv);
                da_[idx] = from_f<F>(da);
                db_[idx] = from_f<F>(db);
                __syncthreads();  // G and dsa are rewritten by the next step
            }
        }
    }
    mmrwkv_store_rows<N>(ds0 + (size_t)bh * N * N, Grow, G);
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
