// RWKV-7 one-token decode on CPU: every block in one call (a short prompt piece: its tokens in one call), and the
// head's mat-vec, on a team of threads in one parallel region (team.h).
//
// Notation: C channels, H heads, N head size, F feed-forward width, D a LoRA width. Batch 1 only.
// The equations are those of mmrwkv/rwkv/v7.py (block_step); this file only fuses them: each elementwise stage is
// one loop over C, the WKV state is read and written once per token (one pass per head row), and the mat-vecs
// are our own loops, which stream each weight once at memory speed whichever way it is stored.
// Math is fp32 whatever the weights (fp32, or bf16 widened on the fly: fp32 accumulate).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "simd.h"  // the vector type (global: the headers below are also included by selftest.cpp)

namespace {

#include "matvec.h"
#include "team.h"
#include "buffers.h"
#include "pick.h"
#include "argmax.h"
#include "vmath.h"
#include "wkv.h"

template <typename T>
void layer_norm(const float* x, const T* w, const T* b, int64_t n, float eps, float* out) {
  float mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.0f / std::sqrt(var / n + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] - mean) * rstd * f32(w[i]) + f32(b[i]);
}

// Parameter order of one layer: must match mmrwkv/kernels/cpu.py LAYER_PARAMS.
enum P {
  LN1_W, LN1_B, X_R, X_W, X_K, X_V, X_A, X_G, W0, W1, W2, A0, A1, A2, V0, V1, V2, G1, G2, K_K, K_A, R_K,
  W_R, W_K, W_V, W_O, LNX_W, LNX_B, LN2_W, LN2_B, FFN_X_K, FFN_W_K, FFN_W_V, N_PARAMS
};

// A LoRA matrix m [in, out] (stored as the model keeps it, x @ m) as the mat-vec weight m^T [out, in].
template <typename T>
Mat<T> lora(const at::Tensor& m) {
  return {ptr<T>(m), m.size(1), m.size(0), m.stride(0) == 1};
}

// The team's shared buffers: partial products summed over the threads after a barrier (each thread writes its
// slot, then all read every slot; one buffer per exchange of a layer, so a fast thread never overwrites what a slow
// one still reads), and the outputs of mat-vecs whose rows any thread may compute (`Team::claim`).
struct Shared {
  at::Tensor mem;
  int64_t C, D;
  float *lora, *att;     // [threads][4 D], [threads][C]
  float *r, *k, *v, *u;  // (C): receptance, key, value (then changed in place by each head's owner), W_o's input
  float *hid, *out;      // (F), (C): the feed-forward's hidden units; the output of W_o, then of the feed-forward
  std::vector<Greedy> greedy;  // each thread's pick among the logits it computed

  Shared(int threads, int64_t C, int64_t D, int64_t F) : C(C), D(D), greedy(threads) {
    mem = at::empty({threads * (4 * D + C) + 5 * C + F}, at::kFloat);
    lora = mem.data_ptr<float>(), att = lora + threads * 4 * D;
    r = att + threads * C, k = r + C, v = k + C, u = v + C, out = u + C, hid = out + C;
  }
};

// One thread's work vectors (fp32). The vectors every thread needs in full (the mixed inputs of the mat-vecs, the
// stream x) each thread makes itself, in the same order, so the copies agree bit for bit; the rest it fills only
// for its own heads (w .. u); r, k, v are the team's (`Shared`).
struct Own {
  at::Tensor mem;
  float *x, *h, *dx, *xr, *xw, *xk, *xv, *xa, *xg, *r, *k, *v, *w, *a, *g, *kk, *y, *u, *vfirst, *t;

  Own(int64_t C, int64_t D, const Shared& shared) : r(shared.r), k(shared.k), v(shared.v) {
    const int64_t c = (C + 15) / 16 * 16, d = (4 * D + 15) / 16 * 16;
    mem = at::empty({16 * c + d}, at::kFloat);
    float* p = mem.data_ptr<float>();
    for (float** b : {&x, &h, &dx, &xr, &xw, &xk, &xv, &xa, &xg, &w, &a, &g, &kk, &y, &u, &vfirst}) *b = p, p += c;
    t = p;
  }
};

// out[0, n) (+)= the sum of the team's n-long partials at part + t * stride, in thread order (the same on every
// thread).
void gather(const Team& team, const float* part, int64_t stride, int64_t n, float* out, bool add) {
  for (int64_t i = 0; i < n; ++i) {
    float s = part[i];
    for (int t = 1; t < team.n; ++t) s += part[t * stride + i];
    out[i] = add ? out[i] + s : s;
  }
}

