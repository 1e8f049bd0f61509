// Matrix completion by USVT: known values of the kernel (full observation, rank cap, threshold,
// the 1/q scale and the clip), recovery of a rank-2 matrix with a quarter of its entries
// dropped, the channel and stacked layouts, determinism across thread counts, the errors, and
// CUDA against the CPU reference. Layout: images [N, C, H, W], matrices [M, R, C].
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "defense/usvt.h"
#include "engine/backend/dispatch.h"
#include "engine/ops/ops.h"
#include "tests/support/skip.h"

using namespace cpoison;
using namespace cpoison::defense;

namespace {

Tensor rnd(const Shape& shape, uint64_t seed, DType dtype = DType::f32, double lo = 0.0, double hi = 1.0) {
  Generator g(seed, 11);
  return uniform(shape, lo, hi, g, dtype);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

double frobenius(const std::vector<double>& v) {
  double s = 0;
  for (double e : v) s += e * e;
  return std::sqrt(s);
}

}  // namespace

TEST_CASE("usvt kernel: full observation and full rank reproduce the matrix") {
  Tensor x = rnd({3, 7, 5}, 1, DType::f64);
  Tensor mask = Tensor::ones({3, 7, 5}, DType::f64);
  CHECK(max_abs_diff(usvt_complete(x, mask, 5, 0.0, 1.0), x) < 1e-12);
  Tensor x32 = x.to(DType::f32);
  CHECK(max_abs_diff(usvt_complete(x32, mask.to(DType::f32), 5, 0.0, 1.0), x32) < 1e-6);
}

TEST_CASE("usvt kernel: rank cap, threshold, 1/q scale and clip on a diagonal matrix") {
  // diag(0.9, 0.5, 0.2) has exactly these singular values.
  Tensor x = Tensor::from_vector(std::vector<double>{0.9, 0, 0, 0, 0.5, 0, 0, 0, 0.2}, {1, 3, 3});
  Tensor full = Tensor::ones({1, 3, 3}, DType::f64);
  auto diag = [](const Tensor& t) {
    auto v = t.to_vector<double>();
    return std::vector<double>{v[0], v[4], v[8]};
  };
  auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (std::abs(a[i] - b[i]) > 1e-12) return false;
    return true;
  };
  CHECK(near(diag(usvt_complete(x, full, 1, 0.0, 1.0)), {0.9, 0, 0}));       // top 1
  CHECK(near(diag(usvt_complete(x, full, 3, 0.3, 1.0)), {0.9, 0.5, 0}));     // s >= 0.3
  CHECK(near(diag(usvt_complete(x, full, 3, 0.5, 1.0)), {0.9, 0.5, 0}));     // s = τ is kept
  CHECK(near(diag(usvt_complete(x, full, 2, 0.1, 1.0)), {0.9, 0.5, 0}));     // the cap wins
  CHECK(near(diag(usvt_complete(x, full, 3, 0.0, 0.5)), {1.0, 1.0, 0.4}));   // / q, then clip at 1
  CHECK(max_abs_diff(usvt_complete(x, full, 3, 0.95, 1.0), Tensor::zeros({1, 3, 3}, DType::f64)) == 0);
  // A negative reconstruction clips at 0: -x has the same singular values, negated vectors.
  Tensor neg_out = usvt_complete(mul_scalar(x, -1.0), full, 3, 0.0, 1.0);
  CHECK(max_abs_diff(neg_out, Tensor::zeros({1, 3, 3}, DType::f64)) == 0);
}

TEST_CASE("usvt kernel: a non-symmetric rank-2 matrix is rebuilt exactly from its top two values") {
  // Catches any transposition of U and V (a diagonal matrix would not).
  const int64_t R = 5, C = 7;
  std::vector<double> xv(R * C);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) xv[r * C + c] = 0.05 * (r + 1) * (c % 3 + 1) + 0.02 * (R - r) * (c * c % 5);
  Tensor x = Tensor::from_vector(xv, {1, R, C});
  Tensor full = Tensor::ones({1, R, C}, DType::f64);
  CHECK(max_abs_diff(usvt_complete(x, full, 2, 0.0, 1.0), x) < 1e-12);
  CHECK(max_abs_diff(usvt_complete(x, full, 1, 0.0, 1.0), x) > 1e-3);  // rank 1 is not enough
  CHECK(max_abs_diff(usvt_complete(x.reshape({1, C, R}), full.reshape({1, C, R}), 2, 0.0, 1.0), x.reshape({1, C, R})) >
        1e-3);  // the same numbers read as a 7x5 matrix have rank > 2
}

