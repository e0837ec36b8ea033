// RWKV-5/6 WKV, forward and backward, sequential over time.
// Per (batch, head) one block of N threads. State S [N, N] indexed [key, value]; per step t:
//   y = r @ (u[:, None] * k[:, None] * v[None, :] + S);  S = exp(w)[:, None] * S + k[:, None] * v[None, :]
// Inputs are staged through shared memory MMRWKV_STAGE steps at a time (one burst of loads per stage).
// Forward: thread j keeps column j of S (one value channel). Backward: thread i keeps row i of S and row i of
// the state gradient G in registers, and reads column i of G from a shared copy (no cross-thread reduction;
// registers for a third matrix would spill). It walks each chunk back from the checkpoint at its end by
// inverting the update (S_{t-1} = (S_t - k v^T) / exp(w)) when all its decays are >= exp(MMRWKV_BACKSTEP_MIN_W),
// else it replays the chunk from its start into a scratch buffer (exact). Rows of states go to and come from
// memory through a shared tile (coalesced).
#include "wkv_api.h"
#include "wkv_common.cuh"

namespace {

constexpr int N = MMRWKV_N;
constexpr int K = MMRWKV_CHUNK;
constexpr int ST = MMRWKV_STAGE;
static_assert(N <= 64, "wkv6: the CUDA kernels support head sizes up to 64");

template <class F>
__global__ void wkv6_forward_kernel(int T, int H, const F* __restrict__ r_, const F* __restrict__ w_,
                                    const F* __restrict__ k_, const F* __restrict__ v_, const float* __restrict__ u_,
                                    const float* __restrict__ s0, F* __restrict__ y_, float* __restrict__ sT,
                                    float* __restrict__ ckpt) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, j = threadIdx.x;
    const int slots = mmrwkv_chunks(T) + 1;  // the state before every chunk, then the final state
    __shared__ float r[ST][N], d[ST][N], k[ST][N], v[ST][N], u[N];
    u[j] = u_[h * N + j];
    float S[N];  // column j: S[:, j] (consecutive threads: consecutive addresses of every row)
#pragma unroll
    for (int i = 0; i < N; i++) S[i] = s0[(size_t)bh * N * N + i * N + j];

    for (int ts = 0; ts < T; ts += ST) {
        const int n = T - ts < ST ? T - ts : ST;
        __syncthreads();  // the previous stage's readers are done
        for (int s = 0; s < n; s++) {
            const size_t idx = ((size_t)(bi * T + ts + s) * H + h) * N + j;
            r[s][j] = to_f(r_[idx]);
            d[s][j] = expf(to_f(w_[idx]));
            k[s][j] = to_f(k_[idx]);
            v[s][j] = to_f(v_[idx]);
        }
        __syncthreads();
        for (int s = 0; s < n; s++) {
            const int t = ts + s;
            if (ckpt != nullptr && t % K == 0) {
                float* c = ckpt + ((size_t)bh * slots + t / K) * N * N + j;
#pragma unroll
                for (int i = 0; i < N; i++) c[i * N] = S[i];
            }
            const float vj = v[s][j];
            float y = 0.f;
#pragma unroll
            for (int i = 0; i < N; i++) {
                y += r[s][i] * (u[i] * k[s][i] * vj + S[i]);
                S[i] = S[i] * d[s][i] + k[s][i] * vj;
            }
            y_[((size_t)(bi * T + t) * H + h) * N + j] = from_f<F>(y);
        }
    }
#pragma unroll
    for (int i = 0; i < N; i++) sT[(size_t)bh * N * N + i * N + j] = S[i];
    if (ckpt != nullptr) {
        float* c = ckpt + ((size_t)bh * slots + slots - 1) * N * N + j;
#pragma unroll
        for (int i = 0; i < N; i++) c[i * N] = S[i];
    }
}

