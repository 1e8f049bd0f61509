#include "tools/experiment/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "engine/distributed/comm.h"
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

size_t index_of(const std::vector<Axis>& axes, const std::string& label) {
  for (size_t i = 0; i < axes.size(); ++i)
    if (axes[i].label == label) return i;
  return axes.size();
}

// Seconds a poison took, with the poison it started from (a chained attack's whole cost).
double poison_seconds_of(const std::string& id, const std::map<std::string, nlohmann::json>& poisons) {
  auto it = poisons.find(id);
  if (it == poisons.end() || it->second.is_null() || !it->second.contains("seconds")) return std::nan("");
  double s = it->second["seconds"].get<double>();
  const std::string from = it->second.value("init_from", std::string());
  if (!from.empty()) s += poison_seconds_of(from, poisons);
  return s;
}

// One seed's cell values (NaN: not available), computed cells filled in; `pending` marks
// cells whose victim (or poison, for poison_seconds) has not finished.
std::vector<std::vector<double>> grid_values(const Preset& p, const Plan& plan, const SeedResults& res,
                                             std::vector<std::vector<bool>>& pending) {
  const size_t R = p.rows.size(), C = p.columns.size();
  std::vector<std::vector<double>> v(R, std::vector<double>(C, std::nan("")));
  pending.assign(R, std::vector<bool>(C, false));
  std::map<std::string, nlohmann::json> poison_by_id;
  for (size_t i = 0; i < plan.poisons.size() && i < res.poisons.size(); ++i) poison_by_id[plan.poisons[i].id] = res.poisons[i];
  for (size_t r = 0; r < R; ++r)
    for (size_t c = 0; c < C; ++c) {
      int i = plan.grid[r][c];
      if (i < 0) continue;
      if (res.victims[i].is_null()) pending[r][c] = true;
      else v[r][c] = metric_value(res.victims[i], p.metric);
    }
  auto reduce = [](const std::vector<double>& xs, bool take_max) {
    double acc = take_max ? -std::numeric_limits<double>::infinity() : 0;
    for (double x : xs) acc = take_max ? std::max(acc, x) : acc + x;
    return take_max ? acc : acc / (double)xs.size();
  };
  // Computed columns, then computed rows (which also reduce computed columns).
  for (size_t c = 0; c < C; ++c) {
    const Axis& col = p.columns[c];
    if (col.poison_seconds) {
      for (size_t r = 0; r < R; ++r) {
        for (size_t k = 0; k < C; ++k) {
          int i = plan.grid[r][k];
          if (i < 0 || plan.victims[i].poison.empty()) continue;
          v[r][c] = poison_seconds_of(plan.victims[i].poison, poison_by_id);
          pending[r][c] = std::isnan(v[r][c]);
          break;
        }
      }
      continue;
    }
    if (col.mean_of.empty() && col.max_of.empty()) continue;
    const auto& of = col.mean_of.empty() ? col.max_of : col.mean_of;
    for (size_t r = 0; r < R; ++r) {
      std::vector<double> xs;
      bool ok = true, wait = false;
      for (const auto& l : of) {
        size_t k = index_of(p.columns, l);
        ok = ok && !std::isnan(v[r][k]);
        wait = wait || pending[r][k];
        xs.push_back(v[r][k]);
      }
      if (ok) v[r][c] = reduce(xs, !col.max_of.empty());
      pending[r][c] = wait;
    }
  }
  for (size_t r = 0; r < R; ++r) {
    const Axis& row = p.rows[r];
    if (row.mean_of.empty() && row.max_of.empty()) continue;
    const auto& of = row.mean_of.empty() ? row.max_of : row.mean_of;
    for (size_t c = 0; c < C; ++c) {
      std::vector<double> xs;
      bool ok = true, wait = false;
      for (const auto& l : of) {
        size_t k = index_of(p.rows, l);
        ok = ok && !std::isnan(v[k][c]);
        wait = wait || pending[k][c];
        xs.push_back(v[k][c]);
      }
      if (ok) v[r][c] = reduce(xs, !row.max_of.empty());
      pending[r][c] = wait;
    }
  }
  return v;
}

