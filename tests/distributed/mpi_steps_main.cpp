// cpoison-mpi-steps <simclr|supervised|moco> <global batch> <out file>: one training step (steps.h)
// on this rank's slice of the global batch; rank 0 writes the result. Run by
// tests/distributed/distributed_test.cpp under `mpirun -np 2`.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>

#include "engine/distributed/comm.h"
#include "tests/distributed/steps.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s simclr|supervised|moco GLOBAL_BATCH OUT\n", argv[0]);
    return 2;
  }
  try {
    cpoison::testing::StepResult r = cpoison::testing::run_step(argv[1], std::atoll(argv[2]));
    if (cpoison::distributed::is_root()) {
      std::string tmp = std::string(argv[3]) + ".tmp";
      cpoison::testing::write_result(tmp, r);
      if (std::rename(tmp.c_str(), argv[3]) != 0) throw std::runtime_error("cannot rename " + tmp);
    }
    std::fprintf(stderr, "rank %d of %d: loss %.9g\n", cpoison::distributed::rank(), cpoison::distributed::size(), r.loss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", cpoison::distributed::rank(), e.what());
    cpoison::distributed::abort_all(1);
    return 1;
  }
  return 0;
}
