// The settings of an experiment scale (cpu-small, paper, ...): data, backbone, victim training,
// poison generation, evaluation and the cost model used by `--dry-run`. Each struct lists its
// fields once, in visit(), and that one list drives reading a TOML table (strictly: an unknown
// key or a value of the wrong type is an Error naming the dotted key and the file), writing
// JSON (the configuration a cached cell is compared against) and the key reference in
// docs/experiments.md.
//
// The C++ defaults are docs/cpu-scale-reference.md's settings (Fashion-MNIST, 5000 class-balanced
// images, width-8 ResNet-18, batch 256, 30 victim epochs, L-BFGS probe on features), which the
// demo uses as they are; tools/presets/scales.toml and each preset's [scale.NAME] table change
// them.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/train_knobs.h"

namespace cpoison::augment {
struct AugmentConfig;
}
namespace cpoison::data {
struct Dataset;
}
namespace cpoison::algorithms {
struct AlgoConfig;
struct TrainConfig;
}  // namespace cpoison::algorithms

namespace cpoison::tools::experiment {

// In a field list: the readers (space-separated names, "" for none) of the fields that follow,
// up to the next readers() call. A visitor that has a readers(const char*) method is told (the
// poison cache key, fields_read_by); the others pass over it.
template <class V>
void readers(V& v, const char* names) {
  if constexpr (requires { v.readers(names); }) v.readers(names);
}

// Which images: a built-in dataset name or an HDF5 dataset file, the class-balanced training
// subset and the transforms applied when loading.
struct DataSettings {
  std::string dataset = "fashion-mnist";
  int64_t subset = 5000;      // class-balanced training images (0: the whole training split)
  int64_t subset_seed = 0;
  int64_t test_subset = 0;    // first N test images (0: the whole test split)
  int64_t pad_to = 0;         // zero-pad to pad_to x pad_to (VGG needs 32)
  int64_t channels = 0;       // 0: as stored; 3: replicate grayscale

  template <class V>
  void visit(V& v) {
    v("dataset", dataset, "dataset name (fashion-mnist, cifar10, ...) or HDF5 dataset file");
    v("subset", subset, "class-balanced training images (0: all)");
    v("subset_seed", subset_seed, "seed of the subset's choice");
    v("test_subset", test_subset, "first N test images (0: all)");
    v("pad_to", pad_to, "zero-pad images to this size (0: as stored)");
    v("channels", channels, "0: as stored; 3: replicate grayscale to colour");
  }
};

// SGD training of a victim (contrastive or supervised): the library's training knobs
// (algorithms::TrainKnobs: epochs, batch size, SGD, warm-up and cosine, checkpoint interval; its
// one field list) at the cpu-small values, and the augmentation and convolution init.
struct TrainSettings : algorithms::TrainKnobs {
  TrainSettings() {
    epochs = 30;
    batch_size = 256;
    lr = 0.3;  // <= 0: the algorithm's default (SimCLR 0.5, MoCo 0.3, BYOL 1.0)
    warmup_epochs = 0;
    warmup_steps = 20;
    warmup_start_lr = 0;
    final_lr_fraction = 0;
    checkpoint_every = 5;
  }
  // simclr | cpu-small | crop-flip | none (algorithms::make_augment), or translate-flip
  // (±translate pixels with zero fill, then a horizontal flip: the supervised reference's).
  std::string augment = "cpu-small";
  int64_t translate = 2;
  // Convolution weights of the victim: kaiming-fan-out (the release's) | pytorch (nn.Conv2d's
  // default). A stated choice: it decides whether a random class-wise pattern is a shortcut.
  std::string init = "kaiming-fan-out";

  template <class V>
  void visit(V& v) {
    algorithms::TrainKnobs::visit(v);
    v("augment", augment, "simclr (spec §5) | cpu-small | crop-flip | none | translate-flip (±translate pixels with zero fill, then a horizontal flip)");
    v("translate", translate, "translate-flip: largest shift in pixels");
    v("init", init, "convolution init: kaiming-fan-out (the release's) | pytorch (nn.Conv2d's default)");
  }
};

// Per-algorithm overrides of algorithms::AlgoConfig (a negative or zero value keeps the default).
struct AlgoSettings {
  double temperature = 0;     // 0: default (SimCLR 0.5, MoCo 0.2)
  double ema_momentum = -1;   // -1: default (MoCo 0.99, BYOL 0.999)
  int64_t queue_size = -1;    // -1: 4096
  int64_t proj_hidden = -1;   // -1: default
  int64_t proj_dim = 0;       // 0: default
  int64_t pred_hidden = 0;    // 0: default (4096)
  double lr = 0;              // > 0: this algorithm's victim and attacker learning rate

