// The algorithm losses: hand-computed values on tiny inputs, f64 gradient checks, and the
// errors for bad shapes. Then the MoCo queue ring and the EMA step.
#include <doctest/doctest.h>

#include <cmath>

#include "algorithms/losses.h"
#include "algorithms/momentum.h"
#include "engine/nn/layers.h"
#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"

using namespace cpoison;
using namespace cpoison::algorithms;
using cpoison::testing::rand64;

namespace {
Tensor t64(std::vector<double> v, Shape s) { return Tensor::from_vector(v, s); }
}  // namespace

TEST_CASE("nt_xent_loss: identical views of two orthogonal embeddings") {
  // Each anchor: positive similarity 1, two negatives at 0 (the self-pair is left out):
  // loss = -log(e^{1/T} / (e^{1/T} + 2)) = log(1 + 2 e^{-1/T}).
  Tensor z = t64({1, 0, 0, 1}, {2, 2});
  CHECK(nt_xent_loss(z, z, 0.5).item() == doctest::Approx(std::log(1 + 2 * std::exp(-2.0))).epsilon(1e-12));
  // Unnormalised inputs give the same loss (the loss normalises).
  CHECK(nt_xent_loss(mul_scalar(z, 3), mul_scalar(z, 0.5), 0.5).item() ==
        doctest::Approx(std::log(1 + 2 * std::exp(-2.0))).epsilon(1e-12));
}

TEST_CASE("nt_xent_loss: swapped views put the positive among the negatives") {
  // Anchor e1: candidates e2 (other anchor), e2 (positive), e1 (negative): -log(1 / (2 + e)).
  Tensor z1 = t64({1, 0, 0, 1}, {2, 2}), z2 = t64({0, 1, 1, 0}, {2, 2});
  CHECK(nt_xent_loss(z1, z2, 1.0).item() == doctest::Approx(std::log(2 + std::exp(1.0))).epsilon(1e-12));
  // A single pair has no negatives: the positive is certain.
  CHECK(nt_xent_loss(t64({1, 2}, {1, 2}), t64({-3, 1}, {1, 2}), 0.5).item() == doctest::Approx(0.0));
}

TEST_CASE("nt_xent_loss: f32 agrees with f64") {
  Tensor a = rand64({3, 4}, 11, false), b = rand64({3, 4}, 12, false);
  double l64 = nt_xent_loss(a, b, 0.5).item();
  double l32 = nt_xent_loss(a.to(DType::f32), b.to(DType::f32), 0.5).item();
  CHECK(l32 == doctest::Approx(l64).epsilon(1e-5));
}

TEST_CASE("nt_xent_loss gradient check") {
  Tensor a = rand64({3, 4}, 1), b = rand64({3, 4}, 2);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return nt_xent_loss(in[0], in[1], 0.5); }, {a, b});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return nt_xent_loss(in[0], in[1], 0.2); }, {a, b});
}

TEST_CASE("moco_infonce_loss: hand-computed logits") {
  // logits [q·k, q·n1, q·n2] / T = [1, 0, -1] / 0.5 = [2, 0, -2].
  Tensor q = t64({1, 0}, {1, 2}), k = t64({2, 0}, {1, 2}), queue = t64({0, 1, -1, 0}, {2, 2});
  double expected = std::log(1 + std::exp(-2.0) + std::exp(-4.0));
  CHECK(moco_infonce_loss(q, k, queue, 0.5).item() == doctest::Approx(expected).epsilon(1e-12));
  // An empty queue leaves only the positive: zero loss.
  CHECK(moco_infonce_loss(q, k, Tensor::zeros({0, 2}, DType::f64), 0.5).item() == doctest::Approx(0.0));
}

TEST_CASE("moco_infonce_loss gradient check; the queue gets no gradient") {
  Tensor q = rand64({3, 4}, 3), k = rand64({3, 4}, 4);
  Tensor queue = l2_normalize(rand64({5, 4}, 5, false), 1);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return moco_infonce_loss(in[0], in[1], queue, 0.2); }, {q, k});
  Tensor queue_leaf = queue.clone().set_requires_grad(true);
  Tensor l = moco_infonce_loss(q, k, queue_leaf, 0.2);
  auto g = autograd::grad(l, {queue_leaf, q});
  CHECK(sum(abs(g[0])).item() == 0.0);
  CHECK(sum(abs(g[1])).item() > 0.0);
}

TEST_CASE("BYOL losses: hand-computed cosines") {
  CHECK(negative_cosine_loss(t64({1, 0}, {1, 2}), t64({1, 1}, {1, 2})).item() ==
        doctest::Approx(-1 / std::sqrt(2.0)).epsilon(1e-12));
  // ( -cos(p1, z2) - cos(p2, z1) ) / 2 = (0 - 1/sqrt 2) / 2.
  Tensor p1 = t64({1, 0}, {1, 2}), p2 = t64({0, 1}, {1, 2}), z1 = t64({1, 1}, {1, 2}), z2 = t64({0, 2}, {1, 2});
  CHECK(byol_symmetric_loss(p1, p2, z1, z2).item() == doctest::Approx(-0.5 / std::sqrt(2.0)).epsilon(1e-12));
}

