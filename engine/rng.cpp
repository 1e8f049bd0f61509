#include "engine/rng.h"

#include <cmath>

#include "engine/backend/dispatch.h"
#include "engine/backend/random.h"
#include "engine/backend/random_value.h"

namespace cpoison {

double Generator::uniform01() { return random_value(RandomKind::uniform, 0.0, 1.0, seed_, stream_, advance(1)); }
int64_t Generator::randint(int64_t lo, int64_t hi) {
  CP_CHECK(hi > lo, "Generator::randint", "empty range [", lo, ", ", hi, ")");
  return (int64_t)random_value(RandomKind::randint, (double)lo, (double)hi, seed_, stream_, advance(1));
}
double Generator::normal() { return random_value(RandomKind::normal, 0.0, 1.0, seed_, stream_, advance(1)); }
std::vector<int64_t> Generator::permutation(int64_t n) {
  std::vector<int64_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[randint(0, i + 1)]);
  return p;
}

namespace cpu {
void random_fill(Tensor& out, RandomKind kind, double lo, double hi, uint64_t seed, uint32_t stream, uint64_t offset) {
  int64_t n = out.numel();
  auto run = [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(random_value(kind, lo, hi, seed, stream, offset + (uint64_t)i));
  };
  switch (out.dtype()) {
    case DType::f32: run(out.data<float>()); break;
    case DType::f64: run(out.data<double>()); break;
    case DType::u8: run(out.data<uint8_t>()); break;
    case DType::i32: run(out.data<int32_t>()); break;
    case DType::i64: run(out.data<int64_t>()); break;
  }
}
}  // namespace cpu

namespace {
Tensor draw(const Shape& shape, RandomKind kind, double lo, double hi, Generator& gen, DType dtype, Device device) {
  Tensor out = Tensor::empty(shape, dtype, device);
  uint64_t offset = gen.advance((uint64_t)out.numel());
  CP_BACKEND(device, random_fill)(out, kind, lo, hi, gen.seed(), gen.stream(), offset);
  return out;
}
}  // namespace

Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype, Device device) {
  CP_CHECK(is_floating(dtype), "uniform", "dtype must be f32 or f64, got ", dtype);
  return draw(shape, RandomKind::uniform, lo, hi, gen, dtype, device);
}
Tensor normal(const Shape& shape, double mean, double std, Generator& gen, DType dtype, Device device) {
  CP_CHECK(is_floating(dtype), "normal", "dtype must be f32 or f64, got ", dtype);
  return draw(shape, RandomKind::normal, mean, std, gen, dtype, device);
}
Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType dtype, Device device) {
  CP_CHECK(p >= 0 && p <= 1, "bernoulli", "probability ", p, " outside [0, 1]");
  return draw(shape, RandomKind::bernoulli, p, 0, gen, dtype, device);
}
Tensor randint(const Shape& shape, int64_t lo, int64_t hi, Generator& gen, DType dtype, Device device) {
  CP_CHECK(hi > lo, "randint", "empty range [", lo, ", ", hi, ")");
  return draw(shape, RandomKind::randint, (double)lo, (double)hi, gen, dtype, device);
}

}  // namespace cpoison
