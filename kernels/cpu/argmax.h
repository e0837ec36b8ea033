// The greedy pick of the native decode (decode7.cpp): torch's argmax of logits, and the last token step's pick.
// Included by decode7.cpp only (inside its anonymous namespace), after pick.h.
#pragma once

int64_t argmax(const at::Tensor& logits) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.is_contiguous() && logits.device().is_cpu() &&
                  logits.numel() > 0,
              "decode7: argmax takes contiguous fp32 CPU logits");
  float top;
  bool nan;
  return first_max(logits.data_ptr<float>(), logits.numel(), &top, &nan);
}

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
