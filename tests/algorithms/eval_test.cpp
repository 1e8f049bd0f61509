// Evaluation: kNN votes and uniformity on hand-computed cases, the L-BFGS probe on separable
// and on featureless data, the SGD probe on a trivially separable image set, alignment, and
// the errors for bad shapes and labels.
#include <doctest/doctest.h>

#include <cmath>

#include "algorithms/eval.h"
#include "algorithms/train.h"
#include "engine/ops/ops.h"
#include "models/registry.h"
#include "tests/support/gradcheck.h"

using namespace cpoison;
using namespace cpoison::algorithms;

namespace {
Tensor f32(std::vector<float> v, Shape s) { return Tensor::from_vector(v, s); }
Tensor i64(std::vector<int64_t> v) { return Tensor::from_vector(v, {(int64_t)v.size()}); }

// n images 8x8x1: class 0 dark (values 0..40), class 1 bright (200..240), alternating.
data::Dataset bright_dark(int64_t n, uint64_t seed) {
  Generator gen(seed, 0);
  std::vector<uint8_t> px(n * 64);
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 2;
    for (int64_t j = 0; j < 64; ++j) px[i * 64 + j] = (uint8_t)((labels[i] ? 200 : 0) + gen.randint(0, 41));
  }
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {n, 8, 8, 1});
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 2;
  ds.name = "bright-dark";
  return ds;
}
}  // namespace

TEST_CASE("knn_accuracy: neighbour count and temperature decide the vote") {
  // q = (1, 0.8): cos to A=(1,0) is 0.781 (label 0), to B=C=(0,1) is 0.625 (label 1).
  Tensor bank = f32({1, 0, 0, 1, 0, 1}, {3, 2});
  Tensor bank_labels = i64({0, 1, 1});
  Tensor q = f32({1, 0.8f}, {1, 2});
  Tensor q_label = i64({0});
  CHECK(knn_accuracy(bank, bank_labels, q, q_label, 2, 1, 1.0) == 100.0);
  // k = 3, T = 1: e^0.781 = 2.18 < 2 e^0.625 = 3.74 -> label 1.
  CHECK(knn_accuracy(bank, bank_labels, q, q_label, 2, 3, 1.0) == 0.0);
  // k = 3, T = 0.1: e^7.81 = 2466 > 2 e^6.25 = 1036 -> label 0.
  CHECK(knn_accuracy(bank, bank_labels, q, q_label, 2, 3, 0.1) == 100.0);
  // k larger than the bank uses the whole bank.
  CHECK(knn_accuracy(bank, bank_labels, q, q_label, 2, 200, 0.1) == 100.0);
  CHECK_THROWS_WITH_AS(knn_accuracy(bank, bank_labels, f32({1, 2, 3}, {1, 3}), q_label, 2), doctest::Contains("dimension"),
                       Error);
  CHECK_THROWS_WITH_AS(knn_accuracy(bank, i64({0, 1, 5}), q, q_label, 2), doctest::Contains("label 5"), Error);
}

TEST_CASE("uniformity: hand-computed pair sums") {
  CHECK(uniformity(f32({1, 0, -1, 0}, {2, 2})) == doctest::Approx(-8.0).epsilon(1e-9));
  // Squared distances 2, 4, 2.
  double expected = std::log((2 * std::exp(-4.0) + std::exp(-8.0)) / 3);
  CHECK(uniformity(f32({1, 0, 0, 1, -1, 0}, {3, 2})) == doctest::Approx(expected).epsilon(1e-9));
  CHECK(uniformity(f32({1, 0, 0, 1, -1, 0}, {3, 2}), 1.0) ==
        doctest::Approx(std::log((2 * std::exp(-2.0) + std::exp(-4.0)) / 3)).epsilon(1e-9));
  CHECK_THROWS_AS(uniformity(f32({1, 0}, {1, 2})), Error);
}

TEST_CASE("linear_probe_features separates separable classes") {
  // Three well-separated blobs in 3-d (class c centred at 4 e_c), 30 train and 15 test points.
  auto blobs = [](int64_t n, uint64_t seed) {
    Tensor x = cpoison::testing::rand64({n, 3}, seed, false).to(DType::f32);
    std::vector<float> v = x.to_vector<float>();
    std::vector<int64_t> y(n);
    for (int64_t i = 0; i < n; ++i) {
      y[i] = i % 3;
      v[i * 3 + y[i]] += 4.0f;
    }
    return std::make_pair(Tensor::from_vector(v, {n, 3}), Tensor::from_vector(y, {n}));
  };
  auto [xtr, ytr] = blobs(30, 1);
  auto [xte, yte] = blobs(15, 2);
  ProbeResult r = linear_probe_features(xtr, ytr, xte, yte, 3);
  CHECK(r.final_accuracy == 100.0);
  CHECK(r.best_accuracy == r.final_accuracy);
  CHECK(r.train_accuracy == 100.0);
  CHECK(r.iterations >= 1);
  CHECK(r.iterations <= 300);
}

