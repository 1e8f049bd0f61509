// Matrix completion by USVT: option checks, the image <-> matrix layouts, mask drawing, and the
// the batched singular-value thresholding (engine/ops/linalg.h). Layout: x [N, C, H, W].
#include "defense/usvt.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops/linalg.h"
#include "engine/ops/shape.h"

namespace cpoison::defense {

const char* usvt_mode_name(UsvtMode m) { return m == UsvtMode::channel ? "channel" : "stacked"; }

void UsvtOptions::validate() const {
  const char* where = "usvt";
  CP_CHECK(std::isfinite(p) && p >= 0 && p < 1, where, "p = ", p, ": the drop probability must be in [0, 1)");
  CP_CHECK(std::isfinite(keep) && keep > 0 && keep <= 1, where, "keep = ", keep,
           ": the kept fraction of singular values must be in (0, 1]");
  CP_CHECK(std::isfinite(threshold_value) && threshold_value >= 0, where, "threshold = ", threshold_value,
           ": an absolute threshold must be >= 0");
  CP_CHECK(std::isfinite(eta) && eta > 0, where, "eta = ", eta, ": Chatterjee's eta must be > 0");
}

int64_t usvt_max_rank(const UsvtOptions& opt, int64_t rows, int64_t cols) {
  const int64_t k = std::min(rows, cols);
  // The small epsilon keeps products like 0.29 * 100 = 28.999999999999996 at their intended 29.
  const auto r = (int64_t)std::floor(opt.keep * (double)k + 1e-9);
  return std::clamp<int64_t>(r, 1, std::max<int64_t>(k, 1));
}

double usvt_threshold(const UsvtOptions& opt, int64_t rows, int64_t cols) {
  switch (opt.threshold) {
    case UsvtThreshold::none: return 0.0;
    case UsvtThreshold::absolute: return opt.threshold_value;
    case UsvtThreshold::chatterjee: return (2.0 + opt.eta) * std::sqrt((double)std::max(rows, cols) * (1.0 - opt.p));
  }
  return 0.0;
}

Tensor usvt_complete(const Tensor& matrices, const Tensor& mask, int64_t max_rank, double threshold, double q) {
  return singular_value_threshold(matrices, mask, max_rank, threshold, q);
}

Tensor usvt_images(const Tensor& x, const Tensor& observed, const UsvtOptions& opt) {
  const char* where = "usvt";
  opt.validate();
  CP_CHECK(x.defined() && x.dim() == 4 && is_floating(x.dtype()), where, "images must be float [N, C, H, W], got ",
           x.defined() ? x.describe() : std::string("an undefined tensor"));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  CP_CHECK(observed.defined() && observed.shape() == Shape({N, H, W}), where, "observed-pixel mask must be [", N,
           ", ", H, ", ", W, "] for images ", x.describe(), ", got ",
           observed.defined() ? observed.describe() : std::string("an undefined tensor"));
  CP_CHECK(observed.dtype() == x.dtype() && observed.device() == x.device(), where, "mask ", observed.describe(),
           " must match the images' dtype and device (", x.describe(), ")");
  if (x.numel() == 0) return x.detach().clone();
  autograd::NoGradGuard no_grad;
  const Tensor images = x.detach();
  const Tensor pixel_mask = observed.detach().reshape({N, H, 1, W});
  const double q = 1.0 - opt.p;
  if (opt.mode == UsvtMode::channel) {
    // [N, C, H, W] is already N*C row-major H x W matrices.
    Tensor mask = broadcast_to(pixel_mask.reshape({N, 1, H, W}), {N, C, H, W}).reshape({N * C, H, W});
    Tensor out = usvt_complete(images.contiguous().reshape({N * C, H, W}), mask, usvt_max_rank(opt, H, W),
                               usvt_threshold(opt, H, W), q);
    return out.reshape({N, C, H, W});
  }
  // Stacked: row h of image n is [x[n,0,h,:], x[n,1,h,:], ...], i.e. [N, H, C, W] flattened.
  Tensor rows = permute(images, {0, 2, 1, 3}).reshape({N, H, C * W});
  Tensor mask = broadcast_to(pixel_mask, {N, H, C, W}).reshape({N, H, C * W});
  Tensor out = usvt_complete(rows, mask, usvt_max_rank(opt, H, C * W), usvt_threshold(opt, H, C * W), q);
  return permute(out.reshape({N, H, C, W}), {0, 2, 1, 3});
}

Tensor draw_pixel_mask(int64_t n, int64_t h, int64_t w, double p, Generator& gen, DType dtype, Device device) {
  CP_CHECK(n >= 0 && h >= 0 && w >= 0, "usvt", "bad mask size [", n, ", ", h, ", ", w, "]");
  CP_CHECK(std::isfinite(p) && p >= 0 && p < 1, "usvt", "p = ", p, ": the drop probability must be in [0, 1)");
  return bernoulli({n, h, w}, 1.0 - p, gen, dtype, device);
}

Tensor matrix_completion(const Tensor& x, const UsvtOptions& opt, Generator& gen) {
  opt.validate();
  CP_CHECK(x.defined() && x.dim() == 4 && is_floating(x.dtype()), "usvt", "images must be float [N, C, H, W], got ",
           x.defined() ? x.describe() : std::string("an undefined tensor"));
  Tensor observed = draw_pixel_mask(x.size(0), x.size(2), x.size(3), opt.p, gen, x.dtype(), x.device());
  return usvt_images(x, observed, opt);
}

}  // namespace cpoison::defense
