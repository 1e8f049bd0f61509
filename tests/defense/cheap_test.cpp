// The cheap defences (defense/cheap.h): JPEG compression, grayscale, bit-depth reduction as
// batch transforms and specifications, and UEraser-style training as a loss hook (a short
// supervised and SimCLR run, and the per-image maximum). Layout: batches [N, C, H, W].
#include <doctest/doctest.h>

#include <cmath>

#include "defense/defense.h"
#include "engine/autograd.h"
#include "engine/ops/ops.h"

using namespace cpoison;
using namespace cpoison::defense;

namespace {

Tensor ramp_batch(int64_t n, int64_t c, int64_t h, int64_t w) {
  std::vector<float> v(n * c * h * w);
  for (size_t i = 0; i < v.size(); ++i) v[i] = (float)((i * 29 + 7) % 256) / 255.0f;
  return Tensor::from_vector(v, {n, c, h, w});
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

data::Dataset tiny_dataset() {
  const int64_t n = 16;
  std::vector<uint8_t> px(n * 8 * 8);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)((i * 53 + 3) % 256);
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % 4;
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {n, 8, 8, 1});
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 4;
  ds.name = "tiny";
  return ds;
}

}  // namespace

TEST_CASE("cheap defences: specifications parse, print canonically and reject bad values by key") {
  CHECK(parse_defense("jpeg").spec() == "jpeg:q=75");
  CHECK(parse_defense("jpeg:quality=10").spec() == "jpeg:q=10");
  CHECK(parse_defense("grayscale").spec() == "grayscale");
  CHECK(parse_defense("bits:b=3").spec() == "bits:b=3");
  CHECK(parse_defense("ueraser").spec() == "ueraser:k=5,strength=1,noise=0.03137254901960784");
  for (const char* s : {"jpeg:q=10", "bits:b=2", "grayscale", "ueraser:k=3,strength=0.5,noise=0"})
    CHECK(parse_defense(parse_defense(s).spec()).spec() == parse_defense(s).spec());
  CHECK(parse_defense("ueraser").is_loss_hook());
  CHECK_FALSE(parse_defense("jpeg").is_loss_hook());
  CHECK_THROWS_WITH_AS(parse_defense("jpeg:q=0"), doctest::Contains("the JPEG quality must be in [1, 100]"), Error);
  CHECK_THROWS_WITH_AS(parse_defense("bits:b=9"), doctest::Contains("the bit depth must be in [1, 8]"), Error);
  CHECK_THROWS_WITH_AS(parse_defense("ueraser:k=0"), doctest::Contains("k = 0"), Error);
  CHECK_THROWS_WITH_AS(parse_defense("grayscale:x=1"), doctest::Contains("unknown key 'x'"), Error);
}

TEST_CASE("jpeg: quality 100 is close to the identity, quality 5 is not; grey and colour both code") {
  Generator gen(1, 1);
  for (int64_t c : {1, 3}) {
    CAPTURE(c);
    Tensor x = ramp_batch(2, c, 16, 16);
    const double fine = max_abs_diff(apply_defense(parse_defense("jpeg:q=100"), x, gen), x);
    const double coarse = max_abs_diff(apply_defense(parse_defense("jpeg:q=5"), x, gen), x);
    CHECK(fine < coarse);
    CHECK(coarse > 0.1);
    Tensor y = apply_defense(parse_defense("jpeg:q=50"), x, gen);
    CHECK(y.shape() == x.shape());
    for (double v : y.to_vector<double>()) CHECK((v >= 0 && v <= 1));
  }
}

