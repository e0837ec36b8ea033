// The greedy pick of the native decode (decode7.cpp), a vector at a time (simd.h); free of ATen (selftest.cpp).
#pragma once

#include "simd.h"

// The index of the largest of p[0, n): the first one on ties, the first NaN if there is one (as torch.argmax); *top
// gets its value and *nan whether it is NaN. Two vector passes: the maximum (and whether any is NaN), then its first
// position.
inline int64_t first_max(const float* p, int64_t n, float* top, bool* nan_out) {
  float best = p[0];
  bool nan = false;
  int64_t i = 0;
  vf m = splat(p[0]);
  vi unordered = {};
  for (; i + kLanes <= n; i += kLanes) {
    const vf v = loadv(p + i);
    unordered |= v != v;
    m = v > m ? v : m;
  }
  for (int l = 0; l < kLanes; ++l) best = std::max(best, m[l]);
  nan = any_lane(unordered);
  for (; i < n; ++i) {
    nan |= p[i] != p[i];
    best = std::max(best, p[i]);
  }
  *top = best, *nan_out = nan;
  i = 0;
  const vf b = splat(best);
  for (; i + kLanes <= n; i += kLanes) {
    const vf v = loadv(p + i);
    const vi hit = nan ? vi(v != v) : vi(v == b);
    if (any_lane(hit))
      for (int l = 0; l < kLanes; ++l)
        if (hit[l]) return i + l;
  }
  for (; i < n; ++i)
    if (nan ? p[i] != p[i] : p[i] == best) return i;
  return 0;
}

// The greedy pick over blocks of logits taken in any order (the head's rows, as each thread computes them, while
// they are in cache): the same index as `argmax` over all of them.
struct Greedy {
  int64_t index = -1;
  float value = 0;
  bool nan = false;

  void merge(int64_t i, float v, bool n) {
    const bool better = index < 0 || (n != nan ? n : n ? i < index : v > value || (v == value && i < index));
    if (better) index = i, value = v, nan = n;
  }
  void add(const float* p, int64_t begin, int64_t end) {  // p: all logits; the block [begin, end)
    if (end <= begin) return;
    float v;
    bool n;
    const int64_t i = begin + first_max(p + begin, end - begin, &v, &n);
    merge(i, v, n);
  }
  void merge(const Greedy& o) {
    if (o.index >= 0) merge(o.index, o.value, o.nan);
  }
};
