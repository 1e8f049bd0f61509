// PGD adversarial views inside the contrastive loss or the supervised cross-entropy, and
// adversarial training as algorithms::train with that loss as its contrastive_loss or
// supervised_loss hook. Layout: views and batches [B, C, H, W].
#include "defense/adversarial.h"

#include <cmath>
#include <functional>

#include "defense/defense.h"
#include "engine/autograd.h"
#include "engine/ops/elementwise.h"

namespace cpoison::defense {

using algorithms::ContrastiveLearner;
using algorithms::SupervisedLearner;

void AdversarialOptions::validate() const {
  const char* where = "adv";
  CP_CHECK(std::isfinite(eps) && eps >= 0 && eps <= 1, where, "eps = ", eps,
           ": the perturbation radius must be in [0, 1] (pixel units: 8/255 = 0.0314)");
  CP_CHECK(std::isfinite(alpha) && alpha >= 0 && alpha <= 1, where, "alpha = ", alpha,
           ": the PGD step must be in [0, 1] (pixel units)");
  CP_CHECK(steps >= 0 && steps <= 1000000, where, "steps = ", steps, ": the number of PGD steps must be in [0, 1000000]");
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
// MoCo's enqueue switch (contrastive learners) and (bn = batch, in training mode) every
// buffer's value.
class FrozenForAttack {
public:
  FrozenForAttack(algorithms::Learner& learner, AdversarialOptions::BnMode bn)
      : learner_(learner),
        contrastive_(dynamic_cast<ContrastiveLearner*>(&learner)),
        was_training_(learner.is_training()),
        enqueue_(contrastive_ && contrastive_->enqueue_keys) {
    if (contrastive_) contrastive_->enqueue_keys = false;
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
    if (contrastive_) contrastive_->enqueue_keys = enqueue_;
  }
  FrozenForAttack(const FrozenForAttack&) = delete;
  FrozenForAttack& operator=(const FrozenForAttack&) = delete;

private:
  algorithms::Learner& learner_;
  ContrastiveLearner* contrastive_;
  bool was_training_, enqueue_;
  std::vector<std::pair<Tensor, Tensor>> saved_;
};

// Π(δ) = clamp(x + clamp(δ, -eps, eps), 0, 1) - x.
Tensor project(const Tensor& x, const Tensor& delta, double eps) {
  return sub(clamp(add(x, clamp(delta, -eps, eps)), 0.0, 1.0), x);
}

void check_view(const Tensor& v, const char* what) {
  CP_CHECK(v.defined() && v.dim() == 4 && is_floating(v.dtype()), "adv", what, " must be float [B, C, H, W], got ",
           v.defined() ? v.describe() : std::string("an undefined tensor"));
}

// The normalised adversarial image of pixels x under the perturbation d.
Tensor adversarial_view(const Normalization& norm, const Tensor& x, const Tensor& d) {
  return norm.to_view(clamp(add(x, d), 0.0, 1.0));
}

// PGD ascent on the pixel images xs (attacked jointly): returns their final perturbations and
// appends the loss at each iterate before its step to `losses`. loss_of maps the normalised
// adversarial images (one per x) to the scalar loss; the caller has frozen the model. Random
// starts are drawn from gen in the order of xs.
std::vector<Tensor> pgd(const std::vector<Tensor>& xs, const Normalization& norm, const AdversarialOptions& opt,
                        Generator& gen, const std::function<Tensor(const std::vector<Tensor>&)>& loss_of,
                        std::vector<double>& losses) {
  std::vector<Tensor> deltas;
  {
    autograd::NoGradGuard no_grad;
    for (const Tensor& x : xs) {
      Tensor d = opt.random_start && opt.eps > 0 ? uniform(x.shape(), -opt.eps, opt.eps, gen, x.dtype(), x.device())
                                                 : Tensor::zeros(x.shape(), x.dtype(), x.device());
      deltas.push_back(project(x, d, opt.eps));
    }
  }
  for (int64_t s = 0; s < opt.steps; ++s) {
    std::vector<Tensor> leaves, views;
    for (size_t i = 0; i < xs.size(); ++i) {
      Tensor leaf = deltas[i].detach();
      leaf.set_requires_grad(true);
      views.push_back(adversarial_view(norm, xs[i], leaf));
      leaves.push_back(leaf);
    }
    Tensor loss = loss_of(views);
    losses.push_back(loss.item());
    std::vector<Tensor> g = autograd::grad(loss, leaves);
    autograd::NoGradGuard no_grad;
    // Ascent: the attack raises the loss the model is trained to lower.
    for (size_t i = 0; i < xs.size(); ++i)
      deltas[i] = project(xs[i], add(deltas[i], mul_scalar(sign(g[i]), opt.alpha)), opt.eps);
  }
  return deltas;
}

AdversarialViews run_pgd(ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2,
                         const AdversarialOptions& opt, Generator& gen, bool measure_final) {
  opt.validate();
  const char* where = "adv";
  check_view(view1, "views");
  CP_CHECK(view2.defined() && view1.shape() == view2.shape() && view1.dtype() == view2.dtype() &&
               view1.device() == view2.device(),
           where, "the two views differ: ", view1.describe(), " and ",
           view2.defined() ? view2.describe() : std::string("an undefined tensor"));
  const Normalization norm(opt, view1);
  std::vector<Tensor> xs;
  {
    autograd::NoGradGuard no_grad;
    xs.push_back(norm.to_pixels(view1.detach()));
    if (opt.both_views) xs.push_back(norm.to_pixels(view2.detach()));
  }
  const Tensor fixed_view2 = view2.detach();
  auto loss_of = [&](const std::vector<Tensor>& views) {
    return learner.loss(views[0], opt.both_views ? views[1] : fixed_view2);
  };

  AdversarialViews out;
  FrozenForAttack frozen(learner, opt.bn);
  std::vector<Tensor> deltas = pgd(xs, norm, opt, gen, loss_of, out.losses);
  autograd::NoGradGuard no_grad;
  out.view1 = adversarial_view(norm, xs[0], deltas[0]);
  out.view2 = opt.both_views ? adversarial_view(norm, xs[1], deltas[1]) : fixed_view2;
  if (measure_final) out.final_loss = learner.loss(out.view1, out.view2).item();
  return out;
}

AdversarialBatch run_supervised_pgd(SupervisedLearner& learner, const Tensor& view, const Tensor& labels,
                                    const AdversarialOptions& opt, Generator& gen, bool measure_final) {
  opt.validate();
  const char* where = "adv";
  CP_CHECK(!opt.both_views, where,
           "both = 1 perturbs the two views of a contrastive step; a supervised step has one view (leave both = 0)");
  check_view(view, "the batch");
  CP_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == view.size(0), where, "labels must be [",
           view.size(0), "] for the batch ", view.describe(), ", got ",
           labels.defined() ? labels.describe() : std::string("an undefined tensor"));
  const Normalization norm(opt, view);
  Tensor x;
  {
    autograd::NoGradGuard no_grad;
    x = norm.to_pixels(view.detach());
  }
  auto loss_of = [&](const std::vector<Tensor>& views) { return learner.loss(views[0], labels); };

  AdversarialBatch out;
  FrozenForAttack frozen(learner, opt.bn);
  std::vector<Tensor> deltas = pgd({x}, norm, opt, gen, loss_of, out.losses);
  autograd::NoGradGuard no_grad;
  out.view = adversarial_view(norm, x, deltas[0]);
  if (measure_final) out.final_loss = learner.loss(out.view, labels).item();
  return out;
}

// The options of a hook under cfg: mean/std default to cfg.augment's normalisation, checked
// against the model's input channels.
AdversarialOptions resolve_options(const algorithms::TrainConfig& cfg, const AdversarialOptions& opt_in) {
  AdversarialOptions opt = opt_in;
  if (opt.mean.empty() && cfg.augment.normalize) opt.mean = cfg.augment.mean, opt.std = cfg.augment.std;
  opt.validate();
  const int64_t channels = cfg.model_options.in_channels;
  CP_CHECK(opt.mean.empty() || (int64_t)opt.mean.size() == channels, "adv", "the views have ", channels,
           " channels but the normalisation has ", opt.mean.size());
  return opt;
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
           "adversarial contrastive training needs simclr, moco or byol, not ", algorithms::algo_name(cfg.algo),
           " (supervised_adversarial_loss_hook trains the supervised baseline)");
  const AdversarialOptions opt = resolve_options(cfg, opt_in);
  return [opt](ContrastiveLearner& learner, const Tensor& view1, const Tensor& view2, Generator& gen) {
    return adversarial_contrastive_step(learner, view1, view2, opt, gen);
  };
}

