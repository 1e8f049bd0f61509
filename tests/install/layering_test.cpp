// The layer arrows of docs/ARCHITECTURE.md, checked on the source tree: a file in one top-level
// folder includes only headers of its own folder or of folders above it (engine, models, augment,
// algorithms, poison, defense, tools), and engine/backend/ stays private to the engine. The
// executable's benchmarks and version report time and name the kernels themselves, so they are
// the listed exceptions.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "tests/support/skip.h"

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kLayers = {"engine", "models", "augment", "algorithms", "poison", "defense", "tools"};

int layer_of(const std::string& folder) {
  auto it = std::find(kLayers.begin(), kLayers.end(), folder);
  return it == kLayers.end() ? -1 : (int)(it - kLayers.begin());
}

// Files outside engine/ allowed to include engine/backend/ headers, and why.
const std::set<std::string> kBackendExceptions = {
    "tools/bench.cpp",        // times oneDNN against the reference convolution kernels
    "tools/bench_step.cpp",   // reports the conv kernels in use and the host allocator's counters
    "tools/version.cpp",      // names the oneDNN version the CPU convolutions run on
};

// Every `#include "a/b..."` of the files under root/folder that breaks the arrows.
std::vector<std::string> violations(const fs::path& root) {
  std::vector<std::string> out;
  const std::regex include_re(R"re(^\s*#\s*include\s+"([^"]+)")re");
  for (const std::string& folder : kLayers) {
    const int layer = layer_of(folder);
    for (const auto& entry : fs::recursive_directory_iterator(root / folder)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || (ext != ".h" && ext != ".cpp" && ext != ".cu" && ext != ".cuh")) continue;
      const std::string rel = fs::relative(entry.path(), root).generic_string();
      std::ifstream in(entry.path());
      std::string line;
      for (int number = 1; std::getline(in, line); ++number) {
        std::smatch m;
        if (!std::regex_search(line, m, include_re)) continue;
        const std::string inc = m[1].str();
        const std::string top = inc.substr(0, inc.find('/'));
        const int target = layer_of(top);
        if (target > layer)
          out.push_back(rel + ":" + std::to_string(number) + " (" + folder + ") includes " + inc + " from a layer below it");
        if (inc.rfind("engine/backend/", 0) == 0 && folder != "engine" && !kBackendExceptions.count(rel))
          out.push_back(rel + ":" + std::to_string(number) + " includes the engine's private " + inc +
                        " (use the ops in engine/ops/ or engine/runtime.h)");
      }
    }
  }
  return out;
}

}  // namespace

TEST_CASE("layers: includes follow the arrows of docs/ARCHITECTURE.md; engine/backend is private to the engine") {
  const fs::path root = CPOISON_SOURCE_DIR;
  SKIP_UNLESS(fs::exists(root / "engine" / "backend" / "dispatch.h"), "the source tree is not where it was built");
  const std::vector<std::string> bad = violations(root);
  std::string all;
  for (const auto& b : bad) all += b + "\n";
  CHECK_MESSAGE(bad.empty(), all);
}

TEST_CASE("layers: the check finds a crossing include") {
  // A throw-away tree with one arrow broken each way.
  const fs::path root = fs::temp_directory_path() / ("cpoison-layering-" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const auto& f : kLayers) fs::create_directories(root / f);
  std::ofstream(root / "models" / "m.h") << "#include \"poison/p.h\"\n";
  std::ofstream(root / "defense" / "d.cpp") << "#include \"engine/backend/linalg.h\"\n#include \"engine/ops/ops.h\"\n";
  std::ofstream(root / "tools" / "bench.cpp") << "#include \"engine/backend/dispatch.h\"\n";
  const std::vector<std::string> bad = violations(root);
  fs::remove_all(root);
  REQUIRE(bad.size() == 2);
  CHECK(bad[0].find("models/m.h:1 (models) includes poison/p.h") != std::string::npos);
  CHECK(bad[1].find("defense/d.cpp:1 includes the engine's private engine/backend/linalg.h") != std::string::npos);
}
