// HDF5 through its C API. Every call goes through CP_H5_CHECK, which turns a negative return into
// a cpoison::Error naming the file, the object inside it, the failed call, HDF5's own message
// and the source line. HDF5's automatic error printing is switched off once: we report instead.
#include "engine/io/hdf5.h"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <system_error>

#include "engine/autograd.h"
#include "engine/size.h"

namespace cpoison::io {

namespace {

// ---------------------------------------------------------------- error reporting
void silence_hdf5_once() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

// HDF5's error stack in brief: the API-level message and the innermost one ("unable to create
// dataset: message type not found"), or "".
std::string hdf5_message() {
  std::vector<std::string> frames;
  auto walk = [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
    if (e->desc && *e->desc) static_cast<std::vector<std::string>*>(data)->emplace_back(e->desc);
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk, &frames);
  H5Eclear2(H5E_DEFAULT);
  if (frames.empty()) return "";
  if (frames.size() == 1 || frames.front() == frames.back()) return frames.front();
  return frames.front() + ": " + frames.back();
}

template <class R>
R h5_check(R result, const char* call, const char* src_file, int src_line, const std::string& file, const std::string& object) {
  if (result < 0) {
    std::string detail = hdf5_message();
    std::ostringstream os;
    os << "'" << file << "'";
    if (!object.empty()) os << " object '" << object << "'";
    os << ": HDF5 call " << call << " failed";
    if (!detail.empty()) os << " (" << detail << ")";
    os << " [" << std::filesystem::path(src_file).filename().string() << ":" << src_line << "]";
    throw Error("hdf5", os.str());
  }
  return result;
}

}  // namespace

// Checks an HDF5 call (negative return = failure), naming the file and the object in the file.
#define CP_H5_CHECK(call, file, object) h5_check((call), #call, __FILE__, __LINE__, (file), (object))

namespace {

// Owns one HDF5 identifier and closes it with the matching H5*close. Close errors are ignored:
// they can only happen while already unwinding from another error or on an id HDF5 invalidated.
class H5Id {
public:
  using Closer = herr_t (*)(hid_t);
  H5Id() = default;
  H5Id(hid_t id, Closer close) : id_(id), close_(close) {}
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  H5Id(H5Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  ~H5Id() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  // Closes now and reports a failure (the file close that flushes the data must be checked).
  herr_t close_checked() {
    herr_t r = id_ >= 0 && close_ ? close_(id_) : 0;
    id_ = -1;
    return r;
  }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }

private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

hid_t native_type(DType d) {
  switch (d) {
    case DType::f32: return H5T_NATIVE_FLOAT;
    case DType::f64: return H5T_NATIVE_DOUBLE;
    case DType::u8: return H5T_NATIVE_UINT8;
    case DType::i32: return H5T_NATIVE_INT32;
    case DType::i64: return H5T_NATIVE_INT64;
  }
  return H5T_NATIVE_FLOAT;
}

// Strips a leading '/', rejects empty components; "a/b.c/d" stays as it is (dots are part of names).
std::string clean_name(const std::string& name, const std::string& file, const char* where) {
  std::string n = name;
  if (!n.empty() && n[0] == '/') n.erase(0, 1);
  bool ok = !n.empty() && n.back() != '/' && n.find("//") == std::string::npos;
  CP_CHECK(ok, where, "'", file, "': invalid dataset name '", name, "' (empty, or an empty group name)");
  return n;
}

// Whether every link along "a/b/c" exists, each but the last being a group (H5Lexists on a path
// fails when a middle link is missing or is not a group).
bool path_exists(hid_t file, const std::string& name, const std::string& file_name) {
  size_t pos = 0;
  while (true) {
    size_t slash = name.find('/', pos);
    std::string prefix = name.substr(0, slash);
    if (CP_H5_CHECK(H5Lexists(file, prefix.c_str(), H5P_DEFAULT), file_name, prefix) <= 0) return false;
    if (slash == std::string::npos) return true;
    H5Id obj(CP_H5_CHECK(H5Oopen(file, prefix.c_str(), H5P_DEFAULT), file_name, prefix), H5Oclose);
    if (H5Iget_type(obj) != H5I_GROUP) return false;
    pos = slash + 1;
  }
}

bool is_dataset(hid_t file, const std::string& name, const std::string& file_name) {
  if (!path_exists(file, name, file_name)) return false;
  H5Id obj(CP_H5_CHECK(H5Oopen(file, name.c_str(), H5P_DEFAULT), file_name, name), H5Oclose);
  return H5Iget_type(obj) == H5I_DATASET;
}

// One element type for an attribute, and the scalar value written through it.
void write_attr(hid_t obj, const std::string& key, const Attr& value, const std::string& file, const std::string& object) {
  std::string what = object + "@" + key;
  CP_CHECK(!key.empty(), "H5Writer", "'", file, "': empty attribute name on '", object, "'");
  if (CP_H5_CHECK(H5Aexists(obj, key.c_str()), file, what) > 0) CP_H5_CHECK(H5Adelete(obj, key.c_str()), file, what);
  H5Id space(CP_H5_CHECK(H5Screate(H5S_SCALAR), file, what), H5Sclose);
  if (auto* s = std::get_if<std::string>(&value)) {
    // Variable-length UTF-8: h5py reads it as str.
    H5Id type(CP_H5_CHECK(H5Tcopy(H5T_C_S1), file, what), H5Tclose);
    CP_H5_CHECK(H5Tset_size(type, H5T_VARIABLE), file, what);
    CP_H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8), file, what);
    H5Id attr(CP_H5_CHECK(H5Acreate2(obj, key.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), file, what), H5Aclose);
    const char* text = s->c_str();
    CP_H5_CHECK(H5Awrite(attr, type, &text), file, what);
  } else if (auto* i = std::get_if<int64_t>(&value)) {
    H5Id attr(CP_H5_CHECK(H5Acreate2(obj, key.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), file, what), H5Aclose);
    CP_H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, i), file, what);
  } else {
    const double* d = std::get_if<double>(&value);
    H5Id attr(CP_H5_CHECK(H5Acreate2(obj, key.c_str(), H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT), file, what), H5Aclose);
    CP_H5_CHECK(H5Awrite(attr, H5T_NATIVE_DOUBLE, d), file, what);
  }
}

