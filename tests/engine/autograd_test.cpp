// Tape behaviours: shared subgraphs, frozen weights with input gradients, grad of selected
// leaves, no-grad scopes, hooks, tape clearing, and what the tape keeps alive (storage freed as
// backward passes each node; ops saving only what their backward reads).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/ops/ops.h"
#include "tests/support/gradcheck.h"

using namespace cpoison;
using cpoison::testing::rand64;

TEST_CASE("backward accumulates a tensor used twice") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3}).set_requires_grad(true);
  Tensor y = sum(add(mul(x, x), x));  // d/dx = 2x + 1
  autograd::backward(y);
  CHECK(x.grad().to_vector<double>() == std::vector<double>{3, 5, 7});
  CHECK(autograd::tape_size() == 0);
}

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
  Tensor x = Tensor::from_vector(std::vector<double>{2}, {1}).set_requires_grad(true);
  autograd::backward(sum(mul_scalar(x, 3)));
  autograd::backward(sum(mul_scalar(x, 3)));
  CHECK(x.grad().item() == doctest::Approx(6));
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("grad() computes only the requested leaves and leaves .grad alone") {
  Tensor a = rand64({4}, 1), b = rand64({4}, 2);
  Tensor y = sum(mul(a, b));
  auto g = autograd::grad(y, {a});
  REQUIRE(g.size() == 1);
  CHECK(g[0].to_vector<double>() == b.to_vector<double>());
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("a frozen weight gets no gradient while the input gradient flows") {
  Tensor w = rand64({3}, 3, false);  // frozen
  Tensor x = rand64({3}, 4);
  Tensor y = sum(mul(x, w));
  autograd::backward(y);
  CHECK(x.grad().to_vector<double>() == w.to_vector<double>());
  CHECK_FALSE(w.grad().defined());
}

TEST_CASE("no-grad scope records nothing") {
  Tensor x = rand64({3}, 5);
  {
    autograd::NoGradGuard ng;
    Tensor y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
  }
  CHECK(autograd::tape_size() == 0);
  Tensor y = mul(x, x);
  CHECK(y.requires_grad());
  autograd::clear_tape();
}

TEST_CASE("hooks scale and stop gradients") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 1}, {2}).set_requires_grad(true);
  x.register_hook([](const Tensor& g) { return mul_scalar(g, 10); });
  autograd::backward(sum(mul_scalar(x, 2)));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{20, 20});

  // A hook on an intermediate tensor stops the gradient of one branch.
  Tensor a = Tensor::from_vector(std::vector<double>{1}, {1}).set_requires_grad(true);
  Tensor h = mul_scalar(a, 3);
  h.register_hook([](const Tensor& g) { return mul_scalar(g, 0); });
  Tensor y = add(h, mul_scalar(a, 5));
  autograd::backward(sum(y));
  CHECK(a.grad().item() == doctest::Approx(5));
}

TEST_CASE("keep_graph allows a second backward") {
  Tensor x = Tensor::from_vector(std::vector<double>{3}, {1}).set_requires_grad(true);
  Tensor y = sum(square(x));
  autograd::backward(y, Tensor(), true);
  autograd::backward(y);
  CHECK(x.grad().item() == doctest::Approx(12));
}

TEST_CASE("backward of a tensor that needs no gradient is a clear error") {
  Tensor x = rand64({2}, 6, false);
  CHECK_THROWS_WITH_AS(autograd::backward(sum(x)), doctest::Contains("root does not require a gradient"), Error);
}

