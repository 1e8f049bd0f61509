#include "algorithms/momentum.h"

#include <algorithm>

#include "engine/distributed/ops.h"  // issue #15
#include "engine/ops/ops.h"

namespace cpoison::algorithms {

Tensor make_key_queue(int64_t k, int64_t d, Generator& gen, Device device) {
  CP_CHECK(k >= 0 && d >= 1, "make_key_queue", "queue shape must be [K >= 0, D >= 1], got [", k, ", ", d, "]");
  autograd::NoGradGuard no_grad;
  if (k == 0) return Tensor::zeros({0, d}, DType::f32, device);
  return l2_normalize(normal({k, d}, 0.0, 1.0, gen, DType::f32, device), 1);
}

int64_t enqueue_ring(const Tensor& queue, int64_t ptr, const Tensor& rank_keys) {
  const char* where = "enqueue_ring";
  // issue #15: under mpirun every rank enqueues the keys of the whole global batch, in rank order
  // (the one-process order), so that the queues stay equal.
  const Tensor keys = distributed::data_parallel() && rank_keys.defined()
                          ? distributed::all_gather_rows(rank_keys.detach(), distributed::Traffic::moco_keys)
                          : rank_keys;
  CP_CHECK(queue.defined() && queue.dim() == 2, where, "queue must be [K, D], got ",
           queue.defined() ? queue.shape() : Shape{});
  CP_CHECK(keys.defined() && keys.dim() == 2 && keys.size(1) == queue.size(1), where, "keys must be [B, ",
           queue.size(1), "] to match the queue ", queue.shape(), ", got ", keys.defined() ? keys.shape() : Shape{});
  const int64_t k = queue.size(0), b = keys.size(0);
  if (b == 0) return ptr;
  CP_CHECK(k > 0, where, "cannot enqueue ", b, " keys into an empty queue ", queue.shape());
  CP_CHECK(ptr >= 0 && ptr < k, where, "pointer ", ptr, " outside the queue of ", k, " rows");
  Tensor src = keys.detach();
  int64_t first_key = 0;
  int64_t write_at = ptr;
  if (b > k) {  // only the last K keys survive; the ring would have put key i at (ptr + i) mod K
    first_key = b - k;
    write_at = (ptr + first_key) % k;
  }
  int64_t remaining = b - first_key;
  while (remaining > 0) {
    const int64_t n = std::min(remaining, k - write_at);
    Tensor dst = queue.slice0(write_at, write_at + n);
    dst.copy_(src.slice0(first_key, first_key + n));
    first_key += n;
    remaining -= n;
    write_at = (write_at + n) % k;
  }
  return (ptr + b) % k;
}

void ema_update(nn::Module& target, const nn::Module& online, double momentum) {
  CP_CHECK(momentum >= 0 && momentum <= 1, "ema_update", "momentum must be in [0, 1], got ", momentum);
  auto tp = target.named_parameters();
  auto op = online.named_parameters();
  CP_CHECK(tp.size() == op.size(), "ema_update", "the momentum copy has ", tp.size(), " parameters, the online module ",
           op.size());
  for (size_t i = 0; i < tp.size(); ++i)
    CP_CHECK(tp[i].first == op[i].first && tp[i].second.shape() == op[i].second.shape(), "ema_update",
             "parameter ", i, " differs: ", tp[i].first, " ", tp[i].second.shape(), " vs ", op[i].first, " ",
             op[i].second.shape());
  target.ema_update_from(online, momentum);
}

}  // namespace cpoison::algorithms
