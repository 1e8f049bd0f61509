// Device memory primitives that Tensor needs. The CUDA versions live in backend/cuda/memory.cu.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/tensor.h"

namespace cpoison::cuda {
void* device_alloc(size_t nbytes);         // from the caching allocator
void device_free(void* p, size_t nbytes);  // back to the cache
void copy_to_host(void* dst, const void* src, size_t nbytes);
void copy_to_device(void* dst, const void* src, size_t nbytes);
void copy_device(void* dst, const void* src, size_t nbytes);
// dst (contiguous, same numel) = src read through its strides, converting dtype if they differ.
void strided_copy(const Tensor& src, Tensor& dst);
void fill(Tensor& dst, double value);  // contiguous dst
bool available();
}  // namespace cpoison::cuda
