// Models by name.
#include "models/registry.h"

#include <cmath>
#include <functional>
#include <utility>

#include "engine/rng.h"

namespace cpoison::models {
namespace {

using Factory = std::function<EncoderPtr(const ModelOptions&)>;

const std::vector<std::pair<std::string, Factory>>& factories() {
  static const std::vector<std::pair<std::string, Factory>> table = {
      {"resnet18", [](const ModelOptions& o) { return make_resnet(18, o); }},
      {"resnet34", [](const ModelOptions& o) { return make_resnet(34, o); }},
      {"resnet50", [](const ModelOptions& o) { return make_resnet(50, o); }},
      {"vgg19", make_vgg19},
      {"densenet121", make_densenet121},
      {"mobilenetv2", make_mobilenetv2},
  };
  return table;
}

}  // namespace

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& [name, factory] : factories()) n.push_back(name);
    return n;
  }();
  return names;
}

ModelOptions::Init parse_init(const std::string& name) {
  if (name == "kaiming-fan-out") return ModelOptions::Init::kaiming_fan_out;
  if (name == "pytorch") return ModelOptions::Init::pytorch;
  fail("init", "unknown initialisation '", name, "' (choose kaiming-fan-out or pytorch)");
}

const char* init_name(ModelOptions::Init init) {
  return init == ModelOptions::Init::pytorch ? "pytorch" : "kaiming-fan-out";
}

namespace {
// PyTorch's nn.Conv2d.reset_parameters: kaiming_uniform_(a = sqrt(5)) gives the bound
// gain * sqrt(3 / fan_in) with gain sqrt(2 / (1 + 5)), i.e. 1 / sqrt(fan_in). Redrawn after
// construction, in registration order, from the same init generator, so a seed still decides
// every weight.
void pytorch_default_convs(nn::Module& m) {
  if (auto* conv = dynamic_cast<nn::Conv2d*>(&m)) {
    const auto& w = conv->weight;
    const double fan_in = (double)(w.size(1) * w.size(2) * w.size(3));
    const double bound = 1.0 / std::sqrt(fan_in);
    conv->weight.copy_(uniform(w.shape(), -bound, bound, nn::init_generator(), w.dtype(), w.device()));
  }
  for (auto& [name, child] : m.children()) pytorch_default_convs(*child);
}
}  // namespace

EncoderPtr make_encoder(const std::string& name, const ModelOptions& options) {
  CP_CHECK(options.width >= 1 && options.width <= kMaxWidth, "make_encoder", name, ": width must be in [1, ", kMaxWidth,
           "], got ", options.width);
  CP_CHECK(options.in_channels >= 1 && options.in_channels <= kMaxChannels, "make_encoder", name,
           ": in_channels must be in [1, ", kMaxChannels, "], got ", options.in_channels);
  CP_CHECK(options.num_classes >= 0 && options.num_classes <= kMaxClasses, "make_encoder", name,
           ": num_classes must be in [0, ", kMaxClasses, "], got ", options.num_classes);
  for (const auto& [known, factory] : factories())
    if (known == name) {
      EncoderPtr e = factory(options);
      if (options.init == ModelOptions::Init::pytorch) pytorch_default_convs(*e);
      return e;
    }
  fail("make_encoder", "unknown model '", name, "'; valid names: ", model_names());
}

}  // namespace cpoison::models
