// Introspection of the CUDA caching allocator (plain C++: tools and tests may include it in a
// build with CPOISON_CUDA). Device memory is handed out by size class from free lists; memory
// freed by a tensor goes back to its list, so a steady training loop calls cudaMalloc only
// during its first steps.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cpoison::cuda {

struct AllocatorStats {
  uint64_t cuda_malloc_calls = 0;  // blocks obtained from cudaMalloc since start
  uint64_t cache_hits = 0;         // allocations served from a free list
  size_t bytes_in_use = 0;         // held by live tensors (size-class rounded)
  size_t bytes_cached = 0;         // in free lists, ready for reuse
  size_t peak_bytes_in_use = 0;
};

AllocatorStats allocator_stats();
// Returns every cached block to the driver (cudaFree). Live tensors keep their memory.
void empty_cache();
// The size class an allocation of nbytes is rounded up to (exposed for tests).
size_t allocation_size_class(size_t nbytes);
// Waits for all queued GPU work (timing, host reads).
void synchronize();

}  // namespace cpoison::cuda
