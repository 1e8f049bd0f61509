// Tape-based reverse-mode autograd.
//
// Every op that has an input requiring a gradient (and runs while recording is on) appends a
// Node to the tape: its inputs, its output's id and a backward function written beside the
// forward. backward()/grad() walk the tape in reverse, accumulate gradients by tensor id and
// skip nodes that lead to no wanted leaf. A backward function is told which inputs need a
// gradient, so a conv with a frozen weight computes no weight gradient.
//
// The tape is per thread. backward()/grad() clear it unless keep_graph is set; code that runs
// forward passes it never differentiates should do so inside a NoGradGuard (or call clear_tape).
//
// Memory: a node holds no handle to its inputs or output (only their ids and shapes, and a weak
// handle to a leaf); what stays alive is what its backward function captured, which is what that
// backward needs (see engine/ops). Without keep_graph, each node's backward function, and so its
// saved tensors, is released as soon as the backward pass has gone through it.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpoison::autograd {

// grad_inputs[i] must be defined when need[i] is true (shape of inputs[i]); it may be left
// undefined otherwise. grad_output has the output's shape, dtype and device.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output, const std::vector<bool>& need)>;

// What a node remembers of one input: enough to route and check its gradient, no data.
struct NodeInput {
  uint64_t id = 0;                 // 0: no gradient flows to this input (undefined, or it wants none)
  Shape shape;                     // of the gradient
  std::weak_ptr<TensorImpl> leaf;  // leaves only: backward() accumulates into their .grad
  bool defined() const { return id != 0; }
};

struct Node {
  std::string op;
  std::vector<NodeInput> inputs;
  uint64_t output_id = 0;
  std::weak_ptr<TensorImpl> output;  // for hooks registered on intermediate tensors
  BackwardFn backward;               // empty once released (after backward passed the node)
};

bool is_recording();
// True when recording is on and any input requires a gradient.
bool needs_record(std::initializer_list<const Tensor*> inputs);
bool needs_record(const std::vector<Tensor>& inputs);
// Appends a node; marks `output` as requiring grad (non-leaf). Call only when needs_record().
void record(const std::string& op, std::vector<Tensor> inputs, Tensor& output, BackwardFn backward);

// Accumulates d(root)/d(leaf) into leaf.grad() for every leaf that requires a gradient.
// root must have one element unless grad_root (same shape) is given.
void backward(const Tensor& root, const Tensor& grad_root = Tensor(), bool keep_graph = false);
// Returns d(root)/d(leaves[i]) without touching .grad; computes only what these leaves need.
// A leaf the root does not depend on gets a zero gradient.
std::vector<Tensor> grad(const Tensor& root, const std::vector<Tensor>& leaves,
                         const Tensor& grad_root = Tensor(), bool keep_graph = false);

void clear_tape();
size_t tape_size();

// Turns recording off for its lifetime (restores the previous state).
class NoGradGuard {
public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
  bool prev_;
};

}  // namespace cpoison::autograd
