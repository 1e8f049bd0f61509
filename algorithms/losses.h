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

}  // namespace cpoison::algorithms
