// What long runs print and log about their progress: one progress line and one JSONL schema for
// every run that counts units of work (training epochs, poison rounds), so the rate, the ETA and
// the logs look the same everywhere (training, poisoning, the victims and poisons of the
// experiment runner); times in engine/progress.h's format_duration.
//
// The progress line, on stderr:
//   [TAG] UNIT i/N[ step s/S]  METRICS  RATE RATE_UNIT[  SECONDSs/UNIT]  ETA DURATION
// e.g. "[simclr] epoch 3/30 step 5/19  loss 5.1234  lr 0.30000  1204 img/s  ETA 4m10s" within an
// epoch and "[poison cp-c] round 2/10  model loss 4.6166  noise loss 4.7064  346 views/s
// 9.0s/round  ETA 1m12s" at a unit's end. The ETA is this call's elapsed time per unit of work
// done (fractions of a unit count: step s of S is s/S), times the work left.
//
// The JSONL log, one object per finished unit, keys in this order:
//   "run"        what runs: "train", "poison"
//   "unit"       what it counts: "epoch", "round"
//   <unit>       the unit just finished, 1-based ("epoch": 3)
//   <unit>s      the run's total ("epochs": 30)
//   "seconds"    the unit's wall time
//   "elapsed"    this call's wall time so far (a resumed run counts from its start)
//   "eta"        seconds left (null when unknown)
//   "rate", "rate_unit"   the unit's throughput ("img/s": images through the step; "views/s":
//                augmented views through the model)
//   then the run's own metrics (training: steps, loss, lr, images_per_s, algo, model; poison:
//   model_loss, noise_loss, probe_loss_poisoned, probe_loss_clean, views_per_s, attack, algo).
// A resumed run keeps the lines of the units its checkpoint holds (<unit> <= start) and rewrites
// the rest.
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>

#include "engine/progress.h"

namespace cpoison {

class Progress {
public:
  struct Options {
    std::string run;        // the log's "run": "train", "poison"
    std::string tag;        // the line's "[tag]": "simclr", "poison cp-c"
    std::string unit;       // "epoch", "round"
    std::string rate_unit;  // "img/s", "views/s"
    int64_t total = 0;      // units of the whole run
    int64_t start = 0;      // units done before this call (a resumed run)
    // Seconds between lines within a unit (step) and, unless every_unit, at units' ends (the
    // first and the last unit of a call always print); < 0: no line at all.
    double seconds = 10;
    bool every_unit = true;  // a line at every unit's end
    std::string log_path;    // JSONL log ("" = none); opened, and pruned on resume, by the constructor
  };
  // Error naming the file when the log cannot be opened.
  explicit Progress(Options options);

  bool quiet() const { return opt_.seconds < 0; }
  // A plain line ("[tag] " + text) unless quiet.
  void note(const std::string& text) const;
  // Unit `unit` (0-based) begins: its clock starts.
  void begin_unit(int64_t unit);
  // Seconds since the current unit began.
  double unit_seconds() const;
  // Within the current unit: step `step` of `steps` finished (1-based), `items` counted in
  // rate_unit since the unit began. Prints a line when `seconds` have passed since the last one,
  // never after the unit's last step (unit_done prints then).
  void step(int64_t step, int64_t steps, double items, const std::string& metrics);
  // The same, with the metrics formatted only when a line is printed (the training loop calls
  // this every step).
  void step(int64_t step, int64_t steps, double items, const std::function<std::string()>& metrics);
  // The current unit finished after `unit_seconds` (unit_seconds()), with `items` counted in
  // rate_unit: a line (see Options) and a log line of the common keys followed by `fields`.
  void unit_done(double unit_seconds, double items, const std::string& metrics, const nlohmann::ordered_json& fields);

private:
  using Clock = std::chrono::steady_clock;
  double elapsed() const;
  // Seconds left after `work_done` units of this call (fractional), NaN before any work.
  double eta(double work_done) const;
  void print(const std::string& position, const std::string& metrics, double rate, double unit_seconds, double eta);

  Options opt_;
  Clock::time_point start_, last_print_, unit_start_;
  int64_t unit_ = 0;  // the current unit, 0-based
  std::ofstream log_;
};

}  // namespace cpoison
