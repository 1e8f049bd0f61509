// Datasets: each reader on tiny files written here in the exact real binary formats, their
// broken variants, HDF5 dataset files, subsets, batches, the sampler and the image-folder
// converter. Layout letters: N images, H rows, W columns, C channels.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstddef>
#include <cstdio>
// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/backend/dispatch.h"
#include "engine/data/dataset.h"
#include "engine/io/hdf5.h"
#include "tests/support/skip.h"

using namespace cpoison;
using namespace cpoison::data;
namespace fs = std::filesystem;

namespace {

// A fresh directory under /tmp, removed with everything in it at the end of the test.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/cpoison-data-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), (std::streamsize)bytes.size());
  REQUIRE(out.good());
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back((uint8_t)(x >> s));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), (unsigned)bytes.size()) == (int)bytes.size());
  gzclose(f);
}

// IDX files exactly as MNIST ships them: magic 0x00000803 / 0x00000801, big-endian sizes.
std::vector<uint8_t> idx_images(uint32_t n, uint32_t h, uint32_t w, const std::function<uint8_t(int, int, int)>& px,
                                uint32_t magic = 0x00000803) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, n);
  put_be32(v, h);
  put_be32(v, w);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) v.push_back(px(i, y, x));
  return v;
}

std::vector<uint8_t> idx_labels(const std::vector<uint8_t>& labels, uint32_t magic = 0x00000801) {
  std::vector<uint8_t> v;
  put_be32(v, magic);
  put_be32(v, (uint32_t)labels.size());
  v.insert(v.end(), labels.begin(), labels.end());
  return v;
}

uint8_t fmnist_pixel(int i, int y, int x) { return (uint8_t)(i * 50 + y * 4 + x); }

// A Fashion-MNIST-like root with n train and 2 test images of 4x5.
void write_fmnist(const std::string& root, int n = 3) {
  write_gz(root + "/train-images-idx3-ubyte.gz", idx_images(n, 4, 5, fmnist_pixel));
  std::vector<uint8_t> labels;
  for (int i = 0; i < n; ++i) labels.push_back((uint8_t)((i * 7) % 10));
  write_gz(root + "/train-labels-idx1-ubyte.gz", idx_labels(labels));
  write_gz(root + "/t10k-images-idx3-ubyte.gz", idx_images(2, 4, 5, fmnist_pixel));
  write_gz(root + "/t10k-labels-idx1-ubyte.gz", idx_labels({9, 0}));
}

// CIFAR pixel value of image `id` at (channel, row, column): distinct per plane and position.
uint8_t cifar_pixel(int id, int c, int y, int x) { return (uint8_t)(id * 31 + c * 80 + y * 2 + x); }

// CIFAR-10 binary records: <label><1024 R><1024 G><1024 B>, each plane row-major 32x32.
// CIFAR-100 records have <coarse><fine> in front.
std::vector<uint8_t> cifar_records(const std::vector<std::vector<uint8_t>>& heads, int first_id) {
  std::vector<uint8_t> v;
  for (size_t r = 0; r < heads.size(); ++r) {
    v.insert(v.end(), heads[r].begin(), heads[r].end());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) v.push_back(cifar_pixel(first_id + (int)r, c, y, x));
  }
  return v;
}

// CIFAR-10 layout: train batches of 2 images (ids 0..9), test batch of 3 (ids 100..102).
void write_cifar10(const std::string& dir) {
  fs::create_directories(dir);
  for (int b = 1; b <= 5; ++b) {
    int id = (b - 1) * 2;
    write_bytes(dir + "/data_batch_" + std::to_string(b) + ".bin",
                cifar_records({{(uint8_t)(id % 10)}, {(uint8_t)((id + 1) % 10)}}, id));
  }
  write_bytes(dir + "/test_batch.bin", cifar_records({{3}, {4}, {5}}, 100));
}

// STL-10 pixel of image i at (channel, row y, column x).
uint8_t stl_pixel(int i, int c, int y, int x) { return (uint8_t)(i * 17 + c * 60 + y + 2 * x); }

// STL-10 binary: each image 3 planes of 96x96 stored column-major (byte c*9216 + x*96 + y).
std::vector<uint8_t> stl_images(int n, int first_id) {
  std::vector<uint8_t> v;
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      for (int x = 0; x < 96; ++x)
        for (int y = 0; y < 96; ++y) v.push_back(stl_pixel(first_id + i, c, y, x));
  return v;
}

uint8_t at(const Tensor& images, int64_t i, int64_t y, int64_t x, int64_t c) {
  int64_t H = images.size(1), W = images.size(2), C = images.size(3);
  return images.data<uint8_t>()[((i * H + y) * W + x) * C + c];
}

// A baseline JPEG (quality 100, 4:4:4) of an RGB or grayscale image written with libjpeg.
void write_jpeg(const std::string& path, int h, int w, int channels, const std::function<uint8_t(int, int, int)>& px) {
  FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = w;
  cinfo.image_height = h;
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 100, TRUE);
  for (int c = 0; c < cinfo.num_components; ++c) cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row((size_t)(w * channels));
  while ((int)cinfo.next_scanline < h) {
    int y = cinfo.next_scanline;
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c) row[x * channels + c] = px(y, x, c);
    JSAMPROW rp = row.data();
    jpeg_write_scanlines(&cinfo, &rp, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}

