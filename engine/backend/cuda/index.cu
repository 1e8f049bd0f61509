// CUDA row gather/scatter along dim 0. index_add_rows is deterministic and adds in the same
// order as the CPU kernel: the rows of src are stably sorted by target row, then each output
// element adds its sources in index order (no atomics).
#include <cub/device/device_radix_sort.cuh>
#include <vector>

#include "engine/backend/cuda/common.cuh"
#include "engine/backend/index.h"
#include "engine/backend/memory.h"

namespace cpoison::cuda {

namespace {
// Throws the CPU kernels' message for the first index outside [0, limit) (error path only).
void check_range(const Tensor& index, int64_t limit, const char* op) {
  int64_t n = index.numel();
  if (n == 0) return;
  const int64_t* idx = index.data<int64_t>();
  DeviceFlag bad;
  int* flag = bad.ptr();
  for_each_index(n, [=] __device__(int64_t i) {
    if (idx[i] < 0 || idx[i] >= limit) *flag = 1;
  });
  if (!bad.read()) return;
  std::vector<int64_t> host = index.to_vector<int64_t>();
  for (int64_t v : host) CP_CHECK(v >= 0 && v < limit, op, "index ", v, " out of range [0, ", limit, ")");
}

template <class T>
void select_rows_typed(const Tensor& a, const Tensor& index, Tensor& out, int64_t D) {
  const T* pa = a.data<T>();
  const int64_t* idx = index.data<int64_t>();
  T* po = out.data<T>();
  for_each_index(out.numel(), [=] __device__(int64_t e) {
    int64_t i = e / D, d = e % D;
    po[e] = pa[idx[i] * D + d];
  });
}

template <class T>
void add_sorted_rows(const Tensor& a, const Tensor& src, const int64_t* starts, const int64_t* order, Tensor& out, int64_t D) {
  const T* pa = a.data<T>();
  const T* ps = src.data<T>();
  T* po = out.data<T>();
  for_each_index(out.numel(), [=] __device__(int64_t e) {
    int64_t r = e / D, d = e % D;
    T acc = pa[e];
    for (int64_t j = starts[r]; j < starts[r + 1]; ++j) acc += ps[order[j] * D + d];
    po[e] = acc;
  });
}

template <class T>
void copy_rows_typed(const Tensor& src, const Tensor& index, Tensor& out, int64_t D) {
  const T* ps = src.data<T>();
  const int64_t* idx = index.data<int64_t>();
  T* po = out.data<T>();
  for_each_index(src.numel(), [=] __device__(int64_t e) {
    int64_t i = e / D, d = e % D;
    po[idx[i] * D + d] = ps[e];
  });
}

template <class T>
Tensor gather_cols_typed(const Tensor& a, const Tensor& index) {
  int64_t N = a.size(0), K = a.size(1);
  Tensor out = Tensor::empty({N}, a.dtype(), Device::cuda);
  const T* p = a.data<T>();
  const int64_t* idx = index.data<int64_t>();
  T* o = out.data<T>();
  for_each_index(N, [=] __device__(int64_t i) { o[i] = p[i * K + idx[i]]; });
  return out;
}

template <class T>
Tensor scatter_cols_typed(const Tensor& g, const Tensor& index, int64_t K) {
  int64_t N = g.size(0);
  Tensor out = Tensor::zeros({N, K}, g.dtype(), Device::cuda);
  const T* pg = g.data<T>();
  const int64_t* idx = index.data<int64_t>();
  T* o = out.data<T>();
  // The index was checked by the forward gather; a bad one is skipped rather than written.
  for_each_index(N, [=] __device__(int64_t i) {
    if (idx[i] >= 0 && idx[i] < K) o[i * K + idx[i]] = pg[i];
  });
  return out;
}
}  // namespace

Tensor index_select_rows(const Tensor& a, const Tensor& index) {
  int64_t R = a.size(0), D = a.numel() / std::max<int64_t>(R, 1), M = index.numel();
  check_range(index, R, "index_select0");
  Tensor out = Tensor::empty({M, D}, a.dtype(), Device::cuda);
  any_dtype_dispatch(a.dtype(), [&](auto tag) { select_rows_typed<decltype(tag)>(a, index, out, D); });
  return out;
}

Tensor index_add_rows(const Tensor& a, const Tensor& index, const Tensor& src) {
  int64_t R = a.size(0), D = a.numel() / std::max<int64_t>(R, 1), M = index.numel();
  CP_CHECK(is_floating(a.dtype()) && src.dtype() == a.dtype(), "index_add0", "needs float tensors of one dtype: ", a.describe(),
           ", ", src.describe());
  check_range(index, R, "index_add0");
  Tensor out = Tensor::empty({R, D}, a.dtype(), Device::cuda);
  if (out.numel() == 0) return out;

  // Stable radix sort of (target row, source position); keys are in [0, R) after the check.
  Tensor keys_out = Tensor::empty({M}, DType::i64, Device::cuda);
  Tensor order_in = Tensor::empty({M}, DType::i64, Device::cuda);
  Tensor order = Tensor::empty({M}, DType::i64, Device::cuda);
  Tensor starts = Tensor::empty({R + 1}, DType::i64, Device::cuda);
  int end_bit = 1;
  while (end_bit < 63 && ((int64_t)1 << end_bit) < R) ++end_bit;
  auto keys_in_p = reinterpret_cast<const unsigned long long*>(index.data<int64_t>());
  auto keys_out_p = reinterpret_cast<unsigned long long*>(keys_out.data<int64_t>());
  int64_t* order_in_p = order_in.data<int64_t>();
  int64_t* order_p = order.data<int64_t>();
  for_each_index(M, [=] __device__(int64_t i) { order_in_p[i] = i; });
  if (M > 0) {
    size_t temp_bytes = 0;
    CP_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in_p, keys_out_p, order_in_p, order_p, M, 0, end_bit, stream()));
    Tensor temp = Tensor::empty({(int64_t)std::max<size_t>(temp_bytes, 1)}, DType::u8, Device::cuda);
    CP_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, keys_in_p, keys_out_p, order_in_p, order_p, M, 0, end_bit,
                                                  stream()));
  }
  // starts[r] = first sorted position whose key is >= r (binary search per row).
  int64_t* starts_p = starts.data<int64_t>();
  const unsigned long long* sorted = keys_out_p;
  for_each_index(R + 1, [=] __device__(int64_t r) {
    int64_t lo = 0, hi = M;
    while (lo < hi) {
      int64_t mid = (lo + hi) / 2;
      if ((int64_t)sorted[mid] < r) lo = mid + 1;
      else hi = mid;
    }
    starts_p[r] = lo;
  });
  float_dispatch(a.dtype(), "index_add0", [&](auto tag) { add_sorted_rows<decltype(tag)>(a, src, starts_p, order_p, out, D); });
  return out;
}

