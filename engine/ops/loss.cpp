// Losses and normalisations. log_softmax is one fused, max-shifted kernel with its own backward
// (engine/backend/loss.h) over the last dim; other dims are moved last with transpose. The rest is
// composed from differentiable elementwise/reduce/index ops where that is numerically sound:
// norms are computed as sqrt(max(sum of squares, eps^2)), which equals max(norm, eps), keeps
// sqrt away from 0 and gives the exact gradient in both regimes (g / eps below eps).
// Layout letters: N batch rows, K classes.
#include "engine/ops/loss.h"

#include <limits>

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/loss.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/index.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape.h"

namespace cpoison {

namespace {
void check_float(const Tensor& x, const char* op, const char* name) {
  CP_CHECK(x.defined(), op, name, " is undefined");
  CP_CHECK(is_floating(x.dtype()), op, name, " must be f32 or f64, got ", x.describe());
}

int64_t wrap_dim(int64_t d, const Tensor& x, const char* op) {
  const int64_t rank = x.dim();
  const int64_t i = d < 0 ? d + rank : d;
  CP_CHECK(i >= 0 && i < rank, op, "dim ", d, " out of range for ", x.describe(), " (valid: ", -rank, " to ", rank - 1, ")");
  return i;
}

void check_pair(const Tensor& a, const Tensor& b, const char* op) {
  check_float(a, op, "first input");
  check_float(b, op, "second input");
  CP_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype() && a.device() == b.device(), op,
           "inputs must have one shape, dtype and device, got ", a.describe(), " and ", b.describe());
}

// max(sqrt(sum_sq), eps) as sqrt(clamp(sum_sq, eps^2, inf)) (see the file comment).
Tensor clamped_sqrt(const Tensor& sum_sq, double eps) {
  return sqrt(clamp(sum_sq, eps * eps, std::numeric_limits<double>::infinity()));
}

// log_softmax over the last dim of x (any rank >= 1).
Tensor log_softmax_last(const Tensor& x) {
  const int64_t C = x.shape().back();
  const int64_t R = C == 0 ? 0 : x.numel() / C;
  Tensor y = CP_BACKEND(x.device(), log_softmax_rows)(x.detach().contiguous().reshape({R, C}));
  Tensor out = y.reshape(x.shape()).detach();
  if (autograd::needs_record({&x})) {
    autograd::record("log_softmax", {x}, out, [y, R, C](const Tensor& g, const std::vector<bool>&) {
      Tensor gx = CP_BACKEND(g.device(), log_softmax_rows_backward)(g.contiguous().reshape({R, C}), y);
      return std::vector<Tensor>{gx.reshape(g.shape())};
    });
  }
  return out;
}
}  // namespace

Tensor log_softmax(const Tensor& x, int64_t dim) {
  check_float(x, "log_softmax", "input");
  const int64_t d = wrap_dim(dim, x, "log_softmax");
  if (d == x.dim() - 1) return log_softmax_last(x);
  return transpose(log_softmax_last(transpose(x, d, -1)), d, -1);
}

Tensor softmax(const Tensor& x, int64_t dim) {
  check_float(x, "softmax", "input");
  // exp of a log-softmax (every value <= 0) cannot overflow; the gradient composes exactly.
  return exp(log_softmax(x, dim));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  check_float(logits, "cross_entropy", "logits");
  CP_CHECK(labels.defined(), "cross_entropy", "labels are undefined");
  CP_CHECK(logits.dim() == 2, "cross_entropy", "logits must be [N, K], got ", logits.describe());
  const int64_t N = logits.size(0), K = logits.size(1);
  CP_CHECK(labels.dtype() == DType::i64 && labels.dim() == 1 && labels.size(0) == N, "cross_entropy",
           "labels must be i64 [", N, "] to match logits ", logits.describe(), ", got ", labels.describe());
  CP_CHECK(labels.device() == logits.device(), "cross_entropy", "labels on ", labels.device(), " but logits on ", logits.device());
  CP_CHECK(N > 0 && K > 0, "cross_entropy", "needs at least one row and one class, got logits ", logits.describe());
  // Checked on the host: a bad label would otherwise read outside a row in the gather kernel.
  const std::vector<int64_t> host = labels.to_vector<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    CP_CHECK(host[i] >= 0 && host[i] < K, "cross_entropy", "label ", host[i], " at row ", i, " is out of range [0, ", K,
             ") for K = ", K, " classes");
  return neg(mean(gather1(log_softmax(logits, 1), labels)));
}

Tensor mse_loss(const Tensor& a, const Tensor& b) {
  check_pair(a, b, "mse_loss");
  CP_CHECK(a.numel() > 0, "mse_loss", "inputs are empty: ", a.describe());
  return mean(square(sub(a, b)));
}

Tensor l2_normalize(const Tensor& x, int64_t dim, double eps) {
  check_float(x, "l2_normalize", "input");
  const int64_t d = wrap_dim(dim, x, "l2_normalize");
  CP_CHECK(eps >= 0, "l2_normalize", "eps must be >= 0, got ", eps);
  return div(x, clamped_sqrt(sum(square(x), {d}, true), eps));
}

Tensor cosine_similarity(const Tensor& a, const Tensor& b, int64_t dim, double eps) {
  check_pair(a, b, "cosine_similarity");
  const int64_t d = wrap_dim(dim, a, "cosine_similarity");
  CP_CHECK(eps >= 0, "cosine_similarity", "eps must be >= 0, got ", eps);
  Tensor dot = sum(mul(a, b), {d});
  // |a||b| = sqrt(|a|^2 |b|^2): one sqrt, kept >= eps (no infinite sqrt gradient at 0).
  Tensor norms = clamped_sqrt(mul(sum(square(a), {d}), sum(square(b), {d})), eps);
  return div(dot, norms);
}

}  // namespace cpoison
