// The learners on a tiny ResNet-18 (width 2, 1x8x8 images): construction and momentum copies,
// the EMA step, MoCo's queue through loss(), SimCLR's single batched backbone call, the
// dual-branch switch (input gradient = online-branch part + momentum-branch part), an f64
// gradient check through the key encoder, and the errors.
#include <doctest/doctest.h>

#include <cmath>

#include "algorithms/learner.h"
#include "algorithms/losses.h"
#include "engine/ops/ops.h"
#include "models/registry.h"
#include "tests/support/gradcheck.h"

using namespace cpoison;
using namespace cpoison::algorithms;
using cpoison::testing::rand64;

namespace {

models::ModelOptions tiny_options() {
  models::ModelOptions o;
  o.width = 2;
  o.in_channels = 1;
  return o;
}

AlgoConfig tiny_config(Algo a) {
  AlgoConfig c = AlgoConfig::defaults(a);
  c.proj_dim = 8;
  c.queue_size = 8;
  if (a == Algo::byol) c.proj_hidden = c.pred_hidden = 16;
  return c;
}

std::shared_ptr<ContrastiveLearner> tiny_learner(Algo a, const AlgoConfig& c, uint64_t seed = 3) {
  nn::manual_seed(seed);
  return ContrastiveLearner::make(a, "resnet18", tiny_options(), c);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

double max_abs(const Tensor& a) {
  double m = 0;
  for (double v : a.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

nn::Module& child(const nn::Module& m, const std::string& name) {
  for (auto& [n, c] : m.children())
    if (n == name) return *c;
  FAIL("no child " << name);
  throw std::logic_error("unreachable");
}

// Two different differentiable "augmentations" of one input.
Tensor view_a(const Tensor& x) { return mul_scalar(x, 0.9); }
Tensor view_b(const Tensor& x) { return add_scalar(mul_scalar(x, 1.1), 0.05); }

}  // namespace

TEST_CASE("parse_algo and AlgoConfig defaults follow the spec") {
  CHECK(parse_algo("simclr") == Algo::simclr);
  CHECK(parse_algo("mocov2") == Algo::moco);
  CHECK_THROWS_WITH_AS(parse_algo("swav"), doctest::Contains("simclr, moco, byol"), Error);
  CHECK(AlgoConfig::defaults(Algo::simclr).temperature == 0.5);
  CHECK(AlgoConfig::defaults(Algo::moco).temperature == 0.2);
  CHECK(AlgoConfig::defaults(Algo::moco).momentum == 0.99);
  CHECK(AlgoConfig::defaults(Algo::moco).queue_size == 4096);
  CHECK(AlgoConfig::defaults(Algo::byol).momentum == 0.999);
  CHECK(AlgoConfig::defaults(Algo::byol).proj_dim == 256);
  CHECK_FALSE(AlgoConfig::defaults(Algo::byol).byol_detach_target);
  AlgoConfig bad = AlgoConfig::defaults(Algo::simclr);
  bad.temperature = 0;
  CHECK_THROWS_WITH_AS(bad.validate(Algo::simclr), doctest::Contains("temperature"), Error);
}

TEST_CASE("momentum copies start equal, are frozen and are left out of the online parameters") {
  for (Algo a : {Algo::moco, Algo::byol}) {
    auto l = tiny_learner(a, tiny_config(a));
    auto state = l->state_dict();
    int64_t momentum_params = 0;
    for (auto& [name, p] : l->named_parameters()) {
      if (name.rfind("momentum_", 0) != 0) {
        CHECK(p.requires_grad());
        continue;
      }
      ++momentum_params;
      CHECK_FALSE(p.requires_grad());
      CHECK(max_abs_diff(p, state.at(name.substr(std::string("momentum_").size()))) == 0.0);
    }
    CHECK(momentum_params > 0);
    for (auto& [name, p] : l->named_online_parameters()) CHECK(name.rfind("momentum_", 0) != 0);
    CHECK(l->online_parameters().size() + momentum_params == l->parameters().size());
  }
  auto simclr = tiny_learner(Algo::simclr, tiny_config(Algo::simclr));
  CHECK(simclr->online_parameters().size() == simclr->parameters().size());
}

TEST_CASE("momentum_update is an EMA of the online parameters, not of the BN buffers") {
  AlgoConfig c = tiny_config(Algo::byol);
  c.momentum = 0.75;
  auto l = tiny_learner(Algo::byol, c);
  auto before = l->state_dict();
  std::map<std::string, std::vector<double>> old;
  for (auto& [n, t] : before) old[n] = t.to_vector<double>();
  // Move the online weights and buffers somewhere else.
  for (auto& [n, p] : l->named_online_parameters()) p.copy_(add_scalar(p.detach(), 0.5));
  l->state_dict().at("encoder.bn1.running_mean").fill_(3.0);
  l->momentum_update();
  auto after = l->state_dict();
  const std::string key = "momentum_encoder.conv1.weight", online_key = "encoder.conv1.weight";
  auto now = after.at(key).to_vector<double>();
  for (size_t i = 0; i < now.size(); ++i)
    CHECK(now[i] == doctest::Approx(0.75 * old[key][i] + 0.25 * (old[online_key][i] + 0.5)).epsilon(1e-6));
  CHECK(after.at("momentum_encoder.bn1.running_mean").to_vector<double>() == old["momentum_encoder.bn1.running_mean"]);
}

TEST_CASE("MoCo loss enqueues the normalised keys at the ring pointer") {
  auto l = tiny_learner(Algo::moco, tiny_config(Algo::moco));
  l->eval();  // deterministic keys to compare against
  Tensor x1 = rand64({3, 1, 8, 8}, 1, false).to(DType::f32), x2 = rand64({3, 1, 8, 8}, 2, false).to(DType::f32);
  auto state = l->state_dict();
  Tensor queue = state.at("queue"), ptr = state.at("queue_ptr");
  CHECK(queue.shape() == Shape{8, 8});
  CHECK(ptr.item() == 0);
  l->loss({x1, x2});
  CHECK(ptr.item() == 3);
  // The key encoder's output, normalised, now sits in rows 0..2.
  Tensor keys;
  {
    autograd::NoGradGuard ng;
    keys = l2_normalize(child(*l, "momentum_projector").forward(child(*l, "momentum_encoder").forward(x2)), 1);
  }
  CHECK(max_abs_diff(queue.slice0(0, 3), keys) < 1e-6);
  l->loss({x1, x2});
  l->loss({x1, x2});  // 9 keys into 8 rows: the pointer wraps to 1
  CHECK(ptr.item() == 1);
  l->enqueue_keys = false;
  l->loss({x1, x2});
  CHECK(ptr.item() == 1);
}

TEST_CASE("SimCLR sends both views through the backbone in one batched call") {
  auto l = tiny_learner(Algo::simclr, tiny_config(Algo::simclr));
  auto twin = tiny_learner(Algo::simclr, tiny_config(Algo::simclr));
  Tensor v1 = rand64({3, 1, 8, 8}, 4, false).to(DType::f32), v2 = rand64({3, 1, 8, 8}, 5, false).to(DType::f32);
  Tensor loss = l->loss({v1, v2});
  autograd::clear_tape();
  {
    autograd::NoGradGuard ng;
    twin->encoder().forward(concat({v1, v2}, 0));  // what BN must have seen: the 2B batch
  }
  CHECK(max_abs_diff(l->state_dict().at("encoder.bn1.running_mean"), twin->state_dict().at("encoder.bn1.running_mean")) <
        1e-7);
  CHECK(max_abs_diff(l->state_dict().at("encoder.bn1.running_var"), twin->state_dict().at("encoder.bn1.running_var")) <
        1e-7);
  CHECK(std::isfinite(loss.item()));
}

TEST_CASE("dual branch: the input gradient adds the momentum-branch part to the online-branch part") {
  for (Algo a : {Algo::moco, Algo::byol}) {
    CAPTURE(std::string(algo_name(a)));
    AlgoConfig c = tiny_config(a);
    auto l = tiny_learner(a, c);
    l->to(DType::f64);
    l->eval();  // as in the noise phase; BN running statistics stay put
    l->enqueue_keys = false;
    Tensor x = rand64({3, 1, 8, 8}, 7, true, 0.0, 1.0);
    auto through_learner = [&](bool dual) {
      l->set_dual_branch(dual);
      return autograd::grad(l->loss({view_a(x), view_b(x)}), {x})[0];
    };
    Tensor on = through_learner(true), off = through_learner(false);
    // The momentum-branch gradient on its own, assembled from the learner's parts: the online
    // outputs held fixed (detached), the momentum branch recorded.
    nn::Module& enc = child(*l, "encoder");
    nn::Module& proj = child(*l, "projector");
    nn::Module& key_enc = child(*l, "momentum_encoder");
    nn::Module& key_proj = child(*l, "momentum_projector");
    Tensor momentum_loss;
    if (a == Algo::moco) {
      Tensor q = proj.forward(enc.forward(view_a(x))).detach();
      Tensor k = key_proj.forward(key_enc.forward(view_b(x)));
      momentum_loss = moco_infonce_loss(q, k, l->state_dict().at("queue"), c.temperature);
    } else {
      nn::Module& pred = child(*l, "predictor");
      Tensor p1 = pred.forward(proj.forward(enc.forward(view_a(x)))).detach();
      Tensor p2 = pred.forward(proj.forward(enc.forward(view_b(x)))).detach();
      Tensor z1 = key_proj.forward(key_enc.forward(view_a(x))), z2 = key_proj.forward(key_enc.forward(view_b(x)));
      momentum_loss = byol_symmetric_loss(p1, p2, z1, z2);
    }
    Tensor momentum_only = autograd::grad(momentum_loss, {x})[0];
    CHECK(max_abs(momentum_only) > 1e-8);  // the momentum branch does carry a gradient
    CHECK(max_abs_diff(on, add(off, momentum_only)) < 1e-10 * std::max(1.0, max_abs(on)));
    CHECK(max_abs_diff(on, off) > 1e-8);
    // The momentum weights never get a gradient, even with the branch recorded.
    l->set_dual_branch(true);
    autograd::backward(l->loss({view_a(x), view_b(x)}));
    for (auto& [name, p] : l->named_parameters())
      if (name.rfind("momentum_", 0) == 0) CHECK_FALSE(p.grad().defined());
    l->zero_grad();
    x.zero_grad();
  }
}

TEST_CASE("BYOL with byol_detach_target: dual branch adds nothing (the authors' release)") {
  AlgoConfig c = tiny_config(Algo::byol);
  c.byol_detach_target = true;
  auto l = tiny_learner(Algo::byol, c);
  l->to(DType::f64);
  l->eval();
  Tensor x = rand64({3, 1, 8, 8}, 8, true, 0.0, 1.0);
  l->set_dual_branch(true);
  Tensor on = autograd::grad(l->loss({view_a(x), view_b(x)}), {x})[0];
  l->set_dual_branch(false);
  Tensor off = autograd::grad(l->loss({view_a(x), view_b(x)}), {x})[0];
  CHECK(max_abs_diff(on, off) == 0.0);
}

TEST_CASE("gradient check of the MoCo loss through both branches to the input (f64)") {
  AlgoConfig c = tiny_config(Algo::moco);
  c.dual_branch = true;
  auto l = tiny_learner(Algo::moco, c);
  l->to(DType::f64);
  l->eval();
  l->enqueue_keys = false;
  Tensor x = rand64({2, 1, 8, 8}, 9, true, 0.0, 1.0);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return l->loss({view_a(in[0]), view_b(in[0])}); }, {x}, 1e-6, 1e-6,
                  1e-4);
}

TEST_CASE("supervised learner: cross-entropy of the classifier head") {
  models::ModelOptions o = tiny_options();
  o.num_classes = 3;
  nn::manual_seed(1);
  auto l = SupervisedLearner::make("resnet18", o);
  l->eval();
  Tensor v = rand64({4, 1, 8, 8}, 10, false).to(DType::f32);
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 2, 1, 2}, {4});
  double expected = cross_entropy(l->encoder().logits(v), labels).item();
  CHECK(l->loss({.view1 = v, .labels = labels}).item() == doctest::Approx(expected));
  CHECK_THROWS_AS(l->loss({.view1 = v, .labels = Tensor::from_vector(std::vector<int64_t>{0, 1}, {2})}), Error);
  CHECK_THROWS_WITH_AS(l->loss({v, v, labels}), doctest::Contains("one view"), Error);
  CHECK_THROWS_WITH_AS(l->loss({.view1 = v}), doctest::Contains("labels"), Error);
  // Through the one interface: the same loss, one view per batch; no flow, no output loss.
  Learner& base = *l;
  CHECK(base.views_per_batch() == 1);
  CHECK(base.loss({.view1 = v, .labels = labels}).item() == l->loss({.view1 = v, .labels = labels}).item());
  base.set_flow(nullptr);
  base.set_loss(OutputLoss());
  CHECK_THROWS_WITH_AS(base.set_flow(dual_branch_flow()), doctest::Contains("no gradient flow"), Error);
  CHECK_THROWS_WITH_AS(base.set_loss(builtin_loss), doctest::Contains("no outputs"), Error);
  o.num_classes = 0;
  CHECK_THROWS_WITH_AS(SupervisedLearner::make("resnet18", o), doctest::Contains("num_classes"), Error);
}

TEST_CASE("learner errors: wrong algorithm, mismatched views") {
  CHECK_THROWS_WITH_AS(ContrastiveLearner::make(Algo::supervised, "resnet18", tiny_options(), AlgoConfig{}),
                       doctest::Contains("not a contrastive"), Error);
  auto l = tiny_learner(Algo::simclr, tiny_config(Algo::simclr));
  Tensor a = Tensor::zeros({2, 1, 8, 8}), b = Tensor::zeros({3, 1, 8, 8});
  CHECK_THROWS_WITH_AS(l->loss({a, b}), doctest::Contains("views"), Error);
  CHECK_THROWS_WITH_AS(l->loss({.view1 = a}), doctest::Contains("undefined view"), Error);
  Learner& base = *l;
  CHECK(base.views_per_batch() == 2);
  CHECK_THROWS_AS(ContrastiveLearner::make(Algo::simclr, "resnet7", tiny_options(), AlgoConfig{}), Error);
}
