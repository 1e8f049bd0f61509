#include "tools/experiment/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>

#include "engine/error.h"
#include "tools/common.h"

namespace cpoison::tools::experiment {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string describe_settings(const Settings& s) {
  char buf[512];
  std::string data = s.data.dataset;
  if (s.data.subset > 0) data += ", " + std::to_string(s.data.subset) + " balanced training images";
  if (s.data.pad_to > 0) data += ", padded to " + std::to_string(s.data.pad_to);
  std::string rounds;
  if (s.poison.cp_c_rounds > 0) rounds += ", CP-C " + std::to_string(s.poison.cp_c_rounds) + " rounds";
  if (s.poison.cp_s_rounds > 0) rounds += ", CP-S " + std::to_string(s.poison.cp_s_rounds) + " rounds";
  std::snprintf(buf, sizeof buf,
                "%s; %s width %lld; contrastive victims %lld epochs (batch %lld), supervised %lld epochs; "
                "poison recipe %s, eps %s%s; probe %s",
                data.c_str(), s.model.c_str(), (long long)s.width, (long long)s.victim.epochs,
                (long long)s.victim.batch_size, (long long)s.supervised.epochs, s.poison.recipe.c_str(),
                format_pixels(s.poison.eps).c_str(), rounds.c_str(),
                s.eval.probe == "features" ? "L-BFGS on standardised features" : "SGD (the spec's)");
  return buf;
}

namespace {

bool is_accuracy(Metric m) { return m == Metric::probe || m == Metric::clean_probe; }

std::string format_value(double v, Metric m) {
  if (std::isnan(v)) return "–";
  char buf[32];
  std::snprintf(buf, sizeof buf, is_accuracy(m) ? "%.1f" : "%.3f", v);
  return buf;
}

// Cell values of the grid (NaN: not available), computed means filled in; `pending` marks
// cells whose victim has not finished.
std::vector<std::vector<double>> grid_values(const Preset& p, const Plan& plan, const std::vector<nlohmann::json>& results,
                                             std::vector<std::vector<bool>>& pending) {
  const size_t R = p.rows.size(), C = p.columns.size();
  std::vector<std::vector<double>> v(R, std::vector<double>(C, std::nan("")));
  pending.assign(R, std::vector<bool>(C, false));
  for (size_t r = 0; r < R; ++r)
    for (size_t c = 0; c < C; ++c) {
      int i = plan.grid[r][c];
      if (i < 0) continue;
      if (results[i].is_null()) pending[r][c] = true;
      else v[r][c] = metric_value(results[i], p.metric);
    }
  auto index_of = [](const std::vector<Axis>& axes, const std::string& label) {
    for (size_t i = 0; i < axes.size(); ++i)
      if (axes[i].label == label) return i;
    return axes.size();
  };
  // Computed columns, then computed rows (which also average computed columns).
  for (size_t c = 0; c < C; ++c) {
    if (p.columns[c].mean_of.empty()) continue;
    for (size_t r = 0; r < R; ++r) {
      double sum = 0;
      bool ok = true, wait = false;
      for (const auto& l : p.columns[c].mean_of) {
        size_t k = index_of(p.columns, l);
        ok = ok && !std::isnan(v[r][k]);
        wait = wait || pending[r][k];
        sum += v[r][k];
      }
      if (ok) v[r][c] = sum / (double)p.columns[c].mean_of.size();
      pending[r][c] = wait;
    }
  }
  for (size_t r = 0; r < R; ++r) {
    if (p.rows[r].mean_of.empty()) continue;
    for (size_t c = 0; c < C; ++c) {
      double sum = 0;
      bool ok = true, wait = false;
      for (const auto& l : p.rows[r].mean_of) {
        size_t k = index_of(p.rows, l);
        ok = ok && !std::isnan(v[k][c]);
        wait = wait || pending[k][c];
        sum += v[k][c];
      }
      if (ok) v[r][c] = sum / (double)p.rows[r].mean_of.size();
      pending[r][c] = wait;
    }
  }
  return v;
}

std::string metric_caption(Metric m) {
  switch (m) {
    case Metric::probe:
      return "Cells: linear-probe test accuracy (%) of each victim's encoder, the probe fitted on the training images "
             "as the victim saw them; supervised victims: their own test accuracy (%).";
    case Metric::clean_probe:
      return "Cells: linear-probe test accuracy (%), the probe fitted on the clean training images.";
    case Metric::align_poisoned:
      return "Cells: alignment (mean squared distance of two views' embeddings) on the poisoned training images.";
    case Metric::align_clean:
      return "Cells: alignment on the clean versions of the poisoned training images.";
    case Metric::align_gap:
      return "Cells: alignment on clean views minus alignment on poisoned views.";
  }
  return "";
}

std::string now_plus(double seconds) {
  std::time_t t = std::time(nullptr) + (std::time_t)seconds;
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M", std::localtime(&t));
  return buf;
}

}  // namespace

std::string render_markdown(const Preset& p, const Plan& plan, const std::vector<nlohmann::json>& results) {
  std::vector<std::vector<bool>> pending;
  auto v = grid_values(p, plan, results, pending);
  std::string md = "### " + (p.title.empty() ? p.name : p.title) + " — scale `" + p.scale + "`\n\n";
  md += "| " + p.corner + " |";
  for (const auto& c : p.columns) md += " " + c.label + " |";
  md += "\n|---|";
  for (size_t c = 0; c < p.columns.size(); ++c) md += "---:|";
  md += "\n";
  bool any_pending = false;
  for (size_t r = 0; r < p.rows.size(); ++r) {
    md += "| " + p.rows[r].label + " |";
    for (size_t c = 0; c < p.columns.size(); ++c) {
      std::string cell = pending[r][c] ? std::string("…") : format_value(v[r][c], p.metric);
      any_pending = any_pending || pending[r][c];
      md += " " + cell + " |";
    }
    md += "\n";
  }
  md += "\n" + metric_caption(p.metric) + " Settings: " + describe_settings(p.settings) + ".";
  if (!p.settings.description.empty()) md += " " + p.settings.description;
  if (any_pending) md += " \"…\": not run yet.";
  md += " \"–\": no such cell.\n";
  if (!p.note.empty()) md += "\n" + p.note + "\n";

  bool paper = false;
  for (const auto& r : p.rows) paper = paper || !r.paper.empty();
  if (paper) {
    md += "\nThe paper's numbers (CIFAR-10 unless the column says otherwise; full schedules, ResNet-18 width 64):\n\n";
    md += "| " + p.corner + " |";
    for (const auto& c : p.columns) md += " " + c.label + " |";
    md += "\n|---|";
    for (size_t c = 0; c < p.columns.size(); ++c) md += "---:|";
    md += "\n";
    for (const auto& r : p.rows) {
      md += "| " + r.label + " |";
      for (size_t c = 0; c < p.columns.size(); ++c)
        md += " " + (c < r.paper.size() ? format_value(r.paper[c], Metric::probe) : std::string("–")) + " |";
      md += "\n";
    }
  }
  return md;
}

nlohmann::json render_json(const Preset& p, const Plan& plan, const std::vector<nlohmann::json>& victim_results,
                           const std::vector<nlohmann::json>& poison_results) {
  std::vector<std::vector<bool>> pending;
  auto v = grid_values(p, plan, victim_results, pending);
  Settings s = p.settings;
  nlohmann::json j{{"preset", p.name}, {"scale", p.scale}, {"title", p.title}, {"metric", metric_name(p.metric)},
                   {"settings", to_json_fields(s)}};
  nlohmann::json cols = nlohmann::json::array();
  for (const auto& c : p.columns) cols.push_back(c.label);
  j["columns"] = cols;
  nlohmann::json rows = nlohmann::json::array();
  for (size_t r = 0; r < p.rows.size(); ++r) {
    nlohmann::json values = nlohmann::json::array(), cells = nlohmann::json::array(), paper = nlohmann::json::array();
    for (size_t c = 0; c < p.columns.size(); ++c) {
      values.push_back(std::isnan(v[r][c]) ? nlohmann::json(nullptr) : nlohmann::json(v[r][c]));
      int i = plan.grid[r][c];
      cells.push_back(i < 0 ? nlohmann::json(nullptr) : nlohmann::json(plan.victims[i].id));
    }
    for (double x : p.rows[r].paper) paper.push_back(std::isnan(x) ? nlohmann::json(nullptr) : nlohmann::json(x));
    rows.push_back({{"label", p.rows[r].label}, {"values", values}, {"cells", cells}, {"paper", paper}});
  }
  j["rows"] = rows;
  nlohmann::json jobs = nlohmann::json::object();
  for (size_t i = 0; i < plan.poisons.size(); ++i)
    jobs[plan.poisons[i].id] = poison_results[i].is_null() ? nlohmann::json{{"status", "pending"}} : poison_results[i];
  for (size_t i = 0; i < plan.victims.size(); ++i)
    jobs[plan.victims[i].id] = victim_results[i].is_null() ? nlohmann::json{{"status", "pending"}} : victim_results[i];
  j["cells"] = jobs;
  return j;
}

ExperimentReport run_experiment(const Preset& preset, const ExperimentOptions& opt) {
  ExperimentReport rep;
  Plan plan = make_plan(preset);
  rep.root = (fs::path(opt.results) / preset.name / preset.scale).string();
  Runner::Options ro;
  ro.root = rep.root;
  ro.device = opt.device;
  ro.data_root = opt.data_root;
  ro.redo_changed = opt.redo_changed;
  ro.progress_seconds = opt.quiet ? -1 : opt.progress_seconds;
  Runner runner(preset.settings, ro);
  std::map<std::string, const PoisonJob*> by_id;
  for (const auto& pj : plan.poisons) by_id[pj.id] = &pj;
  rep.cells = (int64_t)(plan.poisons.size() + plan.victims.size());

  // Estimates and states of every job, in run order (poisons first: victims need them).
  Rates rates = runner.rates();
  struct Item {
    bool is_poison;
    size_t index;
    std::string id, state;
    double estimate;
  };
  std::vector<Item> items;
  for (size_t i = 0; i < plan.poisons.size(); ++i)
    items.push_back({true, i, plan.poisons[i].id, runner.status(plan.poisons[i].id, plan.poisons[i].config),
                     runner.estimate(plan.poisons[i], rates)});
  for (size_t i = 0; i < plan.victims.size(); ++i)
    items.push_back({false, i, plan.victims[i].id, runner.status(plan.victims[i].id, plan.victims[i].config),
                     runner.estimate(plan.victims[i], rates)});
  double remaining = 0;
  for (const auto& it : items)
    if (it.state != "done") remaining += it.estimate;

  std::vector<nlohmann::json> poison_results(plan.poisons.size()), victim_results(plan.victims.size());
  auto load_done = [&](const Item& it) {
    nlohmann::json r;
    if (it.state != "done") return r;
    if (it.is_poison) r = runner.cached(it.id, plan.poisons[it.index].config);
    else r = runner.cached(it.id, plan.victims[it.index].config);
    return r;
  };

  if (opt.dry_run) {
    bool any_measured = false;
    for (const auto& [k, m] : rates.measured) any_measured = any_measured || m;
    char buf[512];
    for (const auto& it : items) {
      std::string what;
      if (it.is_poison) {
        const auto& j = plan.poisons[it.index];
        what = j.attack + " by " + j.attacker + (j.init_from.empty() ? "" : ", from " + j.init_from);
      } else {
        const auto& j = plan.victims[it.index];
        what = j.algo + " " + j.model + " on " + (j.poison.empty() ? (j.clean_only ? "the clean rows" : "clean data") : j.poison) +
               (j.defense != "none" ? ", defence " + j.defense : "");
      }
      std::snprintf(buf, sizeof buf, "%-8s %-9s %-44s %s", it.state.c_str(),
                    it.state == "done" ? "-" : format_duration(it.estimate).c_str(), it.id.c_str(), what.c_str());
      rep.listing.push_back(buf);
      if (it.is_poison) poison_results[it.index] = load_done(it);
      else victim_results[it.index] = load_done(it);
    }
    std::string rate_note = any_measured ? "rates measured in finished cells where available, else the preset's cost.*"
                                         : "rates from the preset's cost.* settings (no finished cells to measure yet)";
    std::snprintf(buf, sizeof buf, "%lld cells, %lld to run: estimated %s (%s)", (long long)rep.cells,
                  (long long)std::count_if(items.begin(), items.end(), [](const Item& i) { return i.state != "done"; }),
                  format_duration(remaining).c_str(), rate_note.c_str());
    rep.listing.push_back(buf);
    rep.estimated_seconds = remaining;
    for (const auto& it : items) rep.skipped += it.state == "done";
    rep.remaining = rep.cells - rep.skipped;
    rep.markdown = render_markdown(preset, plan, victim_results);
    rep.json = render_json(preset, plan, victim_results, poison_results);
    return rep;
  }

  fs::create_directories(rep.root);
  const auto t_start = Clock::now();
  double estimated_done = 0, actual_done = 0;
  int64_t position = 0;
  for (const auto& it : items) {
    ++position;
    if (it.state == "done") {
      nlohmann::json r = load_done(it);
      if (!r.is_null()) {
        (it.is_poison ? poison_results : victim_results)[it.index] = r;
        ++rep.skipped;
        continue;
      }
    }
    if (opt.max_cells > 0 && rep.ran >= opt.max_cells) {
      ++rep.remaining;
      continue;
    }
    // The estimates so far, corrected by how this machine compares with them.
    const double speed = estimated_done > 0 ? actual_done / estimated_done : 1.0;
    if (!opt.quiet)
      std::fprintf(stderr, "[experiment] (%lld/%lld) %s: %s, estimate %s; all remaining %s (done about %s)\n",
                   (long long)position, (long long)rep.cells, it.id.c_str(), it.state == "partial" ? "resuming" : "running",
                   format_duration(it.estimate * speed).c_str(), format_duration(remaining * speed).c_str(),
                   now_plus(remaining * speed).c_str());
    const auto t0 = Clock::now();
    nlohmann::json r = it.is_poison ? runner.run_poison(plan.poisons[it.index], by_id)
                                    : runner.run_victim(plan.victims[it.index], by_id);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    (it.is_poison ? poison_results : victim_results)[it.index] = r;
    ++rep.ran;
    estimated_done += it.estimate;
    actual_done += secs;
    remaining = std::max(0.0, remaining - it.estimate);
    if (!opt.quiet) {
      std::string value;
      if (!it.is_poison) value = ", " + std::string(metric_name(preset.metric)) + " " + format_value(metric_value(r, preset.metric), preset.metric);
      std::fprintf(stderr, "[experiment] (%lld/%lld) %s: done in %s (estimate %s)%s\n", (long long)position,
                   (long long)rep.cells, it.id.c_str(), format_duration(secs).c_str(),
                   format_duration(it.estimate).c_str(), value.c_str());
    }
    // Write the table after every cell so that a long run shows its progress.
    rep.markdown = render_markdown(preset, plan, victim_results);
    rep.json = render_json(preset, plan, victim_results, poison_results);
    std::ofstream((fs::path(rep.root) / "table.md.tmp").string()) << rep.markdown;
    fs::rename(fs::path(rep.root) / "table.md.tmp", fs::path(rep.root) / "table.md");
    write_json((fs::path(rep.root) / "results.json").string(), rep.json);
  }
  rep.estimated_seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  rep.markdown = render_markdown(preset, plan, victim_results);
  rep.json = render_json(preset, plan, victim_results, poison_results);
  rep.json["seconds_this_run"] = rep.estimated_seconds;
  {
    std::ofstream out((fs::path(rep.root) / "table.md.tmp").string());
    CP_CHECK(out.good(), rep.root, "cannot write table.md");
    out << rep.markdown;
  }
  fs::rename(fs::path(rep.root) / "table.md.tmp", fs::path(rep.root) / "table.md");
  write_json((fs::path(rep.root) / "results.json").string(), rep.json);
  return rep;
}

}  // namespace cpoison::tools::experiment
