// CUDA batch norm with own kernels (no cuDNN): x is viewed as [N, C, S], S = H*W for images and
// 1 for [N, C] rows. Per-channel statistics are deterministic sums in double over a partition
// fixed by the shape (block_reduce.cuh): one pass gives sum(x) and sum(x²), the biased variance
// is their difference (exact products and double sums keep it accurate for f32 data). The
// formulas for y, dx, dweight and dbias are those of backend/cpu/batchnorm.cpp.
#include "engine/backend/cuda/block_reduce.cuh"
#include "engine/backend/nn.h"

namespace cpoison::cuda {

namespace {

struct Layout {
  int64_t N, C, S;
};
Layout layout_of(const Tensor& x) {
  int64_t S = 1;
  for (int64_t d = 2; d < x.dim(); ++d) S *= x.size(d);
  return {x.size(0), x.size(1), S};
}

template <class T>
const T* optional_data(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// y[e] = x[e] * scale[c] + shift[c] for every element of [N, C, S].
template <class T>
void affine_per_channel(const T* x, const T* scale, const T* shift, T* y, const Layout& L) {
  const int64_t C = L.C, S = L.S;
  for_each_index(L.N * C * S, [=] __device__(int64_t e) {
    int64_t c = (e / S) % C;
    y[e] = x[e] * scale[c] + shift[c];
  });
}

template <class T>
std::vector<Tensor> train_typed(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                                const Tensor& running_var, double momentum, double eps) {
  const Layout L = layout_of(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  Tensor save_mean = Tensor::empty({L.C}, x.dtype(), Device::cuda), save_invstd = Tensor::empty({L.C}, x.dtype(), Device::cuda);
  if (L.C == 0) return {y, save_mean, save_invstd};
  Tensor sums = Tensor::empty({2 * L.C}, DType::f64, Device::cuda);
  Tensor scale_shift = Tensor::empty({2 * L.C}, x.dtype(), Device::cuda);
  const T* px = x.data<T>();
  double* ps = sums.data<double>();
  channel_sums<2>(L.N, L.C, L.S, [=] __device__(int64_t e, int64_t) {
    double v = (double)px[e];
    return Sums<2>{{v, v * v}};
  }, ps);
  const T *pw = optional_data<T>(weight), *pb = optional_data<T>(bias);
  T* rm = running_mean.defined() ? running_mean.data<T>() : nullptr;
  T* rv = running_var.defined() ? running_var.data<T>() : nullptr;
  T *pm = save_mean.data<T>(), *pi = save_invstd.data<T>();
  T* sc = scale_shift.data<T>();
  const int64_t C = L.C;
  const double n = (double)(L.N * L.S);
  for_each_index(C, [=] __device__(int64_t c) {
    const double mean = ps[c] / n;
    const double var = fmax(ps[C + c] / n - mean * mean, 0.0);
    const double invstd = 1.0 / sqrt(var + eps);
    pm[c] = (T)mean;
    pi[c] = (T)invstd;
    const double scale = invstd * (pw ? (double)pw[c] : 1.0);
    sc[c] = (T)scale;
    sc[C + c] = (T)((pb ? (double)pb[c] : 0.0) - mean * scale);
    if (rm) rm[c] = (T)((1 - momentum) * rm[c] + momentum * mean);
    if (rv) rv[c] = (T)((1 - momentum) * rv[c] + momentum * (n > 1 ? var * n / (n - 1) : var));
  });
  if (x.numel() > 0) affine_per_channel<T>(px, sc, sc + C, y.data<T>(), L);
  return {y, save_mean, save_invstd};
}

template <class T>
Tensor eval_typed(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean, const Tensor& running_var,
                  double eps) {
  const Layout L = layout_of(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  if (y.numel() == 0) return y;
  Tensor scale_shift = Tensor::empty({2 * L.C}, x.dtype(), Device::cuda);
  const T *pw = optional_data<T>(weight), *pb = optional_data<T>(bias);
  const T *rm = running_mean.data<T>(), *rv = running_var.data<T>();
  T* sc = scale_shift.data<T>();
  const int64_t C = L.C;
  for_each_index(C, [=] __device__(int64_t c) {
    double s = (pw ? (double)pw[c] : 1.0) / sqrt((double)rv[c] + eps);
    sc[c] = (T)s;
    sc[C + c] = (T)((pb ? (double)pb[c] : 0.0) - (double)rm[c] * s);
  });
  affine_per_channel<T>(x.data<T>(), sc, sc + C, y.data<T>(), L);
  return y;
}

// sum(g) and sum(g * (x - mean[c])) per channel, into sums[0..C) and sums[C..2C).
template <class T>
void grad_sums(const T* pg, const T* px, const T* mean, const Layout& L, double* sums) {
  channel_sums<2>(L.N, L.C, L.S, [=] __device__(int64_t e, int64_t c) {
    double g = (double)pg[e];
    return Sums<2>{{g, g * ((double)px[e] - (double)mean[c])}};
  }, sums);
}

template <class T>
std::vector<Tensor> backward_train_typed(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& save_mean,
                                         const Tensor& save_invstd, bool need_input, bool need_weight, bool need_bias) {
  const Layout L = layout_of(x);
  std::vector<Tensor> out(3);
  if (need_input) out[0] = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  if (need_weight) out[1] = Tensor::empty({L.C}, x.dtype(), Device::cuda);
  if (need_bias) out[2] = Tensor::empty({L.C}, x.dtype(), Device::cuda);
  if (L.C == 0 || !(need_input || need_weight || need_bias)) return out;
  const T *px = x.data<T>(), *pg = g.data<T>(), *pw = optional_data<T>(weight);
  const T *pm = save_mean.data<T>(), *pi = save_invstd.data<T>();
  Tensor sums = Tensor::empty({2 * L.C}, DType::f64, Device::cuda);
  double* ps = sums.data<double>();
  grad_sums<T>(pg, px, pm, L, ps);
  T* gw = need_weight ? out[1].data<T>() : nullptr;
  T* gb = need_bias ? out[2].data<T>() : nullptr;
  // Per channel: dx = a * (g - m - (x - mu) * k), a = w * invstd, k = sum(g xhat) / n * invstd, m = mean(g).
  Tensor coef = Tensor::empty({4 * L.C}, x.dtype(), Device::cuda);
  T* co = coef.data<T>();
  const int64_t C = L.C;
  const double n = (double)(L.N * L.S);
  for_each_index(C, [=] __device__(int64_t c) {
    const double invstd = pi[c], sum_g = ps[c], sum_gxhat = ps[C + c] * invstd;
    if (gw) gw[c] = (T)sum_gxhat;
    if (gb) gb[c] = (T)sum_g;
    const double w = pw ? (double)pw[c] : 1.0;
    co[c] = (T)(w * invstd);
    co[C + c] = (T)(sum_gxhat / n * invstd);
    co[2 * C + c] = (T)(sum_g / n);
    co[3 * C + c] = pm[c];
  });
  if (need_input && x.numel() > 0) {
    T* gx = out[0].data<T>();
    const int64_t S = L.S;
    for_each_index(x.numel(), [=] __device__(int64_t e) {
      int64_t c = (e / S) % C;
      gx[e] = co[c] * (pg[e] - co[2 * C + c] - (px[e] - co[3 * C + c]) * co[C + c]);
    });
  }
  return out;
}

template <class T>
std::vector<Tensor> backward_eval_typed(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& running_mean,
                                        const Tensor& running_var, double eps, bool need_input, bool need_weight, bool need_bias) {
  const Layout L = layout_of(x);
  std::vector<Tensor> out(3);
  if (need_input) out[0] = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  if (need_weight) out[1] = Tensor::empty({L.C}, x.dtype(), Device::cuda);
  if (need_bias) out[2] = Tensor::empty({L.C}, x.dtype(), Device::cuda);
  if (L.C == 0) return out;
  const T *px = x.data<T>(), *pg = g.data<T>(), *pw = optional_data<T>(weight);
  const T *rm = running_mean.data<T>(), *rv = running_var.data<T>();
  const int64_t C = L.C;
  if (need_input && x.numel() > 0) {
    Tensor scale = Tensor::empty({C}, x.dtype(), Device::cuda);
    T* sc = scale.data<T>();
    for_each_index(C, [=] __device__(int64_t c) { sc[c] = (T)((pw ? (double)pw[c] : 1.0) / sqrt((double)rv[c] + eps)); });
    T* gx = out[0].data<T>();
    const int64_t S = L.S;
    for_each_index(x.numel(), [=] __device__(int64_t e) { gx[e] = pg[e] * sc[(e / S) % C]; });
  }
  if (need_weight || need_bias) {
    Tensor sums = Tensor::empty({2 * C}, DType::f64, Device::cuda);
    double* ps = sums.data<double>();
    grad_sums<T>(pg, px, rm, L, ps);
    T* gw = need_weight ? out[1].data<T>() : nullptr;
    T* gb = need_bias ? out[2].data<T>() : nullptr;
    for_each_index(C, [=] __device__(int64_t c) {
      if (gw) gw[c] = (T)(ps[C + c] / sqrt((double)rv[c] + eps));
      if (gb) gb[c] = (T)ps[c];
    });
  }
  return out;
}

}  // namespace

std::vector<Tensor> batch_norm_train(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                                     const Tensor& running_var, double momentum, double eps) {
  return float_dispatch(x.dtype(), "batch_norm", [&](auto tag) {
    return train_typed<decltype(tag)>(x, weight, bias, running_mean, running_var, momentum, eps);
  });
}

Tensor batch_norm_eval(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                       const Tensor& running_var, double eps) {
  return float_dispatch(x.dtype(), "batch_norm", [&](auto tag) { return eval_typed<decltype(tag)>(x, weight, bias, running_mean, running_var, eps); });
}

std::vector<Tensor> batch_norm_backward_train(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& save_mean,
                                              const Tensor& save_invstd, bool need_input, bool need_weight, bool need_bias) {
  return float_dispatch(x.dtype(), "batch_norm backward", [&](auto tag) {
    return backward_train_typed<decltype(tag)>(g, x, weight, save_mean, save_invstd, need_input, need_weight, need_bias);
  });
}

std::vector<Tensor> batch_norm_backward_eval(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& running_mean,
                                             const Tensor& running_var, double eps, bool need_input, bool need_weight,
                                             bool need_bias) {
  return float_dispatch(x.dtype(), "batch_norm backward", [&](auto tag) {
    return backward_eval_typed<decltype(tag)>(g, x, weight, running_mean, running_var, eps, need_input, need_weight, need_bias);
  });
}

}  // namespace cpoison::cuda
