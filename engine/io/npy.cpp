#include "engine/io/npy.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "engine/error.h"
#include "engine/size.h"

namespace cpoison::io {

namespace {

std::vector<uint8_t> read_all(const std::string& path, const std::string& what) {
  CP_CHECK(std::filesystem::is_regular_file(path), path, "no such ", what, " file");
  std::ifstream in(path, std::ios::binary);
  CP_CHECK(in.good(), path, "cannot open the ", what, " file for reading");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CP_CHECK(!in.bad(), path, "reading the ", what, " file failed");
  return bytes;
}

uint64_t little(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_little(std::vector<uint8_t>& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back((uint8_t)(v >> (8 * i)));
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n"), e = s.find_last_not_of(" \t\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// The text after 'key': in the header dict, up to (not including) the next top-level comma or
// closing brace; "" when the key is absent.
std::string dict_value(const std::string& header, const std::string& key, const std::string& where) {
  size_t at = std::string::npos;
  for (const char quote : {'\'', '"'}) {
    const std::string k = std::string(1, quote) + key + std::string(1, quote);
    at = header.find(k);
    if (at != std::string::npos) {
      at += k.size();
      break;
    }
  }
  if (at == std::string::npos) return "";
  at = header.find(':', at);
  CP_CHECK(at != std::string::npos, where, "header entry '", key, "' has no ':' in ", header);
  ++at;
  int depth = 0;
  size_t end = at;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(' || c == '[') ++depth;
    else if (c == ')' || c == ']') --depth;
    else if ((c == ',' || c == '}') && depth == 0) break;
  }
  return trim(header.substr(at, end - at));
}

std::string descr_of(DType d) {
  switch (d) {
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::u8: return "|u1";
    case DType::i32: return "<i4";
    case DType::i64: return "<i8";
  }
  return "?";
}

// --- zip (PKWARE APPNOTE): end of central directory, central directory entries, local headers.
constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50, kEnd64Sig = 0x06064b50,
                   kEnd64LocatorSig = 0x07064b50;

std::vector<uint8_t> inflate_raw(const uint8_t* data, size_t size, size_t expected, const std::string& where) {
  std::vector<uint8_t> out(expected);
  z_stream zs{};
  CP_CHECK(inflateInit2(&zs, -MAX_WBITS) == Z_OK, where, "zlib inflateInit2 failed");
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = (uInt)std::min<size_t>(size, std::numeric_limits<uInt>::max());
  zs.next_out = out.data();
  zs.avail_out = (uInt)std::min<size_t>(expected, std::numeric_limits<uInt>::max());
  int rc = Z_OK;
  // Entries above 4 GiB are fed in pieces (avail_* are 32-bit).
  while (true) {
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc == Z_STREAM_END || (rc != Z_OK && rc != Z_BUF_ERROR)) break;
    const size_t in_done = (size_t)(zs.next_in - data), out_done = (size_t)(zs.next_out - out.data());
    if (zs.avail_in == 0 && in_done < size) zs.avail_in = (uInt)std::min<size_t>(size - in_done, std::numeric_limits<uInt>::max());
    else if (zs.avail_out == 0 && out_done < expected)
      zs.avail_out = (uInt)std::min<size_t>(expected - out_done, std::numeric_limits<uInt>::max());
    else break;
  }
  const size_t produced = (size_t)(zs.next_out - out.data());
  inflateEnd(&zs);
  CP_CHECK(rc == Z_STREAM_END && produced == expected, where, "the deflated data is damaged (zlib status ", rc,
           ", ", produced, " of ", expected, " bytes)");
  return out;
}

uint32_t crc_of(const std::vector<uint8_t>& bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t at = 0; at < bytes.size();) {
    const size_t n = std::min<size_t>(bytes.size() - at, 1u << 30);
    crc = crc32(crc, bytes.data() + at, (uInt)n);
    at += n;
  }
  return (uint32_t)crc;
}

}  // namespace

char NpyArray::kind() const { return descr.size() >= 2 ? descr[1] : '?'; }

int64_t NpyArray::item_size() const {
  if (descr.size() < 3) return 0;
  try {
    return std::stoll(descr.substr(2));
  } catch (...) {
    return 0;
  }
}

int64_t NpyArray::numel() const { return shape_numel(shape); }

namespace {
// Element i of a stored array as double.
template <class T>
double element(const uint8_t* p, bool swap) {
  uint8_t buf[sizeof(T)];
  std::memcpy(buf, p, sizeof(T));
  if (swap) std::reverse(buf, buf + sizeof(T));
  T v;
  std::memcpy(&v, buf, sizeof(T));
  return (double)v;
}
}  // namespace

std::vector<double> NpyArray::to_doubles(const std::string& where) const {
  const char k = kind();
  const int64_t size = item_size(), n = numel();
  const bool swap = descr[0] == '>';
  std::vector<double> out((size_t)n);
  const uint8_t* p = bytes.data();
  auto fill = [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) out[i] = element<T>(p + i * sizeof(T), swap);
  };
  if (k == 'f' && size == 4) fill(float{});
  else if (k == 'f' && size == 8) fill(double{});
  else if (k == 'u' && size == 1) fill(uint8_t{});
  else if (k == 'u' && size == 2) fill(uint16_t{});
  else if (k == 'u' && size == 4) fill(uint32_t{});
  else if (k == 'u' && size == 8) fill(uint64_t{});
  else if (k == 'i' && size == 1) fill(int8_t{});
  else if (k == 'i' && size == 2) fill(int16_t{});
  else if (k == 'i' && size == 4) fill(int32_t{});
  else if (k == 'i' && size == 8) fill(int64_t{});
  else if (k == 'b' && size == 1) fill(uint8_t{});
  else if (k == 'f' && size == 2) {
    // IEEE half (torch's float16 deltas): sign, 5-bit exponent, 10-bit fraction.
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = (uint16_t)element<uint16_t>(p + 2 * i, swap);
      const int e = (h >> 10) & 31, f = h & 1023;
      double v = e == 0 ? std::ldexp((double)f, -24) : e == 31 ? (f ? NAN : INFINITY) : std::ldexp(1024.0 + f, e - 25);
      out[i] = (h & 0x8000) ? -v : v;
    }
  } else fail(where, "dtype '", descr, "' is not a number type this reader converts (float, int, uint, bool)");
  return out;
}

