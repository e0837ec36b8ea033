// Tensors of the native decode (decode7.cpp): weights by address, the `linear` mat-vec, copies between fp32 work
// vectors and state rows of the model's dtype, and recycled state tensors. Included by decode7.cpp only (inside its
// anonymous namespace), after matvec.h.
#pragma once

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}

template <typename T>
Mat<T> mat(const at::Tensor& w) {
  return {ptr<T>(w), w.size(0), w.size(1), w.stride(1) == 1};
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

// Copies between fp32 work vectors and state/output tensors of the model's dtype.
void load(const at::Tensor& t, float* out) {
  const int64_t n = t.numel();
  if (t.scalar_type() == at::kFloat) {
    std::memcpy(out, t.data_ptr(), n * sizeof(float));
  } else {
    const uint16_t* p = ptr<uint16_t>(t);
    for (int64_t i = 0; i < n; ++i) out[i] = f32(p[i]);
  }
}

// Row l (C values) of a contiguous (L, 1, C) shift state, fp32 or bf16, by address: no tensor view per layer.
struct Row {
  void* data;
  bool bf16;
};

Row row(const at::Tensor& t, int64_t l, int64_t C) {
  const bool bf16 = t.scalar_type() == at::kBFloat16;
  return {static_cast<char*>(t.data_ptr()) + l * C * (bf16 ? 2 : 4), bf16};
}

void load(Row r, int64_t n, float* out) {
  if (!r.bf16) return (void)std::memcpy(out, r.data, n * sizeof(float));
  for (int64_t i = 0; i < n; ++i) out[i] = f32(static_cast<const uint16_t*>(r.data)[i]);
}

// v[i0, i1) into the row's same places
void store(const float* v, Row r, int64_t i0, int64_t i1) {
  if (!r.bf16) return (void)std::memcpy(static_cast<float*>(r.data) + i0, v + i0, (i1 - i0) * sizeof(float));
  for (int64_t i = i0; i < i1; ++i) static_cast<at::BFloat16*>(r.data)[i] = at::BFloat16(v[i]);
}

// An empty contiguous tensor of these sizes and options, on the memory of one that an earlier call returned when
// nobody holds that one any more. A fresh wkv state (MBs) is a new mmap whose pages fault in on first touch: page
// faults and kernel time on every decoded token without this (docs/performance.md). The pool keeps its own tensor and hands
// out another on the same storage, so the storage's count is 1 exactly when every handed-out tensor is gone (a
// tensor that has been to Python keeps a count of 2 after Python lets it go, so its own count cannot tell).
at::Tensor recycled(at::IntArrayRef sizes, const at::TensorOptions& options) {
  static std::mutex lock;
  static auto* pool = new std::vector<at::Tensor>();  // never destroyed: may outlive torch at exit
  constexpr size_t kPool = 8;                         // a decode loop holds 2 states and 2 logits at most
  const std::lock_guard<std::mutex> hold(lock);
  const at::Tensor* free = nullptr;
  for (const auto& t : *pool)
    if (t.storage().use_count() == 1 && t.sizes() == sizes && t.dtype() == options.dtype()) free = &t;
  if (!free) {
    if (pool->size() == kPool) pool->erase(pool->begin());
    pool->push_back(at::empty(sizes, options));
    free = &pool->back();
  }
  return at::empty({0}, options).set_(free->storage(), 0, sizes, free->strides());
}

at::Tensor recycled_like(const at::Tensor& like) { return recycled(like.sizes(), like.options()); }