// A cell over the seeds: mean, sample standard deviation and n of the seeds that finished;
// pending when any seed has not.
struct CellStat {
  double mean = std::nan(""), sd = std::nan("");
  int n = 0;
  bool pending = false;
  std::vector<double> per_seed;  // NaN where a seed has no value
};

std::vector<std::vector<CellStat>> grid_stats(const Preset& p, const Plan& plan, const std::vector<SeedResults>& seeds) {
  const size_t R = p.rows.size(), C = p.columns.size();
  std::vector<std::vector<CellStat>> out(R, std::vector<CellStat>(C));
  for (const auto& sr : seeds) {
    std::vector<std::vector<bool>> pending;
    auto v = grid_values(p, plan, sr, pending);
    for (size_t r = 0; r < R; ++r)
      for (size_t c = 0; c < C; ++c) {
        out[r][c].per_seed.push_back(v[r][c]);
        out[r][c].pending = out[r][c].pending || pending[r][c];
      }
  }
  for (auto& row : out)
    for (auto& cell : row) {
      double sum = 0;
      for (double x : cell.per_seed)
        if (!std::isnan(x)) sum += x, ++cell.n;
      if (cell.n == 0) continue;
      cell.mean = sum / cell.n;
      if (cell.n > 1) {
        double ss = 0;
        for (double x : cell.per_seed)
          if (!std::isnan(x)) ss += (x - cell.mean) * (x - cell.mean);
        cell.sd = std::sqrt(ss / (cell.n - 1));
      }
    }
  return out;
}

std::string format_stat(const CellStat& s, Metric m, bool seconds) {
  if (s.pending) return "…";
  if (s.n == 0) return "–";
  char buf[64];
  if (seconds) {
    std::snprintf(buf, sizeof buf, "%.0f", s.mean);
    return buf;
  }
  if (s.n == 1) return format_value(s.mean, m);
  std::snprintf(buf, sizeof buf, is_accuracy(m) ? "%.1f ± %.1f" : "%.3f ± %.3f", s.mean, s.sd);
  return buf;
}

std::string seeds_phrase(const std::vector<SeedResults>& seeds) {
  std::string list;
  for (const auto& s : seeds) list += (list.empty() ? "" : ", ") + std::to_string(s.seed);
  if (seeds.size() == 1) return "One seed (" + list + "): differences of a few points are not established effects.";
  return "Mean ± sd over n = " + std::to_string(seeds.size()) + " seeds (" + list +
         "; a seed sets weights, batch order, augmentations and noise; the training subset is fixed). A difference "
         "smaller than the seeds' spread is not an effect.";
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

std::string render_markdown(const Preset& p, const Plan& plan, const std::vector<SeedResults>& seeds) {
  auto st = grid_stats(p, plan, seeds);
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
      any_pending = any_pending || st[r][c].pending;
      md += " " + format_stat(st[r][c], p.metric, p.columns[c].poison_seconds) + " |";
    }
    md += "\n";
  }
  md += "\n" + metric_caption(p.metric) + " " + seeds_phrase(seeds);
  bool has_max = false, has_seconds = false;
  for (const auto& c : p.columns) has_max = has_max || !c.max_of.empty(), has_seconds = has_seconds || c.poison_seconds;
  if (has_max)
    md += " Worst case: the largest of the victims' values for that poison (computed per seed, then averaged), i.e. "
          "the victim it hurts least.";
  if (has_seconds) md += " Generation seconds: wall time of the poison (and of the poison it starts from), on this run's machine.";
  md += " Settings: " + describe_settings(p.settings) + ".";
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

std::string render_markdown(const Preset& p, const Plan& plan, const std::vector<nlohmann::json>& results) {
  return render_markdown(p, plan, std::vector<SeedResults>{{p.settings.seed, results, {}}});
}

