// `cpoison bench <name>`: the benchmark registry and helpers (tools/bench.h), the `bench` command
// whose subcommands are the registered benchmarks, and `bench conv`: conv2d forward and backward
// at the CIFAR ResNet-18 shapes (any width and image size), oneDNN beside the reference kernels. Layout letters: N batch, C channels, H rows, W columns.
#include "tools/bench.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/backend/cpu/conv.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/settings.h"
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

std::string cpu_conv_kernels() {
  if (!cpu::onednn::available()) return "reference (im2col + OpenBLAS; this build has no oneDNN)";
  if (cpu_deterministic()) return "reference (im2col + OpenBLAS; deterministic mode)";
  return cpu::onednn::version() + " (f32; the reference im2col + OpenBLAS kernels for f64 and grouped convs)";
}

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
  std::string role;
  int64_t cin, cout, size, kernel, stride, padding;
  int count;  // how many convs of this shape one CIFAR ResNet-18 forward runs
};

// The convs of a CIFAR ResNet-18 (3x3 stem, no max-pool; BasicBlocks [2, 2, 2, 2]; widths w, 2w,
// 4w, 8w) on size x size images of `channels` channels.
std::vector<ConvShape> resnet18_convs(int64_t channels, int64_t w, int64_t size) {
  std::vector<ConvShape> v{{"stem", channels, w, size, 3, 1, 1, 1}, {"layer1", w, w, size, 3, 1, 1, 4}};
  int64_t in = w, s = size;
  for (int layer = 2; layer <= 4; ++layer) {
    const int64_t out = in * 2, s2 = (s - 1) / 2 + 1;
    const std::string name = "layer" + std::to_string(layer);
    v.push_back({name + " down", in, out, s, 3, 2, 1, 1});
    v.push_back({name + " shortcut", in, out, s, 1, 2, 0, 1});
    v.push_back({name, out, out, s2, 3, 1, 1, 3});
    in = out;
    s = s2;
  }
  return v;
}

struct ConvOptions {
  int64_t batch = 128;
  int64_t width = 64;
  int64_t size = 32;
  int64_t channels = 3;
  int repeats = 5;
  int warmup = 1;
  std::string device = "cpu";
  bool cpu_time = false;
};

