// Running a preset: its plan (cells.h) in dependency order, skipping finished cells, with a
// progress line per cell (estimate, remaining time, finish time), then the table as Markdown
// laid out like the paper's and as JSON, written to results/<preset>/<scale>/table.md and
// results.json. A dry run lists the cells, their state and estimated cost instead.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "tools/experiment/cells.h"
#include "tools/experiment/preset.h"

namespace cpoison::tools::experiment {

struct ExperimentOptions {
  std::string results = "results";  // the cells go to results/<preset>/<scale>/
  bool dry_run = false;
  Device device = Device::cpu;
  std::string data_root;
  bool redo_changed = false;
  double progress_seconds = 10;
  int64_t max_cells = 0;  // > 0: stop after running this many cells (finished ones do not count)
  // Seeds to run every cell with (each in RESULTS/PRESET/SCALE/seed-K/); empty: the scale's seed,
  // cells directly in RESULTS/PRESET/SCALE/. Tables then give mean ± sd over the seeds.
  std::vector<uint64_t> seeds;
  bool quiet = false;     // no per-cell lines on stderr
  // The plan of the preset at one seed's settings; unset: make_plan. `cpoison evaluate` plans
  // cells that no preset row can name (a poison given as a file).
  std::function<Plan(const Preset&)> plan;
  // Write table.md and results.json into the cells' folder (off when the caller renders and
  // writes its own table elsewhere, as `cpoison evaluate` does).
  bool save_tables = true;
};

struct ExperimentReport {
  std::string root;          // results/<preset>/<scale>
  int64_t cells = 0;         // jobs in the plan (poisons + victims)
  int64_t ran = 0;           // run by this call
  int64_t skipped = 0;       // finished before this call
  int64_t remaining = 0;     // not finished after this call
  double estimated_seconds = 0;  // dry run: the unfinished cells' estimate; else this call's
  std::vector<std::string> listing;  // dry run: one line per cell
  std::string markdown;      // the table (pending cells shown as "…")
  nlohmann::json json;       // results.json's content
};

// Runs (or with dry_run, lists) every cell of the preset's plan. Errors from a cell propagate
// (its finished neighbours stay cached).
ExperimentReport run_experiment(const Preset& preset, const ExperimentOptions& options);

// One seed's results: victims[i] for plan.victims[i], poisons[i] for plan.poisons[i] (null when
// not finished; poisons may be empty when no column needs them).
struct SeedResults {
  uint64_t seed = 0;
  std::vector<nlohmann::json> victims, poisons;
};

// The Markdown table: each cell the mean ± sd over the seeds (a bare value for one seed, which
// the caption says), computed columns and rows (mean_of, max_of, poison_seconds) per seed first.
std::string render_markdown(const Preset& preset, const Plan& plan, const std::vector<SeedResults>& seeds);
std::string render_markdown(const Preset& preset, const Plan& plan, const std::vector<nlohmann::json>& results);
// The JSON form of the same table: per row values (means), sd, n and per_seed, and every
// finished cell's result (by seed when there are several).
nlohmann::json render_json(const Preset& preset, const Plan& plan, const std::vector<SeedResults>& seeds);
nlohmann::json render_json(const Preset& preset, const Plan& plan, const std::vector<nlohmann::json>& victim_results,
                           const std::vector<nlohmann::json>& poison_results);

// One line summarising the settings of a scale (for captions).
std::string describe_settings(const Settings& s);

}  // namespace cpoison::tools::experiment
