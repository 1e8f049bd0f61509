// Indexing along dim 0. Indices are i64 on the same device. Backward scatter-adds, so a row
// picked several times (class-wise noise indexed by label) receives the sum of its gradients.
#pragma once
#include "engine/tensor.h"

namespace cpoison {

// out[i] = a[index[i]]  (a [R, ...], index [M] -> [M, ...]); differentiable w.r.t. a.
Tensor index_select0(const Tensor& a, const Tensor& index);
// out = a with out[index[i]] += src[i]; differentiable w.r.t. a and src.
Tensor index_add0(const Tensor& a, const Tensor& index, const Tensor& src);
// out = a with out[index[i]] = src[i], an exact copy of the rows (any dtype); the index must not
// repeat a row (an Error otherwise). Differentiable w.r.t. a (the replaced rows get no gradient)
// and src (float tensors).
Tensor index_copy0(const Tensor& a, const Tensor& index, const Tensor& src);
// out[i] = a[i, index[i]] for a [N, K] and index [N] -> [N]; differentiable w.r.t. a.
Tensor gather1(const Tensor& a, const Tensor& index);

}  // namespace cpoison
