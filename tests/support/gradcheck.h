// f64 central finite-difference gradient check.
// f maps the inputs to a tensor y; the check compares d(sum(w * y))/d(input) from autograd with
// central differences, for a fixed random weighting w, on every input with requires_grad.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpoison::testing {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradCheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  std::string detail;  // which input and element disagreed first
};

// Inputs must be f64 CPU leaves; only those with requires_grad are checked.
GradCheckResult gradcheck(const Fn& f, const std::vector<Tensor>& inputs, double eps = 1e-6, double atol = 1e-6,
                          double rtol = 1e-4, uint64_t seed = 7);

// A random f64 CPU tensor with values in [lo, hi) (never all zeros), requiring grad if asked.
Tensor rand64(const Shape& shape, uint64_t seed, bool requires_grad = true, double lo = -1.0, double hi = 1.0);

}  // namespace cpoison::testing

// CHECK that a gradcheck passes, printing its detail otherwise.
#define CHECK_GRADCHECK(...)                               \
  do {                                                     \
    auto _gc = ::cpoison::testing::gradcheck(__VA_ARGS__); \
    INFO(_gc.detail);                                      \
    CHECK(_gc.ok);                                         \
  } while (0)
