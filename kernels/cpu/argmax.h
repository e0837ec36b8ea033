// The greedy pick of the native decode (decode7.cpp). Included by decode7.cpp only (inside its anonymous namespace).
#pragma once

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
