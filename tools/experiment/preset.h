// Experiment presets: TOML files that lay out one of the paper's tables as rows x columns of
// cells, each cell a victim trained on (possibly poisoned, possibly defended) data, at a named
// scale. tools/presets/scales.toml holds the settings shared by every preset per scale; a
// preset's [scale.NAME] table overrides them and may replace its rows/columns. The format is
// described in docs/experiments.md; in short:
//
//   title = "Table 1: ..."
//   metric = "probe"                      # what a cell shows (see Metric)
//   columns = [ { label = "SimCLR", victim = "simclr" }, ... ]
//   rows = [ { label = "None", attack = "none" }, { label = "CP (S)", attack = "cp-s" }, ... ]
//   [scale.cpu-small]                     # settings overrides (settings.h), e.g.
//   victim.epochs = 10
//   [scale.paper]
//   columns = [ ... ]                     # a scale may replace rows or columns
//
// A cell's keys are the column's, then the row's on top (a row wins where both set a key).
// Loading is strict: an unknown key, a value of the wrong type or an unknown value (attack
// "cp-x") is an Error naming the file, the key ("rows[2].attack", "scale.paper.victim.epochs")
// and, for TOML syntax errors, the line.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "tools/experiment/settings.h"

namespace cpoison::tools::experiment {

// The keys a row or column may set; unset keys take the defaults of CellSpec (cells.h).
struct CellKeys {
  std::optional<std::string> victim;          // simclr | moco | byol | supervised
  std::optional<std::string> attack;          // none | random | cp-s | cp-c | unlearnable | adversarial | aue | aap | clean-only
  std::optional<std::string> attacker;        // the attacker's algorithm ("" / unset: the victim's)
  std::optional<std::string> kind;            // sample | class (random / unlearnable / aue / aap noise)
  std::optional<bool> dual_branch;            // attacker's dual-branch gradient (default true)
  std::optional<double> ratio;                // poisoned fraction (clean-only: the fraction left out)
  std::optional<double> eps;                  // overrides poison.eps
  std::optional<std::string> model;           // the victim's backbone
  std::optional<std::string> attacker_model;  // the attacker's backbone
  std::optional<std::string> defense;         // a defense::parse_defense specification
  std::optional<std::string> dataset;         // overrides data.dataset
  std::optional<std::string> init;            // the victim's convolution init (kaiming-fan-out | pytorch)
  // Where a cp-s / cp-c poison's noise starts: "uniform", or the poison of another attack of
  // the same images, "ATTACK" or "ATTACK:sample|class" ("aue": AUE -> CP-S). Unset: the
  // scale's (poison.cp_s_init for CP-S, uniform otherwise).
  std::optional<std::string> start;
};

// A cell's start (CellKeys::start) split into the attack whose poison it starts from and that
// poison's kind ("" when not given); {"uniform", ""} for "uniform". Error(where, ...) for a text
// that is not uniform or ATTACK[:sample|class] with an attack that makes a poison.
struct PoisonStart {
  std::string attack, kind;
};
PoisonStart parse_start(const std::string& text, const std::string& where);

// One row or column of the table.
struct Axis {
  std::string label;
  CellKeys keys;
  // A computed column/row: the mean of the cells of the entries with these labels.
  std::vector<std::string> mean_of;
  // The paper's numbers for this row, one per column (NaN: none); rows only.
  std::vector<double> paper;
  // A computed column/row: the largest value of the cells of the entries with these labels
  // (for victim accuracies: an attack's worst case, the victim it hurts least).
  std::vector<std::string> max_of;
  // A computed column: the seconds the row's poison took to generate (with the poison it
  // started from, for a chained attack).
  bool poison_seconds = false;
  bool computed() const { return !mean_of.empty() || !max_of.empty() || poison_seconds; }
};

enum class Metric { probe, clean_probe, align_poisoned, align_clean, align_gap };
Metric parse_metric(const std::string& s, const std::string& where);  // Error listing the names
const char* metric_name(Metric m);

struct Preset {
  std::string name;   // file stem ("table1")
  std::string file;   // the TOML file read
  std::string title;  // the table's caption
  std::string note;   // an extra line under the table (may be empty)
  std::string corner = "Attack";  // the header above the row labels
  Metric metric = Metric::probe;
  std::vector<std::string> scales;  // the scales the file defines, sorted by name
  std::string scale;                // the one loaded
  Settings settings;                // defaults < scales.toml [scale] < the preset's [scale.NAME]
  std::vector<Axis> rows, columns;
};

// Where presets live: `dir` when not empty, else $CPOISON_PRESETS, else the first of
// ./tools/presets and <the executable's folder>/../tools/presets that exists. Error listing the
// places tried.
std::string presets_dir(const std::string& dir = "");

// Loads a preset by name (tools/presets/NAME.toml) or by path (anything ending in .toml) at
// `scale`, with scales.toml read from the preset's folder, or else from presets_dir(dir) (when
// either exists). Validates the
// settings and every row and column (names, values, mean_of labels, paper lengths).
Preset load_preset(const std::string& name_or_path, const std::string& scale, const std::string& dir = "");

// Loads only the settings of `scale` from scales.toml in `dir` (the demo's and tests' entry).
// Error when the scale is absent.
Settings load_scale_settings(const std::string& scale, const std::string& dir = "");

// The preset names (file stems) in a presets folder, sorted, scales.toml excluded.
std::vector<std::string> list_presets(const std::string& dir = "");

}  // namespace cpoison::tools::experiment
