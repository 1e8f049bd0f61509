// Shape ops (engine/ops/shape.h) and losses/normalisations (engine/ops/loss.h) on the CPU:
// known values, round trips, every dtype for the layout ops, f64 gradient checks (several dims,
// negative dims, strided inputs) and error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <omp.h>
#include <string>

#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"

using namespace cpoison;
using cpoison::testing::gradcheck;
using cpoison::testing::rand64;

namespace {
std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// A differentiable, non-contiguous view of x with its last two dims swapped (no copy), so ops
// see real strides. Backward hands the gradient back through a transpose.
Tensor strided_view(const Tensor& x) {
  Shape sh = x.shape(), st = x.strides();
  std::swap(sh[sh.size() - 1], sh[sh.size() - 2]);
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  Tensor v = make_view(x.detach(), sh, st, x.offset());
  if (autograd::needs_record({&x}))
    autograd::record("test_strided_view", {x}, v, [](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{transpose(g, -1, -2)};
    });
  return v;
}

// Runs fn expecting a cpoison::Error whose message contains every piece.
template <class F>
void check_error(F fn, const std::vector<std::string>& pieces) {
  std::string msg;
  try {
    fn();
  } catch (const Error& e) {
    msg = e.what();
  }
  INFO("message: ", msg);
  REQUIRE_FALSE(msg.empty());
  for (const auto& p : pieces) CHECK(msg.find(p) != std::string::npos);
}

Tensor iota_tensor(const Shape& shape, DType dt) {
  return Tensor::arange(shape_numel(shape), DType::i64).to(dt).reshape(shape);
}
}  // namespace

// ---------------------------------------------------------------- shape ops: values

TEST_CASE("shape: transpose and permute place every element by the index formula") {
  Tensor a = iota_tensor({2, 3}, DType::f32);
  Tensor t = transpose(a, 0, 1);
  CHECK(t.shape() == Shape{3, 2});
  CHECK(t.is_contiguous());
  CHECK(vals(t) == std::vector<double>{0, 3, 1, 4, 2, 5});
  CHECK(vals(transpose(a, -1, -2)) == vals(t));

  Tensor b = iota_tensor({2, 3, 4}, DType::f64);
  Tensor p = permute(b, {2, 0, -2});  // [4, 2, 3], p[k, i, j] = b[i, j, k]
  REQUIRE(p.shape() == Shape{4, 2, 3});
  auto pv = vals(p);
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j) CHECK(pv[(k * 2 + i) * 3 + j] == (double)(i * 12 + j * 4 + k));
}

TEST_CASE("shape: layout ops copy every dtype bit for bit") {
  for (DType dt : {DType::u8, DType::i32, DType::i64, DType::f32, DType::f64}) {
    INFO("dtype ", dtype_name(dt));
    Tensor a = iota_tensor({2, 3}, dt);
    Tensor t = transpose(a, 0, 1);
    CHECK(t.dtype() == dt);
    CHECK(t.to_vector<int64_t>() == std::vector<int64_t>{0, 3, 1, 4, 2, 5});
    CHECK(narrow(a, 1, 1, 2).to_vector<int64_t>() == std::vector<int64_t>{1, 2, 4, 5});
    CHECK(concat({a, a}, 0).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5});
    CHECK(concat({a, narrow(a, 1, 0, 1)}, 1).to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 0, 3, 4, 5, 3});
    Tensor col = Tensor::from_vector(std::vector<int64_t>{7, 9}, {2, 1}, dt);
    CHECK(broadcast_to(col, {2, 2, 3}).to_vector<int64_t>() ==
          std::vector<int64_t>{7, 7, 7, 9, 9, 9, 7, 7, 7, 9, 9, 9});
    auto parts = split(a, {1, 2}, -1);
    REQUIRE(parts.size() == 2);
    CHECK(parts[0].to_vector<int64_t>() == std::vector<int64_t>{0, 3});
    CHECK(parts[1].to_vector<int64_t>() == std::vector<int64_t>{1, 2, 4, 5});
    CHECK(unsqueeze(a, -1).shape() == Shape{2, 3, 1});
    CHECK(squeeze(unsqueeze(a, 0), 0).shape() == Shape{2, 3});
    CHECK(flatten(iota_tensor({2, 3, 4}, dt), 1).shape() == Shape{2, 12});
  }
}

