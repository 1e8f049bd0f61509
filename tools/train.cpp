// `cpoison train`: trains SimCLR, MoCo v2, BYOL or the supervised baseline on a dataset and
// writes an HDF5 checkpoint (weights, optimiser state, MoCo queue, progress) plus a JSONL log.
//   cpoison train --algo simclr --data fashion-mnist --preset cpu-small --out simclr.h5
//   cpoison train --algo moco --data cifar10 --epochs 1000 --out moco.h5 --checkpoint-every 50 --resume
//   cpoison train --algo simclr --data cifar10 --poison cp-s.h5 --defense usvt --out usvt.h5
//   cpoison train --algo simclr --data cifar10 --poison cp-s.h5 --defense "adv:eps=8/255,steps=5" --out adv.h5
//   cpoison train --algo supervised --data cifar10 --poison cp-c.h5 --defense "adv:eps=8/255,steps=5" --out sup-adv.h5
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "algorithms/train.h"
#include "defense/defense.h"
#include "engine/io/hdf5.h"
#include "poison/apply.h"
#include "tools/command.h"
#include "tools/common.h"
#include "tools/experiment/flags.h"

namespace {

using namespace cpoison;
using namespace cpoison::algorithms;

namespace ex = cpoison::tools::experiment;

// docs/reference-implementation.md §6: the training settings of --preset spec (the flags'
// defaults) are the library's (algorithms::TrainKnobs); augment "" picks simclr, or crop-flip
// for a supervised learner.
ex::TrainSettings spec_training() {
  ex::TrainSettings t;
  static_cast<algorithms::TrainKnobs&>(t) = algorithms::TrainKnobs{};
  t.augment = "";
  return t;
}

// The training settings --preset cpu-small takes from the experiment's cpu-small victim
// (TrainSettings' defaults, docs/cpu-scale-reference.md) unless their flags are given.
const std::set<std::string> kCpuSmallTraining{"epochs",          "batch_size",        "lr",     "warmup_steps",
                                              "warmup_start_lr", "final_lr_fraction", "augment"};

struct Options {
  std::string algo = "simclr", model = "resnet18", out, log, preset = "spec";
  std::string device = "cpu", resume_from, poison, defense = "none";
  // The training images (--data, --data-root, --subset, --subset-seed, --pad-to, --channels,
  // --normalize), under this command's own help texts and --preset cpu-small's subset.
  tools::DataOptions data{.data = "fashion-mnist"};
  int64_t width = 64;
  uint64_t seed = 0;
  double progress_seconds = 10;
  bool resume = false, dual_branch = false, byol_detach_target = false;
  bool allow_changed = false, ignore_fingerprint = false;
  // The training settings and the algorithm's overrides: flags from their field lists (settings.h).
  ex::TrainSettings train = spec_training();
  ex::AlgoSettings algo_settings;
  double loss_scale = 1.0;
};

// The defence of --defense, Error naming --defense (and, through parse_defense, the key and the
// value) for a bad specification, or adv:both=1 for a supervised victim (it has one view).
defense::Defense parse_defense_flag(const std::string& spec, Algo algo) {
  defense::Defense d;
  try {
    d = defense::parse_defense(spec);
  } catch (const Error& e) {
    fail("--defense", e.what());
  }
  CP_CHECK(d.kind != defense::DefenseKind::adversarial || algo != Algo::supervised || !d.adversarial.both_views,
           "--defense", "adv:both=1 perturbs the two views of a contrastive step; --algo supervised trains on one "
           "view (leave both=0)");
  return d;
}

// A resumed run must train under the defence its checkpoint was trained with: the checkpoint's
// "defense" attribute (absent in checkpoints older than --defense: none) against `spec`.
void check_resumed_defense(const std::string& checkpoint, const std::string& spec) {
  const io::Attrs attrs = io::H5Reader(checkpoint).file_attrs();
  const auto it = attrs.find("defense");
  const std::string recorded = it == attrs.end() ? std::string("none") : io::attr_string(attrs, "defense", checkpoint);
  CP_CHECK(recorded == spec, "--defense", "cannot resume ", checkpoint, ": it was trained with --defense '", recorded,
           "' but this run asks for '", spec, "' (give the same --defense, or train afresh without --resume)");
}

// Options a preset may change: the preset's value applies unless the flag was given.
using PresetOverrides = std::vector<std::function<void()>>;

CLI::Option* presettable(PresetOverrides& overrides, CLI::Option* opt, std::function<void()> apply_preset) {
  overrides.push_back([opt, apply_preset] {
    if (opt->count() == 0) apply_preset();
  });
  return opt;
}

void add_data_flags(CLI::App& app, const std::shared_ptr<Options>& o, PresetOverrides& overrides) {
  app.add_option("--data", o->data.data, "Dataset name (fashion-mnist, mnist, cifar10, cifar100, stl10) "
                                    "or an HDF5 dataset file")
      ->capture_default_str();
  app.add_option("--data-root", o->data.data_root, "Directory of the dataset's files (default: $CPOISON_DATA/NAME, "
                                              "/usr/share/datasets/NAME, ./data/NAME)");
  presettable(overrides,
              app.add_option("--subset", o->data.subset, "Train on a class-balanced subset of N images (0: all)")
                  ->check(tools::int_range(0, kMaxAxis))
                  ->capture_default_str(),
              [o] { o->data.subset = 5000; });
  app.add_option("--subset-seed", o->data.subset_seed, "Seed of the subset's choice")->capture_default_str();
  tools::add_normalize_option(app, o->data.normalize);
  app.add_option("--poison", o->poison,
                 "Poison file (HDF5) applied to the training set (after --subset) as the victim sees it: "
                 "quantised to uint8");
  app.add_option("--defense", o->defense,
                 "Defence while training (docs/defenses.md): none | usvt | noise | smooth | cutout | jpeg | grayscale | bits, each drawn "
                 "afresh per batch before the views are augmented, or adv (adversarial training: PGD on the first "
                 "view of a contrastive step, or on the batch of a supervised one), or ueraser (the largest loss over k "
                 "augmentations); NAME or NAME:KEY=VALUE,... such as \"usvt:p=0.25,keep=0.8\" or "
                 "\"adv:eps=8/255,steps=5\"")
      ->capture_default_str();
  tools::add_pad_and_channels_options(app, o->data);
}

// The backbone, the training settings (TrainSettings' field list) and the algorithm's
// (AlgoSettings'); returns the training settings' flags.
std::shared_ptr<tools::FieldFlags> add_model_flags(CLI::App& app, const std::shared_ptr<Options>& o,
                                                   PresetOverrides& overrides) {
  app.add_option("--model", o->model, "Backbone (resnet18, resnet34, resnet50, vgg19, densenet121, mobilenetv2)")
      ->capture_default_str();
  presettable(overrides,
              app.add_option("--width", o->width, "Base width (64: the published model; 8: channels 8/16/32/64)")
                  ->check(tools::int_range(1, models::kMaxWidth))
                  ->capture_default_str(),
              [o] { o->width = 8; });
  // ---- optimisation, schedule, augmentation, init (TrainSettings) and the algorithm (AlgoSettings)
  const auto training_flags = std::make_shared<tools::FieldFlags>(ex::add_training_flags(app, o->train));
  training_flags->at("augment")->description(training_flags->at("augment")->get_description() +
                                             " (default: simclr; supervised: crop-flip; preset cpu-small: cpu-small)");
  ex::add_algo_flags(app, o->algo_settings);
  app.add_flag("--dual-branch", o->dual_branch,
               "Record the momentum branch so input gradients flow through it (poisoning; no effect on weights)");
  app.add_flag("--byol-detach-target", o->byol_detach_target,
               "BYOL: detach the target inside the loss as the authors' release does (default: the paper's "
               "behaviour, gradient through the target when --dual-branch)");
  app.add_option("--loss-scale", o->loss_scale,
                 "Multiply the loss (the release uses temperature/0.07 for SimCLR and MoCo; we default to 1 and "
                 "never divide SimCLR gradients by a GPU count)")
      ->check(tools::in_range({0, 1e6, true, false}))
      ->capture_default_str();
  return training_flags;
}

void add_run_flags(CLI::App& app, const std::shared_ptr<Options>& o) {
  app.add_option("--seed", o->seed, "Seed of weights, batch order, augmentations and MoCo queue")->capture_default_str();
  app.add_option("--device", o->device, "cpu | cuda")->capture_default_str();
  app.add_option("--out", o->out, "Checkpoint file (HDF5)")->required();
  app.add_option("--log", o->log, "JSONL log, one line per epoch (default: --out with .jsonl)");
  app.add_flag("--resume", o->resume, "Continue from --out (or --resume-from) when it exists");
  app.add_option("--resume-from", o->resume_from, "Checkpoint to resume from (default: --out); must exist; implies --resume");
  app.add_flag("--allow-changed", o->allow_changed,
               "Resume even when the checkpoint was made with other settings (warns per changed setting; default: "
               "an error naming the first)");
  app.add_flag("--ignore-fingerprint", o->ignore_fingerprint,
               "Apply --poison even to images whose fingerprint differs from the one it records (warns)");
  app.add_option("--progress-seconds", o->progress_seconds, "Seconds between progress lines (< 0: quiet)")
      ->check(tools::real_range(-1e9, 1e9))
      ->capture_default_str();
}

// The training images as the victim sees them (subset, normalisation, poison) and the poison's
// digest ("none" without one).
std::pair<data::Dataset, std::string> load_training_set(const Options& o) {
  data::Dataset ds = tools::load_train_subset(o.data);
  tools::apply_normalize_option(ds, o.data.normalize);
  std::string poison_digest = "none";
  if (!o.poison.empty()) {
    const poison::Poison p = poison::load_poison(o.poison);
    poison::check_fingerprint(p, ds, o.poison, o.ignore_fingerprint);
    poison_digest = poison::poison_digest(p);
    ds = poison::apply_poison(ds, p);
  }
  return {std::move(ds), poison_digest};
}

// The TrainConfig of the flags (the defence's hooks are add_defense's).
TrainConfig train_config(const Options& o, Algo algo, const data::Dataset& ds, const defense::Defense& def,
                         const std::string& poison_digest) {
  TrainConfig cfg;
  cfg.algo = algo;
  cfg.model = o.model;
  cfg.model_options.width = o.width;
  cfg.model_options.in_channels = ds.channels();
  AlgoConfig ac = AlgoConfig::defaults(algo);
  ex::apply_algo(o.algo_settings, ac);
  ac.dual_branch = o.dual_branch;
  ac.byol_detach_target = o.byol_detach_target;
  ac.loss_scale = o.loss_scale;
  cfg.algo_config = ac;
  ex::TrainSettings training = o.train;
  if (training.augment.empty()) training.augment = algo == Algo::supervised ? "crop-flip" : "simclr";
  ex::apply_training(training, ds, cfg);
  cfg.seed = o.seed;
  cfg.device = tools::parse_device(o.device);
  cfg.checkpoint_path = o.out;
  cfg.resume = o.resume;
  cfg.resume_from = o.resume_from;
  cfg.allow_changed = o.allow_changed;
  std::string stem = o.out.size() > 3 && o.out.substr(o.out.size() - 3) == ".h5" ? o.out.substr(0, o.out.size() - 3)
                                                                                   : o.out;
  cfg.log_path = o.log.empty() ? stem + ".jsonl" : o.log;
  cfg.progress_seconds = o.progress_seconds;
  cfg.extra_attrs = {{"dataset", o.data.data},
                     {"dataset_name", ds.name},
                     {"subset", o.data.subset},
                     {"subset_seed", (int64_t)o.data.subset_seed},
                     {"pad_to", o.data.pad_to},
                     {"channels", o.data.channels},
                     {"preset", o.preset},
                     {"poison", o.poison},
                     {"augment", training.augment},
                     {"defense", def.spec()},
                     {"software", std::string("cpoison ") + CPOISON_VERSION}};
  // What a resume must repeat (the data path may move; the images' fingerprint is compared).
  cfg.settings = {{"subset", o.data.subset},   {"subset_seed", (int64_t)o.data.subset_seed},
                  {"pad_to", o.data.pad_to},   {"channels", o.data.channels},
                  {"poison", poison_digest}, {"defense", def.spec()}};
  return cfg;
}

// The defence runs after any batch hook set before it (none today: the poison is applied to the
// dataset itself), as the victim would defend the data it was given; ueraser and adversarial
// training are step-loss hooks.
void add_defense(TrainConfig& cfg, const defense::Defense& def) {
  if (def.is_batch_transform()) {
    defense::chain_batch_hook(cfg, def);
  } else if (def.kind == defense::DefenseKind::ueraser) {
    cfg.step_loss = defense::ueraser_loss_hook(cfg, def.ueraser);
  } else {
    cfg.step_loss = defense::adversarial_loss_hook(cfg, def.adversarial);
  }
}

void run(Options& o, const PresetOverrides& preset_overrides, const tools::FieldFlags& training_flags) {
  if (o.preset == "cpu-small") {
    for (auto& f : preset_overrides) f();
    tools::copy_unset(o.train, ex::TrainSettings{}, training_flags, kCpuSmallTraining);
  }
  const Algo algo = parse_algo(o.algo);
  const defense::Defense def = parse_defense_flag(o.defense, algo);
  const auto t0 = std::chrono::steady_clock::now();
  if (!o.resume_from.empty()) {
    CP_CHECK(std::filesystem::is_regular_file(o.resume_from), "--resume-from", "no checkpoint '", o.resume_from,
             "' to resume from (leave --resume-from out to train afresh)");
    o.resume = true;
  }
  const auto [ds, poison_digest] = load_training_set(o);
  TrainConfig cfg = train_config(o, algo, ds, def, poison_digest);
  add_defense(cfg, def);
  const std::string resume_path = o.resume_from.empty() ? o.out : o.resume_from;
  if (o.resume && std::filesystem::exists(resume_path)) check_resumed_defense(resume_path, def.spec());

  // The first line names the preset (the recipe of a training run), so that a run that took the
  // spec's width-64 schedule by default says so before it starts.
  std::fprintf(stderr, "training %s (preset %s%s) on %s (%lld images %lldx%lldx%lld), %s width %lld, %lld epochs, batch %lld, lr %g\n",
               algo_name(algo), o.preset.c_str(), o.preset == "spec" ? ", the default; --preset cpu-small for the CPU scale" : "", ds.name.c_str(), (long long)ds.size(), (long long)ds.height(), (long long)ds.width(),
               (long long)ds.channels(), o.model.c_str(), (long long)o.width, (long long)cfg.epochs,
               (long long)cfg.batch_size, cfg.resolved_lr());
  if (def.kind != defense::DefenseKind::none) std::fprintf(stderr, "defence %s\n", def.spec().c_str());
  TrainResult r = train(ds, cfg);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double last_loss = r.history.empty() ? NAN : r.history.back().loss;
  std::printf("trained %s %s (width %lld)%s%s: epochs %lld/%lld, final loss %.4f, %.1f s; checkpoint %s\n",
              algo_name(algo), o.model.c_str(), (long long)o.width,
              def.kind == defense::DefenseKind::none ? "" : ", defence ",
              def.kind == defense::DefenseKind::none ? "" : def.spec().c_str(), (long long)r.epochs_done,
              (long long)cfg.epochs, last_loss, secs, o.out.c_str());
}

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  auto preset_overrides = std::make_shared<PresetOverrides>();
  app.add_option("--algo", o->algo, "simclr | moco | byol | supervised")
      ->check(CLI::IsMember({"simclr", "moco", "mocov2", "byol", "supervised"}))
      ->capture_default_str();
  app.add_option("--preset", o->preset,
                 "spec: docs/reference-implementation.md §6 (1000 epochs, batch 512, 10-epoch warm-up from 0.01, "
                 "cosine to 0.001 lr, width 64, the §5 augmentations); cpu-small: docs/cpu-scale-reference.md "
                 "(fashion-mnist, 5000-image balanced subset, width 8, batch 256, 30 epochs, lr 0.3, 20-step "
                 "warm-up from 0, cosine to 0, crop/flip/brightness/contrast). Flags given explicitly win.")
      ->check(CLI::IsMember({"spec", "cpu-small"}))
      ->capture_default_str();
  add_data_flags(app, o, *preset_overrides);
  const auto training_flags = add_model_flags(app, o, *preset_overrides);
  add_run_flags(app, o);
  app.footer(
      "Deliberate differences from the authors' release (docs/algorithms.md): the loss is NOT multiplied by "
      "temperature/0.07 (use --loss-scale), SimCLR gradients are NOT divided by a GPU count, momentum copies are "
      "updated once per step (the release's BYOL updates twice), MoCo keys are not shuffled across devices, and "
      "BYOL's target carries a gradient under --dual-branch unless --byol-detach-target.");
  app.callback([o, preset_overrides, training_flags] { run(*o, *preset_overrides, *training_flags); });
}

}  // namespace
CPOISON_COMMAND(train, "Train SimCLR, MoCo v2, BYOL or a supervised baseline; write an HDF5 checkpoint", setup);
