// Augmentations (NCHW: N images, C channels, H rows, W columns): colour ops' known values and
// identities, f64 gradient checks (single ops and the whole pipeline with fixed parameters),
// parameter sampling distributions and reproducibility, error messages, CUDA against CPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "augment/augment.h"
#include "engine/backend/dispatch.h"
#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"
#include "tests/support/skip.h"

using namespace cpoison;
using namespace cpoison::augment;
using cpoison::testing::rand64;

namespace {
// One RGB pixel as a [1, 3, 1, 1] f64 tensor.
Tensor pixel(double r, double g, double b) { return Tensor::from_vector(std::vector<double>{r, g, b}, {1, 3, 1, 1}); }
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
}
// Inputs away from the clamp kinks and from max/min ties (almost surely).
Tensor mid_images(const Shape& shape, uint64_t seed) { return rand64(shape, seed, true, 0.3, 0.7); }
}  // namespace

TEST_CASE("recipes: parse_recipe and recipe_name round-trip; a bad name's error lists them") {
  for (Recipe r : {Recipe::simclr, Recipe::cpu_small, Recipe::crop_flip, Recipe::none})
    CHECK(parse_recipe(recipe_name(r)) == r);
  CHECK(std::string(recipe_name(Recipe::cpu_small)) == "cpu-small");
  CHECK_THROWS_WITH_AS(parse_recipe("autoaugment"),
                       "augment: unknown augmentation 'autoaugment' (choose simclr, cpu-small, crop-flip or none)",
                       Error);
  // translate-flip is cpoison train's and the experiment settings' (none + flip + a batch hook), not a recipe.
  CHECK_THROWS_AS(parse_recipe("translate-flip"), Error);
}

TEST_CASE("rgb_to_grayscale uses 0.299, 0.587, 0.114") {
  check_close(rgb_to_grayscale(pixel(0.2, 0.4, 0.6)).to_vector<double>(), {0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6});
  check_close(rgb_to_grayscale(pixel(1, 0, 0)).to_vector<double>(), {0.299});
  Tensor one_channel = rand64({2, 1, 2, 2}, 1, false);
  CHECK(rgb_to_grayscale(one_channel).to_vector<double>() == one_channel.to_vector<double>());
  Tensor gray3 = grayscale_where(Tensor::from_vector(std::vector<double>{0.2, 0.4, 0.6, 0.2, 0.4, 0.6}, {2, 3, 1, 1}), {1, 0});
  double y = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6;
  check_close(gray3.to_vector<double>(), {y, y, y, 0.2, 0.4, 0.6});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return rgb_to_grayscale(in[0]); }, {rand64({2, 3, 2, 3}, 2)});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return grayscale_where(in[0], {0, 1}); }, {rand64({2, 3, 2, 3}, 3)});
}

TEST_CASE("brightness, contrast, saturation: known values, factor 1 is the identity, clamping") {
  Tensor x = Tensor::from_vector(std::vector<double>{0.2, 0.4, 0.6, 0.8}, {1, 1, 2, 2});
  check_close(adjust_brightness(x, {1.5}).to_vector<double>(), {0.3, 0.6, 0.9, 1.0});  // 1.2 clamps to 1
  check_close(adjust_contrast(x, {0.5}).to_vector<double>(), {0.35, 0.45, 0.55, 0.65});  // around the mean 0.5
  CHECK(adjust_saturation(x, {0.3}).to_vector<double>() == x.to_vector<double>());     // 1 channel: unchanged
  // RGB: contrast blends with the mean of the gray image; saturation with the gray image.
  Tensor rgb = Tensor::from_vector(std::vector<double>{0.2, 0.6, 0.4, 0.4, 0.6, 0.2}, {1, 3, 1, 2});
  double g0 = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6, g1 = 0.299 * 0.6 + 0.587 * 0.4 + 0.114 * 0.2, m = (g0 + g1) / 2;
  check_close(adjust_contrast(rgb, {0.0}).to_vector<double>(), {m, m, m, m, m, m});
  check_close(adjust_saturation(rgb, {0.0}).to_vector<double>(), {g0, g1, g0, g1, g0, g1});
  check_close(adjust_saturation(rgb, {2.0}).to_vector<double>(),
              {2 * 0.2 - g0, 2 * 0.6 - g1, 2 * 0.4 - g0, 2 * 0.4 - g1, 2 * 0.6 - g0, std::max(0.0, 2 * 0.2 - g1)});
  Tensor r = rand64({2, 3, 3, 3}, 4, false, 0.0, 1.0);
  std::vector<double> rv = r.to_vector<double>();
  CHECK(adjust_brightness(r, {1, 1}).to_vector<double>() == rv);
  CHECK(adjust_contrast(r, {1, 1}).to_vector<double>() == rv);
  CHECK(adjust_saturation(r, {1, 1}).to_vector<double>() == rv);
  CHECK(adjust_hue(r, {0, 0}).to_vector<double>() == rv);
}

