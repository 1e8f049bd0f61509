// `cpoison poison`: generates a poison (contrastive poisoning CP-S / CP-C, the baselines:
// uniform random noise, unlearnable examples, adversarial poisoning, or AUE / AAP: docs/attacks.md)
// for a training set and writes it as an HDF5 poison file (docs/poison-format.md) plus a PNG of
// the noise.
//   cpoison poison --attack cp-c --algo simclr --data cifar10 --out cpc.h5                 (the paper's recipe)
//   cpoison poison --attack cp-s --algo simclr --data fashion-mnist --recipe cpu-small --out cps.h5
//   cpoison poison --attack cp-s --data cifar10 --init file --init-file cpc.h5 --out cps.h5 --resume
//   cpoison poison --attack aue --recipe cpu-small --data fashion-mnist --subset 2000 --out aue.h5
// A run checkpoints to OUT.ckpt.h5 every --checkpoint-every rounds; --resume continues it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "algorithms/train.h"
#include "engine/distributed/comm.h"
#include "poison/generate.h"
#include "tools/command.h"
#include "tools/common.h"
#include "tools/experiment/settings.h"
#include "tools/experiment/flags.h"

namespace {

using namespace cpoison;
using namespace cpoison::poison;
using algorithms::Algo;

struct Options {
  std::string attack, algo = "simclr", recipe = "paper", kind, eps = "8/255", step = "0.1", init = "uniform", init_file;
  std::string model = "resnet18", augment, device = "cpu", out, schedule = "cosine";
  int64_t width = 64, checkpoint_every = 1, stop_after_rounds = 0;
  double lr = 0, progress_seconds = 10;
  uint64_t seed = 0;
  bool dual_branch = false, byol_detach_target = false, resume = false, allow_changed = false;
  // The recipe's knobs (PoisonConfig::visit: rounds, steps, batch size, SGD, AUE / AAP / TUE /
  // pattern settings, docs/attacks.md), each overriding the recipe when its flag is given.
  PoisonConfig knobs;
  // Algorithm settings whose default depends on the algorithm (their sentinels: AlgoConfig::defaults);
  // flags from the field list.
  tools::experiment::AlgoSettings algo_settings;
  double loss_scale = 1.0;
  tools::DataOptions data;
};

bool uses_supervised_model(Attack a) { return supervised_attack(a); }
// The supervised baselines (unlearnable examples, adversarial poisoning) train with crop-flip at
// the supervised lr; AUE and AAP take the contrastive augmentations (at their strength).
bool crop_flip_baseline(Attack a) { return a == Attack::unlearnable || a == Attack::adversarial; }

// The PoisonConfig recipe behind --recipe for this attack. CP-S takes the sample-wise schedule;
// every other attack the class-wise one (its rounds x (model steps, noise batches) loop).
std::string recipe_for(const std::string& recipe, Attack attack) {
  // AUE and AAP have recipes of their own, and only they use them.
  if (attack == Attack::aue || attack == Attack::aap) {
    const std::string own = attack_name(attack);
    if (recipe == "paper") return own;
    if (recipe == "cpu-small") return "cpu-small-" + own;
    CP_CHECK(recipe == own || recipe == "cpu-small-" + own, "--recipe", "--attack ", own, " takes --recipe paper, cpu-small, ",
             own, " or cpu-small-", own, ", not ", recipe);
    return recipe;
  }
  for (const char* r : {"aue", "aap", "cpu-small-aue", "cpu-small-aap"})
    CP_CHECK(recipe != r, "--recipe", "recipe ", recipe, " is for --attack ", recipe.substr(recipe.size() - 3), ", not ",
             attack_name(attack));
  const bool sample_schedule = attack == Attack::cp_sample;
  if (recipe == "paper") return sample_schedule ? "cp-s" : "cp-c";
  if (recipe == "cpu-small") return sample_schedule ? "cpu-small-cp-s" : "cpu-small-cp-c";
  if (recipe == "cp-c" || recipe == "cp-s" || recipe == "cpu-small-cp-c" || recipe == "cpu-small-cp-s") {
    const bool recipe_sample = recipe.size() >= 4 && recipe.compare(recipe.size() - 4, 4, "cp-s") == 0;
    CP_CHECK(!(attack == Attack::cp_sample && !recipe_sample) && !(attack == Attack::cp_class && recipe_sample), "--recipe",
             "recipe ", recipe, " is ", recipe_sample ? "sample" : "class", "-wise but --attack is ", attack_name(attack),
             " (use --recipe paper or cpu-small to follow the attack)");
    return recipe;
  }
  fail("--recipe", "unknown recipe '", recipe,
       "' (choose paper, cpu-small, cp-c, cp-s, cpu-small-cp-c, cpu-small-cp-s, aue, aap, cpu-small-aue or cpu-small-aap)");
}

// The options whose value applies only when given (the recipe's or the attack's default
// otherwise), read through CLI::Option::count() once the command line is parsed.
struct Given {
  CLI::Option *algo = nullptr, *recipe = nullptr, *kind = nullptr, *step = nullptr, *init = nullptr, *width = nullptr,
              *lr = nullptr, *augment = nullptr;
  // Options that override the recipe: applied after the recipe, only when given.
  std::vector<std::pair<CLI::Option*, std::function<void(PoisonConfig&)>>> overrides;
  // The recipe's knobs (PoisonConfig::visit), by field key.
  tools::FieldFlags knobs;

