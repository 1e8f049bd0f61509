// CPU elementwise kernels: one pass over the output, OpenMP over contiguous chunks.
#include "engine/backend/elementwise.h"

#include <cmath>
#include <type_traits>

#include "engine/backend/dispatch.h"

namespace cpoison::cpu {

namespace {
// Offsets of element i of a strided view of `shape` (walks the index like an odometer).
struct StridedWalker {
  Shape shape, strides;
  int64_t offset;
  bool contiguous;
  explicit StridedWalker(const Tensor& t) : shape(t.shape()), strides(t.strides()), offset(t.offset()), contiguous(t.is_contiguous()) {}
  int64_t at(int64_t linear) const {
    if (contiguous) return offset + linear;
    int64_t off = offset;
    for (int64_t d = (int64_t)shape.size() - 1; d >= 0; --d) {
      int64_t i = linear % shape[d];
      linear /= shape[d];
      off += i * strides[d];
    }
    return off;
  }
};

template <class T>
inline T binary_value(BinaryOp op, T x, T y) {
  switch (op) {
    case BinaryOp::add: return x + y;
    case BinaryOp::sub: return x - y;
    case BinaryOp::mul: return x * y;
    case BinaryOp::div: return x / y;
  }
  return T(0);
}

template <class T>
inline T unary_value(UnaryOp op, T x, double p0, double p1) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::exp: return std::exp(x);
    case UnaryOp::log: return std::log(x);
    case UnaryOp::sqrt: return std::sqrt(x);
    case UnaryOp::pow: return std::pow(x, (T)p0);
    case UnaryOp::abs: return std::abs(x);
    case UnaryOp::square: return x * x;
    case UnaryOp::relu: return x > T(0) ? x : T(0);
    case UnaryOp::clamp: return x < (T)p0 ? (T)p0 : (x > (T)p1 ? (T)p1 : x);
    case UnaryOp::sign: return (T)((x > T(0)) - (x < T(0)));
    case UnaryOp::add_scalar: return x + (T)p0;
    case UnaryOp::mul_scalar: return x * (T)p0;
    case UnaryOp::rsub_scalar: return (T)p0 - x;
    case UnaryOp::rdiv_scalar: return (T)p0 / x;
  }
  return T(0);
}

// dy/dx times g for one element.
template <class T>
inline T unary_grad(UnaryOp op, T g, T x, T y, double p0, double p1) {
  switch (op) {
    case UnaryOp::neg: return -g;
    case UnaryOp::exp: return g * y;
    case UnaryOp::log: return g / x;
    case UnaryOp::sqrt: return g / (T(2) * y);
    case UnaryOp::pow: return g * (T)p0 * std::pow(x, (T)(p0 - 1));
    case UnaryOp::abs: return g * (T)((x > T(0)) - (x < T(0)));
    case UnaryOp::square: return g * T(2) * x;
    case UnaryOp::relu: return x > T(0) ? g : T(0);
    case UnaryOp::clamp: return (x >= (T)p0 && x <= (T)p1) ? g : T(0);
    case UnaryOp::sign: return T(0);
    case UnaryOp::add_scalar: return g;
    case UnaryOp::mul_scalar: return g * (T)p0;
    case UnaryOp::rsub_scalar: return -g;
    case UnaryOp::rdiv_scalar: return -g * y / x;
  }
  return T(0);
}

// The op becomes a compile-time constant of the loop, so the switch above folds away and the
// loop vectorises (a run-time switch per element costs several times the arithmetic).
template <class F>
void with_binary_op(BinaryOp op, const F& f) {
  switch (op) {
    case BinaryOp::add: return f(std::integral_constant<BinaryOp, BinaryOp::add>{});
    case BinaryOp::sub: return f(std::integral_constant<BinaryOp, BinaryOp::sub>{});
    case BinaryOp::mul: return f(std::integral_constant<BinaryOp, BinaryOp::mul>{});
    case BinaryOp::div: return f(std::integral_constant<BinaryOp, BinaryOp::div>{});
  }
}

template <class F>
void with_unary_op(UnaryOp op, const F& f) {
#define CP_UNARY_CASE(name) \
  case UnaryOp::name: return f(std::integral_constant<UnaryOp, UnaryOp::name>{});
  switch (op) {
    CP_UNARY_CASE(neg) CP_UNARY_CASE(exp) CP_UNARY_CASE(log) CP_UNARY_CASE(sqrt) CP_UNARY_CASE(pow)
    CP_UNARY_CASE(abs) CP_UNARY_CASE(square) CP_UNARY_CASE(relu) CP_UNARY_CASE(clamp) CP_UNARY_CASE(sign)
    CP_UNARY_CASE(add_scalar) CP_UNARY_CASE(mul_scalar) CP_UNARY_CASE(rsub_scalar) CP_UNARY_CASE(rdiv_scalar)
  }
#undef CP_UNARY_CASE
}
}  // namespace

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), Device::cpu);
  int64_t n = out.numel();
  return float_dispatch(a.dtype(), "binary", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pa = static_cast<const scalar_t*>(a.storage()->data());
    const scalar_t* pb = static_cast<const scalar_t*>(b.storage()->data());
    scalar_t* po = out.data<scalar_t>();
    StridedWalker wa(a), wb(b);
    if (wa.contiguous && wb.contiguous) {
      pa += a.offset();
      pb += b.offset();
      with_binary_op(op, [&](auto k) {
#pragma omp parallel for schedule(static) if (n > 32768)
        for (int64_t i = 0; i < n; ++i) po[i] = binary_value(k.value, pa[i], pb[i]);
      });
    } else {
#pragma omp parallel for schedule(static) if (n > 8192)
      for (int64_t i = 0; i < n; ++i) po[i] = binary_value(op, pa[wa.at(i)], pb[wb.at(i)]);
    }
    return out;
  });
}

Tensor unary(UnaryOp op, const Tensor& a_in, double p0, double p1) {
  Tensor a = a_in.contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), Device::cpu);
  int64_t n = out.numel();
  return float_dispatch(a.dtype(), "unary", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pa = a.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    with_unary_op(op, [&](auto k) {
#pragma omp parallel for schedule(static) if (n > 32768)
      for (int64_t i = 0; i < n; ++i) po[i] = unary_value(k.value, pa[i], p0, p1);
    });
    return out;
  });
}

Tensor unary_backward(UnaryOp op, const Tensor& g_in, const Tensor& a_in, const Tensor& y_in, double p0, double p1) {
  Tensor g = g_in.contiguous(), a = a_in.contiguous(), y = y_in.contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), Device::cpu);
  int64_t n = out.numel();
  return float_dispatch(a.dtype(), "unary_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pg = g.data<scalar_t>();
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* py = y.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    with_unary_op(op, [&](auto k) {
#pragma omp parallel for schedule(static) if (n > 32768)
      for (int64_t i = 0; i < n; ++i) po[i] = unary_grad(k.value, pg[i], pa[i], py[i], p0, p1);
    });
    return out;
  });
}

}  // namespace cpoison::cpu
