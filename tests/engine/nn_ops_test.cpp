// Neural-network ops (engine/ops/nn.h) on the CPU: f64 finite-difference gradient checks of every
// op and input, known values on hand-computed cases, the GEMM conv paths against a direct loop
// reference, running-statistic updates, frozen weights, thread-count independence and error
// messages. Layout letters: N batch, C channels, H rows, W columns.
#include <doctest/doctest.h>

#include <cblas.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <string>

#include "engine/backend/settings.h"
#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"

using namespace cpoison;
using cpoison::testing::rand64;

namespace {

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

// Every element within tol * (1 + |want|); reports the first one that is not.
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-9) {
  REQUIRE(got.size() == want.size());
  size_t bad = got.size();
  for (size_t i = 0; i < got.size() && bad == got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= tol * (1 + std::fabs(want[i])))) bad = i;
  INFO("first mismatch at element " << bad << (bad < got.size() ? ": got " + std::to_string(got[bad]) + " want " + std::to_string(want[bad]) : std::string()));
  CHECK(bad == got.size());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Direct-loop convolution and its gradients (the definition, written without GEMM or im2col).
struct NaiveConv {
  Shape xs, ws;
  int64_t stride, pad, groups, Ho, Wo;
  NaiveConv(const Shape& x, const Shape& w, int64_t s, int64_t p, int64_t g)
      : xs(x), ws(w), stride(s), pad(p), groups(g), Ho((x[2] + 2 * p - w[2]) / s + 1), Wo((x[3] + 2 * p - w[3]) / s + 1) {}
  // Calls f(n, oc, oh, ow, ic, kh, kw, x_index, w_index) for every product term of the conv.
  template <class F>
  void each(F f) const {
    const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], Cout = ws[0], Cg = ws[1], KH = ws[2], KW = ws[3];
    const int64_t coutg = Cout / groups;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t oc = 0; oc < Cout; ++oc)
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow)
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t kh = 0; kh < KH; ++kh)
                for (int64_t kw = 0; kw < KW; ++kw) {
                  int64_t ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                  if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                  int64_t ic = (oc / coutg) * Cg + c;
                  f(((n * Cout + oc) * Ho + oh) * Wo + ow, ((n * C + ic) * H + ih) * W + iw, ((oc * Cg + c) * KH + kh) * KW + kw);
                }
  }
  std::vector<double> forward(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b) const {
    std::vector<double> y(xs[0] * ws[0] * Ho * Wo, 0.0);
    if (!b.empty())
      for (size_t i = 0; i < y.size(); ++i) y[i] = b[(i / (Ho * Wo)) % ws[0]];
    each([&](int64_t yi, int64_t xi, int64_t wi) { y[yi] += x[xi] * w[wi]; });
    return y;
  }
  void backward(const std::vector<double>& g, const std::vector<double>& x, const std::vector<double>& w, std::vector<double>& dx,
                std::vector<double>& dw) const {
    dx.assign(x.size(), 0.0);
    dw.assign(w.size(), 0.0);
    each([&](int64_t yi, int64_t xi, int64_t wi) {
      dx[xi] += g[yi] * w[wi];
      dw[wi] += g[yi] * x[xi];
    });
  }
};

// conv2d (f64 and f32) against the direct loops: forward, input and weight gradients.
void check_conv_against_naive(const Shape& xs, const Shape& ws, int64_t stride, int64_t pad, int64_t groups, bool with_bias) {
  CAPTURE(shape_str(xs));
  CAPTURE(shape_str(ws));
  CAPTURE(stride);
  CAPTURE(pad);
  CAPTURE(groups);
  NaiveConv ref(xs, ws, stride, pad, groups);
  Tensor x = rand64(xs, 11), w = rand64(ws, 12), b = with_bias ? rand64({ws[0]}, 13) : Tensor();
  std::vector<double> want = ref.forward(values(x), values(w), with_bias ? values(b) : std::vector<double>{});
  Tensor gy = rand64({xs[0], ws[0], ref.Ho, ref.Wo}, 14, false);
  std::vector<double> want_dx, want_dw;
  ref.backward(values(gy), values(x), values(w), want_dx, want_dw);

  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    const double tol = dt == DType::f64 ? 1e-10 : 2e-5;
    Tensor xd = x.detach().to(dt).set_requires_grad(true), wd = w.detach().to(dt).set_requires_grad(true);
    Tensor bd = with_bias ? b.detach().to(dt).set_requires_grad(true) : Tensor();
    Tensor y = conv2d(xd, wd, bd, {stride, pad, groups});
    check_close(values(y), want, tol);
    std::vector<Tensor> leaves{xd, wd};
    if (with_bias) leaves.push_back(bd);
    auto grads = autograd::grad(y, leaves, gy.to(dt));
    check_close(values(grads[0]), want_dx, tol);
    check_close(values(grads[1]), want_dw, tol);
  }
}

}  // namespace

