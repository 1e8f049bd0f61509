// Models by name, for the command line and configuration files.
#pragma once
#include <string>
#include <vector>

#include "models/encoder.h"

namespace cpoison::models {

// "resnet18", "resnet34", "resnet50", "vgg19", "densenet121", "mobilenetv2", in that order.
const std::vector<std::string>& model_names();

// Builds the named model, drawing its initial weights from nn::init_generator(). Throws
// cpoison::Error listing the valid names when `name` is unknown, or naming the bad option.
EncoderPtr make_encoder(const std::string& name, const ModelOptions& options = {});

}  // namespace cpoison::models
