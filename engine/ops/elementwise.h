// Elementwise ops with NumPy broadcasting. Float dtypes (f32, f64) unless stated; both operands
// must share dtype and device. All are differentiable except sign().
#pragma once
#include "engine/tensor.h"

namespace cpoison {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, double s);
Tensor mul_scalar(const Tensor& a, double s);
Tensor rsub_scalar(const Tensor& a, double s);  // s - a
Tensor rdiv_scalar(const Tensor& a, double s);  // s / a

Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor pow(const Tensor& a, double p);
Tensor abs(const Tensor& a);
Tensor square(const Tensor& a);
Tensor relu(const Tensor& a);
// Gradient flows where lo <= a <= hi (PyTorch's convention: ties pass the gradient).
Tensor clamp(const Tensor& a, double lo, double hi);
Tensor sign(const Tensor& a);  // -1, 0, +1; not differentiable (no node is recorded)

// Broadcast shape of two shapes, or an Error naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add_scalar(a, -s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub_scalar(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul_scalar(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul_scalar(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul_scalar(a, 1.0 / s); }
inline Tensor operator/(double s, const Tensor& a) { return rdiv_scalar(a, s); }

}  // namespace cpoison
