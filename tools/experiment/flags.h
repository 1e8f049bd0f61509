// The command-line flags of the settings that `cpoison train` and `cpoison poison` share with the
// experiment's scales, generated from their field lists (settings.h, tools/fields.h): field
// `warmup_steps` of TrainSettings is `--warmup-steps`, with the list's help and the struct's value
// as its default. What is added here is only each flag's accepted range (CLI11 validators, so a
// bad value is refused when parsed, naming the flag).
#pragma once
#include <CLI/CLI.hpp>

#include "tools/experiment/settings.h"
#include "tools/fields.h"

namespace cpoison::tools::experiment {

// Every field of TrainSettings as a flag bound to `t`.
FieldFlags add_training_flags(CLI::App& app, TrainSettings& t);
// Every field of AlgoSettings but lr (a command's --lr is the training or attacker lr) bound to `a`.
FieldFlags add_algo_flags(CLI::App& app, AlgoSettings& a);

}  // namespace cpoison::tools::experiment