TEST_CASE("elementwise ops pass the f64 gradient check (broadcasting included)") {
  Tensor a = rand64({2, 3}, 11), b = rand64({3}, 12), c = rand64({2, 1}, 13, true, 0.5, 2.0);
  CHECK_GRADCHECK([](auto& v) { return add(v[0], v[1]); }, {a, b});
  CHECK_GRADCHECK([](auto& v) { return sub(v[0], v[1]); }, {a, b});
  CHECK_GRADCHECK([](auto& v) { return mul(v[0], v[1]); }, {a, c});
  CHECK_GRADCHECK([](auto& v) { return div(v[0], v[1]); }, {a, c});
  CHECK_GRADCHECK([](auto& v) { return div(v[1], v[0]); }, {a, c});
  Tensor p = rand64({2, 3}, 14, true, 0.2, 2.0);
  CHECK_GRADCHECK([](auto& v) { return exp(v[0]); }, {a});
  CHECK_GRADCHECK([](auto& v) { return log(v[0]); }, {p});
  CHECK_GRADCHECK([](auto& v) { return sqrt(v[0]); }, {p});
  CHECK_GRADCHECK([](auto& v) { return pow(v[0], 2.5); }, {p});
  CHECK_GRADCHECK([](auto& v) { return abs(v[0]); }, {a});
  CHECK_GRADCHECK([](auto& v) { return square(v[0]); }, {a});
  CHECK_GRADCHECK([](auto& v) { return relu(v[0]); }, {a});
  CHECK_GRADCHECK([](auto& v) { return clamp(v[0], -0.3, 0.4); }, {a});
  CHECK_GRADCHECK([](auto& v) { return 2.0 - v[0] * 3.0 + 1.5; }, {a});
  CHECK_GRADCHECK([](auto& v) { return 2.0 / v[0]; }, {p});
  CHECK_GRADCHECK([](auto& v) { return neg(v[0]); }, {a});
}

TEST_CASE("reductions pass the f64 gradient check") {
  Tensor a = rand64({2, 3, 4}, 21);
  CHECK_GRADCHECK([](auto& v) { return sum(v[0]); }, {a});
  CHECK_GRADCHECK([](auto& v) { return sum(v[0], {0, 2}, false); }, {a});
  CHECK_GRADCHECK([](auto& v) { return mean(v[0], {1}, true); }, {a});
  CHECK_GRADCHECK([](auto& v) { return var(v[0], {0, 2}, true, false); }, {a});
  CHECK_GRADCHECK([](auto& v) { return var(v[0], {-1}, false, true); }, {a});
  CHECK_GRADCHECK([](auto& v) { return max(v[0], 1, false); }, {a});
  CHECK_GRADCHECK([](auto& v) { return sum_to(v[0], {3, 1}); }, {a});
}

TEST_CASE("reductions give known values") {
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(sum(a, {1}).to_vector<double>() == std::vector<double>{6, 15});
  CHECK(mean(a, {0}).to_vector<double>() == std::vector<double>{2.5, 3.5, 4.5});
  CHECK(var(a, {1}, true).to_vector<double>() == std::vector<double>{1, 1});
  CHECK(argmax(a, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1});
  CHECK(max(a, 1).to_vector<double>() == std::vector<double>{3, 6});
}

TEST_CASE("index ops scatter-add their gradients") {
  Tensor a = rand64({3, 2}, 31);
  Tensor idx = Tensor::from_vector(std::vector<int64_t>{2, 0, 2, 2}, {4});
  CHECK_GRADCHECK([idx](auto& v) { return index_select0(v[0], idx); }, {a});
  Tensor src = rand64({4, 2}, 32);
  CHECK_GRADCHECK([idx](auto& v) { return index_add0(v[0], idx, v[1]); }, {a, src});
  Tensor lab = Tensor::from_vector(std::vector<int64_t>{1, 0, 1}, {3});
  CHECK_GRADCHECK([lab](auto& v) { return gather1(v[0], lab); }, {a});
  // Row 2 picked three times receives three gradients.
  Tensor ones = Tensor::ones({3, 2}, DType::f64).set_requires_grad(true);
  autograd::backward(sum(index_select0(ones, idx)));
  CHECK(ones.grad().to_vector<double>() == std::vector<double>{1, 1, 0, 0, 3, 3});
  CHECK_THROWS_WITH_AS(index_select0(a, Tensor::from_vector(std::vector<int64_t>{3}, {1})), doctest::Contains("out of range"), Error);
}

