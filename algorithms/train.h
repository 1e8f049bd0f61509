// Training a learner (SimCLR, MoCo v2, BYOL or the supervised baseline) on a u8 dataset, with
// augmentations drawn on the fly from a seeded generator, SGD with a warm-up + cosine
// schedule, HDF5 checkpoints that a killed run resumes from exactly, a progress line and a
// JSONL log. Images: datasets u8 [N,H,W,C]; batches f32 [B,C,H,W] in [0,1] before augmentation.
//
// A poisoned victim is trained by handing train() the poisoned dataset (the poisoner's
// "apply poison to dataset" step); batch_hook covers transforms that must run per batch
// (defences used as augmentations); step_loss replaces the loss of a step (adversarial
// training, UEraser).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/learner.h"
#include "augment/augment.h"
#include "engine/data/dataset.h"
#include "engine/io/checkpoint.h"
#include "engine/rng.h"
#include "models/encoder.h"
#include "algorithms/train_knobs.h"

namespace cpoison::algorithms {

inline constexpr uint32_t kAugmentStream = 0xA06;  // the augmentation generator's Philox stream

// Per-channel normalisation statistics for a built-in dataset name (fashion-mnist, mnist,
// cifar10, cifar100; stl10 takes CIFAR-10's), repeated or averaged to `channels` entries.
// A derived set keeps its source's statistics: the name is read up to its first '+'
// ("fashion-mnist+cp-c", the name apply_poison gives a poisoned set, is fashion-mnist), so a
// victim trains and is evaluated under the same normalisation. Any other name is an Error
// asking for constants (CIFAR-10's are no longer a silent fallback: pass "cifar10" to get them).
void dataset_normalization(const std::string& dataset, int64_t channels, std::vector<double>& mean,
                           std::vector<double>& stddev);
// The same for a loaded dataset: its stored constants (ds.mean/ds.std, from the HDF5 file or
// --normalize) first, then its name's; an Error naming the dataset and --normalize otherwise.
void dataset_normalization(const data::Dataset& ds, std::vector<double>& mean, std::vector<double>& stddev);

// Augmentation pipelines, for images of size h x w with `channels` channels:
//   simclr:    the spec's §5 pipeline (crop 0.2-1, flip, colour jitter p 0.8, grayscale p 0.2)
//   cpu_small: docs/cpu-scale-reference.md's (crop, flip, brightness then contrast with p 0.8)
//   crop_flip: crop 0.2-1 + flip (the linear probe's training transform)
//   none:      normalisation only
// Output size h x w; normalisation from dataset_normalization.
augment::AugmentConfig make_augment(augment::Recipe recipe, const std::string& dataset, int64_t channels, int64_t h,
                                    int64_t w);
// The same for a loaded dataset (its size, channels and dataset_normalization(ds)).
augment::AugmentConfig make_augment(augment::Recipe recipe, const data::Dataset& ds);

// The optimiser and schedule knobs (epochs, batch size, SGD, warm-up and cosine, checkpoint
// interval) are TrainKnobs' (algorithms/train_knobs.h), listed once there.
struct TrainConfig : TrainKnobs {
  Algo algo = Algo::simclr;
  std::string model = "resnet18";
  models::ModelOptions model_options;  // in_channels must match the dataset's channels
  AlgoConfig algo_config = AlgoConfig::defaults(Algo::simclr);
  augment::AugmentConfig augment;  // for both views (supervised: the one view)
  bool drop_last = true;

  uint64_t seed = 0;  // weights (nn::manual_seed), batch order, augmentations, MoCo queue
  Device device = Device::cpu;

  // Checkpoint path ("" = none), written every checkpoint_every epochs (0 = only at the end)
  // and at the end. With resume, training continues from the checkpoint at resume_from
  // (default: checkpoint_path) when that file exists.
  std::string checkpoint_path;
  bool resume = false;
  std::string resume_from;
  // JSON lines, one per epoch ("" = none). A resumed run keeps the lines of the epochs its
  // checkpoint holds and rewrites the rest.
  std::string log_path;
  // Extra file attributes for the checkpoint (dataset name, preset, data options...).
  io::Attrs extra_attrs;
  // The caller's settings (data options, poison, defence), recorded before the resolved
  // training settings (see training_settings) in every checkpoint's `settings` attribute.
  // A resume refuses a checkpoint whose settings differ from this run's, naming the first
  // differing field, unless allow_changed (then a warning per changed field). The number of
  // epochs is not a setting: a resume may extend a run, never ask for fewer epochs than done.
  io::Attrs settings;
  bool allow_changed = false;