TEST_CASE("BYOL loss gradient check (through both predictions and both targets)") {
  std::vector<Tensor> in{rand64({3, 4}, 6), rand64({3, 4}, 7), rand64({3, 4}, 8), rand64({3, 4}, 9)};
  CHECK_GRADCHECK([](const std::vector<Tensor>& x) { return byol_symmetric_loss(x[0], x[1], x[2], x[3]); }, in);
}

TEST_CASE("losses reject mismatched shapes and bad temperatures") {
  Tensor a = rand64({2, 3}, 1, false), b = rand64({3, 3}, 2, false);
  CHECK_THROWS_AS(nt_xent_loss(a, b, 0.5), Error);
  CHECK_THROWS_WITH_AS(nt_xent_loss(a, a, 0.0), doctest::Contains("temperature"), Error);
  CHECK_THROWS_AS(nt_xent_loss(rand64({6}, 1, false), rand64({6}, 2, false), 0.5), Error);
  CHECK_THROWS_WITH_AS(moco_infonce_loss(a, a, rand64({4, 2}, 3, false), 0.2), doctest::Contains("queue"), Error);
  CHECK_THROWS_AS(negative_cosine_loss(a, b), Error);
}

TEST_CASE("class_separability_loss: hand-computed Davies-Bouldin ratio") {
  // Class 0 at 0 and 2 (centre 1, spread 1), class 1 at 10 and 12 (centre 11, spread 1): both
  // ordered pairs give (1 + 1 + 1e-5) / (10 + 1e-5).
  Tensor x = t64({0, 2, 10, 12}, {4, 1});
  Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 0, 1, 1}, {4});
  CHECK(class_separability_loss(x, y).item() == doctest::Approx((2 + 1e-5) / (10 + 1e-5)).epsilon(1e-9));
  // Labels need not be contiguous or sorted; absent classes are skipped.
  Tensor y2 = Tensor::from_vector(std::vector<int64_t>{7, 7, 3, 3}, {4});
  CHECK(class_separability_loss(x, y2).item() == doctest::Approx((2 + 1e-5) / (10 + 1e-5)).epsilon(1e-9));
  // Three classes in 2-D: centres (0,0), (4,0), (0,3), single rows (spread 0): the mean over six
  // ordered pairs of 1e-5 / (M + 1e-5) with M = 4, 3, 5 (each twice).
  Tensor x3 = t64({0, 0, 4, 0, 0, 3}, {3, 2});
  Tensor y3 = Tensor::from_vector(std::vector<int64_t>{0, 1, 2}, {3});
  double expect = (1e-5 / (4 + 1e-5) + 1e-5 / (3 + 1e-5) + 1e-5 / (5 + 1e-5)) / 3;
  CHECK(class_separability_loss(x3, y3).item() == doctest::Approx(expect).epsilon(1e-6));
  // One class: 0, as in the release.
  Tensor one = Tensor::from_vector(std::vector<int64_t>{2, 2, 2, 2}, {4});
  CHECK(class_separability_loss(x, one).item() == 0.0);
}

TEST_CASE("class_separability_loss: tight separated clusters score lower than mixed ones") {
  // Four classes, eight rows each, around far-apart centres; then the same rows with labels
  // that cut across the clusters.
  Generator g(21);
  Tensor centres = mul_scalar(uniform({4, 6}, -1, 1, g, DType::f64), 5.0);
  std::vector<int64_t> lab(32), mixed(32);
  for (int64_t i = 0; i < 32; ++i) lab[i] = i % 4, mixed[i] = (i / 4) % 4;
  Tensor y = Tensor::from_vector(lab, {32}), ym = Tensor::from_vector(mixed, {32});
  Tensor x = add(index_select0(centres, y), mul_scalar(uniform({32, 6}, -1, 1, g, DType::f64), 0.3));
  double separated = class_separability_loss(x, y).item(), shuffled = class_separability_loss(x, ym).item();
  CHECK(separated < 0.5);
  CHECK(shuffled > 2.0);
  // Pulling each class towards its centre lowers it further.
  Tensor tighter = add(index_select0(centres, y), mul_scalar(sub(x, index_select0(centres, y)), 0.5));
  CHECK(class_separability_loss(tighter, y).item() < separated);
}

