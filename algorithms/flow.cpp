#include "algorithms/flow.h"

#include <cmath>

#include "algorithms/learner.h"
#include "algorithms/losses.h"
#include "engine/autograd.h"
#include "engine/ops/ops.h"

namespace cpoison::algorithms {

const char* branch_name(Branch b) { return b == Branch::online ? "online" : "momentum"; }

BranchWeights::BranchWeights(double online, double momentum, std::string name)
    : online_(online), momentum_(momentum), name_(std::move(name)) {
  CP_CHECK(std::isfinite(online) && std::isfinite(momentum), "BranchWeights", "branch weights must be finite, got online ",
           online, " and momentum ", momentum);
  if (name_.empty()) {
    std::ostringstream s;
    s << "weights(online=" << online << ",momentum=" << momentum << ")";
    name_ = s.str();
  }
}

FlowPtr single_branch_flow() {
  static const FlowPtr flow = std::make_shared<BranchWeights>(1.0, 0.0, "single-branch");
  return flow;
}

FlowPtr dual_branch_flow() {
  static const FlowPtr flow = std::make_shared<BranchWeights>(1.0, 1.0, "dual-branch");
  return flow;
}

FlowPtr flow_of(Algo algo, const AlgoConfig& config) {
  // BYOL's byol_detach_target is the release's stop-gradient on the target projections: with it
  // the momentum branch carries nothing, whatever dual_branch says.
  bool momentum_carries = config.dual_branch && !(algo == Algo::byol && config.byol_detach_target);
  return momentum_carries ? dual_branch_flow() : single_branch_flow();
}

Tensor builtin_loss(const LearnerOutputs& out) {
  CP_CHECK(out.config != nullptr, "builtin_loss", "LearnerOutputs without the learner's config");
  const AlgoConfig& c = *out.config;
  switch (out.algo) {
    case Algo::simclr: return mul_scalar(nt_xent_loss(out.online1, out.online2, c.temperature), c.loss_scale);
    case Algo::moco:
      return mul_scalar(moco_infonce_loss(out.online1, out.momentum2, out.queue, c.temperature), c.loss_scale);
    case Algo::byol:
      return mul_scalar(byol_symmetric_loss(out.online1, out.online2, out.momentum1, out.momentum2), c.loss_scale);
    case Algo::supervised: break;
  }
  fail("builtin_loss", "no contrastive loss for algorithm '", algo_name(out.algo), "'");
}

Tensor scale_grad(const Tensor& t, double w) {
  CP_CHECK(t.defined(), "scale_grad", "undefined tensor");
  CP_CHECK(std::isfinite(w), "scale_grad", "weight must be finite, got ", w);
  if (w == 1.0) return t;
  Tensor out = make_view(t, t.shape(), t.strides(), t.offset());
  if (autograd::needs_record({&t})) {
    autograd::record("scale_grad", {t}, out, [w](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{mul_scalar(g, w)};
    });
  }
  return out;
}

}  // namespace cpoison::algorithms
