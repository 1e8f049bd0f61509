// The algorithms' side of data-parallel training over MPI (issue #15, engine/distributed/).
// One rank holds rows [rank*b, (rank+1)*b) of the global batch of K*b rows (local_rows); its
// loss is the mean over its own rows, and the step averages the gradients over the ranks
// (distributed::all_reduce_gradients), which gives the gradient of the global mean. Terms that
// couple rows of different ranks are made global explicitly: NT-Xent's negatives here, batch
// norm statistics in the engine (SyncBN), both only inside a distributed::DataParallelScope.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "algorithms/learner.h"
#include "engine/distributed/comm.h"
#include "engine/distributed/ops.h"
#include "engine/tensor.h"

namespace cpoison::algorithms {

// NT-Xent with the global batch: the anchors are this rank's 2b rows (its rows of z1 and of
// z2), the candidates all 2Kb rows of every rank (all_gather_rows), the self-pair left out as
// in nt_xent_loss. Returns the mean over this rank's anchors; the mean of these over the ranks
// is nt_xent_loss of the global batch, and the gradient reaching another rank's rows goes back
// to it through all_gather_rows' backward. With one rank it is nt_xent_loss.
// nt_xent_loss calls it inside a DataParallelScope when there is more than one rank.
Tensor nt_xent_loss_global(const Tensor& z1, const Tensor& z2, double temperature);

// The training loop's pieces (algorithms/train.cpp). data_parallel_training: whether train()
// runs data-parallel (more than one rank); an Error when batch_size does not split evenly over
// the ranks. (MoCo's queue: enqueue_ring gathers the keys of every rank, algorithms/momentum.cpp.)
bool data_parallel_training(Algo algo, int64_t batch_size);
// The mean over the ranks of a one-element loss (every rank gets it): the global batch's loss
// when each rank's loss is the mean over its rows.
double global_mean(const Tensor& loss);
std::vector<Tensor> parameter_list(const std::vector<std::pair<std::string, Tensor>>& named);

}  // namespace cpoison::algorithms