Tensor NpyArray::to_tensor(const std::string& where) const {
  const char k = kind();
  const int64_t size = item_size();
  DType d;
  if (k == 'f' && size == 4) d = DType::f32;
  else if (k == 'f' && size == 8) d = DType::f64;
  else if (k == 'u' && size == 1) d = DType::u8;
  else if (k == 'i' && size == 4) d = DType::i32;
  else if (k == 'i' && size == 8) d = DType::i64;
  else fail(where, "dtype '", descr, "' is none of uint8, int32, int64, float32, float64");
  Tensor t = Tensor::empty(shape, d);
  std::memcpy(t.raw_data(), bytes.data(), bytes.size());
  if (descr[0] == '>' && size > 1) {
    uint8_t* p = static_cast<uint8_t*>(t.raw_data());
    for (size_t i = 0; i < bytes.size(); i += (size_t)size) std::reverse(p + i, p + i + size);
  }
  return t;
}

NpyArray parse_npy(const std::vector<uint8_t>& file, const std::string& where) {
  static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  CP_CHECK(file.size() >= 10 && std::memcmp(file.data(), magic, 6) == 0, where,
           "not a .npy file (expected the magic \\x93NUMPY, found ", file.size() < 6 ? "a shorter file" : "other bytes", ")");
  const int major = file[6];
  CP_CHECK(major >= 1 && major <= 3, where, ".npy version ", major, ".", (int)file[7], " is unknown (1.0, 2.0 or 3.0)");
  const size_t len_bytes = major == 1 ? 2 : 4;
  CP_CHECK(file.size() >= 8 + len_bytes, where, "the file ends inside the header length");
  const uint64_t header_len = little(file.data() + 8, (int)len_bytes);
  const size_t data_at = 8 + len_bytes + header_len;
  CP_CHECK(data_at <= file.size(), where, "the header says ", header_len, " bytes but the file ends after ", file.size());
  const std::string header(file.begin() + 8 + len_bytes, file.begin() + data_at);
  CP_CHECK(header.find('{') != std::string::npos && header.find('}') != std::string::npos, where,
           "the header is not a Python dict: ", header);

  NpyArray a;
  std::string descr = dict_value(header, "descr", where);
  CP_CHECK(descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"') && descr.back() == descr.front(), where,
           "header field 'descr' must be a simple dtype string such as '<f4', found ", descr.empty() ? "nothing" : descr,
           " (structured arrays are not read)");
  a.descr = descr.substr(1, descr.size() - 2);
  CP_CHECK(a.descr.find('O') == std::string::npos, where,
           "object arrays (dtype '", a.descr, "', Python pickles) are not read: save numbers");
  CP_CHECK(a.descr.size() >= 3 && std::string("<>|=").find(a.descr[0]) != std::string::npos, where, "dtype '", a.descr,
           "' is not understood");
  if (a.descr[0] == '=') a.descr[0] = std::endian::native == std::endian::little ? '<' : '>';
  if (a.descr[0] == '|' || a.item_size() == 1) a.descr[0] = '<';
  CP_CHECK(a.kind() != 'O', where, "object arrays (dtype 'O', Python pickles) are not read: save numbers");
  CP_CHECK(a.item_size() > 0, where, "dtype '", a.descr, "' has no item size");
  const std::string fortran = dict_value(header, "fortran_order", where);
  CP_CHECK(fortran == "False" || fortran == "True", where, "header field 'fortran_order' must be True or False, found '",
           fortran, "'");
  CP_CHECK(fortran == "False", where,
           "the array is stored in Fortran order: save it with np.save(path, np.ascontiguousarray(a))");
  std::string shape = dict_value(header, "shape", where);
  CP_CHECK(shape.size() >= 2 && shape.front() == '(' && shape.back() == ')', where,
           "header field 'shape' must be a tuple, found '", shape, "'");
  shape = shape.substr(1, shape.size() - 2);
  size_t at = 0;
  while (at < shape.size()) {
    size_t comma = shape.find(',', at);
    if (comma == std::string::npos) comma = shape.size();
    const std::string item = trim(shape.substr(at, comma - at));
    at = comma + 1;
    if (item.empty()) continue;
    CP_CHECK(item.find_first_not_of("0123456789") == std::string::npos && item.size() <= 12, where,
             "shape entry '", item, "' is not a non-negative integer (shape ", dict_value(header, "shape", where), ")");
    a.shape.push_back(std::stoll(item));
  }
  for (int64_t d : a.shape) CP_CHECK(d <= kMaxAxis, where, "dimension ", d, " of shape ", a.shape, " is too large");
  const int64_t n = a.numel();
  CP_CHECK(n <= (int64_t)(std::numeric_limits<int64_t>::max() / a.item_size()), where, "shape ", a.shape, " is too large");
  const uint64_t want = (uint64_t)n * (uint64_t)a.item_size(), have = file.size() - data_at;
  CP_CHECK(have == want, where, "shape ", a.shape, " of '", a.descr, "' needs ", want, " data bytes, the file holds ", have,
           have < want ? " (truncated)" : " (extra bytes)");
  a.bytes.assign(file.begin() + data_at, file.end());
  return a;
}

