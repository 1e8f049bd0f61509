// Softmax-family kernels behind engine/ops/loss.h. Float dtypes (f32, f64); inputs contiguous
// [R, C] (R rows, C classes), the reduction runs over the last dim C. C >= 1.
#pragma once
#include "engine/tensor.h"

namespace cpoison {
#define CP_LOSS_KERNELS                                                                          \
  /* y[r, c] = x[r, c] - m_r - log(sum_k exp(x[r, k] - m_r)), m_r = max_k x[r, k]: stable for      \
     any finite x. Rows are independent; each row's sum runs in a fixed order (deterministic). */  \
  Tensor log_softmax_rows(const Tensor& x);                                                      \
  /* Gradient of log_softmax_rows: dx[r, c] = g[r, c] - exp(y[r, c]) * sum_k g[r, k],             \
     from the upstream gradient g and the forward output y (both [R, C]). */                      \
  Tensor log_softmax_rows_backward(const Tensor& g, const Tensor& y);
namespace cpu { CP_LOSS_KERNELS }
namespace cuda { CP_LOSS_KERNELS }
}  // namespace cpoison