// ---------------------------------------------------------------- conv2d

TEST_CASE("conv2d known values: plain, bias, stride with padding, groups") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  Tensor diag = Tensor::from_vector(std::vector<double>{1, 0, 0, 1}, {1, 1, 2, 2});
  // y[i,j] = x[i,j] + x[i+1,j+1]
  CHECK(values(conv2d(x, diag, Tensor())) == std::vector<double>{6, 8, 12, 14});
  Tensor bias = Tensor::from_vector(std::vector<double>{0.5}, {1});
  CHECK(values(conv2d(x, diag, bias)) == std::vector<double>{6.5, 8.5, 12.5, 14.5});
  // All-ones 2x2 kernel, stride 2, padding 1: windows {1}, {2,3}, {4,7}, {5,6,8,9}.
  Tensor ones = Tensor::ones({1, 1, 2, 2}, DType::f64);
  Tensor y = conv2d(x, ones, Tensor(), {2, 1, 1});
  CHECK(y.shape() == Shape{1, 1, 2, 2});
  CHECK(values(y) == std::vector<double>{1, 5, 11, 28});
  // Two groups of one channel each: each output sees only its own input channel.
  Tensor x2 = Tensor::from_vector(std::vector<double>{2, 3}, {1, 2, 1, 1});
  Tensor w2 = Tensor::from_vector(std::vector<double>{10, 100}, {2, 1, 1, 1});
  CHECK(values(conv2d(x2, w2, Tensor(), {1, 0, 2})) == std::vector<double>{20, 300});
  // Same with groups = 1 and a [1, 2] kernel: both outputs mix both channels.
  Tensor w3 = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2, 1, 1});
  CHECK(values(conv2d(x2, w3, Tensor())) == std::vector<double>{8, 18});
  // f32 takes the same path.
  CHECK(conv2d(x.to(DType::f32), diag.to(DType::f32), Tensor()).to_vector<float>() == std::vector<float>{6, 8, 12, 14});
}

TEST_CASE("conv2d gradient checks: stride, padding, bias, groups, depthwise, 1x1") {
  SUBCASE("3x3 stride 2 padding 1 with bias") {
    Tensor x = rand64({2, 3, 5, 5}, 1), w = rand64({4, 3, 3, 3}, 2), b = rand64({4}, 3);
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], {2, 1, 1}); }, {x, w, b});
  }
  SUBCASE("3x3 stride 1 padding 1 without bias") {
    Tensor x = rand64({2, 2, 4, 4}, 4), w = rand64({3, 2, 3, 3}, 5);
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), {1, 1, 1}); }, {x, w});
  }
  SUBCASE("groups 2 with bias, rectangular kernel") {
    Tensor x = rand64({2, 4, 4, 5}, 6), w = rand64({6, 2, 2, 3}, 7), b = rand64({6}, 8);
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], {1, 1, 2}); }, {x, w, b});
  }
  SUBCASE("depthwise with channel multiplier 2, stride 2 padding 1") {
    Tensor x = rand64({2, 3, 5, 5}, 9), w = rand64({6, 1, 3, 3}, 10), b = rand64({6}, 11);
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], {2, 1, 3}); }, {x, w, b});
  }
  SUBCASE("depthwise without bias") {
    Tensor x = rand64({1, 4, 4, 4}, 12), w = rand64({4, 1, 3, 3}, 13);
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), {1, 1, 4}); }, {x, w});
  }
  SUBCASE("1x1 stride 1 (no im2col) and 1x1 stride 2 (shortcut)") {
    Tensor x = rand64({2, 3, 4, 4}, 14), w = rand64({5, 3, 1, 1}, 15), b = rand64({5}, 16);
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2]); }, {x, w, b});
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), {2, 0, 1}); }, {x, w});
  }
}

