// `cpoison detect FILE`: does a training set look poisoned?
//
// (a) Fit speed, after Zhu et al., "Detection and defense of unlearnable examples" (hala64/udp):
//     availability poisons work by being easier to fit than the real features (a shortcut), so
//     simple models fit poisoned labels faster. We train a linear model and a two-layer network
//     (ReLU hidden layer) on the flattened, high-passed training images and their labels for a
//     fixed small budget (epochs of SGD), and score the training accuracy (%) they reach; the
//     score is the larger of the two (either model may be the one the shortcut suits: a
//     class-wise pattern is linear, other noise may not be). The threshold is not fixed: it is
//     calibrated on the clean dataset the poison was made for (the same images, unpoisoned), by
//     the same scoring with several seeds: threshold = mean + k * max(sd, min_sd) of the clean
//     scores. The verdict is "poisoned" when the score exceeds the threshold.
// (b) For contrastive poisons (poison files only: it needs the clean images too): the alignment
//     gap of short SimCLR runs, alignment on clean views minus alignment on poisoned views of
//     the same augmentations (algorithms::alignment), as experiment cells (cached). A poison that
//     gives SimCLR a shortcut makes its poisoned views align far better than their clean ones.
//     Calibrated the same way on uniform sample-wise noise of the same eps (a perturbation with
//     no shortcut), one run per seed; the poison's score is the mean over the same seeds.
// Images: datasets u8 [N,H,W,C]; the models see x [N, D] with D = H*W*C (normalised).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/data/dataset.h"
#include "engine/tensor.h"

namespace cpoison::tools::experiment {

struct FitSpeedOptions {
  int64_t epochs = 2;          // the fixed budget: passes of SGD over the images
  int64_t batch_size = 64;
  double lr = 0.01;
  double momentum = 0.9;
  int64_t hidden = 128;        // the two-layer network's hidden units
  int64_t max_images = 5000;   // larger sets are scored on a seeded random subset of this size
  // What the models see: "highpass" (each pixel minus the mean of its 3x3 neighbourhood, scaled
  // to unit mean square) or "pixels" (standardised by the data's constants). High-pass is the
  // default: it keeps pixel-level noise and removes most of the smooth image content that a
  // linear model also fits quickly, so that clean data fit slower and the poison stands out
  // (on Fashion-MNIST, 500 images, 2 epochs: pattern 87.6 / random class-wise 89.4 against clean
  // 79.2 ± 1.8 high-passed; 81.6 / – against 75.9 ± 2.0 on pixels, docs/evaluate.md).
  std::string input = "highpass";
};

struct FitSpeedScore {
  double linear = 0;  // training accuracy (%) of the linear model after the budget
  double mlp = 0;     // the same for the two-layer network
  double score = 0;   // max(linear, mlp)
  int64_t images = 0;
};

// Trains both models on ds (its labels) with `seed` (initial weights, batch order, subset) and
// returns their training accuracies. Deterministic for a seed. Error naming the dataset when it
// is empty or has unlabelled rows.
FitSpeedScore fit_speed_score(const data::Dataset& ds, const FitSpeedOptions& options, uint64_t seed);

// A threshold from scores of clean data: mean + k * max(sd, min_sd) (sd: sample standard
// deviation; one score has sd 0, so min_sd sets the margin). Error when `clean` is empty.
struct Calibration {
  double mean = 0, sd = 0, max = 0, threshold = 0;
  int64_t n = 0;
};
Calibration calibrate_threshold(const std::vector<double>& clean_scores, double k, double min_sd);

struct DetectOptions {
  std::string file;             // a poison file, or a dataset file (then `reference` is required)
  std::string reference;        // dataset input: the clean dataset (name or file) to calibrate on
  int64_t reference_subset = 0;
  int64_t reference_subset_seed = 0;
  std::string data_root;
  FitSpeedOptions fit;
  uint64_t seed = 0;            // the scoring seed of the data under test
  int64_t calibration_seeds = 5;  // clean scores with seeds 1000, 1001, ...
  double k = 3.0;
  double min_sd = 1.0;          // points of accuracy
  // (b): the alignment gap (poison files only); off by default: it trains 2 x seeds SimCLR runs.
  bool alignment = false;
  std::string scale = "cpu-small", presets, cache = "results/detect-cells";
  int64_t simclr_epochs = 10;
  std::vector<uint64_t> alignment_seeds = {0, 1, 2};
  Device device = Device::cpu;
  double progress_seconds = -1;
  std::string out;              // "" = results/detect/<file stem>; table.md and result.json
  bool write = true;
};

struct DetectReport {
  std::string out, markdown;
  nlohmann::json json;
  bool poisoned = false;  // the verdict: any test says poisoned
};

DetectReport run_detect(const DetectOptions& options);

}  // namespace cpoison::tools::experiment
