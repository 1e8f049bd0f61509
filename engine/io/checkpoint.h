// Checkpoints: one dataset per parameter and buffer under its PyTorch-style name, optimiser
// state under "optim/<param name>/<slot>", and progress as file attributes (epoch, step, rng
// offsets, ...), so a Python user can load the weights into an equivalent PyTorch model.
#pragma once
#include <map>
#include <string>

#include "engine/io/hdf5.h"
#include "engine/nn/module.h"

namespace cpoison::io {

struct Checkpoint {
  std::map<std::string, Tensor> tensors;  // "prefix.name" -> value (modules), "optim/..." -> state
  Attrs attrs;                            // progress and settings
};

// Adds the state dict of `m` under `prefix` ("" for none; otherwise "prefix." is prepended).
void add_module(Checkpoint& ck, const nn::Module& m, const std::string& prefix = "");
// Loads the entries under prefix into m (strict: names and shapes must match).
void load_module(const Checkpoint& ck, nn::Module& m, const std::string& prefix = "");
void save_checkpoint(const std::string& path, const Checkpoint& ck);  // atomic (tmp + rename)
Checkpoint load_checkpoint(const std::string& path);

}  // namespace cpoison::io
