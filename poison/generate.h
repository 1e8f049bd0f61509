// Poison generation: contrastive poisoning (the paper's Algorithm 1, sample-wise and class-wise,
// single and dual branch), the baselines (uniform random noise, unlearnable examples,
// adversarial poisoning) and the attacks against contrastive learning that came after it (AUE and
// AAP of Wang et al. 2024, with TUE's class-separability term as an option; docs/attacks.md).
// Images: datasets u8 [N,H,W,C]; batches and delta f32 [B,C,H,W]; delta in unit scale [-1, 1],
// the pixel perturbation being eps * delta.
//
// Contrastive poisoning, per round t = 1..T:
//   1. model phase: lr from the schedule at round t; T_θ SGD steps of the attacker's learner on
//      augmented views of poisoned images (delta frozen); batches from a sampler that persists
//      across rounds; EMA update of the momentum copies after each step.
//   2. noise phase: learner in eval mode (BN uses running statistics), online weights frozen;
//      for each of T_δ batches (a fresh shuffle each round) repeat pgd_steps times: fresh
//      augmentations -> loss -> gradient w.r.t. delta only -> delta <- clamp(delta - a sign(g), -1, 1).
//      Momentum copies keep their EMA updates and MoCo keeps enqueuing keys, as in the release.
// Class-wise noise is indexed by label, so each class's delta receives the summed gradient of
// the class's images in the batch. The supervised attacks run the same two phases with a
// classifier and cross-entropy (unlearnable examples, AUE), or a clean pre-training followed by
// noise phases only (adversarial poisoning, AAP).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "algorithms/learner.h"
#include "augment/augment.h"
#include "engine/data/dataset.h"
#include "models/encoder.h"
#include "poison/poison_file.h"

namespace cpoison::poison {

enum class Attack { cp_sample, cp_class, random, unlearnable, adversarial, aue, aap, pattern };
// "cp-s", "cp-c", "random", "unlearnable", "adversarial", "aue", "aap", "pattern"; Error listing them
// otherwise.
Attack parse_attack(const std::string& name);
const char* attack_name(Attack a);
// Whether the attack's model is a supervised classifier (unlearnable, adversarial, aue, aap).
bool supervised_attack(Attack a);
// Whether the noise is drawn, not optimised (random, pattern): no attacker model, no rounds.
bool synthetic_attack(Attack a);

// The class-wise grating of `--attack pattern` (docs/attacks.md): class c of K gets a square-wave
// grating of orientation theta_c = pi c / K and the given period in pixels, at full amplitude,
// delta(y, x) = +1 where sin(2 pi (x cos theta_c + y sin theta_c) / period + phase_c) >= 0, else -1,
// the same on every channel; phase_c ~ U[0, 2 pi) from the seed. Class `blank` (when in [0, K))
// gets no grating (delta = 0): clean test images then look like that class's training images, so
// a probe that learnt the gratings pulls them towards it (docs/attacks.md). Returns f32 [K, C, H, W].
Tensor grating_patterns(int64_t classes, int64_t channels, int64_t height, int64_t width, double period, uint64_t seed,
                        int64_t blank = -1);

// Where the noise starts: U[-1, 1) (the release's), zero, or a poison file.
enum class NoiseInit { uniform, zero, file };
// "uniform" | "zero" | "file"; Error(where, ...) listing them otherwise.
NoiseInit parse_noise_init(const std::string& name, const std::string& where = "init");
const char* noise_init_name(NoiseInit init);

// Where TUE's class-separability term is measured (PoisonConfig::separability_space).
enum class SeparabilitySpace { noise, embedding, features };
// "noise" | "embedding" | "features"; Error(where, ...) listing them otherwise.
SeparabilitySpace parse_separability_space(const std::string& name, const std::string& where = "separability_space");
const char* separability_space_name(SeparabilitySpace space);

struct PoisonConfig {
  Attack attack = Attack::cp_class;
  // Noise shape (cp-s / cp-c fix it; random, unlearnable, aue and aap take either; adversarial
  // is sample-wise; pattern is class-wise).
  NoiseKind kind = NoiseKind::class_wise;
  algorithms::Algo algo = algorithms::Algo::simclr;  // attacker's algorithm (supervised for UE / adversarial)
  algorithms::AlgoConfig algo_config = algorithms::AlgoConfig::defaults(algorithms::Algo::simclr);
  std::string model = "resnet18";
  models::ModelOptions model_options;
  augment::AugmentConfig augment;  // the attacker's (and victim's) augmentations
  // > 0: the attacker uses with_strength(augment, augment_strength) (AUE / AAP's strength rule,
  // augment/augment.h); 0: augment as given.
  double augment_strength = 0;

  double eps = 8.0 / 255.0;  // L-infinity radius in pixel units
  double step = 0.1;         // PGD step a in unit scale (0.1 = eps / 10)
  int64_t rounds = 10;       // T
  int64_t model_steps = 20;  // T_θ; <= 0: one epoch of the training set
  int64_t noise_batches = 20;  // T_δ; <= 0: one pass over the poisoned images
  int64_t pgd_steps = 1;
  int64_t batch_size = 256;

