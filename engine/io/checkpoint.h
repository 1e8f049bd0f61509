// Checkpoints: one dataset per parameter and buffer under its PyTorch-style name, optimiser
// state under "optim/<param name>/<slot>", and progress as file attributes (epoch, step, rng
// offsets, ...), so a Python user can load the weights into an equivalent PyTorch model.
#pragma once
#include <map>
#include <string>

#include "engine/io/hdf5.h"
#include "engine/nn/module.h"
#include "engine/optim/sgd.h"

namespace cpoison::io {

struct Checkpoint {
  std::map<std::string, Tensor> tensors;  // "prefix.name" -> value (modules), "optim/..." -> state
  Attrs attrs;                            // progress and settings
};

// Adds a copy of the state dict of `m` under `prefix` ("" for none; otherwise "prefix." is
// prepended). Error when a name is already in the checkpoint.
void add_module(Checkpoint& ck, const nn::Module& m, const std::string& prefix = "");
// Loads the entries under prefix into m. With an empty prefix, every entry whose name has no
// '/' (that is, every module entry, not the optimiser state) belongs to m. strict: names must
// match both ways; shapes must always match. Errors name the prefix and the entry.
void load_module(const Checkpoint& ck, nn::Module& m, const std::string& prefix = "", bool strict = true);
// Adds a copy of the optimiser's momentum buffers ("optim/<param name>/momentum_buffer").
void add_optimizer(Checkpoint& ck, const optim::SGD& opt);
// Restores them (see SGD::load_state_dict for the errors).
void load_optimizer(const Checkpoint& ck, optim::SGD& opt);
// Atomic (tmp + rename): every tensor as a dataset ("optim/a.b/momentum_buffer" becomes groups
// optim -> "a.b"), every attribute on the root group.
void save_checkpoint(const std::string& path, const Checkpoint& ck);
// Errors (from H5Reader) name the file and the dataset.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace cpoison::io
