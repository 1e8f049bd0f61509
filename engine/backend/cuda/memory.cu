// Device memory: the caching allocator, host/device copies, strided copies with dtype
// conversion, fills, and the backend's single stream.
//
// The allocator rounds every request up to a size class (eight classes per power of two, at
// least 512 bytes) and keeps freed blocks in one free list per class. All work runs on one
// stream, so a block freed by the host can be handed to the next allocation at once: any kernel
// that still reads it was queued earlier on the same stream. A training loop that allocates the
// same shapes every step therefore stops calling cudaMalloc after its first step.
#include <cstdio>
#include <mutex>
#include <unordered_map>

#include "engine/backend/cuda/allocator.h"
#include "engine/backend/cuda/common.cuh"
#include "engine/backend/memory.h"

namespace cpoison::cuda {

void throw_library_error(const char* library, const char* call, const char* file, int line, long code,
                         const char* message) {
  fail(library, call, " failed at ", file, ":", line, ": ", message ? message : "unknown error", " (code ", code, ")");
}

cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t created = nullptr;
    CP_CUDA_CHECK(cudaStreamCreate(&created));
    return created;
  }();
  return s;
}

void synchronize() { CP_CUDA_CHECK(cudaStreamSynchronize(stream())); }

bool available() {
  static const bool usable = [] {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // no driver or no device: clear the error, report "not available"
      return false;
    }
    return count > 0;
  }();
  return usable;
}

// ---------------------------------------------------------------- caching allocator
size_t allocation_size_class(size_t nbytes) {
  if (nbytes <= 512) return 512;
  int top = 63 - __builtin_clzll((unsigned long long)(nbytes - 1));  // floor(log2(nbytes - 1))
  size_t step = std::max<size_t>(512, (size_t)1 << std::max(0, top - 3));
  return (nbytes + step - 1) / step * step;
}

namespace {
class CachingAllocator {
public:
  void* allocate(size_t nbytes) {
    size_t size = allocation_size_class(nbytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cache_hits++;
        stats_.bytes_cached -= size;
        note_in_use(size);
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      release_cached();  // cached blocks of other sizes may make room
      e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        AllocatorStats s = allocator_stats_now();
        fail("CUDA allocator", "out of GPU memory allocating ", nbytes, " bytes (", s.bytes_in_use,
             " bytes held by live tensors)");
      }
    }
    CP_CUDA_CHECK(e);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.cuda_malloc_calls++;
    note_in_use(size);
    return p;
  }

  void release(void* p, size_t nbytes) {
    if (!p) return;
    size_t size = allocation_size_class(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    free_[size].push_back(p);
    stats_.bytes_in_use -= size;
    stats_.bytes_cached += size;
  }

  void release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stats_.bytes_cached == 0) return;
    cudaStreamSynchronize(stream());
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) cudaFree(p);
      blocks.clear();
    }
    stats_.bytes_cached = 0;
  }

  AllocatorStats allocator_stats_now() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

private:
  void note_in_use(size_t size) {
    stats_.bytes_in_use += size;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  }
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

// Never destroyed: tensors held in statics may be freed after main returns, when the CUDA
// runtime is already shutting down; the driver reclaims the memory at exit anyway.
CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();
  return *a;
}
}  // namespace

void* device_alloc(size_t nbytes) { return allocator().allocate(nbytes); }
void device_free(void* p, size_t nbytes) { allocator().release(p, nbytes); }
AllocatorStats allocator_stats() { return allocator().allocator_stats_now(); }
void empty_cache() { allocator().release_cached(); }

// ---------------------------------------------------------------- copies
// Both directions synchronise: the host buffer may be freed, or read, as soon as we return.
void copy_to_host(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  CP_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream()));
  synchronize();
}

void copy_to_device(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  CP_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream()));
  synchronize();
}

void copy_device(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  CP_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream()));
}

