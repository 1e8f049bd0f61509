// CUDA backend against the CPU reference: every op's forward and backward on CUDA must equal the
// CPU op within atol + rtol * |cpu| on fresh random inputs of several shapes; the random
// generator must give the same numbers on both devices; copies must round-trip. Every case is
// skipped (never passed) where no GPU is usable, and in builds without the CUDA backend.
#include <doctest/doctest.h>

#include <cmath>
#include <array>
#include <functional>
#include <sstream>

#include "augment/augment.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/linalg.h"
#include "engine/backend/settings.h"
#include "engine/ops/ops.h"
#include "tests/support/skip.h"
#ifdef CPOISON_CUDA
#include "engine/backend/cuda/allocator.h"
#endif

using namespace cpoison;

namespace {

constexpr const char* kNoGpu = "no usable CUDA GPU (or a build without the CUDA backend)";

// Uniform values in [lo, hi) on the CPU; a fresh seed gives fresh values (never all zeros).
Tensor rnd(const Shape& shape, uint64_t seed, DType dtype = DType::f32, double lo = -1.0, double hi = 1.0, bool grad = false) {
  Generator g(seed, 7);
  Tensor t = uniform(shape, lo, hi, g, dtype);
  if (grad) t.set_requires_grad(true);
  return t;
}
Tensor leaf(const Shape& shape, uint64_t seed, DType dtype = DType::f32, double lo = -1.0, double hi = 1.0) {
  return rnd(shape, seed, dtype, lo, hi, true);
}

// A CUDA copy of a CPU tensor: a new leaf that requires grad when the original does.
Tensor to_cuda(const Tensor& t) {
  Tensor g = t.detach().to(Device::cuda);
  if (t.requires_grad()) g.set_requires_grad(true);
  return g;
}

// |cuda - cpu| <= atol + rtol * |cpu| everywhere (and the same shape and dtype).
void check_close(const Tensor& on_cuda, const Tensor& on_cpu, double atol, double rtol, const std::string& what) {
  INFO(what);
  REQUIRE(on_cuda.defined());
  REQUIRE(on_cpu.defined());
  CHECK(on_cuda.device() == Device::cuda);
  REQUIRE(on_cuda.shape() == on_cpu.shape());
  CHECK(on_cuda.dtype() == on_cpu.dtype());
  std::vector<double> a = on_cuda.to_vector<double>(), b = on_cpu.to_vector<double>();
  double worst = 0;
  int64_t worst_at = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    bool both_nan = std::isnan(a[i]) && std::isnan(b[i]);
    double excess = both_nan ? 0.0 : std::abs(a[i] - b[i]) - (atol + rtol * std::abs(b[i]));
    if (std::isnan(excess) || excess > worst) {
      worst = std::isnan(excess) ? INFINITY : excess;
      worst_at = (int64_t)i;
    }
  }
  std::ostringstream os;
  if (worst_at >= 0) os << "element " << worst_at << ": cuda " << a[worst_at] << " vs cpu " << b[worst_at];
  INFO(os.str());
  CHECK(worst_at < 0);
}

// Bitwise equality of two tensors' values (after conversion to double).
bool same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i)
    if (!(x[i] == y[i] || (std::isnan(x[i]) && std::isnan(y[i])))) return false;
  return true;
}

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on the CPU inputs and on CUDA copies of them; compares the outputs, then the gradients
// of sum(f(inputs) * w) (w fixed and random) w.r.t. every input that requires grad.
void compare_op(const std::string& name, const Fn& f, const std::vector<Tensor>& cpu_inputs, double atol = 1e-5, double rtol = 1e-4) {
  std::vector<Tensor> gpu_inputs;
  for (const Tensor& t : cpu_inputs) gpu_inputs.push_back(to_cuda(t));
  Tensor y_cpu = f(cpu_inputs), y_gpu = f(gpu_inputs);
  check_close(y_gpu, y_cpu, atol, rtol, name + " forward");
  std::vector<Tensor> leaves_cpu, leaves_gpu;
  for (size_t i = 0; i < cpu_inputs.size(); ++i)
    if (cpu_inputs[i].requires_grad()) {
      leaves_cpu.push_back(cpu_inputs[i]);
      leaves_gpu.push_back(gpu_inputs[i]);
    }
  if (leaves_cpu.empty() || !is_floating(y_cpu.dtype())) {
    autograd::clear_tape();
    return;
  }
  Tensor w = rnd(y_cpu.shape(), 4242, y_cpu.dtype());
  std::vector<Tensor> g_cpu = autograd::grad(sum(mul(y_cpu, w)), leaves_cpu);
  std::vector<Tensor> g_gpu = autograd::grad(sum(mul(y_gpu, w.to(Device::cuda))), leaves_gpu);
  for (size_t i = 0; i < g_cpu.size(); ++i) check_close(g_gpu[i], g_cpu[i], atol, rtol, name + " gradient of input " + std::to_string(i));
}

}  // namespace

