// CUDA image kernels on contiguous NCHW tensors (N images, C channels, H rows, W columns), with
// the arithmetic of backend/cpu/image.cpp written out identically and never contracted into
// FMAs (-fmad=false), so CUDA and CPU agree to rounding (to the last bit where the host compiler
// does not contract either). The bilinear backward is a gather: each input pixel sums the contributions of the
// output pixels that sample it in the CPU's scatter order (output raster order, then the four
// taps in order), so it is deterministic without atomics.
#include "engine/backend/cuda/common.cuh"
#include "engine/backend/image.h"

namespace cpoison::cuda {

namespace {

// Source taps of output index i along one axis (align_corners = true), as window_taps() on the CPU.
struct Tap {
  int64_t lo, hi;
  double frac;
};
__device__ inline Tap tap_at(double start, double extent, int64_t out, int64_t in, int64_t i) {
  double step = out > 1 ? (extent - 1.0) / (double)(out - 1) : 0.0;
  double src = start + (double)i * step;
  int64_t lo = (int64_t)floor(src);
  lo = lo < 0 ? 0 : (lo > in - 1 ? in - 1 : lo);
  int64_t hi = min(lo + 1, in - 1);
  double frac = src - (double)lo;
  frac = frac < 0.0 ? 0.0 : (frac > 1.0 ? 1.0 : frac);
  return Tap{lo, hi, frac};
}

// Output indices whose taps touch input position p: lo(i) in {p - 1, p} (lo is nondecreasing in i).
__device__ inline void touching(double start, double extent, int64_t out, int64_t in, int64_t p, int64_t& begin, int64_t& end) {
  auto first_with_lo_at_least = [&](int64_t v) {
    int64_t a = 0, b = out;
    while (a < b) {
      int64_t m = (a + b) / 2;
      if (tap_at(start, extent, out, in, m).lo < v) a = m + 1;
      else b = m;
    }
    return a;
  };
  begin = first_with_lo_at_least(p - 1);
  end = first_with_lo_at_least(p + 1);
}

template <class T>
Tensor resize_typed(const Tensor& x, const Tensor& boxes, int64_t out_h, int64_t out_w) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = Tensor::empty({N, C, out_h, out_w}, x.dtype(), Device::cuda);
  const double* box = boxes.data<double>();
  const T* px = x.data<T>();
  T* po = out.data<T>();
  for_each_index(out.numel(), [=] __device__(int64_t e) {
    int64_t j = e % out_w, i = (e / out_w) % out_h, nc = e / (out_w * out_h), n = nc / C;
    const double* b = box + 4 * n;
    Tap r = tap_at(b[0], b[2], out_h, H, i), q = tap_at(b[1], b[3], out_w, W, j);
    const T* src = px + nc * H * W;
    T wy = (T)r.frac, wx = (T)q.frac;
    T top = (1 - wx) * src[r.lo * W + q.lo] + wx * src[r.lo * W + q.hi];
    T bottom = (1 - wx) * src[r.hi * W + q.lo] + wx * src[r.hi * W + q.hi];
    po[e] = (1 - wy) * top + wy * bottom;
  });
  return out;
}

template <class T>
Tensor resize_backward_typed(const Tensor& g, const Tensor& boxes, int64_t in_h, int64_t in_w) {
  const int64_t N = g.size(0), C = g.size(1), out_h = g.size(2), out_w = g.size(3);
  Tensor gx = Tensor::empty({N, C, in_h, in_w}, g.dtype(), Device::cuda);
  const double* box = boxes.data<double>();
  const T* pg = g.data<T>();
  T* pgx = gx.data<T>();
  for_each_index(gx.numel(), [=] __device__(int64_t e) {
    int64_t x = e % in_w, y = (e / in_w) % in_h, nc = e / (in_w * in_h), n = nc / C;
    const double* b = box + 4 * n;
    int64_t i0, i1, j0, j1;
    touching(b[0], b[2], out_h, in_h, y, i0, i1);
    touching(b[1], b[3], out_w, in_w, x, j0, j1);
    const T* src = pg + nc * out_h * out_w;
    T acc = 0;
    for (int64_t i = i0; i < i1; ++i) {
      Tap r = tap_at(b[0], b[2], out_h, in_h, i);
      T wy = (T)r.frac;
      for (int64_t j = j0; j < j1; ++j) {
        Tap q = tap_at(b[1], b[3], out_w, in_w, j);
        T wx = (T)q.frac, v = src[i * out_w + j];
        if (r.lo == y && q.lo == x) acc += (1 - wy) * (1 - wx) * v;
        if (r.lo == y && q.hi == x) acc += (1 - wy) * wx * v;
        if (r.hi == y && q.lo == x) acc += wy * (1 - wx) * v;
        if (r.hi == y && q.hi == x) acc += wy * wx * v;
      }
    }
    pgx[e] = acc;
  });
  return gx;
}

template <class T>
Tensor flip_typed(const Tensor& x, const Tensor& flags) {
  const int64_t per_image = x.size(1) * x.size(2) * x.size(3), W = x.size(3);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  const uint8_t* f = flags.data<uint8_t>();
  const T* px = x.data<T>();
  T* po = out.data<T>();
  for_each_index(out.numel(), [=] __device__(int64_t e) {
    int64_t w = e % W;
    po[e] = f[e / per_image] ? px[e - w + (W - 1 - w)] : px[e];
  });
  return out;
}

template <class T> __device__ inline T d_fmod(T a, T b) { if constexpr (sizeof(T) == 4) return fmodf(a, b); else return fmod(a, b); }
template <class T> __device__ inline T d_clamp01(T v) { return v < T(0) ? T(0) : (v > T(1) ? T(1) : v); }

// torchvision's _rgb2hsv / hue rotation / _hsv2rgb for one pixel and its backward: a transcription
// of HuePixel in backend/cpu/image.cpp (ties of max/min go to the first channel).
template <class T>
struct HuePixel {
  T rgb[3];
  int imax, imin;
  T mx, mn, cr;
  bool gray;
  T s, h0, h;
  int sector;
  T f, p_raw, q_raw, t_raw;
  T out_raw[3];

