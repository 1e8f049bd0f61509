// Small readers shared by the experiment cells, `evaluate` and `detect`: a run's data options
// from its settings, and optional root attributes of a poison or dataset file.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>

#include "engine/io/hdf5.h"
#include "tools/common.h"
#include "tools/experiment/settings.h"

namespace cpoison::tools::experiment {

inline DataOptions data_options(const DataSettings& d, const std::string& root) {
  DataOptions o;
  o.data = d.dataset;
  o.data_root = root;
  o.subset = d.subset;
  o.subset_seed = (uint64_t)d.subset_seed;
  o.pad_to = d.pad_to;
  o.channels = d.channels;
  return o;
}

// The string attribute `key`, or "" when it is absent or not a string.
inline std::string attr_text(const io::Attrs& a, const std::string& key) {
  auto it = a.find(key);
  if (it == a.end()) return "";
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  return "";
}

// The integer attribute `key` (a float is rounded), or fallback when it is absent or not a number.
inline int64_t attr_number(const io::Attrs& a, const std::string& key, int64_t fallback) {
  auto it = a.find(key);
  if (it == a.end()) return fallback;
  if (auto* i = std::get_if<int64_t>(&it->second)) return *i;
  if (auto* d = std::get_if<double>(&it->second)) return (int64_t)std::llround(*d);
  return fallback;
}

}  // namespace cpoison::tools::experiment
