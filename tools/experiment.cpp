// `cpoison experiment`: reproduces one of the paper's tables from a preset (tools/presets/
// NAME.toml) at a scale (cpu-small: Fashion-MNIST on 2 cores; paper: CIFAR with the paper's
// settings, for a GPU). Finished cells are cached under results/<preset>/<scale>/ and skipped on
// a rerun; an interrupted cell resumes from its checkpoint.
//   cpoison experiment --preset table1 --dry-run          the cells and their estimated cost
//   cpoison experiment --preset table1                    run (or resume) at scale cpu-small
//   cpoison experiment --preset table8 --scale paper --device cuda
//   cpoison experiment --list                             the presets and their scales
#include <cstdio>
#include <memory>

#include "engine/error.h"
#include "tools/command.h"
#include "tools/common.h"
#include "tools/experiment/runner.h"

namespace {

using namespace cpoison;
namespace ex = cpoison::tools::experiment;

struct Options {
  std::string preset, scale = "cpu-small", presets, device = "cpu";
  bool list = false, keys = false;
  ex::ExperimentOptions run;
};

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("--preset", o->preset, "Preset name (table1, table3, ..., table8) or a .toml file");
  app.add_option("--scale", o->scale, "Scale defined by the preset: cpu-small | paper")->capture_default_str();
  app.add_flag("--dry-run", o->run.dry_run, "List the cells, their state and estimated cost; run nothing");
  app.add_flag("--list", o->list, "List the presets and their scales");
  app.add_flag("--keys", o->keys, "Print every settings key of a scale (Markdown table: key, default, meaning)");
  app.add_option("--results", o->run.results, "Results folder (cells under RESULTS/PRESET/SCALE/)")->capture_default_str();
  app.add_option("--presets", o->presets, "Presets folder (default: $CPOISON_PRESETS, ./tools/presets, beside the build)");
  app.add_option("--device", o->device, "cpu | cuda")->capture_default_str();
  app.add_option("--data-root", o->run.data_root, "Directory of the dataset's files");
  app.add_flag("--redo-changed", o->run.redo_changed,
               "Discard and rerun cells whose cached results were made with other settings (default: an error)");
  app.add_option("--seeds", o->run.seeds,
                 "Run every cell with each of these seeds (e.g. 0,1,2; cells in RESULTS/PRESET/SCALE/seed-K/); "
                 "tables give mean ± sd")
      ->delimiter(',');
  app.add_option("--max-cells", o->run.max_cells, "Stop after running this many cells (0: all)")
      ->check(tools::int_range(0, kMaxAxis))
      ->capture_default_str();
  app.add_option("--progress-seconds", o->run.progress_seconds, "Seconds between training progress lines (< 0: quiet)")
      ->check(tools::real_range(-1e9, 1e9))
      ->capture_default_str();
  app.callback([o] {
    if (o->keys) {
      std::printf("| key | default | meaning |\n|---|---|---|\n");
      for (const auto& row : ex::settings_reference())
        std::printf("| `%s` | `%s` | %s |\n", row[0].c_str(), row[1].c_str(), row[2].c_str());
      return;
    }
    if (o->list) {
      std::string dir = ex::presets_dir(o->presets);
      for (const auto& name : ex::list_presets(dir)) {
        // Any scale will do to read the title and the scale list.
        try {
          ex::Preset p = ex::load_preset(name, "cpu-small", dir);
          std::string scales;
          for (const auto& s : p.scales) scales += (scales.empty() ? "" : ", ") + s;
          std::printf("%-8s [%s] %s\n", name.c_str(), scales.c_str(), p.title.c_str());
        } catch (const Error& e) {
          std::printf("%-8s (cannot load: %s)\n", name.c_str(), e.what());
        }
      }
      return;
    }
    CP_CHECK(!o->preset.empty(), "experiment", "give --preset NAME (or --list)");
    o->run.device = tools::parse_device(o->device);
    ex::Preset p = ex::load_preset(o->preset, o->scale, o->presets);
    ex::ExperimentReport r = ex::run_experiment(p, o->run);
    if (o->run.dry_run) {
      std::printf("%s at scale %s: %s\n%s\n\n", p.name.c_str(), p.scale.c_str(), p.title.c_str(),
                  ex::describe_settings(p.settings).c_str());
      std::printf("%-8s %-9s %-44s %s\n", "state", "estimate", "cell", "what");
      for (const auto& line : r.listing) std::printf("%s\n", line.c_str());
      std::printf("\nresults would go to %s\n", r.root.c_str());
      return;
    }
    std::printf("%s\n", r.markdown.c_str());
    std::printf("%lld cells: %lld run now, %lld cached, %lld left; table %s/table.md, JSON %s/results.json\n",
                (long long)r.cells, (long long)r.ran, (long long)r.skipped, (long long)r.remaining, r.root.c_str(),
                r.root.c_str());
  });
}

}  // namespace
CPOISON_COMMAND(experiment, "Reproduce a table of the paper from a preset (cached cells, resumable, --dry-run)", setup);
