// Row gather/scatter kernels along dim 0. Tensors are contiguous; index is i64 [M].
#pragma once
#include "engine/tensor.h"

namespace cpoison {
#define CP_INDEX_KERNELS                                                                              \
  Tensor index_select_rows(const Tensor& a, const Tensor& index);       /* [R, D] -> [M, D] */       \
  /* out = a (copied) with out[index[i]] += src[i]; rows added in index order (deterministic). */     \
  Tensor index_add_rows(const Tensor& a, const Tensor& index, const Tensor& src);                     \
  /* out = a (copied) with row index[i] replaced by src[i], bit for bit (any dtype); the index */     \
  /* must not repeat a row (an Error otherwise). */                                                  \
  Tensor index_copy_rows(const Tensor& a, const Tensor& index, const Tensor& src);                    \
  Tensor gather_cols(const Tensor& a, const Tensor& index);             /* [N, K] -> [N] */          \
  Tensor scatter_cols(const Tensor& g, const Tensor& index, int64_t K); /* [N] -> [N, K] zeros + g */
namespace cpu { CP_INDEX_KERNELS }
namespace cuda { CP_INDEX_KERNELS }
}  // namespace cpoison
