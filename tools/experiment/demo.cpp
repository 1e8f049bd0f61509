#include "tools/experiment/demo.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "engine/error.h"
#include "tools/common.h"
#include "tools/experiment/cells.h"
#include "tools/experiment/runner.h"

namespace cpoison::tools::experiment {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

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
  char buf[32];
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
const std::map<std::string, Reference>& reference() {
  static const std::map<std::string, Reference> r{
      {"random-encoder", {67.8, 67.8}},
      {"simclr-clean", {80.1, 80.1, 0.193, 0.193}},
      {"simclr-random", {79.3, 79.4, 0.191, 0.193}},
      {"simclr-cp-s", {78.6, 79.4, 0.181, 0.227}},
      {"simclr-cp-c", {78.1, 80.1, 0.190, 0.208}},
      {"supervised-clean", {std::nan(""), std::nan(""), std::nan(""), std::nan(""), 87.0}},
      {"supervised-cp-c", {std::nan(""), std::nan(""), std::nan(""), std::nan(""), 47.8}},
  };
  return r;
}

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
  CP_CHECK(o.cp_c_victim == "auto" || o.cp_c_victim == "yes" || o.cp_c_victim == "no", "demo --cp-c-victim",
           "auto, yes or no, got '", o.cp_c_victim, "'");
  CP_CHECK(o.eps > 0 && o.eps <= 1, "demo --eps", "outside (0, 1]: ", o.eps);

  // The reference's settings (Settings' defaults), then the demo's knobs.
  Settings s;
  s.data.dataset = o.data;
  s.data.subset = o.images;
  s.data.test_subset = o.test_images;
  s.width = o.width;
  s.seed = o.seed;
  s.victim.epochs = scaled(o.victim_epochs, o.scale);
  s.supervised.epochs = scaled(o.supervised_epochs, o.scale);
  s.poison.cp_c_rounds = scaled(o.cp_c_rounds, o.scale);
  s.poison.cp_s_rounds = scaled(o.cp_s_rounds, o.scale);
  s.poison.eps = o.eps;
  s.poison.cp_s_init = o.cp_s_init;
  if (o.quick) {
    s.victim.batch_size = s.supervised.batch_size = s.poison.batch_size = 64;
    s.poison.cp_c_model_steps = s.poison.cp_c_noise_batches = 2;
    s.eval.iterations = 50;
    s.eval.alignment_images = 100;
  }
  s.validate("demo");

  if (o.fresh && fs::exists(o.out)) {
    // Only what the demo writes: its cell folders and its two summary files.
    for (const auto& e : fs::directory_iterator(o.out)) {
      std::string name = e.path().filename().string();
      bool ours = name.rfind("poison-", 0) == 0 || name.rfind("victim-", 0) == 0 || name.rfind("random-encoder", 0) == 0 ||
                  name == "table.md" || name == "summary.json" || name == "stages.json";
      if (ours) fs::remove_all(e.path());
    }
  }
  fs::create_directories(o.out);
  Runner::Options ro;
  ro.root = o.out;
  ro.device = o.device;
  ro.data_root = o.data_root;
  ro.redo_changed = true;  // a demo rerun with other knobs replaces the old stages
  ro.progress_seconds = o.progress_seconds;
  Runner runner(s, ro);

  PoisonJob cp_c = make_poison_job("cp-c", "simclr", "class", true, o.eps, 1.0, s.model, s.data, s);
  PoisonJob cp_s = make_poison_job("cp-s", "simclr", "sample", true, o.eps, 1.0, s.model, s.data, s);
  PoisonJob noise = make_poison_job("random", "none", "sample", true, o.eps, 1.0, s.model, s.data, s);
  std::map<std::string, const PoisonJob*> poisons{{cp_c.id, &cp_c}, {cp_s.id, &cp_s}, {noise.id, &noise}};
  auto victim = [&](const std::string& algo, const PoisonJob* p) {
    return make_victim_job(algo, s.model, s.data, p, false, 1.0, "none", s);
  };

