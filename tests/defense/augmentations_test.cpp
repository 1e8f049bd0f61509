// Noise, smoothing and Cutout: the statistics of the added noise, the Gaussian kernel against
// its formula (impulse responses in the interior and at a corner), constant images staying
// constant, exact Cutout holes (clipped at the border), f64 gradient checks, the errors, and
// CUDA against the CPU. Layout: images [N, C, H, W].
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "defense/augmentations.h"
#include "engine/backend/dispatch.h"
#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"
#include "tests/support/skip.h"

using namespace cpoison;
using namespace cpoison::defense;
using cpoison::testing::rand64;

namespace {

double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

int64_t count_zeros(const Tensor& t) {
  int64_t z = 0;
  for (double v : t.to_vector<double>()) z += v == 0.0;
  return z;
}

}  // namespace

TEST_CASE("noise: the added noise has mean 0 and the requested std") {
  Tensor x = Tensor::full({4, 3, 32, 32}, 0.5);
  NoiseOptions opt;
  opt.std = 0.03;
  Generator g(1);
  Tensor y = gaussian_noise(x, opt, g);
  CHECK(g.offset() == (uint64_t)x.numel());
  auto d = sub(y, x).to_vector<double>();
  const double n = (double)d.size();
  double mean = 0, sq = 0;
  for (double v : d) mean += v;
  mean /= n;
  for (double v : d) sq += (v - mean) * (v - mean);
  const double stddev = std::sqrt(sq / (n - 1));
  // 12288 samples: the mean's standard error is 0.03 / 111 = 2.7e-4, the std's about 0.6%.
  CHECK(std::abs(mean) < 1.2e-3);
  CHECK(stddev == doctest::Approx(0.03).epsilon(0.03));
  // No value came near the clip at 0.5 +- 16 sigma, so clipping changed nothing here.
  opt.clip = false;
  Generator g2(1);
  CHECK(max_abs_diff(gaussian_noise(x, opt, g2), y) == 0);
}

TEST_CASE("noise: clipping keeps [0, 1]; std 0 is the identity") {
  Tensor x = Tensor::full({2, 1, 4, 4}, 1.0);
  NoiseOptions opt;
  opt.std = 0.5;
  Generator g(2);
  auto v = gaussian_noise(x, opt, g).to_vector<double>();
  CHECK(*std::max_element(v.begin(), v.end()) <= 1.0);
  CHECK(*std::min_element(v.begin(), v.end()) >= 0.0);
  CHECK(*std::min_element(v.begin(), v.end()) < 1.0);
  opt.std = 0;
  Tensor r = rand64({2, 3, 4, 4}, 3, false, 0.0, 1.0);
  CHECK(max_abs_diff(gaussian_noise(r, opt, g), r) == 0);
}

TEST_CASE("smooth: the kernel follows torchvision's formula") {
  SmoothOptions o;
  CHECK(o.resolved_sigma() == doctest::Approx(0.8));  // 0.3 * ((3 - 1) / 2 - 1) + 0.8
  o.kernel = 5;
  CHECK(o.resolved_sigma() == doctest::Approx(1.1));
  auto g = gaussian_kernel1d(3, 0.8);
  const double side = std::exp(-0.5 / 0.64), total = 1.0 + 2.0 * side;
  REQUIRE(g.size() == 3);
  CHECK(g[0] == doctest::Approx(side / total).epsilon(1e-12));
  CHECK(g[1] == doctest::Approx(1.0 / total).epsilon(1e-12));
  CHECK(g[2] == doctest::Approx(side / total).epsilon(1e-12));
  auto g5 = gaussian_kernel1d(5, 0.5);
  double s = 0;
  for (double v : g5) s += v;
  CHECK(s == doctest::Approx(1.0));
  CHECK(g5[0] == doctest::Approx(std::exp(-8.0) / (1 + 2 * std::exp(-2.0) + 2 * std::exp(-8.0))));
}

