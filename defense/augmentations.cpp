// Noise, smoothing and Cutout from engine ops (so they run and differentiate on any device).
// Layout: x [N, C, H, W].
#include "defense/augmentations.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/elementwise.h"
#include "engine/ops/nn.h"

namespace cpoison::defense {

namespace {

void check_images(const Tensor& x, const char* where) {
  CP_CHECK(x.defined() && x.dim() == 4 && is_floating(x.dtype()), where, "images must be float [N, C, H, W], got ",
           x.defined() ? x.describe() : std::string("an undefined tensor"));
}

// The index that reflect padding reads for position i of an axis of n pixels (any i).
int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  i = ((i % period) + period) % period;
  return i < n ? i : period - i;
}

// The n x n matrix B of a 1-d "same" convolution with reflect padding: (B v)[i] =
// Σ_t g[t] v[reflect(i + t - r)], r = (k - 1) / 2. Returned as Bᵀ when transposed.
Tensor blur_matrix(const std::vector<double>& g, int64_t n, bool transposed, DType dtype, Device device) {
  const auto k = (int64_t)g.size(), r = (k - 1) / 2;
  std::vector<double> b((size_t)(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < k; ++t) {
      int64_t j = reflect_index(i + t - r, n);
      (transposed ? b[j * n + i] : b[i * n + j]) += g[t];
    }
  return Tensor::from_vector(b, {n, n}, dtype, device);
}

}  // namespace

// ---------------------------------------------------------------- noise

void NoiseOptions::validate() const {
  CP_CHECK(std::isfinite(std) && std >= 0 && std <= 1, "noise", "std = ", std,
           ": the noise standard deviation must be in [0, 1] (pixel units)");
}

Tensor gaussian_noise(const Tensor& x, const NoiseOptions& opt, Generator& gen) {
  opt.validate();
  check_images(x, "noise");
  Tensor out = add(x, normal(x.shape(), 0.0, opt.std, gen, x.dtype(), x.device()));
  return opt.clip ? clamp(out, 0.0, 1.0) : out;
}

// ---------------------------------------------------------------- smoothing

double SmoothOptions::resolved_sigma() const {
  return sigma > 0 ? sigma : 0.3 * ((double)(kernel - 1) * 0.5 - 1.0) + 0.8;
}

void SmoothOptions::validate() const {
  CP_CHECK(kernel >= 1 && kernel % 2 == 1, "smooth", "k = ", kernel, ": the kernel size must be odd and >= 1");
  CP_CHECK(std::isfinite(sigma), "smooth", "sigma = ", sigma, " must be finite (<= 0: the default)");
  CP_CHECK(resolved_sigma() > 0, "smooth", "sigma = ", resolved_sigma(), " must be > 0");
}

std::vector<double> gaussian_kernel1d(int64_t kernel, double sigma) {
  SmoothOptions o{kernel, sigma};
  o.validate();
  const double s = o.resolved_sigma(), half = (double)(kernel - 1) * 0.5;
  std::vector<double> g((size_t)kernel);
  double total = 0;
  for (int64_t t = 0; t < kernel; ++t) {
    double d = ((double)t - half) / s;
    g[t] = std::exp(-0.5 * d * d);
    total += g[t];
  }
  for (double& v : g) v /= total;
  return g;
}

Tensor gaussian_smooth(const Tensor& x, const SmoothOptions& opt) {
  opt.validate();
  check_images(x, "smooth");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (x.numel() == 0 || opt.kernel == 1) return x.clone();
  // Blurring is linear and separable: along W it is X Bwᵀ, along H it is Bh X, per plane. The
  // reflect padding is folded into the two small matrices, so this is two GEMMs on any device.
  const std::vector<double> g = gaussian_kernel1d(opt.kernel, opt.sigma);
  Tensor along_w = matmul(x.contiguous().reshape({N * C * H, W}), blur_matrix(g, W, true, x.dtype(), x.device()));
  Tensor along_h = matmul(blur_matrix(g, H, false, x.dtype(), x.device()), along_w.reshape({N * C, H, W}));
  return along_h.reshape({N, C, H, W});
}

// ---------------------------------------------------------------- cutout

void CutoutOptions::validate() const {
  CP_CHECK(size >= 0 && size <= 65536, "cutout", "size = ", size, ": the hole side must be in [0, 65536] (0 cuts nothing)");
}

std::vector<CutoutBox> draw_cutout_boxes(int64_t n, int64_t h, int64_t w, const CutoutOptions& opt, Generator& gen) {
  opt.validate();
  CP_CHECK(n >= 0 && h >= 1 && w >= 1, "cutout", "bad image batch size n ", n, ", h ", h, ", w ", w);
  std::vector<CutoutBox> boxes((size_t)n);
  for (auto& b : boxes) {
    const int64_t cy = gen.randint(0, h), cx = gen.randint(0, w);
    const int64_t top = cy - opt.size / 2, left = cx - opt.size / 2;
    b.top = std::clamp<int64_t>(top, 0, h);
    b.bottom = std::clamp<int64_t>(top + opt.size, 0, h);
    b.left = std::clamp<int64_t>(left, 0, w);
    b.right = std::clamp<int64_t>(left + opt.size, 0, w);
  }
  return boxes;
}

Tensor apply_cutout(const Tensor& x, const std::vector<CutoutBox>& boxes) {
  check_images(x, "cutout");
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  CP_CHECK((int64_t)boxes.size() == N, "cutout", boxes.size(), " boxes for ", N, " images ", x.describe());
  std::vector<double> keep((size_t)(N * H * W), 1.0);
  for (int64_t n = 0; n < N; ++n) {
    const CutoutBox& b = boxes[n];
    CP_CHECK(0 <= b.top && b.top <= b.bottom && b.bottom <= H && 0 <= b.left && b.left <= b.right && b.right <= W,
             "cutout", "box ", n, " (rows ", b.top, "..", b.bottom, ", columns ", b.left, "..", b.right,
             ") is not inside a ", H, "x", W, " image");
    for (int64_t r = b.top; r < b.bottom; ++r)
      for (int64_t c = b.left; c < b.right; ++c) keep[(n * H + r) * W + c] = 0.0;
  }
  return mul(x, Tensor::from_vector(keep, {N, 1, H, W}, x.dtype(), x.device()));
}

Tensor cutout(const Tensor& x, const CutoutOptions& opt, Generator& gen) {
  check_images(x, "cutout");
  return apply_cutout(x, draw_cutout_boxes(x.size(0), x.size(2), x.size(3), opt, gen));
}

}  // namespace cpoison::defense