TEST_CASE("shape: flatten, unsqueeze and squeeze shapes, with negative dims") {
  Tensor a = iota_tensor({2, 3, 4, 5}, DType::f32);
  CHECK(flatten(a).shape() == Shape{2, 60});
  CHECK(flatten(a, 0).shape() == Shape{120});
  CHECK(flatten(a, -2).shape() == Shape{2, 3, 20});
  CHECK(flatten(a, 3).shape() == Shape{2, 3, 4, 5});
  CHECK(vals(flatten(a, 1)) == vals(a));
  CHECK(unsqueeze(a, 0).shape() == Shape{1, 2, 3, 4, 5});
  CHECK(unsqueeze(a, 4).shape() == Shape{2, 3, 4, 5, 1});
  CHECK(unsqueeze(a, -1).shape() == Shape{2, 3, 4, 5, 1});
  CHECK(unsqueeze(a, -5).shape() == Shape{1, 2, 3, 4, 5});
  CHECK(squeeze(unsqueeze(a, 2), -3).shape() == Shape{2, 3, 4, 5});
  Tensor s = Tensor::scalar(4.0, DType::f64);
  CHECK(unsqueeze(s, 0).shape() == Shape{1});
  CHECK(squeeze(unsqueeze(s, 0), 0).shape() == Shape{});
}

TEST_CASE("shape: narrow and broadcast_to values, including scalars and empty pieces") {
  Tensor a = iota_tensor({3, 4}, DType::f64);
  CHECK(vals(narrow(a, 0, 1, 2)) == std::vector<double>{4, 5, 6, 7, 8, 9, 10, 11});
  CHECK(vals(narrow(a, -1, 3, 1)) == std::vector<double>{3, 7, 11});
  CHECK(narrow(a, 1, 4, 0).shape() == Shape{3, 0});
  CHECK(vals(broadcast_to(Tensor::scalar(2.5, DType::f64), {2, 2})) == std::vector<double>{2.5, 2.5, 2.5, 2.5});
  CHECK(vals(broadcast_to(Tensor::from_vector(std::vector<double>{1, 2, 3}, {3}), {2, 3})) ==
        std::vector<double>{1, 2, 3, 1, 2, 3});
  CHECK(vals(broadcast_to(a, {3, 4})) == vals(a));
  CHECK(broadcast_to(Tensor::ones({1, 3}, DType::f32), {0, 3}).shape() == Shape{0, 3});
  auto pieces = split(a, {0, 3, 0}, 0);
  REQUIRE(pieces.size() == 3);
  CHECK(pieces[0].shape() == Shape{0, 4});
  CHECK(vals(pieces[1]) == vals(a));
  CHECK(vals(concat(pieces, 0)) == vals(a));
}

TEST_CASE("shape: ops read strided and offset views without a contiguous copy first") {
  Tensor base = iota_tensor({4, 3}, DType::f64);
  Tensor view_t = make_view(base, {3, 4}, {1, 3}, 0);  // base transposed, as a view
  CHECK(vals(transpose(view_t, 0, 1)) == vals(base));
  CHECK(vals(permute(view_t, {1, 0})) == vals(base));
  Tensor rows = base.slice0(1, 3);  // offset view: rows 1..2
  CHECK(vals(narrow(rows, 1, 1, 2)) == std::vector<double>{4, 5, 7, 8});
  CHECK(vals(concat({view_t, rows.reshape({3, 2})}, 1)) == std::vector<double>{0, 3, 6, 9, 3, 4, 1, 4, 7, 10, 5, 6, 2, 5, 8, 11, 7, 8});
  CHECK(vals(broadcast_to(make_view(base, {1, 4}, {1, 3}, 1), {2, 4})) == std::vector<double>{1, 4, 7, 10, 1, 4, 7, 10});
  CHECK(vals(flatten(view_t, 0)) == std::vector<double>{0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11});
}

TEST_CASE("shape: round trips (split then concat, permute then inverse permute)") {
  Tensor a = rand64({3, 5, 4}, 11, false);
  for (int64_t d : {0, 1, 2, -1}) {
    INFO("dim ", d);
    int64_t n = a.size(d);
    auto pieces = split(a, {1, n - 1}, d);
    CHECK(vals(concat(pieces, d)) == vals(a));
  }
  Tensor ints = iota_tensor({2, 7}, DType::i64);
  CHECK(concat(split(ints, {2, 2, 3}, 1), 1).to_vector<int64_t>() == ints.to_vector<int64_t>());
  std::vector<int64_t> perm = {2, 0, 1}, inverse = {1, 2, 0};
  Tensor p = permute(a, perm);
  CHECK(p.shape() == Shape{4, 3, 5});
  Tensor back = permute(p, inverse);
  CHECK(back.shape() == a.shape());
  CHECK(vals(back) == vals(a));
  CHECK(vals(transpose(transpose(a, 0, 2), -1, 0)) == vals(a));
}

