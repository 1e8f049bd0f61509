#include "poison/generate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <tuple>

#include "algorithms/data_parallel.h"
#include "algorithms/losses.h"
#include "algorithms/settings.h"
#include "algorithms/training_state.h"
#include "engine/progress_log.h"
#include "engine/size.h"
#include "engine/distributed/ops.h"
#include "engine/io/checkpoint.h"
#include "engine/io/resume.h"
#include "engine/nn/module.h"
#include "engine/ops/ops.h"
#include "engine/optim/schedule.h"
#include "engine/optim/sgd.h"
#include "poison/apply.h"

namespace cpoison::poison {

using algorithms::Algo;

Attack parse_attack(const std::string& name) {
  if (name == "cp-s") return Attack::cp_sample;
  if (name == "cp-c") return Attack::cp_class;
  if (name == "random") return Attack::random;
  if (name == "unlearnable") return Attack::unlearnable;
  if (name == "adversarial") return Attack::adversarial;
  if (name == "aue") return Attack::aue;
  if (name == "aap") return Attack::aap;
  if (name == "pattern") return Attack::pattern;
  fail("attack", "unknown attack '", name, "' (choose cp-s, cp-c, random, unlearnable, adversarial, aue, aap or pattern)");
}

NoiseInit parse_noise_init(const std::string& name, const std::string& where) {
  if (name == "uniform") return NoiseInit::uniform;
  if (name == "zero") return NoiseInit::zero;
  if (name == "file") return NoiseInit::file;
  fail(where, "init must be uniform, zero or file, got '", name, "'");
}

const char* noise_init_name(NoiseInit init) {
  switch (init) {
    case NoiseInit::uniform: return "uniform";
    case NoiseInit::zero: return "zero";
    case NoiseInit::file: return "file";
  }
  return "uniform";
}

SeparabilitySpace parse_separability_space(const std::string& name, const std::string& where) {
  if (name == "noise") return SeparabilitySpace::noise;
  if (name == "embedding") return SeparabilitySpace::embedding;
  if (name == "features") return SeparabilitySpace::features;
  fail(where, "separability_space must be 'noise', 'embedding' or 'features', got '", name, "'");
}

const char* separability_space_name(SeparabilitySpace space) {
  switch (space) {
    case SeparabilitySpace::noise: return "noise";
    case SeparabilitySpace::embedding: return "embedding";
    case SeparabilitySpace::features: return "features";
  }
  return "noise";
}

const char* attack_name(Attack a) {
  switch (a) {
    case Attack::cp_sample: return "cp-s";
    case Attack::cp_class: return "cp-c";
    case Attack::random: return "random";
    case Attack::unlearnable: return "unlearnable";
    case Attack::adversarial: return "adversarial";
    case Attack::aue: return "aue";
    case Attack::aap: return "aap";
    case Attack::pattern: return "pattern";
  }
  return "?";
}

// The Philox stream of the pattern attack's phases.
constexpr uint32_t kPatternStream = 0x9A77;

bool synthetic_attack(Attack a) { return a == Attack::random || a == Attack::pattern; }

Tensor grating_patterns(int64_t classes, int64_t channels, int64_t height, int64_t width, double period, uint64_t seed,
                        int64_t blank) {
  CP_CHECK(classes >= 1 && channels >= 1 && height >= 1 && width >= 1, "grating_patterns", "bad shape [", classes, ", ",
           channels, ", ", height, ", ", width, "]");
  CP_CHECK(std::isfinite(period) && period >= 2, "grating_patterns", "period must be >= 2 pixels, got ", period);
  // The phases come from their own stream, so they do not depend on any other draw.
  Generator g(seed, kPatternStream);
  std::vector<double> phase = uniform(Shape{classes}, 0.0, 2.0 * M_PI, g, DType::f64, Device::cpu).to_vector<double>();
  std::vector<float> out((size_t)(classes * channels * height * width));
  for (int64_t c = 0; c < classes; ++c) {
    if (c == blank) continue;  // stays 0
    const double theta = M_PI * (double)c / (double)classes, cs = std::cos(theta), sn = std::sin(theta);
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x) {
          double v = std::sin(2.0 * M_PI * ((double)x * cs + (double)y * sn) / period + phase[(size_t)c]);
          out[(size_t)(((c * channels + ch) * height + y) * width + x)] = v >= 0 ? 1.f : -1.f;
        }
  }
  return Tensor::from_vector(out, {classes, channels, height, width}, DType::f32, Device::cpu);
}

bool supervised_attack(Attack a) {
  return a == Attack::unlearnable || a == Attack::adversarial || a == Attack::aue || a == Attack::aap;
}

