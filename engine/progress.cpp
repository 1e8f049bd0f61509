#include "engine/progress.h"

#include <cmath>
#include <cstdio>

namespace cpoison {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", (int)(s / 3600), (int)std::fmod(s / 60, 60));
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", (int)(s / 60), (int)std::fmod(s, 60));
  else std::snprintf(buf, sizeof buf, "%.1fs", s);
  return buf;
}

}  // namespace cpoison