// ---------------------------------------------------------------- memory, copies, RNG

TEST_CASE("cuda: to(device) round trips every dtype, strided views and conversions") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  for (DType dt : {DType::f32, DType::f64, DType::u8, DType::i32, DType::i64}) {
    Tensor host = rnd({3, 5, 7}, 11, DType::f64, 0.0, 200.0).to(dt);
    Tensor dev = host.to(Device::cuda);
    CHECK(dev.device() == Device::cuda);
    CHECK(dev.dtype() == dt);
    CHECK(same_values(dev.to(Device::cpu), host));
    // A transposed (non-contiguous) device view made contiguous on the device, then copied back.
    Tensor view = make_view(dev, {7, 5, 3}, {1, 7, 35}, 0);
    Tensor host_view = make_view(host, {7, 5, 3}, {1, 7, 35}, 0);
    CHECK(same_values(view.contiguous().to(Device::cpu), host_view.contiguous()));
    // A slice with an offset.
    CHECK(same_values(dev.slice0(1, 3).to(Device::cpu), host.slice0(1, 3)));
  }
  // dtype conversion on the device matches the host's static_cast.
  Tensor x = rnd({4, 9}, 12, DType::f64, -50.0, 250.0);
  for (DType dt : {DType::f32, DType::i32, DType::i64})
    CHECK(same_values(x.to(Device::cuda).to(dt).to(Device::cpu), x.to(dt)));
  Tensor pos = rnd({4, 9}, 13, DType::f64, 0.0, 250.0);
  CHECK(same_values(pos.to(Device::cuda).to(DType::u8).to(Device::cpu), pos.to(DType::u8)));
  // Fills and broadcast (zero-stride) sources.
  for (double v : {0.0, -2.5, 7.0}) {
    Tensor f = Tensor::full({5, 6}, v, DType::f32, Device::cuda);
    CHECK(same_values(f.to(Device::cpu), Tensor::full({5, 6}, v, DType::f32)));
  }
  Tensor row = rnd({6}, 14).to(Device::cuda);
  Tensor expanded = make_view(row, {4, 6}, {0, 1}, 0).contiguous();
  CHECK(same_values(expanded.to(Device::cpu), make_view(row.to(Device::cpu), {4, 6}, {0, 1}, 0).contiguous()));
  // Empty tensors.
  CHECK(Tensor::zeros({0, 3}, DType::f32, Device::cuda).to(Device::cpu).numel() == 0);
}

TEST_CASE("cuda: the caching allocator stops calling cudaMalloc in a steady loop") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
#ifdef CPOISON_CUDA
  auto step = [] {
    Tensor a = Tensor::ones({64, 1000}, DType::f32, Device::cuda);
    Tensor b = mul(add(a, a), a);
    Tensor s = sum(b, {1});
    return s.to(Device::cpu);
  };
  step();  // warm-up fills the free lists
  uint64_t before = cuda::allocator_stats().cuda_malloc_calls;
  for (int i = 0; i < 5; ++i) CHECK(step().to_vector<float>()[0] == doctest::Approx(2000.0f));
  CHECK(cuda::allocator_stats().cuda_malloc_calls == before);
  CHECK(cuda::allocator_stats().cache_hits > 0);
#endif
}

#ifdef CPOISON_CUDA
constexpr bool kCudaCompiled = true;
#else
constexpr bool kCudaCompiled = false;
#endif

