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

// One output coordinate's two source taps and the weight of the second one.
struct Tap {
  int64_t lo, hi;
  double frac;
};

// align_corners = true: output index i of `out` samples start + i*(extent-1)/(out-1).
std::vector<Tap> window_taps(double start, double extent, int64_t out, int64_t in) {
  std::vector<Tap> taps(out);
  double step = out > 1 ? (extent - 1.0) / (double)(out - 1) : 0.0;
  for (int64_t i = 0; i < out; ++i) {
    double src = start + (double)i * step;
    int64_t lo = std::clamp<int64_t>((int64_t)std::floor(src), 0, in - 1);
    int64_t hi = std::min<int64_t>(lo + 1, in - 1);
    taps[i] = Tap{lo, hi, std::clamp(src - (double)lo, 0.0, 1.0)};
  }
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
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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

namespace {

// torchvision's _rgb2hsv / hue rotation / _hsv2rgb for one pixel, written so that the backward
// pass below can replay it. Ties of max/min go to the first channel (as torch.max(dim) does).
template <class T>
struct HuePixel {
  T rgb[3];
  int imax, imin;
  T mx, mn, cr;
  bool gray;   // max == min: s = 0 and h = 0, the divisors become 1
  T s, h0, h;  // h0: the raw hue in (-1, 5]; h: shifted hue in [0, 1)
  int sector;
  T f, p_raw, q_raw, t_raw;
  T out_raw[3];  // before the final clamp

  void forward(T r, T g, T b, T shift) {
    rgb[0] = r, rgb[1] = g, rgb[2] = b;
    imax = 0, imin = 0;
    for (int k = 1; k < 3; ++k) {
      if (rgb[k] > rgb[imax]) imax = k;
      if (rgb[k] < rgb[imin]) imin = k;
    }
    mx = rgb[imax], mn = rgb[imin], cr = mx - mn;
    gray = mx == mn;
    T sden = gray ? T(1) : mx, cden = gray ? T(1) : cr;
    s = cr / sden;
    T rc = (mx - r) / cden, gc = (mx - g) / cden, bc = (mx - b) / cden;
    if (mx == r) h0 = bc - gc;
    else if (mx == g) h0 = T(2) + rc - bc;
    else h0 = T(4) + gc - rc;
    T h1 = std::fmod(h0 / T(6) + T(1), T(1));
    T hs = h1 + shift;
    h = hs - std::floor(hs);  // Python's % 1.0
    T i = std::floor(h * T(6));
    f = h * T(6) - i;
    sector = ((int)i % 6 + 6) % 6;
    T v = mx;
    p_raw = v * (T(1) - s);
    q_raw = v * (T(1) - s * f);
    t_raw = v * (T(1) - s * (T(1) - f));
    T p = std::clamp(p_raw, T(0), T(1)), q = std::clamp(q_raw, T(0), T(1)), t = std::clamp(t_raw, T(0), T(1));
    const T table[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int k = 0; k < 3; ++k) out_raw[k] = table[sector][k];
  }

  // Gradient of the clamped outputs (given g_out) w.r.t. r, g, b, into g_in.
  void backward(const T g_out[3], T g_in[3]) const {
    // Which of v, p, q, t (0..3) each output channel copies, per sector.
    static const int source[6][3] = {{0, 3, 1}, {2, 0, 1}, {1, 0, 3}, {1, 2, 0}, {3, 1, 0}, {0, 1, 2}};
    T gvpqt[4] = {0, 0, 0, 0};
    for (int k = 0; k < 3; ++k)
      if (out_raw[k] >= T(0) && out_raw[k] <= T(1)) gvpqt[source[sector][k]] += g_out[k];
    T v = mx, gv = gvpqt[0], gs = 0, gf = 0;
    auto inside = [](T a) { return a >= T(0) && a <= T(1); };
    if (inside(p_raw)) gv += gvpqt[1] * (T(1) - s), gs -= gvpqt[1] * v;
    if (inside(q_raw)) gv += gvpqt[2] * (T(1) - s * f), gs -= gvpqt[2] * v * f, gf -= gvpqt[2] * v * s;
    if (inside(t_raw)) gv += gvpqt[3] * (T(1) - s * (T(1) - f)), gs -= gvpqt[3] * v * (T(1) - f), gf += gvpqt[3] * v * s;
    // f = 6h - floor(6h); h = (fmod(h0/6 + 1, 1) + shift) mod 1: dh0 = df (6 / 6).
    T gh0 = gf;
    T cden = gray ? T(1) : cr, sden = gray ? T(1) : mx;
    T grc = 0, ggc = 0, gbc = 0;
    if (mx == rgb[0]) gbc += gh0, ggc -= gh0;
    else if (mx == rgb[1]) grc += gh0, gbc -= gh0;
    else ggc += gh0, grc -= gh0;
    T gmx = gv, gcr = 0;
    g_in[0] = g_in[1] = g_in[2] = 0;
    const T gc3[3] = {grc, ggc, gbc};
    T gcden = 0;
    for (int k = 0; k < 3; ++k) {  // xc = (mx - x_k) / cden
      gmx += gc3[k] / cden;
      g_in[k] -= gc3[k] / cden;
      gcden -= gc3[k] * (mx - rgb[k]) / (cden * cden);
    }
    if (!gray) gcr += gcden;
    gcr += gs / sden;  // s = cr / sden
    if (!gray) gmx -= gs * cr / (sden * sden);
    gmx += gcr;  // cr = mx - mn
    T gmn = -gcr;
    g_in[imax] += gmx;
    g_in[imin] += gmn;
  }
};

}  // namespace

Tensor hue_shift(const Tensor& x, const Tensor& shifts) {
  const int64_t N = x.size(0), HW = x.size(2) * x.size(3);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cpu);
  return float_dispatch(x.dtype(), "adjust_hue", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t* ps = shifts.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* src = px + n * 3 * HW;
      scalar_t* dst = po + n * 3 * HW;
      if (ps[n] == 0) {
        for (int64_t i = 0; i < 3 * HW; ++i) dst[i] = std::clamp(src[i], scalar_t(0), scalar_t(1));
        continue;
      }
      HuePixel<scalar_t> px1;
      for (int64_t i = 0; i < HW; ++i) {
        px1.forward(src[i], src[HW + i], src[2 * HW + i], ps[n]);
        for (int k = 0; k < 3; ++k) dst[k * HW + i] = std::clamp(px1.out_raw[k], scalar_t(0), scalar_t(1));
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
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* src = px + n * 3 * HW;
      const scalar_t* gsrc = pg + n * 3 * HW;
      scalar_t* dst = pgx + n * 3 * HW;
      if (ps[n] == 0) {
        for (int64_t i = 0; i < 3 * HW; ++i) dst[i] = (src[i] >= 0 && src[i] <= 1) ? gsrc[i] : scalar_t(0);
        continue;
      }
      HuePixel<scalar_t> px1;
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
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int k = 0; k < 3; ++k)
        for (int64_t i = 0; i < HW; ++i) po[(n * 3 + k) * HW + i] = (scalar_t)kGrayWeights[k] * pg[n * HW + i];
    return gx;
  });
}

}  // namespace cpoison::cpu
