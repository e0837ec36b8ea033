// Torch binding of the WKV kernels: registers the ops of namespace MMRWKV_NS (one per build, e.g.
// mmrwkv_wkv_n64) for the CUDA dispatch key, or for CPU when built with the emulator (-DMMRWKV_EMU).
// Python (kernels/cuda.py) validates and casts the inputs and wraps these ops in autograd Functions; the
// checks here only guard the memory the kernels touch.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <vector>

#include "wkv_api.h"

#ifdef MMRWKV_EMU
#define MMRWKV_KEY CPU
static void* current_stream() { return nullptr; }
#define MMRWKV_DEVICE_GUARD(x)
#else
// c10's stream and guard headers need only the CUDA runtime headers (not cuBLAS/cuSPARSE)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define MMRWKV_KEY CUDA
static void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
#define MMRWKV_DEVICE_GUARD(x) const c10::cuda::OptionalCUDAGuard device_guard(x.device())
#endif

// indirection so that MMRWKV_NS / MMRWKV_KEY expand before the token pasting inside the torch macros
#define MMRWKV_DEF(ns, m) TORCH_LIBRARY(ns, m)
#define MMRWKV_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

namespace {

constexpr int64_t N = MMRWKV_N;
constexpr int64_t K = MMRWKV_CHUNK;

void check(const at::Tensor& x, const char* name, at::ScalarType dtype, const at::Tensor& like) {
    TORCH_CHECK(x.is_contiguous(), "wkv: ", name, " must be contiguous");
    TORCH_CHECK(x.scalar_type() == dtype, "wkv: ", name, " has dtype ", x.scalar_type(), ", expected ", dtype);
    TORCH_CHECK(x.device() == like.device(), "wkv: ", name, " is on ", x.device(), ", expected ", like.device());
}

void check_heads(const std::vector<std::pair<const char*, const at::Tensor*>>& xs) {
    const at::Tensor& first = *xs.front().second;
    TORCH_CHECK(first.dim() == 4 && first.size(3) == N, "wkv: inputs must be [B, T, H, ", N, "] for this build, got ",
                first.sizes());
    TORCH_CHECK(first.scalar_type() == at::kFloat || first.scalar_type() == at::kBFloat16,
                "wkv: inputs must be float32 or bfloat16, got ", first.scalar_type());
    for (const auto& [name, x] : xs) {
        check(*x, name, first.scalar_type(), first);
        TORCH_CHECK(x->sizes() == first.sizes(), "wkv: ", name, " has shape ", x->sizes(), ", expected ", first.sizes());
    }
}

void check_state(const at::Tensor& s, const char* name, at::IntArrayRef shape, const at::Tensor& like) {
    check(s, name, at::kFloat, like);
    TORCH_CHECK(s.sizes() == shape, "wkv: ", name, " has shape ", s.sizes(), ", expected ", shape);
}

void check_launch(const char* err, const char* op) { TORCH_CHECK(err == nullptr, "wkv: ", op, " launch failed: ", err); }

float* opt_ptr(const at::Tensor& x) { return x.numel() > 0 ? x.data_ptr<float>() : nullptr; }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> wkv7_forward(
    const at::Tensor& r, const at::Tensor& w, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const at::Tensor& b, const at::Tensor& s0, bool save) {
    check_heads({{"r", &r}, {"w", &w}, {"k", &k}, {"v", &v}, {"a", &a}, {"b", &b}});
    MMRWKV_DEVICE_GUARD(r);
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    check_state(s0, "state", {B, H, N, N}, r);
    const auto f32 = r.options().dtype(at::kFloat);
    at::Tensor y = at::empty_like(v), sT = at::empty({B, H, N, N}, f32);
    at::Tensor sa = save ? at::empty({B, T, H, N}, f32) : at::empty({0}, f32);
    at::Tensor ckpt = save ? at::empty({B, H, (T + K - 1) / K + 1, N, N}, f32) : at::empty({0}, f32);
    const Wkv7Fwd p{int(B), int(T), int(H), r.scalar_type() == at::kBFloat16, r.data_ptr(), w.data_ptr(),
                    k.data_ptr(), v.data_ptr(), a.data_ptr(), b.data_ptr(), s0.data_ptr<float>(), y.data_ptr(),
                    sT.data_ptr<float>(), opt_ptr(sa), opt_ptr(ckpt), current_stream()};
    check_launch(mmrwkv_wkv7_forward(p), "wkv7_forward");
    return {y, sT, sa, ckpt};
}

std::vector<at::Tensor> wkv7_backward(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& a, const at::Tensor& b,
                                      const at::Tensor& sa, const at::Tensor& ckpt, const at::Tensor& dy,
                                      const at::Tensor& dsT) {
    check_heads({{"r", &r}, {"w", &w}, {"k", &k}, {"v", &v}, {"a", &a}, {"b", &b}, {"dy", &dy}});
    MMRWKV_DEVICE_GUARD(r);
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    check_state(sa, "sa", {B, T, H, N}, r);
    check_state(ckpt, "checkpoints", {B, H, (T + K - 1) / K + 1, N, N}, r);
    check_state(dsT, "state gradient", {B, H, N, N}, r);
    const auto f32 = r.options().dtype(at::kFloat);
    at::Tensor dr = at::empty_like(r), dw = at::empty_like(r), dk = at::empty_like(r), dv = at::empty_like(r),
               da = at::empty_like(r), db = at::empty_like(r), ds0 = at::empty({B, H, N, N}, f32),
               scratch = at::empty({B, H, K, N, N}, f32);
    const Wkv7Bwd p{int(B), int(T), int(H), r.scalar_type() == at::kBFloat16, r.data_ptr(), w.data_ptr(),
                    k.data_ptr(), v.data_ptr(), a.data_ptr(), b.data_ptr(), dy.data_ptr(), sa.data_ptr<float>(),
                    ckpt.data_ptr<float>(), dsT.data_ptr<float>(), dr.data_ptr(), dw.data_ptr(), dk.data_ptr(),
                    dv.data_ptr(), da.data_ptr(), db.data_ptr(), ds0.data_ptr<float>(), scratch.data_ptr<float>(),
                    current_stream()};
    check_launch(mmrwkv_wkv7_backward(p), "wkv7_backward");
    return {dr, dw, dk, dv, da, db, ds0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wkv6_forward(const at::Tensor& r, const at::Tensor& w,
                                                            const at::Tensor& k, const at::Tensor& v,
                                                            const at::Tensor& u, const at::Tensor& s0, bool save) {
    check_heads({{"r", &r}, {"w", &w}, {"k", &k}, {"v", &v}});
    MMRWKV_DEVICE_GUARD(r);
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    check_state(u, "u", {H, N}, r);
    check_state(s0, "state", {B, H, N, N}, r);
    const auto f32 = r.options().dtype(at::kFloat);
    at::Tensor y = at::empty_like(v), sT = at::empty({B, H, N, N}, f32);
    at::Tensor ckpt = save ? at::empty({B, H, (T + K - 1) / K + 1, N, N}, f32) : at::empty({0}, f32);
    const Wkv6Fwd p{int(B), int(T), int(H), r.scalar_type() == at::kBFloat16, r.data_ptr(), w.data_ptr(),
                    k.data_ptr(), v.data_ptr(), u.data_ptr<float>(), s0.data_ptr<float>(), y.data_ptr(),
                    sT.data_ptr<float>(), opt_ptr(ckpt), current_stream()};
    check_launch(mmrwkv_wkv6_forward(p), "wkv6_forward");
    return {y, sT, ckpt};
}

std::vector<at::Tensor> wkv6_backward(const at::Tensor& r, const at::Tensor& w, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& u, const at::Tensor& ckpt,
                                      const at::Tensor& dy, const at::Tensor& dsT) {
    check_heads({{"r", &r}, {"w", &w}, {"k", &k}, {"v", &v}, {"dy", &dy}});
    MMRWKV_DEVICE_GUARD(r);
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2);
    check_state(u, "u", {H, N}, r);
    check_state(ckpt, "checkpoints", {B, H, (T + K - 1) / K + 1, N, N}, r);
    check_state(dsT, "state gradient", {B, H, N, N}, r);
    const auto f32 = r.options().dtype(at::kFloat);
    at::Tensor dr = at::empty_like(r), dw = at::empty_like(r), dk = at::empty_like(r), dv = at::empty_like(r),
               du = at::empty({B, H, N}, f32), ds0 = at::empty({B, H, N, N}, f32),
               scratch = at::empty({B, H, K, N, N}, f32);
    const Wkv6Bwd p{int(B), int(T), int(H), r.scalar_type() == at::kBFloat16, r.data_ptr(), w.data_ptr(),
                    k.data_ptr(), v.data_ptr(), dy.data_ptr(), u.data_ptr<float>(), ckpt.data_ptr<float>(),
                    dsT.data_ptr<float>(), dr.data_ptr(), dw.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                    du.data_ptr<float>(), ds0.data_ptr<float>(), scratch.data_ptr<float>(), current_stream()};
    check_launch(mmrwkv_wkv6_backward(p), "wkv6_backward");
    return {dr, dw, dk, dv, du.sum(0), ds0};
}

void check_v4(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v) {
    TORCH_CHECK(k.dim() == 3, "wkv4: k must be [B, T, C], got ", k.sizes());
    TORCH_CHECK(k.scalar_type() == at::kFloat || k.scalar_type() == at::kBFloat16,
                "wkv4: k must be float32 or bfloat16, got ", k.scalar_type());
    check(k, "k", k.scalar_type(), k);
    check(v, "v", k.scalar_type(), k);
    TORCH_CHECK(v.sizes() == k.sizes(), "wkv4: v has shape ", v.sizes(), ", expected ", k.sizes());
    check_state(w, "w", {k.size(2)}, k);
    check_state(u, "u", {k.size(2)}, k);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wkv4_forward(const at::Tensor& w, const at::Tensor& u,
                                                            const at::Tensor& k, const at::Tensor& v,
                                                            const at::Tensor& s0, bool save) {
    check_v4(w, u, k, v);
    MMRWKV_DEVICE_GUARD(k);
    const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
    check_state(s0, "state", {B, 3, C}, k);
    const auto f32 = k.options().dtype(at::kFloat);
    at::Tensor y = at::empty_like(v), sT = at::empty({B, 3, C}, f32);
    at::Tensor ckpt = save ? at::empty({B, (T + K - 1) / K, 3, C}, f32) : at::empty({0}, f32);
    const Wkv4Fwd p{int(B), int(T), int(C), k.scalar_type() == at::kBFloat16, w.data_ptr<float>(),
                    u.data_ptr<float>(), k.data_ptr(), v.data_ptr(), s0.data_ptr<float>(), y.data_ptr(),
                    sT.data_ptr<float>(), opt_ptr(ckpt), current_stream()};
    check_launch(mmrwkv_wkv4_forward(p), "wkv4_forward");
    return {y, sT, ckpt};
}

std::vector<at::Tensor> wkv4_backward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& ckpt, const at::Tensor& dy,
                                      const at::Tensor& dsT) {
    check_v4(w, u, k, v);
    MMRWKV_DEVICE_GUARD(k);
    check(dy, "dy", k.scalar_type(), k);
    const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
    check_state(ckpt, "checkpoints", {B, (T + K - 1) / K, 3, C}, k);
    check_state(dsT, "state gradient", {B, 3, C}, k);
    const auto f32 = k.options().dtype(at::kFloat);
    at::Tensor dw = at::empty({B, C}, f32), du = at::empty({B, C}, f32), dk = at::empty_like(k),
               dv = at::empty_like(v), ds0 = at::empty({B, 3, C}, f32);
    const Wkv4Bwd p{int(B), int(T), int(C), k.scalar_type() == at::kBFloat16, w.data_ptr<float>(),
                    u.data_ptr<float>(), k.data_ptr(), v.data_ptr(), dy.data_ptr(), ckpt.data_ptr<float>(),
                    dsT.data_ptr<float>(), dw.data_ptr<float>(), du.data_ptr<float>(), dk.data_ptr(),
                    dv.data_ptr(), ds0.data_ptr<float>(), current_stream()};
    check_launch(mmrwkv_wkv4_backward(p), "wkv4_backward");
    return {dw.sum(0), du.sum(0), dk, dv, ds0};
}

}  // namespace

MMRWKV_DEF(MMRWKV_NS, m) {
    m.def("wkv7_forward(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor s0, bool save)"
          " -> (Tensor, Tensor, Tensor, Tensor)");
    m.def("wkv7_backward(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor sa, Tensor ckpt,"
          " Tensor dy, Tensor dsT) -> Tensor[]");
    m.def("wkv6_forward(Tensor r, Tensor w, Tensor k, Tensor v, Tensor u, Tensor s0, bool save)"
          " -> (Tensor, Tensor, Tensor)");
    m.def("wkv6_backward(Tensor r, Tensor w, Tensor k, Tensor v, Tensor u, Tensor ckpt, Tensor dy, Tensor dsT)"
          " -> Tensor[]");
    m.def("wkv4_forward(Tensor w, Tensor u, Tensor k, Tensor v, Tensor s0, bool save) -> (Tensor, Tensor, Tensor)");
    m.def("wkv4_backward(Tensor w, Tensor u, Tensor k, Tensor v, Tensor ckpt, Tensor dy, Tensor dsT) -> Tensor[]");
}

MMRWKV_IMPL(MMRWKV_NS, MMRWKV_KEY, m) {
    m.impl("wkv7_forward", &wkv7_forward);
    m.impl("wkv7_backward", &wkv7_backward);
    m.impl("wkv6_forward", &wkv6_forward);
    m.impl("wkv6_backward", &wkv6_backward);
    m.impl("wkv4_forward", &wkv4_forward);
    m.impl("wkv4_backward", &wkv4_backward);
}