NpyArray read_npy(const std::string& path) { return parse_npy(read_all(path, ".npy"), path); }

bool is_zip_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint8_t b[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(b), 4);
  return in.gcount() == 4 && little(b, 4) == kLocalSig;
}

std::vector<std::pair<std::string, NpyArray>> read_npz(const std::string& path) {
  const std::vector<uint8_t> z = read_all(path, ".npz");
  const std::string where = path;
  CP_CHECK(z.size() >= 22, where, "not an .npz (zip) file: only ", z.size(), " bytes");
  // The end-of-central-directory record: the last 22 bytes plus a comment of up to 64 KiB.
  int64_t end = -1;
  for (int64_t at = (int64_t)z.size() - 22; at >= 0 && at >= (int64_t)z.size() - 22 - 65535; --at)
    if (little(z.data() + at, 4) == kEndSig) {
      end = at;
      break;
    }
  CP_CHECK(end >= 0, where, "not an .npz (zip) file: no end-of-central-directory record");
  uint64_t entries = little(z.data() + end + 10, 2), dir_size = little(z.data() + end + 12, 4),
           dir_at = little(z.data() + end + 16, 4);
  if ((entries == 0xFFFF || dir_at == 0xFFFFFFFF || dir_size == 0xFFFFFFFF) && end >= 20 &&
      little(z.data() + end - 20, 4) == kEnd64LocatorSig) {
    const uint64_t end64 = little(z.data() + end - 20 + 8, 8);
    CP_CHECK(end64 + 56 <= z.size() && little(z.data() + end64, 4) == kEnd64Sig, where, "damaged zip64 directory record");
    entries = little(z.data() + end64 + 32, 8);
    dir_size = little(z.data() + end64 + 40, 8);
    dir_at = little(z.data() + end64 + 48, 8);
  }
  CP_CHECK(dir_at + dir_size <= z.size(), where, "the zip directory lies outside the file (truncated?)");
  std::vector<std::pair<std::string, NpyArray>> out;
  uint64_t at = dir_at;
  for (uint64_t e = 0; e < entries; ++e) {
    CP_CHECK(at + 46 <= z.size() && little(z.data() + at, 4) == kCentralSig, where, "damaged zip directory entry ", e);
    const uint8_t* c = z.data() + at;
    const uint64_t flags = little(c + 8, 2), method = little(c + 10, 2), crc = little(c + 16, 4);
    uint64_t packed = little(c + 20, 4), size = little(c + 24, 4);
    const uint64_t name_len = little(c + 28, 2), extra_len = little(c + 30, 2), comment_len = little(c + 32, 2);
    uint64_t local_at = little(c + 42, 4);
    CP_CHECK(at + 46 + name_len + extra_len + comment_len <= z.size(), where, "damaged zip directory entry ", e);
    const std::string name(reinterpret_cast<const char*>(c + 46), name_len);
    const std::string entry = where + " entry " + name;
    // zip64: the sizes and offset that overflow 32 bits sit in extra field 0x0001, in this order.
    for (uint64_t x = 0; x + 4 <= extra_len;) {
      const uint8_t* f = c + 46 + name_len + x;
      const uint64_t id = little(f, 2), len = little(f + 2, 2);
      if (id == 0x0001) {
        uint64_t k = 4;
        if (size == 0xFFFFFFFF && k + 8 <= 4 + len) size = little(f + k, 8), k += 8;
        if (packed == 0xFFFFFFFF && k + 8 <= 4 + len) packed = little(f + k, 8), k += 8;
        if (local_at == 0xFFFFFFFF && k + 8 <= 4 + len) local_at = little(f + k, 8), k += 8;
      }
      x += 4 + len;
    }
    at += 46 + name_len + extra_len + comment_len;
    CP_CHECK((flags & 1) == 0, entry, "is encrypted");
    CP_CHECK(method == 0 || method == 8, entry, "uses zip compression method ", method,
             " (read: 0 stored, as np.savez writes, and 8 deflate, as np.savez_compressed writes)");
    CP_CHECK(local_at + 30 <= z.size() && little(z.data() + local_at, 4) == kLocalSig, entry, "damaged local header");
    const uint64_t data_at = local_at + 30 + little(z.data() + local_at + 26, 2) + little(z.data() + local_at + 28, 2);
    CP_CHECK(data_at + packed <= z.size(), entry, "its ", packed, " bytes run past the end of the file (truncated?)");
    std::vector<uint8_t> bytes;
    if (method == 0) {
      CP_CHECK(packed == size, entry, "stored entry with packed size ", packed, " != size ", size);
      bytes.assign(z.begin() + data_at, z.begin() + data_at + size);
    } else {
      bytes = inflate_raw(z.data() + data_at, packed, size, entry);
    }
    CP_CHECK(crc_of(bytes) == crc, entry, "CRC-32 mismatch: the archive is damaged");
    if (!name.empty() && name.back() == '/') continue;  // a folder entry
    CP_CHECK(name.size() > 4 && name.substr(name.size() - 4) == ".npy", entry, "is not a .npy array");
    out.emplace_back(name.substr(0, name.size() - 4), parse_npy(bytes, entry));
  }
  return out;
}

