// Process-wide run-time settings: the backends' numeric switches, whether a GPU is usable, and
// the start-up settings that must be in place before the OpenMP runtime initialises.
#pragma once
#include <cstdlib>
#include <unistd.h>

namespace cpoison {

// True when the CUDA backend was compiled in and a GPU is usable at run time.
bool cuda_available();

// The backends' numeric switches. The CUDA ones default to the reproducible choice (the CPU
// backend ignores them); the CPU one defaults to speed.
//
// Allow TensorFloat-32 tensor-core math in CUDA convolutions and GEMMs (faster on Ampere and
// later, ~10-bit mantissa products). Default false: f32 math is full precision.
void set_allow_tf32(bool on);
bool allow_tf32();

// Use only deterministic CUDA algorithms (cuDNN convolution algorithms whose results do not
// depend on scheduling). Default true: a seed reproduces a run bit for bit on one GPU.
void set_deterministic(bool on);
bool deterministic();

// CPU: run convolutions on the reference kernels (im2col + OpenBLAS), whose results do not
// depend on the thread count, instead of oneDNN, whose results are bitwise reproducible only
// for a fixed thread count (engine/backend/cpu/conv.h). Every other CPU kernel is
// thread-count independent either way. Default false, or true when the environment variable
// CPOISON_DETERMINISTIC is 1 at start-up; the command line's --deterministic sets it.
void set_cpu_deterministic(bool on);
bool cpu_deterministic();

// OpenMP's default "active" wait makes idle worker threads spin; on a 2-core machine shared with
// OpenBLAS (or any other process) that spinning starves the real work: a width-8 ResNet-18 step
// measured 40x slower. libgomp reads OMP_WAIT_POLICY only when it loads, so when the variable is
// unset we set it to passive and re-execute this program once. Users can still choose by setting it.
inline void ensure_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then carry on with the default policy
}

}  // namespace cpoison