std::vector<StridedIndex> strided_indices(const Shape& shape, const std::vector<Shape>& layouts, const std::vector<int64_t>& offsets,
                                          const char* where) {
  size_t k = layouts.size();
  Shape sizes;
  std::vector<Shape> strides(k);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;  // a size-1 dim never moves the offset
    if (!sizes.empty()) {
      bool mergeable = true;  // outer dim = inner dim repeated: one dim of size outer*inner
      for (size_t t = 0; t < k; ++t)
        if (strides[t].back() != layouts[t][d] * shape[d]) mergeable = false;
      if (mergeable) {
        sizes.back() *= shape[d];
        for (size_t t = 0; t < k; ++t) strides[t].back() = layouts[t][d];
        continue;
      }
    }
    sizes.push_back(shape[d]);
    for (size_t t = 0; t < k; ++t) strides[t].push_back(layouts[t][d]);
  }
  CP_CHECK(sizes.size() <= (size_t)kMaxDims, where, "strided layout with ", sizes.size(), " dims after merging (at most ",
           kMaxDims, " supported on cuda): shape ", shape);
  std::vector<StridedIndex> out(k);
  for (size_t t = 0; t < k; ++t) {
    out[t].ndim = (int)sizes.size();
    for (size_t d = 0; d < sizes.size(); ++d) {
      out[t].sizes[d] = sizes[d];
      out[t].strides[d] = strides[t][d];
    }
    out[t].offset = offsets[t];
  }
  return out;
}

std::vector<StridedIndex> strided_indices(const Shape& shape, const std::vector<const Tensor*>& tensors, const char* where) {
  std::vector<Shape> layouts;
  std::vector<int64_t> offsets;
  for (const Tensor* t : tensors) {
    layouts.push_back(t->strides());
    offsets.push_back(t->offset());
  }
  return strided_indices(shape, layouts, offsets, where);
}

namespace {
template <class Src, class Dst>
void strided_convert(const Tensor& src, Tensor& dst) {
  const Src* s = static_cast<const Src*>(src.storage()->data());
  Dst* d = static_cast<Dst*>(dst.raw_data());
  int64_t n = dst.numel();
  if (src.is_contiguous()) {
    s += src.offset();
    for_each_index(n, [=] __device__(int64_t i) { d[i] = static_cast<Dst>(s[i]); });
    return;
  }
  StridedIndex in = strided_indices(src.shape(), {&src}, "Tensor copy")[0];
  for_each_index(n, [=] __device__(int64_t i) { d[i] = static_cast<Dst>(s[in.at(i)]); });
}
}  // namespace

void strided_copy(const Tensor& src, Tensor& dst) {
  CP_CHECK(src.numel() == dst.numel() && dst.is_contiguous(), "Tensor copy", "cuda copy from ", src.describe(), " into ",
           dst.describe(), " needs a contiguous destination with as many elements");
  if (src.numel() == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous()) {
    copy_device(dst.raw_data(), src.raw_data(), src.numel() * dtype_size(src.dtype()));
    return;
  }
  any_dtype_dispatch(src.dtype(), [&](auto s) {
    any_dtype_dispatch(dst.dtype(), [&](auto d) { strided_convert<decltype(s), decltype(d)>(src, dst); });
  });
}

namespace {
template <class T>
void fill_typed(Tensor& dst, double value) {
  T v = static_cast<T>(value);
  T* p = static_cast<T*>(dst.raw_data());
  for_each_index(dst.numel(), [=] __device__(int64_t i) { p[i] = v; });
}
}  // namespace

void fill(Tensor& dst, double value) {
  CP_CHECK(dst.is_contiguous(), "Tensor::fill_", "cuda fill needs a contiguous tensor, got ", dst.describe());
  if (dst.numel() == 0) return;
  if (value == 0.0) {  // all-zero bytes for every dtype (and +0.0)
    CP_CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, dst.numel() * dtype_size(dst.dtype()), stream()));
    return;
  }
  any_dtype_dispatch(dst.dtype(), [&](auto tag) { fill_typed<decltype(tag)>(dst, value); });
}

// ---------------------------------------------------------------- device flag
DeviceFlag::DeviceFlag() {
  flag_ = static_cast<int*>(device_alloc(sizeof(int)));
  CP_CUDA_CHECK(cudaMemsetAsync(flag_, 0, sizeof(int), stream()));
}
DeviceFlag::~DeviceFlag() { device_free(flag_, sizeof(int)); }
int DeviceFlag::read() const {
  int v = 0;
  copy_to_host(&v, flag_, sizeof(int));
  return v;
}

}  // namespace cpoison::cuda