PoisonConfig PoisonConfig::recipe(const std::string& name, Algo algo) {
  PoisonConfig c;
  c.algo = algo;
  c.algo_config = algorithms::AlgoConfig::defaults(algo);
  if (name == "cp-c" || name == "cp-s") {
    // docs/reference-implementation.md §2: batch 512, SGD 0.9 / 1e-4, lr by algorithm, cosine over
    // the rounds to 0.001 lr, no warm-up.
    c.batch_size = 512;
    c.lr = algo == Algo::simclr ? 0.5 : algo == Algo::moco ? 0.3 : 1.0;
    c.cosine = true;
    if (name == "cp-c") {
      c.attack = Attack::cp_class, c.kind = NoiseKind::class_wise;
      c.rounds = 1000, c.model_steps = 20, c.noise_batches = 20, c.pgd_steps = 1, c.step = 0.1;
    } else {
      c.attack = Attack::cp_sample, c.kind = NoiseKind::sample_wise;
      c.rounds = 200, c.model_steps = 0, c.noise_batches = 0;
      c.pgd_steps = algo == Algo::byol ? 1 : 5;
      c.step = algo == Algo::byol ? 0.02 : 0.1;
    }
  } else if (name == "cpu-small-cp-c" || name == "cpu-small-cp-s") {
    // docs/cpu-scale-reference.md: batch 256, constant lr 0.3, wd 1e-4, step eps/10, uniform init.
    c.batch_size = 256;
    c.lr = 0.3;
    c.cosine = false;
    c.step = 0.1;
    if (name == "cpu-small-cp-c") {
      c.attack = Attack::cp_class, c.kind = NoiseKind::class_wise;
      c.rounds = 10, c.model_steps = 20, c.noise_batches = 20, c.pgd_steps = 1;
    } else {
      c.attack = Attack::cp_sample, c.kind = NoiseKind::sample_wise;
      c.rounds = 12, c.model_steps = 0, c.noise_batches = 0, c.pgd_steps = 5;
    }
  } else if (name == "aue" || name == "cpu-small-aue") {
    // Wang et al. 2024, EhanW/AUE-AAP aue.py with example.sh's CIFAR-10 strength: a supervised
    // ResNet-18 and error-minimising noise, alternating one epoch of model steps (batch 128, SGD lr
    // 0.1, momentum 0.9, wd 1e-4, cosine over the rounds to 1e-6) with one pass of 5 PGD steps
    // of eps/10 (class-wise: 1) from zero noise, both under the contrastive augmentations at
    // strength 0.6. cpu-small keeps the structure with fewer rounds and PGD steps (docs/attacks.md).
    c.attack = Attack::aue, c.kind = NoiseKind::sample_wise;
    c.algo = Algo::supervised;
    c.algo_config = algorithms::AlgoConfig::defaults(Algo::supervised);
    c.batch_size = 128;
    c.lr = 0.1, c.momentum = 0.9, c.weight_decay = 1e-4;
    c.cosine = true, c.final_lr_fraction = 1e-5;
    c.model_steps = 0, c.noise_batches = 0;
    c.step = 0.1;
    c.init = NoiseInit::zero;
    c.augment_strength = 0.6;
    if (name == "aue") c.rounds = 60, c.pgd_steps = 5;
    else c.rounds = 8, c.pgd_steps = 3;
  } else if (name == "aap" || name == "cpu-small-aap") {
    // EhanW/AUE-AAP aap.py, targeted, CIFAR-10 strength 0.4 for the reference model and the
    // noise: 40 epochs of clean supervised training (batch 128, SGD lr 0.5, momentum 0.9, wd
    // 1e-4, 10 warm-up epochs then cosine), then one pass over the images with 250 PGD steps of
    // 2.5 eps / 250 from zero noise, minimising the cross-entropy towards label + 1.
    c.attack = Attack::aap, c.kind = NoiseKind::sample_wise;
    c.algo = Algo::supervised;
    c.algo_config = algorithms::AlgoConfig::defaults(Algo::supervised);
    c.batch_size = 128;
    c.lr = 0.5, c.momentum = 0.9, c.weight_decay = 1e-4;
    c.rounds = 1, c.model_steps = 0, c.noise_batches = 0;
    c.init = NoiseInit::zero;
    c.augment_strength = 0.4;
    c.target_shift = 1;
    if (name == "aap") c.pretrain_epochs = 40, c.pretrain_warmup_epochs = 10, c.pgd_steps = 250;
    else c.pretrain_epochs = 12, c.pretrain_warmup_epochs = 3, c.pgd_steps = 20;
    c.step = 2.5 / (double)c.pgd_steps;
  } else {
    fail("recipe", "unknown poison recipe '", name,
         "' (choose cp-c, cp-s, cpu-small-cp-c, cpu-small-cp-s, aue, aap, cpu-small-aue or cpu-small-aap)");
  }
  return c;
}

void PoisonConfig::validate() const {
  const char* w = "PoisonConfig";
  CP_CHECK(!(attack == Attack::cp_sample && kind != NoiseKind::sample_wise), w, "cp-s is sample-wise (kind 'sample')");
  CP_CHECK(!(attack == Attack::cp_class && kind != NoiseKind::class_wise), w, "cp-c is class-wise (kind 'class')");
  CP_CHECK(!(attack == Attack::adversarial && kind != NoiseKind::sample_wise), w,
           "adversarial poisoning is sample-wise");
  bool contrastive = attack == Attack::cp_sample || attack == Attack::cp_class;
  CP_CHECK(!contrastive || algo != Algo::supervised, w, "contrastive poisoning needs --algo simclr, moco or byol");
  CP_CHECK(eps > 0 && eps <= 1, w, "eps ", eps, " outside (0, 1] (pixel units: 8/255 = 0.0314)");
  CP_CHECK(step > 0 && step <= 2, w, "step ", step, " outside (0, 2] (unit scale)");
  CP_CHECK(rounds >= 1, w, "rounds must be >= 1, got ", rounds);
  CP_CHECK(pgd_steps >= 1, w, "pgd_steps must be >= 1, got ", pgd_steps);
  CP_CHECK(batch_size >= 2, w, "batch_size must be >= 2, got ", batch_size);
  CP_CHECK(lr >= 0 && momentum >= 0 && weight_decay >= 0, w, "lr, momentum and weight decay must be >= 0");
  CP_CHECK(ratio > 0 && ratio <= 1, w, "ratio ", ratio, " outside (0, 1]");
  CP_CHECK(init != NoiseInit::file || !init_file.empty(), w, "init 'file' needs init_file");
  CP_CHECK(checkpoint_every >= 0, w, "checkpoint_every must be >= 0");
  CP_CHECK(std::isfinite(augment_strength) && augment_strength >= 0 && augment_strength <= 2, w, "augment_strength ",
           augment_strength, " outside [0, 2] (0: the augmentations as given)");
  CP_CHECK(pretrain_epochs >= 0, w, "pretrain_epochs must be >= 0, got ", pretrain_epochs);
  CP_CHECK(pretrain_warmup_epochs >= 0 && pretrain_warmup_epochs <= pretrain_epochs, w, "pretrain_warmup_epochs ",
           pretrain_warmup_epochs, " outside [0, pretrain_epochs = ", pretrain_epochs, "]");
  CP_CHECK(target_shift >= 1, w, "target_shift must be >= 1 (the target class is (y + shift) mod classes), got ",
           target_shift);
  CP_CHECK(std::isfinite(separability) && separability >= 0, w, "separability must be a weight >= 0, got ", separability);
  CP_CHECK(attack != Attack::pattern || kind == NoiseKind::class_wise, w,
           "pattern noise is class-wise (one grating per class), not ", noise_kind_name(kind));
  CP_CHECK(std::isfinite(pattern_period) && pattern_period >= 2 && pattern_period <= 1e6, w,
           "pattern_period must be in [2, 1e6] pixels, got ", pattern_period);
  CP_CHECK(pattern_blank >= -1 && pattern_blank <= kMaxAxis, w, "pattern_blank must be a class index or -1 (none), got ",
           pattern_blank);
  CP_CHECK(separability == 0 || (!synthetic_attack(attack) && attack != Attack::adversarial), w,
           "separability applies to attacks that minimise their loss (cp-s, cp-c, unlearnable, aue, aap), not ",
           attack_name(attack));
  CP_CHECK(std::isfinite(attack_loss_weight) && attack_loss_weight >= 0 && attack_loss_weight <= 1e6, w,
           "attack_loss_weight must be in [0, 1e6], got ", attack_loss_weight);
  CP_CHECK(attack_loss_weight > 0 || separability > 0, w,
           "attack_loss_weight 0 leaves the noise no objective: set separability > 0");
  CP_CHECK(!(flow || loss) || (algo != Algo::supervised && !supervised_attack(attack) && !synthetic_attack(attack)), w,
           "a gradient flow or a custom loss needs a contrastive attacker (cp-s or cp-c with simclr, moco or byol), not ",
           attack_name(attack), " with ", algorithms::algo_name(algo));
  algo_config.validate(algo);
  augment.validate();
}

