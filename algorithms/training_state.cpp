#include "algorithms/training_state.h"

#include <utility>

#include "algorithms/data_parallel.h"
#include "engine/autograd.h"

namespace cpoison::algorithms {

TrainingState::TrainingState(std::shared_ptr<Learner> learner, const optim::SGDOptions& options)
    : learner_(std::move(learner)),
      sgd_(learner_->named_online_parameters(), options),
      params_(parameter_list(sgd_.named_parameters())) {}

Batch TrainingState::views(const Tensor& x, const Tensor& labels, const augment::AugmentConfig& aug, Generator& gen) const {
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
  Batch views;
  views.view1 = augment::apply(x, augment::sample_params(aug, b, h, w, gen), aug);
  if (learner_->views_per_batch() == 2) views.view2 = augment::apply(x, augment::sample_params(aug, b, h, w, gen), aug);
  else views.labels = labels;
  return views;
}

void TrainingState::step(const Tensor& loss, bool average_over_ranks) {
  // Cleared first, so that this loss's gradient alone reaches the step.
  sgd_.zero_grad();
  autograd::backward(loss);
  if (average_over_ranks) distributed::all_reduce_gradients(params_);
  sgd_.step();
  learner_->momentum_update();
}

void TrainingState::save(io::Checkpoint& ck, const std::string& prefix) const {
  io::add_module(ck, *learner_, prefix);
  io::add_optimizer(ck, sgd_);
}

void TrainingState::load(const io::Checkpoint& ck, const std::string& prefix) {
  io::load_module(ck, *learner_, prefix);
  io::load_optimizer(ck, sgd_);
}

Batch local_views(const Batch& views, const char* where) {
  Batch local;
  local.view1 = distributed::local_rows(views.view1, where);
  if (views.view2.defined()) local.view2 = distributed::local_rows(views.view2, where);
  if (views.labels.defined()) local.labels = distributed::local_rows(views.labels, where);
  return local;
}

}  // namespace cpoison::algorithms
