// The learners: an online encoder with its heads (and, for MoCo v2 and BYOL, momentum copies),
// behind one loss call, Learner::loss(batch), on a Batch of already-augmented, normalised views
// (two for the contrastive learners) and labels (the supervised learner). Images are NCHW
// (N batch, C channels, H rows, W columns); embeddings are [N, D].
//
// The same call serves victim training (views are plain data) and poisoning (views depend on
// a δ that requires grad): the loss is built from differentiable ops all the way back to the
// views. The momentum weights never require grad; the learner's GradientFlow (algorithms/flow.h)
// decides which branches carry ∂L/∂view and with what weight, and where stop-gradients sit; its
// OutputLoss makes the loss from the branches' outputs. The built-in flows are single and dual
// branch (`dual_branch`, docs/reference-implementation.md §4); docs/extending.md shows new ones.
//
// State-dict names (the checkpoint layout, PyTorch style):
//   encoder.*              the online backbone (what the linear probe loads)
//   projector.*            SimCLR / MoCo v2 projection head, BYOL projector
//   predictor.*            BYOL predictor
//   momentum_encoder.*     MoCo key encoder / BYOL target backbone
//   momentum_projector.*   their heads
//   queue [K, D], queue_ptr i64 [1]   MoCo v2 (rows are keys; the release stores [D, K])
//   encoder.linear.*       the supervised classifier's head
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/flow.h"
#include "engine/nn/module.h"
#include "models/encoder.h"

namespace cpoison::algorithms {

enum class Algo { simclr, moco, byol, supervised };
// "simclr", "moco" (also "mocov2"), "byol", "supervised"; Error listing them otherwise.
Algo parse_algo(const std::string& name);
const char* algo_name(Algo a);

// Hyper-parameters of the algorithms. AlgoConfig::defaults(algo) gives the spec's values
// (docs/reference-implementation.md §3); every field can be overridden (the CLI does).
// Bounds on the learner's sizes a flag or a file may ask for (validate() refuses anything
// outside): the MoCo queue (65536 in MoCo's ImageNet runs) and the projector/predictor widths.
inline constexpr int64_t kMaxQueue = int64_t(1) << 24;
inline constexpr int64_t kMaxHeadWidth = int64_t(1) << 16;

struct AlgoConfig {
  double temperature = 0.5;      // SimCLR 0.5, MoCo v2 0.2 (unused by BYOL and supervised)
  double momentum = 0.99;        // EMA of the momentum copy: MoCo v2 0.99, BYOL 0.999
  int64_t queue_size = 4096;     // MoCo v2 negatives
  int64_t proj_hidden = 0;       // projector hidden width; 0 = the encoder's feature dim (SimCLR/MoCo)
  int64_t proj_dim = 128;        // projector output: 128 (SimCLR/MoCo), 256 (BYOL)
  int64_t pred_hidden = 4096;    // BYOL predictor hidden width
  // Keep the gradient path from the loss through the momentum branch back to the input view
  // (the momentum weights still get none). MoCo: through the positive key; BYOL: through the
  // target projections (unless byol_detach_target). Names the built-in flow (flow_of); a flow
  // set with ContrastiveLearner::set_flow replaces it.
  bool dual_branch = false;
  // BYOL: detach the target projections inside the loss, as the authors' release does (its
  // dual-branch flag then adds no gradient path). Default false: the paper's behaviour.
  bool byol_detach_target = false;
  // Multiplies the loss. 1 = the textbook losses. The authors' release multiplies the
  // SimCLR and MoCo losses by temperature / 0.07; set temperature / 0.07 to match it.
  double loss_scale = 1.0;
  uint64_t seed = 0;  // MoCo's initial queue (Philox stream kQueueStream)

