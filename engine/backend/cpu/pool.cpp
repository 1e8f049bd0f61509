// CPU pooling over square windows. Layout: x [N,C,H,W] -> y [N,C,Ho,Wo] with
// Ho = (H + 2*padding - kernel) / stride + 1. One OpenMP task per (image, channel) plane.
#include <algorithm>
#include <limits>

#include "engine/backend/dispatch.h"
#include "engine/backend/nn.h"

namespace cpoison::cpu {

// Loops with less work than this run on one thread: a parallel region costs more than it saves.
constexpr int64_t kParallelWork = int64_t(1) << 15;

namespace {
struct PoolGeometry {
  int64_t planes, H, W, Ho, Wo, k, s, p;
};
PoolGeometry pool_geometry(int64_t n, int64_t c, int64_t h, int64_t w, int64_t kernel, int64_t stride, int64_t padding) {
  return {n * c, h, w, (h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1, kernel, stride, padding};
}

// The window of output (oh, ow) clipped to the input: rows [h0, h1), columns [w0, w1).
inline void window(const PoolGeometry& g, int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0, int64_t& w1) {
  h0 = oh * g.s - g.p;
  w0 = ow * g.s - g.p;
  h1 = std::min(h0 + g.k, g.H);
  w1 = std::min(w0 + g.k, g.W);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
}

// Plane offset of the first (row-major) maximum of the window; -1 when the window is empty.
// NaN counts as the maximum, as in PyTorch.
template <class T>
inline int64_t window_argmax(const PoolGeometry& g, const T* plane, int64_t oh, int64_t ow) {
  int64_t h0, h1, w0, w1;
  window(g, oh, ow, h0, h1, w0, w1);
  int64_t best = -1;
  T best_v = -std::numeric_limits<T>::infinity();
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t w = w0; w < w1; ++w) {
      T v = plane[h * g.W + w];
      if (best < 0 || v > best_v || (v != v && best_v == best_v)) {
        best = h * g.W + w;
        best_v = v;
      }
    }
  return best;
}
}  // namespace

Tensor max_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(x.size(0), x.size(1), x.size(2), x.size(3), kernel, stride, padding);
  Tensor y = Tensor::empty({x.size(0), x.size(1), g.Ho, g.Wo}, x.dtype());
  float_dispatch(x.dtype(), "max_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (y.numel() * g.k * g.k >= kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const T* plane = px + pl * g.H * g.W;
      T* out = py + pl * g.Ho * g.Wo;
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          int64_t at = window_argmax(g, plane, oh, ow);
          out[oh * g.Wo + ow] = at < 0 ? -std::numeric_limits<T>::infinity() : plane[at];
        }
    }
  });
  return y;
}

Tensor max_pool2d_backward(const Tensor& gy, const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(x.size(0), x.size(1), x.size(2), x.size(3), kernel, stride, padding);
  Tensor dx = Tensor::zeros(x.shape(), x.dtype());
  float_dispatch(x.dtype(), "max_pool2d backward", [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pg = gy.data<T>();
    T* pd = dx.data<T>();
#pragma omp parallel for schedule(static) if (gy.numel() * g.k * g.k >= kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const T* plane = px + pl * g.H * g.W;
      const T* go = pg + pl * g.Ho * g.Wo;
      T* d = pd + pl * g.H * g.W;
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          int64_t at = window_argmax(g, plane, oh, ow);
          if (at >= 0) d[at] += go[oh * g.Wo + ow];
        }
    }
  });
  return dx;
}

Tensor avg_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(x.size(0), x.size(1), x.size(2), x.size(3), kernel, stride, padding);
  Tensor y = Tensor::empty({x.size(0), x.size(1), g.Ho, g.Wo}, x.dtype());
  float_dispatch(x.dtype(), "avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T inv = T(1) / T(g.k * g.k);  // count_include_pad: always the full window
#pragma omp parallel for schedule(static) if (y.numel() * g.k * g.k >= kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const T* plane = px + pl * g.H * g.W;
      T* out = py + pl * g.Ho * g.Wo;
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          int64_t h0, h1, w0, w1;
          window(g, oh, ow, h0, h1, w0, w1);
          T acc = 0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) acc += plane[h * g.W + w];
          out[oh * g.Wo + ow] = acc * inv;
        }
    }
  });
  return y;
}

Tensor avg_pool2d_backward(const Tensor& gy, int64_t in_h, int64_t in_w, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(gy.size(0), gy.size(1), in_h, in_w, kernel, stride, padding);
  Tensor dx = Tensor::zeros({gy.size(0), gy.size(1), in_h, in_w}, gy.dtype());
  float_dispatch(gy.dtype(), "avg_pool2d backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gy.data<T>();
    T* pd = dx.data<T>();
    const T inv = T(1) / T(g.k * g.k);
#pragma omp parallel for schedule(static) if (gy.numel() * g.k * g.k >= kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const T* go = pg + pl * g.Ho * g.Wo;
      T* d = pd + pl * g.H * g.W;
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          int64_t h0, h1, w0, w1;
          window(g, oh, ow, h0, h1, w0, w1);
          const T v = go[oh * g.Wo + ow] * inv;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) d[h * g.W + w] += v;
        }
    }
  });
  return dx;
}

Tensor global_avg_pool2d_forward(const Tensor& x) {
  const int64_t planes = x.size(0) * x.size(1), P = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), 1, 1}, x.dtype());
  float_dispatch(x.dtype(), "global_avg_pool2d", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
    for (int64_t pl = 0; pl < planes; ++pl) {
      double acc = 0;
      const T* p = px + pl * P;
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < P; ++i) acc += p[i];
      py[pl] = (T)(acc / (double)P);
    }
  });
  return y;
}

Tensor global_avg_pool2d_backward(const Tensor& gy, int64_t in_h, int64_t in_w) {
  const int64_t planes = gy.size(0) * gy.size(1), P = in_h * in_w;
  Tensor dx = Tensor::empty({gy.size(0), gy.size(1), in_h, in_w}, gy.dtype());
  float_dispatch(gy.dtype(), "global_avg_pool2d backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gy.data<T>();
    T* pd = dx.data<T>();
#pragma omp parallel for schedule(static) if (dx.numel() >= kParallelWork)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T v = (T)((double)pg[pl] / (double)P);
      std::fill(pd + pl * P, pd + (pl + 1) * P, v);
    }
  });
  return dx;
}

}  // namespace cpoison::cpu
