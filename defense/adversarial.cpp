// PGD adversarial views inside the contrastive loss, and a thin adversarial training loop.
// Layout: views [B, C, H, W].
#include "defense/adversarial.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/optim/schedule.h"
#include "engine/optim/sgd.h"

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

std::string format_seconds(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  long t = (long)std::llround(s);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
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

algorithms::TrainResult train_adversarial(const data::Dataset& train_set, const algorithms::TrainConfig& cfg_in,
                                          const AdversarialOptions& opt_in) {
  using namespace algorithms;
  TrainConfig cfg = cfg_in;
  cfg.validate();
  const char* where = "train_adversarial";
  CP_CHECK(cfg.algo != Algo::supervised, where, "adversarial contrastive training needs simclr, moco or byol");
  CP_CHECK(cfg.checkpoint_path.empty() && !cfg.resume, where,
           "writes no checkpoint and cannot resume (algorithms::TrainConfig has no loss hook); leave checkpoint_path "
           "empty and resume off, and save the returned learner yourself");
  CP_CHECK(train_set.size() > 0 && train_set.images.dim() == 4, where, "empty or malformed training set");
  CP_CHECK(train_set.channels() == cfg.model_options.in_channels, where, "the dataset has ", train_set.channels(),
           " channels but the model takes in_channels = ", cfg.model_options.in_channels);
  AdversarialOptions opt = opt_in;
  if (opt.mean.empty() && cfg.augment.normalize) opt.mean = cfg.augment.mean, opt.std = cfg.augment.std;
  opt.validate();
  cfg.algo_config.seed = cfg.seed;

  nn::manual_seed(cfg.seed);
  auto learner_base = make_learner(cfg.algo, cfg.model, cfg.model_options, cfg.algo_config);
  auto* learner = dynamic_cast<ContrastiveLearner*>(learner_base.get());
  CP_CHECK(learner != nullptr, where, "the learner is not contrastive");
  learner->to(cfg.device);
  const double lr = cfg.resolved_lr();
  optim::SGDOptions so;
  so.lr = lr;
  so.momentum = cfg.momentum;
  so.weight_decay = cfg.weight_decay;
  so.nesterov = cfg.nesterov;
  optim::SGD sgd(learner->named_online_parameters(), so);

  data::Dataset ds = train_set.to(cfg.device);
  data::BatchSampler sampler(ds.size(), cfg.batch_size, cfg.seed, /*shuffle=*/true, cfg.drop_last);
  const int64_t steps_per_epoch = sampler.batches_per_epoch();
  CP_CHECK(steps_per_epoch > 0, where, "a dataset of ", ds.size(), " images gives no batch of ", cfg.batch_size);
  const int64_t total_steps = cfg.epochs * steps_per_epoch;
  double warm = cfg.warmup_steps >= 0 ? (double)cfg.warmup_steps : cfg.warmup_epochs * (double)steps_per_epoch;
  warm = std::min(warm, (double)total_steps);
  auto schedule = optim::LrSchedule::warmup_cosine(lr, (double)total_steps, warm, cfg.warmup_start_lr,
                                                   cfg.final_lr_fraction * lr);
  Generator aug_gen(cfg.seed, kAugmentStream);

  std::ofstream log;
  if (!cfg.log_path.empty()) {
    log.open(cfg.log_path, std::ios::trunc);
    CP_CHECK(log.good(), cfg.log_path, "cannot open the training log for writing");
  }

  TrainResult result;
  result.learner = learner_base;
  using clock = std::chrono::steady_clock;
  const auto run_start = clock::now();
  auto last_print = run_start;
  const int64_t h = ds.height(), w = ds.width();
  for (int64_t epoch = 0; epoch < cfg.epochs; ++epoch) {
    learner->train();
    const auto epoch_start = clock::now();
    double loss_sum = 0, current_lr = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      const int64_t step = epoch * steps_per_epoch + s;
      current_lr = schedule.at((double)step);
      sgd.set_lr(current_lr);
      data::Batch batch = data::gather_batch(ds, sampler.next());
      Tensor x = data::to_float_nchw(batch.images, cfg.device);
      if (cfg.batch_hook) x = cfg.batch_hook(x, batch, aug_gen);
      const int64_t b = x.size(0);
      Tensor v1 = apply(x, sample_params(cfg.augment, b, h, w, aug_gen), cfg.augment);
      Tensor v2 = apply(x, sample_params(cfg.augment, b, h, w, aug_gen), cfg.augment);
      Tensor loss = adversarial_contrastive_step(*learner, v1, v2, opt, aug_gen);
      const double loss_value = loss.item();
      CP_CHECK(std::isfinite(loss_value), where, "the loss became ", loss_value, " at epoch ", epoch + 1, " step ",
               s + 1, " (lr ", current_lr, ")");
      sgd.zero_grad();
      autograd::backward(loss);
      sgd.step();
      learner->momentum_update();
      loss_sum += loss_value;
      const auto now = clock::now();
      if (cfg.progress_seconds >= 0 && s + 1 < steps_per_epoch &&
          std::chrono::duration<double>(now - last_print).count() >= cfg.progress_seconds) {
        last_print = now;
        double secs = std::chrono::duration<double>(now - epoch_start).count();
        std::fprintf(stderr, "[adv %s] epoch %lld/%lld step %lld/%lld loss %.4f lr %.5f %.0f img/s\n",
                     algo_name(cfg.algo), (long long)epoch + 1, (long long)cfg.epochs, (long long)s + 1,
                     (long long)steps_per_epoch, loss_sum / (s + 1), current_lr, (s + 1) * cfg.batch_size / secs);
      }
    }
    EpochStats st;
    st.epoch = epoch + 1;
    st.steps = steps_per_epoch;
    st.loss = loss_sum / steps_per_epoch;
    st.lr = current_lr;
    st.seconds = std::chrono::duration<double>(clock::now() - epoch_start).count();
    st.images_per_s = steps_per_epoch * cfg.batch_size / std::max(st.seconds, 1e-9);
    result.history.push_back(st);
    result.epochs_done = epoch + 1;
    if (cfg.progress_seconds >= 0) {
      last_print = clock::now();
      double elapsed = std::chrono::duration<double>(last_print - run_start).count();
      std::fprintf(stderr, "[adv %s] epoch %lld/%lld loss %.4f lr %.5f %.0f img/s %.1fs ETA %s\n", algo_name(cfg.algo),
                   (long long)st.epoch, (long long)cfg.epochs, st.loss, st.lr, st.images_per_s, st.seconds,
                   format_seconds(elapsed / (epoch + 1) * (cfg.epochs - epoch - 1)).c_str());
    }
    if (log.is_open()) {
      nlohmann::json j{{"epoch", st.epoch},   {"epochs", cfg.epochs}, {"steps", st.steps},
                       {"loss", st.loss},     {"lr", st.lr},          {"seconds", st.seconds},
                       {"images_per_s", st.images_per_s}, {"algo", algo_name(cfg.algo)}, {"model", cfg.model},
                       {"defense", "adv"},    {"eps", opt.eps},       {"alpha", opt.alpha},
                       {"steps_pgd", opt.steps}};
      log << j.dump() << "\n";
      log.flush();
    }
    if (cfg.on_epoch_end && !cfg.on_epoch_end(epoch + 1)) break;
  }
  learner->eval();
  return result;
}

}  // namespace cpoison::defense