// Chunks of about 1 MiB, shrinking the leading dimensions first so that row ranges along dim 0
// (the access pattern of read_rows/write_rows) touch few chunks.
std::vector<hsize_t> chunk_dims(const Shape& shape, DType dtype) {
  const double target = 1 << 20;
  std::vector<hsize_t> chunk(shape.size());
  double bytes = (double)dtype_size(dtype);
  for (size_t d = 0; d < shape.size(); ++d) {
    chunk[d] = (hsize_t)std::max<int64_t>(1, shape[d]);
    bytes *= (double)chunk[d];
  }
  for (size_t d = 0; d < shape.size() && bytes > target; ++d) {
    double inner = bytes / (double)chunk[d];
    chunk[d] = (hsize_t)std::max(1.0, std::floor(target / inner));
    bytes = inner * (double)chunk[d];
  }
  return chunk;
}

constexpr unsigned kGzipLevel = 4;  // h5py's default level

// "float of 4 bytes", "signed integer of 2 bytes", "string": the kind of an element type.
std::string type_kind(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  std::ostringstream os;
  switch (cls) {
    case H5T_FLOAT: os << "float"; break;
    case H5T_INTEGER: os << (H5Tget_sign(type) == H5T_SGN_NONE ? "unsigned integer" : "signed integer"); break;
    case H5T_STRING: os << "string"; break;
    case H5T_ENUM: os << "enum (bool?)"; break;
    case H5T_COMPOUND: os << "compound"; break;
    case H5T_ARRAY: os << "array"; break;
    default: os << "non-numeric"; break;
  }
  os << " of " << size << " byte" << (size == 1 ? "" : "s");
  return os.str();
}

