// Neural-network kernels: convolution, matrix products, batch norm, pooling.
// Layout letters: N batch, C channels, H rows, W columns; images are NCHW, conv weights are
// [Cout, Cin/groups, KH, KW]. Every tensor argument is contiguous, on the kernel's device, and of
// one float dtype (f32 or f64 on the CPU); an "optional" tensor may be undefined. Every kernel
// returns new contiguous tensors; only batch_norm_train writes into an argument (the running
// statistics). The ops layer (engine/ops/nn.cpp) checks shapes, so kernels assume them valid.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace cpoison {

#define CP_NN_KERNELS                                                                                    \
  /* ---- convolution. Output size Ho = (H + 2*padding - KH) / stride + 1 (same for W). */              \
  /* x [N,Cin,H,W], weight [Cout,Cin/groups,KH,KW], bias [Cout] optional -> y [N,Cout,Ho,Wo]. */         \
  Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,       \
                        int64_t padding, int64_t groups);                                                \
  /* dL/dx [N,Cin,in_h,in_w] from g = dL/dy [N,Cout,Ho,Wo] and the weight. */                           \
  Tensor conv2d_backward_input(const Tensor& g, const Tensor& weight, int64_t in_h, int64_t in_w,        \
                               int64_t stride, int64_t padding, int64_t groups);                         \
  /* dL/dweight [Cout,Cin/groups,KH,KW] from g = dL/dy [N,Cout,Ho,Wo] and the input x [N,Cin,H,W]. */    \
  Tensor conv2d_backward_weight(const Tensor& g, const Tensor& x, int64_t kernel_h, int64_t kernel_w,     \
                                int64_t stride, int64_t padding, int64_t groups);                        \
                                                                                                         \
  /* ---- per-channel bias. x is viewed as [outer, C, inner] (inner = H*W for images, 1 for rows). */    \
  /* y = x + bias[c]. */                                                                                  \
  Tensor add_channel_bias(const Tensor& x, const Tensor& bias, int64_t inner);                            \
  /* [C]: sum of x over outer and inner (the bias gradient of conv2d and linear). */                      \
  Tensor channel_sum(const Tensor& x, int64_t channels, int64_t inner);                                   \
                                                                                                         \
  /* ---- matrix product. a is [M,K] or [B,M,K] ([K,M] / [B,K,M] when transpose_a), b is [K,N] or */   \
  /* [B,K,N] ([N,K] / [B,N,K] when transpose_b). A 2-d side is shared by every batch entry. */            \
  /* Output [M,N] when both are 2-d, else [B,M,N]. */                                                     \
  Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b);                   \
                                                                                                         \
  /* ---- batch norm over N (and H, W) for x [N,C] or [N,C,H,W]; weight, bias [C] optional (1, 0). */    \
  /* Training: normalises with the batch mean and biased variance and returns {y, save_mean,      */    \
  /* save_invstd} (save_* [C], invstd = 1/sqrt(var + eps)). When running_mean/running_var [C] are */    \
  /* defined they are updated in place: r = (1 - momentum) r + momentum * stat, with the unbiased */    \
  /* batch variance (var * n / (n - 1), n = N*H*W) as PyTorch and cuDNN do. */                          \
  std::vector<Tensor> batch_norm_train(const Tensor& x, const Tensor& weight, const Tensor& bias,        \
                                       const Tensor& running_mean, const Tensor& running_var,            \
                                       double momentum, double eps);                                     \
  /* Eval: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias. */                          \
  Tensor batch_norm_eval(const Tensor& x, const Tensor& weight, const Tensor& bias,                      \
                         const Tensor& running_mean, const Tensor& running_var, double eps);             \
  /* Full backward through the batch statistics of batch_norm_train. Returns {dx, dweight, dbias}; */    \
  /* entry i is computed only when need_i is true (undefined otherwise). weight optional. */             \
  std::vector<Tensor> batch_norm_backward_train(const Tensor& g, const Tensor& x, const Tensor& weight,   \
                                                const Tensor& save_mean, const Tensor& save_invstd,      \
                                                bool need_input, bool need_weight, bool need_bias);      \
  /* Backward of batch_norm_eval (an affine map per channel). Returns {dx, dweight, dbias} as above. */ \
  std::vector<Tensor> batch_norm_backward_eval(const Tensor& g, const Tensor& x, const Tensor& weight,    \
                                               const Tensor& running_mean, const Tensor& running_var,    \
                                               double eps, bool need_input, bool need_weight,            \
                                               bool need_bias);                                          \
                                                                                                         \
  /* ---- pooling over square windows; output size Ho = (H + 2*padding - kernel) / stride + 1. */         \
  /* Max pool: padding never wins (acts as -inf). */                                                      \
  Tensor max_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);           \
  /* dL/dx from g = dL/dy and the input x: each output's gradient goes to the first (row-major) */      \
  /* maximum of its window, recomputed from x. */                                                         \
  Tensor max_pool2d_backward(const Tensor& g, const Tensor& x, int64_t kernel, int64_t stride,           \
                             int64_t padding);                                                           \
  /* Average pool; padding counts as zeros in the average (count_include_pad). */                        \
  Tensor avg_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);           \
  Tensor avg_pool2d_backward(const Tensor& g, int64_t in_h, int64_t in_w, int64_t kernel,                \
                             int64_t stride, int64_t padding);                                           \
  /* [N,C,H,W] -> [N,C,1,1] mean over H, W; backward spreads g / (H*W) over [N,C,in_h,in_w]. */          \
  Tensor global_avg_pool2d_forward(const Tensor& x);                                                     \
  Tensor global_avg_pool2d_backward(const Tensor& g, int64_t in_h, int64_t in_w);

namespace cpu { CP_NN_KERNELS }
namespace cuda { CP_NN_KERNELS }
}  // namespace cpoison
