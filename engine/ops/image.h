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

}  // namespace cpoison
