// CPU batch norm. x is viewed as [N, C, S] with S = H*W for images and S = 1 for [N, C] rows.
// Statistics are per channel: one OpenMP task per channel, summed in a fixed order in double
// (so f32 results do not depend on the thread count and lose little to cancellation).
#include <cmath>
#include <vector>

#include "engine/backend/dispatch.h"
#include "engine/backend/nn.h"

namespace cpoison::cpu {

// Loops with less work than this run on one thread: a parallel region costs more than it saves.
constexpr int64_t kParallelWork = int64_t(1) << 15;

namespace {

struct Layout {
  int64_t N, C, S;
  int64_t count() const { return N * S; }  // values per channel
  int64_t at(int64_t n, int64_t c) const { return (n * C + c) * S; }
};
Layout layout_of(const Tensor& x) {
  int64_t S = 1;
  for (int64_t d = 2; d < x.dim(); ++d) S *= x.size(d);
  return {x.size(0), x.size(1), S};
}

// Sum of f(s) for s in [0, n) in double with 8 independent partial sums combined in a fixed
// order: vectorisable without -ffast-math, and the same result for any thread count.
template <class F>
inline double lane_sum(int64_t n, F f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t s = 0;
  for (; s + 8 <= n; s += 8)
    for (int j = 0; j < 8; ++j) acc[j] += f(s + j);
  double tail = 0;
  for (; s < n; ++s) tail += f(s);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

template <class T>
const T* optional_data(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

std::vector<Tensor> batch_norm_train(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                                     const Tensor& running_var, double momentum, double eps) {
  const Layout L = layout_of(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  Tensor save_mean = Tensor::empty({L.C}, x.dtype()), save_invstd = Tensor::empty({L.C}, x.dtype());
  float_dispatch(x.dtype(), "batch_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T *pw = optional_data<T>(weight), *pb = optional_data<T>(bias);
    T* py = y.data<T>();
    T *pm = save_mean.data<T>(), *pi = save_invstd.data<T>();
    T* rm = running_mean.defined() ? running_mean.data<T>() : nullptr;
    T* rv = running_var.defined() ? running_var.data<T>() : nullptr;
    const double n = (double)L.count();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
    for (int64_t c = 0; c < L.C; ++c) {
      double sum = 0;
      for (int64_t i = 0; i < L.N; ++i) {
        const T* p = px + L.at(i, c);
        sum += lane_sum(L.S, [p](int64_t s) { return (double)p[s]; });
      }
      const double mean = sum / n;
      double sq = 0;  // two passes: the centred sum of squares does not cancel
      for (int64_t i = 0; i < L.N; ++i) {
        const T* p = px + L.at(i, c);
        sq += lane_sum(L.S, [p, mean](int64_t s) { return ((double)p[s] - mean) * ((double)p[s] - mean); });
      }
      const double var = sq / n, invstd = 1.0 / std::sqrt(var + eps);
      pm[c] = (T)mean;
      pi[c] = (T)invstd;
      const double scale = invstd * (pw ? (double)pw[c] : 1.0);
      const T sc = (T)scale, sh = (T)((pb ? (double)pb[c] : 0.0) - mean * scale);
      for (int64_t i = 0; i < L.N; ++i) {
        const T* p = px + L.at(i, c);
        T* q = py + L.at(i, c);
#pragma omp simd
        for (int64_t s = 0; s < L.S; ++s) q[s] = p[s] * sc + sh;
      }
      if (rm) rm[c] = (T)((1 - momentum) * rm[c] + momentum * mean);
      if (rv) rv[c] = (T)((1 - momentum) * rv[c] + momentum * (n > 1 ? var * n / (n - 1) : var));
    }
  });
  return {y, save_mean, save_invstd};
}

Tensor batch_norm_eval(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                       const Tensor& running_var, double eps) {
  const Layout L = layout_of(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  float_dispatch(x.dtype(), "batch_norm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T *pw = optional_data<T>(weight), *pb = optional_data<T>(bias);
    const T *rm = running_mean.data<T>(), *rv = running_var.data<T>();
    T* py = y.data<T>();
    std::vector<T> scale(L.C), shift(L.C);
    for (int64_t c = 0; c < L.C; ++c) {
      double sc = (pw ? (double)pw[c] : 1.0) / std::sqrt((double)rv[c] + eps);
      scale[c] = (T)sc;
      shift[c] = (T)((pb ? (double)pb[c] : 0.0) - (double)rm[c] * sc);
    }
    // Every (n, c) block is independent: parallel over all of them.
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
    for (int64_t idx = 0; idx < L.N * L.C; ++idx) {
      const T sc = scale[idx % L.C], sh = shift[idx % L.C];
      const T* p = px + idx * L.S;
      T* q = py + idx * L.S;
#pragma omp simd
      for (int64_t s = 0; s < L.S; ++s) q[s] = p[s] * sc + sh;
    }
  });
  return y;
}

std::vector<Tensor> batch_norm_backward_train(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& save_mean,
                                              const Tensor& save_invstd, bool need_input, bool need_weight, bool need_bias) {
  const Layout L = layout_of(x);
  std::vector<Tensor> out(3);
  if (need_input) out[0] = Tensor::empty(x.shape(), x.dtype());
  if (need_weight) out[1] = Tensor::empty({L.C}, x.dtype());
  if (need_bias) out[2] = Tensor::empty({L.C}, x.dtype());
  float_dispatch(x.dtype(), "batch_norm backward", [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pg = g.data<T>();
    const T* pw = optional_data<T>(weight);
    const T *pm = save_mean.data<T>(), *pi = save_invstd.data<T>();
    T* gx = need_input ? out[0].data<T>() : nullptr;
    T* gw = need_weight ? out[1].data<T>() : nullptr;
    T* gb = need_bias ? out[2].data<T>() : nullptr;
    const double n = (double)L.count();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
    for (int64_t c = 0; c < L.C; ++c) {
      const double mean = pm[c], invstd = pi[c];
      double sum_g = 0, sum_gc = 0;  // sum(g), sum(g * (x - mean))
      for (int64_t i = 0; i < L.N; ++i) {
        const T *p = px + L.at(i, c), *q = pg + L.at(i, c);
        sum_g += lane_sum(L.S, [q](int64_t s) { return (double)q[s]; });
        sum_gc += lane_sum(L.S, [p, q, mean](int64_t s) { return (double)q[s] * ((double)p[s] - mean); });
      }
      const double sum_gxhat = sum_gc * invstd;
      if (gw) gw[c] = (T)sum_gxhat;
      if (gb) gb[c] = (T)sum_g;
      if (gx) {
        // dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * invstd
        const double w = pw ? (double)pw[c] : 1.0;
        const T a = (T)(w * invstd);
        const T k = (T)(sum_gxhat / n * invstd);  // multiplies (x - mean)
        const T m = (T)(sum_g / n);
        const T mu = (T)mean;
        for (int64_t i = 0; i < L.N; ++i) {
          const T *p = px + L.at(i, c), *q = pg + L.at(i, c);
          T* r = gx + L.at(i, c);
#pragma omp simd
          for (int64_t s = 0; s < L.S; ++s) r[s] = a * (q[s] - m - (p[s] - mu) * k);
        }
      }
    }
  });
  return out;
}

std::vector<Tensor> batch_norm_backward_eval(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& running_mean,
                                             const Tensor& running_var, double eps, bool need_input, bool need_weight,
                                             bool need_bias) {
  const Layout L = layout_of(x);
  std::vector<Tensor> out(3);
  if (need_input) out[0] = Tensor::empty(x.shape(), x.dtype());
  if (need_weight) out[1] = Tensor::empty({L.C}, x.dtype());
  if (need_bias) out[2] = Tensor::empty({L.C}, x.dtype());
  float_dispatch(x.dtype(), "batch_norm backward", [&](auto tag) {
    using T = decltype(tag);
    const T *px = x.data<T>(), *pg = g.data<T>();
    const T* pw = optional_data<T>(weight);
    const T *rm = running_mean.data<T>(), *rv = running_var.data<T>();
    if (need_input) {
      T* gx = out[0].data<T>();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
      for (int64_t idx = 0; idx < L.N * L.C; ++idx) {
        const int64_t c = idx % L.C;
        const T sc = (T)((pw ? (double)pw[c] : 1.0) / std::sqrt((double)rv[c] + eps));
        const T* q = pg + idx * L.S;
        T* r = gx + idx * L.S;
#pragma omp simd
        for (int64_t s = 0; s < L.S; ++s) r[s] = q[s] * sc;
      }
    }
    if (need_weight || need_bias) {
      T* gw = need_weight ? out[1].data<T>() : nullptr;
      T* gb = need_bias ? out[2].data<T>() : nullptr;
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
      for (int64_t c = 0; c < L.C; ++c) {
        const double mean = rm[c], invstd = 1.0 / std::sqrt((double)rv[c] + eps);
        double sum_g = 0, sum_gc = 0;
        for (int64_t i = 0; i < L.N; ++i) {
          const T *p = px + L.at(i, c), *q = pg + L.at(i, c);
          sum_g += lane_sum(L.S, [q](int64_t s) { return (double)q[s]; });
          sum_gc += lane_sum(L.S, [p, q, mean](int64_t s) { return (double)q[s] * ((double)p[s] - mean); });
        }
        if (gw) gw[c] = (T)(sum_gc * invstd);
        if (gb) gb[c] = (T)sum_g;
      }
    }
  });
  return out;
}

}  // namespace cpoison::cpu