// ---------------------------------------------------------------- shape ops: gradients

TEST_CASE("shape gradcheck: flatten, unsqueeze, squeeze") {
  Tensor x = rand64({2, 3, 2}, 21);
  for (int64_t s : {0, 1, -1, -2})
    CHECK_GRADCHECK([s](const std::vector<Tensor>& in) { return square(flatten(in[0], s)); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return mul(unsqueeze(in[0], -2), unsqueeze(in[0], 1)); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(squeeze(unsqueeze(in[0], 3), -1)); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(flatten(strided_view(in[0]), 1)); }, {x});
}

TEST_CASE("shape gradcheck: transpose and permute, plain and strided") {
  Tensor x = rand64({2, 3, 4}, 22);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(transpose(in[0], 0, 2)); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(transpose(in[0], -1, 1)); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(permute(in[0], {1, 2, 0})); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(permute(in[0], {-1, 0, 1})); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(permute(strided_view(in[0]), {2, 0, 1})); }, {x});
  Tensor x4 = rand64({2, 1, 3, 2}, 23);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(permute(in[0], {3, 1, 0, 2})); }, {x4});
}

TEST_CASE("shape gradcheck: concat, split and narrow along several dims") {
  Tensor a = rand64({2, 3}, 24), b = rand64({2, 1}, 25), c = rand64({2, 2}, 26);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(concat({in[0], in[1], in[2]}, 1)); }, {a, b, c});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(concat({in[0], in[1], in[0]}, -1)); }, {a, b});
  Tensor d = rand64({1, 3}, 27);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(concat({in[0], in[1]}, 0)); }, {a, d});
  Tensor frozen = rand64({2, 3}, 28, false);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return square(concat({frozen, in[0]}, 0)); }, {a});

  Tensor x = rand64({3, 4, 2}, 29);
  for (int64_t dim : {0, 1, -1}) {
    INFO("dim ", dim);
    int64_t n = x.size(dim);
    CHECK_GRADCHECK([dim, n](const std::vector<Tensor>& in) {
      auto p = split(in[0], {1, n - 2, 1}, dim);
      return concat({square(p[2]), p[1], mul_scalar(p[0], 3.0)}, dim);
    }, {x});
    CHECK_GRADCHECK([dim](const std::vector<Tensor>& in) { return square(narrow(in[0], dim, 1, 1)); }, {x});
  }
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(narrow(strided_view(in[0]), 1, 0, 1)); }, {x});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(concat({strided_view(in[0]), in[1]}, 1)); },
                  {rand64({2, 3}, 30), rand64({3, 1}, 31)});
}

TEST_CASE("shape gradcheck: broadcast_to sums the gradient over repeated dims") {
  Tensor v = rand64({3}, 32), col = rand64({2, 1}, 33), s = rand64({}, 34);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(broadcast_to(in[0], {2, 3})); }, {v});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(broadcast_to(in[0], {4, 2, 3})); }, {col});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(broadcast_to(in[0], {2, 2})); }, {s});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return square(broadcast_to(strided_view(in[0]), {3, 2})); }, {rand64({2, 1}, 35)});
  // Known gradient: each element of v is used twice.
  Tensor w = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3}).set_requires_grad(true);
  autograd::backward(sum(broadcast_to(w, {2, 3})));
  CHECK(vals(w.grad()) == std::vector<double>{2, 2, 2});
}

// ---------------------------------------------------------------- shape ops: errors