TEST_CASE("index_copy0 replaces rows exactly; gradients skip the replaced rows") {
  Tensor a = rand64({4, 3}, 33);
  Tensor idx = Tensor::from_vector(std::vector<int64_t>{3, 0}, {2});
  Tensor src = rand64({2, 3}, 34);
  CHECK_GRADCHECK([idx](auto& v) { return index_copy0(v[0], idx, v[1]); }, {a, src});
  // Exact bytes: rows 3 and 0 are src's, rows 1 and 2 are a's, for f32 and u8.
  Tensor af = Tensor::from_vector(std::vector<float>{0.5f, 0.25f, -0.0f, 1e-8f, 5, 6, 7, 8}, {4, 2});
  Tensor sf = Tensor::from_vector(std::vector<float>{-0.0f, 1e30f, 0.1f, 0.3f}, {2, 2});
  std::vector<float> got = index_copy0(af, idx, sf).to_vector<float>();
  std::vector<float> want{0.1f, 0.3f, -0.0f, 1e-8f, 5, 6, -0.0f, 1e30f};
  CHECK(std::memcmp(got.data(), want.data(), sizeof(float) * want.size()) == 0);
  Tensor au = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {4}).to(DType::u8);
  Tensor su = Tensor::from_vector(std::vector<float>{9, 8}, {2}).to(DType::u8);
  CHECK(index_copy0(au, idx, su).to(DType::f64).to_vector<double>() == std::vector<double>{8, 2, 3, 9});
  // The gradient of a replaced row is zero; src's rows get the output rows' gradients.
  Tensor ones = Tensor::ones({4, 3}, DType::f64).set_requires_grad(true);
  Tensor s2 = Tensor::ones({2, 3}, DType::f64).set_requires_grad(true);
  autograd::backward(sum(mul(index_copy0(ones, idx, s2), Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, {4, 1}))));
  CHECK(ones.grad().to_vector<double>() == std::vector<double>{0, 0, 0, 2, 2, 2, 3, 3, 3, 0, 0, 0});
  CHECK(s2.grad().to_vector<double>() == std::vector<double>{4, 4, 4, 1, 1, 1});
  CHECK_THROWS_WITH_AS(index_copy0(a, Tensor::from_vector(std::vector<int64_t>{1, 1}, {2}), src), doctest::Contains("more than once"), Error);
  CHECK_THROWS_WITH_AS(index_copy0(a, Tensor::from_vector(std::vector<int64_t>{4, 1}, {2}), src), doctest::Contains("out of range"), Error);
  CHECK_THROWS_WITH_AS(index_copy0(a, idx, rand64({3, 3}, 35)), doctest::Contains("does not match"), Error);
}

TEST_CASE("broadcast mismatch names both shapes") {
  Tensor a = rand64({2, 3}, 41, false), b = rand64({4}, 42, false);
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("[2, 3] and [4]"), Error);
}

TEST_CASE("layout ops: reshape, slice0, to(dtype) are differentiable") {
  Tensor a = rand64({2, 3}, 51);
  CHECK_GRADCHECK([](auto& v) { return v[0].reshape({3, 2}); }, {a});
  CHECK_GRADCHECK([](auto& v) { return v[0].slice0(1, 2); }, {a});
  CHECK_GRADCHECK([](auto& v) { return v[0].to(DType::f32).to(DType::f64); }, {a}, 1e-3, 1e-4, 1e-3);
}

TEST_CASE("random draws depend only on (seed, stream, offset)") {
  Generator g1(5), g2(5);
  Tensor a = uniform({1000}, 0, 1, g1);
  Tensor b1 = uniform({400}, 0, 1, g2);
  Tensor b2 = uniform({600}, 0, 1, g2);
  auto va = a.to_vector<float>();
  auto v1 = b1.to_vector<float>(), v2 = b2.to_vector<float>();
  v1.insert(v1.end(), v2.begin(), v2.end());
  CHECK(va == v1);
  double m = mean(a).item();
  CHECK(m == doctest::Approx(0.5).epsilon(0.05));
  Generator g3(6);
  Tensor n = normal({20000}, 1.0, 2.0, g3, DType::f64);
  CHECK(mean(n).item() == doctest::Approx(1.0).epsilon(0.05));
  CHECK(std::sqrt(var(n, {0}, true).item()) == doctest::Approx(2.0).epsilon(0.03));
  Tensor r = randint({1000}, 3, 7, g3);
  auto rv = r.to_vector<int64_t>();
  CHECK(*std::min_element(rv.begin(), rv.end()) == 3);
  CHECK(*std::max_element(rv.begin(), rv.end()) == 6);
}

