// CPU reference image kernels (NCHW: N images, C channels, H rows, W columns).
// OpenMP runs over independent output planes or images; every sum is taken in a fixed order, so
// results do not depend on the thread count.
#include "engine/backend/image.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/backend/dispatch.h"

namespace cpoison::cpu {

namespace {

// Below this many elements a kernel runs on one thread: a parallel region costs more than it saves.
constexpr int64_t kParallelWork = 1 << 15;

using image_math::Tap;

std::vector<Tap> window_taps(double start, double extent, int64_t out, int64_t in) {
  std::vector<Tap> taps(out);
  for (int64_t i = 0; i < out; ++i) taps[i] = image_math::window_tap(start, extent, out, in, i);
  return taps;
}

}  // namespace

Tensor resize_window_bilinear(const Tensor& x, const Tensor& boxes, int64_t out_h, int64_t out_w) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = Tensor::empty({N, C, out_h, out_w}, x.dtype(), Device::cpu);
  const double* box = boxes.data<double>();
  return float_dispatch(x.dtype(), "resize_window", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
#pragma omp parallel for schedule(static) if (x.numel() + out.numel() > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const double* b = box + 4 * n;
      std::vector<Tap> rows = window_taps(b[0], b[2], out_h, H), cols = window_taps(b[1], b[3], out_w, W);
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* src = px + (n * C + c) * H * W;
        scalar_t* dst = po + (n * C + c) * out_h * out_w;
        for (int64_t i = 0; i < out_h; ++i) {
          const Tap& r = rows[i];
          scalar_t wy = (scalar_t)r.frac;
          for (int64_t j = 0; j < out_w; ++j) {
            const Tap& q = cols[j];
            scalar_t wx = (scalar_t)q.frac;
            scalar_t top = (1 - wx) * src[r.lo * W + q.lo] + wx * src[r.lo * W + q.hi];
            scalar_t bottom = (1 - wx) * src[r.hi * W + q.lo] + wx * src[r.hi * W + q.hi];
            dst[i * out_w + j] = (1 - wy) * top + wy * bottom;
          }
        }
      }
    }
    return out;
  });
}

Tensor resize_window_bilinear_backward(const Tensor& g, const Tensor& boxes, int64_t in_h, int64_t in_w) {
  const int64_t N = g.size(0), C = g.size(1), out_h = g.size(2), out_w = g.size(3);
  Tensor gx = Tensor::zeros({N, C, in_h, in_w}, g.dtype(), Device::cpu);
  const double* box = boxes.data<double>();
  return float_dispatch(g.dtype(), "resize_window backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pg = g.data<scalar_t>();
    scalar_t* pgx = gx.data<scalar_t>();
    // One image per thread; within it, output pixels scatter in raster order (fixed sums).
#pragma omp parallel for schedule(static) if (g.numel() + gx.numel() > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const double* b = box + 4 * n;
      std::vector<Tap> rows = window_taps(b[0], b[2], out_h, in_h), cols = window_taps(b[1], b[3], out_w, in_w);
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* src = pg + (n * C + c) * out_h * out_w;
        scalar_t* dst = pgx + (n * C + c) * in_h * in_w;
        for (int64_t i = 0; i < out_h; ++i) {
          const Tap& r = rows[i];
          scalar_t wy = (scalar_t)r.frac;
          for (int64_t j = 0; j < out_w; ++j) {
            const Tap& q = cols[j];
            scalar_t wx = (scalar_t)q.frac, v = src[i * out_w + j];
            dst[r.lo * in_w + q.lo] += (1 - wy) * (1 - wx) * v;
            dst[r.lo * in_w + q.hi] += (1 - wy) * wx * v;
            dst[r.hi * in_w + q.lo] += wy * (1 - wx) * v;
            dst[r.hi * in_w + q.hi] += wy * wx * v;
          }
        }
      }
    }
    return gx;
  });
}

Tensor flip_w_where(const Tensor& x, const Tensor& flags) {
  const int64_t N = x.size(0), rows = x.size(1) * x.size(2), W = x.size(3);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cpu);
  const uint8_t* f = flags.data<uint8_t>();
  return float_dispatch(x.dtype(), "flip_horizontal", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* src = px + (n * rows + r) * W;
        scalar_t* dst = po + (n * rows + r) * W;
        if (f[n])
          for (int64_t w = 0; w < W; ++w) dst[w] = src[W - 1 - w];
        else
          std::copy(src, src + W, dst);
      }
    }
    return out;
  });
}

