#include "engine/ops/elementwise.h"

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/elementwise.h"
#include "engine/ops/reduce.h"

namespace cpoison {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    CP_CHECK(da == db || da == 1 || db == 1, op, "shapes ", a, " and ", b, " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {
// A zero-stride view of t expanded to `shape` (no copy).
Tensor expand_view(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  size_t lead = shape.size() - t.shape().size();
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < t.shape().size(); ++i) st[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return make_view(t, shape, st, t.offset());
}

void check_pair(const Tensor& a, const Tensor& b, const char* op) {
  CP_CHECK(a.defined() && b.defined(), op, "undefined operand");
  CP_CHECK(a.device() == b.device(), op, "operands on different devices: ", a.describe(), " and ", b.describe());
  CP_CHECK(a.dtype() == b.dtype(), op, "operands of different dtypes: ", a.describe(), " and ", b.describe());
  CP_CHECK(is_floating(a.dtype()), op, "needs float operands, got ", a.describe());
}

Tensor binary_op(BinaryOp kind, const char* name, const Tensor& a, const Tensor& b) {
  check_pair(a, b, name);
  Shape out_shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = CP_BACKEND(a.device(), binary)(kind, expand_view(a, out_shape), expand_view(b, out_shape));
  if (autograd::needs_record({&a, &b})) {
    // Each backward keeps only the operands its gradients read: add and sub none, mul the other
    // factor of each wanted gradient, div the divisor (and the dividend for the divisor's gradient).
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    const bool keep_a = (kind == BinaryOp::mul || kind == BinaryOp::div) && gb;
    const bool keep_b = (kind == BinaryOp::mul && ga) || kind == BinaryOp::div;
    Tensor sa = keep_a ? a.detach() : Tensor(), sb = keep_b ? b.detach() : Tensor();
    autograd::record(name, {a, b}, out, [kind, sa, sb, sha = a.shape(), shb = b.shape()](const Tensor& g, const std::vector<bool>& need) {
      std::vector<Tensor> gi(2);
      switch (kind) {
        case BinaryOp::add:
          if (need[0]) gi[0] = sum_to(g, sha);
          if (need[1]) gi[1] = sum_to(g, shb);
          break;
        case BinaryOp::sub:
          if (need[0]) gi[0] = sum_to(g, sha);
          if (need[1]) gi[1] = sum_to(neg(g), shb);
          break;
        case BinaryOp::mul:
          if (need[0]) gi[0] = sum_to(mul(g, sb), sha);
          if (need[1]) gi[1] = sum_to(mul(g, sa), shb);
          break;
        case BinaryOp::div:
          if (need[0]) gi[0] = sum_to(div(g, sb), sha);
          if (need[1]) gi[1] = sum_to(neg(div(mul(g, sa), mul(sb, sb))), shb);
          break;
      }
      return gi;
    });
  }
  return out;
}

Tensor unary_op(UnaryOp kind, const char* name, const Tensor& a, double p0 = 0, double p1 = 0, bool differentiable = true) {
  CP_CHECK(a.defined(), name, "undefined operand");
  CP_CHECK(is_floating(a.dtype()), name, "needs a float operand, got ", a.describe());
  Tensor out = CP_BACKEND(a.device(), unary)(kind, a, p0, p1);
  if (differentiable && autograd::needs_record({&a})) {
    // The backward keeps only what its kind reads: the input x (log, pow, abs, square, clamp,
    // rdiv), the output y (exp, sqrt, rdiv; relu reads y > 0, the same as x > 0, so that relu and
    // the conv after it share one saved tensor), or nothing (neg, add/mul/rsub scalar). An unread
    // operand is passed to the kernel as g.
    const bool keep_x = kind == UnaryOp::log || kind == UnaryOp::pow || kind == UnaryOp::abs || kind == UnaryOp::square ||
                        kind == UnaryOp::clamp || kind == UnaryOp::rdiv_scalar;
    const bool keep_y = kind == UnaryOp::exp || kind == UnaryOp::sqrt || kind == UnaryOp::rdiv_scalar || kind == UnaryOp::relu;
    Tensor x = keep_x ? a.detach() : Tensor(), y = keep_y ? out.detach() : Tensor();
    const bool x_is_y = kind == UnaryOp::relu;
    autograd::record(name, {a}, out, [kind, x, y, x_is_y, p0, p1](const Tensor& g, const std::vector<bool>&) {
      const Tensor& xa = x_is_y ? y : (x.defined() ? x : g);
      return std::vector<Tensor>{CP_BACKEND(g.device(), unary_backward)(kind, g, xa, y.defined() ? y : g, p0, p1)};
    });
  }
  return out;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::add, "add", a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::sub, "sub", a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::mul, "mul", a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::div, "div", a, b); }
Tensor add_scalar(const Tensor& a, double s) { return unary_op(UnaryOp::add_scalar, "add_scalar", a, s); }
Tensor mul_scalar(const Tensor& a, double s) { return unary_op(UnaryOp::mul_scalar, "mul_scalar", a, s); }
Tensor rsub_scalar(const Tensor& a, double s) { return unary_op(UnaryOp::rsub_scalar, "rsub_scalar", a, s); }
Tensor rdiv_scalar(const Tensor& a, double s) { return unary_op(UnaryOp::rdiv_scalar, "rdiv_scalar", a, s); }
Tensor neg(const Tensor& a) { return unary_op(UnaryOp::neg, "neg", a); }
Tensor exp(const Tensor& a) { return unary_op(UnaryOp::exp, "exp", a); }
Tensor log(const Tensor& a) { return unary_op(UnaryOp::log, "log", a); }
Tensor sqrt(const Tensor& a) { return unary_op(UnaryOp::sqrt, "sqrt", a); }
Tensor pow(const Tensor& a, double p) { return unary_op(UnaryOp::pow, "pow", a, p); }
Tensor abs(const Tensor& a) { return unary_op(UnaryOp::abs, "abs", a); }
Tensor square(const Tensor& a) { return unary_op(UnaryOp::square, "square", a); }
Tensor relu(const Tensor& a) { return unary_op(UnaryOp::relu, "relu", a); }
Tensor clamp(const Tensor& a, double lo, double hi) {
  CP_CHECK(lo <= hi, "clamp", "lower bound ", lo, " above upper bound ", hi);
  return unary_op(UnaryOp::clamp, "clamp", a, lo, hi);
}
Tensor sign(const Tensor& a) { return unary_op(UnaryOp::sign, "sign", a, 0, 0, false); }

}  // namespace cpoison