  template <class V>
  void visit(V& v) {
    v("temperature", temperature, "softmax temperature (0: the default, SimCLR 0.5, MoCo 0.2)");
    v("ema_momentum", ema_momentum, "EMA momentum of the momentum copy (-1: the default, MoCo 0.99, BYOL 0.999)");
    v("queue_size", queue_size, "MoCo queue length (-1: the default, 4096)");
    v("proj_hidden", proj_hidden, "projector hidden width (-1: the default, SimCLR/MoCo the feature dim, BYOL 4096)");
    v("proj_dim", proj_dim, "projector output width (0: the default, SimCLR/MoCo 128, BYOL 256)");
    v("pred_hidden", pred_hidden, "BYOL predictor hidden width (0: the default, 4096)");
    v("lr", lr, "learning rate of this algorithm (0: the victim's / recipe's)");
  }
};

struct AlgosSettings {
  AlgoSettings simclr, moco, byol;
  template <class V>
  void visit(V& v) {
    v.section("simclr", simclr);
    v.section("moco", moco);
    v.section("byol", byol);
  }
};

// Any knob of `cpoison poison` (poison::PoisonConfig's field list, poison/generate.h: rounds,
// model_steps, pgd_steps, separability, target_shift, ...) for one attack, as {key: value}: a
// preset's `[scale.NAME.poison.cp_c] rounds = 30`. Applied after the recipe and the fields of
// PoisonSettings; a poison cell's cache key holds it when it is not empty. A knob added to
// PoisonConfig's list is thereby a preset key too.
struct AttackKnobs {
  nlohmann::json values = nlohmann::json::object();
};
inline void to_json(nlohmann::json& j, const AttackKnobs& k) { j = k.values; }

// Poison generation (poison::PoisonConfig). recipe "cpu-small" starts from
// PoisonConfig::recipe("cpu-small-cp-c" / "cpu-small-cp-s"), "paper" from "cp-c" / "cp-s";
// the fields below then override it (0 keeps the recipe's value).
struct PoisonSettings {
  std::string recipe = "cpu-small";
  double eps = 8.0 / 255.0;
  int64_t cp_c_rounds = 0, cp_s_rounds = 0;          // 0: the recipe's (10 / 12; paper 1000 / 200)
  int64_t cp_c_model_steps = 0, cp_c_noise_batches = 0;
  int64_t cp_s_pgd_steps = 0;
  int64_t batch_size = 0;
  double lr = 0;                                      // 0: the recipe's (or the algorithm's lr override)
  // CP-S's initial noise: "uniform" (cpu-small) or "cp-c" (the paper: the CP-C noise of the same
  // attacker, copied to every image by its label; adds a dependency on that poison).
  std::string cp_s_init = "uniform";
  // Baselines against supervised learning (attacker: a supervised model of the same backbone).
  int64_t unlearnable_rounds = 10, unlearnable_model_steps = 10, unlearnable_pgd_steps = 20;
  int64_t adversarial_pretrain_epochs = 5, adversarial_pgd_steps = 10;
  // AUE and AAP (docs/attacks.md): PoisonConfig recipe "cpu-small-aue" / "cpu-small-aap" (recipe
  // cpu-small) or "aue" / "aap" (paper), which these override (0 keeps the recipe's). Class-wise
  // AUE takes 1 PGD step unless aue_pgd_steps is set; aap_pgd_steps also sets AAP's step to
  // 2.5 / steps (2.5 eps / iterations, as aap.py; at most 2).
  int64_t aue_rounds = 0, aue_model_steps = 0, aue_pgd_steps = 0;
  double aue_strength = 0;
  int64_t aap_pretrain_epochs = 0, aap_pgd_steps = 0;
  double aap_strength = 0;
  // TUE's class-separability weight in the noise objective of cp-s, cp-c, unlearnable, aue and aap
  // (0: off), measured on the noise (TUE's) or the attacker's embeddings.
  double separability = 0;
  std::string separability_space = "noise";
  double pattern_period = 8;  // the pattern attack's grating period in pixels
  int64_t pattern_blank = 0;  // the pattern attack's class without a grating (-1: none)
  int64_t checkpoint_every = 1;                       // rounds between resumable checkpoints
  // Per-attack knobs (AttackKnobs), applied last.
  AttackKnobs cp_c, cp_s, unlearnable, adversarial, aue, aap, pattern;
  // The knobs of one attack ("cp-c", ...; empty for random).
  const AttackKnobs& knobs_of(const std::string& attack) const;
  // The knob tables as (TOML key, attack, member), listed once.
  template <class Self, class F>
  static void each_knob_table(Self& self, F f) {
    f("cp_c", "cp-c", self.cp_c);
    f("cp_s", "cp-s", self.cp_s);
    f("unlearnable", "unlearnable", self.unlearnable);
    f("adversarial", "adversarial", self.adversarial);
    f("aue", "aue", self.aue);
    f("aap", "aap", self.aap);
    f("pattern", "pattern", self.pattern);
  }
  static const char* table_readers(const char* attack, const char* cp_c_readers) {
    return std::string(attack) == "cp-c" ? cp_c_readers : attack;
  }

