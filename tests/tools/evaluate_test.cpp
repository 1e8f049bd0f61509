// `cpoison evaluate` (tools/experiment/evaluate.h) and `cpoison detect` (detect.h): the pieces
// with known answers (accuracies read from a cell's result, mean ± sd (n), the threshold's
// calibration, fit speed on separable data), the battery on a tiny 8x8 dataset with a class-wise
// poison file (cells cached on a rerun, errors for bad input), and detection of our own drawn
// poisons on a Fashion-MNIST subset.
// Images: u8 [N,H,W,C].
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "engine/data/dataset.h"
#include "poison/poison_file.h"
#include "tests/support/cli.h"
#include "tests/support/skip.h"
#include "tools/common.h"
#include "tools/experiment/cells.h"
#include "tools/experiment/detect.h"
#include "tools/experiment/evaluate.h"

using namespace cpoison;
using namespace cpoison::tools::experiment;
using cpoison::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// 8x8 grey images of 4 classes (a bright quadrant per class, plus a pattern per image), train
// and test splits in one HDF5 file.
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
  std::string path = d / "tiny.h5";
  data::save_datasets_h5(path, {{data::Split::train, &train}, {data::Split::test, &test}});
  return path;
}

// scales.toml with one fast scale, "tiny".
void write_scales(const TempDir& d) {
  write(d / "scales.toml", R"([tiny]
width = 2
[tiny.data]
dataset = "fashion-mnist"
subset = 0
[tiny.victim]
epochs = 1
batch_size = 16
checkpoint_every = 1
[tiny.supervised]
epochs = 1
batch_size = 16
[tiny.eval]
iterations = 10
alignment_images = 8
batch_size = 16
)");
}

// A class-wise poison file for the tiny set (alternating ±1 per class), recording the data it
// was made for as `cpoison poison` does; `fingerprint` "" takes the data's own.
std::string tiny_poison(const TempDir& d, const std::string& data_path, const std::string& fingerprint = "") {
  tools::DataOptions o;
  o.data = data_path;
  const data::Dataset clean = tools::load_train(o);
  poison::Poison p;
  std::vector<float> delta(4 * 64);
  for (size_t i = 0; i < delta.size(); ++i) delta[i] = ((i / 64 + i % 64) % 2) ? 1.0f : -1.0f;
  p.delta = Tensor::from_vector(delta, {4, 1, 8, 8});
  std::vector<int64_t> rows(clean.size());
  for (int64_t i = 0; i < clean.size(); ++i) rows[i] = i;
  p.indices = Tensor::from_vector(rows, {clean.size()});
  p.kind = poison::NoiseKind::class_wise;
  p.classes = 4;
  p.image_count = clean.size();
  p.attack = "random";
  p.algorithm = "none";
  p.dataset = data_path;
  p.eps = 8.0 / 255.0;
  std::string path = d / "classwise.h5";
  tools::save_poison_with_attrs(path, p,
                                {{"data_fingerprint", fingerprint.empty() ? tools::data_fingerprint(clean) : fingerprint},
                                 {"subset_seed", int64_t(0)}});
  return path;
}

}  // namespace

TEST_CASE("evaluate_accuracy reads the protocol's value from a victim's result") {
  const nlohmann::json supervised{{"supervised", {{"test_accuracy", 71.5}, {"train_accuracy", 99.0}}}};
  const nlohmann::json lbfgs{{"probe", {{"mode", "features"}, {"poisoned", 60.0}, {"clean", 80.0}}}};
  const nlohmann::json sgd{{"probe", {{"mode", "sgd"}, {"poisoned", 60.0}, {"poisoned_best", 62.5}, {"clean", 80.0},
                                      {"clean_best", 81.0}}}};
  CHECK(evaluate_accuracy(supervised, "poisoned", "final") == 71.5);
  CHECK(evaluate_accuracy(supervised, "clean", "best") == 71.5);  // its own test accuracy, whatever the probe
  CHECK(evaluate_accuracy(lbfgs, "poisoned", "final") == 60.0);
  CHECK(evaluate_accuracy(lbfgs, "clean", "final") == 80.0);
  CHECK(evaluate_accuracy(lbfgs, "clean", "best") == 80.0);  // L-BFGS: best = final
  CHECK(evaluate_accuracy(sgd, "poisoned", "best") == 62.5);
  CHECK(evaluate_accuracy(sgd, "clean", "best") == 81.0);
  CHECK(evaluate_accuracy(sgd, "clean", "final") == 80.0);
  CHECK(std::isnan(evaluate_accuracy(nlohmann::json{{"status", "pending"}}, "poisoned", "final")));
  CHECK(std::isnan(evaluate_accuracy(nlohmann::json(), "poisoned", "final")));
}