// Median of fn's CPU time (all threads of the process) over repeats, in seconds: on a shared
// machine it counts the work done rather than the wait for a core.
double cpu_time_median(const std::function<void()>& fn, int repeats, int warmup) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    timespec a{}, b{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    fn();
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    t.push_back((double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
  }
  return median(t);
}

void run_conv(const ConvOptions& o) {
  CP_CHECK(o.batch >= 1, "bench conv", "--batch must be >= 1, got ", o.batch);
  CP_CHECK(o.width >= 1 && o.size >= 8 && o.channels >= 1, "bench conv", "--width, --channels must be >= 1 and --size >= 8");
  const Device dev = parse_device(o.device);
  // On the CPU both implementations are timed (oneDNN when built with it, and the reference).
  const bool both = dev == Device::cpu && cpu::onednn::available();
  autograd::NoGradGuard no_grad;
  print_device(dev);
  std::printf("convolutions: %s\n", dev == Device::cuda ? "cuDNN" : cpu_conv_kernels().c_str());
  std::printf("conv2d f32, batch %lld, width %lld, %lldx%lldx%lld, median of %d runs after %d warm-up; bwd = input + weight gradients%s\n\n",
              (long long)o.batch, (long long)o.width, (long long)o.size, (long long)o.size, (long long)o.channels, o.repeats,
              o.warmup, o.cpu_time ? "; times are CPU time of all threads (not wall clock), GFLOP/s per core" : "");
  if (both) {
    std::printf("| conv | shape (Cin->Cout, HxW, k, stride) | x in ResNet-18 | oneDNN kernel | ms fwd | ms bwd | GFLOP/s | reference ms fwd | ms bwd | GFLOP/s | conv2d runs |\n");
    std::printf("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|\n");
  } else {
    std::printf("| conv | shape (Cin->Cout, HxW, k, stride) | x in ResNet-18 | ms fwd | ms bwd | GFLOP/s |\n");
    std::printf("|---|---|---:|---:|---:|---:|\n");
  }

  nlohmann::json rows = nlohmann::json::array();
  double net_ms = 0, net_onednn_ms = 0, net_ref_ms = 0, net_gflop = 0;
  Generator gen(1, 0);
  for (const ConvShape& s : resnet18_convs(o.channels, o.width, o.size)) {
    Tensor x = uniform({o.batch, s.cin, s.size, s.size}, -1, 1, gen, DType::f32, dev);
    Tensor w = uniform({s.cout, s.cin, s.kernel, s.kernel}, -0.1, 0.1, gen, DType::f32, dev);
    const int64_t out = (s.size + 2 * s.padding - s.kernel) / s.stride + 1;
    Tensor gy = uniform({o.batch, s.cout, out, out}, -1, 1, gen, DType::f32, dev);
    // A forward is 2*N*Cout*Ho*Wo*Cin*k*k flops; each of the two backward products costs as much.
    const double gflop = 2.0 * o.batch * s.cout * out * out * s.cin * s.kernel * s.kernel * 1e-9;

    auto timer = [&](const std::function<void()>& fn) {
      return o.cpu_time ? cpu_time_median(fn, o.repeats, o.warmup) : time_median(fn, o.repeats, o.warmup);
    };
    // Times the dispatched kernels (CP_BACKEND: what conv2d runs), or one CPU implementation.
    enum class Impl { dispatched, onednn, reference };
    auto time_pair = [&](Impl impl) {
      auto forward = [&] {
        if (impl == Impl::onednn) return cpu::onednn::conv2d_forward(x, w, Tensor(), s.stride, s.padding, 1);
        if (impl == Impl::reference) return cpu::reference::conv2d_forward(x, w, Tensor(), s.stride, s.padding, 1);
        return CP_BACKEND(dev, conv2d_forward)(x, w, Tensor(), s.stride, s.padding, 1);
      };
      auto backward_input = [&] {
        if (impl == Impl::onednn) return cpu::onednn::conv2d_backward_input(gy, w, s.size, s.size, s.stride, s.padding, 1);
        if (impl == Impl::reference) return cpu::reference::conv2d_backward_input(gy, w, s.size, s.size, s.stride, s.padding, 1);
        return CP_BACKEND(dev, conv2d_backward_input)(gy, w, s.size, s.size, s.stride, s.padding, 1);
      };
      auto backward_weight = [&] {
        if (impl == Impl::onednn) return cpu::onednn::conv2d_backward_weight(gy, x, s.kernel, s.kernel, s.stride, s.padding, 1);
        if (impl == Impl::reference) return cpu::reference::conv2d_backward_weight(gy, x, s.kernel, s.kernel, s.stride, s.padding, 1);
        return CP_BACKEND(dev, conv2d_backward_weight)(gy, x, s.kernel, s.kernel, s.stride, s.padding, 1);
      };
      double fwd = timer([&] { sync_device(forward()); });
      double bwd = timer([&] {
        Tensor dx = backward_input(), dw = backward_weight();
        sync_device(dx);
        sync_device(dw);
      });
      return std::pair<double, double>{fwd, bwd};
    };
    auto [fwd, bwd] = time_pair(Impl::dispatched);
    char shape[96];
    std::snprintf(shape, sizeof shape, "%lld->%lld, %lldx%lld, %lldx%lld, s%lld", (long long)s.cin, (long long)s.cout,
                  (long long)s.size, (long long)s.size, (long long)s.kernel, (long long)s.kernel, (long long)s.stride);
    nlohmann::json row{{"conv", s.role}, {"cin", s.cin}, {"cout", s.cout}, {"size", s.size}, {"kernel", s.kernel},
                       {"stride", s.stride}, {"count", s.count}, {"fwd_ms", fwd * 1e3}, {"bwd_ms", bwd * 1e3},
                       {"gflops", 3 * gflop / (fwd + bwd)}};
    if (both) {
      auto [of, ob] = time_pair(Impl::onednn);
      auto [rf, rb] = time_pair(Impl::reference);
      const std::string kernel = cpu::onednn::forward_implementation(x.shape(), w.shape(), s.stride, s.padding);
      // Which one conv2d runs: the bits tell (both are deterministic for a fixed thread count).
      const bool runs_onednn = CP_BACKEND(dev, conv2d_forward)(x, w, Tensor(), s.stride, s.padding, 1).to_vector<float>() ==
                               cpu::onednn::conv2d_forward(x, w, Tensor(), s.stride, s.padding, 1).to_vector<float>();
      std::printf("| %s | %s | %d | %s | %.2f | %.2f | %.1f | %.2f | %.2f | %.1f | %s |\n", s.role.c_str(), shape, s.count,
                  kernel.c_str(), of * 1e3, ob * 1e3, 3 * gflop / (of + ob), rf * 1e3, rb * 1e3, 3 * gflop / (rf + rb),
                  runs_onednn ? "oneDNN" : "reference");
      row["onednn_kernel"] = kernel;
      row["onednn_fwd_ms"] = of * 1e3;
      row["onednn_bwd_ms"] = ob * 1e3;
      row["reference_fwd_ms"] = rf * 1e3;
      row["reference_bwd_ms"] = rb * 1e3;
      row["conv2d_runs"] = runs_onednn ? "oneDNN" : "reference";
      net_onednn_ms += s.count * (of + ob) * 1e3;
      net_ref_ms += s.count * (rf + rb) * 1e3;
    } else {
      std::printf("| %s | %s | %d | %.2f | %.2f | %.1f |\n", s.role.c_str(), shape, s.count, fwd * 1e3, bwd * 1e3,
                  3 * gflop / (fwd + bwd));
    }
    std::fflush(stdout);
    net_ms += s.count * (fwd + bwd) * 1e3;
    net_gflop += s.count * 3 * gflop;
    rows.push_back(row);
  }
  if (both)
    std::printf("| all convs of one ResNet-18 step | | | | | %.1f (fwd+bwd) | %.1f | | %.1f (fwd+bwd) | %.1f | %.1f ms (fwd+bwd) as dispatched |\n\n",
                net_onednn_ms, net_gflop / (net_onednn_ms * 1e-3), net_ref_ms, net_gflop / (net_ref_ms * 1e-3), net_ms);
  else
    std::printf("| all convs of one ResNet-18 step | | | | %.1f (fwd+bwd) | %.1f |\n\n", net_ms, net_gflop / (net_ms * 1e-3));
  nlohmann::json j{{"bench", "conv"},
                   {"device", device_description(dev)},
                   {"conv", dev == Device::cuda ? std::string("cuDNN") : cpu_conv_kernels()},
                   {"omp_threads", omp_threads()},
                   {"blas_threads", blas_threads()},
                   {"batch", o.batch},
                   {"width", o.width},
                   {"size", o.size},
                   {"channels", o.channels},
                   {"repeats", o.repeats},
                   {"clock", o.cpu_time ? "cpu" : "wall"},
                   {"rows", rows},
                   {"resnet18_conv_ms", net_ms},
                   {"resnet18_conv_images_per_s", o.batch / (net_ms * 1e-3)}};
  if (both) {
    j["resnet18_onednn_conv_ms"] = net_onednn_ms;
    j["resnet18_reference_conv_ms"] = net_ref_ms;
  }
  std::printf("%s\n", j.dump().c_str());
}

void setup_conv(CLI::App& app) {
  auto o = std::make_shared<ConvOptions>();
  app.add_option("--batch", o->batch, "Images per batch")->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--width", o->width, "Base width of the ResNet-18 (64: the standard model)")
      ->check(tools::int_range(1, 4096))
      ->capture_default_str();
  app.add_option("--size", o->size, "Image height and width")->check(tools::int_range(1, 4096))->capture_default_str();
  app.add_option("--channels", o->channels, "Image channels")->check(tools::int_range(1, 4096))->capture_default_str();
  app.add_option("--repeats", o->repeats, "Timed runs (the median is reported)")->check(tools::int_range(1, 1000000))->capture_default_str();
  app.add_option("--warmup", o->warmup, "Untimed runs before timing")->check(tools::int_range(0, 1000000))->capture_default_str();
  app.add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  app.add_flag("--cpu-time", o->cpu_time, "Report CPU time of all threads instead of wall time (for a shared machine)");
  app.callback([o] { run_conv(*o); });
}

}  // namespace

CPOISON_BENCH(conv, "conv2d forward and backward at the CIFAR ResNet-18 shapes (oneDNN and the reference kernels)", setup_conv);

}  // namespace cpoison::tools

CPOISON_COMMAND(bench, "Benchmarks (warm-up, repeats, median, device): `cpoison bench <name> --help`",
                cpoison::tools::setup_bench_command);
