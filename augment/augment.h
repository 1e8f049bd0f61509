// Differentiable data augmentations for contrastive learning (spec: reference-implementation §5).
// Images are float NCHW tensors (N images, C channels = 1 or 3, H rows, W columns) with values
// in [0, 1]. Every op here is differentiable w.r.t. the pixel values and runs on x's device.
//
// Drawing the random parameters is separate from applying them, so that the same draws can be
// applied to a clean and a poisoned copy of a batch:
//
//   AugmentConfig cfg = AugmentConfig::simclr_cifar(32);
//   AugmentParams p = sample_params(cfg, x.size(0), x.size(2), x.size(3), gen);
//   Tensor view_poisoned = apply(x_poisoned, p, cfg), view_clean = apply(x_clean, p, cfg);
//   Tensor view = augment(x, cfg, gen);  // both steps at once
//
// Pipeline order in apply(): crop+resize, horizontal flip, colour jitter (its four ops in
// params.jitter_order, each clamping to [0, 1]), grayscale, normalize.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpoison::augment {

// Per-channel normalisation statistics of the datasets the spec names.
inline const std::vector<double> kCifar10Mean{0.4914, 0.4822, 0.4465}, kCifar10Std{0.2023, 0.1994, 0.2010};
inline const std::vector<double> kCifar100Mean{0.5071, 0.4867, 0.4408}, kCifar100Std{0.2675, 0.2565, 0.2761};
inline const std::vector<double> kFashionMnistMean{0.2860}, kFashionMnistStd{0.3530};

// The four colour-jitter operations; AugmentParams::jitter_order lists them in application order.
enum class JitterOp : uint8_t { brightness = 0, contrast = 1, saturation = 2, hue = 3 };

struct AugmentConfig {
  // Output size of the pipeline (the crop window is resized to it).
  int64_t out_h = 32, out_w = 32;

  // RandomResizedCrop: area fraction ~ U(scale_min, scale_max), log aspect ratio (w/h) ~
  // U(log ratio_min, log ratio_max). Disabled: the whole image is used (resized only when the
  // output size differs from the input size).
  bool crop = true;
  double scale_min = 0.2, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;

  bool flip = true;
  double flip_p = 0.5;

  // ColorJitter, applied to each image with probability jitter_p. Factors: brightness, contrast,
  // saturation ~ U(max(0, 1 - strength), 1 + strength); hue shift ~ U(-strength, strength) turns.
  // random_jitter_order: one random order of the four ops per batch (as the spec says);
  // otherwise brightness, contrast, saturation, hue. A disabled op keeps its identity factor.
  bool jitter = true;
  double jitter_p = 0.8;
  bool brightness = true, contrast = true, saturation = true, hue = true;
  double brightness_strength = 0.4, contrast_strength = 0.4, saturation_strength = 0.4, hue_strength = 0.1;
  bool random_jitter_order = true;

  // RandomGrayscale (3-channel images only): gray written to all three channels.
  bool grayscale = true;
  double grayscale_p = 0.2;

  // Per-channel (x - mean) / std at the end of the pipeline; mean/std need C entries.
  bool normalize = true;
  std::vector<double> mean = kCifar10Mean, std = kCifar10Std;

  // The spec §5 pipeline for CIFAR-10 (set mean/std to kCifar100* for CIFAR-100).
  static AugmentConfig simclr_cifar(int64_t out_size = 32);
  // The CPU-scale pipeline (docs/cpu-scale-reference.md): 28x28 Fashion-MNIST, 1 channel; crop, flip
  // and, with p 0.8, brightness then contrast (fixed order); normalize 0.2860 / 0.3530.
  static AugmentConfig cpu_small();

  // Throws cpoison::Error("AugmentConfig", ...) naming the first bad field.
  void validate() const;
};

// The named pipelines (algorithms::make_augment builds them for a dataset): the spec's §5
// SimCLR list, docs/cpu-scale-reference.md's, crop + flip (the linear probe's training
// transform), normalisation only.
enum class Recipe { simclr, cpu_small, crop_flip, none };
// "simclr" | "cpu-small" | "crop-flip" | "none"; Error listing them otherwise.
Recipe parse_recipe(const std::string& name);
const char* recipe_name(Recipe recipe);

