// The experiment engine (tools/experiment/): preset loading and its errors, the plan of a
// table, a smoke run of a preset on a tiny synthetic dataset, resuming and skipping finished
// cells, dry runs, the translate augmentation, and the demo's quick mode.
// Images: u8 [N,H,W,C]; batches f32 [B,C,H,W].
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "engine/data/dataset.h"
#include "poison/poison_file.h"
#include "tools/experiment/demo.h"
#include "tools/experiment/runner.h"
#include "tools/fields.h"

using namespace cpoison;
using namespace cpoison::tools::experiment;
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A fresh folder under the temp directory, removed when the test ends.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("cpoison-experiment-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// 8x8 grey images of 4 classes (a bright quadrant per class, plus a pattern per image), as
// one HDF5 file with train and test splits.
std::string tiny_dataset(const TempDir& d, int64_t n_train = 32, int64_t n_test = 16) {
  auto make = [](int64_t n, int64_t offset) {
    data::Dataset ds;
    std::vector<uint8_t> px(n * 8 * 8);
    std::vector<int64_t> labels(n);
    for (int64_t i = 0; i < n; ++i) {
      int64_t k = i % 4;
      labels[i] = k;
      for (int64_t y = 0; y < 8; ++y)
        for (int64_t x = 0; x < 8; ++x) {
          bool bright = (y / 4) == (k / 2) && (x / 4) == (k % 2);
          px[(i * 8 + y) * 8 + x] = (uint8_t)((bright ? 180 : 30) + ((i + offset) * 7 + y * 3 + x) % 40);
        }
    }
    ds.images = Tensor::from_vector(px, {n, 8, 8, 1});
    ds.labels = Tensor::from_vector(labels, {n});
    ds.classes = 4;
    ds.name = "tiny";
    return ds;
  };
  data::Dataset train = make(n_train, 0), test = make(n_test, 1000);
  std::string path = d.file("tiny.h5");
  data::save_datasets_h5(path, {{data::Split::train, &train}, {data::Split::test, &test}});
  return path;
}

// scales.toml with one fast scale, "tiny", on the dataset file.
void write_scales(const TempDir& d, const std::string& dataset) {
  write(d.file("scales.toml"), R"([tiny]
width = 2
[tiny.data]
dataset = ")" + dataset + R"("
subset = 0
[tiny.victim]
epochs = 1
batch_size = 16
checkpoint_every = 1
[tiny.supervised]
epochs = 1
batch_size = 16
[tiny.poison]
cp_c_rounds = 1
cp_c_model_steps = 1
cp_c_noise_batches = 1
cp_s_rounds = 1
cp_s_pgd_steps = 1
batch_size = 16
[tiny.eval]
iterations = 10
alignment_images = 8
batch_size = 16
[tiny.cost]
simclr_views_per_s = 100
[other]
width = 3
)");
}

const char* kSmokePreset = R"toml(title = "smoke"
columns = [ { label = "SimCLR", victim = "simclr" }, { label = "Supervised", victim = "supervised" } ]
rows = [
  { label = "None", attack = "none", paper = [1.0, "-"] },
  { label = "CP (C)", attack = "cp-c", attacker = "simclr" },
]
[scale.tiny]
)toml";

ExperimentOptions quiet_options(const TempDir& d) {
  ExperimentOptions o;
  o.results = d.file("results");
  o.quiet = true;
  return o;
}

}  // namespace

TEST_CASE("experiment presets: scales.toml, then the preset's [scale.NAME], override the defaults") {
  TempDir d("load");
  write_scales(d, "fashion-mnist");
  write(d.file("p.toml"), R"(title = "t"
metric = "align_gap"
columns = [ { label = "A", victim = "moco" } ]
rows = [ { label = "r1", attack = "cp-s", eps = "16/255" }, { label = "r2", attack = "random", kind = "class" } ]
[scale.tiny]
victim.epochs = 7
algo.moco.queue_size = 64
[scale.other]
rows = [ { label = "only", attack = "none" } ]
)");
  Preset p = load_preset(d.file("p.toml"), "tiny", d.path.string());
  CHECK(p.name == "p");
  CHECK(p.scales == std::vector<std::string>{"other", "tiny"});  // sorted by name
  CHECK(p.metric == Metric::align_gap);
  CHECK(p.settings.width == 2);              // scales.toml
  CHECK(p.settings.victim.epochs == 7);      // the preset wins
  CHECK(p.settings.victim.batch_size == 16); // scales.toml
  CHECK(p.settings.supervised.nesterov);     // C++ default kept
  CHECK(p.settings.algo.moco.queue_size == 64);
  REQUIRE(p.rows.size() == 2);
  CHECK(*p.rows[0].keys.eps == doctest::Approx(16.0 / 255.0));
  CHECK(*p.rows[1].keys.kind == "class");

  Preset q = load_preset(d.file("p.toml"), "other", d.path.string());
  CHECK(q.settings.width == 3);
  REQUIRE(q.rows.size() == 1);
  CHECK(q.rows[0].label == "only");
  CHECK(q.columns.size() == 1);  // columns not replaced
  CHECK_THROWS_WITH_AS(load_preset(d.file("p.toml"), "paper", d.path.string()), doctest::Contains("scales: other, tiny"), Error);

  // A preset kept outside the presets folder (no scales.toml beside it) starts from the presets
  // folder's scales.toml, not from the C++ defaults.
  TempDir elsewhere("load-elsewhere");
  fs::copy_file(d.file("p.toml"), elsewhere.file("mine.toml"));
  Preset m = load_preset(elsewhere.file("mine.toml"), "tiny", d.path.string());
  CHECK(m.settings.width == 2);               // the presets folder's scales.toml
  CHECK(m.settings.victim.batch_size == 16);
  CHECK(m.settings.victim.epochs == 7);       // the preset still wins
}

