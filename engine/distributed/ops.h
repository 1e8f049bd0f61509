// Differentiable collectives and the data-parallel pieces of a training step (issue #15).
// Tensors may live on any device; the collectives of CUDA tensors run on the GPU through NCCL
// when nccl_active() (comm.h), and otherwise on the CPU (a CUDA tensor is copied to the host and
// back). With one rank every function is the identity (or a plain copy). `kind` says what the
// traffic counters (comm.h) count the bytes as, forward and backward alike.
#pragma once
#include <vector>

#include "engine/distributed/comm.h"
#include "engine/tensor.h"

namespace cpoison::distributed {

// The sum over ranks of x (same shape on every rank). Backward: the gradient of the output,
// summed over ranks (every rank's loss depends on every rank's x).
Tensor all_reduce_sum(const Tensor& x, Traffic kind = Traffic::other);

// Every rank's rows, concatenated in rank order: x [b, ...] (b equal on all ranks) gives
// [size() * b, ...]. Backward: the incoming gradient is summed over ranks and each rank keeps
// the rows of its own x (the global loss is the sum of the ranks' losses).
Tensor all_gather_rows(const Tensor& x, Traffic kind = Traffic::other);

// This rank's slice of a global batch along dim 0 (local_slice): a view, differentiable.
Tensor local_rows(const Tensor& x, const char* where = "local_rows");

// SyncBN: batch norm in training mode with the statistics of the global batch (every rank's
// rows): mean and biased variance from sums all-reduced over the ranks, the running statistics
// updated with the global mean and unbiased variance (identically on every rank). Built from
// differentiable ops and all_reduce_sum, so its backward all-reduces the two gradient sums
// (of g and of g·x̂) as it must. weight/bias/running stats may be undefined as in batch_norm.
// Counted as Traffic::batch_norm.
Tensor sync_batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                       const Tensor& running_var, double momentum, double eps);

// Replaces the accumulated .grad of every tensor by its sum over the ranks (average: its mean,
// the sum divided by size()), through one flattened buffer per dtype. A tensor that has no
// gradient on any rank keeps none; one that has it on some rank only gets the sum (zeros
// elsewhere). Call after backward and before the optimiser step. With average, a step whose
// rank losses are means over the rank's rows gets the gradient of the mean over the global
// batch (each rank's loss is local; all_gather_rows and SyncBN route the cross-rank terms).
// Counted as Traffic::gradients.
void all_reduce_gradients(const std::vector<Tensor>& params, bool average = true);

}  // namespace cpoison::distributed