TEST_CASE("conv2d GEMM paths match direct loops across batch chunks (f64 and f32)") {
  // Chunk sizes follow from the shapes (engine/backend/cpu/conv.cpp): 32 input channels at 16x16
  // give chunks of 4 images, so a batch of 6 runs a full and a partial chunk; 32 channels at
  // 32x32 run one image per GEMM; small convs put the whole batch in one chunk.
  check_conv_against_naive({6, 32, 16, 16}, {4, 32, 3, 3}, 1, 1, 1, true);
  check_conv_against_naive({2, 32, 32, 32}, {2, 32, 3, 3}, 1, 1, 1, false);
  check_conv_against_naive({6, 4, 16, 16}, {4, 2, 3, 3}, 1, 1, 2, false);
  check_conv_against_naive({5, 4, 4, 4}, {6, 4, 3, 3}, 2, 1, 1, true);
  check_conv_against_naive({3, 4, 8, 8}, {6, 4, 1, 1}, 1, 0, 1, true);        // pointwise, chunked
  check_conv_against_naive({2, 256, 32, 32}, {2, 256, 1, 1}, 1, 0, 1, true);  // pointwise, GEMM on x directly
  check_conv_against_naive({5, 4, 8, 8}, {6, 4, 1, 1}, 2, 0, 1, false);       // shortcut
  check_conv_against_naive({3, 4, 9, 9}, {8, 1, 3, 3}, 2, 1, 4, true);        // depthwise, multiplier 2
  check_conv_against_naive({2, 1, 6, 6}, {3, 1, 3, 3}, 1, 2, 1, false);       // one input channel, wide padding
  check_conv_against_naive({5, 2, 16, 16}, {256, 2, 3, 3}, 1, 1, 1, false);   // >= 256 outputs: untransposed dW
}

TEST_CASE("conv2d with a frozen weight computes the input gradient only") {
  Tensor x = rand64({2, 3, 5, 5}, 21), w = rand64({4, 3, 3, 3}, 22, /*requires_grad=*/false), b = rand64({4}, 23, false);
  NaiveConv ref(x.shape(), w.shape(), 1, 1, 1);
  Tensor y = conv2d(x, w, b, {1, 1, 1});
  CHECK(y.requires_grad());
  Tensor gy = rand64(y.shape(), 24, false);
  autograd::backward(y, gy);
  std::vector<double> want_dx, want_dw;
  ref.backward(values(gy), values(x), values(w), want_dx, want_dw);
  check_close(values(x.grad()), want_dx);
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(b.grad().defined());
  // And the other way round: a fixed input, a trained weight.
  Tensor x2 = rand64({2, 3, 5, 5}, 25, false), w2 = rand64({4, 3, 3, 3}, 26);
  Tensor y2 = conv2d(x2, w2, Tensor(), {1, 1, 1});
  autograd::backward(y2, gy);
  ref.backward(values(gy), values(x2), values(w2), want_dx, want_dw);
  check_close(values(w2.grad()), want_dw);
  CHECK_FALSE(x2.grad().defined());
}

TEST_CASE("conv2d results do not depend on the thread count (reference kernels, deterministic mode)") {
  // oneDNN (the default for f32) is reproducible for a fixed thread count only; deterministic
  // mode keeps the reference kernels, whose promise this checks (tests/engine/onednn_conv_test.cpp).
  const bool was_deterministic = cpu_deterministic();
  set_cpu_deterministic(true);
  Generator gen(5, 0);
  // 32 channels at 16x16: chunks of 4 images (the last of 1), run in parallel; ten chunks give
  // the weight gradient more chunks than slots, whose partial sums add up in a fixed order.
  Tensor x = uniform({37, 32, 16, 16}, -1, 1, gen), w = uniform({16, 32, 3, 3}, -1, 1, gen);
  Tensor gy = uniform({37, 16, 16, 16}, -1, 1, gen);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    Tensor xl = x.detach().set_requires_grad(true), wl = w.detach().set_requires_grad(true);
    Tensor y = conv2d(xl, wl, Tensor(), {1, 1, 1});
    auto g = autograd::grad(y, {xl, wl}, gy);
    return std::vector<std::vector<float>>{y.to_vector<float>(), g[0].to_vector<float>(), g[1].to_vector<float>()};
  };
  const int threads = omp_get_max_threads();
  auto one = run(1);
  auto two = run(2);
  auto three = run(3);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  set_cpu_deterministic(was_deterministic);
  CHECK(one[0] == two[0]);
  CHECK(one[1] == two[1]);
  CHECK(one[2] == two[2]);
  CHECK(one[2] == three[2]);
  CHECK(one[1] == three[1]);
}

