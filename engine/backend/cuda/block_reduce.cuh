// Deterministic block-level sums and per-channel reductions shared by the reduce, conv-bias,
// batch-norm and pooling kernels. Every sum runs over a partition fixed by the shapes alone
// (never by the GPU or by timing), through a fixed shuffle tree, in double.
#pragma once
#include "engine/backend/cuda/common.cuh"

namespace cpoison::cuda {

// Sum over the block of one double per thread; the result is valid in thread 0. blockDim.x
// must be a multiple of 32 (at most 1024). Safe to call repeatedly in one kernel.
__device__ inline double block_sum(double v) {
  __shared__ double warp_sums[32];
  __syncthreads();  // a previous call's readers are done with warp_sums
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  int warps = blockDim.x >> 5;
  if (warp == 0) {
    v = lane < warps ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

template <int K>
struct Sums {
  double v[K];
};

// Block (c, k) of the first pass: K sums of f(element index) over chunk k of channel c.
template <int K, class F>
__global__ void channel_partial_kernel(int64_t C, uint32_t inner, int64_t outer, int64_t rows_per_chunk, int64_t chunks, F f,
                                       double* partial) {
  const int64_t c = blockIdx.x / chunks, k = blockIdx.x % chunks;
  const int64_t o0 = k * rows_per_chunk, rows = min(outer, o0 + rows_per_chunk) - o0;
  const uint32_t count = (uint32_t)(rows * inner);
  double acc[K];
  for (int q = 0; q < K; ++q) acc[q] = 0;
  for (uint32_t j = threadIdx.x; j < count; j += blockDim.x) {
    const int64_t o = o0 + j / inner, i = j % inner;
    Sums<K> s = f(((o * C) + c) * (int64_t)inner + i, c);
    for (int q = 0; q < K; ++q) acc[q] += s.v[q];
  }
  for (int q = 0; q < K; ++q) {
    double total = block_sum(acc[q]);
    if (threadIdx.x == 0) partial[(int64_t)blockIdx.x * K + q] = total;
  }
}

// out[q * C + c] = sum over chunks of partial, in chunk order.
template <int K>
__global__ void channel_finish_kernel(int64_t C, int64_t chunks, const double* partial, double* out) {
  int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (t >= C * K) return;
  int64_t c = t / K, q = t % K;
  double s = 0;
  for (int64_t k = 0; k < chunks; ++k) s += partial[(c * chunks + k) * K + q];
  out[q * C + c] = s;
}

// For x viewed as [outer, C, inner]: out (device, K*C doubles) gets, for each channel c and
// q < K, the sum over all (o, i) of f(flat index, c).v[q]. Returns the chunking used.
template <int K, class F>
void channel_sums(int64_t outer, int64_t C, int64_t inner, F f, double* out) {
  CP_CHECK(inner < (int64_t)1 << 30, "channel reduction", "inner size ", inner, " too large");
  if (C == 0) return;
  constexpr int64_t kElemsPerBlock = 16384;
  const int64_t rows_per_chunk = std::max<int64_t>(1, kElemsPerBlock / std::max<int64_t>(inner, 1));
  const int64_t chunks = std::max<int64_t>(1, (outer + rows_per_chunk - 1) / rows_per_chunk);
  Tensor partial = Tensor::empty({C * chunks * K}, DType::f64, Device::cuda);
  double* pp = partial.data<double>();
  channel_partial_kernel<K><<<(unsigned)(C * chunks), kThreads, 0, stream()>>>(C, (uint32_t)inner, outer, rows_per_chunk, chunks, f, pp);
  CP_CUDA_CHECK_LAUNCH();
  channel_finish_kernel<K><<<blocks_for(C * K), kThreads, 0, stream()>>>(C, chunks, pp, out);
  CP_CUDA_CHECK_LAUNCH();
}

}  // namespace cpoison::cuda
