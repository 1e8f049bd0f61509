// `cpoison bench noise-step`: one noise step of sample-wise contrastive poisoning (CP-S, the
// paper's Algorithm 1 noise phase, as poison/generate.cpp runs it): SimCLR learner in eval mode
// with frozen weights, x + eps * delta clamped, two augmented views, one batched encoder call,
// NT-Xent loss, the gradient w.r.t. the batch's delta rows, and the signed step. Random images
// stand in for the dataset. Reports the time per step and memory: the process's peak resident
// set (VmHWM, reset before the first timed step) against its resident set before it, and the
// peak of live tensor bytes (engine/tensor.h's counter). The first step of a fresh process is
// the one measured for memory by default (--warmup 0), so that the allocator's cache from
// earlier steps does not hide the step's own peak.
// Layout: images and delta [B, C, H, W] (B = --batch, C = --channels, H = W = --size).
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "algorithms/learner.h"
#include "augment/augment.h"
#include "engine/autograd.h"
#include "engine/ops/ops.h"
#include "engine/rng.h"
#include "poison/apply.h"
#include "tools/bench.h"

namespace cpoison::tools {
namespace {

struct NoiseStepOptions {
  int64_t batch = 256;
  int64_t width = 8;
  int64_t image_size = 28;
  int64_t channels = 1;
  int threads = 0;
  int repeats = 1;
  int warmup = 0;
};

// A field of /proc/self/status in MiB ("VmRSS", "VmHWM"); -1 when unreadable.
double status_mib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;  // kB
  return -1;
}

// Resets VmHWM to the current resident set (Linux >= 4.0); false when not possible.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  return (bool)out;
}

void run_noise_step(const NoiseStepOptions& o) {
  const char* where = "bench noise-step";
  CP_CHECK(o.batch >= 2 && o.width >= 1 && o.image_size >= 8 && (o.channels == 1 || o.channels == 3), where,
           "needs --batch >= 2, --width >= 1, --size >= 8 and --channels 1 or 3");
  CP_CHECK(o.repeats >= 1 && o.warmup >= 0 && o.threads >= 0, where, "needs --repeats >= 1, --warmup >= 0, --threads >= 0");
  if (o.threads > 0) {
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);
  }
  models::ModelOptions mo;
  mo.width = o.width;
  mo.in_channels = o.channels;
  nn::manual_seed(0);
  auto learner = algorithms::ContrastiveLearner::make(algorithms::Algo::simclr, "resnet18", mo,
                                                     algorithms::AlgoConfig::defaults(algorithms::Algo::simclr));
  learner->eval();
  for (auto& [name, p] : learner->named_online_parameters()) p.set_requires_grad(false);
  // The demo's pipeline for 1-channel 28x28 images, the paper's for 3-channel ones.
  augment::AugmentConfig aug =
      o.channels == 1 ? augment::AugmentConfig::cpu_small() : augment::AugmentConfig::simclr_cifar(o.image_size);
  aug.out_h = aug.out_w = o.image_size;
  const double eps = 8.0 / 255.0, step_size = 0.1;

  Generator gen(1, 0), aug_gen(2, 0);
  const Shape shape{o.batch, o.channels, o.image_size, o.image_size};
  Tensor images = uniform(shape, 0.0, 1.0, gen);
  Tensor delta = uniform(shape, -1.0, 1.0, gen);
  double last_loss = 0;
  auto step = [&] {
    Tensor leaf = delta.detach();
    leaf.set_requires_grad(true);
    autograd::clear_tape();
    Tensor x = poison::perturb(images, leaf, eps);
    Tensor v1 = augment::apply(x, augment::sample_params(aug, o.batch, o.image_size, o.image_size, aug_gen), aug);
    Tensor v2 = augment::apply(x, augment::sample_params(aug, o.batch, o.image_size, o.image_size, aug_gen), aug);
    Tensor loss = learner->loss({v1, v2});
    Tensor g = autograd::grad(loss, {leaf})[0];
    autograd::NoGradGuard ng;
    delta = clamp(add(leaf.detach(), mul_scalar(sign(g), -step_size)), -1.0, 1.0);
    last_loss = loss.item();
  };
  print_device(Device::cpu);
  std::printf("convolutions: %s\n", cpu_conv_kernels().c_str());
  std::printf("CP-S noise step: SimCLR resnet18 (width %lld), batch %lld of %lldx%lldx%lld (two views: %lld images through the "
              "encoder), %d warm-up, %d timed\n\n",
              (long long)o.width, (long long)o.batch, (long long)o.image_size, (long long)o.image_size, (long long)o.channels,
              (long long)(2 * o.batch), o.warmup, o.repeats);
  std::fflush(stdout);
  for (int i = 0; i < o.warmup; ++i) step();

  const double rss_before = status_mib("VmRSS");
  const bool hwm_reset = reset_peak_rss();
  const size_t tensors_before = host_bytes_in_use();
  reset_host_peak_bytes();
  std::vector<double> runs;
  for (int i = 0; i < o.repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    step();
    runs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double peak_rss = status_mib("VmHWM");
  const double tensor_peak = (double)(host_peak_bytes() - tensors_before) / (1024.0 * 1024.0);
  const double step_s = median(runs);

  std::printf("| batch | width | ms/step (median) | peak RSS MiB | RSS before MiB | step's peak over it MiB | tensor peak MiB |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| %lld | %lld | %.1f | %.1f | %.1f | %.1f | %.1f |\n\n", (long long)o.batch, (long long)o.width, step_s * 1e3, peak_rss,
              rss_before, peak_rss - rss_before, tensor_peak);
  nlohmann::json j{{"bench", "noise-step"},
                   {"width", o.width},
                   {"batch", o.batch},
                   {"image_size", o.image_size},
                   {"channels", o.channels},
                   {"device", device_description(Device::cpu)},
                   {"conv", cpu_conv_kernels()},
                   {"omp_threads", omp_threads()},
                   {"warmup", o.warmup},
                   {"step_ms", runs},
                   {"median_step_ms", step_s * 1e3},
                   {"peak_rss_mib", peak_rss},
                   {"peak_rss_reset", hwm_reset},
                   {"rss_before_mib", rss_before},
                   {"step_peak_rss_mib", peak_rss - rss_before},
                   {"tensor_peak_mib", tensor_peak},
                   {"final_loss", last_loss}};
  for (auto& t : j["step_ms"]) t = t.get<double>() * 1e3;
  std::printf("%s\n", j.dump().c_str());
}

void setup_noise_step(CLI::App& app) {
  auto o = std::make_shared<NoiseStepOptions>();
  app.add_option("--batch", o->batch, "Images per batch (B; the encoder sees 2B views)")->capture_default_str();
  app.add_option("--width", o->width, "ResNet-18 base width")->capture_default_str();
  app.add_option("--size", o->image_size, "Image height and width")->capture_default_str();
  app.add_option("--channels", o->channels, "Image channels: 1 (the demo's augmentations) or 3 (the paper's)")->capture_default_str();
  app.add_option("--threads", o->threads, "CPU threads (OpenMP and OpenBLAS); 0: the default")->capture_default_str();
  app.add_option("--repeats", o->repeats, "Timed steps (the median is reported)")->capture_default_str();
  app.add_option("--warmup", o->warmup, "Untimed steps first (0: memory of a fresh process's first step)")->capture_default_str();
  app.callback([o] { run_noise_step(*o); });
}

const int registered = register_bench("noise-step", "One CP-S noise step (SimCLR, frozen model): time and peak memory",
                                      setup_noise_step);

}  // namespace
}  // namespace cpoison::tools
