// Adversarial training for contrastive learning (RoCL / ACL style; the paper used AdvCL) and
// for the supervised baseline (PGD training, below):
// before each training step, PGD finds a perturbation of the first augmented view, inside the
// L∞ ball of radius eps in pixel space, that MAXIMISES the contrastive loss against the second
// view; the model then trains on (adversarial view 1, view 2). Views are [B, C, H, W] (B images,
// C channels, H rows, W columns), normalised per channel by (mean, std) as the augmentation
// pipeline leaves them (empty mean/std: the views are pixels in [0, 1]).
//
// PGD, with x the first view in pixels, δ₀ ~ U(-eps, eps) (random start; 0 without it):
//   δ ← Π( δ + alpha · sign(∂L(norm(clamp(x + δ, 0, 1)), view2) / ∂δ) ),  `steps` times,
//   Π(δ) = clamp(x + clamp(δ, -eps, eps), 0, 1) - x    (the eps-ball and the [0, 1] box).
// During these steps the model is frozen: only ∂L/∂δ is computed (no weight gradient), MoCo
// enqueues no keys, no EMA step runs, and with bn = batch (default) every buffer (BatchNorm
// running statistics, MoCo's queue) is restored afterwards, so the model leaves the attack
// exactly as it entered; bn = eval runs the attack with BatchNorm's running statistics.
//
// Supervised adversarial training (Madry et al. 2018) is the same PGD on the one augmented
// batch x of a supervised step, maximising the cross-entropy of x's labels; the model then
// trains on the adversarial batch. both_views has no meaning there and is refused.
#pragma once
#include <cstdint>
#include <vector>

#include "algorithms/learner.h"
#include "algorithms/train.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpoison::defense {

struct AdversarialOptions {
  double eps = 8.0 / 255.0;    // L∞ radius in pixels, >= 0
  double alpha = 2.0 / 255.0;  // PGD step in pixels, >= 0
  int64_t steps = 5;           // PGD steps, >= 0 (0: the random start only)
  bool random_start = true;
  enum class BnMode { batch, eval } bn = BnMode::batch;
  // ACL's A2A variant: perturb both views (jointly maximising the loss) and train on the pair.
  // Contrastive only.
  bool both_views = false;
  // ACL's dual stream, cheaply: the training loss adds clean_weight * L(view1, view2) (>= 0);
  // supervised: clean_weight * CE(x, labels).
  double clean_weight = 0;
  std::vector<double> mean, std;  // normalisation of the views; both empty or C entries (std > 0)

  // Error("adv", ...) naming the field and its value.
  void validate() const;
};

struct AdversarialViews {
  Tensor view1, view2;          // normalised adversarial views (view2 is the input one unless both_views)
  std::vector<double> losses;   // the loss at each PGD iterate before its step (steps entries)
  double final_loss = 0;        // the loss at the returned views (measured under the attack's BN mode)
};

// Runs PGD as described above and returns the adversarial views (not recorded by autograd).
// Error when the views differ in shape, do not match mean/std, or the options are bad.
AdversarialViews adversarial_views(algorithms::ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2,
                                   const AdversarialOptions& opt, Generator& gen);

// One adversarial training loss: adversarial_views, then learner.loss(adv view 1, view 2)
// (+ clean_weight * learner.loss(view1, view2)), recorded for backward like a plain loss.
Tensor adversarial_contrastive_step(algorithms::ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2,
                                    const AdversarialOptions& opt, Generator& gen);

// The algorithms::TrainConfig::contrastive_loss of adversarial training under cfg:
// adversarial_contrastive_step with opt, whose mean/std default (when empty) to cfg.augment's
// normalisation, so PGD works in pixels. Error("adv", ...) for a supervised cfg.algo (use
// supervised_adversarial_loss_hook), bad options, or a normalisation whose channels differ from cfg.model_options.in_channels.
algorithms::TrainConfig::ContrastiveLoss adversarial_loss_hook(const algorithms::TrainConfig& cfg,
                                                             const AdversarialOptions& opt);

struct AdversarialBatch {
  Tensor view;                  // the normalised adversarial batch
  std::vector<double> losses;   // the cross-entropy at each PGD iterate before its step (steps entries)
  double final_loss = 0;        // the cross-entropy at the returned batch (under the attack's BN mode)
};

// Supervised PGD: perturbs the normalised batch x [B, C, H, W] (labels i64 [B]) as described
// above to maximise learner.loss (the mean cross-entropy), with the model frozen the same way,
// and returns the adversarial batch (not recorded by autograd). Error("adv", ...) when x is not
// float 4-d, labels are not [B], x does not match mean/std, opt.both_views is set, or the
// options are bad.
AdversarialBatch adversarial_batch(algorithms::SupervisedLearner& learner, const Tensor& x, const Tensor& labels,
                                   const AdversarialOptions& opt, Generator& gen);

// One supervised adversarial training loss: adversarial_batch, then learner.loss(adv batch,
// labels) (+ clean_weight * learner.loss(x, labels)), recorded for backward like a plain loss.
Tensor adversarial_supervised_step(algorithms::SupervisedLearner& learner, const Tensor& x, const Tensor& labels,
                                   const AdversarialOptions& opt, Generator& gen);

// The algorithms::TrainConfig::supervised_loss of adversarial training under cfg:
// adversarial_supervised_step with opt, mean/std defaulting to cfg.augment's normalisation.
// Error("adv", ...) for a contrastive cfg.algo, opt.both_views, bad options, or a normalisation
// whose channels differ from cfg.model_options.in_channels.
algorithms::TrainConfig::SupervisedLoss supervised_adversarial_loss_hook(const algorithms::TrainConfig& cfg,
                                                                         const AdversarialOptions& opt);

// Adversarial training: algorithms::train with cfg.contrastive_loss = adversarial_loss_hook(cfg,
// opt) (simclr, moco, byol) or cfg.supervised_loss = supervised_adversarial_loss_hook(cfg, opt)
// (supervised), so it checkpoints (cfg.checkpoint_path) and resumes (cfg.resume) exactly like
// any run, with the same progress line and JSONL log. Unless cfg.extra_attrs has one, the
// checkpoint gets the attribute defense = the canonical "adv:..." specification. Error for a
// cfg that already has a contrastive_loss or supervised_loss ("leave them empty"), and
// whatever the hooks or algorithms::train refuse.
algorithms::TrainResult train_adversarial(const data::Dataset& train_set, const algorithms::TrainConfig& cfg,
                                          const AdversarialOptions& opt);

}  // namespace cpoison::defense
