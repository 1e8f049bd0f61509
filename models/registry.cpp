// Models by name.
#include "models/registry.h"

#include <functional>
#include <utility>

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

EncoderPtr make_encoder(const std::string& name, const ModelOptions& options) {
  CP_CHECK(options.width >= 1 && options.width <= kMaxWidth, "make_encoder", name, ": width must be in [1, ", kMaxWidth,
           "], got ", options.width);
  CP_CHECK(options.in_channels >= 1 && options.in_channels <= kMaxChannels, "make_encoder", name,
           ": in_channels must be in [1, ", kMaxChannels, "], got ", options.in_channels);
  CP_CHECK(options.num_classes >= 0 && options.num_classes <= kMaxClasses, "make_encoder", name,
           ": num_classes must be in [0, ", kMaxClasses, "], got ", options.num_classes);
  for (const auto& [known, factory] : factories())
    if (known == name) return factory(options);
  fail("make_encoder", "unknown model '", name, "'; valid names: ", model_names());
}

}  // namespace cpoison::models