std::vector<uint8_t> npy_bytes(const Tensor& t_in) {
  Tensor t = t_in.to(Device::cpu).contiguous();
  std::string header = "{'descr': '" + descr_of(t.dtype()) + "', 'fortran_order': False, 'shape': (";
  for (int64_t d : t.shape()) header += std::to_string(d) + ", ";
  if (t.dim() == 1) header.resize(header.size() - 1);  // "(5,)"
  else if (t.dim() > 1) header.resize(header.size() - 2);
  header += "), }";
  // Pad with spaces so that the data starts at a multiple of 64 bytes, ending with '\n'.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  CP_CHECK(header.size() <= 65535, "npy", "header of ", header.size(), " bytes does not fit version 1.0");
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  put_little(out, header.size(), 2);
  for (char ch : header) out.push_back((uint8_t)ch);  // (insert() of a string range trips GCC 12's -Wstringop-overflow)
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  out.insert(out.end(), p, p + (size_t)t.numel() * dtype_size(t.dtype()));
  return out;
}

namespace {
void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    CP_CHECK(out.good(), path, "cannot open ", tmp, " for writing");
    out.write(reinterpret_cast<const char*>(bytes.data()), (std::streamsize)bytes.size());
    out.close();
    CP_CHECK(out.good(), path, "writing ", tmp, " failed (disk full?)");
  }
  std::filesystem::rename(tmp, path);
}
}  // namespace

