// Layers over engine/ops/nn.h. Images are NCHW (N batch, C channels, H rows, W columns).
#include "engine/nn/layers.h"

#include <cmath>
#include <string>

#include "engine/ops/elementwise.h"

namespace cpoison::nn {

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, int64_t groups, bool has_bias) {
  CP_CHECK(in > 0 && out > 0 && kernel > 0 && stride > 0 && padding >= 0 && groups > 0, "Conv2d",
           "invalid configuration in=", in, " out=", out, " kernel=", kernel, " stride=", stride, " padding=", padding,
           " groups=", groups);
  CP_CHECK(in % groups == 0 && out % groups == 0, "Conv2d", "groups=", groups, " must divide in=", in, " and out=", out);
  options = Conv2dOptions{stride, padding, groups};
  double fan_out = (double)(out * kernel * kernel);
  weight = register_parameter("weight", normal({out, in / groups, kernel, kernel}, 0.0, std::sqrt(2.0 / fan_out), init_generator()));
  if (has_bias) {
    double bound = 1.0 / std::sqrt((double)(in / groups * kernel * kernel));
    bias = register_parameter("bias", uniform({out}, -bound, bound, init_generator()));
  }
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, options); }

BatchNorm::BatchNorm(int64_t channels, double momentum_, double eps_, bool affine) : momentum(momentum_), eps(eps_) {
  CP_CHECK(channels > 0, "BatchNorm", "channels must be positive, got ", channels);
  CP_CHECK(momentum >= 0 && momentum <= 1, "BatchNorm", "momentum ", momentum, " outside [0, 1]");
  CP_CHECK(eps > 0, "BatchNorm", "eps must be positive, got ", eps);
  // PyTorch's registration order, so state dicts list the same names in the same order.
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({channels}));
    bias = register_parameter("bias", Tensor::zeros({channels}));
  }
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::scalar(0, DType::i64));
}

Tensor BatchNorm::forward(const Tensor& x) {
  int64_t channels = running_mean.size(0);
  CP_CHECK(x.defined() && (x.dim() == 2 || x.dim() == 4), "BatchNorm", "input must be [N, C] or [N, C, H, W], got ",
           x.defined() ? x.describe() : std::string("undefined"));
  CP_CHECK(x.size(1) == channels, "BatchNorm", "input ", x.describe(), " has ", x.size(1), " channels, the layer has ", channels);
  Tensor y = batch_norm(x, weight, bias, running_mean, running_var, training_, momentum, eps);
  if (training_) {
    if (num_batches_tracked.device() == Device::cpu)
      ++*num_batches_tracked.data<int64_t>();
    else  // one 8-byte read per training forward; integer tensors have no device arithmetic op
      num_batches_tracked.fill_((double)(num_batches_tracked.item() + 1));
  }
  return y;
}

Linear::Linear(int64_t in, int64_t out, bool has_bias) {
  CP_CHECK(in > 0 && out > 0, "Linear", "in and out must be positive, got in=", in, " out=", out);
  double bound = 1.0 / std::sqrt((double)in);
  weight = register_parameter("weight", uniform({out, in}, -bound, bound, init_generator()));
  if (has_bias) bias = register_parameter("bias", uniform({out}, -bound, bound, init_generator()));
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

Sequential::Sequential(std::initializer_list<ModulePtr> mods) {
  for (auto& m : mods) push_back(m);
}

void Sequential::push_back(ModulePtr m) { add_child(std::to_string(size()), std::move(m)); }

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& c : children()) h = c.second->forward(h);
  return h;
}

std::shared_ptr<Sequential> mlp(const std::vector<int64_t>& dims, bool batch_norm) {
  CP_CHECK(dims.size() >= 2, "mlp", "needs at least {in, out}, got dims ", dims);
  auto seq = std::make_shared<Sequential>();
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    seq->push_back(std::make_shared<Linear>(dims[i], dims[i + 1]));
    if (i + 2 < dims.size()) {
      if (batch_norm) seq->push_back(std::make_shared<BatchNorm>(dims[i + 1]));
      seq->push_back(std::make_shared<ReLU>());
    }
  }
  return seq;
}

}  // namespace cpoison::nn
