// The CPU allocator (engine/backend/cpu/allocator.h): large blocks are reused by size, and the
// memory it holds (in use + cached) never exceeds 1.5 times the peak in use.
#include <doctest/doctest.h>

#include "engine/backend/cpu/allocator.h"
#include "engine/tensor.h"

using namespace cpoison;

TEST_CASE("CPU allocator: a freed large block is reused for the same size; the cache stays under 1.5 times the peak in use") {
  cpu::host_empty_cache();
  const auto s0 = cpu::host_allocator_stats();
  CHECK(s0.large_cached == 0);
  {
    Tensor a = Tensor::empty({3 << 20}, DType::f32);  // 12 MiB
  }
  const auto s1 = cpu::host_allocator_stats();
  CHECK(s1.maps == s0.maps + 1);
  CHECK(s1.large_cached >= size_t(12) << 20);
  {
    Tensor b = Tensor::empty({3 << 20}, DType::f32);  // the same size: from the free list
    const auto s2 = cpu::host_allocator_stats();
    CHECK(s2.maps == s1.maps);
    CHECK(s2.cache_hits == s1.cache_hits + 1);
    CHECK(s2.large_cached + (size_t(12) << 20) == s1.large_cached);
  }
  // Many sizes in turn: what is held never exceeds the peak in use.
  for (int64_t mib = 2; mib <= 40; mib += 3) {
    Tensor t = Tensor::empty({mib << 18}, DType::f32);
    const auto s = cpu::host_allocator_stats();
    CHECK(s.large_in_use + s.large_cached <= s.large_peak_in_use / 2 * 3);
  }
  // Small blocks come from malloc and are aligned like large ones.
  Tensor small = Tensor::empty({3}, DType::f32);
  CHECK(reinterpret_cast<uintptr_t>(small.raw_data()) % 64 == 0);
  Tensor big = Tensor::empty({1 << 20}, DType::f32);
  CHECK(reinterpret_cast<uintptr_t>(big.raw_data()) % 64 == 0);
  cpu::host_empty_cache();
  CHECK(cpu::host_allocator_stats().large_cached == 0);
}
