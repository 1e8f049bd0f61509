// `cpoison poison` and `cpoison export`, run as the built executable (found beside this test
// executable) on a tiny HDF5 dataset the test writes: 40 images of 8x8x1, 4 classes.
// Layout letters: N images, H rows, W columns, C channels.
#include <doctest/doctest.h>


#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "engine/io/hdf5.h"
#include "poison/apply.h"
#include "tests/support/cli.h"
#include "tests/support/tiny_data.h"
#include "tests/support/skip.h"

using namespace cpoison;
namespace fs = std::filesystem;

namespace {

using namespace cpoison::testing;

// 40 tiny images (`salt` changes the pixels).
data::Dataset tiny_dataset(uint32_t salt = 0) { return testing::tiny_dataset(40, 12345u + salt); }

std::string write_tiny(const TempDir& dir, const std::string& name = "tiny.h5", uint32_t salt = 0) {
  std::string path = dir / name;
  data::save_dataset_h5(path, tiny_dataset(salt), data::Split::train);
  return path;
}

bool all_within_unit(const Tensor& delta) {
  for (float v : delta.to_vector<float>())
    if (!(std::fabs(v) <= 1.0f)) return false;
  return true;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A one-round-per-call CP-C run small enough for a test.
const std::string kTinyCpc =
    " --attack cp-c --algo simclr --recipe cpu-small --model-steps 1 --noise-batches 1 --width 2 --batch-size 8";

#define SKIP_WITHOUT_CPOISON() SKIP_UNLESS(fs::exists(cpoison_exe()), "the cpoison executable is not built beside the tests")

}  // namespace

TEST_CASE("cpoison poison --attack random writes a loadable sample-wise poison and its picture") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  RunResult r = run_cpoison("poison --attack random --data '" + data + "' --eps 8/255 --seed 3 --progress-seconds -1 --out '" +
                            (dir / "rand.h5") + "'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(r.output.find("poisoned") != std::string::npos);
  CHECK(r.output.find(" s; poison") != std::string::npos);  // the summary line carries the seconds
  poison::Poison p = poison::load_poison(dir / "rand.h5");
  CHECK(p.attack == "random");
  CHECK(p.kind == poison::NoiseKind::sample_wise);
  CHECK(p.algorithm == "none");
  CHECK(p.eps == doctest::Approx(8.0 / 255.0).epsilon(1e-12));
  CHECK(p.dataset == data);
  CHECK(p.subset == 0);
  CHECK(p.seed == 3);
  CHECK(p.image_count == 40);
  CHECK(p.classes == 4);
  CHECK(p.delta.shape() == Shape{40, 1, 8, 8});
  CHECK(p.indices.numel() == 40);
  CHECK(all_within_unit(p.delta));
  io::Attrs a = io::H5Reader(dir / "rand.h5").file_attrs();
  CHECK(std::get<std::string>(a.at("dataset_name")) == "tiny");
  CHECK(std::get<std::string>(a.at("data_fingerprint")).size() == 16);
  CHECK(nlohmann::json::parse(std::get<std::string>(a.at("settings")))["attack"] == "random");
  CHECK(fs::file_size(dir / "rand.png") > 0);
}

TEST_CASE("cpoison poison --attack cp-c --recipe cpu-small runs one tiny round and records it") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  RunResult r = run_cpoison("poison" + kTinyCpc + " --progress-seconds -1 --rounds 1 --subset 32 --data '" + data + "' --out '" + (dir / "cpc.h5") + "'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(r.output.find("rounds 1/1") != std::string::npos);
  poison::Poison p = poison::load_poison(dir / "cpc.h5");
  CHECK(p.attack == "cp-c");
  CHECK(p.kind == poison::NoiseKind::class_wise);
  CHECK(p.algorithm == "simclr");
  CHECK_FALSE(p.dual_branch);
  CHECK(p.rounds_done == 1);
  CHECK(p.rounds_total == 1);
  CHECK(p.subset == 32);
  CHECK(p.image_count == 32);
  CHECK(p.classes == 4);
  CHECK(p.delta.shape() == Shape{4, 1, 8, 8});
  CHECK(all_within_unit(p.delta));
  io::Attrs a = io::H5Reader(dir / "cpc.h5").file_attrs();
  CHECK(std::get<std::string>(a.at("recipe")) == "cpu-small-cp-c");
  CHECK(std::get<int64_t>(a.at("width")) == 2);
  CHECK(std::get<std::string>(a.at("augment")) == "cpu-small");
  CHECK(fs::exists(dir / "cpc.ckpt.h5"));
  CHECK(fs::file_size(dir / "cpc.png") > 0);
}

TEST_CASE("cpoison poison --resume finishes a stopped run with the delta of an uninterrupted one") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  std::string common = "poison" + kTinyCpc + " --rounds 2 --subset 0 --seed 5 --data '" + data + "'";
  RunResult full = run_cpoison(common + " --progress-seconds -1 --out '" + (dir / "full.h5") + "'");
  INFO(full.output);
  REQUIRE(full.code == 0);

