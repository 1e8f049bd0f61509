// `cpoison bench <name>`: the benchmark registry and helpers (tools/bench.h), the `bench` command
// whose subcommands are the registered benchmarks, and `bench conv`: conv2d forward and backward
// at the CIFAR ResNet-18 shapes. Layout letters: N batch, C channels, H rows, W columns.
#include "tools/bench.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/nn.h"
#include "engine/ops/nn.h"
#include "engine/rng.h"
#include "tools/command.h"
#include "tools/common.h"

#ifdef CPOISON_CUDA
#include <cuda_runtime.h>
#endif

namespace cpoison::tools {

// ---------------------------------------------------------------- registry and helpers

std::vector<Bench>& benches() {
  static std::vector<Bench> b;
  return b;
}

int register_bench(Bench b) {
  benches().push_back(std::move(b));
  return 0;
}

double median(std::vector<double> v) {
  CP_CHECK(!v.empty(), "bench", "median of no values");
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

std::vector<double> time_runs(const std::function<void()>& fn, int repeats, int warmup) {
  CP_CHECK(repeats >= 1, "bench", "--repeats must be >= 1, got ", repeats);
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return t;
}

double time_median(const std::function<void()>& fn, int repeats, int warmup) { return median(time_runs(fn, repeats, warmup)); }

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) break;
    std::string name = line.substr(colon + 1);
    name.erase(0, name.find_first_not_of(" \t"));
    return name;
  }
  return "unknown CPU";
}

int omp_threads() { return omp_get_max_threads(); }
int blas_threads() { return openblas_get_num_threads(); }

std::string device_description(Device device) {
  if (device == Device::cuda) {
#ifdef CPOISON_CUDA
    int dev = 0;
    cudaDeviceProp prop{};
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
      return std::string("cuda: ") + prop.name;
#endif
    return "cuda: unknown GPU";
  }
  return "cpu: " + cpu_model() + " (" + std::to_string(omp_threads()) + " OpenMP threads, " + std::to_string(blas_threads()) +
         " OpenBLAS threads)";
}

void print_device(Device device) { std::printf("device: %s\n", device_description(device).c_str()); }

void sync_device(const Tensor& t) {
  if (t.device() != Device::cuda || t.numel() == 0) return;
  (void)t.reshape({-1}).slice0(0, 1).to(Device::cpu);
}

