// One dispatch point per op: CP_BACKEND(device, kernel) yields cpu::kernel or cuda::kernel.
// Kernels take contiguous inputs and return new contiguous outputs; the ops layer (engine/ops)
// does the checking, makes inputs contiguous and records autograd nodes.
#pragma once
#include <string>

#include "engine/runtime.h"
#include "engine/tensor.h"

namespace cpoison {

// Whether `op` runs on `device` (tests skip cleanly where a backend lacks an op).
bool supports(const std::string& op, Device device);
[[noreturn]] void no_cuda(const char* what);

}  // namespace cpoison

#ifdef CPOISON_CUDA
#define CP_BACKEND(dev, fn) ((dev) == ::cpoison::Device::cuda ? &::cpoison::cuda::fn : &::cpoison::cpu::fn)
#else
#define CP_BACKEND(dev, fn) \
  ((dev) == ::cpoison::Device::cuda ? (::cpoison::no_cuda(#fn), &::cpoison::cpu::fn) : &::cpoison::cpu::fn)
#endif

namespace cpoison {
// Calls f(float{}) or f(double{}) according to a float dtype; inside, write
// `using scalar_t = decltype(tag);`. Any other dtype is an Error naming `where`.
template <class F>
auto float_dispatch(DType dtype, const char* where, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    default: break;
  }
  fail(where, "expected a float dtype (f32 or f64), got ", dtype_name(dtype));
}
}  // namespace cpoison
