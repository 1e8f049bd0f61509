// CUDA pooling over square windows. Layout: x [N,C,H,W] -> y [N,C,Ho,Wo],
// Ho = (H + 2*padding - kernel) / stride + 1. Forward: one thread per output. Backward: one
// thread per input pixel, gathering from the outputs whose window covers it in raster order,
// which is the order in which the CPU kernel scatters them (same sums, no atomics).
#include "engine/backend/cuda/block_reduce.cuh"
#include "engine/backend/nn.h"

namespace cpoison::cuda {

namespace {
struct PoolGeometry {
  int64_t planes, H, W, Ho, Wo, k, s, p;
  int64_t out_count() const { return planes * Ho * Wo; }
  int64_t in_count() const { return planes * H * W; }
};
PoolGeometry pool_geometry(int64_t n, int64_t c, int64_t h, int64_t w, int64_t kernel, int64_t stride, int64_t padding) {
  return {n * c, h, w, (h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1, kernel, stride, padding};
}

// The window of output (oh, ow) clipped to the input: rows [h0, h1), columns [w0, w1).
__device__ inline void window(const PoolGeometry& g, int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0, int64_t& w1) {
  h0 = oh * g.s - g.p;
  w0 = ow * g.s - g.p;
  h1 = min(h0 + g.k, g.H);
  w1 = min(w0 + g.k, g.W);
  h0 = max(h0, (int64_t)0);
  w0 = max(w0, (int64_t)0);
}

// Outputs along one axis whose window covers input position i: [lo, hi).
__device__ inline void covering(int64_t i, int64_t k, int64_t s, int64_t p, int64_t out, int64_t& lo, int64_t& hi) {
  // o*s - p <= i < o*s - p + k  <=>  (i + p - k) / s < o <= (i + p) / s
  int64_t a = i + p - k + 1;  // o*s >= a
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = min((i + p) / s + 1, out);
}

// Plane offset of the first (row-major) maximum of the window; -1 when empty. NaN wins.
template <class T>
__device__ inline int64_t window_argmax(const PoolGeometry& g, const T* plane, int64_t oh, int64_t ow) {
  int64_t h0, h1, w0, w1;
  window(g, oh, ow, h0, h1, w0, w1);
  int64_t best = -1;
  T best_v = 0;
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

template <class T>
Tensor max_forward_typed(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(x.size(0), x.size(1), x.size(2), x.size(3), kernel, stride, padding);
  Tensor y = Tensor::empty({x.size(0), x.size(1), g.Ho, g.Wo}, x.dtype(), Device::cuda);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  for_each_index(g.out_count(), [=] __device__(int64_t e) {
    int64_t ow = e % g.Wo, oh = (e / g.Wo) % g.Ho, pl = e / (g.Wo * g.Ho);
    const T* plane = px + pl * g.H * g.W;
    int64_t at = window_argmax(g, plane, oh, ow);
    py[e] = at < 0 ? -(T)INFINITY : plane[at];
  });
  return y;
}

template <class T>
Tensor max_backward_typed(const Tensor& gy, const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(x.size(0), x.size(1), x.size(2), x.size(3), kernel, stride, padding);
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  const T *px = x.data<T>(), *pg = gy.data<T>();
  T* pd = dx.data<T>();
  for_each_index(g.in_count(), [=] __device__(int64_t e) {
    int64_t w = e % g.W, h = (e / g.W) % g.H, pl = e / (g.W * g.H);
    const T* plane = px + pl * g.H * g.W;
    const T* go = pg + pl * g.Ho * g.Wo;
    int64_t oh0, oh1, ow0, ow1;
    covering(h, g.k, g.s, g.p, g.Ho, oh0, oh1);
    covering(w, g.k, g.s, g.p, g.Wo, ow0, ow1);
    const int64_t self = h * g.W + w;
    T acc = 0;
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow)
        if (window_argmax(g, plane, oh, ow) == self) acc += go[oh * g.Wo + ow];
    pd[e] = acc;
  });
  return dx;
}

template <class T>
Tensor avg_forward_typed(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(x.size(0), x.size(1), x.size(2), x.size(3), kernel, stride, padding);
  Tensor y = Tensor::empty({x.size(0), x.size(1), g.Ho, g.Wo}, x.dtype(), Device::cuda);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  const T inv = T(1) / T(g.k * g.k);  // count_include_pad: always the full window
  for_each_index(g.out_count(), [=] __device__(int64_t e) {
    int64_t ow = e % g.Wo, oh = (e / g.Wo) % g.Ho, pl = e / (g.Wo * g.Ho);
    const T* plane = px + pl * g.H * g.W;
    int64_t h0, h1, w0, w1;
    window(g, oh, ow, h0, h1, w0, w1);
    T acc = 0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) acc += plane[h * g.W + w];
    py[e] = acc * inv;
  });
  return y;
}

template <class T>
Tensor avg_backward_typed(const Tensor& gy, int64_t in_h, int64_t in_w, int64_t kernel, int64_t stride, int64_t padding) {
  PoolGeometry g = pool_geometry(gy.size(0), gy.size(1), in_h, in_w, kernel, stride, padding);
  Tensor dx = Tensor::empty({gy.size(0), gy.size(1), in_h, in_w}, gy.dtype(), Device::cuda);
  const T* pg = gy.data<T>();
  T* pd = dx.data<T>();
  const T inv = T(1) / T(g.k * g.k);
  for_each_index(g.in_count(), [=] __device__(int64_t e) {
    int64_t w = e % g.W, h = (e / g.W) % g.H, pl = e / (g.W * g.H);
    const T* go = pg + pl * g.Ho * g.Wo;
    int64_t oh0, oh1, ow0, ow1;
    covering(h, g.k, g.s, g.p, g.Ho, oh0, oh1);
    covering(w, g.k, g.s, g.p, g.Wo, ow0, ow1);
    T acc = 0;
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow) acc += go[oh * g.Wo + ow] * inv;
    pd[e] = acc;
  });
  return dx;
}

// One warp per (image, channel) plane: a fixed shuffle tree over the plane, in double.
template <class T>
__global__ void plane_mean_kernel(const T* x, int64_t planes, int64_t P, T* y) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
  // Whole warps take the same branch (blockDim is a multiple of 32), so the shuffles are safe.
  for (int64_t plane = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; plane < planes; plane += warps) {
    const T* p = x + plane * P;
    double acc = 0;
    for (int64_t i = lane; i < P; i += 32) acc += (double)p[i];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if (lane == 0) y[plane] = (T)(acc / (double)P);
  }
}

