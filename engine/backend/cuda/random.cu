// Random fills on the GPU: element i is random_value(..., offset + i), the same function the CPU
// kernel evaluates, so a (seed, stream, offset) gives the same numbers on both devices. The CUDA
// build compiles with -fmad=false so that `lo + (hi - lo) * u` is rounded twice, as written;
// f32 draws, Bernoulli and randint are then identical to the CPU's, and f64 uniform/normal
// values are too unless the host compiler fuses that expression into an FMA.
#include "engine/backend/cuda/common.cuh"
#include "engine/backend/random.h"
#include "engine/backend/random_value.h"

namespace cpoison::cuda {

namespace {
template <class T>
void random_fill_typed(Tensor& out, RandomKind kind, double lo, double hi, uint64_t seed, uint32_t stream_id, uint64_t offset) {
  T* p = out.data<T>();
  for_each_index(out.numel(), [=] __device__(int64_t i) {
    p[i] = static_cast<T>(random_value(kind, lo, hi, seed, stream_id, offset + (uint64_t)i));
  });
}
}  // namespace

void random_fill(Tensor& out, RandomKind kind, double lo, double hi, uint64_t seed, uint32_t stream_id, uint64_t offset) {
  CP_CHECK(out.is_contiguous() && out.device() == Device::cuda, "random_fill", "needs a contiguous cuda tensor, got ", out.describe());
  any_dtype_dispatch(out.dtype(), [&](auto tag) { random_fill_typed<decltype(tag)>(out, kind, lo, hi, seed, stream_id, offset); });
}

}  // namespace cpoison::cuda
