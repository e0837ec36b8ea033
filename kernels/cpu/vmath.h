// Elementwise e^x and sigmoid for the native decode (decode7.cpp), 16 lanes at a time where AVX-512 is there: the
// time mix needs about four of them per channel per layer, and one libm call each was ~1% of a token's time.
// Included by decode7.cpp only (inside its anonymous namespace), after <immintrin.h> and <cmath>.
#pragma once

#if defined(__AVX512F__)
// e^x within ~2 ulp: x = n ln2 + f with |f| <= ln2 / 2 (ln2 in two parts, so n ln2 is exact enough), e^f by a
// degree-7 polynomial (Taylor coefficients 1/k!: the remainder is below 1e-8 relative on that interval), times 2^n
// by scalef, which gives inf and 0 past the float range. x is first clamped to +-150 (e^150 overflows, e^-150 is 0
// in fp32) so that n stays finite for infinities; NaN passes through (min/max return their second operand).
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-150.0f), _mm512_min_ps(_mm512_set1_ps(150.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2's first 16 bits: n * it is exact
  f = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.4286068203094173e-06f), f);    // the rest of ln2
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

// out[i] = f(in[i]) for i in [0, n), 16 at a time (the last ones masked: every element takes the same path, so a
// value does not depend on where a thread's range starts). in and out may be the same.
template <typename Fn>
void map16(const float* in, float* out, int64_t n, Fn&& f) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail(n - i);
    _mm512_mask_storeu_ps(out + i, m, f(_mm512_maskz_loadu_ps(m, in + i)));
  }
}
#endif

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// The elementwise functions of the time mix, applied to in[0, n) into out (which may be in).
enum class Elementwise { kSigmoid, kDecay };  // kDecay: e^w for w = -e^-0.5 sigmoid(x), the WKV decay

inline void apply(Elementwise fn, const float* in, float* out, int64_t n) {
  constexpr float kMinusRootInvE = -0.6065306597126334f;  // -e^-0.5
#if defined(__AVX512F__)
  if (fn == Elementwise::kSigmoid) return map16(in, out, n, [](__m512 x) { return sigmoid16(x); });
  const __m512 scale = _mm512_set1_ps(kMinusRootInvE);
  return map16(in, out, n, [&](__m512 x) { return exp16(_mm512_mul_ps(scale, sigmoid16(x))); });
#else
  for (int64_t i = 0; i < n; ++i)
    out[i] = fn == Elementwise::kSigmoid ? sigmoid(in[i]) : std::exp(kMinusRootInvE * sigmoid(in[i]));
#endif
}
