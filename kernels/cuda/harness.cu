// Torch-free driver of the WKV kernels for sanitizers: every op (wkv7, wkv6, wkv4), fp32 and bf16, forward with
// checkpoints then backward, on tiny shapes whose second chunk has strong decays (replayed) and the others model
// decays (stepped back), with a partial last chunk. Every buffer is allocated at its exact size and every input
// is written, so compute-sanitizer memcheck / initcheck see exact bounds; racecheck / synccheck see the barriers.
// Built with nvcc (kernels/check_gpu.sh) or, with -DMMRWKV_EMU, as C++ over the CPU emulator (ThreadSanitizer and
// AddressSanitizer in the CPU tests). Exit status 0 when every output is finite, 1 otherwise.
//   nvcc -O2 -Ikernels/cuda kernels/cuda/harness.cu kernels/cuda/wkv{4,6,7}.cu -o harness
//   g++ -x c++ -std=c++20 -DMMRWKV_EMU -fsanitize=thread -Ikernels/cuda kernels/cuda/harness.cu \
//       kernels/cuda/emu/wkv{4,6,7}_emu.cpp -o harness
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "wkv_api.h"
#include "wkv_common.cuh"

namespace {

constexpr int N = MMRWKV_N, K = MMRWKV_CHUNK;
constexpr int B = 2, T = 2 * K + 5, H = 2, C = H * N;
std::mt19937 rng(0);
std::vector<void*> live;
int failures = 0;

void check(const char* err, const char* what) {
    if (err != nullptr) {
        std::fprintf(stderr, "%s: %s\n", what, err);
        std::exit(1);
    }
#ifndef MMRWKV_EMU
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
        std::exit(1);
    }
#endif
}

void* alloc(size_t bytes) {
    void* p = nullptr;
#ifdef MMRWKV_EMU
    p = std::malloc(bytes);
#else
    check(cudaMalloc(&p, bytes) == cudaSuccess ? nullptr : "cudaMalloc failed", "alloc");
#endif
    live.push_back(p);
    return p;
}

void release_all() {
    for (void* p : live) {
#ifdef MMRWKV_EMU
        std::free(p);
#else
        cudaFree(p);
#endif
    }
    live.clear();
}

// A device copy of host values, in fp32 or bf16.
const void* upload(const std::vector<float>& h, bool as_bf16) {
    const size_t n = h.size();
    std::vector<bf16> b(as_bf16 ? n : 0);
    for (size_t i = 0; i < b.size(); i++) b[i] = __float2bfloat16(h[i]);
    const void* src = as_bf16 ? static_cast<const void*>(b.data()) : h.data();
    const size_t bytes = n * (as_bf16 ? sizeof(bf16) : sizeof(float));
    void* d = alloc(bytes);
#ifdef MMRWKV_EMU
    std::memcpy(d, src, bytes);
#else
    cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice);
#endif
    return d;
}

std::vector<float> randn(size_t n, float scale = 1.f, float shift = 0.f) {
    std::normal_distribution<float> dist(0.f, 1.f);
    std::vector<float> x(n);
    for (auto& v : x) v = shift + scale * dist(rng);
    return x;
}

// Log decays [B, T, H, N]: model decays (>= -exp(-0.5)), strong ones (-3) in the second chunk.
std::vector<float> decays() {
    std::vector<float> w = randn((size_t)B * T * H * N);
    for (size_t i = 0; i < w.size(); i++) {
        const int t = (int)(i / (H * N)) % T;
        w[i] = t >= K && t < 2 * K ? -3.f : -0.6065f / (1.f + std::exp(-w[i]));
    }
    return w;
}

// Counts the non-finite values of a device buffer of n values (fp32 or bf16).
void expect_finite(const void* d, size_t n, bool is_bf16, const char* what) {
    const size_t bytes = n * (is_bf16 ? sizeof(bf16) : sizeof(float));
    std::vector<unsigned char> h(bytes);
#ifdef MMRWKV_EMU
    std::memcpy(h.data(), d, bytes);
#else
    cudaMemcpy(h.data(), d, bytes, cudaMemcpyDeviceToHost);
#endif
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float v;
        if (is_bf16) {
            bf16 b;
            std::memcpy(&b, h.data() + i * sizeof(bf16), sizeof b);
            v = __bfloat162float(b);
        } else {
            std::memcpy(&v, h.data() + i * sizeof(float), sizeof v);
        }
        bad += !std::isfinite(v);
    }
    if (bad > 0) {
        std::fprintf(stderr, "%s: %zu of %zu values are not finite\n", what, bad, n);
        failures++;
    }
}