TEST_CASE("colour ops: f64 gradient checks with mild per-image factors") {
  Tensor x3 = mid_images({2, 3, 3, 2}, 5), x1 = mid_images({2, 1, 3, 2}, 6);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return adjust_brightness(in[0], {1.2, 0.8}); }, {x3});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return adjust_contrast(in[0], {1.3, 0.7}); }, {x3});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return adjust_contrast(in[0], {1.3, 0.7}); }, {x1});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return adjust_saturation(in[0], {1.3, 0.6}); }, {x3});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return normalize(in[0], kCifar10Mean, kCifar10Std); }, {x3});
}

TEST_CASE("adjust_hue: torchvision's formulas on known pixels") {
  // (0.6, 0.4, 0.2): h = 1/12, s = 2/3, v = 0.6; + 1/4 turn -> h = 1/3 (sector 2, f = 0) -> (p, v, t).
  check_close(adjust_hue(pixel(0.6, 0.4, 0.2), {0.25}).to_vector<double>(), {0.2, 0.6, 0.2});
  check_close(adjust_hue(pixel(1, 0, 0), {1.0 / 3}).to_vector<double>(), {0, 1, 0});
  check_close(adjust_hue(pixel(1, 0, 0), {0.5}).to_vector<double>(), {0, 1, 1});
  check_close(adjust_hue(pixel(1, 0, 0), {-0.5}).to_vector<double>(), {0, 1, 1});
  // (0.2, 0.3, 0.8): h = (4 + gc - rc)/6 with rc = 1, gc = 5/6 -> h = 0.6389; - 0.1 -> 0.5389
  // (sector 3, f = 0.2333): (p, q, v) = (0.2, 0.8 (1 - 0.75 * 0.2333), 0.8).
  double f = 6 * ((4 + 5.0 / 6 - 1) / 6 - 0.1) - 3;
  check_close(adjust_hue(pixel(0.2, 0.3, 0.8), {-0.1}).to_vector<double>(), {0.2, 0.8 * (1 - 0.75 * f), 0.8});
  // Gray pixels keep their value; a tiny shift is the round trip RGB -> HSV -> RGB.
  check_close(adjust_hue(pixel(0.5, 0.5, 0.5), {0.3}).to_vector<double>(), {0.5, 0.5, 0.5});
  Tensor r = rand64({2, 3, 2, 2}, 7, false, 0.0, 1.0);
  check_close(adjust_hue(r, {1e-13, -1e-13}).to_vector<double>(), r.to_vector<double>(), 1e-9);
  Tensor one_channel = rand64({2, 1, 2, 2}, 8, false);
  CHECK(adjust_hue(one_channel, {0.1, 0.1}).to_vector<double>() == one_channel.to_vector<double>());
}

TEST_CASE("adjust_hue: f64 gradient check across the hue sectors") {
  // Shifts that move the pixels into different sectors of the HSV hexagon.
  Tensor x = mid_images({4, 3, 3, 3}, 9);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return adjust_hue(in[0], {0.07, -0.09, 0.3, -0.45}); }, {x});
  // Pixels with a wide spread of channel values, one per max channel (R, B, G).
  Tensor y = Tensor::from_vector(std::vector<double>{0.9, 0.1, 0.35, 0.2, 0.5, 0.8, 0.4, 0.85, 0.15}, {3, 3, 1, 1});
  y.set_requires_grad(true);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return adjust_hue(in[0], {0.05, -0.1, 0.08}); }, {y});
}

