// CUDA softmax-family kernels over the last dim of a contiguous [R, C] float tensor: one block
// per row; the row's max and sums go through fixed shuffle trees in double (deterministic), with
// the formulas of backend/cpu/loss.cpp.
#include "engine/backend/cuda/block_reduce.cuh"
#include "engine/backend/loss.h"

namespace cpoison::cuda {

namespace {
int threads_for(int64_t C) {
  int t = 32;
  while (t < 256 && t < C) t *= 2;
  return t;
}

// The block's sum, visible to every thread.
__device__ inline double block_sum_all(double v) {
  __shared__ double total;
  v = block_sum(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

// The block's max (NaN-propagating like the CPU's `row[c] > m ? row[c] : m` only for finite rows).
__device__ inline double block_max_all(double v) {
  __shared__ double warp_max[32];
  __shared__ double total;
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double m = warp_max[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) m = fmax(m, warp_max[w]);
    total = m;
  }
  __syncthreads();
  return total;
}

template <class T>
__global__ void log_softmax_kernel(const T* x, int64_t C, T* y) {
  const T* row = x + blockIdx.x * C;
  T* out = y + blockIdx.x * C;
  double m = -INFINITY;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) m = fmax(m, (double)row[c]);
  m = block_max_all(m);
  // A row of -inf (fully masked) or +inf has no finite max: shift by 0 as the CPU does.
  const double shift = isfinite(m) ? m : 0.0;
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += exp((double)row[c] - shift);
  s = block_sum_all(s);
  const double lse = shift + log(s);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[c] = (T)((double)row[c] - lse);
}

template <class T>
__global__ void log_softmax_backward_kernel(const T* g, const T* y, int64_t C, T* dx) {
  const T* gr = g + blockIdx.x * C;
  const T* yr = y + blockIdx.x * C;
  T* o = dx + blockIdx.x * C;
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += (double)gr[c];
  s = block_sum_all(s);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = (T)((double)gr[c] - exp((double)yr[c]) * s);
}

template <class T>
Tensor forward_typed(const Tensor& x) {
  const int64_t R = x.size(0), C = x.size(1);
  Tensor out = Tensor::empty({R, C}, x.dtype(), Device::cuda);
  if (out.numel() == 0) return out;
  log_softmax_kernel<T><<<(unsigned)R, threads_for(C), 0, stream()>>>(x.data<T>(), C, out.data<T>());
  CP_CUDA_CHECK_LAUNCH();
  return out;
}

template <class T>
Tensor backward_typed(const Tensor& g, const Tensor& y) {
  const int64_t R = y.size(0), C = y.size(1);
  Tensor out = Tensor::empty({R, C}, y.dtype(), Device::cuda);
  if (out.numel() == 0) return out;
  log_softmax_backward_kernel<T><<<(unsigned)R, threads_for(C), 0, stream()>>>(g.data<T>(), y.data<T>(), C, out.data<T>());
  CP_CUDA_CHECK_LAUNCH();
  return out;
}
}  // namespace

Tensor log_softmax_rows(const Tensor& x) {
  CP_CHECK(x.dim() == 2, "log_softmax_rows", "expects [R, C], got ", x.describe());
  return float_dispatch(x.dtype(), "log_softmax_rows", [&](auto tag) { return forward_typed<decltype(tag)>(x); });
}

Tensor log_softmax_rows_backward(const Tensor& g, const Tensor& y) {
  CP_CHECK(g.dim() == 2 && g.shape() == y.shape() && g.dtype() == y.dtype(), "log_softmax_rows_backward",
           "expects matching [R, C] tensors, got ", g.describe(), " and ", y.describe());
  return float_dispatch(y.dtype(), "log_softmax_rows_backward", [&](auto tag) { return backward_typed<decltype(tag)>(g, y); });
}

}  // namespace cpoison::cuda
