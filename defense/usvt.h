// Matrix completion by universal singular value thresholding (USVT, Chatterjee 2015), the
// paper's best defence (section 6): drop each pixel with probability p, estimate the image from
// the observed pixels by a low-rank reconstruction, clip to [0, 1].
// Layout letters: N images, C channels, H rows, W columns; M matrices of R rows, Cm columns.
//
// For one R x Cm matrix X with observed set Ω (each entry observed with probability q = 1 - p):
//   Y = X on Ω, 0 elsewhere;   Y = U diag(s) V^T  (s descending, k = min(R, Cm) values)
//   kept = { i < floor(keep * k) (at least 1) : s_i >= τ }
//   X̂ = clamp( (1/q) Σ_{i in kept} s_i u_i v_i^T , 0, 1 )
// with τ = 0 (rank rule only, the default: keep = 0.8, the top 80% as in ME-Net's public code),
// τ = (2 + η) sqrt(max(R, Cm) q) (Chatterjee's universal threshold, η = 0.01; valid for
// entries in [-1, 1], which pixels in [0, 1] are), or a given absolute τ.
// An image is completed per channel (C matrices H x W, mode channel) or with its channels side
// by side (one matrix H x CW, mode stacked: columns c*W .. c*W+W-1 hold channel c). One pixel
// mask [N, H, W] is shared by the channels: a dropped pixel loses all of its channels.
//
// Nothing here is recorded by autograd (a defence on data, not a layer): outputs never require grad.
#pragma once
#include <cstdint>
#include <string>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpoison::defense {

enum class UsvtMode { channel, stacked };
enum class UsvtThreshold { none, chatterjee, absolute };
const char* usvt_mode_name(UsvtMode m);  // "channel", "stacked"

struct UsvtOptions {
  double p = 0.25;     // probability of dropping a pixel, in [0, 1)
  double keep = 0.8;   // fraction of the singular values kept (top floor(keep * k), at least 1), in (0, 1]
  UsvtThreshold threshold = UsvtThreshold::none;
  double threshold_value = 0;  // τ for UsvtThreshold::absolute, >= 0
  double eta = 0.01;           // Chatterjee's η > 0
  UsvtMode mode = UsvtMode::channel;

  // Error("usvt", ...) naming the first bad field and its value.
  void validate() const;
};

// The rank cap floor(keep * min(rows, cols)) (at least 1) and the threshold τ that the
// options give for rows x cols matrices.
int64_t usvt_max_rank(const UsvtOptions& opt, int64_t rows, int64_t cols);
double usvt_threshold(const UsvtOptions& opt, int64_t rows, int64_t cols);

// singular_value_threshold (engine/ops/linalg.h), USVT's one step: matrices and mask [M, R, Cm] of one
// float dtype and device, mask entries 0/1, 1 <= max_rank, threshold >= 0, q in (0, 1].
// Error naming the argument otherwise, or naming the device when its backend lacks the kernel.
Tensor usvt_complete(const Tensor& matrices, const Tensor& mask, int64_t max_rank, double threshold, double q);

// Completes images x [N, C, H, W] (float, values in [0, 1]) from the pixels where
// observed [N, H, W] (x's dtype and device, 0/1) is 1, dividing by q = 1 - opt.p.
// Returns [N, C, H, W] in [0, 1]. Error on bad shapes or options.
Tensor usvt_images(const Tensor& x, const Tensor& observed, const UsvtOptions& opt);

// The observed-pixel mask [n, h, w]: 1 with probability 1 - p (Philox bernoulli from gen,
// n*h*w counters), on `device`.
Tensor draw_pixel_mask(int64_t n, int64_t h, int64_t w, double p, Generator& gen, DType dtype, Device device);

// draw_pixel_mask + usvt_images: the matrix-completion defence on a batch.
Tensor matrix_completion(const Tensor& x, const UsvtOptions& opt, Generator& gen);

}  // namespace cpoison::defense
