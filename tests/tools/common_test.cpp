// tools/common: fraction parsing, output paths, data options (given flags, recorded defaults),
// the data fingerprint and poison files with extra attributes.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "engine/io/hdf5.h"
#include "tools/common.h"

using namespace cpoison;
using namespace cpoison::tools;

namespace {
data::Dataset small_dataset(int64_t n, int64_t classes) {
  data::Dataset ds;
  std::vector<uint8_t> px(n * 3 * 3 * 1);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 53 % 251);
  ds.images = Tensor::from_vector(px, {n, 3, 3, 1});
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = i % classes;
  ds.labels = Tensor::from_vector(lab, {n});
  ds.classes = classes;
  ds.name = "small";
  return ds;
}

// Parses argv with a fresh app holding the data options; returns the options.
void parse_data_args(CLI::App& app, DataOptions& o, std::vector<std::string> args) {
  add_data_options(app, o);
  std::vector<std::string> argv_strings = {"prog"};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  app.parse((int)argv.size(), argv.data());
}
}  // namespace

TEST_CASE("tools parse_fraction reads decimals and fractions and names the flag on bad text") {
  CHECK(parse_fraction("8/255", "--eps") == doctest::Approx(8.0 / 255.0).epsilon(1e-15));
  CHECK(parse_fraction("0.5", "--eps") == 0.5);
  CHECK(parse_fraction("1e-2", "--eps") == 0.01);
  CHECK(parse_fraction("16 / 255", "--eps") == doctest::Approx(16.0 / 255.0));  // blanks around the parts are allowed
  CHECK_THROWS_WITH(parse_fraction("abc", "--eps"), doctest::Contains("--eps"));
  CHECK_THROWS_WITH(parse_fraction("8/0", "--eps"), doctest::Contains("divides by zero"));
  CHECK_THROWS_WITH(parse_fraction("8/", "--step"), doctest::Contains("--step"));
  CHECK_THROWS_WITH(parse_fraction("", "--eps"), doctest::Contains("not a number"));
  CHECK_THROWS(parse_fraction("0.1x", "--eps"));
}

TEST_CASE("tools format_pixels and with_suffix") {
  CHECK(format_pixels(8.0 / 255.0) == "8/255");
  CHECK(format_pixels(0.1) == "0.1");
  CHECK(with_suffix("runs/cpc.h5", ".png") == "runs/cpc.png");
  CHECK(with_suffix("runs/cpc.hdf5", ".ckpt.h5") == "runs/cpc.ckpt.h5");
  CHECK(with_suffix("cpc", ".png") == "cpc.png");
}

TEST_CASE("tools DataOptions: given flags win, the rest comes from recorded attributes") {
  CLI::App app;
  DataOptions o;
  parse_data_args(app, o, {"--subset", "20", "--pad-to", "32"});
  CHECK(o.given("--subset"));
  CHECK(o.given("--pad-to"));
  CHECK_FALSE(o.given("--data"));
  CHECK_FALSE(o.given("--channels"));
  CHECK_FALSE(o.given("--no-such-flag"));
  CHECK(o.option("--subset-seed") != nullptr);
  CHECK_THROWS_WITH(o.option("--no-such-flag"), doctest::Contains("--no-such-flag"));

  io::Attrs recorded{{"dataset", std::string("cifar10")}, {"subset", int64_t(500)}, {"subset_seed", int64_t(7)},
                     {"pad_to", int64_t(0)},             {"channels", int64_t(3)}};
  DataOptions r = o.with_recorded(recorded);
  CHECK(r.data == "cifar10");
  CHECK(r.subset == 20);       // given
  CHECK(r.subset_seed == 7);   // recorded
  CHECK(r.pad_to == 32);       // given
  CHECK(r.channels == 3);      // recorded
  CHECK(r.describe() == "cifar10 (subset 20, seed 7, pad to 32, 3 channels)");

  io::Attrs a = r.to_attrs();
  CHECK(std::get<std::string>(a.at("dataset")) == "cifar10");
  CHECK(std::get<int64_t>(a.at("subset")) == 20);
  CHECK(std::get<int64_t>(a.at("channels")) == 3);

  DataOptions empty;
  CHECK_THROWS_WITH(load_train(empty), doctest::Contains("--data"));
  CHECK_THROWS_WITH(parse_device("tpu"), doctest::Contains("--device"));
  CHECK(parse_device("cpu") == Device::cpu);
}

