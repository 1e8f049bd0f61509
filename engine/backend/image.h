// Image kernels on contiguous NCHW float tensors (N images, C channels, H rows, W columns).
// Every tensor argument is contiguous and on the same device as x; outputs are new contiguous
// tensors of x's dtype. The ops layer (engine/ops/image.cpp, augment/) checks shapes and ranges.
#pragma once
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
}  // namespace cpoison