TEST_CASE("normalize: per-channel values and errors") {
  Tensor x = Tensor::from_vector(std::vector<double>{0.5, 0.5, 1.0, 1.0}, {1, 2, 1, 2});
  check_close(normalize(x, {0.5, 0.0}, {0.25, 2.0}).to_vector<double>(), {0, 0, 0.5, 0.5});
  CHECK_THROWS_WITH_AS(normalize(x, kCifar10Mean, kCifar10Std), doctest::Contains("needs 2 means"), Error);
  CHECK_THROWS_WITH_AS(normalize(x, {0, 0}, {1, 0}), doctest::Contains("std must be positive"), Error);
}

TEST_CASE("colour ops: bad input is an Error") {
  Tensor x = rand64({2, 3, 2, 2}, 10, false, 0, 1);
  CHECK_THROWS_WITH_AS(adjust_brightness(x, {1.0}), doctest::Contains("one factor per image"), Error);
  CHECK_THROWS_WITH_AS(adjust_contrast(x, {1.0, -0.5}), doctest::Contains("factor 1 is -0.5"), Error);
  CHECK_THROWS_WITH_AS(adjust_hue(x, {0.0, 0.7}), doctest::Contains("hue shift 1"), Error);
  CHECK_THROWS_WITH_AS(grayscale_where(x, {1}), doctest::Contains("one flag per image"), Error);
  CHECK_THROWS_WITH_AS(adjust_saturation(rand64({2, 2, 2, 2}, 11, false), {1, 1}), doctest::Contains("1 or 3 channels"), Error);
}

TEST_CASE("presets hold the spec's parameters") {
  AugmentConfig c = AugmentConfig::simclr_cifar(32);
  CHECK(c.out_h == 32);
  CHECK(c.scale_min == 0.2);
  CHECK(c.ratio_max == doctest::Approx(4.0 / 3));
  CHECK(c.flip_p == 0.5);
  CHECK(c.jitter_p == 0.8);
  CHECK(c.hue_strength == 0.1);
  CHECK(c.grayscale_p == 0.2);
  CHECK(c.mean == kCifar10Mean);
  AugmentConfig s = AugmentConfig::cpu_small();
  CHECK(s.out_h == 28);
  CHECK(s.mean == std::vector<double>{0.2860});
  CHECK(s.std == std::vector<double>{0.3530});
  CHECK((s.crop && s.flip && s.brightness && s.contrast));
  CHECK_FALSE((s.saturation || s.hue || s.grayscale || s.random_jitter_order));
  s.validate();
  AugmentConfig bad = c;
  bad.flip_p = 1.5;
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("flip_p"), Error);
  bad = c;
  bad.scale_min = 0;
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("crop scale"), Error);
  bad = c;
  bad.std = {1, 1};
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("one mean and one std"), Error);
}

