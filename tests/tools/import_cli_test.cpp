// `cpoison import`, `cpoison export --format` and `cpoison features`, run as the built executable
// on a tiny HDF5 dataset the test writes (40 images of 8x8x1, 4 classes), with the outside
// formats written as other tools write them: a folder of <row>.png (APBench), .npy and .npz
// arrays (NumPy's byte layout, engine/io/npy.h). Also the normalisation constants, the source
// rows and the recipe line of issue #19 part 7.
// Layout letters: N images, H rows, W columns, C channels.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/io/hdf5.h"
#include "engine/io/npy.h"
#include "engine/io/png.h"
#include "poison/apply.h"
#include "tests/support/cli.h"
#include "tests/support/tiny_data.h"
#include "tests/support/skip.h"

using namespace cpoison;
namespace fs = std::filesystem;

namespace {

using namespace cpoison::testing;

data::Dataset tiny_dataset(const std::string& name = "tiny") { return testing::tiny_dataset(40, 4242u, name); }

std::string write_tiny(const TempDir& dir) {
  const std::string path = dir / "tiny.h5";
  data::save_dataset_h5(path, tiny_dataset(), data::Split::train);
  return path;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

// A random sample-wise poison of the tiny set's 24-image subset (seed 5).
std::string make_poison(const TempDir& dir, const std::string& data) {
  RunResult r = run_cpoison("poison --attack random --data " + q(data) +
                            " --subset 24 --subset-seed 5 --seed 1 --progress-seconds -1 --out " + q(dir / "rand.h5"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  return dir / "rand.h5";
}

std::vector<int64_t> pixels(const data::Dataset& ds) { return ds.images.to_vector<int64_t>(); }

#define SKIP_WITHOUT_CPOISON() SKIP_UNLESS(fs::exists(cpoison_exe()), "the cpoison executable is not built beside the tests")

}  // namespace

TEST_CASE("export --format png-dir,npz writes APBench's folder and an npz; import reads both back exactly") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("import");
  const std::string data = write_tiny(dir);
  const std::string poison = make_poison(dir, data);
  RunResult e = run_cpoison("export " + q(poison) + " --format h5,png-dir,npz --out " + q(dir / "exp"));
  INFO(e.output);
  REQUIRE(e.code == 0);
  CHECK(!fs::exists(dir / "exp/poisoned_train.bin"));  // not asked for (and 8x8x1 is no CIFAR record)
  REQUIRE(fs::exists(dir / "exp/poisoned_png/23.png"));
  CHECK(!fs::exists(dir / "exp/poisoned_png/24.png"));
  const data::Dataset expected = data::load_dataset(dir / "exp/poisoned_train.h5", data::Split::train);

  // The source rows: the subset's rows in the 40-image file, in the export and in the poison.
  const data::Dataset clean_subset = data::balanced_subset(tiny_dataset(), 24, 5);
  io::H5Reader exported(dir / "exp/poisoned_train.h5");
  CHECK(exported.read("source_rows").to_vector<int64_t>() == clean_subset.source_rows);
  CHECK(io::H5Reader(poison).read("source_rows").to_vector<int64_t>() == clean_subset.source_rows);
  CHECK(std::get<std::string>(exported.file_attrs().at("mean")).size() > 0);

  auto npz = io::read_npz(dir / "exp/poisoned_train.npz");
  REQUIRE(npz.size() == 6);
  CHECK(npz[0].first == "images");
  CHECK(npz[0].second.to_tensor("images").to_vector<int64_t>() == pixels(expected));
  CHECK(npz[2].first == "source_rows");

  const std::string subset = " --data " + q(data) + " --subset 24 --subset-seed 5";
  RunResult from_png = run_cpoison("import " + q(dir / "exp/poisoned_png") + subset + " --out " + q(dir / "png.h5"));
  INFO(from_png.output);
  REQUIRE(from_png.code == 0);
  const data::Dataset imported = data::load_dataset(dir / "png.h5", data::Split::train);
  CHECK(pixels(imported) == pixels(expected));
  CHECK(imported.labels.to_vector<int64_t>() == clean_subset.labels.to_vector<int64_t>());
  CHECK(imported.name == "tiny+import");

  // As a poison file: applied to the clean subset it gives the same images, and it carries the
  // data fingerprint, so train / export accept it for that data only.
  RunResult as_poison = run_cpoison("import " + q(dir / "exp/poisoned_train.npz") + " --key images" + subset +
                                    " --as poison --eps 8/255 --out " + q(dir / "np.h5"));
  INFO(as_poison.output);
  REQUIRE(as_poison.code == 0);
  const poison::Poison p = poison::load_poison(dir / "np.h5");
  CHECK(p.data_fingerprint == data::fingerprint(clean_subset));
  CHECK(pixels(poison::apply_poison(clean_subset, p)) == pixels(expected));
  RunResult again = run_cpoison("export " + q(dir / "np.h5") + " --out " + q(dir / "exp2"));
  INFO(again.output);
  REQUIRE(again.code == 0);
  CHECK(pixels(data::load_dataset(dir / "exp2/poisoned_train.h5", data::Split::train)) == pixels(expected));
}

TEST_CASE("import refuses a PNG folder with a missing, extra or wrongly sized image, naming the file") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("import");
  const std::string data = write_tiny(dir);
  fs::create_directories(dir / "png");
  const data::Dataset ds = tiny_dataset();
  for (int64_t n = 0; n < 40; ++n)
    if (n != 17) io::write_png(dir / ("png/" + std::to_string(n) + ".png"), ds.images.slice0(n, n + 1).reshape({8, 8, 1}));
  RunResult missing = run_cpoison("import " + q(dir / "png") + " --data " + q(data) + " --out " + q(dir / "o.h5"));
  CHECK(missing.code != 0);
  CHECK(missing.output.find("holds 39 PNG images, expected 40") != std::string::npos);
  CHECK(missing.output.find("the first missing is 17.png") != std::string::npos);

  io::write_png(dir / "png/17.png", Tensor::zeros({9, 8, 1}, DType::u8));
  RunResult size = run_cpoison("import " + q(dir / "png") + " --data " + q(data) + " --out " + q(dir / "o.h5"));
  CHECK(size.code != 0);
  CHECK(size.output.find("17.png") != std::string::npos);
  CHECK(size.output.find("is 9x8, expected 8x8") != std::string::npos);

  io::write_png(dir / "png/17.png", ds.images.slice0(17, 18).reshape({8, 8, 1}));
  io::write_png(dir / "png/40.png", ds.images.slice0(0, 1).reshape({8, 8, 1}));
  RunResult extra = run_cpoison("import " + q(dir / "png") + " --data " + q(data) + " --out " + q(dir / "o.h5"));
  CHECK(extra.code != 0);
  CHECK(extra.output.find("row 40 is outside the clean training set of 40 images") != std::string::npos);
  fs::remove(dir / "png/40.png");
  RunResult ok = run_cpoison("import " + q(dir / "png") + " --data " + q(data) + " --out " + q(dir / "o.h5"));
  INFO(ok.output);
  CHECK(ok.code == 0);
  CHECK(ok.output.find("largest change 0 levels") != std::string::npos);
}

TEST_CASE("import of a float delta: the scale flag is required and its range check catches the wrong one") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("import");
  const std::string data = write_tiny(dir);
  // A pixel-scale class-wise delta [K, H, W, C] (TUE/AUE style): +-4/255 in a checkerboard.
  std::vector<float> pixel(4 * 8 * 8);
  for (size_t i = 0; i < pixel.size(); ++i) pixel[i] = (i % 2 ? 4.0f : -4.0f) / 255.0f;
  io::write_npy(dir / "class.npy", Tensor::from_vector(pixel, {4, 8, 8, 1}));
  const std::string base = "import " + q(dir / "class.npy") + " --data " + q(data) + " --out " + q(dir / "c.h5");