  // A progress line on stderr at least every progress_seconds (and at each epoch's end);
  // < 0 silences it.
  double progress_seconds = 10;

  // Optional per-batch transform of the float batch x [B,C,H,W] before augmentation
  // (a defence used as augmentation). It may draw from gen (the augmentation generator).
  std::function<Tensor(const Tensor& x, const data::Batch& batch, Generator& gen)> batch_hook;
  // Optional loss of a training step, called in place of learner.loss(views) with the learner
  // (in training mode), the step's views (contrastive: the two augmented, normalised views
  // [B,C,H,W]; supervised: view1, the one augmented batch, and its labels i64 [B]) and the
  // augmentation generator (so a resumed run draws the same numbers); it returns the scalar loss,
  // recorded for backward, that the step minimises. Empty: learner.loss(views). Adversarial
  // training (defense::adversarial_loss_hook) and UEraser (defense::ueraser_loss_hook) set it.
  // The checkpoint records that it is set, not what it does; a caller that resumes must give
  // the same hook.
  using StepLoss = std::function<Tensor(Learner& learner, const Batch& views, Generator& gen)>;
  StepLoss step_loss;
  // The contrastive learner's gradient flow and its loss over the outputs (algorithms/flow.h,
  // docs/extending.md), set on the learner before the first step: null / empty keep the
  // built-in ones. step_loss, when set, still replaces the whole step's loss (it may call
  // learner.loss, which uses them). Contrastive algorithms only. The checkpoint records the
  // flow's name and whether a loss was set.
  FlowPtr flow;
  OutputLoss loss;
  // Called after every epoch (after its checkpoint); returning false stops training there, as
  // a kill would (tests use it to interrupt a run).
  std::function<bool(int64_t epochs_done)> on_epoch_end;

  // The default learning rate of an algorithm: SimCLR 0.5, MoCo v2 0.3, BYOL 1.0, supervised 0.1.
  static double default_lr(Algo a);
  double resolved_lr() const { return lr > 0 ? lr : default_lr(algo); }
  // Error naming the field when a value is out of range.
  void validate() const;
};

struct EpochStats {
  int64_t epoch = 0;  // 1-based
  int64_t steps = 0;
  double loss = 0;    // mean over the epoch's steps
  double lr = 0;      // at the epoch's last step
  double seconds = 0;
  double images_per_s = 0;
};

struct TrainResult {
  std::shared_ptr<Learner> learner;
  std::vector<EpochStats> history;  // epochs run by this call
  int64_t epochs_done = 0;          // including those before a resume
  int64_t start_epoch = 0;          // epochs already done when this call began
};

// Trains on `train_set` (labels only needed for supervised). Builds the learner from cfg
// (seeded), or restores it, its optimiser state, MoCo queue, batch position and generator
// offset from the checkpoint when resuming: a resumed run ends with the same weights as an
// uninterrupted one. Throws Error for a bad config, a dataset whose channels differ from
// model_options.in_channels, or a checkpoint made with a different algorithm or model.
// The returned learner is in eval mode. Seeds nn::init_generator() with cfg.seed.
TrainResult train(const data::Dataset& train_set, const TrainConfig& cfg);

// The resolved settings train() records and compares on resume, as a JSON object (text): the
// caller's cfg.settings, then algorithm, model, learner and augmentation configuration,
// optimiser and schedule (lr resolved), seed, which loss hooks are set, and the training
// images' data::fingerprint.
std::string training_settings(const TrainConfig& cfg, const data::Dataset& train_set);

// Builds the learner of a training checkpoint (algo, model and sizes from its attributes) and
// loads its weights. Error naming the file when attributes or tensors are missing.
std::shared_ptr<Learner> load_learner(const std::string& checkpoint_path);
// Only the online backbone of a training checkpoint (entries "encoder.*").
models::EncoderPtr load_encoder(const std::string& checkpoint_path);

}  // namespace cpoison::algorithms
