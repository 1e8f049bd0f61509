// One training step of a small model on a fixed global batch, run either by one process (the
// reference) or by each of K ranks under mpirun on its slice of the same batch (issue #15's
// equivalence tests). Shared by cpoison-tests and the helper cpoison-mpi-steps.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cpoison::testing {

struct StepResult {
  double loss = 0;            // of the global batch (the mean over ranks of the ranks' losses)
  std::vector<double> state;  // every parameter after the SGD step, then every float buffer
                              // (BatchNorm running statistics), in state-dict order
  std::vector<std::pair<std::string, size_t>> tensors;  // name and length of each part of state
                                                        // (not in the file: the layout is fixed)
};

// SimCLR: ResNet-18 (width 4) + projector with BatchNorm, both views through the backbone in
// one call, NT-Xent (temperature 0.5), SGD with momentum and weight decay. Under mpirun: SyncBN,
// global negatives, averaged gradients.
StepResult simclr_step(int64_t global_batch);
// Supervised: ResNet-18 (width 4) with its linear head, cross-entropy on 10 classes; SyncBN
// under mpirun.
StepResult supervised_step(int64_t global_batch);
// MoCo v2: ResNet-18 (width 4), projector to 16, a queue of 4 * global_batch keys, the loss of
// (query = online(view1), key = momentum(view2)) against the queue, SGD, then the EMA of the
// momentum copies. Under mpirun: SyncBN (the key encoder's too), every rank's keys enqueued in
// rank order, averaged gradients. The state holds the momentum copies and the queue.
StepResult moco_step(int64_t global_batch);
// "simclr", "supervised" or "moco"; Error otherwise.
StepResult run_step(const std::string& which, int64_t global_batch);

// Binary file of loss then state (doubles), and back.
void write_result(const std::string& path, const StepResult& r);
StepResult read_result(const std::string& path);

}  // namespace cpoison::testing
