// The tiny labelled image sets the command-line tests train, poison and import: n pseudo-random
// 8x8x1 images (a fixed linear congruential stream from `seed`), labels i % 4, four classes.
#pragma once
#include <cstdint>
#include <string>

#include "engine/data/dataset.h"

namespace cpoison::testing {

data::Dataset tiny_dataset(int64_t n, uint32_t seed, const std::string& name = "tiny");

// tiny_dataset(n, seed) saved as the training split of an HDF5 dataset file at `path`; returns path.
std::string write_tiny_dataset(const std::string& path, int64_t n, uint32_t seed);

}  // namespace cpoison::testing
