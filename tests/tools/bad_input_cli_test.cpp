// Bad input through the `cpoison` executable (issue #16): nonsensical numbers on the command
// line are refused by the option's declared range (class 5), poisons are refused on images
// other than theirs (class 3), resumed runs refuse changed settings (class 6), and broken files
// that used to crash a command now stop it with a message (classes 1, 2). Every error names
// the option (or the file and the dataset or attribute) and the bad value, and exits 1 or with
// CLI11's parse-error status; none is a crash. Runs on a tiny HDF5 dataset the test writes:
// 40 training and 16 test images of 8x8x1, 4 classes.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/data/dataset.h"
#include "engine/io/checkpoint.h"
#include "tests/support/cli.h"
#include "tests/support/tiny_data.h"
#include "tests/support/h5edit.h"
#include "tests/support/skip.h"
#include "tools/experiment/preset.h"

using namespace cpoison;
using namespace cpoison::testing;
namespace fs = std::filesystem;

namespace {

data::Dataset tiny(int64_t n, uint32_t salt) { return testing::tiny_dataset(n, 4242u + salt); }

// Train and test splits in one file; `salt` changes the training pixels only.
std::string write_data(const TempDir& dir, const std::string& name, uint32_t salt = 0) {
  const data::Dataset train = tiny(40, salt), test = tiny(16, 1000);
  const std::string path = dir / name;
  data::save_datasets_h5(path, {{data::Split::train, &train}, {data::Split::test, &test}});
  return path;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

// A failed run: not a crash (CLI11's parse errors exit 105-ish, our errors 1), every piece named.
void check_refused(const RunResult& r, const std::vector<std::string>& pieces) {
  INFO(r.output);
  CHECK(r.code != 0);
  CHECK(r.code < 128);  // not killed by a signal
  CHECK(r.output.find("Segmentation") == std::string::npos);
  for (const auto& p : pieces) {
    INFO("missing: ", p);
    CHECK(r.output.find(p) != std::string::npos);
  }
}

const std::string kQuiet = " --progress-seconds -1";
// A tiny SimCLR run; append --epochs, --out and more.
std::string train_args(const std::string& data) {
  return "train --algo simclr --width 2 --proj-dim 8 --batch-size 8 --augment crop-flip --warmup-epochs 0" + kQuiet +
         " --data " + q(data);
}

#define SKIP_WITHOUT_CPOISON() SKIP_UNLESS(fs::exists(cpoison_exe()), "the cpoison executable is not built beside the tests")

}  // namespace

TEST_CASE("bad input 5: every nonsensical number is refused by the option's range, naming the option and the value") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("bad-cli-numbers");
  const std::string data = write_data(dir, "tiny.h5");
  const std::string out = " --out " + q(dir / "x.h5");
  const std::string train = train_args(data) + " --epochs 1";
  const std::string cpc = "poison --attack cp-c --recipe cpu-small --width 2 --batch-size 8 --rounds 1 --data " + q(data) + kQuiet;
  const std::string probe = "probe --random-init --mode features --iterations 2 --width 2 --data " + q(data);
  struct Case {
    std::string args;
    std::vector<std::string> expected;
  } cases[] = {
      {train + " --lr -1" + out, {"--lr", "-1", "[0, 1000]"}},
      {train + " --lr nan" + out, {"--lr", "nan"}},
      {train + " --temperature -1" + out, {"--temperature", "-1"}},
      {train + " --temperature nan" + out, {"--temperature", "nan"}},
      {train + " --proj-dim -5" + out, {"--proj-dim", "-5"}},
      {train + " --queue-size -7" + out, {"--queue-size", "-7", "or -1"}},
      {train + " --final-lr-fraction -1" + out, {"--final-lr-fraction", "-1"}},
      {train + " --subset -1" + out, {"--subset", "-1"}},
      {train + " --width 4611686018427387904" + out, {"--width", "4611686018427387904", "4096"}},
      {train + " --proj-hidden 4611686018427387904" + out, {"--proj-hidden", "4611686018427387904"}},
      {train + " --pad-to 2147483648" + out, {"--pad-to", "2147483648", "65536"}},
      {train + " --channels 2" + out, {"--channels", "one of 0, 1, 3", "2"}},
      {train + " --momentum 1" + out, {"--momentum", "[0, 1)"}},
      {train + " --defense adv:eps=2" + out, {"--defense", "eps = 2", "[0, 1]"}},
      {train + " --defense cutout:size=0" + out, {"--defense", "size", "0"}},
      {train + " --resume-from " + q(dir / "missing.h5") + out, {"--resume-from", dir / "missing.h5"}},
      {cpc + " --model-steps -1" + out, {"--model-steps", "-1"}},
      {cpc + " --queue-size 4611686018427387904" + out, {"--queue-size", "4611686018427387904"}},
      {cpc + " --ratio nan" + out, {"--ratio", "nan"}},
      {cpc + " --step 3" + out, {"--step", "3", "(0, 2]"}},
      {cpc + " --lr -1" + out, {"--lr", "-1"}},
      {probe + " --test-subset -1", {"--test-subset", "-1"}},
      {probe + " --subset -2", {"--subset", "-2", "or -1"}},
      {probe + " --knn-temperature 0", {"--knn-temperature", "0"}},
      {"defend --method cutout --size 0 --data " + q(data) + out, {"size", "0", ">= 1"}},
      {"experiment --preset table1 --dry-run --max-cells -1", {"--max-cells", "-1"}},
      {"convert fashion-mnist --pad-to 2147483648" + out, {"--pad-to", "2147483648"}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    check_refused(run_cpoison(c.args), c.expected);
  }
  CHECK_FALSE(fs::exists(dir / "x.h5"));
}

TEST_CASE("bad input 3: train, probe, defend and export refuse a poison made for other images; --ignore-fingerprint warns") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("bad-cli-fingerprint");
  const std::string data = write_data(dir, "tiny.h5"), other = write_data(dir, "other.h5", 7);
  const std::string poison = dir / "p.h5";
  RunResult made = run_cpoison("poison --attack random --data " + q(data) + " --subset 20 --subset-seed 0" + kQuiet +
                               " --out " + q(poison));
  INFO(made.output);
  REQUIRE(made.code == 0);
  const std::string seed1 = " --subset 20 --subset-seed 1 --poison " + q(poison);
  const std::string pieces = "differ from those the poison was made for";
  check_refused(run_cpoison(train_args(data) + " --epochs 1" + seed1 + " --out " + q(dir / "t.h5")), {poison, pieces});
  check_refused(run_cpoison("probe --random-init --width 2 --mode features --iterations 2 --data " + q(data) + seed1),
                {poison, pieces, "subset 20 with --subset-seed 0"});
  check_refused(run_cpoison("defend --method noise --data " + q(data) + seed1 + " --out " + q(dir / "d.h5")), {poison, pieces});
  check_refused(run_cpoison("export " + q(poison) + " --data " + q(other) + " --subset 20 --out " + q(dir / "e")),
                {poison, pieces});
  CHECK_FALSE(fs::exists(dir / "t.h5"));
  CHECK_FALSE(fs::exists(dir / "d.h5"));
  CHECK_FALSE(fs::exists(dir / "e/poisoned_train.h5"));

