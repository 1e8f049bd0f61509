// Bad input never crashes and is never silently used (issue #16): at least one case per fault
// class in every reader, through the library. Each broken file is written here, with our own
// writer or the HDF5 C API (tests/support/h5edit.h); each error must name the file and the
// dataset or attribute inside it (or the setting), say what was expected and what was found.
//   1 sizes that overflow      checked_numel, H5Reader shapes, IDX headers, pad_to, model sizes
//   2 non-finite / impossible  checkpoint weights and buffers, poison delta, stored float types
//   3 poison on other images   the data fingerprint
//   4 truncated / malformed    gzip trailer and CRC, exact IDX length, zero dimensions, CIFAR
//   6 resume with changes      training and poison checkpoints record and compare settings
// (Class 5, command-line numbers, and the CLI side of the others: tests/tools/bad_input_cli_test.cpp.)
// Layout letters: N images, K classes, C channels, H rows, W columns.
#include <doctest/doctest.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "algorithms/train.h"
#include "engine/data/dataset.h"
#include "engine/io/checkpoint.h"
#include "engine/io/hdf5.h"
#include "engine/io/resume.h"
#include "engine/size.h"
#include "models/registry.h"
#include "poison/apply.h"
#include "poison/generate.h"
#include "tests/support/cli.h"
#include "tests/support/h5edit.h"

using namespace cpoison;
using cpoison::testing::H5Edit;
using cpoison::testing::TempDir;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kBig = uint64_t(1) << 62;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Every piece must be in the message (the file, the dataset, the value...).
void check_names(const std::string& message, const std::vector<std::string>& pieces) {
  INFO(message);
  CHECK(message != "(no error)");
  for (const auto& p : pieces) {
    INFO("missing: ", p);
    CHECK(message.find(p) != std::string::npos);
  }
}

data::Dataset tiny_dataset(int64_t n = 24, uint32_t salt = 0) {
  std::vector<uint8_t> px(n * 8 * 8);
  uint32_t state = 99u + salt;
  for (auto& v : px) {
    state = state * 1664525u + 1013904223u;
    v = (uint8_t)(state >> 24);
  }
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {n, 8, 8, 1});
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % 3;
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 3;
  ds.name = "tiny";
  return ds;
}

poison::Poison sample_poison(const data::Dataset& ds) {
  poison::Poison p;
  std::vector<float> d(ds.size() * 64);
  for (size_t i = 0; i < d.size(); ++i) d[i] = (float)((int)(i % 7) - 3) / 3.0f;
  p.delta = Tensor::from_vector(d, {ds.size(), 1, 8, 8});
  p.indices = Tensor::arange(ds.size());
  p.attack = "random";
  p.algorithm = "none";
  p.dataset = "tiny";
  p.classes = ds.classes;
  p.image_count = ds.size();
  p.data_fingerprint = data::fingerprint(ds);
  return p;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), (std::streamsize)bytes.size());
  REQUIRE(out.good());
}

std::string gzip(const std::string& raw) {
  uLongf size = compressBound(raw.size()) + 64;
  std::string out(size, '\0');
  z_stream z{};
  REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);  // +16: a gzip wrapper
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = (uInt)raw.size();
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = (uInt)out.size();
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = (char)(v >> (24 - 8 * i));
  return s;
}

std::string idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::string s = be32(0x803) + be32(n) + be32(h) + be32(w);
  for (uint64_t i = 0; i < (uint64_t)n * h * w; ++i) s.push_back((char)(i * 7));
  return s;
}

std::string idx_labels(uint32_t n) {
  std::string s = be32(0x801) + be32(n);
  for (uint32_t i = 0; i < n; ++i) s.push_back((char)(i % 10));
  return s;
}

