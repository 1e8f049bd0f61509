#include "engine/optim/sgd.h"

#include <set>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"

namespace cpoison::optim {

namespace {
const std::string kStatePrefix = "optim/";
const std::string kMomentumSlot = "/momentum_buffer";

void check_options(const SGDOptions& o) {
  CP_CHECK(o.lr >= 0, "SGD", "learning rate must be >= 0, got ", o.lr);
  CP_CHECK(o.momentum >= 0, "SGD", "momentum must be >= 0, got ", o.momentum);
  CP_CHECK(o.weight_decay >= 0, "SGD", "weight decay must be >= 0, got ", o.weight_decay);
  CP_CHECK(!o.nesterov || o.momentum > 0, "SGD", "Nesterov momentum needs momentum > 0");
}
}  // namespace

SGD::SGD(std::vector<std::pair<std::string, Tensor>> named_params, const SGDOptions& options)
    : options_(options), params_(std::move(named_params)) {
  check_options(options_);
  std::set<std::string> seen;
  for (auto& [name, p] : params_) {
    CP_CHECK(!name.empty(), "SGD", "a parameter has an empty name");
    CP_CHECK(seen.insert(name).second, "SGD", "parameter '", name, "' is listed twice");
    CP_CHECK(p.defined(), "SGD", "parameter '", name, "' is undefined");
    CP_CHECK(is_floating(p.dtype()), "SGD", "parameter '", name, "' must be float, got ", p.describe());
  }
  momentum_buffers_.resize(params_.size());
}

void SGD::set_lr(double lr) {
  CP_CHECK(lr >= 0, "SGD::set_lr", "learning rate must be >= 0, got ", lr);
  options_.lr = lr;
}

bool SGD::decays(const Tensor& param) const {
  return options_.weight_decay != 0 && !(options_.exclude_1d_from_weight_decay && param.dim() <= 1);
}

void SGD::step() {
  autograd::NoGradGuard no_grad;
  const double m = options_.momentum, lr = options_.lr;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].first;
    Tensor p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    CP_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device(), "SGD::step", "gradient ",
             g.describe(), " of parameter '", name, "' does not match the parameter ", p.describe());
    Tensor value = p.detach();
    Tensor d = decays(p) ? add(g, mul_scalar(value, options_.weight_decay)) : g;
    if (m != 0) {
      Tensor& buf = momentum_buffers_[i];
      if (!buf.defined())
        buf = d.detach().clone();
      else
        buf.copy_(add(mul_scalar(buf, m), d));
      d = options_.nesterov ? add(d, mul_scalar(buf, m)) : buf;
    }
    p.copy_(sub(value, mul_scalar(d, lr)));
  }
}

void SGD::zero_grad() {
  for (auto& e : params_) e.second.zero_grad();
}

Tensor SGD::momentum_buffer(const std::string& param_name) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].first == param_name) return momentum_buffers_[i];
  fail("SGD::momentum_buffer", "no parameter named '", param_name, "'");
}

std::map<std::string, Tensor> SGD::state_dict() const {
  std::map<std::string, Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i)
    if (momentum_buffers_[i].defined()) out.emplace(kStatePrefix + params_[i].first + kMomentumSlot, momentum_buffers_[i]);
  return out;
}

void SGD::load_state_dict(const std::map<std::string, Tensor>& state) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index.emplace(params_[i].first, i);
  std::vector<Tensor> loaded(params_.size());
  for (auto& [key, value] : state) {
    if (key.rfind(kStatePrefix, 0) != 0) continue;
    bool is_momentum = key.size() > kStatePrefix.size() + kMomentumSlot.size() &&
                       key.compare(key.size() - kMomentumSlot.size(), kMomentumSlot.size(), kMomentumSlot) == 0;
    CP_CHECK(is_momentum, "SGD::load_state_dict", "unknown optimiser state entry '", key,
             "' (SGD keeps only optim/<param>/momentum_buffer)");
    std::string name = key.substr(kStatePrefix.size(), key.size() - kStatePrefix.size() - kMomentumSlot.size());
    auto it = index.find(name);
    CP_CHECK(it != index.end(), "SGD::load_state_dict", "entry '", key, "' names no parameter of this optimiser");
    const Tensor& p = params_[it->second].second;
    CP_CHECK(value.defined() && value.shape() == p.shape(), "SGD::load_state_dict", "entry '", key, "' has shape ",
             value.defined() ? shape_str(value.shape()) : std::string("undefined"), " but parameter '", name,
             "' has shape ", p.shape());
    Tensor buf = Tensor::empty(p.shape(), p.dtype(), p.device());
    buf.copy_(value);
    loaded[it->second] = buf;
  }
  momentum_buffers_ = std::move(loaded);
}

}  // namespace cpoison::optim
