#include "engine/backend/index.h"

#include <cstring>
#include <vector>

#include "engine/backend/dispatch.h"

namespace cpoison::cpu {

Tensor index_select_rows(const Tensor& a, const Tensor& index) {
  int64_t R = a.size(0), D = a.numel() / std::max<int64_t>(R, 1), M = index.numel();
  Tensor out = Tensor::empty({M, D}, a.dtype(), Device::cpu);
  const int64_t* idx = index.data<int64_t>();
  size_t row_bytes = D * dtype_size(a.dtype());
  const char* src = static_cast<const char*>(a.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t i = 0; i < M; ++i) CP_CHECK(idx[i] >= 0 && idx[i] < R, "index_select0", "index ", idx[i], " out of range [0, ", R, ")");
#pragma omp parallel for schedule(static) if (M * D > 65536)
  for (int64_t i = 0; i < M; ++i) std::memcpy(dst + i * row_bytes, src + idx[i] * row_bytes, row_bytes);
  return out;
}

Tensor index_add_rows(const Tensor& a, const Tensor& index, const Tensor& src) {
  int64_t R = a.size(0), D = a.numel() / std::max<int64_t>(R, 1), M = index.numel();
  Tensor out = a.clone();
  const int64_t* idx = index.data<int64_t>();
  for (int64_t i = 0; i < M; ++i) CP_CHECK(idx[i] >= 0 && idx[i] < R, "index_add0", "index ", idx[i], " out of range [0, ", R, ")");
  return float_dispatch(a.dtype(), "index_add0", [&](auto tag) {
    using scalar_t = decltype(tag);
    scalar_t* o = out.data<scalar_t>();
    const scalar_t* s = src.data<scalar_t>();
    // Parallel over columns keeps the per-row order of additions fixed (deterministic).
#pragma omp parallel for schedule(static) if (M * D > 65536)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t i = 0; i < M; ++i) o[idx[i] * D + d] += s[i * D + d];
    return out;
  });
}

Tensor index_copy_rows(const Tensor& a, const Tensor& index, const Tensor& src) {
  int64_t R = a.size(0), D = a.numel() / std::max<int64_t>(R, 1), M = index.numel();
  Tensor out = a.clone();
  const int64_t* idx = index.data<int64_t>();
  std::vector<char> seen(R, 0);
  for (int64_t i = 0; i < M; ++i) {
    CP_CHECK(idx[i] >= 0 && idx[i] < R, "index_copy0", "index ", idx[i], " out of range [0, ", R, ")");
    CP_CHECK(!seen[idx[i]], "index_copy0", "row ", idx[i], " is indexed more than once");
    seen[idx[i]] = 1;
  }
  size_t row_bytes = D * dtype_size(a.dtype());
  const char* s = static_cast<const char*>(src.raw_data());
  char* o = static_cast<char*>(out.raw_data());
#pragma omp parallel for schedule(static) if (M * D > 65536)
  for (int64_t i = 0; i < M; ++i) std::memcpy(o + idx[i] * row_bytes, s + i * row_bytes, row_bytes);
  return out;
}

Tensor gather_cols(const Tensor& a, const Tensor& index) {
  int64_t N = a.size(0), K = a.size(1);
  Tensor out = Tensor::empty({N}, a.dtype(), Device::cpu);
  const int64_t* idx = index.data<int64_t>();
  for (int64_t i = 0; i < N; ++i) CP_CHECK(idx[i] >= 0 && idx[i] < K, "gather1", "index ", idx[i], " out of range [0, ", K, ")");
  return float_dispatch(a.dtype(), "gather1", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* p = a.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    for (int64_t i = 0; i < N; ++i) o[i] = p[i * K + idx[i]];
    return out;
  });
}

Tensor scatter_cols(const Tensor& g, const Tensor& index, int64_t K) {
  int64_t N = g.size(0);
  Tensor out = Tensor::zeros({N, K}, g.dtype(), Device::cpu);
  const int64_t* idx = index.data<int64_t>();
  return float_dispatch(g.dtype(), "gather1 backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pg = g.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    for (int64_t i = 0; i < N; ++i) o[i * K + idx[i]] = pg[i];
    return out;
  });
}

}  // namespace cpoison::cpu