TEST_CASE("seed_stat and format_seed_stat: mean ± sd (n), a bare value for one seed, a dash for none") {
  SeedStat s = seed_stat({1.0, 2.0, 3.0});
  CHECK(s.mean == doctest::Approx(2.0));
  CHECK(s.sd == doctest::Approx(1.0));
  CHECK(s.n == 3);
  CHECK(format_seed_stat(s) == "2.0 ± 1.0 (3)");
  SeedStat one = seed_stat({87.24, std::nan("")});
  CHECK(one.n == 1);
  CHECK(std::isnan(one.sd));
  CHECK(format_seed_stat(one) == "87.2 (1)");
  CHECK(format_seed_stat(seed_stat({std::nan("")})) == "–");
  CHECK(victim_label("moco") == "MoCo v2");
  CHECK(victim_label("supervised") == "Supervised");
  CHECK_THROWS_WITH(victim_label("swav"), doctest::Contains("--victims"));
}

TEST_CASE("write_text writes through a temporary name and leaves none behind") {
  TempDir d("write-text");
  const std::string path = d / "t.md";
  write_text(path, "first\n");
  write_text(path, "second\n");
  CHECK(read_text(path) == "second\n");
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK_THROWS_WITH(write_text(d / "missing/t.md", "x"), doctest::Contains("missing/t.md.tmp"));
}

TEST_CASE("calibrate_threshold: mean + k * max(sd, min_sd)") {
  Calibration c = calibrate_threshold({1.0, 2.0, 3.0}, 3.0, 0.5);
  CHECK(c.mean == doctest::Approx(2.0));
  CHECK(c.sd == doctest::Approx(1.0));
  CHECK(c.max == 3.0);
  CHECK(c.n == 3);
  CHECK(c.threshold == doctest::Approx(5.0));
  Calibration one = calibrate_threshold({4.0}, 2.0, 1.0);  // one score: sd 0, the floor decides
  CHECK(one.sd == 0.0);
  CHECK(one.threshold == doctest::Approx(6.0));
  CHECK_THROWS_WITH(calibrate_threshold({}, 3.0, 1.0), doctest::Contains("no clean scores"));
}

TEST_CASE("fit_speed_score: separable labels are fitted completely, random labels are not; same seed, same score") {
  // 64 images 4x4x1: the label is the one bright pixel's quadrant (linearly separable); a second
  // set keeps the images and draws labels that no pixel decides.
  const int64_t n = 64;
  std::vector<uint8_t> px(n * 16, 20);
  std::vector<int64_t> labels(n), shuffled(n);
  uint32_t state = 7;
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 4;
    px[i * 16 + (labels[i] / 2) * 8 + (labels[i] % 2) * 2] = 250;
    for (int64_t j = 0; j < 16; ++j) {
      state = state * 1664525u + 1013904223u;
      if (px[i * 16 + j] != 250) px[i * 16 + j] = (uint8_t)(state >> 27);
    }
    state = state * 1664525u + 1013904223u;
    shuffled[i] = (int64_t)(state >> 30);
  }
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {n, 4, 4, 1});
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 4;
  ds.name = "quadrants";
  ds.mean = {0.1};
  ds.std = {0.2};
  FitSpeedOptions o;
  o.epochs = 30;
  o.batch_size = 8;
  o.hidden = 16;
  for (const char* input : {"pixels", "highpass"}) {
    INFO(input);
    o.input = input;
    FitSpeedScore s = fit_speed_score(ds, o, 0);
    CHECK(s.linear == 100.0);
    CHECK(s.mlp == 100.0);
    CHECK(s.score == 100.0);
    CHECK(s.images == n);
  }
  o.input = "pixels";
  data::Dataset noise = ds;
  noise.labels = Tensor::from_vector(shuffled, {n});
  o.epochs = 1;
  FitSpeedScore r = fit_speed_score(noise, o, 0);
  CHECK(r.score < 70.0);  // one pass cannot memorise 64 arbitrary labels from 16 pixels
  FitSpeedScore again = fit_speed_score(noise, o, 0);
  CHECK(again.linear == r.linear);
  CHECK(again.mlp == r.mlp);
  o.max_images = 10;
  CHECK(fit_speed_score(ds, o, 3).images == 10);
  // Flat images, dark or bright by class (2 classes): the pixels tell the class, their
  // high-pass (each pixel minus its neighbourhood's mean) is zero everywhere, so every image
  // gets the same prediction and exactly half are right.
  data::Dataset flat = ds;
  std::vector<uint8_t> flat_px(n * 16);
  std::vector<int64_t> halves(n);
  for (int64_t i = 0; i < n; ++i) {
    halves[i] = i % 2;
    for (int64_t j = 0; j < 16; ++j) flat_px[i * 16 + j] = (uint8_t)(halves[i] ? 200 : 40);
  }
  flat.images = Tensor::from_vector(flat_px, {n, 4, 4, 1});
  flat.labels = Tensor::from_vector(halves, {n});
  flat.classes = 2;
  o.epochs = 30;
  o.max_images = 0;
  o.input = "pixels";
  CHECK(fit_speed_score(flat, o, 0).linear == 100.0);
  o.input = "highpass";
  FitSpeedScore blind = fit_speed_score(flat, o, 0);
  CHECK(blind.linear == 50.0);
  CHECK(blind.mlp == 50.0);
  o.input = "edges";
  CHECK_THROWS_WITH(fit_speed_score(flat, o, 0), doctest::Contains("highpass"));
  o.input = "pixels";
  data::Dataset unlabelled = ds;
  unlabelled.labels = Tensor::from_vector(std::vector<int64_t>(n, -1), {n});
  CHECK_THROWS_WITH(fit_speed_score(unlabelled, o, 0), doctest::Contains("quadrants"));
}

