// `cpoison evaluate FILE`: the victim battery on one poison file (or a dataset file, no poison):
// supervised, SimCLR, MoCo v2 and BYOL victims at a scale of tools/presets/scales.toml, each
// with each seed, as cached and resumable experiment cells (tools/experiment/evaluate.h), beside
// the same victims on the clean data. Prints the table and writes OUT/table.md, OUT/result.json.
//   cpoison evaluate poison.h5 --dry-run                    the cells and their estimated cost
//   cpoison evaluate poison.h5 --seeds 0,1,2 --out results/evaluate/ue
//   cpoison evaluate poison.h5 --victims supervised,simclr --probe-data clean --probe-epoch best
#include <cstdio>
#include <memory>

#include "engine/error.h"
#include "tools/command.h"
#include "tools/common.h"
#include "tools/experiment/evaluate.h"
#include "tools/experiment/runner.h"

namespace {

using namespace cpoison;
namespace ex = cpoison::tools::experiment;

struct Options {
  ex::EvaluateOptions run;
  std::string device = "cpu";
};

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("file", o->run.file, "Poison file (HDF5: cpoison poison / import --as poison) or dataset file (no poison)")
      ->required();
  app.add_option("--scale", o->run.scale, "Scale of scales.toml: cpu-small | paper (the experiment presets' scales)")
      ->capture_default_str();
  app.add_option("--presets", o->run.presets, "Folder of scales.toml (default: $CPOISON_PRESETS, ./tools/presets, beside the build)");
  app.add_option("--victims", o->run.victims, "Victims, comma-separated: supervised, simclr, moco, byol")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--seeds", o->run.seeds, "Seeds, comma-separated (e.g. 0,1,2): each victim trains once per seed")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--probe-data", o->run.probe_data,
                 "poisoned | clean: the training images the linear probe of a contrastive victim is fitted on")
      ->check(CLI::IsMember({"poisoned", "clean"}))
      ->capture_default_str();
  app.add_option("--probe-epoch", o->run.probe_epoch,
                 "final | best: the probe's last epoch or its best one (SGD probe; the L-BFGS probe has one answer)")
      ->check(CLI::IsMember({"final", "best"}))
      ->capture_default_str();
  app.add_option("--out", o->run.out, "Folder for table.md and result.json (default: results/evaluate/<file stem>)");
  app.add_option("--cache", o->run.cache, "Folder of the cells (CACHE/<data>-<fingerprint>/<scale>/seed-K/<cell>/)")
      ->capture_default_str();
  app.add_option("--data-root", o->run.data_root, "Directory of the dataset's files");
  app.add_option("--subset", o->run.subset, "Dataset input only: class-balanced training images (default: all)")
      ->check(tools::int_range(0, kMaxAxis));
  app.add_flag("--dry-run", o->run.dry_run, "List the cells, their state and estimated cost; run nothing");
  app.add_flag("--redo-changed", o->run.redo_changed, "Discard and rerun cells made with other settings");
  app.add_option("--device", o->device, "cpu | cuda")->capture_default_str();
  app.add_option("--progress-seconds", o->run.progress_seconds, "Seconds between training progress lines (< 0: quiet)")
      ->check(tools::real_range(-1e9, 1e9))
      ->capture_default_str();
  app.callback([o] {
    o->run.device = tools::parse_device(o->device);
    o->run.quiet = o->run.progress_seconds < 0;
    ex::EvaluateReport r = ex::run_evaluate(o->run);
    if (o->run.dry_run) {
      std::printf("evaluate %s at scale %s\n\n%-8s %-9s %-44s %s\n", o->run.file.c_str(), o->run.scale.c_str(), "state",
                  "estimate", "cell", "what");
      for (const auto& line : r.listing) std::printf("%s\n", line.c_str());
      std::printf("\ncells would go to %s\n", r.cells_root.c_str());
      return;
    }
    std::printf("%s\n", r.markdown.c_str());
    std::printf("%lld cells: %lld run now, %lld cached, %lld left; table %s/table.md, JSON %s/result.json; cells in %s\n",
                (long long)r.cells, (long long)r.ran, (long long)r.skipped, (long long)r.remaining, r.out.c_str(),
                r.out.c_str(), r.cells_root.c_str());
  });
}

}  // namespace
CPOISON_COMMAND(evaluate, "Victim battery on a poison file (or a dataset): accuracy per victim, worst case, mean, clean reference", setup);