TEST_CASE("sample_params: crop areas, log-ratios and flags follow their distributions") {
  const int64_t n = 4000, H = 32, W = 32;
  AugmentConfig cfg = AugmentConfig::simclr_cifar(32);
  Generator gen(123);
  AugmentParams p = sample_params(cfg, n, H, W, gen);
  double area_sum = 0, log_ratio_sum = 0, abs_log_ratio_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    double top = p.boxes[4 * i], left = p.boxes[4 * i + 1], h = p.boxes[4 * i + 2], w = p.boxes[4 * i + 3];
    REQUIRE((top >= 0 && left >= 0 && h >= 1 && w >= 1 && top + h <= H && left + w <= W));
    area_sum += h * w / (H * W);
    log_ratio_sum += std::log(w / h);
    abs_log_ratio_sum += std::fabs(std::log(w / h));
  }
  // Accepted draws follow (s, u = log r) uniform on [0.2, 1] x [-a, a] conditioned on the window
  // fitting: s e^{|u|} <= 1 (rounding aside). Means of that region by a midpoint sum:
  const double a = std::log(4.0 / 3);
  double mass = 0, s_mass = 0, u_mass = 0;
  const int grid = 400;
  for (int i = 0; i < grid; ++i)
    for (int j = 0; j < grid; ++j) {
      double s = 0.2 + 0.8 * (i + 0.5) / grid, u = -a + 2 * a * (j + 0.5) / grid;
      if (s * std::exp(std::fabs(u)) > 1) continue;
      mass += 1, s_mass += s, u_mass += std::fabs(u);
    }
  CHECK(area_sum / n == doctest::Approx(s_mass / mass).epsilon(0.02));
  CHECK(log_ratio_sum / n == doctest::Approx(0).scale(1).epsilon(0.01));
  CHECK(abs_log_ratio_sum / n == doctest::Approx(u_mass / mass).epsilon(0.05));
  auto fraction = [&](const std::vector<uint8_t>& flags) { return std::accumulate(flags.begin(), flags.end(), 0.0) / n; };
  CHECK(fraction(p.flip) == doctest::Approx(0.5).epsilon(0.06));
  CHECK(fraction(p.jitter) == doctest::Approx(0.8).epsilon(0.03));
  CHECK(fraction(p.grayscale) == doctest::Approx(0.2).epsilon(0.12));
  double b_sum = 0, h_sum = 0, jittered = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!p.jitter[i]) {
      CHECK((p.brightness[i] == 1 && p.contrast[i] == 1 && p.saturation[i] == 1 && p.hue[i] == 0));
      continue;
    }
    REQUIRE((p.brightness[i] >= 0.6 && p.brightness[i] <= 1.4 && std::fabs(p.hue[i]) <= 0.1));
    REQUIRE((p.contrast[i] >= 0.6 && p.contrast[i] <= 1.4 && p.saturation[i] >= 0.6 && p.saturation[i] <= 1.4));
    b_sum += p.brightness[i], h_sum += p.hue[i], jittered += 1;
  }
  CHECK(b_sum / jittered == doctest::Approx(1.0).epsilon(0.015));
  CHECK(h_sum / jittered == doctest::Approx(0.0).scale(1).epsilon(0.004));
  std::vector<int> order;
  for (JitterOp op : p.jitter_order) order.push_back((int)op);
  std::sort(order.begin(), order.end());
  CHECK(order == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("sample_params: same seed, same parameters; an impossible crop falls back to the centre") {
  AugmentConfig cfg = AugmentConfig::simclr_cifar(32);
  Generator g1(77), g2(77), g3(78);
  AugmentParams a = sample_params(cfg, 16, 32, 32, g1), b = sample_params(cfg, 16, 32, 32, g2), c = sample_params(cfg, 16, 32, 32, g3);
  CHECK(a.boxes == b.boxes);
  CHECK(a.flip == b.flip);
  CHECK(a.hue == b.hue);
  CHECK(a.grayscale == b.grayscale);
  CHECK(a.jitter_order == b.jitter_order);
  CHECK(a.boxes != c.boxes);
  // A 1x100 strip: every try has h > 1, so torchvision's fallback: h = 1, w = round(4/3) = 1.
  Generator g4(1);
  AugmentParams strip = sample_params(cfg, 1, 1, 100, g4);
  CHECK(strip.boxes == std::vector<double>{0, 49, 1, 1});
  CHECK_THROWS_WITH_AS(sample_params(cfg, 2, 0, 32, g4), doctest::Contains("sample_params"), Error);
}

TEST_CASE("apply: identity parameters, augment::augment() = sample_params() + apply(), output shapes") {
  AugmentConfig cfg = AugmentConfig::simclr_cifar(8);
  cfg.normalize = false;
  Tensor x = rand64({3, 3, 8, 8}, 12, false, 0, 1);
  CHECK(apply(x, AugmentParams::identity(3, 8, 8), cfg).to_vector<double>() == x.to_vector<double>());
  Generator g1(5), g2(5);
  Tensor v1 = augment::augment(x, cfg, g1);
  Tensor v2 = apply(x, sample_params(cfg, 3, 8, 8, g2), cfg);
  CHECK(v1.shape() == Shape{3, 3, 8, 8});
  CHECK(v1.to_vector<double>() == v2.to_vector<double>());
  for (double v : v1.to_vector<double>()) REQUIRE((v >= 0 && v <= 1));
  AugmentConfig small = AugmentConfig::cpu_small();
  Tensor fm = rand64({2, 1, 28, 28}, 13, false, 0, 1);
  Generator g3(9);
  CHECK(augment::augment(fm, small, g3).shape() == Shape{2, 1, 28, 28});
  small.out_h = small.out_w = 16;
  CHECK(augment::augment(fm, small, g3).shape() == Shape{2, 1, 16, 16});
}

TEST_CASE("apply: f64 gradient check of the whole pipeline with fixed parameters") {
  AugmentConfig cfg = AugmentConfig::simclr_cifar(5);
  AugmentParams p = AugmentParams::identity(2, 6, 6);
  p.boxes = {1, 0, 4, 5, 0, 1, 6, 5};
  p.flip = {1, 0};
  p.jitter = {1, 1};
  p.brightness = {1.1, 0.9};
  p.contrast = {0.9, 1.15};
  p.saturation = {1.2, 0.8};
  p.hue = {0.05, -0.04};
  p.jitter_order = {JitterOp::hue, JitterOp::contrast, JitterOp::brightness, JitterOp::saturation};
  p.grayscale = {0, 1};
  Tensor x = mid_images({2, 3, 6, 6}, 14);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return apply(in[0], p, cfg); }, {x});
  // The 1-channel CPU pipeline (brightness then contrast).
  AugmentConfig small = AugmentConfig::cpu_small();
  small.out_h = small.out_w = 4;
  AugmentParams q = AugmentParams::identity(2, 5, 5);
  q.boxes = {0, 0, 5, 5, 1, 2, 3, 3};
  q.flip = {0, 1};
  q.jitter = {1, 0};
  q.brightness = {1.2, 1};
  q.contrast = {0.8, 1};
  Tensor x1 = mid_images({2, 1, 5, 5}, 15);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return apply(in[0], q, small); }, {x1});
}

