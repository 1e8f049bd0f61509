// The CPU allocator (engine/backend/cpu/allocator.h): malloc for small blocks, a bounded cache of
// mapped blocks per size for large ones.
#include "engine/backend/cpu/allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/error.h"

namespace cpoison::cpu {

namespace {

constexpr size_t kPage = 4096, kHugePage = size_t(2) << 20, kHugeFrom = size_t(16) << 20;

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
// The size class of a large block: pages, or whole huge pages from 16 MiB (at most 1/8 wasted).
size_t block_size(size_t n) { return n >= kHugeFrom ? round_up(n, kHugePage) : round_up(n, kPage); }

void* map_block(size_t size) {
  if (size < kHugeFrom) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }
  // 2 MiB-aligned, so that the kernel can back it with huge pages (fewer faults per activation).
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = (uintptr_t)raw, aligned = round_up(start, kHugePage);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + size + kHugePage, used_end = aligned + size;
  if (end > used_end) munmap((void*)used_end, end - used_end);
  madvise((void*)aligned, size, MADV_HUGEPAGE);
  return (void*)aligned;
}

class LargeBlocks {
public:
  void* allocate(size_t nbytes) {
    const size_t size = block_size(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = by_size_.find(size);
    if (it != by_size_.end() && !it->second.empty()) {
      auto entry = it->second.back();
      it->second.pop_back();
      void* p = entry->p;
      order_.erase(entry);
      stats_.large_cached -= size;
      stats_.large_in_use += size;
      ++stats_.cache_hits;
      return p;
    }
    // A miss: return cached blocks, oldest first, until what is held stays within 1.5 times the
    // peak of memory in use (or the memory in use plus this block, if that is more).
    const size_t bound = std::max(stats_.large_peak_in_use / 2 * 3, stats_.large_in_use + size);
    while (!order_.empty() && stats_.large_in_use + stats_.large_cached + size > bound) evict_oldest();
    void* p = map_block(size);
    if (!p && !order_.empty()) {  // out of address space or memory: drop the whole cache, retry
      while (!order_.empty()) evict_oldest();
      p = map_block(size);
    }
    if (!p) fail("Storage", "out of host memory allocating ", nbytes, " bytes");
    ++stats_.maps;
    stats_.large_in_use += size;
    stats_.large_peak_in_use = std::max(stats_.large_peak_in_use, stats_.large_in_use);
    return p;
  }

  void release(void* p, size_t nbytes) {
    const size_t size = block_size(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.large_in_use -= size;
    stats_.large_cached += size;
    order_.push_back(Entry{p, size});
    by_size_[size].push_back(std::prev(order_.end()));
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!order_.empty()) evict_oldest();
  }

  HostAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

private:
  struct Entry {
    void* p;
    size_t size;
  };

  void evict_oldest() {
    Entry e = order_.front();
    auto& list = by_size_[e.size];
    list.erase(std::find(list.begin(), list.end(), order_.begin()));
    order_.pop_front();
    munmap(e.p, e.size);
    stats_.large_cached -= e.size;
    ++stats_.unmaps;
  }

  std::mutex mutex_;
  std::list<Entry> order_;  // cached blocks, oldest first
  std::unordered_map<size_t, std::vector<std::list<Entry>::iterator>> by_size_;
  HostAllocatorStats stats_;
};

// Never destroyed: tensors in static storage may be freed after main returns.
LargeBlocks& large_blocks() {
  static LargeBlocks* blocks = new LargeBlocks();
  return *blocks;
}

}  // namespace

void* host_alloc(size_t nbytes) {
  if (nbytes >= kHostLargeBlock) return large_blocks().allocate(nbytes);
  void* p = std::aligned_alloc(64, round_up(nbytes ? nbytes : 1, 64));
  if (!p) fail("Storage", "out of host memory allocating ", nbytes, " bytes");
  return p;
}

void host_free(void* p, size_t nbytes) {
  if (!p) return;
  if (nbytes >= kHostLargeBlock)
    large_blocks().release(p, nbytes);
  else
    std::free(p);
}

HostAllocatorStats host_allocator_stats() { return large_blocks().stats(); }
void host_empty_cache() { large_blocks().empty(); }

}  // namespace cpoison::cpu
