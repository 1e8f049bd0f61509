// `cpoison evaluate FILE`: the victim battery on one poison file (ours, e.g. from `cpoison
// poison` or `cpoison import --as poison`) or on a dataset file (no poison). Each victim
// (supervised, SimCLR, MoCo v2, BYOL) trains at a scale of tools/presets/scales.toml with each
// seed, as experiment cells (cells.h: cached, resumable) planned by run_experiment: the poison
// is a "file" poison job, and the clean reference is the same victims on the clean data the
// poison was made for (cells too, so they are shared by every poison of that data and scale).
// The table gives per victim mean ± sd (n seeds), the lowest victim (the worst case for the
// data's user), the mean over victims, for the poison and the clean reference.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "tools/experiment/settings.h"

namespace cpoison::tools::experiment {

struct EvaluateOptions {
  std::string file;                  // a poison file (/delta) or a dataset file (/images)
  std::string scale = "cpu-small";   // a scale of scales.toml
  std::string presets;               // the folder of scales.toml ("" = presets_dir's search)
  std::vector<std::string> victims = {"supervised", "simclr", "moco", "byol"};
  std::vector<uint64_t> seeds = {0};
  std::string probe_data = "poisoned";  // poisoned | clean: the images the linear probe is fitted on
  std::string probe_epoch = "final";    // final | best: the probe's last epoch or its best (SGD probe)
  std::string out;                   // table.md and result.json ("" = results/evaluate/<file stem>)
  std::string cache = "results/evaluate-cells";  // cells under CACHE/<scale>/seed-K/
  std::string data_root;
  int64_t subset = -1;               // dataset input: class-balanced training images (-1: all; 0: all)
  bool dry_run = false;
  bool redo_changed = false;
  Device device = Device::cpu;
  double progress_seconds = 10;
  bool quiet = false;
};

struct EvaluateReport {
  std::string out;                   // where table.md and result.json were written (not on a dry run)
  std::string cells_root;            // CACHE/<scale>
  int64_t cells = 0, ran = 0, skipped = 0, remaining = 0;
  double estimated_seconds = 0;      // dry run: the unfinished cells' estimate
  std::vector<std::string> listing;  // dry run: one line per cell
  std::string markdown;
  nlohmann::json json;
};

// Runs (or, with dry_run, lists) the battery. Errors name the file or the option: a missing
// file, a file that is neither a poison nor a dataset, a poison whose data fingerprint differs
// from the data it records, an unknown victim, probe protocol or scale.
EvaluateReport run_evaluate(const EvaluateOptions& options);

// The accuracy (%) a table cell shows for a finished victim result: a contrastive victim's
// linear probe fitted on the poisoned ("poisoned") or clean ("clean") training images, at its
// final or best epoch ("best": the SGD probe's best test accuracy over its epochs; the L-BFGS
// probe has one answer, so best = final); a supervised victim's own test accuracy (final: the
// runner measures only the trained model). NaN when the result lacks the value.
double evaluate_accuracy(const nlohmann::json& victim_result, const std::string& probe_data,
                         const std::string& probe_epoch);

// Mean, sample sd (NaN for n < 2) and n of the finite values of xs.
struct SeedStat {
  double mean, sd;
  int n;
};
SeedStat seed_stat(const std::vector<double>& xs);

// "87.5 ± 0.4 (3)", "87.2 (1)" (one seed: no sd), "–" (no value).
std::string format_seed_stat(const SeedStat& s);

// The victims' labels as the tables name them: supervised -> "Supervised", simclr -> "SimCLR",
// moco -> "MoCo v2", byol -> "BYOL"; Error naming --victims for other names.
std::string victim_label(const std::string& victim);

}  // namespace cpoison::tools::experiment
