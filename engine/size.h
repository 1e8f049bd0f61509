// Checked sizes. Every product of dimensions that comes from a file or the command line goes
// through checked_numel, so a shape such as [4, 2^62, 1, 1] (whose product wraps to 0 in
// int64) is an Error naming where it came from, not a tiny, negative or huge allocation; and
// every large allocation asked for by a file or a flag is compared with the memory the machine
// still has. Tensor::empty uses the same helper (without the per-axis bound) for every tensor.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cpoison {

// The bound on one axis of a shape read from a file or built from a flag: 2^31 elements.
inline constexpr int64_t kMaxAxis = int64_t(1) << 31;
// The bound on an image side (--pad-to, an IDX header's rows/columns, a resize target).
inline constexpr int64_t kMaxImageSide = 65536;

// The product of `shape`. Error naming `where` (a file and dataset, or a flag) and the shape
// when a dimension is negative or above max_axis, or when the product does not fit in int64.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& where, int64_t max_axis = kMaxAxis);
// a * b (both >= 0) with the overflow check of checked_numel.
int64_t checked_mul(int64_t a, int64_t b, const std::string& where);

// Bytes this process can still allocate: the smaller of the kernel's MemAvailable and the
// cgroup's remaining limit (0 when unknown: then nothing is refused).
uint64_t available_memory();
// Error naming `where`, the size and what is available when `bytes` exceed available_memory().
void check_allocation(uint64_t bytes, const std::string& where);

// An integer setting within [lo, hi]: Error "<where>: must be in [lo, hi], got v".
void check_range(int64_t value, int64_t lo, int64_t hi, const std::string& where);
// A real setting, finite and within [lo, hi].
void check_range(double value, double lo, double hi, const std::string& where);

}  // namespace cpoison
