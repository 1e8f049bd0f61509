// Stochastic gradient descent with PyTorch's exact update rule (torch.optim.SGD, dampening 0):
//   d   = g + wd * p                      (wd = 0 for excluded parameters)
//   buf = d                 on a parameter's first step with momentum,
//   buf = m * buf + d       afterwards
//   p  -= lr * buf          or, with Nesterov, p -= lr * (d + m * buf)
// A parameter without a gradient (frozen, or unused by the loss) is skipped and keeps its
// momentum buffer untouched, as in PyTorch.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/nn/module.h"
#include "engine/tensor.h"

namespace cpoison::optim {

struct SGDOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0
  // No weight decay on parameters with at most one dimension: BatchNorm weights and biases and
  // every bias (a common recipe for contrastive learning).
  bool exclude_1d_from_weight_decay = false;
};

class SGD {
public:
  // Parameters under their names (the names key the saved state). Throws Error on an
  // undefined, non-float or duplicated parameter, or on invalid options (negative lr, momentum
  // or weight decay, Nesterov without momentum).
  SGD(std::vector<std::pair<std::string, Tensor>> named_params, const SGDOptions& options);
  SGD(const nn::Module& module, const SGDOptions& options) : SGD(module.named_parameters(), options) {}

  // One update of every parameter that has a gradient, outside autograd. Throws Error when a
  // gradient's shape, dtype or device differs from its parameter's.
  void step();
  void zero_grad();  // drops every parameter's gradient

  double lr() const { return options_.lr; }
  void set_lr(double lr);  // schedules call this before each step
  const SGDOptions& options() const { return options_; }
  const std::vector<std::pair<std::string, Tensor>>& named_parameters() const { return params_; }
  // Whether weight decay applies to this parameter under the options.
  bool decays(const Tensor& param) const;

  // The momentum buffer of a parameter; undefined before its first step with momentum.
  Tensor momentum_buffer(const std::string& param_name) const;

  // Momentum buffers as "optim/<param name>/momentum_buffer" (only those that exist, as in
  // PyTorch's state). Shares the buffers' storage (clone to snapshot).
  std::map<std::string, Tensor> state_dict() const;
  // Restores the buffers from entries named as state_dict() writes them; entries not under
  // "optim/" are ignored, and parameters without an entry start without a buffer. Values are
  // converted to each parameter's dtype and device. Throws Error naming the entry for an
  // unknown parameter or slot, or a shape mismatch; on error nothing is changed.
  void load_state_dict(const std::map<std::string, Tensor>& state);

private:
  SGDOptions options_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Tensor> momentum_buffers_;  // one per parameter, undefined until first used
};

}  // namespace cpoison::optim
