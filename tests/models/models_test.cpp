// Models and heads: parameter counts of the standard CIFAR definitions, PyTorch state-dict names
// and shapes, output shapes, an f64 gradient check through a tiny ResNet-18, checkpoint round
// trips and error messages. Layout: images [N, C, H, W]; features [N, D].
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "engine/io/checkpoint.h"
#include "engine/ops/ops.h"
#include "models/heads.h"
#include "models/registry.h"
#include "tests/support/gradcheck.h"
#include "tests/support/temp_path.h"

using namespace cpoison;
using cpoison::models::ModelOptions;
using cpoison::testing::rand64;

namespace {

ModelOptions options_with(int64_t width, int64_t classes, int64_t in_channels = 3) {
  ModelOptions o;
  o.width = width;
  o.num_classes = classes;
  o.in_channels = in_channels;
  return o;
}

// Shape of a named state-dict entry, or an empty shape with a failed CHECK when it is missing.
Shape entry_shape(const std::map<std::string, Tensor>& state, const std::string& name) {
  auto it = state.find(name);
  INFO("state-dict entry " << name);
  CHECK(it != state.end());
  return it == state.end() ? Shape{} : it->second.shape();
}

Tensor random_images(const Shape& shape, uint64_t seed) {
  Generator g(seed, 3);
  return uniform(shape, 0.0, 1.0, g);
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

// ---- parameter counts (width 64, 10-class head) and PyTorch names -------------------------------
// Each expected count is the kuangliu/pytorch-cifar definition counted independently
// (convs without bias except VGG's, BN weight+bias, Linear weight+bias).

TEST_CASE("models: resnet18 has 11,173,962 parameters and kuangliu's names") {
  nn::manual_seed(1);
  auto m = models::make_encoder("resnet18", options_with(64, 10));
  CHECK(m->num_parameters() == 11173962);
  CHECK(m->feature_dim() == 512);
  auto state = m->state_dict();
  CHECK(entry_shape(state, "conv1.weight") == Shape{64, 3, 3, 3});
  CHECK(entry_shape(state, "bn1.running_mean") == Shape{64});
  CHECK(entry_shape(state, "layer1.0.bn1.running_mean") == Shape{64});
  CHECK(entry_shape(state, "layer1.1.conv2.weight") == Shape{64, 64, 3, 3});
  CHECK(entry_shape(state, "layer2.0.conv1.weight") == Shape{128, 64, 3, 3});
  CHECK(entry_shape(state, "layer2.0.shortcut.0.weight") == Shape{128, 64, 1, 1});
  CHECK(entry_shape(state, "layer2.0.shortcut.1.running_var") == Shape{128});
  CHECK(entry_shape(state, "layer4.1.bn2.num_batches_tracked").size() <= 1);
  CHECK(entry_shape(state, "linear.weight") == Shape{10, 512});
  CHECK(entry_shape(state, "linear.bias") == Shape{10});
  // Identity shortcuts hold nothing, and there are no other stages.
  CHECK(state.count("layer1.0.shortcut.0.weight") == 0);
  CHECK(state.count("layer2.1.shortcut.0.weight") == 0);
  CHECK(state.count("layer5.0.conv1.weight") == 0);
  CHECK(state.count("layer4.2.conv1.weight") == 0);
}

TEST_CASE("models: resnet34 has 21,282,122 parameters") {
  nn::manual_seed(1);
  auto m = models::make_encoder("resnet34", options_with(64, 10));
  CHECK(m->num_parameters() == 21282122);
  auto state = m->state_dict();
  CHECK(entry_shape(state, "layer3.5.conv2.weight") == Shape{256, 256, 3, 3});
  CHECK(state.count("layer3.6.conv2.weight") == 0);
  CHECK(entry_shape(state, "layer4.2.bn2.weight") == Shape{512});
}

TEST_CASE("models: resnet50 has 23,520,842 parameters and bottleneck names") {
  nn::manual_seed(1);
  auto m = models::make_encoder("resnet50", options_with(64, 10));
  CHECK(m->num_parameters() == 23520842);
  CHECK(m->feature_dim() == 2048);
  auto state = m->state_dict();
  // The first block already changes the channels (64 -> 256), so it has a projection shortcut.
  CHECK(entry_shape(state, "layer1.0.shortcut.0.weight") == Shape{256, 64, 1, 1});
  CHECK(entry_shape(state, "layer1.0.conv1.weight") == Shape{64, 64, 1, 1});
  CHECK(entry_shape(state, "layer1.0.conv3.weight") == Shape{256, 64, 1, 1});
  CHECK(entry_shape(state, "layer1.1.conv1.weight") == Shape{64, 256, 1, 1});
  CHECK(entry_shape(state, "layer3.5.bn3.running_mean") == Shape{1024});
  CHECK(entry_shape(state, "linear.weight") == Shape{10, 2048});
  CHECK(state.count("layer1.1.shortcut.0.weight") == 0);
}

TEST_CASE("models: vgg19 (BN) has 20,040,522 parameters and features.N / classifier names") {
  nn::manual_seed(1);
  auto m = models::make_encoder("vgg19", options_with(64, 10));
  CHECK(m->num_parameters() == 20040522);
  CHECK(m->feature_dim() == 512);
  CHECK(m->head_name() == "classifier");
  auto state = m->state_dict();
  // nn.Sequential indices: conv, BN, ReLU per channel entry, one MaxPool per 'M'.
  CHECK(entry_shape(state, "features.0.weight") == Shape{64, 3, 3, 3});
  CHECK(entry_shape(state, "features.0.bias") == Shape{64});
  CHECK(entry_shape(state, "features.1.running_mean") == Shape{64});
  CHECK(entry_shape(state, "features.3.weight") == Shape{64, 64, 3, 3});
  CHECK(entry_shape(state, "features.7.weight") == Shape{128, 64, 3, 3});  // after the pool at 6
  CHECK(entry_shape(state, "features.49.weight") == Shape{512, 512, 3, 3});  // last conv
  CHECK(entry_shape(state, "features.50.running_var") == Shape{512});
  CHECK(state.count("features.6.weight") == 0);
  CHECK(state.count("features.53.weight") == 0);
  CHECK(entry_shape(state, "classifier.weight") == Shape{10, 512});
  CHECK(state.count("linear.weight") == 0);
  // Conv biases start at zero (torchvision's VGG init).
  for (double v : state.at("features.0.bias").to_vector<double>()) CHECK(v == 0.0);
}

TEST_CASE("models: densenet121 has 6,956,298 parameters and dense/trans names") {
  nn::manual_seed(1);
  auto m = models::make_encoder("densenet121", options_with(64, 10));
  CHECK(m->num_parameters() == 6956298);
  CHECK(m->feature_dim() == 1024);
  auto state = m->state_dict();
  CHECK(entry_shape(state, "conv1.weight") == Shape{64, 3, 3, 3});
  CHECK(entry_shape(state, "dense1.0.bn1.weight") == Shape{64});
  CHECK(entry_shape(state, "dense1.0.conv1.weight") == Shape{128, 64, 1, 1});
  CHECK(entry_shape(state, "dense1.0.conv2.weight") == Shape{32, 128, 3, 3});
  CHECK(entry_shape(state, "dense1.5.bn1.running_mean") == Shape{224});
  CHECK(entry_shape(state, "trans1.bn.weight") == Shape{256});
  CHECK(entry_shape(state, "trans1.conv.weight") == Shape{128, 256, 1, 1});
  CHECK(entry_shape(state, "trans3.conv.weight") == Shape{512, 1024, 1, 1});
  CHECK(entry_shape(state, "dense4.15.conv2.weight") == Shape{32, 128, 3, 3});
  CHECK(entry_shape(state, "bn.weight") == Shape{1024});
  CHECK(entry_shape(state, "linear.weight") == Shape{10, 1024});
  CHECK(state.count("trans4.conv.weight") == 0);
}

TEST_CASE("models: mobilenetv2 has 2,296,922 parameters and kuangliu's shortcut rule") {
  nn::manual_seed(1);
  auto m = models::make_encoder("mobilenetv2", options_with(64, 10));
  CHECK(m->num_parameters() == 2296922);
  CHECK(m->feature_dim() == 1280);
  auto state = m->state_dict();
  CHECK(entry_shape(state, "conv1.weight") == Shape{32, 3, 3, 3});
  CHECK(entry_shape(state, "layers.0.conv1.weight") == Shape{32, 32, 1, 1});
  CHECK(entry_shape(state, "layers.0.conv2.weight") == Shape{32, 1, 3, 3});  // depthwise
  CHECK(entry_shape(state, "layers.0.shortcut.0.weight") == Shape{16, 32, 1, 1});
  CHECK(entry_shape(state, "layers.1.shortcut.1.running_mean") == Shape{24});  // 16 -> 24, stride 1
  CHECK(state.count("layers.2.shortcut.0.weight") == 0);  // 24 -> 24: identity
  CHECK(state.count("layers.3.shortcut.0.weight") == 0);  // stride 2: no residual
  CHECK(entry_shape(state, "layers.16.conv3.weight") == Shape{320, 960, 1, 1});
  CHECK(state.count("layers.17.conv1.weight") == 0);
  CHECK(entry_shape(state, "conv2.weight") == Shape{1280, 320, 1, 1});
  CHECK(entry_shape(state, "bn2.running_var") == Shape{1280});
  CHECK(entry_shape(state, "linear.weight") == Shape{10, 1280});
}

TEST_CASE("models: without a head the count drops by the head's parameters") {
  nn::manual_seed(1);
  auto with_head = models::make_encoder("resnet18", options_with(16, 10));
  auto without = models::make_encoder("resnet18", options_with(16, 0));
  CHECK(with_head->num_parameters() - without->num_parameters() == 128 * 10 + 10);
  CHECK(without->head() == nullptr);
  CHECK(without->state_dict().count("linear.weight") == 0);
}

// ---- forward shapes ----------------------------------------------------------------------------

TEST_CASE("models: every model maps [2, 3, 32, 32] to features [2, D] and logits [2, 10]") {
  // Width 8: an eighth of the standard channels keeps this fast.
  const std::map<std::string, int64_t> expected_dim = {{"resnet18", 64},  {"resnet34", 64},    {"resnet50", 256},
                                                       {"vgg19", 64},     {"densenet121", 128}, {"mobilenetv2", 160}};
  Tensor x = random_images({2, 3, 32, 32}, 5);
  for (const auto& name : models::model_names()) {
    INFO(name);
    nn::manual_seed(2);
    auto m = models::make_encoder(name, options_with(8, 10));
    CHECK(m->name() == name);
    CHECK(m->feature_dim() == expected_dim.at(name));
    Tensor f = m->forward(x);
    CHECK(f.shape() == Shape{2, m->feature_dim()});
    Tensor y = m->logits(x);
    CHECK(y.shape() == Shape{2, 10});
    for (float v : y.to_vector<float>()) CHECK(std::isfinite(v));
  }
  autograd::clear_tape();
}

TEST_CASE("models: one-channel 28x28 inputs (Fashion-MNIST) work without replication") {
  nn::manual_seed(3);
  for (const std::string name : {"resnet18", "mobilenetv2", "densenet121"}) {
    INFO(name);
    auto m = models::make_encoder(name, options_with(8, 10, 1));
    Tensor y = m->logits(random_images({2, 1, 28, 28}, 6));
    CHECK(y.shape() == Shape{2, 10});
  }
  autograd::clear_tape();
}

TEST_CASE("models: the same seed gives the same weights, another seed other weights") {
  nn::manual_seed(11);
  auto a = models::make_encoder("resnet18", options_with(4, 10));
  nn::manual_seed(11);
  auto b = models::make_encoder("resnet18", options_with(4, 10));
  nn::manual_seed(12);
  auto c = models::make_encoder("resnet18", options_with(4, 10));
  auto wa = a->state_dict().at("layer3.0.conv1.weight").to_vector<float>();
  CHECK(wa == b->state_dict().at("layer3.0.conv1.weight").to_vector<float>());
  CHECK(wa != c->state_dict().at("layer3.0.conv1.weight").to_vector<float>());
  // Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (16 * 3 * 3)) for layer3's 3x3 convs.
  double sum_sq = 0;
  for (float v : wa) sum_sq += double(v) * v;
  CHECK(std::sqrt(sum_sq / wa.size()) == doctest::Approx(std::sqrt(2.0 / (16 * 9))).epsilon(0.2));
}

TEST_CASE("models: init pytorch draws every conv from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), seeded; linears unchanged") {
  CHECK(models::parse_init("pytorch") == ModelOptions::Init::pytorch);
  CHECK(std::string(models::init_name(models::parse_init("kaiming-fan-out"))) == "kaiming-fan-out");
  CHECK_THROWS_WITH_AS(models::parse_init("xavier"), doctest::Contains("kaiming-fan-out or pytorch"), Error);
  for (const char* name : {"resnet18", "vgg19", "mobilenetv2"}) {
    INFO(name);
    ModelOptions o = options_with(8, 10);
    o.init = ModelOptions::Init::pytorch;
    nn::manual_seed(5);
    auto a = models::make_encoder(name, o);
    nn::manual_seed(5);
    auto b = models::make_encoder(name, o);
    nn::manual_seed(5);
    auto k = models::make_encoder(name, options_with(8, 10));
    int convs = 0;
    for (const auto& [pname, t] : a->named_parameters()) {
      if (t.dim() != 4) continue;
      ++convs;
      const double fan_in = (double)(t.size(1) * t.size(2) * t.size(3)), bound = 1.0 / std::sqrt(fan_in);
      auto w = t.to_vector<float>();
      double sum_sq = 0, largest = 0;
      for (float v : w) sum_sq += double(v) * v, largest = std::max(largest, std::fabs((double)v));
      CHECK(largest <= bound * (1 + 1e-6));
      if (w.size() >= 500) CHECK(std::sqrt(sum_sq / w.size()) == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.15));
    }
    CHECK(convs > 5);
    auto sa = a->state_dict(), sb = b->state_dict(), sk = k->state_dict();
    for (const auto& [key, t] : sa) {
      if (t.dtype() != DType::f32) continue;
      CHECK(t.to_vector<float>() == sb.at(key).to_vector<float>());  // the seed decides every weight
      if (t.dim() == 4) CHECK(t.to_vector<float>() != sk.at(key).to_vector<float>());
    }
  }
}

TEST_CASE("models: eval() reaches nested batch norms (running stats frozen), train() updates them") {
  nn::manual_seed(4);
  auto m = models::make_encoder("resnet18", options_with(4, 0));
  Tensor x = random_images({2, 3, 8, 8}, 7);
  Tensor rm = m->state_dict().at("layer2.0.shortcut.1.running_mean");
  auto before = rm.to_vector<float>();
  m->eval();
  {
    autograd::NoGradGuard ng;
    m->forward(x);
  }
  CHECK(rm.to_vector<float>() == before);
  m->train();
  {
    autograd::NoGradGuard ng;
    m->forward(x);
  }
  CHECK(rm.to_vector<float>() != before);
}

// ---- gradients ---------------------------------------------------------------------------------

TEST_CASE("models: f64 gradient check through a tiny ResNet-18 (train mode), input and weights") {
  nn::manual_seed(5);
  // One input channel keeps the element count (and the run time) down; a batch of 4 leaves
  // layer4's 1x1 batch norm 4 values per channel, so its batch statistics are not degenerate.
  auto m = models::make_encoder("resnet18", options_with(2, 3, 1));
  m->to(DType::f64);
  m->train();
  auto state = m->state_dict();
  Tensor x = rand64({4, 1, 8, 8}, 21);
  // A stem weight, a projection shortcut deep in the net, a BN scale and the head.
  Tensor stem = state.at("conv1.weight");
  Tensor shortcut = state.at("layer3.0.shortcut.0.weight");
  Tensor bn_scale = state.at("layer4.1.bn2.weight");
  Tensor head_bias = state.at("linear.bias");
  auto f = [&](const std::vector<Tensor>& in) { return m->logits(in[0]); };
  // The parameters are the module's own tensors: gradcheck perturbs them in place.
  CHECK_GRADCHECK(f, {x, stem, shortcut, bn_scale, head_bias}, 1e-6, 1e-6, 1e-4);
  // The input gradient is not vanishingly small, so the check above says something.
  Tensor gx = autograd::grad(sum(m->logits(x)), {x})[0];
  CHECK(max(abs(gx.reshape({-1})), 0).item() > 1e-4);
}

TEST_CASE("models: frozen encoder still passes the input gradient (the poison's path)") {
  nn::manual_seed(6);
  auto m = models::make_encoder("resnet18", options_with(2, 0));
  m->to(DType::f64);
  m->eval();
  m->set_requires_grad(false);
  Tensor x = rand64({1, 3, 8, 8}, 22);  // eval mode: a batch of one is fine
  auto f = [&](const std::vector<Tensor>& in) { return m->forward(in[0]); };
  CHECK_GRADCHECK(f, {x}, 1e-6, 1e-6, 1e-4);
  autograd::backward(sum(m->forward(x)));
  CHECK_FALSE(m->state_dict().at("conv1.weight").grad().defined());
}

// ---- checkpoints -------------------------------------------------------------------------------

TEST_CASE("models: checkpoint save/load round trip reproduces the logits") {
  const auto path = cpoison::test::temp_path("cpoison_models_test_ckpt.h5").string();
  nn::manual_seed(7);
  auto a = models::make_encoder("resnet18", options_with(4, 10));
  Tensor x = random_images({2, 3, 16, 16}, 8);
  {
    autograd::NoGradGuard ng;
    a->forward(x);  // moves the running statistics away from their initial values
  }
  a->eval();
  io::Checkpoint ck;
  io::add_module(ck, *a, "encoder");
  io::save_checkpoint(path, ck);

  nn::manual_seed(8);
  auto b = models::make_encoder("resnet18", options_with(4, 10));
  b->eval();
  io::load_module(io::load_checkpoint(path), *b, "encoder");
  std::filesystem::remove(path);
  auto sa = a->state_dict(), sb = b->state_dict();
  CHECK(sb.at("layer2.0.shortcut.1.running_mean").to_vector<float>() ==
        sa.at("layer2.0.shortcut.1.running_mean").to_vector<float>());
  autograd::NoGradGuard ng;
  CHECK(b->logits(x).to_vector<float>() == a->logits(x).to_vector<float>());
}

TEST_CASE("models: a checkpoint of another model is refused with the offending name") {
  nn::manual_seed(9);
  auto r18 = models::make_encoder("resnet18", options_with(4, 10));
  auto mnv2 = models::make_encoder("mobilenetv2", options_with(8, 10));
  CHECK_THROWS_AS(mnv2->load_state_dict(r18->state_dict()), Error);
  auto wide = models::make_encoder("resnet18", options_with(8, 10));
  CHECK_THROWS_AS(wide->load_state_dict(r18->state_dict()), Error);
}

// ---- errors ------------------------------------------------------------------------------------

TEST_CASE("models: bad names, options and inputs are errors that say what is wrong") {
  std::string msg = error_of([] { models::make_encoder("resnet19"); });
  CHECK(msg.find("resnet19") != std::string::npos);
  CHECK(msg.find("resnet18") != std::string::npos);
  CHECK(msg.find("mobilenetv2") != std::string::npos);
  CHECK(error_of([] { models::make_encoder("resnet18", options_with(0, 10)); }).find("width") != std::string::npos);
  CHECK(error_of([] { models::make_encoder("vgg19", options_with(8, -1)); }).find("num_classes") != std::string::npos);
  CHECK(error_of([] { models::make_encoder("densenet121", options_with(8, 10, 0)); }).find("in_channels") !=
        std::string::npos);
  CHECK(error_of([] { models::make_resnet(20, {}); }).find("18, 34 or 50") != std::string::npos);

  nn::manual_seed(10);
  auto r = models::make_encoder("resnet18", options_with(4, 0));
  msg = error_of([&] { r->forward(random_images({2, 1, 8, 8}, 1)); });
  CHECK(msg.find("resnet18") != std::string::npos);
  CHECK(msg.find("[2, 1, 8, 8]") != std::string::npos);
  CHECK(error_of([&] { r->forward(random_images({3, 8, 8}, 1)); }).find("[N, 3, H, W]") != std::string::npos);
  CHECK(error_of([&] { r->logits(random_images({2, 3, 8, 8}, 1)); }).find("num_classes = 0") != std::string::npos);
  auto v = models::make_encoder("vgg19", options_with(4, 10));
  CHECK(error_of([&] { v->forward(random_images({1, 3, 16, 16}, 1)); }).find("at least 32x32") != std::string::npos);
}

// ---- heads -------------------------------------------------------------------------------------

TEST_CASE("heads: SimCLR/MoCo projector is Linear(D, D) -> ReLU -> Linear(D, 128)") {
  nn::manual_seed(12);
  auto head = models::make_projection_head(512);
  CHECK(head->num_parameters() == 512 * 512 + 512 + 512 * 128 + 128);
  auto state = head->state_dict();
  CHECK(entry_shape(state, "0.weight") == Shape{512, 512});
  CHECK(entry_shape(state, "2.weight") == Shape{128, 512});
  CHECK(state.size() == 4);
  auto small = models::make_projection_head(6, 3, 5);
  CHECK(small->forward(random_images({4, 6}, 2)).shape() == Shape{4, 3});
  autograd::clear_tape();
}

TEST_CASE("heads: BYOL projector and predictor have BN1d between the linears") {
  nn::manual_seed(13);
  auto projector = models::make_byol_projector(512);
  CHECK(projector->num_parameters() == 512 * 4096 + 4096 + 2 * 4096 + 4096 * 256 + 256);
  auto state = projector->state_dict();
  CHECK(entry_shape(state, "0.weight") == Shape{4096, 512});
  CHECK(entry_shape(state, "1.running_mean") == Shape{4096});
  CHECK(entry_shape(state, "3.weight") == Shape{256, 4096});
  auto predictor = models::make_byol_predictor();
  CHECK(predictor->num_parameters() == 256 * 4096 + 4096 + 2 * 4096 + 4096 * 256 + 256);
  CHECK(models::make_linear_classifier(512, 10)->num_parameters() == 5130);
}

TEST_CASE("heads: f64 gradient check through a small BYOL MLP in train mode") {
  nn::manual_seed(14);
  auto mlp = models::make_byol_mlp(3, 5, 2);
  mlp->to(DType::f64);
  mlp->train();
  Tensor x = rand64({4, 3}, 23);
  auto state = mlp->state_dict();
  auto f = [&](const std::vector<Tensor>& in) { return mlp->forward(in[0]); };
  CHECK_GRADCHECK(f, {x, state.at("0.weight"), state.at("1.weight"), state.at("3.bias")}, 1e-6, 1e-6, 1e-4);
}

TEST_CASE("heads: dimensions below 1 are errors naming the head and the field") {
  std::string msg = error_of([] { models::make_projection_head(512, 0); });
  CHECK(msg.find("projection head") != std::string::npos);
  CHECK(msg.find("out_dim") != std::string::npos);
  CHECK(error_of([] { models::make_byol_mlp(256, -1, 256); }).find("hidden_dim") != std::string::npos);
  CHECK(error_of([] { models::make_linear_classifier(512, 0); }).find("classes") != std::string::npos);
}