void run_wkv7(bool bf) {
    const size_t n = (size_t)B * T * H * N, ns = (size_t)B * H * N * N, slots = (T + K - 1) / K + 1;
    const auto in = [&](float scale) { return upload(randn(n, scale), bf); };
    const void *r = in(1.f), *w = upload(decays(), bf), *k = in(1.f), *v = in(1.f), *a = in(0.1f), *b = in(0.1f);
    const float* s0 = static_cast<const float*>(upload(randn(ns, 0.3f), false));
    const size_t fb = bf ? sizeof(bf16) : sizeof(float);
    void* y = alloc(n * fb);
    float *sT = (float*)alloc(ns * 4), *sa = (float*)alloc(n * 4), *ck = (float*)alloc(slots * ns * 4);
    check(mmrwkv_wkv7_forward({B, T, H, bf, r, w, k, v, a, b, s0, y, sT, sa, ck, nullptr}), "wkv7 forward");
    const void* dy = in(1.f);
    const float* dsT = static_cast<const float*>(upload(randn(ns), false));
    void *dr = alloc(n * fb), *dw = alloc(n * fb), *dk = alloc(n * fb), *dv = alloc(n * fb), *da = alloc(n * fb),
         *db = alloc(n * fb);
    float *ds0 = (float*)alloc(ns * 4), *scr = (float*)alloc((size_t)B * H * K * N * N * 4);
    const Wkv7Bwd p{B, T, H, bf, r, w, k, v, a, b, dy, sa, ck, dsT, dr, dw, dk, dv, da, db, ds0, scr, nullptr};
    check(mmrwkv_wkv7_backward(p), "wkv7 backward");
    for (const void* g : {y, dr, dw, dk, dv, da, db}) expect_finite(g, n, bf, bf ? "wkv7 bf16" : "wkv7 fp32");
    expect_finite(ds0, ns, false, "wkv7 ds0");
    release_all();
}

void run_wkv6(bool bf) {
    const size_t n = (size_t)B * T * H * N, ns = (size_t)B * H * N * N, slots = (T + K - 1) / K + 1;
    const auto in = [&](float scale) { return upload(randn(n, scale), bf); };
    const void *r = in(1.f), *w = upload(decays(), bf), *k = in(1.f), *v = in(1.f);
    const float* u = static_cast<const float*>(upload(randn((size_t)H * N), false));
    const float* s0 = static_cast<const float*>(upload(randn(ns, 0.3f), false));
    const size_t fb = bf ? sizeof(bf16) : sizeof(float);
    void* y = alloc(n * fb);
    float *sT = (float*)alloc(ns * 4), *ck = (float*)alloc(slots * ns * 4);
    check(mmrwkv_wkv6_forward({B, T, H, bf, r, w, k, v, u, s0, y, sT, ck, nullptr}), "wkv6 forward");
    const void* dy = in(1.f);
    const float* dsT = static_cast<const float*>(upload(randn(ns), false));
    void *dr = alloc(n * fb), *dw = alloc(n * fb), *dk = alloc(n * fb), *dv = alloc(n * fb);
    float *du = (float*)alloc((size_t)B * H * N * 4), *ds0 = (float*)alloc(ns * 4);
    float* scr = (float*)alloc((size_t)B * H * K * N * N * 4);
    check(mmrwkv_wkv6_backward({B, T, H, bf, r, w, k, v, dy, u, ck, dsT, dr, dw, dk, dv, du, ds0, scr, nullptr}),
          "wkv6 backward");
    for (const void* g : {y, dr, dw, dk, dv}) expect_finite(g, n, bf, bf ? "wkv6 bf16" : "wkv6 fp32");
    expect_finite(du, (size_t)B * H * N, false, "wkv6 du");
    expect_finite(ds0, ns, false, "wkv6 ds0");
    release_all();
}

void run_wkv4(bool bf) {
    const size_t n = (size_t)B * T * C, ns = (size_t)B * 3 * C, chunks = (T + K - 1) / K;
    std::vector<float> w = randn(C, 0.5f), s0 = randn(ns);
    for (auto& x : w) x = -std::exp(x);
    for (size_t i = 0; i < ns; i++)
        if ((i / C) % 3 == 1) s0[i] = 1.f + std::fabs(s0[i]);  // bb > 0
    const float *wd = (const float*)upload(w, false), *u = (const float*)upload(randn(C), false);
    const void *k = upload(randn(n), bf), *v = upload(randn(n), bf);
    const float* s0d = (const float*)upload(s0, false);
    const size_t fb = bf ? sizeof(bf16) : sizeof(float);
    void* y = alloc(n * fb);
    float *sT = (float*)alloc(ns * 4), *ck = (float*)alloc(chunks * 3 * C * B * 4);
    check(mmrwkv_wkv4_forward({B, T, C, bf, wd, u, k, v, s0d, y, sT, ck, nullptr}), "wkv4 forward");
    const void* dy = upload(randn(n), bf);
    const float* dsT = (const float*)upload(randn(ns), false);
    float *dw = (float*)alloc((size_t)B * C * 4), *du = (float*)alloc((size_t)B * C * 4), *ds0 = (float*)alloc(ns * 4);
    void *dk = alloc(n * fb), *dv = alloc(n * fb);
    check(mmrwkv_wkv4_backward({B, T, C, bf, wd, u, k, v, dy, ck, dsT, dw, du, dk, dv, ds0, nullptr}),
          "wkv4 backward");
    for (const void* g : {y, dk, dv}) expect_finite(g, n, bf, bf ? "wkv4 bf16" : "wkv4 fp32");
    expect_finite(dw, (size_t)B * C, false, "wkv4 dw");
    release_all();
}

}  // namespace

int main() {
    for (bool bf : {false, true}) {
        run_wkv7(bf);
        run_wkv6(bf);
        run_wkv4(bf);
    }
    std::printf("harness: wkv7, wkv6, wkv4 x fp32, bf16 (N=%d, T=%d): %s\n", N, T, failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