void write_png(const std::string& path, int h, int w, const std::function<uint8_t(int, int, int)>& px) {
  std::vector<uint8_t> rgb((size_t)(h * w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) rgb[(y * w + x) * 3 + c] = px(y, x, c);
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = w;
  image.height = h;
  image.format = PNG_FORMAT_RGB;
  REQUIRE(png_image_write_to_file(&image, path.c_str(), 0, rgb.data(), 0, nullptr));
}

std::function<uint8_t(int, int, int)> solid(uint8_t r, uint8_t g, uint8_t b) {
  return [=](int, int, int c) { return c == 0 ? r : c == 1 ? g : b; };
}

// Checks every pixel of image i is within tol of (r, g, b).
void check_solid(const Tensor& images, int64_t i, int r, int g, int b, int tol = 3) {
  const int want[3] = {r, g, b};
  int worst = 0;
  for (int64_t y = 0; y < images.size(1); ++y)
    for (int64_t x = 0; x < images.size(2); ++x)
      for (int c = 0; c < 3; ++c) worst = std::max(worst, std::abs((int)at(images, i, y, x, c) - want[c]));
  CHECK_MESSAGE(worst <= tol, "image ", i, " differs from (", r, ",", g, ",", b, ") by ", worst);
}

// A tiny class-folder tree: b_cars (2 red), a_dogs (1 green, 1 gray JPEG, 1 PNG named .JPEG).
void write_image_folder(const std::string& dir) {
  fs::create_directories(dir + "/b_cars");
  fs::create_directories(dir + "/a_dogs");
  write_jpeg(dir + "/b_cars/1.JPEG", 12, 10, 3, solid(220, 20, 30));
  write_jpeg(dir + "/b_cars/2.jpg", 9, 15, 3, solid(200, 40, 10));
  write_jpeg(dir + "/a_dogs/x1.JPEG", 8, 8, 3, solid(10, 200, 60));
  write_jpeg(dir + "/a_dogs/x2.JPEG", 10, 7, 1, [](int, int, int) { return (uint8_t)90; });
  write_png(dir + "/a_dogs/x3.JPEG", 6, 9, solid(30, 60, 240));
  write_bytes(dir + "/a_dogs/notes.txt", {'h', 'i'});  // not an image: ignored
}

}  // namespace

// ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

TEST_CASE("data: IDX gz files load with pixels, labels, pad_to, channels and limit") {
  TempDir dir;
  write_fmnist(dir.path);
  LoadOptions opt;
  opt.root = dir.path;
  Dataset train = load_dataset("fashion-mnist", Split::train, opt);
  CHECK(train.images.shape() == Shape{3, 4, 5, 1});
  CHECK(train.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 7, 4});
  CHECK(train.classes == 10);
  CHECK(train.name == "fashion-mnist");
  CHECK(train.class_names.size() == 10);
  CHECK(train.class_names[9] == "Ankle boot");
  CHECK(at(train.images, 2, 3, 4, 0) == fmnist_pixel(2, 3, 4));
  CHECK(at(train.images, 1, 0, 2, 0) == fmnist_pixel(1, 0, 2));

  Dataset test = load_dataset("fashion-mnist", Split::test, opt);
  CHECK(test.size() == 2);
  CHECK(test.labels.to_vector<int64_t>() == std::vector<int64_t>{9, 0});

  LoadOptions padded = opt;
  padded.pad_to = 8;  // 4x5 -> 8x8: 2 rows above, 1 column left (the odd extra goes right)
  padded.channels = 3;
  padded.limit = 2;
  Dataset p = load_dataset("fashion-mnist", Split::train, padded);
  REQUIRE(p.images.shape() == Shape{2, 8, 8, 3});
  CHECK(at(p.images, 1, 0, 0, 0) == 0);
  CHECK(at(p.images, 1, 1, 3, 2) == 0);
  CHECK(at(p.images, 1, 2, 1, 0) == fmnist_pixel(1, 0, 0));
  CHECK(at(p.images, 1, 2 + 3, 1 + 4, 1) == fmnist_pixel(1, 3, 4));
  CHECK(at(p.images, 1, 5, 6, 2) == 0);
  CHECK(at(p.images, 1, 6, 3, 0) == 0);
  CHECK(p.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 7});

  // MNIST reads the same format; uncompressed files work too.
  TempDir plain;
  write_bytes(plain / "t10k-images-idx3-ubyte", idx_images(1, 2, 2, fmnist_pixel));
  write_bytes(plain / "t10k-labels-idx1-ubyte", idx_labels({5}));
  LoadOptions po;
  po.root = plain.path;
  Dataset m = load_dataset("mnist", Split::test, po);
  CHECK(m.images.shape() == Shape{1, 2, 2, 1});
  CHECK(m.labels.item() == 5);
  CHECK(m.class_names[5] == "5");
}

