// The RWKV-7 WKV state update of one token for the native decode (decode7.cpp), per head:
//   sa = S kk' (kk' = -kk),  S' = S diag(decay) + sa (kk a)^T + v k^T,  y = S' r,
// S [value, key] (N, N) row-major. Included by decode7.cpp only (inside its anonymous namespace), after matvec.h.
#pragma once

#if defined(__AVX512F__)
// One head, N = 16 V: G rows at a time (independent chains of loads, dot products and reductions, so the core
// overlaps them instead of waiting on each row's two reductions in turn); S' is stored streaming when `stream`
// (64-byte aligned rows: the next token reads it back from memory anyway, after every weight has passed through the
// caches, so it is not read before it is written).
template <int V>
void wkv_head16(const float* S, float* next, const float* dec, const float* kk, const float* a, const float* k,
                const float* v, const float* r, float* y, bool stream) {
  constexpr int N = 16 * V, G = 4;
  __m512 d[V], b[V];  // decay, and the rank-one term's key side kk * a
  for (int q = 0; q < V; ++q) {
    d[q] = _mm512_loadu_ps(dec + 16 * q);
    b[q] = _mm512_mul_ps(_mm512_loadu_ps(kk + 16 * q), _mm512_loadu_ps(a + 16 * q));
  }
  for (int i = 0; i < N; i += G) {
    __m512 acc[G];
    for (int g = 0; g < G; ++g) {
      acc[g] = _mm512_setzero_ps();
      for (int q = 0; q < V; ++q)
        acc[g] = _mm512_fnmadd_ps(_mm512_loadu_ps(S + (i + g) * N + 16 * q), _mm512_loadu_ps(kk + 16 * q), acc[g]);
    }
    for (int g = 0; g < G; ++g) {
      const __m512 sa = _mm512_set1_ps(_mm512_reduce_add_ps(acc[g])), vi = _mm512_set1_ps(v[i + g]);
      __m512 yi = _mm512_setzero_ps();
      for (int q = 0; q < V; ++q) {
        const __m512 s = _mm512_loadu_ps(S + (i + g) * N + 16 * q);
        const __m512 vk = _mm512_mul_ps(vi, _mm512_loadu_ps(k + 16 * q));
        const __m512 s2 = _mm512_fmadd_ps(s, d[q], _mm512_fmadd_ps(sa, b[q], vk));
        if (stream)
          _mm512_stream_ps(next + (i + g) * N + 16 * q, s2);
        else
          _mm512_storeu_ps(next + (i + g) * N + 16 * q, s2);
        yi = _mm512_fmadd_ps(s2, _mm512_loadu_ps(r + 16 * q), yi);
      }
      y[i + g] = _mm512_reduce_add_ps(yi);
    }
  }
}
#endif

// Heads h0 .. h1 (of S and next, each (H, N, N)); every vector is indexed by channel (h N + j).
inline void wkv_heads(const float* S, float* next, const float* dec, const float* kk, const float* a, const float* k,
                      const float* v, const float* r, float* y, int64_t h0, int64_t h1, int64_t N) {
#if defined(__AVX512F__)
  const bool stream = reinterpret_cast<uintptr_t>(next) % 64 == 0;
  auto fast = N == 16 ? wkv_head16<1> : N == 32 ? wkv_head16<2> : N == 64 ? wkv_head16<4> : N == 128 ? wkv_head16<8>
                                                                                                   : nullptr;
  if (fast) {
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t o = h * N;
      fast(S + o * N, next + o * N, dec + o, kk + o, a + o, k + o, v + o, r + o, y + o, stream);
    }
    if (stream) _mm_sfence();
    return;
  }
#endif
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t o = h * N;
    for (int64_t i = 0; i < N; ++i) {
      const float* s = S + (o + i) * N;
      float* s2 = next + (o + i) * N;
      float sa = 0, yi = 0;
#pragma omp simd reduction(+ : sa)
      for (int64_t j = 0; j < N; ++j) sa -= s[j] * kk[o + j];
      const float vi = v[o + i];
#pragma omp simd reduction(+ : yi)
      for (int64_t j = 0; j < N; ++j) {
        const float sj = s[j] * dec[o + j] + sa * (kk[o + j] * a[o + j]) + vi * k[o + j];
        s2[j] = sj;
        yi += sj * r[o + j];
      }
      y[o + i] = yi;
    }
  }
}