TEST_CASE("evaluate: the battery on a poison file beside the clean reference, cached on a rerun") {
  TempDir d("evaluate");
  const std::string data = tiny_dataset(d);
  write_scales(d);
  const std::string poison_file = tiny_poison(d, data);
  EvaluateOptions o;
  o.file = poison_file;
  o.scale = "tiny";
  o.presets = d.path.string();
  o.victims = {"supervised", "simclr"};
  o.seeds = {0, 1};
  o.cache = d / "cells";
  o.out = d / "out";
  o.quiet = true;
  o.progress_seconds = -1;

  EvaluateOptions dry = o;
  dry.dry_run = true;
  EvaluateReport plan = run_evaluate(dry);
  CHECK(plan.cells == 2 * (1 + 4));  // per seed: the poison file's cell and 2 victims x 2 rows
  CHECK(plan.ran == 0);
  std::string listing;
  for (const auto& l : plan.listing) listing += l + "\n";
  CHECK(listing.find("the poison file " + poison_file) != std::string::npos);
  CHECK(listing.find("victim-simclr-clean") != std::string::npos);
  CHECK(listing.find("estimated") != std::string::npos);
  CHECK_FALSE(fs::exists(d / "out"));

  EvaluateReport r = run_evaluate(o);
  CHECK(r.ran == 10);
  CHECK(fs::exists(d / "out/table.md"));
  CHECK(fs::exists(d / "out/result.json"));
  const nlohmann::json j = nlohmann::json::parse(read_text(d / "out/result.json"));
  REQUIRE(j["rows"].size() == 2);
  CHECK(j["rows"][0]["role"] == "clean");
  CHECK(j["rows"][1]["role"] == "poison");
  for (const auto& row : j["rows"]) {
    for (const char* v : {"supervised", "simclr"}) {
      CHECK(row["victims"][v]["n"] == 2);
      CHECK(row["victims"][v]["per_seed"].size() == 2);
    }
    // Per seed the lowest is the smaller victim and the mean their average.
    for (int k = 0; k < 2; ++k) {
      const double a = row["victims"]["supervised"]["per_seed"][k], b = row["victims"]["simclr"]["per_seed"][k];
      CHECK(row["lowest"]["per_seed"][k].get<double>() == doctest::Approx(std::min(a, b)));
      CHECK(row["mean"]["per_seed"][k].get<double>() == doctest::Approx((a + b) / 2));
    }
  }
  const double drop0 = j["drop"]["simclr"]["per_seed"][0];
  CHECK(drop0 == doctest::Approx(j["rows"][0]["victims"]["simclr"]["per_seed"][0].get<double>() -
                                 j["rows"][1]["victims"]["simclr"]["per_seed"][0].get<double>()));
  CHECK(j["protocol"]["probe_data"] == "poisoned");
  CHECK(j["poison"]["kind"] == "class");
  const std::string md = read_text(d / "out/table.md");
  CHECK(md == r.markdown);
  CHECK(md.find("| Training data | Supervised | SimCLR | Lowest (worst victim) | Mean over victims |") != std::string::npos);
  CHECK(md.find("Clean data (reference)") != std::string::npos);
  CHECK(md.find("Poison classwise (random, class-wise, eps 8/255)") != std::string::npos);
  CHECK(md.find("Drop (clean − poison)") != std::string::npos);
  CHECK(md.find(" (2) |") != std::string::npos);
  CHECK(md.find("Settings: " + data + "; resnet18 width 2; contrastive victims 1 epochs (batch 16), supervised 1 epochs") !=
        std::string::npos);
  CHECK(md.find("fitted on the poisoned training images, test accuracy at the probe's final epoch") != std::string::npos);

  // A rerun trains nothing; another protocol reads other values of the same cells.
  EvaluateOptions clean_probe = o;
  clean_probe.probe_data = "clean";
  clean_probe.probe_epoch = "best";
  EvaluateReport again = run_evaluate(clean_probe);
  CHECK(again.ran == 0);
  CHECK(again.skipped == 10);
  CHECK(again.markdown.find("fitted on the clean training images, test accuracy at the probe's best epoch") !=
        std::string::npos);
  CHECK(again.json["rows"][1]["victims"]["supervised"]["per_seed"] == j["rows"][1]["victims"]["supervised"]["per_seed"]);

  // A dataset file alone: one row, no poison, no drop.
  EvaluateOptions ds = o;
  ds.file = data;
  ds.seeds = {0};
  ds.out = d / "out-data";
  EvaluateReport plain = run_evaluate(ds);
  CHECK(plain.json["input"] == "dataset");
  CHECK(plain.json["rows"].size() == 1);
  CHECK_FALSE(plain.json.contains("drop"));
  CHECK(plain.markdown.find("Dataset tiny (no poison)") != std::string::npos);
}