TEST_CASE("data: broken IDX files raise errors naming the file and the fault") {
  TempDir dir;
  write_fmnist(dir.path);
  LoadOptions opt;
  opt.root = dir.path;
  auto load = [&] { load_dataset("fashion-mnist", Split::train, opt); };

  std::string images = dir / "train-images-idx3-ubyte.gz", labels = dir / "train-labels-idx1-ubyte.gz";
  write_gz(images, idx_images(3, 4, 5, fmnist_pixel, 0x00000801));
  std::string msg = error_of(load);
  CHECK(contains(msg, images));
  CHECK(contains(msg, "bad magic number 0x00000801"));

  write_gz(images, idx_images(3, 4, 5, fmnist_pixel));
  write_gz(labels, idx_labels({1, 2, 3}, 0x00000803));
  msg = error_of(load);
  CHECK(contains(msg, labels));
  CHECK(contains(msg, "bad magic number 0x00000803"));

  // The header promises 3 images but the pixels stop early.
  auto short_images = idx_images(3, 4, 5, fmnist_pixel);
  short_images.resize(short_images.size() - 7);
  write_gz(images, short_images);
  write_gz(labels, idx_labels({1, 2, 3}));
  msg = error_of(load);
  CHECK(contains(msg, images));
  CHECK(contains(msg, "truncated"));

  // A gzip stream cut in the middle.
  write_gz(images, idx_images(3, 4, 5, fmnist_pixel));
  auto gz = read_bytes(images);
  gz.resize(gz.size() / 2);
  write_bytes(images, gz);
  msg = error_of(load);
  CHECK(contains(msg, images));
  CHECK((contains(msg, "truncated") || contains(msg, "corrupt")));

  write_gz(images, idx_images(3, 4, 5, fmnist_pixel));
  write_gz(labels, idx_labels({1, 10, 3}));
  msg = error_of(load);
  CHECK(contains(msg, labels));
  CHECK(contains(msg, "label 10 of image 1 is out of range [0, 10)"));

  write_gz(labels, idx_labels({1, 2}));
  msg = error_of(load);
  CHECK(contains(msg, "holds 2 labels but"));
  CHECK(contains(msg, "holds 3 images"));
  opt.limit = 1;  // the counts disagree even when only the first image is wanted
  CHECK(contains(error_of(load), "holds 2 labels but"));
  opt.limit = 0;

  fs::remove(labels);
  msg = error_of(load);
  CHECK(contains(msg, labels));
  CHECK(contains(msg, "not found"));

  LoadOptions nowhere;
  nowhere.root = dir / "missing";
  msg = error_of([&] { load_dataset("mnist", Split::test, nowhere); });
  CHECK(contains(msg, dir / "missing/t10k-images-idx3-ubyte.gz"));
  CHECK(contains(msg, "CPOISON_DATA"));
}

TEST_CASE("data: dataset names, roots and options are checked") {
  CHECK(contains(error_of([] { load_dataset("imagenet", Split::train); }), "unknown dataset 'imagenet'"));
  CHECK(contains(error_of([] { load_dataset("mnist", Split::unlabeled, LoadOptions{"/nonexistent"}); }),
                 "no unlabeled split"));
  LoadOptions bad;
  bad.channels = 2;
  CHECK(contains(error_of([&] { load_dataset("mnist", Split::train, bad); }), "channels must be 0, 1 or 3"));
  CHECK(contains(error_of([] { parse_split("val"); }), "unknown split 'val'"));

  TempDir dir;
  write_fmnist(dir.path);
  LoadOptions small;
  small.root = dir.path;
  small.pad_to = 3;
  CHECK(contains(error_of([&] { load_dataset("fashion-mnist", Split::train, small); }), "pad_to 3 is smaller"));

  LoadOptions none;
  CHECK(resolve_root("cifar10", LoadOptions{"/x/y"}) == "/x/y");
  ::setenv("CPOISON_DATA", dir.path.c_str(), 1);
  CHECK(resolve_root("cifar10", none) == dir.path + "/cifar10");
  ::unsetenv("CPOISON_DATA");
  CHECK(contains(resolve_root("stl10", none), "stl10"));
}

// ---------------------------------------------------------------- CIFAR-10 / CIFAR-100

