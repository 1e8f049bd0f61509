// Pieces of the momentum (EMA) algorithms: the MoCo key queue as a ring buffer of unit-length
// rows, and the EMA step of a momentum copy. Shape letters: K queue length, D key dimension,
// B keys enqueued at once.
#pragma once
#include <cstdint>

#include "engine/nn/module.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpoison::algorithms {

// A [K, D] queue of random-normal rows, each normalised to unit length (MoCo's initial queue),
// drawn from `gen` (f32, on `device`). Error when K < 0 or D < 1.
Tensor make_key_queue(int64_t k, int64_t d, Generator& gen, Device device = Device::cpu);

// Writes the B rows of `keys` [B, D] into `queue` [K, D] starting at row `ptr`, wrapping around
// the end, and returns the new pointer (ptr + B) mod K. When B > K only the last K keys are
// kept (each lands where the ring would have put it). Values are copied outside autograd (the
// queue never carries a gradient). Error naming the shapes when D differs, ptr is outside
// [0, K), or the queue is empty while keys are not.
int64_t enqueue_ring(const Tensor& queue, int64_t ptr, const Tensor& keys);

// target.p <- momentum * target.p + (1 - momentum) * online.p for every parameter (buffers such
// as BN running statistics are left alone), outside autograd. Error when momentum is outside
// [0, 1] or the two modules' parameter names or shapes differ.
void ema_update(nn::Module& target, const nn::Module& online, double momentum);

}  // namespace cpoison::algorithms
