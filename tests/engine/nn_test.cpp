// nn modules: registry and dotted names, state dicts, train/eval, freezing, dtype moves, copies,
// EMA, initialisation, and the forwards of Conv2d/BatchNorm/Linear/Sequential/mlp.
// Images are NCHW.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "engine/nn/layers.h"
#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"

using namespace cpoison;
using namespace cpoison::nn;

namespace {
// A hand-built module: one parameter, one buffer, one child.
struct Leaf : Module {
  Tensor w, count;
  explicit Leaf(std::vector<double> values) {
    w = register_parameter("w", Tensor::from_vector(values, {(int64_t)values.size()}));
    count = register_buffer("count", Tensor::zeros({1}, DType::f64));
  }
};
struct Tree : Module {
  Tensor scale;
  std::shared_ptr<Leaf> left, right;
  Tree(double s, std::vector<double> l, std::vector<double> r) {
    scale = register_parameter("scale", Tensor::from_vector(std::vector<double>{s}, {1}));
    left = register_module("left", std::make_shared<Leaf>(l));
    right = register_module("right", std::make_shared<Leaf>(r));
  }
};

std::vector<std::string> names(const std::vector<std::pair<std::string, Tensor>>& v) {
  std::vector<std::string> out;
  for (auto& e : v) out.push_back(e.first);
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("module registry lists dotted names in registration order, own entries first") {
  Tree t(2.0, {1, 2}, {3});
  CHECK(names(t.named_parameters()) == std::vector<std::string>{"scale", "left.w", "right.w"});
  CHECK(names(t.named_buffers()) == std::vector<std::string>{"left.count", "right.count"});
  CHECK(t.num_parameters() == 4);
  CHECK(t.parameters().size() == 3);
  for (auto& p : t.parameters()) CHECK(p.requires_grad());
  // The registry and the members are the same tensors.
  CHECK(t.named_parameters()[1].second.id() == t.left->w.id());
  auto sd = t.state_dict();
  std::vector<std::string> keys;
  for (auto& e : sd) keys.push_back(e.first);
  CHECK(keys == std::vector<std::string>{"left.count", "left.w", "right.count", "right.w", "scale"});
}

TEST_CASE("registration rejects duplicate, dotted and empty names") {
  Leaf l({1});
  CHECK(error_of([&] { l.register_parameter("w", Tensor::zeros({1})); }).find("'w' is already used") != std::string::npos);
  CHECK(error_of([&] { l.register_buffer("w", Tensor::zeros({1})); }).find("'w' is already used") != std::string::npos);
  CHECK(error_of([&] { l.register_module("count", std::make_shared<Identity>()); }).find("already used") != std::string::npos);
  CHECK(error_of([&] { l.register_parameter("a.b", Tensor::zeros({1})); }).find("must not contain '.'") != std::string::npos);
  CHECK(error_of([&] { l.register_parameter("", Tensor::zeros({1})); }).find("empty parameter name") != std::string::npos);
  CHECK(error_of([&] { l.register_parameter("i", Tensor::zeros({1}, DType::i64)); }).find("must be float") != std::string::npos);
  CHECK(error_of([&] { Identity().forward(Tensor::zeros({1})); }) == "(no error)");
  CHECK(error_of([&] { Module().forward(Tensor::zeros({1})); }).find("no single-input forward") != std::string::npos);
}

TEST_CASE("state-dict names of a nested Sequential match PyTorch's") {
  manual_seed(1);
  auto seq = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{
      std::make_shared<Conv2d>(3, 4, 3, 1, 1), std::make_shared<BatchNorm>(4), std::make_shared<ReLU>(),
      std::make_shared<Sequential>(std::initializer_list<ModulePtr>{std::make_shared<Linear>(4, 2)})});
  CHECK(seq->size() == 4);
  CHECK(names(seq->named_parameters()) == std::vector<std::string>{"0.weight", "1.weight", "1.bias", "3.0.weight", "3.0.bias"});
  CHECK(names(seq->named_buffers()) == std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"});
  auto sd = seq->state_dict();
  CHECK(sd.size() == 8);
  CHECK(sd.at("1.num_batches_tracked").dtype() == DType::i64);
  CHECK(sd.at("1.num_batches_tracked").dim() == 0);
  CHECK(sd.at("0.weight").shape() == Shape{4, 3, 3, 3});

  auto head = mlp({8, 6, 5, 3}, true);
  CHECK(names(head->named_parameters()) ==
        std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias", "4.weight", "4.bias", "6.weight", "6.bias"});
  CHECK(head->size() == 7);
  auto plain = mlp({8, 6, 3});
  CHECK(names(plain->named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  CHECK_THROWS_AS(mlp({8}), Error);
}

TEST_CASE("train/eval recurse and freezing flips requires_grad of every parameter") {
  Tree t(1, {1}, {2});
  CHECK(t.is_training());
  t.eval();
  CHECK_FALSE(t.is_training());
  CHECK_FALSE(t.left->is_training());
  CHECK_FALSE(t.right->is_training());
  t.train();
  CHECK(t.right->is_training());

  t.set_requires_grad(false);
  for (auto& p : t.parameters()) CHECK_FALSE(p.requires_grad());
  // A frozen module still passes gradients to its input.
  Tensor x = Tensor::from_vector(std::vector<double>{3}, {1}).set_requires_grad(true);
  Tensor y = sum(mul(x, t.scale));
  autograd::backward(y);
  CHECK(x.grad().item() == doctest::Approx(1.0));
  CHECK_FALSE(t.scale.grad().defined());
  t.set_requires_grad(true);
  for (auto& p : t.parameters()) CHECK(p.requires_grad());
}

TEST_CASE("to(dtype) converts float tensors in place and keeps integer buffers") {
  manual_seed(3);
  BatchNorm bn(3);
  Linear lin(2, 3);
  std::vector<float> before = lin.weight.to_vector<float>();
  Tensor handle = lin.named_parameters()[0].second;
  lin.to(DType::f64);
  CHECK(lin.weight.dtype() == DType::f64);
  CHECK(handle.dtype() == DType::f64);  // the registry sees the same converted tensor
  CHECK(lin.weight.requires_grad());
  std::vector<double> after = lin.weight.to_vector<double>();
  for (size_t i = 0; i < after.size(); ++i) CHECK(after[i] == (double)before[i]);
  bn.to(DType::f64);
  CHECK(bn.running_var.dtype() == DType::f64);
  CHECK(bn.num_batches_tracked.dtype() == DType::i64);
  CHECK(bn.device() == Device::cpu);
  bn.to(Device::cpu);  // same device: a no-op
  CHECK(bn.weight.dtype() == DType::f64);
  CHECK_THROWS_AS(bn.to(DType::i32), Error);
}

TEST_CASE("load_state_dict copies values and names missing, unexpected and mismatched entries") {
  Tree a(1, {1, 2}, {3}), b(5, {6, 7}, {8});
  a.load_state_dict(b.state_dict());
  CHECK(a.scale.item() == 5);
  CHECK(a.left->w.to_vector<double>() == std::vector<double>{6, 7});
  CHECK(a.left->w.id() != b.left->w.id());  // copied, not shared

  auto sd = b.state_dict();
  sd.erase("right.w");
  std::string msg = error_of([&] { a.load_state_dict(sd); });
  CHECK(msg.find("missing entries: 'right.w'") != std::string::npos);
  a.load_state_dict(sd, false);  // non-strict: the rest loads

  sd = b.state_dict();
  sd["extra.thing"] = Tensor::zeros({1});
  CHECK(error_of([&] { a.load_state_dict(sd); }).find("unexpected entries: 'extra.thing'") != std::string::npos);

  sd = b.state_dict();
  sd["left.w"] = Tensor::zeros({3}, DType::f64);
  a.scale.fill_(9);
  msg = error_of([&] { a.load_state_dict(sd, false); });
  CHECK(msg.find("'left.w' has shape [3] but the module expects [2]") != std::string::npos);
  CHECK(a.scale.item() == 9);  // a failed load changes nothing

  sd = b.state_dict();
  sd["scale"] = Tensor::from_vector(std::vector<float>{4.5f}, {1});  // other dtypes convert
  a.load_state_dict(sd);
  CHECK(a.scale.item() == 4.5);
}

TEST_CASE("copy_from copies parameters and buffers; ema_update_from blends parameters only") {
  Tree target(1, {0, 10}, {4}), online(3, {2, 20}, {8});
  online.left->count.fill_(7);
  target.ema_update_from(online, 0.75);
  // p <- 0.75 p + 0.25 online
  CHECK(target.scale.item() == doctest::Approx(1.5));
  CHECK(target.left->w.to_vector<double>() == std::vector<double>{0.5, 12.5});
  CHECK(target.right->w.item() == doctest::Approx(5.0));
  CHECK(target.left->count.item() == 0);  // buffers untouched
  CHECK(autograd::tape_size() == 0);
  CHECK(target.scale.requires_grad());

  target.ema_update_from(online, 0.0);  // momentum 0: becomes the online values
  CHECK(target.left->w.to_vector<double>() == std::vector<double>{2, 20});
  target.ema_update_from(online, 1.0);
  CHECK(target.scale.item() == 3);
  CHECK_THROWS_AS(target.ema_update_from(online, 1.5), Error);

  Tree fresh(0, {0, 0}, {0});
  fresh.copy_from(online);
  CHECK(fresh.left->count.item() == 7);
  CHECK(fresh.scale.item() == 3);

  Tree other_shape(0, {0, 0, 0}, {0});
  std::string msg = error_of([&] { other_shape.copy_from(online); });
  CHECK(msg.find("'left.w' has shape [3] here but [2]") != std::string::npos);
  Leaf leaf({1});
  CHECK(error_of([&] { leaf.ema_update_from(online, 0.5); }).find("this module has 1 parameters, the other has 3") != std::string::npos);
  Tree f32(0, {0, 0}, {0});
  f32.to(DType::f32);
  CHECK(error_of([&] { f32.ema_update_from(online, 0.5); }).find("'scale' is f32") != std::string::npos);
}

TEST_CASE("initialisation is reproducible and follows the documented distributions") {
  manual_seed(42);
  Conv2d c1(16, 64, 3);
  manual_seed(42);
  Conv2d c2(16, 64, 3);
  CHECK(c1.weight.to_vector<float>() == c2.weight.to_vector<float>());
  Conv2d c3(16, 64, 3);  // the generator moved on
  CHECK(c1.weight.to_vector<float>() != c3.weight.to_vector<float>());
  CHECK_FALSE(c1.bias.defined());
  CHECK(c1.named_parameters().size() == 1);

  // Kaiming normal, fan_out = 64 * 3 * 3: std = sqrt(2 / 576) ~ 0.0589 (9216 draws: ~1% noise).
  std::vector<float> w = c1.weight.to_vector<float>();
  double s = 0, s2 = 0;
  for (float v : w) s += v, s2 += (double)v * v;
  double mean = s / w.size(), sd = std::sqrt(s2 / w.size() - mean * mean);
  CHECK(std::abs(mean) < 0.003);
  CHECK(sd == doctest::Approx(std::sqrt(2.0 / 576.0)).epsilon(0.04));

  Conv2d depthwise(8, 8, 3, 1, 1, 8, true);
  CHECK(depthwise.weight.shape() == Shape{8, 1, 3, 3});
  for (float v : depthwise.bias.to_vector<float>()) CHECK(std::abs(v) <= 1.0 / 3.0);

  Linear lin(25, 40);
  double bound = 1.0 / 5.0, lo = 1, hi = -1;
  for (float v : lin.weight.to_vector<float>()) lo = std::min(lo, (double)v), hi = std::max(hi, (double)v);
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(lo < -0.9 * bound);  // 1000 uniform draws reach close to both ends
  CHECK(hi > 0.9 * bound);
  for (float v : lin.bias.to_vector<float>()) CHECK(std::abs(v) <= bound);

  BatchNorm bn(3, 0.1, 1e-5, false);
  CHECK_FALSE(bn.weight.defined());
  CHECK(names(bn.named_parameters()).empty());
  BatchNorm bn2(3);
  CHECK(bn2.weight.to_vector<float>() == std::vector<float>{1, 1, 1});
  CHECK(bn2.bias.to_vector<float>() == std::vector<float>{0, 0, 0});
  CHECK(bn2.running_var.to_vector<float>() == std::vector<float>{1, 1, 1});
  CHECK(bn2.num_batches_tracked.item() == 0);

  CHECK_THROWS_AS(Conv2d(6, 4, 3, 1, 0, 4), Error);
  CHECK_THROWS_AS(Linear(0, 3), Error);
  CHECK_THROWS_AS(BatchNorm(0), Error);
}

TEST_CASE("zero_grad drops the gradients of every parameter") {
  Tree t(2, {1}, {1});
  autograd::backward(sum(mul(t.scale, t.left->w)));
  CHECK(t.scale.grad().defined());
  t.zero_grad();
  CHECK_FALSE(t.scale.grad().defined());
  CHECK_FALSE(t.left->w.grad().defined());
}

// ---------------------------------------------------------------- forwards (need engine/ops/nn)
TEST_CASE("Linear forward computes x W^T + b") {
  Linear lin(3, 2);
  lin.to(DType::f64);
  lin.weight.copy_(Tensor::from_vector(std::vector<double>{1, 2, 3, -1, 0, 1}, {2, 3}));
  lin.bias.copy_(Tensor::from_vector(std::vector<double>{0.5, -0.5}, {2}));
  Tensor x = Tensor::from_vector(std::vector<double>{1, 1, 1, 2, 0, -1}, {2, 3});
  Tensor y = lin(x);
  CHECK(y.shape() == Shape{2, 2});
  CHECK(y.to_vector<double>() == std::vector<double>{6.5, -0.5, -0.5, -3.5});
  Linear no_bias(3, 2, false);
  CHECK(no_bias.named_parameters().size() == 1);
  autograd::clear_tape();
}

TEST_CASE("Conv2d forward matches a hand-computed 3x3 convolution with padding") {
  Conv2d conv(1, 1, 3, 1, 1);
  conv.to(DType::f64);
  conv.weight.fill_(1.0);  // box filter: each output is the sum of its 3x3 neighbourhood
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {1, 1, 2, 2});
  Tensor y = conv(x);
  CHECK(y.shape() == Shape{1, 1, 2, 2});
  CHECK(y.to_vector<double>() == std::vector<double>{10, 10, 10, 10});

  Conv2d strided(1, 2, 1, 2, 0, 1, true);
  strided.to(DType::f64);
  strided.weight.copy_(Tensor::from_vector(std::vector<double>{2, -1}, {2, 1, 1, 1}));
  strided.bias.copy_(Tensor::from_vector(std::vector<double>{1, 0}, {2}));
  Tensor z = strided(x);  // picks x[0,0] = 1 only
  CHECK(z.shape() == Shape{1, 2, 1, 1});
  CHECK(z.to_vector<double>() == std::vector<double>{3, -1});
  autograd::clear_tape();
}

TEST_CASE("BatchNorm forward: batch statistics and running updates in training, running statistics in eval") {
  BatchNorm bn(2, 0.1);
  bn.to(DType::f64);
  // Channel 0: values 1, 3 (mean 2, biased var 1, unbiased var 2); channel 1: 0, 0.
  Tensor x = Tensor::from_vector(std::vector<double>{1, 0, 3, 0}, {2, 2});
  Tensor y = bn(x);
  std::vector<double> v = y.to_vector<double>();
  double inv = 1.0 / std::sqrt(1.0 + 1e-5);
  CHECK(v[0] == doctest::Approx(-inv));
  CHECK(v[2] == doctest::Approx(inv));
  CHECK(v[1] == doctest::Approx(0.0));
  CHECK(bn.running_mean.to_vector<double>()[0] == doctest::Approx(0.2));
  CHECK(bn.running_var.to_vector<double>()[0] == doctest::Approx(0.9 + 0.1 * 2.0));
  CHECK(bn.running_var.to_vector<double>()[1] == doctest::Approx(0.9));
  CHECK(bn.num_batches_tracked.item() == 1);
  bn(x);
  CHECK(bn.num_batches_tracked.item() == 2);

  bn.eval();
  bn.running_mean.copy_(Tensor::from_vector(std::vector<double>{1, 0}, {2}));
  bn.running_var.copy_(Tensor::from_vector(std::vector<double>{4, 1}, {2}));
  Tensor e = bn(Tensor::from_vector(std::vector<double>{5, 2}, {1, 2}));
  CHECK(e.to_vector<double>()[0] == doctest::Approx(4.0 / std::sqrt(4.0 + 1e-5)));
  CHECK(e.to_vector<double>()[1] == doctest::Approx(2.0 / std::sqrt(1.0 + 1e-5)));
  CHECK(bn.num_batches_tracked.item() == 2);  // eval does not count

  std::string msg;
  try {
    bn(Tensor::zeros({2, 3}, DType::f64));
  } catch (const Error& err) {
    msg = err.what();
  }
  CHECK(msg.find("has 3 channels, the layer has 2") != std::string::npos);
  CHECK_THROWS_AS(bn(Tensor::zeros({2, 2, 2}, DType::f64)), Error);
  autograd::clear_tape();
}

TEST_CASE("Sequential chains its children and gradients reach every parameter") {
  manual_seed(5);
  auto net = mlp({3, 4, 2});
  net->to(DType::f64);
  Tensor x = cpoison::testing::rand64({5, 3}, 11, false);
  Tensor y = (*net)(x);
  CHECK(y.shape() == Shape{5, 2});
  // The same result by hand: linear -> relu -> linear.
  auto* l0 = dynamic_cast<Linear*>(net->children()[0].second.get());
  auto* l2 = dynamic_cast<Linear*>(net->children()[2].second.get());
  REQUIRE(l0);
  REQUIRE(l2);
  Tensor ref = linear(relu(linear(x, l0->weight, l0->bias)), l2->weight, l2->bias);
  CHECK(y.to_vector<double>() == ref.to_vector<double>());
  autograd::clear_tape();
  autograd::backward(sum((*net)(x)));
  for (auto& [name, p] : net->named_parameters()) {
    INFO(name);
    CHECK(p.grad().defined());
  }
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return (*net)(in[0]); }, {cpoison::testing::rand64({2, 3}, 12)});
}