TEST_CASE("data: CIFAR-10 binary batches load in record order, in root or its tarball folder") {
  TempDir dir;
  write_cifar10(dir / "cifar-10-batches-bin");
  std::ofstream(dir / "cifar-10-batches-bin/batches.meta.txt")
      << "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
  LoadOptions opt;
  opt.root = dir.path;
  Dataset train = load_dataset("cifar10", Split::train, opt);
  REQUIRE(train.images.shape() == Shape{10, 32, 32, 3});
  CHECK(train.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  for (int id : {0, 5, 9})
    for (auto [c, y, x] : {std::tuple{0, 0, 0}, std::tuple{1, 31, 2}, std::tuple{2, 7, 30}})
      CHECK(at(train.images, id, y, x, c) == cifar_pixel(id, c, y, x));
  CHECK(train.class_names.size() == 10);
  CHECK(train.class_names[1] == "automobile");

  Dataset test = load_dataset("cifar10", Split::test, opt);
  CHECK(test.labels.to_vector<int64_t>() == std::vector<int64_t>{3, 4, 5});
  CHECK(at(test.images, 2, 4, 5, 1) == cifar_pixel(102, 1, 4, 5));

  opt.limit = 3;  // spans two batch files
  Dataset first = load_dataset("cifar10", Split::train, opt);
  CHECK(first.size() == 3);
  CHECK(at(first.images, 2, 1, 1, 2) == cifar_pixel(2, 2, 1, 1));

  // The files directly in root work as well.
  LoadOptions direct;
  direct.root = dir / "cifar-10-batches-bin";
  CHECK(load_dataset("cifar10", Split::test, direct).size() == 3);
}

TEST_CASE("data: broken CIFAR-10 files raise errors naming the file") {
  TempDir dir;
  write_cifar10(dir.path);
  LoadOptions opt;
  opt.root = dir.path;
  auto load = [&] { load_dataset("cifar10", Split::train, opt); };

  std::string b2 = dir / "data_batch_2.bin";
  auto bytes = read_bytes(b2);
  bytes.resize(bytes.size() - 5);
  write_bytes(b2, bytes);
  std::string msg = error_of(load);
  CHECK(contains(msg, b2));
  CHECK(contains(msg, "not a whole number of 3073-byte records"));

  write_bytes(b2, cifar_records({{1}, {10}}, 2));
  msg = error_of(load);
  CHECK(contains(msg, b2));
  CHECK(contains(msg, "label 10 of record 1 is out of range [0, 10)"));

  fs::remove(dir / "data_batch_4.bin");
  msg = error_of(load);
  CHECK(contains(msg, dir / "data_batch_4.bin"));
  CHECK(contains(msg, "not found"));

  write_bytes(dir / "test_batch.bin", {});
  CHECK(contains(error_of([&] { load_dataset("cifar10", Split::test, opt); }), "empty file"));
}

TEST_CASE("data: CIFAR-100 binary uses the fine label of 3074-byte records") {
  TempDir dir;
  fs::create_directories(dir / "cifar-100-binary");
  write_bytes(dir / "cifar-100-binary/train.bin", cifar_records({{4, 30}, {19, 99}, {0, 0}}, 7));
  write_bytes(dir / "cifar-100-binary/test.bin", cifar_records({{1, 55}}, 50));
  LoadOptions opt;
  opt.root = dir.path;
  Dataset train = load_dataset("cifar100", Split::train, opt);
  REQUIRE(train.images.shape() == Shape{3, 32, 32, 3});
  CHECK(train.labels.to_vector<int64_t>() == std::vector<int64_t>{30, 99, 0});
  CHECK(train.classes == 100);
  CHECK(at(train.images, 1, 9, 20, 2) == cifar_pixel(8, 2, 9, 20));
  REQUIRE(train.class_names.size() == 100);
  CHECK(train.class_names[0] == "apple");
  CHECK(train.class_names[99] == "worm");
  CHECK(std::set<std::string>(train.class_names.begin(), train.class_names.end()).size() == 100);
  CHECK(load_dataset("cifar100", Split::test, opt).labels.item() == 55);

  write_bytes(dir / "cifar-100-binary/train.bin", cifar_records({{4, 30}, {19, 100}}, 7));
  std::string msg = error_of([&] { load_dataset("cifar100", Split::train, opt); });
  CHECK(contains(msg, dir / "cifar-100-binary/train.bin"));
  CHECK(contains(msg, "fine label 100 of record 1 is out of range [0, 100)"));

  // A CIFAR-10 record file is not a whole number of CIFAR-100 records.
  write_bytes(dir / "cifar-100-binary/test.bin", cifar_records({{1}, {2}}, 0));
  CHECK(contains(error_of([&] { load_dataset("cifar100", Split::test, opt); }), "3074-byte records"));
}

// ---------------------------------------------------------------- STL-10

TEST_CASE("data: STL-10 binary is column-major with labels 1..10, unlabeled gets -1") {
  TempDir dir;
  std::string d = dir / "stl10_binary";
  fs::create_directories(d);
  write_bytes(d + "/train_X.bin", stl_images(3, 0));
  write_bytes(d + "/train_y.bin", {1, 10, 4});
  write_bytes(d + "/test_X.bin", stl_images(1, 10));
  write_bytes(d + "/test_y.bin", {7});
  write_bytes(d + "/unlabeled_X.bin", stl_images(2, 20));
  LoadOptions opt;
  opt.root = dir.path;
  Dataset train = load_dataset("stl10", Split::train, opt);
  REQUIRE(train.images.shape() == Shape{3, 96, 96, 3});
  CHECK(train.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 9, 3});
  // Row y, column x must not come out transposed.
  for (auto [i, c, y, x] : {std::tuple{0, 0, 0, 1}, std::tuple{1, 2, 5, 40}, std::tuple{2, 1, 95, 3}})
    CHECK(at(train.images, i, y, x, c) == stl_pixel(i, c, y, x));
  CHECK(train.class_names[7] == "monkey");
  Dataset test = load_dataset("stl10", Split::test, opt);
  CHECK(test.labels.item() == 6);
  Dataset unl = load_dataset("stl10", Split::unlabeled, opt);
  CHECK(unl.size() == 2);
  CHECK(unl.labels.to_vector<int64_t>() == std::vector<int64_t>{-1, -1});
  CHECK(at(unl.images, 1, 10, 20, 0) == stl_pixel(21, 0, 10, 20));

  write_bytes(d + "/train_y.bin", {1, 0, 4});
  std::string msg = error_of([&] { load_dataset("stl10", Split::train, opt); });
  CHECK(contains(msg, d + "/train_y.bin"));
  CHECK(contains(msg, "label 0 of image 1 is out of range [1, 10]"));

  write_bytes(d + "/train_y.bin", {1, 2});
  msg = error_of([&] { load_dataset("stl10", Split::train, opt); });
  CHECK(contains(msg, "holds 2 labels but"));
  CHECK(contains(msg, "holds 3 images"));

  auto bytes = stl_images(1, 0);
  bytes.pop_back();
  write_bytes(d + "/test_X.bin", bytes);
  CHECK(contains(error_of([&] { load_dataset("stl10", Split::test, opt); }), "27648-byte records"));
}

// ---------------------------------------------------------------- HDF5 dataset files