TEST_CASE("conv2d errors name the op and the shapes") {
  Tensor x = rand64({2, 3, 8, 8}, 1, false);
  std::string msg = error_of([&] { conv2d(x, rand64({4, 2, 3, 3}, 2, false), Tensor()); });
  CHECK(msg.find("conv2d") != std::string::npos);
  CHECK(msg.find("[2, 3, 8, 8]") != std::string::npos);
  CHECK(msg.find("[4, 2, 3, 3]") != std::string::npos);
  msg = error_of([&] { conv2d(x, rand64({4, 3, 3, 3}, 2, false), rand64({5}, 3, false)); });
  CHECK(msg.find("bias must be [4]") != std::string::npos);
  msg = error_of([&] { conv2d(x, rand64({4, 3, 9, 9}, 2, false), Tensor()); });
  CHECK(msg.find("kernel 9 larger") != std::string::npos);
  msg = error_of([&] { conv2d(x, rand64({4, 1, 3, 3}, 2, false), Tensor(), {1, 0, 3}); });
  CHECK(msg.find("groups 3 must divide") != std::string::npos);
  msg = error_of([&] { conv2d(x.reshape({6, 8, 8}), rand64({4, 3, 3, 3}, 2, false), Tensor()); });
  CHECK(msg.find("input must be [N, C, H, W], got [6, 8, 8]") != std::string::npos);
  msg = error_of([&] { conv2d(x, Tensor::ones({4, 3, 3, 3}), Tensor()); });
  CHECK(msg.find("another dtype") != std::string::npos);
  msg = error_of([&] { conv2d(x, rand64({4, 3, 3, 3}, 2, false), Tensor(), {0, 0, 1}); });
  CHECK(msg.find("stride >= 1") != std::string::npos);
}

// ---------------------------------------------------------------- linear, matmul

TEST_CASE("linear and matmul known values") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  Tensor w = Tensor::from_vector(std::vector<double>{1, 0, 1, 1, 0, 2}, {3, 2});
  Tensor b = Tensor::from_vector(std::vector<double>{10, 20, 30}, {3});
  // rows of x times rows of w: [1, 3, 4] and [3, 7, 8], plus b
  CHECK(values(linear(x, w, b)) == std::vector<double>{11, 23, 34, 13, 27, 38});
  CHECK(values(linear(x, w, Tensor())) == std::vector<double>{1, 3, 4, 3, 7, 8});
  // A 1-d input gives a 1-d output.
  Tensor y1 = linear(Tensor::from_vector(std::vector<double>{1, 2}, {2}), w, b);
  CHECK(y1.shape() == Shape{3});
  CHECK(values(y1) == std::vector<double>{11, 23, 34});
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor m = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 1}, {3, 2});
  CHECK(values(matmul(a, m)) == std::vector<double>{4, 5, 10, 11});
  // Batched, with the 2-d side broadcast.
  Tensor ab = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 1}, {2, 2, 3});
  Tensor y = matmul(ab, m);
  CHECK(y.shape() == Shape{2, 2, 2});
  CHECK(values(y) == std::vector<double>{4, 5, 10, 11, 0, 0, 1, 1});
  Tensor yb = matmul(a, Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 1, 2, 0, 0, 2, 0, 0}, {2, 3, 2}));
  CHECK(values(yb) == std::vector<double>{4, 5, 10, 11, 2, 4, 8, 10});
}

