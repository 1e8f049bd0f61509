// Helpers for tests that run the built `cpoison` executable (it sits beside cpoison-tests).
#pragma once
#include <filesystem>
#include <string>

namespace cpoison::testing {

// The cpoison executable beside the running test binary ("" when /proc/self/exe is unreadable).
std::string cpoison_exe();

struct RunResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `cpoison args` (args already shell-quoted where needed) on one thread.
RunResult run_cpoison(const std::string& args);

// A fresh, empty temporary folder named after `tag`, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "cli");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace cpoison::testing
