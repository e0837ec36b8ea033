// RWKV-7 one-token decode on CPU: every block in one call (a short prompt piece: its tokens in one call), and the
// head's mat-vec.
//
// Notation: C channels, H heads, N head size, F feed-forward width, D a LoRA width. Batch 1 only.
// The equations are those of mmrwkv/rwkv/v7.py (block_step); this file only fuses them: each elementwise stage is
// one loop over C, the WKV state is read and written once per token (one pass per head row), and the mat-vecs
// are our own loops, which stream each weight once at memory speed whichever way it is stored.
// Math is fp32 whatever the weights (fp32, or bf16 widened on the fly: fp32 accumulate).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

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
#include <immintrin.h>
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

template <typename T>
void layer_norm(const float* x, const T* w, const T* b, int64_t n, float eps, float* out) {
  float mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.0f / std::sqrt(var / n + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] - mean) * rstd * f32(w[i]) + f32(b[i]);
}

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

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

void store(const float* v, at::Tensor t) {
  const int64_t n = t.numel();
  if (t.scalar_type() == at::kFloat) {
    std::memcpy(t.data_ptr(), v, n * sizeof(float));
  } else {
    auto* p = reinterpret_cast<at::BFloat16*>(t.data_ptr());
    for (int64_t i = 0; i < n; ++i) p[i] = at::BFloat16(v[i]);
  }
}

// Parameter order of one layer: must match mmrwkv/kernels/cpu.py LAYER_PARAMS.
enum P {
  LN1_W, LN1_B, X_R, X_W, X_K, X_V, X_A, X_G, W0, W1, W2, A0, A1, A2, V0, V1, V2, G1, G2, K_K, K_A, R_K,
  W_R, W_K, W_V, W_O, LNX_W, LNX_B, LN2_W, LN2_B, FFN_X_K, FFN_W_K, FFN_W_V, N_PARAMS
};

struct Work {
  std::vector<float> h, dx, xr, xw, xk, xv, xa, xg, r, k, v, w, a, g, kk, y, vfirst, t, u, hid, out;
  Work(int64_t C, int64_t D, int64_t F) {
    for (auto* b : {&h, &dx, &xr, &xw, &xk, &xv, &xa, &xg, &r, &k, &v, &w, &a, &g, &kk, &y, &vfirst, &u, &out})
      b->resize(C);
    t.resize(D);
    hid.resize(F);
  }
};

// x @ m for a LoRA matrix m [in, out] (stored as the model keeps it): the mat-vec of m^T.
template <typename T>
void lora(const at::Tensor& m, const float* x, float* y) {
  gemv<T>(m.t(), x, y);
}

// S (H, N, N) [value, key] -> S' written to `next`, y = S' r; decay = exp(w), a = -kk, b = kk * a.
// One thread: the state is ~0.2 MB per layer, less work than a barrier can cost on a busy machine.
void wkv_step(const float* S, float* next, const Work& z, int64_t H, int64_t N, float* y) {
  for (int64_t h = 0; h < H; ++h) {
    const int64_t o = h * N;
    const float *dec = &z.w[o], *kk = &z.kk[o], *a = &z.a[o], *k = &z.k[o], *v = &z.v[o], *r = &z.r[o];
    for (int64_t i = 0; i < N; ++i) {
      const float* s = S + (o + i) * N;
      float* s2 = next + (o + i) * N;
      float sa = 0, yi = 0;
#pragma omp simd reduction(+ : sa)
      for (int64_t j = 0; j < N; ++j) sa -= s[j] * kk[j];
      const float vi = v[i];
#pragma omp simd reduction(+ : yi)
      for (int64_t j = 0; j < N; ++j) {
        const float sj = s[j] * dec[j] + sa * (kk[j] * a[j]) + vi * k[j];
        s2[j] = sj;
        yi += sj * r[j];
      }
      y[o + i] = yi;
    }
  }
}

