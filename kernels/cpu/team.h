// The threads of one native decode call (decode7.cpp): one parallel region per call, every matrix split between
// the threads by a fixed rule, and a cheap barrier between dependent stages (about 3 per layer) instead of a parallel
// region (fork + join) per mat-vec. Included by decode7.cpp only (inside its anonymous namespace).
#pragma once

// Spins this many pause instructions (~50 us) before yielding the core: a partner that is late by a few
// microseconds is waited for cheaply, one that the OS descheduled on a busy machine gets the core back.
constexpr int kSpins = 1 << 10;

struct Barrier {
  alignas(64) std::atomic<int> arrived{0};
  alignas(64) std::atomic<unsigned> generation{0};

  void wait(int n) {
    const unsigned g = generation.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
      arrived.store(0, std::memory_order_relaxed);
      generation.store(g + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation.load(std::memory_order_acquire) == g; ++spins) {
#if defined(__x86_64__)
      if (spins < kSpins) {
        _mm_pause();
        continue;
      }
#endif
      std::this_thread::yield();
    }
  }
};

// Thread `me` of `n`: its share of every split, and the barrier.
struct Team {
  int n, me;
  Barrier* barrier;

  void sync() const {
    if (n > 1) barrier->wait(n);
  }

  // [begin, end) of this thread's part of [0, len), cut at multiples of `unit` into n near-equal parts
  std::pair<int64_t, int64_t> share(int64_t len, int64_t unit) const {
    const int64_t units = (len + unit - 1) / unit;
    return {std::min(len, units * me / n * unit), std::min(len, units * (me + 1) / n * unit)};
  }
};

// Runs body(team) on `threads` threads (one OpenMP region; the caller's thread alone when threads == 1). The team is
// the threads OpenMP actually gives, which may be fewer than asked for.
template <typename Body>
void run_team(int threads, Body&& body) {
  Barrier barrier;
  if (threads <= 1) return body(Team{1, 0, &barrier});
#pragma omp parallel num_threads(threads)
  body(Team{omp_get_num_threads(), omp_get_thread_num(), &barrier});
}
