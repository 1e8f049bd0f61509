// Image resampling ops on NCHW float tensors.
#pragma once
#include "engine/tensor.h"

namespace cpoison {

// Crops a window from each image and resizes it to out_h x out_w with bilinear interpolation,
// align_corners = true (corner pixels of the window map to corner pixels of the output).
// boxes: f64 or f32 [N, 4] rows (top, left, height, width) in pixels, integers in practice
// (the window covers rows top..top+height-1). Differentiable w.r.t. x (not the boxes).
Tensor resize_window(const Tensor& x, const Tensor& boxes, int64_t out_h, int64_t out_w);
// Mirrors the images whose flag is nonzero along W; flags u8/i64/f32 [N]. Differentiable.
Tensor flip_horizontal(const Tensor& x, const Tensor& flags);
// Colour ops on RGB images [N, 3, H, W] with values in [0, 1] (the kernels' contracts:
// engine/backend/image.h). Differentiable w.r.t. x.
// ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B: [N, 1, H, W].
Tensor rgb_to_gray(const Tensor& x);
// torchvision's adjust_hue: rotate each image's hue by shifts [N] (x's dtype, turns in [-0.5, 0.5]).
Tensor hue_shift(const Tensor& x, const Tensor& shifts);

}  // namespace cpoison
