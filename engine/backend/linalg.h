// Linear-algebra kernels on batches of small dense matrices (M matrices of R rows and C columns,
// row-major, contiguous). Used by matrix completion (defense/usvt.h). CPU: LAPACK dgesdd in
// double precision (engine/backend/cpu/linalg.cpp); CUDA: cuSOLVER (gesvdjBatched for
// R, C <= 32, else one gesvdj per matrix) in engine/backend/cuda/linalg.cu.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace cpoison {
#define CP_LINALG_KERNELS                                                                             \
  /* Universal singular value thresholding (Chatterjee 2015) of each matrix, batched.             */ \
  /* x, mask [M, R, C], one float dtype (f32 or f64), contiguous, same device; mask entries are    */ \
  /* 0 (missing) or 1 (observed). For each matrix m, with k = min(R, C):                           */ \
  /*   Y = x[m] * mask[m]                        (missing entries read as 0)                      */ \
  /*   Y = U diag(s) V^T, s[0] >= ... >= s[k-1]   (thin SVD)                                       */ \
  /*   kept = { i < max_rank : s[i] >= threshold }   (max_rank in [1, k]; threshold >= 0)          */ \
  /*   out[m] = clamp( (1 / q) * sum_{i in kept} s[i] u_i v_i^T , 0, 1 )                           */ \
  /* q in (0, 1] is the observed fraction the caller divides by. Returns [M, R, C] of x's dtype.   */ \
  /* The sum runs over i in increasing order for each entry. Singular values within a few ulps of  */ \
  /* the threshold may be kept on one backend and dropped on the other; the CPU is the judge.     */ \
  Tensor singular_value_threshold(const Tensor& x, const Tensor& mask, int64_t max_rank, double threshold, double q);

namespace cpu { CP_LINALG_KERNELS }
namespace cuda { CP_LINALG_KERNELS }
}  // namespace cpoison