  // Stage timings: this run's wall and CPU seconds; a cached stage keeps those of its run.
  const std::string stages_path = (fs::path(o.out) / "stages.json").string();
  nlohmann::json stages = fs::exists(stages_path) ? read_json(stages_path) : nlohmann::json::object();
  const auto t_demo = Clock::now();
  const bool verbose = o.progress_seconds >= 0;
  double elapsed_this_run = 0;
  std::map<std::string, nlohmann::json> results;
  std::vector<std::string> order;
  auto stage = [&](const std::string& key, const std::string& id, const nlohmann::json& config,
                   const std::function<nlohmann::json()>& run) {
    const bool was_done = runner.status(id, config) == "done";
    const double w0 = std::chrono::duration<double>(Clock::now() - t_demo).count(), c0 = cpu_seconds();
    if (verbose) std::fprintf(stderr, "[demo] %s (%s)%s\n", key.c_str(), id.c_str(), was_done ? ": cached" : "");
    nlohmann::json r = run();
    const double wall = std::chrono::duration<double>(Clock::now() - t_demo).count() - w0, cpu = cpu_seconds() - c0;
    if (!was_done || !stages.contains(id)) stages[id] = {{"seconds", was_done ? r.value("seconds", wall) : wall},
                                                         {"cpu_seconds", was_done ? nlohmann::json(nullptr) : nlohmann::json(cpu)}};
    stages[id]["cached"] = was_done;
    write_json(stages_path, stages);
    elapsed_this_run += wall;
    results[key] = r;
    order.push_back(key);
    if (verbose)
      std::fprintf(stderr, "[demo] %s: %.1f s wall%s\n", key.c_str(), wall,
                 was_done ? " (cached)" : (", " + fmt(cpu, "%.1f") + " s CPU").c_str());
  };

  const data::Dataset& train = runner.train_set(s.data);
  if (verbose)
    std::fprintf(stderr, "[demo] %s: %lld training images (%lldx%lldx%lld), %lld test images\n", train.name.c_str(),
               (long long)train.size(), (long long)train.height(), (long long)train.width(), (long long)train.channels(),
               (long long)runner.test_set(s.data).size());

  stage("random-encoder", runner.random_encoder_id(s.model), runner.random_encoder_config(s.data, s.model),
        [&] { return runner.run_random_encoder(s.data, s.model); });
  stage("poison-cp-c", cp_c.id, cp_c.config, [&] { return runner.run_poison(cp_c, poisons); });
  stage("poison-cp-s", cp_s.id, cp_s.config, [&] { return runner.run_poison(cp_s, poisons); });
  stage("poison-random", noise.id, noise.config, [&] { return runner.run_poison(noise, poisons); });
  std::vector<std::pair<std::string, VictimJob>> victims{{"supervised-clean", victim("supervised", nullptr)},
                                                         {"supervised-cp-c", victim("supervised", &cp_c)},
                                                         {"simclr-clean", victim("simclr", nullptr)},
                                                         {"simclr-random", victim("simclr", &noise)},
                                                         {"simclr-cp-s", victim("simclr", &cp_s)}};
  double simclr_seconds = 0;
  int simclr_count = 0;
  for (auto& [key, job] : victims) {
    stage(key, job.id, job.config, [&, j = job] { return runner.run_victim(j, poisons); });
    if (key.rfind("simclr", 0) == 0) simclr_seconds += stages[job.id].value("seconds", 0.0), ++simclr_count;
  }
  VictimJob cp_c_victim = victim("simclr", &cp_c);
  std::string cp_c_note;
  {
    const bool cached = runner.status(cp_c_victim.id, cp_c_victim.config) == "done";
    const double so_far = std::chrono::duration<double>(Clock::now() - t_demo).count();
    const double need = simclr_count > 0 ? simclr_seconds / simclr_count : 0;
    bool run = o.cp_c_victim == "yes" || cached || (o.cp_c_victim == "auto" && so_far + need <= o.budget_minutes * 60);
    if (o.cp_c_victim == "no") run = false;
    if (run) {
      stage("simclr-cp-c", cp_c_victim.id, cp_c_victim.config, [&] { return runner.run_victim(cp_c_victim, poisons); });
    } else {
      cp_c_note = o.cp_c_victim == "no" ? "skipped (--cp-c-victim no)"
                                        : "skipped: " + fmt(so_far / 60, "%.1f") + " min so far + about " +
                                              fmt(need / 60, "%.1f") + " min would pass the " +
                                              fmt(o.budget_minutes, "%g") + "-minute budget";
      if (verbose) std::fprintf(stderr, "[demo] simclr-cp-c %s\n", cp_c_note.c_str());
    }
  }

