// Linear algebra on batches of small matrices (the contracts: engine/backend/linalg.h).
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace cpoison {

// Masked singular-value thresholding of each matrix: with Y = matrices[m] * mask[m] and its thin
// SVD, out[m] = clamp((1 / q) * sum of s_i u_i v_i^T over i < max_rank with s_i >= threshold, 0, 1).
// matrices and mask [M, R, C] of one float dtype and device, mask entries 0/1, 1 <= max_rank <=
// min(R, C), threshold >= 0, q in (0, 1]. Not differentiable (records nothing). Error naming the
// argument otherwise, or naming the device when its backend lacks the kernel.
Tensor singular_value_threshold(const Tensor& matrices, const Tensor& mask, int64_t max_rank, double threshold, double q);
// Whether `device` has the kernel (CUDA: a CUDA build and a usable GPU).
bool has_singular_value_threshold(Device device);

}  // namespace cpoison