  static AlgoConfig defaults(Algo a);
  // Error naming the field when a value is out of range (temperature not in (0, 100], momentum
  // outside [0, 1], sizes negative or above kMaxQueue / kMaxHeadWidth, loss_scale not > 0).
  void validate(Algo a) const;
};

inline constexpr uint32_t kQueueStream = 0x40C0;

// What one loss call is made of: the augmented, normalised views of B images and their labels.
// The contrastive learners take view1 and view2 (two views of the same images, one shape) and
// ignore labels; the supervised learner takes view1 and labels and refuses a view2. Build one as
// Batch{v1, v2} or Batch{.view1 = v, .labels = y}. (Not data::Batch, the u8 rows of a dataset.)
struct Batch {
  Tensor view1;   // [B, C, H, W]
  Tensor view2;   // [B, C, H, W] (contrastive), undefined (supervised)
  Tensor labels;  // i64 [B] (supervised; a contrastive learner ignores it)
};

// What every learner offers the training loop, the poisoner and the defences.
class Learner : public nn::Module {
public:
  Algo algo() const { return algo_; }
  const AlgoConfig& config() const { return config_; }
  models::Encoder& encoder() const { return *encoder_; }
  const models::EncoderPtr& encoder_ptr() const { return encoder_; }
  // The parameters the optimiser updates, by state-dict name (momentum copies excluded).
  std::vector<std::pair<std::string, Tensor>> named_online_parameters() const;
  std::vector<Tensor> online_parameters() const;
  // EMA step of the momentum copies (no-op without them). The training loop calls it once
  // after every optimiser step; the release updates inside forward (see docs/algorithms.md).
  virtual void momentum_update() {}
  // Unit-length head output of the online branch for x (the space alignment and uniformity are
  // measured in). Supervised: the normalised backbone features.
  virtual Tensor embed(const Tensor& x) = 0;
  // The learner's loss on one batch of views, recorded for backward: the contrastive loss of
  // (view1, view2) under the learner's flow (ContrastiveLearner), or the mean cross-entropy of
  // view1 against labels (SupervisedLearner). Error naming the learner and the shapes when the
  // batch lacks what the learner needs.
  virtual Tensor loss(const Batch& batch) = 0;
  // Augmented views per image in one loss call: 2 (contrastive), 1 (supervised).
  int64_t views_per_batch() const { return algo_ == Algo::supervised ? 1 : 2; }
  // The gradient flow and the loss over the outputs (algorithms/flow.h) of a contrastive
  // learner; null / empty: the built-in ones. The supervised learner has one branch and no
  // outputs to hand a loss: it refuses a flow or a loss (Error) and accepts null / empty.
  virtual void set_flow(FlowPtr flow);
  virtual void set_loss(OutputLoss loss);
  // MoCo v2: whether loss() writes its keys into the queue (on by default; the attacks, the
  // diagnostics and tests switch it off to evaluate the same loss several times). Other
  // learners have no queue and ignore it.
  bool enqueue_keys = true;

protected:
  Learner(Algo algo, const AlgoConfig& config, models::EncoderPtr encoder);
  Algo algo_;
  AlgoConfig config_;
  models::EncoderPtr encoder_;
};

class ContrastiveLearner : public Learner {
public:
  // algo: simclr, moco or byol (Error for supervised: use SupervisedLearner). Builds the online
  // encoder models::make_encoder(encoder_name, options) (options.num_classes is ignored: no
  // classification head), its heads and momentum copies initialised as exact copies.
  static std::shared_ptr<ContrastiveLearner> make(Algo algo, const std::string& encoder_name,
                                                  const models::ModelOptions& options, const AlgoConfig& config);