  template <class V>
  void visit(V& v) {
    // readers(): which attacks read the fields that follow (a poison cell's cache key records
    // only those, so that e.g. a CP-C poison stays cached when CP-S's rounds change).
    const char* optimised = "cp-s cp-c unlearnable adversarial aue aap";
    // A CP-S poison that starts from CP-C keeps CP-C's fields: they shape its start.
    const char* cp_c_readers = cp_s_init == "cp-c" ? "cp-c cp-s" : "cp-c";
    readers(v, optimised);
    v("recipe", recipe, "cpu-small | paper: the PoisonConfig recipe the other fields override");
    v("eps", eps, "L-infinity radius in pixel units (a number or a fraction such as \"8/255\")");
    readers(v, cp_c_readers);
    v("cp_c_rounds", cp_c_rounds, "CP-C rounds (0: the recipe's)");
    readers(v, "cp-s");
    v("cp_s_rounds", cp_s_rounds, "CP-S rounds (0: the recipe's)");
    readers(v, cp_c_readers);
    v("cp_c_model_steps", cp_c_model_steps, "CP-C model steps per round (0: the recipe's)");
    v("cp_c_noise_batches", cp_c_noise_batches, "CP-C noise batches per round (0: the recipe's)");
    readers(v, "cp-s");
    v("cp_s_pgd_steps", cp_s_pgd_steps, "CP-S PGD steps per batch (0: the recipe's)");
    readers(v, optimised);
    v("batch_size", batch_size, "attacker batch size (0: the recipe's)");
    v("lr", lr, "attacker learning rate (0: the recipe's)");
    readers(v, "cp-s");
    v("cp_s_init", cp_s_init, "uniform | cp-c: CP-S starts from the CP-C noise of the same attacker");
    readers(v, "unlearnable");
    v("unlearnable_rounds", unlearnable_rounds, "unlearnable examples: rounds");
    v("unlearnable_model_steps", unlearnable_model_steps, "unlearnable examples: model steps per round");
    v("unlearnable_pgd_steps", unlearnable_pgd_steps, "unlearnable examples: PGD steps per batch");
    readers(v, "adversarial");
    v("adversarial_pretrain_epochs", adversarial_pretrain_epochs, "adversarial poisoning: clean supervised epochs");
    v("adversarial_pgd_steps", adversarial_pgd_steps, "adversarial poisoning: PGD steps per batch");
    readers(v, "aue");
    v("aue_rounds", aue_rounds, "AUE: rounds (0: the recipe's, cpu-small 8, paper 60)");
    v("aue_model_steps", aue_model_steps, "AUE: model steps per round (0: the recipe's, one epoch)");
    v("aue_pgd_steps", aue_pgd_steps, "AUE: PGD steps per batch (0: the recipe's, cpu-small 3, paper 5; class-wise 1)");
    v("aue_strength", aue_strength, "AUE: augmentation strength (0: the recipe's, 0.6)");
    readers(v, "aap");
    v("aap_pretrain_epochs", aap_pretrain_epochs, "AAP: clean epochs of the reference classifier (0: the recipe's, cpu-small 12, paper 40)");
    v("aap_pgd_steps", aap_pgd_steps, "AAP: PGD steps per batch, step 2.5 / steps (0: the recipe's, cpu-small 20, paper 250)");
    v("aap_strength", aap_strength, "AAP: augmentation strength (0: the recipe's, 0.4)");
    // The separability term exists only when it is on (so poisons cached before it keep their
    // key), for the attacks that minimise their loss.
    readers(v, separability != 0 ? "cp-s cp-c unlearnable aue aap" : "");
    v("separability", separability, "weight of TUE's class-separability term (0: off)");
    v("separability_space", separability_space, "noise | embedding | features: where the separability term is measured");
    readers(v, "pattern");
    v("pattern_period", pattern_period, "pattern attack: the class-wise gratings' period in pixels (>= 2)");
    v("pattern_blank", pattern_blank, "pattern attack: the class left without a grating (-1: every class gets one)");
    readers(v, "");  // resuming is exact: the checkpoint interval does not change the result
    v("checkpoint_every", checkpoint_every, "rounds between resumable checkpoints");
    each_knob_table(*this, [&](const char* key, const char* attack, AttackKnobs& table) {
      // CP-C's table shapes a CP-S poison that starts from CP-C, as CP-C's fields above do.
      readers(v, table_readers(attack, cp_c_readers));
      v(key, table, "any `cpoison poison` knob (PoisonConfig's field list), applied last, e.g. { rounds = 30 }");
    });
  }
};

// Evaluation of a victim.
struct EvalSettings {
  std::string probe = "features";   // features (standardised features + L-BFGS) | sgd (the spec's)
  int64_t iterations = 300;         // features: L-BFGS iterations
  double l2 = 1e-4;                 // features: L2 penalty
  int64_t sgd_epochs = 100;         // sgd probe
  int64_t sgd_batch_size = 512;
  double sgd_lr = 1.0;
  bool clean_probe = true;          // also fit a probe on the clean training images
  int64_t alignment_images = 1000;  // alignment on poisoned vs clean views (0: skip)
  int64_t batch_size = 512;         // feature extraction batch

