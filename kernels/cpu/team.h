// The threads of one native decode call (decode7.cpp): one parallel region per call, every matrix split between
// the threads by a fixed rule, and a cheap barrier between dependent stages (about 3 per layer) instead of a parallel
// region (fork + join) per mat-vec. Included by decode7.cpp only (inside its anonymous namespace).
#pragma once

// Spins this many pause instructions (~50 us) before yielding the core between checks: a partner that is late by a
// few microseconds is waited for cheaply, one that the OS descheduled on a busy machine gets the core back. (Sleeping
// on a futex instead, so that the core goes idle and the partner may move there, is slower at 2 threads beside a
// busy process: the sleeper then waits for its own core.)
constexpr int kSpins = 1 << 10;

struct Barrier {
  alignas(64) std::atomic<int> arrived{0};
  alignas(64) std::atomic<unsigned> generation{0};
  alignas(64) std::atomic<int64_t> ticket{0};  // rows claimed so far (`Team::claim`), over the whole call

  void wait(int n) {
    const unsigned g = generation.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
      arrived.store(0, std::memory_order_relaxed);
      generation.store(g + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation.load(std::memory_order_acquire) == g; ++spins) {
      if (spins < kSpins) {
#if defined(__x86_64__)
        _mm_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
        continue;
      }
      std::this_thread::yield();
    }
  }
};

// Thread `me` of `n`: its share of every split, and the barrier.
struct Team {
  int n, me;
  Barrier* barrier;
  mutable int64_t claimed = 0;  // rows of every `claim` so far: where the next one starts on the ticket

  void sync() const {
    if (n > 1) barrier->wait(n);
  }

  // [begin, end) of this thread's part of [0, len), cut at multiples of `unit` into n near-equal parts
  std::pair<int64_t, int64_t> share(int64_t len, int64_t unit) const {
    const int64_t units = (len + unit - 1) / unit;
    return {std::min(len, units * me / n * unit), std::min(len, units * (me + 1) / n * unit)};
  }

  // fn(b, e) over blocks of [0, rows) taken in turn by whichever thread is free: the first blocks long (long memory
  // streams), the next ever shorter (a 1/(2n) part of what is left, at least `unit` rows), so that a thread slowed
  // by the OS or by memory is made up for by the others. Blocks depend on their place only, so every row is done
  // whole, once, by the same arithmetic whichever thread takes it. Every thread must make the same calls.
  template <typename Fn>
  void claim(int64_t rows, int64_t unit, Fn&& fn) const {
    if (n == 1) {
      if (rows > 0) fn(int64_t{0}, rows);
      return;
    }
    const int64_t base = claimed, end = claimed + rows;
    claimed = end;
    std::atomic<int64_t>& ticket = barrier->ticket;
    // a thread reaches this claim only once the ticket has passed the previous one: p >= base
    int64_t p = ticket.load(std::memory_order_relaxed);
    while (p < end) {
      const int64_t left = end - p, size = std::max(unit, (left / (2 * n) + unit - 1) / unit * unit);
      const int64_t q = std::min(end, p + size);
      if (ticket.compare_exchange_weak(p, q, std::memory_order_relaxed)) {
        fn(p - base, q - base);
        p = ticket.load(std::memory_order_relaxed);
      }
    }
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