TEST_CASE("cuda: allocator size classes waste at most an eighth") {
  SKIP_UNLESS(kCudaCompiled, "a build without the CUDA backend");  // host-side logic: runs without a GPU
#ifdef CPOISON_CUDA
  CHECK(cuda::allocation_size_class(1) == 512);
  CHECK(cuda::allocation_size_class(513) == 1024);
  CHECK(cuda::allocation_size_class(1000000) == 1048576);
  for (size_t n : {1ul, 511ul, 512ul, 513ul, 4096ul, 4097ul, 99999ul, 1000000ul, 123456789ul, 5000000000ul}) {
    size_t c = cuda::allocation_size_class(n);
    CHECK(c >= n);
    CHECK(c < n + std::max<size_t>(512, n / 8));
    CHECK(cuda::allocation_size_class(c) == c);  // a class maps to itself
  }
#endif
}

TEST_CASE("cuda: the random generator gives the CPU's numbers") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  // Bernoulli and randint compare the same 53-bit draws: identical. uniform and normal are
  // identical in f32; in f64 the host compiler may fuse `lo + (hi - lo) * u` into an FMA
  // (-march=x86-64-v3) where the GPU build does not (-fmad=false), a last-bit difference.
  for (DType dt : {DType::f32, DType::f64}) {
    Generator a(2024, 3), b(2024, 3);
    a.set_offset(17);
    b.set_offset(17);
    Tensor ua = uniform({1001}, -2.0, 3.0, a, dt, Device::cuda), ub = uniform({1001}, -2.0, 3.0, b, dt);
    if (dt == DType::f32) CHECK(same_values(ua.to(Device::cpu), ub));
    check_close(ua, ub, 0.0, 1e-15, "uniform");
    CHECK(same_values(bernoulli({513}, 0.3, a, dt, Device::cuda).to(Device::cpu), bernoulli({513}, 0.3, b, dt)));
    // Box-Muller goes through log and cos, whose last bit may differ between libm and CUDA.
    check_close(normal({777}, 0.5, 2.0, a, dt, Device::cuda), normal({777}, 0.5, 2.0, b, dt), 1e-12, dt == DType::f32 ? 1e-6 : 1e-13,
                "normal");
    CHECK(a.offset() == b.offset());
  }
  Generator a(5), b(5);
  CHECK(same_values(randint({999}, -7, 1000, a, DType::i64, Device::cuda).to(Device::cpu), randint({999}, -7, 1000, b, DType::i64)));
  CHECK(same_values(randint({99}, 0, 10, a, DType::i32, Device::cuda).to(Device::cpu), randint({99}, 0, 10, b, DType::i32)));
}

// ---------------------------------------------------------------- elementwise, reduce, index

TEST_CASE("cuda: binary elementwise ops with broadcasting") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  const std::vector<std::pair<Shape, Shape>> shapes = {{{7}, {7}}, {{2, 3, 4}, {3, 1}}, {{2, 3, 4}, {4}}, {{5, 1, 6}, {1, 4, 1}}, {{}, {3, 2}}};
  uint64_t seed = 100;
  for (auto& [sa, sb] : shapes)
    for (DType dt : {DType::f32, DType::f64}) {
      compare_op("add", [](auto& v) { return add(v[0], v[1]); }, {leaf(sa, seed++, dt), leaf(sb, seed++, dt)});
      compare_op("sub", [](auto& v) { return sub(v[0], v[1]); }, {leaf(sa, seed++, dt), leaf(sb, seed++, dt)});
      compare_op("mul", [](auto& v) { return mul(v[0], v[1]); }, {leaf(sa, seed++, dt), leaf(sb, seed++, dt)});
      compare_op("div", [](auto& v) { return div(v[0], v[1]); }, {leaf(sa, seed++, dt), leaf(sb, seed++, dt, 0.5, 2.0)});
    }
}

