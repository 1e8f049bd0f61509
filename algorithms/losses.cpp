#include "algorithms/losses.h"

#include <algorithm>
#include <vector>

#include "algorithms/data_parallel.h"  // issue #15: global negatives under mpirun
#include "engine/ops/ops.h"

namespace cpoison::algorithms {
namespace {

void check_embeddings(const char* where, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  CP_CHECK(a.defined() && b.defined(), where, "undefined input");
  CP_CHECK(a.dim() == 2, where, a_name, " must be [B, D], got ", a.shape());
  CP_CHECK(a.shape() == b.shape(), where, a_name, " ", a.shape(), " and ", b_name, " ", b.shape(),
           " must have the same shape [B, D]");
  CP_CHECK(a.size(0) >= 1 && a.size(1) >= 1, where, a_name, " ", a.shape(), " is empty");
  CP_CHECK(is_floating(a.dtype()) && a.dtype() == b.dtype(), where, "expected one float dtype, got ",
           dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  CP_CHECK(a.device() == b.device(), where, "inputs on different devices");
}

}  // namespace

Tensor nt_xent_loss(const Tensor& z1, const Tensor& z2, double temperature) {
  const char* where = "nt_xent_loss";
  check_embeddings(where, z1, "z1", z2, "z2");
  CP_CHECK(temperature > 0, where, "temperature must be > 0, got ", temperature);
  if (distributed::data_parallel()) return nt_xent_loss_global(z1, z2, temperature);  // issue #15
  const int64_t b = z1.size(0), n = 2 * b;
  Tensor z = l2_normalize(concat({z1, z2}, 0), 1);
  Tensor sim = mul_scalar(matmul(z, transpose(z, 0, 1)), 1.0 / temperature);  // [2B, 2B]
  // Drop the self-pairs exactly (rather than adding a large negative) by picking the
  // off-diagonal entries of each row: row i keeps columns j != i, in order, so a column j > i
  // moves one place left.
  std::vector<int64_t> keep;
  keep.reserve(n * (n - 1));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      if (j != i) keep.push_back(i * n + j);
  Tensor keep_t = Tensor::from_vector(keep, {(int64_t)keep.size()}, DType::i64, z1.device());
  Tensor logits = index_select0(sim.reshape({n * n, 1}), keep_t).reshape({n, n - 1});
  std::vector<int64_t> positive(n);
  for (int64_t i = 0; i < n; ++i) positive[i] = i < b ? i + b - 1 : i - b;
  Tensor labels = Tensor::from_vector(positive, {n}, DType::i64, z1.device());
  return cross_entropy(logits, labels);
}

Tensor moco_infonce_loss(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature) {
  const char* where = "moco_infonce_loss";
  check_embeddings(where, q, "q", k, "k");
  CP_CHECK(temperature > 0, where, "temperature must be > 0, got ", temperature);
  CP_CHECK(queue.defined() && queue.dim() == 2 && queue.size(1) == q.size(1), where, "queue must be [K, ",
           q.size(1), "], got ", queue.defined() ? queue.shape() : Shape{});
  CP_CHECK(queue.dtype() == q.dtype() && queue.device() == q.device(), where, "queue ", queue.describe(),
           " must match q ", q.describe());
  const int64_t b = q.size(0);
  Tensor qn = l2_normalize(q, 1), kn = l2_normalize(k, 1);
  Tensor positive = sum(mul(qn, kn), {1}, true);  // [B, 1]
  Tensor logits = positive;
  if (queue.size(0) > 0) logits = concat({positive, matmul(qn, transpose(queue.detach(), 0, 1))}, 1);
  logits = mul_scalar(logits, 1.0 / temperature);
  Tensor labels = Tensor::zeros({b}, DType::i64, q.device());
  return cross_entropy(logits, labels);
}

Tensor negative_cosine_loss(const Tensor& p, const Tensor& z) {
  check_embeddings("negative_cosine_loss", p, "p", z, "z");
  return neg(mean(cosine_similarity(p, z, 1)));
}

Tensor byol_symmetric_loss(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2) {
  return mul_scalar(add(negative_cosine_loss(p1, z2), negative_cosine_loss(p2, z1)), 0.5);
}

Tensor class_separability_loss(const Tensor& x, const Tensor& labels, bool detach_spread) {
  const char* where = "class_separability_loss";
  CP_CHECK(x.defined() && labels.defined(), where, "undefined input");
  CP_CHECK(x.dim() == 2 && x.size(0) >= 1 && x.size(1) >= 1, where, "x must be a non-empty [B, D], got ", x.shape());
  CP_CHECK(is_floating(x.dtype()), where, "x must be a float tensor, got ", dtype_name(x.dtype()));
  CP_CHECK(labels.dim() == 1 && labels.size(0) == x.size(0), where, "labels must be [", x.size(0), "], got ",
           labels.shape());
  const int64_t b = x.size(0);
  // Group the rows by class on the host (labels are data, not differentiable): the classes
  // present, in increasing order, and each row's position among them.
  std::vector<int64_t> lab = labels.to(Device::cpu).to_vector<int64_t>();
  std::vector<int64_t> present;
  for (int64_t l : lab) {
    CP_CHECK(l >= 0, where, "labels must be >= 0, got ", l);
    present.push_back(l);
  }
  std::sort(present.begin(), present.end());
  present.erase(std::unique(present.begin(), present.end()), present.end());
  const int64_t p = (int64_t)present.size();
  if (p < 2) return mul_scalar(sum(x), 0.0);  // zero, with a (zero) gradient path to x
  std::vector<int64_t> pos(b);
  std::vector<double> count(p, 0.0);
  for (int64_t i = 0; i < b; ++i) {
    pos[i] = std::lower_bound(present.begin(), present.end(), lab[i]) - present.begin();
    count[pos[i]] += 1;
  }
  // A [P, B]: row c averages the rows of class c, so centres = A x and spreads = A dist.
  std::vector<double> avg(p * b, 0.0);
  for (int64_t i = 0; i < b; ++i) avg[pos[i] * b + i] = 1.0 / count[pos[i]];
  const Device dev = x.device();
  Tensor a = Tensor::from_vector(avg, {p, b}, x.dtype(), dev);
  Tensor pos_t = Tensor::from_vector(pos, {b}, DType::i64, dev);
  constexpr double kTiny = 1e-12;
  auto norms = [&](const Tensor& v) { return sqrt(add_scalar(sum(square(v), {1}), kTiny)); };  // [R, D] -> [R]

  Tensor centres = matmul(a, x);                                    // [P, D]
  Tensor dist = norms(sub(x, index_select0(centres, pos_t)));       // [B]
  Tensor spread = matmul(a, dist.reshape({b, 1})).reshape({p});     // [P]
  if (detach_spread) spread = spread.detach();
  std::vector<int64_t> first, second;
  for (int64_t c = 0; c < p; ++c)
    for (int64_t d = 0; d < p; ++d)
      if (c != d) first.push_back(c), second.push_back(d);
  const int64_t pairs = (int64_t)first.size();
  Tensor c_t = Tensor::from_vector(first, {pairs}, DType::i64, dev), d_t = Tensor::from_vector(second, {pairs}, DType::i64, dev);
  Tensor separation = norms(sub(index_select0(centres, c_t), index_select0(centres, d_t)));  // [P(P-1)]
  Tensor spreads = add_scalar(add(index_select0(spread, c_t), index_select0(spread, d_t)), 1e-5);
  return mean(div(spreads, add_scalar(separation, 1e-5)));
}

}  // namespace cpoison::algorithms
