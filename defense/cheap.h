// The field's cheap defences against availability poisons, beside the paper's (docs/defenses.md):
// JPEG compression, grayscale, bit-depth reduction (as batch transforms of float images
// x [N, C, H, W] in [0, 1], N images, C channels, H rows, W columns), and UEraser-style training
// (the largest loss over k random augmentations of each batch, a loss hook like adversarial
// training). JPEG and bit-depth reduction quantise, so they are not differentiable: they run on
// the host and return a tensor without autograd history on x's device.
#pragma once
#include <cstdint>

#include "algorithms/learner.h"
#include "algorithms/train.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpoison::defense {

// ---- JPEG compression (libjpeg): each image is quantised to u8 (round(255 x)), compressed at
// `quality` (4:2:0 chroma subsampling for colour, libjpeg's defaults otherwise) and decoded back
// to [0, 1]. 1-channel images are coded as greyscale JPEGs, 3-channel ones as YCbCr.
struct JpegOptions {
  int64_t quality = 75;   // 1..100 (libjpeg's scale; Pillow's default is 75)
  void validate() const;  // Error("jpeg", ...) naming the field and value
};
Tensor jpeg_compress(const Tensor& x, const JpegOptions& opt);

// ---- Grayscale for colour data: 0.299 R + 0.587 G + 0.114 B written to all three channels
// (the image keeps its shape, so the model is unchanged). Error for 1-channel data.
Tensor grayscale_images(const Tensor& x);

// ---- Bit-depth reduction (Xu et al.'s feature squeezing): round(x (2^b - 1)) / (2^b - 1).
struct BitDepthOptions {
  int64_t bits = 4;       // 1..8
  void validate() const;  // Error("bits", ...)
};
Tensor reduce_bit_depth(const Tensor& x, const BitDepthOptions& opt);

// ---- UEraser-style training (Qin et al. 2023, "Learning the Unlearnable: Adversarial
// Augmentations Suppress Unlearnable Example Attacks"): each training step draws k augmentations
// of the batch and trains on the largest loss. Our augmentations (on the views after the
// training pipeline, in pixels: de-normalised, augmented, re-normalised): colour jitter with
// probability 1 (brightness, contrast, saturation 0.5 strength, hue 0.25 strength, each scaled by
// `strength`; 1-channel data: brightness and contrast), a random flip, and uniform noise in
// [-noise, noise] per pixel, clamped to [0, 1]. Supervised: per image, the largest of the k
// cross-entropies (UEraser-Max); contrastive (SimCLR, BYOL): the largest of the k batch losses.
// The cost is k forward and backward passes per step.
struct UEraserOptions {
  int64_t k = 5;                // draws per step, >= 1 (the paper's K = 5)
  double strength = 1.0;        // colour-jitter strength factor, in [0, 2]
  double noise = 8.0 / 255.0;   // uniform noise amplitude, in [0, 1]
  void validate() const;        // Error("ueraser", ...)
};
// The hook (algorithms::TrainConfig::step_loss) for a run under cfg (supervised or contrastive,
// by cfg.algo); the views' normalisation is cfg.augment's. Error for MoCo (each loss enqueues
// keys).
algorithms::TrainConfig::StepLoss ueraser_loss_hook(const algorithms::TrainConfig& cfg, const UEraserOptions& opt);

}  // namespace cpoison::defense