// What is unusual about a numeric type beyond its kind: ", big-endian", and for a float whose
// bit layout is not IEEE's (one changed byte of the type), its fields. "" for a standard type.
std::string type_details(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  std::ostringstream os;
  if ((cls == H5T_FLOAT || cls == H5T_INTEGER) && size > 1 && H5Tget_order(type) != H5T_ORDER_LE)
    os << (H5Tget_order(type) == H5T_ORDER_BE ? ", big-endian" : ", mixed byte order");
  if (cls == H5T_FLOAT) {
    size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize);
    const bool fields = (size == 4 && spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23) ||
                        (size == 8 && spos == 63 && epos == 52 && esize == 11 && mpos == 0 && msize == 52);
    const size_t ebias = H5Tget_ebias(type);
    const bool bias = (size == 4 && ebias == 127) || (size == 8 && ebias == 1023);
    const bool norm = H5Tget_norm(type) == H5T_NORM_IMPLIED;
    if (!fields || !bias || !norm)
      os << ", not IEEE binary" << size * 8 << ": sign bit " << spos << ", exponent bits " << epos << ".."
         << epos + esize - 1 << " with bias " << ebias << ", mantissa bits " << mpos << ".." << mpos + msize - 1
         << (norm ? "" : ", no implied leading bit");
  }
  return os.str();
}

}  // namespace

// ======================================================================== writer
struct H5Writer::Impl {
  std::string path, tmp;
  H5Id file;
  bool committed = false;
};

H5Writer::H5Writer(const std::string& path) : impl_(std::make_unique<Impl>()) {
  silence_hdf5_once();
  CP_CHECK(!path.empty(), "H5Writer", "empty file path");
  impl_->path = path;
  impl_->tmp = path + ".tmp";
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  CP_CHECK(parent.empty() || std::filesystem::is_directory(parent), "H5Writer", "'", path, "': directory '", parent.string(),
           "' does not exist");
  // Strong close: closing the file closes anything still open in it, so commit() can rename.
  H5Id fapl(CP_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path, ""), H5Pclose);
  CP_H5_CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG), path, "");
  impl_->file = H5Id(CP_H5_CHECK(H5Fcreate(impl_->tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), impl_->tmp, ""), H5Fclose);
}

H5Writer::~H5Writer() {
  if (!impl_ || impl_->committed) return;
  impl_->file.reset();
  std::error_code ec;  // a destructor must not throw; a leftover .tmp is harmless
  std::filesystem::remove(impl_->tmp, ec);
}

void H5Writer::create(const std::string& name_in, const Shape& shape, DType dtype, const Attrs& attrs) {
  const std::string& file = impl_->path;
  CP_CHECK(!impl_->committed, "H5Writer::create", "'", file, "': already committed");
  std::string name = clean_name(name_in, file, "H5Writer::create");
  for (int64_t s : shape) CP_CHECK(s >= 0, "H5Writer::create", "'", file, "' dataset '", name, "': negative size in ", shape);
  CP_CHECK(!path_exists(impl_->file, name, file), "H5Writer::create", "'", file, "': dataset '", name, "' already exists");

  H5Id space;
  H5Id dcpl(CP_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), file, name), H5Pclose);
  if (shape.empty()) {
    space = H5Id(CP_H5_CHECK(H5Screate(H5S_SCALAR), file, name), H5Sclose);  // 0-d: h5py shape ()
  } else if (shape_numel(shape) == 0) {
    // Chunks may not exceed a fixed dimension, and a zero-size one admits none: keep it contiguous.
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    space = H5Id(CP_H5_CHECK(H5Screate_simple((int)dims.size(), dims.data(), nullptr), file, name), H5Sclose);
  } else {
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    space = H5Id(CP_H5_CHECK(H5Screate_simple((int)dims.size(), dims.data(), nullptr), file, name), H5Sclose);
    std::vector<hsize_t> chunk = chunk_dims(shape, dtype);
    CP_H5_CHECK(H5Pset_chunk(dcpl, (int)chunk.size(), chunk.data()), file, name);
    CP_H5_CHECK(H5Pset_shuffle(dcpl), file, name);
    CP_H5_CHECK(H5Pset_deflate(dcpl, kGzipLevel), file, name);
  }
  H5Id lcpl(CP_H5_CHECK(H5Pcreate(H5P_LINK_CREATE), file, name), H5Pclose);
  CP_H5_CHECK(H5Pset_create_intermediate_group(lcpl, 1), file, name);
  H5Id ds(CP_H5_CHECK(H5Dcreate2(impl_->file, name.c_str(), native_type(dtype), space, lcpl, dcpl, H5P_DEFAULT), file, name),
          H5Dclose);
  for (auto& [key, value] : attrs) write_attr(ds, key, value, file, name);
}