TEST_CASE("bits and grayscale: exact values; grayscale refuses grey data") {
  Generator gen(1, 1);
  Tensor x = Tensor::from_vector(std::vector<float>{0.0f, 0.2f, 0.5f, 0.9f}, {1, 1, 2, 2});
  CHECK(apply_defense(parse_defense("bits:b=1"), x, gen).to_vector<float>() == std::vector<float>{0, 0, 0, 1});
  std::vector<float> two = apply_defense(parse_defense("bits:b=2"), x, gen).to_vector<float>();
  CHECK(two[1] == doctest::Approx(1.0 / 3.0));  // round(0.2 * 3) = 1 of 3 levels
  CHECK(two[2] == doctest::Approx(2.0 / 3.0));  // round(1.5) = 2 (half to even)
  Tensor rgb = ramp_batch(1, 3, 2, 2);
  Tensor g = apply_defense(parse_defense("grayscale"), rgb, gen);
  REQUIRE(g.shape() == rgb.shape());
  std::vector<float> gv = g.to_vector<float>(), cv = rgb.to_vector<float>();
  for (int p = 0; p < 4; ++p) {
    const double want = 0.299 * cv[p] + 0.587 * cv[4 + p] + 0.114 * cv[8 + p];
    CHECK(gv[p] == doctest::Approx(want).epsilon(1e-5));
    CHECK(gv[4 + p] == gv[p]);
    CHECK(gv[8 + p] == gv[p]);
  }
  CHECK_THROWS_WITH_AS(apply_defense(parse_defense("grayscale"), x, gen), doctest::Contains("needs colour images"), Error);
  // Offline, through defend_dataset (bytes): 1 bit leaves only 0 and 255.
  data::Dataset out = defend_dataset(tiny_dataset(), parse_defense("bits:b=1"), 0);
  for (int64_t v : out.images.to_vector<int64_t>()) CHECK((v == 0 || v == 255));
}

TEST_CASE("ueraser: supervised and SimCLR runs train through the hook and record the defence") {
  using namespace cpoison::algorithms;
  TrainConfig cfg;
  cfg.algo = Algo::supervised;
  cfg.model_options.width = 2;
  cfg.model_options.in_channels = 1;
  cfg.model_options.num_classes = 4;
  cfg.algo_config = AlgoConfig::defaults(Algo::supervised);
  cfg.augment = make_augment(augment::Recipe::crop_flip, "cifar10", 1, 8, 8);
  cfg.epochs = 1;
  cfg.batch_size = 8;
  cfg.warmup_epochs = 0;
  cfg.progress_seconds = -1;
  const Defense d = parse_defense("ueraser:k=3");
  TrainResult sup = train_with_defense(tiny_dataset(), cfg, d);
  REQUIRE(sup.history.size() == 1);
  CHECK(std::isfinite(sup.history[0].loss));

  // The per-image maximum over k draws is at least the mean loss of each single draw: replay the
  // same three draws (the same generator sequence) one at a time with k = 1.
  auto learner = SupervisedLearner::make("resnet18", cfg.model_options);
  Tensor x = data::to_float_nchw(tiny_dataset().images.slice0(0, 8), Device::cpu);
  Tensor labels = tiny_dataset().labels.slice0(0, 8);
  {
    autograd::NoGradGuard no_grad;
    Generator g1(3, 9), g2(3, 9);
    const double max_loss = ueraser_loss_hook(cfg, d.ueraser)(*learner, {.view1 = x, .labels = labels}, g1).item();
    UEraserOptions one = d.ueraser;
    one.k = 1;
    auto single = ueraser_loss_hook(cfg, one);
    double best_single = -1e300, sum = 0;
    for (int i = 0; i < 3; ++i) {
      const double l = single(*learner, {.view1 = x, .labels = labels}, g2).item();
      best_single = std::max(best_single, l), sum += l;
    }
    CHECK(max_loss >= best_single - 1e-5);
    CHECK(max_loss > sum / 3 - 1e-5);
  }

  cfg.algo = Algo::simclr;
  cfg.algo_config = AlgoConfig::defaults(Algo::simclr);
  cfg.algo_config.proj_dim = 8;
  TrainResult con = train_with_defense(tiny_dataset(), cfg, d);
  CHECK(std::isfinite(con.history.at(0).loss));
  cfg.algo = Algo::moco;
  cfg.algo_config = AlgoConfig::defaults(Algo::moco);
  CHECK_THROWS_WITH_AS(train_with_defense(tiny_dataset(), cfg, d), doctest::Contains("MoCo would enqueue"), Error);
}