template <typename T>
void block(const std::vector<at::Tensor>& p, int64_t layer, int64_t H, float* x, const at::Tensor& att_prev,
           const float* S, float* S_next, const at::Tensor& ffn_prev, at::Tensor att_out, at::Tensor ffn_out,
           Work& z) {
  const int64_t C = p[LN1_W].numel(), N = C / H;
  auto v_ = [&](P i) { return ptr<T>(p[i]); };
  layer_norm<T>(x, v_(LN1_W), v_(LN1_B), C, 1e-5f, z.h.data());
  store(z.h.data(), att_out);
  load(att_prev, z.dx.data());
  const T *mr = v_(X_R), *mw = v_(X_W), *mk = v_(X_K), *mv = v_(X_V), *ma = v_(X_A), *mg = v_(X_G);
  for (int64_t i = 0; i < C; ++i) {
    const float h = z.h[i], d = z.dx[i] - h;
    z.xr[i] = h + d * f32(mr[i]), z.xw[i] = h + d * f32(mw[i]), z.xk[i] = h + d * f32(mk[i]);
    z.xv[i] = h + d * f32(mv[i]), z.xa[i] = h + d * f32(ma[i]), z.xg[i] = h + d * f32(mg[i]);
  }
  gemv<T>(p[W_R], z.xr.data(), z.r.data());
  gemv<T>(p[W_K], z.xk.data(), z.k.data());
  gemv<T>(p[W_V], z.xv.data(), z.v.data());
  // decay: w = -e^-0.5 sigmoid(w0 + tanh(xw w1) w2), used as exp(w)
  lora<T>(p[W1], z.xw.data(), z.t.data());
  for (int64_t i = 0; i < p[W1].size(1); ++i) z.t[i] = std::tanh(z.t[i]);
  lora<T>(p[W2], z.t.data(), z.u.data());
  const T* w0 = v_(W0);
  for (int64_t i = 0; i < C; ++i) z.w[i] = std::exp(-0.6065306597126334f * sigmoid(f32(w0[i]) + z.u[i]));
  lora<T>(p[A1], z.xa.data(), z.t.data());
  lora<T>(p[A2], z.t.data(), z.u.data());
  const T* a0 = v_(A0);
  for (int64_t i = 0; i < C; ++i) z.a[i] = sigmoid(f32(a0[i]) + z.u[i]);
  lora<T>(p[G1], z.xg.data(), z.t.data());
  for (int64_t i = 0; i < p[G1].size(1); ++i) z.t[i] = sigmoid(z.t[i]);
  lora<T>(p[G2], z.t.data(), z.g.data());
  // kk = normalize(k * k_k) per head; k = k * (1 + (a - 1) * k_a)
  const T *k_k = v_(K_K), *k_a = v_(K_A);
  for (int64_t h = 0; h < H; ++h) {
    float ss = 0;
    for (int64_t i = h * N; i < (h + 1) * N; ++i) {
      z.kk[i] = z.k[i] * f32(k_k[i]);
      ss += z.kk[i] * z.kk[i];
    }
    const float inv = 1.0f / std::max(std::sqrt(ss), 1e-12f);
    for (int64_t i = h * N; i < (h + 1) * N; ++i) z.kk[i] *= inv;
  }
  for (int64_t i = 0; i < C; ++i) z.k[i] *= 1 + (z.a[i] - 1) * f32(k_a[i]);
  if (layer == 0) {
    z.vfirst = z.v;
  } else {
    lora<T>(p[V1], z.xv.data(), z.t.data());
    lora<T>(p[V2], z.t.data(), z.u.data());
    const T* v0 = v_(V0);
    for (int64_t i = 0; i < C; ++i) z.v[i] += (z.vfirst[i] - z.v[i]) * sigmoid(f32(v0[i]) + z.u[i]);
  }
  wkv_step(S, S_next, z, H, N, z.y.data());
  // group norm per head, the bonus (r . (k * r_k)) v per head, the gate
  const T *lw = v_(LNX_W), *lb = v_(LNX_B), *r_k = v_(R_K);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t o = h * N;
    float mean = 0, var = 0, bonus = 0;
    for (int64_t i = o; i < o + N; ++i) mean += z.y[i];
    mean /= N;
    for (int64_t i = o; i < o + N; ++i) var += (z.y[i] - mean) * (z.y[i] - mean);
    const float rstd = 1.0f / std::sqrt(var / N + 64e-5f);
    for (int64_t i = o; i < o + N; ++i) bonus += z.r[i] * z.k[i] * f32(r_k[i]);
    for (int64_t i = o; i < o + N; ++i)
      z.u[i] = ((z.y[i] - mean) * rstd * f32(lw[i]) + f32(lb[i]) + bonus * z.v[i]) * z.g[i];
  }
  gemv<T>(p[W_O], z.u.data(), z.out.data());
  for (int64_t i = 0; i < C; ++i) x[i] += z.out[i];
  // channel mix: x += W_v relu(W_k xk)^2
  layer_norm<T>(x, v_(LN2_W), v_(LN2_B), C, 1e-5f, z.h.data());
  store(z.h.data(), ffn_out);
  load(ffn_prev, z.dx.data());
  const T* fk = v_(FFN_X_K);
  for (int64_t i = 0; i < C; ++i) z.xk[i] = z.h[i] + (z.dx[i] - z.h[i]) * f32(fk[i]);
  gemv<T>(p[FFN_W_K], z.xk.data(), z.hid.data());
  for (auto& e : z.hid) e = e > 0 ? e * e : 0.0f;
  gemv<T>(p[FFN_W_V], z.hid.data(), z.out.data());
  for (int64_t i = 0; i < C; ++i) x[i] += z.out[i];
}

