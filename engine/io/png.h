// PNG pictures (noise visualisations, sample grids) through libpng's simplified API.
// Layout letters: N images, C channels, H rows, W columns.
#pragma once
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace cpoison::io {

// Writes an 8-bit PNG from an image [H, W, C] (C = 1 grey, 3 RGB, 4 RGBA) on any device:
// u8 values as they are, or f32/f64 values in [0, 1], clamped and rounded to 255 levels
// (NaN becomes 0). Writes path + ".tmp" and renames it into place. Throws Error naming the path
// for a bad shape or dtype, a missing directory or a libpng failure.
void write_png(const std::string& path, const Tensor& image);

// Reads an 8-bit PNG as u8 [H, W, channels] (channels 1: grey, 3: RGB; colour is converted to
// grey with libpng's default weights, grey replicated to RGB, alpha composited on black). Error
// naming the path when missing or not a PNG.
Tensor read_png(const std::string& path, int64_t channels);

// Tiles float images [N, C, H, W] (any device) into one host f32 picture [H', W', C], row-major
// with `columns` tiles per row (fewer when N is smaller), `pad` pixels of `pad_value` between
// the tiles and around the border: H' = rows * (H + pad) + pad, W' = cols * (W + pad) + pad,
// rows = ceil(N / cols). Throws Error for a non-4-d or non-float input, N = 0, columns < 1 or
// pad < 0.
Tensor tile_images(const Tensor& images, int64_t columns, int64_t pad = 2, double pad_value = 1.0);

}  // namespace cpoison::io
