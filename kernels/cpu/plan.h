// The plan of the native decode (decode7.cpp): a model's parameters taken once for `token_step`. Included by
// decode7.cpp only (inside its anonymous namespace), after token_step.
#pragma once

// A model's parameters for `token_step`, taken once: the per-token call then converts no Python list of ~400
// tensors (a cost paid per token with the caches cold from streaming the weights). It reads what the tensors hold at
// each call (in-place updates, new data, another dtype) and holds them weakly: it keeps no parameter alive (torch's
// swap-style conversions need to be the only holders), and declines once one is gone. A module or parameter swapped
// for another is for the caller to notice.
class Plan {
  using Weak = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

 public:
  Plan(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& ends, int64_t H, int64_t threads)
      : n_params_(params.size()), H_(H), threads_(threads) {
    for (const auto* list : {&params, &ends})
      for (const auto& t : *list) taken_.emplace_back(t.getIntrusivePtr());
  }

  // token_step's outputs; nothing where it declines, a parameter is gone, or the inputs do not fit (checked here,
  // so that a caller with nothing around the call gets nothing rather than an error: x (1, C) or (C) of the
  // weights' dtype, one sequence's fp32 contiguous wkv state, shift states of the weights' dtype)
  std::vector<at::Tensor> step(const at::Tensor& x_raw, const at::Tensor& att_prev, const at::Tensor& wkv,
                               const at::Tensor& ffn_prev) const {
    if (!fits(x_raw, att_prev, wkv, ffn_prev)) return {};
    std::vector<at::Tensor> params, ends;
    params.reserve(n_params_), ends.reserve(taken_.size() - n_params_);
    for (size_t i = 0; i < taken_.size(); ++i) {
      auto held = taken_[i].lock();
      if (!held) return {};
      (i < n_params_ ? params : ends).emplace_back(std::move(held));
    }
    return token_step(x_raw, att_prev, wkv, ffn_prev, H_, params, ends, threads_);
  }

 private:
  bool fits(const at::Tensor& x, const at::Tensor& att, const at::Tensor& wkv, const at::Tensor& ffn) const {
    const auto cpu = [](const at::Tensor& t) { return t.defined() && t.device().is_cpu(); };
    const auto shift = [&](const at::Tensor& t) {
      return cpu(t) && t.is_contiguous() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
    };
    if (!cpu(x) || x.dim() < 1 || !shift(att) || !shift(ffn) || !cpu(wkv) || wkv.dim() != 5) return false;
    const int64_t C = x.size(-1), L = wkv.size(0);
    return x.numel() == C && wkv.size(1) == 1 && wkv.scalar_type() == at::kFloat && wkv.is_contiguous() &&
           wkv.size(2) == H_ && wkv.size(2) * wkv.size(3) == C && att.numel() == L * C && ffn.numel() == L * C &&
           static_cast<int64_t>(n_params_) == L * N_PARAMS;
  }

  std::vector<Weak> taken_;  // the parameters, then the ends
  size_t n_params_;
  int64_t H_, threads_;
};
