// Losses of the self-supervised algorithms, written with differentiable engine ops so that a
// gradient reaches whatever requires one: the online weights, and through the views the
// poison δ. Shape letters: B batch, D embedding dimension, K queue length.
//
// Every loss accepts raw (unnormalised) embeddings and normalises them itself, so a caller may
// pass head outputs directly; normalising an already unit-length row changes nothing.
// Float dtypes (f32, f64); all tensors on one device. Every shape error is a cpoison::Error
// naming the loss and the shapes.
#pragma once
#include "engine/tensor.h"

namespace cpoison::algorithms {

// NT-Xent (SimCLR): the 2B rows of [z1; z2] are anchors; row i's positive is its other view,
// the 2B-2 other rows are its negatives, the self-pair is left out (not merely down-weighted).
// Returns the mean over the 2B anchors of -log softmax(sim_i / temperature)[positive], where
// sim is the cosine similarity. z1, z2 [B, D], B >= 1; temperature > 0.
Tensor nt_xent_loss(const Tensor& z1, const Tensor& z2, double temperature);

// InfoNCE of MoCo: logits [q·k, q·queueᵀ] / temperature with the positive at index 0, mean
// cross-entropy over the B queries. q, k [B, D]; queue [K, D] holds unit-length keys (rows) and
// is used detached (negatives get no gradient). K may be 0 (then the loss is 0).
Tensor moco_infonce_loss(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature);

// BYOL's regression term: mean over the batch of -cos(p, z). p, z [B, D]. Whether z carries a
// gradient is the caller's choice (detach it for the authors' release behaviour).
Tensor negative_cosine_loss(const Tensor& p, const Tensor& z);

// The symmetric BYOL loss: ( negative_cosine_loss(p1, z2) + negative_cosine_loss(p2, z1) ) / 2,
// p the online predictions of views 1 and 2, z the target projections of views 1 and 2.
Tensor byol_symmetric_loss(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2);

// Class-wise separability discriminant (CSD) of Ren et al., "Transferable Unlearnable Examples"
// (ICLR 2023; renjie3/TUE, get_linear_noise_csd_loss), a Davies-Bouldin-style ratio that is
// small when the classes form tight, far-apart clusters. For the classes c present in the batch
// (P of them): centre mu_c = mean of the rows x_i with label c; spread S_c = mean_i |x_i - mu_c|;
// centre distance M_cd = |mu_c - mu_d| (Euclidean norms). Then
//   CSD = mean over the P(P-1) ordered pairs c != d of (S_c + S_d + 1e-5) / (M_cd + 1e-5),
// the 1e-5 terms being the release's. Rows are used as given (no normalisation): TUE applies
// it to the flattened perturbations in pixel units; pass unit-length embeddings for a feature
// space version. The norms are sqrt(|v|^2 + 1e-12) so that a row equal to its centre (every
// row of a class-wise pattern) has a zero gradient instead of 0/0. Fewer than two classes in
// the batch: 0 (the gradient is zero too), as in the release.
// detach_spread: treat the S_c as constants, as the release does in effect (it rebuilds them
// with torch.tensor, which drops their graph), so that only the centre distances push; false
// (default) differentiates the whole formula.
// x [B, D] float; labels i64 [B] with values in [0, classes) (read on the host).
Tensor class_separability_loss(const Tensor& x, const Tensor& labels, bool detach_spread = false);

}  // namespace cpoison::algorithms
