// `cpoison defend`: offline preprocessing of a (poisoned) training set by a defence, written as
// an HDF5 dataset file (data/README.md) that `cpoison train --data OUT.h5` reads.
//   cpoison defend --method usvt --data cifar10 --poison cp-s.h5 --out cifar10-cp-s-usvt.h5
//   cpoison defend --method smooth --kernel 5 --data fashion-mnist --subset 5000 --poison p.h5 --out s.h5
//   cpoison defend --method "usvt:p=0.25,threshold=chatterjee,mode=stacked" --data d.h5 --out o.h5
// The training split is loaded, reduced to --subset (the class-balanced subset `cpoison train`
// draws for the same --subset/--subset-seed), poisoned with --poison, then defended.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "defense/defense.h"
#include "poison/apply.h"
#include "tools/command.h"
#include "tools/common.h"

namespace {

using namespace cpoison;

struct Options {
  std::string method, poison, out, device = "cpu";
  tools::DataOptions data;  // --data, --data-root, --subset, --subset-seed, --pad-to, --channels
  int64_t batch = 256;
  uint64_t seed = 0;
  bool ignore_fingerprint = false;
  // Method parameters as text, passed through to parse_defense (which checks them).
  std::string p, keep, threshold, eta, mode, std, clip, kernel, sigma, size, quality, bits;
};

// "--flag VALUE" options that turn into KEY=VALUE of the defence specification.
struct ParamFlag {
  const char* flag;
  const char* key;
  std::string Options::*field;
  const char* help;
};
const std::vector<ParamFlag>& param_flags() {
  static const std::vector<ParamFlag> flags{
      {"--p", "p", &Options::p, "usvt: probability of dropping a pixel (default 0.25)"},
      {"--keep", "keep", &Options::keep, "usvt: fraction of singular values kept (default 0.8; 1 with --threshold)"},
      {"--threshold", "threshold", &Options::threshold, "usvt: chatterjee, or an absolute singular-value threshold"},
      {"--eta", "eta", &Options::eta, "usvt: Chatterjee's eta in (2 + eta) sqrt(max(m, n) q) (default 0.01)"},
      {"--mode", "mode", &Options::mode, "usvt: channel (H x W per channel) or stacked (H x CW)"},
      {"--std", "std", &Options::std, "noise: standard deviation in [0, 1] pixels (default 8/255)"},
      {"--clip", "clip", &Options::clip, "noise: clamp to [0, 1] (1/0, default 1)"},
      {"--kernel", "k", &Options::kernel, "smooth: odd kernel size (default 3)"},
      {"--sigma", "sigma", &Options::sigma, "smooth: Gaussian sigma (default 0.3((k-1)/2-1)+0.8)"},
      {"--size", "size", &Options::size, "cutout: side of the square hole (default 16)"},
      {"--quality", "q", &Options::quality, "jpeg: JPEG quality 1..100 (default 75)"},
      {"--bits", "b", &Options::bits, "bits: bits per channel 1..8 (default 4)"},
  };
  return flags;
}

std::string build_spec(const Options& o, const std::vector<std::pair<const ParamFlag*, CLI::Option*>>& given) {
  std::string spec = o.method;
  bool first = spec.find(':') == std::string::npos;
  for (auto& [flag, opt] : given) {
    if (opt->count() == 0) continue;
    spec += first ? ":" : ",";
    first = false;
    spec += std::string(flag->key) + "=" + o.*(flag->field);
  }
  return spec;
}

void run(const Options& o, const std::string& spec) {
  const auto t0 = std::chrono::steady_clock::now();
  const defense::Defense d = defense::parse_defense(spec);
  CP_CHECK(d.is_batch_transform(), "--method", d.spec(), " is a training mode, not a preprocessing step (methods: usvt, ",
           "noise, smooth, cutout, jpeg, grayscale, bits)");
  CP_CHECK(o.batch >= 1, "--batch", "must be >= 1, got ", o.batch);
  CP_CHECK(o.data.subset >= 0, "--subset", "must be >= 0, got ", o.data.subset);
  const Device device = tools::parse_device(o.device);
  namespace fs = std::filesystem;
  CP_CHECK(!fs::exists(o.data.data) || !fs::exists(o.out) || !fs::equivalent(o.data.data, o.out), "--out",
           "would overwrite the input dataset ", o.data.data);

  data::Dataset ds = tools::load_train_subset(o.data);
  if (!o.poison.empty()) ds = poison::apply_poison_file(ds, o.poison, o.ignore_fingerprint);
  std::fprintf(stderr, "defend %s: %s%s%s, %lld images %lldx%lldx%lld on %s\n", d.spec().c_str(), ds.name.c_str(),
               o.poison.empty() ? "" : " poisoned by ", o.poison.c_str(), (long long)ds.size(), (long long)ds.height(),
               (long long)ds.width(), (long long)ds.channels(), device_name(device));

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto last = start;
  data::Dataset out = defense::defend_dataset(ds, d, o.seed, o.batch, device, [&](int64_t done, int64_t total) {
    const auto now = clock::now();
    if (done < total && std::chrono::duration<double>(now - last).count() < 0.5) return;
    last = now;
    const double secs = std::chrono::duration<double>(now - start).count();
    std::fprintf(stderr, "\rdefend %s: %lld / %lld images (%.0f img/s)", defense::defense_name(d.kind), (long long)done,
                 (long long)total, secs > 0 ? done / secs : 0.0);
    if (done == total) std::fprintf(stderr, "\n");
  });
  data::save_dataset_h5(o.out, out, data::Split::train);
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  std::printf("wrote %s: %lld images %lldx%lldx%lld, defence %s, seed %llu, %.1f s\n", o.out.c_str(),
              (long long)out.size(), (long long)out.height(), (long long)out.width(), (long long)out.channels(),
              d.spec().c_str(), (unsigned long long)o.seed, secs);
}

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("--method", o->method,
                 "usvt | noise | smooth | cutout | jpeg | grayscale | bits, or a full specification such as "
                 "\"usvt:p=0.25,keep=0.8,mode=channel\" (docs/defenses.md)")
      ->required();
  app.add_option("--data", o->data.data, "Dataset name (fashion-mnist, mnist, cifar10, cifar100, stl10) or an HDF5 file")
      ->required();
  app.add_option("--data-root", o->data.data_root, "Directory of the dataset's files (see data/README.md)");
  app.add_option("--poison", o->poison, "Poison file (HDF5) applied before the defence, as `cpoison train --poison`");
  app.add_option("--subset", o->data.subset, "Class-balanced subset of N images, drawn before the poison (0: all)")
      ->check(tools::int_range(0, kMaxAxis))
      ->capture_default_str();
  app.add_option("--subset-seed", o->data.subset_seed, "Seed of the subset's choice")->capture_default_str();
  tools::add_pad_and_channels_options(app, o->data);
  app.add_option("--out", o->out, "Output HDF5 dataset file (training split)")->required();
  app.add_option("--seed", o->seed, "Seed of the defence's random draws (Philox stream 0xDEF0)")->capture_default_str();
  app.add_option("--device", o->device, "cpu | cuda")->capture_default_str();
  app.add_option("--batch", o->batch, "Images per batch (the result does not depend on it)")
      ->check(tools::int_range(1, kMaxAxis))
      ->capture_default_str();
  app.add_flag("--ignore-fingerprint", o->ignore_fingerprint,
               "Apply --poison even to images whose fingerprint differs from the one it records (warns)");
  auto given = std::make_shared<std::vector<std::pair<const ParamFlag*, CLI::Option*>>>();
  for (const ParamFlag& f : param_flags()) given->emplace_back(&f, app.add_option(f.flag, (*o).*(f.field), f.help));
  app.callback([o, given] { run(*o, build_spec(*o, *given)); });
}

}  // namespace

CPOISON_COMMAND(defend, "Preprocess a (poisoned) training set with a defence (USVT, noise, smoothing, Cutout)", setup);