  // The loss on two augmented, normalised views batch.view1, batch.view2 [B, C, H, W] of the same
  // B images (views may require grad; labels are ignored): outputs(view1, view2) under the
  // learner's flow, then its loss (set_loss; default builtin_loss). SimCLR: both views go through
  // the backbone in one batched call. MoCo v2: query = online(view1), key = momentum(view2); the
  // keys are enqueued afterwards when enqueue_keys is on. BYOL: symmetric, each view through each
  // branch in its own call. Throws Error naming the learner and the shapes when a view is missing
  // or the views differ in shape, and when a loss set with set_loss returns anything but one
  // element.
  Tensor loss(const Batch& batch) override;
  // The forward of both views under the learner's flow, without the loss and without MoCo's
  // enqueue (what a custom loss receives; see LearnerOutputs for what each algorithm fills in).
  LearnerOutputs outputs(const Tensor& view1, const Tensor& view2) { return compute_outputs(view1, view2); }

  // The gradient flow: the one set with set_flow, else the built-in one the config names
  // (flow_of: single or dual branch). set_flow(nullptr) returns to the built-in one.
  const GradientFlow& flow() const { return custom_flow_ ? *custom_flow_ : *flow_of(algo_, config_); }
  void set_flow(FlowPtr flow) override { custom_flow_ = std::move(flow); }
  bool has_custom_flow() const { return custom_flow_ != nullptr; }
  // The loss over the outputs: the one set with set_loss, else builtin_loss. An empty function
  // returns to the built-in one.
  void set_loss(OutputLoss loss) override { custom_loss_ = std::move(loss); }
  bool has_custom_loss() const { return (bool)custom_loss_; }

  // Whether the built-in flow records the momentum branch (see AlgoConfig::dual_branch).
  bool dual_branch() const { return config_.dual_branch; }
  void set_dual_branch(bool on) { config_.dual_branch = on; }

protected:
  using Learner::Learner;
  // A learner's forward of both views, applying the flow through the helpers below.
  virtual LearnerOutputs compute_outputs(const Tensor& view1, const Tensor& view2) = 0;
  // After the loss was computed from `out` (MoCo v2: enqueue the keys).
  virtual void after_loss(const LearnerOutputs& out) {}
  // Outputs with algo, config and the views filled in.
  LearnerOutputs empty_outputs(const Tensor& view1, const Tensor& view2) const;
  // The view as branch b receives it: the flow's branch weight applied (see
  // GradientFlow::branch_weight), then the flow's "input" point.
  Tensor branch_input(Branch b, int view, const Tensor& v) const;
  // The flow's edit at a named point.
  Tensor tap(Branch b, int view, const std::string& stage, const Tensor& t) const {
    return flow().at(FlowPoint{b, view, stage}, t);
  }
  // An nn::Sequential head child by child, with the points "<name>.<i>" and "<name>" (the same
  // arithmetic as head.forward(x)).
  Tensor run_head(nn::Module& head, Branch b, int view, const std::string& name, const Tensor& x) const;
  // Whether branch b is recorded by autograd (weight != 0); the momentum branch runs inside a
  // NoGradGuard otherwise.
  bool records(Branch b) const { return flow().branch_weight(b) != 0; }

private:
  FlowPtr custom_flow_;
  OutputLoss custom_loss_;
};

// The supervised baseline: backbone + Linear(D, classes), cross-entropy.
class SupervisedLearner : public Learner {
public:
  // options.num_classes must be >= 1.
  static std::shared_ptr<SupervisedLearner> make(const std::string& encoder_name, const models::ModelOptions& options,
                                                 const AlgoConfig& config = AlgoConfig::defaults(Algo::supervised));
  // Mean cross-entropy (times loss_scale) of the logits of batch.view1 [B, C, H, W] against
  // batch.labels i64 [B]. Error when either is missing or of the wrong shape, or view2 is set.
  Tensor loss(const Batch& batch) override;
  Tensor embed(const Tensor& x) override;

private:
  using Learner::Learner;
};

// ContrastiveLearner::make or SupervisedLearner::make by algo.
std::shared_ptr<Learner> make_learner(Algo algo, const std::string& encoder_name, const models::ModelOptions& options,
                                      const AlgoConfig& config);

}  // namespace cpoison::algorithms
