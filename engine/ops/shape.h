// Shape ops. reshape and slice0 are members of Tensor; these produce new layouts.
// All are differentiable and work for every dtype.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace cpoison {

Tensor flatten(const Tensor& a, int64_t start_dim = 1);  // merges dims start_dim.. into one
Tensor transpose(const Tensor& a, int64_t d0, int64_t d1);  // contiguous result
Tensor permute(const Tensor& a, const std::vector<int64_t>& dims);  // contiguous result
Tensor concat(const std::vector<Tensor>& parts, int64_t dim);
// Splits along dim into pieces of the given sizes (they must add up to a.size(dim)).
std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim);
Tensor narrow(const Tensor& a, int64_t dim, int64_t start, int64_t length);  // contiguous copy
Tensor broadcast_to(const Tensor& a, const Shape& shape);  // contiguous copy
Tensor unsqueeze(const Tensor& a, int64_t dim);
Tensor squeeze(const Tensor& a, int64_t dim);

}  // namespace cpoison
