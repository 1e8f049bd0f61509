// DenseNet-121, CIFAR variant (kuangliu/pytorch-cifar models/densenet.py): growth rate k = 32,
// dense blocks of [6, 12, 24, 16] bottleneck layers, compression 0.5, 3x3 stride-1 stem conv
// with 2k channels (no BN, no max-pool), final BN + ReLU + global average pool.
// Names: conv1, dense1.<i>.{bn1, conv1, bn2, conv2}, trans1.{bn, conv}, ..., dense4, bn, linear.
// Each bottleneck concatenates [new features, input] along C, in that order, as kuangliu does
// (the order decides which weight columns meet which channels, so it matters for checkpoints).
// Width: k = 32 * width / 64 (rounded). Init: convs Kaiming normal fan_out/ReLU, BN 1/0.
// Layout: x [N, C, H, W].
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops/elementwise.h"
#include "engine/ops/nn.h"
#include "engine/ops/shape.h"
#include "models/encoder.h"

namespace cpoison::models {
namespace {

using nn::BatchNorm;
using nn::Conv2d;

class DenseLayer : public nn::Module {
public:
  DenseLayer(int64_t in_planes, int64_t growth) {
    bn1 = register_module("bn1", std::make_shared<BatchNorm>(in_planes));
    conv1 = register_module("conv1", std::make_shared<Conv2d>(in_planes, 4 * growth, 1));
    bn2 = register_module("bn2", std::make_shared<BatchNorm>(4 * growth));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(4 * growth, growth, 3, 1, 1));
  }
  Tensor forward(const Tensor& x) override {
    Tensor out = conv1->forward(relu(bn1->forward(x)));
    out = conv2->forward(relu(bn2->forward(out)));
    return concat({out, x}, 1);
  }
  std::shared_ptr<BatchNorm> bn1, bn2;
  std::shared_ptr<Conv2d> conv1, conv2;
};

class Transition : public nn::Module {
public:
  Transition(int64_t in_planes, int64_t out_planes) {
    bn = register_module("bn", std::make_shared<BatchNorm>(in_planes));
    conv = register_module("conv", std::make_shared<Conv2d>(in_planes, out_planes, 1));
  }
  Tensor forward(const Tensor& x) override { return avg_pool2d(conv->forward(relu(bn->forward(x))), 2, 2); }
  std::shared_ptr<BatchNorm> bn;
  std::shared_ptr<Conv2d> conv;
};

class DenseNet : public Encoder {
public:
  DenseNet(const std::string& name, const std::vector<int64_t>& layers_per_block, int64_t growth_rate,
           double reduction, const ModelOptions& options)
      : Encoder(name, options) {
    const int64_t growth = scale_channels(growth_rate, options.width);
    int64_t planes = 2 * growth;
    conv1 = register_module("conv1", std::make_shared<Conv2d>(options.in_channels, planes, 3, 1, 1));
    for (size_t b = 0; b < layers_per_block.size(); ++b) {
      auto block = std::make_shared<nn::Sequential>();
      for (int64_t i = 0; i < layers_per_block[b]; ++i) {
        block->push_back(std::make_shared<DenseLayer>(planes, growth));
        planes += growth;
      }
      dense.push_back(register_module("dense" + std::to_string(b + 1), block));
      if (b + 1 < layers_per_block.size()) {
        const auto out_planes = static_cast<int64_t>(std::floor(static_cast<double>(planes) * reduction));
        trans.push_back(register_module("trans" + std::to_string(b + 1), std::make_shared<Transition>(planes, out_planes)));
        planes = out_planes;
      }
    }
    bn = register_module("bn", std::make_shared<BatchNorm>(planes));
    finish(planes);
  }

protected:
  Tensor encode(const Tensor& x) override {
    Tensor out = conv1->forward(x);
    for (size_t b = 0; b < dense.size(); ++b) {
      out = dense[b]->forward(out);
      if (b < trans.size()) out = trans[b]->forward(out);
    }
    out = global_avg_pool2d(relu(bn->forward(out)));
    return out.reshape({out.size(0), out.size(1)});
  }
  // Three 2x2 average pools in the transitions.
  int64_t min_input_size() const override { return int64_t(1) << trans.size(); }

private:
  std::shared_ptr<Conv2d> conv1;
  std::vector<std::shared_ptr<nn::Sequential>> dense;
  std::vector<std::shared_ptr<Transition>> trans;
  std::shared_ptr<BatchNorm> bn;
};

}  // namespace

EncoderPtr make_densenet121(const ModelOptions& options) {
  return std::make_shared<DenseNet>("densenet121", std::vector<int64_t>{6, 12, 24, 16}, 32, 0.5, options);
}

}  // namespace cpoison::models
