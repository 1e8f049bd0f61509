// Adversarial training for contrastive learning (RoCL / ACL style; the paper used AdvCL) and
// for the supervised baseline (PGD training, below), one set of functions over the learner's
// algorithms::Batch of views:
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

struct AdversarialBatch {
  // The normalised adversarial views, not recorded by autograd: view1 attacked; view2 the given
  // one (detached) unless both_views; labels as given.
  algorithms::Batch views;
  std::vector<double> losses;   // the loss at each PGD iterate before its step (steps entries)
  double final_loss = 0;        // the loss at the returned views (measured under the attack's BN mode)
};

// Runs PGD as described above on the learner's batch of views (contrastive: view1 against view2,
// both attacked with both_views; supervised: view1 against its labels) and returns the
// adversarial batch. Error("adv", ...) when the views are not float [B, C, H, W] of one shape,
// do not match mean/std, a supervised batch's labels are not [B], both_views is set for the
// supervised learner, or the options are bad.
AdversarialBatch adversarial_batch(algorithms::Learner& learner, const algorithms::Batch& views,
                                   const AdversarialOptions& opt, Generator& gen);

// One adversarial training loss: adversarial_batch, then learner.loss(adversarial views)
// (+ clean_weight * learner.loss(views), which enqueues no MoCo keys), recorded for backward like
// a plain loss.
Tensor adversarial_step(algorithms::Learner& learner, const algorithms::Batch& views, const AdversarialOptions& opt,
                        Generator& gen);

// The algorithms::TrainConfig::step_loss of adversarial training under cfg: adversarial_step with
// opt, whose mean/std default (when empty) to cfg.augment's normalisation, so PGD works in
// pixels. Error("adv", ...) for both_views with a supervised cfg.algo, bad options, or a
// normalisation whose channels differ from cfg.model_options.in_channels.
algorithms::TrainConfig::StepLoss adversarial_loss_hook(const algorithms::TrainConfig& cfg, const AdversarialOptions& opt);

// Adversarial training: algorithms::train with cfg.step_loss = adversarial_loss_hook(cfg, opt),
// so it checkpoints (cfg.checkpoint_path) and resumes (cfg.resume) exactly like any run, with
// the same progress line and JSONL log. Unless cfg.extra_attrs has one, the checkpoint gets the
// attribute defense = the canonical "adv:..." specification. Error for a cfg that already has a
// step_loss ("leave it empty"), and whatever the hook or algorithms::train refuse.
algorithms::TrainResult train_adversarial(const data::Dataset& train_set, const algorithms::TrainConfig& cfg,
                                          const AdversarialOptions& opt);

}  // namespace cpoison::defense
