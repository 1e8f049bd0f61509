// Counter-based random numbers (Philox4x32-10). Element i of a draw made at generator offset o
// uses the counter (o + i, stream) under the key seed, so the same (seed, stream, offset) gives
// the same numbers on any thread count and on CPU and CUDA alike.
#pragma once
#include <array>
#include <cstdint>

#include "engine/tensor.h"

namespace cpoison {

// The raw generator: 4 x uint32 for a 64-bit counter, a 32-bit stream and a 64-bit key.
#if defined(__CUDACC__)
#define CP_HOST_DEVICE __host__ __device__
#else
#define CP_HOST_DEVICE
#endif

struct Philox4 {
  uint32_t v[4];
};

CP_HOST_DEVICE inline Philox4 philox4x32(uint64_t counter, uint32_t stream, uint64_t key) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = stream, c3 = 0;
  uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0;
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1;
    c3 = (uint32_t)p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// uint32 -> float in [0, 1) with 24 random bits (exactly representable in f32).
CP_HOST_DEVICE inline float u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }
// uint32 pair -> double in [0, 1) with 53 random bits.
CP_HOST_DEVICE inline double u64_to_unit(uint32_t hi, uint32_t lo) {
  return (double)((((uint64_t)hi << 32) | lo) >> 11) * (1.0 / 9007199254740992.0);
}

// A position in one random stream. Every draw advances offset by the number of elements drawn.
class Generator {
public:
  explicit Generator(uint64_t seed = 0, uint32_t stream = 0) : seed_(seed), stream_(stream) {}
  uint64_t seed() const { return seed_; }
  uint32_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t o) { offset_ = o; }
  // Reserves n counters and returns the first.
  uint64_t advance(uint64_t n) {
    uint64_t o = offset_;
    offset_ += n;
    return o;
  }
  // Host-side scalar draws (each consumes one counter).
  double uniform01();
  int64_t randint(int64_t lo, int64_t hi);  // uniform in [lo, hi)
  double normal();
  // A seeded permutation of 0..n-1 (Fisher-Yates on this stream).
  std::vector<int64_t> permutation(int64_t n);

private:
  uint64_t seed_;
  uint32_t stream_;
  uint64_t offset_ = 0;
};

// Tensor draws on any device; f32 or f64 (randint: i64 or i32; bernoulli: the given dtype, 0/1).
Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype = DType::f32, Device device = Device::cpu);
Tensor normal(const Shape& shape, double mean, double std, Generator& gen, DType dtype = DType::f32, Device device = Device::cpu);
Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType dtype = DType::f32, Device device = Device::cpu);
Tensor randint(const Shape& shape, int64_t lo, int64_t hi, Generator& gen, DType dtype = DType::i64, Device device = Device::cpu);

}  // namespace cpoison
