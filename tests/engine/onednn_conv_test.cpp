// The oneDNN CPU convolution (engine/backend/cpu/onednn_conv.cpp) judged by the reference kernels
// (engine/backend/cpu/conv.cpp) on the conv shapes of the CIFAR ResNet-18 at the demo's width 8
// (28x28, 1 channel) and the standard width 64 (32x32, 3 channels): forward, input gradient and
// weight gradient within a tolerance; run-to-run bit reproducibility; the dispatch (f32 and
// groups 1 to oneDNN unless cpu_deterministic(); f64 and groups > 1 to the reference); and the
// reference path's independence of the thread count in deterministic mode.
// Layout letters: N batch, C channels, H rows, W columns.
#include <doctest/doctest.h>

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/backend/cpu/conv.h"
#include "engine/backend/settings.h"
#include "engine/ops/ops.h"
#include "tests/support/skip.h"

using namespace cpoison;

namespace {

struct ConvCase {
  std::string role;
  Shape x, w;
  int64_t stride, pad;
};

// N is small (tests stay fast) but above one, so batch-parallel splits are exercised.
const std::vector<ConvCase> kResNetConvs = {
    // width 8, Fashion-MNIST 28x28x1
    {"w8 stem 1->8", {4, 1, 28, 28}, {8, 1, 3, 3}, 1, 1},
    {"w8 layer1 3x3", {4, 8, 28, 28}, {8, 8, 3, 3}, 1, 1},
    {"w8 layer2 down 3x3 s2", {4, 8, 28, 28}, {16, 8, 3, 3}, 2, 1},
    {"w8 layer2 shortcut 1x1 s2", {4, 8, 28, 28}, {16, 8, 1, 1}, 2, 0},
    {"w8 layer2 3x3", {4, 16, 14, 14}, {16, 16, 3, 3}, 1, 1},
    {"w8 layer4 down 3x3 s2 (odd size)", {4, 32, 7, 7}, {64, 32, 3, 3}, 2, 1},
    {"w8 layer4 shortcut 1x1 s2 (odd size)", {4, 32, 7, 7}, {64, 32, 1, 1}, 2, 0},
    {"w8 layer4 3x3", {4, 64, 4, 4}, {64, 64, 3, 3}, 1, 1},
    // width 64, CIFAR 32x32x3
    {"w64 stem 3->64", {2, 3, 32, 32}, {64, 3, 3, 3}, 1, 1},
    {"w64 layer1 3x3", {2, 64, 32, 32}, {64, 64, 3, 3}, 1, 1},
    {"w64 layer2 down 3x3 s2", {2, 64, 32, 32}, {128, 64, 3, 3}, 2, 1},
    {"w64 layer2 shortcut 1x1 s2", {2, 64, 32, 32}, {128, 64, 1, 1}, 2, 0},
    {"w64 layer4 3x3", {2, 512, 4, 4}, {512, 512, 3, 3}, 1, 1},
};

// max |got - want| <= rtol * max |want| + atol (f32 sums of up to a few thousand terms).
void check_near(const Tensor& got, const Tensor& want, const char* what) {
  CAPTURE(what);
  REQUIRE(got.defined());
  REQUIRE(got.shape() == want.shape());
  std::vector<float> g = got.to_vector<float>(), w = want.to_vector<float>();
  double max_want = 0, max_err = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    max_want = std::max(max_want, (double)std::fabs(w[i]));
    max_err = std::max(max_err, (double)std::fabs(g[i] - w[i]));
  }
  CAPTURE(max_err);
  CAPTURE(max_want);
  CHECK(max_err <= 1e-5 * max_want + 1e-6);
}

std::vector<float> bits(const Tensor& t) { return t.to_vector<float>(); }

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

// Restores the deterministic switch and the thread counts on scope exit.
struct SettingsGuard {
  bool det = cpu_deterministic();
  int threads = omp_get_max_threads();
  ~SettingsGuard() {
    set_cpu_deterministic(det);
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
};

void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

}  // namespace

