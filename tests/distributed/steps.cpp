#include "tests/distributed/steps.h"

#include <fstream>

#include "algorithms/learner.h"
#include "algorithms/losses.h"
#include "engine/autograd.h"
#include "engine/distributed/ops.h"
#include "engine/error.h"
#include "engine/nn/layers.h"
#include "engine/ops/ops.h"
#include "engine/optim/sgd.h"
#include "engine/rng.h"
#include "models/registry.h"

namespace cpoison::testing {
namespace {

constexpr int64_t kImage = 16;

Tensor images(int64_t n, uint32_t stream) {
  Generator g(2024, stream);
  return uniform({n, 3, kImage, kImage}, 0, 1, g);
}

models::ModelOptions small_model(int64_t classes) {
  models::ModelOptions o;
  o.width = 4;
  o.in_channels = 3;
  o.num_classes = classes;
  return o;
}

void append_state(const std::string& prefix, const nn::Module& m, StepResult& r) {
  auto add = [&](const std::string& name, const Tensor& t) {
    for (float v : t.detach().to(Device::cpu).contiguous().to_vector<float>()) r.state.push_back(v);
    r.tensors.emplace_back(prefix + name, (size_t)t.numel());
  };
  for (auto& [name, p] : m.named_parameters()) add(name, p);
  for (auto& [name, b] : m.named_buffers())
    if (b.dtype() == DType::f32) add(name, b);
}

// Backward, gradients of `named` averaged over the ranks, one SGD step of them; the global loss.
double finish_step(const Tensor& loss, const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<Tensor> params;
  for (auto& np : named) params.push_back(np.second);
  autograd::backward(loss);
  distributed::all_reduce_gradients(params);
  optim::SGDOptions so;
  so.lr = 0.5;
  so.momentum = 0.9;
  so.weight_decay = 1e-4;
  optim::SGD opt(named, so);
  opt.step();
  return distributed::all_reduce_sum(loss.item()) / distributed::size();
}

double finish_step(const Tensor& loss, const std::vector<const nn::Module*>& modules) {
  std::vector<std::pair<std::string, Tensor>> named;
  for (size_t i = 0; i < modules.size(); ++i)
    for (auto& [name, p] : modules[i]->named_parameters()) named.emplace_back(std::to_string(i) + "." + name, p);
  return finish_step(loss, named);
}

}  // namespace

StepResult simclr_step(int64_t global_batch) {
  nn::manual_seed(7);
  auto encoder = models::make_encoder("resnet18", small_model(0));
  auto projector = nn::mlp({encoder->feature_dim(), 32, 16}, /*batch_norm=*/true);
  encoder->train();
  projector->train();
  Tensor v1 = images(global_batch, 1), v2 = images(global_batch, 2);
  StepResult r;
  {
    distributed::DataParallelScope scope;  // inert with one process
    Tensor x = concat({distributed::local_rows(v1), distributed::local_rows(v2)}, 0);
    Tensor z = projector->forward(encoder->forward(x));
    const int64_t b = x.size(0) / 2;
    Tensor loss = algorithms::nt_xent_loss(narrow(z, 0, 0, b), narrow(z, 0, b, b), 0.5);
    r.loss = finish_step(loss, {encoder.get(), projector.get()});
  }
  append_state("encoder.", *encoder, r);
  append_state("projector.", *projector, r);
  return r;
}

StepResult supervised_step(int64_t global_batch) {
  nn::manual_seed(11);
  auto encoder = models::make_encoder("resnet18", small_model(10));
  encoder->train();
  Tensor x = images(global_batch, 3);
  std::vector<int64_t> labels(global_batch);
  for (int64_t i = 0; i < global_batch; ++i) labels[i] = (i * 7 + 3) % 10;
  Tensor y = Tensor::from_vector(labels, {global_batch}, DType::i64);
  StepResult r;
  {
    distributed::DataParallelScope scope;
    Tensor logits = encoder->logits(distributed::local_rows(x));
    Tensor loss = cross_entropy(logits, distributed::local_rows(y));
    r.loss = finish_step(loss, {encoder.get()});
  }
  append_state("encoder.", *encoder, r);
  return r;
}

StepResult moco_step(int64_t global_batch) {
  nn::manual_seed(13);
  algorithms::AlgoConfig ac = algorithms::AlgoConfig::defaults(algorithms::Algo::moco);
  ac.queue_size = 4 * global_batch;  // the step's keys overwrite a quarter of it, the rest stays the seeded start
  ac.proj_dim = 16;
  ac.seed = 13;
  auto learner = algorithms::make_learner(algorithms::Algo::moco, "resnet18", small_model(0), ac);
  learner->train();
  Tensor v1 = images(global_batch, 4), v2 = images(global_batch, 5);
  StepResult r;
  {
    distributed::DataParallelScope scope;
    Tensor loss = learner->loss({distributed::local_rows(v1), distributed::local_rows(v2)});
    r.loss = finish_step(loss, learner->named_online_parameters());
    learner->momentum_update();
  }
  append_state("", *learner, r);
  return r;
}

StepResult run_step(const std::string& which, int64_t global_batch) {
  if (which == "simclr") return simclr_step(global_batch);
  if (which == "supervised") return supervised_step(global_batch);
  if (which == "moco") return moco_step(global_batch);
  fail("run_step", "unknown step '", which, "' (simclr, supervised or moco)");
}

void write_result(const std::string& path, const StepResult& r) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  CP_CHECK(f.good(), path, "cannot write");
  f.write(reinterpret_cast<const char*>(&r.loss), sizeof r.loss);
  f.write(reinterpret_cast<const char*>(r.state.data()), (std::streamsize)(r.state.size() * sizeof(double)));
  CP_CHECK(f.good(), path, "write failed");
}

StepResult read_result(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  CP_CHECK(f.good(), path, "cannot read");
  StepResult r;
  f.read(reinterpret_cast<char*>(&r.loss), sizeof r.loss);
  for (double v; f.read(reinterpret_cast<char*>(&v), sizeof v);) r.state.push_back(v);
  return r;
}

}  // namespace cpoison::testing
