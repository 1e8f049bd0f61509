// MobileNetV2, CIFAR variant (kuangliu/pytorch-cifar models/mobilenetv2.py): 3x3 stride-1 stem
// (32 channels), inverted-residual blocks from the table below with the second stage's stride
// changed 2 -> 1 for 32x32 inputs, 1x1 conv to 1280, BN + ReLU, global average pool.
// Names: conv1, bn1, layers.<i>.{conv1, bn1, conv2, bn2, conv3, bn3, shortcut.0, shortcut.1},
// conv2, bn2, linear.
// kuangliu's residual rule, kept as is: a stride-1 block always adds a shortcut (identity when
// the channels agree, else 1x1 conv + BN); a stride-2 block has none. Its blocks have no ReLU6
// (plain ReLU) and no activation after the projection conv3.
// Width: every channel count scales by width / 64 (rounded). Init: convs Kaiming normal
// fan_out/ReLU, BN 1/0. Layout: x [N, C, H, W].
#include <memory>
#include <vector>

#include "engine/ops/elementwise.h"
#include "engine/ops/nn.h"
#include "models/encoder.h"

namespace cpoison::models {
namespace {

using nn::BatchNorm;
using nn::Conv2d;

// expand 1x1 -> depthwise 3x3 (stride) -> project 1x1
class InvertedResidual : public nn::Module {
public:
  InvertedResidual(int64_t in_planes, int64_t out_planes, int64_t expansion, int64_t stride) : stride_(stride) {
    const int64_t planes = expansion * in_planes;
    conv1 = register_module("conv1", std::make_shared<Conv2d>(in_planes, planes, 1));
    bn1 = register_module("bn1", std::make_shared<BatchNorm>(planes));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, stride, 1, /*groups=*/planes));
    bn2 = register_module("bn2", std::make_shared<BatchNorm>(planes));
    conv3 = register_module("conv3", std::make_shared<Conv2d>(planes, out_planes, 1));
    bn3 = register_module("bn3", std::make_shared<BatchNorm>(out_planes));
    if (stride == 1 && in_planes != out_planes) {
      shortcut = std::make_shared<nn::Sequential>();
      shortcut->push_back(std::make_shared<Conv2d>(in_planes, out_planes, 1));
      shortcut->push_back(std::make_shared<BatchNorm>(out_planes));
      register_module("shortcut", shortcut);
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    out = relu(bn2->forward(conv2->forward(out)));
    out = bn3->forward(conv3->forward(out));
    if (stride_ != 1) return out;
    return add(out, shortcut ? shortcut->forward(x) : x);
  }
  std::shared_ptr<Conv2d> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm> bn1, bn2, bn3;
  std::shared_ptr<nn::Sequential> shortcut;

private:
  int64_t stride_;
};

struct StageConfig {
  int64_t expansion, out_planes, blocks, stride;
};
const std::vector<StageConfig> kStages = {
    {1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1},
};

class MobileNetV2 : public Encoder {
public:
  explicit MobileNetV2(const ModelOptions& options) : Encoder("mobilenetv2", options) {
    const int64_t w = options.width;
    int64_t in_planes = scale_channels(32, w);
    conv1 = register_module("conv1", std::make_shared<Conv2d>(options.in_channels, in_planes, 3, 1, 1));
    bn1 = register_module("bn1", std::make_shared<BatchNorm>(in_planes));
    layers = register_module("layers", std::make_shared<nn::Sequential>());
    for (const auto& stage : kStages) {
      const int64_t out_planes = scale_channels(stage.out_planes, w);
      for (int64_t b = 0; b < stage.blocks; ++b) {
        layers->push_back(std::make_shared<InvertedResidual>(in_planes, out_planes, stage.expansion, b == 0 ? stage.stride : 1));
        in_planes = out_planes;
      }
    }
    const int64_t last = scale_channels(1280, w);
    conv2 = register_module("conv2", std::make_shared<Conv2d>(in_planes, last, 1));
    bn2 = register_module("bn2", std::make_shared<BatchNorm>(last));
    finish(last);
  }

protected:
  Tensor encode(const Tensor& x) override {
    Tensor out = relu(bn1->forward(conv1->forward(x)));
    out = layers->forward(out);
    out = global_avg_pool2d(relu(bn2->forward(conv2->forward(out))));
    return out.reshape({out.size(0), out.size(1)});
  }

private:
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm> bn1, bn2;
  std::shared_ptr<nn::Sequential> layers;
};

}  // namespace

EncoderPtr make_mobilenetv2(const ModelOptions& options) { return std::make_shared<MobileNetV2>(options); }

}  // namespace cpoison::models