TEST_CASE("cuda: unary elementwise ops and their gradients") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 200;
  for (const Shape& s : {Shape{9}, Shape{3, 4, 5}, Shape{2, 1, 33}})
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor any = leaf(s, seed++, dt, -2.0, 2.0), pos = leaf(s, seed++, dt, 0.2, 3.0);
      compare_op("neg", [](auto& v) { return neg(v[0]); }, {any});
      compare_op("exp", [](auto& v) { return exp(v[0]); }, {any});
      compare_op("log", [](auto& v) { return log(v[0]); }, {pos});
      compare_op("sqrt", [](auto& v) { return sqrt(v[0]); }, {pos});
      compare_op("pow", [](auto& v) { return pow(v[0], 2.5); }, {pos});
      compare_op("abs", [](auto& v) { return abs(v[0]); }, {any});
      compare_op("square", [](auto& v) { return square(v[0]); }, {any});
      compare_op("relu", [](auto& v) { return relu(v[0]); }, {any});
      compare_op("clamp", [](auto& v) { return clamp(v[0], -0.5, 0.7); }, {any});
      compare_op("sign", [](auto& v) { return sign(v[0]); }, {any.detach()});
      compare_op("add_scalar", [](auto& v) { return add_scalar(v[0], 1.25); }, {any});
      compare_op("mul_scalar", [](auto& v) { return mul_scalar(v[0], -3.0); }, {any});
      compare_op("rsub_scalar", [](auto& v) { return rsub_scalar(v[0], 2.0); }, {any});
      compare_op("rdiv_scalar", [](auto& v) { return rdiv_scalar(v[0], 2.0); }, {pos});
    }
}

TEST_CASE("cuda: reductions match the CPU and are deterministic") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 300;
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = leaf({4, 5, 6}, seed++, dt);
    compare_op("sum all", [](auto& v) { return sum(v[0]); }, {x});
    compare_op("sum dim 0", [](auto& v) { return sum(v[0], {0}); }, {x});
    compare_op("sum dims 1,2 keepdim", [](auto& v) { return sum(v[0], {1, 2}, true); }, {x});
    compare_op("mean dim -1", [](auto& v) { return mean(v[0], {-1}); }, {x});
    compare_op("var unbiased", [](auto& v) { return var(v[0], {0, 2}, true); }, {x});
    compare_op("max dim 1", [](auto& v) { return max(v[0], 1); }, {x});
    compare_op("argmax dim 2", [](auto& v) { return argmax(v[0], 2); }, {x.detach()});
  }
  // Long rows take the chunked two-pass path; the result must not change between runs.
  Tensor big = rnd({3, 70001}, 301);
  compare_op("sum long rows", [](auto& v) { return sum(v[0], {1}); }, {big}, 1e-3, 1e-5);
  Tensor g = big.to(Device::cuda);
  CHECK(same_values(sum(g, {1}).to(Device::cpu), sum(g, {1}).to(Device::cpu)));
  // argmax ties go to the first index on both devices.
  Tensor ties = Tensor::from_vector(std::vector<float>{1, 3, 3, 0, 2, 2, 2, 2}, {2, 4});
  CHECK(argmax(ties.to(Device::cuda), 1).to(Device::cpu).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
}

TEST_CASE("cuda: row indexing ops, deterministic scatter-add, range errors") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 400;
  Tensor idx = Tensor::from_vector(std::vector<int64_t>{3, 0, 3, 5, 1, 3, 0}, {7});
  for (DType dt : {DType::f32, DType::f64}) {
    compare_op("index_select0", [](auto& v) { return index_select0(v[0], v[1]); }, {leaf({6, 2, 3}, seed++, dt), idx});
    compare_op("index_add0", [](auto& v) { return index_add0(v[0], v[1], v[2]); }, {leaf({6, 4}, seed++, dt), idx, leaf({7, 4}, seed++, dt)});
    Tensor labels = Tensor::from_vector(std::vector<int64_t>{2, 0, 4, 4, 1}, {5});
    compare_op("gather1", [](auto& v) { return gather1(v[0], v[1]); }, {leaf({5, 5}, seed++, dt), labels});
  }
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor distinct = Tensor::from_vector(std::vector<int64_t>{3, 0, 5}, {3});
    compare_op("index_copy0", [](auto& v) { return index_copy0(v[0], v[1], v[2]); }, {leaf({6, 2, 2}, seed++, dt), distinct, leaf({3, 2, 2}, seed++, dt)});
  }
  {  // The row copy is exact on both devices, and a repeated row is an Error.
    Tensor a = rnd({5, 3}, 415), src = rnd({2, 3}, 416);
    Tensor two = Tensor::from_vector(std::vector<int64_t>{4, 1}, {2});
    CHECK(same_values(index_copy0(a.to(Device::cuda), two.to(Device::cuda), src.to(Device::cuda)).to(Device::cpu), index_copy0(a, two, src)));
    Tensor twice = Tensor::from_vector(std::vector<int64_t>{1, 1}, {2}, DType::i64, Device::cuda);
    CHECK_THROWS_WITH_AS(index_copy0(a.to(Device::cuda), twice, src.to(Device::cuda)), doctest::Contains("more than once"), Error);
  }
  // The scatter-add sums each row's sources in index order, exactly as the CPU does.
  Tensor many = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 1, 0, 1, 1, 2, 1}, {9});
  Tensor src = rnd({9, 3}, 410);
  Tensor a = rnd({3, 3}, 411);
  CHECK(same_values(index_add0(a.to(Device::cuda), many.to(Device::cuda), src.to(Device::cuda)).to(Device::cpu), index_add0(a, many, src)));
  // u8 rows (dataset batches) are gathered too.
  Tensor images = rnd({5, 4}, 412, DType::f64, 0, 255).to(DType::u8);
  Tensor pick = Tensor::from_vector(std::vector<int64_t>{4, 4, 0}, {3});
  CHECK(same_values(index_select0(images.to(Device::cuda), pick.to(Device::cuda)).to(Device::cpu), index_select0(images, pick)));
  // A bad index is an Error naming the op and the index, not a crash.
  Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 9}, {2}, DType::i64, Device::cuda);
  CHECK_THROWS_WITH_AS(index_select0(rnd({3, 2}, 413).to(Device::cuda), bad), doctest::Contains("index 9 out of range [0, 3)"), Error);
  CHECK_THROWS_WITH_AS(gather1(rnd({2, 3}, 414).to(Device::cuda), bad), doctest::Contains("gather1"), Error);
}

