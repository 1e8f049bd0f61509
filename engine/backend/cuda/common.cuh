// Shared plumbing of the CUDA kernels: the one stream, error checks, launch helpers and a
// strided index walker. Included only by .cu files.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/backend/dispatch.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace cpoison::cuda {

// Throws cpoison::Error("<library> <call>", "<file>:<line>: <code> <message>").
[[noreturn]] void throw_library_error(const char* library, const char* call, const char* file, int line, long code,
                                      const char* message);

// The stream every kernel, copy and library call of the backend is queued on (created on first
// use; a blocking stream, so it also orders against the legacy default stream).
cudaStream_t stream();

// Blocks until the stream has finished (host reads of device data).
void synchronize();

}  // namespace cpoison::cuda

// Checks a CUDA runtime call and throws cpoison::Error naming the call, file and line.
#define CP_CUDA_CHECK(expr)                                                                                  \
  do {                                                                                                       \
    cudaError_t cp_status_ = (expr);                                                                         \
    if (cp_status_ != cudaSuccess)                                                                           \
      ::cpoison::cuda::throw_library_error("CUDA", #expr, __FILE__, __LINE__, (long)cp_status_,              \
                                           cudaGetErrorString(cp_status_));                                  \
  } while (0)

// After a kernel launch: a bad configuration shows up here, not at the next sync.
#define CP_CUDA_CHECK_LAUNCH() CP_CUDA_CHECK(cudaGetLastError())

namespace cpoison::cuda {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items (capped: each thread then loops).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)std::clamp<int64_t>(b, 1, 1 << 20);
}

template <class F>
__global__ void for_each_index_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) f(i);
}

// Runs f(i) for i in [0, n) on the stream; f is a __device__ lambda or functor.
template <class F>
void for_each_index(int64_t n, F f) {
  if (n <= 0) return;
  for_each_index_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(n, f);
  CP_CUDA_CHECK_LAUNCH();
}

// Element offsets of a strided view, with adjacent dims merged where the layout allows it.
constexpr int kMaxDims = 8;
struct StridedIndex {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
  int64_t offset = 0;
  __host__ __device__ int64_t at(int64_t linear) const {
    int64_t off = offset;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t i = linear % sizes[d];
      linear /= sizes[d];
      off += i * strides[d];
    }
    return off;
  }
};

// Index walkers for tensors that all have `shape` (their own strides), merging the dims that
// are contiguous in every one of them. Throws when more than kMaxDims dims remain.
std::vector<StridedIndex> strided_indices(const Shape& shape, const std::vector<const Tensor*>& tensors, const char* where);
// The same for explicit layouts: strides[t] and offsets[t] describe operand t.
std::vector<StridedIndex> strided_indices(const Shape& shape, const std::vector<Shape>& strides, const std::vector<int64_t>& offsets,
                                          const char* where);

// Calls f(T{}) for any dtype (f32, f64, u8, i32, i64).
template <class F>
auto any_dtype_dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::u8: return f(uint8_t{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
  }
  return f(float{});
}

// Device-side math picked by type (the std:: functions are host-only).
template <class T> __device__ inline T d_exp(T x) { if constexpr (sizeof(T) == 4) return expf(x); else return exp(x); }
template <class T> __device__ inline T d_log(T x) { if constexpr (sizeof(T) == 4) return logf(x); else return log(x); }
template <class T> __device__ inline T d_sqrt(T x) { if constexpr (sizeof(T) == 4) return sqrtf(x); else return sqrt(x); }
template <class T> __device__ inline T d_pow(T x, T y) { if constexpr (sizeof(T) == 4) return powf(x, y); else return pow(x, y); }
template <class T> __device__ inline T d_abs(T x) { if constexpr (sizeof(T) == 4) return fabsf(x); else return fabs(x); }
template <class T> __device__ inline T d_floor(T x) { if constexpr (sizeof(T) == 4) return floorf(x); else return floor(x); }
template <class T> __device__ inline T d_max(T a, T b) { return a > b ? a : b; }
template <class T> __device__ inline T d_min(T a, T b) { return a < b ? a : b; }

// A device int flag used by kernels to report bad input (an index out of range); read()
// synchronises and returns the value, then the caller throws a cpoison::Error.
class DeviceFlag {
public:
  DeviceFlag();
  ~DeviceFlag();
  DeviceFlag(const DeviceFlag&) = delete;
  DeviceFlag& operator=(const DeviceFlag&) = delete;
  int* ptr() const { return flag_; }
  int read() const;  // 0 unless a kernel stored something
private:
  int* flag_ = nullptr;
};

}  // namespace cpoison::cuda
