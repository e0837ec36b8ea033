// The mat-vec loops of the native decode (decode7.cpp): weights fp32, or bf16 widened on the fly (fp32 accumulate),
// streamed once at memory speed whichever way they are stored. Included by decode7.cpp only (inside its anonymous
// namespace), so it has no includes or namespace of its own.
#pragma once

inline float f32(float v) { return v; }
inline float f32(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}

#if defined(__AVX512F__)
// 16 weights as fp32: loaded, or widened from bf16 (the bf16 bits are the top half of the fp32 ones)
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

inline __mmask16 tail(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}

// y[o] = sum over i < in of W[o * ld + i] x[i] for o < rows, R rows at a time from R far-apart places: stream r
// walks rows r*chunk, r*chunk+1, ... so the memory system sees R long sequential streams (a single core reads ~30%
// faster from 8 streams than from 1-4, and short row-sized streams restart the prefetchers at every row).
template <typename T, int R>
void dots(const T* W, int64_t ld, int64_t rows, int64_t in, const float* x, float* y) {
  const int64_t chunk = rows / R;
  for (int64_t k = 0; k < chunk; ++k) {
    __m512 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    for (int64_t i = 0; i < in; i += 16) {
      const __mmask16 m = tail(in - i);
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
      for (int r = 0; r < R; ++r) s[r] = _mm512_fmadd_ps(load16(W + (r * chunk + k) * ld + i, m), xv, s[r]);
    }
    for (int r = 0; r < R; ++r) y[r * chunk + k] = _mm512_reduce_add_ps(s[r]);
  }
  for (int64_t o = R * chunk; o < rows; ++o) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t i = 0; i < in; i += 16) {
      const __mmask16 m = tail(in - i);
      s = _mm512_fmadd_ps(load16(W + o * ld + i, m), _mm512_maskz_loadu_ps(m, x + i), s);
    }
    y[o] = _mm512_reduce_add_ps(s);
  }
}

// yy[0, n) += sum over rows i < in of x[i] * W[i * ld + j] (W^T stored [in, out]): R far-apart rows at a time,
// for the same reason as `dots`.
template <typename T, int R>
void axpys(const T* W, int64_t ld, int64_t in, const float* x, int64_t n, float* yy) {
  const int64_t chunk = in / R;
  for (int64_t k = 0; k < chunk; ++k) {
    __m512 xr[R];
    for (int r = 0; r < R; ++r) xr[r] = _mm512_set1_ps(x[r * chunk + k]);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      __m512 acc = _mm512_maskz_loadu_ps(m, yy + j);
      for (int r = 0; r < R; ++r) acc = _mm512_fmadd_ps(load16(W + (r * chunk + k) * ld + j, m), xr[r], acc);
      _mm512_mask_storeu_ps(yy + j, m, acc);
    }
  }
  for (int64_t i = R * chunk; i < in; ++i) {
    const __m512 xi = _mm512_set1_ps(x[i]);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      const __m512 acc = _mm512_maskz_loadu_ps(m, yy + j);
      _mm512_mask_storeu_ps(yy + j, m, _mm512_fmadd_ps(load16(W + i * ld + j, m), xi, acc));
    }
  }
}