namespace {

// The poisoner's JSONL log (engine/progress_log.h) sits beside its checkpoint: X.ckpt.h5 -> X.jsonl
// (cpoison poison --out X.h5 -> X.jsonl, as cpoison train's log); none without a checkpoint.
std::string log_path_of(const std::string& checkpoint_path) {
  if (checkpoint_path.empty()) return "";
  std::string s = checkpoint_path;
  for (const std::string ext : {".h5", ".ckpt"})
    if (s.size() > ext.size() && s.compare(s.size() - ext.size(), ext.size(), ext) == 0) s.resize(s.size() - ext.size());
  return s + ".jsonl";
}

constexpr uint32_t kInitStream = 0x1D17;
constexpr uint32_t kAugStream = 0xA06A;
constexpr uint32_t kModelSamplerStream = 0x5A3F;
constexpr uint32_t kNoiseSamplerStream = 0x5A40;
constexpr uint32_t kDiagnoseStream = 0xD1A6;

// Everything a round needs, and what a checkpoint saves.
class Poisoner {
public:
  Poisoner(const data::Dataset& train, const PoisonConfig& cfg)
      : train_(train.to(cfg.device)),
        cfg_(cfg),
        augment_(cfg.augment_strength > 0 ? augment::with_strength(cfg.augment, cfg.augment_strength) : cfg.augment),
        aug_gen_(cfg.seed, kAugStream),
        model_sampler_(train.size(), cfg.batch_size, cfg.seed, true, train.size() > cfg.batch_size, kModelSamplerStream) {
    n_ = train_.size();
    CP_CHECK(n_ >= 2, "poison", "the training set needs at least 2 images, got ", n_);
    CP_CHECK(train_.channels() == cfg.model_options.in_channels, "poison", "dataset has ", train_.channels(),
             " channels but the model expects ", cfg.model_options.in_channels, " (set --channels or the model's in_channels)");
    poisoned_ = choose_poisoned_indices(n_, cfg.ratio, cfg.seed);
    poisoned_list_ = poisoned_.to_vector<int64_t>();
    std::vector<float> mask(n_, 0.f);
    for (int64_t i : poisoned_list_) mask[i] = 1.f;
    row_mask_ = Tensor::from_vector(mask, {n_}, DType::f32, cfg.device);
    labels_dev_ = train_.labels.to(cfg.device);
    labels_host_ = train_.labels.to(Device::cpu).to_vector<int64_t>();
    if (cfg.attack == Attack::aap) {
      CP_CHECK(train_.classes >= 2 && cfg.target_shift % train_.classes != 0, "poison", "aap's target class (y + ",
               cfg.target_shift, ") mod ", train_.classes, " must differ from y (set target_shift)");
    }
    if (cfg.separability > 0)
      CP_CHECK(train_.classes >= 2, "poison", "the separability term needs labelled data with >= 2 classes");
    init_delta();
    if (needs_model()) build_model();
    if (distributed::size() > 1) setup_data_parallel();
  }

  bool needs_model() const { return !synthetic_attack(cfg_.attack); }
  // Attacks with a clean pre-training and noise phases only (no model phase).
  bool pretrains() const { return cfg_.attack == Attack::adversarial || cfg_.attack == Attack::aap; }
  bool class_wise() const { return cfg_.kind == NoiseKind::class_wise; }

