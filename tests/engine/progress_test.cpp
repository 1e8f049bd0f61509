#include <doctest/doctest.h>

#include <cmath>

#include "engine/progress.h"

using namespace cpoison;

TEST_CASE("format_duration: seconds with one decimal, then minutes and seconds, then hours and minutes") {
  CHECK(format_duration(0) == "0.0s");
  CHECK(format_duration(12.34) == "12.3s");
  CHECK(format_duration(59.9) == "59.9s");
  CHECK(format_duration(60) == "1m00s");
  CHECK(format_duration(187.6) == "3m07s");
  CHECK(format_duration(3600) == "1h00m");
  CHECK(format_duration(3600 + 5 * 60 + 59) == "1h05m");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(NAN) == "?");
  CHECK(format_duration(INFINITY) == "?");
}
