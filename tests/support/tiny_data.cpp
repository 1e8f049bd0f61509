#include "tests/support/tiny_data.h"

#include <vector>

namespace cpoison::testing {

data::Dataset tiny_dataset(int64_t n, uint32_t seed, const std::string& name) {
  const int64_t h = 8, w = 8;
  std::vector<uint8_t> px((size_t)(n * h * w));
  uint32_t state = seed;
  for (auto& v : px) {
    state = state * 1664525u + 1013904223u;
    v = (uint8_t)(state >> 24);
  }
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {n, h, w, 1});
  std::vector<int64_t> labels((size_t)n);
  for (int64_t i = 0; i < n; ++i) labels[(size_t)i] = i % 4;
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 4;
  ds.name = name;
  return ds;
}

std::string write_tiny_dataset(const std::string& path, int64_t n, uint32_t seed) {
  data::save_dataset_h5(path, tiny_dataset(n, seed), data::Split::train);
  return path;
}

}  // namespace cpoison::testing
