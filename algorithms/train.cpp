#include "algorithms/train.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "algorithms/data_parallel.h"  // issue #15: mpirun -np K
#include "algorithms/settings.h"
#include "algorithms/training_state.h"
#include "engine/progress_log.h"
#include "engine/io/resume.h"
#include "engine/size.h"
#include "engine/nn/module.h"
#include "engine/optim/schedule.h"
#include "engine/optim/sgd.h"
#include "models/registry.h"

namespace cpoison::algorithms {

// ---------------------------------------------------------------- data helpers

namespace {
// Repeats (grey data replicated to colour) or averages (colour read as one channel) the
// constants to `channels` entries.
void fit_channels(int64_t channels, std::vector<double>& mean, std::vector<double>& stddev) {
  if ((int64_t)mean.size() == channels) return;
  if (mean.size() == 1) {  // a grayscale set replicated to colour
    mean.assign(channels, mean[0]);
    stddev.assign(channels, stddev[0]);
    return;
  }
  // A colour set read as one channel: the channel average is a fair single statistic.
  double m = 0, s = 0;
  for (size_t i = 0; i < mean.size(); ++i) m += mean[i], s += stddev[i];
  mean.assign(channels, m / mean.size());
  stddev.assign(channels, s / stddev.size());
}

const char* kNormalizeHint =
    "give --normalize MEAN/STD (e.g. --normalize 0.5,0.5,0.5/0.25,0.25,0.25), --normalize data (the training "
    "images' own statistics) or --normalize cifar10 (CIFAR-10's constants, the old silent default)";
}  // namespace

void dataset_normalization(const std::string& dataset, int64_t channels, std::vector<double>& mean,
                           std::vector<double>& stddev) {
  CP_CHECK(channels >= 1, "dataset_normalization", "channels must be >= 1, got ", channels);
  CP_CHECK(data::builtin_normalization(dataset, mean, stddev), "normalisation", "no normalisation constants for dataset '",
           dataset, "' (built in: fashion-mnist, mnist, cifar10, cifar100, stl10): record them in the HDF5 file's mean ",
           "and std attributes or ", kNormalizeHint);
  fit_channels(channels, mean, stddev);
}

void dataset_normalization(const data::Dataset& ds, std::vector<double>& mean, std::vector<double>& stddev) {
  const int64_t channels = ds.channels();
  CP_CHECK(channels >= 1, "dataset_normalization", "channels must be >= 1, got ", channels);
  if (!ds.mean.empty() && ds.mean.size() == ds.std.size()) {
    mean = ds.mean, stddev = ds.std;
    CP_CHECK((int64_t)mean.size() == channels || mean.size() == 1, "normalisation", "dataset '", ds.name, "' has ",
             channels, " channels but its normalisation constants have ", mean.size());
    fit_channels(channels, mean, stddev);
    return;
  }
  CP_CHECK(data::builtin_normalization(ds.name, mean, stddev), "normalisation", "dataset '", ds.name, "' (", ds.source,
           ") records no normalisation constants and is not a built-in dataset: record them in the HDF5 file's mean and ",
           "std attributes (every file cpoison writes has them) or ", kNormalizeHint);
  fit_channels(channels, mean, stddev);
}

augment::AugmentConfig make_augment(augment::Recipe recipe, const std::string& dataset, int64_t channels, int64_t h,
                                    int64_t w) {
  augment::AugmentConfig cfg;
  switch (recipe) {
    case augment::Recipe::simclr: cfg = augment::AugmentConfig::simclr_cifar(h); break;
    case augment::Recipe::cpu_small: cfg = augment::AugmentConfig::cpu_small(); break;
    case augment::Recipe::crop_flip:
      cfg.jitter = false;
      cfg.grayscale = false;
      break;
    case augment::Recipe::none: cfg.crop = cfg.flip = cfg.jitter = cfg.grayscale = false; break;
  }
  cfg.out_h = h;
  cfg.out_w = w;
  dataset_normalization(dataset, channels, cfg.mean, cfg.std);
  cfg.validate();
  return cfg;
}

augment::AugmentConfig make_augment(augment::Recipe recipe, const data::Dataset& ds) {
  // The pipeline by name (with a built-in name's constants), then the dataset's own normalisation.
  augment::AugmentConfig cfg = make_augment(recipe, "cifar10", ds.channels(), ds.height(), ds.width());
  dataset_normalization(ds, cfg.mean, cfg.std);
  cfg.validate();
  return cfg;
}

// ---------------------------------------------------------------- config

double TrainConfig::default_lr(Algo a) {
  switch (a) {
    case Algo::simclr: return 0.5;
    case Algo::moco: return 0.3;
    case Algo::byol: return 1.0;
    case Algo::supervised: return 0.1;
  }
  return 0.1;
}

void TrainConfig::validate() const {
  const char* where = "TrainConfig";
  CP_CHECK(epochs >= 1, where, "epochs must be >= 1, got ", epochs);
  CP_CHECK(batch_size >= 1, where, "batch_size must be >= 1, got ", batch_size);
  CP_CHECK(std::isfinite(lr) && lr >= 0, where, "lr must be >= 0 (0: the algorithm's default), got ", lr);
  CP_CHECK(momentum >= 0 && momentum < 1, where, "momentum must be in [0, 1), got ", momentum);
  CP_CHECK(weight_decay >= 0, where, "weight_decay must be >= 0, got ", weight_decay);
  CP_CHECK(warmup_epochs >= 0, where, "warmup_epochs must be >= 0, got ", warmup_epochs);
  CP_CHECK(warmup_steps >= -1, where, "warmup_steps must be >= 0 (or -1: use warmup_epochs), got ", warmup_steps);
  CP_CHECK(warmup_start_lr >= 0, where, "warmup_start_lr must be >= 0, got ", warmup_start_lr);
  CP_CHECK(final_lr_fraction >= 0, where, "final_lr_fraction must be >= 0, got ", final_lr_fraction);
  CP_CHECK(checkpoint_every >= 0, where, "checkpoint_every must be >= 0, got ", checkpoint_every);
  CP_CHECK(!resume || !checkpoint_path.empty() || !resume_from.empty(), where,
           "resume needs a checkpoint path (--out or --resume-from)");
  CP_CHECK(!(flow || loss) || algo != Algo::supervised, where,
           "a gradient flow or a loss over the outputs needs a contrastive learner (simclr, moco, byol); this run is "
           "supervised");
  algo_config.validate(algo);
  augment.validate();
}

// ---------------------------------------------------------------- checkpoint layout

namespace {

const char* kFormat = "cpoison-train";

void put_learner_attrs(io::Attrs& a, Algo algo, const std::string& model, const models::ModelOptions& mo,
                       const AlgoConfig& ac, int64_t feature_dim) {
  a["format"] = std::string(kFormat);
  a["algo"] = std::string(algo_name(algo));
  a["model"] = model;
  a["width"] = mo.width;
  a["in_channels"] = mo.in_channels;
  a["num_classes"] = algo == Algo::supervised ? mo.num_classes : int64_t(0);
  a["feature_dim"] = feature_dim;
  a["temperature"] = ac.temperature;
  a["ema_momentum"] = ac.momentum;
  a["queue_size"] = ac.queue_size;
  a["proj_hidden"] = ac.proj_hidden;
  a["proj_dim"] = ac.proj_dim;
  a["pred_hidden"] = ac.pred_hidden;
  a["dual_branch"] = int64_t(ac.dual_branch);
  a["byol_detach_target"] = int64_t(ac.byol_detach_target);
  a["loss_scale"] = ac.loss_scale;
  a["algo_seed"] = (int64_t)ac.seed;
}

struct LearnerSpec {
  Algo algo;
  std::string model;
  models::ModelOptions options;
  AlgoConfig config;
};

LearnerSpec read_learner_attrs(const io::Attrs& a, const std::string& path) {
  std::string where = path;
  auto fmt = io::attr_string(a, "format", where);
  CP_CHECK(fmt == kFormat, where, "not a cpoison training checkpoint (format '", fmt, "')");
  LearnerSpec s;
  s.algo = parse_algo(io::attr_string(a, "algo", where));
  s.model = io::attr_string(a, "model", where);
  s.options.width = io::attr_int(a, "width", where);
  s.options.in_channels = io::attr_int(a, "in_channels", where);
  s.options.num_classes = io::attr_int(a, "num_classes", where);
  AlgoConfig& c = s.config;
  c.temperature = io::attr_double(a, "temperature", where);
  c.momentum = io::attr_double(a, "ema_momentum", where);
  c.queue_size = io::attr_int(a, "queue_size", where);
  c.proj_hidden = io::attr_int(a, "proj_hidden", where);
  c.proj_dim = io::attr_int(a, "proj_dim", where);
  c.pred_hidden = io::attr_int(a, "pred_hidden", where);
  c.dual_branch = io::attr_int(a, "dual_branch", where) != 0;
  c.byol_detach_target = io::attr_int(a, "byol_detach_target", where) != 0;
  c.loss_scale = io::attr_double(a, "loss_scale", where);
  c.seed = (uint64_t)io::attr_int(a, "algo_seed", where);
  // Sizes from a file are bounded before a model is built from them (a width of 2^62 would
  // overflow every channel count); the learner's own validate() names the same bounds.
  auto bounded = [&](const char* key, int64_t v, int64_t lo, int64_t hi) {
    CP_CHECK(v >= lo && v <= hi, where, "attribute '", key, "' must be in [", lo, ", ", hi, "], got ", v);
  };
  bounded("width", s.options.width, 1, models::kMaxWidth);
  bounded("in_channels", s.options.in_channels, 1, models::kMaxChannels);
  bounded("num_classes", s.options.num_classes, 0, models::kMaxClasses);
  bounded("queue_size", c.queue_size, 0, kMaxQueue);
  bounded("proj_hidden", c.proj_hidden, 0, kMaxHeadWidth);
  bounded("proj_dim", c.proj_dim, 1, kMaxHeadWidth);
  bounded("pred_hidden", c.pred_hidden, 1, kMaxHeadWidth);
  try {
    c.validate(s.algo);
  } catch (const Error& e) {
    fail(where, "attributes describe an impossible learner: ", e.what());
  }
  return s;
}

// Module entries of a checkpoint (optimiser state lives under "optim/").
std::map<std::string, Tensor> module_entries(const io::Checkpoint& ck, const std::string& prefix = "") {
  std::map<std::string, Tensor> out;
  for (auto& [key, t] : ck.tensors)
    if (key.find('/') == std::string::npos && key.rfind(prefix, 0) == 0) out.emplace(key.substr(prefix.size()), t);
  return out;
}

void save(const TrainConfig& cfg, const std::string& settings, const TrainingState& state,
          const data::BatchSampler& sampler, const Generator& aug_gen, int64_t epochs_done, int64_t step) {
  io::Checkpoint ck;
  state.save(ck);
  const Learner& learner = state.learner();
  ck.attrs = cfg.extra_attrs;
  put_learner_attrs(ck.attrs, cfg.algo, cfg.model, learner.encoder().options(), learner.config(),
                    learner.encoder().feature_dim());
  // The normalisation the views were made with, so that features can be recomputed (cpoison
  // features, probe) and a PyTorch user can build the same transform.
  if (cfg.augment.normalize) {
    ck.attrs["normalize_mean"] = data::format_constants(cfg.augment.mean);
    ck.attrs["normalize_std"] = data::format_constants(cfg.augment.std);
  }
  ck.attrs["epochs"] = cfg.epochs;
  ck.attrs["epochs_done"] = epochs_done;
  ck.attrs["step"] = step;
  ck.attrs["batch_size"] = cfg.batch_size;
  ck.attrs["seed"] = (int64_t)cfg.seed;
  ck.attrs["lr"] = cfg.resolved_lr();
  ck.attrs["sampler_epoch"] = sampler.state().epoch;
  ck.attrs["sampler_batch"] = sampler.state().batch;
  ck.attrs["augment_offset"] = (int64_t)aug_gen.offset();
  ck.attrs[io::kSettingsAttr] = settings;
  io::save_checkpoint(cfg.checkpoint_path, ck);
}

}  // namespace

// ---------------------------------------------------------------- settings

std::string training_settings(const TrainConfig& cfg_in, const data::Dataset& train_set) {
  TrainConfig cfg = cfg_in;  // the adjustments train() makes before building the learner
  if (cfg.algo == Algo::supervised) cfg.model_options.num_classes = train_set.classes;
  cfg.algo_config.seed = cfg.seed;
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [key, value] : cfg.settings) std::visit([&, k = key](const auto& v) { j[k] = v; }, value);
  j["algo"] = algo_name(cfg.algo);
  j["model"] = model_settings(cfg.model, cfg.model_options);
  j["learner"] = algo_settings(cfg.algo_config);
  j["augment"] = augment_settings(cfg.augment);
  j["batch_size"] = cfg.batch_size;
  j["drop_last"] = cfg.drop_last;
  j["lr"] = cfg.resolved_lr();
  j["momentum"] = cfg.momentum;
  j["weight_decay"] = cfg.weight_decay;
  j["nesterov"] = cfg.nesterov;
  j["warmup_epochs"] = cfg.warmup_epochs;
  j["warmup_steps"] = cfg.warmup_steps;
  j["warmup_start_lr"] = cfg.warmup_start_lr;
  j["final_lr_fraction"] = cfg.final_lr_fraction;
  j["seed"] = cfg.seed;
  // The step-loss hook keeps the two names it had when contrastive and supervised steps had
  // a hook each, so that earlier checkpoints still resume.
  const bool supervised = cfg.algo == Algo::supervised;
  j["hooks"] = {{"batch", (bool)cfg.batch_hook},
                {"contrastive_loss", cfg.step_loss && !supervised},
                {"supervised_loss", cfg.step_loss && supervised}};
  // Only when set, so that checkpoints written before the flow hooks existed still resume.
  if (cfg.flow) j["hooks"]["flow"] = cfg.flow->name();
  if (cfg.loss) j["hooks"]["loss"] = true;
  j["data_fingerprint"] = data::fingerprint(train_set);
  return j.dump();
}