// Recomputes steps [t0, t1) from the checkpoint, storing row i of S_{t-1} in scratch [K, N, N] laid out
// [step, value j, key i]; Srow is working space, v shared [N] space.
template <class F>
__device__ __forceinline__ void wkv6_recompute_chunk(int T, int H, int t0, int t1, const F* __restrict__ w_,
                                                     const F* __restrict__ k_, const F* __restrict__ v_,
                                                     const float* __restrict__ ck, float* __restrict__ scr,
                                                     float* v, float (&Srow)[N], mmrwkv_tile<N>& tile) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    mmrwkv_load_rows<N>(ck, Srow, tile);
    for (int t = t0; t < t1; t++) {
        const size_t idx = ((size_t)(bi * T + t) * H + h) * N + i;
        __syncthreads();
        v[i] = to_f(v_[idx]);
        __syncthreads();
        const float di = expf(to_f(w_[idx])), ki = to_f(k_[idx]);
        float* s = scr + (size_t)(t - t0) * N * N;
#pragma unroll
        for (int j = 0; j < N; j++) {
            s[j * N + i] = Srow[j];
            Srow[j] = Srow[j] * di + ki * v[j];
        }
    }
}

// Sets Srow to row i of the state at the end of chunk [t0, t1) and returns true when the chunk can be walked
// back by inverting the update; otherwise replays the chunk into scratch and returns false.
template <class F>
__device__ __forceinline__ bool wkv6_chunk_start(int T, int H, int t0, int t1, const F* __restrict__ w_,
                                                 const F* __restrict__ k_, const F* __restrict__ v_,
                                                 const float* __restrict__ ck, float* __restrict__ scr, float* v,
                                                 float (&Srow)[N], mmrwkv_tile<N>& tile) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    bool mine = false;
    for (int t = t0; t < t1; t++) mine |= to_f(w_[((size_t)(bi * T + t) * H + h) * N + i]) < MMRWKV_BACKSTEP_MIN_W;
    // one block-wide decision, so that every thread takes the same path through the barriers below
    if (__syncthreads_or(mine)) {
        wkv6_recompute_chunk<F>(T, H, t0, t1, w_, k_, v_, ck, scr, v, Srow, tile);
        return false;
    }
    mmrwkv_load_rows<N>(ck + N * N, Srow, tile);  // the next checkpoint: the state after step t1 - 1
    return true;
}

