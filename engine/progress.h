// What long runs print about time: one duration format for every progress line, ETA and table
// (training, poisoning, the experiment runner).
#pragma once
#include <string>

namespace cpoison {

// "1h05m", "3m07s", "12.3s"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);

}  // namespace cpoison
