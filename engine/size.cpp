#include "engine/size.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "engine/error.h"

namespace cpoison {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  detail::put(os, shape);
  return os.str();
}

std::string bytes_text(uint64_t bytes) {
  char buf[64];
  if (bytes >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", (double)bytes / (double)(1ull << 30));
  else if (bytes >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", (double)bytes / (double)(1ull << 20));
  else std::snprintf(buf, sizeof buf, "%llu bytes", (unsigned long long)bytes);
  return buf;
}

// "MemAvailable:  123456 kB" from /proc/meminfo, in bytes (0 when absent).
uint64_t meminfo_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

// memory.max - memory.current of this process's cgroup (v2), or 0 when unlimited or unknown.
uint64_t cgroup_available() {
  std::ifstream self("/proc/self/cgroup");
  std::string line, rel;
  while (std::getline(self, line))
    if (line.rfind("0::", 0) == 0) rel = line.substr(3);
  if (rel.empty()) return 0;
  const std::string dir = "/sys/fs/cgroup" + (rel == "/" ? std::string() : rel);
  std::ifstream max_in(dir + "/memory.max"), cur_in(dir + "/memory.current");
  std::string max_text;
  uint64_t current = 0;
  if (!(max_in >> max_text) || max_text == "max" || !(cur_in >> current)) return 0;
  uint64_t limit = std::strtoull(max_text.c_str(), nullptr, 10);
  return limit > current ? limit - current : 1;
}

}  // namespace

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& where, int64_t max_axis) {
  // The product of the non-zero sizes must fit even when another size is 0: a later product over
  // some of the axes (rows times row size) would overflow.
  int64_t nonzero = 1;
  bool overflow = false, zero = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    CP_CHECK(d >= 0, where, "shape ", shape_text(shape), " has a negative size (", d, ") on axis ", i);
    CP_CHECK(d <= max_axis, where, "shape ", shape_text(shape), ": axis ", i, " holds ", d,
             " elements, above the limit of ", max_axis, " per axis");
    if (d == 0) zero = true;
    else if (!overflow && nonzero > std::numeric_limits<int64_t>::max() / d) overflow = true;
    else if (!overflow) nonzero *= d;
  }
  CP_CHECK(!overflow, where, "shape ", shape_text(shape), " has more elements than a 64-bit count holds");
  return zero ? 0 : nonzero;
}

int64_t checked_mul(int64_t a, int64_t b, const std::string& where) { return checked_numel({a, b}, where, a > b ? a : b); }

uint64_t available_memory() {
  uint64_t mem = meminfo_available(), group = cgroup_available();
  if (mem == 0) return group;
  if (group == 0) return mem;
  return std::min(mem, group);
}

void check_allocation(uint64_t bytes, const std::string& where) {
  const uint64_t avail = available_memory();
  CP_CHECK(avail == 0 || bytes <= avail, where, "needs ", bytes_text(bytes), " of memory but only ", bytes_text(avail),
           " is available");
}

void check_range(int64_t value, int64_t lo, int64_t hi, const std::string& where) {
  CP_CHECK(value >= lo && value <= hi, where, "must be in [", lo, ", ", hi, "], got ", value);
}

void check_range(double value, double lo, double hi, const std::string& where) {
  CP_CHECK(std::isfinite(value) && value >= lo && value <= hi, where, "must be a finite number in [", lo, ", ", hi,
           "], got ", value);
}

}  // namespace cpoison
