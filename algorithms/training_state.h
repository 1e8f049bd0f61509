// The model step that `cpoison train` (algorithms/train.cpp) and the poisoner's model phase and
// pre-training (poison/generate.cpp) share, and the part of their checkpoints it owns: a learner,
// SGD over its online parameters (the momentum copies follow by EMA), the learner's views of a
// batch, and under mpirun (issue #15, algorithms/data_parallel.h) this rank's rows of them and
// gradients averaged over the ranks.
// The loops around the step stay apart: train() runs epochs over a fixed dataset with a per-step
// schedule, while the poisoner runs a few steps per round on images whose noise changes between
// them, under a per-round schedule, alternating with noise phases.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "algorithms/learner.h"
#include "augment/augment.h"
#include "engine/io/checkpoint.h"
#include "engine/optim/sgd.h"
#include "engine/rng.h"

namespace cpoison::algorithms {

class TrainingState {
public:
  // SGD with `options` over the learner's named_online_parameters().
  TrainingState(std::shared_ptr<Learner> learner, const optim::SGDOptions& options);

  Learner& learner() const { return *learner_; }
  optim::SGD& sgd() { return sgd_; }
  const optim::SGD& sgd() const { return sgd_; }

  // The learner's views of float images x [B,C,H,W] in [0,1]: view1, then (contrastive) view2,
  // each with augmentation parameters freshly drawn from gen; a supervised learner's one view
  // comes with `labels`.
  Batch views(const Tensor& x, const Tensor& labels, const augment::AugmentConfig& aug, Generator& gen) const;

  // One optimisation step on `loss`, a scalar recorded for backward: gradients cleared and
  // back-propagated, averaged over the ranks when average_over_ranks (each rank's loss being the
  // mean over its rows of the global batch, that is the global batch's gradient), an SGD step of
  // the online weights, then the EMA update of the momentum copies.
  void step(const Tensor& loss, bool average_over_ranks = false);

  // The learner's weights under `prefix` (io::add_module) and SGD's momentum buffers
  // (io::add_optimizer); load reads them back (io::load_module, strict, and io::load_optimizer).
  void save(io::Checkpoint& ck, const std::string& prefix = "") const;
  void load(const io::Checkpoint& ck, const std::string& prefix = "");

private:
  std::shared_ptr<Learner> learner_;
  optim::SGD sgd_;
  std::vector<Tensor> params_;  // sgd_'s parameters, listed once for the gradient all-reduce
};

// issue #15: this rank's rows of the views and the labels (distributed::local_rows, whose errors
// name `where`).
Batch local_views(const Batch& views, const char* where = "local_rows");

}  // namespace cpoison::algorithms
