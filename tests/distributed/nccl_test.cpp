// NCCL collectives on CUDA memory (issue #15, comm.h): with one rank (a communicator of one,
// made without mpirun), where a GPU exists, against the host collectives and the input. What
// they check: the communicator bootstrap, the device pointers and element types, the ordering
// on the backend's stream (the results are read right after), and the traffic counters.
// Skipped without NCCL (in the build, or its library at run time) or without a GPU.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "engine/distributed/comm.h"
#include "engine/rng.h"
#include "engine/runtime.h"
#include "engine/tensor.h"
#include "tests/support/skip.h"

using namespace cpoison;

TEST_CASE("distributed: NCCL all-reduce and all-gather of CUDA memory equal the host collectives (one rank)") {
  SKIP_UNLESS(distributed::nccl_available(),
              "no NCCL: built without it (-Dnccl needs the CUDA backend and MPI), or libnccl.so.2 does not open");
  SKIP_UNLESS(cuda_available(), "no usable CUDA GPU: the NCCL collectives cannot run");
  REQUIRE(distributed::size() == 1);
  Generator g(11, 0);
  // An odd length, so that no chunking or alignment hides a wrong count.
  const int64_t n = 100003;
  Tensor x32 = uniform({n}, -1, 1, g, DType::f32, Device::cpu);
  Tensor x64 = uniform({n}, -1, 1, g, DType::f64, Device::cpu);
  std::vector<float> host32 = x32.to_vector<float>();
  std::vector<double> host64 = x64.to_vector<double>();
  distributed::all_reduce_sum(host32.data(), host32.size(), distributed::Traffic::gradients);
  distributed::all_reduce_sum(host64.data(), host64.size(), distributed::Traffic::batch_norm);

  distributed::reset_traffic();
  Tensor d32 = x32.to(Device::cuda).clone(), d64 = x64.to(Device::cuda).clone();
  distributed::nccl_all_reduce_sum(d32.data<float>(), (size_t)n, distributed::Traffic::gradients);
  distributed::nccl_all_reduce_sum(d64.data<double>(), (size_t)n, distributed::Traffic::batch_norm);
  CHECK(d32.to(Device::cpu).to_vector<float>() == host32);
  CHECK(d64.to(Device::cpu).to_vector<double>() == host64);

  // All-gather of rows: [5, 7] f32 gives [size() * 5, 7], this rank's rows in its place.
  Tensor rows = uniform({5, 7}, -1, 1, g, DType::f32, Device::cpu);
  const size_t bytes = (size_t)rows.numel() * sizeof(float);
  std::vector<float> host_out((size_t)distributed::size() * rows.numel());
  distributed::all_gather(rows.data<float>(), bytes, host_out.data(), distributed::Traffic::features);
  Tensor d_rows = rows.to(Device::cuda);
  Tensor d_out = Tensor::empty({5 * distributed::size(), 7}, DType::f32, Device::cuda);
  distributed::nccl_all_gather(d_rows.raw_data(), bytes, d_out.raw_data(), distributed::Traffic::features);
  CHECK(d_out.to(Device::cpu).to_vector<float>() == host_out);

  // Counted with one rank: one collective each, its buffer, nothing sent.
  const distributed::TrafficCounts t = distributed::traffic();
  CHECK(t[(int)distributed::Traffic::gradients].calls == 1);
  CHECK(t[(int)distributed::Traffic::gradients].buffer_bytes == n * 4);
  CHECK(t[(int)distributed::Traffic::batch_norm].buffer_bytes == n * 8);
  CHECK(t[(int)distributed::Traffic::features].buffer_bytes == (int64_t)bytes);
  for (const distributed::TrafficCount& c : t) CHECK(c.sent_bytes == 0);
}