  // ---- summary
  auto probe = [&](const std::string& k) { return results.count(k) ? num(results[k], "probe", "poisoned") : std::nan(""); };
  auto clean_probe = [&](const std::string& k) { return results.count(k) ? num(results[k], "probe", "clean") : std::nan(""); };
  auto align = [&](const std::string& k, const char* which) {
    return results.count(k) ? num(results[k], "alignment", which) : std::nan("");
  };
  auto sup = [&](const std::string& k) { return results.count(k) ? num(results[k], "supervised", "test_accuracy") : std::nan(""); };

  nlohmann::json seconds = nlohmann::json::object();
  double total = 0, total_cpu = 0;
  bool all_cpu = true;
  std::map<std::string, std::string> id_of{{"random-encoder", "random-encoder"}, {"poison-cp-c", cp_c.id},
                                           {"poison-cp-s", cp_s.id},              {"poison-random", noise.id},
                                           {"simclr-cp-c", cp_c_victim.id}};
  for (auto& [k, j] : victims) id_of[k] = j.id;
  for (const auto& k : order) {
    double w = stages[id_of[k]].value("seconds", 0.0);
    seconds[k] = w;
    total += w;
    const auto& c = stages[id_of[k]]["cpu_seconds"];
    if (c.is_number()) total_cpu += c.get<double>();
    else all_cpu = false;
  }
  seconds["total"] = total;
  const double gap_s = align("simclr-cp-s", "clean") - align("simclr-cp-s", "poisoned");
  const double gap_u = align("simclr-random", "clean") - align("simclr-random", "poisoned");

  nlohmann::json checks = nlohmann::json::array();
  auto check = [&](const std::string& what, bool known, bool pass, const std::string& detail) {
    checks.push_back({{"check", what}, {"result", !known ? "n/a" : pass ? "pass" : "FAIL"}, {"measured", detail}});
  };
  check("supervised victim on CP-C data tests at or below 55%", !std::isnan(sup("supervised-cp-c")),
        sup("supervised-cp-c") <= 55.0, fmt(sup("supervised-cp-c"), "%.1f%%"));
  check("CP-S victim: alignment on clean views exceeds that on poisoned views by >= 0.03", !std::isnan(gap_s),
        gap_s >= 0.03, fmt(gap_s, "%.3f"));
  check("uniform-noise victim shows no such gap (< 0.03)", !std::isnan(gap_u), gap_u < 0.03, fmt(gap_u, "%.3f"));
  check("SimCLR probe on CP-S data not above uniform noise", !std::isnan(probe("simclr-cp-s")),
        probe("simclr-cp-s") <= probe("simclr-random"),
        fmt(probe("simclr-cp-s"), "%.1f") + " vs " + fmt(probe("simclr-random"), "%.1f"));
  check("SimCLR probe on CP-C data not above uniform noise", !std::isnan(probe("simclr-cp-c")),
        probe("simclr-cp-c") <= probe("simclr-random"),
        fmt(probe("simclr-cp-c"), "%.1f") + " vs " + fmt(probe("simclr-random"), "%.1f"));

