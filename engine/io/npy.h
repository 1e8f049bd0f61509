// NumPy's .npy and .npz files, read and written without NumPy, so that poisons and datasets
// travel to and from the PyTorch tools of the field (cpoison import / export --format npz).
//
// .npy (NumPy's format description, versions 1.0, 2.0 and 3.0): the magic "\x93NUMPY", two
// version bytes, a little-endian header length (2 bytes in 1.0, 4 bytes later), an ASCII (3.0:
// UTF-8) Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (N, H, W, C), }
// padded with spaces to a multiple of 64 bytes and ending in '\n', then the raw elements in C
// order.
// .npz: a zip archive holding one NAME.npy per array (np.savez stores them, np.savez_compressed
// deflates them). Both are read: the zip directory is parsed here (zip64 entries too, which
// np.savez writes), deflated entries are inflated with zlib; encrypted entries and other
// compression methods are refused with an error naming the entry.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace cpoison::io {

// One array as stored: its dtype descriptor as NumPy writes it ('<f4', '|u1', '>i8', ...), its
// shape and its raw bytes (C order, the stored byte order).
struct NpyArray {
  std::string descr;
  Shape shape;
  std::vector<uint8_t> bytes;

  char kind() const;            // 'f' float, 'i' signed, 'u' unsigned, 'b' bool, other: as stored
  int64_t item_size() const;    // bytes per element
  int64_t numel() const;
  // The values as doubles (any integer, float or bool dtype in either byte order); Error naming
  // `where` for another kind (complex, strings, objects).
  std::vector<double> to_doubles(const std::string& where) const;
  // As a tensor of the same shape: u1 -> u8, f4 -> f32, f8 -> f64, i4 -> i32, i8 -> i64, in
  // either byte order; Error naming `where` and the descriptor for any other dtype.
  Tensor to_tensor(const std::string& where) const;
};

// Parses the bytes of a whole .npy file. Error naming `where` (the file, or "FILE.npz entry
// NAME.npy") and what is wrong: a bad magic, an unknown version, a header that is not the
// dict above, Fortran order (save with np.ascontiguousarray), object arrays, or a payload whose
// size differs from shape x item size.
NpyArray parse_npy(const std::vector<uint8_t>& file, const std::string& where);
NpyArray read_npy(const std::string& path);  // Error naming the path when unreadable

// Every array of an .npz file, in archive order, named without the ".npy" suffix. Error naming
// the file (and the entry) for a damaged archive, a CRC mismatch, or an entry that is not .npy.
std::vector<std::pair<std::string, NpyArray>> read_npz(const std::string& path);

// True when the file starts with the zip signature (an .npz) rather than the .npy magic.
bool is_zip_file(const std::string& path);

// The .npy bytes of a tensor (any of the five dtypes; little-endian, version 1.0, C order).
std::vector<uint8_t> npy_bytes(const Tensor& t);
// Writes one .npy / an .npz of named arrays (stored, not compressed, as np.savez does), to
// path.tmp then renamed into place.
void write_npy(const std::string& path, const Tensor& t);
void write_npz(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& arrays);

}  // namespace cpoison::io
