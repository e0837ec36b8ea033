// The mat-vec loops of the native decode (decode7.cpp): weights fp32, or bf16 widened on the fly (fp32 accumulate),
// streamed once at memory speed whichever way they are stored. Vectors of simd.h; free of ATen (selftest.cpp).
#pragma once

#include "simd.h"

inline float f32(float v) { return v; }
inline float f32(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// sums[r] = the dot product of the R rows w[r][0, in) with x: one accumulator per row, the tail as a part vector.
template <typename T, int R>
void dot_rows(const T* const* w, const float* x, int64_t in, float* sums) {
  vf s[R] = {};
  int64_t i = 0;
  for (; i + kLanes <= in; i += kLanes) {
    const vf xv = loadv(x + i);
    for (int r = 0; r < R; ++r) s[r] = s[r] + loadv(w[r] + i) * xv;
  }
  if (i < in) {
    const vf xv = load_part(x + i, in - i);
    for (int r = 0; r < R; ++r) s[r] = s[r] + load_part(w[r] + i, in - i) * xv;
  }
  for (int r = 0; r < R; ++r) sums[r] = hsum(s[r]);
}

// y[o] = sum over i < in of W[o * ld + i] x[i] for o < rows, R rows at a time from R far-apart places: stream r
// walks rows r*chunk, r*chunk+1, ... so the memory system sees R long sequential streams (a single core reads faster
// from 8 streams than from 1-4, and short row-sized streams restart the prefetchers at every row).
template <typename T, int R>
void dots(const T* W, int64_t ld, int64_t rows, int64_t in, const float* x, float* y) {
  const int64_t chunk = rows / R;
  for (int64_t k = 0; k < chunk; ++k) {
    const T* w[R];
    float sums[R];
    for (int r = 0; r < R; ++r) w[r] = W + (r * chunk + k) * ld;
    dot_rows<T, R>(w, x, in, sums);
    for (int r = 0; r < R; ++r) y[r * chunk + k] = sums[r];
  }
  for (int64_t o = R * chunk; o < rows; ++o) {
    const T* w[1] = {W + o * ld};
    dot_rows<T, 1>(w, x, in, y + o);
  }
}

// yy[j0, j0 + len) += sum over r < R of xr[r] * w[r][j0, j0 + len), len <= kLanes
template <typename T, int R>
inline void axpy_block(const T* const* w, const vf* xr, int64_t j, int64_t len, float* yy) {
  vf acc = load_upto(yy + j, len);
  for (int r = 0; r < R; ++r) acc = acc + load_upto(w[r] + j, len) * xr[r];
  if (len >= kLanes)
    storev(yy + j, acc);
  else
    store_part(yy + j, acc, len);
}

// yy[0, n) += sum over rows i < in of x[i] * W[i * ld + j] (W^T stored [in, out]): R far-apart rows at a time,
// for the same reason as `dots`.
template <typename T, int R>
void axpys(const T* W, int64_t ld, int64_t in, const float* x, int64_t n, float* yy) {
  const int64_t chunk = in / R;
  for (int64_t k = 0; k < chunk; ++k) {
    const T* w[R];
    vf xr[R];
    for (int r = 0; r < R; ++r) w[r] = W + (r * chunk + k) * ld, xr[r] = splat(x[r * chunk + k]);
    for (int64_t j = 0; j < n; j += kLanes) axpy_block<T, R>(w, xr, j, n - j, yy);
  }
  for (int64_t i = R * chunk; i < in; ++i) {
    const T* w[1] = {W + i * ld};
    const vf xi[1] = {splat(x[i])};
    for (int64_t j = 0; j < n; j += kLanes) axpy_block<T, 1>(w, xi, j, n - j, yy);
  }
}

// `axpys` into y (overwritten) for V whole vectors of outputs (n = V kLanes: the LoRA matrices): the V accumulators
// stay in registers across all rows instead of a load and a store per 8 rows.
template <typename T, int V>
void axpys_narrow(const T* W, int64_t ld, int64_t in, const float* x, float* y) {
  constexpr int R = 8;
  vf acc[V] = {};
  const int64_t chunk = in / R;
  for (int64_t k = 0; k < chunk; ++k)
    for (int r = 0; r < R; ++r) {
      const T* w = W + (r * chunk + k) * ld;
      const vf xr = splat(x[r * chunk + k]);
      for (int v = 0; v < V; ++v) acc[v] = acc[v] + loadv(w + kLanes * v) * xr;
    }
  for (int64_t i = R * chunk; i < in; ++i) {
    const vf xi = splat(x[i]);
    for (int v = 0; v < V; ++v) acc[v] = acc[v] + loadv(W + i * ld + kLanes * v) * xi;
  }
  for (int v = 0; v < V; ++v) storev(y + kLanes * v, acc[v]);
}

template <typename T>
void axpys_into(const T* W, int64_t ld, int64_t in, const float* x, int64_t n, float* y) {
  switch (n % kLanes ? 0 : n / kLanes) {
    case 1: return axpys_narrow<T, 1>(W, ld, in, x, y);
    case 2: return axpys_narrow<T, 2>(W, ld, in, x, y);
    case 3: return axpys_narrow<T, 3>(W, ld, in, x, y);
    case 4: return axpys_narrow<T, 4>(W, ld, in, x, y);
    case 5: return axpys_narrow<T, 5>(W, ld, in, x, y);
    case 6: return axpys_narrow<T, 6>(W, ld, in, x, y);
    case 7: return axpys_narrow<T, 7>(W, ld, in, x, y);
    case 8: return axpys_narrow<T, 8>(W, ld, in, x, y);
    default:
      std::fill(y, y + n, 0.0f);
      return axpys<T, 8>(W, ld, in, x, n, y);
  }
}

// A weight read as [out, in] (y = W x), stored row-major or column-major (W^T contiguous), by address.
template <typename T>
struct Mat {
  const T* p;
  int64_t out, in;
  bool row_major;
};

// y[o0, o1) = rows o0 .. o1 of W times x (every input). Row-major: dot products of those rows; column-major: the
// rows of W^T accumulated into the block of outputs, which stays in L1/L2 while W^T's rows stream past it.
template <typename T>
void rows_times(const Mat<T>& w, const float* x, float* y, int64_t o0, int64_t o1) {
  if (o1 <= o0) return;
  if (w.row_major) return dots<T, 8>(w.p + o0 * w.in, w.in, o1 - o0, w.in, x, y + o0);
  axpys_into<T>(w.p + o0, w.out, w.in, x, o1 - o0, y + o0);
}

// y[0, out) = columns i0 .. i1 of W times x[i0, i1) (a partial product over an input range; overwritten).
template <typename T>
void cols_times(const Mat<T>& w, const float* x, float* y, int64_t i0, int64_t i1) {
  if (i1 <= i0) return std::fill(y, y + w.out, 0.0f);
  if (w.row_major) return dots<T, 8>(w.p + i0, w.in, w.out, i1 - i0, x + i0, y);
  axpys_into<T>(w.p + i0 * w.out, w.out, i1 - i0, x + i0, w.out, y);
}