TEST_CASE("linear_probe_features without information predicts the majority class") {
  // Constant features: the optimum is the bias alone, softmax = class frequencies (3:1 for
  // class 0), so every test point is called class 0.
  Tensor xtr = Tensor::ones({4, 2}), xte = Tensor::ones({4, 2});
  ProbeResult r = linear_probe_features(xtr, i64({0, 0, 0, 1}), xte, i64({0, 1, 1, 1}), 2);
  CHECK(r.final_accuracy == 25.0);
  CHECK(r.train_accuracy == 75.0);
  CHECK_THROWS_WITH_AS(linear_probe_features(xtr, i64({0, 0, 0, 2}), xte, i64({0, 1, 1, 1}), 2),
                       doctest::Contains("label 2"), Error);
  CHECK_THROWS_WITH_AS(linear_probe_features(xtr, i64({0, 0, 0}), xte, i64({0, 1, 1, 1}), 2),
                       doctest::Contains("labels"), Error);
}

TEST_CASE("linear_probe_sgd learns brightness from a frozen random encoder and leaves it unchanged") {
  nn::manual_seed(2);
  models::ModelOptions mo;
  mo.width = 2;
  mo.in_channels = 1;
  auto encoder = models::make_encoder("resnet18", mo);
  auto before = encoder->state_dict();
  std::map<std::string, std::vector<double>> old;
  for (auto& [n, t] : before) old[n] = t.to_vector<double>();
  data::Dataset train = bright_dark(32, 1), test = bright_dark(16, 2);
  SgdProbeOptions so;
  so.epochs = 6;
  so.batch_size = 8;
  so.lr = 0.5;
  so.milestones = {4};
  so.augment = make_augment(augment::Recipe::crop_flip, "cifar10", 1, 8, 8);
  int64_t calls = 0;
  so.on_epoch = [&](int64_t, double) { ++calls; };
  ProbeResult r = linear_probe_sgd(*encoder, train, test, so);
  CHECK(calls == 6);
  CHECK(r.epoch_accuracy.size() == 6);
  CHECK(r.best_accuracy >= r.final_accuracy);
  CHECK(r.final_accuracy >= 90.0);
  for (auto& [n, t] : encoder->state_dict()) {
    CAPTURE(n);
    CHECK(t.to_vector<double>() == old[n]);
  }
  CHECK(encoder->is_training());  // its mode restored
}

TEST_CASE("alignment: same draws on both sets; no augmentation means perfect alignment") {
  nn::manual_seed(3);
  models::ModelOptions mo;
  mo.width = 2;
  mo.in_channels = 1;
  AlgoConfig ac = AlgoConfig::defaults(Algo::simclr);
  ac.proj_dim = 8;
  auto learner = ContrastiveLearner::make(Algo::simclr, "resnet18", mo, ac);
  data::Dataset clean = bright_dark(12, 4), other = bright_dark(12, 5);
  Generator g1(1, 0), g2(1, 0), g3(1, 0);
  augment::AugmentConfig aug = make_augment(augment::Recipe::simclr, "cifar10", 1, 8, 8);
  Alignment same = alignment(*learner, clean.images, clean.images, aug, g1, 0, 5);
  CHECK(same.images == 12);
  CHECK(same.poisoned == doctest::Approx(same.clean).epsilon(1e-12));
  CHECK(same.clean > 0);
  Alignment none =
      alignment(*learner, other.images, clean.images, make_augment(augment::Recipe::none, "cifar10", 1, 8, 8), g2, 10);
  CHECK(none.images == 10);
  CHECK(none.poisoned == doctest::Approx(0.0).scale(1.0));
  CHECK(none.clean == doctest::Approx(0.0).scale(1.0));
  Alignment differ = alignment(*learner, other.images, clean.images, aug, g3, 0, 5);
  CHECK(differ.clean == doctest::Approx(same.clean).epsilon(1e-12));  // same draws on the clean set
  CHECK(learner->is_training());
  CHECK_THROWS_WITH_AS(alignment(*learner, clean.images, clean.images.slice0(0, 4), aug, g1), doctest::Contains("one shape"),
                       Error);
}

TEST_CASE("extract_features: shape, eval mode, and the channel check") {
  nn::manual_seed(4);
  models::ModelOptions mo;
  mo.width = 2;
  mo.in_channels = 1;
  auto encoder = models::make_encoder("resnet18", mo);
  data::Dataset ds = bright_dark(5, 6);
  Tensor f = extract_features(*encoder, ds, {0.5}, {0.25}, 2);
  CHECK(f.shape() == Shape{5, encoder->feature_dim()});
  Tensor again = extract_features(*encoder, ds, {0.5}, {0.25}, 5);  // batch size does not matter in eval mode
  auto a = f.to_vector<float>(), b = again.to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5).scale(1.0));
  mo.in_channels = 3;
  auto colour = models::make_encoder("resnet18", mo);
  CHECK_THROWS_WITH_AS(extract_features(*colour, ds, {0.5}, {0.25}), doctest::Contains("channels"), Error);
}