TEST_CASE("apply: the same parameters on two batches, and errors for mismatched input") {
  AugmentConfig cfg = AugmentConfig::simclr_cifar(6);
  Generator gen(3);
  AugmentParams p = sample_params(cfg, 2, 8, 8, gen);
  Tensor clean = rand64({2, 3, 8, 8}, 16, false, 0, 1);
  // A constant offset that clamps nowhere shifts the cropped, flipped view by the same amount
  // before jitter; so with jitter and normalize off the two views differ by exactly that offset.
  AugmentConfig geometric = cfg;
  geometric.jitter = geometric.grayscale = geometric.normalize = false;
  Tensor shifted = add_scalar(mul_scalar(clean, 0.5), 0.25);
  Tensor a = apply(mul_scalar(clean, 0.5), p, geometric), b = apply(shifted, p, geometric);
  std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  for (size_t i = 0; i < av.size(); ++i) REQUIRE(bv[i] - av[i] == doctest::Approx(0.25).epsilon(1e-12));
  CHECK_THROWS_WITH_AS(apply(rand64({3, 3, 8, 8}, 17, false), p, cfg), doctest::Contains("params were drawn for 2 images"), Error);
  CHECK_THROWS_WITH_AS(apply(rand64({2, 1, 8, 8}, 18, false), p, cfg), doctest::Contains("3 means for 1-channel"), Error);
  AugmentParams broken = p;
  broken.hue.pop_back();
  CHECK_THROWS_WITH_AS(apply(clean, broken, cfg), doctest::Contains("params vectors"), Error);
}

