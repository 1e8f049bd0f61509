// Image kernels on contiguous NCHW float tensors (N images, C channels, H rows, W columns).
// Every tensor argument is contiguous and on the same device as x; outputs are new contiguous
// tensors of x's dtype. The ops layer (engine/ops/image.cpp, augment/) checks shapes and ranges.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/tensor.h"

namespace cpoison {
#define CP_IMAGE_KERNELS                                                                              \
  /* x [N,C,H,W], boxes f64 [N,4] rows (top, left, height, width), window inside the image.       */ \
  /* -> [N,C,out_h,out_w]: bilinear, align_corners = true: output row i samples source row        */ \
  /* top + i*(height-1)/(out_h-1) (top itself when out_h == 1); columns alike.                    */ \
  Tensor resize_window_bilinear(const Tensor& x, const Tensor& boxes, int64_t out_h, int64_t out_w); \
  /* g [N,C,out_h,out_w] -> dL/dx [N,C,in_h,in_w]: each output pixel's gradient is added to its    */ \
  /* four source pixels, per (n,c) plane in output raster order (deterministic).                  */ \
  Tensor resize_window_bilinear_backward(const Tensor& g, const Tensor& boxes, int64_t in_h,        \
                                         int64_t in_w);                                              \
  /* x [N,C,H,W], flags u8 [N]: images whose flag is nonzero mirrored along W (self-adjoint, so    */ \
  /* it is also its own backward).                                                                 */ \
  Tensor flip_w_where(const Tensor& x, const Tensor& flags);                                         \
  /* x [N,3,H,W] RGB, shifts [N] of x's dtype (fractions of a turn): torchvision's adjust_hue      */ \
  /* (RGB->HSV, h = (h + shift) mod 1, HSV->RGB), output clamped to [0,1]. A shift of exactly 0    */ \
  /* returns clamp(x, 0, 1) (the function is the identity there).                                  */ \
  Tensor hue_shift(const Tensor& x, const Tensor& shifts);                                           \
  /* g [N,3,H,W] = dL/d hue_shift(x, shifts) -> dL/dx [N,3,H,W] (max/min ties: first channel).    */ \
  Tensor hue_shift_backward(const Tensor& g, const Tensor& x, const Tensor& shifts);                 \
  /* x [N,3,H,W] RGB -> [N,1,H,W] = 0.299 R + 0.587 G + 0.114 B.                                   */ \
  Tensor rgb_to_gray(const Tensor& x);                                                               \
  /* g [N,1,H,W] = dL/d rgb_to_gray(x) -> dL/dx [N,3,H,W] = g times each channel's weight.         */ \
  Tensor rgb_to_gray_backward(const Tensor& g);

namespace cpu { CP_IMAGE_KERNELS }
namespace cuda { CP_IMAGE_KERNELS }

// ---- Per-pixel math shared by the CPU and CUDA kernels (host and device), so that both
// backends evaluate the same formulas in the same order.
#if defined(__CUDACC__)
#define CP_IMAGE_HD __host__ __device__
#else
#define CP_IMAGE_HD
#endif

namespace image_math {

template <class T>
CP_IMAGE_HD inline T floor_of(T a) {
#if defined(__CUDA_ARCH__)
  return floor(a);
#else
  return std::floor(a);
#endif
}
template <class T>
CP_IMAGE_HD inline T clamp01(T a) { return a < T(0) ? T(0) : (a > T(1) ? T(1) : a); }
template <class T>
CP_IMAGE_HD inline bool inside01(T a) { return a >= T(0) && a <= T(1); }

// One output coordinate's two source taps and the weight of the second one (align_corners =
// true): output index i of `out` samples start + i*(extent-1)/(out-1) on an axis of `in` pixels.
struct Tap {
  int64_t lo, hi;
  double frac;
};
CP_IMAGE_HD inline Tap window_tap(double start, double extent, int64_t out, int64_t in, int64_t i) {
  double step = out > 1 ? (extent - 1.0) / (double)(out - 1) : 0.0;
  double src = start + (double)i * step;
  int64_t lo = (int64_t)floor_of(src);
  lo = lo < 0 ? 0 : (lo > in - 1 ? in - 1 : lo);
  int64_t hi = lo + 1 < in ? lo + 1 : in - 1;
  double frac = src - (double)lo;
  return Tap{lo, hi, frac < 0.0 ? 0.0 : (frac > 1.0 ? 1.0 : frac)};
}

// torchvision's _rgb2hsv, hue rotation and _hsv2rgb for one pixel, keeping what the backward
// pass needs. Ties of max/min go to the first channel (as torch.max(dim) does).
template <class T>
struct HuePixel {
  T rgb[3];
  int imax, imin;
  T mx, cr;
  bool gray;  // max == min: s = 0, the divisors become 1 (as in torchvision)
  T s, f;
  int sector;
  T p_raw, q_raw, t_raw;
  T out_raw[3];  // before the final clamp to [0, 1]

