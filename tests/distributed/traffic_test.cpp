// The bytes each rank communicates (issue #15, distributed::traffic()): nothing with one rank,
// and under `mpirun -np 2 cpoison bench step` exactly the bytes of every collective of a SimCLR
// step, worked out here from the learner's parameters and BatchNorm layers.
#include <doctest/doctest.h>

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
  SKIP_UNLESS(distributed::mpi_compiled(), "built without MPI (libopenmpi-dev): no data-parallel test");
  const std::string mpirun = mpirun_path();
  SKIP_UNLESS(!mpirun.empty(), "mpirun not found (Debian openmpi-bin): no data-parallel test");
  SKIP_UNLESS(fs::exists(testing::cpoison_exe()), "the cpoison executable is not built beside the tests");
  testing::TempDir dir("mpi-traffic");
  const int64_t batch = 8, ranks = 2, rows = batch / ranks, proj_dim = 128;
  const std::string log = dir / "bench.log";
  const std::string cmd = "OMP_NUM_THREADS=1 '" + mpirun +
                          "' -np 2 --oversubscribe --allow-run-as-root --bind-to none --mca btl self,vader "
                          "--mca btl_vader_single_copy_mechanism none -x OMP_NUM_THREADS '" + testing::cpoison_exe() +
                          "' bench step --algo simclr --width 2 --size 8 --channels 1 --batch 8 --repeats 2 --warmup 0 > '" +
                          log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  std::string line, json_line;
  std::string output;
  while (std::getline(in, line)) {
    output += line + "\n";
    if (line.rfind("{\"algo\"", 0) == 0) json_line = line;
  }
  INFO("mpirun output:\n", output);
  REQUIRE(rc == 0);
  REQUIRE(!json_line.empty());
  const nlohmann::json j = nlohmann::json::parse(json_line);
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