  RunResult cut = run_cpoison(common + " --progress-seconds -1 --out '" + (dir / "cut.h5") + "' --stop-after-rounds 1");
  INFO(cut.output);
  REQUIRE(cut.code == 0);
  CHECK(cut.output.find("stopped after round 1 of 2") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "cut.h5"));  // a stopped run leaves only its checkpoint
  REQUIRE(fs::exists(dir / "cut.ckpt.h5"));
  CHECK(std::get<int64_t>(io::H5Reader(dir / "cut.ckpt.h5").file_attrs().at("rounds_done")) == 1);

  // Progress on (not -1) so the resumption is reported.
  RunResult resumed = run_cpoison(common + " --progress-seconds 1000 --out '" + (dir / "cut.h5") + "' --resume");
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK(resumed.output.find("resuming " + (dir / "cut.ckpt.h5")) != std::string::npos);  // engine/progress_log.h's note
  CHECK(resumed.output.find("after round 1 of 2") != std::string::npos);
  poison::Poison a = poison::load_poison(dir / "full.h5"), b = poison::load_poison(dir / "cut.h5");
  CHECK(b.rounds_done == 2);
  CHECK(b.delta.to_vector<float>() == a.delta.to_vector<float>());
}

TEST_CASE("cpoison export writes the poisoned set (HDF5 and CIFAR binary), pictures and export.json") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  // --channels 3 makes the noise differ per channel, so the binary's channel-major order shows;
  // --pad-to 32 makes CIFAR-10's 32x32x3 records (other sizes are refused: import_cli_test.cpp).
  RunResult made = run_cpoison("poison --attack random --data '" + data +
                               "' --subset 32 --subset-seed 2 --pad-to 32 --channels 3 --ratio 0.5 --seed 1 "
                               "--progress-seconds -1 --out '" + (dir / "r.h5") + "'");
  INFO(made.output);
  REQUIRE(made.code == 0);
  RunResult r = run_cpoison("export '" + (dir / "r.h5") + "' --out '" + (dir / "exp") + "'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(r.output.find("exported") != std::string::npos);

  data::LoadOptions lo;
  lo.channels = 3;
  lo.pad_to = 32;
  data::Dataset clean = data::balanced_subset(data::load_dataset(data, data::Split::train, lo), 32, 2);
  poison::Poison p = poison::load_poison(dir / "r.h5");
  CHECK(p.indices.numel() == 16);
  data::Dataset expected = poison::apply_poison(clean, p);
  data::Dataset got = data::load_dataset(dir / "exp/poisoned_train.h5", data::Split::train);
  REQUIRE(got.images.shape() == Shape{32, 32, 32, 3});
  CHECK(got.images.to_vector<int64_t>() == expected.images.to_vector<int64_t>());
  CHECK(got.labels.to_vector<int64_t>() == clean.labels.to_vector<int64_t>());
  CHECK(got.images.to_vector<int64_t>() != clean.images.to_vector<int64_t>());

  // CIFAR-10 records: label byte, then channel 0 row by row, channel 1, channel 2.
  std::string bin = read_bytes(dir / "exp/poisoned_train.bin");
  const int64_t C = 3, H = 32, W = 32;
  REQUIRE((int64_t)bin.size() == 32 * (1 + C * H * W));
  std::vector<int64_t> px = expected.images.to_vector<int64_t>(), labels = clean.labels.to_vector<int64_t>();
  CHECK((uint8_t)bin[0] == labels[0]);
  bool first_record_matches = true;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        first_record_matches &= (uint8_t)bin[1 + (c * H + y) * W + x] == px[(y * W + x) * C + c];
  CHECK(first_record_matches);
  CHECK((uint8_t)bin[5 * (1 + C * H * W)] == labels[5]);

  nlohmann::json manifest = nlohmann::json::parse(read_bytes(dir / "exp/export.json"));
  CHECK(manifest["data"]["images"] == 32);
  CHECK(manifest["data"]["subset"] == 32);
  CHECK(manifest["poison"]["attack"] == "random");
  CHECK(manifest["files"].size() == 4);
  auto noise = manifest["files"][2]["files"];
  CHECK(noise.size() >= 1);
  for (auto& f : noise) CHECK(fs::file_size(dir / ("exp/" + f["name"].get<std::string>())) > 0);
  CHECK(fs::file_size(dir / "exp/samples.png") > 0);
}