void H5Writer::write_rows(const std::string& name_in, int64_t first_row, const Tensor& rows) {
  const std::string& file = impl_->path;
  const char* where = "H5Writer::write_rows";
  CP_CHECK(!impl_->committed, where, "'", file, "': already committed");
  std::string name = clean_name(name_in, file, where);
  CP_CHECK(rows.defined(), where, "'", file, "' dataset '", name, "': undefined tensor");
  CP_CHECK(is_dataset(impl_->file, name, file), where, "'", file, "': no dataset '", name, "' (create() it first)");
  H5Id ds(CP_H5_CHECK(H5Dopen2(impl_->file, name.c_str(), H5P_DEFAULT), file, name), H5Dclose);
  H5Id fspace(CP_H5_CHECK(H5Dget_space(ds), file, name), H5Sclose);
  int rank = CP_H5_CHECK(H5Sget_simple_extent_ndims(fspace), file, name);
  std::vector<hsize_t> dims(rank);
  CP_H5_CHECK(H5Sget_simple_extent_dims(fspace, dims.data(), nullptr), file, name);
  Shape full(dims.begin(), dims.end());
  H5Id ftype(CP_H5_CHECK(H5Dget_type(ds), file, name), H5Tclose);
  CP_CHECK(CP_H5_CHECK(H5Tequal(ftype, native_type(rows.dtype())), file, name) > 0, where, "'", file, "' dataset '", name,
           "': rows are ", rows.describe(), " but the dataset holds a different dtype");

  Tensor host = rows.detach().to(Device::cpu).contiguous();
  if (rank == 0) {
    CP_CHECK(first_row == 0 && host.dim() == 0, where, "'", file, "' dataset '", name, "' is a scalar; got ", host.describe(),
             " at row ", first_row);
    CP_H5_CHECK(H5Dwrite(ds, native_type(host.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, host.raw_data()), file, name);
    return;
  }
  Shape row_shape(full.begin() + 1, full.end());
  CP_CHECK(host.dim() == rank && Shape(host.shape().begin() + 1, host.shape().end()) == row_shape, where, "'", file,
           "' dataset '", name, "' ", full, ": rows ", host.describe(), " must have shape [n, ", row_shape, "...]");
  int64_t n = host.size(0);
  CP_CHECK(first_row >= 0 && first_row + n <= full[0], where, "'", file, "' dataset '", name, "' ", full, ": rows [",
           first_row, ", ", first_row + n, ") out of range");
  if (n == 0 || host.numel() == 0) return;
  std::vector<hsize_t> start(rank, 0), count(dims);
  start[0] = (hsize_t)first_row;
  count[0] = (hsize_t)n;
  CP_H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), file, name);
  H5Id mspace(CP_H5_CHECK(H5Screate_simple(rank, count.data(), nullptr), file, name), H5Sclose);
  CP_H5_CHECK(H5Dwrite(ds, native_type(host.dtype()), mspace, fspace, H5P_DEFAULT, host.raw_data()), file, name);
}

void H5Writer::write(const std::string& name, const Tensor& t, const Attrs& attrs) {
  CP_CHECK(t.defined(), "H5Writer::write", "'", impl_->path, "' dataset '", name, "': undefined tensor");
  create(name, t.shape(), t.dtype(), attrs);
  write_rows(name, 0, t);
}

void H5Writer::set_file_attr(const std::string& key, const Attr& value) {
  CP_CHECK(!impl_->committed, "H5Writer::set_file_attr", "'", impl_->path, "': already committed");
  write_attr(impl_->file, key, value, impl_->path, "/");
}

void H5Writer::commit() {
  const std::string& file = impl_->path;
  CP_CHECK(!impl_->committed, "H5Writer::commit", "'", file, "': already committed");
  CP_H5_CHECK(impl_->file.close_checked(), impl_->tmp, "");
  std::error_code ec;
  std::filesystem::rename(impl_->tmp, file, ec);
  CP_CHECK(!ec, "H5Writer::commit", "cannot rename '", impl_->tmp, "' to '", file, "': ", ec.message());
  impl_->committed = true;
}

// ======================================================================== reader
struct H5Reader::Impl {
  std::string path;
  H5Id file;