TEST_CASE("colour kernels: CUDA matches the CPU reference") {
  SKIP_UNLESS(cuda_available() && supports("adjust_hue", Device::cuda) && supports("rgb_to_grayscale", Device::cuda),
              "no CUDA adjust_hue/rgb_to_grayscale");
  Generator gen(8);
  Tensor x = uniform({4, 3, 7, 5}, 0, 1, gen, DType::f32);
  Tensor g = uniform({4, 3, 7, 5}, -1, 1, gen, DType::f32);
  auto run = [&](Device d) {
    Tensor xd = x.to(d).detach().set_requires_grad(true);
    Tensor y = add(adjust_hue(xd, {0.08, -0.06, 0.3, 0.0}), rgb_to_grayscale(xd));
    Tensor gx = autograd::grad(sum(mul(y, g.to(d))), {xd})[0];
    return std::make_pair(y.to_vector<double>(), gx.to_vector<double>());
  };
  auto [y_cpu, gx_cpu] = run(Device::cpu);
  auto [y_gpu, gx_gpu] = run(Device::cuda);
  for (size_t i = 0; i < y_cpu.size(); ++i) CHECK(y_gpu[i] == doctest::Approx(y_cpu[i]).epsilon(1e-4).scale(1.0));
  for (size_t i = 0; i < gx_cpu.size(); ++i) CHECK(gx_gpu[i] == doctest::Approx(gx_cpu[i]).epsilon(1e-3).scale(1.0));
}

TEST_CASE("with_strength: AUE / AAP's augmentation strength rule") {
  AugmentConfig base = AugmentConfig::simclr_cifar(32);
  AugmentConfig s6 = with_strength(base, 0.6);  // AUE's CIFAR-10 strength
  CHECK(s6.scale_min == doctest::Approx(0.46));
  CHECK(s6.brightness_strength == doctest::Approx(0.24));
  CHECK(s6.contrast_strength == doctest::Approx(0.24));
  CHECK(s6.saturation_strength == doctest::Approx(0.24));
  CHECK(s6.hue_strength == doctest::Approx(0.06));
  CHECK(s6.jitter_p == doctest::Approx(0.48));
  CHECK(s6.grayscale_p == doctest::Approx(0.12));
  CHECK(s6.flip_p == base.flip_p);
  AugmentConfig s1 = with_strength(base, 1.0);
  CHECK(s1.scale_min == doctest::Approx(0.1));
  CHECK(s1.jitter_p == doctest::Approx(0.8));
  AugmentConfig s2 = with_strength(base, 2.0);
  CHECK(s2.scale_min == doctest::Approx(0.05));
  CHECK(s2.jitter_p == doctest::Approx(0.99));
  // The ops a pipeline leaves out stay out (the cpu-small list has no saturation, hue or gray).
  AugmentConfig small = with_strength(AugmentConfig::cpu_small(), 0.4);
  CHECK_FALSE(small.saturation);
  CHECK_FALSE(small.grayscale);
  CHECK(small.out_h == 28);
  CHECK(small.scale_min == doctest::Approx(0.64));
  CHECK_THROWS_WITH_AS(with_strength(base, 2.5), doctest::Contains("strength must be in [0, 2]"), Error);
}

TEST_CASE("random_translate shifts whole images by at most max_shift, filling zeros") {
  // One 1x4x4 image with distinct values; every output must be one of the 25 shifts of it.
  std::vector<float> v(16);
  for (int i = 0; i < 16; ++i) v[i] = (float)(i + 1);
  Tensor x = Tensor::from_vector(v, {1, 1, 4, 4});
  Generator gen(3, 7);
  for (int trial = 0; trial < 6; ++trial) {
    auto y = random_translate(x, 2, gen).to_vector<float>();
    REQUIRE(y.size() == 16);
    bool matched = false;
    for (int dy = -2; dy <= 2 && !matched; ++dy)
      for (int dx = -2; dx <= 2 && !matched; ++dx) {
        bool same = true;
        for (int r = 0; r < 4; ++r)
          for (int c = 0; c < 4; ++c) {
            int sr = r + dy, sc = c + dx;
            float want = (sr >= 0 && sr < 4 && sc >= 0 && sc < 4) ? v[sr * 4 + sc] : 0.f;
            same = same && std::fabs(y[r * 4 + c] - want) < 1e-6f;
          }
        matched = same;
      }
    CHECK(matched);
  }
  Generator g0(0, 0);
  CHECK(random_translate(x, 0, g0).to_vector<float>() == v);
  CHECK_THROWS_WITH_AS(random_translate(Tensor::ones({4, 4}), 1, g0), doctest::Contains("[B,C,H,W]"), Error);
}
