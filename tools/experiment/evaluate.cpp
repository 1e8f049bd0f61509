#include "tools/experiment/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>

#include "engine/error.h"
#include "engine/io/hdf5.h"
#include "poison/apply.h"
#include "tools/common.h"
#include "tools/experiment/inputs.h"
#include "tools/experiment/runner.h"

namespace cpoison::tools::experiment {

namespace fs = std::filesystem;

std::string victim_label(const std::string& v) {
  if (v == "supervised") return "Supervised";
  if (v == "simclr") return "SimCLR";
  if (v == "moco") return "MoCo v2";
  if (v == "byol") return "BYOL";
  fail("--victims", "unknown victim '", v, "' (supervised, simclr, moco, byol)");
}

double evaluate_accuracy(const nlohmann::json& r, const std::string& probe_data, const std::string& probe_epoch) {
  const double nan = std::nan("");
  auto number = [&](const char* section, const std::string& key) -> double {
    if (!r.is_object() || !r.contains(section) || !r[section].is_object()) return nan;
    const auto& s = r[section];
    return s.contains(key) && s[key].is_number() ? s[key].get<double>() : nan;
  };
  if (r.is_object() && r.contains("supervised")) return number("supervised", "test_accuracy");
  if (probe_epoch == "best") {
    // The SGD probe records its best epoch; the L-BFGS probe has one answer (best = final).
    const double best = number("probe", probe_data + "_best");
    if (!std::isnan(best)) return best;
  }
  return number("probe", probe_data);
}

SeedStat seed_stat(const std::vector<double>& xs) {
  SeedStat s{std::nan(""), std::nan(""), 0};
  double sum = 0;
  for (double x : xs)
    if (std::isfinite(x)) sum += x, ++s.n;
  if (s.n == 0) return s;
  s.mean = sum / s.n;
  if (s.n > 1) {
    double ss = 0;
    for (double x : xs)
      if (std::isfinite(x)) ss += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(ss / (s.n - 1));
  }
  return s;
}

std::string format_seed_stat(const SeedStat& s) {
  if (s.n == 0) return "–";
  char buf[64];
  if (s.n == 1) std::snprintf(buf, sizeof buf, "%.1f (1)", s.mean);
  else std::snprintf(buf, sizeof buf, "%.1f ± %.1f (%d)", s.mean, s.sd, s.n);
  return buf;
}

namespace {

// What FILE is: a poison file (it has /delta) or a dataset file (/images, or /train/images).
enum class Input { poison, dataset };

Input classify_input(const std::string& file) {
  CP_CHECK(!file.empty(), "evaluate", "give the poison or dataset file to evaluate");
  std::error_code ec;
  CP_CHECK(fs::exists(file, ec), file, "does not exist");
  CP_CHECK(fs::is_regular_file(file, ec), file, "is not a file (a poison file or a dataset file, HDF5)");
  io::H5Reader r(file);
  if (r.has("delta")) return Input::poison;
  if (r.has("images") || r.has("train/images")) return Input::dataset;
  fail(file, "is neither a poison file (no /delta) nor a dataset file (no /images or /train/images)");
}

// Lower-case letters, digits and '-' (a folder name).
std::string folder_name(const std::string& s) {
  std::string out;
  for (char ch : s) {
    char c = (char)std::tolower((unsigned char)ch);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) out += c;
    else if (!out.empty() && out.back() != '-') out += '-';
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "data" : out;
}

// The settings a battery's cells depend on, in one line (describe_settings also names the
// poison recipes, which an evaluation does not use).
std::string battery_settings(const Settings& s, const DataSettings& data) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s; %s width %lld; contrastive victims %lld epochs (batch %lld), supervised %lld epochs (batch %lld); "
                "probe %s",
                data_options(data, "").describe().c_str(), s.model.c_str(), (long long)s.width, (long long)s.victim.epochs,
                (long long)s.victim.batch_size, (long long)s.supervised.epochs, (long long)s.supervised.batch_size,
                s.eval.probe == "features" ? "L-BFGS on standardised features" : "SGD (the spec's)");
  return buf;
}

