// Process-wide numeric switches of the backends. The CUDA ones default to the reproducible
// choice (the CPU backend ignores them); the CPU one defaults to speed.
#pragma once

namespace cpoison {

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

}  // namespace cpoison
