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

inline __mmask16 tail(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

// Rows of W [rows, in] (row-major) dotted with x, R rows at a time from R far-apart places: stream r walks rows
// r*chunk, r*chunk+1, ... so the memory system sees R long sequential streams (a single core reads ~30% faster from
// 8 streams than from 1-4, and short row-sized streams restart the prefetchers at every row).
template <typename T, int R>
void dots(const T* W, int64_t rows, int64_t in, const float* x, float* y) {
  const int64_t chunk = rows / R;
  for (int64_t k = 0; k < chunk; ++k) {
    __m512 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm512_setzero_ps();
    for (int64_t i = 0; i < in; i += 16) {
      const __mmask16 m = tail(in - i);
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
      for (int r = 0; r < R; ++r) s[r] = _mm512_fmadd_ps(load16(W + (r * chunk + k) * in + i, m), xv, s[r]);
    }
    for (int r = 0; r < R; ++r) y[r * chunk + k] = _mm512_reduce_add_ps(s[r]);
  }
  for (int64_t o = R * chunk; o < rows; ++o) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t i = 0; i < in; i += 16) {
      const __mmask16 m = tail(in - i);
      s = _mm512_fmadd_ps(load16(W + o * in + i, m), _mm512_maskz_loadu_ps(m, x + i), s);
    }
    y[o] = _mm512_reduce_add_ps(s);
  }
}

// yy[0, n) += sum over rows i < in of x[i] * W[i * stride + j] (W^T stored [in, out]): R far-apart rows at a time,
// for the same reason as `dots`.
template <typename T, int R>
void axpys(const T* W, int64_t stride, int64_t in, const float* x, int64_t n, float* yy) {
  const int64_t chunk = in / R;
  for (int64_t k = 0; k < chunk; ++k) {
    __m512 xr[R];
    for (int r = 0; r < R; ++r) xr[r] = _mm512_set1_ps(x[r * chunk + k]);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      __m512 acc = _mm512_maskz_loadu_ps(m, yy + j);
      for (int r = 0; r < R; ++r) acc = _mm512_fmadd_ps(load16(W + (r * chunk + k) * stride + j, m), xr[r], acc);
      _mm512_mask_storeu_ps(yy + j, m, acc);
    }
  }
  for (int64_t i = R * chunk; i < in; ++i) {
    const __m512 xi = _mm512_set1_ps(x[i]);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      const __m512 acc = _mm512_maskz_loadu_ps(m, yy + j);
      _mm512_mask_storeu_ps(yy + j, m, _mm512_fmadd_ps(load16(W + i * stride + j, m), xi, acc));
    }
  }
}
#else
template <typename T, int R>
void dots(const T* W, int64_t rows, int64_t in, const float* x, float* y) {
  for (int64_t o = 0; o < rows; ++o) {
    float s = 0;
    for (int64_t i = 0; i < in; ++i) s += f32(W[o * in + i]) * x[i];
    y[o] = s;
  }
}

template <typename T, int R>
void axpys(const T* W, int64_t stride, int64_t in, const float* x, int64_t n, float* yy) {
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < n; ++j) yy[j] += x[i] * f32(W[i * stride + j]);
}
#endif

// y = W x for a weight read as [out, in]: dot products of its rows when it is stored row-major, y accumulating the
// rows of W^T when it is stored column-major; either way each weight is read once, from 8 streams.
template <typename T>
void gemv(const at::Tensor& w, const float* x, float* y) {
  const int64_t out = w.size(0), in = w.size(1);
  const T* W = ptr<T>(w);
  TORCH_CHECK((w.stride(1) == 1 && w.stride(0) == in) || (w.stride(0) == 1 && w.stride(1) == out),
              "decode7: a weight must be stored row- or column-major");
  // small matrices (the LoRA ones) stay on one thread: a parallel region is a barrier, which costs a time slice
  // whenever a thread is descheduled on a busy machine
  const bool parallel = out * in >= (1 << 18);
  if (w.stride(1) == 1) {
    at::parallel_for(0, out, parallel ? 64 : out, [&](int64_t b, int64_t e) {
      dots<T, 8>(W + b * in, e - b, in, x, y + b);
    });
    return;
  }
  // one block of outputs per thread: y's block stays in L1/L2 while every row of W^T streams past it
  const int64_t threads = parallel ? std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), out / 256)) : 1;
  const int64_t block = ((out + threads - 1) / threads + 15) / 16 * 16;
  at::parallel_for(0, (out + block - 1) / block, 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t o0 = blk * block, n = std::min(block, out - o0);
      std::fill(y + o0, y + o0 + n, 0.0f);
      axpys<T, 8>(W + o0, out, in, x, n, y + o0);
    }
  });
}

