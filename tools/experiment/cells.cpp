#include "tools/experiment/cells.h"
#include "tools/experiment/inputs.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "algorithms/eval.h"
#include "algorithms/train.h"
#include "defense/defense.h"
#include "engine/autograd.h"
#include "engine/distributed/comm.h"
#include "engine/error.h"
#include "engine/io/hdf5.h"
#include "engine/nn/module.h"
#include "engine/ops/ops.h"
#include "models/registry.h"
#include "poison/apply.h"
#include "poison/generate.h"
#include "tools/common.h"

namespace cpoison::tools::experiment {

namespace fs = std::filesystem;
using algorithms::Algo;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Short, file-name safe numbers for ids: 0.5 -> "0.5"; as pixels, 8/255 -> "8-255".
std::string id_number(double v, bool pixels = false) {
  double k = v * 255.0;
  if (pixels && v < 1 && std::fabs(k - std::round(k)) < 1e-9 && std::round(k) >= 1)
    return std::to_string((int)std::round(k)) + "-255";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Lower-case letters, digits, '.', '-'; everything else becomes '-' (runs collapsed).
std::string slug(const std::string& s) {
  std::string out;
  for (char ch : s) {
    char c = (char)std::tolower((unsigned char)ch);
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.';
    if (ok) out += c;
    else if (!out.empty() && out.back() != '-') out += '-';
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

// A short id part for a defence: the specification as written, made file-name safe; a long
// one is cut and completed by a hash of the canonical form (which config.json records).
std::string defense_tag(const std::string& written, const std::string& canonical) {
  std::string tag = slug(written);
  if (tag.size() <= 32) return tag;
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : canonical) h = (h ^ c) * 1099511628211ull;
  char buf[12];
  std::snprintf(buf, sizeof buf, "%08x", (unsigned)(h & 0xffffffffu));
  return tag.substr(0, 23) + "-" + buf;
}

std::string dataset_slug(const DataSettings& d) {
  std::string name = fs::path(d.dataset).stem().string();
  return slug(name);
}

std::string data_key(const DataSettings& d) {
  DataSettings c = d;
  return to_json_fields(c).dump();
}

nlohmann::json train_json(const TrainSettings& t) {
  TrainSettings c = t;
  nlohmann::json j = to_json_fields(c);
  j.erase("checkpoint_every");  // resuming is exact: the checkpoint interval does not change the result
  return j;
}

bool is_contrastive(const std::string& algo) { return algo == "simclr" || algo == "moco" || algo == "byol"; }

// The first key path where two JSON values differ ("" when equal).
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b, const std::string& path) {
  if (a == b) return "";
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys.insert(it.key());
    for (auto it = b.begin(); it != b.end(); ++it) keys.insert(it.key());
    for (const auto& k : keys) {
      std::string sub = path.empty() ? k : path + "." + k;
      if (!a.contains(k) || !b.contains(k)) return sub;
      std::string d = first_difference(a[k], b[k], sub);
      if (!d.empty()) return d;
    }
  }
  return path.empty() ? "(top level)" : path + " (" + a.dump() + " before, " + b.dump() + " now)";
}

algorithms::AlgoConfig algo_config(const std::string& algo, const Settings& s, bool dual_branch) {
  Algo a = algorithms::parse_algo(algo);
  algorithms::AlgoConfig c = algorithms::AlgoConfig::defaults(a);
  if (a != Algo::supervised) apply_algo(s.algo_settings(algo), c);
  c.dual_branch = dual_branch;
  c.seed = s.seed;
  return c;
}

nlohmann::json algo_json(const std::string& algo, const Settings& s) {
  if (!is_contrastive(algo)) return nullptr;
  AlgoSettings a = s.algo_settings(algo);
  return to_json_fields(a);
}

}  // namespace

// ---------------------------------------------------------------- cells and plans

CellSpec merge_cell(const CellKeys& column, const CellKeys& row, const Settings& s, const std::string& where) {
  CellSpec c;
  c.model = s.model;
  c.attacker_model = s.model;
  c.eps = s.poison.eps;
  c.dataset = s.data.dataset;
  auto apply = [&](const CellKeys& k) {
    if (k.victim) c.victim = *k.victim;
    if (k.attack) c.attack = *k.attack;
    if (k.attacker) c.attacker = *k.attacker;
    if (k.kind) c.kind = *k.kind;
    if (k.dual_branch) c.dual_branch = *k.dual_branch;
    if (k.ratio) c.ratio = *k.ratio;
    if (k.eps) c.eps = *k.eps;
    if (k.model) c.model = *k.model;
    if (k.attacker_model) c.attacker_model = *k.attacker_model;
    if (k.defense) c.defense = *k.defense;
    if (k.dataset) c.dataset = *k.dataset;
    if (k.init) c.init = *k.init;
    if (k.start) c.start = *k.start;
  };
  apply(column);
  apply(row);
  const std::string& a = c.attack;
  if (a == "none" || a == "clean-only") {
    c.attacker = "none";
  } else if (a == "random") {
    c.attacker = "none";
    if (c.kind.empty()) c.kind = "sample";
  } else if (a == "pattern") {
    c.attacker = "none";
    CP_CHECK(c.kind.empty() || c.kind == "class", where, "attack pattern is class-wise, not ", c.kind);
    c.kind = "class";
  } else if (a == "unlearnable" || a == "adversarial" || a == "aue" || a == "aap") {
    CP_CHECK(c.attacker.empty() || c.attacker == "supervised", where, "attack ", a,
             " uses a supervised attacker, not '", c.attacker, "'");
    c.attacker = "supervised";
    if (c.kind.empty()) c.kind = "sample";
    CP_CHECK(a != "adversarial" || c.kind == "sample", where, "adversarial poisoning is sample-wise");
  } else {  // cp-s, cp-c
    if (c.attacker.empty()) c.attacker = c.victim;
    CP_CHECK(is_contrastive(c.attacker), where, "attack ", a, " needs a contrastive attacker (simclr, moco, byol); the ",
             c.attacker.empty() ? std::string("victim") : c.attacker,
             " cell has none: set attacker = \"simclr\" (or moco, byol)");
    std::string natural = a == "cp-s" ? "sample" : "class";
    CP_CHECK(c.kind.empty() || c.kind == natural, where, "attack ", a, " is ", natural, "-wise, not ", c.kind);
    c.kind = natural;
  }
  CP_CHECK(c.start.empty() || a == "cp-s" || a == "cp-c", where, "start = \"", c.start,
           "\" is for cp-s and cp-c cells (their noise can start from another poison), not ", a);
  if (c.defense != "none") {
    defense::Defense d = defense::parse_defense(c.defense);
    // Adversarial training runs for every victim; only ACL's both-views variant needs two views.
    CP_CHECK(d.kind != defense::DefenseKind::adversarial || is_contrastive(c.victim) || !d.adversarial.both_views,
             where, "adv:both=1 perturbs the two views of a contrastive step; the ", c.victim,
             " victim trains on one view (leave both=0)");
    if (d.kind == defense::DefenseKind::none) c.defense = "none";  // (the id keeps the spelling of the others)
  }
  return c;
}

