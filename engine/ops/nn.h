// Neural-network ops. Images are NCHW; conv weights are [Cout, Cin/groups, KH, KW].
// Float dtypes; all tensors on one device.
#pragma once
#include "engine/tensor.h"

namespace cpoison {

struct Conv2dOptions {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t groups = 1;
};
// bias may be undefined.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt = {});

// x [..., in], weight [out, in], bias [out] or undefined -> [..., out]  (x · weightᵀ + bias)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);
// [M,K]x[K,N] or batched [B,M,K]x[B,K,N] (B may broadcast when one side is 2-d).
Tensor matmul(const Tensor& a, const Tensor& b);

// Batch norm over N (and H, W) for x [N, C] or [N, C, H, W]. In training it normalises with the
// batch statistics and, when running_mean/var are defined, updates them in place:
// r = (1 - momentum) r + momentum * batch_stat, with the unbiased batch variance (as PyTorch).
// In eval it normalises with the running statistics. weight/bias may be undefined (affine off).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5);

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding = 0);
// Padding counts as zeros in the average (count_include_pad = true, as PyTorch's default).
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding = 0);
// Adaptive average pool to 1x1: [N, C, H, W] -> [N, C, 1, 1].
Tensor global_avg_pool2d(const Tensor& x);

}  // namespace cpoison