AdversarialBatch adversarial_batch(SupervisedLearner& learner, const Tensor& x, const Tensor& labels,
                                   const AdversarialOptions& opt, Generator& gen) {
  return run_supervised_pgd(learner, x, labels, opt, gen, /*measure_final=*/true);
}

Tensor adversarial_supervised_step(SupervisedLearner& learner, const Tensor& x, const Tensor& labels,
                                   const AdversarialOptions& opt, Generator& gen) {
  AdversarialBatch adv = run_supervised_pgd(learner, x, labels, opt, gen, /*measure_final=*/false);
  Tensor loss = learner.loss(adv.view, labels);
  if (opt.clean_weight > 0) loss = add(loss, mul_scalar(learner.loss(x, labels), opt.clean_weight));
  return loss;
}

algorithms::TrainConfig::SupervisedLoss supervised_adversarial_loss_hook(const algorithms::TrainConfig& cfg,
                                                                         const AdversarialOptions& opt_in) {
  CP_CHECK(cfg.algo == algorithms::Algo::supervised, "adv", "supervised adversarial training needs a supervised learner, not ",
           algorithms::algo_name(cfg.algo), " (adversarial_loss_hook trains contrastive learners)");
  CP_CHECK(!opt_in.both_views, "adv",
           "both = 1 perturbs the two views of a contrastive step; a supervised step has one view (leave both = 0)");
  const AdversarialOptions opt = resolve_options(cfg, opt_in);
  return [opt](SupervisedLearner& learner, const Tensor& x, const Tensor& labels, Generator& gen) {
    return adversarial_supervised_step(learner, x, labels, opt, gen);
  };
}

algorithms::TrainResult train_adversarial(const data::Dataset& train_set, const algorithms::TrainConfig& cfg_in,
                                          const AdversarialOptions& opt) {
  const char* where = "train_adversarial";
  CP_CHECK(!cfg_in.contrastive_loss && !cfg_in.supervised_loss, where,
           "sets cfg.contrastive_loss / cfg.supervised_loss itself; leave them empty");
  algorithms::TrainConfig cfg = cfg_in;
  if (cfg.algo == algorithms::Algo::supervised)
    cfg.supervised_loss = supervised_adversarial_loss_hook(cfg, opt);
  else
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