TEST_CASE("experiment presets: a malformed file is an error naming the key") {
  TempDir d("bad");
  write_scales(d, "fashion-mnist");
  auto error_of = [&](const std::string& text) -> std::string {
    write(d.file("bad.toml"), text);
    try {
      load_preset(d.file("bad.toml"), "tiny", d.path.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string ok_axes = "columns = [ { label = \"A\" } ]\nrows = [ { label = \"r\" } ]\n";
  CHECK(error_of(ok_axes + "[scale.tiny]\nvictim.epoch = 3\n").find("unknown key 'scale.tiny.victim.epoch'") != std::string::npos);
  CHECK(error_of(ok_axes + "[scale.tiny]\nvictim.epochs = \"3\"\n").find("'scale.tiny.victim.epochs'") != std::string::npos);
  CHECK(error_of(ok_axes + "[scale.tiny]\nvictim.epochs = 2.5\n").find("expected an integer") != std::string::npos);
  CHECK(error_of(ok_axes + "[scale.tiny]\npoison.eps = \"eight\"\n").find("'scale.tiny.poison.eps'") != std::string::npos);
  CHECK(error_of(ok_axes + "[scale.tiny]\neval.probe = \"knn\"\n").find("eval.probe") != std::string::npos);
  CHECK(error_of(ok_axes + "colour = 1\n[scale.tiny]\n").find("unknown key 'colour'") != std::string::npos);
  CHECK(error_of("rows = [ { label = \"r\", atack = \"cp-s\" } ]\n[scale.tiny]\n").find("unknown key 'rows[0].atack'") !=
        std::string::npos);
  CHECK(error_of("rows = [ { label = \"r\" }, { label = \"s\", attack = \"cp-x\" } ]\n[scale.tiny]\n")
            .find("'rows[1].attack'") != std::string::npos);
  CHECK(error_of("rows = [ { label = \"r\", ratio = 1.5 } ]\n[scale.tiny]\n").find("'rows[0].ratio'") != std::string::npos);
  CHECK(error_of("rows = [ { label = \"r\", defense = \"usvt:p=2\" } ]\n[scale.tiny]\n").find("'rows[0].defense'") !=
        std::string::npos);
  CHECK(error_of("rows = [ { attack = \"none\" } ]\n[scale.tiny]\n").find("'rows[0].label'") != std::string::npos);
  CHECK(error_of("rows = [ { label = \"r\" } ]\ncolumns = [ { label = \"m\", mean_of = [\"x\"] } ]\n[scale.tiny]\n")
            .find("'columns[0].mean_of'") != std::string::npos);
  CHECK(error_of("rows = [ { label = \"r\", paper = [1, 2] } ]\n[scale.tiny]\n").find("'rows[0].paper'") != std::string::npos);
  CHECK(error_of(ok_axes + "[scale.tiny\n").find("line 3") != std::string::npos);  // TOML syntax
  CHECK(error_of(ok_axes).find("[scale.NAME]") != std::string::npos);
  // A cell that cannot run: a contrastive attack on a supervised victim needs an attacker.
  write(d.file("cell.toml"), "rows = [ { label = \"r\", victim = \"supervised\", attack = \"cp-c\" } ]\n[scale.tiny]\n");
  CHECK_THROWS_WITH_AS(make_plan(load_preset(d.file("cell.toml"), "tiny", d.path.string())),
                       doctest::Contains("needs a contrastive attacker"), Error);
}

TEST_CASE("experiment plans share poisons and victims between cells and order dependencies first") {
  TempDir d("plan");
  write_scales(d, "fashion-mnist");
  write(d.file("p.toml"), R"(columns = [
  { label = "S", attack = "cp-s", attacker = "simclr" },
  { label = "C", attack = "cp-c", attacker = "simclr" },
  { label = "Avg", mean_of = ["S", "C"] },
]
rows = [
  { label = "none", defense = "none" },
  { label = "noise", defense = "noise:std=8/255" },
  { label = "clean", attack = "none" },
  { label = "clean only", attack = "clean-only", ratio = 1.0 },
]
[scale.tiny]
poison.cp_s_init = "cp-c"
)");
  Preset p = load_preset(d.file("p.toml"), "tiny", d.path.string());
  Plan plan = make_plan(p);
  REQUIRE(plan.poisons.size() == 2);
  CHECK(plan.poisons[0].id == "poison-cp-c-simclr");  // CP-S starts from it: listed first
  CHECK(plan.poisons[1].id == "poison-cp-s-simclr");
  CHECK(plan.poisons[1].init_from == "poison-cp-c-simclr");
  CHECK(plan.victims.size() == 5);  // 2 x 2 defended/undefended + one clean victim shared by two cells
  CHECK(plan.grid[2][0] == plan.grid[2][1]);
  CHECK(plan.victims[plan.grid[2][0]].id == "victim-simclr-clean");
  CHECK(plan.victims[plan.grid[1][0]].id == "victim-simclr-cp-s-simclr-noise-std-8-255");
  CHECK(plan.victims[plan.grid[1][0]].config["train"]["defense"] == "noise:std=0.03137254901960784,clip=1");
  CHECK(plan.victims[plan.grid[0][1]].id == "victim-simclr-cp-c-simclr");
  CHECK(plan.grid[0][2] == -1);  // computed
  CHECK(plan.grid[3][0] == -1);  // clean-only at 100%: nothing to train on
}

TEST_CASE("experiment smoke run of a preset, then a rerun that skips every finished cell") {
  TempDir d("smoke");
  write_scales(d, tiny_dataset(d));
  write(d.file("smoke.toml"), kSmokePreset);
  Preset p = load_preset(d.file("smoke.toml"), "tiny", d.path.string());
  ExperimentOptions o = quiet_options(d);

  ExperimentOptions dry = o;
  dry.dry_run = true;
  ExperimentReport plan = run_experiment(p, dry);
  CHECK(plan.cells == 5);  // the CP-C poison and four victims (SimCLR and supervised, clean and poisoned)
  CHECK(plan.remaining == plan.cells);
  CHECK(plan.estimated_seconds > 0);
  REQUIRE(plan.listing.size() == (size_t)plan.cells + 1);
  CHECK(plan.listing[0].find("pending") == 0);
  CHECK(!fs::exists(d.file("results")));  // a dry run writes nothing

  ExperimentReport first = run_experiment(p, o);
  CHECK(first.ran == first.cells);
  CHECK(first.skipped == 0);
  const auto& rows = first.json["rows"];
  REQUIRE(rows.size() == 2);
  for (const auto& row : rows)
    for (const auto& v : row["values"]) {
      REQUIRE(v.is_number());
      CHECK(v.get<double>() >= 0.0);
      CHECK(v.get<double>() <= 100.0);
    }
  const std::string root = first.root;
  CHECK(fs::exists(root + "/table.md"));
  CHECK(fs::exists(root + "/results.json"));
  CHECK(fs::exists(root + "/poison-cp-c-simclr/poison.h5"));
  CHECK(fs::exists(root + "/poison-cp-c-simclr/noise.png"));
  CHECK(!fs::exists(root + "/poison-cp-c-simclr/poison.ckpt.h5"));  // removed once finished
  CHECK(fs::exists(root + "/victim-simclr-cp-c-simclr/victim.h5"));
  const auto& simclr_cp = first.json["cells"]["victim-simclr-cp-c-simclr"];
  CHECK(simclr_cp["alignment"]["images"].get<int64_t>() == 8);
  CHECK(simclr_cp["probe"].contains("clean"));
  CHECK(first.json["cells"]["victim-supervised-clean"]["supervised"]["test_accuracy"].is_number());
  CHECK(first.markdown.find("| None |") != std::string::npos);
  CHECK(first.markdown.find("The paper's numbers") != std::string::npos);

  // Rerun: nothing runs, the same table comes back.
  ExperimentReport second = run_experiment(p, o);
  CHECK(second.ran == 0);
  CHECK(second.skipped == second.cells);
  CHECK(second.json["rows"] == first.json["rows"]);
  ExperimentReport listed = run_experiment(p, dry);
  CHECK(listed.remaining == 0);
  CHECK(listed.listing[0].find("done") == 0);

  // A victim killed after training (train.json and victim.h5 kept, no result.json) is evaluated
  // again without retraining.
  const std::string cell = root + "/victim-simclr-clean";
  const std::string train_before = read_json(cell + "/train.json").dump();
  const auto ckpt_time = fs::last_write_time(cell + "/victim.h5");
  fs::remove(cell + "/result.json");
  ExperimentReport third = run_experiment(p, o);
  CHECK(third.ran == 1);
  CHECK(read_json(cell + "/train.json").dump() == train_before);
  CHECK(fs::last_write_time(cell + "/victim.h5") == ckpt_time);
  CHECK(third.json["rows"] == first.json["rows"]);
}

TEST_CASE("experiment resumes after a partial run and refuses cells made with other settings") {
  TempDir d("resume");
  write_scales(d, tiny_dataset(d));
  write(d.file("smoke.toml"), kSmokePreset);
  Preset p = load_preset(d.file("smoke.toml"), "tiny", d.path.string());
  ExperimentOptions o = quiet_options(d);
  o.max_cells = 1;  // as if killed after the first cell
  ExperimentReport first = run_experiment(p, o);
  CHECK(first.ran == 1);
  CHECK(first.remaining == first.cells - 1);
  CHECK(first.markdown.find("…") != std::string::npos);  // pending cells shown as such
  o.max_cells = 0;
  ExperimentReport rest = run_experiment(p, o);
  CHECK(rest.skipped == 1);
  CHECK(rest.ran == rest.cells - 1);

  // Other settings for the same cells: an error naming the changed key, unless --redo-changed.
  write(d.file("smoke2.toml"), std::string(kSmokePreset) + "victim.epochs = 2\n");
  Preset changed = load_preset(d.file("smoke2.toml"), "tiny", d.path.string());
  changed.name = p.name;  // the same results folder
  CHECK_THROWS_WITH_AS(run_experiment(changed, o), doctest::Contains("training.epochs"), Error);
  ExperimentOptions dry = o;
  dry.dry_run = true;
  ExperimentReport listing = run_experiment(changed, dry);
  bool saw_changed = false;
  for (const auto& l : listing.listing) saw_changed = saw_changed || l.find("changed") == 0;
  CHECK(saw_changed);
  // Only the evaluation changed: the victims are probed again, not retrained.
  write(d.file("smoke3.toml"), std::string(kSmokePreset) + "eval.alignment_images = 4\n");
  Preset eval_only = load_preset(d.file("smoke3.toml"), "tiny", d.path.string());
  eval_only.name = p.name;
  ExperimentReport again = run_experiment(eval_only, o);
  CHECK(again.ran == 4);  // every victim (the evaluation settings are part of each victim's config); not the poison
  CHECK(again.skipped == 1);
}

TEST_CASE("experiment demo --quick writes the summary keys, the table and the poison files") {
  TempDir d("demo");
  DemoOptions o;
  o.data = tiny_dataset(d, 40, 16);
  o.images = 40;
  o.width = 2;
  o.quick = true;
  o.out = d.file("demo");
  o.progress_seconds = -1;
  o.print = false;
  o.class_attack = "cp-c";        // the paper's pair, with CP-S chained from CP-C
  o.contrastive_attack = "cp-s";
  nlohmann::json s = run_demo(o);
  REQUIRE(s["per_seed"].size() == 1);
  const nlohmann::json& st = s["per_seed"][0]["stages"];
  for (const char* k : {"random-encoder", "poison-start", "poison-class", "poison-contrastive", "poison-uniform",
                        "supervised-clean", "supervised-uniform", "supervised-class", "simclr-clean", "simclr-uniform",
                        "simclr-contrastive"})
    CHECK_MESSAGE(st.contains(k), k);
  CHECK(st["simclr-clean"]["probe"].is_number());
  CHECK(st["supervised-class"]["supervised"].is_number());
  CHECK(s["per_seed"][0]["acceptance"].size() == 4);
  CHECK(s["mean_sd"]["simclr-clean"]["probe"]["n"] == 1);
  CHECK(s["seconds"].get<double>() > 0);
  CHECK(fs::exists(o.out + "/summary.json"));
  CHECK(fs::exists(o.out + "/table.md"));
  CHECK(fs::exists(o.out + "/poison-cp-c-simclr/poison.h5"));
  CHECK(fs::exists(o.out + "/poison-cp-s-simclr/noise.png"));
  // A second run reuses every stage.
  nlohmann::json again = run_demo(o);
  CHECK(again["per_seed"][0]["stages"]["simclr-clean"]["probe"] == st["simclr-clean"]["probe"]);
  CHECK(read_json(o.out + "/stages.json")["victim-simclr-clean"]["cached"].get<bool>());
  o.cross_victim = "no";
  CHECK_FALSE(run_demo(o)["per_seed"][0]["stages"].contains("simclr-class"));
}

TEST_CASE("experiment demo over seeds: a folder per seed, checks per seed, mean and sd across them") {
  TempDir d("demo-seeds");
  DemoOptions o;
  o.data = tiny_dataset(d, 40, 16);
  o.images = 40;
  o.width = 2;
  o.quick = true;
  o.out = d.file("demo");
  o.progress_seconds = -1;
  o.print = false;
  o.class_attack = "random-class";  // no attacker to train: the cheapest stages
  o.contrastive_attack = "random-class";
  o.cross_victim = "no";
  o.seeds = {0, 1};
  nlohmann::json s = run_demo(o);
  REQUIRE(s["per_seed"].size() == 2);
  CHECK(fs::exists(o.out + "/seed-0/victim-simclr-clean/result.json"));
  CHECK(fs::exists(o.out + "/seed-1/victim-simclr-clean/result.json"));
  const double p0 = s["per_seed"][0]["stages"]["simclr-clean"]["probe"].get<double>();
  const double p1 = s["per_seed"][1]["stages"]["simclr-clean"]["probe"].get<double>();
  const auto& ms = s["mean_sd"]["simclr-clean"]["probe"];
  CHECK(ms["n"] == 2);
  CHECK(ms["mean"].get<double>() == doctest::Approx((p0 + p1) / 2));
  CHECK(ms["sd"].get<double>() == doctest::Approx(std::fabs(p0 - p1) / std::sqrt(2.0)));
  CHECK(s["per_seed"][1]["acceptance"].size() == 4);
  // The same attack for both roles is one poison, one stage.
  CHECK(s["per_seed"][0]["stages"]["poison-contrastive"]["cell"] == s["per_seed"][0]["stages"]["poison-class"]["cell"]);
  std::string md = read_text(o.out + "/table.md");
  CHECK(md.find("Mean ± sd over n = 2 seeds (0, 1)") != std::string::npos);
  CHECK(md.find("seed 1: ") != std::string::npos);
  o.seeds = {1, 1};
  CHECK_THROWS_WITH_AS(run_demo(o), doctest::Contains("listed twice"), Error);
  CHECK(demo_attack(DemoOptions().class_attack).kind == "class");  // the defaults name real attacks
  CHECK(demo_attack(DemoOptions().contrastive_attack).attack == "pattern");
  CHECK_THROWS_WITH_AS(demo_attack("cp-x"), doctest::Contains("aue-class"), Error);
  o.seeds = {};
  o.class_attack = "cp-s";
  CHECK_THROWS_WITH_AS(run_demo(o), doctest::Contains("not class-wise"), Error);
}

TEST_CASE("experiment --seeds: a folder per seed, mean ± sd cells, worst case, generation seconds, victim init") {
  TempDir d("seeds");
  write_scales(d, tiny_dataset(d));
  write(d.file("seeds.toml"), R"toml(title = "seeds"
columns = [
  { label = "Supervised", victim = "supervised" },
  { label = "Supervised (PyTorch init)", victim = "supervised", init = "pytorch" },
  { label = "SimCLR", victim = "simclr" },
  { label = "Worst", max_of = ["Supervised", "SimCLR"] },
  { label = "Seconds", poison_seconds = true },
]
rows = [
  { label = "None", attack = "none" },
  { label = "Random class-wise", attack = "random", kind = "class" },
]
[scale.tiny]
)toml");
  Preset p = load_preset(d.file("seeds.toml"), "tiny", d.path.string());
  Plan plan = make_plan(p);
  CHECK(plan.victims.size() == 6);
  bool has_init = false;
  for (const auto& v : plan.victims) has_init = has_init || v.id.find("-init-pytorch") != std::string::npos;
  CHECK(has_init);
  ExperimentOptions o = quiet_options(d);
  o.seeds = {3, 5};
  ExperimentReport r = run_experiment(p, o);
  CHECK(r.cells == 2 * 7);  // the random poison and six victims, per seed
  CHECK(r.ran == r.cells);
  const std::string root = d.file("results") + "/seeds/tiny";
  CHECK(fs::exists(root + "/seed-3/victim-simclr-clean/result.json"));
  CHECK(fs::exists(root + "/seed-5/victim-supervised-random-class-init-pytorch/result.json"));
  const auto& row = r.json["rows"][1];
  REQUIRE(row["per_seed"][2].size() == 2);
  const double a = row["per_seed"][2][0].get<double>(), b = row["per_seed"][2][1].get<double>();
  CHECK(row["values"][2].get<double>() == doctest::Approx((a + b) / 2));
  CHECK(row["sd"][2].get<double>() == doctest::Approx(std::fabs(a - b) / std::sqrt(2.0)));
  CHECK(row["n"][2] == 2);
  // Worst case per seed: the larger of the supervised and SimCLR values.
  for (int k = 0; k < 2; ++k)
    CHECK(row["per_seed"][3][k].get<double>() ==
          doctest::Approx(std::max(row["per_seed"][0][k].get<double>(), row["per_seed"][2][k].get<double>())));
  CHECK(row["values"][4].is_number());             // the random poison's generation seconds
  CHECK(r.json["rows"][0]["values"][4].is_null());  // no poison, no seconds
  CHECK(r.markdown.find("Mean ± sd over n = 2 seeds (3, 5") != std::string::npos);
  CHECK(r.markdown.find(" ± ") != std::string::npos);
  // The seeds differ (weights, orders, augmentations): the victims are not copies.
  CHECK(read_json(root + "/seed-3/victim-simclr-clean/config.json")["train"]["seed"] == 3);
  // A rerun with one more seed reuses the two finished ones.
  o.seeds = {3, 5, 7};
  ExperimentReport more = run_experiment(p, o);
  CHECK(more.skipped == 14);
  CHECK(more.ran == 7);
  o.seeds = {3, 3};
  CHECK_THROWS_WITH_AS(run_experiment(p, o), doctest::Contains("listed twice"), Error);
}

TEST_CASE("experiment presets reject computed columns that refer to nothing or to each other") {
  TempDir d("computed");
  write_scales(d, tiny_dataset(d));
  write(d.file("bad.toml"), R"toml(title = "bad"
columns = [ { label = "A", victim = "simclr" }, { label = "W", max_of = ["A", "M"] }, { label = "M", mean_of = ["A"] } ]
rows = [ { label = "None", attack = "none" } ]
[scale.tiny]
)toml");
  CHECK_THROWS_WITH_AS(load_preset(d.file("bad.toml"), "tiny", d.path.string()), doctest::Contains("itself computed"), Error);
  write(d.file("bad2.toml"), R"toml(title = "bad"
columns = [ { label = "A", victim = "simclr", init = "xavier" } ]
rows = [ { label = "None", attack = "none" } ]
[scale.tiny]
)toml");
  CHECK_THROWS_WITH_AS(load_preset(d.file("bad2.toml"), "tiny", d.path.string()), doctest::Contains("kaiming-fan-out"), Error);
}

TEST_CASE("experiment tables: computed means, pending and missing cells, metrics") {
  Preset p;
  p.name = "t";
  p.scale = "tiny";
  p.title = "T";
  p.corner = "Defence";
  p.columns = {Axis{"S", {}, {}, {}}, Axis{"C", {}, {}, {}}, Axis{"Avg", {}, {"S", "C"}, {}}};
  p.rows = {Axis{"a", {}, {}, {1.0, 2.0, std::nan("")}}, Axis{"b", {}, {}, {}}};
  Plan plan;
  plan.victims.resize(3);
  plan.victims[0].id = "v0";
  plan.victims[1].id = "v1";
  plan.victims[2].id = "v2";
  plan.grid = {{0, 1, -1}, {2, -1, -1}};
  nlohmann::json r0{{"probe", {{"poisoned", 40.0}, {"clean", 50.0}}}, {"alignment", {{"poisoned", 0.1}, {"clean", 0.25}}}};
  nlohmann::json r1{{"supervised", {{"test_accuracy", 60.0}}}};
  std::vector<nlohmann::json> results{r0, r1, nullptr};  // v2 not finished
  std::string md = render_markdown(p, plan, results);
  CHECK(md.find("| Defence | S | C | Avg |") != std::string::npos);
  CHECK(md.find("| a | 40.0 | 60.0 | 50.0 |") != std::string::npos);
  CHECK(md.find("| b | … | – | … |") != std::string::npos);  // pending, no cell, mean waiting on a pending cell
  CHECK(md.find("| a | 1.0 | 2.0 | – |") != std::string::npos);  // the paper's numbers
  nlohmann::json j = render_json(p, plan, results, {});
  CHECK(j["rows"][0]["values"][2].get<double>() == doctest::Approx(50.0));
  CHECK(j["rows"][1]["values"][0].is_null());
  CHECK(j["cells"]["v2"]["status"] == "pending");
  CHECK(metric_value(r0, Metric::clean_probe) == 50.0);
  CHECK(metric_value(r0, Metric::align_gap) == doctest::Approx(0.15));
  CHECK(metric_value(r1, Metric::probe) == 60.0);  // a supervised victim: its test accuracy
  CHECK(std::isnan(metric_value(r1, Metric::align_poisoned)));
}

TEST_CASE("experiment table8 preset: a supervised CP-C column beside the SimCLR ones, at both scales") {
  for (const char* scale : {"cpu-small", "paper"}) {
    INFO("scale ", scale);
    Preset p = load_preset("table8", scale, CPOISON_SOURCE_DIR "/tools/presets");  // wherever the build folder is
    REQUIRE(p.columns.size() == 4);
    const size_t sup = 3, cp_c = 1, average = 2;
    CHECK(p.columns[sup].label == "Supervised, CP (C)");
    CHECK(p.columns[average].mean_of == std::vector<std::string>{"CP (S)", "CP (C)"});
    Plan plan = make_plan(p);
    REQUIRE(plan.grid.size() == p.rows.size());
    int adversarial_rows = 0;
    for (size_t r = 0; r < p.rows.size(); ++r) {
      INFO("row ", p.rows[r].label);
      REQUIRE(p.rows[r].paper.size() == 4);
      CHECK(std::isnan(p.rows[r].paper[sup]));  // the paper has no supervised numbers
      CHECK(plan.grid[r][average] == -1);
      REQUIRE(plan.grid[r][sup] >= 0);
      const VictimJob& v = plan.victims[plan.grid[r][sup]];
      CHECK(v.algo == "supervised");
      CHECK(v.defense == plan.victims[plan.grid[r][cp_c]].defense);
      if (p.rows[r].label == "Clean Data") {
        CHECK(v.id == "victim-supervised-clean");
        CHECK(v.poison.empty());
      } else {
        CHECK(v.poison == "poison-cp-c-simclr");  // the SimCLR column's poison, shared
        CHECK(v.poison == plan.victims[plan.grid[r][cp_c]].poison);
      }
      adversarial_rows += v.defense.rfind("adv:", 0) == 0;
    }
    CHECK(adversarial_rows == 1);
  }
}

TEST_CASE("experiment: a supervised victim trains adversarially; adv:both=1 is refused for it") {
  TempDir d("supadv");
  write_scales(d, tiny_dataset(d));
  write(d.file("adv.toml"), R"toml(title = "supervised adversarial training"
columns = [ { label = "Supervised", victim = "supervised" } ]
rows = [ { label = "Adversarial", attack = "none", defense = "adv:steps=1" } ]
[scale.tiny]
)toml");
  Preset p = load_preset(d.file("adv.toml"), "tiny", d.path.string());
  ExperimentReport r = run_experiment(p, quiet_options(d));
  CHECK(r.ran == 1);
  REQUIRE(r.json["cells"].size() == 1);
  const auto& cell = r.json["cells"].begin().value();
  CHECK(cell["defense"].get<std::string>().rfind("adv:", 0) == 0);
  CHECK(cell["supervised"]["test_accuracy"].is_number());
  CHECK(std::isfinite(cell["train"]["final_loss"].get<double>()));

  write(d.file("both.toml"),
        "rows = [ { label = \"r\", victim = \"supervised\", defense = \"adv:both=1\" } ]\n[scale.tiny]\n");
  CHECK_THROWS_WITH_AS(make_plan(load_preset(d.file("both.toml"), "tiny", d.path.string())),
                       doctest::Contains("adv:both=1"), Error);
}

TEST_CASE("experiment poison jobs: the configuration holds only what the attack reads") {
  Settings a;
  Settings b = a;
  b.poison.cp_s_rounds = a.poison.cp_s_rounds + 3;     // CP-S only
  b.poison.unlearnable_rounds += 1;                    // unlearnable only
  auto job = [](const std::string& attack, const std::string& kind, const Settings& s) {
    return make_poison_job(attack, attack == "random" ? "none" : "simclr", kind, true, s.poison.eps, 1.0, s.model, s.data, s);
  };
  CHECK(job("cp-c", "class", a).config == job("cp-c", "class", b).config);
  CHECK(job("random", "sample", a).config == job("random", "sample", b).config);
  CHECK(job("cp-s", "sample", a).config != job("cp-s", "sample", b).config);
  // CP-S from uniform noise ignores CP-C's schedule; started from the CP-C poison, it depends on it.
  Settings c = a;
  c.poison.cp_c_rounds = 7;
  CHECK(job("cp-s", "sample", a).config == job("cp-s", "sample", c).config);
  a.poison.cp_s_init = c.poison.cp_s_init = "cp-c";
  CHECK(job("cp-s", "sample", a).config != job("cp-s", "sample", c).config);
  CHECK(job("cp-c", "class", a).config != job("cp-c", "class", c).config);
}

TEST_CASE("experiment poison jobs: the settings each attack records (PoisonSettings' readers; the cached cells' format)") {
  using Keys = std::vector<std::string>;
  auto keys = [](const std::string& attack, const Settings& s) {
    const std::string attacker = attack == "random" || attack == "pattern" ? "none"
                                 : attack == "cp-c" || attack == "cp-s"    ? "simclr"
                                                                           : "supervised";
    const std::string kind = attack == "cp-c" || attack == "pattern" ? "class" : "sample";
    nlohmann::json c = make_poison_job(attack, attacker, kind, true, s.poison.eps, 1.0, s.model, s.data, s).config;
    Keys out;
    if (c.contains("poison"))
      for (auto it = c["poison"].begin(); it != c["poison"].end(); ++it) out.push_back(it.key());
    return out;
  };
  Settings s;
  const Keys common{"batch_size", "eps", "lr", "recipe"};
  auto with = [&](Keys k) {
    k.insert(k.end(), common.begin(), common.end());
    std::sort(k.begin(), k.end());
    return k;
  };
  CHECK(keys("cp-c", s) == with({"cp_c_model_steps", "cp_c_noise_batches", "cp_c_rounds"}));
  CHECK(keys("cp-s", s) == with({"cp_s_init", "cp_s_pgd_steps", "cp_s_rounds"}));
  CHECK(keys("unlearnable", s) == with({"unlearnable_model_steps", "unlearnable_pgd_steps", "unlearnable_rounds"}));
  CHECK(keys("adversarial", s) == with({"adversarial_pgd_steps", "adversarial_pretrain_epochs"}));
  CHECK(keys("aue", s) == with({"aue_model_steps", "aue_pgd_steps", "aue_rounds", "aue_strength"}));
  CHECK(keys("aap", s) == with({"aap_pgd_steps", "aap_pretrain_epochs", "aap_strength"}));
  CHECK(keys("pattern", s) == Keys{"pattern_blank", "pattern_period"});
  CHECK(keys("random", s).empty());
  Settings chained = s;
  chained.poison.cp_s_init = "cp-c";
  CHECK(keys("cp-s", chained) ==
        with({"cp_c_model_steps", "cp_c_noise_batches", "cp_c_rounds", "cp_s_init", "cp_s_pgd_steps", "cp_s_rounds"}));
  Settings sep = s;
  sep.poison.separability = 0.5;
  CHECK(keys("cp-c", sep) ==
        with({"cp_c_model_steps", "cp_c_noise_batches", "cp_c_rounds", "separability", "separability_space"}));
  CHECK(keys("adversarial", sep) == keys("adversarial", s));
  CHECK(keys("pattern", sep) == keys("pattern", s));

  // An attack's knob table is recorded when it is not empty (so cells cached before the tables
  // existed keep their key), by the attack it belongs to (and CP-S's start, for CP-C's).
  for (auto* k : {&sep.poison.cp_c, &sep.poison.cp_s, &sep.poison.unlearnable, &sep.poison.adversarial, &sep.poison.aue,
                  &sep.poison.aap, &sep.poison.pattern})
    k->values = {{"rounds", 3}};
  CHECK(keys("cp-c", sep) ==
        with({"cp_c", "cp_c_model_steps", "cp_c_noise_batches", "cp_c_rounds", "separability", "separability_space"}));
  CHECK(keys("pattern", sep) == Keys{"pattern", "pattern_blank", "pattern_period"});
  CHECK(keys("random", sep).empty());
  sep.poison.cp_s_init = "cp-c";
  CHECK(keys("cp-s", sep) == with({"cp_c", "cp_c_model_steps", "cp_c_noise_batches", "cp_c_rounds", "cp_s", "cp_s_init",
                                   "cp_s_pgd_steps", "cp_s_rounds", "separability", "separability_space"}));

  // Every field but the checkpoint interval has readers: a new field that names none would
  // change no cell's key, and a cached poison would be taken for one made with it.
  std::set<std::string> read{"checkpoint_every"};
  for (const char* attack : {"cp-c", "cp-s", "unlearnable", "adversarial", "aue", "aap", "pattern", "random"})
    for (const auto& k : keys(attack, sep)) read.insert(k);
  const Keys all = tools::field_keys(PoisonSettings{});
  CHECK(std::set<std::string>(all.begin(), all.end()) == read);
}

TEST_CASE("experiment: an attack's knob table (poison.cp_c = { ... }) sets any poison knob for that attack only") {
  TempDir d("knobs");
  write_scales(d, "fashion-mnist");
  const std::string axes = "columns = [ { label = \"A\" } ]\nrows = [ { label = \"r\" } ]\n";
  write(d.file("k.toml"), axes + R"([scale.tiny]
poison.cp_c = { rounds = 4, separability = 1, separability_space = "features" }
poison.aap.target_shift = 3
)");
  const Settings s = load_preset(d.file("k.toml"), "tiny", d.path.string()).settings;
  data::Dataset shape;
  shape.images = Tensor::zeros({1, 8, 8, 1}, DType::u8);
  shape.labels = Tensor::zeros({1}, DType::i64);
  shape.classes = 4;
  shape.name = "fashion-mnist";
  shape.mean = {0.5}, shape.std = {0.25};
  auto config = [&](const std::string& attack, const std::string& attacker, const std::string& kind, const Settings& st) {
    return poison_config(make_poison_job(attack, attacker, kind, true, st.poison.eps, 1.0, st.model, st.data, st), st, shape);
  };
  const poison::PoisonConfig cpc = config("cp-c", "simclr", "class", s);
  CHECK(cpc.rounds == 4);  // the table wins over cp_c_rounds = 1 (scales.toml)
  CHECK(cpc.model_steps == 1);
  CHECK(cpc.separability == 1.0);
  CHECK(cpc.separability_space == poison::SeparabilitySpace::features);
  const poison::PoisonConfig cps = config("cp-s", "simclr", "sample", s);
  CHECK(cps.rounds == 1);  // another attack's table does not reach it
  CHECK(cps.separability == 0.0);
  CHECK(config("aap", "supervised", "sample", s).target_shift == 3);
  CHECK(config("aue", "supervised", "sample", s).target_shift == 1);

  // The cache key: a table changes its own attack's poison only; an empty one changes none.
  Settings plain = s;
  plain.poison.cp_c = plain.poison.aap = AttackKnobs{};
  auto key = [&](const std::string& attack, const std::string& attacker, const std::string& kind, const Settings& st) {
    return make_poison_job(attack, attacker, kind, true, st.poison.eps, 1.0, st.model, st.data, st).config;
  };
  CHECK(key("cp-c", "simclr", "class", s) != key("cp-c", "simclr", "class", plain));
  CHECK(key("cp-c", "simclr", "class", s)["poison"]["cp_c"]["rounds"] == 4);
  CHECK(key("cp-s", "simclr", "sample", s) == key("cp-s", "simclr", "sample", plain));
  CHECK(key("aue", "supervised", "sample", s) == key("aue", "supervised", "sample", plain));
  CHECK(!key("cp-c", "simclr", "class", plain)["poison"].contains("cp_c"));

  // Bad tables: an error naming the file and the dotted knob.
  auto error_of = [&](const std::string& text) -> std::string {
    write(d.file("bad.toml"), axes + "[scale.tiny]\n" + text);
    try {
      load_preset(d.file("bad.toml"), "tiny", d.path.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string wrong_type = error_of("poison.cp_c = { rounds = 2.5 }\n");
  CHECK(wrong_type.find("bad.toml") != std::string::npos);
  CHECK(wrong_type.find("scale.tiny.poison.cp_c.rounds: expected an integer") != std::string::npos);
  CHECK(error_of("poison.aue = { roundz = 2 }\n").find("unknown knob 'roundz'") != std::string::npos);
  CHECK(error_of("poison.aue = 3\n").find("'scale.tiny.poison.aue'") != std::string::npos);
  CHECK(error_of("poison.aue = { rounds = [1, 2] }\n").find("'scale.tiny.poison.aue.rounds'") != std::string::npos);
  CHECK(error_of("poison.cp_c = { separability_space = \"pixels\" }\n").find("separability_space") != std::string::npos);
}

TEST_CASE("experiment: aue and aap cells take supervised attackers; their settings reach only their poisons") {
  Settings s;
  CellKeys col, row;
  col.victim = "simclr";
  for (const char* attack : {"aue", "aap"}) {
    CAPTURE(attack);
    row.attack = attack;
    row.attacker.reset();
    CellSpec c = merge_cell(col, row, s, "test");
    CHECK(c.attacker == "supervised");
    CHECK(c.kind == "sample");
    row.attacker = "simclr";
    CHECK_THROWS_WITH_AS(merge_cell(col, row, s, "test"), doctest::Contains("uses a supervised attacker"), Error);
  }
  auto job = [](const std::string& attack, const std::string& kind, const Settings& st) {
    const std::string attacker = attack == "cp-c" ? "simclr" : "supervised";
    return make_poison_job(attack, attacker, kind, true, st.poison.eps, 1.0, st.model, st.data, st);
  };
  Settings b = s;
  b.poison.aue_rounds = 3;
  b.poison.aap_pgd_steps = 7;
  CHECK(job("cp-c", "class", s).config == job("cp-c", "class", b).config);
  CHECK(job("aue", "sample", s).config != job("aue", "sample", b).config);
  CHECK(job("aap", "sample", s).config != job("aap", "sample", b).config);
  CHECK(job("aue", "sample", s).config["poison"].contains("aue_rounds"));
  CHECK_FALSE(job("aue", "sample", s).config["poison"].contains("aap_pgd_steps"));
  CHECK(job("aue", "sample", s).config["augment"] == s.victim.augment);  // the contrastive list, not crop-flip
  CHECK(job("aue", "class", s).id == "poison-aue-supervised-class");
  // The separability weight appears only when it is on (caches made before it stay valid).
  CHECK_FALSE(job("cp-c", "class", s).config["poison"].contains("separability"));
  Settings sep = s;
  sep.poison.separability = 0.1;
  CHECK(job("cp-c", "class", sep).config["poison"]["separability"].get<double>() == doctest::Approx(0.1));
  CHECK(job("cp-c", "class", s).config != job("cp-c", "class", sep).config);
  sep.poison.aue_strength = 3;
  CHECK_THROWS_WITH_AS(sep.validate("test"), doctest::Contains("aue_strength"), Error);
}

TEST_CASE("experiment: a cell's start chains its poison from another attack's (AUE -> CP-S), cached apart") {
  TempDir d("start");
  write_scales(d, "fashion-mnist");
  write(d.file("p.toml"), R"toml(columns = [ { label = "SimCLR", victim = "simclr" } ]
rows = [
  { label = "CP-S (scale: from CP-C)", attack = "cp-s", attacker = "simclr" },
  { label = "CP-S from uniform", attack = "cp-s", attacker = "simclr", start = "uniform" },
  { label = "AUE -> CP-S", attack = "cp-s", attacker = "simclr", start = "aue" },
  { label = "AUE class -> CP-C", attack = "cp-c", attacker = "simclr", start = "aue:class" },
  { label = "CP-C", attack = "cp-c", attacker = "simclr", start = "uniform" },
]
[scale.tiny]
poison.cp_s_init = "cp-c"
)toml");
  Preset p = load_preset(d.file("p.toml"), "tiny", d.path.string());
  Plan plan = make_plan(p);
  std::vector<std::string> ids;
  for (const auto& j : plan.poisons) ids.push_back(j.id);
  CHECK(ids == std::vector<std::string>{"poison-cp-c-simclr", "poison-cp-s-simclr", "poison-cp-s-simclr-from-uniform",
                                        "poison-aue-supervised", "poison-cp-s-simclr-from-aue-supervised",
                                        "poison-aue-supervised-class", "poison-cp-c-simclr-from-aue-supervised-class"});
  const auto& by_scale = plan.poisons[1];
  CHECK(by_scale.init_from == "poison-cp-c-simclr");
  CHECK(!by_scale.config.contains("start"));  // the scale's chaining: the cached cells' format
  const auto& uniform = plan.poisons[2];
  CHECK(uniform.init_from.empty());
  CHECK(uniform.config["start"] == "uniform");
  CHECK(uniform.config["poison"]["cp_s_init"] == "uniform");
  CHECK(!uniform.config["poison"].contains("cp_c_rounds"));  // CP-C's settings do not shape it
  const auto& from_aue = plan.poisons[4];
  CHECK(from_aue.init_from == "poison-aue-supervised");
  CHECK(from_aue.config["start"] == "aue:sample");
  CHECK(from_aue.config["start_config"] == plan.poisons[3].config);  // an AUE setting changes it too
  CHECK(plan.poisons[6].init_from == "poison-aue-supervised-class");
  CHECK(plan.victims[plan.grid[4][0]].id == "victim-simclr-cp-c-simclr");  // start = uniform is CP-C's own

  auto error_of = [&](const std::string& row) -> std::string {
    write(d.file("bad.toml"), "columns = [ { label = \"S\", victim = \"simclr\" } ]\nrows = [ " + row + " ]\n[scale.tiny]\n");
    try {
      make_plan(load_preset(d.file("bad.toml"), "tiny", d.path.string()));
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  CHECK(error_of("{ label = \"r\", attack = \"cp-s\", start = \"cp-x\" }").find("'rows[0].start'") != std::string::npos);
  CHECK(error_of("{ label = \"r\", attack = \"cp-s\", start = \"aue:row\" }").find("'rows[0].start'") != std::string::npos);
  CHECK(error_of("{ label = \"r\", attack = \"aue\", start = \"cp-c\" }").find("for cp-s and cp-c cells") !=
        std::string::npos);
}

TEST_CASE("experiment: AUE -> CP-S runs: the CP-S noise starts from the AUE poison") {
  TempDir d("start-run");
  write_scales(d, tiny_dataset(d));
  write(d.file("p.toml"), R"toml(title = "chained"
columns = [ { label = "Supervised", victim = "supervised" } ]
rows = [ { label = "AUE -> CP-S", attack = "cp-s", attacker = "simclr", start = "aue" } ]
[scale.tiny]
poison.aue_rounds = 1
poison.aue_model_steps = 1
poison.aue_pgd_steps = 1
poison.cp_s = { noise_batches = 1 }
)toml");
  Preset p = load_preset(d.file("p.toml"), "tiny", d.path.string());
  ExperimentReport r = run_experiment(p, quiet_options(d));
  CHECK(r.cells == 3);  // the AUE poison, the CP-S poison, the victim
  CHECK(r.ran == r.cells);
  const poison::Poison aue = poison::load_poison(r.root + "/poison-aue-supervised/poison.h5");
  const poison::Poison cps = poison::load_poison(r.root + "/poison-cp-s-simclr-from-aue-supervised/poison.h5");
  REQUIRE(aue.delta.shape() == cps.delta.shape());
  // One noise batch of 16 of the 32 images in CP-S's one round: the other 16 keep AUE's noise.
  const int64_t n = aue.delta.shape()[0], per = aue.delta.numel() / n;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool same = true;
    for (int64_t k = 0; k < per; ++k) same = same && aue.delta.data<float>()[i * per + k] == cps.delta.data<float>()[i * per + k];
    kept += same;
  }
  CHECK(kept == 16);
  const nlohmann::json res = nlohmann::json::parse(read_text(r.root + "/poison-cp-s-simclr-from-aue-supervised/result.json"));
  CHECK(res["init_from"] == "poison-aue-supervised");
  CHECK(res["knobs"]["noise_batches"] == 1);

  // A finished cell records the knobs its settings resolved to: were a recipe's value to change
  // in the code (simulated here by editing the record), the cell is not taken for a new one.
  const std::string aue_result = r.root + "/poison-aue-supervised/result.json";
  nlohmann::json edited = nlohmann::json::parse(read_text(aue_result));
  REQUIRE(edited["knobs"]["rounds"] == 1);
  edited["knobs"]["rounds"] = 7;
  write(aue_result, edited.dump());
  ExperimentOptions o = quiet_options(d);
  o.dry_run = true;
  const ExperimentReport listed = run_experiment(p, o);
  bool shown_changed = false;
  for (const auto& line : listed.listing)
    shown_changed = shown_changed || (line.rfind("changed", 0) == 0 && line.find("poison-aue-supervised ") != std::string::npos);
  CHECK(shown_changed);
  o.dry_run = false;
  CHECK_THROWS_WITH_AS(run_experiment(p, o), doctest::Contains("knobs.rounds (7 before, 1 now)"), Error);
  o.redo_changed = true;
  ExperimentReport again = run_experiment(p, o);
  CHECK(again.ran == 1);  // the AUE poison only: CP-S's key holds AUE's settings, which did not change
  CHECK(nlohmann::json::parse(read_text(aue_result))["knobs"]["rounds"] == 1);
}

TEST_CASE("experiment: AUE and AAP poisons run through the runner on a tiny set") {
  TempDir d("aue-aap");
  write_scales(d, tiny_dataset(d));
  write(d.file("p.toml"), R"toml(title = "aue-aap"
columns = [ { label = "Supervised", victim = "supervised" } ]
rows = [
  { label = "AUE", attack = "aue" },
  { label = "AAP", attack = "aap" },
]
[scale.tiny]
poison.aue_rounds = 1
poison.aue_model_steps = 1
poison.aue_pgd_steps = 1
poison.aap_pretrain_epochs = 1
poison.aap_pgd_steps = 2
poison.separability = 0.5
)toml");
  Preset p = load_preset(d.file("p.toml"), "tiny", d.path.string());
  ExperimentReport r = run_experiment(p, quiet_options(d));
  CHECK(r.ran == r.cells);
  CHECK(r.cells == 4);  // two poisons, two victims
  for (const char* id : {"poison-aue-supervised", "poison-aap-supervised"}) {
    CAPTURE(id);
    REQUIRE(fs::exists(r.root + "/" + id + "/poison.h5"));
    poison::Poison ps = poison::load_poison(r.root + "/" + id + "/poison.h5");
    CHECK(ps.algorithm == "supervised");
    CHECK(ps.kind == poison::NoiseKind::sample_wise);
  }
}

TEST_CASE("experiment: pattern cells are class-wise with no attacker; only the period shapes their poison") {
  Settings s;
  CellKeys col, row;
  col.victim = "simclr";
  row.attack = "pattern";
  CellSpec c = merge_cell(col, row, s, "test");
  CHECK(c.attacker == "none");
  CHECK(c.kind == "class");
  row.kind = "sample";
  CHECK_THROWS_WITH_AS(merge_cell(col, row, s, "test"), doctest::Contains("attack pattern is class-wise"), Error);
  auto job = [](const Settings& st) {
    return make_poison_job("pattern", "none", "class", true, st.poison.eps, 1.0, st.model, st.data, st);
  };
  CHECK(job(s).id == "poison-pattern");
  Settings b = s;
  b.poison.cp_c_rounds += 5;  // not read by the pattern
  b.victim.epochs += 1;
  CHECK(job(s).config == job(b).config);
  b.poison.pattern_period = 6;
  CHECK(job(s).config != job(b).config);
  CHECK(job(b).config["poison"]["pattern_period"].get<double>() == doctest::Approx(6));
  CHECK_FALSE(make_poison_job("cp-c", "simclr", "class", true, s.poison.eps, 1.0, s.model, s.data, s)
                  .config["poison"]
                  .contains("pattern_period"));
  Settings nb = s;
  nb.poison.pattern_blank = -1;  // the blank class is part of the poison's identity
  CHECK(job(s).config != job(nb).config);
  CHECK(job(nb).config["poison"]["pattern_blank"].get<int64_t>() == -1);
  CHECK_FALSE(make_poison_job("cp-c", "simclr", "class", true, s.poison.eps, 1.0, s.model, s.data, s)
                  .config["poison"]
                  .contains("pattern_blank"));
  nb.poison.pattern_blank = -3;
  CHECK_THROWS_WITH_AS(nb.validate("test"), doctest::Contains("pattern_blank"), Error);
  b.poison.pattern_period = 1;
  CHECK_THROWS_WITH_AS(b.validate("test"), doctest::Contains("pattern_period"), Error);
  CHECK(demo_attack("pattern").attack == "pattern");
}
