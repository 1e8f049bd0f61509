// The doctest runner. After doctest's own report it prints the line CI reads:
// "N passed, N failed, N skipped" counting test cases (skipped = needs a GPU or a dataset).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "engine/runtime.h"

#include "tests/support/skip.h"

int main(int argc, char** argv) {
  cpoison::ensure_passive_openmp_wait(argv);
  doctest::Context ctx(argc, argv);
  int rc = ctx.run();
  if (ctx.shouldExit()) return rc;
  const doctest::CurrentTestCaseStats* s = nullptr;
  (void)s;
  auto& counts = cpoison::testing::counts();
  long failed = counts.failed_cases;
  long skipped = counts.skipped_cases;
  long passed = counts.ran_cases - failed - skipped;
  std::printf("%ld passed, %ld failed, %ld skipped\n", passed, failed, skipped);
  return rc;
}
