// NumPy .npy / .npz reading and writing (engine/io/npy.h) on files built byte by byte the way
// NumPy writes them: version 1.0 and 2.0 headers, both byte orders, stored and deflated npz
// entries, zip64 sizes; and the clean errors for damaged or unsupported files.
#include <doctest/doctest.h>
#include <zlib.h>

#include <cstring>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "engine/io/npy.h"
#include "tests/support/cli.h"

using namespace cpoison;
using cpoison::testing::TempDir;

namespace {

std::vector<uint8_t> npy_file(const std::string& dict, const std::vector<uint8_t>& data, int major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', (uint8_t)major, 0};
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) out.push_back((uint8_t)(header.size() >> (8 * i)));
  for (char ch : header) out.push_back((uint8_t)ch);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), (std::streamsize)bytes.size());
}

void put(std::vector<uint8_t>& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back((uint8_t)(v >> (8 * i)));
}

// A plain (no zip64) zip archive with one entry, deflated (method 8) or stored (method 0), as
// Python's zipfile writes for np.savez_compressed / np.savez of small arrays.
std::vector<uint8_t> zip_one(const std::string& name, const std::vector<uint8_t>& data, bool compress) {
  std::vector<uint8_t> packed = data;
  if (compress) {
    z_stream zs{};
    REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    packed.resize(deflateBound(&zs, data.size()));
    zs.next_in = const_cast<Bytef*>(data.data());
    zs.avail_in = (uInt)data.size();
    zs.next_out = packed.data();
    zs.avail_out = (uInt)packed.size();
    REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    packed.resize(zs.total_out);
    deflateEnd(&zs);
  }
  const uint32_t crc = (uint32_t)crc32(0, data.data(), (uInt)data.size());
  std::vector<uint8_t> z;
  put(z, 0x04034b50, 4), put(z, 20, 2), put(z, 0, 2), put(z, compress ? 8 : 0, 2), put(z, 0, 4), put(z, crc, 4);
  put(z, packed.size(), 4), put(z, data.size(), 4), put(z, name.size(), 2), put(z, 0, 2);
  z.insert(z.end(), name.begin(), name.end());
  z.insert(z.end(), packed.begin(), packed.end());
  const size_t dir_at = z.size();
  put(z, 0x02014b50, 4), put(z, 20, 2), put(z, 20, 2), put(z, 0, 2), put(z, compress ? 8 : 0, 2), put(z, 0, 4);
  put(z, crc, 4), put(z, packed.size(), 4), put(z, data.size(), 4), put(z, name.size(), 2), put(z, 0, 2), put(z, 0, 2);
  put(z, 0, 2), put(z, 0, 2), put(z, 0, 4), put(z, 0, 4);
  z.insert(z.end(), name.begin(), name.end());
  const size_t dir_size = z.size() - dir_at;
  put(z, 0x06054b50, 4), put(z, 0, 2), put(z, 0, 2), put(z, 1, 2), put(z, 1, 2), put(z, dir_size, 4), put(z, dir_at, 4);
  put(z, 0, 2);
  return z;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("npy: what write_npy writes reads back with the same dtype, shape and values") {
  TempDir dir("npy");
  Tensor a = Tensor::from_vector(std::vector<float>{1.5f, -2.0f, 0.25f, 8.0f, 0.0f, -1.0f}, {2, 3});
  io::write_npy(dir / "a.npy", a);
  io::NpyArray r = io::read_npy(dir / "a.npy");
  CHECK(r.descr == "<f4");
  CHECK(r.shape == Shape{2, 3});
  CHECK(r.to_tensor("a").to_vector<float>() == a.to_vector<float>());
  Tensor b = Tensor::from_vector(std::vector<uint8_t>{0, 7, 255}, {3});
  io::write_npy(dir / "b.npy", b);
  CHECK(io::read_npy(dir / "b.npy").to_tensor("b").to_vector<uint8_t>() == b.to_vector<uint8_t>());
  // The header is padded so that the data starts at a multiple of 64 bytes (NumPy's rule).
  std::vector<uint8_t> bytes = io::npy_bytes(b);
  CHECK((bytes.size() - 3) % 64 == 0);
}

TEST_CASE("npy: version 2.0 headers, big-endian data and float16 are read; Fortran order is refused") {
  TempDir dir("npy");
  std::vector<uint8_t> be = {0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0};  // 1.0f, -2.0f big-endian
  write_bytes(dir / "be.npy", npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", be, 2));
  io::NpyArray r = io::read_npy(dir / "be.npy");
  CHECK(r.to_tensor("be").to_vector<float>() == std::vector<float>{1.0f, -2.0f});
  CHECK(r.to_doubles("be") == std::vector<double>{1.0, -2.0});
  std::vector<uint8_t> half = {0x00, 0x3c, 0x00, 0xb8};  // 1.0, -0.5 as little-endian float16
  write_bytes(dir / "h.npy", npy_file("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", half));
  CHECK(io::read_npy(dir / "h.npy").to_doubles("h") == std::vector<double>{1.0, -0.5});
  write_bytes(dir / "f.npy", npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 1), }", be));
  CHECK(error_of([&] { io::read_npy(dir / "f.npy"); }).find("Fortran order") != std::string::npos);
}

TEST_CASE("npy: damaged files are refused naming the file and what is wrong") {
  TempDir dir("npy");
  const std::vector<uint8_t> four(4 * 4, 0);
  write_bytes(dir / "short.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", four));
  const std::string short_msg = error_of([&] { io::read_npy(dir / "short.npy"); });
  CHECK(short_msg.find("short.npy") != std::string::npos);
  CHECK(short_msg.find("needs 20 data bytes, the file holds 16 (truncated)") != std::string::npos);
  write_bytes(dir / "magic.npy", {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0});
  CHECK(error_of([&] { io::read_npy(dir / "magic.npy"); }).find("not a .npy file") != std::string::npos);
  write_bytes(dir / "obj.npy", npy_file("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", {0, 0, 0, 0, 0, 0, 0, 0}));
  CHECK(error_of([&] { io::read_npy(dir / "obj.npy"); }).find("object arrays") != std::string::npos);
  CHECK(error_of([&] { io::read_npy(dir / "missing.npy"); }).find("no such .npy file") != std::string::npos);
}

