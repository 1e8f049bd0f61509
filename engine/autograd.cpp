#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "engine/ops/elementwise.h"

namespace cpoison::autograd {

namespace {
thread_local std::vector<Node> tape;
thread_local bool recording = true;

// Adds g into the gradient slot of id (the first contribution is stored as is).
void accumulate(std::unordered_map<uint64_t, Tensor>& grads, uint64_t id, const Tensor& g) {
  auto it = grads.find(id);
  if (it == grads.end())
    grads.emplace(id, g);
  else
    it->second = add(it->second, g);
}

Tensor apply_hooks(const TensorImpl& impl, Tensor g) {
  for (const auto& h : impl.hooks) {
    Tensor r = h(g);
    CP_CHECK(r.defined() && r.shape() == g.shape(), "gradient hook", "a hook must return a tensor of shape ", g.shape());
    g = r;
  }
  return g;
}

Tensor seed_gradient(const Tensor& root, const Tensor& grad_root) {
  if (grad_root.defined()) {
    CP_CHECK(grad_root.shape() == root.shape(), "backward", "grad_root ", grad_root.describe(), " does not match root ", root.describe());
    return grad_root;
  }
  CP_CHECK(root.numel() == 1, "backward", "root must have one element (or pass grad_root), got ", root.describe());
  return Tensor::ones(root.shape(), root.dtype(), root.device());
}

// Runs the tape backwards from root. `reach` holds the ids whose gradients are needed (on a path
// from a wanted leaf); `keep` marks ids whose gradients are returned in `grads` at the end.
// Unless keep_graph, every node's backward function (and what it saved) is released once the
// pass has gone through the node, so activations are freed layer by layer.
void run_backward(const Tensor& root, const Tensor& grad_root, const std::unordered_set<uint64_t>& reach,
                  const std::unordered_set<uint64_t>& keep, std::unordered_map<uint64_t, Tensor>& grads, bool keep_graph) {
  NoGradGuard no_grad;
  grads.clear();
  grads.emplace(root.id(), seed_gradient(root, grad_root));
  for (int64_t n = (int64_t)tape.size() - 1; n >= 0; --n) {
    Node& node = tape[n];
    // Released on leaving this iteration, whatever happens in it.
    struct Release {
      Node& node;
      bool on;
      ~Release() {
        if (on) node.backward = nullptr;
      }
    } release{node, !keep_graph};
    auto it = grads.find(node.output_id);
    if (it == grads.end()) continue;  // this node does not lead to the root
    Tensor g = it->second;
    if (!keep.count(node.output_id)) grads.erase(it);  // free intermediate gradients early
    if (auto out = node.output.lock(); out && !out->hooks.empty()) g = apply_hooks(*out, g);
    std::vector<bool> need(node.inputs.size());
    bool any = false;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      need[i] = node.inputs[i].defined() && reach.count(node.inputs[i].id) > 0;
      any = any || need[i];
    }
    if (!any) continue;
    CP_CHECK(node.backward, node.op, "backward already ran through this node and released what it saved "
                                     "(pass keep_graph to differentiate a graph twice)");
    std::vector<Tensor> gin = node.backward(g, need);
    CP_CHECK(gin.size() == node.inputs.size(), node.op, "backward returned ", gin.size(), " gradients for ", node.inputs.size(), " inputs");
    for (size_t i = 0; i < gin.size(); ++i) {
      if (!need[i]) continue;
      CP_CHECK(gin[i].defined(), node.op, "backward left the gradient of input ", i, " undefined");
      CP_CHECK(gin[i].shape() == node.inputs[i].shape, node.op, "backward gave gradient ", gin[i].describe(),
               " for an input of shape ", node.inputs[i].shape);
      accumulate(grads, node.inputs[i].id, gin[i]);
    }
  }
}

// Ids of tensors on a path from one of `leaves` (forward closure over the tape).
std::unordered_set<uint64_t> forward_reach(const std::unordered_set<uint64_t>& leaves) {
  std::unordered_set<uint64_t> reach = leaves;
  for (const Node& node : tape) {
    for (const NodeInput& in : node.inputs) {
      if (in.defined() && reach.count(in.id)) {
        reach.insert(node.output_id);
        break;
      }
    }
  }
  return reach;
}
}  // namespace