// ---------------------------------------------------------------- nn

TEST_CASE("cuda: conv2d forward and backward (stride, padding, groups, bias)") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  struct Case {
    Shape x, w;
    int64_t stride, padding, groups;
    bool bias;
  };
  const std::vector<Case> cases = {
      {{2, 3, 8, 8}, {4, 3, 3, 3}, 1, 1, 1, true},   {{2, 4, 7, 9}, {6, 2, 3, 3}, 2, 1, 2, false},
      {{1, 4, 6, 6}, {4, 1, 3, 3}, 1, 1, 4, true},   {{3, 5, 5, 5}, {2, 5, 1, 1}, 1, 0, 1, true},
      {{2, 3, 9, 9}, {5, 3, 5, 5}, 2, 2, 1, false},  {{2, 8, 4, 4}, {8, 8, 3, 3}, 1, 1, 1, true},
  };
  uint64_t seed = 500;
  set_allow_tf32(false);
  for (const Case& c : cases)
    for (DType dt : {DType::f32, DType::f64}) {
      Conv2dOptions opt{c.stride, c.padding, c.groups};
      Tensor x = leaf(c.x, seed++, dt), w = leaf(c.w, seed++, dt), b = c.bias ? leaf({c.w[0]}, seed++, dt) : Tensor();
      std::vector<Tensor> in = {x, w};
      if (c.bias) in.push_back(b);
      compare_op("conv2d " + shape_str(c.x) + " * " + shape_str(c.w),
                 [opt](auto& v) { return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), opt); }, in,
                 dt == DType::f32 ? 1e-4 : 1e-10, dt == DType::f32 ? 1e-4 : 1e-10);
    }
}

TEST_CASE("cuda: conv2d is bitwise reproducible in deterministic mode") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  set_deterministic(true);
  Tensor x = leaf({4, 8, 12, 12}, 520).to(Device::cuda), w = leaf({16, 8, 3, 3}, 521).to(Device::cuda);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  auto run = [&] {
    Tensor y = conv2d(x, w, Tensor(), {1, 1, 1});
    std::vector<Tensor> g = autograd::grad(sum(mul(y, y)), {x, w});
    return std::vector<Tensor>{y.detach().to(Device::cpu), g[0].to(Device::cpu), g[1].to(Device::cpu)};
  };
  auto first = run(), second = run();
  for (size_t i = 0; i < first.size(); ++i) CHECK(same_values(first[i], second[i]));
}

TEST_CASE("cuda: TF32 is off by default and can be switched on") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  CHECK_FALSE(allow_tf32());
  // Values with many mantissa bits: TF32 (10-bit products) would miss the CPU by ~1e-3.
  Tensor a = rnd({64, 256}, 530), b = rnd({256, 48}, 531);
  check_close(matmul(a.to(Device::cuda), b.to(Device::cuda)), matmul(a, b), 1e-4, 1e-5, "f32 matmul without TF32");
  set_allow_tf32(true);
  Tensor fast = matmul(a.to(Device::cuda), b.to(Device::cuda));
  set_allow_tf32(false);
  check_close(fast, matmul(a, b), 5e-2, 1e-2, "matmul with TF32 allowed");
}