  CLI::Option* overriding(CLI::Option* opt, std::function<void(PoisonConfig&)> apply) {
    overrides.emplace_back(opt, std::move(apply));
    return opt;
  }
};

void add_attack_flags(CLI::App& app, const std::shared_ptr<Options>& o, Given& given) {
  app.add_option("--attack", o->attack,
                 "cp-s | cp-c | random | unlearnable | adversarial | aue | aap | pattern (class-wise gratings, "
                 "docs/attacks.md)")
      ->required();
  given.algo = app.add_option("--algo", o->algo,
                              "Attacker's algorithm: simclr | moco | byol (unlearnable and adversarial always train a "
                              "supervised classifier)")
                   ->capture_default_str();
  app.add_flag("--dual-branch", o->dual_branch, "Gradients into the noise also through the momentum branch (MoCo, BYOL)");
  app.add_flag("--byol-detach-target", o->byol_detach_target,
               "BYOL: detach the target inside the loss as the authors' release does");
  given.recipe =
      app.add_option("--recipe", o->recipe,
                     "paper: docs/reference-implementation.md §2 (cp-c: 1000 rounds x (20 model steps, 20 noise batches); "
                     "cp-s: 200 rounds x (one epoch, one pass x 5 PGD steps); batch 512, cosine lr); cpu-small: "
                     "docs/cpu-scale-reference.md (width 8, 5000-image subset, batch 256, constant lr 0.3, cp-c 10 rounds, "
                     "cp-s 12); cp-c / cp-s: the paper's, named explicitly; --attack aue / aap: their papers' CIFAR-10 "
                     "settings (aue, aap) or cpu-small-aue / cpu-small-aap (docs/attacks.md). Flags given explicitly win.")
          ->capture_default_str();
  given.kind =
      app.add_option("--kind", o->kind, "sample | class (random, unlearnable, aue, aap; default sample; pattern: class)");
}

// The noise: eps, the PGD step, the start, and the recipe's knobs from PoisonConfig's field list
// (AUE / AAP / TUE / pattern: docs/attacks.md).
void add_noise_flags(CLI::App& app, const std::shared_ptr<Options>& o, Given& given) {
  app.add_option("--eps", o->eps, "L-infinity radius in pixel units, a number or a fraction (8/255)")
      ->capture_default_str();
  given.step = given.overriding(
      app.add_option("--step", o->step, "PGD step in unit scale (0.1 = eps/10; fractions allowed)")
          ->check(tools::fraction_range({0, 2, true, false})),
      [o](PoisonConfig& c) { c.step = tools::parse_fraction(o->step, "--step"); });
  given.init = app.add_option("--init", o->init,
                              "Initial noise: uniform | zero | file (default: the recipe's, uniform; aue, aap: zero)");
  app.add_option("--init-file", o->init_file,
                 "Poison file to start from (implies --init file): class-wise noise is copied to each image by label");
  given.knobs = tools::add_flags(app, o->knobs, {}, /*show_defaults=*/false);
  const tools::FieldFlags& f = given.knobs;
  f.at("rounds")->check(tools::int_range(1, tools::kMaxEpochs));
  f.at("model_steps")->check(tools::int_range(0, kMaxAxis));
  f.at("noise_batches")->check(tools::int_range(0, kMaxAxis));
  f.at("pgd_steps")->check(tools::int_range(1, tools::kMaxEpochs));
  f.at("batch_size")->check(tools::int_range(2, kMaxAxis));
  f.at("momentum")->check(tools::in_range({0, 1, false, true}));
  f.at("weight_decay")->check(tools::real_range(0, 1));
  f.at("final_lr_fraction")->check(tools::real_range(0, 1));
  f.at("ratio")->check(tools::in_range({0, 1, true, false}));
  f.at("pretrain_epochs")->check(tools::int_range(0, tools::kMaxEpochs));
  f.at("pretrain_warmup_epochs")->check(CLI::NonNegativeNumber);
  f.at("target_shift")->check(CLI::PositiveNumber);
  f.at("augment_strength")->check(CLI::Range(0.0, 2.0));
  f.at("separability")->check(CLI::NonNegativeNumber);
  f.at("separability_space")->check(CLI::IsMember({"noise", "embedding", "features"}));
  f.at("attack_loss_weight")->check(CLI::Range(0.0, 1e6));
  f.at("pattern_period")->check(CLI::Range(2.0, 1e6));
  f.at("pattern_blank")->check(CLI::Range(int64_t(-1), kMaxAxis));
}

// The attacker's model and optimiser.
void add_model_flags(CLI::App& app, const std::shared_ptr<Options>& o, Given& given) {
  app.add_option("--model", o->model, "Backbone (resnet18, resnet34, resnet50, vgg19, densenet121, mobilenetv2)")
      ->capture_default_str();
  given.width = app.add_option("--width", o->width, "Base width (default: 64; recipe cpu-small: 8)")
                    ->check(tools::int_range(1, models::kMaxWidth));
  given.lr = app.add_option("--lr", o->lr,
                            "Attacker lr (0: the algorithm's default, SimCLR 0.5, MoCo 0.3, BYOL 1.0, supervised 0.1; "
                            "default: the recipe's)")
                 ->check(tools::real_range(0, 1000));
  given.overriding(
      app.add_option("--schedule", o->schedule, "Attacker lr over the rounds: cosine | constant (default: the recipe's)")
          ->check(CLI::IsMember({"cosine", "constant"})),
      [o](PoisonConfig& c) { c.cosine = o->schedule == "cosine"; });
  given.augment = app.add_option("--augment", o->augment,
                                 "simclr | cpu-small | crop-flip | none (default: simclr; recipe cpu-small: cpu-small; "
                                 "unlearnable and adversarial: crop-flip; aue and aap: simclr / cpu-small at "
                                 "--augment-strength)");
  tools::experiment::add_algo_flags(app, o->algo_settings);
  app.add_option("--loss-scale", o->loss_scale, "Multiply the loss (the release: temperature/0.07)")
      ->check(tools::in_range({0, 1e6, true, false}))
      ->capture_default_str();
}

void add_run_flags(CLI::App& app, const std::shared_ptr<Options>& o) {
  app.add_option("--seed", o->seed, "Seed of the noise init, weights, batch order, augmentations, poisoned rows")
      ->capture_default_str();
  app.add_option("--device", o->device, "cpu | cuda")->capture_default_str();
  app.add_option("--out", o->out, "Poison file (HDF5); the noise picture goes to OUT with .png")->required();
  app.add_option("--checkpoint-every", o->checkpoint_every,
                 "Checkpoint to OUT.ckpt.h5 every N rounds (and after the last; 0: never)")
      ->check(tools::int_range(0, tools::kMaxEpochs))
      ->capture_default_str();
  app.add_flag("--resume", o->resume, "Continue from OUT.ckpt.h5 when it exists (the finished rounds are kept)");
  app.add_flag("--allow-changed", o->allow_changed,
               "Resume even when the checkpoint was made with other settings (warns per changed setting)");
  app.add_option("--progress-seconds", o->progress_seconds, "Seconds between progress lines (< 0: quiet)")
      ->check(tools::real_range(-1e9, 1e9))
      ->capture_default_str();
  // For tests: stop after N rounds as a kill would (no poison file; the checkpoint stays).
  app.add_option("--stop-after-rounds", o->stop_after_rounds)->check(tools::int_range(0, tools::kMaxEpochs))->group("");
}

// What the attack, recipe and algorithm flags resolve to, before the data is read.
struct Resolved {
  Attack attack;
  double eps;
  std::string recipe;  // a PoisonConfig recipe (recipe_for)
  bool cpu_small;
  Algo requested_algo, algo;  // --algo, and the algorithm the attacker trains
  Device device;
  augment::Recipe augment;  // the augmentation list
};

Resolved resolve(const Options& o, const Given& given) {
  Resolved r;
  r.attack = parse_attack(o.attack);
  r.eps = tools::parse_fraction(o.eps, "--eps");
  CP_CHECK(r.eps > 0 && r.eps <= 1, "--eps", "eps ", o.eps, " outside (0, 1]: it is in pixel units, e.g. 8/255 (= 0.0314)");
  r.recipe = recipe_for(o.recipe, r.attack);
  r.cpu_small = r.recipe.rfind("cpu-small", 0) == 0;
  r.requested_algo = algorithms::parse_algo(o.algo);
  r.algo = uses_supervised_model(r.attack) ? Algo::supervised : r.requested_algo;
  r.device = tools::parse_device(o.device);
  CP_CHECK(!o.out.empty(), "--out", "no output file given");
  {
    std::filesystem::path parent = std::filesystem::path(o.out).parent_path();
    CP_CHECK(parent.empty() || std::filesystem::is_directory(parent), "--out", "directory '", parent.string(),
             "' does not exist");
  }
  r.augment = given.augment->count()          ? augment::parse_recipe(o.augment)
              : crop_flip_baseline(r.attack) ? augment::Recipe::crop_flip
              : r.cpu_small                  ? augment::Recipe::cpu_small
                                             : augment::Recipe::simclr;
  return r;
}

// The config: the recipe, then the defaults that depend on it, then every flag given.
PoisonConfig poison_config(const Options& o, const Given& given, const Resolved& r, const data::Dataset& ds) {
  const Attack attack = r.attack;
  PoisonConfig cfg = PoisonConfig::recipe(r.recipe, r.algo);
  cfg.attack = attack;
  // A --kind that contradicts the attack (cp-c is class-wise) fails in cfg.validate().
  cfg.kind = given.kind->count() ? parse_noise_kind(o.kind, "--kind")
             : attack == Attack::cp_class || attack == Attack::pattern ? NoiseKind::class_wise
                                                                       : NoiseKind::sample_wise;
  cfg.eps = r.eps;
  cfg.model = o.model;
  cfg.model_options.width = given.width->count() ? o.width : r.cpu_small ? 8 : 64;
  cfg.model_options.in_channels = ds.channels();
  // Drawn noise (random, pattern) trains nothing, so it needs no normalisation constants (a hand-written file
  // without them is refused only where the constants are used).
  cfg.augment = synthetic_attack(attack)
                    ? algorithms::make_augment(r.augment, "cifar10", ds.channels(), ds.height(), ds.width())
                    : algorithms::make_augment(r.augment, ds);
  if (crop_flip_baseline(attack)) cfg.lr = algorithms::TrainConfig::default_lr(Algo::supervised);
  // Class-wise AUE takes one PGD step per batch (aue.py sets perturb_iters = 1 for class-wise).
  if (attack == Attack::aue && cfg.kind == NoiseKind::class_wise) cfg.pgd_steps = 1;
  for (auto& [opt, apply] : given.overrides)
    if (opt->count()) apply(cfg);
  tools::copy_given(cfg, o.knobs, given.knobs);
  // AAP's step is 2.5 eps / iterations (aap.py): it follows --pgd-steps unless --step is given.
  // (At most 2, the width of [-1, 1]: one step then reaches any value.)
  if (attack == Attack::aap && given.knobs.at("pgd_steps")->count() && !given.step->count())
    cfg.step = std::min(2.0, 2.5 / (double)std::max<int64_t>(1, cfg.pgd_steps));
  if (given.lr->count()) cfg.lr = o.lr > 0 ? o.lr : algorithms::TrainConfig::default_lr(r.algo);
  algorithms::AlgoConfig& ac = cfg.algo_config;
  tools::experiment::apply_algo(o.algo_settings, ac);
  ac.dual_branch = o.dual_branch;
  ac.byol_detach_target = o.byol_detach_target;
  ac.loss_scale = o.loss_scale;
  ac.seed = o.seed;
  // --init-file implies --init file; without either, the recipe's start (AUE and AAP: zero).
  CP_CHECK(o.init_file.empty() || !given.init->count() || o.init == "file", "--init-file",
           "starts from a file; it cannot go with --init ", o.init);
  if (!o.init_file.empty()) cfg.init = NoiseInit::file;
  else if (given.init->count()) cfg.init = parse_noise_init(o.init, "--init");
  cfg.init_file = o.init_file;
  cfg.seed = o.seed;
  cfg.device = r.device;
  cfg.checkpoint_path = tools::with_suffix(o.out, ".ckpt.h5");
  cfg.checkpoint_every = o.checkpoint_every;
  cfg.resume = o.resume;
  cfg.allow_changed = o.allow_changed;
  cfg.progress_seconds = o.progress_seconds;
  if (o.stop_after_rounds > 0) {
    int64_t stop = o.stop_after_rounds;
    cfg.on_round_end = [stop](int64_t done) { return done < stop; };
  }
  cfg.validate();
  return cfg;
}

// The settings recorded in the poison file (its `settings` attribute): the run's identity, the
// values the knobs' field list does not hold, then every knob of the list (poison::knob_values).
nlohmann::json recorded_settings(const Options& o, const Resolved& r, const PoisonConfig& cfg) {
  nlohmann::json j = {{"attack", attack_name(r.attack)},
                      {"kind", noise_kind_name(cfg.kind)},
                      {"algorithm", algorithms::algo_name(r.algo)},
                      {"dual_branch", cfg.algo_config.dual_branch},
                      {"recipe", r.recipe},
                      {"eps", cfg.eps},
                      {"step", cfg.step},
                      {"lr", cfg.lr},
                      {"schedule", cfg.cosine ? "cosine" : "constant"},
                      {"init", noise_init_name(cfg.init)},
                      {"init_file", cfg.init_file},
                      {"model", cfg.model},
                      {"width", cfg.model_options.width},
                      {"augment", augment::recipe_name(r.augment)},
                      {"seed", cfg.seed},
                      {"data", o.data.data},
                      {"subset", o.data.subset},
                      {"subset_seed", o.data.subset_seed},
                      {"pad_to", o.data.pad_to},
                      {"channels", o.data.channels}};
  const nlohmann::ordered_json knobs = poison::knob_values(cfg);
  for (const auto& [key, value] : knobs.items()) j[key] = value;
  return j;
}

// The lines on stderr before the run: the attack and recipe, the noise's settings, the model's.
void print_plan(const Options& o, const Given& given, const Resolved& r, const PoisonConfig& cfg, const data::Dataset& ds) {
  const Attack attack = r.attack;
  const std::string attacker = synthetic_attack(attack) ? std::string()
                               : std::string(" against ") + algorithms::algo_name(r.algo) +
                                     (cfg.algo_config.dual_branch ? " (dual branch)" : "");
  // The first line names the recipe (and says when it is the default), so that a run that took
  // the paper's width-64 recipe without --recipe cpu-small shows it before it starts.
  const std::string recipe_note =
      attack == Attack::random ? std::string()
                               : ", recipe " + r.recipe + " (width " + std::to_string(cfg.model_options.width) +
                                     (o.recipe == "paper" && !given.recipe->count()
                                          ? "; the default: --recipe cpu-small for the CPU scale)"
                                          : ")");
  std::fprintf(stderr, "poison %s (%s-wise)%s%s on %s: %lld images %lldx%lldx%lld, %lld classes\n", attack_name(attack),
               noise_kind_name(cfg.kind), attacker.c_str(), recipe_note.c_str(),
               o.data.describe().c_str(), (long long)ds.size(), (long long)ds.height(), (long long)ds.width(),
               (long long)ds.channels(), (long long)ds.classes);
  if (uses_supervised_model(attack) && given.algo->count() && r.requested_algo != Algo::supervised)
    std::fprintf(stderr, "  note: %s trains a supervised classifier; --algo %s is not used\n", attack_name(attack),
                 o.algo.c_str());
  if (attack == Attack::random)
    std::fprintf(stderr, "  uniform random noise (no optimisation): eps %s, init %s, ratio %g, seed %llu\n",
                 tools::format_pixels(cfg.eps).c_str(), noise_init_name(cfg.init), cfg.ratio, (unsigned long long)cfg.seed);
  else if (attack == Attack::pattern)
    std::fprintf(stderr,
                 "  class-wise square-wave gratings (no optimisation): eps %s, period %g px, %s, ratio %g, seed %llu\n",
                 tools::format_pixels(cfg.eps).c_str(), cfg.pattern_period,
                 cfg.pattern_blank < 0 ? "every class a grating"
                                       : ("class " + std::to_string(cfg.pattern_blank) + " without").c_str(),
                 cfg.ratio, (unsigned long long)cfg.seed);
  else
    std::fprintf(stderr,
                 "  recipe %s: eps %s, step %g, rounds %lld, model steps %lld, noise batches %lld, pgd steps %lld, "
                 "batch %lld, lr %g (%s), init %s, ratio %g\n",
                 r.recipe.c_str(), tools::format_pixels(cfg.eps).c_str(), cfg.step, (long long)cfg.rounds,
                 (long long)cfg.model_steps, (long long)cfg.noise_batches, (long long)cfg.pgd_steps,
                 (long long)cfg.batch_size, cfg.lr, cfg.cosine ? "cosine" : "constant", noise_init_name(cfg.init), cfg.ratio);
  if (!synthetic_attack(attack))
    std::fprintf(stderr, "  model %s width %lld, augment %s, seed %llu, device %s; checkpoint %s every %lld rounds\n",
                 cfg.model.c_str(), (long long)cfg.model_options.width, augment::recipe_name(r.augment), (unsigned long long)cfg.seed,
                 o.device.c_str(), cfg.checkpoint_path.c_str(), (long long)cfg.checkpoint_every);
  if (attack == Attack::aue || attack == Attack::aap || cfg.separability > 0) {
    char line[256];
    int at = std::snprintf(line, sizeof line, "  augment strength %g", cfg.augment_strength);
    if (attack == Attack::aap)
      at += std::snprintf(line + at, sizeof line - at, ", pre-training %lld epochs (warm-up %lld), target (y + %lld) mod classes",
                          (long long)cfg.pretrain_epochs, (long long)cfg.pretrain_warmup_epochs, (long long)cfg.target_shift);
    if (cfg.separability > 0)
      std::snprintf(line + at, sizeof line - at, ", separability %g on the %s%s", cfg.separability,
                    separability_space_name(cfg.separability_space), cfg.separability_detach_spread ? " (spreads detached)" : "");
    std::fprintf(stderr, "%s\n", line);
  }
  if (!o.resume && std::filesystem::exists(cfg.checkpoint_path))
    std::fprintf(stderr, "  note: %s exists; starting over (pass --resume to continue it)\n", cfg.checkpoint_path.c_str());
}

// The poison file (with the data's and the run's attributes) and its picture; rank 0 alone
// writes them (issue #15: under mpirun every rank holds the same poison).
void write_poison(const Options& o, const Resolved& r, const PoisonConfig& cfg, const Poison& p, const data::Dataset& ds,
                  const nlohmann::json& settings, const std::string& picture) {
  io::Attrs extra{{"dataset_name", ds.name},
                  {"subset_seed", (int64_t)o.data.subset_seed},
                  {"pad_to", o.data.pad_to},
                  {"channels", o.data.channels},
                  {"data_fingerprint", tools::data_fingerprint(ds)},
                  {"recipe", r.recipe},
                  {"model", cfg.model},
                  {"width", cfg.model_options.width},
                  {"augment", augment::recipe_name(r.augment)},
                  {"settings", settings.dump()}};
  const std::vector<int64_t> rows = ds.rows();
  if (!distributed::is_root()) return;
  tools::save_poison_with_attrs(o.out, p, extra, {{"source_rows", Tensor::from_vector(rows, {(int64_t)rows.size()})}});
  tools::write_poison_overview(picture, p, ds);
}

void run(Options& o, const Given& given) {
  const auto t0 = std::chrono::steady_clock::now();
  const Resolved r = resolve(o, given);
  // cpu-small poisons the same 5000-image subset `cpoison train --preset cpu-small` uses.
  if (r.cpu_small && !o.data.given("--subset")) o.data.subset = 5000;
  data::Dataset ds = tools::load_train(o.data);
  const PoisonConfig cfg = poison_config(o, given, r, ds);
  const std::string picture = tools::with_suffix(o.out, ".png");
  const nlohmann::json settings = recorded_settings(o, r, cfg);
  print_plan(o, given, r, cfg, ds);

  PoisonResult res = generate_poison(ds, cfg, o.data.data, o.data.subset);
  const Poison& p = res.poison;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res.finished) {
    std::printf("stopped after round %lld of %lld, %.1f s; checkpoint %s (rerun with --resume to finish)\n",
                (long long)p.rounds_done, (long long)cfg.rounds, secs, cfg.checkpoint_path.c_str());
    return;
  }
  write_poison(o, r, cfg, p, ds, settings, picture);
  secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  char loss[64] = "";
  if (!res.history.empty()) std::snprintf(loss, sizeof loss, ", final noise loss %.4f", res.history.back().noise_loss);
  std::printf("poisoned %s with %s (%s-wise, eps %s, %lld of %lld images): rounds %lld/%lld%s, %.1f s; poison %s, "
              "picture %s\n",
              o.data.describe().c_str(), attack_name(r.attack), noise_kind_name(p.kind), tools::format_pixels(p.eps).c_str(),
              (long long)p.indices.numel(), (long long)p.image_count, (long long)p.rounds_done,
              (long long)p.rounds_total, loss, secs, o.out.c_str(), picture.c_str());
}

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  auto given = std::make_shared<Given>();
  add_attack_flags(app, o, *given);
  add_noise_flags(app, o, *given);
  add_model_flags(app, o, *given);
  tools::add_data_options(app, o->data, /*data_required=*/true);
  o->data.option("--subset")->description("Use a class-balanced subset of N training images (0: all; recipe cpu-small: 5000)");
  add_run_flags(app, o);
  app.callback([o, given] { run(*o, *given); });
}

}  // namespace
CPOISON_COMMAND(poison, "Generate a poison (CP-S, CP-C, random, unlearnable, adversarial, AUE, AAP); write an HDF5 poison file",
                setup);
