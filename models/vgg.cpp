// VGG-19 with batch norm, CIFAR variant (kuangliu/pytorch-cifar models/vgg.py):
// features = [conv3x3(+bias) -> BN -> ReLU] per channel entry and a 2x2 max-pool per 'M' of
// [64, 64, M, 128, 128, M, 256 x4, M, 512 x4, M, 512 x4, M], named "features.<index>" exactly as
// that nn.Sequential numbers them; the head is "classifier" (Linear(512, classes)).
// kuangliu ends the features with AvgPool2d(1, 1), an identity on the 1x1 map of a 32x32 input;
// it holds no parameters and is last, so leaving it out changes no name. We pool globally instead.
// Init: convs Kaiming normal fan_out/ReLU with zero bias (torchvision's VGG init), BN 1/0.
// Layout: x [N, C, H, W].
#include <memory>
#include <vector>

#include "engine/ops/nn.h"
#include "models/encoder.h"

namespace cpoison::models {
namespace {

class MaxPool2d : public nn::Module {
public:
  MaxPool2d(int64_t kernel, int64_t stride) : kernel_(kernel), stride_(stride) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel_, stride_); }

private:
  int64_t kernel_, stride_;
};

constexpr int64_t kPool = 0;  // an 'M' entry of the configuration
const std::vector<int64_t> kVgg19 = {64,  64,  kPool, 128, 128, kPool, 256, 256, 256, 256, kPool, 512, 512,
                                     512, 512, kPool, 512, 512, 512, 512, kPool};

class Vgg : public Encoder {
public:
  Vgg(const std::string& name, const std::vector<int64_t>& config, const ModelOptions& options)
      : Encoder(name, options) {
    features = register_module("features", std::make_shared<nn::Sequential>());
    int64_t in = options.in_channels;
    for (int64_t entry : config) {
      if (entry == kPool) {
        features->push_back(std::make_shared<MaxPool2d>(2, 2));
        ++pools;
        continue;
      }
      const int64_t out = scale_channels(entry, options.width);
      auto conv = std::make_shared<nn::Conv2d>(in, out, 3, 1, 1, 1, /*bias=*/true);
      conv->bias.fill_(0.0);
      features->push_back(conv);
      features->push_back(std::make_shared<nn::BatchNorm>(out));
      features->push_back(std::make_shared<nn::ReLU>());
      in = out;
    }
    finish(in, "classifier");
  }

protected:
  Tensor encode(const Tensor& x) override {
    Tensor out = global_avg_pool2d(features->forward(x));
    return out.reshape({out.size(0), out.size(1)});
  }
  // Each 2x2 pool halves (rounding down) the map; it must stay at least 1x1.
  int64_t min_input_size() const override { return int64_t(1) << pools; }

private:
  std::shared_ptr<nn::Sequential> features;
  int pools = 0;
};

}  // namespace

EncoderPtr make_vgg19(const ModelOptions& options) { return std::make_shared<Vgg>("vgg19", kVgg19, options); }

}  // namespace cpoison::models