TEST_CASE("shape: bad input gives an Error naming the op and the shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 3});
  check_error([&] { concat({a, b}, 1); }, {"concat", "[3, 3]", "[2, 3]", "except along dim 1"});
  check_error([&] { concat({a, Tensor::zeros({2, 3, 1})}, 0); }, {"concat", "[2, 3, 1]", "[2, 3]"});
  check_error([&] { concat({a, Tensor::zeros({2, 3}, DType::f64)}, 0); }, {"concat", "f64", "f32"});
  check_error([&] { concat({}, 0); }, {"concat", "at least one"});
  check_error([&] { concat({a}, 2); }, {"concat", "dim 2", "out of range"});
  check_error([&] { transpose(a, 0, 2); }, {"transpose", "dim 2", "[2, 3]"});
  check_error([&] { transpose(a, -3, 0); }, {"transpose", "dim -3"});
  check_error([&] { permute(a, {0, 0}); }, {"permute", "not a permutation"});
  check_error([&] { permute(a, {0}); }, {"permute", "1 dims", "[2, 3]"});
  check_error([&] { narrow(a, 1, 2, 2); }, {"narrow", "[2, 4)", "size 3"});
  check_error([&] { narrow(a, 0, -1, 1); }, {"narrow", "out of bounds"});
  check_error([&] { split(a, {1, 1}, 1); }, {"split", "[1, 1]", "add up to 2", "size 3"});
  check_error([&] { split(a, {4, -1}, 1); }, {"split", "negative"});
  check_error([&] { broadcast_to(a, {2, 2}); }, {"broadcast_to", "[2, 3]", "[2, 2]"});
  check_error([&] { broadcast_to(a, {3}); }, {"broadcast_to", "fewer dims"});
  check_error([&] { squeeze(a, 1); }, {"squeeze", "size 3", "not 1"});
  check_error([&] { unsqueeze(a, 3); }, {"unsqueeze", "dim 3"});
  check_error([&] { flatten(a, 2); }, {"flatten", "dim 2"});
  check_error([&] { flatten(Tensor::scalar(1.0), 0); }, {"flatten", "at least 1 dim"});
}

// ---------------------------------------------------------------- losses: values

TEST_CASE("loss: log_softmax and softmax known values and stability") {
  Tensor z = Tensor::from_vector(std::vector<double>{0, 0}, {1, 2});
  auto ls = vals(log_softmax(z, 1));
  CHECK(ls[0] == doctest::Approx(-std::log(2.0)));
  CHECK(ls[1] == doctest::Approx(-std::log(2.0)));
  // softmax([1, 2, 3]) = e^k / (e + e^2 + e^3)
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3});
  double zsum = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  auto sm = vals(softmax(x, 0));
  for (int k = 0; k < 3; ++k) CHECK(sm[k] == doctest::Approx(std::exp(k + 1.0) / zsum));
  // Huge logits: the max shift keeps everything finite, in f32 too.
  Tensor big = Tensor::from_vector(std::vector<float>{1000, 0, -1000}, {1, 3});
  auto lb = log_softmax(big, -1).to_vector<float>();
  CHECK(lb[0] == doctest::Approx(0.0));
  CHECK(lb[1] == doctest::Approx(-1000.0));
  CHECK(lb[2] == doctest::Approx(-2000.0));
  auto sb = softmax(big, -1).to_vector<float>();
  CHECK(sb[0] == doctest::Approx(1.0));
  CHECK(sb[1] == 0.0f);
  // A masked (-inf) entry gets probability 0 and the rest still normalise.
  Tensor masked = Tensor::from_vector(std::vector<double>{-std::numeric_limits<double>::infinity(), 0, 0}, {1, 3});
  auto sm2 = vals(softmax(masked, 1));
  CHECK(sm2[0] == 0.0);
  CHECK(sm2[1] == doctest::Approx(0.5));
  // Over dim 0 of a [2, 3] matrix each column sums to 1.
  Tensor m = rand64({2, 3}, 40, false, -3, 3);
  auto c = vals(softmax(m, 0));
  for (int j = 0; j < 3; ++j) CHECK(c[j] + c[3 + j] == doctest::Approx(1.0));
}

TEST_CASE("loss: log_softmax f32 matches f64 and does not depend on the thread count") {
  Tensor x64 = rand64({300, 257}, 41, false, -20, 20);
  Tensor x32 = x64.to(DType::f32);
  auto ref = vals(log_softmax(x64, 1));
  int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = log_softmax(x32, 1).to_vector<float>();
  omp_set_num_threads(std::max(2, threads));
  auto many = log_softmax(x32, 1).to_vector<float>();
  omp_set_num_threads(threads);
  CHECK(one == many);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(ref[i] - (double)one[i]) / (1 + std::fabs(ref[i])));
  CHECK(worst < 1e-6);
}

