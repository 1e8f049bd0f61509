// Gradient flows and losses of the contrastive learners: the extension points a researcher
// builds on without editing the tree (docs/extending.md).
//
// A contrastive learner's loss on two augmented views is made in three steps:
//   1. forward: each view goes through the online branch (encoder -> projector [-> predictor,
//      BYOL]) and, for MoCo v2 and BYOL, the momentum branch (momentum_encoder ->
//      momentum_projector), whose weights never require a gradient;
//   2. the learner's GradientFlow decides how much of ∂L/∂view each branch carries
//      (branch_weight) and may edit the tensor at every named point of that forward (at: a
//      stop-gradient, a gradient scale, anything differentiable);
//   3. the learner's OutputLoss turns what the forward made (LearnerOutputs) into the scalar loss.
// The built-in modes are two flows: single branch (online weight 1, momentum 0) and dual
// branch (1 and 1); the built-in losses are builtin_loss. ∂L/∂view is what reaches the poison δ
// in the noise phase, since the views are differentiable functions of δ.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "engine/tensor.h"

namespace cpoison::algorithms {

enum class Algo;
struct AlgoConfig;

enum class Branch { online, momentum };
const char* branch_name(Branch b);  // "online", "momentum"

// A point of the forward where GradientFlow::at is called.
struct FlowPoint {
  Branch branch = Branch::online;
  // 1 or 2: the view the tensor belongs to. 0: both views in one batched call, rows [view1;
  // view2] (SimCLR's online encoder and projector, which see the 2B batch at once so that
  // BatchNorm normalises over both views).
  int view = 1;
  // In forward order:
  //   "input"        the view as the branch receives it (after branch_weight was applied)
  //   "encoder"      the backbone's features [B, D]
  //   "projector.i"  after child i of the projector (an nn::Sequential: Linear, [BN,] ReLU, Linear)
  //   "projector"    the projector's output
  //   "predictor.i", "predictor"   the same for BYOL's predictor (online branch only)
  // The momentum branch has "input", "encoder", "projector.i" and "projector".
  std::string stage;
};

// How ∂L/∂view flows through a learner. Subclass it for a new flow (examples/custom_flow).
class GradientFlow {
public:
  virtual ~GradientFlow() = default;
  // A short name, recorded in poison and training settings (resume compares it).
  virtual std::string name() const = 0;
  // The weight of ∂L/∂view carried through branch b:
  //   1    the branch sees the view as is;
  //   0    the branch is cut at its input: the online branch gets the view detached, the
  //        momentum branch runs without recording (no tape, no memory for its backward);
  //   else the branch sees scale_grad(view, w): same values, gradient times w.
  // The weights act on the views only: the online weights' own gradient (model phase,
  // victim training) is not scaled. A learner without a momentum branch (SimCLR) ignores
  // the momentum weight.
  virtual double branch_weight(Branch b) const = 0;
  // Called at every FlowPoint of the forward; the forward continues with what it returns
  // (same shape). Default: t unchanged. Return t.detach() for a stop-gradient there,
  // scale_grad(t, w) for a weight, or any differentiable function of t.
  virtual Tensor at(const FlowPoint& point, const Tensor& t) const { return t; }
};
using FlowPtr = std::shared_ptr<const GradientFlow>;

// Fixed weights per branch and nothing else.
class BranchWeights : public GradientFlow {
public:
  BranchWeights(double online, double momentum, std::string name = "");
  std::string name() const override { return name_; }
  double branch_weight(Branch b) const override { return b == Branch::online ? online_ : momentum_; }

private:
  double online_, momentum_;
  std::string name_;
};

// The built-in flows: "single-branch" (online 1, momentum 0) and "dual-branch" (1, 1).
FlowPtr single_branch_flow();
FlowPtr dual_branch_flow();
// The flow an AlgoConfig names: dual-branch when config.dual_branch (BYOL: and not
// byol_detach_target, which stops the target's gradient), else single-branch.
FlowPtr flow_of(Algo algo, const AlgoConfig& config);

// What a contrastive learner's forward made of two views [B, C, H, W]; embeddings [B, D] are
// the heads' raw outputs (not normalised).
struct LearnerOutputs {
  Algo algo{};
  const AlgoConfig* config = nullptr;  // the learner's (temperature, loss_scale, ...)
  Tensor view1, view2;                 // the views as loss() received them
  // Online branch: SimCLR z1, z2 (projector); MoCo v2 the query q of view 1 (online2
  // undefined: MoCo sends only view 1 through the online branch); BYOL the predictions p1, p2.
  Tensor online1, online2;
  // Momentum branch: MoCo v2 the key k of view 2 (momentum1 undefined); BYOL the target
  // projections z1, z2; SimCLR: both undefined.
  Tensor momentum1, momentum2;
  // MoCo v2: the queue of negatives [K, D] (unit rows, the online outputs' dtype, never
  // carrying a gradient), as it was before this batch's keys are enqueued. Else undefined.
  Tensor queue;
};

// A loss over the outputs: returns a scalar recorded for backward. Set one on a learner
// (ContrastiveLearner::set_loss) or a poisoner (PoisonConfig::loss).
using OutputLoss = std::function<Tensor(const LearnerOutputs& out)>;

// The algorithms' own losses, times config->loss_scale: SimCLR nt_xent_loss(z1, z2, T), MoCo
// moco_infonce_loss(q, k, queue, T), BYOL byol_symmetric_loss(p1, p2, z1, z2).
Tensor builtin_loss(const LearnerOutputs& out);

// Forward values of t, gradient times w (w = 1: t itself; no new tensor). A view of t's
// storage with its own autograd identity.
Tensor scale_grad(const Tensor& t, double w);

}  // namespace cpoison::algorithms
