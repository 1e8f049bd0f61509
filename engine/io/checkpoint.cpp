#include "engine/io/checkpoint.h"

#include <limits>

#include "engine/autograd.h"

namespace cpoison::io {

void add_module(Checkpoint& ck, const nn::Module& m, const std::string& prefix) {
  autograd::NoGradGuard no_grad;
  for (auto& [name, t] : m.state_dict()) {
    std::string key = prefix.empty() ? name : prefix + "." + name;
    CP_CHECK(!ck.tensors.count(key), "add_module", "checkpoint already has an entry '", key, "'");
    ck.tensors.emplace(key, t.detach().clone());  // a snapshot: later training must not change it
  }
}

void load_module(const Checkpoint& ck, nn::Module& m, const std::string& prefix, bool strict) {
  std::map<std::string, Tensor> mine;
  std::string head = prefix.empty() ? "" : prefix + ".";
  for (auto& [key, t] : ck.tensors) {
    if (prefix.empty() ? key.find('/') == std::string::npos : key.rfind(head, 0) == 0) mine.emplace(key.substr(head.size()), t);
  }
  try {
    m.load_state_dict(mine, strict);
  } catch (const Error& e) {
    fail("load_module", "prefix '", prefix, "': ", e.what());
  }
}

void add_optimizer(Checkpoint& ck, const optim::SGD& opt) {
  autograd::NoGradGuard no_grad;
  for (auto& [key, t] : opt.state_dict()) {
    CP_CHECK(!ck.tensors.count(key), "add_optimizer", "checkpoint already has an entry '", key, "'");
    ck.tensors.emplace(key, t.detach().clone());
  }
}

void load_optimizer(const Checkpoint& ck, optim::SGD& opt) { opt.load_state_dict(ck.tensors); }

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  H5Writer w(path);
  for (auto& [name, t] : ck.tensors) w.write(name, t);
  for (auto& [key, value] : ck.attrs) w.set_file_attr(key, value);
  w.commit();
}

namespace {
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  H5Reader r(path);
  Checkpoint ck;
  const std::string where = "checkpoint " + path;
  const double inf = std::numeric_limits<double>::infinity();
  for (auto& name : r.datasets()) {
    Tensor t = r.read(name);
    // Weights, buffers, optimiser state, queues and noise are finite; a variance is >= 0; a
    // counter is >= 0. A NaN here would be trained on (or evaluated) without any other error.
    const bool variance = ends_with(name, "running_var");
    const bool counter = ends_with(name, "num_batches_tracked");
    check_values(t, variance || counter ? 0.0 : -inf, inf, where, name);
    ck.tensors.emplace(name, std::move(t));
  }
  ck.attrs = r.file_attrs();
  return ck;
}

}  // namespace cpoison::io
