// The value of element i of a random fill, shared by the CPU and CUDA kernels so both devices
// produce the same numbers.
#pragma once
#include <cmath>

#include "engine/backend/random.h"
#include "engine/rng.h"

namespace cpoison {
CP_HOST_DEVICE inline double random_value(RandomKind kind, double lo, double hi, uint64_t seed, uint32_t stream, uint64_t counter) {
  Philox4 r = philox4x32(counter, stream, seed);
  double u = u64_to_unit(r.v[0], r.v[1]);
  switch (kind) {
    case RandomKind::uniform: return lo + (hi - lo) * u;
    case RandomKind::normal: {
      double u1 = 1.0 - u;  // (0, 1]
      double u2 = u64_to_unit(r.v[2], r.v[3]);
      double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
      return lo + hi * z;
    }
    case RandomKind::bernoulli: return u < lo ? 1.0 : 0.0;
    case RandomKind::randint: return lo + floor(u * (hi - lo));
  }
  return 0.0;
}
}  // namespace cpoison
