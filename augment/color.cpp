// Colour ops and normalisation (NCHW: N images, C channels, H rows, W columns). Brightness,
// contrast, saturation and grayscale are composed from differentiable engine ops with per-image
// [N, 1, 1, 1] factors; gray conversion and hue rotation have their own kernels.
#include <cmath>

#include "augment/augment.h"
#include "engine/ops/image.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"

namespace cpoison::augment {

namespace {

void check_images(const Tensor& x, const char* op) {
  CP_CHECK(x.defined(), op, "undefined input");
  CP_CHECK(x.dim() == 4, op, "expects images [N, C, H, W], got ", x.describe());
  CP_CHECK(is_floating(x.dtype()), op, "expects a float tensor (f32 or f64), got ", x.describe());
  CP_CHECK(x.size(1) == 1 || x.size(1) == 3, op, "expects 1 or 3 channels, got ", x.describe());
}

// Per-image values as an [N, 1, 1, 1] tensor of x's dtype on x's device.
Tensor per_image(const Tensor& x, const std::vector<double>& values, const char* op, const char* what, double lo, double hi) {
  CP_CHECK((int64_t)values.size() == x.size(0), op, "needs one ", what, " per image: ", x.size(0), " for ", x.describe(), ", got ",
           values.size());
  for (size_t i = 0; i < values.size(); ++i)
    CP_CHECK(std::isfinite(values[i]) && values[i] >= lo && values[i] <= hi, op, what, " ", i, " is ", values[i], ", outside [", lo, ", ",
             hi, "]");
  return Tensor::from_vector(values, {x.size(0), 1, 1, 1}, x.dtype(), x.device());
}

// f x + (1 - f) other, clamped to [0, 1]: torchvision's _blend.
Tensor blend(const Tensor& x, const Tensor& other, const Tensor& f) {
  return clamp(add(mul(f, x), mul(rsub_scalar(f, 1.0), other)), 0.0, 1.0);
}

}  // namespace

Tensor rgb_to_grayscale(const Tensor& x) {
  const char* op = "rgb_to_grayscale";
  check_images(x, op);
  if (x.size(1) == 1) return x;
  return rgb_to_gray(x);
}

Tensor adjust_brightness(const Tensor& x, const std::vector<double>& factors) {
  const char* op = "adjust_brightness";
  check_images(x, op);
  return clamp(mul(x, per_image(x, factors, op, "factor", 0.0, INFINITY)), 0.0, 1.0);
}

Tensor adjust_contrast(const Tensor& x, const std::vector<double>& factors) {
  const char* op = "adjust_contrast";
  check_images(x, op);
  Tensor f = per_image(x, factors, op, "factor", 0.0, INFINITY);
  return blend(x, mean(rgb_to_grayscale(x), {1, 2, 3}, true), f);
}

Tensor adjust_saturation(const Tensor& x, const std::vector<double>& factors) {
  const char* op = "adjust_saturation";
  check_images(x, op);
  Tensor f = per_image(x, factors, op, "factor", 0.0, INFINITY);
  if (x.size(1) == 1) return x;
  return blend(x, rgb_to_grayscale(x), f);
}

Tensor adjust_hue(const Tensor& x, const std::vector<double>& shifts) {
  const char* op = "adjust_hue";
  check_images(x, op);
  Tensor s = per_image(x, shifts, op, "hue shift", -0.5, 0.5).reshape({x.size(0)});
  if (x.size(1) == 1) return x;
  return hue_shift(x, s);
}

Tensor grayscale_where(const Tensor& x, const std::vector<uint8_t>& flags) {
  const char* op = "grayscale_where";
  check_images(x, op);
  CP_CHECK((int64_t)flags.size() == x.size(0), op, "needs one flag per image: ", x.size(0), " for ", x.describe(), ", got ",
           flags.size());
  if (x.size(1) == 1) return x;
  std::vector<double> m(flags.size());
  for (size_t i = 0; i < flags.size(); ++i) m[i] = flags[i] ? 1.0 : 0.0;
  Tensor mt = Tensor::from_vector(m, {x.size(0), 1, 1, 1}, x.dtype(), x.device());
  // m is 0 or 1, so this selects exactly (gray broadcasts over the three channels).
  return add(mul(mt, rgb_to_grayscale(x)), mul(rsub_scalar(mt, 1.0), x));
}

Tensor normalize(const Tensor& x, const std::vector<double>& mean_values, const std::vector<double>& std_values) {
  const char* op = "normalize";
  CP_CHECK(x.defined(), op, "undefined input");
  CP_CHECK(x.dim() == 4 && is_floating(x.dtype()), op, "expects float images [N, C, H, W], got ", x.describe());
  const int64_t C = x.size(1);
  CP_CHECK((int64_t)mean_values.size() == C && (int64_t)std_values.size() == C, op, "needs ", C, " means and stds for ", x.describe(),
           ", got ", mean_values.size(), " and ", std_values.size());
  for (int64_t c = 0; c < C; ++c)
    CP_CHECK(std::isfinite(mean_values[c]) && std::isfinite(std_values[c]) && std_values[c] > 0, op, "channel ", c, ": mean ",
             mean_values[c], ", std ", std_values[c], " (std must be positive)");
  Tensor m = Tensor::from_vector(mean_values, {1, C, 1, 1}, x.dtype(), x.device());
  Tensor s = Tensor::from_vector(std_values, {1, C, 1, 1}, x.dtype(), x.device());
  return div(sub(x, m), s);
}

}  // namespace cpoison::augment