TEST_CASE("data: HDF5 dataset files round-trip in flat and grouped layouts") {
  TempDir dir;
  write_fmnist(dir.path, 5);
  LoadOptions opt;
  opt.root = dir.path;
  Dataset train = load_dataset("fashion-mnist", Split::train, opt);
  Dataset test = load_dataset("fashion-mnist", Split::test, opt);

  std::string flat = dir / "flat.h5";
  save_dataset_h5(flat, train, Split::train);
  CHECK_FALSE(fs::exists(flat + ".tmp"));
  Dataset back = load_dataset(flat, Split::train);
  CHECK(back.images.shape() == train.images.shape());
  CHECK(back.images.to_vector<int>() == train.images.to_vector<int>());
  CHECK(back.labels.to_vector<int64_t>() == train.labels.to_vector<int64_t>());
  CHECK(back.classes == 10);
  CHECK(back.name == "fashion-mnist");
  CHECK(back.class_names == train.class_names);
  CHECK(back.source == train.source);
  {
    io::H5Reader r(flat);  // the layout a Python user sees
    CHECK(r.dtype("images") == DType::u8);
    CHECK(r.dtype("labels") == DType::i64);
    CHECK(io::attr_string(r.file_attrs(), "split", flat) == "train");
  }
  std::string msg = error_of([&] { load_dataset(flat, Split::test); });
  CHECK(contains(msg, flat));
  CHECK(contains(msg, "holds the train split only"));

  LoadOptions lim;
  lim.limit = 2;
  lim.pad_to = 6;
  Dataset two = load_dataset(flat, Split::train, lim);
  CHECK(two.images.shape() == Shape{2, 6, 6, 1});
  CHECK(two.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 7});

  std::string grouped = dir / "both.h5";
  save_datasets_h5(grouped, {{Split::train, &train}, {Split::test, &test}});
  Dataset gt = load_dataset(grouped, Split::test);
  CHECK(gt.labels.to_vector<int64_t>() == std::vector<int64_t>{9, 0});
  CHECK(gt.images.to_vector<int>() == test.images.to_vector<int>());
  CHECK(gt.source == test.source);  // each split keeps its own origin
  CHECK(contains(gt.source, "t10k-images"));
  CHECK(load_dataset(grouped, Split::train).size() == 5);
  msg = error_of([&] { load_dataset(grouped, Split::unlabeled); });
  CHECK(contains(msg, "holds neither /unlabeled/images nor /images"));

  CHECK(contains(error_of([&] { load_dataset(dir / "none.h5", Split::train); }), "not found"));
  Dataset bad = train;
  bad.labels = Tensor::zeros({4}, DType::i64);
  CHECK(contains(error_of([&] { save_dataset_h5(dir / "bad.h5", bad); }), "labels must be i64 [N] with N = 5"));

  // Labels beyond the classes attribute are caught on load.
  Dataset wrong = train;
  wrong.classes = 5;
  save_dataset_h5(dir / "wrong.h5", wrong);
  msg = error_of([&] { load_dataset(dir / "wrong.h5", Split::train); });
  CHECK(contains(msg, "label 7 of image 1 is out of range [0, 5)"));
}

// ---------------------------------------------------------------- subsets

TEST_CASE("data: balanced subsets give equal shares, remainder to the lowest class ids") {
  // Class sizes 5, 1, 4 (interleaved).
  std::vector<int64_t> l = {0, 2, 0, 1, 2, 0, 2, 0, 2, 0};
  Tensor labels = Tensor::from_vector(l, {10});
  auto counts_of = [&](const std::vector<int64_t>& idx) {
    std::vector<int64_t> c(3, 0);
    for (int64_t i : idx) ++c[l[i]];
    return c;
  };
  auto idx = balanced_indices(labels, 3, 7, 11);
  CHECK(counts_of(idx) == std::vector<int64_t>{3, 1, 3});  // class 1 runs out, gives its share away
  CHECK(std::is_sorted(idx.begin(), idx.end()));
  CHECK(std::set<int64_t>(idx.begin(), idx.end()).size() == 7);
  CHECK(counts_of(balanced_indices(labels, 3, 4, 11)) == std::vector<int64_t>{2, 1, 1});
  CHECK(counts_of(balanced_indices(labels, 3, 10, 11)) == std::vector<int64_t>{5, 1, 4});
  CHECK(balanced_indices(labels, 3, 7, 11) == idx);  // seeded
  bool differs = false;
  for (uint64_t seed = 12; seed < 20 && !differs; ++seed) differs = balanced_indices(labels, 3, 7, seed) != idx;
  CHECK(differs);
  CHECK(contains(error_of([&] { balanced_indices(labels, 3, 11, 1); }), "asked for 11 images but only 10"));
  CHECK(contains(error_of([&] { balanced_indices(labels, 2, 3, 1); }), "label 2 of image 1 is out of range [0, 2)"));

  // Equal classes: 30 images of 10 classes, n = 13 -> 2 for classes 0..2, 1 for the rest.
  std::vector<int64_t> eq(30);
  for (int i = 0; i < 30; ++i) eq[i] = i % 10;
  Dataset ds;
  ds.images = Tensor::zeros({30, 2, 2, 1}, DType::u8);
  ds.labels = Tensor::from_vector(eq, {30});
  ds.classes = 10;
  Dataset sub = balanced_subset(ds, 13, 3);
  CHECK(sub.size() == 13);
  CHECK(class_counts(sub) == std::vector<int64_t>{2, 2, 2, 1, 1, 1, 1, 1, 1, 1});
}

