// `cpoison probe`: linear evaluation of a trained encoder (or of a random-init one, the
// baseline) on clean data. The last line is always
//   linear probe test accuracy: <final>% (best <best>%)
//   cpoison probe --encoder simclr.h5                       (data and mode from the checkpoint)
//   cpoison probe --random-init --data fashion-mnist --width 8 --subset 5000 --mode features
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "algorithms/eval.h"
#include "algorithms/train.h"
#include "engine/runtime.h"
#include "engine/io/hdf5.h"
#include "engine/nn/module.h"
#include "models/registry.h"
#include "poison/apply.h"
#include "tools/command.h"
#include "tools/common.h"

namespace {

using namespace cpoison;
using namespace cpoison::algorithms;

struct Options {
  std::string encoder, data, data_root, poison, mode, model = "resnet18", device = "cpu", milestones = "60,75,90", json,
      normalize;
  bool random_init = false, knn = false, ignore_fingerprint = false;
  int64_t subset = -1, test_subset = 0, pad_to = -1, channels = -1, width = 64;
  int64_t epochs = 100, batch_size = 512, iterations = 300, knn_k = 200;
  uint64_t seed = 0;
  int64_t subset_seed = -1;
  double lr = 1.0, momentum = 0.9, weight_decay = 0, gamma = 0.2, l2 = 1e-4, knn_temperature = 0.1;
};

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> out;
  std::istringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    CP_CHECK(end == item.c_str() + item.size() && std::isfinite(v) && v >= 0, "--milestones", "expected epochs >= 0 ",
             "separated by commas, got '", item, "' in '", s, "'");
    out.push_back(v);
  }
  return out;
}

