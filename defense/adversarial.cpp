// PGD adversarial views inside the learner's loss (contrastive loss or supervised
// cross-entropy), and adversarial training as algorithms::train with that loss as its step_loss
// hook. Layout: views [B, C, H, W].
#include "defense/adversarial.h"

#include <cmath>
#include <functional>

#include "defense/defense.h"
#include "engine/autograd.h"
#include "engine/ops/elementwise.h"

namespace cpoison::defense {

using algorithms::Batch;
using algorithms::Learner;

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
// MoCo's enqueue switch and (bn = batch, in training mode) every buffer's value.
class FrozenForAttack {
public:
  FrozenForAttack(Learner& learner, AdversarialOptions::BnMode bn)
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
  Learner& learner_;
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

AdversarialBatch run_pgd(Learner& learner, const Batch& in, const AdversarialOptions& opt, Generator& gen,
                         bool measure_final) {
  opt.validate();
  const char* where = "adv";
  const Tensor &view1 = in.view1, &view2 = in.view2;
  const bool supervised = learner.views_per_batch() == 1;
  if (supervised) {
    CP_CHECK(!opt.both_views, where,
             "both = 1 perturbs the two views of a contrastive step; a supervised step has one view (leave both = 0)");
    check_view(view1, "the batch");
    CP_CHECK(in.labels.defined() && in.labels.dim() == 1 && in.labels.size(0) == view1.size(0), where,
             "labels must be [", view1.size(0), "] for the batch ", view1.describe(), ", got ",
             in.labels.defined() ? in.labels.describe() : std::string("an undefined tensor"));
  } else {
    check_view(view1, "views");
    CP_CHECK(view2.defined() && view1.shape() == view2.shape() && view1.dtype() == view2.dtype() &&
                 view1.device() == view2.device(),
             where, "the two views differ: ", view1.describe(), " and ",
             view2.defined() ? view2.describe() : std::string("an undefined tensor"));
  }
  const Normalization norm(opt, view1);
  std::vector<Tensor> xs;
  {
    autograd::NoGradGuard no_grad;
    xs.push_back(norm.to_pixels(view1.detach()));
    if (opt.both_views) xs.push_back(norm.to_pixels(view2.detach()));
  }
  // The batch at the adversarial views: view 1 (and with both_views view 2) replaced.
  Batch fixed = in;
  if (view2.defined()) fixed.view2 = view2.detach();
  auto with_views = [&](const std::vector<Tensor>& views) {
    Batch b = fixed;
    b.view1 = views[0];
    if (opt.both_views) b.view2 = views[1];
    return b;
  };
  auto loss_of = [&](const std::vector<Tensor>& views) { return learner.loss(with_views(views)); };

  AdversarialBatch out;
  FrozenForAttack frozen(learner, opt.bn);
  std::vector<Tensor> deltas = pgd(xs, norm, opt, gen, loss_of, out.losses);
  autograd::NoGradGuard no_grad;
  std::vector<Tensor> adv;
  for (size_t i = 0; i < xs.size(); ++i) adv.push_back(adversarial_view(norm, xs[i], deltas[i]));
  out.views = with_views(adv);
  if (measure_final) out.final_loss = learner.loss(out.views).item();
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

AdversarialBatch adversarial_batch(Learner& learner, const Batch& views, const AdversarialOptions& opt, Generator& gen) {
  return run_pgd(learner, views, opt, gen, /*measure_final=*/true);
}

Tensor adversarial_step(Learner& learner, const Batch& views, const AdversarialOptions& opt, Generator& gen) {
  AdversarialBatch adv = run_pgd(learner, views, opt, gen, /*measure_final=*/false);
  Tensor loss = learner.loss(adv.views);
  if (opt.clean_weight > 0) {
    // The clean pair must not enqueue MoCo keys a second time in one step.
    const bool enqueue = learner.enqueue_keys;
    learner.enqueue_keys = false;
    Tensor clean = learner.loss(views);
    learner.enqueue_keys = enqueue;
    loss = add(loss, mul_scalar(clean, opt.clean_weight));
  }
  return loss;
}

algorithms::TrainConfig::StepLoss adversarial_loss_hook(const algorithms::TrainConfig& cfg,
                                                        const AdversarialOptions& opt_in) {
  CP_CHECK(cfg.algo != algorithms::Algo::supervised || !opt_in.both_views, "adv",
           "both = 1 perturbs the two views of a contrastive step; a supervised step has one view (leave both = 0)");
  const AdversarialOptions opt = resolve_options(cfg, opt_in);
  return [opt](Learner& learner, const Batch& views, Generator& gen) { return adversarial_step(learner, views, opt, gen); };
}

algorithms::TrainResult train_adversarial(const data::Dataset& train_set, const algorithms::TrainConfig& cfg_in,
                                          const AdversarialOptions& opt) {
  const char* where = "train_adversarial";
  CP_CHECK(!cfg_in.step_loss, where, "sets cfg.step_loss itself; leave it empty");
  algorithms::TrainConfig cfg = cfg_in;
  cfg.step_loss = adversarial_loss_hook(cfg, opt);
  if (!cfg.extra_attrs.count("defense")) {
    Defense d;
    d.kind = DefenseKind::adversarial;
    d.adversarial = opt;
    cfg.extra_attrs["defense"] = d.spec();
  }
  return algorithms::train(train_set, cfg);
}

}  // namespace cpoison::defense
