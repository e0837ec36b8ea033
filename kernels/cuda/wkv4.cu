// RWKV-4 WKV per channel, forward and backward, with the numerically stable (aa, bb, pp) state.
// One thread per (batch, channel). Per step (pp is a running max so that exp never overflows):
//   ww = u + k; p = max(pp, ww); e1 = exp(pp - p); e2 = exp(ww - p); y = (e1 aa + e2 v) / (e1 bb + e2)
//   ww = w + pp; p = max(ww, k); e1 = exp(ww - p); e2 = exp(k - p); aa = e1 aa + e2 v; bb = e1 bb + e2; pp = p
// Backward differentiates exactly these formulas (a tie of a max splits its gradient in half, as
// torch.maximum does), replaying each chunk of K steps from its checkpoint into per-thread arrays.
#include "wkv_api.h"
#include "wkv_common.cuh"

namespace {

constexpr int K = MMRWKV_CHUNK;
constexpr int BLOCK = 128;

struct State4 {
    float aa, bb, pp;
};

__device__ __forceinline__ State4 wkv4_update(State4 s, float w, float k, float v) {
    const float ww = w + s.pp;
    const float p = fmaxf(ww, k);
    const float e1 = expf(ww - p), e2 = expf(k - p);
    return State4{e1 * s.aa + e2 * v, e1 * s.bb + e2, p};
}

// gradient of max(x, y) to its (first, second) argument
__device__ __forceinline__ float max_share(float x, float y) { return x > y ? 1.f : (x < y ? 0.f : 0.5f); }

template <class F>
__global__ void wkv4_forward_kernel(int T, int C, const float* __restrict__ w_, const float* __restrict__ u_,
                                    const F* __restrict__ k_, const F* __restrict__ v_, const float* __restrict__ s0,
                                    F* __restrict__ y_, float* __restrict__ sT, float* __restrict__ ckpt) {
    const int c = blockIdx.y * blockDim.x + threadIdx.x, bi = blockIdx.x;
    if (c >= C) return;
    const int chunks = mmrwkv_chunks(T);
    const float w = w_[c], u = u_[c];
    const float* s = s0 + (size_t)bi * 3 * C + c;
    State4 st{s[0], s[C], s[2 * C]};
    for (int t = 0; t < T; t++) {
        const size_t idx = (size_t)(bi * T + t) * C + c;
        if (ckpt != nullptr && t % K == 0) {
            float* ck = ckpt + ((size_t)bi * chunks + t / K) * 3 * C + c;
            ck[0] = st.aa;
            ck[C] = st.bb;
            ck[2 * C] = st.pp;
        }
        const float k = to_f(k_[idx]), v = to_f(v_[idx]);
        const float ww = u + k, p = fmaxf(st.pp, ww);
        const float e1 = expf(st.pp - p), e2 = expf(ww - p);
        y_[idx] = from_f<F>((e1 * st.aa + e2 * v) / (e1 * st.bb + e2));
        st = wkv4_update(st, w, k, v);
    }
    float* o = sT + (size_t)bi * 3 * C + c;
    o[0] = st.aa;
    o[C] = st.bb;
    o[2 * C] = st.pp;
}

struct Grad4 {
    float aa, bb, pp, w, u, k, v;
};

// Backpropagates one step: g holds the gradient to the state after the step; on return, to the state
// before it, with this step's dk, dv in g.k, g.v and dw, du accumulated.
__device__ __forceinline__ void wkv4_step_backward(State4 s, float w, float u, float k, float v, float gy, Grad4& g) {
    // state update: aa' = f1 aa + f2 v, bb' = f1 bb + f2, pp' = p2 = max(w + pp, k)
    const float ww2 = w + s.pp, p2 = fmaxf(ww2, k);
    const float f1 = expf(ww2 - p2), f2 = expf(k - p2);
    const float gf1 = g.aa * s.aa + g.bb * s.bb, gf2 = g.aa * v + g.bb;
    float gk = gf2 * f2, gv = g.aa * f2;
    const float gp2 = g.pp - gf1 * f1 - gf2 * f2;
    const float share2 = max_share(ww2, k);
    const float gww2 = gf1 * f1 + gp2 * share2;
    gk += gp2 * (1.f - share2);
    float gaa = g.aa * f1, gbb = g.bb * f1, gpp = gww2;
    g.w += gww2;
    // output: y = num / den with e1 = exp(pp - p), e2 = exp(u + k - p), p = max(pp, u + k)
    const float ww = u + k, p = fmaxf(s.pp, ww);
    const float e1 = expf(s.pp - p), e2 = expf(ww - p);
    const float den = e1 * s.bb + e2, y = (e1 * s.aa + e2 * v) / den;
    const float gnum = gy / den, gden = -gy * y / den;
    const float ge1 = gnum * s.aa + gden * s.bb, ge2 = gnum * v + gden;
    gaa += gnum * e1;
    gbb += gden * e1;
    gv += gnum * e2;
    const float gp = -ge1 * e1 - ge2 * e2;
    const float share = max_share(s.pp, ww);
    gpp += ge1 * e1 + gp * share;
    const float gww = ge2 * e2 + gp * (1.f - share);
    g.u += gww;
    g.k = gk + gww;
    g.v = gv;
    g.aa = gaa;
    g.bb = gbb;
    g.pp = gpp;
}

template <class F>
__global__ void wkv4_backward_kernel(int T, int C, const float* __restrict__ w_, const float* __restrict__ u_,
                                     const F* __restrict__ k_, const F* __restrict__ v_, const F* __restrict__ dy_,
                                     const float* __restrict__ ckpt, const float* __restrict__ dsT,
                                     float* __restrict__ dw_, float* __restrict__ du_, F* __restrict__ dk_,
                                     F* __restrict__ dv_, float* __restrict__ ds0) {
    const int c = blockIdx.y * blockDim.x + threadIdx.x, bi = blockIdx.x;
    if (c >= C) return;
    const int chunks = mmrwkv_chunks(T);
    const float w = w_[c], u = u_[c];
    const float* gs = dsT + (size_t)bi * 3 * C + c;
    Grad4 g{gs[0], gs[C], gs[2 * C], 0.f, 0.f, 0.f, 0.f};
    State4 states[K];  // states[t - t0]: the state before step t
    for (int ch = chunks - 1; ch >= 0; ch--) {
        const int t0 = ch * K, t1 = t0 + K < T ? t0 + K : T;
        const float* ck = ckpt + ((size_t)bi * chunks + ch) * 3 * C + c;
        State4 st{ck[0], ck[C], ck[2 * C]};
        for (int t = t0; t < t1; t++) {
            const size_t idx = (size_t)(bi * T + t) * C + c;
            states[t - t0] = st;
            st = wkv4_update(st, w, to_f(k_[idx]), to_f(v_[idx]));
        }
        for (int t = t1 - 1; t >= t0; t--) {
            const size_t idx = (size_t)(bi * T + t) * C + c;
            wkv4_step_backward(states[t - t0], w, u, to_f(k_[idx]), to_f(v_[idx]), to_f(dy_[idx]), g);
            dk_[idx] = from_f<F>(g.k);
            dv_[idx] = from_f<F>(g.v);
        }
    }
    dw_[(size_t)bi * C + c] = g.w;
    du_[(size_t)bi * C + c] = g.u;
    float* o = ds0 + (size_t)bi * 3 * C + c;
    o[0] = g.aa;
    o[C] = g.bb;
    o[2 * C] = g.pp;
}

// batch on x: gridDim.y is limited to 65535
dim3 grid_for(int B, int C) { return dim3(B, (C + BLOCK - 1) / BLOCK); }

dim3 block_for(int C) { return dim3(C < BLOCK ? C : BLOCK); }

template <class F>
const char* forward(const Wkv4Fwd& p) {
    MMRWKV_LAUNCH(wkv4_forward_kernel<F>, grid_for(p.B, p.C), block_for(p.C), p.stream, p.T, p.C, p.w, p.u,
                  (const F*)p.k, (const F*)p.v, p.s0, (F*)p.y, p.sT, p.ckpt);
    return MMRWKV_LAST_ERROR();
}

template <class F>
const char* backward(const Wkv4Bwd& p) {
    MMRWKV_LAUNCH(wkv4_backward_kernel<F>, grid_for(p.B, p.C), block_for(p.C), p.stream, p.T, p.C, p.w, p.u,
                  (const F*)p.k, (const F*)p.v, (const F*)p.dy, p.ckpt, p.dsT, p.dw, p.du, (F*)p.dk, (F*)p.dv,
                  p.ds0);
    return MMRWKV_LAST_ERROR();
}

}  // namespace

const char* mmrwkv_wkv4_forward(const Wkv4Fwd& p) { return p.is_bf16 ? forward<bf16>(p) : forward<float>(p); }

const char* mmrwkv_wkv4_backward(const Wkv4Bwd& p) { return p.is_bf16 ? backward<bf16>(p) : backward<float>(p); }
