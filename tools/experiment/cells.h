// The cells of an experiment and how each is run and cached. A preset's table expands into
// poison jobs (one per distinct poison) and victim jobs (one per distinct victim), each with an
// id and a folder results/<preset>/<scale>/<id>/ holding:
//   config.json   every setting that determines the result (compared on every rerun)
//   poison jobs:  poison.h5 (poison::save_poison layout), noise.png, poison.ckpt.h5 while running
//   victim jobs:  victim.h5 (training checkpoint, resumable), victim.jsonl (per-epoch log),
//                 train.json (written when training finished)
//   result.json   written last: its presence marks the cell finished
// A rerun skips finished cells and resumes an unfinished one from its checkpoints (training
// epochs, poison rounds); a cell whose config.json differs from the current settings is an
// Error naming the first differing key, unless redo_changed (then its folder is cleared).
// Images: datasets u8 [N,H,W,C]; batches f32 [B,C,H,W] (B images, C channels, H rows, W columns).
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/learner.h"
#include "engine/progress.h"
#include "engine/data/dataset.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "poison/generate.h"
#include "tools/experiment/preset.h"
#include "tools/experiment/settings.h"

namespace cpoison::tools::experiment {

// ---------------------------------------------------------------- jobs

struct PoisonJob {
  std::string id;
  std::string attack;    // random | cp-s | cp-c | unlearnable | adversarial | aue | aap
  std::string attacker;  // simclr | moco | byol | supervised | none (random)
  std::string kind;      // sample | class
  bool dual_branch = true;
  double eps = 8.0 / 255.0, ratio = 1.0;
  std::string model;     // the attacker's backbone
  DataSettings data;
  std::string init_from;  // id of the poison job whose noise initialises this one ("" = none)
  std::shared_ptr<const PoisonJob> init;  // that job (null = none)
  std::string file;       // attack "file": the poison file given (`cpoison evaluate`)
  nlohmann::json config;  // everything that decides the result (set by make_poison_job)
};

struct VictimJob {
  std::string id;
  std::string algo;       // simclr | moco | byol | supervised
  std::string model;
  DataSettings data;
  std::string poison;     // poison job id ("" = clean data)
  // Train only on the rows a poison at `ratio` would leave clean (the paper's "clean only" row).
  bool clean_only = false;
  double ratio = 1.0;
  std::string defense = "none";  // canonical defense::Defense::spec()
  std::string init;              // the victim's convolution init (settings' victim/supervised init)
  nlohmann::json config;
};

// One table cell's settings, after merging column and row keys and applying defaults.
struct CellSpec {
  std::string victim = "simclr", attack = "none", attacker, kind, model, attacker_model, defense = "none", dataset;
  std::string init;  // "" = the settings' (victim.init / supervised.init)
  std::string start;  // "" = the settings' start of the poison's noise (CellKeys::start)
  bool dual_branch = true;
  double ratio = 1.0, eps = 0;
};
// Column keys, then row keys on top, then the settings' defaults (model, eps, dataset).
// Error naming `where` for combinations that cannot run (a contrastive attack against a
// supervised attacker, an attack on a victim with no attacker, ...).
CellSpec merge_cell(const CellKeys& column, const CellKeys& row, const Settings& s, const std::string& where);

// The table as jobs. grid[r][c] is an index into victims, or -1 for a cell with nothing to
// run (clean-only at ratio 1, computed mean_of rows/columns). Poisons are listed so that a
// poison's init_from comes before it; jobs are deduplicated by id.
struct Plan {
  std::vector<PoisonJob> poisons;
  std::vector<VictimJob> victims;
  std::vector<std::vector<int>> grid;
};
Plan make_plan(const Preset& p);

// Job construction (also used by the demo). The id encodes what differs between jobs of a
// preset; config records everything that decides the result.
// `start` (CellKeys::start; "" = the scale's) names where the noise starts; a start other than
// the scale's adds "-from-<its poison id>" (or "-from-uniform") to the id and the starting
// poison's config to this one's.
PoisonJob make_poison_job(const std::string& attack, const std::string& attacker, const std::string& kind,
                          bool dual_branch, double eps, double ratio, const std::string& model, const DataSettings& data,
                          const Settings& s, const std::string& start = "");
// A poison given as a file instead of generated (`cpoison evaluate`): attack "file", id
// "poison-file-<digest>" (poison::poison_digest, the first 12 digits), so the same noise is the
// same cell wherever the file lies. Its config records the digest, eps, kind, the data
// fingerprint and the data settings, not the path. Running the cell checks the file against
// the training images (fingerprint; an Error naming the file) and copies it into the cell's
// folder, where victims find it as they find a generated poison. Error naming the file when
// it is not a readable poison file.
PoisonJob make_file_poison_job(const std::string& path, const DataSettings& data, const Settings& s);
// The poison generator's configuration of a poison job: the attack's recipe (cpu-small or paper),
// then PoisonSettings' fields the attack reads, then its knob table (poison.cp_c = { ... }).
// `train` gives the image shape and normalisation; seed, eps and ratio are the job's.
poison::PoisonConfig poison_config(const PoisonJob& job, const Settings& s, const data::Dataset& train);
VictimJob make_victim_job(const std::string& algo, const std::string& model, const DataSettings& data,
                                                  const PoisonJob* poison, bool clean_only, double ratio, const std::string& defense,
                          const Settings& s, const std::string& init = "");

// ---------------------------------------------------------------- running

// Throughputs for estimates (CostSettings' fields), measured or from the settings.
struct Rates {
  std::map<std::string, double> per_key;  // "simclr_views_per_s", ... (resnet18-equivalent)
  std::map<std::string, bool> measured;   // true where a finished cell measured the key
};

class Runner {
public:
  struct Options {
    std::string root;        // results/<preset>/<scale>: one folder per job inside
    Device device = Device::cpu;
    std::string data_root;   // directory of the built-in datasets ("" = the usual places)
    bool redo_changed = false;
    double progress_seconds = 10;  // < 0: silent training / generation
  };
  Runner(Settings settings, Options options);