TEST_CASE("cuda: linear and matmul (2-d, batched, shared side)") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 600;
  for (DType dt : {DType::f32, DType::f64}) {
    double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    compare_op("matmul 2d", [](auto& v) { return matmul(v[0], v[1]); }, {leaf({5, 7}, seed++, dt), leaf({7, 3}, seed++, dt)}, tol, tol);
    compare_op("matmul batched", [](auto& v) { return matmul(v[0], v[1]); }, {leaf({4, 5, 7}, seed++, dt), leaf({4, 7, 3}, seed++, dt)}, tol, tol);
    compare_op("matmul shared right", [](auto& v) { return matmul(v[0], v[1]); }, {leaf({4, 5, 7}, seed++, dt), leaf({7, 3}, seed++, dt)}, tol, tol);
    compare_op("matmul shared left", [](auto& v) { return matmul(v[0], v[1]); }, {leaf({5, 7}, seed++, dt), leaf({4, 7, 3}, seed++, dt)}, tol, tol);
    compare_op("linear", [](auto& v) { return linear(v[0], v[1], v[2]); }, {leaf({6, 10}, seed++, dt), leaf({4, 10}, seed++, dt), leaf({4}, seed++, dt)},
               tol, tol);
    compare_op("linear 3-d no bias", [](auto& v) { return linear(v[0], v[1], Tensor()); }, {leaf({2, 3, 10}, seed++, dt), leaf({4, 10}, seed++, dt)},
               tol, tol);
  }
}

TEST_CASE("cuda: batch norm in training and eval, running statistics") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 700;
  for (const Shape& s : {Shape{6, 3, 5, 4}, Shape{8, 5}, Shape{3, 2, 1, 7}})
    for (DType dt : {DType::f32, DType::f64}) {
      const int64_t C = s[1];
      double tol = dt == DType::f32 ? 1e-4 : 1e-10;
      for (bool affine : {true, false}) {
        Tensor x = leaf(s, seed++, dt, -2.0, 3.0);
        Tensor w = affine ? leaf({C}, seed++, dt, 0.5, 1.5) : Tensor(), b = affine ? leaf({C}, seed++, dt) : Tensor();
        Tensor rm = rnd({C}, seed++, dt), rv = rnd({C}, seed++, dt, 0.5, 2.0);
        Tensor rm_gpu = rm.to(Device::cuda), rv_gpu = rv.to(Device::cuda);
        std::vector<Tensor> in = {x};
        if (affine) in.insert(in.end(), {w, b});
        auto train = [&](const std::vector<Tensor>& v) {
          bool on_gpu = v[0].device() == Device::cuda;
          return batch_norm(v[0], affine ? v[1] : Tensor(), affine ? v[2] : Tensor(), on_gpu ? rm_gpu : rm, on_gpu ? rv_gpu : rv, true, 0.1, 1e-5);
        };
        compare_op("batch_norm train " + shape_str(s), train, in, tol, tol);
        check_close(rm_gpu, rm, tol, tol, "running mean");
        check_close(rv_gpu, rv, tol, tol, "running var");
        auto eval = [&](const std::vector<Tensor>& v) {
          bool on_gpu = v[0].device() == Device::cuda;
          return batch_norm(v[0], affine ? v[1] : Tensor(), affine ? v[2] : Tensor(), on_gpu ? rm_gpu : rm, on_gpu ? rv_gpu : rv, false, 0.1, 1e-5);
        };
        compare_op("batch_norm eval " + shape_str(s), eval, in, tol, tol);
      }
    }
}

