// Normalisation constants and source rows of datasets (issue #19 part 7): the built-in names'
// constants agree with augment/augment.h's, files record and read back mean/std, bad attributes
// are refused by name, and source_rows follow every selection.
#include <doctest/doctest.h>

#include <tuple>

#include "algorithms/train.h"
#include "augment/augment.h"
#include "engine/data/dataset.h"
#include "engine/io/hdf5.h"
#include "tests/support/cli.h"

using namespace cpoison;
using cpoison::testing::TempDir;

namespace {
data::Dataset ramp(const std::string& name, int64_t n = 12) {
  std::vector<uint8_t> px(n * 2 * 2 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 7 % 256);
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % 3;
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {n, 2, 2, 3});
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 3;
  ds.name = name;
  return ds;
}
}  // namespace

TEST_CASE("builtin_normalization repeats augment/augment.h's constants; other names have none") {
  std::vector<double> m, s;
  REQUIRE(data::builtin_normalization("cifar10+cp-c", m, s));
  CHECK((m == augment::kCifar10Mean && s == augment::kCifar10Std));
  REQUIRE(data::builtin_normalization("cifar100", m, s));
  CHECK((m == augment::kCifar100Mean && s == augment::kCifar100Std));
  REQUIRE(data::builtin_normalization("fashion-mnist", m, s));
  CHECK((m == augment::kFashionMnistMean && s == augment::kFashionMnistStd));
  CHECK_FALSE(data::builtin_normalization("tiny", m, s));
  CHECK_THROWS_WITH_AS(algorithms::dataset_normalization("tiny", 1, m, s), doctest::Contains("--normalize"), Error);
}

TEST_CASE("dataset files record mean/std; stored constants win; bad attributes are refused by name") {
  TempDir dir("norm");
  data::Dataset ds = ramp("tiny");
  data::save_dataset_h5(dir / "a.h5", ds);
  data::Dataset back = data::load_dataset(dir / "a.h5", data::Split::train);
  std::vector<double> m, s;
  data::pixel_statistics(ds, m, s);
  REQUIRE(back.mean.size() == 3);
  for (int c = 0; c < 3; ++c) CHECK(back.mean[c] == doctest::Approx(m[c]).epsilon(1e-5));
  std::vector<double> used_m, used_s;
  algorithms::dataset_normalization(back, used_m, used_s);
  CHECK(used_m == back.mean);

  data::Dataset named = ramp("cifar10");
  named.mean = {0.1, 0.2, 0.3}, named.std = {1, 2, 3};
  data::save_dataset_h5(dir / "b.h5", named);
  data::Dataset b = data::load_dataset(dir / "b.h5", data::Split::train);
  CHECK(b.mean == std::vector<double>{0.1, 0.2, 0.3});  // stored, not CIFAR-10's

  for (const auto& [key, value, message] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"mean", "0.1,x", "is not a finite number"}, {"std", "1,1", "has 2 values for images with 3 channels"},
           {"std", "0,1,1", "every std must be finite and > 0"}}) {
    CAPTURE(key);
    io::H5Writer w(dir / "c.h5");
    w.write("images", ds.images);
    w.write("labels", ds.labels);
    w.set_file_attr("mean", std::string("0.5"));
    w.set_file_attr("std", std::string("0.5"));
    w.set_file_attr(key, value);
    w.commit();
    CHECK_THROWS_WITH_AS(data::load_dataset(dir / "c.h5", data::Split::train), doctest::Contains(message.c_str()), Error);
  }
}

TEST_CASE("source_rows follow take_first, subset, balanced_subset and shuffles, and are saved") {
  data::Dataset ds = ramp("tiny");
  CHECK(ds.rows() == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  data::Dataset a = data::subset(ds, {10, 4, 7});
  CHECK(a.source_rows == std::vector<int64_t>{10, 4, 7});
  data::Dataset b = data::subset(a, {2, 0});
  CHECK(b.source_rows == std::vector<int64_t>{7, 10});
  CHECK(data::take_first(a, 2).source_rows == std::vector<int64_t>{10, 4});
  data::Dataset bal = data::balanced_subset(ds, 6, 3);
  CHECK(bal.source_rows == data::balanced_indices(ds.labels, 3, 6, 3));
  TempDir dir("norm");
  data::save_dataset_h5(dir / "s.h5", b);
  CHECK(io::H5Reader(dir / "s.h5").read("source_rows").to_vector<int64_t>() == std::vector<int64_t>{7, 10});
}
