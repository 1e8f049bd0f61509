#include "tools/experiment/settings.h"

#include <cmath>
#include <sstream>

#include "algorithms/learner.h"
#include "algorithms/train.h"
#include "augment/augment.h"
#include "engine/error.h"
#include "engine/size.h"
#include "models/encoder.h"

namespace cpoison::tools::experiment {

TrainSettings Settings::supervised_defaults() {
  TrainSettings t;
  t.epochs = 15;
  t.batch_size = 128;
  t.lr = 0.1;
  t.momentum = 0.9;
  t.nesterov = true;
  t.weight_decay = 5e-4;
  t.warmup_epochs = 0;
  t.warmup_steps = 0;
  t.warmup_start_lr = 0;
  t.final_lr_fraction = 0;
  t.augment = "translate-flip";
  t.translate = 2;
  return t;
}

const AlgoSettings& Settings::algo_settings(const std::string& algo) const {
  if (algo == "simclr") return this->algo.simclr;
  if (algo == "moco") return this->algo.moco;
  if (algo == "byol") return this->algo.byol;
  fail("settings", "no algorithm settings for '", algo, "' (simclr, moco or byol)");
}

double ModelFactors::of(const std::string& model) const {
  if (model == "resnet18") return resnet18;
  if (model == "resnet34") return resnet34;
  if (model == "resnet50") return resnet50;
  if (model == "vgg19") return vgg19;
  if (model == "densenet121") return densenet121;
  if (model == "mobilenetv2") return mobilenetv2;
  fail("cost.model_factor", "unknown model '", model, "' (resnet18, resnet34, resnet50, vgg19, densenet121, mobilenetv2)");
}

namespace {

void check_train(const std::string& where, const TrainSettings& t) {
  CP_CHECK(t.epochs >= 1, where, ".epochs must be >= 1, got ", t.epochs);
  CP_CHECK(t.batch_size >= 2, where, ".batch_size must be >= 2, got ", t.batch_size);
  CP_CHECK(std::isfinite(t.lr) && t.lr >= 0 && t.lr <= 1000, where, ".lr must be in [0, 1000] (0: the default), got ",
           t.lr);
  CP_CHECK(t.warmup_steps >= -1, where, ".warmup_steps must be >= 0 or -1 (use warmup_epochs), got ", t.warmup_steps);
  CP_CHECK(t.final_lr_fraction <= 1, where, ".final_lr_fraction must be at most 1, got ", t.final_lr_fraction);
  CP_CHECK(t.momentum >= 0 && t.momentum < 1, where, ".momentum must be in [0, 1), got ", t.momentum);
  CP_CHECK(t.weight_decay >= 0, where, ".weight_decay must be >= 0, got ", t.weight_decay);
  CP_CHECK(t.warmup_epochs >= 0 && t.warmup_start_lr >= 0 && t.final_lr_fraction >= 0, where,
           ".warmup_epochs, .warmup_start_lr and .final_lr_fraction must be >= 0");
  CP_CHECK(t.augment == "simclr" || t.augment == "cpu-small" || t.augment == "crop-flip" || t.augment == "none" ||
               t.augment == "translate-flip",
           where, ".augment '", t.augment, "' is not one of simclr, cpu-small, crop-flip, none, translate-flip");
  CP_CHECK(t.init == "kaiming-fan-out" || t.init == "pytorch", where, ".init '", t.init,
           "' is not one of kaiming-fan-out, pytorch");
  CP_CHECK(t.translate >= 0, where, ".translate must be >= 0, got ", t.translate);
  CP_CHECK(t.checkpoint_every >= 0, where, ".checkpoint_every must be >= 0, got ", t.checkpoint_every);
}

// The per-algorithm overrides: each within its range or at its "default" sentinel.
void check_algo(const std::string& where, const AlgoSettings& a) {
  CP_CHECK(std::isfinite(a.temperature) && a.temperature >= 0 && a.temperature <= 100, where,
           ".temperature must be in [0, 100] (0: the default), got ", a.temperature);
  CP_CHECK(a.ema_momentum == -1 || (a.ema_momentum >= 0 && a.ema_momentum <= 1), where,
           ".ema_momentum must be in [0, 1] or -1 (the default), got ", a.ema_momentum);
  CP_CHECK(a.queue_size >= -1 && a.queue_size <= algorithms::kMaxQueue, where, ".queue_size must be in [0, ",
           algorithms::kMaxQueue, "] or -1 (the default), got ", a.queue_size);
  CP_CHECK(a.proj_hidden >= -1 && a.proj_hidden <= algorithms::kMaxHeadWidth, where, ".proj_hidden must be in [0, ",
           algorithms::kMaxHeadWidth, "] or -1 (the default), got ", a.proj_hidden);
  CP_CHECK(a.proj_dim >= 0 && a.proj_dim <= algorithms::kMaxHeadWidth, where, ".proj_dim must be in [0, ",
           algorithms::kMaxHeadWidth, "] (0: the default), got ", a.proj_dim);
  CP_CHECK(a.pred_hidden >= 0 && a.pred_hidden <= algorithms::kMaxHeadWidth, where, ".pred_hidden must be in [0, ",
           algorithms::kMaxHeadWidth, "] (0: the default), got ", a.pred_hidden);
  CP_CHECK(std::isfinite(a.lr) && a.lr >= 0 && a.lr <= 1000, where, ".lr must be in [0, 1000] (0: the default), got ",
           a.lr);
}

}  // namespace

void Settings::validate(const std::string& where) const {
  CP_CHECK(!data.dataset.empty(), where, "data.dataset is empty");
  CP_CHECK(data.subset >= 0 && data.test_subset >= 0 && data.pad_to >= 0, where,
           "data.subset, data.test_subset and data.pad_to must be >= 0");
  CP_CHECK(data.channels == 0 || data.channels == 1 || data.channels == 3, where, "data.channels must be 0, 1 or 3, got ",
           data.channels);
  CP_CHECK(width >= 1 && width <= models::kMaxWidth, where, "width must be in [1, ", models::kMaxWidth, "], got ", width);
  CP_CHECK(data.pad_to <= kMaxImageSide && data.subset <= kMaxAxis && data.test_subset <= kMaxAxis, where,
           "data.subset, data.test_subset and data.pad_to must be at most ", kMaxAxis, ", ", kMaxAxis, " and ",
           kMaxImageSide);
  check_algo(where + " algo.simclr", algo.simclr);
  check_algo(where + " algo.moco", algo.moco);
  check_algo(where + " algo.byol", algo.byol);
  (void)cost.model_factor.of(model);
  check_train(where + " victim", victim);
  check_train(where + " supervised", supervised);
  CP_CHECK(poison.recipe == "cpu-small" || poison.recipe == "paper", where, "poison.recipe '", poison.recipe,
           "' is not cpu-small or paper");
  CP_CHECK(poison.eps > 0 && poison.eps <= 1, where, "poison.eps ", poison.eps, " outside (0, 1] (8/255 = 0.0314)");
  CP_CHECK(poison.cp_s_init == "uniform" || poison.cp_s_init == "cp-c", where, "poison.cp_s_init '", poison.cp_s_init,
           "' is not uniform or cp-c");
  for (int64_t v : {poison.cp_c_rounds, poison.cp_s_rounds, poison.cp_c_model_steps, poison.cp_c_noise_batches,
                    poison.cp_s_pgd_steps, poison.batch_size})
    CP_CHECK(v >= 0, where, "poison counts (rounds, steps, batch_size) must be >= 0 (0: the recipe's), got ", v);
  CP_CHECK(poison.unlearnable_rounds >= 1 && poison.unlearnable_model_steps >= 0 && poison.unlearnable_pgd_steps >= 1 &&
               poison.adversarial_pretrain_epochs >= 0 && poison.adversarial_pgd_steps >= 1,
           where, "poison.unlearnable_* / adversarial_* out of range");
  for (int64_t v : {poison.aue_rounds, poison.aue_model_steps, poison.aue_pgd_steps, poison.aap_pretrain_epochs,
                    poison.aap_pgd_steps})
    CP_CHECK(v >= 0, where, "poison.aue_* / aap_* counts must be >= 0 (0: the recipe's), got ", v);
  for (double v : {poison.aue_strength, poison.aap_strength})
    CP_CHECK(v >= 0 && v <= 2, where, "poison.aue_strength / aap_strength must be in [0, 2] (0: the recipe's), got ", v);
  CP_CHECK(std::isfinite(poison.separability) && poison.separability >= 0, where, "poison.separability must be >= 0, got ",
           poison.separability);
  CP_CHECK(poison.separability_space == "noise" || poison.separability_space == "embedding" ||
               poison.separability_space == "features",
           where, "poison.separability_space '", poison.separability_space, "' is not noise, embedding or features");
  CP_CHECK(std::isfinite(poison.pattern_period) && poison.pattern_period >= 2 && poison.pattern_period <= 1e6, where,
           "poison.pattern_period must be in [2, 1e6] pixels, got ", poison.pattern_period);
  CP_CHECK(poison.pattern_blank >= -1 && poison.pattern_blank <= kMaxAxis, where,
           "poison.pattern_blank must be a class index or -1 (none), got ", poison.pattern_blank);
  CP_CHECK(poison.checkpoint_every >= 0, where, "poison.checkpoint_every must be >= 0");
  CP_CHECK(eval.probe == "features" || eval.probe == "sgd", where, "eval.probe '", eval.probe,
           "' is not features or sgd");
  CP_CHECK(eval.iterations >= 0 && eval.l2 >= 0 && eval.sgd_epochs >= 1 && eval.sgd_batch_size >= 1 &&
               eval.alignment_images >= 0 && eval.batch_size >= 1,
           where, "eval values out of range");
  for (double r : {cost.simclr_views_per_s, cost.moco_views_per_s, cost.byol_views_per_s, cost.supervised_images_per_s,
                   cost.poison_views_per_s, cost.feature_images_per_s})
    CP_CHECK(r > 0, where, "cost rates must be > 0, got ", r);
}

namespace {

// Collects (dotted key, default value, help) rows.
class ReferenceWriter {
public:
  ReferenceWriter(std::vector<std::vector<std::string>>& rows, std::string prefix) : rows_(rows), prefix_(std::move(prefix)) {}
  template <class T>
  void operator()(const char* key, T& value, const char* help) {
    rows_.push_back({prefix_ + key, nlohmann::json(value).dump(), help});
  }
  template <class S>
  void section(const char* key, S& s) {
    ReferenceWriter w(rows_, prefix_ + key + ".");
    s.visit(w);
  }

private:
  std::vector<std::vector<std::string>>& rows_;
  std::string prefix_;
};

}  // namespace

std::vector<std::vector<std::string>> settings_reference() {
  std::vector<std::vector<std::string>> rows;
  Settings s;
  ReferenceWriter w(rows, "");
  s.visit(w);
  return rows;
}

augment::AugmentConfig training_augment(const TrainSettings& t, const data::Dataset& ds) {
  const bool translate_flip = t.augment == "translate-flip";
  augment::AugmentConfig a =
      algorithms::make_augment(translate_flip ? augment::Recipe::none : augment::parse_recipe(t.augment), ds);
  if (translate_flip) a.flip = true;
  return a;
}

void apply_training(const TrainSettings& t, const data::Dataset& ds, algorithms::TrainConfig& cfg) {
  cfg.model_options.init = models::parse_init(t.init);
  cfg.augment = training_augment(t, ds);
  if (t.augment == "translate-flip" && t.translate > 0) {
    const int64_t shift = t.translate;
    cfg.batch_hook = [shift](const Tensor& x, const data::Batch&, Generator& gen) {
      return augment::random_translate(x, shift, gen);
    };
  }
  static_cast<algorithms::TrainKnobs&>(cfg) = t;  // every knob of the one list
}

const AttackKnobs& PoisonSettings::knobs_of(const std::string& attack) const {
  static const AttackKnobs none;
  const AttackKnobs* found = &none;
  each_knob_table(*this, [&](const char*, const char* name, const AttackKnobs& table) {
    if (attack == name) found = &table;
  });
  return *found;
}

void apply_algo(const AlgoSettings& a, algorithms::AlgoConfig& c) {
  if (a.temperature > 0) c.temperature = a.temperature;
  if (a.ema_momentum >= 0) c.momentum = a.ema_momentum;
  if (a.queue_size >= 0) c.queue_size = a.queue_size;
  if (a.proj_hidden >= 0) c.proj_hidden = a.proj_hidden;
  if (a.proj_dim > 0) c.proj_dim = a.proj_dim;
  if (a.pred_hidden > 0) c.pred_hidden = a.pred_hidden;
}

}  // namespace cpoison::tools::experiment