// Attacks whose noise is drawn, not optimised (poison::synthetic_attack by name).
static bool synthetic(const std::string& attack) { return poison::synthetic_attack(poison::parse_attack(attack)); }
// The kind an attack's poison has unless a cell says otherwise: CP-C and the gratings are class-wise.
static std::string natural_kind(const std::string& attack) {
  return attack == "cp-c" || attack == "pattern" ? "class" : "sample";
}

PoisonJob make_poison_job(const std::string& attack, const std::string& attacker, const std::string& kind,
                          bool dual_branch, double eps, double ratio, const std::string& model, const DataSettings& data,
                          const Settings& s, const std::string& start) {
  PoisonJob j;
  j.attack = attack;
  j.attacker = attacker;
  j.kind = kind;
  // Only momentum-encoder attackers have a second branch; the flag means nothing elsewhere.
  j.dual_branch = (attacker == "moco" || attacker == "byol") ? dual_branch : true;
  j.eps = eps;
  j.ratio = ratio;
  j.model = model;
  j.data = data;
  std::string id = "poison-" + attack;
  if (attacker != "none") id += "-" + attacker;
  if (attack == "random" || attack == "unlearnable" || kind != natural_kind(attack)) id += "-" + kind;
  if (!j.dual_branch) id += "-single";
  if (ratio != 1.0) id += "-r" + id_number(ratio);
  if (std::fabs(eps - s.poison.eps) > 1e-12) id += "-eps" + id_number(eps, true);
  if (model != s.model && attack != "random") id += "-" + model;
  if (data.dataset != s.data.dataset) id += "-" + dataset_slug(data);

  // Where the noise starts: the scale's choice (CP-S from CP-C when poison.cp_s_init = "cp-c"),
  // or a cell's `start`: another attack's poison of the same images ("aue", "aue:class"; its
  // natural attacker: this one for cp-s / cp-c, supervised, or none for drawn noise).
  PoisonSettings ps = s.poison;
  const std::string scale_start = attack == "cp-s" && ps.cp_s_init == "cp-c" ? "cp-c:class" : "uniform";
  PoisonStart given = parse_start(start.empty() ? scale_start : start, "start");
  if (given.attack != "uniform" && given.kind.empty()) given.kind = natural_kind(given.attack);
  const std::string from = given.attack == "uniform" ? "uniform" : given.attack + ":" + given.kind;
  if (from != "uniform") {
    const std::string &from_attack = given.attack, &from_kind = given.kind;
    const std::string from_attacker = from_attack == "cp-c" || from_attack == "cp-s" ? attacker
                                      : synthetic(from_attack)                      ? "none"
                                                                                    : "supervised";
    j.init = std::make_shared<const PoisonJob>(
        make_poison_job(from_attack, from_attacker, from_kind, dual_branch, eps, ratio, model, data, s));
    j.init_from = j.init->id;
  }
  const bool own_start = from != scale_start;  // the cell's, not the scale's
  if (own_start) {
    ps.cp_s_init = "uniform";  // the scale's chaining does not apply (nor do CP-C's fields)
    id += "-from-" + (j.init ? j.init->id.substr(std::string("poison-").size()) : std::string("uniform"));
  }
  j.id = id;

  // The poison settings this attack reads (PoisonSettings' readers() in its field list).
  nlohmann::json poison = fields_read_by(ps, attack);
  DataSettings d = data;
  j.config = {{"job", "poison"},  {"attack", attack}, {"attacker", attacker}, {"kind", kind},
              {"dual_branch", j.dual_branch}, {"eps", eps}, {"ratio", ratio}, {"model", model},
              {"width", s.width}, {"seed", s.seed}, {"data", to_json_fields(d)}, {"poison", poison},
              {"augment", attacker == "supervised" && attack != "aue" && attack != "aap" ? std::string("crop-flip")
                                                                                        : s.victim.augment},
              {"algo", algo_json(attacker, s)}, {"init_from", j.init_from}};
  if (poison.empty()) j.config.erase("poison");  // (random noise reads none)
  if (own_start) {  // the start and everything that made it (cells chained by the scale record CP-C's fields instead)
    j.config["start"] = from;
    if (j.init) j.config["start_config"] = j.init->config;
  }
  if (synthetic(attack)) {  // only eps, kind, ratio, seed and the data matter (and the pattern's fields)
    j.config.erase("augment");
    j.config.erase("algo");
    j.config.erase("model");
    j.config.erase("width");
  }
  return j;
}

PoisonJob make_file_poison_job(const std::string& path, const DataSettings& data, const Settings& s) {
  const poison::Poison p = poison::load_poison(path);
  const std::string digest = poison::poison_digest(p);
  PoisonJob j;
  j.attack = "file";
  j.attacker = "none";
  j.kind = poison::noise_kind_name(p.kind);
  j.eps = p.eps;
  j.ratio = p.ratio;
  j.model = s.model;
  j.data = data;
  j.file = path;
  j.id = "poison-file-" + digest.substr(0, 12);
  DataSettings d = data;
  j.config = {{"job", "poison"},       {"attack", "file"},   {"digest", digest},
              {"kind", j.kind},        {"eps", p.eps},       {"ratio", p.ratio},
              {"made_by", p.attack},   {"data_fingerprint", p.data_fingerprint},
              {"data", to_json_fields(d)}};
  return j;
}

VictimJob make_victim_job(const std::string& algo, const std::string& model, const DataSettings& data,
                          const PoisonJob* poison, bool clean_only, double ratio, const std::string& defense_spec,
                          const Settings& s, const std::string& init) {
  VictimJob j;
  j.algo = algo;
  j.model = model;
  j.data = data;
  j.clean_only = clean_only;
  j.ratio = ratio;
  j.defense = defense_spec.empty() ? "none" : defense::parse_defense(defense_spec).spec();
  std::string id = "victim-" + algo;
  if (model != s.model) id += "-" + model;
  if (poison) {
    j.poison = poison->id;
    id += "-" + poison->id.substr(std::string("poison-").size());
  } else if (clean_only) {
    id += "-clean-only-r" + id_number(ratio);
  } else {
    id += "-clean";
    if (data.dataset != s.data.dataset) id += "-" + dataset_slug(data);
  }
  if (j.defense != "none") id += "-" + defense_tag(defense_spec, j.defense);
  TrainSettings t = algo == "supervised" ? s.supervised : s.victim;
  if (!init.empty() && init != t.init) {
    t.init = init;
    id += "-init-" + init;
  }
  j.init = t.init;
  j.id = id;
  DataSettings d = data;
  EvalSettings e = s.eval;
  j.config = {{"job", "victim"},
              {"train",
               {{"algo", algo},
                {"model", model},
                {"width", s.width},
                {"seed", s.seed},
                {"data", to_json_fields(d)},
                {"poison", poison ? poison->config : nlohmann::json(nullptr)},
                {"clean_only", clean_only},
                {"ratio", clean_only ? ratio : 1.0},
                {"defense", j.defense},
                {"training", train_json(t)},
                {"algo_settings", algo_json(algo, s)}}},
              {"eval", to_json_fields(e)}};
  return j;
}