TEST_CASE("loss: cross_entropy known values and gradient (softmax - onehot) / N") {
  Tensor z = Tensor::from_vector(std::vector<double>{0, 0}, {1, 2});
  CHECK(cross_entropy(z, Tensor::from_vector(std::vector<int64_t>{0}, {1})).item() == doctest::Approx(std::log(2.0)));
  // Rows [ln 1, ln 3] -> p = [1/4, 3/4]; labels [1, 0]: loss = (-ln 3/4 - ln 1/4) / 2.
  Tensor logits = Tensor::from_vector(std::vector<double>{0, std::log(3.0), 0, std::log(3.0)}, {2, 2}).set_requires_grad(true);
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 0}, {2});
  Tensor loss = cross_entropy(logits, labels);
  CHECK(loss.shape() == Shape{});
  CHECK(loss.item() == doctest::Approx((-std::log(0.75) - std::log(0.25)) / 2));
  autograd::backward(loss);
  auto g = vals(logits.grad());
  std::vector<double> want = {0.25 / 2, (0.75 - 1) / 2, (0.25 - 1) / 2, 0.75 / 2};
  for (int i = 0; i < 4; ++i) CHECK(g[i] == doctest::Approx(want[i]));
  // f32 logits far apart stay finite.
  Tensor big = Tensor::from_vector(std::vector<float>{500, -500}, {1, 2});
  CHECK(cross_entropy(big, Tensor::from_vector(std::vector<int64_t>{1}, {1})).item() == doctest::Approx(1000.0));
}

TEST_CASE("loss: mse, l2_normalize and cosine_similarity known values") {
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector(std::vector<double>{1, 0, 3, 0}, {2, 2});
  CHECK(mse_loss(a, b).item() == doctest::Approx((4.0 + 16.0) / 4));

  auto n = vals(l2_normalize(Tensor::from_vector(std::vector<double>{3, 4}, {1, 2}), 1));
  CHECK(n[0] == doctest::Approx(0.6));
  CHECK(n[1] == doctest::Approx(0.8));
  // Along dim 0 of [[3, 0], [4, 5]]: columns [3, 4] and [0, 5].
  auto n0 = vals(l2_normalize(Tensor::from_vector(std::vector<double>{3, 0, 4, 5}, {2, 2}), 0));
  CHECK(n0 == std::vector<double>{0.6, 0, 0.8, 1});
  // A vector shorter than eps is divided by eps; a zero vector stays zero with a finite gradient 1/eps.
  auto small = vals(l2_normalize(Tensor::from_vector(std::vector<double>{0.03, 0.04}, {2}), 0, 0.1));
  CHECK(small[0] == doctest::Approx(0.3));
  CHECK(small[1] == doctest::Approx(0.4));
  Tensor zero = Tensor::zeros({1, 3}, DType::f64).set_requires_grad(true);
  Tensor nz = l2_normalize(zero, 1, 1e-6);
  CHECK(vals(nz) == std::vector<double>{0, 0, 0});
  autograd::backward(sum(nz));
  for (double g : vals(zero.grad())) CHECK(g == doctest::Approx(1e6));

  Tensor u = Tensor::from_vector(std::vector<double>{1, 0, 0, 2, 1, 1}, {2, 3});
  Tensor v = Tensor::from_vector(std::vector<double>{0, 3, 0, -4, -2, -2}, {2, 3});
  auto cs = vals(cosine_similarity(u, v, 1));
  REQUIRE(cs.size() == 2);
  CHECK(cs[0] == doctest::Approx(0.0));   // orthogonal
  CHECK(cs[1] == doctest::Approx(-1.0));  // opposite
  CHECK(cosine_similarity(u, u, -1).shape() == Shape{2});
  for (double c : vals(cosine_similarity(u, u, -1))) CHECK(c == doctest::Approx(1.0));
  // Zero vector: the denominator is eps, the result 0 (no NaN).
  Tensor z3 = Tensor::zeros({3}, DType::f64);
  CHECK(cosine_similarity(z3, z3, 0).item() == 0.0);
}

// ---------------------------------------------------------------- losses: gradients

TEST_CASE("loss gradcheck: log_softmax and softmax over several dims, plain and strided") {
  Tensor x = rand64({3, 4}, 50, true, -3, 3);
  for (int64_t d : {0, 1, -1, -2}) {
    INFO("dim ", d);
    CHECK_GRADCHECK([d](const std::vector<Tensor>& in) { return log_softmax(in[0], d); }, {x});
    CHECK_GRADCHECK([d](const std::vector<Tensor>& in) { return softmax(in[0], d); }, {x});
  }
  Tensor x3 = rand64({2, 3, 4}, 51, true, -3, 3);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return log_softmax(in[0], 1); }, {x3});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return softmax(in[0], -1); }, {x3});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return log_softmax(strided_view(in[0]), -1); }, {x3});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return softmax(strided_view(in[0]), 0); }, {x});
}