TEST_CASE("data: shuffling and take_first are deterministic views and permutations") {
  auto p = shuffled_indices(50, 7);
  CHECK(p == shuffled_indices(50, 7));
  CHECK(p != shuffled_indices(50, 8));
  auto sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) CHECK(sorted[i] == i);

  Dataset ds;
  std::vector<uint8_t> px(6 * 4);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)i;
  ds.images = Tensor::from_vector(px, {6, 2, 2, 1});
  ds.labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2}, {6});
  ds.classes = 3;
  ds.name = "toy";
  Dataset s = shuffled(ds, 4);
  auto order = shuffled_indices(6, 4);
  for (int64_t i = 0; i < 6; ++i) {
    CHECK(at(s.images, i, 1, 0, 0) == at(ds.images, order[i], 1, 0, 0));
    CHECK(s.labels.to_vector<int64_t>()[i] == ds.labels.to_vector<int64_t>()[order[i]]);
  }
  CHECK(s.name == "toy");
  Dataset f = take_first(ds, 4);
  CHECK(f.size() == 4);
  CHECK(f.images.storage() == ds.images.storage());  // a view, no copy
  CHECK(take_first(ds, 100).size() == 6);
  CHECK(contains(error_of([&] { subset(ds, {0, 6}); }), "index 6 at position 1 is out of range [0, 6)"));
}

// ---------------------------------------------------------------- batches

TEST_CASE("data: to_float_nchw divides by 255 and moves channels first") {
  std::vector<uint8_t> px;  // [2, 2, 3, 2]: value encodes (b, y, x, c)
  for (int b = 0; b < 2; ++b)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x)
        for (int c = 0; c < 2; ++c) px.push_back((uint8_t)(b * 100 + y * 30 + x * 10 + c * 5));
  px[0] = 255;
  Tensor f = to_float_nchw(Tensor::from_vector(px, {2, 2, 3, 2}), Device::cpu);
  REQUIRE(f.shape() == Shape{2, 2, 2, 3});
  CHECK(f.dtype() == DType::f32);
  auto v = f.to_vector<float>();
  auto get = [&](int b, int c, int y, int x) { return v[((b * 2 + c) * 2 + y) * 3 + x]; };
  CHECK(get(0, 0, 0, 0) == 1.0f);
  CHECK(get(1, 1, 1, 2) == (float)(100 + 30 + 20 + 5) / 255.0f);
  CHECK(get(0, 1, 0, 1) == 15.0f / 255.0f);
  CHECK(get(1, 0, 0, 0) == 100.0f / 255.0f);
  CHECK(*std::min_element(v.begin(), v.end()) >= 0.0f);
  CHECK(*std::max_element(v.begin(), v.end()) <= 1.0f);
  CHECK(contains(error_of([] { to_float_nchw(Tensor::zeros({2, 2, 2}, DType::u8), Device::cpu); }),
                 "expects u8 [B,H,W,C]"));
  CHECK(contains(error_of([] { to_float_nchw(Tensor::zeros({1, 2, 2, 1}), Device::cpu); }), "expects u8 [B,H,W,C]"));
}

TEST_CASE("data: gather_batch picks rows, labels and their indices") {
  Dataset ds;
  std::vector<uint8_t> px(5 * 2 * 2 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 3);
  ds.images = Tensor::from_vector(px, {5, 2, 2, 3});
  ds.labels = Tensor::from_vector(std::vector<int64_t>{4, 3, 2, 1, 0}, {5});
  ds.classes = 5;
  Batch b = gather_batch(ds, {3, 0, 3});
  REQUIRE(b.images.shape() == Shape{3, 2, 2, 3});
  CHECK(b.labels.to_vector<int64_t>() == std::vector<int64_t>{1, 4, 1});
  CHECK(b.indices.to_vector<int64_t>() == std::vector<int64_t>{3, 0, 3});
  for (int y = 0; y < 2; ++y)
    for (int c = 0; c < 3; ++c) {
      CHECK(at(b.images, 0, y, 1, c) == at(ds.images, 3, y, 1, c));
      CHECK(at(b.images, 1, y, 0, c) == at(ds.images, 0, y, 0, c));
    }
  CHECK(contains(error_of([&] { gather_batch(ds, {1, -1}); }), "gather_batch: index -1 at position 1"));
}

TEST_CASE("data: BatchSampler covers each epoch, reshuffles, and resumes exactly") {
  BatchSampler s(10, 3, 5);  // drop_last: 3 batches of 3, one image left out per epoch
  CHECK(s.batches_per_epoch() == 3);
  std::vector<int64_t> seen;
  for (int k = 0; k < 3; ++k) {
    auto b = s.next();
    CHECK(b.size() == 3);
    seen.insert(seen.end(), b.begin(), b.end());
  }
  CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 9);
  CHECK(s.state().epoch == 1);
  CHECK(s.state().batch == 0);
  CHECK(s.at_epoch_start());
  CHECK(s.epoch_order(0) != s.epoch_order(1));
  auto order0 = s.epoch_order(0);
  CHECK(std::vector<int64_t>(order0.begin(), order0.begin() + 9) == seen);

  // Checkpoint after 4 batches, resume in a fresh sampler: the same batches follow.
  BatchSampler a(10, 3, 5);
  for (int k = 0; k < 4; ++k) a.next();
  auto st = a.state();
  CHECK(st.epoch == 1);
  CHECK(st.batch == 1);
  BatchSampler b(10, 3, 5);
  b.restore(st);
  for (int k = 0; k < 5; ++k) CHECK(a.next() == b.next());
  CHECK(BatchSampler(10, 3, 6).epoch_order(0) != order0);

  BatchSampler keep(10, 4, 1, /*shuffle=*/false, /*drop_last=*/false);
  CHECK(keep.batches_per_epoch() == 3);
  CHECK(keep.next() == std::vector<int64_t>{0, 1, 2, 3});
  keep.next();
  CHECK(keep.next() == std::vector<int64_t>{8, 9});
  CHECK(keep.next() == std::vector<int64_t>{0, 1, 2, 3});

  CHECK(contains(error_of([] { BatchSampler(5, 8, 1); }), "no batch per epoch"));
  CHECK(contains(error_of([] { BatchSampler(5, 0, 1); }), "batch size must be > 0"));
  CHECK(contains(error_of([&] { b.restore({0, 4}); }), "invalid for 3 batches per epoch"));
}

