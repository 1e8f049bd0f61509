// resize_window and flip_horizontal (NCHW: N images, C channels, H rows, W columns): known
// values, identities, f64 gradient checks, error messages, CUDA against the CPU reference.
#include <doctest/doctest.h>

#include <omp.h>

#include <vector>

#include "engine/backend/dispatch.h"
#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"
#include "tests/support/skip.h"

using namespace cpoison;
using cpoison::testing::rand64;

namespace {
Tensor boxes_of(const std::vector<double>& rows) {
  return Tensor::from_vector(rows, {(int64_t)rows.size() / 4, 4}, DType::f64);
}
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
}
}  // namespace

TEST_CASE("resize_window: 2x2 -> 3x3 bilinear with aligned corners") {
  Tensor x = Tensor::from_vector(std::vector<double>{0, 1, 2, 3}, {1, 1, 2, 2});
  Tensor y = resize_window(x, boxes_of({0, 0, 2, 2}), 3, 3);
  CHECK(y.shape() == Shape{1, 1, 3, 3});
  check_close(y.to_vector<double>(), {0, 0.5, 1, 1, 1.5, 2, 2, 2.5, 3});
}

TEST_CASE("resize_window: windows, identities and a 1-pixel output") {
  // x[h][w] = 10 h + w on a 4x5 image, two channels (channel 1 = channel 0 + 100).
  std::vector<double> v;
  for (int c = 0; c < 2; ++c)
    for (int h = 0; h < 4; ++h)
      for (int w = 0; w < 5; ++w) v.push_back(100 * c + 10 * h + w);
  Tensor x = Tensor::from_vector(v, {1, 2, 4, 5});
  SUBCASE("a full window at the input size is the input") {
    CHECK(resize_window(x, boxes_of({0, 0, 4, 5}), 4, 5).to_vector<double>() == v);
  }
  SUBCASE("a window at its own size is a plain crop") {
    Tensor y = resize_window(x, boxes_of({1, 2, 2, 3}), 2, 3);
    CHECK(y.to_vector<double>() == std::vector<double>{12, 13, 14, 22, 23, 24, 112, 113, 114, 122, 123, 124});
  }
  SUBCASE("a linear image stays linear: rows 1..3 x cols 0..4 sampled on a 3x5 grid") {
    Tensor y = resize_window(x.slice0(0, 1), boxes_of({1, 0, 3, 5}), 3, 5);
    std::vector<double> want;
    for (int c = 0; c < 2; ++c)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 5; ++j) want.push_back(100 * c + 10 * (1 + i * 2.0 / 2) + j);
    check_close(y.to_vector<double>(), want);
    // 3 rows (1..3) resized to 4: source rows 1, 1.667, 2.333, 3 (values 10 h + w are linear).
    Tensor z = resize_window(x, boxes_of({1, 1, 3, 2}), 4, 2);
    check_close(z.to_vector<double>(), {11, 12, 11 + 20.0 / 3, 12 + 20.0 / 3, 11 + 40.0 / 3, 12 + 40.0 / 3, 31, 32,
                                        111, 112, 111 + 20.0 / 3, 112 + 20.0 / 3, 111 + 40.0 / 3, 112 + 40.0 / 3, 131, 132});
  }
  SUBCASE("a 1x1 output samples the window's top-left pixel") {
    CHECK(resize_window(x, boxes_of({2, 3, 2, 2}), 1, 1).to_vector<double>() == std::vector<double>{23, 123});
  }
  SUBCASE("f32 boxes and f32 images give the same values") {
    Tensor y = resize_window(x.to(DType::f32), Tensor::from_vector(std::vector<float>{1, 2, 2, 3}, {1, 4}), 2, 3);
    CHECK(y.dtype() == DType::f32);
    CHECK(y.to_vector<double>() == std::vector<double>{12, 13, 14, 22, 23, 24, 112, 113, 114, 122, 123, 124});
  }
}

TEST_CASE("resize_window: f64 gradient check (up- and down-sampling, per-image boxes)") {
  Tensor x = rand64({2, 2, 5, 4}, 11);
  Tensor boxes = boxes_of({1, 0, 4, 3, 0, 1, 5, 3});
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return resize_window(in[0], boxes, 3, 6); }, {x});
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return resize_window(in[0], boxes, 7, 2); }, {x});
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return resize_window(in[0], boxes, 1, 1); }, {x});
}

TEST_CASE("resize_window: the backward pass is the adjoint of the forward pass") {
  // <resize(x), g> = <x, resize_backward(g)> for any x, g.
  Tensor x = rand64({2, 3, 6, 5}, 21);
  Tensor g = rand64({2, 3, 4, 7}, 22, false);
  Tensor boxes = boxes_of({0.0, 1.0, 5.0, 4.0, 2.0, 0.0, 3.0, 5.0});
  Tensor y = resize_window(x, boxes, 4, 7);
  Tensor gx = autograd::grad(sum(mul(y, g)), {x})[0];
  autograd::NoGradGuard ng;
  CHECK(sum(mul(y, g)).item() == doctest::Approx(sum(mul(x, gx)).item()).epsilon(1e-12));
}

TEST_CASE("resize_window: forward and backward do not depend on the thread count") {
  // Large enough for the kernels to run in parallel.
  Generator gen(3);
  Tensor x = uniform({8, 3, 32, 32}, 0, 1, gen, DType::f32);
  Tensor g = uniform({8, 3, 24, 24}, -1, 1, gen, DType::f32);
  std::vector<double> rows;
  for (int n = 0; n < 8; ++n) rows.insert(rows.end(), {double(n), double(2 * n), 20.0 + n % 3, 17.0});
  Tensor boxes = boxes_of(rows);
  auto run = [&](int threads) {
    int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor xl = x.detach().set_requires_grad(true);
    Tensor y = resize_window(xl, boxes, 24, 24);
    Tensor gx = autograd::grad(sum(mul(y, g)), {xl})[0];
    omp_set_num_threads(before);
    return std::make_pair(y.to_vector<float>(), gx.to_vector<float>());
  };
  auto one = run(1), two = run(2);
  CHECK(one.first == two.first);
  CHECK(one.second == two.second);
}

