// `cpoison features`: a trained encoder's features (and a supervised model's logits) for every
// image of a dataset, in an HDF5 file that h5py / NumPy read, so a Python user can fit their own
// probe or plot. The data and the normalisation default to those the checkpoint records.
//   cpoison features victim.h5 --out f.h5                       (train and test splits)
//   cpoison features victim.h5 --data cifar10 --split test --out f.h5
// Output: /<split>/features f32 [N, D], /<split>/labels i64 [N], /<split>/source_rows i64 [N],
// /<split>/logits f32 [N, K] (supervised checkpoints); attributes checkpoint, algo, model,
// dataset, normalize_mean, normalize_std, poison. Layout letters: N images, D feature size,
// K classes.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "algorithms/eval.h"
#include "algorithms/train.h"
#include "engine/autograd.h"
#include "engine/io/hdf5.h"
#include "engine/ops/ops.h"
#include "poison/apply.h"
#include "tools/command.h"
#include "tools/common.h"

namespace {

using namespace cpoison;

struct Options {
  std::string checkpoint, out, split = "train,test", poison, device = "cpu";
  int64_t batch_size = 256;
  bool ignore_fingerprint = false;
  tools::DataOptions data;
};

// Logits of every image, normalised as the features are, in batches without autograd.
Tensor all_logits(models::Encoder& enc, const data::Dataset& ds, const std::vector<double>& mean,
                  const std::vector<double>& stddev, int64_t batch, Device device) {
  autograd::NoGradGuard no_grad;
  const bool was_training = enc.is_training();
  enc.eval();
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < ds.size(); i += batch) {
    const int64_t j = std::min(ds.size(), i + batch);
    Tensor x = augment::normalize(data::to_float_nchw(ds.images.slice0(i, j), device), mean, stddev);
    parts.push_back(enc.logits(x).to(Device::cpu).to(DType::f32));
  }
  enc.train(was_training);
  return concat(parts, 0);
}

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("checkpoint", o->checkpoint, "Training checkpoint (cpoison train, or a victim of cpoison experiment)")
      ->required();
  tools::add_data_options(app, o->data);
  app.footer("Data flags and --normalize default to those the checkpoint records.");
  app.add_option("--out", o->out, "Output HDF5 file")->required();
  app.add_option("--split", o->split, "train, test or train,test")
      ->check(CLI::IsMember({"train", "test", "train,test", "test,train"}))
      ->capture_default_str();
  app.add_option("--poison", o->poison, "Poison file applied to the training split first (as the victim saw it)");
  app.add_flag("--ignore-fingerprint", o->ignore_fingerprint, "Apply --poison to images of another fingerprint (warns)");
  app.add_option("--batch-size", o->batch_size, "Images per forward pass")
      ->check(tools::int_range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--device", o->device, "cpu | cuda")->capture_default_str();

  app.callback([o] {
    const auto t0 = std::chrono::steady_clock::now();
    const Device device = tools::parse_device(o->device);
    const io::Attrs recorded = io::H5Reader(o->checkpoint).file_attrs();
    tools::DataOptions d = o->data.with_recorded(recorded);
    CP_CHECK(!d.data.empty(), "features", "the checkpoint ", o->checkpoint, " names no dataset; give --data");
    auto learner = algorithms::load_learner(o->checkpoint);
    learner->to(device);
    models::Encoder& enc = learner->encoder();

    const bool want_train = o->split.find("train") != std::string::npos, want_test = o->split.find("test") != std::string::npos;
    data::Dataset train = tools::load_train(d);  // (also the normalisation's reference)
    if (!o->poison.empty()) train = poison::apply_poison_file(train, o->poison, o->ignore_fingerprint);
    // The encoder's own normalisation (recorded by training) unless --normalize is given.
    std::vector<double> mean, stddev;
    if (!d.normalize.empty() || !tools::checkpoint_normalization(recorded, o->checkpoint, mean, stddev))
      algorithms::dataset_normalization(train, mean, stddev);
    CP_CHECK((int64_t)mean.size() == enc.in_channels(), "features", "the normalisation has ", mean.size(),
             " channels but the encoder takes ", enc.in_channels(), " (give the data options it was trained with)");

    io::H5Writer w(o->out);
    const bool has_head = enc.head() != nullptr;
    std::string summary;
    for (const char* split : {"train", "test"}) {
      if (std::string(split) == "train" ? !want_train : !want_test) continue;
      data::Dataset ds = std::string(split) == "train" ? train : tools::load_test(d);
      Tensor f = algorithms::extract_features(enc, ds, mean, stddev, o->batch_size, device).to(Device::cpu).to(DType::f32);
      const std::string g = std::string(split) + "/";
      w.write(g + "features", f.contiguous());
      w.write(g + "labels", ds.labels.to(Device::cpu).contiguous());
      const std::vector<int64_t> rows = ds.rows();
      w.write(g + "source_rows", Tensor::from_vector(rows, {(int64_t)rows.size()}));
      if (has_head) w.write(g + "logits", all_logits(enc, ds, mean, stddev, o->batch_size, device).contiguous());
      summary += std::string(summary.empty() ? "" : ", ") + split + " " + std::to_string(ds.size()) + " x " +
                 std::to_string(f.size(1));
    }
    w.set_file_attr("checkpoint", std::filesystem::absolute(o->checkpoint).string());
    w.set_file_attr("algo", std::string(algorithms::algo_name(learner->algo())));
    w.set_file_attr("model", enc.name());
    w.set_file_attr("dataset", d.data);
    w.set_file_attr("dataset_name", train.name);
    w.set_file_attr("subset", d.subset);
    w.set_file_attr("subset_seed", (int64_t)d.subset_seed);
    w.set_file_attr("normalize_mean", data::format_constants(mean));
    w.set_file_attr("normalize_std", data::format_constants(stddev));
    w.set_file_attr("poison", o->poison);
    w.set_file_attr("logits", std::string(has_head ? "yes" : "no (the encoder has no classifier head)"));
    w.set_file_attr("software", std::string("cpoison ") + CPOISON_VERSION);
    w.commit();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("features of %s (%s %s) on %s: %s%s, %.1f s; %s\n", o->checkpoint.c_str(),
                algorithms::algo_name(learner->algo()), enc.name().c_str(), d.describe().c_str(), summary.c_str(),
                has_head ? ", with logits" : "", secs, o->out.c_str());
  });
}

}  // namespace
CPOISON_COMMAND(features, "Write a checkpoint's features (and logits) for a dataset to HDF5", setup);
