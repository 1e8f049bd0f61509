// PGD adversarial views inside the contrastive loss, and adversarial training as algorithms::train
// with that loss as its contrastive_loss hook.
// Layout: views [B, C, H, W].
#include "defense/adversarial.h"

#include <cmath>

#include "defense/defense.h"
#include "engine/autograd.h"
#include "engine/ops/elementwise.h"

namespace cpoison::defense {

using algorithms::ContrastiveLearner;

void AdversarialOptions::validate() const {
  const char* where = "adv";
  CP_CHECK(std::isfinite(eps) && eps >= 0, where, "eps = ", eps, ": the perturbation radius must be >= 0");
  CP_CHECK(std::isfinite(alpha) && alpha >= 0, where, "alpha = ", alpha, ": the PGD step must be >= 0");
  CP_CHECK(steps >= 0, where, "steps = ", steps, ": the number of PGD steps must be >= 0");
  CP_CHECK(std::isfinite(clean_weight) && clean_weight >= 0, where, "clean = ", clean_weight,
           ": the clean-loss weight must be >= 0");
  CP_CHECK(mean.size() == std.size(), where, "mean has ", mean.size(), " entries but std has ", std.size());
  for (size_t c = 0; c < std.size(); ++c)
    CP_CHECK(std::isfinite(std[c]) && std[c] > 0 && std::isfinite(mean[c]), where, "normalisation of channel ", c,
             " (mean ", mean[c], ", std ", std[c], ") must be finite with std > 0");
}

namespace {

// Maps normalised views to pixels and back: p = v * std + mean, v = (p - mean) / std.
struct Normalization {
  bool on = false;
  Tensor mean, std;  // [1, C, 1, 1]
  Normalization(const AdversarialOptions& opt, const Tensor& like) {
    if (opt.mean.empty()) return;
    const auto C = (int64_t)opt.mean.size();
    CP_CHECK(like.size(1) == C, "adv", "views ", like.describe(), " have ", like.size(1),
             " channels but the normalisation has ", C);
    on = true;
    mean = Tensor::from_vector(opt.mean, {1, C, 1, 1}, like.dtype(), like.device());
    std = Tensor::from_vector(opt.std, {1, C, 1, 1}, like.dtype(), like.device());
  }
  Tensor to_pixels(const Tensor& v) const { return on ? add(mul(v, std), mean) : v; }
  Tensor to_view(const Tensor& p) const { return on ? div(sub(p, mean), std) : p; }
};

// Freezes the learner's state for the attack and restores it on scope exit: training flag,
// MoCo's enqueue switch and (bn = batch, in training mode) every buffer's value.
class FrozenForAttack {
public:
  FrozenForAttack(ContrastiveLearner& learner, AdversarialOptions::BnMode bn)
      : learner_(learner), was_training_(learner.is_training()), enqueue_(learner.enqueue_keys) {
    learner_.enqueue_keys = false;
    if (bn == AdversarialOptions::BnMode::eval) {
      learner_.eval();
    } else if (was_training_) {
      autograd::NoGradGuard no_grad;
      for (auto& [name, t] : learner_.named_buffers()) saved_.emplace_back(t, t.detach().clone());
    }
  }
  ~FrozenForAttack() {
    autograd::NoGradGuard no_grad;
    for (auto& [live, copy] : saved_) live.copy_(copy);
    learner_.train(was_training_);
    learner_.enqueue_keys = enqueue_;
  }
  FrozenForAttack(const FrozenForAttack&) = delete;
  FrozenForAttack& operator=(const FrozenForAttack&) = delete;

private:
  ContrastiveLearner& learner_;
  bool was_training_, enqueue_;
  std::vector<std::pair<Tensor, Tensor>> saved_;
};

// Π(δ) = clamp(x + clamp(δ, -eps, eps), 0, 1) - x.
Tensor project(const Tensor& x, const Tensor& delta, double eps) {
  return sub(clamp(add(x, clamp(delta, -eps, eps)), 0.0, 1.0), x);
}

AdversarialViews run_pgd(ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2,
                         const AdversarialOptions& opt, Generator& gen, bool measure_final) {
  opt.validate();
  const char* where = "adv";
  CP_CHECK(view1.defined() && view2.defined() && view1.dim() == 4 && is_floating(view1.dtype()), where,
           "views must be float [B, C, H, W]");
  CP_CHECK(view1.shape() == view2.shape() && view1.dtype() == view2.dtype() && view1.device() == view2.device(), where,
           "the two views differ: ", view1.describe(), " and ", view2.describe());
  const Normalization norm(opt, view1);
  Tensor x1, x2, d1, d2;
  {
    autograd::NoGradGuard no_grad;
    x1 = norm.to_pixels(view1.detach());
    x2 = norm.to_pixels(view2.detach());
    auto start = [&](const Tensor& x) {
      Tensor d = opt.random_start && opt.eps > 0 ? uniform(x.shape(), -opt.eps, opt.eps, gen, x.dtype(), x.device())
                                                 : Tensor::zeros(x.shape(), x.dtype(), x.device());
      return project(x, d, opt.eps);
    };
    d1 = start(x1);
    if (opt.both_views) d2 = start(x2);
  }
  auto adversarial = [&](const Tensor& x, const Tensor& d) { return norm.to_view(clamp(add(x, d), 0.0, 1.0)); };

  AdversarialViews out;
  FrozenForAttack frozen(learner, opt.bn);
  for (int64_t s = 0; s < opt.steps; ++s) {
    Tensor leaf1 = d1.detach(), leaf2 = opt.both_views ? d2.detach() : Tensor();
    leaf1.set_requires_grad(true);
    if (opt.both_views) leaf2.set_requires_grad(true);
    Tensor a1 = adversarial(x1, leaf1);
    Tensor a2 = opt.both_views ? adversarial(x2, leaf2) : view2.detach();
    Tensor loss = learner.loss(a1, a2);
    out.losses.push_back(loss.item());
    std::vector<Tensor> leaves{leaf1};
    if (opt.both_views) leaves.push_back(leaf2);
    std::vector<Tensor> g = autograd::grad(loss, leaves);
    autograd::NoGradGuard no_grad;
    // Ascent: the attack raises the loss the model is trained to lower.
    d1 = project(x1, add(d1, mul_scalar(sign(g[0]), opt.alpha)), opt.eps);
    if (opt.both_views) d2 = project(x2, add(d2, mul_scalar(sign(g[1]), opt.alpha)), opt.eps);
  }
  autograd::NoGradGuard no_grad;
  out.view1 = adversarial(x1, d1);
  out.view2 = opt.both_views ? adversarial(x2, d2) : view2.detach();
  if (measure_final) out.final_loss = learner.loss(out.view1, out.view2).item();
  return out;
}

}  // namespace

AdversarialViews adversarial_views(ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2,
                                   const AdversarialOptions& opt, Generator& gen) {
  return run_pgd(learner, view1, view2, opt, gen, /*measure_final=*/true);
}

Tensor adversarial_contrastive_step(ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2,
                                    const AdversarialOptions& opt, Generator& gen) {
  AdversarialViews adv = run_pgd(learner, view1, view2, opt, gen, /*measure_final=*/false);
  Tensor loss = learner.loss(adv.view1, adv.view2);
  if (opt.clean_weight > 0) {
    // The clean pair must not enqueue MoCo keys a second time in one step.
    const bool enqueue = learner.enqueue_keys;
    learner.enqueue_keys = false;
    Tensor clean = learner.loss(view1, view2);
    learner.enqueue_keys = enqueue;
    loss = add(loss, mul_scalar(clean, opt.clean_weight));
  }
  return loss;
}

algorithms::TrainConfig::ContrastiveLoss adversarial_loss_hook(const algorithms::TrainConfig& cfg,
                                                             const AdversarialOptions& opt_in) {
  CP_CHECK(cfg.algo != algorithms::Algo::supervised, "adv",
           "adversarial contrastive training needs simclr, moco or byol, not ", algorithms::algo_name(cfg.algo));
  AdversarialOptions opt = opt_in;
  if (opt.mean.empty() && cfg.augment.normalize) opt.mean = cfg.augment.mean, opt.std = cfg.augment.std;
  opt.validate();
  const int64_t channels = cfg.model_options.in_channels;
  CP_CHECK(opt.mean.empty() || (int64_t)opt.mean.size() == channels, "adv", "the views have ", channels,
           " channels but the normalisation has ", opt.mean.size());
  return [opt](ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2, Generator& gen) {
    return adversarial_contrastive_step(learner, view1, view2, opt, gen);
  };
}

algorithms::TrainResult train_adversarial(const data::Dataset& train_set, const algorithms::TrainConfig& cfg_in,
                                          const AdversarialOptions& opt) {
  const char* where = "train_adversarial";
  CP_CHECK(cfg_in.algo != algorithms::Algo::supervised, where,
           "adversarial contrastive training needs simclr, moco or byol");
  CP_CHECK(!cfg_in.contrastive_loss, where, "sets cfg.contrastive_loss itself; leave it empty");
  algorithms::TrainConfig cfg = cfg_in;
  cfg.contrastive_loss = adversarial_loss_hook(cfg, opt);
  if (!cfg.extra_attrs.count("defense")) {
    Defense d;
    d.kind = DefenseKind::adversarial;
    d.adversarial = opt;
    cfg.extra_attrs["defense"] = d.spec();
  }
  return algorithms::train(train_set, cfg);
}

}  // namespace cpoison::defense