  PoisonResult run(const std::string& dataset_name, int64_t subset) {
    PoisonResult res;
    int64_t start = 0;
    if (cfg_.resume && !cfg_.checkpoint_path.empty() && std::filesystem::exists(cfg_.checkpoint_path))
      start = restore(cfg_.checkpoint_path);
    if (distributed::size() > 1) agree_on_start(start);
    rounds_done_ = start;
    int64_t total = synthetic_attack(cfg_.attack) ? 0 : cfg_.rounds;
    // The progress line and the JSONL log (engine/progress_log.h), one line per round; a line at
    // most every progress_seconds (and at this call's first and last round).
    Progress::Options po;
    po.run = "poison";
    po.tag = std::string("poison ") + attack_name(cfg_.attack);
    po.unit = "round";
    po.rate_unit = "views/s";
    po.total = total;
    po.start = start;
    po.seconds = distributed::is_root() ? cfg_.progress_seconds : -1;  // issue #15: rank 0 alone prints and logs
    po.every_unit = false;
    po.log_path = total > 0 && distributed::is_root() ? log_path_of(cfg_.checkpoint_path) : "";
    Progress progress(po);
    if (start > 0)
      progress.note("resuming " + cfg_.checkpoint_path + " after round " + std::to_string(start) + " of " +
                    std::to_string(cfg_.rounds));
    for (int64_t r = start; r < total; ++r) {
      progress.begin_unit(r);
      views_this_round_ = 0;
      RoundStats st;
      st.round = r + 1;
      if (pretrains()) {
        if (r == 0) st.model_loss = pretrain_clean();
        // Adversarial poisoning ascends the cross-entropy of the true label; AAP descends that
        // of the target label.
        st.noise_loss = noise_phase(r, /*ascend=*/cfg_.attack == Attack::adversarial);
      } else {
        st.model_loss = model_phase(r);
        st.noise_loss = noise_phase(r, /*ascend=*/false);
      }
      st.seconds = progress.unit_seconds();
      st.views_per_s = views_this_round_ / std::max(1e-9, st.seconds);
      std::tie(st.probe_loss_poisoned, st.probe_loss_clean) = diagnose();
      res.history.push_back(st);
      rounds_done_ = r + 1;
      bool last = rounds_done_ == total;
      if (distributed::is_root() && !cfg_.checkpoint_path.empty() && cfg_.checkpoint_every > 0 &&
          (rounds_done_ % cfg_.checkpoint_every == 0 || last))
        save_state(cfg_.checkpoint_path);  // issue #15: rank 0 alone writes (every rank holds the same state)
      char metrics[192];
      int n = std::snprintf(metrics, sizeof metrics, "model loss %.4f  noise loss %.4f", st.model_loss, st.noise_loss);
      if (!std::isnan(st.probe_loss_poisoned))
        std::snprintf(metrics + n, sizeof metrics - n, "  attacker loss poisoned/clean %.3f/%.3f (gap %.3f)",
                      st.probe_loss_poisoned, st.probe_loss_clean, st.probe_loss_clean - st.probe_loss_poisoned);
      auto number = [](double v) { return std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v); };
      progress.unit_done(st.seconds, views_this_round_, metrics,
                         {{"model_loss", st.model_loss},
                          {"noise_loss", st.noise_loss},
                          {"probe_loss_poisoned", number(st.probe_loss_poisoned)},
                          {"probe_loss_clean", number(st.probe_loss_clean)},
                          {"views_per_s", st.views_per_s},
                          {"attack", attack_name(cfg_.attack)},
                          {"algo", learner_ ? algorithms::algo_name(learner_->algo()) : "none"}});
      if (cfg_.on_round_end && !cfg_.on_round_end(rounds_done_)) return finish(res, dataset_name, subset, false);
    }
    return finish(res, dataset_name, subset, true);
  }

private:
  // ---- setup
  // issue #15 (docs/distributed.md): under `mpirun -np K` every rank runs this poisoner with the
  // same seed, so it holds the same model, noise, samplers and augmentation generator, and draws
  // the same global batches; a batch that splits evenly over the ranks is computed in slices
  // (split_batch), every other batch whole by every rank. The synthetic attacks (random,
  // pattern) have no batches: every rank draws the same noise and rank 0 writes it.
  void setup_data_parallel() {
    CP_CHECK(!cfg_.loss, "poison", "a custom loss (PoisonConfig::loss) is not data-parallel: it would see only ",
             "this rank's rows of each batch; run it without mpirun");
    if (!needs_model()) return;
    distributed::local_slice(cfg_.batch_size, "poison");  // an Error unless the batch splits evenly
    dp_ = true;
  }

  // Whether a batch of n rows is computed in slices, one per rank: the attacker's training steps
  // then take the data-parallel path of `cpoison train` (SyncBN, global negatives, MoCo's keys
  // of every rank, averaged gradients). A batch that does not split evenly (a data set or a
  // poisoned subset smaller than the batch, adversarial poisoning's partial last batch) is
  // computed whole by every rank, outside any DataParallelScope: the one-process step, repeated.
  bool split_batch(int64_t n) const { return dp_ && n % distributed::size() == 0; }

  // Every rank must start from the same round (a checkpoint missing on some rank's file system,
  // or unreadable there, would make the ranks run different rounds and hang in a collective).
  // The barrier also keeps rank 0 from overwriting the checkpoint while another rank reads it.
  void agree_on_start(int64_t start) const {
    std::vector<int64_t> starts = distributed::all_gather(start);
    for (int r = 0; r < distributed::size(); ++r)
      CP_CHECK(starts[r] == start, "poison", "rank ", r, " resumes after round ", starts[r], " but rank ",
               distributed::rank(), " after round ", start, " (is ", cfg_.checkpoint_path,
               " on a file system every rank sees?)");
    distributed::barrier();
  }

  void init_delta() {
    const int64_t C = train_.channels(), H = train_.height(), W = train_.width();
    int64_t rows = class_wise() ? train_.classes : n_;
    CP_CHECK(!class_wise() || train_.classes >= 1, "poison", "class-wise noise needs labelled data (classes = ", train_.classes, ")");
    Shape shape{rows, C, H, W};
    if (cfg_.attack == Attack::pattern) {
      CP_CHECK(cfg_.pattern_blank < rows, "poison", "pattern_blank ", cfg_.pattern_blank, " is not a class of the data (",
               rows, " classes)");
      delta_ = grating_patterns(rows, C, H, W, cfg_.pattern_period, cfg_.seed, cfg_.pattern_blank).to(cfg_.device);
    } else if (cfg_.init == NoiseInit::zero || cfg_.attack == Attack::adversarial) {
      delta_ = Tensor::zeros(shape, DType::f32, cfg_.device);
    } else if (cfg_.init == NoiseInit::uniform) {
      Generator g(cfg_.seed, kInitStream);
      delta_ = uniform(shape, -1.0, 1.0, g, DType::f32, cfg_.device);
    } else {
      init_from_file(shape);
    }
  }

