#include "tests/support/cli.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace cpoison::testing {

namespace fs = std::filesystem;

std::string cpoison_exe() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : (self.parent_path() / "cpoison").string();
}

RunResult run_cpoison(const std::string& args) {
  std::string cmd = "OMP_NUM_THREADS=1 '" + cpoison_exe() + "' " + args + " 2>&1";
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, got);
  int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TempDir::TempDir(const std::string& tag) {
  static int counter = 0;
  path = fs::temp_directory_path() /
         ("cpoison-" + tag + "-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(path);
  fs::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path, ec);
}

}  // namespace cpoison::testing
