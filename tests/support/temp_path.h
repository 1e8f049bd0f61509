#pragma once
// A per-process name under the system's temporary folder, so that two test runs on one machine
// (two build folders, or CI next to a developer) never write each other's files.
#include <filesystem>
#include <string>
#include <unistd.h>

namespace cpoison::test {

inline std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "-" + name);
}

}  // namespace cpoison::test