TEST_CASE("loss gradcheck: cross_entropy, mse_loss") {
  Tensor logits = rand64({4, 5}, 52, true, -3, 3);
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 4, 2, 2}, {4});
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels); }, {logits});
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return cross_entropy(strided_view(in[0]), labels); }, {rand64({5, 4}, 53)});
  Tensor a = rand64({2, 3}, 54), b = rand64({2, 3}, 55);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return mse_loss(in[0], in[1]); }, {a, b});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return mse_loss(strided_view(in[0]), in[1]); }, {rand64({3, 2}, 56), b});
}

TEST_CASE("loss gradcheck: l2_normalize above and below eps, several dims") {
  Tensor x = rand64({3, 4}, 57);
  for (int64_t d : {0, 1, -1}) {
    INFO("dim ", d);
    CHECK_GRADCHECK([d](const std::vector<Tensor>& in) { return l2_normalize(in[0], d); }, {x});
  }
  Tensor x3 = rand64({2, 3, 2}, 58);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return l2_normalize(in[0], -2); }, {x3});
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return l2_normalize(strided_view(in[0]), 1); }, {x});
  // Rows with norms well below and well above eps = 1: row 0 ~ 0.05, row 1 ~ 5.
  Tensor mixed = Tensor::from_vector(std::vector<double>{0.03, -0.04, 0.01, 3, -4, 1}, {2, 3}).set_requires_grad(true);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return l2_normalize(in[0], 1, 1.0); }, {mixed});
}

TEST_CASE("loss gradcheck: cosine_similarity over several dims, eps regimes") {
  Tensor a = rand64({3, 4}, 59), b = rand64({3, 4}, 60);
  for (int64_t d : {0, 1, -1}) {
    INFO("dim ", d);
    CHECK_GRADCHECK([d](const std::vector<Tensor>& in) { return cosine_similarity(in[0], in[1], d); }, {a, b});
  }
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return cosine_similarity(strided_view(in[0]), in[1], 0); },
                  {rand64({4, 3}, 61), b});
  Tensor tiny = Tensor::from_vector(std::vector<double>{0.01, 0.02, 2, 1}, {2, 2}).set_requires_grad(true);
  Tensor other = Tensor::from_vector(std::vector<double>{0.03, -0.01, -1, 3}, {2, 2}).set_requires_grad(true);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return cosine_similarity(in[0], in[1], 1, 0.5); }, {tiny, other});
}

// ---------------------------------------------------------------- losses: errors

TEST_CASE("loss: bad input gives an Error naming the op, the values and the shapes") {
  Tensor logits = Tensor::zeros({2, 3});
  check_error([&] { cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{0, 3}, {2})); },
              {"cross_entropy", "label 3", "row 1", "K = 3"});
  check_error([&] { cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{-1, 0}, {2})); },
              {"cross_entropy", "label -1", "K = 3"});
  check_error([&] { cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{0, 1}, {2}, DType::i32)); },
              {"cross_entropy", "i64 [2]", "i32[2]"});
  check_error([&] { cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{0}, {1})); }, {"cross_entropy", "i64[1]"});
  check_error([&] { cross_entropy(Tensor::zeros({6}), Tensor::from_vector(std::vector<int64_t>{0}, {1})); },
              {"cross_entropy", "[N, K]", "f32[6]"});
  check_error([&] { mse_loss(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})); }, {"mse_loss", "f32[2, 3]", "f32[3, 2]"});
  check_error([&] { cosine_similarity(Tensor::zeros({2, 3}), Tensor::zeros({2, 4}), 1); }, {"cosine_similarity", "[2, 4]"});
  check_error([&] { cosine_similarity(Tensor::zeros({2, 3}), Tensor::zeros({2, 3}), 2); }, {"cosine_similarity", "dim 2"});
  check_error([&] { log_softmax(Tensor::zeros({2, 3}), -3); }, {"log_softmax", "dim -3", "[2, 3]"});
  check_error([&] { softmax(Tensor::zeros({2}, DType::i64), 0); }, {"softmax", "i64"});
  check_error([&] { l2_normalize(Tensor::zeros({2, 3}), 2); }, {"l2_normalize", "dim 2"});
  check_error([&] { l2_normalize(Tensor::zeros({2, 3}), 1, -1.0); }, {"l2_normalize", "eps"});
}