  // Any poison file as the start (AUE -> CP-S, a CP-C -> CP-S, ...). Its unit-scale noise is
  // rescaled from the file's eps to this run's so that the pixel perturbation carries over.
  void init_from_file(const Shape& shape) {
    const std::string where = "poison --init-file " + cfg_.init_file;
    Poison src = load_poison(cfg_.init_file);
    CP_CHECK(src.delta.size(1) == shape[1] && src.delta.size(2) == shape[2] && src.delta.size(3) == shape[3], where, ": delta ",
             src.delta.describe(), " does not fit images of ", shape[1], "x", shape[2], "x", shape[3]);
    Tensor d = src.delta.to(DType::f32).to(cfg_.device);
    if (src.class_wise()) {
      CP_CHECK(src.classes == train_.classes, where, " has ", src.classes, " classes, the dataset ", train_.classes);
      // Class-wise -> sample-wise: each image starts from its class's pattern.
      delta_ = class_wise() ? d.clone() : index_select0(d, labels_dev_);
    } else {
      CP_CHECK(!class_wise(), where, " holds sample-wise noise; a class-wise poison cannot start from it "
               "(start a sample-wise attack from it, or a class-wise one from a class-wise file)");
      CP_CHECK(src.image_count == n_ && d.size(0) == n_, where, " holds noise for ", d.size(0), " images (image_count ",
               src.image_count, "), this training set has ", n_, ": a sample-wise start must be of the same images");
      delta_ = d.clone();
    }
    if (std::fabs(src.eps - cfg_.eps) > 1e-12) {
      autograd::NoGradGuard ng;
      delta_ = clamp(mul_scalar(delta_, src.eps / cfg_.eps), -1.0, 1.0);
    }
  }

  void build_model() {
    Algo algo = supervised_attack(cfg_.attack) ? Algo::supervised : cfg_.algo;
    models::ModelOptions mo = cfg_.model_options;
    if (algo == Algo::supervised) mo.num_classes = train_.classes;
    nn::manual_seed(cfg_.seed);
    learner_ = algorithms::make_learner(algo, cfg_.model, mo, cfg_.algo_config);
    learner_->to(cfg_.device);
    learner_->set_flow(cfg_.flow);
    learner_->set_loss(cfg_.loss);
    optim::SGDOptions so;
    so.lr = cfg_.lr > 0 ? cfg_.lr : 0.1;
    so.momentum = cfg_.momentum;
    so.weight_decay = cfg_.weight_decay;
    state_ = std::make_unique<algorithms::TrainingState>(learner_, so);
    schedule_ = cfg_.cosine ? optim::LrSchedule::warmup_cosine(so.lr, (double)cfg_.rounds, 0, 0, so.lr * cfg_.final_lr_fraction)
                            : optim::LrSchedule::constant(so.lr);
  }

  // ---- batches
  // Float images [B,C,H,W] in [0,1] of dataset rows idx, with the current noise added (rows
  // that are not poisoned get none). When `leaf` is defined it replaces the noise rows (sample-
  // wise: rows for idx; class-wise: the whole class table) so gradients reach it.
  Tensor poisoned_batch(const std::vector<int64_t>& idx, const Tensor& idx_t, const Tensor& labels, const Tensor& leaf) {
    data::Batch b = data::gather_batch(train_, idx);
    Tensor x = data::to_float_nchw(b.images, cfg_.device);
    Tensor rows;
    if (class_wise()) rows = index_select0(leaf.defined() ? leaf : delta_, labels);
    else rows = leaf.defined() ? leaf : index_select0(delta_, idx_t);
    if (cfg_.ratio < 1.0) rows = mul(rows, index_select0(row_mask_, idx_t).reshape({-1, 1, 1, 1}));
    return perturb(x, rows, cfg_.eps);
  }

  // The attacker's loss on augmented views of x: cross-entropy against `labels` (supervised) or
  // the contrastive loss of two views. first_view, when given, receives the (first) view.
  // split (inside a DataParallelScope): x is the global batch, whose augmentations every rank
  // draws and applies, so that the generator stays in step with one process; the loss is then
  // the mean over this rank's rows of the views (issue #15).
  Tensor attack_loss(const Tensor& x, const Tensor& labels, Tensor* first_view = nullptr, bool split = false) {
    algorithms::Batch views = state_->views(x, labels, augment_, aug_gen_);
    if (first_view) *first_view = views.view1;
    if (split) views = algorithms::local_views(views, "poison");
    return learner_->loss(views);
  }

  Tensor apply_augment(const Tensor& x) {
    augment::AugmentParams p = augment::sample_params(augment_, x.size(0), x.size(2), x.size(3), aug_gen_);
    return augment::apply(x, p, augment_);
  }

  // TUE's class-separability term for one noise step: on the batch's perturbations (rows = the
  // leaf, or the class patterns of the batch's labels) in pixel units, on the attacker's
  // embeddings of the view, or on its backbone features of the un-augmented poisoned batch x
  // (normalised as the views are; the learner is in eval mode here, as a probe's encoder is).
  Tensor separability_term(const Tensor& leaf, const Tensor& labels, const Tensor& view, const Tensor& x) {
    Tensor feats;
    if (cfg_.separability_space == SeparabilitySpace::embedding) {
      feats = learner_->embed(view);
    } else if (cfg_.separability_space == SeparabilitySpace::features) {
      augment::AugmentParams id = augment::AugmentParams::identity(x.size(0), x.size(2), x.size(3));
      feats = learner_->encoder().forward(augment::apply(x, id, augment_));
    } else {
      Tensor rows = class_wise() ? index_select0(leaf, labels) : leaf;
      feats = mul_scalar(flatten(rows, 1), cfg_.eps);
    }
    return algorithms::class_separability_loss(feats, labels, cfg_.separability_detach_spread);
  }

  // AAP's targets (y + shift) mod classes; otherwise the labels themselves.
  Tensor noise_targets(const std::vector<int64_t>& idx, const Tensor& labels) const {
    if (cfg_.attack != Attack::aap) return labels;
    std::vector<int64_t> t(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) t[i] = (labels_host_[idx[i]] + cfg_.target_shift) % train_.classes;
    return index_tensor(t);
  }