  // What differs from docs/cpu-scale-reference.md.
  std::vector<std::string> scaled_notes;
  auto note = [&](const std::string& what, double ref, double now) {
    if (ref != now) scaled_notes.push_back(what + " " + fmt(ref, "%g") + " → " + fmt(now, "%g"));
  };
  note("training images", 5000, (double)train.size());
  note("width", 8, (double)s.width);
  note("SimCLR victim epochs", 30, (double)s.victim.epochs);
  note("supervised epochs", 15, (double)s.supervised.epochs);
  note("CP-C rounds", 10, (double)s.poison.cp_c_rounds);
  note("CP-S rounds", 12, (double)s.poison.cp_s_rounds);
  if (s.poison.cp_s_init != "uniform") scaled_notes.push_back("CP-S starts from the CP-C poison, not from uniform noise");
  if (std::fabs(o.eps - 8.0 / 255.0) > 1e-12) scaled_notes.push_back("eps 8/255 → " + format_pixels(o.eps));
  if (o.test_images > 0) scaled_notes.push_back("test images 10000 → " + std::to_string(runner.test_set(s.data).size()));
  if (o.quick) scaled_notes.push_back("--quick (batch 64, CP-C 2+2 steps per round, 50 L-BFGS iterations, 100 alignment images)");

  // ---- the table
  const auto& ref = reference();
  auto row = [&](const std::string& stage_label, const std::string& data, const std::string& k) {
    Reference rf = ref.count(k) ? ref.at(k) : Reference{};
    std::string sec = results.count(k) ? fmt(seconds.value(k, 0.0), "%.0f") : "–";
    if (results.count(k) && stages[id_of[k]].value("cached", false)) sec += " (cached)";
    std::string al = std::isnan(align(k, "poisoned")) ? "–" : fmt(align(k, "poisoned"), "%.3f") + " / " + fmt(align(k, "clean"), "%.3f");
    std::string al_ref = std::isnan(rf.align_p) ? "–" : fmt(rf.align_p, "%.3f") + " / " + fmt(rf.align_c, "%.3f");
    return "| " + stage_label + " | " + data + " | " + fmt(probe(k), "%.1f") + " | " + fmt(clean_probe(k), "%.1f") + " | " + al +
           " | " + fmt(sup(k), "%.1f") + " | " + sec + " | " +
           (std::isnan(rf.probe) && std::isnan(rf.supervised)
                ? std::string("–")
                : (std::isnan(rf.probe) ? fmt(rf.supervised, "%.1f") : fmt(rf.probe, "%.1f") + " / " + fmt(rf.clean_probe, "%.1f")) +
                      (al_ref == "–" ? "" : "; " + al_ref)) +
           " |\n";
  };
  auto poison_row = [&](const std::string& label, const std::string& k, const std::string& detail) {
    std::string sec = results.count(k) ? fmt(seconds.value(k, 0.0), "%.0f") : "–";
    if (results.count(k) && stages[id_of[k]].value("cached", false)) sec += " (cached)";
    return "| " + label + " | " + detail + " | – | – | – | – | " + sec + " | – |\n";
  };
  std::string md = "### cpoison demo: contrastive poisoning of " + train.name + "\n\n";
  md += "| stage | victim data | SimCLR probe % (poisoned) | SimCLR probe % (clean) | alignment poisoned / clean views | "
        "supervised test % | seconds | reference (docs/cpu-scale-reference.md) |\n";
  md += "|---|---|---:|---:|---|---:|---:|---|\n";
  md += row("random-init encoder", "clean (no training)", "random-encoder");
  auto rounds = [](int64_t n) { return std::to_string(n) + (n == 1 ? " round" : " rounds"); };
  md += poison_row("CP-C poison (SimCLR attacker)", "poison-cp-c", rounds(s.poison.cp_c_rounds) + ", eps " + format_pixels(o.eps));
  md += poison_row("CP-S poison (SimCLR attacker)", "poison-cp-s", rounds(s.poison.cp_s_rounds) + ", eps " + format_pixels(o.eps));
  md += poison_row("uniform noise", "poison-random", "U(-eps, eps), sample-wise");
  md += row("supervised victim", "clean", "supervised-clean");
  md += row("supervised victim", "CP-C", "supervised-cp-c");
  md += row("SimCLR victim", "clean", "simclr-clean");
  md += row("SimCLR victim", "uniform noise", "simclr-random");
  md += row("SimCLR victim", "CP-S", "simclr-cp-s");
  if (results.count("simclr-cp-c")) md += row("SimCLR victim", "CP-C", "simclr-cp-c");
  else md += "| SimCLR victim | CP-C | " + cp_c_note + " | | | | | |\n";
  md += "| total | | | | | | " + fmt(total, "%.0f") + " | |\n\n";
  md += "Settings: " + describe_settings(s) + ". SimCLR victims: batch " + std::to_string(s.victim.batch_size) +
        ", lr 0.3, 20-step warm-up, cosine to 0, the cpu-small augmentations; supervised victims: batch " +
        std::to_string(s.supervised.batch_size) + ", Nesterov, lr 0.1 cosine, wd 5e-4, ±2 px translation + flip. "
        "Probe: \"poisoned\" fitted on the training images as the victim saw them, \"clean\" on the clean ones; "
        "both tested on the clean test set. Alignment: mean ‖z(v1) − z(v2)‖² over " +
        std::to_string(std::min<int64_t>(s.eval.alignment_images, train.size())) + " training images, the same augmentations on poisoned and clean "
        "versions (lower = views closer). Reference column: probe poisoned / clean; alignment poisoned / clean "
        "(N = 5000, 30 epochs; supervised CP-C: 10 rounds).\n";
  md += scaled_notes.empty() ? std::string("\nScaled: nothing (the reference's settings).\n")
                             : "\nDiffers from the reference (to fit the time budget, or where the reference's setting "
                               "showed no effect at this size: README, \"What we learned calibrating it\"): " + [&] {
                                 std::string t;
                                 for (const auto& n : scaled_notes) t += (t.empty() ? "" : "; ") + n;
                                 return t;
                               }() + ".\n";
  md += "\nWall time " + fmt(total / 60, "%.1f") + " min" +
        (all_cpu ? ", CPU time " + fmt(total_cpu / 60, "%.1f") + " min" : std::string()) + ".\n\nAcceptance checks:\n";
  for (const auto& c : checks)
    md += "- " + c["check"].get<std::string>() + ": " + c["measured"].get<std::string>() + " — " +
          c["result"].get<std::string>() + "\n";