TEST_CASE("smooth: an impulse gives the normalised Gaussian kernel; a constant stays constant") {
  SmoothOptions o{5, 1.0};
  auto g = gaussian_kernel1d(5, 1.0);
  std::vector<double> img(9 * 9, 0.0);
  img[4 * 9 + 4] = 1.0;
  Tensor y = gaussian_smooth(Tensor::from_vector(img, {1, 1, 9, 9}), o);
  auto v = y.to_vector<double>();
  double total = 0;
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t j = 0; j < 9; ++j) {
      const int64_t di = i - 4, dj = j - 4;
      const double want = std::abs(di) <= 2 && std::abs(dj) <= 2 ? g[di + 2] * g[dj + 2] : 0.0;
      CHECK(v[i * 9 + j] == doctest::Approx(want).epsilon(1e-12));
      total += v[i * 9 + j];
    }
  CHECK(total == doctest::Approx(1.0));
  // At a corner, reflect padding ("c b | a b c") reads the impulse back only through the centre
  // tap and the first inner neighbour: out[0][0] = g1², out[1][0] = g0 g1, out[1][1] = g0².
  auto g3 = gaussian_kernel1d(3, 0.8);
  std::vector<double> corner(5 * 5, 0.0);
  corner[0] = 1.0;
  auto c = gaussian_smooth(Tensor::from_vector(corner, {1, 1, 5, 5}), SmoothOptions{3, 0.8}).to_vector<double>();
  CHECK(c[0] == doctest::Approx(g3[1] * g3[1]));
  CHECK(c[5] == doctest::Approx(g3[0] * g3[1]));
  CHECK(c[6] == doctest::Approx(g3[0] * g3[0]));
  // A constant image (any kernel, even one wider than the image) stays constant, per channel.
  std::vector<double> two(2 * 3 * 4 * 4);
  for (size_t i = 0; i < two.size(); ++i) two[i] = i < two.size() / 2 ? 0.25 : 0.75;
  Tensor flat = Tensor::from_vector(two, {1, 2, 3 * 4, 4}, DType::f32);
  for (int64_t k : {1, 3, 7, 15}) CHECK(max_abs_diff(gaussian_smooth(flat, SmoothOptions{k, 0.0}), flat) < 1e-6);
}

TEST_CASE("smooth and noise: f64 gradient checks") {
  Tensor x = rand64({2, 2, 4, 5}, 4);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return gaussian_smooth(in[0], SmoothOptions{3, 0.7}); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return gaussian_smooth(in[0], SmoothOptions{5, 0.0}); }, {x});
  NoiseOptions no;
  no.clip = false;
  CHECK_GRADCHECK(
      [no](const std::vector<Tensor>& in) {
        Generator g(5);  // the same noise on every evaluation
        return gaussian_noise(in[0], no, g);
      },
      {x});
  std::vector<CutoutBox> boxes{{1, 0, 3, 2}, {0, 3, 4, 5}};
  CHECK_GRADCHECK([boxes](const std::vector<Tensor>& in) { return apply_cutout(in[0], boxes); }, {x});
}

