// `cpoison demo`: availability poisoning end to end at docs/cpu-scale-reference.md's settings
// (Fashion-MNIST, N class-balanced training images, width-8 ResNet-18, batch 256), scaled to
// fit a time budget on 2 CPU cores. Stages, each timed and cached like an experiment cell
// (results/demo/<cell>/, or results/demo/seed-K/<cell>/ with several seeds), so a killed demo
// resumes where it stopped:
//   random-init encoder probe; the class-wise attack (against the supervised victim), the
//   contrastive attack (against the SimCLR victim) and uniform noise; supervised victims on
//   clean, uniform-noise and class-wise-poisoned data; SimCLR victims on clean, uniform-noise
//   and contrastive-poisoned data, each linear-probed (poisoned and clean probe) and measured
//   for alignment on poisoned vs clean views; then the acceptance checks, per seed.
// Writes results/demo/table.md (also printed) and results/demo/summary.json: per seed every
// value and check, and over the seeds mean ± sd.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpoison::tools::experiment {

// An attack of the demo by name: the poison job's attack, attacker and noise shape.
struct DemoAttack {
  std::string name;      // the demo's name for it (below)
  std::string attack;    // a poison job's attack (cp-c, cp-s, random, unlearnable, ...)
  std::string attacker;  // simclr | supervised | none
  std::string kind;      // class | sample
  std::string label;     // for the table
};
// cp-c, cp-s (from the CP-C poison), random-class, pattern, ue-class, ue, aue-class, aue, aap;
// Error listing them otherwise.
DemoAttack demo_attack(const std::string& name);

struct DemoOptions {
  std::string out = "results/demo";
  std::string data = "fashion-mnist";  // or an HDF5 dataset file
  std::string data_root;
  // The defaults fit 15 minutes on 2 cores (README, "The demo").
  int64_t images = 2000;        // class-balanced training images
  int64_t test_images = 0;      // first N test images (0: all)
  int64_t width = 8;
  // Schedules, before `scale` (the reference: 30, 15, 10, 12).
  // SimCLR victims train 80 epochs: the pattern attack costs no generation time, and the drop it
  // causes grows with the victim's length (docs/experiments.md, "The contrastive attack").
  int64_t victim_epochs = 80, supervised_epochs = 40, cp_c_rounds = 10, cp_s_rounds = 20;
  // Fraction applied to every epoch and round count above (rounded, at least 1).
  double scale = 1.0;
  double eps = 8.0 / 255.0;
  std::string cp_s_init = "cp-c";  // or "uniform" (the reference's N = 5000 protocol)
  // The attacks shown (demo_attack names): the class-wise one against the supervised victim,
  // the contrastive one against the SimCLR victim. The defaults are the strongest of each kind
  // found at this scale (docs/experiments.md, "What the attacks do at cpu-small"): class-wise
  // error-minimising noise against the supervised victim; against SimCLR the class-wise
  // gratings (`pattern`), the only attack tried that moves its (poisoned) probe beyond the
  // seeds' spread (its encoder's clean probe stays near the clean victim's).
  std::string class_attack = "ue-class";
  std::string contrastive_attack = "pattern";
  // The SimCLR victim on the class-wise attack's data runs when the time so far plus its
  // estimate fits the budget ("auto"), always ("yes") or never ("no").
  std::string cross_victim = "auto";
  double budget_minutes = 15;
  bool quick = false;  // a tiny run for tests: 200 images, width 4, 1 epoch / round everywhere
  bool fresh = false;  // discard the demo's cached stages first
  uint64_t seed = 0;
  // Several seeds: each runs every stage in out/seed-K/; the table gives mean ± sd and the
  // checks per seed. Empty: `seed` alone, stages directly in out/.
  std::vector<uint64_t> seeds;
  Device device = Device::cpu;
  double progress_seconds = 10;  // < 0: no progress lines (stages and training)
  bool print = true;              // print the table on stdout
};

// Runs the demo and returns summary.json's content. Errors from a stage propagate.
nlohmann::json run_demo(const DemoOptions& options);

}  // namespace cpoison::tools::experiment