// Fashion-MNIST files in `dir`, the training images given (already gzip-compressed or plain).
void write_fmnist(const TempDir& dir, const std::string& train_images_file, const std::string& train_images,
                  uint32_t n = 6) {
  for (const char* f : {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"}) fs::remove(dir / f);
  write_bytes(dir / train_images_file, train_images);
  write_bytes(dir / "train-labels-idx1-ubyte.gz", gzip(idx_labels(n)));
}

data::Dataset load_fmnist(const TempDir& dir, int64_t limit = 0) {
  data::LoadOptions lo;
  lo.root = dir.path.string();
  lo.limit = limit;
  return data::load_dataset("fashion-mnist", data::Split::train, lo);
}

}  // namespace

// ================================================================ 1. sizes that overflow

TEST_CASE("bad input 1: checked_numel refuses products that wrap, axes above 2^31 and negative sizes") {
  CHECK(checked_numel({4, 5, 6}, "x") == 120);
  CHECK(checked_numel({0, int64_t(1) << 31}, "x") == 0);
  check_names(error_of([] { checked_numel({4, (int64_t)kBig, 1, 1}, "the test's shape", std::numeric_limits<int64_t>::max()); }),
              {"the test's shape", "[4, 4611686018427387904, 1, 1]", "64-bit"});
  // A zero does not excuse an overflowing rest: a later product of the other axes would wrap.
  check_names(error_of([] { checked_numel({0, (int64_t)kBig, 8}, "z", std::numeric_limits<int64_t>::max()); }), {"64-bit"});
  check_names(error_of([] { checked_numel({2, (int64_t(1) << 31) + 1}, "axis"); }), {"axis", "2147483649", "2147483648"});
  check_names(error_of([] { checked_numel({3, -1}, "neg"); }), {"neg", "negative"});
  // Tensor::empty refuses the same shape instead of allocating a wrapped (tiny) size.
  check_names(error_of([] { Tensor::empty({4, (int64_t)kBig, 1, 1}, DType::f32); }), {"Tensor::empty", "64-bit"});
  check_names(error_of([] { check_allocation(uint64_t(1) << 62, "a 4 EiB request"); }), {"a 4 EiB request", "available"});
  check_names(error_of([] { check_range(int64_t(-5), 0, 10, "--proj-dim"); }), {"--proj-dim", "[0, 10]", "-5"});
  check_names(error_of([] { check_range(std::nan(""), 0.0, 1.0, "lr"); }), {"lr", "finite", "nan"});
}

TEST_CASE("bad input 1: H5Reader refuses stored shapes that overflow or exceed 2^31 per axis") {
  TempDir dir("bad-h5-shape");
  const std::string path = dir / "d.h5";
  data::save_dataset_h5(path, tiny_dataset());
  {
    H5Edit e(path);
    e.unwritten("images", {4, kBig, 1, 1});
    e.unwritten("huge_axis", {24, (uint64_t(1) << 31) + 1, 1, 1});
  }
  io::H5Reader r(path);
  check_names(error_of([&] { r.shape("images"); }), {path, "'images'", "4611686018427387904", "per axis"});
  check_names(error_of([&] { r.read("images"); }), {path, "'images'"});
  check_names(error_of([&] { r.read_rows("huge_axis", 0, 1); }), {path, "'huge_axis'", "2147483649", "per axis"});
  // Through the dataset loader: the same names.
  check_names(error_of([&] { data::load_dataset(path, data::Split::train); }), {path, "images"});
}

TEST_CASE("bad input 1: a dataset file's classes, an IDX header and pad_to are bounded") {
  TempDir dir("bad-sizes");
  const std::string path = dir / "d.h5";
  data::save_dataset_h5(path, tiny_dataset());
  H5Edit(path).set_attr("classes", (int64_t)kBig);
  check_names(error_of([&] { data::load_dataset(path, data::Split::train); }), {path, "'classes'", "4611686018427387904"});

  // n * rows * columns = (2^32 - 1) * 2^32 overflows int64.
  write_fmnist(dir, "train-images-idx3-ubyte.gz", gzip(be32(0x803) + be32(0xFFFFFFFF) + be32(65536) + be32(65536)));
  check_names(error_of([&] { load_fmnist(dir); }), {dir / "train-images-idx3-ubyte.gz", "4294967295", "per axis"});

  write_fmnist(dir, "train-images-idx3-ubyte.gz", gzip(idx_images(6, 4, 5)));
  data::LoadOptions lo;
  lo.root = dir.path.string();
  lo.pad_to = int64_t(1) << 31;
  check_names(error_of([&] { data::load_dataset("fashion-mnist", data::Split::train, lo); }), {"pad_to", "2147483648", "65536"});
}

TEST_CASE("bad input 1: model and learner sizes are bounded, in the config and in a checkpoint's attributes") {
  models::ModelOptions mo;
  mo.width = (int64_t)kBig;
  check_names(error_of([&] { models::make_encoder("resnet18", mo); }), {"width", "4611686018427387904", "4096"});
  algorithms::AlgoConfig ac = algorithms::AlgoConfig::defaults(algorithms::Algo::moco);
  ac.queue_size = (int64_t)kBig;
  check_names(error_of([&] { ac.validate(algorithms::Algo::moco); }), {"queue_size", "4611686018427387904"});
  ac = algorithms::AlgoConfig::defaults(algorithms::Algo::simclr);
  ac.proj_hidden = (int64_t)kBig;
  check_names(error_of([&] { ac.validate(algorithms::Algo::simclr); }), {"proj_hidden"});

  TempDir dir("bad-ck-attrs");
  algorithms::TrainConfig cfg;
  cfg.model_options.width = 2;
  cfg.model_options.in_channels = 1;
  cfg.algo_config.proj_dim = 8;
  cfg.augment = algorithms::make_augment(augment::Recipe::none, "cifar10", 1, 8, 8);
  cfg.epochs = 1;
  cfg.batch_size = 8;
  cfg.progress_seconds = -1;
  cfg.checkpoint_path = dir / "ck.h5";
  algorithms::train(tiny_dataset(), cfg);
  H5Edit(cfg.checkpoint_path).set_attr("width", (int64_t)kBig);
  check_names(error_of([&] { algorithms::load_encoder(cfg.checkpoint_path); }), {cfg.checkpoint_path, "'width'", "4096"});
}

// ================================================================ 2. non-finite or impossible values

TEST_CASE("bad input 2: checkpoint loaders refuse NaN weights, NaN momentum and a negative running_var") {
  TempDir dir("bad-ck-values");
  algorithms::TrainConfig cfg;
  cfg.model_options.width = 2;
  cfg.model_options.in_channels = 1;
  cfg.algo_config.proj_dim = 8;
  cfg.augment = algorithms::make_augment(augment::Recipe::none, "cifar10", 1, 8, 8);
  cfg.epochs = 1;
  cfg.batch_size = 8;
  cfg.progress_seconds = -1;
  cfg.checkpoint_path = dir / "ck.h5";
  algorithms::train(tiny_dataset(), cfg);
  const io::Checkpoint good = io::load_checkpoint(cfg.checkpoint_path);

  struct Case {
    std::string dataset;
    double value;
    std::string shown;
  } cases[] = {{"encoder.conv1.weight", NAN, "nan"},
               {"encoder.bn1.running_var", -1.0, "-1"},
               {"encoder.bn1.running_mean", INFINITY, "inf"},
               {"optim/encoder.conv1.weight/momentum_buffer", NAN, "nan"}};
  for (const auto& c : cases) {
    CAPTURE(c.dataset);
    io::Checkpoint bad = good;
    Tensor t = bad.tensors.at(c.dataset).clone();
    t.data<float>()[1] = (float)c.value;
    bad.tensors[c.dataset] = t;
    const std::string path = dir / "bad.h5";
    io::save_checkpoint(path, bad);
    check_names(error_of([&] { io::load_checkpoint(path); }), {path, "'" + c.dataset + "'", "element 1", c.shown});
    // Through what uses it: a resume and an evaluation.
    algorithms::TrainConfig resume = cfg;
    resume.checkpoint_path = path;
    resume.epochs = 2;
    resume.resume = true;
    check_names(error_of([&] { algorithms::train(tiny_dataset(), resume); }), {path, c.dataset});
  }
}

TEST_CASE("bad input 2: a poison's delta must be finite and within [-1, 1]; its attributes finite") {
  TempDir dir("bad-poison-values");
  const data::Dataset ds = tiny_dataset();
  const std::string path = dir / "p.h5";
  for (float v : {NAN, INFINITY, 1.5f, -2.0f}) {
    CAPTURE(v);
    poison::Poison p = sample_poison(ds);
    // Written with our own writer, skipping save_poison's validation.
    io::H5Writer w(path);
    Tensor d = p.delta.clone();
    d.data<float>()[3 * 64 + 21] = v;
    w.write("delta", d);
    w.write("indices", p.indices);
    for (auto& [k, a] : io::Attrs{{"eps", 8.0 / 255.0},    {"kind", std::string("sample")}, {"attack", std::string("random")},
                                  {"algorithm", std::string("none")}, {"dual_branch", int64_t(0)},
                                  {"dataset", std::string("tiny")}, {"subset", int64_t(0)}, {"seed", int64_t(0)},
                                  {"rounds_done", int64_t(0)}, {"rounds_total", int64_t(0)}, {"ratio", 1.0},
                                  {"classes", int64_t(3)},        {"image_count", int64_t(24)}})
      w.set_file_attr(k, a);
    w.commit();
    check_names(error_of([&] { poison::load_poison(path); }), {path, "'delta'", "element 213", "[3, 0, 2, 5]", "[-1, 1]"});
    check_names(error_of([&] { poison::apply_poison_file(ds, path); }), {path, "'delta'"});
  }
  poison::save_poison(path, sample_poison(ds));
  H5Edit(path).set_attr("eps", (double)NAN);
  check_names(error_of([&] { poison::load_poison(path); }), {path, "'eps'", "nan"});
  poison::save_poison(path, sample_poison(ds));
  {
    H5Edit e(path);
    e.remove("indices");
    e.set_attr("image_count", (int64_t)kBig);
  }
  check_names(error_of([&] { poison::load_poison(path); }), {path, "'image_count'", "4611686018427387904"});
}

TEST_CASE("bad input 2: stored element types are checked exactly, not only for convertibility") {
  TempDir dir("bad-types");
  const data::Dataset ds = tiny_dataset();
  const std::string path = dir / "p.h5";
  const poison::Poison good = sample_poison(ds);
  const std::vector<float> values = good.delta.to_vector<float>();
  // One changed byte of the float type: the bytes read back as other numbers (often zeros,
  // which export would then have written as clean images reported poisoned).
  for (const char* change : {"ebias", "order", "fields", "norm", "be"}) {
    CAPTURE(change);
    poison::save_poison(path, good);
    H5Edit(path).float_type("delta", {24, 1, 8, 8}, values, change);
    const std::string msg = error_of([&] { poison::load_poison(path); });
    check_names(msg, {path, "'delta'", "unsupported element type", "little-endian IEEE float32"});
    if (std::string(change) == "be" || std::string(change) == "order") check_names(msg, {"big-endian"});
    if (std::string(change) == "ebias") check_names(msg, {"bias 227"});
  }
  // Labels of a dataset file stored big-endian; a dataset whose data was never written.
  const std::string dpath = dir / "d.h5";
  data::save_dataset_h5(dpath, ds);
  H5Edit(dpath).int64_big_endian("labels", ds.labels.to_vector<int64_t>());
  check_names(error_of([&] { data::load_dataset(dpath, data::Split::train); }), {dpath, "'labels'", "big-endian"});
  data::save_dataset_h5(dpath, ds);
  H5Edit(dpath).unwritten("images", {24, 8, 8, 1});
  check_names(error_of([&] { data::load_dataset(dpath, data::Split::train); }), {dpath, "'images'", "not stored"});
}

// ================================================================ 3. a poison applied to other images

TEST_CASE("bad input 3: a poison records the fingerprint of its images; other images are refused") {
  TempDir dir("bad-fingerprint");
  const data::Dataset ds = tiny_dataset();
  const std::string path = dir / "p.h5";
  poison::save_poison(path, sample_poison(ds));
  CHECK(poison::load_poison(path).data_fingerprint == data::fingerprint(ds));
  CHECK_NOTHROW(poison::apply_poison_file(ds, path));
  // Same shape and labels, other pixels; the same images in another order (another subset seed).
  const data::Dataset other = tiny_dataset(24, 7);
  const data::Dataset reordered = data::subset(ds, data::shuffled_indices(24, 3));
  for (const data::Dataset* d : {&other, &reordered}) {
    check_names(error_of([&] { poison::apply_poison_file(*d, path); }),
                {path, "fingerprint", "differ from those the poison was made for", "--ignore-fingerprint"});
    CHECK_NOTHROW(poison::apply_poison_file(*d, path, /*ignore_fingerprint=*/true));
  }
  // generate_poison records it.
  poison::PoisonConfig c = poison::PoisonConfig::recipe("cpu-small-cp-s", algorithms::Algo::simclr);
  c.attack = poison::Attack::random;
  c.kind = poison::NoiseKind::sample_wise;
  c.model_options.in_channels = 1;
  c.augment = algorithms::make_augment(augment::Recipe::none, "cifar10", 1, 8, 8);
  c.progress_seconds = -1;
  c.checkpoint_path = "";
  CHECK(poison::generate_poison(ds, c, "tiny", 0).poison.data_fingerprint == data::fingerprint(ds));
}

// ================================================================ 4. truncated or malformed data files

TEST_CASE("bad input 4: IDX files: gzip trailer and CRC, exact payload length, non-zero counts") {
  TempDir dir("bad-idx");
  const std::string gz = gzip(idx_images(6, 4, 5));
  write_fmnist(dir, "train-images-idx3-ubyte.gz", gz);
  CHECK(load_fmnist(dir).size() == 6);
  const std::string file = dir / "train-images-idx3-ubyte.gz";
  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 8] ^= 0x5A;
  std::string bad_length = gz;
  bad_length[bad_length.size() - 4] ^= 0x01;
  struct Case {
    const char* what;
    std::string bytes;
    std::string expected;
  } cases[] = {{"trailer cut off", gz.substr(0, gz.size() - 8), "trailer"},
               {"half the trailer", gz.substr(0, gz.size() - 4), "gzip"},
               {"wrong CRC", bad_crc, "CRC"},
               {"wrong length", bad_length, "gzip"},
               {"extra payload", gzip(idx_images(6, 4, 5) + "xyz"), "more data than its header declares"},
               {"no images", gzip(idx_images(0, 4, 5)), "no images"},
               {"zero rows", gzip(be32(0x803) + be32(6) + be32(0) + be32(5)), "implausible image size"}};
  for (const auto& c : cases) {
    CAPTURE(c.what);
    write_fmnist(dir, "train-images-idx3-ubyte.gz", c.bytes);
    check_names(error_of([&] { load_fmnist(dir); }), {file, c.expected});
    // A limit reads fewer images but still checks the whole stream.
    if (std::string(c.what) != "no images" && std::string(c.what) != "zero rows")
      check_names(error_of([&] { load_fmnist(dir, 2); }), {file, c.expected});
  }
  // Plain (unpacked) files: the exact length too.
  write_fmnist(dir, "train-images-idx3-ubyte", idx_images(6, 4, 5) + "\x01\x02");
  check_names(error_of([&] { load_fmnist(dir); }), {dir / "train-images-idx3-ubyte", "more data than its header"});
  write_fmnist(dir, "train-images-idx3-ubyte", idx_images(6, 4, 5));
  write_bytes(dir / "train-labels-idx1-ubyte.gz", gzip(idx_labels(6) + "\x03"));
  check_names(error_of([&] { load_fmnist(dir); }), {dir / "train-labels-idx1-ubyte.gz", "more data than its header"});
}