int64_t attr_or(const io::Attrs& a, const std::string& key, int64_t fallback) {
  auto it = a.find(key);
  if (it == a.end() || !std::holds_alternative<int64_t>(it->second)) return fallback;
  return std::get<int64_t>(it->second);
}
std::string attr_or(const io::Attrs& a, const std::string& key, const std::string& fallback) {
  auto it = a.find(key);
  if (it == a.end() || !std::holds_alternative<std::string>(it->second)) return fallback;
  return std::get<std::string>(it->second);
}

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  auto* enc = app.add_option("--encoder", o->encoder, "Training checkpoint (cpoison train --out) whose encoder to probe");
  auto* rnd = app.add_flag("--random-init", o->random_init, "Probe a freshly initialised encoder (the baseline)");
  enc->excludes(rnd);
  app.add_option("--data", o->data, "Dataset (default: the checkpoint's; fashion-mnist with --random-init)");
  app.add_option("--data-root", o->data_root, "Directory of the dataset's files");
  app.add_option("--subset", o->subset,
                 "Fit on a class-balanced subset of N training images (0: all; default: the checkpoint's)")
      ->check(tools::int_range(0, kMaxAxis, {-1}));
  app.add_option("--subset-seed", o->subset_seed, "Seed of the subset (default: the checkpoint's, else 0)")
      ->check(tools::int_range(0, std::numeric_limits<int64_t>::max(), {-1}));
  app.add_option("--poison", o->poison,
                 "Fit the probe on the training images poisoned with this file (the \"poisoned probe\"); "
                 "the test set stays clean");
  app.add_option("--test-subset", o->test_subset, "Test on the first N test images (0: all)")
      ->check(tools::int_range(0, kMaxAxis))->capture_default_str();
  app.add_option("--pad-to", o->pad_to, "Zero-pad images to this size (default: the checkpoint's, else 0)")
      ->check(tools::int_range(0, kMaxImageSide, {-1}));
  app.add_option("--channels", o->channels, "0: as stored; 3: replicate grayscale (default: the checkpoint's)")
      ->check(tools::one_of({-1, 0, 1, 3}));
  app.add_option("--model", o->model, "Backbone for --random-init")->capture_default_str();
  app.add_option("--width", o->width, "Base width for --random-init")
      ->check(tools::int_range(1, models::kMaxWidth))->capture_default_str();
  app.add_option("--mode", o->mode,
                 "features: standardised frozen features + logistic regression by L-BFGS (docs/cpu-scale-reference.md); "
                 "sgd: the spec's probe (SGD on crop+flip views). Default: features for cpu-small checkpoints "
                 "and --random-init, else sgd")
      ->check(CLI::IsMember({"features", "sgd"}));
  app.add_option("--epochs", o->epochs, "sgd: epochs")
      ->check(tools::int_range(1, tools::kMaxEpochs))->capture_default_str();
  app.add_option("--batch-size", o->batch_size, "sgd: batch size (also the feature-extraction batch)")
      ->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--lr", o->lr, "sgd: learning rate")
      ->check(tools::in_range({0, 1000, true, false}))->capture_default_str();
  app.add_option("--momentum", o->momentum, "sgd: momentum")
      ->check(tools::in_range({0, 1, false, true}))->capture_default_str();
  app.add_option("--weight-decay", o->weight_decay, "sgd: weight decay")
      ->check(tools::real_range(0, 1))->capture_default_str();
  app.add_option("--milestones", o->milestones, "sgd: epochs after which lr is multiplied by --gamma")->capture_default_str();
  app.add_option("--gamma", o->gamma, "sgd: lr factor at each milestone")
      ->check(tools::in_range({0, 1, true, false}))->capture_default_str();
  app.add_option("--iterations", o->iterations, "features: L-BFGS iterations")
      ->check(tools::int_range(0, 10000000))->capture_default_str();
  app.add_option("--l2", o->l2, "features: L2 penalty (l2/2 ||W||^2)")
      ->check(tools::real_range(0, 1e6))->capture_default_str();
  app.add_flag("--knn", o->knn, "Also report weighted kNN accuracy on the same features");
  app.add_option("--knn-k", o->knn_k, "kNN neighbours")
      ->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--knn-temperature", o->knn_temperature, "kNN vote temperature")
      ->check(tools::in_range({0, 100, true, false}))->capture_default_str();
  app.add_option("--seed", o->seed, "Seed (random-init weights, sgd order and crops)")->capture_default_str();
  app.add_option("--device", o->device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--json", o->json, "Append the result as one JSON line to this file");
  app.add_flag("--ignore-fingerprint", o->ignore_fingerprint,
               "Apply --poison even to images whose fingerprint differs from the one it records (warns)");
  tools::add_normalize_option(app, o->normalize)
      ->description("Normalisation constants (data, a built-in dataset name or MEAN/STD); default: those the "
                    "checkpoint records, else the data's");

  app.callback([o] {
    CP_CHECK(!o->encoder.empty() || o->random_init, "probe", "give --encoder CKPT.h5 or --random-init");
    Device device = Device::cpu;
    if (o->device == "cuda") {
      CP_CHECK(cuda_available(), "--device", "cuda requested but no usable GPU (or a build without CUDA)");
      device = Device::cuda;
    }
    io::Attrs attrs;
    if (!o->encoder.empty()) attrs = io::H5Reader(o->encoder).file_attrs();
    // The checkpoint's data unless given.
    tools::DataOptions d;
    d.data = !o->data.empty() ? o->data : attr_or(attrs, "dataset", std::string("fashion-mnist"));
    d.data_root = o->data_root;
    d.subset = o->subset >= 0 ? o->subset : attr_or(attrs, "subset", int64_t(0));
    d.subset_seed = (uint64_t)(o->subset_seed >= 0 ? o->subset_seed : attr_or(attrs, "subset_seed", int64_t(0)));
    d.pad_to = o->pad_to >= 0 ? o->pad_to : attr_or(attrs, "pad_to", int64_t(0));
    d.channels = o->channels >= 0 ? o->channels : attr_or(attrs, "channels", int64_t(0));
    std::string mode = !o->mode.empty() ? o->mode
                       : (o->random_init || attr_or(attrs, "preset", std::string()) == "cpu-small") ? "features"
                                                                                                    : "sgd";

    data::Dataset train_set = tools::load_train_subset(d);
    if (!o->poison.empty()) train_set = poison::apply_poison_file(train_set, o->poison, o->ignore_fingerprint);
    data::Dataset test_set = data::load_dataset(d.data, data::Split::test, d.load_options());
    if (o->test_subset > 0) test_set = data::take_first(test_set, o->test_subset);

    models::EncoderPtr encoder;
    if (o->random_init) {
      nn::manual_seed(o->seed);
      models::ModelOptions mo;
      mo.width = o->width;
      mo.in_channels = train_set.channels();
      encoder = models::make_encoder(o->model, mo);
    } else {
      encoder = load_encoder(o->encoder);
    }
    encoder->to(device);
    // The encoder's own normalisation (recorded by training) unless --normalize says otherwise.
    std::vector<double> mean, stddev;
    tools::apply_normalize_option(train_set, o->normalize);
    if (!o->normalize.empty() || !tools::checkpoint_normalization(attrs, o->encoder, mean, stddev))
      dataset_normalization(train_set, mean, stddev);
    std::fprintf(stderr, "probing %s (%s, %lld-d features) on %s: %lld training, %lld test images, mode %s\n",
                 o->random_init ? "a random-init encoder" : o->encoder.c_str(), encoder->name().c_str(),
                 (long long)encoder->feature_dim(), train_set.name.c_str(), (long long)train_set.size(),
                 (long long)test_set.size(), mode.c_str());

    const auto t0 = std::chrono::steady_clock::now();
    ProbeResult r;
    double knn = -1;
    if (mode == "features" || o->knn) {
      Tensor ftr = extract_features(*encoder, train_set, mean, stddev, o->batch_size, device).to(Device::cpu);
      Tensor fte = extract_features(*encoder, test_set, mean, stddev, o->batch_size, device).to(Device::cpu);
      if (o->knn) {
        knn = knn_accuracy(ftr, train_set.labels, fte, test_set.labels, train_set.classes, o->knn_k, o->knn_temperature);
        std::printf("kNN (k=%lld, T=%g) test accuracy: %.2f%%\n", (long long)o->knn_k, o->knn_temperature, knn);
      }
      if (mode == "features") {
        FeatureProbeOptions fo;
        fo.max_iterations = o->iterations;
        fo.l2 = o->l2;
        r = linear_probe_features(ftr, train_set.labels, fte, test_set.labels, train_set.classes, fo);
        std::fprintf(stderr, "L-BFGS: %lld iterations, train accuracy %.2f%%\n", (long long)r.iterations,
                     r.train_accuracy);
      }
    }
    if (mode == "sgd") {
      SgdProbeOptions so;
      so.epochs = o->epochs;
      so.batch_size = o->batch_size;
      so.lr = o->lr;
      so.momentum = o->momentum;
      so.weight_decay = o->weight_decay;
      so.milestones = parse_list(o->milestones);
      so.gamma = o->gamma;
      so.seed = o->seed;
      so.device = device;
      so.augment = make_augment(augment::Recipe::crop_flip, "cifar10", train_set.channels(), train_set.height(),
                                train_set.width());
      so.augment.mean = mean, so.augment.std = stddev;
      so.on_epoch = [&](int64_t epoch, double acc) {
        std::fprintf(stderr, "probe epoch %lld/%lld test accuracy %.2f%%\n", (long long)epoch, (long long)so.epochs, acc);
      };
      r = linear_probe_sgd(*encoder, train_set, test_set, so);
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!o->json.empty()) {
      std::ofstream out(o->json, std::ios::app);
      CP_CHECK(out.good(), o->json, "cannot open for appending");
      nlohmann::json j{{"encoder", o->random_init ? std::string("random-init") : o->encoder},
                       {"data", d.data},
                       {"subset", d.subset},
                       {"poison", o->poison},
                       {"mode", mode},
                       {"final_accuracy", r.final_accuracy},
                       {"best_accuracy", r.best_accuracy},
                       {"train_accuracy", r.train_accuracy},
                       {"seconds", secs}};
      if (knn >= 0) j["knn_accuracy"] = knn;
      out << j.dump() << "\n";
    }
    std::fprintf(stderr, "probe took %.1f s\n", secs);
    std::printf("linear probe test accuracy: %.2f%% (best %.2f%%)\n", r.final_accuracy, r.best_accuracy);
    std::fflush(stdout);
  });
}

}  // namespace
CPOISON_COMMAND(probe, "Linear probe (and kNN) of a trained or random-init encoder on clean data", setup);
