// Benchmarks: `cpoison bench <name>`. Each benchmark lives in its own file under tools/ and
// registers itself like a command (tools/command.h):
//
//   void setup(CLI::App& app) { app.add_option(...); app.callback([] { ... }); }
//   CPOISON_BENCH(step, "Time one training step", setup);
//
// and uses the helpers below to warm up, repeat, take the median and name the device, so that
// every benchmark reports the same way: a Markdown table plus one JSON line.
// Benchmarks never assert on time; they print.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "tools/common.h"  // parse_device

namespace cpoison::tools {

struct Bench {
  std::string name;
  std::string help;
  std::function<void(CLI::App&)> setup;  // adds options and sets the callback
};

// Every registered benchmark (filled during static initialisation, read by `cpoison bench`).
std::vector<Bench>& benches();
int register_bench(Bench b);
inline int register_bench(const std::string& name, const std::string& help, std::function<void(CLI::App&)> setup) {
  return register_bench(Bench{name, help, std::move(setup)});
}

// Runs fn `warmup` times untimed, then `repeats` times timed (wall clock); returns the median
// in seconds. fn must finish its device work before returning (see sync_device). Throws Error
// when repeats < 1.
double time_median(const std::function<void()>& fn, int repeats = 5, int warmup = 1);
// Every timed run in seconds, in run order (for a benchmark that wants more than the median).
std::vector<double> time_runs(const std::function<void()>& fn, int repeats, int warmup = 1);
double median(std::vector<double> v);

// The CPU model from /proc/cpuinfo ("unknown CPU" when it cannot be read).
std::string cpu_model();
// Threads the CPU kernels use: OpenMP's and OpenBLAS's thread counts.
int omp_threads();
int blas_threads();
// One line naming the device, e.g. "cpu: AMD EPYC (2 OpenMP threads, 2 OpenBLAS threads)" or
// "cuda: NVIDIA H100 80GB HBM3".
std::string device_description(Device device);
// The CPU convolution kernels in use: oneDNN's version, or the reference and why.
std::string cpu_conv_kernels();
// Prints "device: <description>" to stdout.
void print_device(Device device);
// Waits until t's device work is done (a one-element copy to the host; a no-op on the CPU).
void sync_device(const Tensor& t);

}  // namespace cpoison::tools

#define CPOISON_BENCH(name, help, setup_fn) \
  static const int cpoison_bench_##name = ::cpoison::tools::register_bench(#name, help, setup_fn)
