// `cpoison train --defense`, run as the built executable (found beside this test executable) on
// a tiny HDF5 dataset the test writes: 16 images of 8x8x1, 4 classes, a width-2 ResNet-18 with
// batch 8 (two steps per epoch). A batch-transform defence and adversarial training (of a
// SimCLR and of a supervised victim) are installed, recorded in the checkpoint and checked on
// resume; bad flags are refused by name.
// Layout letters: N images, H rows, W columns, C channels.
#include <doctest/doctest.h>


#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "algorithms/train.h"
#include "defense/defense.h"
#include "engine/io/hdf5.h"
#include "tests/support/cli.h"
#include "tests/support/tiny_data.h"
#include "tests/support/skip.h"

using namespace cpoison;
namespace fs = std::filesystem;

namespace {

using namespace cpoison::testing;

std::string write_tiny(const TempDir& dir) { return write_tiny_dataset(dir / "tiny.h5", 16, 777u); }

std::string recorded_defense(const std::string& checkpoint) {
  return std::get<std::string>(io::H5Reader(checkpoint).file_attrs().at("defense"));
}

std::map<std::string, std::vector<double>> weights(const std::string& checkpoint) {
  std::map<std::string, std::vector<double>> out;
  for (auto& [name, t] : algorithms::load_learner(checkpoint)->state_dict()) out[name] = t.to_vector<double>();
  return out;
}

// A tiny SimCLR run; append --defense, --epochs, --out.
std::string tiny_train(const std::string& data) {
  return "train --algo simclr --data '" + data +
         "' --width 2 --proj-dim 8 --batch-size 8 --augment crop-flip --warmup-epochs 0 --seed 4 --progress-seconds -1";
}

#define SKIP_WITHOUT_CPOISON() SKIP_UNLESS(fs::exists(cpoison_exe()), "the cpoison executable is not built beside the tests")

}  // namespace

TEST_CASE("cpoison train --defense usvt trains through the defence, records it and checks it on resume") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  const std::string base = tiny_train(write_tiny(dir));

  RunResult plain = run_cpoison(base + " --epochs 1 --out '" + (dir / "plain.h5") + "'");
  INFO(plain.output);
  REQUIRE(plain.code == 0);
  CHECK(recorded_defense(dir / "plain.h5") == "none");

  RunResult usvt = run_cpoison(base + " --epochs 1 --defense usvt:p=0.5 --out '" + (dir / "usvt.h5") + "'");
  INFO(usvt.output);
  REQUIRE(usvt.code == 0);
  const std::string spec = defense::parse_defense("usvt:p=0.5").spec();
  CHECK(recorded_defense(dir / "usvt.h5") == spec);
  CHECK(usvt.output.find("defence " + spec) != std::string::npos);
  // Same seed, batches and augmentations: only the defence makes the weights differ.
  CHECK(weights(dir / "usvt.h5") != weights(dir / "plain.h5"));

  // Resuming under another defence (or none) is refused before any training.
  for (const std::string& other : {std::string("noise"), std::string("none")}) {
    RunResult r = run_cpoison(base + " --epochs 2 --resume --defense " + other + " --out '" + (dir / "usvt.h5") + "'");
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("--defense") != std::string::npos);
    CHECK(r.output.find("'" + spec + "'") != std::string::npos);
  }
  RunResult resumed =
      run_cpoison(base + " --epochs 2 --resume --defense usvt:p=0.5 --out '" + (dir / "usvt.h5") + "'");
  INFO(resumed.output);
  CHECK(resumed.code == 0);
  CHECK(resumed.output.find("epochs 2/2") != std::string::npos);
}

TEST_CASE("cpoison train --defense adv runs adversarial training through the main loop and checkpoints") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  const std::string base = tiny_train(write_tiny(dir));
  RunResult plain = run_cpoison(base + " --epochs 1 --out '" + (dir / "plain.h5") + "'");
  REQUIRE(plain.code == 0);
  RunResult adv = run_cpoison(base + " --epochs 1 --defense adv:steps=1 --out '" + (dir / "adv.h5") + "'");
  INFO(adv.output);
  REQUIRE(adv.code == 0);
  CHECK(recorded_defense(dir / "adv.h5") == defense::parse_defense("adv:steps=1").spec());
  CHECK(std::get<int64_t>(io::H5Reader(dir / "adv.h5").file_attrs().at("epochs_done")) == 1);
  CHECK(weights(dir / "adv.h5") != weights(dir / "plain.h5"));
}