  Tensor index_tensor(const std::vector<int64_t>& idx) const { return Tensor::from_vector(idx, {(int64_t)idx.size()}, DType::i64, cfg_.device); }

  // Augmented views per image in one loss: two for contrastive learners, one for supervised.
  double views_per_image() const { return learner_ ? (double)learner_->views_per_batch() : 1.0; }

  // The attacker's loss on the first diagnose_images poisoned rows, with and without their
  // noise, under one fixed set of augmentation draws (its own generator, reset each time, so
  // rounds are comparable and no other stream moves). Eval mode, no gradient, no MoCo enqueue.
  std::pair<double, double> diagnose() {
    const double nan = std::nan("");
    // issue #15: rank 0 alone prints it, so rank 0 alone computes it (it changes no state).
    if (!learner_ || cfg_.diagnose_images <= 0 || !distributed::is_root()) return {nan, nan};
    const int64_t m = std::min<int64_t>(cfg_.diagnose_images, (int64_t)poisoned_list_.size());
    const int64_t bs = std::min<int64_t>(cfg_.batch_size, m);
    if (bs < 2) return {nan, nan};
    autograd::NoGradGuard ng;
    learner_->eval();
    const bool enqueue = learner_->enqueue_keys;
    learner_->enqueue_keys = false;
    Generator g(cfg_.seed, kDiagnoseStream);
    double sum_p = 0, sum_c = 0;
    int64_t chunks = 0;
    for (int64_t start = 0; start + bs <= m; start += bs, ++chunks) {
      std::vector<int64_t> idx(poisoned_list_.begin() + start, poisoned_list_.begin() + start + bs);
      Tensor idx_t = index_tensor(idx);
      Tensor labels = index_select0(labels_dev_, idx_t);
      Tensor poisoned = poisoned_batch(idx, idx_t, labels, Tensor());
      Tensor clean = data::to_float_nchw(data::gather_batch(train_, idx).images, cfg_.device);
      const int64_t H = clean.size(2), W = clean.size(3);
      augment::AugmentParams p1 = augment::sample_params(cfg_.augment, bs, H, W, g),
                             p2 = augment::sample_params(cfg_.augment, bs, H, W, g);
      auto loss_of = [&](const Tensor& x) {
        algorithms::Batch views;
        views.view1 = augment::apply(x, p1, cfg_.augment);
        if (learner_->views_per_batch() == 2) views.view2 = augment::apply(x, p2, cfg_.augment);
        else views.labels = labels;
        return learner_->loss(views).item();
      };
      sum_p += loss_of(poisoned);
      sum_c += loss_of(clean);
    }
    learner_->enqueue_keys = enqueue;
    learner_->train();
    return {sum_p / (double)chunks, sum_c / (double)chunks};
  }

  // ---- phases
  double model_phase(int64_t round) {
    learner_->train();
    state_->sgd().set_lr(schedule_.at((double)round));
    int64_t steps = cfg_.model_steps > 0 ? cfg_.model_steps : model_sampler_.batches_per_epoch();
    double total = 0;
    images_this_round_ = 0;
    for (int64_t s = 0; s < steps; ++s) {
      std::vector<int64_t> idx = model_sampler_.next();
      total += model_step(idx);
      images_this_round_ += (double)idx.size();
      views_this_round_ += (double)idx.size() * views_per_image();
    }
    return total / (double)std::max<int64_t>(steps, 1);
  }

  // One SGD step of the attacker on the poisoned images idx, then the EMA update of its momentum
  // copies (model phase; pre-training, whose classifier has none); returns the loss of the whole
  // batch. Split over the ranks (split_batch), each rank's loss is the mean
  // over its rows and the gradients are averaged, which is the whole batch's gradient.
  double model_step(const std::vector<int64_t>& idx) {
    Tensor idx_t = index_tensor(idx);
    Tensor labels = index_select0(labels_dev_, idx_t);
    Tensor x = poisoned_batch(idx, idx_t, labels, Tensor());
    const bool split = split_batch((int64_t)idx.size());
    std::optional<distributed::DataParallelScope> scope;
    if (split) scope.emplace();
    autograd::clear_tape();
    Tensor loss = attack_loss(x, labels, nullptr, split);
    state_->step(loss, /*average_over_ranks=*/split);
    return split ? algorithms::global_mean(loss) : loss.item();
  }