TEST_CASE("oneDNN conv matches the reference kernels on the ResNet-18 shapes (forward, input and weight gradients)") {
  SKIP_UNLESS(cpu::onednn::available(), "built without oneDNN");
  Generator gen(12, 0);
  for (const ConvCase& c : kResNetConvs) {
    CAPTURE(c.role);
    Tensor x = uniform(c.x, -1, 1, gen), w = uniform(c.w, -0.5, 0.5, gen), b = uniform({c.w[0]}, -1, 1, gen);
    const int64_t Ho = out_size(c.x[2], c.w[2], c.stride, c.pad), Wo = out_size(c.x[3], c.w[3], c.stride, c.pad);
    Tensor gy = uniform({c.x[0], c.w[0], Ho, Wo}, -1, 1, gen);

    Tensor y = cpu::onednn::conv2d_forward(x, w, Tensor(), c.stride, c.pad, 1);
    check_near(y, cpu::reference::conv2d_forward(x, w, Tensor(), c.stride, c.pad, 1), "forward");
    Tensor yb = cpu::onednn::conv2d_forward(x, w, b, c.stride, c.pad, 1);
    check_near(yb, cpu::reference::conv2d_forward(x, w, b, c.stride, c.pad, 1), "forward with bias");
    Tensor dx = cpu::onednn::conv2d_backward_input(gy, w, c.x[2], c.x[3], c.stride, c.pad, 1);
    check_near(dx, cpu::reference::conv2d_backward_input(gy, w, c.x[2], c.x[3], c.stride, c.pad, 1), "input gradient");
    Tensor dw = cpu::onednn::conv2d_backward_weight(gy, x, c.w[2], c.w[3], c.stride, c.pad, 1);
    check_near(dw, cpu::reference::conv2d_backward_weight(gy, x, c.w[2], c.w[3], c.stride, c.pad, 1), "weight gradient");
  }
}

TEST_CASE("oneDNN conv: the same call twice gives the same bits (fixed thread count)") {
  SKIP_UNLESS(cpu::onednn::available(), "built without oneDNN");
  Generator gen(13, 0);
  for (const ConvCase& c : kResNetConvs) {
    CAPTURE(c.role);
    Tensor x = uniform(c.x, -1, 1, gen), w = uniform(c.w, -0.5, 0.5, gen);
    const int64_t Ho = out_size(c.x[2], c.w[2], c.stride, c.pad), Wo = out_size(c.x[3], c.w[3], c.stride, c.pad);
    Tensor gy = uniform({c.x[0], c.w[0], Ho, Wo}, -1, 1, gen);
    auto run = [&] {
      return std::vector<std::vector<float>>{
          bits(cpu::onednn::conv2d_forward(x, w, Tensor(), c.stride, c.pad, 1)),
          bits(cpu::onednn::conv2d_backward_input(gy, w, c.x[2], c.x[3], c.stride, c.pad, 1)),
          bits(cpu::onednn::conv2d_backward_weight(gy, x, c.w[2], c.w[3], c.stride, c.pad, 1))};
    };
    auto first = run(), second = run();
    CHECK(first[0] == second[0]);
    CHECK(first[1] == second[1]);
    CHECK(first[2] == second[2]);
  }
}

TEST_CASE("conv2d dispatch: oneDNN for f32 groups 1 unless deterministic; the reference for f64, groups and deterministic mode") {
  SettingsGuard guard;
  Generator gen(14, 0);
  Tensor x = uniform({3, 8, 12, 12}, -1, 1, gen), w = uniform({16, 8, 3, 3}, -0.5, 0.5, gen);
  Tensor gy = uniform({3, 16, 12, 12}, -1, 1, gen);
  auto via_op = [&](const Tensor& xi, const Tensor& wi, const Tensor& g) {
    Tensor xl = xi.detach().set_requires_grad(true), wl = wi.detach().set_requires_grad(true);
    Tensor y = conv2d(xl, wl, Tensor(), {1, 1, 1});
    auto grads = autograd::grad(y, {xl, wl}, g);
    return std::vector<std::vector<double>>{y.to_vector<double>(), grads[0].to_vector<double>(), grads[1].to_vector<double>()};
  };
  auto direct = [&](bool onednn, const Tensor& xi, const Tensor& wi, const Tensor& g) {
    if (onednn)
      return std::vector<std::vector<double>>{cpu::onednn::conv2d_forward(xi, wi, Tensor(), 1, 1, 1).to_vector<double>(),
                                              cpu::onednn::conv2d_backward_input(g, wi, 12, 12, 1, 1, 1).to_vector<double>(),
                                              cpu::onednn::conv2d_backward_weight(g, xi, 3, 3, 1, 1, 1).to_vector<double>()};
    return std::vector<std::vector<double>>{cpu::reference::conv2d_forward(xi, wi, Tensor(), 1, 1, 1).to_vector<double>(),
                                            cpu::reference::conv2d_backward_input(g, wi, 12, 12, 1, 1, 1).to_vector<double>(),
                                            cpu::reference::conv2d_backward_weight(g, xi, 3, 3, 1, 1, 1).to_vector<double>()};
  };
  set_cpu_deterministic(false);
  CHECK(via_op(x, w, gy) == direct(cpu::onednn::available(), x, w, gy));
  set_cpu_deterministic(true);
  CHECK(via_op(x, w, gy) == direct(false, x, w, gy));
  set_cpu_deterministic(false);
  // f64 never goes to oneDNN (the gradient checks stay on the reference).
  Tensor x64 = x.to(DType::f64), w64 = w.to(DType::f64), gy64 = gy.to(DType::f64);
  CHECK(via_op(x64, w64, gy64) == direct(false, x64, w64, gy64));
  CHECK_FALSE(cpu::onednn::supports(DType::f64, 1));
  CHECK_FALSE(cpu::onednn::supports(DType::f32, 2));
}

