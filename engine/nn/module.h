// Modules: named parameters, buffers and children, with PyTorch-style dotted names
// ("layer1.0.bn1.running_mean") so a checkpoint maps one-to-one onto a PyTorch model.
//
// Parameters and buffers are Tensor handles; a module's members and its registry share the same
// TensorImpl, so moving a module to another device or loading a checkpoint swaps the data in
// place (Tensor::assign_) and every handle sees it.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace cpoison::nn {

// The generator that module constructors draw their initial weights from. Seed it before
// building a model to make the initialisation reproducible.
Generator& init_generator();
void manual_seed(uint64_t seed);

class Module {
public:
  virtual ~Module() = default;
  // Single-input forward; modules with other signatures add their own methods.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // ---- registry (names must be unique within this module)
  Tensor register_parameter(const std::string& name, Tensor t);  // sets requires_grad
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

  // Recursive listings in registration order, children after own entries, dotted names.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<Tensor> parameters() const;
  // Parameters then buffers, by name.
  std::map<std::string, Tensor> state_dict() const;
  // Copies values (any dtype/device) into this module's tensors. strict: every name must match
  // both ways; shapes must always match. Errors name the missing/extra/mismatched entry.
  // Registration checks: names are non-empty, contain no '.' or '/', and are unique among this
  // module's parameters, buffers and children (Error naming the module entry otherwise).
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

  int64_t num_parameters() const;
  // Drops the accumulated gradient of every parameter.
  void zero_grad();
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Freezing: requires_grad of every parameter (inputs still get gradients through the module).
  void set_requires_grad(bool on);
  // Both move/convert in place (every handle sees the new data) and drop accumulated gradients.
  void to(Device device);  // moves parameters and buffers in place
  void to(DType dtype);    // converts float parameters and buffers in place (f64 for grad checks)
  Device device() const;
  // Copies every parameter and buffer value from a module of the same structure.
  void copy_from(const Module& other);
  // EMA of parameters only (not buffers): p <- m * p + (1 - m) * other.p, outside autograd.
  void ema_update_from(const Module& online, double momentum);

protected:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  bool training_ = true;

private:
  void collect(const std::string& prefix, bool params, std::vector<std::pair<std::string, Tensor>>& out) const;
  std::vector<std::pair<std::string, Tensor>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

using ModulePtr = std::shared_ptr<Module>;

}  // namespace cpoison::nn
