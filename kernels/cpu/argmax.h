// The greedy pick of the native decode (decode7.cpp). Included by decode7.cpp only (inside its anonymous namespace).
#pragma once

// The index of the largest of p[0, n): the first one on ties, the first NaN if there is one (as torch.argmax); *top
// gets its value and *nan whether it is NaN. Two vector passes: the maximum (and whether any is NaN), then its first
// position.
int64_t first_max(const float* p, int64_t n, float* top, bool* nan_out) {
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
  *top = best, *nan_out = nan;
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

int64_t argmax(const at::Tensor& logits) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.is_contiguous() && logits.device().is_cpu() &&
                  logits.numel() > 0,
              "decode7: argmax takes contiguous fp32 CPU logits");
  float top;
  bool nan;
  return first_max(logits.data_ptr<float>(), logits.numel(), &top, &nan);
}

// The greedy pick over blocks of logits taken in any order (the head's rows, as each thread computes them, while
// they are in cache): the same index as `argmax` over all of them.
struct Greedy {
  int64_t index = -1;
  float value = 0;
  bool nan = false;

  void merge(int64_t i, float v, bool n) {
    const bool better = index < 0 || (n != nan ? n : n ? i < index : v > value || (v == value && i < index));
    if (better) index = i, value = v, nan = n;
  }
  void add(const float* p, int64_t begin, int64_t end) {  // p: all logits; the block [begin, end)
    if (end <= begin) return;
    float v;
    bool n;
    const int64_t i = begin + first_max(p + begin, end - begin, &v, &n);
    merge(i, v, n);
  }
  void merge(const Greedy& o) {
    if (o.index >= 0) merge(o.index, o.value, o.nan);
  }
};

// The last `token_step`'s pick (any thread's), for `step_pick`: which logits it belongs to (their storage, held
// weakly: it keeps nothing alive and lets recycled memory be recycled), where they start and how many.
struct Pick {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage{c10::intrusive_ptr<c10::StorageImpl>()};
  const void* data = nullptr;
  int64_t numel = 0, index = -1, version = -1;  // version: their version count then (-1: an inference tensor)
};

std::mutex& pick_lock() {
  static std::mutex lock;
  return lock;
}

Pick& last_pick() {
  static auto* pick = new Pick();  // never destroyed: may outlive torch at exit
  return *pick;
}

void remember_pick(const at::Tensor& logits, int64_t index) {
  const std::lock_guard<std::mutex> hold(pick_lock());
  const int64_t version = logits.is_inference() ? -1 : static_cast<int64_t>(logits._version());
  last_pick() = {logits.storage().getWeakStorageImpl(), logits.data_ptr(), logits.numel(), index, version};
}

// The argmax the last token step found while computing `logits` (the tensor it returned, or any view of all of
// it), or -1 for other logits or ones changed in place since (seen where torch counts versions: not for an inference
// tensor, which counts none).
int64_t step_pick(const at::Tensor& logits) {
  const std::lock_guard<std::mutex> hold(pick_lock());
  const Pick& pick = last_pick();
  const auto held = pick.storage.lock();
  if (!held || held.get() != logits.storage().unsafeGetStorageImpl() || logits.data_ptr() != pick.data ||
      logits.numel() != pick.numel || logits.scalar_type() != at::kFloat)
    return -1;
  if (logits.is_inference() != (pick.version < 0)) return -1;
  return pick.version >= 0 && static_cast<int64_t>(logits._version()) != pick.version ? -1 : pick.index;
}