TEST_CASE("evaluate refuses a missing file, a poison for other images, and unknown victims or protocols") {
  TempDir d("evaluate-bad");
  const std::string data = tiny_dataset(d);
  write_scales(d);
  EvaluateOptions o;
  o.scale = "tiny";
  o.presets = d.path.string();
  o.cache = d / "cells";
  o.out = d / "out";
  o.quiet = true;
  o.file = d / "nowhere.h5";
  CHECK_THROWS_WITH(run_evaluate(o), doctest::Contains("nowhere.h5: does not exist"));
  o.file = tiny_poison(d, data, "0123456789abcdef");
  CHECK_THROWS_WITH(run_evaluate(o), doctest::Contains("differ from those the poison was made for"));
  o.file = tiny_poison(d, data);
  o.victims = {"simclr", "swav"};
  CHECK_THROWS_WITH(run_evaluate(o), doctest::Contains("unknown victim 'swav'"));
  o.victims = {"simclr"};
  o.probe_data = "test";
  CHECK_THROWS_WITH(run_evaluate(o), doctest::Contains("--probe-data"));
  o.probe_data = "clean";
  o.scale = "huge";
  CHECK_THROWS_WITH(run_evaluate(o), doctest::Contains("huge"));
  CHECK_FALSE(fs::exists(d / "out"));
  CHECK_FALSE(fs::exists(d / "cells"));
}

