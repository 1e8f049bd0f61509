// Process start-up settings that must be in place before the OpenMP runtime initialises.
#pragma once
#include <cstdlib>
#include <unistd.h>

namespace cpoison {

// OpenMP's default "active" wait makes idle worker threads spin; on a 2-core machine shared with
// OpenBLAS (or any other process) that spinning starves the real work: a width-8 ResNet-18 step
// measured 40x slower. libgomp reads OMP_WAIT_POLICY only when it loads, so when the variable is
// unset we set it to passive and re-execute this program once. Users can still choose by setting it.
inline void ensure_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then carry on with the default policy
}

}  // namespace cpoison