bool stored_as_matrix(const at::Tensor& w, int64_t rows, int64_t cols) {
  if (w.dim() != 2 || w.size(0) != rows || w.size(1) != cols) return false;
  return (w.stride(1) == 1 && w.stride(0) == cols) || (w.stride(0) == 1 && w.stride(1) == rows);
}

// Whether every parameter has the dtype, device, shape and layout the loops above read (anything else: TorchScript).
bool readable(const std::vector<at::Tensor>& params, int64_t L, int64_t C, int64_t H) {
  const auto dtype = params[LN1_W].scalar_type();
  if ((dtype != at::kFloat && dtype != at::kBFloat16) || C % H != 0) return false;
  const int64_t F = params[FFN_W_K].dim() == 2 ? params[FFN_W_K].size(0) : -1;
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor* p = &params[l * N_PARAMS];
    for (int i = 0; i < N_PARAMS; ++i) {
      const bool absent = l == 0 && (i == V0 || i == V1 || i == V2);
      if (!absent && (p[i].scalar_type() != dtype || !p[i].device().is_cpu())) return false;
    }
    for (P i : {LN1_W, LN1_B, X_R, X_W, X_K, X_V, X_A, X_G, W0, A0, K_K, K_A, R_K, LNX_W, LNX_B, LN2_W, LN2_B, FFN_X_K})
      if (p[i].numel() != C || !p[i].is_contiguous()) return false;
    for (P i : {W_R, W_K, W_V, W_O})
      if (!stored_as_matrix(p[i], C, C)) return false;
    if (!stored_as_matrix(p[FFN_W_K], F, C) || !stored_as_matrix(p[FFN_W_V], C, F)) return false;
    for (auto [down, up] : {std::pair{W1, W2}, {A1, A2}, {G1, G2}, {V1, V2}}) {
      if (down == V1 && l == 0) continue;
      const int64_t D = p[down].dim() == 2 ? p[down].size(1) : -1;
      if (!stored_as_matrix(p[down], C, D) || !stored_as_matrix(p[up], D, C)) return false;
    }
    if (l > 0 && (p[V0].numel() != C || !p[V0].is_contiguous())) return false;
  }
  return true;
}