nlohmann::json render_json(const Preset& p, const Plan& plan, const std::vector<SeedResults>& seeds) {
  auto st = grid_stats(p, plan, seeds);
  Settings s = p.settings;
  nlohmann::json seed_list = nlohmann::json::array();
  for (const auto& sr : seeds) seed_list.push_back(sr.seed);
  nlohmann::json j{{"preset", p.name}, {"scale", p.scale}, {"title", p.title}, {"metric", metric_name(p.metric)},
                   {"settings", to_json_fields(s)}, {"seeds", seed_list}};
  nlohmann::json cols = nlohmann::json::array();
  for (const auto& c : p.columns) cols.push_back(c.label);
  j["columns"] = cols;
  auto num = [](double x) { return std::isnan(x) ? nlohmann::json(nullptr) : nlohmann::json(x); };
  nlohmann::json rows = nlohmann::json::array();
  for (size_t r = 0; r < p.rows.size(); ++r) {
    nlohmann::json values = nlohmann::json::array(), sd = nlohmann::json::array(), n = nlohmann::json::array(),
                   per_seed = nlohmann::json::array(), cells = nlohmann::json::array(), paper = nlohmann::json::array();
    for (size_t c = 0; c < p.columns.size(); ++c) {
      const CellStat& cs = st[r][c];
      values.push_back(cs.pending ? nlohmann::json(nullptr) : num(cs.mean));
      sd.push_back(cs.pending ? nlohmann::json(nullptr) : num(cs.sd));
      n.push_back(cs.n);
      nlohmann::json ps = nlohmann::json::array();
      for (double x : cs.per_seed) ps.push_back(num(x));
      per_seed.push_back(ps);
      int i = plan.grid[r][c];
      cells.push_back(i < 0 ? nlohmann::json(nullptr) : nlohmann::json(plan.victims[i].id));
    }
    for (double x : p.rows[r].paper) paper.push_back(num(x));
    rows.push_back({{"label", p.rows[r].label}, {"values", values}, {"sd", sd}, {"n", n}, {"per_seed", per_seed},
                    {"cells", cells}, {"paper", paper}});
  }
  j["rows"] = rows;
  auto cells_of = [&](const SeedResults& sr) {
    nlohmann::json jobs = nlohmann::json::object();
    for (size_t i = 0; i < plan.poisons.size(); ++i)
      jobs[plan.poisons[i].id] = i >= sr.poisons.size() || sr.poisons[i].is_null() ? nlohmann::json{{"status", "pending"}} : sr.poisons[i];
    for (size_t i = 0; i < plan.victims.size(); ++i)
      jobs[plan.victims[i].id] = i >= sr.victims.size() || sr.victims[i].is_null() ? nlohmann::json{{"status", "pending"}} : sr.victims[i];
    return jobs;
  };
  if (seeds.size() == 1) {
    j["cells"] = cells_of(seeds[0]);
  } else {
    nlohmann::json by_seed = nlohmann::json::object();
    for (const auto& sr : seeds) by_seed["seed-" + std::to_string(sr.seed)] = cells_of(sr);
    j["cells_by_seed"] = by_seed;
  }
  return j;
}

nlohmann::json render_json(const Preset& p, const Plan& plan, const std::vector<nlohmann::json>& victim_results,
                           const std::vector<nlohmann::json>& poison_results) {
  return render_json(p, plan, std::vector<SeedResults>{{p.settings.seed, victim_results, poison_results}});
}