TEST_CASE("linear and matmul gradient checks") {
  SUBCASE("linear 2-d with bias") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                    {rand64({3, 4}, 1), rand64({5, 4}, 2), rand64({5}, 3)});
  }
  SUBCASE("linear 3-d input without bias") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); }, {rand64({2, 3, 4}, 4), rand64({2, 4}, 5)});
  }
  SUBCASE("linear 1-d input, frozen weight") {
    Tensor w = rand64({3, 4}, 7, false);
    CHECK_GRADCHECK([w](const std::vector<Tensor>& in) { return linear(in[0], w, in[1]); }, {rand64({4}, 6), rand64({3}, 8)});
  }
  SUBCASE("matmul 2-d") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {rand64({3, 4}, 9), rand64({4, 2}, 10)});
  }
  SUBCASE("matmul batched") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {rand64({2, 3, 4}, 11), rand64({2, 4, 2}, 12)});
  }
  SUBCASE("matmul broadcast right side") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {rand64({3, 2, 4}, 13), rand64({4, 3}, 14)});
  }
  SUBCASE("matmul broadcast left side") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, {rand64({2, 4}, 15), rand64({3, 4, 3}, 16)});
  }
}

TEST_CASE("linear and matmul errors name the shapes") {
  std::string msg = error_of([] { matmul(rand64({2, 3}, 1, false), rand64({4, 2}, 2, false)); });
  CHECK(msg.find("matmul") != std::string::npos);
  CHECK(msg.find("[2, 3] x [4, 2]") != std::string::npos);
  msg = error_of([] { matmul(rand64({2, 2, 3}, 1, false), rand64({3, 3, 2}, 2, false)); });
  CHECK(msg.find("batch sizes differ") != std::string::npos);
  msg = error_of([] { matmul(rand64({3}, 1, false), rand64({3, 2}, 2, false)); });
  CHECK(msg.find("2-d or 3-d") != std::string::npos);
  msg = error_of([] { linear(rand64({2, 3}, 1, false), rand64({4, 5}, 2, false), Tensor()); });
  CHECK(msg.find("linear") != std::string::npos);
  CHECK(msg.find("[2, 3]") != std::string::npos);
  CHECK(msg.find("[4, 5]") != std::string::npos);
  msg = error_of([] { linear(rand64({2, 5}, 1, false), rand64({4, 5}, 2, false), rand64({5}, 3, false)); });
  CHECK(msg.find("bias must be [4]") != std::string::npos);
}

// ---------------------------------------------------------------- batch norm

TEST_CASE("batch_norm training: known values and running-statistic updates") {
  // One channel, values 1..4: mean 2.5, biased variance 1.25, unbiased 5/3.
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {4, 1});
  Tensor rm = Tensor::zeros({1}, DType::f64), rv = Tensor::ones({1}, DType::f64);
  Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, true, 0.1, 1e-5);
  const double s = 1 / std::sqrt(1.25 + 1e-5);
  check_close(values(y), {-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s});
  check_close(values(rm), {0.25});
  check_close(values(rv), {0.9 + 0.1 * 5.0 / 3.0});
  // Affine: y * weight + bias; a second step moves the statistics again.
  Tensor w = Tensor::from_vector(std::vector<double>{2}, {1}), b = Tensor::from_vector(std::vector<double>{-1}, {1});
  y = batch_norm(x, w, b, rm, rv, true, 0.5, 1e-5);
  check_close(values(y), {-3 * s - 1, -s - 1, s - 1, 3 * s - 1});
  check_close(values(rm), {0.5 * 0.25 + 0.5 * 2.5});
  check_close(values(rv), {0.5 * (0.9 + 0.1 * 5.0 / 3.0) + 0.5 * 5.0 / 3.0});

  // 2-d: statistics over N, H and W per channel. Channel 0 holds 0..3 and 8..11, channel 1 4..7 and 12..15.
  std::vector<double> v(16);
  for (int i = 0; i < 16; ++i) v[i] = i;
  Tensor x4 = Tensor::from_vector(v, {2, 2, 2, 2});
  Tensor rm4 = Tensor::zeros({2}, DType::f64), rv4 = Tensor::ones({2}, DType::f64);
  Tensor y4 = batch_norm(x4, Tensor(), Tensor(), rm4, rv4, true, 0.1, 1e-5);
  // Channel 0 values {0,1,2,3,8,9,10,11}: mean 5.5, sum of squared deviations 138, so the biased
  // variance is 138/8 and the unbiased 138/7; channel 1 is channel 0 shifted by 4.
  check_close(values(rm4), {0.55, 0.95});
  check_close(values(rv4), {0.9 + 0.1 * 138 / 7, 0.9 + 0.1 * 138 / 7});
  CHECK(y4.to_vector<double>()[0] == doctest::Approx(-5.5 / std::sqrt(138.0 / 8 + 1e-5)));
  // Without running statistics training still normalises.
  Tensor y5 = batch_norm(x4, Tensor(), Tensor(), Tensor(), Tensor(), true);
  check_close(values(y5), values(y4));
}