  // Opens a dataset that must exist, with an Error naming the file and dataset otherwise.
  H5Id open(const std::string& name_in, const char* where, std::string& name) const {
    name = clean_name(name_in, path, where);
    CP_CHECK(is_dataset(file, name, path), where, "'", path, "': no dataset '", name, "'");
    return H5Id(CP_H5_CHECK(H5Dopen2(file, name.c_str(), H5P_DEFAULT), path, name), H5Dclose);
  }
  std::string object(const std::string& name) const { return "'" + path + "' dataset '" + name + "'"; }

  // The stored shape, checked: a simple or scalar dataspace, at most kMaxAxis elements per axis
  // and a product that fits in int64 (a shape like [4, 2^62, 1, 1] would wrap to 0).
  Shape shape_of(hid_t ds, const std::string& name) const {
    H5Id space(CP_H5_CHECK(H5Dget_space(ds), path, name), H5Sclose);
    const H5S_class_t cls = H5Sget_simple_extent_type(space);
    CP_CHECK(cls == H5S_SIMPLE || cls == H5S_SCALAR, "H5Reader", object(name),
             ": has a null dataspace (no elements, not even a scalar); expected an array");
    int rank = CP_H5_CHECK(H5Sget_simple_extent_ndims(space), path, name);
    std::vector<hsize_t> dims(rank);
    CP_H5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr), path, name);
    Shape shape(rank);
    for (int i = 0; i < rank; ++i) {
      // Beyond int64 a cast would turn negative: refuse on the unsigned value.
      CP_CHECK(dims[i] <= (hsize_t)kMaxAxis, "H5Reader", object(name), ": axis ", i, " of the stored shape holds ",
               (unsigned long long)dims[i], " elements, above the limit of ", kMaxAxis, " per axis");
      shape[i] = (int64_t)dims[i];
    }
    checked_numel(shape, "H5Reader " + object(name));
    return shape;
  }

  // The element type, checked exactly (class, size, byte order, bit layout): a float type with
  // one changed byte (exponent bias, byte order, field positions) still "converts" in HDF5 and
  // reads back as other numbers, so only the standard little-endian types are taken.
  DType dtype_of(hid_t ds, const std::string& name) const {
    H5Id type(CP_H5_CHECK(H5Dget_type(ds), path, name), H5Tclose);
    const struct {
      hid_t standard;
      DType dtype;
    } known[] = {{H5T_IEEE_F32LE, DType::f32}, {H5T_IEEE_F64LE, DType::f64}, {H5T_STD_U8LE, DType::u8},
                 {H5T_STD_U8BE, DType::u8},     {H5T_STD_I32LE, DType::i32},  {H5T_STD_I64LE, DType::i64}};
    for (const auto& k : known)
      if (CP_H5_CHECK(H5Tequal(type, k.standard), path, name) > 0) return k.dtype;
    fail("H5Reader", object(name), ": unsupported element type (", type_kind(type), ")", type_details(type),
         "; supported exactly: little-endian IEEE float32 and float64, uint8, little-endian int32 and int64 "
         "(the types cpoison and h5py write)");
  }

  // Error unless all of the dataset's data is stored: a dataset created but never (or only partly)
  // written reads back as its fill value, zeros, without any HDF5 error. Chunked datasets count
  // their stored chunks (H5Dget_space_status compares compressed sizes with the full size, so it
  // calls every compressed dataset "partly allocated"); contiguous ones ask for their space.
  void check_stored(hid_t ds, const std::string& name, const Shape& shape) const {
    if (shape_numel(shape) == 0) return;
    H5Id dcpl(CP_H5_CHECK(H5Dget_create_plist(ds), path, name), H5Pclose);
    const H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout == H5D_CHUNKED) {
      const int rank = CP_H5_CHECK(H5Pget_chunk(dcpl, 0, nullptr), path, name);
      std::vector<hsize_t> chunk((size_t)rank);
      CP_H5_CHECK(H5Pget_chunk(dcpl, rank, chunk.data()), path, name);
      uint64_t total = 1;
      for (size_t i = 0; i < chunk.size() && i < shape.size(); ++i)
        total *= ((uint64_t)shape[i] + chunk[i] - 1) / std::max<hsize_t>(chunk[i], 1);
      hsize_t stored = 0;
      H5Id space(CP_H5_CHECK(H5Dget_space(ds), path, name), H5Sclose);
      CP_H5_CHECK(H5Dget_num_chunks(ds, space, &stored), path, name);
      CP_CHECK(stored == total, "H5Reader", object(name), ": its data is ", stored == 0 ? "not stored at all" : "only partly stored",
               " (", (unsigned long long)stored, " of ", (unsigned long long)total,
               " chunks; a dataset created but not completely written would read as zeros there)");
    } else if (layout == H5D_CONTIGUOUS) {
      H5D_space_status_t status;
      CP_H5_CHECK(H5Dget_space_status(ds, &status), path, name);
      CP_CHECK(status == H5D_SPACE_STATUS_ALLOCATED, "H5Reader", object(name),
               ": its data is not stored at all (a dataset created but never written would read as zeros)");
    }
  }

  // Refuses a read that the machine's free memory cannot hold, naming the dataset.
  void check_memory(const std::string& name, const Shape& shape, DType dtype) const {
    const uint64_t bytes = (uint64_t)checked_mul(shape_numel(shape), (int64_t)dtype_size(dtype), "H5Reader " + object(name));
    if (bytes >= (uint64_t(1) << 26)) check_allocation(bytes, "H5Reader " + object(name) + " " + shape_str(shape));
  }
};

