// CPU softmax-family kernels over the last dim of a contiguous [R, C] float tensor
// (R rows, C classes). OpenMP over rows; each row is summed serially in index order, in double,
// so results are identical for any thread count.
#include "engine/backend/loss.h"

#include <cmath>

#include "engine/backend/dispatch.h"

namespace cpoison::cpu {

Tensor log_softmax_rows(const Tensor& x) {
  CP_CHECK(x.dim() == 2, "log_softmax_rows", "expects [R, C], got ", x.describe());
  const int64_t R = x.size(0), C = x.size(1);
  Tensor out = Tensor::empty({R, C}, x.dtype(), Device::cpu);
  if (out.numel() == 0) return out;
  return float_dispatch(x.dtype(), "log_softmax_rows", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = out.data<scalar_t>();
#pragma omp parallel for schedule(static) if (R * C > 16384 && R > 1)
    for (int64_t r = 0; r < R; ++r) {
      const scalar_t* row = px + r * C;
      scalar_t* y = py + r * C;
      scalar_t m = row[0];
      for (int64_t c = 1; c < C; ++c) m = row[c] > m ? row[c] : m;
      // A row of -inf (fully masked) or +inf has no finite max; shifting by 0 keeps the
      // arithmetic free of inf - inf, and the result follows IEEE rules.
      const double shift = std::isfinite((double)m) ? (double)m : 0.0;
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp((double)row[c] - shift);
      const double lse = shift + std::log(s);
      for (int64_t c = 0; c < C; ++c) y[c] = (scalar_t)((double)row[c] - lse);
    }
    return out;
  });
}

Tensor log_softmax_rows_backward(const Tensor& g, const Tensor& y) {
  CP_CHECK(g.dim() == 2 && g.shape() == y.shape() && g.dtype() == y.dtype(), "log_softmax_rows_backward",
           "expects matching [R, C] tensors, got ", g.describe(), " and ", y.describe());
  const int64_t R = y.size(0), C = y.size(1);
  Tensor out = Tensor::empty({R, C}, y.dtype(), Device::cpu);
  if (out.numel() == 0) return out;
  return float_dispatch(y.dtype(), "log_softmax_rows_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pg = g.data<scalar_t>();
    const scalar_t* py = y.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
#pragma omp parallel for schedule(static) if (R * C > 16384 && R > 1)
    for (int64_t r = 0; r < R; ++r) {
      const scalar_t* gr = pg + r * C;
      const scalar_t* yr = py + r * C;
      scalar_t* o = po + r * C;
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += (double)gr[c];
      for (int64_t c = 0; c < C; ++c) o[c] = (scalar_t)((double)gr[c] - std::exp((double)yr[c]) * s);
    }
    return out;
  });
}

}  // namespace cpoison::cpu