TEST_CASE("tools load_train applies the balanced subset and load_test keeps the whole split") {
  auto dir = std::filesystem::temp_directory_path() / ("cpoison-common-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  data::Dataset train = small_dataset(12, 3), test = small_dataset(5, 3);
  std::string path = (dir / "small.h5").string();
  data::save_datasets_h5(path, {{data::Split::train, &train}, {data::Split::test, &test}});
  DataOptions o;
  o.data = path;
  o.subset = 6;
  o.subset_seed = 1;
  data::Dataset sub = load_train(o);
  CHECK(sub.size() == 6);
  CHECK(data::class_counts(sub) == std::vector<int64_t>{2, 2, 2});
  CHECK(load_test(o).size() == 5);
  CHECK(load_test(o, 2).size() == 2);
  o.channels = 3;
  CHECK(load_train(o).channels() == 3);
  o.data = (dir / "missing.h5").string();
  CHECK_THROWS_WITH(load_train(o), doctest::Contains("missing.h5"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("tools data_fingerprint changes with one pixel or one label") {
  data::Dataset a = small_dataset(6, 2);
  std::string f = data_fingerprint(a);
  CHECK(f.size() == 16);
  CHECK(data_fingerprint(small_dataset(6, 2)) == f);
  data::Dataset b = small_dataset(6, 2);
  b.images.data<uint8_t>()[17] ^= 1;
  CHECK(data_fingerprint(b) != f);
  data::Dataset c = small_dataset(6, 2);
  c.labels.data<int64_t>()[0] = 1;
  CHECK(data_fingerprint(c) != f);
}

TEST_CASE("tools save_poison_with_attrs keeps the poison layout and adds attributes") {
  auto dir = std::filesystem::temp_directory_path() / ("cpoison-common-poison-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  poison::Poison p;
  p.delta = Tensor::from_vector(std::vector<float>{0.5f, -1.f, 0.f, 1.f, 0.25f, -0.25f, 0.75f, -0.75f}, {2, 1, 2, 2});
  p.indices = Tensor::from_vector(std::vector<int64_t>{0, 2}, {2});
  p.kind = poison::NoiseKind::class_wise;
  p.classes = 2;
  p.image_count = 3;
  p.ratio = 2.0 / 3.0;
  p.attack = "random";
  p.algorithm = "none";
  p.dataset = "small";
  std::string path = (dir / "p.h5").string();
  save_poison_with_attrs(path, p, {{"pad_to", int64_t(4)}, {"data_fingerprint", std::string("00ff")}});
  poison::Poison q = poison::load_poison(path);
  CHECK(q.delta.to_vector<float>() == p.delta.to_vector<float>());
  CHECK(q.indices.to_vector<int64_t>() == std::vector<int64_t>{0, 2});
  CHECK(q.kind == poison::NoiseKind::class_wise);
  CHECK(q.dataset == "small");
  io::Attrs a = io::H5Reader(path).file_attrs();
  CHECK(std::get<int64_t>(a.at("pad_to")) == 4);
  CHECK(std::get<std::string>(a.at("data_fingerprint")) == "00ff");
  CHECK_FALSE(std::filesystem::exists(path + ".base"));
  CHECK_THROWS_WITH(save_poison_with_attrs(path, p, {{"eps", 0.5}}), doctest::Contains("eps"));
  CHECK_FALSE(std::filesystem::exists(path + ".base"));

  std::string png = (dir / "p.png").string();
  write_poison_overview(png, p, small_dataset(3, 2));
  CHECK(std::filesystem::file_size(png) > 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("tools write_tiles_png enlarges small tiles by an integer factor") {
  auto dir = std::filesystem::temp_directory_path() / ("cpoison-common-png-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  // Width and height from the PNG header (IHDR: big-endian at bytes 16 and 20).
  auto png_size = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    unsigned char b[24] = {};
    in.read(reinterpret_cast<char*>(b), 24);
    auto be = [&](int at) { return (int64_t)b[at] << 24 | (int64_t)b[at + 1] << 16 | (int64_t)b[at + 2] << 8 | b[at + 3]; };
    return std::pair<int64_t, int64_t>{be(16), be(20)};
  };
  std::string small = (dir / "small.png").string(), large = (dir / "large.png").string();
  write_tiles_png(small, Tensor::full({3, 1, 8, 8}, 0.5), 2);  // x8: 64-pixel tiles, 2 columns, 2 rows
  CHECK(png_size(small) == std::pair<int64_t, int64_t>{2 * 65 + 1, 2 * 65 + 1});
  write_tiles_png(large, Tensor::full({1, 3, 70, 90}, 0.5), 4);  // no enlargement
  CHECK(png_size(large) == std::pair<int64_t, int64_t>{92, 72});
  CHECK_THROWS_WITH(write_tiles_png(small, Tensor::full({8, 8}, 0.5), 2), doctest::Contains("[N, C, H, W]"));
  std::filesystem::remove_all(dir);
}
