// A gradient flow of one's own, built outside the cpoison tree against the installed library:
// ∂L/∂δ through the momentum branch only, with weight w; then a small class-wise contrastive
// poison (CP-C) made with it against a MoCo v2 attacker. docs/extending.md walks through it.
//   make && ./custom_flow [dataset name or .h5 file] [images] [w] [out.h5]
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "algorithms/train.h"  // make_augment
#include "poison/generate.h"

using namespace cpoison;
using algorithms::Branch;

// The online branch sees the views detached (its weights still train in the model phase); the
// momentum branch carries ∂L/∂view, times w. at() is left as the identity: no other edits.
// (The noise step takes sign(g), so alone in carrying the gradient any w > 0 gives one poison.)
class MomentumOnly : public algorithms::GradientFlow {
public:
  explicit MomentumOnly(double w) : w_(w) {}
  std::string name() const override { return "momentum-only(w=" + std::to_string(w_).substr(0, 6) + ")"; }
  double branch_weight(Branch b) const override { return b == Branch::momentum ? w_ : 0.0; }

private:
  double w_;
};

int main(int argc, char** argv) try {
  const std::string data = argc > 1 ? argv[1] : "fashion-mnist";
  const int64_t images = argc > 2 ? std::atoll(argv[2]) : 64;
  const double w = argc > 3 ? std::atof(argv[3]) : 0.5;
  const std::string out = argc > 4 ? argv[4] : "custom_flow_poison.h5";

  data::LoadOptions load;
  load.limit = images;
  data::Dataset train = data::load_dataset(data, data::Split::train, load);

  // The cpu-small CP-C recipe, shrunk to a few seconds: 2 rounds of 2 model steps and 2 noise
  // batches on a width-4 ResNet-18.
  poison::PoisonConfig cfg = poison::PoisonConfig::recipe("cpu-small-cp-c", algorithms::Algo::moco);
  cfg.model_options.width = 4;
  cfg.model_options.in_channels = train.channels();
  cfg.algo_config.queue_size = 64;
  cfg.augment = algorithms::make_augment(augment::Recipe::cpu_small, train);
  cfg.batch_size = 16;
  cfg.rounds = 2, cfg.model_steps = 2, cfg.noise_batches = 2;
  cfg.diagnose_images = 0;
  cfg.progress_seconds = -1;
  cfg.flow = std::make_shared<MomentumOnly>(w);  // the one line that picks the flow

  poison::PoisonResult res = poison::generate_poison(train, cfg, data, images);
  for (const poison::RoundStats& r : res.history)
    std::printf("round %lld: model loss %.4f, noise loss %.4f\n", (long long)r.round, r.model_loss, r.noise_loss);
  poison::save_poison(out, res.poison);
  std::printf("flow %s: %s-wise poison %s of %lld images written to %s\n", cfg.flow->name().c_str(),
              poison::noise_kind_name(res.poison.kind), res.poison.delta.describe().c_str(), (long long)train.size(),
              out.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "custom_flow: %s\n", e.what());
  return 1;
}
