#include "tests/support/skip.h"

#include <set>

namespace cpoison::testing {

Counts& counts() {
  static Counts c;
  return c;
}

namespace {
const char* current_case = "";
std::set<std::string>& skipped_names() {
  static std::set<std::string> s;
  return s;
}

// Counts each test case once when it ends (doctest re-enters a case once per subcase).
struct CaseCounter : doctest::IReporter {
  explicit CaseCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData& d) override { current_case = d.m_name; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats& st) override {
    counts().ran_cases++;
    if (st.failure_flags) counts().failed_cases++;
  }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
}  // namespace

void mark_skipped(const std::string& why) {
  const char* name = current_case;
  if (skipped_names().insert(name).second) {
    counts().skipped_cases++;
    std::printf("[skipped] %s: %s\n", name, why.c_str());
  }
}

}  // namespace cpoison::testing

DOCTEST_REGISTER_LISTENER("case-counter", 1, cpoison::testing::CaseCounter);