void write_npy(const std::string& path, const Tensor& t) { write_file(path, npy_bytes(t)); }

void write_npz(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& arrays) {
  // Stored entries with zip64 sizes in both headers, so that arrays above 4 GiB are fine.
  std::vector<uint8_t> z, dir;
  for (const auto& [name_in, t] : arrays) {
    const std::string name = name_in + ".npy";
    const std::vector<uint8_t> data = npy_bytes(t);
    const uint64_t local_at = z.size(), size = data.size();
    const uint32_t crc = crc_of(data);
    auto header = [&](std::vector<uint8_t>& out, bool central) {
      put_little(out, central ? kCentralSig : kLocalSig, 4);
      if (central) put_little(out, 45, 2);  // made by: version 4.5
      put_little(out, 45, 2);               // needed: 4.5 (zip64)
      put_little(out, 0, 2);                // flags
      put_little(out, 0, 2);                // stored
      put_little(out, 0, 2);                // time
      put_little(out, (1 << 5) | 1, 2);     // date 1980-01-01
      put_little(out, crc, 4);
      put_little(out, 0xFFFFFFFF, 4);  // sizes in the zip64 field
      put_little(out, 0xFFFFFFFF, 4);
      put_little(out, name.size(), 2);
      put_little(out, central ? 28 : 20, 2);  // extra length
      if (central) {
        put_little(out, 0, 2);  // comment
        put_little(out, 0, 2);  // disk
        put_little(out, 0, 2);  // internal attributes
        put_little(out, 0, 4);  // external attributes
        put_little(out, 0xFFFFFFFF, 4);
      }
      out.insert(out.end(), name.begin(), name.end());
      put_little(out, 0x0001, 2);
      put_little(out, central ? 24 : 16, 2);
      put_little(out, size, 8);
      put_little(out, size, 8);
      if (central) put_little(out, local_at, 8);
    };
    header(z, false);
    z.insert(z.end(), data.begin(), data.end());
    header(dir, true);
  }
  const uint64_t dir_at = z.size(), dir_size = dir.size(), end64_at = dir_at + dir_size;
  z.insert(z.end(), dir.begin(), dir.end());
  put_little(z, kEnd64Sig, 4);
  put_little(z, 44, 8);
  put_little(z, 45, 2);
  put_little(z, 45, 2);
  put_little(z, 0, 4);
  put_little(z, 0, 4);
  put_little(z, arrays.size(), 8);
  put_little(z, arrays.size(), 8);
  put_little(z, dir_size, 8);
  put_little(z, dir_at, 8);
  put_little(z, kEnd64LocatorSig, 4);
  put_little(z, 0, 4);
  put_little(z, end64_at, 8);
  put_little(z, 1, 4);
  put_little(z, kEndSig, 4);
  put_little(z, 0, 2);
  put_little(z, 0, 2);
  put_little(z, 0xFFFF, 2);
  put_little(z, 0xFFFF, 2);
  put_little(z, 0xFFFFFFFF, 4);
  put_little(z, 0xFFFFFFFF, 4);
  put_little(z, 0, 2);
  write_file(path, z);
}

}  // namespace cpoison::io
