// Test-case bookkeeping for the closing "N passed, N failed, N skipped" line, and SKIP_UNLESS,
// which ends a test case early and counts it as skipped (never as passed).
#pragma once
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

namespace cpoison::testing {
struct Counts {
  long ran_cases = 0, failed_cases = 0, skipped_cases = 0;
};
Counts& counts();
void mark_skipped(const std::string& why);
}  // namespace cpoison::testing

#define SKIP_UNLESS(cond, why)                 \
  do {                                         \
    if (!(cond)) {                             \
      ::cpoison::testing::mark_skipped(why);   \
      return;                                  \
    }                                          \
  } while (0)