TEST_CASE("the tape lets go: each node's saved tensors are freed once backward has passed it") {
  // conv -> relu -> conv -> square -> sum. While backward reaches the first conv (the hook on its
  // output h1 runs then), the nodes after it have released what they saved: r (saved by relu and
  // by the second conv) and h2 (saved by square) are gone. The graph's tensors are built in a
  // scope, so that only the tape could keep them.
  Generator gen(21, 0);
  Tensor x = uniform({6, 2, 12, 12}, -1, 1, gen);
  Tensor w1 = uniform({4, 2, 3, 3}, -1, 1, gen).set_requires_grad(true);
  Tensor w2 = uniform({4, 4, 3, 3}, -1, 1, gen).set_requires_grad(true);
  const size_t before = host_bytes_in_use();
  std::weak_ptr<Storage> r_storage, h2_storage;
  Tensor h1, loss;
  size_t after_forward = 0;
  {
    h1 = conv2d(x, w1, Tensor(), {1, 1, 1});
    Tensor r = relu(h1);
    Tensor h2 = conv2d(r, w2, Tensor(), {1, 1, 1});
    loss = sum(square(h2));
    r_storage = r.storage();
    h2_storage = h2.storage();
    after_forward = host_bytes_in_use();
  }
  // Nothing is freed in forward: the tape keeps r and h2 for their backward functions.
  CHECK_FALSE(r_storage.expired());
  CHECK_FALSE(h2_storage.expired());
  bool r_gone = false, h2_gone = false;
  size_t at_first_conv = 0;
  h1.register_hook([&](const Tensor& g) {
    r_gone = r_storage.expired();
    h2_gone = h2_storage.expired();
    at_first_conv = host_bytes_in_use();
    return g;
  });
  autograd::backward(loss);
  CHECK(r_gone);
  CHECK(h2_gone);
  const size_t activation = (size_t)h1.numel() * sizeof(float);  // r and h2 have h1's shape
  // After forward: h1, r, h2 and the loss (square's output died with its temporary handle). At
  // the first conv: h1, the loss, h1's gradient and w2's finished gradient; r and h2 are gone.
  CHECK(after_forward - before == 3 * activation + sizeof(float));
  CHECK(at_first_conv - before == 2 * activation + sizeof(float) + (size_t)w2.numel() * sizeof(float));
  // After backward: what is left beyond the start is h1, the loss and the two weight gradients.
  const size_t kept = activation + sizeof(float) + (size_t)(w1.numel() + w2.numel()) * sizeof(float);
  CHECK(host_bytes_in_use() - before == kept);
  CHECK(autograd::tape_size() == 0);
}

TEST_CASE("keep_graph keeps the saved tensors for a second pass") {
  Tensor x = Tensor::from_vector(std::vector<double>{1, -2, 3}, {3}).set_requires_grad(true);
  Tensor y = sum(mul(relu(x), x));
  auto g1 = autograd::grad(y, {x}, Tensor(), /*keep_graph=*/true);
  auto g2 = autograd::grad(y, {x});
  CHECK(g1[0].to_vector<double>() == g2[0].to_vector<double>());
  CHECK(g1[0].to_vector<double>() == std::vector<double>{2, 0, 6});
  CHECK(autograd::tape_size() == 0);
}

TEST_CASE("add and sub keep no operand; mul keeps only the factor a wanted gradient needs") {
  // y = sum((a + b) * c) with c frozen: the add node saves nothing, the mul node saves c only
  // (the gradient of c is not wanted). a + b's output is freed as soon as mul's forward is done.
  Tensor a = Tensor::from_vector(std::vector<double>{1, 2}, {2}).set_requires_grad(true);
  Tensor b = Tensor::from_vector(std::vector<double>{3, 4}, {2}).set_requires_grad(true);
  Tensor c = Tensor::from_vector(std::vector<double>{5, 6}, {2});
  std::weak_ptr<Storage> s_storage;
  Tensor y;
  {
    Tensor s = add(a, b);
    s_storage = s.storage();
    y = sum(mul(s, c));
  }
  CHECK(s_storage.expired());
  autograd::backward(y);
  CHECK(a.grad().to_vector<double>() == std::vector<double>{5, 6});
  CHECK(b.grad().to_vector<double>() == std::vector<double>{5, 6});
}
