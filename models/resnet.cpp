// CIFAR ResNets (kuangliu/pytorch-cifar models/resnet.py): 3x3 stride-1 stem conv + BN + ReLU,
// no max-pool, four stages of width w, 2w, 4w, 8w with strides 1, 2, 2, 2, global average pool.
// Shortcut: identity, or 1x1 conv + BN ("shortcut.0", "shortcut.1") when the shape changes.
// Init (docs/reference-implementation.md §3): convs Kaiming normal fan_out/ReLU, BN weight 1 bias 0,
// both done by nn::Conv2d and nn::BatchNorm. Layout: x [N, C, H, W].
#include <memory>
#include <string>
#include <vector>

#include "engine/ops/elementwise.h"
#include "engine/ops/nn.h"
#include "models/encoder.h"

namespace cpoison::models {
namespace {

using nn::BatchNorm;
using nn::Conv2d;
using nn::Sequential;

// Projection shortcut for a block whose output shape differs from its input; null = identity.
std::shared_ptr<Sequential> make_shortcut(int64_t in_planes, int64_t out_planes, int64_t stride) {
  if (stride == 1 && in_planes == out_planes) return nullptr;
  auto shortcut = std::make_shared<Sequential>();
  shortcut->push_back(std::make_shared<Conv2d>(in_planes, out_planes, 1, stride, 0));
  shortcut->push_back(std::make_shared<BatchNorm>(out_planes));
  return shortcut;
}

class BasicBlock : public nn::Module {
public:
  static constexpr int64_t expansion = 1;
  BasicBlock(int64_t in_planes, int64_t planes, int64_t stride) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(in_planes, planes, 3, stride, 1));
    bn1 = register_module("bn1", std::make_shared<BatchNorm>(planes));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, 1, 1));
    bn2 = register_module("bn2", std::make_shared<BatchNorm>(planes));
    shortcut = make_shortcut(in_planes, planes * expansion, stride);
    if (shortcut) register_module("shortcut", shortcut);
  }
  Tensor forward(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    out = bn2->forward(conv2->forward(out));
    return relu(add(out, shortcut ? shortcut->forward(x) : x));
  }
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm> bn1, bn2;
  std::shared_ptr<Sequential> shortcut;
};

class Bottleneck : public nn::Module {
public:
  static constexpr int64_t expansion = 4;
  Bottleneck(int64_t in_planes, int64_t planes, int64_t stride) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(in_planes, planes, 1));
    bn1 = register_module("bn1", std::make_shared<BatchNorm>(planes));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, stride, 1));
    bn2 = register_module("bn2", std::make_shared<BatchNorm>(planes));
    conv3 = register_module("conv3", std::make_shared<Conv2d>(planes, planes * expansion, 1));
    bn3 = register_module("bn3", std::make_shared<BatchNorm>(planes * expansion));
    shortcut = make_shortcut(in_planes, planes * expansion, stride);
    if (shortcut) register_module("shortcut", shortcut);
  }
  Tensor forward(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    out = relu(bn2->forward(conv2->forward(out)));
    out = bn3->forward(conv3->forward(out));
    return relu(add(out, shortcut ? shortcut->forward(x) : x));
  }
  std::shared_ptr<Conv2d> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm> bn1, bn2, bn3;
  std::shared_ptr<Sequential> shortcut;
};

template <class Block>
class ResNet : public Encoder {
public:
  ResNet(const std::string& name, const std::vector<int64_t>& blocks_per_stage, const ModelOptions& options)
      : Encoder(name, options) {
    const int64_t w = options.width;
    conv1 = register_module("conv1", std::make_shared<Conv2d>(options.in_channels, w, 3, 1, 1));
    bn1 = register_module("bn1", std::make_shared<BatchNorm>(w));
    int64_t in_planes = w;
    const int64_t stage_strides[4] = {1, 2, 2, 2};
    for (int s = 0; s < 4; ++s) {
      const int64_t planes = w << s;
      auto stage = std::make_shared<Sequential>();
      for (int64_t b = 0; b < blocks_per_stage[s]; ++b) {
        stage->push_back(std::make_shared<Block>(in_planes, planes, b == 0 ? stage_strides[s] : 1));
        in_planes = planes * Block::expansion;
      }
      stages.push_back(register_module("layer" + std::to_string(s + 1), stage));
    }
    finish(in_planes);
  }

protected:
  Tensor encode(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    for (auto& stage : stages) out = stage->forward(out);
    out = global_avg_pool2d(out);
    return out.reshape({out.size(0), out.size(1)});
  }

private:
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm> bn1;
  std::vector<std::shared_ptr<Sequential>> stages;
};

}  // namespace

EncoderPtr make_resnet(int depth, const ModelOptions& options) {
  switch (depth) {
    case 18: return std::make_shared<ResNet<BasicBlock>>("resnet18", std::vector<int64_t>{2, 2, 2, 2}, options);
    case 34: return std::make_shared<ResNet<BasicBlock>>("resnet34", std::vector<int64_t>{3, 4, 6, 3}, options);
    case 50: return std::make_shared<ResNet<Bottleneck>>("resnet50", std::vector<int64_t>{3, 4, 6, 3}, options);
    default: break;
  }
  fail("make_resnet", "depth must be 18, 34 or 50, got ", depth);
}

}  // namespace cpoison::models