TEST_CASE("data: a dataset on CUDA gives the same batches as on the CPU") {
  SKIP_UNLESS(cuda_available(), "no CUDA device");
  Dataset ds;
  std::vector<uint8_t> px(6 * 3 * 4 * 2);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 7 % 256);
  ds.images = Tensor::from_vector(px, {6, 3, 4, 2});
  ds.labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2}, {6});
  ds.classes = 3;
  Dataset gpu = ds.to(Device::cuda);
  CHECK(gpu.device() == Device::cuda);
  Batch bc = gather_batch(ds, {5, 1, 1});
  Batch bg = gather_batch(gpu, {5, 1, 1});
  CHECK(bg.images.device() == Device::cuda);
  CHECK(bg.images.to_vector<int>() == bc.images.to_vector<int>());
  CHECK(bg.labels.to_vector<int64_t>() == bc.labels.to_vector<int64_t>());
  Tensor fc = to_float_nchw(bc.images, Device::cpu), fg = to_float_nchw(bg.images, Device::cuda);
  CHECK(fg.device() == Device::cuda);
  CHECK(fg.to_vector<float>() == fc.to_vector<float>());  // value / 255 is exact in both
  CHECK(to_float_nchw(bc.images, Device::cuda).to_vector<float>() == fc.to_vector<float>());
}

// ---------------------------------------------------------------- image folders

TEST_CASE("data: resize_image is PIL-style bilinear (averages when shrinking)") {
  Tensor row = Tensor::from_vector(std::vector<uint8_t>{0, 255}, {1, 2, 1});
  CHECK(resize_image(row, 1, 4).to_vector<int>() == std::vector<int>{0, 64, 191, 255});
  Tensor square = Tensor::from_vector(std::vector<uint8_t>{10, 20, 30, 40}, {2, 2, 1});
  CHECK(resize_image(square, 1, 1).to_vector<int>() == std::vector<int>{25});
  // Shrinking 4 -> 2 widens the triangle to 2 pixels: weights 3/7, 3/7, 1/7 once the image
  // border cuts it (0*3/7 + 80*3/7 + 160/7 = 57.1; 80/7 + 160*3/7 + 240*3/7 = 182.9).
  Tensor four = Tensor::from_vector(std::vector<uint8_t>{0, 80, 160, 240}, {1, 4, 1});
  CHECK(resize_image(four, 1, 2).to_vector<int>() == std::vector<int>{57, 183});
  CHECK(contains(error_of([&] { resize_image(four, 0, 2); }), "output size must be positive"));
}

TEST_CASE("data: image folders decode JPEG/PNG, sort classes, crop or stretch") {
  TempDir dir;
  write_image_folder(dir / "train");
  ImageFolderOptions opt;
  opt.size = 4;
  Dataset ds = read_image_folder(dir / "train", opt);
  REQUIRE(ds.images.shape() == Shape{5, 4, 4, 3});
  CHECK(ds.class_names == std::vector<std::string>{"a_dogs", "b_cars"});
  CHECK(ds.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 1, 1});
  CHECK(ds.classes == 2);
  check_solid(ds.images, 0, 10, 200, 60);
  check_solid(ds.images, 1, 90, 90, 90);  // grayscale JPEG replicated to RGB
  check_solid(ds.images, 2, 30, 60, 240, 0);  // PNG behind a .JPEG name, lossless
  check_solid(ds.images, 3, 220, 20, 30);
  check_solid(ds.images, 4, 200, 40, 10);

  // Three vertical bands red | green | blue, 8 x 24.
  TempDir bands;
  fs::create_directories(bands / "only");
  write_jpeg(bands / "only/bands.jpg", 8, 24, 3, [](int, int x, int c) { return (uint8_t)(c == x / 8 ? 255 : 0); });
  Dataset cropped = read_image_folder(bands.path, opt);  // 4 x 12, keep columns 4..7: the green band
  for (int y = 0; y < 4; ++y)
    for (int x = 1; x <= 2; ++x) {
      CHECK(at(cropped.images, 0, y, x, 1) >= 245);
      CHECK(at(cropped.images, 0, y, x, 0) <= 10);
    }
  opt.resize = ResizeMode::stretch;
  Dataset stretched = read_image_folder(bands.path, opt);  // all three bands squeezed
  CHECK(at(stretched.images, 0, 2, 0, 0) >= 200);
  CHECK(at(stretched.images, 0, 2, 3, 2) >= 200);

  opt.resize = ResizeMode::crop;
  opt.classes = {"b_cars"};
  opt.limit_per_class = 1;
  Dataset picked = read_image_folder(dir / "train", opt);
  CHECK(picked.size() == 1);
  CHECK(picked.labels.item() == 0);
  check_solid(picked.images, 0, 220, 20, 30);
  CHECK(imagenet100_classes().size() == 100);
  CHECK(imagenet100_classes().front() == "n02869837");
  CHECK(contains(error_of([] { parse_resize_mode("fit"); }), "unknown resize mode 'fit'"));
}

