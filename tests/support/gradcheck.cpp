#include "tests/support/gradcheck.h"

#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "engine/ops/ops.h"

namespace cpoison::testing {

Tensor rand64(const Shape& shape, uint64_t seed, bool requires_grad, double lo, double hi) {
  Generator g(seed, 99);
  Tensor t = uniform(shape, lo, hi, g, DType::f64);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

GradCheckResult gradcheck(const Fn& f, const std::vector<Tensor>& inputs, double eps, double atol, double rtol, uint64_t seed) {
  GradCheckResult res;
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) {
    if (!t.requires_grad()) continue;
    CP_CHECK(t.dtype() == DType::f64 && t.device() == Device::cpu && t.is_leaf(), "gradcheck", "inputs must be f64 cpu leaves, got ", t.describe());
    leaves.push_back(t);
  }
  autograd::clear_tape();
  Tensor y0 = f(inputs);
  Generator g(seed, 7);
  Tensor w = uniform(y0.shape(), 0.5, 1.5, g, DType::f64);
  autograd::clear_tape();
  Tensor loss = sum(mul(f(inputs), w));
  std::vector<Tensor> analytic = autograd::grad(loss, leaves);

  auto value = [&]() {
    autograd::NoGradGuard ng;
    return sum(mul(f(inputs), w)).item();
  };
  for (size_t li = 0; li < leaves.size(); ++li) {
    Tensor x = leaves[li];
    CP_CHECK(x.is_contiguous(), "gradcheck", "inputs must be contiguous");
    double* p = x.data<double>();
    std::vector<double> an = analytic[li].to_vector<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      double keep = p[i];
      p[i] = keep + eps;
      double fp = value();
      p[i] = keep - eps;
      double fm = value();
      p[i] = keep;
      double num = (fp - fm) / (2 * eps);
      double err = std::fabs(num - an[i]);
      double rel = err / std::max(1e-12, std::fabs(num));
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (err > atol) res.max_rel_err = std::max(res.max_rel_err, rel);
      if (err > atol + rtol * std::fabs(num) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "input " << li << " " << x.describe() << " element " << i << ": analytic " << an[i] << " numeric " << num;
        res.detail = os.str();
      }
    }
  }
  if (res.ok) {
    std::ostringstream os;
    os << "max abs err " << res.max_abs_err;
    res.detail = os.str();
  }
  return res;
}

}  // namespace cpoison::testing