TEST_CASE("resize_window: bad input is an Error naming the op and the shapes") {
  Tensor x = rand64({2, 1, 4, 4}, 31, false);
  CHECK_THROWS_WITH_AS(resize_window(x, boxes_of({0, 0, 4, 4}), 2, 2), doctest::Contains("boxes must be [N, 4]"), Error);
  CHECK_THROWS_WITH_AS(resize_window(x, boxes_of({0, 0, 4, 4, 1, 1, 4, 4}), 2, 2), doctest::Contains("box 1"), Error);
  CHECK_THROWS_WITH_AS(resize_window(x, boxes_of({0, 0, 0, 4, 0, 0, 4, 4}), 2, 2), doctest::Contains("box 0"), Error);
  CHECK_THROWS_WITH_AS(resize_window(x, boxes_of({-1, 0, 2, 2, 0, 0, 4, 4}), 2, 2), doctest::Contains("resize_window"), Error);
  CHECK_THROWS_WITH_AS(resize_window(x, boxes_of({0, 0, 4, 4, 0, 0, 4, 4}), 0, 2), doctest::Contains("output size"), Error);
  CHECK_THROWS_WITH_AS(resize_window(x.reshape({2, 4, 4}), boxes_of({0, 0, 4, 4, 0, 0, 4, 4}), 2, 2), doctest::Contains("[N, C, H, W]"),
                       Error);
  Tensor bytes = Tensor::zeros({2, 1, 4, 4}, DType::u8);
  CHECK_THROWS_WITH_AS(resize_window(bytes, boxes_of({0, 0, 4, 4, 0, 0, 4, 4}), 2, 2), doctest::Contains("float"), Error);
  Tensor int_boxes = Tensor::from_vector(std::vector<int64_t>{0, 0, 4, 4, 0, 0, 4, 4}, {2, 4});
  CHECK_THROWS_WITH_AS(resize_window(x, int_boxes, 2, 2), doctest::Contains("f32 or f64"), Error);
}

TEST_CASE("flip_horizontal: flags per image, flip twice, gradient check") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 1, 2, 3});
  Tensor flags = Tensor::from_vector(std::vector<int64_t>{1, 0}, {2});
  CHECK(flip_horizontal(x, flags).to_vector<double>() == std::vector<double>{3, 2, 1, 6, 5, 4, 7, 8, 9, 10, 11, 12});
  Tensor u8_flags = Tensor::from_vector(std::vector<uint8_t>{0, 1}, {2});
  CHECK(flip_horizontal(x, u8_flags).to_vector<double>() == std::vector<double>{1, 2, 3, 4, 5, 6, 9, 8, 7, 12, 11, 10});
  Tensor f32_flags = Tensor::from_vector(std::vector<float>{1, 1}, {2});
  Tensor r = rand64({2, 3, 3, 4}, 41, false);
  CHECK(flip_horizontal(flip_horizontal(r, f32_flags), f32_flags).to_vector<double>() == r.to_vector<double>());
  Tensor leaf = rand64({2, 2, 3, 4}, 42);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return flip_horizontal(in[0], flags); }, {leaf});
}

TEST_CASE("flip_horizontal: bad input is an Error") {
  Tensor x = rand64({2, 1, 2, 2}, 51, false);
  CHECK_THROWS_WITH_AS(flip_horizontal(x, Tensor::from_vector(std::vector<int64_t>{1, 0, 1}, {3})), doctest::Contains("flags must be [N]"),
                       Error);
  CHECK_THROWS_WITH_AS(flip_horizontal(x.reshape({2, 4}), Tensor::from_vector(std::vector<int64_t>{1, 0}, {2})),
                       doctest::Contains("flip_horizontal"), Error);
}

TEST_CASE("resize_window and flip_horizontal: CUDA matches the CPU reference") {
  SKIP_UNLESS(cuda_available() && supports("resize_window", Device::cuda) && supports("flip_horizontal", Device::cuda),
              "no CUDA resize_window/flip_horizontal");
  Generator gen(5);
  Tensor x = uniform({3, 3, 9, 8}, 0, 1, gen, DType::f32);
  Tensor boxes = boxes_of({0, 0, 9, 8, 2, 1, 5, 6, 4, 3, 3, 2});
  Tensor flags = Tensor::from_vector(std::vector<uint8_t>{1, 0, 1}, {3});
  Tensor g = uniform({3, 3, 7, 11}, -1, 1, gen, DType::f32);
  auto run = [&](Device d) {
    Tensor xd = x.to(d).detach().set_requires_grad(true);
    Tensor y = flip_horizontal(resize_window(xd, boxes, 7, 11), flags);
    Tensor gx = autograd::grad(sum(mul(y, g.to(d))), {xd})[0];
    return std::make_pair(y.to_vector<double>(), gx.to_vector<double>());
  };
  auto [y_cpu, gx_cpu] = run(Device::cpu);
  auto [y_gpu, gx_gpu] = run(Device::cuda);
  for (size_t i = 0; i < y_cpu.size(); ++i) CHECK(y_gpu[i] == doctest::Approx(y_cpu[i]).epsilon(1e-5).scale(1.0));
  for (size_t i = 0; i < gx_cpu.size(); ++i) CHECK(gx_gpu[i] == doctest::Approx(gx_cpu[i]).epsilon(1e-5).scale(1.0));
}