TEST_CASE("batch_norm eval uses the running statistics and leaves them alone") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  Tensor rm = Tensor::from_vector(std::vector<double>{1, 2}, {2}), rv = Tensor::from_vector(std::vector<double>{4, 1}, {2});
  Tensor w = Tensor::from_vector(std::vector<double>{1, 3}, {2}), b = Tensor::from_vector(std::vector<double>{0, 1}, {2});
  Tensor y = batch_norm(x, w, b, rm, rv, false, 0.1, 1e-12);
  check_close(values(y), {0, 1, 1, 7}, 1e-9);
  check_close(values(rm), {1, 2});
  check_close(values(rv), {4, 1});
  // f32 agrees with f64.
  Tensor yf = batch_norm(x.to(DType::f32), w.to(DType::f32), b.to(DType::f32), rm.to(DType::f32), rv.to(DType::f32), false, 0.1, 1e-12);
  check_close(values(yf), {0, 1, 1, 7}, 1e-6);
}

TEST_CASE("batch_norm gradient checks: 1-d and 2-d, train and eval, affine on and off") {
  auto bn = [](bool training, bool affine, Tensor rm, Tensor rv) {
    return [=](const std::vector<Tensor>& in) {
      return batch_norm(in[0], affine ? in[1] : Tensor(), affine ? in[2] : Tensor(), rm, rv, training, 0.1, 1e-5);
    };
  };
  for (bool training : {true, false}) {
    for (bool affine : {true, false}) {
      CAPTURE(training);
      CAPTURE(affine);
      Tensor rm = rand64({3}, 30, false), rv = rand64({3}, 31, false, 0.5, 2.0);
      std::vector<Tensor> in1{rand64({5, 3}, 32)}, in2{rand64({2, 3, 3, 2}, 33)};
      if (affine) {
        for (auto* in : {&in1, &in2}) {
          in->push_back(rand64({3}, 34));
          in->push_back(rand64({3}, 35));
        }
      }
      CHECK_GRADCHECK(bn(training, affine, rm, rv), in1);
      CHECK_GRADCHECK(bn(training, affine, rm, rv), in2);
    }
  }
  // Only the affine parameters need a gradient (a frozen input), and only the input (frozen affine).
  Tensor x = rand64({4, 2, 2, 2}, 40, false), w = rand64({2}, 41), b = rand64({2}, 42);
  CHECK_GRADCHECK([x](const std::vector<Tensor>& in) { return batch_norm(x, in[0], in[1], Tensor(), Tensor(), true); }, {w, b});
  Tensor wf = rand64({2}, 43, false);
  CHECK_GRADCHECK([wf](const std::vector<Tensor>& in) { return batch_norm(in[0], wf, Tensor(), Tensor(), Tensor(), true); },
                  {rand64({4, 2, 2, 2}, 44)});
}

TEST_CASE("batch_norm errors name the shapes") {
  Tensor x = rand64({4, 3, 2, 2}, 1, false);
  std::string msg = error_of([&] { batch_norm(x, rand64({2}, 2, false), Tensor(), Tensor(), Tensor(), true); });
  CHECK(msg.find("batch_norm") != std::string::npos);
  CHECK(msg.find("weight must be [3] for input [4, 3, 2, 2], got [2]") != std::string::npos);
  msg = error_of([&] { batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false); });
  CHECK(msg.find("eval mode needs running_mean") != std::string::npos);
  msg = error_of([&] { batch_norm(rand64({1, 3}, 1, false), Tensor(), Tensor(), Tensor(), Tensor(), true); });
  CHECK(msg.find("more than one value per channel") != std::string::npos);
  msg = error_of([&] { batch_norm(rand64({2, 3, 4}, 1, false), Tensor(), Tensor(), Tensor(), Tensor(), true); });
  CHECK(msg.find("[N, C] or [N, C, H, W], got [2, 3, 4]") != std::string::npos);
}