// S (heads h0 .. h1 of H, N, N) [value, key] -> S' written to `next`, y = S' r (wkv.h); decay = exp(w).
void wkv_step(const float* S, float* next, const Own& z, int64_t h0, int64_t h1, int64_t N) {
  wkv_heads(S, next, z.w, z.kk, z.a, z.k, z.v, z.r, z.y, h0, h1, N);
}

// The shift-state rows of one layer: read (previous token) and written (this token).
struct Shift {
  Row att_prev, ffn_prev, att_out, ffn_out;
};

// The time mix's elementwise work on channels [c0, c1) (this thread's heads) between the LoRA mat-vecs: decay,
// in-context learning rate, gate, value residual; kk and k per head.
template <typename T>
void lora_up(const std::vector<at::Tensor>& p, int64_t layer, int64_t c0, int64_t c1, int64_t N, const float* t,
             int64_t D, Own& z) {
  auto v_ = [&](P i) { return ptr<T>(p[i]); };
  // decay: w = -e^-0.5 sigmoid(w0 + tanh(xw w1) w2), used as exp(w)
  rows_times(lora<T>(p[W2]), t, z.u, c0, c1);
  const T *w0 = v_(W0), *a0 = v_(A0), *k_k = v_(K_K), *k_a = v_(K_A);
  for (int64_t i = c0; i < c1; ++i) z.u[i] += f32(w0[i]);
  apply(Elementwise::kDecay, z.u + c0, z.w + c0, c1 - c0);
  rows_times(lora<T>(p[A2]), t + D, z.u, c0, c1);
  for (int64_t i = c0; i < c1; ++i) z.u[i] += f32(a0[i]);
  apply(Elementwise::kSigmoid, z.u + c0, z.a + c0, c1 - c0);
  rows_times(lora<T>(p[G2]), t + 2 * D, z.g, c0, c1);
  // kk = normalize(k * k_k) per head; k = k * (1 + (a - 1) * k_a)
  for (int64_t o = c0; o < c1; o += N) {
    float ss = 0;
    for (int64_t i = o; i < o + N; ++i) {
      z.kk[i] = z.k[i] * f32(k_k[i]);
      ss += z.kk[i] * z.kk[i];
    }
    const float inv = 1.0f / std::max(std::sqrt(ss), 1e-12f);
    for (int64_t i = o; i < o + N; ++i) z.kk[i] *= inv;
  }
  for (int64_t i = c0; i < c1; ++i) z.k[i] *= 1 + (z.a[i] - 1) * f32(k_a[i]);
  if (layer == 0) return (void)std::copy(z.v + c0, z.v + c1, z.vfirst + c0);
  rows_times(lora<T>(p[V2]), t + 3 * D, z.u, c0, c1);
  const T* v0 = v_(V0);
  for (int64_t i = c0; i < c1; ++i) z.u[i] += f32(v0[i]);
  apply(Elementwise::kSigmoid, z.u + c0, z.u + c0, c1 - c0);
  for (int64_t i = c0; i < c1; ++i) z.v[i] += (z.vfirst[i] - z.v[i]) * z.u[i];
}

// fn(b, e) over this thread's rows of [0, rows) of a mat-vec on m's layout: taken in turn (`Team::claim`), or for
// a column-major m one equal part each (W^T is read a block of columns at a time: the short blocks at the end of a
// claim would read a few cache lines of each of its rows, far apart).
template <typename T, typename Fn>
void split_rows(const Team& team, const Mat<T>& m, int64_t rows, Fn&& fn) {
  if (m.row_major) return team.claim(rows, 16, fn);
  const auto [b, e] = team.share(rows, 16);
  if (b < e) fn(b, e);
}

