// Losses and normalisations. Float dtypes; labels are i64 class indices.
#pragma once
#include "engine/tensor.h"

namespace cpoison {

Tensor log_softmax(const Tensor& x, int64_t dim);
Tensor softmax(const Tensor& x, int64_t dim);
// Mean over the batch of -log softmax(logits)[label]; logits [N, K], labels i64 [N] in [0, K).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);
Tensor mse_loss(const Tensor& a, const Tensor& b);  // mean of squared differences
// x / max(||x||_2, eps) along dim.
Tensor l2_normalize(const Tensor& x, int64_t dim, double eps = 1e-12);
// Cosine similarity along dim (the dim is removed): a·b / max(|a||b|, eps).
Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim, double eps = 1e-8);

}  // namespace cpoison