TEST_CASE("usvt recovers a rank-2 matrix with 25% of its entries dropped") {
  // X = 0.5 * 1 1ᵀ + 0.45 f gᵀ with f, g sinusoids orthogonal to 1: values in [0.05, 0.95],
  // singular values n/2 and 0.45 n/2 (16 and 7.2 at n = 32).
  const double pi = std::acos(-1.0);
  struct Errors {
    double zero_fill = 0, rank2 = 0, rank2_worst = 0, chatterjee = 0;
  };
  auto run = [&](int64_t n) {
    std::vector<double> xv(n * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        xv[i * n + j] = 0.5 + 0.45 * std::cos(2 * pi * i / n + 0.3) * std::sin(2 * pi * j / n + 0.7);
    Tensor x = Tensor::from_vector(xv, {1, 1, n, n});
    auto rel_error = [&](const Tensor& estimate) {
      auto e = estimate.to_vector<double>();
      for (size_t i = 0; i < e.size(); ++i) e[i] -= xv[i];
      return frobenius(e) / frobenius(xv);
    };
    UsvtOptions rank2;
    rank2.keep = 2.0 / (double)n;
    REQUIRE(usvt_max_rank(rank2, n, n) == 2);
    UsvtOptions chatterjee;
    chatterjee.keep = 1.0;
    chatterjee.threshold = UsvtThreshold::chatterjee;
    // Averaged over masks, so that the bound speaks about the method rather than one draw.
    const int draws = 8;
    Errors out;
    for (int s = 0; s < draws; ++s) {
      Generator g(100 + s);
      Tensor observed = draw_pixel_mask(1, n, n, 0.25, g, DType::f64, Device::cpu);
      CHECK(sum(observed).item() / (double)(n * n) == doctest::Approx(0.75).epsilon(0.1));
      out.zero_fill += rel_error(mul(x, unsqueeze(observed, 1))) / draws;
      const double e = rel_error(usvt_images(x, observed, rank2));
      out.rank2 += e / draws;
      out.rank2_worst = std::max(out.rank2_worst, e);
      out.chatterjee += rel_error(usvt_images(x, observed, chatterjee)) / draws;
    }
    return out;
  };
  // One-shot USVT is not exact completion: the masking noise (entry std sigma = 0.3 here)
  // projected on the kept rank-2 subspaces leaves about sigma sqrt(r (m + n)) / ||X||_F of
  // relative error: 0.19 at n = 32 and half that at n = 128 (it falls like 1 / sqrt(n)).
  const Errors e32 = run(32), e128 = run(128);
  INFO("n = 32: zero fill ", e32.zero_fill, ", rank 2 ", e32.rank2, " (worst ", e32.rank2_worst, "), chatterjee ",
       e32.chatterjee, "; n = 128: rank 2 ", e128.rank2, " (worst ", e128.rank2_worst, ")");
  CHECK(e32.zero_fill > 0.45);  // sqrt(p) = 0.5 of the energy is missing
  CHECK(e32.rank2 < 0.22);      // relative Frobenius error, mean over 8 masks
  CHECK(e32.rank2_worst < 0.25);
  CHECK(e128.rank2 < 0.12);
  CHECK(e128.rank2_worst < 0.13);
  // Chatterjee's threshold 2.01 sqrt(32 q) = 9.85 keeps only the first singular value of a
  // 32x32 matrix here (q s2 = 5.4 is under it): better than zero fill, worse than rank 2.
  CHECK(e32.chatterjee < e32.zero_fill);
  CHECK(e32.chatterjee > e32.rank2);
}

TEST_CASE("usvt: option helpers follow the documented formulas") {
  UsvtOptions o;
  CHECK(usvt_max_rank(o, 32, 32) == 25);  // floor(0.8 * 32)
  CHECK(usvt_max_rank(o, 32, 96) == 25);
  o.keep = 0.29;
  CHECK(usvt_max_rank(o, 100, 100) == 29);  // not 28 from 0.29 * 100 = 28.999...
  o.keep = 0.01;
  CHECK(usvt_max_rank(o, 32, 32) == 1);  // at least one
  CHECK(usvt_threshold(o, 32, 32) == 0.0);
  o.threshold = UsvtThreshold::chatterjee;
  CHECK(usvt_threshold(o, 32, 96) == doctest::Approx(2.01 * std::sqrt(96 * 0.75)));
  o.threshold = UsvtThreshold::absolute;
  o.threshold_value = 3.5;
  CHECK(usvt_threshold(o, 32, 32) == 3.5);
}

TEST_CASE("usvt: channel and stacked layouts, shared pixel mask, output in [0, 1]") {
  const int64_t N = 2, C = 3, H = 8, W = 6;
  Tensor x = rnd({N, C, H, W}, 7);
  Generator g(8);
  Tensor observed = draw_pixel_mask(N, H, W, 0.25, g, DType::f32, Device::cpu);
  UsvtOptions opt;
  opt.keep = 0.5;
  for (UsvtMode mode : {UsvtMode::channel, UsvtMode::stacked}) {
    opt.mode = mode;
    Tensor y = usvt_images(x, observed, opt);
    CHECK(y.shape() == x.shape());
    auto v = y.to_vector<double>();
    CHECK(*std::min_element(v.begin(), v.end()) >= 0.0);
    CHECK(*std::max_element(v.begin(), v.end()) <= 1.0);
  }
  // Channel mode = one H x W matrix per (image, channel).
  opt.mode = UsvtMode::channel;
  Tensor y = usvt_images(x, observed, opt);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      Tensor plane = narrow(narrow(x, 0, n, 1), 1, c, 1).reshape({1, H, W});
      Tensor mask = narrow(observed, 0, n, 1);
      Tensor want = usvt_complete(plane, mask, usvt_max_rank(opt, H, W), 0.0, 0.75);
      CHECK(max_abs_diff(narrow(narrow(y, 0, n, 1), 1, c, 1).reshape({1, H, W}), want) < 1e-6);
    }
  // Stacked mode = one H x 3W matrix per image, channel c in columns c*W .. c*W+W-1.
  opt.mode = UsvtMode::stacked;
  Tensor ys = usvt_images(x, observed, opt);
  for (int64_t n = 0; n < N; ++n) {
    auto xv = x.to_vector<double>(), mv = observed.to_vector<double>();
    std::vector<double> wide(H * C * W), wide_mask(H * C * W);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          wide[h * C * W + c * W + w] = xv[((n * C + c) * H + h) * W + w];
          wide_mask[h * C * W + c * W + w] = mv[(n * H + h) * W + w];
        }
    Tensor want = usvt_complete(Tensor::from_vector(wide, {1, H, C * W}, DType::f32),
                                Tensor::from_vector(wide_mask, {1, H, C * W}, DType::f32), usvt_max_rank(opt, H, C * W),
                                0.0, 0.75);
    auto wv = want.to_vector<double>(), got = ys.to_vector<double>();
    double m = 0;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          m = std::max(m, std::abs(got[((n * C + c) * H + h) * W + w] - wv[h * C * W + c * W + w]));
    CHECK(m < 1e-6);
  }
  // keep = 1 rebuilds Y exactly: x * mask / q, so a dropped pixel is 0 in every channel.
  opt.keep = 1.0;
  for (UsvtMode mode : {UsvtMode::channel, UsvtMode::stacked}) {
    opt.mode = mode;
    Tensor want = clamp(div(mul(x, unsqueeze(observed, 1)), Tensor::scalar(0.75)), 0.0, 1.0);
    CHECK(max_abs_diff(usvt_images(x, observed, opt), want) < 1e-5);
  }
}