ExperimentReport run_experiment(const Preset& preset, const ExperimentOptions& opt) {
  ExperimentReport rep;
  rep.root = (fs::path(opt.results) / preset.name / preset.scale).string();
  // One plan and one runner per seed. Without --seeds the cells live in the root (one seed:
  // the settings'); with them each seed has its folder root/seed-K, so adding a seed reuses
  // the finished ones.
  const bool per_seed_dirs = !opt.seeds.empty();
  std::vector<uint64_t> seed_list = per_seed_dirs ? opt.seeds : std::vector<uint64_t>{preset.settings.seed};
  {
    std::set<uint64_t> unique(seed_list.begin(), seed_list.end());
    CP_CHECK(unique.size() == seed_list.size(), "experiment --seeds", "a seed is listed twice");
  }
  struct PerSeed {
    Preset preset;
    Plan plan;
    std::unique_ptr<Runner> runner;
    std::map<std::string, const PoisonJob*> by_id;
    SeedResults results;
  };
  std::vector<PerSeed> seeds(seed_list.size());
  for (size_t k = 0; k < seed_list.size(); ++k) {
    PerSeed& ps = seeds[k];
    ps.preset = preset;
    ps.preset.settings.seed = seed_list[k];
    ps.plan = opt.plan ? opt.plan(ps.preset) : make_plan(ps.preset);
    Runner::Options ro;
    ro.root = per_seed_dirs ? (fs::path(rep.root) / ("seed-" + std::to_string(seed_list[k]))).string() : rep.root;
    ro.device = opt.device;
    ro.data_root = opt.data_root;
    ro.redo_changed = opt.redo_changed;
    ro.progress_seconds = opt.quiet ? -1 : opt.progress_seconds;
    ps.runner = std::make_unique<Runner>(ps.preset.settings, ro);
    for (const auto& pj : ps.plan.poisons) ps.by_id[pj.id] = &pj;
    ps.results.seed = seed_list[k];
    ps.results.victims.assign(ps.plan.victims.size(), nlohmann::json());
    ps.results.poisons.assign(ps.plan.poisons.size(), nlohmann::json());
  }
  const Plan& plan = seeds[0].plan;  // ids and grid are the same for every seed
  rep.cells = (int64_t)((plan.poisons.size() + plan.victims.size()) * seeds.size());
  auto all_results = [&] {
    std::vector<SeedResults> r;
    for (const auto& ps : seeds) r.push_back(ps.results);
    return r;
  };
  auto write_tables = [&] {
    rep.markdown = render_markdown(preset, plan, all_results());
    rep.json = render_json(preset, plan, all_results());
  };

  // Estimates and states of every job, seed by seed, in run order (poisons first: victims
  // need them).
  struct Item {
    size_t seed;
    bool is_poison;
    size_t index;
    std::string id, state;
    double estimate;
  };
  std::vector<Item> items;
  for (size_t k = 0; k < seeds.size(); ++k) {
    PerSeed& ps = seeds[k];
    Rates rates = ps.runner->rates();
    for (size_t i = 0; i < ps.plan.poisons.size(); ++i)
      items.push_back({k, true, i, ps.plan.poisons[i].id, ps.runner->status(ps.plan.poisons[i]),
                       ps.runner->estimate(ps.plan.poisons[i], rates)});
    for (size_t i = 0; i < ps.plan.victims.size(); ++i)
      items.push_back({k, false, i, ps.plan.victims[i].id, ps.runner->status(ps.plan.victims[i].id, ps.plan.victims[i].config),
                       ps.runner->estimate(ps.plan.victims[i], rates)});
  }
  double remaining = 0;
  for (const auto& it : items)
    if (it.state != "done") remaining += it.estimate;
  auto label = [&](const Item& it) {
    return per_seed_dirs ? "seed-" + std::to_string(seed_list[it.seed]) + "/" + it.id : it.id;
  };
  auto load_done = [&](const Item& it) {
    nlohmann::json r;
    if (it.state != "done") return r;
    const PerSeed& ps = seeds[it.seed];
    if (it.is_poison) r = ps.runner->cached(it.id, ps.plan.poisons[it.index].config);
    else r = ps.runner->cached(it.id, ps.plan.victims[it.index].config);
    return r;
  };
  auto slot = [&](const Item& it) -> nlohmann::json& {
    return it.is_poison ? seeds[it.seed].results.poisons[it.index] : seeds[it.seed].results.victims[it.index];
  };

  if (opt.dry_run) {
    bool any_measured = false;
    for (const auto& ps : seeds)
      for (const auto& [k, m] : ps.runner->rates().measured) any_measured = any_measured || m;
    char buf[512];
    for (const auto& it : items) {
      std::string what;
      const Plan& pl = seeds[it.seed].plan;
      if (it.is_poison) {
        const auto& j = pl.poisons[it.index];
        what = j.attack == "file" ? "the poison file " + j.file
                                  : j.attack + " by " + j.attacker + (j.init_from.empty() ? "" : ", from " + j.init_from);
      } else {
        const auto& j = pl.victims[it.index];
        what = j.algo + " " + j.model + " on " + (j.poison.empty() ? (j.clean_only ? "the clean rows" : "clean data") : j.poison) +
               (j.defense != "none" ? ", defence " + j.defense : "");
      }
      std::snprintf(buf, sizeof buf, "%-8s %-9s %-44s %s", it.state.c_str(),
                    it.state == "done" ? "-" : format_duration(it.estimate).c_str(), label(it).c_str(), what.c_str());
      rep.listing.push_back(buf);
      slot(it) = load_done(it);
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
    write_tables();
    return rep;
  }

  fs::create_directories(rep.root);
  // issue #15: under mpirun every rank runs the same cells in the same order (cells.cpp), so every
  // rank must see the same results folder: a rank that found a cell done while another did not
  // would leave the others waiting in a collective.
  if (distributed::size() > 1) {
    std::string states;
    for (const auto& it : items) states += it.id + "=" + it.state + ";";
    const int64_t digest = (int64_t)std::hash<std::string>{}(states);
    const std::vector<int64_t> all = distributed::all_gather(digest);
    for (size_t r = 0; r < all.size(); ++r)
      CP_CHECK(all[r] == digest, rep.root, "rank ", r, " sees other cells finished than rank ", distributed::rank(),
               " does: under mpirun the results folder must be one folder every rank shares (docs/distributed.md)");
  }
  auto save_tables = [&] {
    write_tables();
    if (!opt.save_tables || !distributed::is_root()) return;  // issue #15: rank 0 alone writes
    {
      std::ofstream out((fs::path(rep.root) / "table.md.tmp").string());
      CP_CHECK(out.good(), rep.root, "cannot write table.md");
      out << rep.markdown;
    }
    fs::rename(fs::path(rep.root) / "table.md.tmp", fs::path(rep.root) / "table.md");
    write_json((fs::path(rep.root) / "results.json").string(), rep.json);
  };
  const auto t_start = Clock::now();
  double estimated_done = 0, actual_done = 0;
  int64_t position = 0;
  for (const auto& it : items) {
    ++position;
    if (it.state == "done") {
      nlohmann::json r = load_done(it);
      if (!r.is_null()) {
        slot(it) = r;
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
                   (long long)position, (long long)rep.cells, label(it).c_str(), it.state == "partial" ? "resuming" : "running",
                   format_duration(it.estimate * speed).c_str(), format_duration(remaining * speed).c_str(),
                   now_plus(remaining * speed).c_str());
    const auto t0 = Clock::now();
    PerSeed& ps = seeds[it.seed];
    nlohmann::json r = it.is_poison ? ps.runner->run_poison(ps.plan.poisons[it.index], ps.by_id)
                                    : ps.runner->run_victim(ps.plan.victims[it.index], ps.by_id);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    slot(it) = r;
    ++rep.ran;
    estimated_done += it.estimate;
    actual_done += secs;
    remaining = std::max(0.0, remaining - it.estimate);
    if (!opt.quiet) {
      std::string value;
      if (!it.is_poison) value = ", " + std::string(metric_name(preset.metric)) + " " + format_value(metric_value(r, preset.metric), preset.metric);
      std::fprintf(stderr, "[experiment] (%lld/%lld) %s: done in %s (estimate %s)%s\n", (long long)position,
                   (long long)rep.cells, label(it).c_str(), format_duration(secs).c_str(),
                   format_duration(it.estimate).c_str(), value.c_str());
    }
    // Write the table after every cell so that a long run shows its progress.
    save_tables();
  }
  rep.estimated_seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  write_tables();
  rep.json["seconds_this_run"] = rep.estimated_seconds;
  save_tables();
  return rep;
}

}  // namespace cpoison::tools::experiment
