// `cpoison`: one executable, one subcommand per file in tools/.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>

#include <cstdlib>
#include <exception>
#include <string>

#include "engine/distributed/comm.h"  // issue #15: mpirun -np K
#include "engine/runtime.h"
#include "engine/error.h"
#include "tools/command.h"

namespace cpoison::tools {
std::vector<Command>& commands() {
  static std::vector<Command> c;
  return c;
}
}  // namespace cpoison::tools

int main(int argc, char** argv) {
  cpoison::ensure_passive_openmp_wait(argv);
  // issue #15: under mpirun, rank 0 alone prints; train, poison, experiment and bench step are data-parallel.
  try {
    cpoison::distributed::quiet_other_ranks();
    if (cpoison::distributed::size() > 1) {
      std::string sub, subsub;  // the first two words that are not options
      for (int i = 1; i < argc && subsub.empty(); ++i)
        if (argv[i][0] != '-') (sub.empty() ? sub : subsub) = argv[i];
      CP_CHECK(sub == "train" || sub == "poison" || sub == "experiment" || (sub == "bench" && subsub == "step"), "mpirun",
               "`cpoison ", sub, sub == "bench" ? " " + subsub : std::string(),
               "` is not data-parallel yet (only train, poison, experiment and bench step are, docs/distributed.md); run it "
               "without mpirun");
    }
  } catch (const std::exception& e) {
    return cpoison::distributed::report_error(e.what());
  }
  CLI::App app{"cpoison: indiscriminate poisoning of contrastive learning, and its defences"};
  app.require_subcommand(1);
  // Global switches, accepted before or after the subcommand (fallthrough: a subcommand passes
  // options it does not know to its parent).
  app.fallthrough();
  app.add_flag_callback(
      "--deterministic",
      [] {
        cpoison::set_cpu_deterministic(true);
        cpoison::set_deterministic(true);
        setenv("CPOISON_DETERMINISTIC", "1", 1);  // and in the processes this one starts
      },
      "Results independent of the CPU thread count: convolutions on the reference kernels instead of "
      "oneDNN (slower; same as CPOISON_DETERMINISTIC=1). On CUDA: deterministic cuDNN algorithms (the default)");
  auto& cmds = cpoison::tools::commands();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (auto& c : cmds) c.setup(*app.add_subcommand(c.name, c.help));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every refused option (a value outside its declared range, an
    // unknown flag) exits 1, as every other error does.
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const cpoison::Error& e) {
    return cpoison::distributed::report_error(e.what());  // "error: ..."; ends every rank under mpirun
  } catch (const std::exception& e) {
    return cpoison::distributed::report_error(e.what());
  }
  return 0;
}