TEST_CASE("npz: stored and deflated entries, and what write_npz writes, read back; a bad CRC is refused") {
  TempDir dir("npy");
  const std::vector<uint8_t> payload = {1, 2, 3, 4, 5, 6};
  const std::vector<uint8_t> npy = npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }", payload);
  for (bool compress : {false, true}) {
    CAPTURE(compress);
    write_bytes(dir / "a.npz", zip_one("images.npy", npy, compress));
    CHECK(io::is_zip_file(dir / "a.npz"));
    auto arrays = io::read_npz(dir / "a.npz");
    REQUIRE(arrays.size() == 1);
    CHECK(arrays[0].first == "images");
    CHECK(arrays[0].second.shape == Shape{2, 3});
    CHECK(arrays[0].second.to_tensor("x").to_vector<uint8_t>() == payload);
  }
  std::vector<uint8_t> broken = zip_one("images.npy", npy, false);
  broken[30 + 10 + npy.size() - 1] ^= 0xff;  // the last data byte
  write_bytes(dir / "bad.npz", broken);
  CHECK(error_of([&] { io::read_npz(dir / "bad.npz"); }).find("CRC-32 mismatch") != std::string::npos);

  Tensor images = Tensor::from_vector(std::vector<uint8_t>{9, 8, 7, 6}, {1, 2, 2, 1});
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{3}, {1});
  io::write_npz(dir / "w.npz", {{"images", images}, {"labels", labels}, {"eps", Tensor::scalar(0.5, DType::f64)}});
  auto back = io::read_npz(dir / "w.npz");
  REQUIRE(back.size() == 3);
  CHECK(back[0].first == "images");
  CHECK(back[0].second.to_tensor("i").to_vector<uint8_t>() == images.to_vector<uint8_t>());
  CHECK(back[1].second.to_tensor("l").to_vector<int64_t>() == std::vector<int64_t>{3});
  CHECK(back[2].second.shape.empty());
  CHECK(back[2].second.to_doubles("e") == std::vector<double>{0.5});
}