// ---------------------------------------------------------------- pooling

TEST_CASE("pooling known values") {
  std::vector<double> v(16);
  for (int i = 0; i < 16; ++i) v[i] = i;
  Tensor x = Tensor::from_vector(v, {1, 1, 4, 4});
  CHECK(values(max_pool2d(x, 2, 2)) == std::vector<double>{5, 7, 13, 15});
  CHECK(values(avg_pool2d(x, 2, 2)) == std::vector<double>{2.5, 4.5, 10.5, 12.5});
  // Kernel 3, stride 2, padding 1: windows clipped at the border; the average still divides by 9.
  CHECK(values(max_pool2d(x, 3, 2, 1)) == std::vector<double>{5, 7, 13, 15});
  check_close(values(avg_pool2d(x, 3, 2, 1)), {(0 + 1 + 4 + 5) / 9.0, (1 + 2 + 3 + 5 + 6 + 7) / 9.0, (4 + 5 + 8 + 9 + 12 + 13) / 9.0,
                                                (5 + 6 + 7 + 9 + 10 + 11 + 13 + 14 + 15) / 9.0});
  Tensor g = global_avg_pool2d(Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 10, 20, 30, 40}, {1, 2, 2, 2}));
  CHECK(g.shape() == Shape{1, 2, 1, 1});
  CHECK(values(g) == std::vector<double>{2.5, 25});
  // Max-pool gradient goes to the first maximum of a window with ties.
  Tensor t = Tensor::from_vector(std::vector<double>{1, 3, 3, 0}, {1, 1, 2, 2}).set_requires_grad(true);
  autograd::backward(sum(max_pool2d(t, 2, 2)));
  CHECK(values(t.grad()) == std::vector<double>{0, 1, 0, 0});
}

TEST_CASE("pooling gradient checks") {
  SUBCASE("max pool 3 stride 2 padding 1") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return max_pool2d(in[0], 3, 2, 1); }, {rand64({2, 2, 5, 5}, 1)});
  }
  SUBCASE("max pool 2 stride 2") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return max_pool2d(in[0], 2, 2); }, {rand64({1, 3, 4, 6}, 2)});
  }
  SUBCASE("avg pool 3 stride 2 padding 1 (overlapping windows)") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return avg_pool2d(in[0], 3, 2, 1); }, {rand64({2, 2, 5, 5}, 3)});
  }
  SUBCASE("avg pool 2 stride 1") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return avg_pool2d(in[0], 2, 1); }, {rand64({1, 2, 3, 4}, 4)});
  }
  SUBCASE("global average pool") {
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return global_avg_pool2d(in[0]); }, {rand64({2, 3, 3, 2}, 5)});
  }
}

TEST_CASE("pooling errors name the shapes") {
  Tensor x = rand64({1, 2, 4, 4}, 1, false);
  std::string msg = error_of([&] { max_pool2d(x, 3, 1, 2); });
  CHECK(msg.find("max_pool2d: padding must be in [0, kernel/2], got padding 2 for kernel 3") != std::string::npos);
  msg = error_of([&] { avg_pool2d(x, 5, 1); });
  CHECK(msg.find("avg_pool2d: kernel 5 larger than the padded input") != std::string::npos);
  CHECK(msg.find("[1, 2, 4, 4]") != std::string::npos);
  msg = error_of([&] { global_avg_pool2d(rand64({2, 4}, 1, false)); });
  CHECK(msg.find("global_avg_pool2d: input must be [N, C, H, W], got [2, 4]") != std::string::npos);
  msg = error_of([&] { max_pool2d(x, 2, 0); });
  CHECK(msg.find("stride must be >= 1") != std::string::npos);
}
