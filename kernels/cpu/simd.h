// The vector type of the native CPU kernels: one source for every width. GCC/Clang vector extensions give `vf`, a
// vector of kLanes floats whose width follows the build's target (mmrwkv/kernels/cpu.py builds one variant per ISA):
// 16 lanes with AVX-512, 8 with AVX2 + FMA, 4 on plain x86-64 (SSE2) and on aarch64 (NEON). The compiler maps the
// arithmetic onto that ISA's instructions; a*b + c becomes a fused multiply-add where the ISA has one (the builds
// pass -ffp-contract=fast). Free of ATen, so that a standalone driver (selftest.cpp) can test the kernels on any
// target, a cross-compiled one under an emulator included.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define MMRWKV_LANES 16
#define MMRWKV_ISA "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#define MMRWKV_LANES 8
#define MMRWKV_ISA "avx2"
#elif defined(__aarch64__)
#define MMRWKV_LANES 4
#define MMRWKV_ISA "neon"
#else
#define MMRWKV_LANES 4
#define MMRWKV_ISA "portable"
#endif

constexpr int kLanes = MMRWKV_LANES;
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));
typedef uint32_t vu __attribute__((vector_size(4 * kLanes)));
typedef uint16_t vh __attribute__((vector_size(2 * kLanes)));

inline vf splat(float v) { return vf{} + v; }

// kLanes values as fp32: loaded, or widened from bf16 (the bf16 bits are the top half of the fp32 ones)
inline vf loadv(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline vf loadv(const uint16_t* p) {
  // x86: one zero-extending move per vector (GCC 12 splits the generic conversion into halves on AVX2/AVX-512)
#if defined(__AVX512F__)
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return reinterpret_cast<vf>(_mm512_slli_epi32(u, 16));
#elif defined(__AVX2__)
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return reinterpret_cast<vf>(_mm256_slli_epi32(u, 16));
#elif defined(__SSE2__)
  const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return reinterpret_cast<vf>(_mm_unpacklo_epi16(_mm_setzero_si128(), h));  // (0, h) pairs: h << 16
#else
  vh h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<vf>(__builtin_convertvector(h, vu) << 16);
#endif
}
inline void storev(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// The first n < kLanes values (the rest zero), and their store: the tail of a row that is not a whole vector.
template <typename T>
inline vf load_part(const T* p, int64_t n) {
  T buf[kLanes] = {};
  std::memcpy(buf, p, std::max<int64_t>(n, 0) * sizeof(T));
  return loadv(buf);
}
inline void store_part(float* p, vf v, int64_t n) {
  float buf[kLanes];
  storev(buf, v);
  std::memcpy(p, buf, std::max<int64_t>(n, 0) * sizeof(float));
}
// n values from p: a whole vector when n >= kLanes, else the part
template <typename T>
inline vf load_upto(const T* p, int64_t n) {
  return n >= kLanes ? loadv(p) : load_part(p, n);
}

// the sum of the lanes: halves added in registers on x86 (a lane-by-lane loop goes through memory there)
inline float hsum(vf v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps(reinterpret_cast<__m512>(v));
#elif defined(__AVX__)
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(reinterpret_cast<__m256>(v)),
                        _mm256_extractf128_ps(reinterpret_cast<__m256>(v), 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
#else
  float s = v[0];
  for (int i = 1; i < kLanes; ++i) s += v[i];
  return s;
#endif
}

inline bool any_lane(vi m) {
  int32_t r = 0;
  for (int i = 0; i < kLanes; ++i) r |= m[i];
  return r != 0;
}

// A store that bypasses the caches where the ISA has one (p aligned to the vector's size): for data that is read
// back only after much else has passed through the caches.
inline void stream_store(float* p, vf v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, reinterpret_cast<__m512>(v));
#elif defined(__AVX__)
  _mm256_stream_ps(p, reinterpret_cast<__m256>(v));
#elif defined(__SSE2__)
  _mm_stream_ps(p, reinterpret_cast<__m128>(v));
#else
  storev(p, v);
#endif
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// e^x within ~2 ulp: x = n ln2 + f with |f| <= ln2 / 2 (ln2 in two parts, so n ln2 is exact enough), e^f by a
// degree-7 polynomial (Taylor coefficients 1/k!: the remainder is below 1e-8 relative on that interval), times 2^n
// built in the exponent bits. x is first clamped to [-87, 88] (2^n stays a normal float; e^88 is 1.7e38 and e^-87
// 1.6e-38, which a sigmoid turns into 0 and 1 as the exact values would); NaN passes through (the comparisons are
// false for it, and it poisons the polynomial).
inline vf expv(vf x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  x = x > splat(88.0f) ? splat(88.0f) : x;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  const vf n = (x * splat(1.44269504088896341f) + magic) - magic;
  vf f = x - n * splat(0.693145751953125f);  // ln2's first 16 bits: n * it is exact
  f = f - n * splat(1.4286068203094173e-06f);  // the rest of ln2
  vf p = splat(1.0f / 5040);
  p = p * f + splat(1.0f / 720);
  p = p * f + splat(1.0f / 120);
  p = p * f + splat(1.0f / 24);
  p = p * f + splat(1.0f / 6);
  p = p * f + splat(0.5f);
  p = p * f + splat(1.0f);
  p = p * f + splat(1.0f);
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * reinterpret_cast<vf>(bits);
}

inline vf sigmoidv(vf x) { return splat(1.0f) / (splat(1.0f) + expv(-x)); }

// out[i] = f(in[i]) for i in [0, n), a vector at a time (the last ones as a part: every element takes the same
// path, so a value does not depend on where a thread's range starts). in and out may be the same.
template <typename Fn>
void map_lanes(const float* in, float* out, int64_t n, Fn&& f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) storev(out + i, f(loadv(in + i)));
  if (i < n) store_part(out + i, f(load_part(in + i, n - i)), n - i);
}