TEST_CASE("cpoison export of a class-wise poison draws one noise picture per class") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  RunResult made = run_cpoison("poison --attack random --kind class --data '" + data + "' --progress-seconds -1 --out '" +
                               (dir / "c.h5") + "'");
  INFO(made.output);
  REQUIRE(made.code == 0);
  CHECK(poison::load_poison(dir / "c.h5").delta.shape() == Shape{4, 1, 8, 8});
  CHECK(fs::file_size(dir / "c.png") > 0);
  RunResult r = run_cpoison("export '" + (dir / "c.h5") + "' --out '" + (dir / "exp") + "'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  for (int k = 0; k < 4; ++k) CHECK(fs::exists(dir / ("exp/noise_class_" + std::to_string(k) + ".png")));
  CHECK_FALSE(fs::exists(dir / "exp/noise_class_4.png"));
  // 8x8x1 images make no CIFAR-10 records: the default export leaves the binary out.
  CHECK_FALSE(fs::exists(dir / "exp/poisoned_train.bin"));
  CHECK(data::load_dataset(dir / "exp/poisoned_train.h5", data::Split::train).size() == 40);
}

TEST_CASE("cpoison export refuses data that disagrees with the poison, accepts the same data moved") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  RunResult made = run_cpoison("poison --attack random --data '" + data + "' --subset 20 --progress-seconds -1 --out '" +
                               (dir / "r.h5") + "'");
  INFO(made.output);
  REQUIRE(made.code == 0);

  RunResult subset = run_cpoison("export '" + (dir / "r.h5") + "' --subset 24 --out '" + (dir / "x") + "'");
  CHECK(subset.code == 1);
  CHECK(subset.output.find("--subset 24 disagrees") != std::string::npos);

  std::string other = write_tiny(dir, "other.h5", /*salt=*/99);
  RunResult wrong = run_cpoison("export '" + (dir / "r.h5") + "' --data '" + other + "' --out '" + (dir / "x") + "'");
  CHECK(wrong.code == 1);
  CHECK(wrong.output.find("differ from those the poison") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "x/poisoned_train.h5"));

  fs::copy_file(data, dir / "moved.h5");
  RunResult moved = run_cpoison("export '" + (dir / "r.h5") + "' --data '" + (dir / "moved.h5") + "' --subset 20 --out '" +
                                (dir / "y") + "'");
  INFO(moved.output);
  CHECK(moved.code == 0);
  CHECK(data::load_dataset(dir / "y/poisoned_train.h5", data::Split::train).size() == 20);
}

TEST_CASE("cpoison poison and export reject bad input with a message naming the problem") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  const std::string out = " --progress-seconds -1 --out '" + (dir / "p.h5") + "'";
  struct Case {
    std::string args, expected;
  } cases[] = {
      {"poison --attack bogus --data '" + data + "'" + out, "unknown attack 'bogus'"},
      {"poison --attack random --eps 8 --data '" + data + "'" + out, "--eps: eps 8 outside (0, 1]"},
      {"poison --attack cp-c --kind sample --data '" + data + "'" + out, "cp-c is class-wise"},
      {"poison --attack random --eps 8/0 --data '" + data + "'" + out, "divides by zero"},
      {"poison --attack random --eps abc --data '" + data + "'" + out, "'abc' is not a number"},
      {"poison --attack random --data '" + (dir / "missing.h5") + "'" + out, "missing.h5"},
      {"poison --attack cp-s --recipe cp-c --data '" + data + "'" + out, "--recipe"},
      {"poison --attack cp-c --algo nope --data '" + data + "'" + out, "nope"},
      {"poison --attack random --ratio 1.5 --data '" + data + "'" + out, "ratio"},
      {"poison --attack random --data '" + data + "' --out '" + (dir / "no/such/dir/p.h5") + "'", "does not exist"},
      {"export '" + (dir / "none.h5") + "' --out '" + (dir / "x") + "'", "none.h5"},
  };
  for (const Case& c : cases) {
    RunResult r = run_cpoison(c.args);
    INFO(c.args);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find(c.expected) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(dir / "p.h5"));
  RunResult missing_out = run_cpoison("poison --attack random --data '" + data + "'");
  CHECK(missing_out.code != 0);
  CHECK(missing_out.output.find("--out") != std::string::npos);
}