  RunResult no_scale = run_cpoison(base);
  CHECK(no_scale.code != 0);
  CHECK(no_scale.output.find("--scale") != std::string::npos);
  RunResult as_unit = run_cpoison(base + " --scale unit");
  CHECK(as_unit.code != 0);
  CHECK(as_unit.output.find("looks like pixel scale (--scale pixel)") != std::string::npos);
  RunResult too_small_eps = run_cpoison(base + " --scale pixel --eps 2/255");
  CHECK(too_small_eps.code != 0);
  CHECK(too_small_eps.output.find("allows |delta| <=") != std::string::npos);
  RunResult good = run_cpoison(base + " --scale pixel --eps 8/255");
  INFO(good.output);
  REQUIRE(good.code == 0);
  const poison::Poison p = poison::load_poison(dir / "c.h5");
  CHECK(p.kind == poison::NoiseKind::class_wise);
  CHECK(p.delta.shape() == Shape{4, 1, 8, 8});
  CHECK(std::fabs(p.delta.to_vector<float>()[1] - 0.5f) < 1e-6f);  // 4/255 of eps 8/255

  // Levels read as unit scale: values up to 8 are no unit-scale delta.
  for (auto& v : pixel) v *= 255.0f;
  io::write_npy(dir / "levels.npy", Tensor::from_vector(pixel, {4, 8, 8, 1}));
  RunResult levels = run_cpoison("import " + q(dir / "levels.npy") + " --data " + q(data) + " --scale unit --out " +
                                 q(dir / "l.h5"));
  CHECK(levels.code != 0);
  CHECK(levels.output.find("is it in 0..255 levels (--scale levels)?") != std::string::npos);
  // A row count that is neither N nor K.
  io::write_npy(dir / "rows.npy", Tensor::zeros({7, 1, 8, 8}, DType::f32));
  RunResult rows = run_cpoison("import " + q(dir / "rows.npy") + " --data " + q(data) + " --scale unit --out " +
                               q(dir / "r.h5"));
  CHECK(rows.code != 0);
  CHECK(rows.output.find("has 7 rows; expected 40 (one per training image: sample-wise) or 4") != std::string::npos);
}