Plan make_plan(const Preset& p) {
  Plan plan;
  const Settings& s = p.settings;
  std::map<std::string, int> victim_index;
  std::set<std::string> poison_ids;
  auto add_poison = [&](const PoisonJob& job, auto& self) -> void {
    if (poison_ids.count(job.id)) return;
    if (job.init) self(*job.init, self);
    poison_ids.insert(job.id);
    plan.poisons.push_back(job);
  };
  plan.grid.assign(p.rows.size(), std::vector<int>(p.columns.size(), -1));
  for (size_t r = 0; r < p.rows.size(); ++r) {
    if (p.rows[r].computed()) continue;
    for (size_t c = 0; c < p.columns.size(); ++c) {
      if (p.columns[c].computed()) continue;
      std::string where = p.file + ": cell (row '" + p.rows[r].label + "', column '" + p.columns[c].label + "')";
      CellSpec cell = merge_cell(p.columns[c].keys, p.rows[r].keys, s, where);
      DataSettings data = s.data;
      data.dataset = cell.dataset;
      if (cell.attack == "clean-only" && cell.ratio >= 1.0) continue;  // nothing left to train on
      const PoisonJob* poison = nullptr;
      PoisonJob pj;
      if (cell.attack != "none" && cell.attack != "clean-only") {
        pj = make_poison_job(cell.attack, cell.attacker, cell.kind, cell.dual_branch, cell.eps, cell.ratio,
                             cell.attacker_model, data, s, cell.start);
        add_poison(pj, add_poison);
        poison = &pj;
      }
      VictimJob vj = make_victim_job(cell.victim, cell.model, data, poison, cell.attack == "clean-only", cell.ratio,
                                     cell.defense, s, cell.init);
      auto it = victim_index.find(vj.id);
      if (it == victim_index.end()) {
        it = victim_index.emplace(vj.id, (int)plan.victims.size()).first;
        plan.victims.push_back(vj);
      }
      plan.grid[r][c] = it->second;
    }
  }
  return plan;
}

// ---------------------------------------------------------------- files

void write_json(const std::string& path, const nlohmann::json& j) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    CP_CHECK(out.good(), tmp, "cannot open for writing");
    out << j.dump(2) << "\n";
    CP_CHECK(out.good(), tmp, "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  CP_CHECK(!ec, path, "cannot rename ", tmp, " into place: ", ec.message());
}

