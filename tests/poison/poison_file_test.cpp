// Poison files, poisoned-index choice, the perturbation and the victim's u8 quantisation.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/io/hdf5.h"
#include "engine/ops/ops.h"
#include "poison/apply.h"
#include "tests/support/gradcheck.h"
#include "tests/support/temp_path.h"

using namespace cpoison;
using namespace cpoison::poison;

namespace {
data::Dataset tiny_dataset(int64_t n, int64_t classes) {
  data::Dataset ds;
  std::vector<uint8_t> px(n * 2 * 2 * 1);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 37 % 256);
  ds.images = Tensor::from_vector(px, {n, 2, 2, 1});
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = i % classes;
  ds.labels = Tensor::from_vector(lab, {n});
  ds.classes = classes;
  ds.name = "tiny";
  return ds;
}

Poison sample_poison(int64_t n, const std::vector<float>& values) {
  Poison p;
  p.delta = Tensor::from_vector(values, {n, 1, 2, 2});
  p.indices = Tensor::arange(n);
  p.image_count = n;
  p.classes = 2;
  p.attack = "test";
  p.algorithm = "none";
  return p;
}
}  // namespace

TEST_CASE("quantise_pixel rounds 255 * clamp(x + eps * delta, 0, 1) to nearest, inside the u8 ball") {
  const double eps = 8.0 / 255.0;
  for (int k = 0; k < 256; ++k) CHECK(quantise_pixel((uint8_t)k, eps, 0.0) == k);  // zero delta: unchanged
  CHECK(quantise_pixel(100, eps, 1.0) == 108);
  CHECK(quantise_pixel(100, eps, -1.0) == 92);
  CHECK(quantise_pixel(100, eps, 0.5) == 104);
  CHECK(quantise_pixel(100, eps, 0.49) == 104);  // 100 + 3.92 rounds to 104 (the release's floor: 103)
  CHECK(quantise_pixel(100, eps, 0.43) == 103);  // 100 + 3.37 rounds to 103
  CHECK(quantise_pixel(100, eps, -0.49) == 96);  // 100 - 3.92 = 96.08 rounds to 96
  CHECK(quantise_pixel(250, eps, 1.0) == 255);   // clamped at 1
  CHECK(quantise_pixel(3, eps, -1.0) == 0);      // clamped at 0
  CHECK(quantise_pixel(100, eps, 7.0) == 108);   // delta outside [-1, 1] is clamped first
  CHECK(quantise_pixel(100, eps, std::nan("")) == 100);  // never a NaN turned into a pixel
  // 255 * eps = 8.6: the nearest level is 9 away, the ball's edge 8.
  CHECK(quantise_pixel(100, 8.6 / 255.0, 1.0) == 108);
  CHECK(quantise_pixel(100, 8.6 / 255.0, -1.0) == 92);
}

TEST_CASE("quantised poisons never leave the L-infinity ball, over random deltas at the extremes") {
  // eps * 255 = 8.16 put 2,956 of 3.9M exported pixels 9 levels away under floor(); the bound is
  // floor(255 eps) levels for any delta and any pixel.
  Generator g(7, 1);
  for (double e255 : {8.0, 8.16, 8.5, 8.99, 16.0, 3.3}) {
    const double eps = e255 / 255.0;
    const int radius = (int)std::floor(e255 + 1e-9);
    Tensor d = uniform({4096}, -1.2, 1.2, g, DType::f64);
    auto dv = d.to_vector<double>();
    int worst = 0;
    for (int k = 0; k < 256; ++k)
      for (size_t i = 0; i < dv.size(); i += 17) {
        double delta = (i % 5 == 0) ? (i % 2 ? 1.0 : -1.0) : dv[i];  // the extremes often
        int q = quantise_pixel((uint8_t)k, eps, delta);
        worst = std::max(worst, std::abs(q - k));
      }
    CHECK_MESSAGE(worst <= radius, "255 eps = ", e255, ": a pixel moved ", worst, " levels");
    CHECK(worst == radius);  // and the ball is used to its edge
  }
}

TEST_CASE("apply_poison perturbs only the chosen rows, sample-wise and class-wise") {
  data::Dataset ds = tiny_dataset(4, 2);
  Poison p = sample_poison(4, std::vector<float>(16, 1.0f));
  p.indices = Tensor::from_vector(std::vector<int64_t>{1, 3}, {2});
  data::Dataset out = apply_poison(ds, p);
  auto before = ds.images.to_vector<int64_t>(), after = out.images.to_vector<int64_t>();
  for (int64_t i = 0; i < 16; ++i) {
    int64_t row = i / 4;
    int64_t expect = (row == 1 || row == 3) ? std::min<int64_t>(255, before[i] + 8) : before[i];
    CHECK(after[i] == expect);
  }
  // class-wise: class 0 gets +1, class 1 gets -1 (in eps units)
  Poison c = sample_poison(4, std::vector<float>(16, 0.0f));
  c.kind = NoiseKind::class_wise;
  c.delta = Tensor::from_vector(std::vector<float>{1, 1, 1, 1, -1, -1, -1, -1}, {2, 1, 2, 2});
  data::Dataset oc = apply_poison(ds, c);
  auto ac = oc.images.to_vector<int64_t>();
  for (int64_t i = 0; i < 16; ++i) {
    int64_t label = (i / 4) % 2;
    int64_t expect = label == 0 ? std::min<int64_t>(255, before[i] + 8) : std::max<int64_t>(0, before[i] - 8);
    CHECK(ac[i] == expect);
  }
}

