// Heads that sit on an encoder's features [N, D] (N batch, D feature dim). Each is an
// nn::Sequential (children "0", "1", ...) or nn::Linear with the PyTorch names of the same
// nn.Sequential / nn.Linear, so the heads map one-to-one onto the reference release's.
// Every builder throws cpoison::Error naming the head and the dimension when a dimension < 1.
#pragma once
#include <cstdint>
#include <memory>

#include "engine/nn/layers.h"

namespace cpoison::models {

// SimCLR / MoCo v2 projector: Linear(in, hidden) -> ReLU -> Linear(hidden, out).
// hidden_dim = 0 means hidden = in (the release's Linear(512, 512)).
std::shared_ptr<nn::Sequential> make_projection_head(int64_t in_dim, int64_t out_dim = 128, int64_t hidden_dim = 0);

// BYOL MLP: Linear(in, hidden) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, out).
// Projector: make_byol_mlp(D, 4096, 256); predictor: make_byol_mlp(256, 4096, 256).
std::shared_ptr<nn::Sequential> make_byol_mlp(int64_t in_dim, int64_t hidden_dim = 4096, int64_t out_dim = 256);
inline std::shared_ptr<nn::Sequential> make_byol_projector(int64_t in_dim, int64_t hidden_dim = 4096, int64_t out_dim = 256) {
  return make_byol_mlp(in_dim, hidden_dim, out_dim);
}
inline std::shared_ptr<nn::Sequential> make_byol_predictor(int64_t dim = 256, int64_t hidden_dim = 4096) {
  return make_byol_mlp(dim, hidden_dim, dim);
}

// Linear probe / supervised head: Linear(in, classes).
std::shared_ptr<nn::Linear> make_linear_classifier(int64_t in_dim, int64_t classes);

}  // namespace cpoison::models
