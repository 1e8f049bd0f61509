// The Encoder base: option checks, the input check and the linear head.
#include "models/encoder.h"

#include <utility>

namespace cpoison::models {

int64_t scale_channels(int64_t c, int64_t width) {
  int64_t scaled = (c * width + 32) / 64;
  return scaled < 1 ? 1 : scaled;
}

Encoder::Encoder(std::string name, const ModelOptions& options) : name_(std::move(name)), options_(options) {
  CP_CHECK(options.width >= 1, name_, "width must be at least 1, got ", options.width);
  CP_CHECK(options.in_channels >= 1, name_, "in_channels must be at least 1, got ", options.in_channels);
  CP_CHECK(options.num_classes >= 0, name_, "num_classes must be 0 (no head) or more, got ", options.num_classes);
}

void Encoder::finish(int64_t feature_dim, const std::string& head_name) {
  feature_dim_ = feature_dim;
  head_name_ = head_name;
  if (options_.num_classes > 0)
    head_ = register_module(head_name, std::make_shared<nn::Linear>(feature_dim, options_.num_classes));
}

Tensor Encoder::forward(const Tensor& x) {
  CP_CHECK(x.defined(), name_, "input is undefined");
  CP_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels, name_, "expected input [N, ", options_.in_channels,
           ", H, W], got ", x.describe());
  CP_CHECK(x.size(0) >= 1, name_, "input has an empty batch: ", x.describe());
  const int64_t min_size = min_input_size();
  CP_CHECK(x.size(2) >= min_size && x.size(3) >= min_size, name_, "input must be at least ", min_size, "x", min_size,
           ", got ", x.describe());
  return encode(x);
}

Tensor Encoder::logits(const Tensor& x) {
  CP_CHECK(head_ != nullptr, name_, "logits() needs a linear head; this encoder was built with num_classes = 0");
  return head_->forward(forward(x));
}

}  // namespace cpoison::models