TEST_CASE("cuda: pooling forward and backward") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 800;
  for (DType dt : {DType::f32, DType::f64}) {
    for (const auto& ksp : std::vector<std::array<int64_t, 3>>{{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {2, 1, 0}}) {
      const int64_t k = ksp[0], s = ksp[1], p = ksp[2];
      compare_op("max_pool2d", [k, s, p](auto& v) { return max_pool2d(v[0], k, s, p); }, {leaf({2, 3, 7, 6}, seed++, dt)});
      compare_op("avg_pool2d", [k, s, p](auto& v) { return avg_pool2d(v[0], k, s, p); }, {leaf({2, 3, 7, 6}, seed++, dt)});
    }
    compare_op("global_avg_pool2d", [](auto& v) { return global_avg_pool2d(v[0]); }, {leaf({3, 4, 5, 5}, seed++, dt)});
    compare_op("global_avg_pool2d 1x1", [](auto& v) { return global_avg_pool2d(v[0]); }, {leaf({2, 70, 1, 1}, seed++, dt)});
  }
  // Ties in a max window (clamped values): the first maximum takes the gradient on both devices.
  compare_op("max_pool2d ties", [](auto& v) { return max_pool2d(clamp(v[0], -0.3, 0.3), 3, 1, 1); }, {leaf({2, 2, 6, 6}, 810)});
}

// ---------------------------------------------------------------- shape, loss, image, augment

TEST_CASE("cuda: shape ops") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 900;
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = leaf({2, 3, 4, 5}, seed++, dt);
    compare_op("flatten", [](auto& v) { return flatten(v[0], 1); }, {x});
    compare_op("transpose", [](auto& v) { return transpose(v[0], 1, 3); }, {x});
    compare_op("permute", [](auto& v) { return permute(v[0], {2, 0, 3, 1}); }, {x});
    compare_op("narrow", [](auto& v) { return narrow(v[0], 2, 1, 2); }, {x});
    compare_op("concat", [](auto& v) { return concat({v[0], v[1]}, 1); }, {x, leaf({2, 2, 4, 5}, seed++, dt)});
    compare_op("split", [](auto& v) { return mul(split(v[0], {1, 3}, 2)[1], split(v[0], {3, 1}, 2)[0]); }, {x});
    compare_op("broadcast_to", [](auto& v) { return broadcast_to(v[0], {3, 4, 5}); }, {leaf({4, 1}, seed++, dt)});
    compare_op("unsqueeze/squeeze", [](auto& v) { return squeeze(unsqueeze(v[0], 2), 2); }, {x});
  }
  // Shape ops move any dtype bit for bit.
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, -2, 3, 4, 5, 6}, {2, 3});
  CHECK(same_values(transpose(labels.to(Device::cuda), 0, 1).to(Device::cpu), transpose(labels, 0, 1)));
  Tensor bytes = rnd({2, 3}, 910, DType::f64, 0, 255).to(DType::u8);
  CHECK(same_values(concat({bytes.to(Device::cuda), bytes.to(Device::cuda)}, 0).to(Device::cpu), concat({bytes, bytes}, 0)));
}

TEST_CASE("cuda: losses and normalisations") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 1000;
  for (DType dt : {DType::f32, DType::f64}) {
    double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (const Shape& s : {Shape{4, 10}, Shape{3, 300}, Shape{1, 1}}) {
      compare_op("log_softmax", [](auto& v) { return log_softmax(v[0], 1); }, {leaf(s, seed++, dt, -4, 4)}, tol, tol);
      compare_op("softmax dim 0", [](auto& v) { return softmax(v[0], 0); }, {leaf(s, seed++, dt, -4, 4)}, tol, tol);
    }
    Tensor labels = Tensor::from_vector(std::vector<int64_t>{3, 0, 9, 9, 5}, {5});
    compare_op("cross_entropy", [](auto& v) { return cross_entropy(v[0], v[1]); }, {leaf({5, 10}, seed++, dt, -3, 3), labels}, tol, tol);
    compare_op("mse_loss", [](auto& v) { return mse_loss(v[0], v[1]); }, {leaf({4, 6}, seed++, dt), leaf({4, 6}, seed++, dt)}, tol, tol);
    compare_op("l2_normalize", [](auto& v) { return l2_normalize(v[0], 1); }, {leaf({5, 8}, seed++, dt)}, tol, tol);
    compare_op("cosine_similarity", [](auto& v) { return cosine_similarity(v[0], v[1], 1); }, {leaf({5, 8}, seed++, dt), leaf({5, 8}, seed++, dt)},
               tol, tol);
  }
}