  // Attacker's SGD: lr (<= 0: the algorithm's default), momentum, weight decay; schedule over the
  // rounds: cosine from lr to final_lr_fraction * lr (the paper), or constant (cpu-small).
  double lr = 0.3;
  double momentum = 0.9;
  double weight_decay = 1e-4;
  bool cosine = false;
  double final_lr_fraction = 0.001;

  // Initial delta; file: init_file, any poison file (e.g. AUE -> CP-S: a class-wise poison is
  // copied to every image by its label, a sample-wise one must be of the same images; its noise
  // is rescaled from its eps to this run's, so the pixel perturbation is kept, clipped to [-1, 1]).
  NoiseInit init = NoiseInit::uniform;
  std::string init_file;
  double ratio = 1.0;  // poisoned fraction of the training set

  // Adversarial poisoning and AAP: supervised epochs on clean data before the noise phases, with
  // a per-step schedule: linear warm-up from 0 over pretrain_warmup_epochs, then a cosine from lr
  // to 0.
  int64_t pretrain_epochs = 5;
  int64_t pretrain_warmup_epochs = 0;
  // AAP: the noise minimises the cross-entropy towards class (y + target_shift) mod classes.
  int64_t target_shift = 1;

  // TUE's class-separability term (algorithms::class_separability_loss): the noise phase minimises
  // loss + separability * CSD. 0: off. For attacks that minimise (cp-s, cp-c, unlearnable, aue, aap).
  // separability_space: noise (TUE's release: the batch's perturbations eps * delta, flattened,
  // grouped by the images' labels) or embedding (the attacker's unit-length embeddings of the
  // first augmented view: the contrastive head output, or a classifier's backbone features).
  // features: the attacker's backbone features (global-average-pooled, before any head) of the
  // un-augmented poisoned images in eval mode, i.e. what a victim's linear probe is fitted on:
  // noise that makes those features separable by class is a shortcut for the probe.
  // separability_detach_spread: the release's gradient (the within-class spreads held constant).
  double separability = 0;
  SeparabilitySpace separability_space = SeparabilitySpace::noise;
  bool separability_detach_spread = false;
  // Weight of the attack's own loss (InfoNCE, cross-entropy) in the noise objective: the noise
  // phase minimises attack_loss_weight * loss + separability * CSD. 0 drops the own loss (TUE's
  // SimCLR setting: the CSD term alone; the model phase still trains the attacker as usual); it
  // needs separability > 0. The model phase always uses the own loss at weight 1.
  double attack_loss_weight = 1;
  // pattern: the gratings' period in pixels (>= 2).
  double pattern_period = 8;
  // pattern: the class left without a grating (-1: every class gets one). Class 0 by default: a
  // class whose released images look like clean ones makes "no grating" a class cue that every
  // clean test image carries (docs/experiments.md, "The blank class").
  int64_t pattern_blank = 0;

  // Extension points for contrastive attackers (algorithms/flow.h, docs/extending.md), acting in
  // the model and the noise phase: the gradient flow (null: the built-in single or dual branch
  // that algo_config.dual_branch names) and the loss over the learner's outputs (empty: the
  // algorithm's own). A checkpoint records the flow's name and whether a loss was set; a
  // resume must set the same.
  algorithms::FlowPtr flow;
  algorithms::OutputLoss loss;

  uint64_t seed = 0;
  Device device = Device::cpu;

  // Resume state: written every checkpoint_every rounds (0: never) to checkpoint_path.
  std::string checkpoint_path;
  int64_t checkpoint_every = 1;
  bool resume = false;
  // A resume refuses a checkpoint made with other settings (every field of this config that
  // shapes the noise, and the training images' fingerprint; not rounds, which a resume may
  // extend but never cut below those done) unless allow_changed (then it warns per change).
  bool allow_changed = false;
  double progress_seconds = 10;  // < 0: silent
  // After each round, the attacker's loss on the first diagnose_images poisoned images, with
  // their noise and without it, under the same fixed augmentation draws (eval mode, no
  // gradient; MoCo enqueues nothing): how much easier the poison makes the attacker's task,
  // round by round. 0: off. It changes no random stream, so the poison is the same either way.
  int64_t diagnose_images = 512;
  // Called after each round (after its checkpoint); false stops there, as a kill would.
  std::function<bool(int64_t rounds_done)> on_round_end;