  nlohmann::json files = nlohmann::json::object();
  for (const auto* p : {&cp_c, &cp_s, &noise}) {
    files[p->id] = {{"poison", runner.poison_path(p->id)}, {"noise_png", (fs::path(runner.dir(p->id)) / "noise.png").string()}};
  }
  nlohmann::json summary{{"random_encoder", or_null(probe("random-encoder"))},
                         {"clean", or_null(probe("simclr-clean"))},
                         {"random_noise", or_null(probe("simclr-random"))},
                         {"cp_s", or_null(probe("simclr-cp-s"))},
                         {"cp_c", or_null(probe("simclr-cp-c"))},
                         {"clean_probe", {{"clean", or_null(clean_probe("simclr-clean"))},
                                          {"random_noise", or_null(clean_probe("simclr-random"))},
                                          {"cp_s", or_null(clean_probe("simclr-cp-s"))},
                                          {"cp_c", or_null(clean_probe("simclr-cp-c"))}}},
                         {"supervised_clean", or_null(sup("supervised-clean"))},
                         {"supervised_cp_c", or_null(sup("supervised-cp-c"))},
                         {"align_cp_s_poisoned", or_null(align("simclr-cp-s", "poisoned"))},
                         {"align_cp_s_clean", or_null(align("simclr-cp-s", "clean"))},
                         {"align_random_poisoned", or_null(align("simclr-random", "poisoned"))},
                         {"align_random_clean", or_null(align("simclr-random", "clean"))},
                         {"align_clean", or_null(align("simclr-clean", "poisoned"))},
                         {"align_cp_c_poisoned", or_null(align("simclr-cp-c", "poisoned"))},
                         {"align_cp_c_clean", or_null(align("simclr-cp-c", "clean"))},
                         {"seconds", seconds},
                         {"cpu_seconds", all_cpu ? nlohmann::json(total_cpu) : nlohmann::json(nullptr)},
                         {"cp_c_victim", cp_c_note.empty() ? "run" : cp_c_note},
                         {"scaled", scaled_notes},
                         {"acceptance", checks},
                         {"settings", to_json_fields(s)},
                         {"files", files}};
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