  RunResult forced = run_cpoison("defend --method noise --ignore-fingerprint --data " + q(data) + seed1 + " --out " +
                                 q(dir / "d.h5"));
  INFO(forced.output);
  CHECK(forced.code == 0);
  CHECK(forced.output.find("warning: " + poison + " was made for other images") != std::string::npos);
  // The images it was made for: accepted, silently.
  RunResult right = run_cpoison("defend --method noise --data " + q(data) + " --subset 20 --subset-seed 0 --poison " +
                                q(poison) + " --out " + q(dir / "d0.h5"));
  INFO(right.output);
  CHECK(right.code == 0);
  CHECK(right.output.find("warning") == std::string::npos);
}

TEST_CASE("bad input 6: train --resume and poison --resume refuse changed settings; --allow-changed continues") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("bad-cli-resume");
  const std::string data = write_data(dir, "tiny.h5");
  const std::string ck = dir / "ck.h5", saved = dir / "saved.h5";
  RunResult first = run_cpoison(train_args(data) + " --epochs 1 --out " + q(ck));
  INFO(first.output);
  REQUIRE(first.code == 0);
  fs::copy_file(ck, saved);
  auto resume = [&](const std::string& extra) {
    fs::copy_file(saved, ck, fs::copy_options::overwrite_existing);
    return run_cpoison(train_args(data) + " --resume --out " + q(ck) + extra);
  };
  check_refused(resume(" --epochs 2 --weight-decay 0.5"), {ck, "'weight_decay'", "0.0001", "0.5", "--allow-changed"});
  RunResult poison = run_cpoison("poison --attack random --data " + q(data) + kQuiet + " --out " + q(dir / "p.h5"));
  REQUIRE(poison.code == 0);
  check_refused(resume(" --epochs 2 --poison " + q(dir / "p.h5")), {ck, "'poison'", "\"none\""});
  RunResult allowed = resume(" --epochs 2 --weight-decay 0.5 --allow-changed");
  INFO(allowed.output);
  CHECK(allowed.code == 0);
  CHECK(allowed.output.find("warning: resuming " + ck + " with changed setting weight_decay") != std::string::npos);
  CHECK(allowed.output.find("epochs 2/2") != std::string::npos);
  // Now 2 epochs are done: asking for 1 in all is refused, even with --allow-changed.
  check_refused(run_cpoison(train_args(data) + " --resume --allow-changed --epochs 1 --out " + q(ck)),
                {ck, "2 epochs done", "--epochs 1"});

  const std::string gen = "poison --attack cp-c --recipe cpu-small --model-steps 1 --noise-batches 1 --width 2 --batch-size 8 "
                          "--subset 0 --data " + q(data) + kQuiet + " --out " + q(dir / "g.h5");
  RunResult cut = run_cpoison(gen + " --rounds 2 --stop-after-rounds 1");
  INFO(cut.output);
  REQUIRE(cut.code == 0);
  check_refused(run_cpoison(gen + " --rounds 2 --resume --lr 0.01"), {dir / "g.ckpt.h5", "'lr'", "0.01"});
  CHECK_FALSE(fs::exists(dir / "g.h5"));
}

