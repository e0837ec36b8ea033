// A standalone test of the native decode's kernels (the ATen-free headers), for any build target: the mat-vecs in
// both layouts and both weight dtypes, the WKV state update, e^x and sigmoid, and the greedy pick, each against a
// plain double-precision loop. Built and run per ISA variant by tests/cpu (a cross-compiled aarch64 build runs
// under qemu-user there). Prints one line per failure and a summary; exit status 1 on any failure.
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "simd.h"
#include "matvec.h"
#include "pick.h"
#include "vmath.h"
#include "wkv.h"

namespace {

int failures = 0;

void check(bool ok, const char* what, int64_t a, int64_t b, double got, double want) {
  if (ok) return;
  ++failures;
  std::printf("FAIL %s (%lld, %lld): got %.9g want %.9g\n", what, static_cast<long long>(a),
              static_cast<long long>(b), got, want);
}

bool close(double got, double want, double scale) { return std::fabs(got - want) <= 1e-5 * scale + 1e-30; }

std::vector<float> randoms(int64_t n, std::mt19937& gen) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

uint16_t bf16(float v) {  // truncation: the test compares with the widened value itself
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return static_cast<uint16_t>(u >> 16);
}

// W [out, in] in both layouts and dtypes: rows_times over [o0, o1) and cols_times over [i0, i1)
template <typename T>
void test_matvec(int64_t out, int64_t in, std::mt19937& gen) {
  auto wf = randoms(out * in, gen), x = randoms(in, gen);
  std::vector<T> row(out * in), col(out * in);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      const float w = wf[o * in + i];
      row[o * in + i] = col[i * out + o] = static_cast<T>(sizeof(T) == 2 ? bf16(w) : w);
    }
  const int64_t o0 = out / 3, o1 = out, i0 = in / 4, i1 = in - 1;
  for (const bool row_major : {true, false}) {
    const Mat<T> m{row_major ? row.data() : col.data(), out, in, row_major};
    std::vector<float> y(out, -1.0f), part(out, -1.0f);
    rows_times(m, x.data(), y.data(), o0, o1);
    cols_times(m, x.data(), part.data(), i0, i1);
    for (int64_t o = 0; o < out; ++o) {
      double want = 0, want_part = 0, scale = 0;
      for (int64_t i = 0; i < in; ++i) {
        const double p = f32(row[o * in + i]) * double(x[i]);
        want += p, scale += std::fabs(p), want_part += i >= i0 && i < i1 ? p : 0.0;
      }
      if (o >= o0) check(close(y[o], want, scale), row_major ? "rows_times row-major" : "rows_times col-major", out, in, y[o], want);
      check(close(part[o], want_part, scale), row_major ? "cols_times row-major" : "cols_times col-major", out, in,
            part[o], want_part);
    }
  }
}

void test_wkv(int64_t H, int64_t N, std::mt19937& gen) {
  const int64_t C = H * N;
  auto S = randoms(C * N, gen), kk = randoms(C, gen), a = randoms(C, gen), k = randoms(C, gen), v = randoms(C, gen),
       r = randoms(C, gen), dec = randoms(C, gen);
  for (auto& d : dec) d = 1.0f / (1.0f + std::exp(-d));
  std::vector<float> next(C * N + 16), y(C);
  float* aligned = next.data() + (16 - reinterpret_cast<uintptr_t>(next.data()) % 64 / 4) % 16;  // streaming path
  wkv_heads(S.data(), aligned, dec.data(), kk.data(), a.data(), k.data(), v.data(), r.data(), y.data(), 0, H, N);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < N; ++i) {
      const int64_t o = h * N, row = (o + i) * N;
      double sa = 0, yi = 0, scale = 0;
      for (int64_t j = 0; j < N; ++j) sa -= double(S[row + j]) * kk[o + j];
      for (int64_t j = 0; j < N; ++j) {
        const double s2 = S[row + j] * double(dec[o + j]) + sa * kk[o + j] * a[o + j] + double(v[o + i]) * k[o + j];
        check(close(aligned[row + j], s2, 10), "wkv state", N, j, aligned[row + j], s2);
        yi += s2 * r[o + j], scale += std::fabs(s2 * r[o + j]);
      }
      check(close(y[o + i], yi, 10 * scale), "wkv y", N, i, y[o + i], yi);
    }
}

void test_elementwise() {
  std::vector<float> x;
  for (float v = -120.0f; v <= 120.0f; v += 0.37f) x.push_back(v);
  x.push_back(std::numeric_limits<float>::infinity());
  x.push_back(-std::numeric_limits<float>::infinity());
  std::vector<float> s(x.size()), d(x.size());
  apply(Elementwise::kSigmoid, x.data(), s.data(), x.size());
  apply(Elementwise::kDecay, x.data(), d.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double sig = 1.0 / (1.0 + std::exp(-double(x[i]))), dec = std::exp(-0.6065306597126334 * sig);
    check(std::fabs(s[i] - sig) <= 2e-7 * sig + 1e-37, "sigmoid", i, 0, s[i], sig);
    check(std::fabs(d[i] - dec) <= 2e-7, "decay", i, 0, d[i], dec);
  }
  float nan = std::numeric_limits<float>::quiet_NaN(), out = 0;
  apply(Elementwise::kSigmoid, &nan, &out, 1);
  check(out != out, "sigmoid(NaN) is NaN", 0, 0, out, nan);
}

void test_pick(std::mt19937& gen) {
  for (const int64_t n : {1, 7, 16, 100, 1000}) {
    auto p = randoms(n, gen);
    float top = 0;
    bool nan;
    int64_t want = 0;
    for (int64_t i = 1; i < n; ++i) want = p[i] > p[want] ? i : want;
    check(first_max(p.data(), n, &top, &nan) == want && !nan, "first_max", n, want, top, p[want]);
    if (n < 3) continue;
    p[n - 1] = p[want];  // a tie later: the first one wins
    check(first_max(p.data(), n, &top, &nan) == want, "first_max tie", n, want, top, p[want]);
    p[n / 2] = p[n - 2] = std::numeric_limits<float>::quiet_NaN();  // the first NaN wins
    check(first_max(p.data(), n, &top, &nan) == n / 2 && nan, "first_max NaN", n, n / 2, top, 0);
    Greedy g;
    g.add(p.data(), n / 2 + 1, n);
    g.add(p.data(), 0, n / 2 + 1);
    check(g.index == n / 2, "Greedy blocks", n, n / 2, g.index, n / 2);
  }
}

}  // namespace

int main() {
  std::mt19937 gen(0);
  for (const auto& [out, in] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {17, 33}, {64, 128}, {130, 48}, {40, 300}}) {
    test_matvec<float>(out, in, gen);
    test_matvec<uint16_t>(out, in, gen);
  }
  for (const int64_t n : {8, 16, 32, 64, 96, 128}) test_matvec<float>(n, 70, gen);  // the LoRA widths (axpys_narrow)
  for (const int64_t N : {4, 12, 16, 64}) test_wkv(3, N, gen);
  test_elementwise();
  test_pick(gen);
  std::printf("selftest %s (%d lanes): %s\n", MMRWKV_ISA, kLanes, failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
