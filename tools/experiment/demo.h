// `cpoison demo`: contrastive poisoning end to end at docs/cpu-scale-reference.md's settings
// (Fashion-MNIST, N class-balanced training images, width-8 ResNet-18, batch 256), scaled to
// fit a time budget on 2 CPU cores. Stages, each timed and cached like an experiment cell
// (results/demo/<cell>/), so a killed demo resumes where it stopped:
//   random-init encoder probe; CP-C and CP-S poisons from a SimCLR attacker; uniform noise;
//   supervised victims on clean and CP-C data; SimCLR victims on clean, uniform-noise and CP-S
//   data (and CP-C when the budget allows), each linear-probed (poisoned and clean probe) and
//   measured for alignment on poisoned vs clean views.
// Writes results/demo/table.md (also printed) and results/demo/summary.json.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace cpoison::tools::experiment {

struct DemoOptions {
  std::string out = "results/demo";
  std::string data = "fashion-mnist";  // or an HDF5 dataset file
  std::string data_root;
  // The defaults fit 15 minutes on 2 cores (README, "The demo"): the reference's protocol with
  // 2000 images instead of 5000, SimCLR victims 20 epochs instead of 30, CP-S 20 rounds started
  // from the CP-C poison instead of 12 from uniform noise (8 rounds left no alignment gap), and
  // supervised victims 40 epochs of 2000 images (625 steps) instead of 15 of 5000.
  int64_t images = 2000;        // class-balanced training images
  int64_t test_images = 0;      // first N test images (0: all)
  int64_t width = 8;
  // Schedules, before `scale` (the reference: 30, 15, 10, 12).
  int64_t victim_epochs = 20, supervised_epochs = 40, cp_c_rounds = 10, cp_s_rounds = 20;
  // Fraction applied to every epoch and round count above (rounded, at least 1).
  double scale = 1.0;
  double eps = 8.0 / 255.0;
  std::string cp_s_init = "cp-c";  // or "uniform" (the reference's N = 5000 protocol)
  // The SimCLR victim on CP-C data runs when the time so far plus its estimate fits the budget
  // ("auto"), always ("yes") or never ("no").
  std::string cp_c_victim = "auto";
  double budget_minutes = 15;
  bool quick = false;  // a tiny run for tests: 200 images, width 4, 1 epoch / round everywhere
  bool fresh = false;  // discard the demo's cached stages first
  uint64_t seed = 0;
  Device device = Device::cpu;
  double progress_seconds = 10;  // < 0: no progress lines (stages and training)
  bool print = true;              // print the table on stdout
};

// Runs the demo and returns summary.json's content. Errors from a stage propagate.
nlohmann::json run_demo(const DemoOptions& options);

}  // namespace cpoison::tools::experiment
