#include "tests/support/h5edit.h"

#include <doctest/doctest.h>
#include <hdf5.h>

#include <algorithm>

namespace cpoison::testing {

namespace {
void check(herr_t r, const char* what) { REQUIRE_MESSAGE(r >= 0, what); }
hid_t checked(hid_t id, const char* what) {
  REQUIRE_MESSAGE(id >= 0, what);
  return id;
}
}  // namespace

H5Edit::H5Edit(const std::string& path) : path_(path) {
  file_ = checked(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), "H5Fopen");
}

H5Edit::~H5Edit() {
  if (file_ >= 0) H5Fclose((hid_t)file_);
}

void H5Edit::remove(const std::string& name) {
  if (H5Lexists((hid_t)file_, name.c_str(), H5P_DEFAULT) > 0) check(H5Ldelete((hid_t)file_, name.c_str(), H5P_DEFAULT), "H5Ldelete");
}

void H5Edit::unwritten(const std::string& name, const std::vector<uint64_t>& dims, bool float32) {
  remove(name);
  // Chunks of one row along every axis but the longest (at most 2^20 elements along it): few
  // enough chunks for HDF5 to count, small enough for its 4 GiB chunk limit.
  std::vector<hsize_t> d(dims.begin(), dims.end()), chunk(dims.size(), 1);
  size_t longest = 0;
  for (size_t i = 0; i < d.size(); ++i)
    if (d[i] > d[longest]) longest = i;
  if (!d.empty()) chunk[longest] = std::max<hsize_t>(1, std::min<hsize_t>(d[longest], hsize_t(1) << 20));
  hid_t space = checked(H5Screate_simple((int)d.size(), d.data(), nullptr), "H5Screate_simple");
  hid_t dcpl = checked(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate");
  check(H5Pset_chunk(dcpl, (int)chunk.size(), chunk.data()), "H5Pset_chunk");
  hid_t lcpl = checked(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate");
  check(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
  hid_t ds = checked(H5Dcreate2((hid_t)file_, name.c_str(), float32 ? H5T_IEEE_F32LE : H5T_STD_U8LE, space, lcpl, dcpl,
                                H5P_DEFAULT),
                     "H5Dcreate2");
  H5Dclose(ds);
  H5Pclose(lcpl);
  H5Pclose(dcpl);
  H5Sclose(space);
}

void H5Edit::float_type(const std::string& name, const std::vector<uint64_t>& dims, const std::vector<float>& values,
                        const std::string& change) {
  remove(name);
  hid_t type = checked(H5Tcopy(change == "be" ? H5T_IEEE_F32BE : H5T_IEEE_F32LE), "H5Tcopy");
  if (change == "ebias") check(H5Tset_ebias(type, H5Tget_ebias(type) + 100), "H5Tset_ebias");
  else if (change == "order") check(H5Tset_order(type, H5T_ORDER_BE), "H5Tset_order");
  else if (change == "fields") check(H5Tset_fields(type, 31, 24, 7, 0, 24), "H5Tset_fields");
  else if (change == "norm") check(H5Tset_norm(type, H5T_NORM_NONE), "H5Tset_norm");
  else REQUIRE_MESSAGE((change == "be" || change.empty()), "unknown float type change");
  std::vector<hsize_t> d(dims.begin(), dims.end());
  hid_t space = checked(H5Screate_simple((int)d.size(), d.data(), nullptr), "H5Screate_simple");
  hid_t lcpl = checked(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate");
  check(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
  hid_t ds = checked(H5Dcreate2((hid_t)file_, name.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT), "H5Dcreate2");
  // A standard type ("" or "be") gets converted values; a mutated one gets the float32 bytes unchanged
  // (memory type = file type), which is what one changed byte of the type does to a file.
  const bool convert = change == "be" || change.empty();
  check(H5Dwrite(ds, convert ? H5T_NATIVE_FLOAT : type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), "H5Dwrite");
  H5Dclose(ds);
  H5Pclose(lcpl);
  H5Sclose(space);
  H5Tclose(type);
}

void H5Edit::int64_big_endian(const std::string& name, const std::vector<int64_t>& values) {
  remove(name);
  hsize_t n = values.size();
  hid_t space = checked(H5Screate_simple(1, &n, nullptr), "H5Screate_simple");
  hid_t ds = checked(H5Dcreate2((hid_t)file_, name.c_str(), H5T_STD_I64BE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     "H5Dcreate2");
  check(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), "H5Dwrite");
  H5Dclose(ds);
  H5Sclose(space);
}

namespace {
void write_scalar_attr(hid_t file, const std::string& key, hid_t file_type, hid_t mem_type, const void* value) {
  if (H5Aexists(file, key.c_str()) > 0) check(H5Adelete(file, key.c_str()), "H5Adelete");
  hid_t space = checked(H5Screate(H5S_SCALAR), "H5Screate");
  hid_t attr = checked(H5Acreate2(file, key.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2");
  check(H5Awrite(attr, mem_type, value), "H5Awrite");
  H5Aclose(attr);
  H5Sclose(space);
}
}  // namespace

void H5Edit::set_attr(const std::string& key, int64_t value) {
  write_scalar_attr((hid_t)file_, key, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void H5Edit::set_attr(const std::string& key, double value) {
  write_scalar_attr((hid_t)file_, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void H5Edit::set_attr(const std::string& key, const std::string& value) {
  hid_t type = checked(H5Tcopy(H5T_C_S1), "H5Tcopy");
  check(H5Tset_size(type, H5T_VARIABLE), "H5Tset_size");
  const char* text = value.c_str();
  write_scalar_attr((hid_t)file_, key, type, type, &text);
  H5Tclose(type);
}

void H5Edit::remove_attr(const std::string& key) {
  if (H5Aexists((hid_t)file_, key.c_str()) > 0) check(H5Adelete((hid_t)file_, key.c_str()), "H5Adelete");
}

}  // namespace cpoison::testing
