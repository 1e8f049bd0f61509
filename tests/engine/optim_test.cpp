// SGD against hand-computed steps (PyTorch's rule), its state export/import, LR schedules, and
// L-BFGS against known minimisers.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <numbers>

#include "engine/nn/module.h"
#include "engine/optim/lbfgs.h"
#include "engine/optim/schedule.h"
#include "engine/optim/sgd.h"

using namespace cpoison;
using namespace cpoison::optim;

namespace {
Tensor param(std::vector<double> v, Shape shape = {}) {
  if (shape.empty()) shape = {(int64_t)v.size()};
  return Tensor::from_vector(v, shape).set_requires_grad(true);
}
void set_grad(Tensor& p, std::vector<double> g) { p.set_grad(Tensor::from_vector(g, p.shape())); }
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("plain SGD: p -= lr * g") {
  Tensor p = param({1, 2});
  SGD opt({{"p", p}}, {.lr = 0.1});
  set_grad(p, {0.5, -1});
  opt.step();
  auto v = p.to_vector<double>();
  CHECK(v[0] == doctest::Approx(0.95));
  CHECK(v[1] == doctest::Approx(2.1));
  CHECK(p.requires_grad());
  CHECK(p.is_leaf());
  CHECK_FALSE(opt.momentum_buffer("p").defined());  // no momentum, no state
  CHECK(opt.state_dict().empty());
}

TEST_CASE("momentum SGD: buf = g on the first step, then m * buf + g") {
  Tensor p = param({1});
  SGD opt({{"p", p}}, {.lr = 0.1, .momentum = 0.9});
  set_grad(p, {1});
  opt.step();  // buf = 1, p = 1 - 0.1
  CHECK(p.item() == doctest::Approx(0.9));
  set_grad(p, {2});
  opt.step();  // buf = 0.9 + 2 = 2.9, p = 0.9 - 0.29
  CHECK(p.item() == doctest::Approx(0.61));
  CHECK(opt.momentum_buffer("p").item() == doctest::Approx(2.9));
}

TEST_CASE("Nesterov SGD: p -= lr * (g + m * buf)") {
  Tensor p = param({1});
  SGD opt({{"p", p}}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  set_grad(p, {1});
  opt.step();  // buf = 1, step 1 + 0.9 = 1.9
  CHECK(p.item() == doctest::Approx(0.81));
  set_grad(p, {2});
  opt.step();  // buf = 2.9, step 2 + 2.61 = 4.61
  CHECK(p.item() == doctest::Approx(0.349));
  CHECK(error_of([] { SGD(std::vector<std::pair<std::string, Tensor>>{}, {.lr = 0.1, .nesterov = true}); }).find("Nesterov momentum needs momentum > 0") != std::string::npos);
}

TEST_CASE("weight decay adds wd * p to the gradient before momentum") {
  Tensor p = param({2});
  SGD opt({{"p", p}}, {.lr = 0.5, .momentum = 0.5, .weight_decay = 0.1});
  set_grad(p, {1});
  opt.step();  // d = 1 + 0.2 = 1.2 = buf, p = 2 - 0.6
  CHECK(p.item() == doctest::Approx(1.4));
  set_grad(p, {1});
  opt.step();  // d = 1 + 0.14 = 1.14, buf = 0.6 + 1.14 = 1.74, p = 1.4 - 0.87
  CHECK(p.item() == doctest::Approx(0.53));
}

TEST_CASE("weight decay can skip 1-d parameters (BatchNorm weights and biases)") {
  Tensor w = param({1, 1}, {1, 2});
  Tensor b = param({1});
  SGD opt({{"w", w}, {"b", b}}, {.lr = 1.0, .weight_decay = 0.5, .exclude_1d_from_weight_decay = true});
  CHECK(opt.decays(w));
  CHECK_FALSE(opt.decays(b));
  set_grad(w, {0, 0});
  set_grad(b, {0});
  opt.step();
  CHECK(w.to_vector<double>() == std::vector<double>{0.5, 0.5});  // decayed
  CHECK(b.item() == 1.0);                                          // not decayed
  SGD all({{"b", b}}, {.lr = 1.0, .weight_decay = 0.5});
  all.step();
  CHECK(b.item() == doctest::Approx(0.5));
}

TEST_CASE("parameters without a gradient are skipped; zero_grad and set_lr") {
  Tensor a = param({1}), frozen = param({1});
  SGD opt({{"a", a}, {"frozen", frozen}}, {.lr = 0.1, .momentum = 0.9});
  set_grad(a, {1});
  opt.step();
  CHECK(frozen.item() == 1.0);
  CHECK_FALSE(opt.momentum_buffer("frozen").defined());
  CHECK(opt.state_dict().size() == 1);
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  opt.set_lr(0.0);
  set_grad(a, {5});
  double before = a.item();
  opt.step();  // the buffer still moves, the parameter does not
  CHECK(a.item() == before);
  CHECK(opt.momentum_buffer("a").item() == doctest::Approx(0.9 + 5));
  CHECK_THROWS_AS(opt.set_lr(-1), Error);
}

TEST_CASE("SGD rejects a mismatched gradient and bad parameters") {
  Tensor p = param({1, 2});
  SGD opt({{"p", p}}, {.lr = 0.1});
  p.set_grad(Tensor::zeros({3}, DType::f64));
  CHECK(error_of([&] { opt.step(); }).find("gradient f64[3] cpu of parameter 'p' does not match") != std::string::npos);
  CHECK(error_of([&] { SGD({{"p", p}, {"p", p}}, {}); }).find("'p' is listed twice") != std::string::npos);
  CHECK(error_of([&] { SGD({{"i", Tensor::zeros({1}, DType::i64)}}, {}); }).find("must be float") != std::string::npos);
  CHECK(error_of([&] { SGD({{"p", p}}, {.lr = -0.1}); }).find("learning rate must be >= 0") != std::string::npos);
}

TEST_CASE("SGD state exports and imports so that a resumed run continues exactly") {
  struct Net : nn::Module {
    Tensor w, b;
    Net() {
      w = register_parameter("w", Tensor::from_vector(std::vector<double>{1, -1, 2, 0.5}, {2, 2}));
      b = register_parameter("b", Tensor::from_vector(std::vector<double>{0.1, 0.2}, {2}));
    }
  };
  SGDOptions o{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-2, .nesterov = true};
  Net a, b;
  SGD oa(a, o);
  auto grads = [](Net& n, double k) {
    set_grad(n.w, {k, -k, 2 * k, 0.5});
    set_grad(n.b, {k, 1});
  };
  grads(a, 1);
  oa.step();
  grads(a, 2);
  oa.step();

  auto state = oa.state_dict();
  CHECK(state.size() == 2);
  CHECK(state.count("optim/w/momentum_buffer"));
  CHECK(state.count("optim/b/momentum_buffer"));
  b.copy_from(a);
  SGD ob(b, o);
  ob.load_state_dict(state);
  grads(a, 3);
  grads(b, 3);
  oa.step();
  ob.step();
  CHECK(a.w.to_vector<double>() == b.w.to_vector<double>());
  CHECK(a.b.to_vector<double>() == b.b.to_vector<double>());

  // Values convert to the parameter's dtype; errors name the entry.
  SGD oc(b, o);
  std::map<std::string, Tensor> f32_state{{"optim/b/momentum_buffer", Tensor::from_vector(std::vector<float>{1, 2}, {2})}};
  oc.load_state_dict(f32_state);
  CHECK(oc.momentum_buffer("b").dtype() == DType::f64);
  CHECK_FALSE(oc.momentum_buffer("w").defined());
  std::map<std::string, Tensor> bad{{"optim/nope/momentum_buffer", Tensor::zeros({2})}};
  CHECK(error_of([&] { oc.load_state_dict(bad); }).find("'optim/nope/momentum_buffer' names no parameter") != std::string::npos);
  bad = {{"optim/b/momentum_buffer", Tensor::zeros({3})}};
  CHECK(error_of([&] { oc.load_state_dict(bad); }).find("has shape [3] but parameter 'b' has shape [2]") != std::string::npos);
  CHECK(oc.momentum_buffer("b").defined());  // the failed load kept the old state
  bad = {{"optim/b/exp_avg", Tensor::zeros({2})}};
  CHECK(error_of([&] { oc.load_state_dict(bad); }).find("unknown optimiser state entry 'optim/b/exp_avg'") != std::string::npos);
  std::map<std::string, Tensor> other{{"w", Tensor::zeros({2, 2})}};  // module entries are ignored
  oc.load_state_dict(other);
  CHECK_FALSE(oc.momentum_buffer("b").defined());
  CHECK_THROWS_AS(oc.momentum_buffer("zzz"), Error);
}

TEST_CASE("warm-up + cosine schedule values") {
  auto s = LrSchedule::warmup_cosine(1.0, 10, 2, 0.1, 0.01);
  CHECK(s.at(0) == doctest::Approx(0.1));
  CHECK(s.at(1) == doctest::Approx(0.55));
  CHECK(s.at(1.5) == doctest::Approx(0.775));
  CHECK(s.at(2) == doctest::Approx(1.0));
  CHECK(s.at(6) == doctest::Approx(0.505));  // halfway through the cosine
  CHECK(s.at(4) == doctest::Approx(0.01 + 0.99 * 0.5 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK(s.at(10) == doctest::Approx(0.01));
  CHECK(s.at(1000) == doctest::Approx(0.01));
  CHECK(s.at(7) == s.at(7));  // a pure function of the step: resuming gives the same rate

  auto no_warmup = LrSchedule::warmup_cosine(0.5, 4, 0, 0, 0.0005);  // the attacker's recipe
  CHECK(no_warmup.at(0) == doctest::Approx(0.5));
  CHECK(no_warmup.at(2) == doctest::Approx(0.0005 + 0.4995 * 0.5));
  CHECK(no_warmup.at(4) == doctest::Approx(0.0005));
  auto all_warmup = LrSchedule::warmup_cosine(0.3, 5, 5, 0.0, 0.0);
  CHECK(all_warmup.at(4) == doctest::Approx(0.24));
  CHECK(all_warmup.at(5) == doctest::Approx(0.0));

  CHECK(s.kind() == LrSchedule::Kind::warmup_cosine);
  CHECK(s.describe().find("warmup_cosine") != std::string::npos);
  CHECK_THROWS_AS(LrSchedule::warmup_cosine(1, 10, 11), Error);
  CHECK_THROWS_AS(LrSchedule::warmup_cosine(1, 0), Error);
  CHECK_THROWS_AS(LrSchedule::warmup_cosine(-1, 10), Error);
  std::string msg;
  try {
    s.at(-1);
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("step must be finite and >= 0, got -1") != std::string::npos);
}

TEST_CASE("multi-step and constant schedules") {
  auto s = LrSchedule::multistep(1.0, {60, 75, 90}, 0.2);  // the linear probe's recipe
  CHECK(s.at(0) == 1.0);
  CHECK(s.at(59) == 1.0);
  CHECK(s.at(60) == doctest::Approx(0.2));
  CHECK(s.at(74.9) == doctest::Approx(0.2));
  CHECK(s.at(75) == doctest::Approx(0.04));
  CHECK(s.at(99) == doctest::Approx(0.008));
  CHECK(s.describe() == "multistep(base 1, x0.2 at [60, 75, 90])");
  CHECK_THROWS_AS(LrSchedule::multistep(1.0, {60, 60}, 0.2), Error);
  CHECK_THROWS_AS(LrSchedule::multistep(1.0, {60}, 0), Error);

  auto c = LrSchedule::constant(0.3);
  CHECK(c.at(0) == 0.3);
  CHECK(c.at(12345) == 0.3);
  CHECK(c.describe() == "constant(0.3)");
  CHECK_THROWS_AS(LrSchedule::constant(-0.1), Error);
}

TEST_CASE("L-BFGS finds the minimiser of a quadratic and of the Rosenbrock function") {
  // f(x) = 1/2 (x - c)^T A (x - c) + 3, A = diag(1, 10, 100): minimum 3 at c.
  const std::vector<double> c{1.0, -2.0, 0.5}, a{1.0, 10.0, 100.0};
  Objective quadratic = [&](const std::vector<double>& x, std::vector<double>* g) {
    double f = 3;
    if (g) g->resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      f += 0.5 * a[i] * (x[i] - c[i]) * (x[i] - c[i]);
      if (g) (*g)[i] = a[i] * (x[i] - c[i]);
    }
    return f;
  };
  LbfgsResult r = lbfgs_minimize(quadratic, {0, 0, 0});
  for (size_t i = 0; i < c.size(); ++i) CHECK(r.x[i] == doctest::Approx(c[i]).epsilon(1e-6));
  CHECK(r.value == doctest::Approx(3.0).epsilon(1e-12));
  CHECK(r.iterations > 0);
  CHECK(r.iterations < 50);

  Objective rosenbrock = [](const std::vector<double>& x, std::vector<double>* g) {
    const double p = x[1] - x[0] * x[0], q = 1 - x[0];
    if (g) *g = {-400 * x[0] * p - 2 * q, 200 * p};
    return 100 * p * p + q * q;
  };
  LbfgsResult rr = lbfgs_minimize(rosenbrock, {-1.2, 1.0}, {.max_iterations = 1000});
  CHECK(rr.x[0] == doctest::Approx(1.0).epsilon(1e-4));
  CHECK(rr.x[1] == doctest::Approx(1.0).epsilon(1e-4));

  // No iterations: the start comes back; bad options are refused.
  LbfgsResult none = lbfgs_minimize(quadratic, {0, 0, 0}, {.max_iterations = 0});
  CHECK(none.x == std::vector<double>{0, 0, 0});
  CHECK(none.iterations == 0);
  CHECK_THROWS_AS(lbfgs_minimize(quadratic, {0, 0, 0}, {.history = 0}), Error);
}