Tensor index_copy_rows(const Tensor& a, const Tensor& index, const Tensor& src) {
  int64_t R = a.size(0), D = a.numel() / std::max<int64_t>(R, 1), M = index.numel();
  check_range(index, R, "index_copy0");
  Tensor out = a.clone();
  if (M == 0 || D == 0) return out;
  // A repeated row would be written by two threads: counted first, an Error as on the CPU.
  Tensor counts = Tensor::zeros({R}, DType::i32, Device::cuda);
  int* pc = counts.data<int32_t>();
  const int64_t* idx = index.data<int64_t>();
  DeviceFlag repeated;
  int* flag = repeated.ptr();
  for_each_index(M, [=] __device__(int64_t i) {
    if (atomicAdd(pc + idx[i], 1) > 0) *flag = 1;
  });
  if (repeated.read()) {
    std::vector<int64_t> host = index.to_vector<int64_t>();
    std::vector<char> seen(R, 0);
    for (int64_t v : host) {
      CP_CHECK(!seen[v], "index_copy0", "row ", v, " is indexed more than once");
      seen[v] = 1;
    }
  }
  any_dtype_dispatch(a.dtype(), [&](auto tag) { copy_rows_typed<decltype(tag)>(src, index, out, D); });
  return out;
}

Tensor gather_cols(const Tensor& a, const Tensor& index) {
  check_range(index, a.size(1), "gather1");
  return float_dispatch(a.dtype(), "gather1", [&](auto tag) { return gather_cols_typed<decltype(tag)>(a, index); });
}

Tensor scatter_cols(const Tensor& g, const Tensor& index, int64_t K) {
  return float_dispatch(g.dtype(), "gather1 backward", [&](auto tag) { return scatter_cols_typed<decltype(tag)>(g, index, K); });
}

}  // namespace cpoison::cuda
