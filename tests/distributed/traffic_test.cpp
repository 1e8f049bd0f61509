// The bytes each rank communicates (issue #15, distributed::traffic()): nothing with one rank,
// and under `mpirun -np 2 cpoison bench step` exactly the bytes of every collective of a SimCLR
// step, worked out here from the learner's parameters and BatchNorm layers. And `bench step`
// under mpirun trains as one process does: on the CPU, and on CUDA where a GPU exists (through
// NCCL when each rank has a GPU of its own, else through the host).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "algorithms/learner.h"
#include "engine/distributed/comm.h"
#include "engine/distributed/ops.h"
#include "engine/rng.h"
#include "engine/runtime.h"
#include "tests/support/cli.h"
#include "tests/support/skip.h"

namespace fs = std::filesystem;
using namespace cpoison;

namespace {

std::string mpirun_path() {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  for (std::string dir; std::getline(ss, dir, ':');)
    if (!dir.empty() && fs::exists(fs::path(dir) / "mpirun")) return (fs::path(dir) / "mpirun").string();
  return "";
}

// Runs `cpoison bench step <args>` (under `mpirun -np 2` when `mpirun` is not empty, with the
// transport line of the other distributed tests) and returns its JSON line; REQUIREs success.
nlohmann::json bench_step(const std::string& mpirun, const std::string& args) {
  testing::TempDir dir("mpi-bench");
  const std::string log = dir / "bench.log";
  const std::string launcher = mpirun.empty() ? std::string()
                                              : "'" + mpirun + "' -np 2 --oversubscribe --allow-run-as-root --bind-to none "
                                                "--mca btl self,vader --mca btl_vader_single_copy_mechanism none "
                                                "-x OMP_NUM_THREADS ";
  const std::string cmd = "OMP_NUM_THREADS=1 " + launcher + "'" + testing::cpoison_exe() + "' bench step " + args +
                          " > '" + log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  std::string line, json_line, output;
  while (std::getline(in, line)) {
    output += line + "\n";
    if (line.rfind("{\"algo\"", 0) == 0) json_line = line;
  }
  INFO("bench step output:\n", output);
  REQUIRE(rc == 0);
  REQUIRE(!json_line.empty());
  return nlohmann::json::parse(json_line);
}

// Both launches need these; SKIP_UNLESS returns from the test case, so it is a macro here too.
#define SKIP_UNLESS_MPIRUN(mpirun)                                                                              \
  SKIP_UNLESS(distributed::mpi_compiled(), "built without MPI (libopenmpi-dev): no data-parallel test");        \
  SKIP_UNLESS(!(mpirun).empty(), "mpirun not found (Debian openmpi-bin): no data-parallel test");              \
  SKIP_UNLESS(fs::exists(testing::cpoison_exe()), "the cpoison executable is not built beside the tests")

// Two SimCLR steps (the second loss depends on the first update, so on the gradient all-reduce)
// with 2 ranks and with one process: the same loss within rounding.
void compare_bench_with_one_process(const std::string& device) {
  const std::string mpirun = mpirun_path();
  SKIP_UNLESS_MPIRUN(mpirun);
  const std::string args = "--algo simclr --width 2 --size 8 --channels 1 --batch 8 --repeats 2 --warmup 0 --device " + device;
  const nlohmann::json two = bench_step(mpirun, args), one = bench_step("", args);
  const double a = two["final_loss"].get<double>(), b = one["final_loss"].get<double>();
  char line[256];
  std::snprintf(line, sizeof line, "bench step on %s, 2 ranks%s vs 1: second-step loss %.9g vs %.9g", device.c_str(),
                two["nccl"].get<bool>() ? " (NCCL)" : " (host collectives)", a, b);
  MESSAGE(line);
  CHECK(two["ranks"].get<int>() == 2);
  CHECK(std::fabs(a - b) <= 1e-5 * std::fabs(b));
}

}  // namespace

TEST_CASE("distributed: with one rank the collectives communicate nothing and count nothing") {
  distributed::reset_traffic();
  Generator g(7, 0);
  Tensor x = uniform({6, 3}, -1, 1, g);
  (void)distributed::all_reduce_sum(x, distributed::Traffic::batch_norm);
  (void)distributed::all_gather_rows(x, distributed::Traffic::features);
  (void)distributed::all_reduce_sum(1.5, distributed::Traffic::other);
  for (const distributed::TrafficCount& c : distributed::traffic()) {
    CHECK(c.calls == 0);
    CHECK(c.buffer_bytes == 0);
    CHECK(c.sent_bytes == 0);
  }
  CHECK(std::string(distributed::traffic_name(distributed::Traffic::moco_keys)) == "moco_keys");
}