// ---------------------------------------------------------------- loading

std::shared_ptr<Learner> load_learner(const std::string& path) {
  io::Checkpoint ck = io::load_checkpoint(path);
  LearnerSpec s = read_learner_attrs(ck.attrs, path);
  auto learner = make_learner(s.algo, s.model, s.options, s.config);
  try {
    learner->load_state_dict(module_entries(ck), true);
  } catch (const Error& e) {
    fail(path, "checkpoint does not fit a ", algo_name(s.algo), " ", s.model, " learner: ", e.what());
  }
  return learner;
}

models::EncoderPtr load_encoder(const std::string& path) {
  io::Checkpoint ck = io::load_checkpoint(path);
  LearnerSpec s = read_learner_attrs(ck.attrs, path);
  auto encoder = models::make_encoder(s.model, s.options);
  try {
    encoder->load_state_dict(module_entries(ck, "encoder."), true);
  } catch (const Error& e) {
    fail(path, "checkpoint's encoder does not fit ", s.model, ": ", e.what());
  }
  return encoder;
}

// ---------------------------------------------------------------- training

namespace {
// The progress line's metrics of a training step or epoch.
std::string metrics(double loss, double lr) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "loss %.4f  lr %.5f", loss, lr);
  return buf;
}
}  // namespace