namespace {

void setup_bench_command(CLI::App& app) {
  app.require_subcommand(1);
  auto& list = benches();
  std::sort(list.begin(), list.end(), [](const Bench& a, const Bench& b) { return a.name < b.name; });
  for (auto& b : list) b.setup(*app.add_subcommand(b.name, b.help));
}

// ---------------------------------------------------------------- bench conv

struct ConvShape {
  const char* role;
  int64_t cin, cout, size, kernel, stride, padding;
  int count;  // how many convs of this shape one CIFAR ResNet-18 forward runs
};

// The convs of a CIFAR ResNet-18 (3x3 stem, no max-pool; BasicBlocks [2, 2, 2, 2]).
const std::vector<ConvShape> kResNet18Convs = {
    {"stem", 3, 64, 32, 3, 1, 1, 1},
    {"layer1", 64, 64, 32, 3, 1, 1, 4},
    {"layer2 down", 64, 128, 32, 3, 2, 1, 1},
    {"layer2 shortcut", 64, 128, 32, 1, 2, 0, 1},
    {"layer2", 128, 128, 16, 3, 1, 1, 3},
    {"layer3 down", 128, 256, 16, 3, 2, 1, 1},
    {"layer3 shortcut", 128, 256, 16, 1, 2, 0, 1},
    {"layer3", 256, 256, 8, 3, 1, 1, 3},
    {"layer4 down", 256, 512, 8, 3, 2, 1, 1},
    {"layer4 shortcut", 256, 512, 8, 1, 2, 0, 1},
    {"layer4", 512, 512, 4, 3, 1, 1, 3},
};

struct ConvOptions {
  int64_t batch = 128;
  int repeats = 5;
  int warmup = 1;
  std::string device = "cpu";
};

void run_conv(const ConvOptions& o) {
  CP_CHECK(o.batch >= 1, "bench conv", "--batch must be >= 1, got ", o.batch);
  const Device dev = parse_device(o.device);
  autograd::NoGradGuard no_grad;
  print_device(dev);
  std::printf("conv2d f32, batch %lld, median of %d runs after %d warm-up; bwd = input + weight gradients\n\n",
              (long long)o.batch, o.repeats, o.warmup);
  std::printf("| conv | shape (Cin->Cout, HxW, k, stride) | x in ResNet-18 | ms fwd | ms bwd | GFLOP/s |\n");
  std::printf("|---|---|---:|---:|---:|---:|\n");

  nlohmann::json rows = nlohmann::json::array();
  double net_ms = 0, net_gflop = 0;
  Generator gen(1, 0);
  for (const ConvShape& s : kResNet18Convs) {
    Tensor x = uniform({o.batch, s.cin, s.size, s.size}, -1, 1, gen, DType::f32, dev);
    Tensor w = uniform({s.cout, s.cin, s.kernel, s.kernel}, -0.1, 0.1, gen, DType::f32, dev);
    const int64_t out = (s.size + 2 * s.padding - s.kernel) / s.stride + 1;
    Tensor gy = uniform({o.batch, s.cout, out, out}, -1, 1, gen, DType::f32, dev);
    Conv2dOptions copt{s.stride, s.padding, 1};

    double fwd = time_median([&] { sync_device(conv2d(x, w, Tensor(), copt)); }, o.repeats, o.warmup);
    double bwd = time_median(
        [&] {
          Tensor dx = CP_BACKEND(dev, conv2d_backward_input)(gy, w, s.size, s.size, s.stride, s.padding, 1);
          Tensor dw = CP_BACKEND(dev, conv2d_backward_weight)(gy, x, s.kernel, s.kernel, s.stride, s.padding, 1);
          sync_device(dx);
          sync_device(dw);
        },
        o.repeats, o.warmup);
    // A forward is 2*N*Cout*Ho*Wo*Cin*k*k flops; each of the two backward products costs as much.
    const double gflop = 2.0 * o.batch * s.cout * out * out * s.cin * s.kernel * s.kernel * 1e-9;
    const double gflops = 3 * gflop / (fwd + bwd);
    char shape[96];
    std::snprintf(shape, sizeof shape, "%lld->%lld, %lldx%lld, %lldx%lld, s%lld", (long long)s.cin, (long long)s.cout,
                  (long long)s.size, (long long)s.size, (long long)s.kernel, (long long)s.kernel, (long long)s.stride);
    std::printf("| %s | %s | %d | %.2f | %.2f | %.1f |\n", s.role, shape, s.count, fwd * 1e3, bwd * 1e3, gflops);
    std::fflush(stdout);
    net_ms += s.count * (fwd + bwd) * 1e3;
    net_gflop += s.count * 3 * gflop;
    rows.push_back({{"conv", s.role}, {"cin", s.cin}, {"cout", s.cout}, {"size", s.size}, {"kernel", s.kernel},
                    {"stride", s.stride}, {"count", s.count}, {"fwd_ms", fwd * 1e3}, {"bwd_ms", bwd * 1e3}, {"gflops", gflops}});
  }
  std::printf("| all convs of one ResNet-18 step | | | | %.1f (fwd+bwd) | %.1f |\n\n", net_ms, net_gflop / (net_ms * 1e-3));
  nlohmann::json j{{"bench", "conv"},
                   {"device", device_description(dev)},
                   {"omp_threads", omp_threads()},
                   {"blas_threads", blas_threads()},
                   {"batch", o.batch},
                   {"repeats", o.repeats},
                   {"rows", rows},
                   {"resnet18_conv_ms", net_ms},
                   {"resnet18_conv_images_per_s", o.batch / (net_ms * 1e-3)}};
  std::printf("%s\n", j.dump().c_str());
}

void setup_conv(CLI::App& app) {
  auto o = std::make_shared<ConvOptions>();
  app.add_option("--batch", o->batch, "Images per batch")->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--repeats", o->repeats, "Timed runs (the median is reported)")->check(tools::int_range(1, 1000000))->capture_default_str();
  app.add_option("--warmup", o->warmup, "Untimed runs before timing")->check(tools::int_range(0, 1000000))->capture_default_str();
  app.add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  app.callback([o] { run_conv(*o); });
}

}  // namespace

CPOISON_BENCH(conv, "conv2d forward and backward at the CIFAR ResNet-18 shapes", setup_conv);

}  // namespace cpoison::tools

CPOISON_COMMAND(bench, "Benchmarks (warm-up, repeats, median, device): `cpoison bench <name> --help`",
                cpoison::tools::setup_bench_command);