TEST_CASE("cuda: image ops (window resize, flips) and colour augmentations") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
  uint64_t seed = 1100;
  for (DType dt : {DType::f32, DType::f64}) {
    double tol = dt == DType::f32 ? 1e-5 : 1e-12;
    Tensor boxes = Tensor::from_vector(std::vector<double>{0, 0, 8, 8, 1, 2, 5, 6, 3, 0, 4, 1}, {3, 4}, DType::f64);
    for (const auto& size : std::vector<std::pair<int64_t, int64_t>>{{8, 8}, {5, 11}, {1, 3}})
      compare_op("resize_window", [oh = size.first, ow = size.second](auto& v) { return resize_window(v[0], v[1], oh, ow); },
                 {leaf({3, 2, 8, 8}, seed++, dt, 0, 1), boxes}, tol, tol);
    Tensor flags = Tensor::from_vector(std::vector<int64_t>{1, 0, 1}, {3});
    compare_op("flip_horizontal", [](auto& v) { return flip_horizontal(v[0], v[1]); }, {leaf({3, 2, 4, 5}, seed++, dt, 0, 1), flags}, tol, tol);
    Tensor img = leaf({3, 3, 5, 6}, seed++, dt, 0.0, 1.0);
    compare_op("rgb_to_grayscale", [](auto& v) { return augment::rgb_to_grayscale(v[0]); }, {img}, tol, tol);
    compare_op("adjust_hue", [](auto& v) { return augment::adjust_hue(v[0], {0.2, 0.0, -0.45}); }, {img}, dt == DType::f32 ? 1e-4 : 1e-10, 1e-4);
    compare_op("adjust_saturation", [](auto& v) { return augment::adjust_saturation(v[0], {0.3, 1.0, 1.7}); }, {img}, tol, tol);
    compare_op("adjust_contrast", [](auto& v) { return augment::adjust_contrast(v[0], {0.3, 1.0, 1.7}); }, {img}, tol, tol);
  }
  // The bilinear backward gathers in the CPU's scatter order: equal to rounding (the host may
  // fuse multiply-adds), and bitwise the same from one run to the next.
  Tensor x = leaf({2, 1, 6, 6}, 1150, DType::f64);
  Tensor boxes = Tensor::from_vector(std::vector<double>{1, 1, 4, 5, 0, 0, 6, 6}, {2, 4}, DType::f64);
  Tensor w = rnd({2, 1, 9, 7}, 1151, DType::f64);
  Tensor g_cpu = autograd::grad(sum(mul(resize_window(x, boxes, 9, 7), w)), {x})[0];
  Tensor xg = to_cuda(x);
  auto gpu_grad = [&] {
    return autograd::grad(sum(mul(resize_window(xg, boxes.to(Device::cuda), 9, 7), w.to(Device::cuda))), {xg})[0];
  };
  Tensor g_gpu = gpu_grad();
  check_close(g_gpu, g_cpu, 1e-14, 1e-13, "resize_window backward");
  CHECK(same_values(g_gpu.to(Device::cpu), gpu_grad().to(Device::cpu)));
}

TEST_CASE("cuda: batched USVT matches the LAPACK reference") {
  SKIP_UNLESS(cuda_available(), kNoGpu);
#ifdef CPOISON_CUDA
  uint64_t seed = 1200;
  for (const auto& mrc : std::vector<std::array<int64_t, 3>>{{5, 8, 8}, {3, 32, 20}, {2, 40, 36}})
    for (DType dt : {DType::f32, DType::f64}) {
      const int64_t M = mrc[0], R = mrc[1], C = mrc[2];
      Tensor x = rnd({M, R, C}, seed++, dt, 0.0, 1.0);
      Generator mask_gen(seed++);
      Tensor mask = bernoulli({M, R, C}, 0.8, mask_gen, dt);
      for (double threshold : {0.0, 1.0}) {
        Tensor ref = cpu::singular_value_threshold(x, mask, 4, threshold, 0.8);
        Tensor got = cuda::singular_value_threshold(x.to(Device::cuda), mask.to(Device::cuda), 4, threshold, 0.8);
        check_close(got, ref, dt == DType::f32 ? 1e-5 : 1e-9, 1e-6, "usvt " + std::to_string(R) + "x" + std::to_string(C));
      }
    }
#endif
}

TEST_CASE("cuda: supports() reports the CUDA backend truthfully") {
  CHECK(supports("conv2d", Device::cpu));
  CHECK(supports("singular_value_threshold", Device::cuda) == cuda_available());
  if (!cuda_available()) CHECK_THROWS_AS(Tensor::zeros({2}, DType::f32, Device::cuda), Error);
}
