// Subcommands of the `cpoison` executable register themselves here: one file per subcommand,
// each ending with CPOISON_COMMAND(name, help, setup). setup() adds the options to the CLI11
// subcommand and sets its callback. Errors are thrown as cpoison::Error; main() prints them and
// exits with status 1.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace cpoison::tools {

struct Command {
  std::string name;
  std::string help;
  std::function<void(CLI::App&)> setup;
};

std::vector<Command>& commands();
inline int register_command(Command c) {
  commands().push_back(std::move(c));
  return 0;
}

}  // namespace cpoison::tools

#define CPOISON_COMMAND(name, help, setup_fn) \
  static const int cpoison_command_##name = ::cpoison::tools::register_command({#name, help, setup_fn})