TEST_CASE("bad input 4: HDF5 dataset files and poisons with a zero dimension; CIFAR files of the wrong length") {
  TempDir dir("bad-zero");
  const std::string path = dir / "d.h5";
  for (Shape shape : {Shape{0, 8, 8, 1}, Shape{24, 0, 8, 1}, Shape{24, 8, 8, 0}}) {
    CAPTURE(shape_str(shape));
    data::Dataset ds = tiny_dataset();
    ds.images = Tensor::zeros(shape, DType::u8);
    if (shape[0] == 0) ds.labels = Tensor::zeros({0}, DType::i64);
    data::save_dataset_h5(path, ds);
    check_names(error_of([&] { data::load_dataset(path, data::Split::train); }), {path, "/images", "every dimension must be > 0"});
  }
  poison::Poison p = sample_poison(tiny_dataset());
  p.delta = Tensor::zeros({24, 1, 0, 8});
  check_names(error_of([&] { p.validate("poison file x.h5"); }), {"x.h5", "'delta'", "every dimension must be > 0"});

  fs::create_directories(dir.path / "c10");
  std::string record(3073, '\0');
  for (int b = 1; b <= 5; ++b) write_bytes(dir / ("c10/data_batch_" + std::to_string(b) + ".bin"), record + record);
  write_bytes(dir / "c10/data_batch_4.bin", record + record + "\x01");
  write_bytes(dir / "c10/test_batch.bin", record);
  data::LoadOptions lo;
  lo.root = dir / "c10";
  check_names(error_of([&] { data::load_dataset("cifar10", data::Split::train, lo); }),
              {dir / "c10/data_batch_4.bin", "3073-byte records"});
}