  const Settings& settings() const { return settings_; }
  const Options& options() const { return options_; }

  // The cached result of a finished job, or null (json()) when it is not finished. Error when
  // the folder holds a different configuration and redo_changed is off.
  nlohmann::json cached(const std::string& id, const nlohmann::json& config) const;

  // "done", "partial" (checkpoints of an interrupted run), "pending", or "changed" (the folder
  // holds results of other settings). Never throws for a changed cell.
  std::string status(const std::string& id, const nlohmann::json& config) const;
  // A poison job's: also "changed" when its finished result records other knobs than its
  // settings resolve to now (knobs_change).
  std::string status(const PoisonJob& job) const;
  // "" when a finished poison's recorded knobs ("knobs" in result.json; cells made before the
  // record existed have none and are not checked) are those its settings resolve to now, else
  // the first difference ("knobs.rounds (7 before, 10 now)"): a recipe changed in the code.
  std::string knobs_change(const PoisonJob& job, const nlohmann::json& done) const;

  // Run (or load) a job; returns its result.json content. `poisons` resolves init_from / the
  // victim's poison by id.
  nlohmann::json run_poison(const PoisonJob& job, const std::map<std::string, const PoisonJob*>& poisons);
  nlohmann::json run_victim(const VictimJob& job, const std::map<std::string, const PoisonJob*>& poisons);
  // The linear probe of a freshly initialised encoder on the data (the demo's baseline row),
  // cached under random_encoder_id(model).
  nlohmann::json run_random_encoder(const DataSettings& data, const std::string& model);
  std::string random_encoder_id(const std::string& model) const;
  nlohmann::json random_encoder_config(const DataSettings& data, const std::string& model) const;

  // Estimated seconds of a job at the given rates.
  double estimate(const PoisonJob& job, const Rates& rates);
  double estimate(const VictimJob& job, const Rates& rates);
  // Rates from the settings, replaced by those measured in finished cells under root.
  Rates rates() const;

  // The folder of a job (root/id).
  std::string dir(const std::string& id) const;
  // The poison file a finished poison job wrote.
  std::string poison_path(const std::string& id) const;

  // Datasets, loaded once per DataSettings.
  const data::Dataset& train_set(const DataSettings& d);
  const data::Dataset& test_set(const DataSettings& d);
  int64_t train_size(const DataSettings& d);

private:
  nlohmann::json run_file_poison(const PoisonJob& job);
  std::string prepare(const std::string& id, const nlohmann::json& config);
  Settings settings_;
  Options options_;
  std::map<std::string, data::Dataset> datasets_;
};

// ---------------------------------------------------------------- pieces

// The value a table cell shows for a finished victim result (NaN when absent).
double metric_value(const nlohmann::json& result, Metric m);

// Writes `j` to path atomically (tmp + rename), pretty-printed.
void write_json(const std::string& path, const nlohmann::json& j);
// Writes `text` to path atomically (path.tmp, then renamed); Error naming the path on failure.
void write_text(const std::string& path, const std::string& text);
nlohmann::json read_json(const std::string& path);

}  // namespace cpoison::tools::experiment