// A table row or column of that label (its cells are planned by run_evaluate, not by keys).
Axis axis(const std::string& label) {
  Axis a;
  a.label = label;
  return a;
}

}  // namespace

EvaluateReport run_evaluate(const EvaluateOptions& o) {
  CP_CHECK(!o.victims.empty(), "--victims", "name at least one victim (supervised, simclr, moco, byol)");
  {
    std::set<std::string> seen;
    for (const auto& v : o.victims) {
      (void)victim_label(v);
      CP_CHECK(seen.insert(v).second, "--victims", "victim '", v, "' is listed twice");
    }
  }
  CP_CHECK(!o.seeds.empty(), "--seeds", "give at least one seed");
  CP_CHECK(o.probe_data == "poisoned" || o.probe_data == "clean", "--probe-data", "must be poisoned or clean, not '",
           o.probe_data, "'");
  CP_CHECK(o.probe_epoch == "final" || o.probe_epoch == "best", "--probe-epoch", "must be final or best, not '",
           o.probe_epoch, "'");
  const Input input = classify_input(o.file);

  Settings s = load_scale_settings(o.scale, o.presets);
  // The clean probe is part of every contrastive cell's result only when the scale asks for it.
  if (o.probe_data == "clean") s.eval.clean_probe = true;

  // The data: the poison's own (as recorded by `cpoison poison` / `cpoison import`), or the
  // dataset file itself.
  DataSettings data = s.data;
  poison::Poison made;
  if (input == Input::poison) {
    made = poison::load_poison(o.file);
    const io::Attrs a = io::H5Reader(o.file).file_attrs();
    data.dataset = attr_text(a, "dataset");
    CP_CHECK(!data.dataset.empty(), o.file, "records no dataset (attribute 'dataset'): it cannot be evaluated");
    data.subset = made.subset;
    data.subset_seed = attr_number(a, "subset_seed", 0);
    data.pad_to = attr_number(a, "pad_to", 0);
    data.channels = attr_number(a, "channels", 0);
  } else {
    data.dataset = o.file;
    data.subset = std::max<int64_t>(0, o.subset);
    data.pad_to = 0;
    data.channels = 0;
  }
  const data::Dataset clean = load_train(data_options(data, o.data_root));
  if (input == Input::poison) {
    poison::check_fingerprint(made, clean, o.file, false);  // Error naming the file and the data
    (void)poison::apply_poison(clean, made);                // image count, classes and shape
  }
  const std::string fingerprint = data_fingerprint(clean);

  // Cells of the same data and scale are shared by every evaluation: one folder per training
  // set (its fingerprint), so the clean reference is trained once.
  Preset preset;
  preset.name = folder_name(fs::path(data.dataset).stem().string()) + "-" + fingerprint.substr(0, 8);
  preset.file = o.file;
  preset.scale = o.scale;
  preset.settings = s;
  preset.corner = "Training data";
  preset.metric = o.probe_data == "clean" ? Metric::clean_probe : Metric::probe;
  const std::string stem = fs::path(o.file).stem().string();
  std::string poison_label;
  if (input == Input::poison) {
    poison_label = "Poison " + stem + " (" + (made.attack.empty() ? std::string("?") : made.attack) + ", " +
                   poison::noise_kind_name(made.kind) + "-wise, eps " + format_pixels(made.eps) + ")";
    preset.rows.push_back(axis("Clean data (reference)"));
    preset.rows.push_back(axis(poison_label));
  } else {
    preset.rows.push_back(axis("Dataset " + stem + " (no poison)"));
  }
  for (const auto& v : o.victims) preset.columns.push_back(axis(victim_label(v)));
  preset.title = "Victim battery on " + o.file;

  const std::string file = o.file;
  const bool has_poison = input == Input::poison;
  const std::vector<std::string> victims = o.victims;
  auto plan_of = [file, has_poison, victims, data](const Preset& p) {
    Plan plan;
    const Settings& ps = p.settings;
    if (has_poison) plan.poisons.push_back(make_file_poison_job(file, data, ps));
    plan.grid.assign(p.rows.size(), std::vector<int>(victims.size(), -1));
    for (size_t r = 0; r < p.rows.size(); ++r)
      for (size_t c = 0; c < victims.size(); ++c) {
        const PoisonJob* pj = has_poison && r == 1 ? &plan.poisons[0] : nullptr;
        plan.victims.push_back(make_victim_job(victims[c], ps.model, data, pj, false, 1.0, "none", ps));
        plan.grid[r][c] = (int)plan.victims.size() - 1;
      }
    return plan;
  };

  ExperimentOptions eo;
  eo.results = o.cache;
  eo.dry_run = o.dry_run;
  eo.device = o.device;
  eo.data_root = o.data_root;
  eo.redo_changed = o.redo_changed;
  eo.progress_seconds = o.progress_seconds;
  eo.quiet = o.quiet;
  eo.seeds = o.seeds;
  eo.plan = plan_of;
  eo.save_tables = false;
  ExperimentReport er = run_experiment(preset, eo);

  EvaluateReport rep;
  rep.cells_root = er.root;
  rep.cells = er.cells;
  rep.ran = er.ran;
  rep.skipped = er.skipped;
  rep.remaining = er.remaining;
  rep.estimated_seconds = er.estimated_seconds;
  rep.listing = er.listing;

  // Per seed, per row: each victim's accuracy, then the lowest and the mean over the victims
  // (NaN unless every victim of that seed has finished).
  const Plan plan = plan_of(preset);
  const size_t R = preset.rows.size(), V = victims.size(), S = o.seeds.size();
  // values[r][c][k]: row r, column c (victims, then lowest, then mean), seed k.
  std::vector<std::vector<std::vector<double>>> values(R, std::vector<std::vector<double>>(V + 2));
  nlohmann::json cells_by_seed = nlohmann::json::object();
  for (size_t k = 0; k < S; ++k) {
    const std::string seed_key = "seed-" + std::to_string(o.seeds[k]);
    const nlohmann::json& cells = S == 1 ? er.json["cells"] : er.json["cells_by_seed"][seed_key];
    cells_by_seed[seed_key] = cells;
    for (size_t r = 0; r < R; ++r) {
      double lowest = std::numeric_limits<double>::infinity(), sum = 0;
      bool all = true;
      for (size_t c = 0; c < V; ++c) {
        const std::string& id = plan.victims[plan.grid[r][c]].id;
        const double acc = cells.contains(id) ? evaluate_accuracy(cells[id], o.probe_data, o.probe_epoch) : std::nan("");
        values[r][c].push_back(acc);
        all = all && std::isfinite(acc);
        if (std::isfinite(acc)) lowest = std::min(lowest, acc), sum += acc;
      }
      values[r][V].push_back(all ? lowest : std::nan(""));
      values[r][V + 1].push_back(all ? sum / (double)V : std::nan(""));
    }
  }

  std::vector<std::string> column_labels;
  for (const auto& v : victims) column_labels.push_back(victim_label(v));
  column_labels.push_back("Lowest (worst victim)");
  column_labels.push_back("Mean over victims");

  auto stat_json = [](const std::vector<double>& xs) {
    SeedStat st = seed_stat(xs);
    auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
    nlohmann::json per_seed = nlohmann::json::array();
    for (double x : xs) per_seed.push_back(num(x));
    return nlohmann::json{{"mean", num(st.mean)}, {"sd", num(st.sd)}, {"n", st.n}, {"per_seed", per_seed}};
  };

  // The drop a poison causes, per seed (clean minus poisoned), for every column.
  std::vector<std::vector<double>> drop;
  if (has_poison)
    for (size_t c = 0; c < V + 2; ++c) {
      std::vector<double> d;
      for (size_t k = 0; k < S; ++k) d.push_back(values[0][c][k] - values[1][c][k]);
      drop.push_back(d);
    }

  std::string md = "### Victim battery: `" + o.file + "` — scale `" + o.scale + "`\n\n| " + preset.corner + " |";
  for (const auto& l : column_labels) md += " " + l + " |";
  md += "\n|---|";
  for (size_t c = 0; c < column_labels.size(); ++c) md += "---:|";
  md += "\n";
  auto add_row = [&](const std::string& label, const std::vector<std::vector<double>>& cols) {
    md += "| " + label + " |";
    for (const auto& xs : cols) md += " " + format_seed_stat(seed_stat(xs)) + " |";
    md += "\n";
  };
  for (size_t r = 0; r < R; ++r) add_row(preset.rows[r].label, values[r]);
  if (has_poison) add_row("Drop (clean − poison)", drop);

  std::string seeds_text;
  for (uint64_t sd : o.seeds) seeds_text += (seeds_text.empty() ? "" : ", ") + std::to_string(sd);
  const std::string probe_kind =
      s.eval.probe == "features" ? "L-BFGS on standardised frozen features" : "SGD on frozen features (the spec's)";
  std::string protocol = "Protocol: contrastive victims are scored by a linear probe (" + probe_kind + ") fitted on the " +
                         (o.probe_data == "clean" ? std::string("clean") : std::string("poisoned")) +
                         " training images, test accuracy at the probe's " +
                         (o.probe_epoch == "best" ? std::string("best epoch") : std::string("final epoch")) +
                         (o.probe_epoch == "best" && s.eval.probe == "features"
                              ? std::string(" (the L-BFGS probe has one answer: best = final)")
                              : std::string()) +
                         "; supervised victims by their own test accuracy after the last epoch.";
  md += "\nCells: test accuracy (%), mean ± sd over seeds (n seeds that finished; a bare value for one seed). " +
        protocol + " Lowest: the lowest victim per seed (the worst case for whoever trains on the data), then " +
        "averaged; mean over victims likewise. Seeds: " + seeds_text +
        (S == 1 ? " (one seed: differences of a few points are not established effects)" : "") +
        ". Settings: " + battery_settings(s, data) + ".";
  bool pending = false;
  for (const auto& row : values)
    for (const auto& col : row)
      for (double x : col) pending = pending || !std::isfinite(x);
  if (pending) md += " \"–\": not run yet.";
  md += "\n";
  rep.markdown = md;

  nlohmann::json rows = nlohmann::json::array();
  for (size_t r = 0; r < R; ++r) {
    nlohmann::json by = nlohmann::json::object();
    for (size_t c = 0; c < V; ++c) by[victims[c]] = stat_json(values[r][c]);
    std::string role = !has_poison ? "dataset" : r == 0 ? "clean" : "poison";
    rows.push_back({{"label", preset.rows[r].label},
                    {"role", role},
                    {"victims", by},
                    {"lowest", stat_json(values[r][V])},
                    {"mean", stat_json(values[r][V + 1])}});
  }
  nlohmann::json seeds_json = nlohmann::json::array();
  for (uint64_t sd : o.seeds) seeds_json.push_back(sd);
  rep.json = {{"file", o.file},
              {"input", has_poison ? "poison" : "dataset"},
              {"scale", o.scale},
              {"protocol", {{"probe_data", o.probe_data}, {"probe_epoch", o.probe_epoch}, {"probe", s.eval.probe}}},
              {"victims", victims},
              {"seeds", seeds_json},
              {"data", to_json_fields(data)},
              {"data_fingerprint", fingerprint},
              {"rows", rows},
              {"settings", to_json_fields(s)},
              {"cells_root", er.root},
              {"cells", cells_by_seed}};
  if (has_poison) {
    nlohmann::json d = nlohmann::json::object();
    for (size_t c = 0; c < V; ++c) d[victims[c]] = stat_json(drop[c]);
    d["lowest"] = stat_json(drop[V]);
    d["mean"] = stat_json(drop[V + 1]);
    rep.json["drop"] = d;
    rep.json["poison"] = {{"attack", made.attack},
                          {"kind", poison::noise_kind_name(made.kind)},
                          {"eps", made.eps},
                          {"ratio", made.ratio},
                          {"algorithm", made.algorithm},
                          {"digest", poison::poison_digest(made)}};
  }
  if (!o.dry_run) {
    rep.out = o.out.empty() ? (fs::path("results/evaluate") / folder_name(stem)).string() : o.out;
    fs::create_directories(rep.out);
    write_text((fs::path(rep.out) / "table.md").string(), rep.markdown);
    write_json((fs::path(rep.out) / "result.json").string(), rep.json);
  }
  return rep;
}

}  // namespace cpoison::tools::experiment