TEST_CASE("cpoison train --algo supervised --defense adv trains adversarially and resumes under it") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  const std::string base = "train --algo supervised --data '" + write_tiny(dir) +
                           "' --width 2 --batch-size 8 --warmup-epochs 0 --seed 4 --progress-seconds -1";
  RunResult plain = run_cpoison(base + " --epochs 1 --out '" + (dir / "plain.h5") + "'");
  INFO(plain.output);
  REQUIRE(plain.code == 0);
  RunResult adv = run_cpoison(base + " --epochs 1 --defense adv:steps=1 --out '" + (dir / "adv.h5") + "'");
  INFO(adv.output);
  REQUIRE(adv.code == 0);
  const std::string spec = defense::parse_defense("adv:steps=1").spec();
  CHECK(recorded_defense(dir / "adv.h5") == spec);
  CHECK(adv.output.find("defence " + spec) != std::string::npos);
  // Same seed, batches and augmentations: only the attack makes the weights differ.
  CHECK(weights(dir / "adv.h5") != weights(dir / "plain.h5"));
  RunResult resumed = run_cpoison(base + " --epochs 2 --resume --defense adv:steps=1 --out '" + (dir / "adv.h5") + "'");
  INFO(resumed.output);
  CHECK(resumed.code == 0);
  CHECK(std::get<int64_t>(io::H5Reader(dir / "adv.h5").file_attrs().at("epochs_done")) == 2);
}

TEST_CASE("cpoison train and defend reject a bad --defense or --device with a message naming it") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  const std::string data = write_tiny(dir);
  const std::string out = " --epochs 1 --out '" + (dir / "x.h5") + "'";
  struct Case {
    std::string args, expected;
  } cases[] = {
      {tiny_train(data) + " --defense usvt:p=1.5" + out, "p = 1.5: the drop probability must be in [0, 1)"},
      {tiny_train(data) + " --defense usvt:q=0.5" + out, "unknown key 'q'"},
      {tiny_train(data) + " --defense bogus" + out, "unknown defence 'bogus'"},
      {"train --algo supervised --data '" + data + "' --width 2 --defense adv:both=1 --progress-seconds -1" + out,
       "adv:both=1 perturbs the two views of a contrastive step"},
      {tiny_train(data) + " --device tpu" + out, "--device: unknown device 'tpu'"},
      {"defend --method usvt --data '" + data + "' --device tpu --out '" + (dir / "d.h5") + "'",
       "--device: unknown device 'tpu'"},
  };
  for (const Case& c : cases) {
    RunResult r = run_cpoison(c.args);
    INFO(c.args);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find(c.expected) != std::string::npos);
    if (c.args.find("--defense") != std::string::npos)
      CHECK(r.output.find("--defense") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(dir / "x.h5"));
  CHECK_FALSE(fs::exists(dir / "d.h5"));
}

TEST_CASE("cpoison train takes every augmentation the presets take: translate-flip with --translate") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir;
  const std::string data = write_tiny(dir);
  auto train = [&](const std::string& augment, const std::string& out) {
    return run_cpoison("train --algo supervised --data '" + data + "' --width 2 --batch-size 8 --epochs 1 --seed 4 " +
                       "--progress-seconds -1 --augment " + augment + " --out '" + (dir / out) + "'");
  };
  for (const std::string shift : {"2", "0"}) {
    RunResult r = train("translate-flip --translate " + shift, "t" + shift + ".h5");
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(std::get<std::string>(io::H5Reader(dir / ("t" + shift + ".h5")).file_attrs().at("augment")) == "translate-flip");
  }
  // Same seed and batches: the translation (a batch hook) is what makes the weights differ.
  CHECK(weights(dir / "t2.h5") != weights(dir / "t0.h5"));
  RunResult bad = train("translate", "bad.h5");
  CHECK(bad.code != 0);
  CHECK(bad.output.find("--augment") != std::string::npos);
}
