// `cpoison demo` (`make demo`): contrastive poisoning end to end on Fashion-MNIST at the
// cpu-scale reference's settings, scaled to a 15-minute budget on 2 cores; prints a Markdown
// table and writes results/demo/ (table.md, summary.json, the poison files and noise pictures).
//   cpoison demo                       the default schedule (fits 15 minutes on 2 cores)
//   cpoison demo --images 5000 --victim-epochs 30 --supervised-epochs 15 --cp-s-rounds 12
//                                      the reference's schedule (about 30 minutes on 2 cores)
//   cpoison demo --quick               a tiny smoke run
#include <memory>

#include "models/encoder.h"
#include "tools/command.h"
#include "tools/common.h"
#include "tools/experiment/demo.h"

namespace {

using namespace cpoison;
using cpoison::tools::experiment::DemoOptions;

// A multiplier of every epoch and round count (the defaults already fit 15 minutes on 2 cores).
constexpr double kDefaultScale = 1.0;

void setup(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  auto eps = std::make_shared<std::string>("8/255");
  auto device = std::make_shared<std::string>("cpu");
  o->scale = kDefaultScale;
  app.add_option("--out", o->out, "Output folder")->capture_default_str();
  app.add_option("--data", o->data, "Dataset (built-in name or HDF5 dataset file)")->capture_default_str();
  app.add_option("--data-root", o->data_root, "Directory of the dataset's files");
  app.add_option("--images", o->images, "Class-balanced training images (the reference: 5000)")->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--test-images", o->test_images, "First N test images (0: all 10000)")->check(tools::int_range(0, kMaxAxis))->capture_default_str();
  app.add_option("--width", o->width, "ResNet-18 base width")->check(tools::int_range(1, models::kMaxWidth))->capture_default_str();
  app.add_option("--scale", o->scale,
                 "Multiplier of every epoch and round count below (rounded, at least 1)")
      ->check(tools::in_range({0, 1000, true, false}))->capture_default_str();
  app.add_option("--victim-epochs", o->victim_epochs, "SimCLR victim epochs (the reference: 30)")->check(tools::int_range(1, tools::kMaxEpochs))->capture_default_str();
  app.add_option("--supervised-epochs", o->supervised_epochs, "Supervised victim epochs (the reference: 15 of 5000 images)")->check(tools::int_range(1, tools::kMaxEpochs))->capture_default_str();
  app.add_option("--cp-c-rounds", o->cp_c_rounds, "CP-C rounds (the reference: 10 for the supervised victim, 30 for SimCLR)")->check(tools::int_range(1, tools::kMaxEpochs))->capture_default_str();
  app.add_option("--cp-s-rounds", o->cp_s_rounds, "CP-S rounds (the reference: 12)")->check(tools::int_range(1, tools::kMaxEpochs))->capture_default_str();
  app.add_option("--cp-s-init", o->cp_s_init, "CP-S starts from uniform noise or from the CP-C poison (the reference's N = 1000 protocol)")
      ->check(CLI::IsMember({"uniform", "cp-c"}))
      ->capture_default_str();
  app.add_option("--eps", *eps, "L-infinity radius (8/255, 16/255, 0.05, ...)")->check(tools::fraction_range({0, 1, true, false}))->capture_default_str();
  app.add_option("--class-attack", o->class_attack,
                 "Class-wise attack shown against the supervised victim: cp-c, random-class, pattern, ue-class, aue-class")
      ->capture_default_str();
  app.add_option("--contrastive-attack", o->contrastive_attack,
                 "Attack shown against the SimCLR victim: pattern, cp-s, cp-c, aue, aue-class, aap, ue, ue-class, random-class")
      ->capture_default_str();
  app.add_option("--cross-victim", o->cross_victim,
                 "Also train a SimCLR victim on the class-wise attack's data: auto (if the budget allows), yes, no")
      ->check(CLI::IsMember({"auto", "yes", "no"}))
      ->capture_default_str();
  app.add_option("--budget-minutes", o->budget_minutes, "Time budget (per seed) that decides --cross-victim auto")
      ->check(tools::real_range(0, 1e9))
      ->capture_default_str();
  app.add_flag("--quick", o->quick, "A tiny smoke run (200 images, width 4, one epoch/round per stage)");
  app.add_flag("--fresh", o->fresh, "Discard the demo's cached stages first");
  app.add_option("--seed", o->seed, "Seed of everything")->capture_default_str();
  app.add_option("--seeds", o->seeds,
                 "Run the demo once per seed (e.g. 0,1,2; stages in OUT/seed-K/): the table gives mean ± sd, the checks "
                 "are made per seed")
      ->delimiter(',');
  app.add_option("--device", *device, "cpu | cuda")->capture_default_str();
  app.add_option("--progress-seconds", o->progress_seconds, "Seconds between progress lines (< 0: quiet)")
      ->check(tools::real_range(-1e9, 1e9))->capture_default_str();
  app.callback([o, eps, device] {
    o->eps = tools::parse_fraction(*eps, "--eps");
    o->device = tools::parse_device(*device);
    tools::experiment::run_demo(*o);
  });
}

}  // namespace
CPOISON_COMMAND(demo, "End-to-end demo on Fashion-MNIST: poisons, victims, probes, alignment; writes results/demo/", setup);
