// Row reductions over a contiguous [R, C] float tensor.
#pragma once
#include "engine/tensor.h"

namespace cpoison {
#define CP_REDUCE_KERNELS                                                  \
  Tensor sum_rows(const Tensor& x);     /* [R, C] -> [R], sums in order */ \
  Tensor argmax_rows(const Tensor& x);  /* [R, C] -> i64 [R], first max */
namespace cpu { CP_REDUCE_KERNELS }
namespace cuda { CP_REDUCE_KERNELS }
}  // namespace cpoison
