// CUDA row reductions over a contiguous [R, C] tensor. Deterministic: each block reduces a fixed
// slice of a row with a fixed tree (no atomics), and the slicing depends only on the shape, so
// a result is the same on every run and every GPU.
#include "engine/backend/cuda/block_reduce.cuh"
#include "engine/backend/reduce.h"

namespace cpoison::cuda {

namespace {
// Threads per block for rows of C elements: enough to cover short rows, at most 256.
int threads_for(int64_t C) {
  int t = 32;
  while (t < 256 && t < C) t *= 2;
  return t;
}

// Block b sums chunk (b % chunks) of row (b / chunks); accumulates in double like the CPU.
template <class In, class Out>
__global__ void sum_chunks_kernel(const In* x, int64_t C, int64_t chunk, int64_t chunks, Out* out) {
  int64_t r = blockIdx.x / chunks, k = blockIdx.x % chunks;
  int64_t begin = k * chunk, end = min(C, begin + chunk);
  const In* row = x + r * C;
  double s = 0;
  for (int64_t c = begin + threadIdx.x; c < end; c += blockDim.x) s += (double)row[c];
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = (Out)s;
}

template <class T>
Tensor sum_rows_typed(const Tensor& x) {
  int64_t R = x.size(0), C = x.size(1);
  Tensor out = Tensor::empty({R}, x.dtype(), Device::cuda);
  if (R == 0) return out;
  if (C == 0) {
    out.fill_(0.0);
    return out;
  }
  const T* px = x.data<T>();
  T* po = out.data<T>();
  // Few long rows: split each row into fixed chunks so the whole GPU works, then sum the partials.
  constexpr int64_t kChunk = 16384;
  int64_t chunks = (R < 256 && C > 2 * kChunk) ? (C + kChunk - 1) / kChunk : 1;
  if (chunks == 1) {
    sum_chunks_kernel<T, T><<<(unsigned)R, threads_for(C), 0, stream()>>>(px, C, C, 1, po);
    CP_CUDA_CHECK_LAUNCH();
    return out;
  }
  Tensor partial = Tensor::empty({R, chunks}, DType::f64, Device::cuda);
  double* pp = partial.data<double>();
  sum_chunks_kernel<T, double><<<(unsigned)(R * chunks), 256, 0, stream()>>>(px, C, kChunk, chunks, pp);
  CP_CUDA_CHECK_LAUNCH();
  sum_chunks_kernel<double, T><<<(unsigned)R, threads_for(chunks), 0, stream()>>>(pp, chunks, chunks, 1, po);
  CP_CUDA_CHECK_LAUNCH();
  return out;
}

// The first index of the row maximum: ties go to the smaller index, as in the CPU's scan.
template <class T>
__global__ void argmax_rows_kernel(const T* x, int64_t C, int64_t* out) {
  __shared__ T warp_val[32];
  __shared__ int64_t warp_idx[32];
  const T* row = x + blockIdx.x * C;
  T best = row[0];
  int64_t best_i = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    if (row[c] > best || (row[c] == best && c < best_i)) {
      best = row[c];
      best_i = c;
    }
  auto combine = [&](T v, int64_t i) {
    if (v > best || (v == best && i < best_i)) {
      best = v;
      best_i = i;
    }
  };
  for (int o = 16; o > 0; o >>= 1) combine(__shfl_down_sync(0xffffffffu, best, o), __shfl_down_sync(0xffffffffu, best_i, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    warp_val[warp] = best;
    warp_idx[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) combine(warp_val[w], warp_idx[w]);
    out[blockIdx.x] = best_i;
  }
}

template <class T>
Tensor argmax_rows_typed(const Tensor& x) {
  int64_t R = x.size(0), C = x.size(1);
  CP_CHECK(C > 0 || R == 0, "argmax_rows", "rows are empty: ", x.describe());
  Tensor out = Tensor::empty({R}, DType::i64, Device::cuda);
  if (R == 0) return out;
  argmax_rows_kernel<T><<<(unsigned)R, threads_for(C), 0, stream()>>>(x.data<T>(), C, out.data<int64_t>());
  CP_CUDA_CHECK_LAUNCH();
  return out;
}
}  // namespace

Tensor sum_rows(const Tensor& x) {
  CP_CHECK(x.dim() == 2 && x.is_contiguous(), "sum_rows", "needs a contiguous [R, C] tensor, got ", x.describe());
  return float_dispatch(x.dtype(), "sum_rows", [&](auto tag) { return sum_rows_typed<decltype(tag)>(x); });
}

Tensor argmax_rows(const Tensor& x) {
  CP_CHECK(x.dim() == 2 && x.is_contiguous(), "argmax_rows", "needs a contiguous [R, C] tensor, got ", x.describe());
  return float_dispatch(x.dtype(), "argmax_rows", [&](auto tag) { return argmax_rows_typed<decltype(tag)>(x); });
}

}  // namespace cpoison::cuda