TEST_CASE("apply_poison rejects a poison made for another dataset") {
  data::Dataset ds = tiny_dataset(4, 2);
  Poison p = sample_poison(3, std::vector<float>(12, 0.5f));
  CHECK_THROWS_WITH_AS(apply_poison(ds, p), doctest::Contains("poison was made for 3 images"), Error);
}

TEST_CASE("perturb keeps images in [0, 1] and passes the gradient check w.r.t. delta") {
  Tensor x = testing::rand64({2, 1, 3, 3}, 3, false, 0.2, 0.8);
  Tensor d = testing::rand64({2, 1, 3, 3}, 4, true, -0.9, 0.9);
  CHECK_GRADCHECK([x](auto& v) { return perturb(x, v[0], 0.05); }, {d});
  Tensor big = testing::rand64({2, 1, 3, 3}, 5, false, -5, 5);
  Tensor y = perturb(x, big, 0.5);
  for (double v : y.to_vector<double>()) CHECK((v >= 0 && v <= 1));
}

TEST_CASE("poison files round-trip with their attributes") {
  auto path = cpoison::test::temp_path("cpoison_poison_test.h5").string();
  Poison p = sample_poison(4, {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f, 0.9f, -1.0f, 0.0f, 0.25f, 0.5f, 0.75f, 1.0f, -0.5f});
  p.attack = "cp-s";
  p.algorithm = "simclr";
  p.dual_branch = true;
  p.dataset = "fashion-mnist";
  p.subset = 4;
  p.seed = 42;
  p.rounds_done = 3;
  p.rounds_total = 12;
  p.indices = Tensor::from_vector(std::vector<int64_t>{0, 2, 3}, {3});
  p.ratio = 0.75;
  save_poison(path, p);
  Poison q = load_poison(path);
  CHECK(q.delta.to_vector<float>() == p.delta.to_vector<float>());
  CHECK(q.indices.to_vector<int64_t>() == std::vector<int64_t>{0, 2, 3});
  CHECK(q.attack == "cp-s");
  CHECK(q.algorithm == "simclr");
  CHECK(q.dual_branch);
  CHECK(q.dataset == "fashion-mnist");
  CHECK(q.seed == 42);
  CHECK(q.rounds_done == 3);
  CHECK(q.ratio == doctest::Approx(0.75));
  CHECK(q.eps == doctest::Approx(8.0 / 255.0));
  std::filesystem::remove(path);
  CHECK_THROWS_WITH_AS(load_poison(path), doctest::Contains(path.c_str()), Error);
}

TEST_CASE("noise kinds: parse_noise_kind and noise_kind_name round-trip; a bad name or file attribute lists both") {
  for (NoiseKind k : {NoiseKind::sample_wise, NoiseKind::class_wise}) CHECK(parse_noise_kind(noise_kind_name(k)) == k);
  CHECK(std::string(noise_kind_name(NoiseKind::class_wise)) == "class");
  CHECK_THROWS_WITH_AS(parse_noise_kind("pixel", "--kind"), "--kind: kind must be 'sample' or 'class', got 'pixel'",
                       Error);

  // The file attribute is parsed where the file is read; the error names the file.
  auto path = cpoison::test::temp_path("cpoison_poison_kind_test.h5").string();
  Poison p = sample_poison(1, {0.1f, -0.2f, 0.3f, -0.4f});
  p.kind = NoiseKind::class_wise;
  p.delta = Tensor::from_vector(std::vector<float>{0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f}, {2, 1, 2, 2});
  save_poison(path, p);
  CHECK(load_poison(path).kind == NoiseKind::class_wise);
  {
    io::H5Writer w(path);
    w.write("delta", p.delta);
    w.write("indices", p.indices);
    for (auto& [k, a] : io::Attrs{{"eps", 8.0 / 255.0}, {"kind", std::string("row")}, {"attack", std::string("random")},
                                  {"algorithm", std::string("none")}, {"dual_branch", int64_t(0)},
                                  {"dataset", std::string("tiny")}, {"subset", int64_t(0)}, {"seed", int64_t(0)},
                                  {"rounds_done", int64_t(0)}, {"rounds_total", int64_t(0)}, {"ratio", 1.0},
                                  {"classes", int64_t(2)}, {"image_count", int64_t(1)}})
      w.set_file_attr(k, a);
    w.commit();
  }
  CHECK_THROWS_WITH_AS(load_poison(path), doctest::Contains("kind must be 'sample' or 'class', got 'row'"), Error);
  CHECK_THROWS_WITH_AS(load_poison(path), doctest::Contains(path.c_str()), Error);
  std::filesystem::remove(path);
}

TEST_CASE("poisoned indices: the ratio's count, ascending, seeded") {
  auto a = choose_poisoned_indices(100, 0.2, 7).to_vector<int64_t>();
  CHECK(a.size() == 20);
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(a == choose_poisoned_indices(100, 0.2, 7).to_vector<int64_t>());
  CHECK(a != choose_poisoned_indices(100, 0.2, 8).to_vector<int64_t>());
  CHECK(choose_poisoned_indices(10, 1.0, 1).numel() == 10);
  CHECK_THROWS_WITH_AS(choose_poisoned_indices(10, 1.5, 1), doctest::Contains("ratio 1.5"), Error);
}