TEST_CASE("bad input 1, 2: broken files that crashed or were used silently now stop the command by name") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("bad-cli-files");
  const std::string data = write_data(dir, "tiny.h5");
  const std::string ck = dir / "ck.h5";
  RunResult trained = run_cpoison(train_args(data) + " --epochs 1 --out " + q(ck));
  INFO(trained.output);
  REQUIRE(trained.code == 0);
  // A width of 2^62 in the checkpoint's attributes crashed probe (every channel count overflowed).
  const std::string wide = dir / "wide.h5";
  fs::copy_file(ck, wide);
  H5Edit(wide).set_attr("width", int64_t(1) << 62);
  check_refused(run_cpoison("probe --mode features --iterations 2 --encoder " + q(wide)), {wide, "'width'", "4096"});
  // A negative running variance was evaluated as it was.
  {
    io::Checkpoint c = io::load_checkpoint(ck);
    Tensor v = c.tensors.at("encoder.bn1.running_var").clone();
    v.data<float>()[0] = -1.0f;
    c.tensors["encoder.bn1.running_var"] = v;
    io::save_checkpoint(dir / "var.h5", c);
  }
  check_refused(run_cpoison("probe --mode features --iterations 2 --encoder " + q(dir / "var.h5")),
                {dir / "var.h5", "'encoder.bn1.running_var'", "element 0", "-1"});
  // A poison whose delta holds a NaN was exported as if fine; one with a changed float type as zeros.
  const std::string poison = dir / "p.h5";
  RunResult made = run_cpoison("poison --attack random --data " + q(data) + kQuiet + " --out " + q(poison));
  REQUIRE(made.code == 0);
  const std::string nan = dir / "nan.h5", type = dir / "type.h5";
  fs::copy_file(poison, nan);
  fs::copy_file(poison, type);
  std::vector<float> values(40 * 64, 0.5f);
  values[70] = NAN;
  H5Edit(nan).float_type("delta", {40, 1, 8, 8}, values, "");
  values[70] = 0.5f;
  H5Edit(type).float_type("delta", {40, 1, 8, 8}, values, "ebias");
  check_refused(run_cpoison("export " + q(nan) + " --out " + q(dir / "e1")), {nan, "'delta'", "element 70", "nan"});
  check_refused(run_cpoison("export " + q(type) + " --out " + q(dir / "e2")), {type, "'delta'", "not IEEE binary32"});
  // A dataset whose images have a dimension of 2^62.
  const std::string huge = dir / "huge.h5";
  fs::copy_file(data, huge);
  H5Edit(huge).unwritten("train/images", {40, uint64_t(1) << 62, 1, 1});
  check_refused(run_cpoison("dataset-info " + q(huge) + " --splits train"), {huge, "'train/images'"});
}

TEST_CASE("bad input 6: a TOML preset refuses unknown keys and impossible values in every scale, not only the one run") {
  TempDir dir("bad-preset");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return dir / name;
  };
  write("scales.toml", "[tiny]\nwidth = 2\n[tiny.data]\ndataset = \"fashion-mnist\"\n[other]\nwidth = 3\n");
  const std::string head = "columns = [ { label = \"A\", victim = \"simclr\" } ]\nrows = [ { label = \"r\" } ]\n";
  auto error_of = [&](const std::string& text) -> std::string {
    const std::string path = write("p.toml", head + text);
    try {
      tools::experiment::load_preset(path, "tiny", dir.path.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  CHECK(error_of("[scale.tiny]\n[scale.other]\n") == "(no error)");
  CHECK(error_of("[scale.tiny]\n[scale.other]\nvictim.epochz = 3\n").find("unknown key 'scale.other.victim.epochz'") !=
        std::string::npos);
  const std::string negative = error_of("[scale.tiny]\n[scale.other]\nvictim.epochs = -3\n");
  CHECK(negative.find("[scale.other]") != std::string::npos);
  CHECK(negative.find("victim: .epochs must be >= 1, got -3") != std::string::npos);
  const std::string queue = error_of("[scale.tiny]\nalgo.moco.queue_size = -9\n[scale.other]\n");
  CHECK(queue.find("algo.moco: .queue_size must be in [0, 16777216] or -1") != std::string::npos);
  CHECK(queue.find("got -9") != std::string::npos);
  CHECK(error_of("[scale.tiny]\n[scale.other]\nvictim.lr = -1\n").find("victim: .lr must be in [0, 1000]") != std::string::npos);
}