TEST_CASE("cutout: exactly size x size zeros inside the image, clipped at the border") {
  const int64_t H = 10, W = 10;
  Tensor ones = Tensor::ones({1, 3, H, W});
  CutoutOptions o;
  o.size = 4;
  // A hole centred in the interior: rows 3..6, columns 2..5.
  Tensor y = apply_cutout(ones, {CutoutBox{3, 2, 7, 6}});
  CHECK(count_zeros(y) == 3 * 16);
  CHECK(y.to_vector<double>()[3 * W + 2] == 0.0);
  CHECK(y.to_vector<double>()[2 * W + 2] == 1.0);
  // Random centres: every box is size x size unless it touches the border, where it is clipped.
  Generator g(6);
  const int64_t n = 200;
  auto boxes = draw_cutout_boxes(n, H, W, o, g);
  CHECK(g.offset() == (uint64_t)(2 * n));
  Tensor many = apply_cutout(Tensor::ones({n, 3, H, W}), boxes);
  auto mv = many.to_vector<double>();
  int clipped = 0, full = 0;
  for (int64_t i = 0; i < n; ++i) {
    const CutoutBox& b = boxes[i];
    const int64_t rows = b.bottom - b.top, cols = b.right - b.left;
    int64_t zeros = 0;
    for (int64_t e = 0; e < 3 * H * W; ++e) zeros += mv[i * 3 * H * W + e] == 0.0;
    CHECK(zeros == 3 * rows * cols);
    CHECK((rows == 4 || b.top == 0 || b.bottom == H));
    CHECK((cols == 4 || b.left == 0 || b.right == W));
    CHECK(rows >= 2);  // the centre is inside the image, so at least half the side remains
    CHECK(cols >= 2);
    (rows == 4 && cols == 4) ? ++full : ++clipped;
  }
  CHECK(full > 0);
  CHECK(clipped > 0);
  // Odd sizes cut exactly size rows and columns (centre row cy: rows cy - 2 .. cy + 2 for 5).
  o.size = 5;
  Generator g2(7);
  for (const auto& b : draw_cutout_boxes(50, 32, 32, o, g2))
    if (b.top > 0 && b.bottom < 32 && b.left > 0 && b.right < 32) CHECK((b.bottom - b.top == 5 && b.right - b.left == 5));
  // size 0 cuts nothing.
  o.size = 0;
  Generator g3(8);
  CHECK(count_zeros(cutout(Tensor::ones({3, 1, 5, 5}), o, g3)) == 0);
}

TEST_CASE("defence augmentations: errors name the field and value") {
  Generator g(9);
  Tensor x = Tensor::ones({1, 1, 4, 4});
  NoiseOptions no;
  no.std = -0.1;
  CHECK_THROWS_WITH_AS(gaussian_noise(x, no, g), doctest::Contains("std = -0.1"), Error);
  CHECK_THROWS_WITH_AS(gaussian_smooth(x, SmoothOptions{4, 1.0}), doctest::Contains("k = 4"), Error);
  CHECK_THROWS_WITH_AS(gaussian_smooth(x, SmoothOptions{0, 1.0}), doctest::Contains("k = 0"), Error);
  CHECK_THROWS_WITH_AS(gaussian_smooth(x.reshape({4, 4}), SmoothOptions{}), doctest::Contains("[N, C, H, W]"), Error);
  CutoutOptions co;
  co.size = -1;
  CHECK_THROWS_WITH_AS(cutout(x, co, g), doctest::Contains("size = -1"), Error);
  CHECK_THROWS_WITH_AS(apply_cutout(x, {}), doctest::Contains("0 boxes for 1 images"), Error);
  CHECK_THROWS_WITH_AS(apply_cutout(x, {CutoutBox{0, 0, 5, 2}}), doctest::Contains("not inside"), Error);
}

TEST_CASE("defence augmentations: CUDA equals the CPU") {
  SKIP_UNLESS(cuda_available(), "no usable CUDA GPU (or a build without the CUDA backend)");
  Generator src(10);
  Tensor x = uniform({3, 3, 16, 16}, 0.0, 1.0, src);
  Tensor xg = x.to(Device::cuda);
  NoiseOptions no;
  Generator a(11), b(11);
  CHECK(max_abs_diff(gaussian_noise(xg, no, b).to(Device::cpu), gaussian_noise(x, no, a)) < 1e-6);
  CHECK(max_abs_diff(gaussian_smooth(xg, SmoothOptions{5, 1.2}).to(Device::cpu), gaussian_smooth(x, SmoothOptions{5, 1.2})) <
        1e-5);
  Generator c(12), d(12);
  CHECK(max_abs_diff(cutout(xg, CutoutOptions{}, d).to(Device::cpu), cutout(x, CutoutOptions{}, c)) == 0);
}
