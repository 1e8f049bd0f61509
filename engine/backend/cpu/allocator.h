// The CPU allocator behind Storage (the twin of cuda/allocator.h). Blocks under 1 MiB come from
// malloc. Larger ones are mapped from the kernel (sizes rounded to pages, 2 MiB-aligned and
// advised for transparent huge pages from 16 MiB) and kept on a free list per size when freed,
// so that a training loop, which asks for the same sizes every step, maps memory only in its
// first steps instead of page-faulting every activation anew. The cache is bounded: the large
// memory held (in use + cached) never exceeds 1.5 times the most that was ever in use at once
// (or the current request on top of what is in use): on a miss, cached blocks of other sizes are
// returned to the kernel, oldest first, until the new block fits. So the resident memory stays
// near the peak of live tensors, not the sum of every size a step used (glibc's heap kept the
// holes between freed activations resident: twice the live peak in a poison step). The factor
// 1.5: a ResNet-18 training step at width 8 and 64 then maps nothing after its first steps
// (1.0 and 1.25 kept unmapping and re-faulting blocks every step).
#pragma once
#include <cstddef>
#include <cstdint>

namespace cpoison::cpu {

// 64-byte aligned memory for a tensor of nbytes (> 0); host_free takes the same nbytes.
void* host_alloc(size_t nbytes);
void host_free(void* p, size_t nbytes);

struct HostAllocatorStats {
  uint64_t maps = 0;             // large blocks mapped from the kernel since start
  uint64_t unmaps = 0;           // large blocks returned to it
  uint64_t cache_hits = 0;       // large allocations served from a free list
  size_t large_in_use = 0;       // bytes of large blocks held by tensors (page-rounded)
  size_t large_cached = 0;       // bytes of large blocks on the free lists
  size_t large_peak_in_use = 0;  // the most in use at once (in use + cached stay under 1.5x)
};

HostAllocatorStats host_allocator_stats();
// Returns every cached large block to the kernel. Live tensors keep their memory.
void host_empty_cache();
// Blocks of at least this many bytes are large.
constexpr size_t kHostLargeBlock = size_t(1) << 20;

}  // namespace cpoison::cpu