// `axpys` into y (overwritten) for n <= 16 V outputs (the LoRA matrices): the V accumulators stay in registers
// across all rows instead of a load and a store per 8 rows.
template <typename T, int V>
void axpys_narrow(const T* W, int64_t ld, int64_t in, const float* x, int64_t n, float* y) {
  constexpr int R = 8;
  __m512 acc[V];
  __mmask16 m[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps(), m[v] = tail(n - 16 * v);
  const int64_t chunk = in / R;
  for (int64_t k = 0; k < chunk; ++k)
    for (int r = 0; r < R; ++r) {
      const T* w = W + (r * chunk + k) * ld;
      const __m512 xr = _mm512_set1_ps(x[r * chunk + k]);
      for (int v = 0; v < V; ++v) acc[v] = _mm512_fmadd_ps(load16(w + 16 * v, m[v]), xr, acc[v]);
    }
  for (int64_t i = R * chunk; i < in; ++i) {
    const __m512 xi = _mm512_set1_ps(x[i]);
    for (int v = 0; v < V; ++v) acc[v] = _mm512_fmadd_ps(load16(W + i * ld + 16 * v, m[v]), xi, acc[v]);
  }
  for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(y + 16 * v, m[v], acc[v]);
}

template <typename T>
void axpys_into(const T* W, int64_t ld, int64_t in, const float* x, int64_t n, float* y) {
  switch ((n + 15) / 16) {
    case 0: return;
    case 1: return axpys_narrow<T, 1>(W, ld, in, x, n, y);
    case 2: return axpys_narrow<T, 2>(W, ld, in, x, n, y);
    case 3: return axpys_narrow<T, 3>(W, ld, in, x, n, y);
    case 4: return axpys_narrow<T, 4>(W, ld, in, x, n, y);
    case 5: return axpys_narrow<T, 5>(W, ld, in, x, n, y);
    case 6: return axpys_narrow<T, 6>(W, ld, in, x, n, y);
    case 7: return axpys_narrow<T, 7>(W, ld, in, x, n, y);
    case 8: return axpys_narrow<T, 8>(W, ld, in, x, n, y);
    default:
      std::fill(y, y + n, 0.0f);
      return axpys<T, 8>(W, ld, in, x, n, y);
  }
}
#else
template <typename T, int R>
void dots(const T* W, int64_t ld, int64_t rows, int64_t in, const float* x, float* y) {
  for (int64_t o = 0; o < rows; ++o) {
    float s = 0;
    for (int64_t i = 0; i < in; ++i) s += f32(W[o * ld + i]) * x[i];
    y[o] = s;
  }
}

template <typename T, int R>
void axpys(const T* W, int64_t ld, int64_t in, const float* x, int64_t n, float* yy) {
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < n; ++j) yy[j] += x[i] * f32(W[i * ld + j]);
}

template <typename T>
void axpys_into(const T* W, int64_t ld, int64_t in, const float* x, int64_t n, float* y) {
  std::fill(y, y + n, 0.0f);
  axpys<T, 8>(W, ld, in, x, n, y);
}
#endif

// A weight read as [out, in] (y = W x), stored row-major or column-major (W^T contiguous), by address.
template <typename T>
struct Mat {
  const T* p;
  int64_t out, in;
  bool row_major;
};

template <typename T>
Mat<T> mat(const at::Tensor& w) {
  return {ptr<T>(w), w.size(0), w.size(1), w.stride(1) == 1};
}

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

// y = W x on the threads of at::parallel_for (the `linear` entry point): blocks of rows per thread.
template <typename T>
void gemv(const at::Tensor& w, const float* x, float* y) {
  const Mat<T> m = mat<T>(w);
  TORCH_CHECK((w.stride(1) == 1 && w.stride(0) == m.in) || (w.stride(0) == 1 && w.stride(1) == m.out),
              "decode7: a weight must be stored row- or column-major");
  const bool parallel = m.out * m.in >= (1 << 18);
  if (m.row_major) {
    at::parallel_for(0, m.out, parallel ? 64 : m.out, [&](int64_t b, int64_t e) { rows_times(m, x, y, b, e); });
    return;
  }
  // one block of outputs per thread: y's block stays in L1/L2 while every row of W^T streams past it
  const int64_t threads = parallel ? std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), m.out / 256)) : 1;
  const int64_t block = ((m.out + threads - 1) / threads + 15) / 16 * 16;
  at::parallel_for(0, (m.out + block - 1) / block, 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) rows_times(m, x, y, blk * block, std::min(m.out, (blk + 1) * block));
  });
}