void write_text(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    CP_CHECK(out.good(), tmp, "cannot open for writing");
    out << text;
    CP_CHECK(out.good(), tmp, "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  CP_CHECK(!ec, path, "cannot rename ", tmp, " into place: ", ec.message());
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  CP_CHECK(in.good(), path, "cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail(path, "not valid JSON: ", e.what());
  }
}

// ---------------------------------------------------------------- pieces

double metric_value(const nlohmann::json& r, Metric m) {
  const double nan = std::nan("");
  auto get = [&](const char* a, const char* b) -> double {
    if (!r.contains(a) || !r[a].is_object() || !r[a].contains(b) || !r[a][b].is_number()) return nan;
    return r[a][b].get<double>();
  };
  switch (m) {
    case Metric::probe: {
      double v = get("probe", "poisoned");
      return std::isnan(v) ? get("supervised", "test_accuracy") : v;
    }
    case Metric::clean_probe: {
      double v = get("probe", "clean");
      return std::isnan(v) ? get("supervised", "test_accuracy") : v;
    }
    case Metric::align_poisoned: return get("alignment", "poisoned");
    case Metric::align_clean: return get("alignment", "clean");
    case Metric::align_gap: return get("alignment", "clean") - get("alignment", "poisoned");
  }
  return nan;
}

// ---------------------------------------------------------------- runner

Runner::Runner(Settings settings, Options options) : settings_(std::move(settings)), options_(std::move(options)) {
  CP_CHECK(!options_.root.empty(), "Runner", "the results folder is empty");
}

std::string Runner::dir(const std::string& id) const { return (fs::path(options_.root) / id).string(); }
std::string Runner::poison_path(const std::string& id) const { return (fs::path(dir(id)) / "poison.h5").string(); }

const data::Dataset& Runner::train_set(const DataSettings& d) {
  std::string key = "train" + data_key(d);
  auto it = datasets_.find(key);
  if (it != datasets_.end()) return it->second;
  return datasets_.emplace(key, load_train(data_options(d, options_.data_root))).first->second;
}

const data::Dataset& Runner::test_set(const DataSettings& d) {
  std::string key = "test" + data_key(d);
  auto it = datasets_.find(key);
  if (it != datasets_.end()) return it->second;
  return datasets_.emplace(key, load_test(data_options(d, options_.data_root), d.test_subset)).first->second;
}

int64_t Runner::train_size(const DataSettings& d) {
  static const std::map<std::string, int64_t> known{
      {"fashion-mnist", 60000}, {"mnist", 60000}, {"cifar10", 50000}, {"cifar100", 50000}, {"stl10", 5000}};
  auto it = known.find(d.dataset);
  int64_t full = it != known.end() ? it->second : -1;
  if (d.subset > 0 && (full < 0 || d.subset <= full)) return d.subset;
  if (full > 0) return full;
  return train_set(d).size();
}

namespace {
int64_t test_size_guess(const DataSettings& d) {
  if (d.test_subset > 0) return d.test_subset;
  return d.dataset == "stl10" ? 8000 : 10000;
}
}  // namespace

namespace {

enum class ConfigChange { same, eval_only, changed };

// How a cell's recorded configuration compares with the current one. Victim configurations
// split into "train" and "eval": when only "eval" differs the trained model is still good.
ConfigChange compare_config(const nlohmann::json& old, const nlohmann::json& now) {
  if (old == now) return ConfigChange::same;
  bool eval_only = old.contains("train") && now.contains("train") && old["train"] == now["train"];
  return eval_only ? ConfigChange::eval_only : ConfigChange::changed;
}

std::string changed_message(const nlohmann::json& old, const nlohmann::json& now) {
  return "this cell was run with different settings (first difference: " + first_difference(old, now, "") +
         "); pass --redo-changed to discard it, or remove the folder";
}

// issue #15 (docs/distributed.md): under `mpirun -np K cpoison experiment` every rank runs every
// cell, in the same order: poisoning and training are data-parallel inside. Rank 0 alone writes a
// cell's files and evaluates a victim (the probes have no collectives); the ranks meet before a
// cell's folder changes (no rank still reads its old state) and after a cell (every rank then
// reads what rank 0 wrote: the poison a victim trains on, the result).
bool writes_files() { return distributed::is_root(); }
void sync_ranks() {
  if (distributed::size() > 1) distributed::barrier();
}

}  // namespace

nlohmann::json Runner::cached(const std::string& id, const nlohmann::json& config) const {
  fs::path d = dir(id);
  fs::path cfg = d / "config.json", res = d / "result.json";
  if (!fs::exists(cfg)) return nullptr;
  nlohmann::json old = read_json(cfg.string());
  switch (compare_config(old, config)) {
    case ConfigChange::same: break;
    case ConfigChange::eval_only: return nullptr;
    case ConfigChange::changed:
      if (options_.redo_changed) return nullptr;
      fail(d.string(), changed_message(old, config));
  }
  if (!fs::exists(res)) return nullptr;
  return read_json(res.string());
}

std::string Runner::status(const std::string& id, const nlohmann::json& config) const {
  fs::path d = dir(id);
  fs::path cfg = d / "config.json";
  if (!fs::exists(cfg)) return "pending";
  nlohmann::json old;
  try {
    old = read_json(cfg.string());
  } catch (const Error&) {
    return "changed";
  }
  switch (compare_config(old, config)) {
    case ConfigChange::same: break;
    case ConfigChange::eval_only: return "partial";  // trained; the evaluation runs again
    case ConfigChange::changed: return "changed";
  }
  if (fs::exists(d / "result.json")) return "done";
  for (const char* f : {"victim.h5", "poison.ckpt.h5", "train.json"})
    if (fs::exists(d / f)) return "partial";
  return "pending";
}

std::string Runner::prepare(const std::string& id, const nlohmann::json& config) {
  fs::path d = dir(id);
  fs::path cfg = d / "config.json";
  ConfigChange change = ConfigChange::same;
  if (fs::exists(cfg)) {
    nlohmann::json old = read_json(cfg.string());
    change = compare_config(old, config);
    CP_CHECK(change != ConfigChange::changed || options_.redo_changed, d.string(), changed_message(old, config));
  }
  sync_ranks();  // every rank has read the cell's old state
  if (writes_files()) {
    switch (change) {
      case ConfigChange::same: break;
      case ConfigChange::eval_only: fs::remove(d / "result.json"); break;
      case ConfigChange::changed:
        std::fprintf(stderr, "[experiment] %s: settings changed, discarding its old results\n", id.c_str());
        fs::remove_all(d);
        break;
    }
    fs::create_directories(d);
    write_json(cfg.string(), config);
  }
  sync_ranks();
  return d.string();
}

// ---- poisons

namespace {

// Views (augmented images through the network) one round of generation processes.
double poison_round_views(const poison::PoisonConfig& c, int64_t n, bool contrastive) {
  const int64_t m = std::max<int64_t>(1, (int64_t)std::llround(c.ratio * (double)n));
  const int64_t bs = std::min<int64_t>(c.batch_size, m);
  const int64_t per_epoch = std::max<int64_t>(1, n / std::max<int64_t>(1, std::min<int64_t>(c.batch_size, n)));
  const int64_t model_steps = c.model_steps > 0 ? c.model_steps : per_epoch;
  const int64_t noise_batches = c.noise_batches > 0 ? c.noise_batches : std::max<int64_t>(1, m / bs);
  const double views = contrastive ? 2.0 : 1.0;
  const bool noise_only = c.attack == poison::Attack::adversarial || c.attack == poison::Attack::aap;
  double model = noise_only ? 0.0 : (double)(model_steps * std::min(c.batch_size, n)) * views;
  return model + (double)(noise_batches * c.pgd_steps * bs) * views;
}

}  // namespace

poison::PoisonConfig poison_config(const PoisonJob& job, const Settings& s, const data::Dataset& train) {
  using poison::Attack;
  Attack attack = poison::parse_attack(job.attack);
  poison::PoisonConfig c;
  const PoisonSettings& ps = s.poison;
  if (attack == Attack::cp_class || attack == Attack::cp_sample) {
    std::string recipe = (ps.recipe == "paper" ? "" : "cpu-small-") + job.attack;
    c = poison::PoisonConfig::recipe(recipe, algorithms::parse_algo(job.attacker));
    if (attack == Attack::cp_class) {
      if (ps.cp_c_rounds > 0) c.rounds = ps.cp_c_rounds;
      if (ps.cp_c_model_steps > 0) c.model_steps = ps.cp_c_model_steps;
      if (ps.cp_c_noise_batches > 0) c.noise_batches = ps.cp_c_noise_batches;
    } else {
      if (ps.cp_s_rounds > 0) c.rounds = ps.cp_s_rounds;
      if (ps.cp_s_pgd_steps > 0) c.pgd_steps = ps.cp_s_pgd_steps;
    }
    const AlgoSettings& a = s.algo_settings(job.attacker);
    if (a.lr > 0) c.lr = a.lr;
    c.algo_config = algo_config(job.attacker, s, job.dual_branch);
    c.augment = training_augment(s.victim, train);
  } else if (attack == Attack::aue || attack == Attack::aap) {
    // Supervised attackers under the victims' contrastive augmentations at the attack's strength.
    c = poison::PoisonConfig::recipe((ps.recipe == "paper" ? "" : "cpu-small-") + job.attack, Algo::supervised);
    c.kind = poison::parse_noise_kind(job.kind);
    c.augment = training_augment(s.victim, train);
    if (attack == Attack::aue) {
      if (ps.aue_rounds > 0) c.rounds = ps.aue_rounds;
      if (ps.aue_model_steps > 0) c.model_steps = ps.aue_model_steps;
      if (c.kind == poison::NoiseKind::class_wise) c.pgd_steps = 1;  // aue.py's class-wise rule
      if (ps.aue_pgd_steps > 0) c.pgd_steps = ps.aue_pgd_steps;
      if (ps.aue_strength > 0) c.augment_strength = ps.aue_strength;
    } else {
      if (ps.aap_pretrain_epochs > 0) {
        c.pretrain_epochs = ps.aap_pretrain_epochs;
        c.pretrain_warmup_epochs = std::min(c.pretrain_warmup_epochs, c.pretrain_epochs);
      }
      if (ps.aap_pgd_steps > 0) c.pgd_steps = ps.aap_pgd_steps, c.step = std::min(2.0, 2.5 / (double)ps.aap_pgd_steps);
      if (ps.aap_strength > 0) c.augment_strength = ps.aap_strength;
    }
  } else {
    c.attack = attack;
    c.kind = poison::parse_noise_kind(job.kind);
    c.algo = Algo::supervised;
    c.algo_config = algorithms::AlgoConfig::defaults(Algo::supervised);
    c.augment = algorithms::make_augment(augment::Recipe::crop_flip, train);
    c.lr = 0.1;
    c.batch_size = s.supervised.batch_size;
    if (attack == Attack::unlearnable) {
      c.rounds = ps.unlearnable_rounds;
      c.model_steps = ps.unlearnable_model_steps;
      c.noise_batches = 0;
      c.pgd_steps = ps.unlearnable_pgd_steps;
    } else if (attack == Attack::adversarial) {
      c.rounds = 1;
      c.pretrain_epochs = ps.adversarial_pretrain_epochs;
      c.noise_batches = 0;
      c.pgd_steps = ps.adversarial_pgd_steps;
    } else {  // random, pattern
      c.pattern_period = ps.pattern_period;
      c.pattern_blank = ps.pattern_blank;
      c.algo = Algo::simclr;
      c.algo_config = algorithms::AlgoConfig::defaults(Algo::simclr);
      c.rounds = 1;
    }
  }
  if (ps.batch_size > 0) c.batch_size = ps.batch_size;
  if (ps.lr > 0) c.lr = ps.lr;
  c.model = job.model;
  c.model_options.width = s.width;
  c.model_options.in_channels = train.channels();
  c.eps = job.eps;
  c.ratio = job.ratio;
  c.seed = s.seed;
  c.checkpoint_every = ps.checkpoint_every;
  if (!poison::synthetic_attack(attack) && attack != Attack::adversarial) {
    c.separability = ps.separability;
    c.separability_space = poison::parse_separability_space(ps.separability_space);
  }
  // The attack's own knobs (poison.cp_c = { ... }) last: they override the recipe and the above.
  std::string section = "poison." + job.attack;
  std::replace(section.begin(), section.end(), '-', '_');
  poison::set_knobs(c, ps.knobs_of(job.attack).values, section);
  return c;
}


namespace {

// A 1-image stand-in of a dataset for poison_config where the images do not matter (the cost
// estimate, the resolved knobs): it needs only a shape and a name.
data::Dataset shape_stand_in(const DataSettings& d) {
  data::Dataset ds;
  ds.images = Tensor::zeros({1, 28, 28, 1}, DType::u8);
  ds.labels = Tensor::zeros({1}, DType::i64);
  ds.classes = 10;
  ds.name = d.dataset;
  ds.mean = {0.5}, ds.std = {0.25};  // any constants: neither use needs them
  return ds;
}

}  // namespace

// The cache key is the settings an attack reads; the knobs they resolved to are recorded beside
// it, so that a cell made before a recipe's values changed in the code is not taken for one made
// with the new values.
std::string Runner::knobs_change(const PoisonJob& job, const nlohmann::json& done) const {
  if (job.attack == "file" || !done.is_object() || !done.contains("knobs")) return "";
  const nlohmann::json now =
      nlohmann::json::parse(poison::knob_values(poison_config(job, settings_, shape_stand_in(job.data))).dump());
  return now == done["knobs"] ? "" : first_difference(done["knobs"], now, "knobs");
}

std::string Runner::status(const PoisonJob& job) const {
  std::string st = status(job.id, job.config);
  if (st == "done" && !knobs_change(job, read_json((fs::path(dir(job.id)) / "result.json").string())).empty()) st = "changed";
  return st;
}

nlohmann::json Runner::run_poison(const PoisonJob& job, const std::map<std::string, const PoisonJob*>& poisons) {
  nlohmann::json done = cached(job.id, job.config);
  if (const std::string diff = done.is_null() ? "" : knobs_change(job, done); !diff.empty()) {
    CP_CHECK(options_.redo_changed, dir(job.id), "was made with other poison knobs than its settings resolve to now (", diff,
             "): a recipe changed since; pass --redo-changed to make it again");
    std::fprintf(stderr, "[experiment] %s: its recorded knobs differ (%s); making it again\n", job.id.c_str(), diff.c_str());
    if (writes_files()) fs::remove(fs::path(dir(job.id)) / "result.json");
    sync_ranks();
    done = nullptr;
  }
  if (!done.is_null()) return done;
  if (job.attack == "file") return run_file_poison(job);
  const data::Dataset& train = train_set(job.data);
  poison::PoisonConfig cfg = poison_config(job, settings_, train);
  if (!job.init_from.empty()) {
    auto it = poisons.find(job.init_from);
    CP_CHECK(it != poisons.end(), job.id, "needs poison ", job.init_from, " first");
    std::string init = poison_path(job.init_from);
    CP_CHECK(fs::exists(init), job.id, "starts from ", init, ", which has not been made");
    cfg.init = poison::NoiseInit::file;
    cfg.init_file = init;
  }
  std::string d = prepare(job.id, job.config);
  cfg.checkpoint_path = (fs::path(d) / "poison.ckpt.h5").string();
  cfg.resume = true;
  cfg.device = options_.device;
  cfg.progress_seconds = options_.progress_seconds;
  cfg.validate();

  const auto t0 = Clock::now();
  poison::PoisonResult res = poison::generate_poison(train, cfg, job.data.dataset, job.data.subset);
  const double seconds = seconds_since(t0);
  CP_CHECK(res.finished, job.id, "poison generation stopped before its last round");
  if (writes_files()) {
    io::Attrs extra{{"data_fingerprint", data_fingerprint(train)}, {"experiment_cell", job.id}};
    save_poison_with_attrs(poison_path(job.id), res.poison, extra);
    write_poison_overview((fs::path(d) / "noise.png").string(), res.poison, train);
  }

  nlohmann::json history = nlohmann::json::array();
  double round_seconds = 0;
  for (const auto& h : res.history) {
    auto num = [](double x) { return std::isnan(x) ? nlohmann::json(nullptr) : nlohmann::json(x); };
    history.push_back({{"round", h.round},
                       {"model_loss", h.model_loss},
                       {"noise_loss", h.noise_loss},
                       {"attacker_loss_poisoned", num(h.probe_loss_poisoned)},
                       {"attacker_loss_clean", num(h.probe_loss_clean)},
                       {"views_per_s", h.views_per_s},
                       {"seconds", h.seconds}});
    round_seconds += h.seconds;
  }
  const bool contrastive = is_contrastive(job.attacker);
  const double views = poison_round_views(cfg, train.size(), contrastive) * (double)res.history.size();
  nlohmann::json result{{"id", job.id},
                        {"job", "poison"},
                        {"attack", job.attack},
                        {"attacker", job.attacker},
                        {"init_from", job.init_from},
                        {"kind", job.kind},
                        {"eps", job.eps},
                        {"ratio", job.ratio},
                        {"rounds", poison::synthetic_attack(cfg.attack) ? 0 : cfg.rounds},
                        {"rounds_this_run", (int64_t)res.history.size()},
                        {"final_noise_loss", res.history.empty() ? nlohmann::json(nullptr) : nlohmann::json(res.history.back().noise_loss)},
                        {"history", history},
                        {"seconds", seconds},
                        {"poison_file", poison_path(job.id)},
                        {"device", options_.device == Device::cuda ? "cuda" : "cpu"},
                        {"knobs", nlohmann::json::parse(poison::knob_values(cfg).dump())},  // what ran, resolved
                        {"measured", nlohmann::json::object()}};
  if (distributed::size() > 1) result["ranks"] = distributed::size();
  if (views > 0 && round_seconds > 0.5)
    result["measured"]["poison_views_per_s"] = views / round_seconds * settings_.cost.model_factor.of(job.model);
  if (writes_files()) {
    fs::remove(cfg.checkpoint_path);
    write_json((fs::path(d) / "result.json").string(), result);
  }
  sync_ranks();  // the poison file is in place for every rank's victims
  return result;
}

// A poison given as a file: checked against the training images, then copied into the cell
// (a temporary name, renamed), so that the victims read it from the cell as any other poison.
nlohmann::json Runner::run_file_poison(const PoisonJob& job) {
  CP_CHECK(!job.file.empty(), job.id, "a file poison job without its file");
  const auto t0 = Clock::now();
  const data::Dataset& train = train_set(job.data);
  poison::Poison p = poison::load_poison(job.file);
  CP_CHECK(poison::poison_digest(p) == job.config.value("digest", std::string()), job.file,
           "changed since the evaluation was planned (its noise digest differs)");
  poison::check_fingerprint(p, train, job.file, false);
  // apply_poison checks the image count, classes and shape: a poison of another size stops here.
  (void)poison::apply_poison(train, p);
  std::string d = prepare(job.id, job.config);
  if (writes_files()) {
    const std::string tmp = poison_path(job.id) + ".tmp";
    std::error_code ec;
    fs::copy_file(job.file, tmp, fs::copy_options::overwrite_existing, ec);
    CP_CHECK(!ec, tmp, "cannot copy ", job.file, " here: ", ec.message());
    fs::rename(tmp, poison_path(job.id), ec);
    CP_CHECK(!ec, poison_path(job.id), "cannot rename ", tmp, " into place: ", ec.message());
    write_poison_overview((fs::path(d) / "noise.png").string(), p, train);
  }
  nlohmann::json result{{"id", job.id},
                        {"job", "poison"},
                        {"attack", "file"},
                        {"made_by", p.attack},
                        {"attacker", p.algorithm},
                        {"kind", poison::noise_kind_name(p.kind)},
                        {"eps", p.eps},
                        {"ratio", p.ratio},
                        {"source", fs::absolute(job.file).string()},
                        {"seconds", seconds_since(t0)},
                        {"poison_file", poison_path(job.id)},
                        {"measured", nlohmann::json::object()}};
  if (writes_files()) write_json((fs::path(d) / "result.json").string(), result);
  sync_ranks();
  return result;
}

// ---- victims

namespace {

// The training set as a victim sees it: the poisoned images and which rows were poisoned, or
// only the rows a poison at the job's ratio would leave clean, or the clean images.
struct SeenSet {
  data::Dataset images;
  std::vector<int64_t> poisoned_rows;
};

SeenSet victim_training_set(const VictimJob& job, const data::Dataset& clean, const std::string& poison_file,
                            uint64_t seed) {
  SeenSet seen{clean, {}};
  if (!job.poison.empty()) {
    CP_CHECK(fs::exists(poison_file), job.id, "trains on ", poison_file, ", which has not been made");
    poison::Poison p = poison::load_poison(poison_file);
    seen.images = poison::apply_poison(clean, p);
    seen.poisoned_rows = p.indices.to_vector<int64_t>();
  } else if (job.clean_only) {
    auto poisoned = poison::choose_poisoned_indices(clean.size(), job.ratio, seed).to_vector<int64_t>();
    std::vector<char> is_poisoned(clean.size(), 0);
    for (int64_t i : poisoned) is_poisoned[i] = 1;
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < clean.size(); ++i)
      if (!is_poisoned[i]) keep.push_back(i);
    CP_CHECK(!keep.empty(), job.id, "no clean rows remain at ratio ", job.ratio);
    seen.images = data::subset(clean, keep);
  }
  return seen;
}

// The victim's TrainConfig: the settings' training (victim or supervised, the job's init), the
// algorithm's overrides, and a batch-transform defence after any batch hook.
algorithms::TrainConfig victim_train_config(const VictimJob& job, const Settings& s, const data::Dataset& seen,
                                            const data::Dataset& clean, const defense::Defense& def,
                                            const Runner::Options& options) {
  const Algo algo = algorithms::parse_algo(job.algo);
  const bool contrastive = algo != Algo::supervised;
  const TrainSettings& ts = contrastive ? s.victim : s.supervised;
  algorithms::TrainConfig tc;
  tc.algo = algo;
  tc.model = job.model;
  tc.model_options.width = s.width;
  tc.model_options.in_channels = seen.channels();
  TrainSettings tts = ts;
  if (!job.init.empty()) tts.init = job.init;
  apply_training(tts, seen, tc);
  tc.algo_config = contrastive ? algo_config(job.algo, s, false) : algorithms::AlgoConfig::defaults(algo);
  tc.batch_size = std::min<int64_t>(ts.batch_size, seen.size());
  if (contrastive && s.algo_settings(job.algo).lr > 0) tc.lr = s.algo_settings(job.algo).lr;
  tc.seed = s.seed;
  tc.device = options.device;
  tc.progress_seconds = options.progress_seconds;
  tc.extra_attrs = {{"dataset", job.data.dataset},   {"dataset_name", clean.name},
                    {"subset", job.data.subset},    {"subset_seed", job.data.subset_seed},
                    {"pad_to", job.data.pad_to},    {"channels", job.data.channels},
                    {"experiment_cell", job.id},    {"augment", ts.augment},
                    {"software", std::string("cpoison ") + CPOISON_VERSION}};
  if (def.is_batch_transform()) defense::chain_batch_hook(tc, def);
  return tc;
}

struct TrainedVictim {
  std::shared_ptr<algorithms::Learner> learner;
  nlohmann::json info;  // train.json's content
};

// Trains the victim in the cell's folder `d` (resuming from its checkpoint), or loads it when
// train.json says training finished; writes train.json after training.
TrainedVictim train_or_load_victim(algorithms::TrainConfig& tc, const data::Dataset& seen, const defense::Defense& def,
                                   const std::string& d, Device device) {
  const std::string ckpt = (fs::path(d) / "victim.h5").string();
  const std::string train_done = (fs::path(d) / "train.json").string();
  TrainedVictim v;
  if (fs::exists(train_done) && (fs::exists(ckpt) || def.is_loss_hook())) {
    v.info = read_json(train_done);
  }
  const auto t_train = Clock::now();
  if (!v.info.is_null() && fs::exists(ckpt)) {
    v.learner = algorithms::load_learner(ckpt);
    v.learner->to(device);
    return v;
  }
  tc.checkpoint_path = ckpt;
  tc.resume = true;
  tc.log_path = (fs::path(d) / "victim.jsonl").string();
  // train_adversarial is algorithms::train with the adversarial loss hook (the contrastive or
  // the supervised one, by the victim's algorithm): it checkpoints and resumes like any victim.
  algorithms::TrainResult tr = def.is_loss_hook() ? defense::train_with_defense(seen, tc, def) : algorithms::train(seen, tc);
  v.learner = tr.learner;
  double img_s = 0, secs = 0;
  for (const auto& h : tr.history) secs += h.seconds, img_s += h.images_per_s * h.seconds;
  v.info = {{"epochs", tr.epochs_done},
            {"epochs_this_run", (int64_t)tr.history.size()},
            {"final_loss", tr.history.empty() ? nlohmann::json(nullptr) : nlohmann::json(tr.history.back().loss)},
            {"images", seen.size()},
            {"seconds", seconds_since(t_train)},
            {"images_per_s", secs > 0 ? img_s / secs : 0.0}};
  if (writes_files()) write_json(train_done, v.info);
  return v;
}

// What a victim's evaluation reads.
struct VictimData {
  const data::Dataset& clean;
  const data::Dataset& seen;
  const data::Dataset& test;
  const std::vector<int64_t>& poisoned_rows;
  std::vector<double> mean, stddev;  // the clean images' normalisation
};

// The L-BFGS probes on features: fitted on the images the victim saw ("poisoned") and on the
// clean ones ("clean"; the same fit when they are the same images). Returns the images forwarded.
double probe_features(models::Encoder& enc, const VictimData& v, bool same, const EvalSettings& ev, Device device,
                      nlohmann::json& probe) {
  algorithms::FeatureProbeOptions fo;
  fo.max_iterations = ev.iterations;
  fo.l2 = ev.l2;
  Tensor f_test = algorithms::extract_features(enc, v.test, v.mean, v.stddev, ev.batch_size, device).to(Device::cpu);
  Tensor f_seen = algorithms::extract_features(enc, v.seen, v.mean, v.stddev, ev.batch_size, device).to(Device::cpu);
  double forwarded = (double)(v.test.size() + v.seen.size());
  auto r = algorithms::linear_probe_features(f_seen, v.seen.labels, f_test, v.test.labels, v.clean.classes, fo);
  probe["poisoned"] = r.final_accuracy;
  probe["poisoned_train_accuracy"] = r.train_accuracy;
  probe["iterations"] = r.iterations;
  if (ev.clean_probe && !same) {
    Tensor f_clean = algorithms::extract_features(enc, v.clean, v.mean, v.stddev, ev.batch_size, device).to(Device::cpu);
    forwarded += (double)v.clean.size();
    probe["clean"] =
        algorithms::linear_probe_features(f_clean, v.clean.labels, f_test, v.test.labels, v.clean.classes, fo).final_accuracy;
  } else if (ev.clean_probe) {
    probe["clean"] = r.final_accuracy;
  }
  return forwarded;
}

// The spec's SGD probes (augmented images through the frozen encoder), as probe_features.
double probe_sgd(models::Encoder& enc, const VictimData& v, bool same, const EvalSettings& ev, uint64_t seed,
                 Device device, nlohmann::json& probe) {
  algorithms::SgdProbeOptions so;
  so.epochs = ev.sgd_epochs;
  so.batch_size = ev.sgd_batch_size;
  so.lr = ev.sgd_lr;
  so.seed = seed;
  so.device = device;
  so.augment = algorithms::make_augment(augment::Recipe::crop_flip, v.clean);
  auto r = algorithms::linear_probe_sgd(enc, v.seen, v.test, so);
  probe["poisoned"] = r.final_accuracy;
  probe["poisoned_best"] = r.best_accuracy;
  double forwarded = (double)(ev.sgd_epochs * (v.seen.size() + v.test.size()));
  if (ev.clean_probe && !same) {
    auto rc = algorithms::linear_probe_sgd(enc, v.clean, v.test, so);
    probe["clean"] = rc.final_accuracy;
    probe["clean_best"] = rc.best_accuracy;
    forwarded += (double)(ev.sgd_epochs * (v.clean.size() + v.test.size()));
  } else if (ev.clean_probe) {
    probe["clean"] = r.final_accuracy;
    probe["clean_best"] = r.best_accuracy;
  }
  return forwarded;
}

// A contrastive victim's linear probes and, on poisoned rows (all rows for a clean victim), the
// alignment of the same augmentation draws applied to the poisoned and the clean version of each
// image. Fills result["probe"] and result["alignment"]; returns the images forwarded.
double evaluate_contrastive(algorithms::Learner& learner, const VictimJob& job, const VictimData& v,
                            const augment::AugmentConfig& augment, const Settings& s, Device device,
                            nlohmann::json& result) {
  const EvalSettings& ev = s.eval;
  nlohmann::json probe{{"mode", ev.probe}};
  const bool same = job.poison.empty() && !job.clean_only;  // the victim saw the clean images
  double forwarded = ev.probe == "features" ? probe_features(learner.encoder(), v, same, ev, device, probe)
                                            : probe_sgd(learner.encoder(), v, same, ev, s.seed, device, probe);
  result["probe"] = probe;
  if (ev.alignment_images > 0 && !job.clean_only) {
    std::vector<int64_t> rows = v.poisoned_rows;
    if (rows.empty())
      for (int64_t i = 0; i < v.clean.size(); ++i) rows.push_back(i);
    if ((int64_t)rows.size() > ev.alignment_images) rows.resize(ev.alignment_images);
    Tensor rows_t = Tensor::from_vector(rows, {(int64_t)rows.size()});
    Tensor p_u8 = index_select0(v.seen.images, rows_t), c_u8 = index_select0(v.clean.images, rows_t);
    Generator gen(s.seed, 0xA119);
    auto a = algorithms::alignment(learner, p_u8, c_u8, augment, gen, (int64_t)rows.size(), 256, device);
    result["alignment"] = {{"poisoned", a.poisoned}, {"clean", a.clean}, {"images", a.images}};
    forwarded += 4.0 * (double)a.images;
  }
  return forwarded;
}

// A supervised victim's own test and training accuracy (result["supervised"]); returns the
// images forwarded.
double evaluate_supervised(algorithms::Learner& learner, const VictimData& v, const EvalSettings& ev, Device device,
                           nlohmann::json& result) {
  double test_acc = algorithms::classifier_accuracy(learner, v.test, v.mean, v.stddev, ev.batch_size, device);
  double train_acc = algorithms::classifier_accuracy(learner, v.seen, v.mean, v.stddev, ev.batch_size, device);
  result["supervised"] = {{"test_accuracy", test_acc}, {"train_accuracy", train_acc}};
  return (double)(v.test.size() + v.seen.size());
}

// The throughputs this run measured (resnet18-equivalent), for later estimates: training (when
// it trained, without a defence) and feature extraction (features probe, a second or more).
nlohmann::json victim_rates(const VictimJob& job, bool contrastive, const nlohmann::json& train_info,
                            const defense::Defense& def, double forwarded, double eval_seconds, const Settings& s) {
  nlohmann::json measured = nlohmann::json::object();
  const double factor = s.cost.model_factor.of(job.model);
  const double img_s = train_info.value("images_per_s", 0.0);
  if (img_s > 0 && train_info.value("epochs_this_run", 0) > 0 && def.kind == defense::DefenseKind::none) {
    if (contrastive) measured[job.algo + "_views_per_s"] = 2.0 * img_s * factor;
    else measured["supervised_images_per_s"] = img_s * factor;
  }
  if (forwarded > 0 && s.eval.probe == "features" && eval_seconds > 1.0)
    measured["feature_images_per_s"] = forwarded / eval_seconds * factor;
  return measured;
}

}  // namespace