// x (T, C) after ln0, T >= 1; att_prev, ffn_prev (L, 1, C); wkv (L, 1, H, N, N) fp32; params: N_PARAMS tensors per
// layer. The T tokens go through every block one after another (the parameters checked and the work buffers made
// once); returns (x (1, C) fp32 of the last token, att (L, 1, C), wkv (L, 1, H, N, N), ffn (L, 1, C)) after it, or
// nothing when a parameter is not `readable`; the inputs are not modified.
std::vector<at::Tensor> steps(const at::Tensor& x_in, int64_t T, const at::Tensor& att_prev, const at::Tensor& wkv,
                              const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params) {
  const int64_t L = wkv.size(0), C = x_in.size(-1), N = C / H;
  TORCH_CHECK(static_cast<int64_t>(params.size()) == L * N_PARAMS, "decode7: expected ", L * N_PARAMS,
              " parameters, got ", params.size());
  TORCH_CHECK(T >= 1 && x_in.numel() == T * C && wkv.scalar_type() == at::kFloat && wkv.is_contiguous() &&
                  wkv.numel() == L * H * N * N && att_prev.numel() == L * C && ffn_prev.numel() == L * C,
              "decode7: batch 1 and a contiguous fp32 wkv state");
  if (!readable(params, L, C, H)) return {};
  const bool bf16 = params[LN1_W].scalar_type() == at::kBFloat16;
  int64_t D = 0;
  for (int64_t l = 0; l < L; ++l)
    for (P i : {W1, A1, V1, G1})
      if (params[l * N_PARAMS + i].dim() == 2) D = std::max(D, params[l * N_PARAMS + i].size(1));
  Work z(C, D, params[FFN_W_K].size(0));
  std::vector<std::vector<at::Tensor>> layers;
  for (int64_t l = 0; l < L; ++l)
    layers.emplace_back(params.begin() + l * N_PARAMS, params.begin() + (l + 1) * N_PARAMS);
  std::vector<float> x(C);
  const auto xs = x_in.contiguous().view({T, C});
  // a block writes its shift outputs before it reads the previous ones: token t reads one copy of the state and
  // writes the other (the second copy exists only when T > 1)
  at::Tensor att[2], ffn[2], next[2];
  for (int c = 0; c < std::min<int64_t>(T, 2); ++c)
    att[c] = at::empty_like(att_prev), ffn[c] = at::empty_like(ffn_prev), next[c] = at::empty_like(wkv);
  for (int64_t t = 0; t < T; ++t) {
    const int out = t % 2;
    const auto att_c = t ? att[1 - out] : att_prev.contiguous(), ffn_c = t ? ffn[1 - out] : ffn_prev.contiguous();
    const float* S0 = t ? next[1 - out].data_ptr<float>() : wkv.data_ptr<float>();
    load(xs[t], x.data());
    for (int64_t l = 0; l < L; ++l) {
      const float* S = S0 + l * H * N * N;
      float* S2 = next[out].data_ptr<float>() + l * H * N * N;
      if (bf16)
        block<uint16_t>(layers[l], l, H, x.data(), att_c[l], S, S2, ffn_c[l], att[out][l], ffn[out][l], z);
      else
        block<float>(layers[l], l, H, x.data(), att_c[l], S, S2, ffn_c[l], att[out][l], ffn[out][l], z);
    }
  }
  auto x_out = at::empty({1, C}, x_in.options().dtype(at::kFloat));
  std::memcpy(x_out.data_ptr(), x.data(), C * sizeof(float));
  const int last = (T - 1) % 2;
  return {x_out, att[last], next[last], ffn[last]};
}

// x (1, C) after ln0: one token (`steps` with T = 1).
std::vector<at::Tensor> layers_step(const at::Tensor& x_in, const at::Tensor& att_prev, const at::Tensor& wkv,
                                    const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params) {
  return steps(x_in, 1, att_prev, wkv, ffn_prev, H, params);
}

// x (T, C) after ln0: a prompt piece of T tokens in one call (`steps`).
std::vector<at::Tensor> layers_prefill(const at::Tensor& x_in, const at::Tensor& att_prev, const at::Tensor& wkv,
                                       const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params) {
  TORCH_CHECK(x_in.dim() == 2, "decode7: layers_prefill takes x (T, C)");
  return steps(x_in, x_in.size(0), att_prev, wkv, ffn_prev, H, params);
}

// x (1, in) -> x W^T (1, out) fp32, for W [out, in] fp32 or bf16 stored row- or column-major.
at::Tensor linear(const at::Tensor& x_in, const at::Tensor& w) {
  std::vector<float> x(w.size(1));
  load(x_in.contiguous(), x.data());
  auto y = at::empty({1, w.size(0)}, x_in.options().dtype(at::kFloat));
  if (w.scalar_type() == at::kBFloat16)
    gemv<uint16_t>(w, x.data(), y.data_ptr<float>());
  else
    gemv<float>(w, x.data(), y.data_ptr<float>());
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("layers_step", &layers_step, "RWKV-7 one-token step through every block (batch 1, CPU)");
  m.def("layers_prefill", &layers_prefill, "RWKV-7 steps over T tokens through every block in one call (batch 1, CPU)");
  m.def("linear", &linear, "x W^T for one row x (CPU, fp32 math)");
  m.attr("n_params") = static_cast<int>(N_PARAMS);
}
