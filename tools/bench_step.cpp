// `cpoison bench step`: one full supervised training step of a model on random data —
// forward, cross-entropy, backward, SGD update with momentum — warmed up, then timed as the
// median of repeats. Prints the device, the CPU convolution kernels (oneDNN or the reference), a
// Markdown table, one JSON line, and finally exactly `images/s: <number>`.
// Layout: images [N, C, H, W] (N = --batch, C = --channels, H = W = --size).
#include <cblas.h>
#include <omp.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/autograd.h"
#include "engine/backend/cpu/allocator.h"
#include "engine/backend/cpu/conv.h"
#include "engine/backend/settings.h"
#include "engine/ops/loss.h"
#include "engine/optim/sgd.h"
#include "engine/rng.h"
#include "models/registry.h"
#include "tools/bench.h"
#include "tools/common.h"

namespace cpoison::tools {
namespace {

struct StepOptions {
  std::string model = "resnet18";
  int64_t batch = 128;
  int64_t width = 64;
  int64_t classes = 10;
  int64_t image_size = 32;
  int64_t channels = 3;
  int threads = 0;  // 0: OpenMP's default
  std::string device = "cpu";
  int repeats = 5;
  int warmup = 1;
  bool tf32 = false;
};

void run_step(const StepOptions& o) {
  const char* where = "bench step";
  CP_CHECK(o.batch >= 2, where, "--batch must be >= 2 (batch norm needs two samples in training), got ", o.batch);
  CP_CHECK(o.classes >= 1, where, "--classes must be >= 1, got ", o.classes);
  CP_CHECK(o.image_size >= 1, where, "--size must be >= 1, got ", o.image_size);
  CP_CHECK(o.warmup >= 0, where, "--warmup must be >= 0, got ", o.warmup);
  CP_CHECK(o.channels >= 1, where, "--channels must be >= 1, got ", o.channels);
  CP_CHECK(o.threads >= 0, where, "--threads must be >= 0, got ", o.threads);
  const Device dev = parse_device(o.device);
  if (o.threads > 0) {
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);
  }
  // TF32 only changes CUDA math; asking for it on the CPU is allowed and changes nothing.
  set_allow_tf32(o.tf32);

  models::ModelOptions mo;
  mo.width = o.width;
  mo.num_classes = o.classes;
  mo.in_channels = o.channels;
  nn::manual_seed(0);
  auto model = models::make_encoder(o.model, mo);
  model->to(dev);
  model->train();
  // The victim recipe's optimiser (docs/reference-implementation.md §6); the LR only scales updates.
  optim::SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  so.weight_decay = 1e-4;
  optim::SGD sgd(*model, so);

  Generator gen(1, 0);
  Tensor images = uniform({o.batch, o.channels, o.image_size, o.image_size}, 0.0, 1.0, gen, DType::f32, dev);
  Tensor labels = randint({o.batch}, 0, o.classes, gen, DType::i64, dev);
  const Tensor probe = model->parameters().back();
  double last_loss = 0;
  auto step = [&] {
    sgd.zero_grad();
    Tensor loss = cross_entropy(model->logits(images), labels);
    autograd::backward(loss);
    sgd.step();
    // Reading one updated weight waits for the whole step's device work.
    sync_device(probe);
    last_loss = loss.item();
  };
  print_device(dev);
  const std::string conv = dev == Device::cuda ? "cuDNN" : cpu_conv_kernels();
  std::printf("convolutions: %s\n", conv.c_str());
  std::printf("%s (width %lld, %lld parameters), f32%s, batch %lld of %lldx%lldx%lld, median of %d steps after %d warm-up\n\n",
              o.model.c_str(), (long long)o.width, (long long)model->num_parameters(),
              dev == Device::cuda && o.tf32 ? " with TF32" : "", (long long)o.batch, (long long)o.image_size,
              (long long)o.image_size, (long long)o.channels, o.repeats, o.warmup);
  std::fflush(stdout);

  for (int i = 0; i < o.warmup; ++i) step();
  const auto before = cpu::host_allocator_stats();
  const auto runs = time_runs(step, o.repeats, 0);
  const auto after = cpu::host_allocator_stats();
  const double step_s = median(runs);
  const double images_per_s = static_cast<double>(o.batch) / step_s;
  double fastest = runs[0];
  for (double r : runs) fastest = r < fastest ? r : fastest;

  std::printf("| model | batch | ms/step (median) | ms/step (fastest) | images/s |\n|---|---:|---:|---:|---:|\n");
  std::printf("| %s | %lld | %.1f | %.1f | %.1f |\n\n", o.model.c_str(), (long long)o.batch, step_s * 1e3, fastest * 1e3,
              images_per_s);
  nlohmann::json j{{"bench", "step"},
                   {"model", o.model},
                   {"width", o.width},
                   {"parameters", model->num_parameters()},
                   {"batch", o.batch},
                   {"image_size", o.image_size},
                   {"channels", o.channels},
                   {"conv", conv},
                   {"device", device_description(dev)},
                   {"omp_threads", omp_threads()},
                   {"blas_threads", blas_threads()},
                   {"tf32", o.tf32},
                   {"repeats", o.repeats},
                   {"warmup", o.warmup},
                   {"step_ms", runs},
                   {"median_step_ms", step_s * 1e3},
                   {"final_loss", last_loss},
                   // large CPU blocks mapped from the kernel / served from the cache during the timed steps
                   {"host_maps", after.maps - before.maps},
                   {"host_cache_hits", after.cache_hits - before.cache_hits},
                   {"images_per_s", images_per_s}};
  for (auto& t : j["step_ms"]) t = t.get<double>() * 1e3;
  std::printf("%s\n", j.dump().c_str());
  std::printf("images/s: %.1f\n", images_per_s);
}

void setup_step(CLI::App& app) {
  auto o = std::make_shared<StepOptions>();
  app.add_option("--model", o->model, "Model name (see `cpoison models`)")->capture_default_str();
  app.add_option("--batch", o->batch, "Images per batch")->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--width", o->width, "Base width (64: the standard model)")->check(tools::int_range(1, models::kMaxWidth))->capture_default_str();
  app.add_option("--classes", o->classes, "Classes of the linear head")->check(tools::int_range(0, models::kMaxClasses))->capture_default_str();
  app.add_option("--size", o->image_size, "Image height and width")->check(tools::int_range(1, kMaxImageSide))->capture_default_str();
  app.add_option("--channels", o->channels, "Image channels (3: CIFAR, 1: Fashion-MNIST)")
      ->check(tools::int_range(1, 4096))
      ->capture_default_str();
  app.add_option("--threads", o->threads, "CPU threads (OpenMP and OpenBLAS); 0: the default (OMP_NUM_THREADS or all cores)")
      ->check(tools::int_range(0, 4096))
      ->capture_default_str();
  app.add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  app.add_option("--repeats", o->repeats, "Timed steps (the median is reported)")->check(tools::int_range(1, 1000000))->capture_default_str();
  app.add_option("--warmup", o->warmup, "Untimed steps before timing")->check(tools::int_range(0, 1000000))->capture_default_str();
  app.add_flag("--tf32", o->tf32, "Allow TensorFloat-32 math in CUDA convolutions and GEMMs");
  app.callback([o] { run_step(*o); });
}

}  // namespace

CPOISON_BENCH(step, "One supervised training step (forward, cross-entropy, backward, SGD momentum)", setup_step);

}  // namespace cpoison::tools
