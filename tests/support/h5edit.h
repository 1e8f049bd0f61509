// Edits HDF5 files in place through the HDF5 C API, to write what cpoison's own writer never
// would: shapes beyond int64, datasets that were never written, float types with one changed
// byte, attributes of any value. For the bad-input tests (tests/engine/bad_input_test.cpp,
// tests/tools/bad_input_cli_test.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cpoison::testing {

class H5Edit {
public:
  explicit H5Edit(const std::string& path);  // an existing file, opened read-write
  ~H5Edit();
  H5Edit(const H5Edit&) = delete;
  H5Edit& operator=(const H5Edit&) = delete;

  // Deletes a dataset (or group) when it exists.
  void remove(const std::string& name);
  // Replaces `name` with a chunked dataset of `dims` (which may exceed int64) whose data is
  // never written; element type uint8 or float32.
  void unwritten(const std::string& name, const std::vector<uint64_t>& dims, bool float32 = false);
  // Replaces `name` with float32 `values` of shape `dims`, stored (bytes unchanged) under the
  // IEEE float32 type changed by `change`: "ebias" (exponent bias + 100), "order" (big-endian
  // byte order flag), "fields" (exponent 7 bits, mantissa 24), "norm" (no implied bit), or
  // "be" (a true big-endian float32: the values converted, readable as the same numbers), or
  // "" (the standard little-endian float32: a plain dataset, e.g. holding a NaN).
  void float_type(const std::string& name, const std::vector<uint64_t>& dims, const std::vector<float>& values,
                  const std::string& change);
  // Replaces `name` with int64 `values` stored big-endian (the values converted).
  void int64_big_endian(const std::string& name, const std::vector<int64_t>& values);
  // Root attributes.
  void set_attr(const std::string& key, int64_t value);
  void set_attr(const std::string& key, double value);
  void set_attr(const std::string& key, const std::string& value);
  void remove_attr(const std::string& key);

private:
  int64_t file_ = -1;
  std::string path_;
};

}  // namespace cpoison::testing