// One block for this thread of the team: the elementwise work, the WKV state and the mat-vecs read for them (LoRA,
// W_o's input columns where it is column-major) split by heads; the rows of W_r, W_k, W_v, W_o and of the
// feed-forward by `split_rows`; four or five barriers.
template <typename T>
void block(const std::vector<at::Tensor>& p, int64_t layer, int64_t H, const Team& team, const float* S, float* S2,
           const Shift& rows, Shared& parts, Own& z) {
  const int64_t C = p[LN1_W].numel(), N = C / H, F = p[FFN_W_K].size(0), D = parts.D;
  auto v_ = [&](P i) { return ptr<T>(p[i]); };
  const auto [c0, c1] = team.share(C, N);
  layer_norm<T>(z.x, v_(LN1_W), v_(LN1_B), C, 1e-5f, z.h);
  store(z.h, rows.att_out, c0, c1);
  load(rows.att_prev, C, z.dx);
  const T *mr = v_(X_R), *mw = v_(X_W), *mk = v_(X_K), *mv = v_(X_V), *ma = v_(X_A), *mg = v_(X_G);
  for (int64_t i = 0; i < C; ++i) {
    const float h = z.h[i], d = z.dx[i] - h;
    z.xr[i] = h + d * f32(mr[i]), z.xw[i] = h + d * f32(mw[i]), z.xk[i] = h + d * f32(mk[i]);
    z.xv[i] = h + d * f32(mv[i]), z.xa[i] = h + d * f32(ma[i]), z.xg[i] = h + d * f32(mg[i]);
  }
  // the LoRA down-projections over this thread's input rows, summed over the threads
  float* part = parts.lora + team.me * 4 * D;
  cols_times(lora<T>(p[W1]), z.xw, part, c0, c1);
  cols_times(lora<T>(p[A1]), z.xa, part + D, c0, c1);
  cols_times(lora<T>(p[G1]), z.xg, part + 2 * D, c0, c1);
  if (layer > 0) cols_times(lora<T>(p[V1]), z.xv, part + 3 * D, c0, c1);
  // r, k, v: rows 0 .. 3C of [W_r; W_k; W_v]
  const Mat<T> rkv[3] = {mat<T>(p[W_R]), mat<T>(p[W_K]), mat<T>(p[W_V])};
  const float* in[3] = {z.xr, z.xk, z.xv};
  float* out[3] = {z.r, z.k, z.v};
  split_rows(team, rkv[0], 3 * C, [&](int64_t b, int64_t e) {
    for (int m = 0; m < 3; ++m)
      rows_times(rkv[m], in[m], out[m], std::max(b - m * C, int64_t{0}), std::min(e - m * C, C));
  });
  team.sync();
  gather(team, parts.lora, 4 * D, 4 * D, z.t, false);
  for (int64_t i = 0; i < p[W1].size(1); ++i) z.t[i] = std::tanh(z.t[i]);
  apply(Elementwise::kSigmoid, z.t + 2 * D, z.t + 2 * D, p[G1].size(1));
  lora_up<T>(p, layer, c0, c1, N, z.t, D, z);
  wkv_step(S, S2, z, c0 / N, c1 / N, N);
  // group norm per head, the bonus (r . (k * r_k)) v per head, the gate
  const T *lw = v_(LNX_W), *lb = v_(LNX_B), *r_k = v_(R_K);
  for (int64_t o = c0; o < c1; o += N) {
    float mean = 0, var = 0, bonus = 0;
    for (int64_t i = o; i < o + N; ++i) mean += z.y[i];
    mean /= N;
    for (int64_t i = o; i < o + N; ++i) var += (z.y[i] - mean) * (z.y[i] - mean);
    const float rstd = 1.0f / std::sqrt(var / N + 64e-5f);
    for (int64_t i = o; i < o + N; ++i) bonus += z.r[i] * z.k[i] * f32(r_k[i]);
    for (int64_t i = o; i < o + N; ++i)
      parts.u[i] = ((z.y[i] - mean) * rstd * f32(lw[i]) + f32(lb[i]) + bonus * z.v[i]) * z.g[i];
  }
  // x += W_o u: row-major, rows taken in turn once u is whole; column-major, W^T's rows for this thread's heads (its
  // own part of u, contiguous) summed over the threads (half rows of a row-major W_o read slower)
  const Mat<T> wo = mat<T>(p[W_O]);
  if (wo.row_major) {
    team.sync();
    split_rows(team, wo, C, [&](int64_t b, int64_t e) { rows_times(wo, parts.u, parts.out, b, e); });
    team.sync();
    for (int64_t i = 0; i < C; ++i) z.x[i] += parts.out[i];
  } else {
    cols_times(wo, parts.u, parts.att + team.me * C, c0, c1);
    team.sync();
    gather(team, parts.att, C, C, z.x, true);
  }
  // channel mix: x += W_v relu(W_k xk)^2, this thread's hidden units
  layer_norm<T>(z.x, v_(LN2_W), v_(LN2_B), C, 1e-5f, z.h);
  store(z.h, rows.ffn_out, c0, c1);
  load(rows.ffn_prev, C, z.dx);
  const T* mix = v_(FFN_X_K);
  for (int64_t i = 0; i < C; ++i) z.xk[i] = z.h[i] + (z.dx[i] - z.h[i]) * f32(mix[i]);
  float* hid = parts.hid;
  const Mat<T> fk = mat<T>(p[FFN_W_K]), fv = mat<T>(p[FFN_W_V]);
  split_rows(team, fk, F, [&](int64_t b, int64_t e) {
    rows_times(fk, z.xk, hid, b, e);
    for (int64_t i = b; i < e; ++i) hid[i] = hid[i] > 0 ? hid[i] * hid[i] : 0.0f;
  });
  team.sync();
  split_rows(team, fv, C, [&](int64_t b, int64_t e) { rows_times(fv, hid, parts.out, b, e); });
  team.sync();
  for (int64_t i = 0; i < C; ++i) z.x[i] += parts.out[i];
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

// What token_step adds around the blocks: ln0 before them, ln_out and the head after them (else absent).
struct Ends {
  const std::vector<at::Tensor>* tensors = nullptr;  // ln0 weight and bias, ln_out weight and bias, head [V, C]
  float* logits = nullptr;                           // (V) fp32
  at::BFloat16* logits16 = nullptr;                  // (V): the logits rounded, for bf16 weights (else absent)
  int64_t* greedy = nullptr;                         // the argmax of fp32 logits (else absent)
};

// v[0, n) rounded to bf16 and back where the Python path holds it in a bf16 tensor (ln0 and ln_out outputs, the
// stream).
void round_like(float* v, int64_t n, bool bf16) {
  if (bf16)
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(at::BFloat16(v[i]));
}

// One call's inputs and outputs (read by every thread of the team; each writes only its own parts).
struct Job {
  int64_t T, L, H, C;
  const std::vector<std::vector<at::Tensor>>& layers;
  at::Tensor xs, att_prev, ffn_prev, wkv;  // x (T, C) contiguous; the state before the first token
  at::Tensor att[2], ffn[2], next[2];      // token t writes copy t % 2 and reads the other (or the state before)
  Ends ends;
  float* x_out;  // (C): x after the last token's blocks
};

// This thread's share of a whole call: T tokens through every block (after ln0 when the job has ends, then ln_out
// and its rows of the head).
template <typename T>
void run_job(const Team& team, const Job& job, Shared& parts, Own& z) {
  const int64_t C = job.C, H = job.H, NN = C / H * C;  // NN: one layer's wkv state (H N N floats)
  const bool bf16 = std::is_same_v<T, uint16_t>;
  for (int64_t t = 0; t < job.T; ++t) {
    const int out = t % 2;
    const at::Tensor &att_c = t ? job.att[1 - out] : job.att_prev, &ffn_c = t ? job.ffn[1 - out] : job.ffn_prev;
    const float* S0 = t ? job.next[1 - out].data_ptr<float>() : job.wkv.data_ptr<float>();
    float* S1 = job.next[out].data_ptr<float>();
    load(row(job.xs, t, C), C, z.x);
    if (job.ends.tensors) {
      const auto& e = *job.ends.tensors;
      layer_norm<T>(z.x, ptr<T>(e[0]), ptr<T>(e[1]), C, 1e-5f, z.h);
      round_like(z.h, C, bf16);
      std::copy(z.h, z.h + C, z.x);
    }
    for (int64_t l = 0; l < job.L; ++l) {
      const Shift rows{row(att_c, l, C), row(ffn_c, l, C), row(job.att[out], l, C), row(job.ffn[out], l, C)};
      block<T>(job.layers[l], l, H, team, S0 + l * NN, S1 + l * NN, rows, parts, z);
    }
  }
  if (team.me == 0) std::copy(z.x, z.x + C, job.x_out);
  if (!job.ends.tensors) return;
  const auto& e = *job.ends.tensors;
  round_like(z.x, C, bf16);
  layer_norm<T>(z.x, ptr<T>(e[2]), ptr<T>(e[3]), C, 1e-5f, z.h);
  round_like(z.h, C, bf16);
  const Mat<T> head = mat<T>(e[4]);
  float* logits = job.ends.logits;
  at::BFloat16* logits16 = job.ends.logits16;
  Greedy best;
  split_rows(team, head, head.out, [&](int64_t b, int64_t e) {
    rows_times(head, z.h, logits, b, e);
    if (logits16) std::copy(logits + b, logits + e, logits16 + b);
    if (job.ends.greedy) best.add(logits, b, e);  // while the block is in cache
  });
  parts.greedy[team.me] = best;
}

// The team's size: `threads` when positive, else torch's thread count for a model whose layer is worth splitting
// (a small one's is less work than a barrier can cost on a busy machine), one inside another parallel region.
int team_size(int64_t threads, int64_t C, int64_t F) {
  if (threads > 0) return static_cast<int>(threads);
  if (at::in_parallel_region()) return 1;
  return C * F >= (1 << 18) ? at::get_num_threads() : 1;
}

// x (T, C) after ln0 (or, with ends, the raw embeddings before it), T >= 1; att_prev, ffn_prev (L, 1, C); wkv
// (L, 1, H, N, N) fp32; params: N_PARAMS tensors per layer; threads: the team's size (0: `team_size`'s choice).
// The T tokens go through every block one after another in one parallel region (the parameters checked and the
// work buffers made once); returns (x (1, C) fp32 of the last token, att (L, 1, C), wkv (L, 1, H, N, N),
// ffn (L, 1, C)) after it, or nothing when a parameter is not `readable`; the inputs are not modified.
std::vector<at::Tensor> steps(const at::Tensor& x_in, int64_t T, const at::Tensor& att_prev, const at::Tensor& wkv,
                              const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params,
                              int64_t threads, Ends ends = {}) {
  const int64_t L = wkv.size(0), C = x_in.size(-1), N = C / H;
  TORCH_CHECK(static_cast<int64_t>(params.size()) == L * N_PARAMS, "decode7: expected ", L * N_PARAMS,
              " parameters, got ", params.size());
  TORCH_CHECK(T >= 1 && x_in.numel() == T * C && wkv.scalar_type() == at::kFloat && wkv.is_contiguous() &&
                  wkv.numel() == L * H * N * N && att_prev.numel() == L * C && ffn_prev.numel() == L * C,
              "decode7: batch 1 and a contiguous fp32 wkv state");
  if (!readable(params, L, C, H)) return {};
  const bool bf16 = params[LN1_W].scalar_type() == at::kBFloat16;
  const int64_t F = params[FFN_W_K].size(0);
  int64_t D = 0;
  for (int64_t l = 0; l < L; ++l)
    for (P i : {W1, A1, V1, G1})
      if (params[l * N_PARAMS + i].dim() == 2) D = std::max(D, params[l * N_PARAMS + i].size(1));
  std::vector<std::vector<at::Tensor>> layers;
  for (int64_t l = 0; l < L; ++l)
    layers.emplace_back(params.begin() + l * N_PARAMS, params.begin() + (l + 1) * N_PARAMS);
  auto x_out = at::empty({1, C}, x_in.options().dtype(at::kFloat));
  Job job{T, L, H, C, layers, x_in.contiguous(), att_prev.contiguous(), ffn_prev.contiguous(), wkv, {}, {}, {},
          ends, x_out.data_ptr<float>()};
  for (int c = 0; c < std::min<int64_t>(T, 2); ++c)  // contiguous: `row` addresses them
    job.att[c] = at::empty(att_prev.sizes(), att_prev.options()),
    job.ffn[c] = at::empty(ffn_prev.sizes(), ffn_prev.options()), job.next[c] = recycled_like(wkv);
  const int n = team_size(threads, C, F);
  Shared parts(n, C, D, F);
  std::vector<Own> own;
  for (int i = 0; i < n; ++i) own.emplace_back(C, D, parts);
  run_team(n, [&](const Team& team) {
    if (bf16)
      run_job<uint16_t>(team, job, parts, own[team.me]);
    else
      run_job<float>(team, job, parts, own[team.me]);
  });
  if (ends.greedy) {
    Greedy pick;
    for (const Greedy& g : parts.greedy) pick.merge(g);
    *ends.greedy = pick.index;
  }
  const int last = (T - 1) % 2;
  return {x_out, job.att[last], job.next[last], job.ffn[last]};
}

// x (1, C) after ln0: one token (`steps` with T = 1).
std::vector<at::Tensor> layers_step(const at::Tensor& x_in, const at::Tensor& att_prev, const at::Tensor& wkv,
                                    const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params,
                                    int64_t threads) {
  return steps(x_in, 1, att_prev, wkv, ffn_prev, H, params, threads);
}

// x (T, C) after ln0: a prompt piece of T tokens in one call (`steps`).
std::vector<at::Tensor> layers_prefill(const at::Tensor& x_in, const at::Tensor& att_prev, const at::Tensor& wkv,
                                       const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params,
                                       int64_t threads) {
  TORCH_CHECK(x_in.dim() == 2, "decode7: layers_prefill takes x (T, C)");
  return steps(x_in, x_in.size(0), att_prev, wkv, ffn_prev, H, params, threads);
}

// One decoded token in one call: x_raw (1, C) the token's embedding row (before ln0) -> (logits (1, V) in the model's
// dtype, att, wkv, ffn): ln0, every block (`steps`), ln_out and the head, with what the Python path rounds to the
// model's dtype rounded the same way; the argmax of fp32 logits, found on the way, is remembered (`step_pick`). ends:
// ln0 weight and bias, ln_out weight and bias, head [V, C] (row- or column-major). Nothing when a parameter is not
// `readable`.
std::vector<at::Tensor> token_step(const at::Tensor& x_raw, const at::Tensor& att_prev, const at::Tensor& wkv,
                                   const at::Tensor& ffn_prev, int64_t H, const std::vector<at::Tensor>& params,
                                   const std::vector<at::Tensor>& ends, int64_t threads) {
  const int64_t C = x_raw.size(-1);
  TORCH_CHECK(ends.size() == 5 && x_raw.numel() == C && !params.empty(), "decode7: token_step takes one row and 5 ends");
  const auto dtype = params[LN1_W].scalar_type();
  const at::Tensor& head = ends[4];
  for (int i = 0; i < 4; ++i)
    if (ends[i].scalar_type() != dtype || !ends[i].device().is_cpu() || ends[i].numel() != C ||
        !ends[i].is_contiguous())
      return {};
  if (head.dim() != 2 || head.scalar_type() != dtype || !head.device().is_cpu() ||
      !stored_as_matrix(head, head.size(0), C) || x_raw.scalar_type() != dtype)
    return {};
  const bool bf16 = dtype == at::kBFloat16;
  // the logits on recycled memory too (a fresh 256 KB buffer per token faults its pages in each time)
  auto logits = bf16 ? at::empty({1, head.size(0)}, x_raw.options().dtype(at::kFloat))
                     : recycled({1, head.size(0)}, x_raw.options().dtype(at::kFloat));
  auto logits16 = bf16 ? at::empty({1, head.size(0)}, x_raw.options()) : logits;
  int64_t greedy = -1;
  const Ends all{&ends, logits.data_ptr<float>(), bf16 ? logits16.data_ptr<at::BFloat16>() : nullptr,
                 bf16 ? nullptr : &greedy};
  auto out = steps(x_raw, 1, att_prev, wkv, ffn_prev, H, params, threads, all);
  if (out.empty()) return {};
  if (greedy >= 0) remember_pick(logits, greedy);
  return {logits16, out[1], out[2], out[3]};
}

#include "plan.h"

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
  // the last argument of the three: the threads (0: torch's count where the model is large enough to split)
  m.def("layers_step", &layers_step, "RWKV-7 one-token step through every block (batch 1, CPU)");
  m.def("layers_prefill", &layers_prefill, "RWKV-7 steps over T tokens through every block in one call (batch 1, CPU)");
  m.def("token_step", &token_step, "RWKV-7 one token: ln0, every block, ln_out and the head in one call (batch 1, CPU)");
  pybind11::class_<Plan>(m, "Plan", "a model's parameters for token_step, taken once (`Plan.step`: one token)")
      .def(pybind11::init<std::vector<at::Tensor>, std::vector<at::Tensor>, int64_t, int64_t>())
      .def("step", &Plan::step, "token_step on the plan's parameters (nothing where token_step declines)");
  m.def("step_pick", &step_pick, "the last token_step's argmax of these logits, or -1 (see argmax.h)");
  m.def("argmax", &argmax, "index of the largest fp32 logit (torch.argmax's ties and NaN rule)");
  m.def("linear", &linear, "x W^T for one row x (CPU, fp32 math)");
  m.attr("n_params") = static_cast<int>(N_PARAMS);
  m.attr("isa") = MMRWKV_ISA;  // the variant this build is (simd.h)
  m.attr("lanes") = kLanes;
}
