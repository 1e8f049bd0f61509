// Basic layers. Initialisation (from nn::init_generator()):
//   Conv2d: Kaiming normal, fan_out, ReLU gain, no bias by default. fan_out is PyTorch's
//     weight.size(0) * k * k = out * k * k (the group count does not enter, as in
//     torch.nn.init.kaiming_normal_(mode="fan_out")), so std = sqrt(2 / (out * k * k));
//     an enabled bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in / groups * k * k;
//   Linear: PyTorch's default, weight and bias ~ U(-1/sqrt(in), 1/sqrt(in));
//   BatchNorm: weight 1, bias 0, running mean 0, running var 1.
#pragma once
#include <initializer_list>

#include "engine/nn/module.h"
#include "engine/ops/nn.h"

namespace cpoison::nn {

class Conv2d : public Module {
public:
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0, int64_t groups = 1, bool bias = false);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;  // bias undefined when off
  Conv2dOptions options;
};

// One class for 1-d ([N, C]) and 2-d ([N, C, H, W]) inputs; PyTorch's BatchNorm1d/2d names.
class BatchNorm : public Module {
public:
  explicit BatchNorm(int64_t channels, double momentum = 0.1, double eps = 1e-5, bool affine = true);
  // Training: normalises with the batch statistics, updates running_mean/var and adds one to
  // num_batches_tracked (an i64 scalar, as PyTorch's). Eval: uses the running statistics.
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double momentum, eps;
};

class Linear : public Module {
public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
};

class ReLU : public Module {
public:
  Tensor forward(const Tensor& x) override;
};

class Identity : public Module {
public:
  Tensor forward(const Tensor& x) override { return x; }
};

// Children named "0", "1", ... (PyTorch's nn.Sequential naming).
class Sequential : public Module {
public:
  Sequential() = default;
  Sequential(std::initializer_list<ModulePtr> mods);
  void push_back(ModulePtr m);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return children().size(); }
};

// Linear -> [BatchNorm1d] -> ReLU -> ... -> Linear, named like nn.Sequential ("0", "1", ...).
// dims = {in, hidden..., out}; batch_norm adds BatchNorm1d after every hidden Linear.
std::shared_ptr<Sequential> mlp(const std::vector<int64_t>& dims, bool batch_norm = false);

}  // namespace cpoison::nn