TEST_CASE("cpoison poison --attack aue / aap with the cpu-small recipes, the new options and their errors") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  std::string data = write_tiny(dir);
  const std::string tiny = " --width 2 --batch-size 8 --subset 0 --progress-seconds -1 --data '" + data + "'";
  RunResult aue = run_cpoison("poison --attack aue --recipe cpu-small --kind class --rounds 1 --model-steps 1" + tiny +
                              " --separability 0.5 --out '" + (dir / "aue.h5") + "'");
  INFO(aue.output);
  REQUIRE(aue.code == 0);
  poison::Poison p = poison::load_poison(dir / "aue.h5");
  CHECK(p.attack == "aue");
  CHECK(p.kind == poison::NoiseKind::class_wise);
  CHECK(p.algorithm == "supervised");
  CHECK(all_within_unit(p.delta));
  io::Attrs a = io::H5Reader(dir / "aue.h5").file_attrs();
  CHECK(std::get<std::string>(a.at("recipe")) == "cpu-small-aue");
  CHECK(std::get<std::string>(a.at("augment")) == "cpu-small");
  nlohmann::json settings = nlohmann::json::parse(std::get<std::string>(a.at("settings")));
  CHECK(settings["augment_strength"].get<double>() == doctest::Approx(0.6));
  CHECK(settings["pgd_steps"].get<int64_t>() == 1);  // class-wise AUE: one PGD step per batch
  CHECK(settings["separability"].get<double>() == doctest::Approx(0.5));
  CHECK(settings["init"] == "zero");  // the recipe's start, not the CP default

  RunResult aap = run_cpoison("poison --attack aap --recipe cpu-small-aap --pretrain-epochs 1 --pretrain-warmup-epochs 1 "
                              "--pgd-steps 2 --target-shift 3 --augment-strength 0.8" + tiny + " --out '" + (dir / "aap.h5") + "'");
  INFO(aap.output);
  REQUIRE(aap.code == 0);
  p = poison::load_poison(dir / "aap.h5");
  CHECK(p.attack == "aap");
  CHECK(p.kind == poison::NoiseKind::sample_wise);
  CHECK(p.delta.shape() == Shape{40, 1, 8, 8});
  settings = nlohmann::json::parse(std::get<std::string>(io::H5Reader(dir / "aap.h5").file_attrs().at("settings")));
  CHECK(settings["target_shift"].get<int64_t>() == 3);
  CHECK(settings["augment_strength"].get<double>() == doctest::Approx(0.8));
  CHECK(settings["step"].get<double>() == doctest::Approx(2.5 / 2));  // AAP's step follows --pgd-steps: 2.5 / steps

  // CP-S from the AUE poison (class-wise, copied by label).
  RunResult cps = run_cpoison("poison --attack cp-s --recipe cpu-small --rounds 1 --model-steps 1 --noise-batches 1 --init-file '" +
                              (dir / "aue.h5") + "'" + tiny + " --out '" + (dir / "cps.h5") + "'");
  INFO(cps.output);
  REQUIRE(cps.code == 0);
  CHECK(poison::load_poison(dir / "cps.h5").delta.shape() == Shape{40, 1, 8, 8});

  const std::string out = " --out '" + (dir / "bad.h5") + "'";
  struct Case {
    std::string args, expected;
  } cases[] = {
      {"poison --attack aue --recipe cpu-small-aap" + tiny + out, "takes --recipe paper, cpu-small, aue or cpu-small-aue"},
      {"poison --attack cp-s --recipe cpu-small-aue" + tiny + out, "is for --attack aue"},
      {"poison --attack aue --augment-strength 3" + tiny + out, "--augment-strength"},
      {"poison --attack aap --target-shift 0" + tiny + out, "--target-shift"},
      {"poison --attack aap --target-shift 4 --pretrain-epochs 0 --pretrain-warmup-epochs 0 --pgd-steps 1" + tiny + out,
       "must differ from y"},
      {"poison --attack adversarial --separability 1" + tiny + out, "not adversarial"},
      {"poison --attack aue --separability-space pixels" + tiny + out, "--separability-space"},
      {"poison --attack cp-c --init-file '" + (dir / "aap.h5") + "'" + tiny + out, "holds sample-wise noise"},
      {"poison --attack cp-s --init zero --init-file '" + (dir / "aap.h5") + "'" + tiny + out, "cannot go with --init zero"},
  };
  for (const Case& c : cases) {
    RunResult r = run_cpoison(c.args);
    INFO(c.args);
    INFO(r.output);
    CHECK(r.code != 0);
    CHECK(r.output.find(c.expected) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(dir / "bad.h5"));
}
