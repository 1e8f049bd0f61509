// The installed library (issue #17): tests/install/check.sh installs this build into a temporary
// prefix, compiles every public header from there, builds examples/custom_flow and
// examples/custom_loss against it with pkg-config and runs them on a tiny dataset written here
// (32 images of 8x8, 4 classes). Skipped where meson, pkg-config, make or a C++ compiler is
// missing, or the test binary does not sit in a meson build folder.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/data/dataset.h"
#include "engine/rng.h"
#include "tests/support/cli.h"
#include "tests/support/skip.h"

using namespace cpoison;
namespace fs = std::filesystem;

namespace {
bool have(const std::string& program) { return std::system(("command -v " + program + " >/dev/null 2>&1").c_str()) == 0; }
}  // namespace

TEST_CASE("install into a temporary prefix, build both examples against it with pkg-config, run them") {
  const fs::path build = fs::path(testing::cpoison_exe()).parent_path();
  SKIP_UNLESS(!build.empty() && fs::exists(build / "meson-info"), "the test binary is not in a meson build folder");
  SKIP_UNLESS(fs::exists(CPOISON_SOURCE_DIR "/tests/install/check.sh"), "the source tree is not where it was built");
  {
    // A build folder copied to another machine still names its old source tree; meson install
    // would fail there for reasons that are not the library's.
    std::ifstream info(build / "meson-info" / "meson-info.json");
    std::stringstream text;
    text << info.rdbuf();
    SKIP_UNLESS(text.str().find("\"source\": \"" CPOISON_SOURCE_DIR "\"") != std::string::npos,
                "the build folder was configured for another source tree");
  }
  SKIP_UNLESS(have("meson") && have("pkg-config") && have("make") && have("c++"),
              "meson, pkg-config, make or c++ not found");
  testing::TempDir dir("install");

  Generator g(17);
  const int64_t n = 32;
  data::Dataset ds;
  ds.images = randint({n, 8, 8, 1}, 0, 256, g, DType::u8);
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % 4;
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 4;
  ds.name = "tiny";
  // An unknown dataset carries its normalisation constants (docs/poison-format.md); without
  // them every command asks for --normalize.
  ds.mean = {0.5};
  ds.std = {0.25};
  data::save_dataset_h5(dir / "tiny.h5", ds);

  const std::string log = dir / "check.log";
  const std::string cmd = "OMP_NUM_THREADS=1 sh '" CPOISON_SOURCE_DIR "/tests/install/check.sh' '" + build.string() + "' '" +
                          (dir / "tiny.h5") + "' '" + (dir / "work") + "' > '" + log + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  INFO("tests/install/check.sh said:\n" << text.str());
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK(text.str().find("both examples built") != std::string::npos);
}