template <class T>
Tensor global_forward_typed(const Tensor& x) {
  const int64_t planes = x.size(0) * x.size(1), P = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), 1, 1}, x.dtype(), Device::cuda);
  if (planes == 0) return y;
  plane_mean_kernel<T><<<blocks_for(planes * 32), kThreads, 0, stream()>>>(x.data<T>(), planes, P, y.data<T>());
  CP_CUDA_CHECK_LAUNCH();
  return y;
}

template <class T>
Tensor global_backward_typed(const Tensor& gy, int64_t in_h, int64_t in_w) {
  const int64_t P = in_h * in_w;
  Tensor dx = Tensor::empty({gy.size(0), gy.size(1), in_h, in_w}, gy.dtype(), Device::cuda);
  const T* pg = gy.data<T>();
  T* pd = dx.data<T>();
  for_each_index(dx.numel(), [=] __device__(int64_t e) { pd[e] = (T)((double)pg[e / P] / (double)P); });
  return dx;
}
}  // namespace

Tensor max_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return float_dispatch(x.dtype(), "max_pool2d", [&](auto tag) { return max_forward_typed<decltype(tag)>(x, kernel, stride, padding); });
}
Tensor max_pool2d_backward(const Tensor& g, const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return float_dispatch(x.dtype(), "max_pool2d backward", [&](auto tag) { return max_backward_typed<decltype(tag)>(g, x, kernel, stride, padding); });
}
Tensor avg_pool2d_forward(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return float_dispatch(x.dtype(), "avg_pool2d", [&](auto tag) { return avg_forward_typed<decltype(tag)>(x, kernel, stride, padding); });
}
Tensor avg_pool2d_backward(const Tensor& g, int64_t in_h, int64_t in_w, int64_t kernel, int64_t stride, int64_t padding) {
  return float_dispatch(g.dtype(), "avg_pool2d backward", [&](auto tag) { return avg_backward_typed<decltype(tag)>(g, in_h, in_w, kernel, stride, padding); });
}
Tensor global_avg_pool2d_forward(const Tensor& x) {
  return float_dispatch(x.dtype(), "global_avg_pool2d", [&](auto tag) { return global_forward_typed<decltype(tag)>(x); });
}
Tensor global_avg_pool2d_backward(const Tensor& g, int64_t in_h, int64_t in_w) {
  return float_dispatch(g.dtype(), "global_avg_pool2d backward", [&](auto tag) { return global_backward_typed<decltype(tag)>(g, in_h, in_w); });
}

}  // namespace cpoison::cuda