// A victim: its training set, training (or its finished checkpoint), evaluation, result.json.
nlohmann::json Runner::run_victim(const VictimJob& job, const std::map<std::string, const PoisonJob*>& poisons) {
  nlohmann::json done = cached(job.id, job.config);
  if (!done.is_null()) return done;
  const data::Dataset& clean = train_set(job.data);
  const data::Dataset& test = test_set(job.data);
  const bool contrastive = algorithms::parse_algo(job.algo) != Algo::supervised;
  CP_CHECK(job.poison.empty() || poisons.count(job.poison), job.id, "needs poison ", job.poison);
  const SeenSet seen = victim_training_set(job, clean, job.poison.empty() ? "" : poison_path(job.poison), settings_.seed);
  const std::string d = prepare(job.id, job.config);
  const defense::Defense def = defense::parse_defense(job.defense);
  algorithms::TrainConfig tc = victim_train_config(job, settings_, seen.images, clean, def, options_);
  const TrainedVictim trained = train_or_load_victim(tc, seen.images, def, d, options_.device);
  const std::string result_path = (fs::path(d) / "result.json").string();
  if (!writes_files()) {  // rank 0 evaluates the (replicated) victim alone
    sync_ranks();
    return read_json(result_path);
  }

  const auto t_eval = Clock::now();
  VictimData v{clean, seen.images, test, seen.poisoned_rows, {}, {}};
  algorithms::dataset_normalization(clean, v.mean, v.stddev);
  nlohmann::json result{{"id", job.id},           {"job", "victim"},     {"algo", job.algo},
                        {"model", job.model},     {"poison", job.poison}, {"clean_only", job.clean_only},
                        {"defense", job.defense}, {"train", trained.info}, {"device", options_.device == Device::cuda ? "cuda" : "cpu"}};
  const double forwarded = contrastive
                               ? evaluate_contrastive(*trained.learner, job, v, tc.augment, settings_, options_.device, result)
                               : evaluate_supervised(*trained.learner, v, settings_.eval, options_.device, result);
  const double eval_seconds = seconds_since(t_eval);
  result["eval_seconds"] = eval_seconds;
  result["seconds"] = trained.info.value("seconds", 0.0) + eval_seconds;
  result["measured"] = victim_rates(job, contrastive, trained.info, def, forwarded, eval_seconds, settings_);
  if (distributed::size() > 1) result["ranks"] = distributed::size();
  write_json(result_path, result);
  sync_ranks();
  return result;
}