  // The numeric, text and named (enum) knobs that a recipe sets and a caller may override one by
  // one, listed once: v(key, member, help), or v(key, member, parse, name, help) for an enum
  // (tools/fields.h makes `cpoison poison`'s flags of them, --model-steps for model_steps). The
  // fields that need more than a value (attack, kind, eps and step as fractions, lr's default,
  // cosine as --schedule, init, the attacker's algorithm, model and augmentation) and those of a
  // run (seed, device, paths) are not listed.
  template <class V>
  void visit(V& v) {
    v("rounds", rounds, "Rounds T of model phase + noise phase");
    v("model_steps", model_steps, "Model SGD steps per round (0: one epoch)");
    v("noise_batches", noise_batches, "Noise batches per round (0: one pass)");
    v("pgd_steps", pgd_steps, "PGD steps per noise batch");
    v("batch_size", batch_size, "Images per step (paper 512, cpu-small 256)");
    v("momentum", momentum, "SGD momentum");
    v("weight_decay", weight_decay, "SGD weight decay");
    v("final_lr_fraction", final_lr_fraction, "The cosine ends at this fraction of --lr");
    v("ratio", ratio, "Poisoned fraction of the training set (0, 1]");
    v("pretrain_epochs", pretrain_epochs, "Adversarial poisoning: clean supervised epochs first");
    v("pretrain_warmup_epochs", pretrain_warmup_epochs,
      "Adversarial / AAP pre-training: linear warm-up epochs before the cosine (aap: 10, cpu-small-aap: 3)");
    v("target_shift", target_shift, "AAP: the noise pushes class y towards (y + SHIFT) mod classes");
    v("augment_strength", augment_strength,
      "AUE / AAP augmentation strength s in [0, 2]: crop area from max(1 - 0.9 s, 0.05), jitter 0.4 s with p "
      "min(0.99, 0.8 s), gray p 0.2 s (0: the --augment list as is; aue 0.6, aap 0.4)");
    v("separability", separability,
      "Weight of TUE's class-separability term added to the noise objective (0: off; cp-s, cp-c, unlearnable, aue, aap)");
    v("separability_space", separability_space, parse_separability_space, separability_space_name,
      "Where the separability term is measured: noise (TUE's: the perturbations) | embedding (the attacker's "
      "normalised embeddings of the views) | features (its backbone features of the un-augmented poisoned images, "
      "what a linear probe is fitted on)");
    v("separability_detach_spread", separability_detach_spread,
      "Separability gradient as TUE's release has it (within-class spreads held constant)");
    v("attack_loss_weight", attack_loss_weight,
      "Weight of the attack's own loss in the noise objective (1; 0: the separability term alone, TUE's SimCLR setting)");
    v("pattern_period", pattern_period, "pattern: the gratings' period in pixels (8)");
    v("pattern_blank", pattern_blank, "pattern: the class left without a grating (0; -1: every class gets one)");
  }

  // Recipes: "cp-c" and "cp-s" with the paper's settings (docs/reference-implementation.md §2) for
  // the given algorithm; "cpu-small-cp-c" / "cpu-small-cp-s" with docs/cpu-scale-reference.md's;
  // "aue" / "aap" with Wang et al.'s CIFAR-10 settings and "cpu-small-aue" / "cpu-small-aap"
  // sized for 2000 Fashion-MNIST images on two cores (docs/attacks.md; algo is not used).
  static PoisonConfig recipe(const std::string& name, algorithms::Algo algo);
  void validate() const;  // Error naming the field
};

// PoisonConfig's field list (visit()) as JSON: {key: value}, an enum by its name. `cpoison poison`
// records it in the poison file, a resume compares it, the experiment writes it into a poison
// cell's result.json; a knob added to the list is then in all of them.
nlohmann::ordered_json knob_values(const PoisonConfig& c);
// Sets the knobs named in `values` (an object {key: value} of keys from the field list, an
// integer for an integer knob, a number for a real one, true / false, an enum's name). Error
// naming `where`.key for an unknown key or a value of the wrong type; the others are unchanged.
void set_knobs(PoisonConfig& c, const nlohmann::json& values, const std::string& where);

struct RoundStats {
  int64_t round = 0;
  double model_loss = 0;  // mean over the model phase's steps (adversarial, aap: round 1's last pre-training epoch)
  double noise_loss = 0;  // mean over the noise phase's PGD steps (before each step)
  // The attacker's loss after the round on poisoned and on clean views of the same images
  // (NaN when diagnose_images is 0 or there is no attacker).
  double probe_loss_poisoned = std::nan(""), probe_loss_clean = std::nan("");
  double views_per_s = 0;  // augmented views through the attacker per second, both phases
  double seconds = 0;
};

struct PoisonResult {
  Poison poison;
  std::vector<RoundStats> history;  // rounds run by this call
  bool finished = false;            // all rounds done (false when on_round_end stopped the run)
  // The attacker's model as the run left it (train mode; null for random noise): the classifier
  // the noise was made against for the supervised attacks. For diagnostics and tests.
  std::shared_ptr<algorithms::Learner> attacker;
};

// Generates the poison for `train` (the images it will be added to). dataset_name and subset
// are recorded in the poison file. Resumes from cfg.checkpoint_path when cfg.resume and the
// file exists: a resumed run gives the same delta as an uninterrupted one.
PoisonResult generate_poison(const data::Dataset& train, const PoisonConfig& cfg, const std::string& dataset_name,
                             int64_t subset);

}  // namespace cpoison::poison
