#include "tools/experiment/demo.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "engine/error.h"
#include "tools/common.h"
#include "tools/experiment/cells.h"
#include "tools/experiment/runner.h"

namespace cpoison::tools::experiment {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

DemoAttack demo_attack(const std::string& name) {
  static const std::vector<DemoAttack> known{
      {"cp-c", "cp-c", "simclr", "class", "CP-C (SimCLR attacker)"},
      {"cp-s", "cp-s", "simclr", "sample", "CP-S (SimCLR attacker)"},
      {"random-class", "random", "none", "class", "random class-wise noise"},
      {"pattern", "pattern", "none", "class", "class-wise gratings (no optimisation)"},
      {"ue-class", "unlearnable", "supervised", "class", "UE class-wise (supervised attacker)"},
      {"ue", "unlearnable", "supervised", "sample", "UE (supervised attacker)"},
      {"aue-class", "aue", "supervised", "class", "AUE class-wise (supervised attacker)"},
      {"aue", "aue", "supervised", "sample", "AUE (supervised attacker)"},
      {"aap", "aap", "supervised", "sample", "AAP (supervised attacker)"},
  };
  std::string names;
  for (const auto& a : known) {
    if (a.name == name) return a;
    names += (names.empty() ? "" : ", ") + a.name;
  }
  fail("demo", "unknown attack '", name, "' (choose ", names, ")");
}

namespace {

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec +
         1e-6 * (double)u.ru_stime.tv_usec;
}

int64_t scaled(int64_t n, double f) { return std::max<int64_t>(1, (int64_t)std::llround((double)n * f)); }

std::string fmt(double v, const char* f) {
  if (std::isnan(v)) return "–";
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

double num(const nlohmann::json& j, const char* a, const char* b) {
  if (j.is_null() || !j.contains(a) || !j[a].is_object() || !j[a].contains(b) || !j[a][b].is_number()) return std::nan("");
  return j[a][b].get<double>();
}

nlohmann::json or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

// docs/cpu-scale-reference.md, N = 5000 (8/255): the independent PyTorch implementation's numbers.
struct Reference {
  double probe = std::nan(""), clean_probe = std::nan(""), align_p = std::nan(""), align_c = std::nan(""),
         supervised = std::nan("");
};
Reference reference_of(const std::string& stage, const DemoAttack& cls, const DemoAttack& con) {
  const double nan = std::nan("");
  if (stage == "random-encoder") return {67.8, 67.8};
  if (stage == "simclr-clean") return {80.1, 80.1, 0.193, 0.193};
  if (stage == "simclr-uniform") return {79.3, 79.4, 0.191, 0.193};
  if (stage == "simclr-contrastive" && con.name == "cp-s") return {78.6, 79.4, 0.181, 0.227};
  if (stage == "simclr-contrastive" && con.name == "cp-c") return {78.1, 80.1, 0.190, 0.208};
  if (stage == "supervised-clean") return {nan, nan, nan, nan, 87.0};
  if (stage == "supervised-class" && cls.name == "cp-c") return {nan, nan, nan, nan, 47.8};
  if (stage == "supervised-class" && cls.name == "random-class") return {nan, nan, nan, nan, 65.0};
  return {};
}

// The measured values of one stage of one seed.
struct StageValues {
  double probe = std::nan(""), clean_probe = std::nan(""), align_p = std::nan(""), align_c = std::nan(""),
         supervised = std::nan(""), seconds = std::nan("");
  bool cached = false, ran = false;
  nlohmann::json to_json() const {
    return {{"probe", or_null(probe)},     {"clean_probe", or_null(clean_probe)}, {"align_poisoned", or_null(align_p)},
            {"align_clean", or_null(align_c)}, {"supervised", or_null(supervised)},   {"seconds", or_null(seconds)},
            {"cached", cached}};
  }
};

struct SeedRun {
  uint64_t seed = 0;
  std::map<std::string, StageValues> stages;
  std::vector<std::string> order;
  nlohmann::json checks = nlohmann::json::array();
  std::map<std::string, std::string> ids;  // stage -> cell id
  std::string cross_note;                  // why the SimCLR victim on the class-wise attack did not run
  std::string dir;
  double total_seconds = 0, total_cpu = 0;
  bool all_cpu = true;
};

// The stages of the demo, in order, with their table labels.
struct StageInfo {
  std::string key, stage_label, data_label;
};

// One seed of the demo: every stage in `dir`, then the checks.
SeedRun run_seed(const DemoOptions& o, Settings s, uint64_t seed, const std::string& dir, const DemoAttack& cls,
                 const DemoAttack& con) {
  s.seed = seed;
  SeedRun run;
  run.seed = seed;
  run.dir = dir;
  fs::create_directories(dir);
  Runner::Options ro;
  ro.root = dir;
  ro.device = o.device;
  ro.data_root = o.data_root;
  ro.redo_changed = true;  // a demo rerun with other knobs replaces the old stages
  ro.progress_seconds = o.progress_seconds;
  Runner runner(s, ro);
  const bool verbose = o.progress_seconds >= 0;

  auto job_of = [&](const DemoAttack& a) {
    return make_poison_job(a.attack, a.attacker, a.kind, true, o.eps, 1.0, s.model, s.data, s);
  };
  PoisonJob class_job = job_of(cls), con_job = job_of(con);
  PoisonJob noise = make_poison_job("random", "none", "sample", true, o.eps, 1.0, s.model, s.data, s);
  // A chained poison's start (CP-S from CP-C) is a job of its own.
  std::vector<PoisonJob> starts;
  for (const PoisonJob* j : {&class_job, &con_job})
    if (j->init) starts.push_back(*j->init);
  std::map<std::string, const PoisonJob*> poisons{{class_job.id, &class_job}, {con_job.id, &con_job}, {noise.id, &noise}};
  for (const auto& j : starts) poisons[j.id] = &j;
  auto victim = [&](const std::string& algo, const PoisonJob* p) {
    return make_victim_job(algo, s.model, s.data, p, false, 1.0, "none", s);
  };

  // Stage timings: this run's wall and CPU seconds; a cached stage keeps those of its run.
  const std::string stages_path = (fs::path(dir) / "stages.json").string();
  nlohmann::json stages = fs::exists(stages_path) ? read_json(stages_path) : nlohmann::json::object();
  const auto t_seed = Clock::now();
  std::set<std::string> done_ids;
  auto stage = [&](const std::string& key, const std::string& id, const nlohmann::json& config,
                   const std::function<nlohmann::json()>& body) {
    run.ids[key] = id;
    if (done_ids.count(id)) {  // the same cell under two names (the class-wise attack is also the contrastive one)
      run.stages[key] = run.stages[*std::find_if(run.order.begin(), run.order.end(), [&](const std::string& k) { return run.ids[k] == id; })];
      run.stages[key].seconds = 0;
      run.order.push_back(key);
      return;
    }
    const bool was_done = runner.status(id, config) == "done";
    const double w0 = std::chrono::duration<double>(Clock::now() - t_seed).count(), c0 = cpu_seconds();
    if (verbose) std::fprintf(stderr, "[demo] seed %llu: %s (%s)%s\n", (unsigned long long)seed, key.c_str(), id.c_str(), was_done ? ": cached" : "");
    nlohmann::json r = body();
    const double wall = std::chrono::duration<double>(Clock::now() - t_seed).count() - w0, cpu = cpu_seconds() - c0;
    if (!was_done || !stages.contains(id))
      stages[id] = {{"seconds", was_done ? r.value("seconds", wall) : wall},
                    {"cpu_seconds", was_done ? nlohmann::json(nullptr) : nlohmann::json(cpu)}};
    stages[id]["cached"] = was_done;
    write_json(stages_path, stages);
    StageValues v;
    v.probe = num(r, "probe", "poisoned");
    v.clean_probe = num(r, "probe", "clean");
    v.align_p = num(r, "alignment", "poisoned");
    v.align_c = num(r, "alignment", "clean");
    v.supervised = num(r, "supervised", "test_accuracy");
    v.seconds = stages[id].value("seconds", wall);
    v.cached = was_done;
    v.ran = true;
    run.total_seconds += v.seconds;
    const auto& c = stages[id]["cpu_seconds"];
    if (c.is_number()) run.total_cpu += c.get<double>();
    else run.all_cpu = false;
    run.stages[key] = v;
    run.order.push_back(key);
    done_ids.insert(id);
    if (verbose)
      std::fprintf(stderr, "[demo] seed %llu: %s: %.1f s wall%s\n", (unsigned long long)seed, key.c_str(), wall,
                   was_done ? " (cached)" : (", " + fmt(cpu, "%.1f") + " s CPU").c_str());
  };

  stage("random-encoder", runner.random_encoder_id(s.model), runner.random_encoder_config(s.data, s.model),
        [&] { return runner.run_random_encoder(s.data, s.model); });
  for (const auto& j : starts) stage("poison-start", j.id, j.config, [&] { return runner.run_poison(j, poisons); });
  stage("poison-class", class_job.id, class_job.config, [&] { return runner.run_poison(class_job, poisons); });
  stage("poison-contrastive", con_job.id, con_job.config, [&] { return runner.run_poison(con_job, poisons); });
  stage("poison-uniform", noise.id, noise.config, [&] { return runner.run_poison(noise, poisons); });
  std::vector<std::pair<std::string, VictimJob>> victims{
      {"supervised-clean", victim("supervised", nullptr)}, {"supervised-uniform", victim("supervised", &noise)},
      {"supervised-class", victim("supervised", &class_job)}, {"simclr-clean", victim("simclr", nullptr)},
      {"simclr-uniform", victim("simclr", &noise)},          {"simclr-contrastive", victim("simclr", &con_job)}};
  double simclr_seconds = 0;
  int simclr_count = 0;
  for (auto& [key, job] : victims) {
    stage(key, job.id, job.config, [&, j = job] { return runner.run_victim(j, poisons); });
    if (key.rfind("simclr", 0) == 0) simclr_seconds += run.stages[key].seconds, ++simclr_count;
  }
  // The SimCLR victim on the class-wise attack's data, when the budget allows.
  if (class_job.id != con_job.id) {
    VictimJob cross = victim("simclr", &class_job);
    const bool cached = runner.status(cross.id, cross.config) == "done";
    const double so_far = std::chrono::duration<double>(Clock::now() - t_seed).count();
    const double need = simclr_count > 0 ? simclr_seconds / simclr_count : 0;
    bool go = o.cross_victim == "yes" || cached || (o.cross_victim == "auto" && so_far + need <= o.budget_minutes * 60);
    if (o.cross_victim == "no") go = false;
    if (go) {
      stage("simclr-class", cross.id, cross.config, [&] { return runner.run_victim(cross, poisons); });
    } else {
      run.cross_note = o.cross_victim == "no" ? "skipped (--cross-victim no)"
                                              : "skipped: " + fmt(so_far / 60, "%.1f") + " min so far + about " +
                                                    fmt(need / 60, "%.1f") + " min would pass the " +
                                                    fmt(o.budget_minutes, "%g") + "-minute budget";
      if (verbose) std::fprintf(stderr, "[demo] seed %llu: simclr-class %s\n", (unsigned long long)seed, run.cross_note.c_str());
    }
  }

  // ---- the checks (docs/experiments.md, "The demo's acceptance checks")
  auto get = [&](const std::string& k) { return run.stages.count(k) ? run.stages[k] : StageValues{}; };
  auto check = [&](const std::string& what, double measured_v, bool known, bool pass, const std::string& detail) {
    run.checks.push_back({{"check", what},
                          {"result", !known ? "n/a" : pass ? "pass" : "FAIL"},
                          {"value", or_null(measured_v)},
                          {"measured", detail}});
  };
  const double sc = get("simclr-clean").probe, su = get("simclr-uniform").probe, sp = get("simclr-contrastive").probe;
  const double margin = std::min(sc, su) - sp;
  check("SimCLR victim on " + con.label + " probes >= 5 points below both the clean and the uniform-noise victims",
        margin, !std::isnan(margin), margin >= 5.0,
        fmt(sp, "%.1f") + " vs clean " + fmt(sc, "%.1f") + ", uniform " + fmt(su, "%.1f") + ": " + fmt(margin, "%.1f") +
            " points below the lower");
  const double vc = get("supervised-class").supervised;
  check("supervised victim on " + cls.label + " tests <= 40%", vc, !std::isnan(vc), vc <= 40.0, fmt(vc, "%.1f%%"));
  const double uc = get("supervised-clean").supervised, uu = get("supervised-uniform").supervised;
  check("supervised victim on uniform noise within 2 points of clean", uu - uc, !std::isnan(uu - uc),
        std::fabs(uu - uc) <= 2.0, fmt(uu, "%.1f") + " vs " + fmt(uc, "%.1f"));
  check("SimCLR victim on uniform noise within 2 points of clean", su - sc, !std::isnan(su - sc), std::fabs(su - sc) <= 2.0,
        fmt(su, "%.1f") + " vs " + fmt(sc, "%.1f"));
  return run;
}

// Mean ± sd over the seeds that have the value ("–" when none; a bare value for one seed).
struct Stat {
  double mean = std::nan(""), sd = std::nan("");
  int n = 0;
};
Stat stat_of(const std::vector<double>& xs) {
  Stat s;
  double sum = 0;
  for (double x : xs)
    if (!std::isnan(x)) sum += x, ++s.n;
  if (s.n == 0) return s;
  s.mean = sum / s.n;
  if (s.n > 1) {
    double ss = 0;
    for (double x : xs)
      if (!std::isnan(x)) ss += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(ss / (s.n - 1));
  }
  return s;
}
std::string fmt_stat(const Stat& s, const char* f) {
  if (s.n == 0) return "–";
  if (s.n == 1) return fmt(s.mean, f);
  return fmt(s.mean, f) + " ± " + fmt(s.sd, f);
}
nlohmann::json stat_json(const Stat& s) { return {{"mean", or_null(s.mean)}, {"sd", or_null(s.sd)}, {"n", s.n}}; }

}  // namespace

nlohmann::json run_demo(const DemoOptions& o_in) {
  DemoOptions o = o_in;
  if (o.quick) {
    o.images = std::min<int64_t>(o.images, 200);
    if (o.test_images == 0) o.test_images = 500;
    o.width = std::min<int64_t>(o.width, 4);
    o.victim_epochs = o.supervised_epochs = o.cp_c_rounds = o.cp_s_rounds = 1;
    o.scale = 1.0;
  }
  CP_CHECK(o.scale > 0 && o.scale <= 10, "demo --scale", "must be in (0, 10], got ", o.scale);
  CP_CHECK(o.images >= 20, "demo --images", "needs at least 20 images, got ", o.images);
  CP_CHECK(o.cross_victim == "auto" || o.cross_victim == "yes" || o.cross_victim == "no", "demo --cross-victim",
           "auto, yes or no, got '", o.cross_victim, "'");
  CP_CHECK(o.eps > 0 && o.eps <= 1, "demo --eps", "outside (0, 1]: ", o.eps);
  const DemoAttack cls = demo_attack(o.class_attack), con = demo_attack(o.contrastive_attack);
  CP_CHECK(cls.kind == "class", "demo --class-attack", "'", cls.name, "' is not class-wise (choose cp-c, random-class, pattern, ue-class, aue-class)");
  std::vector<uint64_t> seeds = o.seeds.empty() ? std::vector<uint64_t>{o.seed} : o.seeds;
  {
    std::set<uint64_t> unique(seeds.begin(), seeds.end());
    CP_CHECK(unique.size() == seeds.size(), "demo --seeds", "a seed is listed twice");
  }

  // The cpu-small scale of tools/presets/scales.toml (so that the demo's cells are the attacks
  // table's: results/attacks/cpu-small/seed-K/ can take results/demo/seed-K/), else the C++
  // defaults (docs/cpu-scale-reference.md's settings); then the demo's knobs.
  Settings s;
  std::string settings_source = "tools/presets/scales.toml [cpu-small]";
  try {
    s = load_scale_settings("cpu-small");
  } catch (const Error&) {
    settings_source = "the built-in defaults (no tools/presets/scales.toml found)";
  }
  s.data.dataset = o.data;
  s.data.subset = o.images;
  s.data.test_subset = o.test_images;
  s.width = o.width;
  s.seed = seeds[0];
  s.victim.epochs = scaled(o.victim_epochs, o.scale);
  s.supervised.epochs = scaled(o.supervised_epochs, o.scale);
  s.poison.cp_c_rounds = scaled(o.cp_c_rounds, o.scale);
  s.poison.cp_s_rounds = scaled(o.cp_s_rounds, o.scale);
  s.poison.eps = o.eps;
  s.poison.cp_s_init = o.cp_s_init;
  if (o.quick) {
    s.victim.batch_size = s.supervised.batch_size = s.poison.batch_size = 64;
    s.poison.cp_c_model_steps = s.poison.cp_c_noise_batches = 2;
    s.poison.unlearnable_rounds = s.poison.unlearnable_model_steps = s.poison.unlearnable_pgd_steps = 1;
    s.eval.iterations = 50;
    s.eval.alignment_images = 100;
  }
  s.validate("demo");

  if (o.fresh && fs::exists(o.out)) {
    // Only what the demo writes: its cell folders, seed folders and summary files.
    for (const auto& e : fs::directory_iterator(o.out)) {
      std::string name = e.path().filename().string();
      bool ours = name.rfind("poison-", 0) == 0 || name.rfind("victim-", 0) == 0 || name.rfind("random-encoder", 0) == 0 ||
                  name.rfind("seed-", 0) == 0 || name == "table.md" || name == "summary.json" || name == "stages.json";
      if (ours) fs::remove_all(e.path());
    }
  }
  fs::create_directories(o.out);
  const bool per_seed_dirs = !o.seeds.empty();
  std::vector<SeedRun> runs;
  for (uint64_t seed : seeds) {
    std::string dir = per_seed_dirs ? (fs::path(o.out) / ("seed-" + std::to_string(seed))).string() : o.out;
    runs.push_back(run_seed(o, s, seed, dir, cls, con));
  }

  // What differs from docs/cpu-scale-reference.md.
  std::vector<std::string> scaled_notes;
  auto note = [&](const std::string& what, double ref, double now) {
    if (ref != now) scaled_notes.push_back(what + " " + fmt(ref, "%g") + " → " + fmt(now, "%g"));
  };
  note("training images", 5000, (double)o.images);
  note("width", 8, (double)s.width);
  note("SimCLR victim epochs", 30, (double)s.victim.epochs);
  note("supervised epochs", 15, (double)s.supervised.epochs);
  if (cls.attack == "cp-c" || con.attack == "cp-c" || (con.attack == "cp-s" && s.poison.cp_s_init == "cp-c"))
    note("CP-C rounds", 10, (double)s.poison.cp_c_rounds);
  if (con.attack == "cp-s") {
    note("CP-S rounds", 12, (double)s.poison.cp_s_rounds);
    if (s.poison.cp_s_init != "uniform") scaled_notes.push_back("CP-S starts from the CP-C poison, not from uniform noise");
  }
  if (std::fabs(o.eps - 8.0 / 255.0) > 1e-12) scaled_notes.push_back("eps 8/255 → " + format_pixels(o.eps));
  if (o.test_images > 0) scaled_notes.push_back("test images 10000 → " + std::to_string(o.test_images));
  if (o.quick) scaled_notes.push_back("--quick (batch 64, 1-2 steps per round, 50 L-BFGS iterations, 100 alignment images)");

  // ---- the table: each stage's values over the seeds
  std::vector<StageInfo> rows{{"random-encoder", "random-init encoder", "clean (no training)"},
                              {"poison-start", "CP-C poison (start of CP-S)", std::to_string(s.poison.cp_c_rounds) + " rounds"},
                              {"poison-class", cls.label, "class-wise, eps " + format_pixels(o.eps)},
                              {"poison-contrastive", con.label, con.kind + "-wise, eps " + format_pixels(o.eps)},
                              {"poison-uniform", "uniform noise", "U(-eps, eps), sample-wise"},
                              {"supervised-clean", "supervised victim", "clean"},
                              {"supervised-uniform", "supervised victim", "uniform noise"},
                              {"supervised-class", "supervised victim", cls.label},
                              {"simclr-clean", "SimCLR victim", "clean"},
                              {"simclr-uniform", "SimCLR victim", "uniform noise"},
                              {"simclr-contrastive", "SimCLR victim", con.label},
                              {"simclr-class", "SimCLR victim", cls.label}};
  auto values = [&](const std::string& key, double StageValues::*field) {
    std::vector<double> xs;
    for (const auto& r : runs) xs.push_back(r.stages.count(key) ? r.stages.at(key).*field : std::nan(""));
    return xs;
  };
  auto any_ran = [&](const std::string& key) {
    for (const auto& r : runs)
      if (r.stages.count(key)) return true;
    return false;
  };
  std::string seed_list;
  for (uint64_t k : seeds) seed_list += (seed_list.empty() ? "" : ", ") + std::to_string(k);
  std::string md = "### cpoison demo: availability poisoning of Fashion-MNIST (" + o.data + ")\n\n";
  md += seeds.size() == 1 ? "One seed (" + seed_list + ").\n\n"
                          : "Mean ± sd over n = " + std::to_string(seeds.size()) + " seeds (" + seed_list + ").\n\n";
  md += "| stage | victim data | SimCLR probe % (poisoned) | SimCLR probe % (clean) | alignment poisoned / clean views | "
        "supervised test % | seconds | reference (docs/cpu-scale-reference.md) |\n";
  md += "|---|---|---:|---:|---|---:|---:|---|\n";
  for (const auto& row : rows) {
    if (!any_ran(row.key)) {
      if (row.key == "simclr-class" && !runs.empty() && !runs[0].cross_note.empty())
        md += "| " + row.stage_label + " | " + row.data_label + " | " + runs[0].cross_note + " | | | | | |\n";
      continue;
    }
    if (row.key == "poison-contrastive" && runs[0].ids["poison-contrastive"] == runs[0].ids["poison-class"]) continue;
    if (row.key == "simclr-class" && runs[0].ids.count("simclr-class") == 0) continue;
    Reference rf = reference_of(row.key, cls, con);
    Stat ap = stat_of(values(row.key, &StageValues::align_p)), ac = stat_of(values(row.key, &StageValues::align_c));
    std::string al = ap.n == 0 ? "–" : fmt_stat(ap, "%.3f") + " / " + fmt_stat(ac, "%.3f");
    std::string al_ref = std::isnan(rf.align_p) ? "" : "; " + fmt(rf.align_p, "%.3f") + " / " + fmt(rf.align_c, "%.3f");
    std::string ref = !std::isnan(rf.probe) ? fmt(rf.probe, "%.1f") + " / " + fmt(rf.clean_probe, "%.1f") + al_ref
                      : !std::isnan(rf.supervised) ? fmt(rf.supervised, "%.1f")
                                                   : "–";
    md += "| " + row.stage_label + " | " + row.data_label + " | " + fmt_stat(stat_of(values(row.key, &StageValues::probe)), "%.1f") +
          " | " + fmt_stat(stat_of(values(row.key, &StageValues::clean_probe)), "%.1f") + " | " + al + " | " +
          fmt_stat(stat_of(values(row.key, &StageValues::supervised)), "%.1f") + " | " +
          fmt_stat(stat_of(values(row.key, &StageValues::seconds)), "%.0f") + " | " + ref + " |\n";
  }
  double total = 0, total_cpu = 0;
  bool all_cpu = true;
  for (const auto& r : runs) total += r.total_seconds, total_cpu += r.total_cpu, all_cpu = all_cpu && r.all_cpu;
  md += "| total (per seed) | | | | | | " + fmt(total / (double)runs.size(), "%.0f") + " | |\n\n";
  md += "Settings: " + describe_settings(s) + ". SimCLR victims: batch " + std::to_string(s.victim.batch_size) +
        ", lr 0.3, 20-step warm-up, cosine to 0, the cpu-small augmentations; supervised victims: batch " +
        std::to_string(s.supervised.batch_size) + ", Nesterov, lr 0.1 cosine, wd 5e-4, ±2 px translation + flip, "
        "convolutions initialised " + s.supervised.init + ". "
        "Probe: \"poisoned\" fitted on the training images as the victim saw them, \"clean\" on the clean ones; "
        "both tested on the clean test set. Alignment: mean ‖z(v1) − z(v2)‖² over " +
        std::to_string(std::min<int64_t>(s.eval.alignment_images, o.images)) +
        " training images, the same augmentations on poisoned and clean versions (lower = views closer). Reference "
        "column: probe poisoned / clean; alignment poisoned / clean (N = 5000, 30 epochs; supervised CP-C: 10 rounds).\n";
  md += scaled_notes.empty() ? std::string("\nScaled: nothing (the reference's settings).\n")
                             : "\nDiffers from the reference (to fit the time budget; docs/experiments.md, \"Calibration history\", says why): " + [&] {
                                 std::string t;
                                 for (const auto& n : scaled_notes) t += (t.empty() ? "" : "; ") + n;
                                 return t;
                               }() + ".\n";
  md += "\nWall time " + fmt(total / 60, "%.1f") + " min" +
        (all_cpu ? ", CPU time " + fmt(total_cpu / 60, "%.1f") + " min" : std::string()) +
        (runs.size() > 1 ? " for all seeds" : "") + ".\n\nAcceptance checks" + (runs.size() > 1 ? ", per seed" : "") + ":\n";
  bool all_pass = true;
  for (size_t ci = 0; ci < runs[0].checks.size(); ++ci) {
    md += "- " + runs[0].checks[ci]["check"].get<std::string>() + ":";
    for (const auto& r : runs) {
      const auto& c = r.checks[ci];
      md += (runs.size() > 1 ? " seed " + std::to_string(r.seed) + ": " : " ") + c["measured"].get<std::string>() + " — " +
            c["result"].get<std::string>() + (&r != &runs.back() ? ";" : "");
      all_pass = all_pass && c["result"] == "pass";
    }
    md += "\n";
  }

  // ---- summary.json: per seed every value and check; over the seeds mean, sd and n.
  nlohmann::json per_seed = nlohmann::json::array();
  for (const auto& r : runs) {
    nlohmann::json st = nlohmann::json::object();
    for (const auto& k : r.order) st[k] = r.stages.at(k).to_json(), st[k]["cell"] = r.ids.at(k);
    per_seed.push_back({{"seed", r.seed}, {"folder", r.dir}, {"stages", st}, {"acceptance", r.checks},
                        {"seconds", r.total_seconds}, {"cpu_seconds", r.all_cpu ? nlohmann::json(r.total_cpu) : nlohmann::json(nullptr)},
                        {"cross_victim", r.cross_note.empty() ? "run" : r.cross_note}});
  }
  nlohmann::json over = nlohmann::json::object();
  for (const auto& row : rows) {
    if (!any_ran(row.key)) continue;
    over[row.key] = {{"probe", stat_json(stat_of(values(row.key, &StageValues::probe)))},
                     {"clean_probe", stat_json(stat_of(values(row.key, &StageValues::clean_probe)))},
                     {"align_poisoned", stat_json(stat_of(values(row.key, &StageValues::align_p)))},
                     {"align_clean", stat_json(stat_of(values(row.key, &StageValues::align_c)))},
                     {"supervised", stat_json(stat_of(values(row.key, &StageValues::supervised)))},
                     {"seconds", stat_json(stat_of(values(row.key, &StageValues::seconds)))}};
  }
  nlohmann::json seeds_json = nlohmann::json::array();
  for (uint64_t k : seeds) seeds_json.push_back(k);
  nlohmann::json summary{{"seeds", seeds_json},
                         {"class_attack", cls.name},
                         {"contrastive_attack", con.name},
                         {"per_seed", per_seed},
                         {"mean_sd", over},
                         {"all_checks_pass", all_pass},
                         {"seconds", total},
                         {"scaled", scaled_notes},
                         {"settings", to_json_fields(s)},
                         {"settings_from", settings_source}};
  {
    std::ofstream out((fs::path(o.out) / "table.md.tmp").string());
    CP_CHECK(out.good(), o.out, "cannot write table.md");
    out << md;
  }
  fs::rename(fs::path(o.out) / "table.md.tmp", fs::path(o.out) / "table.md");
  write_json((fs::path(o.out) / "summary.json").string(), summary);
  if (o.print) {
    std::printf("%s", md.c_str());
    std::fflush(stdout);
  }
  return summary;
}

}  // namespace cpoison::tools::experiment
