// HDF5 round trips (every dtype, scalars, groups, attributes, row ranges), atomic writes, error
// messages, h5py compatibility, checkpoints of a module with optimiser state, and PNG output.
// Images are NCHW for tile_images and [H, W, C] for write_png.
#include <doctest/doctest.h>
#include <hdf5.h>
#include <png.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <filesystem>
#include <fstream>

#include "engine/io/checkpoint.h"
#include "engine/io/hdf5.h"
#include "engine/io/png.h"
#include "engine/nn/layers.h"
#include "engine/optim/sgd.h"
#include "tests/support/skip.h"

using namespace cpoison;
using namespace cpoison::io;
namespace fs = std::filesystem;

namespace {
// A fresh directory per test case, removed afterwards.
struct TempDir {
  fs::path dir;
  TempDir() {
    static int counter = 0;
    dir = fs::temp_directory_path() / ("cpoison-io-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& name) const { return (dir / name).string(); }
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
}  // namespace

TEST_CASE("HDF5 round trip of every dtype, scalars, groups and attributes") {
  TempDir tmp;
  std::string path = tmp / "all.h5";
  Tensor f32 = Tensor::from_vector(std::vector<float>{1.5f, -2.25f, 3, 4, 5, 6}, {2, 3});
  Tensor f64 = Tensor::from_vector(std::vector<double>{1e-300, -7.125, 3.0}, {3});
  Tensor u8 = Tensor::from_vector(std::vector<uint8_t>{0, 7, 255, 128, 1, 2, 3, 4}, {2, 2, 2, 1});
  Tensor i32 = Tensor::from_vector(std::vector<int64_t>{-2147483647 - 1, 0, 2147483647}, {3}, DType::i32);
  Tensor i64 = Tensor::from_vector(std::vector<int64_t>{-(1LL << 62), 42, 1LL << 40}, {3});
  Tensor scalar = Tensor::scalar(17, DType::i64);
  Tensor empty = Tensor::zeros({0, 3});
  {
    H5Writer w(path);
    w.write("f32", f32, {{"unit", std::string("pixels ∈ [0,1]")}, {"eps", 8.0 / 255}, {"count", int64_t(-3)}});
    w.write("f64", f64);
    w.write("/images", u8);
    w.write("i32", i32);
    w.write("i64", i64);
    w.write("layer1.0.bn1.num_batches_tracked", scalar);
    w.write("optim/layer1.0.conv1.weight/momentum_buffer", f32);
    w.write("empty", empty);
    w.set_file_attr("name", std::string("cifar10"));
    w.set_file_attr("classes", int64_t(10));
    w.set_file_attr("classes", int64_t(11));  // overwriting an attribute replaces it
    w.commit();
  }
  H5Reader r(path);
  CHECK(r.path() == path);
  CHECK(r.datasets() == std::vector<std::string>{"empty", "f32", "f64", "i32", "i64", "images", "layer1.0.bn1.num_batches_tracked",
                                                 "optim/layer1.0.conv1.weight/momentum_buffer"});
  CHECK(r.has("f32"));
  CHECK(r.has("/f32"));
  CHECK(r.has("optim/layer1.0.conv1.weight/momentum_buffer"));
  CHECK_FALSE(r.has("optim"));  // a group, not a dataset
  CHECK_FALSE(r.has("optim/nothing/here"));
  CHECK_FALSE(r.has("layer1"));  // dots stay inside names, they make no groups

  CHECK(r.dtype("f32") == DType::f32);
  CHECK(r.dtype("f64") == DType::f64);
  CHECK(r.dtype("images") == DType::u8);
  CHECK(r.dtype("i32") == DType::i32);
  CHECK(r.dtype("i64") == DType::i64);
  CHECK(r.shape("images") == Shape{2, 2, 2, 1});
  CHECK(r.shape("layer1.0.bn1.num_batches_tracked").empty());

  CHECK(r.read("f32").to_vector<float>() == f32.to_vector<float>());
  CHECK(r.read("f32").shape() == Shape{2, 3});
  CHECK(r.read("f64").to_vector<double>() == f64.to_vector<double>());
  CHECK(r.read("images").to_vector<uint8_t>() == u8.to_vector<uint8_t>());
  CHECK(r.read("i32").to_vector<int64_t>() == i32.to_vector<int64_t>());
  CHECK(r.read("i32").dtype() == DType::i32);
  CHECK(r.read("i64").to_vector<int64_t>() == i64.to_vector<int64_t>());
  Tensor s = r.read("layer1.0.bn1.num_batches_tracked");
  CHECK(s.dim() == 0);
  CHECK(s.dtype() == DType::i64);
  CHECK(s.item() == 17);
  CHECK(r.read("empty").shape() == Shape{0, 3});
  CHECK(r.read("optim/layer1.0.conv1.weight/momentum_buffer").to_vector<float>() == f32.to_vector<float>());

  Attrs a = r.attrs("f32");
  CHECK(a.size() == 3);
  CHECK(attr_string(a, "unit", "test") == "pixels ∈ [0,1]");
  CHECK(attr_double(a, "eps", "test") == 8.0 / 255);
  CHECK(attr_int(a, "count", "test") == -3);
  CHECK(attr_double(a, "count", "test") == -3.0);  // integers read as floats where a float is wanted
  Attrs fa = r.file_attrs();
  CHECK(attr_string(fa, "name", "test") == "cifar10");
  CHECK(attr_int(fa, "classes", "test") == 11);
  CHECK(r.attrs("/").size() == 2);
  CHECK(r.attrs("i64").empty());
  CHECK(r.attrs("optim").empty());  // groups have attributes too
}

TEST_CASE("HDF5 row ranges: create, write_rows and read_rows") {
  TempDir tmp;
  std::string path = tmp / "rows.h5";
  {
    H5Writer w(path);
    w.create("delta", {5, 2, 3}, DType::f32, {{"kind", std::string("sample")}});
    std::vector<float> first(2 * 2 * 3), last(3 * 2 * 3);
    for (size_t i = 0; i < first.size(); ++i) first[i] = (float)i;
    for (size_t i = 0; i < last.size(); ++i) last[i] = 100.0f + (float)i;
    w.write_rows("delta", 2, Tensor::from_vector(last, {3, 2, 3}));  // out of order is fine
    w.write_rows("delta", 0, Tensor::from_vector(first, {2, 2, 3}));
    w.create("labels", {4}, DType::i64);
    w.write_rows("labels", 1, Tensor::from_vector(std::vector<int64_t>{7, 8}, {2}));
    w.create("zero", {2}, DType::u8);
    w.commit();
  }
  H5Reader r(path);
  Tensor mid = r.read_rows("delta", 1, 3);
  CHECK(mid.shape() == Shape{2, 2, 3});
  std::vector<float> v = mid.to_vector<float>();
  CHECK(v[0] == 6.0f);    // row 1 = first[6..11]
  CHECK(v[6] == 100.0f);  // row 2 = last[0..5]
  CHECK(r.read_rows("delta", 4, 4).shape() == Shape{0, 2, 3});
  CHECK(r.read("delta").to_vector<float>()[29] == 117.0f);
  CHECK(attr_string(r.attrs("delta"), "kind", "test") == "sample");
  CHECK(r.read("labels").to_vector<int64_t>() == std::vector<int64_t>{0, 7, 8, 0});  // unwritten rows read as 0
  // A dataset that was created but never written is refused: its zeros are not data (#16).
  CHECK(contains(error_of([&] { r.read("zero"); }), "'zero': its data is not stored at all"));

  CHECK(contains(error_of([&] { r.read_rows("delta", 3, 6); }), "'delta' [5, 2, 3]: rows [3, 6) out of range"));
  CHECK(contains(error_of([&] { r.read_rows("delta", -1, 2); }), "out of range"));
}

TEST_CASE("HDF5 writes are atomic: .tmp until commit, removed without commit") {
  TempDir tmp;
  std::string path = tmp / "atomic.h5";
  {
    H5Writer w(path);
    w.write("x", Tensor::ones({2}));
    CHECK(fs::exists(path + ".tmp"));
    CHECK_FALSE(fs::exists(path));
    w.commit();
    CHECK(fs::exists(path));
    CHECK_FALSE(fs::exists(path + ".tmp"));
    CHECK(contains(error_of([&] { w.write("y", Tensor::ones({2})); }), "already committed"));
    CHECK(contains(error_of([&] { w.commit(); }), "already committed"));
  }
  {
    // A writer that dies before commit leaves the good file alone and cleans up its .tmp.
    H5Writer w(path);
    w.write("x", Tensor::zeros({3}));
    CHECK(fs::exists(path + ".tmp"));
  }
  CHECK_FALSE(fs::exists(path + ".tmp"));
  H5Reader r(path);
  CHECK(r.read("x").to_vector<float>() == std::vector<float>{1, 1});
  {
    // An exception while writing unwinds the writer the same way.
    auto attempt = [&] {
      H5Writer w(path);
      w.write("x", Tensor::zeros({3}));
      w.write("x", Tensor::zeros({3}));  // duplicate: throws before commit
      w.commit();
    };
    CHECK(contains(error_of(attempt), "dataset 'x' already exists"));
  }
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK(H5Reader(path).shape("x") == Shape{2});
}

TEST_CASE("HDF5 errors name the file and the dataset") {
  TempDir tmp;
  std::string missing = tmp / "missing.h5";
  CHECK(contains(error_of([&] { H5Reader r(missing); }), "'" + missing + "': no such file"));
  std::string text = tmp / "text.h5";
  std::ofstream(text) << "not hdf5 at all\n";
  CHECK(contains(error_of([&] { H5Reader r(text); }), "'" + text + "': not an HDF5 file"));
  CHECK(contains(error_of([&] { H5Reader r(tmp.dir.string()); }), "not a regular file"));
  CHECK(contains(error_of([&] { H5Writer w(tmp / "no/such/dir/x.h5"); }), "does not exist"));

  std::string path = tmp / "e.h5";
  {
    H5Writer w(path);
    w.write("labels", Tensor::from_vector(std::vector<int64_t>{1, 2}, {2}));
    w.write("scalar", Tensor::scalar(1.0));
    w.create("rows", {3, 2}, DType::f32);
    CHECK(contains(error_of([&] { w.write_rows("rows", 0, Tensor::zeros({1, 2}, DType::f64)); }),
                   "'rows': rows are f64[1, 2] cpu but the dataset holds a different dtype"));
    CHECK(contains(error_of([&] { w.write_rows("rows", 0, Tensor::zeros({1, 3})); }), "must have shape [n, [2]...]"));
    CHECK(contains(error_of([&] { w.write_rows("rows", 2, Tensor::zeros({2, 2})); }), "rows [2, 4) out of range"));
    CHECK(contains(error_of([&] { w.write_rows("nothing", 0, Tensor::zeros({2, 2})); }), "no dataset 'nothing' (create() it first)"));
    CHECK(contains(error_of([&] { w.write("", Tensor::zeros({1})); }), "invalid dataset name ''"));
    CHECK(contains(error_of([&] { w.write("a//b", Tensor::zeros({1})); }), "invalid dataset name 'a//b'"));
    CHECK(contains(error_of([&] { w.create("neg", {-1}, DType::f32); }), "negative size"));
    // A failure inside HDF5 itself: "labels" is a dataset, so it cannot hold a child link.
    std::string h5_msg = error_of([&] { w.write("labels/child", Tensor::zeros({1})); });
    INFO(h5_msg);
    CHECK(contains(h5_msg, "'" + path + "' object 'labels/child': HDF5 call H5Dcreate2"));
    CHECK(contains(h5_msg, "hdf5.cpp:"));
    w.commit();
  }
  H5Reader r(path);
  std::string msg = error_of([&] { r.read("images"); });
  CHECK(contains(msg, "'" + path + "': no dataset 'images'"));
  CHECK(contains(error_of([&] { r.shape("a/b/c"); }), "no dataset 'a/b/c'"));
  CHECK_FALSE(r.has("labels/child"));
  CHECK(contains(error_of([&] { r.read("labels/child"); }), "no dataset 'labels/child'"));
  CHECK(contains(error_of([&] { r.read("labels", DType::i32); }), "'" + path + "' dataset 'labels' holds i64, expected i32"));
  CHECK(r.read("labels", DType::i64).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
  CHECK(contains(error_of([&] { r.read_rows("scalar", 0, 1); }), "'scalar' is a scalar (no rows)"));
  CHECK(contains(error_of([&] { r.attrs("nothing"); }), "no object 'nothing'"));

  Attrs a{{"name", std::string("x")}, {"n", int64_t(3)}};
  CHECK(contains(error_of([&] { attr_int(a, "name", "poison file 'p.h5'"); }), "poison file 'p.h5': attribute 'name' is string, expected integer"));
  CHECK(contains(error_of([&] { attr_string(a, "kind", "poison file 'p.h5'"); }), "missing string attribute 'kind'"));
  CHECK(contains(error_of([&] { attr_double(a, "name", "w"); }), "expected float"));
}

TEST_CASE("HDF5 files from other writers: unsupported types and fixed-length strings") {
  // Written with the C API the way h5py or another tool might: int16 data, a bool-like enum,
  // a fixed-length UTF-8 string attribute, and an array attribute we cannot represent.
  TempDir tmp;
  std::string path = tmp / "foreign.h5";
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  REQUIRE(f >= 0);
  hsize_t dims[1] = {2};
  hid_t space = H5Screate_simple(1, dims, nullptr);
  hid_t ds = H5Dcreate2(f, "shorts", H5T_STD_I16LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  int16_t values[2] = {1, 2};
  H5Dwrite(ds, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
  hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, 8);
  H5Tset_cset(str, H5T_CSET_UTF8);
  H5Tset_strpad(str, H5T_STR_NULLPAD);
  hid_t scalar = H5Screate(H5S_SCALAR);
  hid_t attr = H5Acreate2(ds, "source", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
  char text[8] = {'m', 'n', 'i', 's', 't', 0, 0, 0};
  H5Awrite(attr, str, text);
  hid_t arr = H5Acreate2(ds, "pair", H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT);
  int64_t pair[2] = {3, 4};
  H5Awrite(arr, H5T_NATIVE_INT64, pair);
  for (hid_t id : {attr, arr}) H5Aclose(id);
  H5Dclose(ds);
  H5Tclose(str);
  H5Sclose(scalar);
  H5Sclose(space);
  H5Fclose(f);

  H5Reader r(path);
  CHECK(contains(error_of([&] { r.read("shorts"); }), "'" + path + "' dataset 'shorts': unsupported element type (signed integer of 2 bytes)"));
  Attrs a = r.attrs("shorts");
  CHECK(a.size() == 1);  // the array attribute is skipped
  CHECK(attr_string(a, "source", "test") == "mnist");
}

TEST_CASE("h5py reads what H5Writer wrote with the same shapes, dtypes, values and attributes") {
  // Debian's python3-h5py lives beside /usr/bin/python3; a PATH python3 may lack it.
  std::string python;
  for (std::string candidate : {"python3", "/usr/bin/python3"})
    if (std::system((candidate + " -c 'import h5py' >/dev/null 2>&1").c_str()) == 0) {
      python = candidate;
      break;
    }
  SKIP_UNLESS(!python.empty(), "python3 with h5py not available");
  TempDir tmp;
  std::string path = tmp / "py.h5";
  {
    H5Writer w(path);
    w.write("images", Tensor::from_vector(std::vector<uint8_t>{1, 2, 3, 4, 5, 6}, {1, 2, 3, 1}));
    w.write("labels", Tensor::from_vector(std::vector<int64_t>{9}, {1}));
    w.write("delta", Tensor::from_vector(std::vector<float>{0.5f, -1}, {2}), {{"eps", 0.03125}, {"kind", std::string("class")}});
    w.write("g/x.y", Tensor::from_vector(std::vector<double>{2.5}, {1}));
    w.write("i", Tensor::from_vector(std::vector<int64_t>{-5, 6}, {2}, DType::i32));
    w.write("bn.num_batches_tracked", Tensor::scalar(3, DType::i64));
    w.set_file_attr("name", std::string("cifar10"));
    w.set_file_attr("rounds", int64_t(160));
    w.commit();
  }
  std::string script = tmp / "check.py";
  std::ofstream(script) << R"PY(
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
assert f["images"].dtype == np.uint8 and f["images"].shape == (1, 2, 3, 1), f["images"]
assert f["images"][()].ravel().tolist() == [1, 2, 3, 4, 5, 6]
assert f["labels"].dtype == np.int64 and f["labels"][()].tolist() == [9]
assert f["delta"].dtype == np.float32 and f["delta"][()].tolist() == [0.5, -1.0]
assert f["delta"].compression == "gzip"
assert f["g/x.y"].dtype == np.float64 and f["g/x.y"][()].tolist() == [2.5]
assert f["i"].dtype == np.int32 and f["i"][()].tolist() == [-5, 6]
s = f["bn.num_batches_tracked"]
assert s.shape == () and s.dtype == np.int64 and s[()] == 3
assert f["delta"].attrs["eps"] == 0.03125
kind = f["delta"].attrs["kind"]
assert isinstance(kind, str) and kind == "class", repr(kind)
assert isinstance(f.attrs["name"], str) and f.attrs["name"] == "cifar10"
assert f.attrs["rounds"] == 160 and f.attrs["rounds"].dtype == np.int64
print("h5py-ok")
)PY";
  std::string out = tmp / "out.txt";
  int rc = std::system((python + " " + script + " " + path + " > " + out + " 2>&1").c_str());
  std::ifstream in(out);
  std::string report((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO(report);
  CHECK(rc == 0);
  CHECK(contains(report, "h5py-ok"));

  // And the other way: a file h5py wrote (str attributes, int64 and float arrays) reads back.
  std::string from_py = tmp / "from_py.h5";
  std::string write_script = tmp / "write.py";
  std::ofstream(write_script) << R"PY(
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    d = f.create_dataset("conv1.weight", data=np.arange(6, dtype=np.float32).reshape(2, 3), compression="gzip")
    d.attrs["note"] = "from python"
    f.create_dataset("idx", data=np.array([3, 1], dtype=np.int64))
    f.attrs["epoch"] = 7
    f.attrs["lr"] = 0.25
)PY";
  rc = std::system((python + " " + write_script + " " + from_py + " > " + out + " 2>&1").c_str());
  REQUIRE(rc == 0);
  H5Reader r(from_py);
  CHECK(r.read("conv1.weight").to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(r.shape("conv1.weight") == Shape{2, 3});
  CHECK(r.read("idx").dtype() == DType::i64);
  CHECK(attr_string(r.attrs("conv1.weight"), "note", "t") == "from python");
  CHECK(attr_int(r.file_attrs(), "epoch", "t") == 7);
  CHECK(attr_double(r.file_attrs(), "lr", "t") == 0.25);
}

TEST_CASE("checkpoint round trip of a small module with optimiser state") {
  TempDir tmp;
  std::string path = tmp / "ck.h5";
  nn::manual_seed(9);
  auto net = nn::mlp({3, 4, 2}, true);
  optim::SGD opt(*net, {.lr = 0.1, .momentum = 0.9});
  for (auto& [name, p] : net->named_parameters()) p.set_grad(Tensor::ones(p.shape()));
  opt.step();
  auto* bn = dynamic_cast<nn::BatchNorm*>(net->children()[1].second.get());
  REQUIRE(bn);
  bn->running_mean.fill_(0.25);
  bn->num_batches_tracked.fill_(5);

  Checkpoint ck;
  add_module(ck, *net, "encoder");
  add_optimizer(ck, opt);
  ck.attrs["epoch"] = int64_t(3);
  ck.attrs["algorithm"] = std::string("simclr");
  CHECK(ck.tensors.count("encoder.0.weight"));
  CHECK(ck.tensors.count("encoder.1.num_batches_tracked"));
  CHECK(ck.tensors.count("optim/0.weight/momentum_buffer"));
  CHECK(contains(error_of([&] { add_module(ck, *net, "encoder"); }), "already has an entry 'encoder.0.bias'"));
  save_checkpoint(path, ck);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  // The snapshot does not follow later changes of the module.
  net->children()[0].second->named_parameters()[0].second.fill_(100);

  Checkpoint back = load_checkpoint(path);
  CHECK(back.tensors.size() == ck.tensors.size());
  CHECK(attr_int(back.attrs, "epoch", "ck") == 3);
  CHECK(attr_string(back.attrs, "algorithm", "ck") == "simclr");
  CHECK(back.tensors.at("encoder.1.num_batches_tracked").dtype() == DType::i64);
  CHECK(back.tensors.at("encoder.1.num_batches_tracked").dim() == 0);

  nn::manual_seed(123);  // different initial weights
  auto other = nn::mlp({3, 4, 2}, true);
  optim::SGD other_opt(*other, {.lr = 0.1, .momentum = 0.9});
  load_module(back, *other, "encoder");
  load_optimizer(back, other_opt);
  for (auto& [name, t] : other->state_dict()) {
    INFO(name);
    CHECK(t.to_vector<double>() == ck.tensors.at("encoder." + name).to_vector<double>());
  }
  auto* other_bn = dynamic_cast<nn::BatchNorm*>(other->children()[1].second.get());
  CHECK(other_bn->num_batches_tracked.item() == 5);
  for (auto& [name, p] : net->named_parameters()) {
    INFO(name);
    CHECK(other_opt.momentum_buffer(name).to_vector<float>() == opt.momentum_buffer(name).to_vector<float>());
  }

  // Without a prefix, every module entry (not the optimiser state) belongs to the module.
  Checkpoint flat;
  add_module(flat, *other);
  add_optimizer(flat, other_opt);
  load_module(flat, *net);
  auto small = nn::mlp({3, 2});
  std::string msg = error_of([&] { load_module(back, *small, "encoder"); });
  CHECK(contains(msg, "load_module: prefix 'encoder'"));
  INFO(msg);
  CHECK(contains(msg, "entry '0.bias' has shape [4] but the module expects [2]"));
  auto no_bn = nn::mlp({3, 4, 2});  // "2.weight" here is "3.weight" in the checkpoint
  CHECK(contains(error_of([&] { load_module(back, *no_bn, "encoder"); }), "missing entries: '2.bias', '2.weight'"));
  nn::Sequential first_layer{std::make_shared<nn::Linear>(3, 4)};
  CHECK(contains(error_of([&] { load_module(back, first_layer, "encoder"); }), "unexpected entries: '1.bias'"));
  load_module(back, first_layer, "encoder", false);  // non-strict takes what matches
  CHECK(first_layer.state_dict().at("0.bias").to_vector<float>() == ck.tensors.at("encoder.0.bias").to_vector<float>());
  CHECK(contains(error_of([&] { load_checkpoint(tmp / "none.h5"); }), "no such file"));
}

TEST_CASE("tile_images lays tiles out row-major with padding") {
  // N=3 images of 1 channel, 2x2, values 1, 2, 3; 2 columns, pad 1 of value 0.
  std::vector<float> v;
  for (float k : {1.0f, 2.0f, 3.0f})
    for (int i = 0; i < 4; ++i) v.push_back(k);
  Tensor grid = tile_images(Tensor::from_vector(v, {3, 1, 2, 2}), 2, 1, 0.0);
  CHECK(grid.shape() == Shape{7, 7, 1});  // 2 rows * 3 + 1, 2 cols * 3 + 1
  std::vector<float> g = grid.to_vector<float>();
  auto at = [&](int y, int x) { return g[y * 7 + x]; };
  CHECK(at(0, 0) == 0);
  CHECK(at(1, 1) == 1);
  CHECK(at(2, 2) == 1);
  CHECK(at(1, 3) == 0);  // the gap between tiles
  CHECK(at(1, 4) == 2);
  CHECK(at(2, 5) == 2);
  CHECK(at(4, 1) == 3);  // tile 2 (second row, first column) starts at row 4, column 1
  CHECK(at(5, 2) == 3);
  CHECK(at(4, 4) == 0);  // the missing fourth tile is padding
  CHECK(at(5, 5) == 0);
  CHECK(tile_images(Tensor::zeros({2, 3, 4, 5}), 8, 0).shape() == Shape{4, 10, 3});
  CHECK_THROWS_AS(tile_images(Tensor::zeros({2, 3, 4}), 2), Error);
  CHECK_THROWS_AS(tile_images(Tensor::zeros({2, 1, 2, 2}, DType::u8), 2), Error);
  CHECK_THROWS_AS(tile_images(Tensor::zeros({0, 1, 2, 2}), 2), Error);
  CHECK_THROWS_AS(tile_images(Tensor::zeros({1, 1, 2, 2}), 0), Error);
}

TEST_CASE("write_png writes 8-bit pixels that libpng reads back") {
  TempDir tmp;
  std::string path = tmp / "grid.png";
  // [H=2, W=3, C=3] floats; out-of-range values clamp, 0.5 rounds to 128.
  std::vector<float> v{0, 0.5f, 1, -1, 2, 0.2f, 1, 1, 1, 0, 0, 0, 0.25f, 0.75f, 0.1f, 0.9f, 0.3f, 0.6f};
  write_png(path, Tensor::from_vector(v, {2, 3, 3}));
  CHECK_FALSE(fs::exists(path + ".tmp"));

  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  REQUIRE(png_image_begin_read_from_file(&img, path.c_str()));
  CHECK(img.width == 3);
  CHECK(img.height == 2);
  CHECK(img.format == PNG_FORMAT_RGB);
  std::vector<uint8_t> px(PNG_IMAGE_SIZE(img));
  REQUIRE(png_image_finish_read(&img, nullptr, px.data(), 0, nullptr));
  CHECK(px == std::vector<uint8_t>{0, 128, 255, 0, 255, 51, 255, 255, 255, 0, 0, 0, 64, 191, 26, 229, 77, 153});

  std::string gray = tmp / "gray.png";
  write_png(gray, Tensor::from_vector(std::vector<uint8_t>{0, 9, 200, 255}, {2, 2, 1}));
  png_image gimg{};
  gimg.version = PNG_IMAGE_VERSION;
  REQUIRE(png_image_begin_read_from_file(&gimg, gray.c_str()));
  CHECK(gimg.format == PNG_FORMAT_GRAY);
  std::vector<uint8_t> gpx(PNG_IMAGE_SIZE(gimg));
  REQUIRE(png_image_finish_read(&gimg, nullptr, gpx.data(), 0, nullptr));
  CHECK(gpx == std::vector<uint8_t>{0, 9, 200, 255});

  // A grid of noise images end to end.
  write_png(tmp / "tiles.png", tile_images(Tensor::full({4, 3, 2, 2}, 0.5), 2));
  CHECK(fs::file_size(tmp / "tiles.png") > 0);

  CHECK(contains(error_of([&] { write_png(tmp / "x.png", Tensor::zeros({2, 2, 2})); }), "must have 1, 3 or 4 channels"));
  CHECK(contains(error_of([&] { write_png(tmp / "x.png", Tensor::zeros({2, 2})); }), "image must be [H, W, C]"));
  CHECK(contains(error_of([&] { write_png(tmp / "x.png", Tensor::zeros({2, 2, 1}, DType::i64)); }), "must be u8 or float"));
  CHECK(contains(error_of([&] { write_png(tmp / "none/x.png", Tensor::zeros({2, 2, 1})); }), "does not exist"));
}