// ---- the random-init baseline

std::string Runner::random_encoder_id(const std::string& model) const {
  return "random-encoder" + (model != settings_.model ? "-" + model : std::string());
}

nlohmann::json Runner::random_encoder_config(const DataSettings& data, const std::string& model) const {
  DataSettings dc = data;
  EvalSettings ec = settings_.eval;
  return {{"job", "random-encoder"},
          {"train", {{"model", model}, {"width", settings_.width}, {"seed", settings_.seed}, {"data", to_json_fields(dc)}}},
          {"eval", to_json_fields(ec)}};
}

nlohmann::json Runner::run_random_encoder(const DataSettings& data, const std::string& model) {
  const nlohmann::json config = random_encoder_config(data, model);
  const std::string id = random_encoder_id(model);
  nlohmann::json done = cached(id, config);
  if (!done.is_null()) return done;
  const data::Dataset& train = train_set(data);
  const data::Dataset& test = test_set(data);
  std::string d = prepare(id, config);
  const auto t0 = Clock::now();
  nn::manual_seed(settings_.seed);
  models::ModelOptions mo;
  mo.width = settings_.width;
  mo.in_channels = train.channels();
  models::EncoderPtr enc = models::make_encoder(model, mo);
  enc->to(options_.device);
  // The victims' probes, fitted on the clean training images (the poisoned and the clean probe
  // are the same fit).
  VictimData v{train, train, test, {}, {}, {}};
  algorithms::dataset_normalization(train, v.mean, v.stddev);
  nlohmann::json probe{{"mode", settings_.eval.probe}};
  if (settings_.eval.probe == "features") probe_features(*enc, v, true, settings_.eval, options_.device, probe);
  else probe_sgd(*enc, v, true, settings_.eval, settings_.seed, options_.device, probe);
  probe["clean"] = probe["poisoned"];
  nlohmann::json result{{"id", id}, {"job", "random-encoder"}, {"model", model}, {"probe", probe},
                        {"seconds", seconds_since(t0)}, {"measured", nlohmann::json::object()}};
  if (writes_files()) write_json((fs::path(d) / "result.json").string(), result);
  sync_ranks();
  return result;
}

