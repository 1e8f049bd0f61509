// The two implementations behind the CPU convolution kernels of engine/backend/nn.h, for the
// dispatch in conv.cpp (the one place that chooses between them) and for the tests that judge
// oneDNN against the reference. Signatures and layouts are those of engine/backend/nn.h.
//
//  - reference (conv.cpp): im2col + OpenBLAS GEMMs, f32 and f64, any groups. Its results do not
//    depend on the thread count. It is the judge of every other convolution (oneDNN, cuDNN).
//  - onednn (onednn_conv.cpp, the twin of cuda/cudnn_conv.cu): oneDNN's primitives, f32 only.
//    Bitwise reproducible for a fixed thread count, not across thread counts.
//
// cpu::conv2d_* take oneDNN when it is compiled in, the dtype is f32, groups is 1, the conv is not
// a 1x1 with stride 2 (where oneDNN's layout reorders cost more than they save) and
// cpu_deterministic() (engine/backend/settings.h) is off; otherwise the reference.
#pragma once
#include <string>

#include "engine/tensor.h"

namespace cpoison::cpu {

#define CP_CPU_CONV_KERNELS                                                                                  \
  Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,         \
                        int64_t padding, int64_t groups);                                                  \
  Tensor conv2d_backward_input(const Tensor& g, const Tensor& weight, int64_t in_h, int64_t in_w,          \
                               int64_t stride, int64_t padding, int64_t groups);                           \
  Tensor conv2d_backward_weight(const Tensor& g, const Tensor& x, int64_t kernel_h, int64_t kernel_w,       \
                                int64_t stride, int64_t padding, int64_t groups);

namespace reference { CP_CPU_CONV_KERNELS }

namespace onednn {
// The kernels return an undefined tensor when oneDNN has no implementation for the shapes (or the
// build has no oneDNN): the caller then runs the reference.
CP_CPU_CONV_KERNELS
// True when this build links oneDNN (meson -Ddnnl=auto finds it, or -Ddnnl=enabled).
bool available();
// Whether the oneDNN kernels take a conv of this dtype and groups (f32, groups 1).
bool supports(DType dtype, int64_t groups);
// "oneDNN 2.6.3" or "none".
std::string version();
// oneDNN's name of the implementation for a forward conv of these shapes ("jit:avx2", ...), or
// "reference" when oneDNN has none. For benchmarks (which also time the shapes conv2d_* leave to
// the reference).
std::string forward_implementation(const Shape& x, const Shape& weight, int64_t stride, int64_t padding);
}  // namespace onednn

#undef CP_CPU_CONV_KERNELS

}  // namespace cpoison::cpu