// ================================================================ 6. resume with changed settings

TEST_CASE("bad input 6: setting_changes and check_resume_settings name the first differing field") {
  nlohmann::ordered_json a = {{"subset", 0}, {"lr", 0.5}, {"learner", {{"temperature", 0.5}, {"queue_size", 16}}}};
  nlohmann::ordered_json b = a;
  CHECK(io::setting_changes(a, b).empty());
  b["learner"]["temperature"] = 0.2;
  b["weight_decay"] = 0.1;
  auto changes = io::setting_changes(a, b);
  REQUIRE(changes.size() == 2);
  CHECK(changes[0].field == "learner.temperature");
  CHECK(changes[0].recorded == "0.5");
  CHECK(changes[0].current == "0.2");
  CHECK(changes[1].field == "weight_decay");
  CHECK(changes[1].recorded == "(absent)");
  io::Attrs attrs{{io::kSettingsAttr, a.dump()}};
  check_names(error_of([&] { io::check_resume_settings(attrs, "ck.h5", b, false); }),
              {"ck.h5", "'learner.temperature'", "0.5", "0.2", "and 1 more", "--allow-changed"});
  CHECK_NOTHROW(io::check_resume_settings(attrs, "ck.h5", b, true));
  check_names(error_of([&] { io::check_resume_settings({}, "old.h5", b, false); }), {"old.h5", "records no settings"});
  check_names(error_of([&] { io::check_resume_progress(5, 3, "ck.h5", "epochs", "epochs_done", "--epochs"); }),
              {"ck.h5", "5 epochs done", "--epochs 3"});
}

