// CUDA elementwise kernels: one thread per output element (grid-stride), same formulas as
// backend/cpu/elementwise.cpp.
#include "engine/backend/cuda/common.cuh"
#include "engine/backend/elementwise.h"

namespace cpoison::cuda {

namespace {
template <class T>
__device__ inline T binary_value(BinaryOp op, T x, T y) {
  switch (op) {
    case BinaryOp::add: return x + y;
    case BinaryOp::sub: return x - y;
    case BinaryOp::mul: return x * y;
    case BinaryOp::div: return x / y;
  }
  return T(0);
}

template <class T>
__device__ inline T unary_value(UnaryOp op, T x, T p0, T p1) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::exp: return d_exp(x);
    case UnaryOp::log: return d_log(x);
    case UnaryOp::sqrt: return d_sqrt(x);
    case UnaryOp::pow: return d_pow(x, p0);
    case UnaryOp::abs: return d_abs(x);
    case UnaryOp::square: return x * x;
    case UnaryOp::relu: return x > T(0) ? x : T(0);
    case UnaryOp::clamp: return x < p0 ? p0 : (x > p1 ? p1 : x);
    case UnaryOp::sign: return (T)((x > T(0)) - (x < T(0)));
    case UnaryOp::add_scalar: return x + p0;
    case UnaryOp::mul_scalar: return x * p0;
    case UnaryOp::rsub_scalar: return p0 - x;
    case UnaryOp::rdiv_scalar: return p0 / x;
  }
  return T(0);
}

// dy/dx times g for one element. pm1 = p0 - 1 computed in double on the host, as the CPU does.
template <class T>
__device__ inline T unary_grad(UnaryOp op, T g, T x, T y, T p0, T p1, T pm1) {
  switch (op) {
    case UnaryOp::neg: return -g;
    case UnaryOp::exp: return g * y;
    case UnaryOp::log: return g / x;
    case UnaryOp::sqrt: return g / (T(2) * y);
    case UnaryOp::pow: return g * p0 * d_pow(x, pm1);
    case UnaryOp::abs: return g * (T)((x > T(0)) - (x < T(0)));
    case UnaryOp::square: return g * T(2) * x;
    case UnaryOp::relu: return x > T(0) ? g : T(0);
    case UnaryOp::clamp: return (x >= p0 && x <= p1) ? g : T(0);
    case UnaryOp::sign: return T(0);
    case UnaryOp::add_scalar: return g;
    case UnaryOp::mul_scalar: return g * p0;
    case UnaryOp::rsub_scalar: return -g;
    case UnaryOp::rdiv_scalar: return -g * y / x;
  }
  return T(0);
}

template <class T>
Tensor binary_typed(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), Device::cuda);
  int64_t n = out.numel();
  const T* pa = static_cast<const T*>(a.storage()->data());
  const T* pb = static_cast<const T*>(b.storage()->data());
  T* po = out.data<T>();
  if (a.is_contiguous() && b.is_contiguous()) {
    pa += a.offset();
    pb += b.offset();
    for_each_index(n, [=] __device__(int64_t i) { po[i] = binary_value(op, pa[i], pb[i]); });
  } else {
    auto idx = strided_indices(a.shape(), {&a, &b}, "binary");
    StridedIndex ia = idx[0], ib = idx[1];
    for_each_index(n, [=] __device__(int64_t i) { po[i] = binary_value(op, pa[ia.at(i)], pb[ib.at(i)]); });
  }
  return out;
}

template <class T>
Tensor unary_typed(UnaryOp op, const Tensor& a_in, double p0d, double p1d) {
  Tensor a = a_in.contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), Device::cuda);
  const T* pa = a.data<T>();
  T* po = out.data<T>();
  T p0 = (T)p0d, p1 = (T)p1d;
  for_each_index(out.numel(), [=] __device__(int64_t i) { po[i] = unary_value(op, pa[i], p0, p1); });
  return out;
}

template <class T>
Tensor unary_backward_typed(UnaryOp op, const Tensor& g_in, const Tensor& a_in, const Tensor& y_in, double p0d, double p1d) {
  Tensor g = g_in.contiguous(), a = a_in.contiguous(), y = y_in.contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), Device::cuda);
  const T* pg = g.data<T>();
  const T* pa = a.data<T>();
  const T* py = y.data<T>();
  T* po = out.data<T>();
  T p0 = (T)p0d, p1 = (T)p1d, pm1 = (T)(p0d - 1);
  for_each_index(out.numel(), [=] __device__(int64_t i) { po[i] = unary_grad(op, pg[i], pa[i], py[i], p0, p1, pm1); });
  return out;
}
}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  CP_CHECK(a.shape() == b.shape(), "binary", "operands must be expanded to one shape, got ", a.describe(), " and ", b.describe());
  return float_dispatch(a.dtype(), "binary", [&](auto tag) { return binary_typed<decltype(tag)>(op, a, b); });
}

Tensor unary(UnaryOp op, const Tensor& a, double p0, double p1) {
  return float_dispatch(a.dtype(), "unary", [&](auto tag) { return unary_typed<decltype(tag)>(op, a, p0, p1); });
}

Tensor unary_backward(UnaryOp op, const Tensor& g, const Tensor& a, const Tensor& y, double p0, double p1) {
  return float_dispatch(a.dtype(), "unary_backward", [&](auto tag) { return unary_backward_typed<decltype(tag)>(op, g, a, y, p0, p1); });
}

}  // namespace cpoison::cuda
