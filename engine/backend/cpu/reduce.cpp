#include "engine/backend/reduce.h"

#include "engine/backend/dispatch.h"

namespace cpoison::cpu {

Tensor sum_rows(const Tensor& x) {
  int64_t R = x.size(0), C = x.size(1);
  Tensor out = Tensor::empty({R}, x.dtype(), Device::cpu);
  return float_dispatch(x.dtype(), "sum_rows", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* p = x.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    // Accumulate in double so long rows (a whole batch) lose no precision in f32.
#pragma omp parallel for schedule(static) if (R * C > 65536)
    for (int64_t r = 0; r < R; ++r) {
      double s = 0;
      const scalar_t* row = p + r * C;
      for (int64_t c = 0; c < C; ++c) s += row[c];
      o[r] = (scalar_t)s;
    }
    return out;
  });
}

Tensor argmax_rows(const Tensor& x) {
  int64_t R = x.size(0), C = x.size(1);
  Tensor out = Tensor::empty({R}, DType::i64, Device::cpu);
  return float_dispatch(x.dtype(), "argmax_rows", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* p = x.data<scalar_t>();
    int64_t* o = out.data<int64_t>();
    for (int64_t r = 0; r < R; ++r) {
      int64_t best = 0;
      for (int64_t c = 1; c < C; ++c)
        if (p[r * C + c] > p[r * C + best]) best = c;
      o[r] = best;
    }
    return out;
  });
}

}  // namespace cpoison::cpu
