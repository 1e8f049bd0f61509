#include "engine/optim/lbfgs.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "engine/error.h"

namespace cpoison::optim {
namespace {

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

LbfgsResult lbfgs_minimize(const Objective& evaluate, std::vector<double> theta, const LbfgsOptions& options) {
  CP_CHECK(options.max_iterations >= 0 && options.history >= 1, "lbfgs_minimize", "bad options: max_iterations ",
           options.max_iterations, ", history ", options.history);
  const int64_t np = (int64_t)theta.size();
  std::vector<double> g;
  double f = evaluate(theta, &g);
  std::deque<std::vector<double>> s_hist, y_hist;
  std::deque<double> rho_hist;
  int64_t it = 0;
  for (; it < options.max_iterations; ++it) {
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::abs(v));
    if (gmax <= options.grad_tolerance) break;
    // Two-loop recursion: direction = -H g.
    std::vector<double> q = g;
    std::vector<double> alpha(s_hist.size());
    for (int64_t i = (int64_t)s_hist.size() - 1; i >= 0; --i) {
      alpha[i] = rho_hist[i] * dot(s_hist[i], q);
      for (int64_t j = 0; j < np; ++j) q[j] -= alpha[i] * y_hist[i][j];
    }
    double gamma = 1.0;
    if (!s_hist.empty()) gamma = dot(s_hist.back(), y_hist.back()) / dot(y_hist.back(), y_hist.back());
    for (double& v : q) v *= gamma;
    for (size_t i = 0; i < s_hist.size(); ++i) {
      double beta = rho_hist[i] * dot(y_hist[i], q);
      for (int64_t j = 0; j < np; ++j) q[j] += s_hist[i][j] * (alpha[i] - beta);
    }
    std::vector<double> dir(np);
    for (int64_t j = 0; j < np; ++j) dir[j] = -q[j];
    double gtd = dot(g, dir);
    if (!(gtd < 0)) {  // not a descent direction: forget the curvature pairs, take the gradient
      s_hist.clear(), y_hist.clear(), rho_hist.clear();
      for (int64_t j = 0; j < np; ++j) dir[j] = -g[j];
      gtd = dot(g, dir);
    }
    // First step scaled as PyTorch's L-BFGS does (min(1, 1/|g|_1)); later steps start at 1.
    double step = 1.0;
    if (s_hist.empty()) {
      double l1 = 0;
      for (double v : g) l1 += std::abs(v);
      step = std::min(1.0, 1.0 / std::max(l1, 1e-300));
    }
    std::vector<double> trial(np);
    double f_new = f;
    bool accepted = false;
    for (int tries = 0; tries < 40; ++tries) {
      for (int64_t j = 0; j < np; ++j) trial[j] = theta[j] + step * dir[j];
      f_new = evaluate(trial, nullptr);
      if (f_new <= f + 1e-4 * step * gtd) {
        accepted = true;
        break;
      }
      step *= 0.5;
    }
    if (!accepted) break;  // no decrease possible at machine precision: converged
    std::vector<double> g_new;
    evaluate(trial, &g_new);
    std::vector<double> s(np), yv(np);
    for (int64_t j = 0; j < np; ++j) s[j] = trial[j] - theta[j], yv[j] = g_new[j] - g[j];
    double sy = dot(s, yv);
    if (sy > 1e-12) {
      s_hist.push_back(std::move(s));
      y_hist.push_back(std::move(yv));
      rho_hist.push_back(1.0 / sy);
      if ((int64_t)s_hist.size() > options.history) s_hist.pop_front(), y_hist.pop_front(), rho_hist.pop_front();
    }
    const double change = std::abs(f - f_new);
    theta.swap(trial);
    g.swap(g_new);
    f = f_new;
    if (change <= 1e-12 * std::max(1.0, std::abs(f))) {
      ++it;
      break;
    }
  }
  return {std::move(theta), f, it};
}

}  // namespace cpoison::optim