// ---------------------------------------------------------------- estimates

Rates Runner::rates() const {
  Rates r;
  CostSettings c = settings_.cost;
  nlohmann::json defaults = to_json_fields(c);
  for (auto it = defaults.begin(); it != defaults.end(); ++it)
    if (it.value().is_number()) r.per_key[it.key()] = it.value().get<double>();
  // Measured rates: the mean over finished cells (each cell one vote).
  std::map<std::string, std::pair<double, int>> sums;
  std::error_code ec;
  if (fs::is_directory(options_.root, ec)) {
    for (const auto& e : fs::directory_iterator(options_.root)) {
      fs::path res = e.path() / "result.json";
      if (!fs::exists(res)) continue;
      nlohmann::json j;
      try {
        j = read_json(res.string());
      } catch (const Error&) {
        continue;  // a damaged file is the cell's problem, not the estimate's
      }
      if (!j.contains("measured") || !j["measured"].is_object()) continue;
      for (auto it = j["measured"].begin(); it != j["measured"].end(); ++it)
        if (it.value().is_number() && it.value().get<double>() > 0) {
          sums[it.key()].first += it.value().get<double>();
          sums[it.key()].second += 1;
        }
    }
  }
  for (const auto& [k, v] : sums) {
    r.per_key[k] = v.first / v.second;
    r.measured[k] = true;
  }
  return r;
}

