// The optimiser and schedule knobs of a training run, listed once in visit() (key, member, help).
// algorithms::TrainConfig holds them with the reference implementation's values as defaults
// (docs/reference-implementation.md §6: `cpoison train --preset spec`); the experiment's
// TrainSettings (tools/experiment/settings.h) holds them with the cpu-small values and makes of
// this list the flags of `cpoison train`, the TOML keys `victim.*` / `supervised.*`, `experiment
// --keys` and a victim cell's cache key, and hands them to TrainConfig in one assignment. A new
// knob is its member and its line here, plus its use in train().
#pragma once
#include <cstdint>

namespace cpoison::algorithms {

struct TrainKnobs {
  int64_t epochs = 1000;
  int64_t batch_size = 512;
  // SGD. lr <= 0 picks the algorithm's default (TrainConfig::default_lr).
  double lr = 0;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 1e-4;
  // Schedule in optimiser steps: linear warm-up from warmup_start_lr over warmup_epochs (or
  // warmup_steps when >= 0), then cosine down to final_lr_fraction * lr at the last step.
  double warmup_epochs = 10;
  int64_t warmup_steps = -1;
  double warmup_start_lr = 0.01;
  double final_lr_fraction = 0.001;
  // Epochs between resumable checkpoints (0: only at the end); a resume is exact, so it does
  // not change the result.
  int64_t checkpoint_every = 0;

  template <class V>
  void visit(V& v) {
    v("epochs", epochs, "training epochs");
    v("batch_size", batch_size, "images per step (two views each for a contrastive learner); drop_last");
    v("lr", lr, "base learning rate (0: the algorithm's default, SimCLR 0.5, MoCo 0.3, BYOL 1.0, supervised 0.1)");
    v("momentum", momentum, "SGD momentum");
    v("nesterov", nesterov, "Nesterov momentum");
    v("weight_decay", weight_decay, "SGD weight decay");
    v("warmup_epochs", warmup_epochs, "linear warm-up length in epochs (when warmup_steps < 0)");
    v("warmup_steps", warmup_steps, "linear warm-up length in steps (>= 0 overrides warmup_epochs)");
    v("warmup_start_lr", warmup_start_lr, "learning rate at the start of the warm-up");
    v("final_lr_fraction", final_lr_fraction, "the cosine ends at this fraction of lr");
    v("checkpoint_every", checkpoint_every, "epochs between resumable checkpoints (0: only at the end)");
  }
};

}  // namespace cpoison::algorithms
