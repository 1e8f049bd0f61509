// Image resampling ops (NCHW: N images, C channels, H rows, W columns). Boxes and flags are small
// per-image tables: they are checked on the host and handed to the kernels on x's device.
#include "engine/ops/image.h"

#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/image.h"

namespace cpoison {

namespace {
void check_images(const Tensor& x, const char* op) {
  CP_CHECK(x.defined(), op, "undefined input");
  CP_CHECK(x.dim() == 4, op, "expects images [N, C, H, W], got ", x.describe());
  CP_CHECK(is_floating(x.dtype()), op, "expects a float tensor (f32 or f64), got ", x.describe());
}
}  // namespace

Tensor resize_window(const Tensor& x, const Tensor& boxes, int64_t out_h, int64_t out_w) {
  const char* op = "resize_window";
  check_images(x, op);
  CP_CHECK(boxes.defined(), op, "undefined boxes");
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  CP_CHECK(boxes.dim() == 2 && boxes.size(0) == N && boxes.size(1) == 4, op, "boxes must be [N, 4] = [", N,
           ", 4] (top, left, height, width) for images ", x.describe(), ", got ", boxes.describe());
  CP_CHECK(is_floating(boxes.dtype()), op, "boxes must be f32 or f64, got ", boxes.describe());
  CP_CHECK(out_h >= 1 && out_w >= 1, op, "output size must be positive, got ", out_h, "x", out_w);
  std::vector<double> b = boxes.to_vector<double>();
  for (int64_t n = 0; n < N; ++n) {
    double top = b[4 * n], left = b[4 * n + 1], h = b[4 * n + 2], w = b[4 * n + 3];
    bool finite = std::isfinite(top) && std::isfinite(left) && std::isfinite(h) && std::isfinite(w);
    CP_CHECK(finite && h >= 1 && w >= 1 && top >= 0 && left >= 0 && top + h <= (double)H && left + w <= (double)W, op,
             "box ", n, " (top ", top, ", left ", left, ", height ", h, ", width ", w, ") is not a window of at least 1x1 inside the ",
             H, "x", W, " image");
  }
  Tensor boxes64 = Tensor::from_vector(b, {N, 4}, DType::f64, x.device());
  Tensor out = CP_BACKEND(x.device(), resize_window_bilinear)(x.detach().contiguous(), boxes64, out_h, out_w);
  if (autograd::needs_record({&x})) {
    autograd::record(op, {x}, out, [boxes64, H, W](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(g.device(), resize_window_bilinear_backward)(g.contiguous(), boxes64, H, W)};
    });
  }
  return out;
}

Tensor flip_horizontal(const Tensor& x, const Tensor& flags) {
  const char* op = "flip_horizontal";
  check_images(x, op);
  CP_CHECK(flags.defined(), op, "undefined flags");
  CP_CHECK(flags.dim() == 1 && flags.size(0) == x.size(0), op, "flags must be [N] = [", x.size(0), "] for images ",
           x.describe(), ", got ", flags.describe());
  std::vector<double> f = flags.to_vector<double>();
  std::vector<uint8_t> bits(f.size());
  for (size_t i = 0; i < f.size(); ++i) bits[i] = f[i] != 0 ? 1 : 0;
  Tensor flags8 = Tensor::from_vector(bits, {(int64_t)bits.size()}, DType::u8, x.device());
  Tensor out = CP_BACKEND(x.device(), flip_w_where)(x.detach().contiguous(), flags8);
  if (autograd::needs_record({&x})) {
    // Mirroring is its own adjoint.
    autograd::record(op, {x}, out, [flags8](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(g.device(), flip_w_where)(g.contiguous(), flags8)};
    });
  }
  return out;
}

namespace {
void check_rgb(const Tensor& x, const char* op) {
  check_images(x, op);
  CP_CHECK(x.size(1) == 3, op, "expects RGB images [N, 3, H, W], got ", x.describe());
}
}  // namespace

Tensor rgb_to_gray(const Tensor& x) {
  const char* op = "rgb_to_gray";
  check_rgb(x, op);
  Tensor out = CP_BACKEND(x.device(), rgb_to_gray)(x.detach().contiguous());
  if (autograd::needs_record({&x}))
    autograd::record(op, {x}, out, [](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(g.device(), rgb_to_gray_backward)(g.contiguous())};
    });
  return out;
}

Tensor hue_shift(const Tensor& x, const Tensor& shifts) {
  const char* op = "hue_shift";
  check_rgb(x, op);
  CP_CHECK(shifts.defined() && shifts.dim() == 1 && shifts.size(0) == x.size(0) && shifts.dtype() == x.dtype() &&
               shifts.device() == x.device(),
           op, "shifts must be [N] = [", x.size(0), "] of the images' dtype and device, got ", shifts.describe());
  Tensor s = shifts.detach().contiguous();
  Tensor out = CP_BACKEND(x.device(), hue_shift)(x.detach().contiguous(), s);
  if (autograd::needs_record({&x})) {
    Tensor saved = x.detach().contiguous();
    autograd::record(op, {x}, out, [saved, s](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(g.device(), hue_shift_backward)(g.contiguous(), saved, s)};
    });
  }
  return out;
}

}  // namespace cpoison
