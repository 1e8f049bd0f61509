// Readers for the standard binary dataset formats (internal to engine/data; users call
// load_dataset). Each returns images u8 [N,H,W,C] and labels i64 [N] on the CPU, reads at most
// `limit` records when limit > 0, and raises cpoison::Error naming the file and the fault.
// Formats (data/README.md has the details):
//   IDX (MNIST, Fashion-MNIST): big-endian header, magic 0x00000803 images / 0x00000801 labels,
//     optionally gzip-compressed (read through zlib's gzread, which also reads plain files).
//   CIFAR-10 binary: 3073-byte records <label u8><1024 R><1024 G><1024 B>, rows in order.
//   CIFAR-100 binary: 3074-byte records <coarse u8><fine u8><3072 pixels as CIFAR-10>.
//   STL-10 binary: 27648-byte images, channel planes of 96x96 stored column-major; labels u8 1..10.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/data/dataset.h"

namespace cpoison::data::detail {

// `stored` (optional) receives the count the header declares (before `limit`).
Tensor read_idx_images(const std::string& path, int64_t limit, int64_t* stored = nullptr);  // u8 [N,H,W,1]
Tensor read_idx_labels(const std::string& path, int64_t limit, int64_t* stored = nullptr);  // i64 [N]

// Built-in datasets from a root directory holding their files (or the folder their tarball
// unpacks to: cifar-10-batches-bin, cifar-100-binary, stl10_binary).
Dataset read_mnist_like(const std::string& name, const std::string& root, Split split, int64_t limit);
Dataset read_cifar10(const std::string& root, Split split, int64_t limit);
Dataset read_cifar100(const std::string& root, Split split, int64_t limit);
Dataset read_stl10(const std::string& root, Split split, int64_t limit);

// Error naming `file` unless every label is in [0, classes) (or -1 when allow_unlabeled).
void check_labels(const Tensor& labels, int64_t classes, const std::string& file, bool allow_unlabeled = false);

bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);

}  // namespace cpoison::data::detail