TEST_CASE("bad input 6: a resumed training run refuses other settings and fewer epochs than done") {
  TempDir dir("bad-resume");
  const data::Dataset ds = tiny_dataset();
  algorithms::TrainConfig cfg;
  cfg.model_options.width = 2;
  cfg.model_options.in_channels = 1;
  cfg.algo_config.proj_dim = 8;
  cfg.augment = algorithms::make_augment(augment::Recipe::none, "cifar10", 1, 8, 8);
  cfg.epochs = 2;
  cfg.batch_size = 8;
  cfg.progress_seconds = -1;
  cfg.checkpoint_path = dir / "ck.h5";
  cfg.checkpoint_every = 1;
  cfg.settings = {{"poison", std::string("none")}};
  cfg.on_epoch_end = [](int64_t done) { return done < 1; };
  algorithms::train(ds, cfg);
  CHECK(io::H5Reader(cfg.checkpoint_path).file_attrs().count(io::kSettingsAttr));
  const std::string saved = dir / "saved.h5";
  fs::copy_file(cfg.checkpoint_path, saved);
  auto resumed = [&](std::function<void(algorithms::TrainConfig&)> change) {
    fs::copy_file(saved, cfg.checkpoint_path, fs::copy_options::overwrite_existing);
    algorithms::TrainConfig c = cfg;
    c.on_epoch_end = nullptr;
    c.resume = true;
    change(c);
    return algorithms::train(ds, c);
  };
  check_names(error_of([&] { resumed([](auto& c) { c.weight_decay = 0.5; }); }),
              {cfg.checkpoint_path, "'weight_decay'", "0.0001", "0.5"});
  check_names(error_of([&] { resumed([](auto& c) { c.settings["poison"] = std::string("0123abcd"); }); }), {"'poison'"});
  check_names(error_of([&] { resumed([](auto& c) { c.algo_config.temperature = 0.2; }); }), {"'learner.temperature'"});
  check_names(error_of([&] { algorithms::train(tiny_dataset(24, 5), [&] {
                auto c = cfg;
                c.resume = true;
                return c;
              }()); }),
              {"'data_fingerprint'"});
  // A named checkpoint that does not exist.
  {
    algorithms::TrainConfig c = cfg;
    c.resume = true;
    c.resume_from = dir / "missing.h5";
    check_names(error_of([&] { algorithms::train(ds, c); }), {"missing.h5", "no checkpoint"});
  }
  // allow_changed continues; more epochs than planned is a continuation, not a change.
  algorithms::TrainResult r = resumed([](auto& c) {
    c.weight_decay = 0.5;
    c.allow_changed = true;
    c.epochs = 3;
  });
  CHECK(r.start_epoch == 1);
  CHECK(r.epochs_done == 3);
  // Done > total: the checkpoint now holds 3 epochs.
  algorithms::TrainConfig fewer = cfg;
  fewer.on_epoch_end = nullptr;
  fewer.resume = true;
  fewer.weight_decay = 0.5;
  check_names(error_of([&] { algorithms::train(ds, fewer); }), {cfg.checkpoint_path, "3 epochs done", "--epochs 2"});
}

