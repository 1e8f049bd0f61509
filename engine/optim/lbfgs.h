// Full-batch L-BFGS on a vector of doubles: two-loop recursion over the last `history` curvature
// pairs, a backtracking Armijo line search (halving, at most 40 tries), the first step scaled as
// PyTorch's L-BFGS does (min(1, 1/|g|_1)). It stops after max_iterations, when max |gradient|
// falls to grad_tolerance, when no step decreases the objective at machine precision, or when
// one step changes it by at most 1e-12 relative. Used by the linear probe on features
// (algorithms/eval.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace cpoison::optim {

struct LbfgsOptions {
  int64_t max_iterations = 300;
  int64_t history = 10;          // curvature pairs kept
  double grad_tolerance = 1e-7;  // stop when max |gradient| falls below
};

// The objective at x; fills *grad (resized to x's size) when grad is not null.
using Objective = std::function<double(const std::vector<double>& x, std::vector<double>* grad)>;

struct LbfgsResult {
  std::vector<double> x;   // the minimiser found
  double value = 0;        // the objective there
  int64_t iterations = 0;  // iterations run
};

// Minimises `f` from x0. Error naming the field for a negative max_iterations or history < 1.
LbfgsResult lbfgs_minimize(const Objective& f, std::vector<double> x0, const LbfgsOptions& options = {});

}  // namespace cpoison::optim
