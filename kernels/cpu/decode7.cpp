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

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

#include "matvec.h"

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

void store(const float* v, Row r, int64_t n) {
  if (!r.bf16) return (void)std::memcpy(r.data, v, n * sizeof(float));
  for (int64_t i = 0; i < n; ++i) static_cast<at::BFloat16*>(r.data)[i] = at::BFloat16(v[i]);
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
void block(const std::vector<at::Tensor>& p, int64_t layer, int64_t H, float* x, Row att_prev, const float* S,
           float* S_next, Row ffn_prev, Row att_out, Row ffn_out, Work& z) {
  const int64_t C = p[LN1_W].numel(), N = C / H;
  auto v_ = [&](P i) { return ptr<T>(p[i]); };
  layer_norm<T>(x, v_(LN1_W), v_(LN1_B), C, 1e-5f, z.h.data());
  store(z.h.data(), att_out, C);
  load(att_prev, C, z.dx.data());
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
  store(z.h.data(), ffn_out, C);
  load(ffn_prev, C, z.dx.data());
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
    att[c] = at::empty(att_prev.sizes(), att_prev.options()), ffn[c] = at::empty(ffn_prev.sizes(), ffn_prev.options()),
    next[c] = at::empty_like(wkv);  // contiguous: `row` addresses them
  for (int64_t t = 0; t < T; ++t) {
    const int out = t % 2;
    const auto att_c = t ? att[1 - out] : att_prev.contiguous(), ffn_c = t ? ffn[1 - out] : ffn_prev.contiguous();
    const float* S0 = t ? next[1 - out].data_ptr<float>() : wkv.data_ptr<float>();
    load(xs[t], x.data());
    for (int64_t l = 0; l < L; ++l) {
      const float* S = S0 + l * H * N * N;
      float* S2 = next[out].data_ptr<float>() + l * H * N * N;
      if (bf16)
        block<uint16_t>(layers[l], l, H, x.data(), row(att_c, l, C), S, S2, row(ffn_c, l, C), row(att[out], l, C),
                        row(ffn[out], l, C), z);
      else
        block<float>(layers[l], l, H, x.data(), row(att_c, l, C), S, S2, row(ffn_c, l, C), row(att[out], l, C),
                     row(ffn[out], l, C), z);
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

// v rounded to bf16 and back where the Python path holds it in a bf16 tensor (ln0 and ln_out outputs, the stream).
void round_like(std::vector<float>& v, bool bf16) {
  if (bf16)
    for (auto& e : v) e = static_cast<float>(at::BFloat16(e));
}

// One decoded token in one call: x_raw (1, C) the token's embedding row (before ln0) -> (logits (1, V) in the model's
// dtype, att, wkv, ffn): ln0, every block (`steps`), ln_out and the head, with what the Python path rounds to the
// model's dtype rounded the same way. ends: ln0 weight and bias, ln_out weight and bias, head [V, C] (row- or
// column-major). Nothing when a parameter is not `readable`.
std::vector<at::Tensor> token_step(const at::Tensor& x_raw, const at::Tensor& att_prev, const at::Tensor& wkv,
                                   const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params,
                                   const std::vector<at::Tensor>& ends) {
  const int64_t C = x_raw.size(-1);
  TORCH_CHECK(ends.size() == 5 && x_raw.numel() == C && !params.empty(), "decode7: token_step takes one row and 5 ends");
  const auto dtype = params[LN1_W].scalar_type();
  const at::Tensor& head = ends[4];
  for (int i = 0; i < 4; ++i)
    if (ends[i].scalar_type() != dtype || !ends[i].device().is_cpu() || ends[i].numel() != C ||
        !ends[i].is_contiguous())
      return {};
  if (head.dim() != 2 || head.scalar_type() != dtype || !head.device().is_cpu() ||
      !stored_as_matrix(head, head.size(0), C))
    return {};
  const bool bf16 = dtype == at::kBFloat16;
  std::vector<float> x(C), h(C);
  load(x_raw.contiguous(), x.data());
  auto x0 = at::empty({1, C}, x_raw.options().dtype(at::kFloat));
  if (bf16) {
    layer_norm<uint16_t>(x.data(), ptr<uint16_t>(ends[0]), ptr<uint16_t>(ends[1]), C, 1e-5f, h.data());
  } else {
    layer_norm<float>(x.data(), ptr<float>(ends[0]), ptr<float>(ends[1]), C, 1e-5f, h.data());
  }
  round_like(h, bf16);
  std::memcpy(x0.data_ptr(), h.data(), C * sizeof(float));
  auto out = steps(x0, 1, att_prev, wkv, ffn_prev, H, params);
  if (out.empty()) return {};
  load(out[0], x.data());
  round_like(x, bf16);
  auto logits = at::empty({1, head.size(0)}, x_raw.options().dtype(at::kFloat));
  if (bf16) {
    layer_norm<uint16_t>(x.data(), ptr<uint16_t>(ends[2]), ptr<uint16_t>(ends[3]), C, 1e-5f, h.data());
    round_like(h, bf16);
    gemv<uint16_t>(head, h.data(), logits.data_ptr<float>());
  } else {
    layer_norm<float>(x.data(), ptr<float>(ends[2]), ptr<float>(ends[3]), C, 1e-5f, h.data());
    gemv<float>(head, h.data(), logits.data_ptr<float>());
  }
  return {bf16 ? logits.to(at::kBFloat16) : logits, out[1], out[2], out[3]};
}

// The index of the largest of n fp32 logits: the first one on ties, the first NaN if there is one (as torch.argmax).
// Two vector passes over logits still in cache: the maximum (and whether any is NaN), then its first position.
int64_t argmax(const at::Tensor& logits) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.is_contiguous() && logits.device().is_cpu() &&
                  logits.numel() > 0,
              "decode7: argmax takes contiguous fp32 CPU logits");
  const float* p = logits.data_ptr<float>();
  const int64_t n = logits.numel();
  float best = p[0];
  bool nan = false;
  int64_t i = 0;
#if defined(__AVX512F__)
  __m512 m = _mm512_set1_ps(p[0]);
  __mmask16 unordered = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(p + i);
    unordered |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    m = _mm512_max_ps(m, v);
  }
  best = _mm512_reduce_max_ps(m);
  nan = unordered != 0;
#endif
  for (; i < n; ++i) {
    nan |= p[i] != p[i];
    best = std::max(best, p[i]);
  }
  i = 0;
#if defined(__AVX512F__)
  const __m512 b = _mm512_set1_ps(best);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(p + i);
    const __mmask16 hit = nan ? _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) : _mm512_cmp_ps_mask(v, b, _CMP_EQ_OQ);
    if (hit) return i + __builtin_ctz(hit);
  }
#endif
  for (; i < n; ++i)
    if (nan ? p[i] != p[i] : p[i] == best) return i;
  return 0;
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
  m.def("token_step", &token_step, "RWKV-7 one token: ln0, every block, ln_out and the head in one call (batch 1, CPU)");
  m.def("argmax", &argmax, "index of the largest fp32 logit (torch.argmax's ties and NaN rule)");
  m.def("linear", &linear, "x W^T for one row x (CPU, fp32 math)");
  m.attr("n_params") = static_cast<int>(N_PARAMS);
}