  // One noise phase: T_δ batches of the poisoned rows (a fresh shuffle per round) x pgd_steps.
  // ascend = false minimises the loss (contrastive poisoning, unlearnable examples); true
  // maximises it (adversarial poisoning).
  double noise_phase(int64_t round, bool ascend) {
    learner_->eval();
    for (auto& [name, p] : learner_->named_online_parameters()) p.set_requires_grad(false);
    const int64_t M = (int64_t)poisoned_list_.size();
    const int64_t bs = std::min<int64_t>(cfg_.batch_size, M);
    data::BatchSampler order(M, bs, cfg_.seed, true, M > bs, kNoiseSamplerStream);
    std::vector<int64_t> perm = order.epoch_order(round);
    // One pass covers whole batches; the images of a partial last batch wait for the next
    // round's order. Attacks whose noise is made in one pass after a pre-training (adversarial,
    // AAP) would leave those images clean, so their pass ends with the partial batch instead
    // (the model is in eval mode, so a smaller batch changes no image's gradient direction).
    const bool cover_all = pretrains() && cfg_.noise_batches <= 0;
    int64_t batches = cover_all ? (M + bs - 1) / bs : M / bs;
    if (cfg_.noise_batches > 0) batches = cfg_.noise_batches;
    double total = 0;
    int64_t count = 0;
    for (int64_t b = 0; b < batches; ++b) {
      const int64_t this_bs = cover_all ? std::min<int64_t>(bs, M - b * bs) : bs;
      std::vector<int64_t> idx(this_bs);
      for (int64_t i = 0; i < this_bs; ++i) idx[i] = poisoned_list_[perm[(b * bs + i) % M]];
      Tensor idx_t = index_tensor(idx);
      Tensor labels = index_select0(labels_dev_, idx_t);
      Tensor targets = noise_targets(idx, labels);
      const bool separate = cfg_.separability > 0;
      // issue #15: the separability term couples all rows of the batch (class means and spreads),
      // so with it every rank computes the whole noise batch.
      const bool split = split_batch(this_bs) && !separate;
      std::optional<distributed::DataParallelScope> scope;
      if (split) scope.emplace();
      for (int64_t s = 0; s < cfg_.pgd_steps; ++s) {
        Tensor leaf = (class_wise() ? delta_ : index_select0(delta_, idx_t)).detach();
        leaf.set_requires_grad(true);
        autograd::clear_tape();
        Tensor view, loss;
        Tensor x = poisoned_batch(idx, idx_t, labels, leaf);
        if (cfg_.attack_loss_weight > 0) {
          loss = attack_loss(x, targets, separate ? &view : nullptr, split);
          if (cfg_.attack_loss_weight != 1) loss = mul_scalar(loss, cfg_.attack_loss_weight);
        } else if (cfg_.separability_space == SeparabilitySpace::embedding) {
          view = apply_augment(x);  // the embedding term's view (the same draw count as with the own loss)
        }
        if (separate) {
          Tensor term = mul_scalar(separability_term(leaf, labels, view, x), cfg_.separability);
          loss = loss.defined() ? add(loss, term) : term;
        }
        Tensor g = autograd::grad(loss, {leaf})[0];
        total += split ? algorithms::global_mean(loss) : loss.item();
        ++count;
        views_this_round_ += (double)bs * views_per_image();
        autograd::NoGradGuard ng;
        // issue #15, split: g is the gradient of the sum of the ranks' losses (a positive multiple
        // of the batch's mean loss, so the sign step is the same) through this rank's rows only.
        // Class-wise, every class's gradient is summed over the ranks before the sign.
        if (split && class_wise()) g = distributed::all_reduce_sum(g);
        Tensor stepped = clamp(add(leaf.detach(), mul_scalar(sign(g), ascend ? cfg_.step : -cfg_.step)), -1.0, 1.0);
        // Sample-wise, each rank steps its own rows only (the others' gradient is zero here, so
        // their sign step leaves them as they were); they are exchanged after the batch's PGD steps.
        if (class_wise()) delta_ = stepped;
        else delta_ = index_add0(delta_, idx_t, sub(stepped, leaf.detach()));  // rows in a batch are distinct
        learner_->momentum_update();
      }
      // issue #15, split, sample-wise: once per noise batch, every rank copies the other ranks'
      // stepped rows into its delta (an exact row copy), so that every rank holds the same delta.
      // Between the PGD steps a rank needs no other rank's current rows: its loss sees them only
      // through their features (SimCLR's gathered negatives, MoCo's gathered keys), which their
      // own rank computes from its own up-to-date rows; the other rows of this rank's global
      // batch are augmented and dropped (local_rows) before the network. So each rank's rows,
      // and hence delta, evolve bit for bit as with an exchange after every PGD step.
      if (split && !class_wise() && cfg_.pgd_steps > 0) {
        autograd::NoGradGuard ng;
        Tensor mine = distributed::local_rows(index_select0(delta_, idx_t), "poison");
        delta_ = index_copy0(delta_, idx_t, distributed::all_gather_rows(mine));
      }
    }
    for (auto& [name, p] : learner_->named_online_parameters()) p.set_requires_grad(true);
    learner_->train();
    return total / (double)std::max<int64_t>(count, 1);
  }

  // Adversarial poisoning's and AAP's reference: a supervised model trained on the clean images.
  // Returns the mean loss of the last epoch (how well the reference fits, for the progress line).
  double pretrain_clean() {
    Tensor saved = delta_;
    delta_ = Tensor::zeros(delta_.shape(), DType::f32, cfg_.device);
    int64_t steps = cfg_.pretrain_epochs * model_sampler_.batches_per_epoch();
    int64_t warmup = cfg_.pretrain_warmup_epochs * model_sampler_.batches_per_epoch();
    optim::LrSchedule sched = optim::LrSchedule::warmup_cosine(state_->sgd().lr(), (double)std::max<int64_t>(steps, 1), (double)warmup);
    double base = state_->sgd().lr();
    learner_->train();
    const int64_t last_epoch = std::max<int64_t>(0, steps - model_sampler_.batches_per_epoch());
    double last_total = 0;
    for (int64_t s = 0; s < steps; ++s) {
      state_->sgd().set_lr(sched.at((double)s));
      const double loss = model_step(model_sampler_.next());
      if (s >= last_epoch) last_total += loss;
    }
    state_->sgd().set_lr(base);
    delta_ = saved;
    return last_total / (double)std::max<int64_t>(1, steps - last_epoch);
  }

  // ---- checkpoints
  void save_state(const std::string& path) {
    io::Checkpoint ck;
    ck.tensors["delta"] = delta_.to(Device::cpu);
    if (learner_) {
      state_->save(ck, "learner");
    }
    ck.attrs["attack"] = std::string(attack_name(cfg_.attack));
    ck.attrs["kind"] = std::string(noise_kind_name(cfg_.kind));
    ck.attrs["rounds_done"] = rounds_done_;
    ck.attrs["rounds_total"] = cfg_.rounds;
    ck.attrs["seed"] = (int64_t)cfg_.seed;
    ck.attrs["aug_offset"] = (int64_t)aug_gen_.offset();
    ck.attrs["model_sampler_epoch"] = model_sampler_.state().epoch;
    ck.attrs["model_sampler_batch"] = model_sampler_.state().batch;
    ck.attrs[io::kSettingsAttr] = settings_json().dump();
    io::save_checkpoint(path, ck);
  }

