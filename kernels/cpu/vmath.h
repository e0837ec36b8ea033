// Elementwise e^x and sigmoid for the native decode (decode7.cpp), a vector at a time (simd.h): the time mix needs
// about four of them per channel per layer, where a libm call each would be a visible share of a token's time.
#pragma once

#include "simd.h"

// The elementwise functions of the time mix, applied to in[0, n) into out (which may be in).
enum class Elementwise { kSigmoid, kDecay };  // kDecay: e^w for w = -e^-0.5 sigmoid(x), the WKV decay

inline void apply(Elementwise fn, const float* in, float* out, int64_t n) {
  constexpr float kMinusRootInvE = -0.6065306597126334f;  // -e^-0.5
  if (fn == Elementwise::kSigmoid) return map_lanes(in, out, n, [](vf x) { return sigmoidv(x); });
  return map_lanes(in, out, n, [](vf x) { return expv(splat(kMinusRootInvE) * sigmoidv(x)); });
}