  CP_IMAGE_HD void forward(T r, T g, T b, T shift) {
    rgb[0] = r, rgb[1] = g, rgb[2] = b;
    imax = 0, imin = 0;
    for (int k = 1; k < 3; ++k) {
      if (rgb[k] > rgb[imax]) imax = k;
      if (rgb[k] < rgb[imin]) imin = k;
    }
    mx = rgb[imax], cr = mx - rgb[imin];
    gray = cr == T(0);
    T sden = gray ? T(1) : mx, cden = gray ? T(1) : cr;
    s = cr / sden;
    T rc = (mx - r) / cden, gc = (mx - g) / cden, bc = (mx - b) / cden;
    T h0;  // in [-1, 5]
    if (mx == r) h0 = bc - gc;
    else if (mx == g) h0 = T(2) + rc - bc;
    else h0 = T(4) + gc - rc;
    T a = h0 / T(6) + T(1);      // in [5/6, 11/6]: fmod(a, 1) = a - floor(a) exactly
    T hs = (a - floor_of(a)) + shift;
    T h = hs - floor_of(hs);     // Python's % 1.0
    T i = floor_of(h * T(6));
    f = h * T(6) - i;
    sector = (((int)i % 6) + 6) % 6;
    T v = mx;
    p_raw = v * (T(1) - s);
    q_raw = v * (T(1) - s * f);
    t_raw = v * (T(1) - s * (T(1) - f));
    T p = clamp01(p_raw), q = clamp01(q_raw), t = clamp01(t_raw);
    const T table[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int k = 0; k < 3; ++k) out_raw[k] = table[sector][k];
  }

  // Reverse mode through forward(): g_out = dL/d(clamped outputs) -> g_in = dL/d(r, g, b).
  CP_IMAGE_HD void backward(const T g_out[3], T g_in[3]) const {
    // Which of v, p, q, t (0..3) each output channel copies, per sector.
    const int source[6][3] = {{0, 3, 1}, {2, 0, 1}, {1, 0, 3}, {1, 2, 0}, {3, 1, 0}, {0, 1, 2}};
    T gvpqt[4] = {0, 0, 0, 0};
    for (int k = 0; k < 3; ++k)
      if (inside01(out_raw[k])) gvpqt[source[sector][k]] += g_out[k];
    T v = mx, gv = gvpqt[0], gs = 0, gf = 0;
    if (inside01(p_raw)) gv += gvpqt[1] * (T(1) - s), gs -= gvpqt[1] * v;
    if (inside01(q_raw)) gv += gvpqt[2] * (T(1) - s * f), gs -= gvpqt[2] * v * f, gf -= gvpqt[2] * v * s;
    if (inside01(t_raw)) gv += gvpqt[3] * (T(1) - s * (T(1) - f)), gs -= gvpqt[3] * v * (T(1) - f), gf += gvpqt[3] * v * s;
    // f = 6h - floor(6h), h = (h0/6 + 1 + shift) mod 1: dL/dh0 = 6 gf / 6.
    T gh0 = gf;
    T cden = gray ? T(1) : cr, sden = gray ? T(1) : mx;
    T gxc[3] = {0, 0, 0};  // dL/d(rc, gc, bc)
    if (mx == rgb[0]) gxc[2] += gh0, gxc[1] -= gh0;
    else if (mx == rgb[1]) gxc[0] += gh0, gxc[2] -= gh0;
    else gxc[1] += gh0, gxc[0] -= gh0;
    T gmx = gv, gcr = 0, gcden = 0;
    for (int k = 0; k < 3; ++k) {  // xc = (mx - x_k) / cden
      g_in[k] = -gxc[k] / cden;
      gmx += gxc[k] / cden;
      gcden -= gxc[k] * (mx - rgb[k]) / (cden * cden);
    }
    if (!gray) gcr += gcden;
    gcr += gs / sden;  // s = cr / sden
    if (!gray) gmx -= gs * cr / (sden * sden);
    gmx += gcr;  // cr = mx - mn
    g_in[imax] += gmx;
    g_in[imin] -= gcr;
  }
};

}  // namespace image_math
}  // namespace cpoison
