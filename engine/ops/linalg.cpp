#include "engine/ops/linalg.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/linalg.h"

namespace cpoison {

bool has_singular_value_threshold(Device device) { return supports("singular_value_threshold", device); }

Tensor singular_value_threshold(const Tensor& matrices, const Tensor& mask, int64_t max_rank, double threshold, double q) {
  const char* op = "singular_value_threshold";
  CP_CHECK(matrices.defined() && mask.defined(), op, "undefined input");
  CP_CHECK(matrices.dim() == 3, op, "matrices must be [M, R, C], got ", matrices.describe());
  CP_CHECK(mask.shape() == matrices.shape(), op, "mask ", mask.describe(), " must have the shape of matrices ",
           matrices.describe());
  CP_CHECK(is_floating(matrices.dtype()) && mask.dtype() == matrices.dtype(), op,
           "matrices and mask must share one float dtype, got ", matrices.describe(), " and ", mask.describe());
  CP_CHECK(mask.device() == matrices.device(), op, "matrices ", matrices.describe(), " and mask ", mask.describe(),
           " are on different devices");
  const int64_t k = std::min(matrices.size(1), matrices.size(2));
  CP_CHECK(max_rank >= 1 && (k == 0 || max_rank <= k), op, "max_rank = ", max_rank, " must be in [1, ", k, "] for ",
           matrices.describe());
  CP_CHECK(std::isfinite(threshold) && threshold >= 0, op, "threshold = ", threshold, " must be >= 0");
  CP_CHECK(std::isfinite(q) && q > 0 && q <= 1, op, "q = ", q, ": the observed fraction must be in (0, 1]");
  CP_CHECK(has_singular_value_threshold(matrices.device()), op, "no kernel for ", matrices.describe(),
           " (the CUDA backend is not built or no GPU is usable)");
  autograd::NoGradGuard no_grad;
  return CP_BACKEND(matrices.device(), singular_value_threshold)(matrices.detach().contiguous(),
                                                                 mask.detach().contiguous(), max_rank, threshold, q);
}

}  // namespace cpoison