Tensor hue_shift(const Tensor& x, const Tensor& shifts) {
  const int64_t N = x.size(0), HW = x.size(2) * x.size(3);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cpu);
  return float_dispatch(x.dtype(), "adjust_hue", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t* ps = shifts.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelWork / 16)
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* src = px + n * 3 * HW;
      scalar_t* dst = po + n * 3 * HW;
      if (ps[n] == 0) {
        for (int64_t i = 0; i < 3 * HW; ++i) dst[i] = std::clamp(src[i], scalar_t(0), scalar_t(1));
        continue;
      }
      image_math::HuePixel<scalar_t> px1;
      for (int64_t i = 0; i < HW; ++i) {
        px1.forward(src[i], src[HW + i], src[2 * HW + i], ps[n]);
        for (int k = 0; k < 3; ++k) dst[k * HW + i] = image_math::clamp01(px1.out_raw[k]);
      }
    }
    return out;
  });
}

Tensor hue_shift_backward(const Tensor& g, const Tensor& x, const Tensor& shifts) {
  const int64_t N = x.size(0), HW = x.size(2) * x.size(3);
  Tensor gx = Tensor::empty(x.shape(), x.dtype(), Device::cpu);
  return float_dispatch(x.dtype(), "adjust_hue backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t* pg = g.data<scalar_t>();
    const scalar_t* ps = shifts.data<scalar_t>();
    scalar_t* pgx = gx.data<scalar_t>();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelWork / 16)
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* src = px + n * 3 * HW;
      const scalar_t* gsrc = pg + n * 3 * HW;
      scalar_t* dst = pgx + n * 3 * HW;
      if (ps[n] == 0) {
        for (int64_t i = 0; i < 3 * HW; ++i) dst[i] = (src[i] >= 0 && src[i] <= 1) ? gsrc[i] : scalar_t(0);
        continue;
      }
      image_math::HuePixel<scalar_t> px1;
      for (int64_t i = 0; i < HW; ++i) {
        px1.forward(src[i], src[HW + i], src[2 * HW + i], ps[n]);
        const scalar_t g_out[3] = {gsrc[i], gsrc[HW + i], gsrc[2 * HW + i]};
        scalar_t g_in[3];
        px1.backward(g_out, g_in);
        for (int k = 0; k < 3; ++k) dst[k * HW + i] = g_in[k];
      }
    }
    return gx;
  });
}

namespace {
constexpr double kGrayWeights[3] = {0.299, 0.587, 0.114};
}

Tensor rgb_to_gray(const Tensor& x) {
  const int64_t N = x.size(0), HW = x.size(2) * x.size(3);
  Tensor out = Tensor::empty({N, 1, x.size(2), x.size(3)}, x.dtype(), Device::cpu);
  return float_dispatch(x.dtype(), "rgb_to_grayscale", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    const scalar_t wr = (scalar_t)kGrayWeights[0], wg = (scalar_t)kGrayWeights[1], wb = (scalar_t)kGrayWeights[2];
#pragma omp parallel for schedule(static) if (x.numel() > kParallelWork)
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* src = px + n * 3 * HW;
      for (int64_t i = 0; i < HW; ++i) po[n * HW + i] = wr * src[i] + wg * src[HW + i] + wb * src[2 * HW + i];
    }
    return out;
  });
}

Tensor rgb_to_gray_backward(const Tensor& g) {
  const int64_t N = g.size(0), HW = g.size(2) * g.size(3);
  Tensor gx = Tensor::empty({N, 3, g.size(2), g.size(3)}, g.dtype(), Device::cpu);
  return float_dispatch(g.dtype(), "rgb_to_grayscale backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* pg = g.data<scalar_t>();
    scalar_t* po = gx.data<scalar_t>();
#pragma omp parallel for schedule(static) if (gx.numel() > kParallelWork)
    for (int64_t n = 0; n < N; ++n)
      for (int k = 0; k < 3; ++k)
        for (int64_t i = 0; i < HW; ++i) po[(n * 3 + k) * HW + i] = (scalar_t)kGrayWeights[k] * pg[n * HW + i];
    return gx;
  });
}

}  // namespace cpoison::cpu