TEST_CASE("export --format cifar-bin refuses images that are not 32x32x3") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("import");
  const std::string poison = make_poison(dir, write_tiny(dir));
  RunResult r = run_cpoison("export " + q(poison) + " --format cifar-bin --out " + q(dir / "exp"));
  CHECK(r.code != 0);
  CHECK(r.output.find("cifar-bin writes CIFAR-10 records of 32x32x3 images; these images are 8x8x1") != std::string::npos);
  CHECK(!fs::exists(dir / "exp/poisoned_train.bin"));
}

TEST_CASE("normalisation: every written file records constants; an unknown file without them is refused") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("import");
  // Written by hand as h5py would: no name, no mean/std.
  {
    const data::Dataset ds = tiny_dataset();
    io::H5Writer w(dir / "hand.h5");
    w.write("images", ds.images);
    w.write("labels", ds.labels);
    w.commit();
  }
  const std::string train = "train --algo supervised --width 2 --batch-size 8 --epochs 1 --warmup-epochs 0 "
                            "--progress-seconds -1 --data ";
  RunResult refused = run_cpoison(train + q(dir / "hand.h5") + " --out " + q(dir / "a.h5"));
  CHECK(refused.code != 0);
  CHECK(refused.output.find("records no normalisation constants") != std::string::npos);
  CHECK(refused.output.find("--normalize") != std::string::npos);

  RunResult given = run_cpoison(train + q(dir / "hand.h5") + " --normalize 0.5/0.25 --out " + q(dir / "b.h5"));
  INFO(given.output);
  REQUIRE(given.code == 0);
  CHECK(given.output.find("preset spec, the default") != std::string::npos);  // the recipe on the first line
  const io::Attrs ck = io::H5Reader(dir / "b.h5").file_attrs();
  CHECK(std::get<std::string>(ck.at("normalize_mean")) == "0.5");
  CHECK(std::get<std::string>(ck.at("normalize_std")) == "0.25");

  // A file we write records the constants (here: the images' own statistics, the name being
  // unknown), so training on it needs no flag.
  const std::string ours = write_tiny(dir);
  const data::Dataset back = data::load_dataset(ours, data::Split::train);
  REQUIRE(back.mean.size() == 1);
  std::vector<double> m, s;
  data::pixel_statistics(tiny_dataset(), m, s);
  CHECK(std::fabs(back.mean[0] - m[0]) < 1e-5);
  CHECK(std::fabs(back.std[0] - s[0]) < 1e-5);
  RunResult plain = run_cpoison(train + q(ours) + " --out " + q(dir / "c.h5"));
  INFO(plain.output);
  CHECK(plain.code == 0);

  // features: features and logits of both splits, with the checkpoint's normalisation.
  RunResult f = run_cpoison("features " + q(dir / "b.h5") + " --split train --out " + q(dir / "f.h5"));
  INFO(f.output);
  REQUIRE(f.code == 0);
  io::H5Reader feats(dir / "f.h5");
  CHECK(feats.shape("train/features")[0] == 40);
  CHECK(feats.shape("train/logits") == Shape{40, 4});
  CHECK(feats.read("train/labels").to_vector<int64_t>() == tiny_dataset().labels.to_vector<int64_t>());
  CHECK(std::get<std::string>(feats.file_attrs().at("normalize_mean")) == "0.5");
}

TEST_CASE("cpoison poison names the recipe on its first line, and says when it is the default") {
  SKIP_WITHOUT_CPOISON();
  TempDir dir("import");
  const std::string data = write_tiny(dir);
  // --stop-after-rounds 0 is not a stop; a zero-round run is not possible, so stop after the
  // first round of a tiny CP-C run and read the first line only.
  RunResult r = run_cpoison("poison --attack cp-c --algo simclr --data " + q(data) +
                            " --model-steps 1 --noise-batches 1 --width 2 --batch-size 8 --rounds 1 --progress-seconds -1 "
                            "--out " + q(dir / "p.h5"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  const std::string first = r.output.substr(0, r.output.find('\n'));
  CHECK(first.find("recipe cp-c (width 2; the default: --recipe cpu-small for the CPU scale)") != std::string::npos);
}