H5Reader::H5Reader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  silence_hdf5_once();
  impl_->path = path;
  std::error_code ec;
  CP_CHECK(std::filesystem::exists(path, ec), "H5Reader", "'", path, "': no such file");
  CP_CHECK(std::filesystem::is_regular_file(path, ec), "H5Reader", "'", path, "': not a regular file");
  htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 <= 0) H5Eclear2(H5E_DEFAULT);
  CP_CHECK(is_h5 > 0, "H5Reader", "'", path, "': not an HDF5 file");
  impl_->file = H5Id(CP_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path, ""), H5Fclose);
}

H5Reader::~H5Reader() = default;

const std::string& H5Reader::path() const { return impl_->path; }

bool H5Reader::has(const std::string& name) const {
  std::string n = name;
  if (!n.empty() && n[0] == '/') n.erase(0, 1);
  if (n.empty() || n.back() == '/' || n.find("//") != std::string::npos) return false;
  return is_dataset(impl_->file, n, impl_->path);
}

std::vector<std::string> H5Reader::datasets() const {
  struct Visit {
    hid_t file;
    std::vector<std::string> names;
  } visit{impl_->file, {}};
  auto cb = [](hid_t group, const char* name, const H5L_info_t* info, void* data) -> herr_t {
    auto* v = static_cast<Visit*>(data);
    if (info->type != H5L_TYPE_HARD) return 0;  // soft/external links are not ours
    hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
    if (obj < 0) return -1;
    if (H5Iget_type(obj) == H5I_DATASET) v->names.emplace_back(name);
    H5Oclose(obj);
    return 0;
  };
  CP_H5_CHECK(H5Lvisit(impl_->file, H5_INDEX_NAME, H5_ITER_INC, cb, &visit), impl_->path, "/");
  std::sort(visit.names.begin(), visit.names.end());
  return visit.names;
}

Shape H5Reader::shape(const std::string& name_in) const {
  std::string name;
  H5Id ds = impl_->open(name_in, "H5Reader::shape", name);
  return impl_->shape_of(ds, name);
}

DType H5Reader::dtype(const std::string& name_in) const {
  std::string name;
  H5Id ds = impl_->open(name_in, "H5Reader::dtype", name);
  return impl_->dtype_of(ds, name);
}

