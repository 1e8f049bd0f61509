// The paper's augmentation defences besides matrix completion (section 6 (b)): random noise,
// Gaussian smoothing and Cutout, as batch transforms of float images x [N, C, H, W] (N images,
// C channels, H rows, W columns) with values in [0, 1], on x's device. Each is differentiable
// w.r.t. x (built from engine ops) and draws its randomness from the given Generator, so a
// (seed, stream, offset) reproduces it on the CPU and on CUDA alike.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpoison::defense {

// ---- Random noise: x + n, n ~ N(0, std^2) i.i.d. per element (x.numel() Philox counters),
// then clamp to [0, 1] when clip is on.
struct NoiseOptions {
  double std = 8.0 / 255.0;  // the poison's ε: the smallest noise on the poison's own scale
  bool clip = true;
  void validate() const;  // Error("noise", ...) naming the field and value
};
Tensor gaussian_noise(const Tensor& x, const NoiseOptions& opt, Generator& gen);

// ---- Gaussian smoothing (torchvision's gaussian_blur): per channel, separable, the kernel
//   g[t] = exp(-((t - (k-1)/2) / sigma)^2 / 2) / Σ_t' (same),  t = 0..k-1,
// applied along W then along H, with reflect padding ("d c b | a b c d | c b a"), so a constant
// image stays constant. sigma <= 0 picks torchvision's default 0.3 ((k - 1) / 2 - 1) + 0.8.
struct SmoothOptions {
  int64_t kernel = 3;  // odd, >= 1
  double sigma = 0;    // <= 0: the default above
  double resolved_sigma() const;
  void validate() const;  // Error("smooth", ...) naming the field and value
};
// The normalised 1-d kernel g above (k entries, summing to 1).
std::vector<double> gaussian_kernel1d(int64_t kernel, double sigma);
Tensor gaussian_smooth(const Tensor& x, const SmoothOptions& opt);

// ---- Cutout (DeVries & Taylor 2017): one square hole of side `size` per image, filled with
// 0, centred at (cy, cx) ~ (randint[0, H), randint[0, W)) (two counters per image, cy first):
// rows cy - size/2 .. cy - size/2 + size - 1 (integer division), columns alike, clipped to the
// image. For even sizes this is DeVries's code exactly; odd sizes cut exactly size rows too.
struct CutoutOptions {
  int64_t size = 16;      // DeVries's CIFAR-10 setting
  void validate() const;  // Error("cutout", ...) naming the field and value
};
struct CutoutBox {
  int64_t top, left, bottom, right;  // rows [top, bottom), columns [left, right), inside the image
};
// The boxes of n images of h x w (draws 2n counters from gen).
std::vector<CutoutBox> draw_cutout_boxes(int64_t n, int64_t h, int64_t w, const CutoutOptions& opt, Generator& gen);
// x with box i zeroed in every channel of image i (boxes.size() == N).
Tensor apply_cutout(const Tensor& x, const std::vector<CutoutBox>& boxes);
Tensor cutout(const Tensor& x, const CutoutOptions& opt, Generator& gen);

}  // namespace cpoison::defense