namespace {

bool fashion_mnist_installed() {
  for (const char* dir : {"/usr/share/datasets/fashion-mnist", "data/fashion-mnist"})
    if (fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz") || fs::exists(fs::path(dir) / "train-images-idx3-ubyte"))
      return true;
  return std::getenv("CPOISON_DATA") != nullptr;
}

}  // namespace

TEST_CASE("detect: our drawn class-wise poisons on a Fashion-MNIST subset are found, the clean subset is not") {
  using cpoison::testing::run_cpoison;
  SKIP_UNLESS(fs::exists(cpoison::testing::cpoison_exe()), "the cpoison executable is not built beside the tests");
  SKIP_UNLESS(fashion_mnist_installed(), "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)");
  TempDir d("detect");
  const std::string subset = " --data fashion-mnist --subset 500 --progress-seconds -1";
  for (const char* attack : {"random --kind class", "pattern"}) {
    INFO(attack);
    const std::string poison_file = d / "p.h5";
    auto made = run_cpoison(std::string("poison --attack ") + attack + subset + " --out '" + poison_file + "'");
    INFO(made.output);
    REQUIRE(made.code == 0);
    auto r = run_cpoison("detect '" + poison_file + "' --out '" + (d / "det") + "'");
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("Verdict: **poisoned**") != std::string::npos);
    const nlohmann::json j = nlohmann::json::parse(read_text(d / "det/result.json"));
    CHECK(j["verdict"] == "poisoned");
    CHECK(j["fit_speed"]["score"].get<double>() > j["fit_speed"]["threshold"].get<double>());
    CHECK(j["fit_speed"]["clean_scores"].size() == 5);
  }
  // The clean subset as a dataset file, calibrated on the same clean data (other seeds).
  tools::DataOptions o;
  o.data = "fashion-mnist";
  o.subset = 500;
  data::save_dataset_h5(d / "clean.h5", tools::load_train(o), data::Split::train);
  auto r = run_cpoison("detect '" + (d / "clean.h5") + "' --reference fashion-mnist --reference-subset 500 --out '" +
                       (d / "det-clean") + "'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(r.output.find("Verdict: **clean**") != std::string::npos);
  // Bad input: a dataset without --reference, a missing file.
  auto no_ref = run_cpoison("detect '" + (d / "clean.h5") + "'");
  CHECK(no_ref.code == 1);
  CHECK(no_ref.output.find("--reference") != std::string::npos);
  auto missing = run_cpoison("detect '" + (d / "nothing.h5") + "'");
  CHECK(missing.code == 1);
  CHECK(missing.output.find("nothing.h5: does not exist") != std::string::npos);
}

TEST_CASE("cpoison evaluate on the command line: a bad file exits 1 naming it; --dry-run lists the cells") {
  using cpoison::testing::run_cpoison;
  SKIP_UNLESS(fs::exists(cpoison::testing::cpoison_exe()), "the cpoison executable is not built beside the tests");
  TempDir d("evaluate-cli");
  const std::string data = tiny_dataset(d);
  write_scales(d);
  const std::string poison_file = tiny_poison(d, data);
  auto missing = run_cpoison("evaluate '" + (d / "none.h5") + "' --scale tiny --presets '" + d.path.string() + "'");
  CHECK(missing.code == 1);
  CHECK(missing.output.find("none.h5: does not exist") != std::string::npos);
  write(d / "text.h5", "not HDF5");
  auto text = run_cpoison("evaluate '" + (d / "text.h5") + "' --scale tiny --presets '" + d.path.string() + "'");
  CHECK(text.code == 1);
  CHECK(text.output.find("text.h5") != std::string::npos);
  auto dry = run_cpoison("evaluate '" + poison_file + "' --scale tiny --presets '" + d.path.string() + "' --cache '" +
                         (d / "cells") + "' --victims simclr,byol --seeds 0,1,2 --dry-run");
  INFO(dry.output);
  REQUIRE(dry.code == 0);
  CHECK(dry.output.find("seed-2/victim-byol-clean") != std::string::npos);
  CHECK(dry.output.find("15 cells, 15 to run") != std::string::npos);  // 3 seeds x (1 poison + 2 x 2 victims)
}

TEST_CASE("detect --alignment: the gap of short SimCLR runs on the poison, calibrated on uniform noise, as cells") {
  TempDir d("detect-align");
  const std::string data = tiny_dataset(d);
  write_scales(d);
  DetectOptions o;
  o.file = tiny_poison(d, data);
  o.fit.epochs = 1;
  o.fit.hidden = 4;
  o.calibration_seeds = 2;
  o.alignment = true;
  o.scale = "tiny";
  o.presets = d.path.string();
  o.cache = d / "cells";
  o.simclr_epochs = 1;
  o.alignment_seeds = {0, 1};
  o.out = d / "out";
  DetectReport r = run_detect(o);
  const nlohmann::json& a = r.json["alignment_gap"];
  REQUIRE(a.is_object());
  // The gap is the mean over the seeds of each poisoned victim's alignment on clean minus
  // poisoned views, as its cell recorded them.
  const std::string root = a["cells_root"];
  double sum = 0;
  std::vector<double> noise;
  for (int seed : {0, 1}) {
    const fs::path dir = fs::path(root) / ("seed-" + std::to_string(seed));
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("victim-simclr-", 0) != 0) continue;
      const nlohmann::json res = nlohmann::json::parse(read_text((entry.path() / "result.json").string()));
      const double gap = res["alignment"]["clean"].get<double>() - res["alignment"]["poisoned"].get<double>();
      if (name.find("file") != std::string::npos) sum += gap;
      else noise.push_back(gap);
    }
  }
  REQUIRE(noise.size() == 2);
  CHECK(a["gap"].get<double>() == doctest::Approx(sum / 2));
  const Calibration cal = calibrate_threshold(noise, 3.0, 0.01);
  CHECK(a["threshold"].get<double>() == doctest::Approx(cal.threshold));
  CHECK(a["verdict"] == (sum / 2 > cal.threshold ? "poisoned" : "clean"));
  CHECK(r.markdown.find("alignment gap of SimCLR (1 epochs") != std::string::npos);
  CHECK(fs::exists(d / "out/result.json"));
  // A dataset file has no clean views to compare with.
  DetectOptions ds = o;
  ds.file = data;
  ds.reference = data;
  CHECK_THROWS_WITH(run_detect(ds), doctest::Contains("--alignment"));
}
