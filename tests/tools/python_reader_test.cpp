// python/cpoison_data.py (the Python reader) against cpoison's own files: the README's 3-line
// example runs, and the reader applies poisons exactly as `cpoison export` does; and
// tools/python/torch_to_h5.py with a stand-in torch module (PyTorch is not needed). Runs
// tests/python/test_cpoison_data.py with a python3 that has h5py (Debian's python3-h5py);
// skipped, and reported as skipped, when there is none.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/data/dataset.h"
#include "tests/support/cli.h"
#include "tests/support/skip.h"

using namespace cpoison;
namespace fs = std::filesystem;
using namespace cpoison::testing;

namespace {
std::string python_with_h5py() {
  // Debian's python3-h5py lives beside /usr/bin/python3; a PATH python3 may lack it.
  for (std::string candidate : {"python3", "/usr/bin/python3"})
    if (std::system((candidate + " -c 'import h5py, numpy' >/dev/null 2>&1").c_str()) == 0) return candidate;
  return "";
}
}  // namespace

TEST_CASE("python/cpoison_data.py: the README example runs and poisons match cpoison export exactly") {
  SKIP_UNLESS(fs::exists(cpoison_exe()), "the cpoison executable is not built beside the tests");
  const std::string python = python_with_h5py();
  SKIP_UNLESS(!python.empty(), "python3 with h5py not available (Debian: python3-h5py)");
  TempDir dir("pyreader");
  fs::create_directories(dir / "data");
  {
    const int64_t n = 40;
    std::vector<uint8_t> px(n * 64);
    uint32_t state = 99u;
    for (auto& v : px) {
      state = state * 1664525u + 1013904223u;
      v = (uint8_t)(state >> 24);
    }
    px[0] = 255, px[1] = 0, px[2] = 254;  // pixels at the ends of the range exercise the clamps
    std::vector<int64_t> labels(n);
    for (int64_t i = 0; i < n; ++i) labels[i] = i % 4;
    data::Dataset ds;
    ds.images = Tensor::from_vector(px, {n, 8, 8, 1});
    ds.labels = Tensor::from_vector(labels, {n});
    ds.classes = 4;
    ds.name = "tiny";
    data::save_dataset_h5(dir / "data/train.h5", ds, data::Split::train);
  }
  const std::string d = " --data '" + (dir / "data/train.h5") + "' --progress-seconds -1 --out '";
  for (const std::string& cmd :
       {"poison --attack random --subset 24 --subset-seed 3 --seed 1" + d + (dir / "poison.h5") + "'",
        "export '" + (dir / "poison.h5") + "' --out '" + (dir / "exp") + "'",
        "poison --attack random --kind class --eps 0.032 --seed 2" + d + (dir / "class.h5") + "'",
        "export '" + (dir / "class.h5") + "' --out '" + (dir / "exp-class") + "'"}) {
    RunResult r = run_cpoison(cmd);
    INFO(cmd, "\n", r.output);
    REQUIRE(r.code == 0);
  }
  const std::string script = std::string(CPOISON_SOURCE_DIR) + "/tests/python/test_cpoison_data.py";
  const std::string cmd = "cd '" + dir.path.string() + "' && " + python + " '" + script + "' '" + CPOISON_SOURCE_DIR + "' '" + cpoison_exe() + "' 2>&1";
  std::string output;
  FILE* pipe = popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, got);
  const int status = pclose(pipe);
  INFO(output);
  CHECK(status == 0);
  CHECK(output.find("torch_to_h5 ok") != std::string::npos);
  CHECK(output.find("python-reader-ok") != std::string::npos);
}