TEST_CASE("distributed: mpirun -np 2 cpoison bench step --algo simclr counts exactly the bytes of its collectives") {
  const std::string mpirun = mpirun_path();
  SKIP_UNLESS_MPIRUN(mpirun);
  const int64_t batch = 8, ranks = 2, rows = batch / ranks, proj_dim = 128;
  const nlohmann::json j = bench_step(mpirun, "--algo simclr --width 2 --size 8 --channels 1 --batch 8 --repeats 2 --warmup 0");
  CHECK(j["ranks"].get<int>() == 2);
  const nlohmann::json& t = j["traffic_per_step"];

  // The same learner in this process: its trained parameters and BatchNorm layers.
  models::ModelOptions mo;
  mo.width = 2;
  mo.in_channels = 1;
  mo.num_classes = 0;
  auto learner = algorithms::make_learner(algorithms::Algo::simclr, "resnet18", mo,
                                          algorithms::AlgoConfig::defaults(algorithms::Algo::simclr));
  int64_t values = 0, tensors = 0, bn_layers = 0, bn_channels = 0;
  for (const Tensor& p : learner->online_parameters()) values += p.numel(), tensors += 1;
  for (const auto& [name, buffer] : learner->state_dict())
    if (name.size() > 13 && name.compare(name.size() - 13, 13, ".running_mean") == 0)
      bn_layers += 1, bn_channels += buffer.numel();
  REQUIRE(bn_layers > 0);
  CHECK(j["parameters"].get<int64_t>() == values);

  // K = 2: an all-reduce sends 2(K-1)/K = all of its buffer, an all-gather (K-1)/K = half.
  // Gradients: which tensors have a gradient (one double each), then every f32 gradient.
  CHECK(t["gradients"]["calls"].get<int64_t>() == 2);
  CHECK(t["gradients"]["buffer_bytes"].get<int64_t>() == 8 * tensors + 4 * values);
  CHECK(t["gradients"]["sent_bytes"].get<int64_t>() == 8 * tensors + 4 * values);
  // SyncBN, per layer: forward the value count (one double), the per-channel sum and centred sum
  // of squares (C doubles each); backward the two gradient sums (C doubles each).
  CHECK(t["batch_norm"]["calls"].get<int64_t>() == 5 * bn_layers);
  CHECK(t["batch_norm"]["buffer_bytes"].get<int64_t>() == 8 * bn_layers + 4 * 8 * bn_channels);
  CHECK(t["batch_norm"]["sent_bytes"].get<int64_t>() == 8 * bn_layers + 4 * 8 * bn_channels);
  // NT-Xent's negatives, for each of the two views: forward the row counts (one i64 per rank)
  // and the rows [K*b, 128] f32; backward their gradient [K*b, 128] all-reduced.
  const int64_t gathered = ranks * rows * proj_dim * 4;
  CHECK(t["features"]["calls"].get<int64_t>() == 6);
  CHECK(t["features"]["buffer_bytes"].get<int64_t>() == 2 * (ranks * 8 + gathered) + 2 * gathered);
  CHECK(t["features"]["sent_bytes"].get<int64_t>() == 2 * (8 + gathered / 2) + 2 * gathered);
  CHECK(t["moco_keys"]["calls"].get<int64_t>() == 0);
  // The loss printed: one double.
  CHECK(t["other"]["calls"].get<int64_t>() == 1);
  CHECK(t["other"]["buffer_bytes"].get<int64_t>() == 8);
  int64_t sent = 0;
  for (const auto& kind : t) sent += kind["sent_bytes"].get<int64_t>();
  CHECK(j["sent_bytes_per_step"].get<int64_t>() == sent);
}

TEST_CASE("distributed: mpirun -np 2 cpoison bench step trains as one process (CPU)") {
  compare_bench_with_one_process("cpu");
}

TEST_CASE("distributed: mpirun -np 2 cpoison bench step --device cuda trains as one process (NCCL or host collectives)") {
  SKIP_UNLESS(cuda_available(), "no usable CUDA GPU (or a build without the CUDA backend)");
  compare_bench_with_one_process("cuda");
}
