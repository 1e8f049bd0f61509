#include "algorithms/data_parallel.h"

#include <vector>

#include "engine/ops/ops.h"

namespace cpoison::algorithms {

Tensor nt_xent_loss_global(const Tensor& z1, const Tensor& z2, double temperature) {
  const char* where = "nt_xent_loss_global";
  CP_CHECK(z1.defined() && z2.defined() && z1.dim() == 2 && z1.shape() == z2.shape() && z1.size(0) >= 1, where,
           "z1 and z2 must be [B, D] of one shape, got ", z1.defined() ? z1.describe() : std::string("undefined"),
           " and ", z2.defined() ? z2.describe() : std::string("undefined"));
  CP_CHECK(temperature > 0, where, "temperature must be > 0, got ", temperature);
  const int64_t b = z1.size(0), k = distributed::size(), r = distributed::rank();
  const int64_t N = b * k, n = 2 * N, a = 2 * b;  // global views per side, global rows, local anchors
  // Global rows in the order of the one-process loss: every rank's z1 rows, then every rank's z2.
  const auto features = distributed::Traffic::features;
  Tensor z = l2_normalize(
      concat({distributed::all_gather_rows(z1, features), distributed::all_gather_rows(z2, features)}, 0), 1);
  std::vector<int64_t> anchor(a);
  for (int64_t i = 0; i < b; ++i) anchor[i] = r * b + i, anchor[b + i] = N + r * b + i;
  Tensor za = index_select0(z, Tensor::from_vector(anchor, {a}, DType::i64, z1.device()));
  Tensor sim = mul_scalar(matmul(za, transpose(z, 0, 1)), 1.0 / temperature);  // [2b, 2N]
  std::vector<int64_t> keep, positive(a);
  keep.reserve(a * (n - 1));
  for (int64_t i = 0; i < a; ++i) {
    const int64_t g = anchor[i], p = g < N ? g + N : g - N;
    for (int64_t j = 0; j < n; ++j)
      if (j != g) keep.push_back(i * n + j);
    positive[i] = p < g ? p : p - 1;  // columns after the dropped self-pair move one place left
  }
  Tensor keep_t = Tensor::from_vector(keep, {(int64_t)keep.size()}, DType::i64, z1.device());
  Tensor logits = index_select0(sim.reshape({a * n, 1}), keep_t).reshape({a, n - 1});
  return cross_entropy(logits, Tensor::from_vector(positive, {a}, DType::i64, z1.device()));
}

bool data_parallel_training(Algo algo, int64_t batch_size) {
  if (distributed::size() == 1) return false;
  distributed::local_slice(batch_size, "train");  // an Error unless the batch splits evenly
  return true;
}

double global_mean(const Tensor& loss) { return distributed::all_reduce_sum(loss.item()) / distributed::size(); }

std::vector<Tensor> parameter_list(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<Tensor> out;
  out.reserve(named.size());
  for (const auto& np : named) out.push_back(np.second);
  return out;
}

}  // namespace cpoison::algorithms