  __device__ void forward(T r, T g, T b, T shift) {
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
    T h1 = d_fmod(h0 / T(6) + T(1), T(1));
    T hs = h1 + shift;
    h = hs - d_floor(hs);
    T i = d_floor(h * T(6));
    f = h * T(6) - i;
    sector = ((int)i % 6 + 6) % 6;
    T v = mx;
    p_raw = v * (T(1) - s);
    q_raw = v * (T(1) - s * f);
    t_raw = v * (T(1) - s * (T(1) - f));
    T p = d_clamp01(p_raw), q = d_clamp01(q_raw), t = d_clamp01(t_raw);
    const T table[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int k = 0; k < 3; ++k) out_raw[k] = table[sector][k];
  }

  __device__ void backward(const T g_out[3], T g_in[3]) const {
    const int source[6][3] = {{0, 3, 1}, {2, 0, 1}, {1, 0, 3}, {1, 2, 0}, {3, 1, 0}, {0, 1, 2}};
    T gvpqt[4] = {0, 0, 0, 0};
    for (int k = 0; k < 3; ++k)
      if (out_raw[k] >= T(0) && out_raw[k] <= T(1)) gvpqt[source[sector][k]] += g_out[k];
    T v = mx, gv = gvpqt[0], gs = 0, gf = 0;
    auto inside = [](T a) { return a >= T(0) && a <= T(1); };
    if (inside(p_raw)) gv += gvpqt[1] * (T(1) - s), gs -= gvpqt[1] * v;
    if (inside(q_raw)) gv += gvpqt[2] * (T(1) - s * f), gs -= gvpqt[2] * v * f, gf -= gvpqt[2] * v * s;
    if (inside(t_raw)) gv += gvpqt[3] * (T(1) - s * (T(1) - f)), gs -= gvpqt[3] * v * (T(1) - f), gf += gvpqt[3] * v * s;
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
    for (int k = 0; k < 3; ++k) {
      gmx += gc3[k] / cden;
      g_in[k] -= gc3[k] / cden;
      gcden -= gc3[k] * (mx - rgb[k]) / (cden * cden);
    }
    if (!gray) gcr += gcden;
    gcr += gs / sden;
    if (!gray) gmx -= gs * cr / (sden * sden);
    gmx += gcr;
    T gmn = -gcr;
    g_in[imax] += gmx;
    g_in[imin] += gmn;
  }
};

template <class T>
Tensor hue_typed(const Tensor& x, const Tensor& shifts) {
  const int64_t HW = x.size(2) * x.size(3);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  const T* px = x.data<T>();
  const T* ps = shifts.data<T>();
  T* po = out.data<T>();
  // One thread per pixel (all three channels).
  for_each_index(x.size(0) * HW, [=] __device__(int64_t e) {
    int64_t n = e / HW, i = e % HW;
    const T* src = px + n * 3 * HW;
    T* dst = po + n * 3 * HW;
    if (ps[n] == 0) {
      for (int k = 0; k < 3; ++k) dst[k * HW + i] = d_clamp01(src[k * HW + i]);
      return;
    }
    HuePixel<T> p;
    p.forward(src[i], src[HW + i], src[2 * HW + i], ps[n]);
    for (int k = 0; k < 3; ++k) dst[k * HW + i] = d_clamp01(p.out_raw[k]);
  });
  return out;
}

template <class T>
Tensor hue_backward_typed(const Tensor& g, const Tensor& x, const Tensor& shifts) {
  const int64_t HW = x.size(2) * x.size(3);
  Tensor gx = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  const T* px = x.data<T>();
  const T* pg = g.data<T>();
  const T* ps = shifts.data<T>();
  T* pgx = gx.data<T>();
  for_each_index(x.size(0) * HW, [=] __device__(int64_t e) {
    int64_t n = e / HW, i = e % HW;
    const T* src = px + n * 3 * HW;
    const T* gsrc = pg + n * 3 * HW;
    T* dst = pgx + n * 3 * HW;
    if (ps[n] == 0) {
      for (int k = 0; k < 3; ++k) {
        T v = src[k * HW + i];
        dst[k * HW + i] = (v >= 0 && v <= 1) ? gsrc[k * HW + i] : T(0);
      }
      return;
    }
    HuePixel<T> p;
    p.forward(src[i], src[HW + i], src[2 * HW + i], ps[n]);
    const T g_out[3] = {gsrc[i], gsrc[HW + i], gsrc[2 * HW + i]};
    T g_in[3];
    p.backward(g_out, g_in);
    for (int k = 0; k < 3; ++k) dst[k * HW + i] = g_in[k];
  });
  return gx;
}

template <class T>
Tensor gray_typed(const Tensor& x) {
  const int64_t HW = x.size(2) * x.size(3);
  Tensor out = Tensor::empty({x.size(0), 1, x.size(2), x.size(3)}, x.dtype(), Device::cuda);
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const T wr = (T)0.299, wg = (T)0.587, wb = (T)0.114;
  for_each_index(out.numel(), [=] __device__(int64_t e) {
    const T* src = px + (e / HW) * 3 * HW + e % HW;
    po[e] = wr * src[0] + wg * src[HW] + wb * src[2 * HW];
  });
  return out;
}

template <class T>
Tensor gray_backward_typed(const Tensor& g) {
  const int64_t HW = g.size(2) * g.size(3);
  Tensor gx = Tensor::empty({g.size(0), 3, g.size(2), g.size(3)}, g.dtype(), Device::cuda);
  const T* pg = g.data<T>();
  T* po = gx.data<T>();
  const T w0 = (T)0.299, w1 = (T)0.587, w2 = (T)0.114;
  for_each_index(gx.numel(), [=] __device__(int64_t e) {
    int64_t i = e % HW, k = (e / HW) % 3, n = e / (3 * HW);
    po[e] = (k == 0 ? w0 : (k == 1 ? w1 : w2)) * pg[n * HW + i];
  });
  return gx;
}

}  // namespace

