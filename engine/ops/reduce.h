// Reductions. Float dtypes; dims may be negative. keepdim keeps reduced dims as size 1.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace cpoison {

Tensor sum(const Tensor& a);  // all elements -> shape {}
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& a);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim = false);
// Variance over dims; unbiased divides by (n - 1).
Tensor var(const Tensor& a, const std::vector<int64_t>& dims, bool unbiased, bool keepdim = false);
// Sums a broadcast result back to `shape` (the reverse of broadcasting; used by backward).
Tensor sum_to(const Tensor& a, const Shape& shape);
// Index of the largest value along dim (i64, not differentiable); ties take the first.
Tensor argmax(const Tensor& a, int64_t dim);
// Largest value along dim (differentiable: the gradient goes to the first maximum).
Tensor max(const Tensor& a, int64_t dim, bool keepdim = false);

}  // namespace cpoison
