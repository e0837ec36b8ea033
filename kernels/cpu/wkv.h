// The RWKV-7 WKV state update of one token for the native decode (decode7.cpp), per head:
//   sa = S kk' (kk' = -kk),  S' = S diag(decay) + sa (kk a)^T + v k^T,  y = S' r,
// S [value, key] (N, N) row-major. Vectors of simd.h.
#pragma once

#include "simd.h"

// One head, N a multiple of kLanes (at most 256): G rows at a time (independent chains of loads, dot products and
// reductions, so the core overlaps them instead of waiting on each row's two reductions in turn); S' is stored
// streaming when `stream` (rows aligned to the vector: the next token reads it back from memory anyway, after every
// weight has passed through the caches, so it is not read before it is written).
inline void wkv_head(const float* S, float* next, const float* dec, const float* kk, const float* a, const float* k,
                     const float* v, const float* r, float* y, int64_t N, bool stream) {
  constexpr int G = 4;
  alignas(64) float b[256];  // the rank-one term's key side kk * a
  for (int64_t j = 0; j < N; j += kLanes) storev(b + j, loadv(kk + j) * loadv(a + j));
  for (int64_t i = 0; i < N; i += G) {
    vf acc[G] = {};
    for (int64_t j = 0; j < N; j += kLanes) {
      const vf kq = loadv(kk + j);
      for (int g = 0; g < G; ++g) acc[g] = acc[g] - loadv(S + (i + g) * N + j) * kq;
    }
    for (int g = 0; g < G; ++g) {
      const vf sa = splat(hsum(acc[g])), vi = splat(v[i + g]);
      vf yi = {};
      for (int64_t j = 0; j < N; j += kLanes) {
        const vf s2 = loadv(S + (i + g) * N + j) * loadv(dec + j) + (sa * loadv(b + j) + vi * loadv(k + j));
        if (stream)
          stream_store(next + (i + g) * N + j, s2);
        else
          storev(next + (i + g) * N + j, s2);
        yi = yi + s2 * loadv(r + j);
      }
      y[i + g] = hsum(yi);
    }
  }
}

// Heads h0 .. h1 (of S and next, each (H, N, N)); every vector is indexed by channel (h N + j).
inline void wkv_heads(const float* S, float* next, const float* dec, const float* kk, const float* a, const float* k,
                      const float* v, const float* r, float* y, int64_t h0, int64_t h1, int64_t N) {
  if (N % kLanes == 0 && N % 4 == 0 && N <= 256) {
    const bool stream = reinterpret_cast<uintptr_t>(next) % 64 == 0;
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t o = h * N;
      wkv_head(S + o * N, next + o * N, dec + o, kk + o, a + o, k + o, v + o, r + o, y + o, N, stream);
    }
    if (stream) stream_fence();
    return;
  }
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t o = h * N;
    for (int64_t i = 0; i < N; ++i) {
      const float* s = S + (o + i) * N;
      float* s2 = next + (o + i) * N;
      float sa = 0, yi = 0;
      for (int64_t j = 0; j < N; ++j) sa -= s[j] * kk[o + j];
      const float vi = v[o + i];
      for (int64_t j = 0; j < N; ++j) {
        const float sj = s[j] * dec[o + j] + sa * (kk[o + j] * a[o + j]) + vi * k[o + j];
        s2[j] = sj;
        yi += sj * r[o + j];
      }
      y[o + i] = yi;
    }
  }
}