TEST_CASE("deterministic mode: conv2d forward and gradients are bit-identical for 1, 2 and 3 threads") {
  SettingsGuard guard;
  set_cpu_deterministic(true);
  Generator gen(15, 0);
  // The width-8 stem and a 3x3 layer, batch 37: the reference splits it into chunks (with a
  // partial last one) that run in parallel and sum the weight gradient in a fixed order.
  for (const auto& [xs, ws] : std::vector<std::pair<Shape, Shape>>{{{37, 1, 28, 28}, {8, 1, 3, 3}}, {{37, 32, 16, 16}, {16, 32, 3, 3}}}) {
    CAPTURE(shape_str(xs));
    Tensor x = uniform(xs, -1, 1, gen), w = uniform(ws, -1, 1, gen);
    Tensor gy = uniform({xs[0], ws[0], xs[2], xs[3]}, -1, 1, gen);
    auto run = [&](int threads) {
      set_threads(threads);
      Tensor xl = x.detach().set_requires_grad(true), wl = w.detach().set_requires_grad(true);
      Tensor y = conv2d(xl, wl, Tensor(), {1, 1, 1});
      auto g = autograd::grad(y, {xl, wl}, gy);
      return std::vector<std::vector<float>>{bits(y), bits(g[0]), bits(g[1])};
    };
    auto one = run(1), two = run(2), three = run(3);
    CHECK(one == two);
    CHECK(one == three);
  }
}

TEST_CASE("oneDNN conv across thread counts: results agree to rounding, and whether the bits agree is reported") {
  // oneDNN promises run-to-run reproducibility for a fixed thread count only (the README's
  // "Numbers and determinism"); this records what this machine's build does across 1 and 2.
  SKIP_UNLESS(cpu::onednn::available(), "built without oneDNN");
  SettingsGuard guard;
  Generator gen(16, 0);
  for (ConvCase c : kResNetConvs) {
    c.x[0] = 32;  // a batch that oneDNN may split across threads
    CAPTURE(c.role);
    Tensor x = uniform(c.x, -1, 1, gen), w = uniform(c.w, -0.5, 0.5, gen);
    const int64_t Ho = out_size(c.x[2], c.w[2], c.stride, c.pad), Wo = out_size(c.x[3], c.w[3], c.stride, c.pad);
    Tensor gy = uniform({c.x[0], c.w[0], Ho, Wo}, -1, 1, gen);
    auto run = [&](int threads) {
      set_threads(threads);
      return std::vector<Tensor>{cpu::onednn::conv2d_forward(x, w, Tensor(), c.stride, c.pad, 1),
                                 cpu::onednn::conv2d_backward_input(gy, w, c.x[2], c.x[3], c.stride, c.pad, 1),
                                 cpu::onednn::conv2d_backward_weight(gy, x, c.w[2], c.w[3], c.stride, c.pad, 1)};
    };
    auto one = run(1), two = run(2);
    std::string report;
    const std::string names[] = {"forward", "input gradient", "weight gradient"};
    for (int i = 0; i < 3; ++i) {
      check_near(one[i], two[i], names[i].c_str());
      report += (i ? ", " : "") + names[i] + (bits(one[i]) == bits(two[i]) ? " same bits" : " DIFFERENT bits");
    }
    MESSAGE("oneDNN, 1 vs 2 threads, ", c.role, ": ", report);
  }
}