TEST_CASE("class_separability_loss gradient check; detach_spread drops the spread path") {
  Tensor x = rand64({9, 5}, 31);
  Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1, 0}, {9});
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return class_separability_loss(in[0], y); }, {x});
  Tensor x2 = rand64({4, 3}, 32);
  Tensor y2 = Tensor::from_vector(std::vector<int64_t>{1, 1, 0, 0}, {4});
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return class_separability_loss(in[0], y2); }, {x2});
  // Moving the two rows of class 1 apart symmetrically keeps every centre and changes only the
  // spread: the full gradient sees it, the detached one does not.
  Tensor v = t64({1, 1, 1, -1, -1, -1, 0, 0, 0, 0, 0, 0}, {4, 3});
  auto directional = [&](bool detach) {
    Tensor leaf = x2.detach().set_requires_grad(true);
    Tensor g = autograd::grad(class_separability_loss(leaf, y2, detach), {leaf})[0];
    return sum(mul(g, v)).item();
  };
  CHECK(std::fabs(directional(false)) > 1e-6);
  CHECK(std::fabs(directional(true)) < 1e-12);
  // A row equal to its class centre (a class-wise pattern repeated) has a finite zero gradient.
  Tensor rep = t64({1, 2, 1, 2, -3, 0, -3, 0}, {4, 2}).set_requires_grad(true);
  Tensor g = autograd::grad(class_separability_loss(rep, y2), {rep})[0];
  for (double e : g.to_vector<double>()) CHECK(std::isfinite(e));
}

TEST_CASE("class_separability_loss rejects bad shapes and labels") {
  Tensor x = rand64({3, 2}, 1, false);
  CHECK_THROWS_WITH_AS(class_separability_loss(x, Tensor::from_vector(std::vector<int64_t>{0, 1}, {2})),
                       doctest::Contains("labels must be [3]"), Error);
  CHECK_THROWS_WITH_AS(class_separability_loss(x, Tensor::from_vector(std::vector<int64_t>{0, -1, 1}, {3})),
                       doctest::Contains(">= 0"), Error);
  CHECK_THROWS_AS(class_separability_loss(rand64({6}, 1, false), Tensor::from_vector(std::vector<int64_t>{0}, {1})), Error);
}

TEST_CASE("make_key_queue: unit-length random rows, reproducible from the seed") {
  Generator g1(5, 1), g2(5, 1);
  Tensor q1 = make_key_queue(6, 3, g1), q2 = make_key_queue(6, 3, g2);
  REQUIRE(q1.shape() == Shape{6, 3});
  CHECK(q1.to_vector<float>() == q2.to_vector<float>());
  auto norms = sum(square(q1), {1}).to_vector<double>();
  for (double n : norms) CHECK(n == doctest::Approx(1.0).epsilon(1e-5));
  CHECK_THROWS_AS(make_key_queue(-1, 3, g1), Error);
}

TEST_CASE("enqueue_ring writes at the pointer and wraps around") {
  Tensor queue = Tensor::zeros({5, 2}, DType::f64);
  Tensor keys = t64({1, 1, 2, 2, 3, 3}, {3, 2});
  CHECK(enqueue_ring(queue, 3, keys) == 1);
  CHECK(queue.to_vector<double>() == std::vector<double>{3, 3, 0, 0, 0, 0, 1, 1, 2, 2});
  CHECK(enqueue_ring(queue, 1, keys) == 4);
  CHECK(queue.to_vector<double>() == std::vector<double>{3, 3, 1, 1, 2, 2, 3, 3, 2, 2});
}

TEST_CASE("enqueue_ring with more keys than rows keeps the last ones where the ring puts them") {
  Tensor queue = Tensor::zeros({3, 1}, DType::f64);
  // Key i would land at (1 + i) mod 3: k2 -> 0, k3 -> 1, k4 -> 2 are the survivors.
  CHECK(enqueue_ring(queue, 1, t64({10, 11, 12, 13, 14}, {5, 1})) == 0);
  CHECK(queue.to_vector<double>() == std::vector<double>{12, 13, 14});
  CHECK_THROWS_WITH_AS(enqueue_ring(queue, 3, t64({1}, {1, 1})), doctest::Contains("pointer"), Error);
  CHECK_THROWS_AS(enqueue_ring(queue, 0, t64({1, 2}, {1, 2})), Error);
}

TEST_CASE("ema_update moves parameters toward the online module and leaves buffers alone") {
  nn::manual_seed(1);
  nn::Sequential online{std::make_shared<nn::Linear>(2, 2), std::make_shared<nn::BatchNorm>(2)};
  nn::Sequential target{std::make_shared<nn::Linear>(2, 2), std::make_shared<nn::BatchNorm>(2)};
  auto before = target.state_dict();
  std::map<std::string, std::vector<double>> old;
  for (auto& [name, t] : before) old[name] = t.to_vector<double>();
  // Give the online copy distinctive buffers so that copying them would show.
  online.state_dict().at("1.running_mean").fill_(7.0);
  ema_update(target, online, 0.9);
  auto online_state = online.state_dict();
  for (auto& [name, p] : target.named_parameters()) {
    auto now = p.to_vector<double>();
    auto o = online_state.at(name).to_vector<double>();
    for (size_t i = 0; i < now.size(); ++i)
      CHECK(now[i] == doctest::Approx(0.9 * old[name][i] + 0.1 * o[i]).epsilon(1e-6));
  }
  CHECK(target.state_dict().at("1.running_mean").to_vector<double>() == old["1.running_mean"]);
  CHECK_THROWS_WITH_AS(ema_update(target, online, 1.5), doctest::Contains("momentum"), Error);
  nn::Sequential other{std::make_shared<nn::Linear>(2, 3)};
  CHECK_THROWS_AS(ema_update(other, online, 0.5), Error);
}