  template <class V>
  void visit(V& v) {
    v("probe", probe, "features (L-BFGS on standardised features) | sgd (the spec's SGD probe)");
    v("iterations", iterations, "features probe: L-BFGS iterations");
    v("l2", l2, "features probe: L2 penalty");
    v("sgd_epochs", sgd_epochs, "sgd probe: epochs");
    v("sgd_batch_size", sgd_batch_size, "sgd probe: batch size");
    v("sgd_lr", sgd_lr, "sgd probe: learning rate");
    v("clean_probe", clean_probe, "also fit a probe on the clean training images");
    v("alignment_images", alignment_images, "images for the alignment measurement (0: skip)");
    v("batch_size", batch_size, "feature extraction batch size");
  }
};

// Relative cost of the backbones (resnet18 = 1), used by the estimates.
struct ModelFactors {
  double resnet18 = 1, resnet34 = 2, resnet50 = 2.3, vgg19 = 0.7, densenet121 = 1.6, mobilenetv2 = 0.7;
  template <class V>
  void visit(V& v) {
    v("resnet18", resnet18, "cost relative to resnet18");
    v("resnet34", resnet34, "cost relative to resnet18");
    v("resnet50", resnet50, "cost relative to resnet18");
    v("vgg19", vgg19, "cost relative to resnet18");
    v("densenet121", densenet121, "cost relative to resnet18");
    v("mobilenetv2", mobilenetv2, "cost relative to resnet18");
  }
  double of(const std::string& model) const;  // Error naming the model when unknown
};

// Throughputs the dry-run's estimates start from (replaced by the rates measured in finished
// cells of the same results folder as soon as there are some). One "view" is one augmented
// image through the network (a contrastive step sees 2 views per image).
struct CostSettings {
  double simclr_views_per_s = 450, moco_views_per_s = 400, byol_views_per_s = 350;
  double supervised_images_per_s = 500;
  double poison_views_per_s = 450;       // model and noise phases together
  double feature_images_per_s = 1200;    // un-augmented forward passes (probe, alignment)
  double probe_seconds = 5;              // a fixed cost per L-BFGS probe fit
  ModelFactors model_factor;

  template <class V>
  void visit(V& v) {
    v("simclr_views_per_s", simclr_views_per_s, "SimCLR training throughput (views/s)");
    v("moco_views_per_s", moco_views_per_s, "MoCo v2 training throughput (views/s)");
    v("byol_views_per_s", byol_views_per_s, "BYOL training throughput (views/s)");
    v("supervised_images_per_s", supervised_images_per_s, "supervised training throughput (images/s)");
    v("poison_views_per_s", poison_views_per_s, "poison generation throughput (views/s, both phases)");
    v("feature_images_per_s", feature_images_per_s, "forward passes for probes (images/s)");
    v("probe_seconds", probe_seconds, "fixed seconds per probe fit");
    v.section("model_factor", model_factor);
  }
};

// Everything a scale decides.
struct Settings {
  std::string description;
  DataSettings data;
  std::string model = "resnet18";
  int64_t width = 8;
  uint64_t seed = 0;
  TrainSettings victim;              // contrastive victims
  TrainSettings supervised = supervised_defaults();
  AlgosSettings algo;
  PoisonSettings poison;
  EvalSettings eval;
  CostSettings cost;