namespace {
double rate(const Rates& r, const std::string& key) {
  auto it = r.per_key.find(key);
  CP_CHECK(it != r.per_key.end() && it->second > 0, "estimate", "no rate '", key, "'");
  return it->second;
}
}  // namespace

double Runner::estimate(const PoisonJob& job, const Rates& r) {
  if (job.attack == "file" || synthetic(job.attack)) return 1.0;
  const int64_t n = train_size(job.data);
  poison::PoisonConfig c = poison_config(job, settings_, shape_stand_in(job.data));
  double views = poison_round_views(c, n, is_contrastive(job.attacker)) * (double)c.rounds;
  if (c.attack == poison::Attack::adversarial) views += (double)(c.pretrain_epochs * n);
  return views / rate(r, "poison_views_per_s") * settings_.cost.model_factor.of(job.model);
}

double Runner::estimate(const VictimJob& job, const Rates& r) {
  const bool contrastive = is_contrastive(job.algo);
  const TrainSettings& ts = contrastive ? settings_.victim : settings_.supervised;
  int64_t n = train_size(job.data);
  if (job.clean_only) n -= (int64_t)std::llround(job.ratio * (double)n);
  n = std::max<int64_t>(n, 1);
  const int64_t bs = std::min<int64_t>(ts.batch_size, n);
  const double per_epoch = (double)(n / bs * bs);
  const double factor = settings_.cost.model_factor.of(job.model);
  double defense_factor = 1.0;
  defense::Defense def = defense::parse_defense(job.defense);
  if (def.kind == defense::DefenseKind::adversarial) defense_factor = 1.0 + (double)def.adversarial.steps;
  if (def.kind == defense::DefenseKind::ueraser) defense_factor = (double)def.ueraser.k;
  double train = contrastive ? (double)ts.epochs * per_epoch * 2.0 / rate(r, job.algo + "_views_per_s")
                             : (double)ts.epochs * per_epoch / rate(r, "supervised_images_per_s");
  train *= factor * defense_factor;
  const EvalSettings& ev = settings_.eval;
  const double test_n = (double)test_size_guess(job.data);
  double eval_images = 0, fits = 0;
  if (!contrastive) {
    eval_images = test_n + (double)n;
  } else if (ev.probe == "features") {
    eval_images = test_n + (double)n * (job.poison.empty() ? 1.0 : 2.0);
    fits = job.poison.empty() ? 1 : 2;
    if (ev.alignment_images > 0) eval_images += 4.0 * (double)std::min<int64_t>(ev.alignment_images, n);
  } else {
    eval_images = (double)ev.sgd_epochs * ((double)n + test_n) * (job.poison.empty() ? 1.0 : 2.0);
  }
  return train + eval_images / rate(r, "feature_images_per_s") * factor + fits * rate(r, "probe_seconds");
}

}  // namespace cpoison::tools::experiment