TEST_CASE("usvt: matrix_completion is reproducible and independent of the thread count") {
  Tensor x = rnd({6, 3, 16, 16}, 9);
  UsvtOptions opt;
  Generator g1(10), g2(10);
  Tensor a = matrix_completion(x, opt, g1);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  Tensor b = matrix_completion(x, opt, g2);
  omp_set_num_threads(threads);
  CHECK(max_abs_diff(a, b) == 0);
  CHECK(g1.offset() == (uint64_t)(6 * 16 * 16));  // one counter per pixel of the mask
  CHECK_FALSE(a.requires_grad());
  // Completion changes the image but stays close to it (a smooth low-rank estimate).
  CHECK(max_abs_diff(a, x) > 0.01);
}

TEST_CASE("usvt: errors name the argument") {
  Tensor x = rnd({2, 3, 4, 4}, 12);
  Tensor observed = Tensor::ones({2, 4, 4});
  UsvtOptions opt;
  opt.p = 1.0;
  CHECK_THROWS_WITH_AS(usvt_images(x, observed, opt), doctest::Contains("p = 1"), Error);
  opt = UsvtOptions{};
  opt.keep = 0;
  CHECK_THROWS_WITH_AS(usvt_images(x, observed, opt), doctest::Contains("keep = 0"), Error);
  opt = UsvtOptions{};
  CHECK_THROWS_WITH_AS(usvt_images(x, Tensor::ones({2, 4, 5}), opt), doctest::Contains("[2, 4, 4]"), Error);
  CHECK_THROWS_WITH_AS(usvt_images(x, Tensor::ones({2, 4, 4}, DType::f64), opt), doctest::Contains("dtype"), Error);
  CHECK_THROWS_WITH_AS(usvt_images(x.reshape({2, 3, 16}), observed, opt), doctest::Contains("[N, C, H, W]"), Error);
  Tensor m = rnd({2, 4, 4}, 13);
  CHECK_THROWS_WITH_AS(usvt_complete(m, Tensor::ones({2, 4, 4}), 0, 0.0, 1.0), doctest::Contains("max_rank = 0"), Error);
  CHECK_THROWS_WITH_AS(usvt_complete(m, Tensor::ones({2, 4, 4}), 5, 0.0, 1.0), doctest::Contains("max_rank = 5"), Error);
  CHECK_THROWS_WITH_AS(usvt_complete(m, Tensor::ones({2, 4, 4}), 2, -1.0, 1.0), doctest::Contains("threshold = -1"), Error);
  CHECK_THROWS_WITH_AS(usvt_complete(m, Tensor::ones({2, 4, 4}), 2, 0.0, 0.0), doctest::Contains("q = 0"), Error);
  CHECK_THROWS_WITH_AS(usvt_complete(m, Tensor::ones({2, 4, 3}), 2, 0.0, 1.0), doctest::Contains("mask"), Error);
  // A non-finite matrix makes LAPACK fail; that is an Error naming the matrix, not a crash.
  Tensor bad = Tensor::from_vector(std::vector<double>{1, NAN, 0, 1}, {1, 2, 2});
  CHECK_THROWS_AS(usvt_complete(bad, Tensor::ones({1, 2, 2}, DType::f64), 1, 0.0, 1.0), Error);
}

TEST_CASE("usvt: CUDA equals the CPU reference") {
  SKIP_UNLESS(cuda_available(), "no usable CUDA GPU (or a build without the CUDA backend)");
  Tensor x = rnd({8, 3, 32, 32}, 14);
  for (UsvtMode mode : {UsvtMode::channel, UsvtMode::stacked})
    for (bool chatterjee : {false, true}) {
      UsvtOptions opt;
      opt.mode = mode;
      if (chatterjee) opt.threshold = UsvtThreshold::chatterjee, opt.keep = 1.0;
      Generator gc(15), gg(15);
      Tensor cpu_out = matrix_completion(x, opt, gc);
      Tensor gpu_out = matrix_completion(x.to(Device::cuda), opt, gg);
      CHECK(gpu_out.device() == Device::cuda);
      // Both decompose in double; f32 in and out, so agreement to f32 rounding.
      CHECK(max_abs_diff(gpu_out.to(Device::cpu), cpu_out) < 1e-4);
    }
}