template <class F>
__global__ void wkv6_backward_kernel(int T, int H, const F* __restrict__ r_, const F* __restrict__ w_,
                                     const F* __restrict__ k_, const F* __restrict__ v_, const float* __restrict__ u_,
                                     const F* __restrict__ dy_, const float* __restrict__ ckpt,
                                     const float* __restrict__ dsT, F* __restrict__ dr_, F* __restrict__ dw_,
                                     F* __restrict__ dk_, F* __restrict__ dv_, float* __restrict__ du_,
                                     float* __restrict__ ds0, float* __restrict__ scratch) {
    const int bh = blockIdx.x, bi = bh / H, h = bh % H, i = threadIdx.x;
    const int chunks = mmrwkv_chunks(T), slots = chunks + 1;
    __shared__ float r[ST][N], d[ST][N], k[ST][N], v[ST][N], dy[ST][N], u[N];
    __shared__ mmrwkv_tile<N> G;  // a copy of the state gradient, for its columns; also the load/store tile
    u[i] = u_[h * N + i];
    float Srow[N], Grow[N];  // S[i, :], G[i, :]
    mmrwkv_load_rows<N>(dsT + (size_t)bh * N * N, Grow, G);
    float* scr = scratch + (size_t)bh * K * N * N;
    float du = 0.f;

    for (int c = chunks - 1; c >= 0; c--) {
        const int t0 = c * K, t1 = t0 + K < T ? t0 + K : T;
        const float* ck = ckpt + ((size_t)bh * slots + c) * N * N;
        const bool invert = wkv6_chunk_start<F>(T, H, t0, t1, w_, k_, v_, ck, scr, v[0], Srow, G);
        for (int ts = t0 + (t1 - 1 - t0) / ST * ST; ts >= t0; ts -= ST) {
            const int n = t1 - ts < ST ? t1 - ts : ST;
            __syncthreads();  // the previous stage's readers (and the chunk start's users of v and G) are done
            for (int s = 0; s < n; s++) {
                const size_t idx = ((size_t)(bi * T + ts + s) * H + h) * N + i;
                r[s][i] = to_f(r_[idx]);
                d[s][i] = expf(to_f(w_[idx]));
                k[s][i] = to_f(k_[idx]);
                v[s][i] = to_f(v_[idx]);
                dy[s][i] = to_f(dy_[idx]);
            }
            __syncthreads();
            for (int s = n - 1; s >= 0; s--) {
                const int t = ts + s;
                const float ri = r[s][i], di = d[s][i], ki = k[s][i], ui = u[i], dyi = dy[s][i];
                // dyv = dy . v and ruk = r . (u * k): the bonus term's two contractions
                float dyv = 0.f, ruk = 0.f;
#pragma unroll
                for (int j = 0; j < N; j++) {
                    dyv += dy[s][j] * v[s][j];
                    ruk += r[s][j] * u[j] * k[s][j];
                    G[i][j] = Grow[j];
                }
                // Srow becomes S_{t-1}[i, :]
                if (invert) {
                    const float inv_di = 1.f / di;
#pragma unroll
                    for (int j = 0; j < N; j++) Srow[j] = (Srow[j] - ki * v[s][j]) * inv_di;
                } else {
                    const float* sp = scr + (size_t)(t - t0) * N * N;
#pragma unroll
                    for (int j = 0; j < N; j++) Srow[j] = sp[j * N + i];
                }
                __syncthreads();
                float dr = ui * ki * dyv, dk = ri * ui * dyv, dd = 0.f, dv = dyi * ruk;
#pragma unroll
                for (int j = 0; j < N; j++) {
                    dr += dy[s][j] * Srow[j];
                    dk += Grow[j] * v[s][j];
                    dd += Grow[j] * Srow[j];
                    dv += G[j][i] * k[s][j];  // G[j, i]: column i
                    Grow[j] = Grow[j] * di + ri * dy[s][j];
                }
                du += ri * ki * dyv;
                const size_t idx = ((size_t)(bi * T + t) * H + h) * N + i;
                dr_[idx] = from_f<F>(dr);
                dw_[idx] = from_f<F>(dd * di);
                dk_[idx] = from_f<F>(dk);
                dv_[idx] = from_f<F>(dv);
                __syncthreads();  // G is rewritten by the next step
            }
        }
    }
    du_[(size_t)bh * N + i] = du;
    mmrwkv_store_rows<N>(ds0 + (size_t)bh * N * N, Grow, G);
}

template <class F>
const char* forward(const Wkv6Fwd& p) {
    const dim3 grid(p.B * p.H), block(N);
    MMRWKV_LAUNCH(wkv6_forward_kernel<F>, grid, block, p.stream, p.T, p.H, (const F*)p.r, (const F*)p.w,
                  (const F*)p.k, (const F*)p.v, p.u, p.s0, (F*)p.y, p.sT, p.ckpt);
    return MMRWKV_LAST_ERROR();
}

template <class F>
const char* backward(const Wkv6Bwd& p) {
    const dim3 grid(p.B * p.H), block(N);
    MMRWKV_LAUNCH(wkv6_backward_kernel<F>, grid, block, p.stream, p.T, p.H, (const F*)p.r, (const F*)p.w,
                  (const F*)p.k, (const F*)p.v, p.u, (const F*)p.dy, p.ckpt, p.dsT, (F*)p.dr, (F*)p.dw, (F*)p.dk,
                  (F*)p.dv, p.du, p.ds0, p.scratch);
    return MMRWKV_LAST_ERROR();
}

}  // namespace

const char* mmrwkv_wkv6_forward(const Wkv6Fwd& p) { return p.is_bf16 ? forward<bf16>(p) : forward<float>(p); }

const char* mmrwkv_wkv6_backward(const Wkv6Bwd& p) { return p.is_bf16 ? backward<bf16>(p) : backward<float>(p); }
