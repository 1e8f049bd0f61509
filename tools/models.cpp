// `cpoison models`: every model the registry knows, one line each with its parameter count.
#include <cstdio>
#include <memory>

#include "engine/nn/module.h"
#include "models/registry.h"
#include "tools/command.h"

namespace {

struct ModelsArgs {
  int64_t classes = 10;
  int64_t width = 64;
  int64_t in_channels = 3;
};

// Counts include the linear head when classes > 0 (the numbers papers quote for CIFAR-10).
void list_models(const ModelsArgs& args) {
  cpoison::models::ModelOptions options;
  options.width = args.width;
  options.in_channels = args.in_channels;
  options.num_classes = args.classes;
  std::printf("%-12s %14s %8s\n", "model", "parameters", "features");
  for (const auto& name : cpoison::models::model_names()) {
    auto model = cpoison::models::make_encoder(name, options);
    std::printf("%-12s %14lld %8lld\n", name.c_str(), static_cast<long long>(model->num_parameters()),
                static_cast<long long>(model->feature_dim()));
  }
}

void setup(CLI::App& app) {
  auto args = std::make_shared<ModelsArgs>();
  app.add_option("--classes", args->classes, "classes of the linear head (0: encoder only)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--width", args->width, "base width (64: the standard models)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--in-channels", args->in_channels, "input channels (1 for grayscale)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.callback([args] { list_models(*args); });
}

}  // namespace
CPOISON_COMMAND(models, "List the models with their parameter counts", setup);