Tensor resize_window_bilinear(const Tensor& x, const Tensor& boxes, int64_t out_h, int64_t out_w) {
  CP_CHECK(boxes.dtype() == DType::f64, "resize_window", "boxes must be f64 for the kernel, got ", boxes.describe());
  return float_dispatch(x.dtype(), "resize_window", [&](auto tag) { return resize_typed<decltype(tag)>(x, boxes, out_h, out_w); });
}

Tensor resize_window_bilinear_backward(const Tensor& g, const Tensor& boxes, int64_t in_h, int64_t in_w) {
  CP_CHECK(boxes.dtype() == DType::f64, "resize_window backward", "boxes must be f64 for the kernel, got ", boxes.describe());
  return float_dispatch(g.dtype(), "resize_window backward", [&](auto tag) { return resize_backward_typed<decltype(tag)>(g, boxes, in_h, in_w); });
}

Tensor flip_w_where(const Tensor& x, const Tensor& flags) {
  CP_CHECK(flags.dtype() == DType::u8, "flip_horizontal", "flags must be u8 for the kernel, got ", flags.describe());
  return float_dispatch(x.dtype(), "flip_horizontal", [&](auto tag) { return flip_typed<decltype(tag)>(x, flags); });
}

Tensor hue_shift(const Tensor& x, const Tensor& shifts) {
  return float_dispatch(x.dtype(), "adjust_hue", [&](auto tag) { return hue_typed<decltype(tag)>(x, shifts); });
}

Tensor hue_shift_backward(const Tensor& g, const Tensor& x, const Tensor& shifts) {
  return float_dispatch(x.dtype(), "adjust_hue backward", [&](auto tag) { return hue_backward_typed<decltype(tag)>(g, x, shifts); });
}

Tensor rgb_to_gray(const Tensor& x) {
  return float_dispatch(x.dtype(), "rgb_to_grayscale", [&](auto tag) { return gray_typed<decltype(tag)>(x); });
}

Tensor rgb_to_gray_backward(const Tensor& g) {
  return float_dispatch(g.dtype(), "rgb_to_grayscale backward", [&](auto tag) { return gray_backward_typed<decltype(tag)>(g); });
}

}  // namespace cpoison::cuda
