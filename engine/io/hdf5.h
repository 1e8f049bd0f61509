// HDF5 storage of named tensors with attributes, readable by h5py with the same shapes and
// dtypes (f32 -> float32, f64 -> float64, u8 -> uint8, i32 -> int32, i64 -> int64).
// Writers create `path + ".tmp"` and rename it into place on commit(), so a crash never leaves
// a half-written file where a good one was. Every HDF5 call is checked; errors name the file
// and the dataset.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "engine/tensor.h"

namespace cpoison::io {

using Attr = std::variant<std::string, int64_t, double>;
using Attrs = std::map<std::string, Attr>;

class H5Writer {
public:
  explicit H5Writer(const std::string& path);  // opens path.tmp for writing
  ~H5Writer();                                 // without commit(): removes the .tmp file
  // Writes a tensor (copied to the host) as a chunked, gzip-compressed dataset. Names may
  // contain '/' (groups are created). attrs go on the dataset.
  void write(const std::string& name, const Tensor& t, const Attrs& attrs = {});
  // Creates an empty (zero-filled) dataset of the given shape and dtype to be filled by rows.
  // Error when the name already exists.
  void create(const std::string& name, const Shape& shape, DType dtype, const Attrs& attrs = {});
  // Writes rows [first_row, first_row + rows.size(0)) along dim 0. rows must have the dataset's
  // dtype and trailing shape (Error naming file, dataset and shapes otherwise).
  void write_rows(const std::string& name, int64_t first_row, const Tensor& rows);
  void set_file_attr(const std::string& key, const Attr& value);  // attribute on the root group
  void commit();  // closes and renames path.tmp -> path

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class H5Reader {
public:
  // Error naming the path when missing or not HDF5. Errors of the methods below name the file
  // and the dataset: a missing dataset, an element type other than the five dtypes, rows out
  // of range. Names may start with '/'; datasets() lists them without it.
  explicit H5Reader(const std::string& path);
  ~H5Reader();
  bool has(const std::string& name) const;
  std::vector<std::string> datasets() const;  // every dataset, full names ("layer1.0.conv1.weight", "opt/...")
  Shape shape(const std::string& name) const;
  DType dtype(const std::string& name) const;
  Tensor read(const std::string& name) const;  // host tensor
  // Same, with an Error naming the file, the dataset and both dtypes when it holds another dtype.
  Tensor read(const std::string& name, DType expected) const;
  Tensor read_rows(const std::string& name, int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0
  // Scalar string/integer/float attributes of a dataset or group ("" or "/" for the root);
  // attributes of other kinds (arrays, enums) are skipped.
  Attrs attrs(const std::string& name) const;
  Attrs file_attrs() const;
  const std::string& path() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The value check every loader uses on what it read: Error naming `where` (the file), the
// dataset and its first bad element (flat index and position in the shape) unless every element
// of `t` (any dtype, any device) is finite and within [lo, hi].
void check_values(const Tensor& t, double lo, double hi, const std::string& where, const std::string& dataset);

// Typed attribute lookup with a clear error (file, object, key, expected type) when absent.
// attr_double also refuses a value that is not finite (NaN, Inf).
std::string attr_string(const Attrs& a, const std::string& key, const std::string& where);
int64_t attr_int(const Attrs& a, const std::string& key, const std::string& where);
double attr_double(const Attrs& a, const std::string& key, const std::string& where);

}  // namespace cpoison::io
