#include "engine/nn/module.h"

#include <set>
#include <sstream>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"

namespace cpoison::nn {

Generator& init_generator() {
  // Stream 1 keeps initial weights apart from data/augmentation draws that use stream 0.
  static Generator gen(0, 1);
  return gen;
}

void manual_seed(uint64_t seed) { init_generator() = Generator(seed, 1); }

Tensor Module::forward(const Tensor&) {
  fail("Module::forward", "this module has no single-input forward (call its own method)");
}

namespace {
void check_new_name(const std::string& name, const char* what, bool taken) {
  CP_CHECK(!name.empty(), "Module::register", "empty ", what, " name");
  CP_CHECK(name.find('.') == std::string::npos && name.find('/') == std::string::npos, "Module::register", what,
           " name '", name, "' must not contain '.' or '/' (dots separate nesting levels)");
  CP_CHECK(!taken, "Module::register", what, " name '", name, "' is already used in this module");
}

bool has_name(const std::vector<std::pair<std::string, Tensor>>& v, const std::string& n) {
  for (auto& e : v)
    if (e.first == n) return true;
  return false;
}
}  // namespace

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  bool taken = has_name(params_, name) || has_name(buffers_, name);
  for (auto& c : children_) taken = taken || c.first == name;
  check_new_name(name, "parameter", taken);
  CP_CHECK(t.defined(), "Module::register_parameter", "parameter '", name, "' is undefined");
  CP_CHECK(is_floating(t.dtype()), "Module::register_parameter", "parameter '", name, "' must be float, got ", t.describe());
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  bool taken = has_name(params_, name) || has_name(buffers_, name);
  for (auto& c : children_) taken = taken || c.first == name;
  check_new_name(name, "buffer", taken);
  CP_CHECK(t.defined(), "Module::register_buffer", "buffer '", name, "' is undefined");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  bool taken = has_name(params_, name) || has_name(buffers_, name);
  for (auto& c : children_) taken = taken || c.first == name;
  check_new_name(name, "child module", taken);
  CP_CHECK(m != nullptr, "Module::register_module", "child module '", name, "' is null");
  CP_CHECK(m.get() != this, "Module::register_module", "a module cannot be its own child ('", name, "')");
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, bool params, std::vector<std::pair<std::string, Tensor>>& out) const {
  for (auto& [name, t] : params ? params_ : buffers_) out.emplace_back(prefix + name, t);
  for (auto& [name, child] : children_) child->collect(prefix + name + ".", params, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", true, out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& e : named_parameters()) out.push_back(e.second);
  return out;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& e : named_parameters()) out.emplace(e.first, e.second);
  for (auto& e : named_buffers()) out.emplace(e.first, e.second);
  return out;
}

namespace {
std::string join_names(const std::vector<std::string>& names) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size(); ++i) os << (i ? ", " : "") << "'" << names[i] << "'";
  return os.str();
}
}  // namespace

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  std::map<std::string, Tensor> mine = state_dict();
  std::vector<std::string> missing, unexpected;
  for (auto& [name, t] : mine) {
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
      continue;
    }
    CP_CHECK(it->second.defined(), "Module::load_state_dict", "entry '", name, "' is undefined");
    CP_CHECK(it->second.shape() == t.shape(), "Module::load_state_dict", "entry '", name, "' has shape ",
             it->second.shape(), " but the module expects ", t.shape());
  }
  for (auto& [name, t] : state)
    if (!mine.count(name)) unexpected.push_back(name);
  if (strict) {
    CP_CHECK(missing.empty(), "Module::load_state_dict", "missing entries: ", join_names(missing));
    CP_CHECK(unexpected.empty(), "Module::load_state_dict", "unexpected entries: ", join_names(unexpected));
  }
  // Checked everything first, so a failed load changes nothing.
  for (auto& [name, t] : mine) {
    auto it = state.find(name);
    if (it != state.end()) t.copy_(it->second);
  }
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& e : named_parameters()) n += e.second.numel();
  return n;
}

void Module::zero_grad() {
  for (auto& e : named_parameters()) e.second.zero_grad();
}

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c.second->train(on);
}

void Module::set_requires_grad(bool on) {
  for (auto& e : named_parameters()) e.second.set_requires_grad(on);
}

void Module::to(Device device) {
  autograd::NoGradGuard no_grad;
  auto move = [&](const std::vector<std::pair<std::string, Tensor>>& list) {
    for (auto& e : list) {
      Tensor t = e.second;
      if (t.device() != device) t.assign_(t.detach().to(device));
    }
  };
  move(named_parameters());
  move(named_buffers());
}

void Module::to(DType dtype) {
  CP_CHECK(is_floating(dtype), "Module::to", "modules convert to a float dtype only, got ", dtype_name(dtype));
  autograd::NoGradGuard no_grad;
  auto convert = [&](const std::vector<std::pair<std::string, Tensor>>& list) {
    for (auto& e : list) {
      Tensor t = e.second;
      // Integer buffers (num_batches_tracked) keep their dtype, as in PyTorch.
      if (is_floating(t.dtype()) && t.dtype() != dtype) t.assign_(t.detach().to(dtype));
    }
  };
  convert(named_parameters());
  convert(named_buffers());
}

Device Module::device() const {
  for (auto& e : named_parameters()) return e.second.device();
  for (auto& e : named_buffers()) return e.second.device();
  return Device::cpu;
}

namespace {
// Pairs up two modules' entries by position, checking that names and shapes agree.
void check_same_structure(const std::vector<std::pair<std::string, Tensor>>& mine,
                          const std::vector<std::pair<std::string, Tensor>>& theirs, const char* op, const char* what) {
  CP_CHECK(mine.size() == theirs.size(), op, "this module has ", mine.size(), " ", what, ", the other has ", theirs.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    CP_CHECK(mine[i].first == theirs[i].first, op, what, " ", i, " is '", mine[i].first, "' here but '", theirs[i].first,
             "' in the other module");
    CP_CHECK(mine[i].second.shape() == theirs[i].second.shape(), op, "'", mine[i].first, "' has shape ",
             mine[i].second.shape(), " here but ", theirs[i].second.shape(), " in the other module");
  }
}
}  // namespace

void Module::copy_from(const Module& other) {
  auto p = named_parameters(), op = other.named_parameters();
  auto b = named_buffers(), ob = other.named_buffers();
  check_same_structure(p, op, "Module::copy_from", "parameters");
  check_same_structure(b, ob, "Module::copy_from", "buffers");
  for (size_t i = 0; i < p.size(); ++i) p[i].second.copy_(op[i].second);
  for (size_t i = 0; i < b.size(); ++i) b[i].second.copy_(ob[i].second);
}

void Module::ema_update_from(const Module& online, double momentum) {
  CP_CHECK(momentum >= 0 && momentum <= 1, "Module::ema_update_from", "momentum ", momentum, " outside [0, 1]");
  auto p = named_parameters(), op = online.named_parameters();
  check_same_structure(p, op, "Module::ema_update_from", "parameters");
  for (size_t i = 0; i < p.size(); ++i) {
    const Tensor &mine = p[i].second, &theirs = op[i].second;
    CP_CHECK(mine.dtype() == theirs.dtype() && mine.device() == theirs.device(), "Module::ema_update_from", "'",
             p[i].first, "' is ", mine.describe(), " here but ", theirs.describe(), " in the online module");
  }
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < p.size(); ++i) {
    Tensor mine = p[i].second.detach();
    p[i].second.copy_(add(mul_scalar(mine, momentum), mul_scalar(op[i].second.detach(), 1.0 - momentum)));
  }
}

}  // namespace cpoison::nn