  // What a resume must repeat (PoisonConfig minus rounds, paths, device and progress), and
  // the images: their fingerprint.
  nlohmann::ordered_json settings_json() const {
    const PoisonConfig& c = cfg_;
    nlohmann::ordered_json j = {{"attack", attack_name(c.attack)}, {"kind", noise_kind_name(c.kind)},
            {"algo", algorithms::algo_name(c.algo)}, {"learner", algorithms::algo_settings(c.algo_config)},
            {"model", algorithms::model_settings(c.model, c.model_options)},
            {"augment", algorithms::augment_settings(c.augment)},
            {"eps", c.eps}, {"step", c.step}, {"model_steps", c.model_steps}, {"noise_batches", c.noise_batches},
            {"pgd_steps", c.pgd_steps}, {"batch_size", c.batch_size}, {"lr", c.lr}, {"momentum", c.momentum},
            {"weight_decay", c.weight_decay}, {"cosine", c.cosine}, {"final_lr_fraction", c.final_lr_fraction},
            {"init", noise_init_name(c.init)}, {"ratio", c.ratio}, {"pretrain_epochs", c.pretrain_epochs},
            {"seed", c.seed},
            {"separability", c.separability}, {"separability_space", separability_space_name(c.separability_space)},
            {"attack_loss_weight", c.attack_loss_weight},
            {"data_fingerprint", data::fingerprint(train_)}};
    // The rest of the field list (a knob added to it joins the check; rounds may change), each
    // only when off PoisonConfig's default, so that checkpoints written before it joined resume.
    static const nlohmann::ordered_json defaults = knob_values(PoisonConfig{});
    const nlohmann::ordered_json knobs = knob_values(c);
    for (const auto& [key, value] : knobs.items())
      if (key != "rounds" && !j.contains(key) && value != defaults[key]) j[key] = value;
    // Only when set, so that checkpoints written before the hooks existed still resume.
    if (c.flow) j["flow"] = c.flow->name();
    if (c.loss) j["loss"] = "custom";
    return j;
  }

  int64_t restore(const std::string& path) {
    io::Checkpoint ck = io::load_checkpoint(path);
    std::string where = "poison checkpoint " + path;
    CP_CHECK(io::attr_string(ck.attrs, "attack", where) == attack_name(cfg_.attack), where, "was made by attack ",
             io::attr_string(ck.attrs, "attack", where), ", not ", attack_name(cfg_.attack));
    CP_CHECK(io::attr_string(ck.attrs, "kind", where) == noise_kind_name(cfg_.kind), where, "holds ",
             io::attr_string(ck.attrs, "kind", where), "-wise noise, not ", noise_kind_name(cfg_.kind));
    CP_CHECK((uint64_t)io::attr_int(ck.attrs, "seed", where) == cfg_.seed, where, "was made with another seed");
    auto it = ck.tensors.find("delta");
    CP_CHECK(it != ck.tensors.end(), where, "has no delta");
    CP_CHECK(it->second.shape() == delta_.shape(), where, "delta ", it->second.describe(), " does not match this run's ", delta_.describe());
    const int64_t done = io::attr_int(ck.attrs, "rounds_done", where);
    io::check_resume_progress(done, cfg_.rounds, path, "rounds", "rounds_done", "--rounds");
    io::check_resume_settings(ck.attrs, path, settings_json(), cfg_.allow_changed);
    io::check_values(it->second, -1.0, 1.0, where, "delta");  // the noise itself, not only finite
    delta_ = it->second.to(DType::f32).to(cfg_.device).clone();
    if (learner_) {
      state_->load(ck, "learner");
    }
    aug_gen_.set_offset((uint64_t)io::attr_int(ck.attrs, "aug_offset", where));
    model_sampler_.restore({io::attr_int(ck.attrs, "model_sampler_epoch", where), io::attr_int(ck.attrs, "model_sampler_batch", where)});
    return done;
  }

  PoisonResult& finish(PoisonResult& res, const std::string& dataset_name, int64_t subset, bool finished) {
    Poison& p = res.poison;
    p.delta = delta_.to(Device::cpu).contiguous();
    p.indices = poisoned_.to(Device::cpu);
    p.kind = cfg_.kind;
    p.eps = cfg_.eps;
    p.attack = attack_name(cfg_.attack);
    p.algorithm = learner_ ? algorithms::algo_name(learner_->algo()) : "none";
    p.dual_branch = cfg_.algo_config.dual_branch;
    p.dataset = dataset_name;
    p.subset = subset;
    p.seed = cfg_.seed;
    p.rounds_done = rounds_done_;
    p.rounds_total = synthetic_attack(cfg_.attack) ? 0 : cfg_.rounds;
    p.ratio = cfg_.ratio;
    p.classes = train_.classes;
    p.image_count = n_;
    res.attacker = learner_;
    res.finished = finished;
    return res;
  }

  data::Dataset train_;
  PoisonConfig cfg_;
  augment::AugmentConfig augment_;  // cfg.augment at cfg.augment_strength
  int64_t n_ = 0;
  Tensor poisoned_, row_mask_, labels_dev_, delta_;
  std::vector<int64_t> labels_host_;
  std::vector<int64_t> poisoned_list_;
  std::shared_ptr<algorithms::Learner> learner_;
  std::unique_ptr<algorithms::TrainingState> state_;  // learner_'s SGD and model step
  optim::LrSchedule schedule_ = optim::LrSchedule::constant(0);
  Generator aug_gen_;
  data::BatchSampler model_sampler_;
  int64_t rounds_done_ = 0;
  double images_this_round_ = 0, views_this_round_ = 0;
  // issue #15: whether batches may be split over the ranks (more than one rank, an attacker model).
  bool dp_ = false;
};

}  // namespace

PoisonResult generate_poison(const data::Dataset& train, const PoisonConfig& cfg, const std::string& dataset_name, int64_t subset) {
  cfg.validate();
  Poisoner p(train, cfg);
  PoisonResult res = p.run(dataset_name, subset);
  res.poison.data_fingerprint = data::fingerprint(train);  // the images it is for (docs/poison-format.md)
  return res;
}

}  // namespace cpoison::poison