Tensor H5Reader::read(const std::string& name_in) const {
  std::string name;
  H5Id ds = impl_->open(name_in, "H5Reader::read", name);
  Shape shape = impl_->shape_of(ds, name);
  DType dtype = impl_->dtype_of(ds, name);
  impl_->check_stored(ds, name, shape);
  impl_->check_memory(name, shape, dtype);
  Tensor out = Tensor::empty(shape, dtype);
  if (out.numel() > 0)
    CP_H5_CHECK(H5Dread(ds, native_type(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.raw_data()), impl_->path, name);
  return out;
}

Tensor H5Reader::read(const std::string& name, DType expected) const {
  DType actual = dtype(name);
  CP_CHECK(actual == expected, "H5Reader::read", "'", impl_->path, "' dataset '", name, "' holds ", dtype_name(actual),
           ", expected ", dtype_name(expected));
  return read(name);
}

Tensor H5Reader::read_rows(const std::string& name_in, int64_t begin, int64_t end) const {
  std::string name;
  const char* where = "H5Reader::read_rows";
  H5Id ds = impl_->open(name_in, where, name);
  Shape full = impl_->shape_of(ds, name);
  DType dtype = impl_->dtype_of(ds, name);
  CP_CHECK(!full.empty(), where, "'", impl_->path, "' dataset '", name, "' is a scalar (no rows)");
  CP_CHECK(0 <= begin && begin <= end && end <= full[0], where, "'", impl_->path, "' dataset '", name, "' ", full, ": rows [",
           begin, ", ", end, ") out of range");
  Shape shape = full;
  shape[0] = end - begin;
  impl_->check_stored(ds, name, full);  // the whole dataset, not only these rows
  impl_->check_memory(name, shape, dtype);
  Tensor out = Tensor::empty(shape, dtype);
  if (out.numel() == 0) return out;
  int rank = (int)full.size();
  std::vector<hsize_t> start(rank, 0), count(shape.begin(), shape.end());
  start[0] = (hsize_t)begin;
  H5Id fspace(CP_H5_CHECK(H5Dget_space(ds), impl_->path, name), H5Sclose);
  CP_H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), impl_->path, name);
  H5Id mspace(CP_H5_CHECK(H5Screate_simple(rank, count.data(), nullptr), impl_->path, name), H5Sclose);
  CP_H5_CHECK(H5Dread(ds, native_type(dtype), mspace, fspace, H5P_DEFAULT, out.raw_data()), impl_->path, name);
  return out;
}

namespace {
// Reads the scalar string/integer/float attributes of one object. Others (arrays, enums,
// compounds that a Python user may add) are skipped: they have no Attr representation.
Attrs read_attrs(hid_t obj, const std::string& file, const std::string& object) {
  struct Ctx {
    const std::string* file;
    const std::string* object;
    Attrs out;
    std::string error;
  } ctx{&file, &object, {}, {}};
  auto cb = [](hid_t loc, const char* key, const H5A_info_t*, void* data) -> herr_t {
    auto* c = static_cast<Ctx*>(data);
    std::string what = *c->object + "@" + key;
    try {
      H5Id attr(CP_H5_CHECK(H5Aopen(loc, key, H5P_DEFAULT), *c->file, what), H5Aclose);
      H5Id space(CP_H5_CHECK(H5Aget_space(attr), *c->file, what), H5Sclose);
      if (CP_H5_CHECK(H5Sget_simple_extent_npoints(space), *c->file, what) != 1) return 0;
      H5Id type(CP_H5_CHECK(H5Aget_type(attr), *c->file, what), H5Tclose);
      H5T_class_t cls = H5Tget_class(type);
      if (cls == H5T_STRING) {
        H5Id mem(CP_H5_CHECK(H5Tcopy(type), *c->file, what), H5Tclose);  // same size and padding, native order
        if (CP_H5_CHECK(H5Tis_variable_str(type), *c->file, what) > 0) {
          char* text = nullptr;
          CP_H5_CHECK(H5Aread(attr, mem, &text), *c->file, what);
          c->out[key] = std::string(text ? text : "");
          if (text) CP_H5_CHECK(H5free_memory(text), *c->file, what);
        } else {
          size_t size = H5Tget_size(type);
          std::string text(size, '\0');
          CP_H5_CHECK(H5Aread(attr, mem, text.data()), *c->file, what);
          text.resize(std::strlen(text.c_str()));  // fixed-length strings are NUL-padded
          c->out[key] = text;
        }
      } else if (cls == H5T_INTEGER) {
        int64_t v = 0;
        CP_H5_CHECK(H5Aread(attr, H5T_NATIVE_INT64, &v), *c->file, what);
        c->out[key] = v;
      } else if (cls == H5T_FLOAT) {
        double v = 0;
        CP_H5_CHECK(H5Aread(attr, H5T_NATIVE_DOUBLE, &v), *c->file, what);
        c->out[key] = v;
      }
      return 0;
    } catch (const std::exception& e) {
      c->error = e.what();  // exceptions must not cross HDF5's C frames
      return -1;
    }
  };
  hsize_t idx = 0;
  herr_t r = H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, cb, &ctx);
  if (!ctx.error.empty()) {
    H5Eclear2(H5E_DEFAULT);
    throw Error("hdf5", ctx.error);
  }
  CP_H5_CHECK(r, file, object);
  return std::move(ctx.out);
}
}  // namespace