TEST_CASE("bad input 6: a resumed poison run refuses other settings and fewer rounds than done") {
  TempDir dir("bad-poison-resume");
  const data::Dataset ds = tiny_dataset();
  poison::PoisonConfig c = poison::PoisonConfig::recipe("cpu-small-cp-c", algorithms::Algo::simclr);
  c.model_options.width = 2;
  c.model_options.in_channels = 1;
  c.algo_config.proj_dim = 8;
  c.augment = algorithms::make_augment(augment::Recipe::none, "cifar10", 1, 8, 8);
  c.batch_size = 8;
  c.model_steps = 1;
  c.noise_batches = 1;
  c.rounds = 3;
  c.progress_seconds = -1;
  c.checkpoint_path = dir / "p.ckpt.h5";
  c.on_round_end = [](int64_t done) { return done < 2; };
  poison::generate_poison(ds, c, "tiny", 0);
  const std::string saved = dir / "saved.ckpt.h5";
  fs::copy_file(c.checkpoint_path, saved);
  auto resumed = [&](std::function<void(poison::PoisonConfig&)> change) {
    fs::copy_file(saved, c.checkpoint_path, fs::copy_options::overwrite_existing);
    poison::PoisonConfig r = c;
    r.on_round_end = nullptr;
    r.resume = true;
    change(r);
    return poison::generate_poison(ds, r, "tiny", 0);
  };
  check_names(error_of([&] { resumed([](auto& r) { r.weight_decay = 0.5; }); }), {c.checkpoint_path, "'weight_decay'"});
  check_names(error_of([&] { resumed([](auto& r) { r.lr = 0.01; }); }), {"'lr'"});
  check_names(error_of([&] { resumed([](auto& r) { r.rounds = 1; }); }), {"2 rounds done", "--rounds 1"});
  // Every knob of PoisonConfig's field list is compared (these were not before it drove the check).
  check_names(error_of([&] { resumed([](auto& r) { r.augment_strength = 0.5; }); }), {"'augment_strength'"});
  check_names(error_of([&] { resumed([](auto& r) { r.separability_detach_spread = true; }); }),
              {"'separability_detach_spread'"});
  check_names(error_of([&] { resumed([](auto& r) { r.target_shift = 3; }); }), {"'target_shift'"});
  check_names(error_of([&] { poison::generate_poison(tiny_dataset(24, 9), [&] {
                fs::copy_file(saved, c.checkpoint_path, fs::copy_options::overwrite_existing);
                auto r = c;
                r.on_round_end = nullptr;
                r.resume = true;
                return r;
              }(), "tiny", 0); }),
              {"'data_fingerprint'"});
  // The resumed delta must stay in [-1, 1]: a NaN in the checkpoint's delta is refused.
  {
    io::Checkpoint ck = io::load_checkpoint(saved);
    Tensor d = ck.tensors.at("delta").clone();
    d.data<float>()[5] = NAN;
    ck.tensors["delta"] = d;
    io::save_checkpoint(dir / "nan.ckpt.h5", ck);
    check_names(error_of([&] { io::load_checkpoint(dir / "nan.ckpt.h5"); }), {"nan.ckpt.h5", "'delta'", "element 5"});
  }
  poison::PoisonResult ok = resumed([](auto& r) {
    r.weight_decay = 0.5;
    r.allow_changed = true;
  });
  CHECK(ok.finished);
}
