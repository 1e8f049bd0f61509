#include "tools/experiment/flags.h"

#include "algorithms/learner.h"
#include "engine/size.h"
#include "tools/common.h"

namespace cpoison::tools::experiment {

FieldFlags add_training_flags(CLI::App& app, TrainSettings& t) {
  FieldFlags f = add_flags(app, t);
  f.at("epochs")->check(int_range(1, kMaxEpochs));
  f.at("batch_size")->check(int_range(1, kMaxAxis));
  f.at("lr")->check(real_range(0, 1000));
  f.at("momentum")->check(in_range({0, 1, false, true}));
  f.at("weight_decay")->check(real_range(0, 1));
  f.at("warmup_epochs")->check(real_range(0, kMaxEpochs));
  f.at("warmup_steps")->check(int_range(-1, kMaxAxis));
  f.at("warmup_start_lr")->check(real_range(0, 1000));
  f.at("final_lr_fraction")->check(real_range(0, 1));
  f.at("augment")->check(CLI::IsMember({"simclr", "cpu-small", "crop-flip", "none", "translate-flip"}));
  f.at("translate")->check(int_range(0, kMaxImageSide));
  f.at("init")->check(CLI::IsMember({"kaiming-fan-out", "pytorch"}));
  f.at("checkpoint_every")->check(int_range(0, kMaxEpochs));
  return f;
}

FieldFlags add_algo_flags(CLI::App& app, AlgoSettings& a) {
  FieldFlags f = add_flags(app, a, {"lr"});
  f.at("temperature")->check(real_range(0, 100));
  f.at("ema_momentum")->check(in_range({0, 1, false, false, {-1}}));
  f.at("queue_size")->check(int_range(0, algorithms::kMaxQueue, {-1}));
  f.at("proj_hidden")->check(int_range(0, algorithms::kMaxHeadWidth, {-1}));
  f.at("proj_dim")->check(int_range(0, algorithms::kMaxHeadWidth));
  f.at("pred_hidden")->check(int_range(0, algorithms::kMaxHeadWidth));
  return f;
}

}  // namespace cpoison::tools::experiment
