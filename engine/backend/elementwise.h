// Elementwise kernels. Inputs may be strided (broadcast views with zero strides); outputs are
// new contiguous tensors of the inputs' float dtype.
#pragma once
#include "engine/tensor.h"

namespace cpoison {
enum class BinaryOp : uint8_t { add, sub, mul, div };
enum class UnaryOp : uint8_t { neg, exp, log, sqrt, pow, abs, square, relu, clamp, sign, add_scalar, mul_scalar, rsub_scalar, rdiv_scalar };

#define CP_ELEMENTWISE_KERNELS                                                                     \
  /* out[i] = a[i] op b[i] over out_shape; a and b already broadcast (expanded) to out_shape. */  \
  Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);                                   \
  /* p0, p1: the exponent (pow), the bounds (clamp) or the scalar (…_scalar). */                   \
  Tensor unary(UnaryOp op, const Tensor& a, double p0, double p1);                                \
  /* dL/da from dL/dy = g, the input a and the output y of unary(op, a, p0, p1). */                \
  Tensor unary_backward(UnaryOp op, const Tensor& g, const Tensor& a, const Tensor& y, double p0, double p1);

namespace cpu { CP_ELEMENTWISE_KERNELS }
namespace cuda { CP_ELEMENTWISE_KERNELS }
}  // namespace cpoison