TEST_CASE("data: image folder conversion to HDF5 and its errors") {
  TempDir dir;
  write_image_folder(dir / "train");
  write_image_folder(dir / "val");
  ImageFolderOptions opt;
  opt.size = 5;
  std::vector<std::pair<int64_t, int64_t>> progress;
  convert_image_folder(dir / "train", dir / "val", dir / "in.h5", "tiny", opt,
                       [&](int64_t done, int64_t total) { progress.emplace_back(done, total); });
  REQUIRE_FALSE(progress.empty());
  CHECK(progress.back() == std::pair<int64_t, int64_t>{10, 10});
  Dataset direct = read_image_folder(dir / "train", opt);
  Dataset train = load_dataset(dir / "in.h5", Split::train);
  Dataset test = load_dataset(dir / "in.h5", Split::test);
  CHECK(train.name == "tiny");
  CHECK(train.classes == 2);
  CHECK(train.class_names == std::vector<std::string>{"a_dogs", "b_cars"});
  CHECK(train.images.to_vector<int>() == direct.images.to_vector<int>());
  CHECK(test.labels.to_vector<int64_t>() == direct.labels.to_vector<int64_t>());
  CHECK(test.source == dir / "val");

  convert_image_folder(dir / "train", "", dir / "flat.h5", "tiny", opt);
  CHECK(load_dataset(dir / "flat.h5", Split::train).size() == 5);
  CHECK(contains(error_of([&] { load_dataset(dir / "flat.h5", Split::test); }), "holds the train split only"));

  // A file cut in half, a text file with an image name, missing folders.
  auto bytes = read_bytes(dir / "train/b_cars/1.JPEG");
  bytes.resize(bytes.size() / 2);
  write_bytes(dir / "train/b_cars/1.JPEG", bytes);
  std::string msg = error_of([&] { read_image_folder(dir / "train", opt); });
  CHECK(contains(msg, dir / "train/b_cars/1.JPEG"));
  CHECK((contains(msg, "truncated JPEG") || contains(msg, "bad JPEG")));
  write_bytes(dir / "train/b_cars/1.JPEG", {'n', 'o', 't', ' ', 'j', 'p', 'g'});
  msg = error_of([&] { convert_image_folder(dir / "train", "", dir / "broken.h5", "x", opt); });
  CHECK(contains(msg, "not a JPEG or PNG file"));
  CHECK_FALSE(fs::exists(dir / "broken.h5"));
  CHECK_FALSE(fs::exists(dir / "broken.h5.tmp"));

  ImageFolderOptions named = opt;
  named.classes = {"a_dogs", "zebras"};
  msg = error_of([&] { read_image_folder(dir / "val", named); });
  CHECK(contains(msg, dir / "val/zebras"));
  CHECK(contains(msg, "class folder not found"));
  fs::create_directories(dir / "val/c_empty");
  CHECK(contains(error_of([&] { read_image_folder(dir / "val", opt); }), "holds no .jpeg/.jpg/.png files"));
  fs::remove(dir / "val/c_empty");
  fs::create_directories(dir / "other/a_dogs");
  write_jpeg(dir / "other/a_dogs/1.jpg", 4, 4, 3, solid(1, 2, 3));
  msg = error_of([&] { convert_image_folder(dir / "val", dir / "other", dir / "x.h5", "x", opt); });
  CHECK(contains(msg, "need the same classes"));
  CHECK(contains(error_of([&] { read_image_folder(dir / "nope", opt); }), "image folder not found"));
}

// ---------------------------------------------------------------- the real Fashion-MNIST

TEST_CASE("data: Fashion-MNIST from the Debian package has 60000/10000 images of 28x28, 10 classes") {
  const std::string root = "/usr/share/datasets/fashion-mnist";
  SKIP_UNLESS(fs::exists(root + "/train-images-idx3-ubyte.gz") && fs::exists(root + "/t10k-labels-idx1-ubyte.gz"),
              "Fashion-MNIST not installed (apt install dataset-fashion-mnist)");
  LoadOptions opt;
  opt.root = root;
  Dataset train = load_dataset("fashion-mnist", Split::train, opt);
  Dataset test = load_dataset("fashion-mnist", Split::test, opt);
  CHECK(train.images.shape() == Shape{60000, 28, 28, 1});
  CHECK(test.images.shape() == Shape{10000, 28, 28, 1});
  CHECK(train.classes == 10);
  CHECK(class_counts(train) == std::vector<int64_t>(10, 6000));
  CHECK(class_counts(test) == std::vector<int64_t>(10, 1000));
  // The known pixel mean of the training set (the normalisation constant 0.2860).
  const uint8_t* px = train.images.data<uint8_t>();
  double mean = 0;
  for (int64_t i = 0; i < train.images.numel(); ++i) mean += px[i];
  mean /= 255.0 * (double)train.images.numel();
  CHECK(mean == doctest::Approx(0.2860).epsilon(0.001));
}
