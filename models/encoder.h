// Backbones for the CIFAR-sized experiments, as encoders: an image batch x [N, C, H, W]
// (N batch, C channels, H rows, W columns) maps to features [N, D] taken after global average
// pooling. An optional linear classification head turns the features into logits [N, classes].
//
// Every model is the CIFAR variant of kuangliu/pytorch-cifar (3x3 stride-1 stem, no max-pool),
// with the same module names, so the state dict of a model built here loads into that PyTorch
// model (and back). Differences from that code, none of which changes a parameter or a name:
//   - the final pooling is a global average (kuangliu's avg_pool2d(4) on the 4x4 map that a
//     32x32 input produces), so inputs of other sizes (28x28 Fashion-MNIST) work too;
//   - channel widths scale with ModelOptions::width (64 = the published model);
//   - the stem takes ModelOptions::in_channels channels (1 for grayscale without replication).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "engine/nn/layers.h"
#include "engine/nn/module.h"

namespace cpoison::models {

// Bounds on the options a flag or a file may ask for (make_encoder refuses anything outside):
// the base width (64: the published models), image channels and classes of the linear head.
inline constexpr int64_t kMaxWidth = 4096;
inline constexpr int64_t kMaxChannels = 4096;
inline constexpr int64_t kMaxClasses = int64_t(1) << 24;

struct ModelOptions {
  // Base width. ResNets use channels width, 2*width, 4*width, 8*width (64: the standard
  // models). The other models scale every channel count by width / 64 (rounded, at least 1).
  int64_t width = 64;
  int64_t in_channels = 3;
  // Classes of the linear head; 0 builds the encoder without one.
  int64_t num_classes = 0;
  // Convolution weights: Kaiming normal, fan_out, ReLU gain (the authors' release,
  // docs/reference-implementation.md §3), or PyTorch's default for nn.Conv2d (kaiming_uniform_
  // with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), what kuangliu's CIFAR models get).
  // The choice decides whether an unoptimised class-wise pattern is a shortcut for a supervised
  // victim (docs/experiments.md), so it is a stated victim setting. Linear layers and BatchNorm
  // are initialised the same way under both.
  enum class Init { kaiming_fan_out, pytorch };
  Init init = Init::kaiming_fan_out;
};

// "kaiming-fan-out" | "pytorch"; Error naming the choices otherwise.
ModelOptions::Init parse_init(const std::string& name);
const char* init_name(ModelOptions::Init init);

// Channel count c of the width-64 model scaled to `width` (rounded to nearest, at least 1).
int64_t scale_channels(int64_t c, int64_t width);

class Encoder : public nn::Module {
public:
  // Features [N, feature_dim()] for x [N, in_channels(), H, W]. Throws cpoison::Error (naming the
  // model and the input) when x is not 4-d with in_channels() channels or too small for the model.
  Tensor forward(const Tensor& x) final;
  // Logits [N, num_classes()] = head(forward(x)). Throws when the encoder was built without a head.
  Tensor logits(const Tensor& x);

  const std::string& name() const { return name_; }
  int64_t feature_dim() const { return feature_dim_; }
  int64_t in_channels() const { return options_.in_channels; }
  int64_t num_classes() const { return options_.num_classes; }
  const ModelOptions& options() const { return options_; }
  // The linear head (null without one) and its state-dict prefix: "linear" for every model but
  // VGG, whose PyTorch definition calls it "classifier".
  const std::shared_ptr<nn::Linear>& head() const { return head_; }
  const std::string& head_name() const { return head_name_; }

protected:
  // Checks the options (width, in_channels >= 1; num_classes >= 0) and throws naming the field.
  Encoder(std::string name, const ModelOptions& options);
  // The backbone proper: called by forward() after the input check, returns [N, feature_dim()].
  virtual Tensor encode(const Tensor& x) = 0;
  // Smallest H and W the model accepts (VGG's five 2x2 max-pools need 32).
  virtual int64_t min_input_size() const { return 1; }
  // Called at the end of each model's constructor: records D and registers the head last, as the
  // PyTorch definitions do.
  void finish(int64_t feature_dim, const std::string& head_name = "linear");

private:
  std::string name_;
  ModelOptions options_;
  int64_t feature_dim_ = 0;
  std::shared_ptr<nn::Linear> head_;
  std::string head_name_ = "linear";
};

using EncoderPtr = std::shared_ptr<Encoder>;

// Model families. Each throws cpoison::Error for a bad option or an unsupported depth.
EncoderPtr make_resnet(int depth, const ModelOptions& options);  // depth 18, 34 or 50
EncoderPtr make_vgg19(const ModelOptions& options);              // VGG-19 with batch norm
EncoderPtr make_densenet121(const ModelOptions& options);
EncoderPtr make_mobilenetv2(const ModelOptions& options);

}  // namespace cpoison::models
