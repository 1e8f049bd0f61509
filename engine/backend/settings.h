// Process-wide numeric switches of the backends. Both default to the reproducible choice.
// The CPU backend ignores them (its kernels are always exact f32/f64 and deterministic).
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

}  // namespace cpoison
