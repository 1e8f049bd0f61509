// `cpoison detect FILE`: does a training set look poisoned? (tools/experiment/detect.h)
//   cpoison detect poison.h5                        fit-speed score, threshold, verdict
//   cpoison detect poison.h5 --alignment            also the alignment gap of short SimCLR runs
//   cpoison detect data.h5 --reference fashion-mnist --reference-subset 500
// Exit status 0 whatever the verdict (it is in the table and result.json); 1 on bad input.
#include <cstdio>
#include <memory>

#include "engine/error.h"
#include "tools/command.h"
#include "tools/common.h"
#include "tools/experiment/detect.h"

namespace {

using namespace cpoison;
namespace ex = cpoison::tools::experiment;

struct Options {
  ex::DetectOptions run;
  std::string device = "cpu";
};

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("file", o->run.file, "Poison file (HDF5) or dataset file to examine")->required();
  app.add_option("--reference", o->run.reference,
                 "Dataset input: the clean dataset (name or file) to calibrate the threshold on (a poison file records it)");
  app.add_option("--reference-subset", o->run.reference_subset, "Class-balanced subset of the reference (0: all)")
      ->check(tools::int_range(0, kMaxAxis))
      ->capture_default_str();
  app.add_option("--reference-subset-seed", o->run.reference_subset_seed, "Seed of the reference's subset")
      ->check(tools::int_range(0, kMaxAxis))
      ->capture_default_str();
  app.add_option("--data-root", o->run.data_root, "Directory of the dataset's files");
  app.add_option("--epochs", o->run.fit.epochs, "Fit speed: the budget, in epochs of SGD")
      ->check(tools::int_range(1, 1000))
      ->capture_default_str();
  app.add_option("--batch-size", o->run.fit.batch_size, "Fit speed: batch size")
      ->check(tools::int_range(1, kMaxAxis))
      ->capture_default_str();
  app.add_option("--lr", o->run.fit.lr, "Fit speed: learning rate")
      ->check(tools::in_range({0, 100, true}))
      ->capture_default_str();
  app.add_option("--hidden", o->run.fit.hidden, "Fit speed: hidden units of the two-layer network")
      ->check(tools::int_range(1, 65536))
      ->capture_default_str();
  app.add_option("--max-images", o->run.fit.max_images, "Fit speed: score a seeded subset of at most this many images")
      ->check(tools::int_range(1, kMaxAxis))
      ->capture_default_str();
  app.add_option("--input", o->run.fit.input, "Fit speed: pixels | highpass (pixel minus its 3x3 neighbourhood's mean)")
      ->check(CLI::IsMember({"pixels", "highpass"}))
      ->capture_default_str();
  app.add_option("--seed", o->run.seed, "Seed of the scoring of FILE")->capture_default_str();
  app.add_option("--calibration-seeds", o->run.calibration_seeds,
                 "Clean scores (seeds 1000, 1001, ...) the threshold is calibrated on")
      ->check(tools::int_range(1, 1000))
      ->capture_default_str();
  app.add_option("--k", o->run.k, "Threshold = clean mean + k * max(sd, --min-sd)")
      ->check(tools::real_range(0, 100))
      ->capture_default_str();
  app.add_option("--min-sd", o->run.min_sd, "Floor of the clean scores' sd, in accuracy points")
      ->check(tools::real_range(0, 100))
      ->capture_default_str();
  app.add_flag("--alignment", o->run.alignment,
               "Also the alignment gap of short SimCLR runs on the poison and on uniform noise (poison files; cached cells)");
  app.add_option("--scale", o->run.scale, "--alignment: the scale of scales.toml the SimCLR runs take")->capture_default_str();
  app.add_option("--presets", o->run.presets, "Folder of scales.toml");
  app.add_option("--simclr-epochs", o->run.simclr_epochs, "--alignment: SimCLR epochs")
      ->check(tools::int_range(1, 100000))
      ->capture_default_str();
  app.add_option("--alignment-seeds", o->run.alignment_seeds, "--alignment: seeds, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--cache", o->run.cache, "--alignment: folder of the SimCLR cells")->capture_default_str();
  app.add_option("--device", o->device, "cpu | cuda (the SimCLR runs)")->capture_default_str();
  app.add_option("--out", o->run.out, "Folder for table.md and result.json (default: results/detect/<file stem>)");
  app.callback([o] {
    o->run.device = tools::parse_device(o->device);
    ex::DetectReport r = ex::run_detect(o->run);
    std::printf("%s\ntable %s/table.md, JSON %s/result.json\n", r.markdown.c_str(), r.out.c_str(), r.out.c_str());
  });
}

}  // namespace
CPOISON_COMMAND(detect, "Does a dataset look poisoned? Fit-speed score (and SimCLR alignment gap) against a clean calibration", setup);
