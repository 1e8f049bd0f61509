// Random fills by the counter-based generator (see engine/rng.h for the stream layout).
#pragma once
#include "engine/tensor.h"

namespace cpoison {
enum class RandomKind : uint8_t { uniform, normal, bernoulli, randint };
// Fills contiguous `out` element i from philox4x32(offset + i, stream, seed):
// uniform: lo + (hi - lo) * u;  normal: lo + hi * z (Box-Muller of the first two words);
// bernoulli: u < lo ? 1 : 0;  randint: lo + floor(u64 * (hi - lo)) with a 53-bit u.
namespace cpu { void random_fill(Tensor& out, RandomKind kind, double lo, double hi, uint64_t seed, uint32_t stream, uint64_t offset); }
namespace cuda { void random_fill(Tensor& out, RandomKind kind, double lo, double hi, uint64_t seed, uint32_t stream, uint64_t offset); }
}  // namespace cpoison