Attrs H5Reader::attrs(const std::string& name_in) const {
  std::string name = name_in;
  if (!name.empty() && name[0] == '/') name.erase(0, 1);
  if (name.empty()) return file_attrs();
  name = clean_name(name, impl_->path, "H5Reader::attrs");
  CP_CHECK(path_exists(impl_->file, name, impl_->path), "H5Reader::attrs", "'", impl_->path, "': no object '", name, "'");
  H5Id obj(CP_H5_CHECK(H5Oopen(impl_->file, name.c_str(), H5P_DEFAULT), impl_->path, name), H5Oclose);
  return read_attrs(obj, impl_->path, name);
}

Attrs H5Reader::file_attrs() const { return read_attrs(impl_->file, impl_->path, "/"); }

// ======================================================================== attribute lookup
namespace {
const char* attr_type_name(const Attr& a) {
  return std::holds_alternative<std::string>(a) ? "string" : std::holds_alternative<int64_t>(a) ? "integer" : "float";
}
}  // namespace

std::string attr_string(const Attrs& a, const std::string& key, const std::string& where) {
  auto it = a.find(key);
  CP_CHECK(it != a.end(), where, "missing string attribute '", key, "'");
  CP_CHECK(std::holds_alternative<std::string>(it->second), where, "attribute '", key, "' is ", attr_type_name(it->second),
           ", expected string");
  return std::get<std::string>(it->second);
}

int64_t attr_int(const Attrs& a, const std::string& key, const std::string& where) {
  auto it = a.find(key);
  CP_CHECK(it != a.end(), where, "missing integer attribute '", key, "'");
  CP_CHECK(std::holds_alternative<int64_t>(it->second), where, "attribute '", key, "' is ", attr_type_name(it->second),
           ", expected integer");
  return std::get<int64_t>(it->second);
}

double attr_double(const Attrs& a, const std::string& key, const std::string& where) {
  auto it = a.find(key);
  CP_CHECK(it != a.end(), where, "missing float attribute '", key, "'");
  // An integer stored where a float is expected (h5py writes Python ints as int64) converts.
  if (auto* i = std::get_if<int64_t>(&it->second)) return (double)*i;
  CP_CHECK(std::holds_alternative<double>(it->second), where, "attribute '", key, "' is ", attr_type_name(it->second),
           ", expected float");
  const double v = std::get<double>(it->second);
  CP_CHECK(std::isfinite(v), where, "attribute '", key, "' is ", v, ", expected a finite number");
  return v;
}

void check_values(const Tensor& t, double lo, double hi, const std::string& where, const std::string& dataset) {
  CP_CHECK(t.defined(), where, "dataset '", dataset, "' is undefined");
  if (t.numel() == 0) return;
  Tensor host = t.to(Device::cpu).contiguous();
  const int64_t n = host.numel();
  auto report = [&](int64_t i, double v) {
    Shape pos(host.dim());
    for (int64_t d = host.dim() - 1, rest = i; d >= 0; --d) {
      pos[d] = rest % host.size(d);
      rest /= host.size(d);
    }
    std::ostringstream range;
    if (std::isinf(lo) && std::isinf(hi)) range << "finite";
    else if (std::isinf(hi)) range << "finite and >= " << lo;
    else range << "finite and within [" << lo << ", " << hi << "]";
    fail(where, "dataset '", dataset, "' ", host.shape(), ": element ", i, " (at ", pos, ") is ", v, "; its values must be ",
         range.str());
  };
  auto scan = [&](const auto* p) {
    for (int64_t i = 0; i < n; ++i) {
      const double v = (double)p[i];
      if (!(std::isfinite(v) && v >= lo && v <= hi)) report(i, v);
    }
  };
  switch (host.dtype()) {
    case DType::f32: scan(host.data<float>()); break;
    case DType::f64: scan(host.data<double>()); break;
    case DType::u8: scan(host.data<uint8_t>()); break;
    case DType::i32: scan(host.data<int32_t>()); break;
    case DType::i64: scan(host.data<int64_t>()); break;
  }
}

}  // namespace cpoison::io