  template <class V>
  void visit(V& v) {
    v("description", description, "one line shown in the table caption");
    v.section("data", data);
    v("model", model, "backbone of attackers and victims (resnet18, resnet34, resnet50, vgg19, densenet121, mobilenetv2)");
    v("width", width, "base width (64: the published models; 8: cpu-small)");
    v("seed", seed, "seed of weights, batch orders, augmentations and noise");
    v.section("victim", victim);
    v.section("supervised", supervised);
    v.section("algo", algo);
    v.section("poison", poison);
    v.section("eval", eval);
    v.section("cost", cost);
  }

  // docs/cpu-scale-reference.md's supervised victim: batch 128, 15 epochs, Nesterov 0.9, lr 0.1
  // cosine, wd 5e-4, ±2 px translation + flip, no warm-up.
  static TrainSettings supervised_defaults();
  // The settings of one algorithm ("simclr", "moco", "byol"); Error for others.
  const AlgoSettings& algo_settings(const std::string& algo) const;
  // Error naming the field (prefixed by `where`) for out-of-range values.
  void validate(const std::string& where) const;
};

// Writes the fields of a visit()-able struct into a JSON object (sections nested).
class JsonWriter {
public:
  explicit JsonWriter(nlohmann::json& out) : out_(out) {}
  template <class T>
  void operator()(const char* key, T& value, const char*) {
    out_[key] = value;
  }
  template <class S>
  void section(const char* key, S& s) {
    nlohmann::json sub = nlohmann::json::object();
    JsonWriter w(sub);
    s.visit(w);
    out_[key] = std::move(sub);
  }

private:
  nlohmann::json& out_;
};

// Any visit()-able struct as JSON (every field, nested like the TOML).
template <class S>
nlohmann::json to_json_fields(S& s) {
  nlohmann::json j = nlohmann::json::object();
  JsonWriter w(j);
  s.visit(w);
  return j;
}

// The fields of a visit()-able struct whose readers() include `reader`, as JSON (sections and
// fields before any readers() call are left out).
class ReadFieldsWriter {
public:
  ReadFieldsWriter(nlohmann::json& out, const std::string& reader) : out_(out), reader_(reader) {}
  void readers(const char* names) {
    read_ = false;
    for (const char* p = names; *p;) {
      while (*p == ' ') ++p;
      const char* end = p;
      while (*end && *end != ' ') ++end;
      if (end > p && reader_.compare(0, std::string::npos, p, (size_t)(end - p)) == 0) read_ = true;
      p = end;
    }
  }
  template <class T>
  void operator()(const char* key, T& value, const char*) {
    if (read_) out_[key] = value;
  }
  void operator()(const char* key, AttackKnobs& value, const char*) {
    if (read_ && !value.values.empty()) out_[key] = value.values;  // absent when empty: older cells keep their key
  }
  template <class S>
  void section(const char*, S&) {}

private:
  nlohmann::json& out_;
  const std::string& reader_;
  bool read_ = false;
};

template <class S>
nlohmann::json fields_read_by(S& s, const std::string& reader) {
  nlohmann::json j = nlohmann::json::object();
  ReadFieldsWriter w(j, reader);
  s.visit(w);
  return j;
}

// The key reference (dotted key, default, help) of every field, for docs and --help.
std::vector<std::vector<std::string>> settings_reference();

// The one mapping of the training settings onto the library's TrainConfig, shared by
// `cpoison train` and the experiment's victims: epochs, batch size, optimiser, schedule,
// checkpoint interval, the convolution init and the augmentation of `ds` (translate-flip: a flip
// and normalisation, the translation by up to `translate` pixels a batch hook set here, which a
// defence's hook may wrap). The algorithm, model, seed and paths are the caller's.
void apply_training(const TrainSettings& t, const data::Dataset& ds, algorithms::TrainConfig& cfg);
// The augmentation apply_training sets (translate-flip: flip + normalisation only).
augment::AugmentConfig training_augment(const TrainSettings& t, const data::Dataset& ds);
// The one mapping of an algorithm's overrides onto its AlgoConfig (each applied when it is not
// at its "default" sentinel); lr is the caller's (it is a learning rate, not a learner setting).
void apply_algo(const AlgoSettings& a, algorithms::AlgoConfig& c);

}  // namespace cpoison::tools::experiment