bool is_recording() { return recording; }

bool needs_record(std::initializer_list<const Tensor*> inputs) {
  if (!recording) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_record(const std::vector<Tensor>& inputs) {
  if (!recording) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const std::string& op, std::vector<Tensor> inputs, Tensor& output, BackwardFn backward) {
  // Inputs that want no gradient stay undefined (id 0) in the node; no input's data is held.
  std::vector<NodeInput> in(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    in[i].id = t.id();
    in[i].shape = t.shape();
    if (t.is_leaf()) in[i].leaf = t.impl_ptr();
  }
  TensorImpl& o = output.impl();
  o.requires_grad = true;
  o.is_leaf = false;
  tape.push_back(Node{op, std::move(in), o.id, output.impl_ptr(), std::move(backward)});
}

void backward(const Tensor& root, const Tensor& grad_root, bool keep_graph) {
  CP_CHECK(root.requires_grad(), "backward", "root does not require a gradient (no recorded op leads to it): ", root.describe());
  // Every leaf that requires a gradient, appears on the tape and is still alive (a leaf nobody
  // holds any more has no .grad anyone could read).
  std::unordered_set<uint64_t> leaf_ids;
  std::unordered_map<uint64_t, Tensor> leaves;
  for (const Node& node : tape)
    for (const NodeInput& in : node.inputs)
      if (in.defined() && !leaves.count(in.id))
        if (auto impl = in.leaf.lock(); impl && impl->requires_grad) {
          leaf_ids.insert(in.id);
          leaves.emplace(in.id, Tensor(impl));
        }
  std::unordered_map<uint64_t, Tensor> grads;
  run_backward(root, grad_root, forward_reach(leaf_ids), leaf_ids, grads, keep_graph);
  NoGradGuard no_grad;
  for (auto& [id, g] : grads) {
    auto it = leaves.find(id);
    if (it == leaves.end()) continue;
    Tensor leaf = it->second;
    Tensor gg = apply_hooks(leaf.impl(), g);
    Tensor prev = leaf.grad();
    leaf.set_grad(prev.defined() ? add(prev, gg) : gg.contiguous());
  }
  if (!keep_graph) clear_tape();
}

std::vector<Tensor> grad(const Tensor& root, const std::vector<Tensor>& leaves, const Tensor& grad_root, bool keep_graph) {
  CP_CHECK(root.requires_grad(), "grad", "root does not require a gradient (no recorded op leads to it): ", root.describe());
  std::unordered_set<uint64_t> ids;
  for (const Tensor& l : leaves) {
    CP_CHECK(l.defined() && l.requires_grad(), "grad", "every leaf must require a gradient, got ", l.describe());
    ids.insert(l.id());
  }
  std::unordered_map<uint64_t, Tensor> grads;
  // When the root itself is one of the leaves its gradient is the seed.
  run_backward(root, grad_root, forward_reach(ids), ids, grads, keep_graph);
  NoGradGuard no_grad;
  std::vector<Tensor> out;
  for (const Tensor& l : leaves) {
    auto it = grads.find(l.id());
    if (it != grads.end())
      out.push_back(l.is_leaf() ? apply_hooks(l.impl(), it->second) : it->second);
    else if (l.id() == root.id())
      out.push_back(seed_gradient(root, grad_root));
    else
      out.push_back(Tensor::zeros(l.shape(), l.dtype(), l.device()));
  }
  if (!keep_graph) clear_tape();
  return out;
}

void clear_tape() { tape.clear(); }
size_t tape_size() { return tape.size(); }

NoGradGuard::NoGradGuard() : prev_(recording) { recording = false; }
NoGradGuard::~NoGradGuard() { recording = prev_; }

}  // namespace cpoison::autograd