// The augmentation strength s of Wang et al.'s AUE / AAP ("Efficient Availability Attacks against
// Supervised and Contrastive Learning Simultaneously", 2024; EhanW/AUE-AAP, utils.Augment):
// crop area U(max(1 - 0.9 s, 0.05), scale_max); brightness, contrast and saturation strength 0.4 s,
// hue 0.1 s; jitter probability min(0.99, 0.8 s); grayscale probability 0.2 s. Everything else
// (which ops are on, flip, ratio range, jitter order, output size, normalisation) is base's.
// s = 1 is the SimCLR list with a wider crop range (area from 0.1, not 0.2). Error unless
// 0 <= s <= 2 (beyond, the jitter strength passes 0.8 and the crop bound is already at 0.05).
AugmentConfig with_strength(const AugmentConfig& base, double s);

// The random draws for one batch of n images of size in_h x in_w. Vectors have n entries
// (boxes 4n). Images whose jitter flag is 0 carry identity factors (1, 1, 1, hue 0).
struct AugmentParams {
  int64_t n = 0, in_h = 0, in_w = 0;
  std::vector<double> boxes;   // rows (top, left, height, width) in pixels
  std::vector<uint8_t> flip;   // 1: mirror along W
  std::vector<uint8_t> jitter; // 1: colour jitter applied to this image
  std::vector<double> brightness, contrast, saturation, hue;
  std::array<JitterOp, 4> jitter_order{JitterOp::brightness, JitterOp::contrast, JitterOp::saturation, JitterOp::hue};
  std::vector<uint8_t> grayscale;  // 1: converted to gray

  // Parameters that change nothing (full-image boxes, no flip, identity factors, no gray).
  static AugmentParams identity(int64_t n, int64_t in_h, int64_t in_w);
};

// Draws a batch's parameters from gen (host-side; a (seed, stream, offset) reproduces them).
// Crop boxes follow torchvision's RandomResizedCrop: up to 10 tries of w = round(sqrt(A r)),
// h = round(sqrt(A / r)), accepted if 0 < w <= in_w and 0 < h <= in_h, then top ~ randint[0,
// in_h - h], left ~ randint[0, in_w - w]; else the centre crop. Throws Error on a bad config or size.
AugmentParams sample_params(const AugmentConfig& cfg, int64_t n, int64_t in_h, int64_t in_w, Generator& gen);

// Applies params to x [n, C, in_h, in_w] (C = 1 or 3; saturation, hue and grayscale leave
// 1-channel images alone). Returns [n, C, cfg.out_h, cfg.out_w] on x's device; differentiable
// w.r.t. x. Throws Error when x does not match params or cfg.
Tensor apply(const Tensor& x, const AugmentParams& params, const AugmentConfig& cfg);
// sample_params + apply.
Tensor augment(const Tensor& x, const AugmentConfig& cfg, Generator& gen);

// ---- The single ops (x [N, C, H, W] float; per-image values have N entries).
// [N, 3, H, W] -> [N, 1, H, W]: 0.299 R + 0.587 G + 0.114 B. A 1-channel x is returned as is.
Tensor rgb_to_grayscale(const Tensor& x);
// clamp(f x, 0, 1). Factors >= 0.
Tensor adjust_brightness(const Tensor& x, const std::vector<double>& factors);
// clamp(f x + (1 - f) mean(gray(x)), 0, 1), the mean taken per image. Factors >= 0.
Tensor adjust_contrast(const Tensor& x, const std::vector<double>& factors);
// clamp(f x + (1 - f) gray(x), 0, 1); 1-channel x returned as is. Factors >= 0.
Tensor adjust_saturation(const Tensor& x, const std::vector<double>& factors);
// torchvision's adjust_hue (RGB -> HSV, h += shift mod 1, HSV -> RGB), clamped to [0, 1];
// shifts in [-0.5, 0.5] turns; a shift of exactly 0 is the identity (on [0, 1] inputs);
// 1-channel x returned as is.
Tensor adjust_hue(const Tensor& x, const std::vector<double>& shifts);
// Images whose flag is nonzero become gray in all three channels; 1-channel x returned as is.
Tensor grayscale_where(const Tensor& x, const std::vector<uint8_t>& flags);
// (x - mean[c]) / std[c] per channel; mean and std need C entries, std > 0.
Tensor normalize(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& std);

// x [B,C,H,W] shifted by independent whole-pixel offsets in [-max_shift, max_shift] along H
// and W (drawn from gen: top then left per image), the uncovered border filled with zeros:
// torchvision's RandomCrop(size, padding = max_shift). max_shift 0 returns x.
Tensor random_translate(const Tensor& x, int64_t max_shift, Generator& gen);

}  // namespace cpoison::augment
