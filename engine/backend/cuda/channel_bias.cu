// Per-channel bias kernels of conv2d and linear. x is viewed as [outer, C, inner] (inner = H*W
// for images, 1 for rows). The convolutions themselves are in cudnn_conv.cu.
#include "engine/backend/cuda/block_reduce.cuh"
#include "engine/backend/nn.h"

namespace cpoison::cuda {

namespace {
template <class T>
Tensor add_channel_bias_typed(const Tensor& x, const Tensor& bias, int64_t inner) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), Device::cuda);
  const int64_t channels = bias.numel();
  if (y.numel() == 0 || channels == 0 || inner == 0) return y;
  const T* px = x.data<T>();
  const T* pb = bias.data<T>();
  T* py = y.data<T>();
  for_each_index(y.numel(), [=] __device__(int64_t e) { py[e] = px[e] + pb[(e / inner) % channels]; });
  return y;
}

template <class T>
Tensor channel_sum_typed(const Tensor& x, int64_t channels, int64_t inner) {
  Tensor out = Tensor::empty({channels}, x.dtype(), Device::cuda);
  if (channels == 0) return out;
  const int64_t outer = inner > 0 ? x.numel() / (channels * inner) : 0;
  Tensor sums = Tensor::empty({channels}, DType::f64, Device::cuda);
  const T* px = x.data<T>();
  channel_sums<1>(outer, channels, inner, [=] __device__(int64_t e, int64_t) { return Sums<1>{{(double)px[e]}}; }, sums.data<double>());
  const double* ps = sums.data<double>();
  T* po = out.data<T>();
  for_each_index(channels, [=] __device__(int64_t c) { po[c] = (T)ps[c]; });
  return out;
}
}  // namespace

Tensor add_channel_bias(const Tensor& x, const Tensor& bias, int64_t inner) {
  return float_dispatch(x.dtype(), "add_channel_bias", [&](auto tag) { return add_channel_bias_typed<decltype(tag)>(x, bias, inner); });
}

Tensor channel_sum(const Tensor& x, int64_t channels, int64_t inner) {
  return float_dispatch(x.dtype(), "channel_sum", [&](auto tag) { return channel_sum_typed<decltype(tag)>(x, channels, inner); });
}

}  // namespace cpoison::cuda