TrainResult train(const data::Dataset& train_set, const TrainConfig& cfg_in) {
  TrainConfig cfg = cfg_in;
  cfg.validate();
  const char* where = "train";
  CP_CHECK(train_set.size() > 0 && train_set.images.dim() == 4, where, "empty or malformed training set ",
           train_set.images.defined() ? train_set.images.shape() : Shape{});
  CP_CHECK(train_set.channels() == cfg.model_options.in_channels, where, "the dataset has ", train_set.channels(),
           " channels but the model takes in_channels = ", cfg.model_options.in_channels);
  if (cfg.algo == Algo::supervised) {
    CP_CHECK(train_set.classes >= 1, where, "supervised training needs a labelled dataset");
    cfg.model_options.num_classes = train_set.classes;
  }
  cfg.algo_config.seed = cfg.seed;
  const bool dp = data_parallel_training(cfg.algo, cfg.batch_size);  // issue #15: rank 0 alone prints and writes
  if (dp && !distributed::is_root()) cfg.progress_seconds = -1, cfg.log_path.clear();

  // Build (seeded) and move to the device.
  nn::manual_seed(cfg.seed);
  auto learner = make_learner(cfg.algo, cfg.model, cfg.model_options, cfg.algo_config);
  learner->to(cfg.device);
  learner->set_flow(cfg.flow);
  learner->set_loss(cfg.loss);
  const double lr = cfg.resolved_lr();
  optim::SGDOptions so;
  so.lr = lr;
  so.momentum = cfg.momentum;
  so.weight_decay = cfg.weight_decay;
  so.nesterov = cfg.nesterov;
  TrainingState state(learner, so);

  data::Dataset ds = train_set.to(cfg.device);
  data::BatchSampler sampler(ds.size(), cfg.batch_size, cfg.seed, /*shuffle=*/true, cfg.drop_last);
  const int64_t steps_per_epoch = sampler.batches_per_epoch();
  CP_CHECK(steps_per_epoch > 0, where, "a dataset of ", ds.size(), " images gives no batch of ", cfg.batch_size,
           cfg.drop_last ? " (drop_last)" : "");
  const int64_t total_steps = cfg.epochs * steps_per_epoch;
  double warm = cfg.warmup_steps >= 0 ? (double)cfg.warmup_steps : cfg.warmup_epochs * (double)steps_per_epoch;
  warm = std::min(warm, (double)total_steps);
  auto schedule = optim::LrSchedule::warmup_cosine(lr, (double)total_steps, warm, cfg.warmup_start_lr,
                                                   cfg.final_lr_fraction * lr);
  Generator aug_gen(cfg.seed, kAugmentStream);

  TrainResult result;
  result.learner = learner;
  int64_t start_epoch = 0;
  const std::string settings = training_settings(cfg, train_set);
  const std::string resume_path = cfg.resume_from.empty() ? cfg.checkpoint_path : cfg.resume_from;
  // A checkpoint named explicitly must exist: starting afresh instead would hide a typo.
  CP_CHECK(!cfg.resume || cfg.resume_from.empty() || std::filesystem::exists(resume_path), "resume_from",
           "no checkpoint '", resume_path, "' to resume from");
  if (cfg.resume && std::filesystem::exists(resume_path)) {
    io::Checkpoint ck = io::load_checkpoint(resume_path);
    LearnerSpec s = read_learner_attrs(ck.attrs, resume_path);
    CP_CHECK(s.algo == cfg.algo && s.model == cfg.model && s.options.width == cfg.model_options.width &&
                 s.options.in_channels == cfg.model_options.in_channels,
             resume_path, "checkpoint holds a ", algo_name(s.algo), " ", s.model, " (width ", s.options.width,
             ", in_channels ", s.options.in_channels, "); this run trains a ", algo_name(cfg.algo), " ", cfg.model,
             " (width ", cfg.model_options.width, ", in_channels ", cfg.model_options.in_channels, ")");
    CP_CHECK(io::attr_int(ck.attrs, "batch_size", resume_path) == cfg.batch_size &&
                 io::attr_int(ck.attrs, "seed", resume_path) == (int64_t)cfg.seed,
             resume_path, "resuming needs the same batch size and seed (checkpoint: batch ",
             io::attr_int(ck.attrs, "batch_size", resume_path), ", seed ", io::attr_int(ck.attrs, "seed", resume_path),
             ")");
    start_epoch = io::attr_int(ck.attrs, "epochs_done", resume_path);
    io::check_resume_progress(start_epoch, cfg.epochs, resume_path, "epochs", "epochs_done", "--epochs");
    io::check_resume_settings(ck.attrs, resume_path, nlohmann::ordered_json::parse(settings), cfg.allow_changed);
    try {
      learner->load_state_dict(module_entries(ck), true);
    } catch (const Error& e) {
      fail(resume_path, "cannot resume: ", e.what());
    }
    io::load_optimizer(ck, state.sgd());
    sampler.restore({io::attr_int(ck.attrs, "sampler_epoch", resume_path),
                     io::attr_int(ck.attrs, "sampler_batch", resume_path)});
    aug_gen.set_offset((uint64_t)io::attr_int(ck.attrs, "augment_offset", resume_path));
  }
  result.start_epoch = start_epoch;
  result.epochs_done = start_epoch;

  // The progress line and the JSONL log (engine/progress_log.h), one line per epoch.
  Progress::Options po;
  po.run = "train";
  po.tag = algo_name(cfg.algo);
  po.unit = "epoch";
  po.rate_unit = "img/s";
  po.total = cfg.epochs;
  po.start = start_epoch;
  po.seconds = cfg.progress_seconds;
  po.log_path = cfg.log_path;
  Progress progress(po);
  if (start_epoch > 0) progress.note("resuming " + resume_path + " after epoch " + std::to_string(start_epoch) + " of " +
                                     std::to_string(cfg.epochs));

  for (int64_t epoch = start_epoch; epoch < cfg.epochs; ++epoch) {
    learner->train();
    progress.begin_unit(epoch);
    double loss_sum = 0, current_lr = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      const int64_t step = epoch * steps_per_epoch + s;
      current_lr = schedule.at((double)step);
      state.sgd().set_lr(current_lr);
      data::Batch batch = data::gather_batch(ds, sampler.next());
      Tensor x = data::to_float_nchw(batch.images, cfg.device);
      if (cfg.batch_hook) x = cfg.batch_hook(x, batch, aug_gen);
      Batch views = state.views(x, batch.labels, cfg.augment, aug_gen);
      Tensor loss;
      distributed::DataParallelScope dp_scope;  // issue #15: SyncBN, global negatives (inert with one rank)
      if (dp) views = local_views(views);  // issue #15: this rank's rows of the global batch
      if (cfg.step_loss) {
        loss = cfg.step_loss(*learner, views, aug_gen);
        CP_CHECK(loss.defined() && loss.numel() == 1, where, "the step_loss hook must return a scalar, got ",
                 loss.defined() ? loss.describe() : std::string("an undefined tensor"));
      } else {
        loss = learner->loss(views);
      }
      const double loss_value = dp ? global_mean(loss) : loss.item();  // issue #15
      CP_CHECK(std::isfinite(loss_value), where, "the loss became ", loss_value, " at epoch ", epoch + 1, " step ",
               s + 1, " (lr ", current_lr, ")");
      state.step(loss, /*average_over_ranks=*/dp);  // issue #15: the global batch's gradient
      loss_sum += loss_value;
      progress.step(s + 1, steps_per_epoch, double((s + 1) * cfg.batch_size),
                    [&] { return metrics(loss_sum / (s + 1), current_lr); });
    }
    EpochStats st;
    st.epoch = epoch + 1;
    st.steps = steps_per_epoch;
    st.loss = loss_sum / steps_per_epoch;
    st.lr = current_lr;
    st.seconds = progress.unit_seconds();
    st.images_per_s = steps_per_epoch * cfg.batch_size / std::max(st.seconds, 1e-9);
    result.history.push_back(st);
    result.epochs_done = epoch + 1;
    progress.unit_done(st.seconds, double(steps_per_epoch * cfg.batch_size), metrics(st.loss, st.lr),
                       {{"steps", st.steps},
                        {"loss", st.loss},
                        {"lr", st.lr},
                        {"images_per_s", st.images_per_s},
                        {"algo", algo_name(cfg.algo)},
                        {"model", cfg.model}});
    const bool last = epoch + 1 == cfg.epochs;
    if (distributed::is_root() && !cfg.checkpoint_path.empty() && (last || (cfg.checkpoint_every > 0 && (epoch + 1) % cfg.checkpoint_every == 0)))
      save(cfg, settings, state, sampler, aug_gen, epoch + 1, (epoch + 1) * steps_per_epoch);
    if (cfg.on_epoch_end && !cfg.on_epoch_end(epoch + 1)) break;
  }
  learner->eval();
  return result;
}

}  // namespace cpoison::algorithms
