// The training loop: a run interrupted after a checkpoint and resumed ends with exactly the
// weights of an uninterrupted run; config errors; and, on real data when it is installed, a
// short SimCLR run that lowers its loss and beats a random-init encoder's kNN accuracy.
// Its model step (algorithms::TrainingState, also the poisoner's): SGD on the online weights
// then the EMA of the momentum copies; views in the order of the augmentation draws; save and
// load carry weights and momentum buffers, so that a loaded state steps on as the saved one.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "algorithms/eval.h"
#include "algorithms/train.h"
#include "algorithms/training_state.h"
#include "engine/autograd.h"
#include "engine/ops/ops.h"
#include "engine/optim/sgd.h"
#include "models/registry.h"
#include "tests/support/skip.h"
#include "tests/support/temp_path.h"

using namespace cpoison;
using namespace cpoison::algorithms;

namespace {

// 24 random 8x8 grayscale images in 3 classes.
data::Dataset tiny_dataset() {
  Generator gen(42, 0);
  std::vector<uint8_t> pixels(24 * 8 * 8);
  for (auto& p : pixels) p = (uint8_t)gen.randint(0, 256);
  data::Dataset ds;
  ds.images = Tensor::from_vector(pixels, {24, 8, 8, 1});
  std::vector<int64_t> labels(24);
  for (int64_t i = 0; i < 24; ++i) labels[i] = i % 3;
  ds.labels = Tensor::from_vector(labels, {24});
  ds.classes = 3;
  ds.name = "tiny";
  return ds;
}

TrainConfig tiny_config(Algo algo, const std::string& path) {
  TrainConfig cfg;
  cfg.algo = algo;
  cfg.model_options.width = 2;
  cfg.model_options.in_channels = 1;
  cfg.algo_config = AlgoConfig::defaults(algo);
  cfg.algo_config.proj_dim = 8;
  cfg.algo_config.queue_size = 16;
  cfg.augment = make_augment(augment::Recipe::simclr, "cifar10", 1, 8, 8);
  cfg.epochs = 3;
  cfg.batch_size = 8;
  cfg.warmup_epochs = 1;
  cfg.seed = 5;
  cfg.checkpoint_path = path;
  cfg.progress_seconds = -1;
  return cfg;
}

std::string temp_path(const std::string& name) {
  return cpoison::test::temp_path("cpoison_algo_" + name).string();
}

void check_same_state(const nn::Module& a, const nn::Module& b) {
  auto sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (auto& [name, t] : sa) {
    CAPTURE(name);
    REQUIRE(sb.count(name));
    CHECK(t.to_vector<double>() == sb.at(name).to_vector<double>());
  }
}

std::shared_ptr<Learner> tiny_learner(Algo algo, uint64_t seed) {
  models::ModelOptions mo;
  mo.width = 2;
  mo.in_channels = 1;
  mo.num_classes = algo == Algo::supervised ? 3 : 0;
  AlgoConfig ac = AlgoConfig::defaults(algo);
  ac.proj_dim = 8;
  ac.queue_size = 16;
  ac.seed = seed;
  nn::manual_seed(seed);
  auto learner = make_learner(algo, "resnet18", mo, ac);
  learner->train();
  return learner;
}

optim::SGDOptions sgd_options() {
  optim::SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  so.weight_decay = 1e-4;
  return so;
}

// Four 8x8 grayscale images in [0, 1], their labels, and the learner's views of them.
Batch tiny_views(const Learner& learner, uint64_t seed) {
  Generator gen(seed, 0);
  Tensor x = uniform({4, 1, 8, 8}, 0.0, 1.0, gen);
  Batch views;
  views.view1 = x;
  if (learner.views_per_batch() == 2) views.view2 = uniform({4, 1, 8, 8}, 0.0, 1.0, gen);
  else views.labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0}, {4});
  return views;
}

}  // namespace

TEST_CASE("an interrupted and resumed run ends with the weights of an uninterrupted one") {
  for (Algo algo : {Algo::moco, Algo::supervised}) {
    CAPTURE(std::string(algo_name(algo)));
    data::Dataset ds = tiny_dataset();
    std::string whole = temp_path("whole.h5"), parts = temp_path("parts.h5"), log = temp_path("parts.jsonl");
    std::filesystem::remove(parts);
    TrainConfig full_cfg = tiny_config(algo, whole);
    full_cfg.epochs = 4;
    TrainResult full = train(ds, full_cfg);
    CHECK(full.epochs_done == 4);

    // Checkpoints after epochs 2 and 4; "killed" after epoch 3, so epoch 3 is lost and redone.
    TrainConfig first = tiny_config(algo, parts);
    first.epochs = 4;
    first.checkpoint_every = 2;
    first.log_path = log;
    first.on_epoch_end = [](int64_t done) { return done < 3; };
    TrainResult a = train(ds, first);
    CHECK(a.epochs_done == 3);

    TrainConfig second = first;
    second.on_epoch_end = nullptr;
    second.resume = true;
    TrainResult b = train(ds, second);
    CHECK(b.start_epoch == 2);
    CHECK(b.epochs_done == 4);
    REQUIRE(b.history.size() == 2);
    CHECK(b.history[0].loss == full.history[2].loss);
    CHECK(b.history[1].loss == full.history[3].loss);
    check_same_state(*full.learner, *b.learner);
    // And the files on disk hold the same weights.
    check_same_state(*load_learner(whole), *load_learner(parts));

    // The log holds each epoch once: the killed run's epoch 3 line was dropped on resume.
    std::ifstream in(log);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    REQUIRE(lines.size() == 4);
    for (int e = 0; e < 4; ++e) CHECK(lines[e].find("\"epoch\":" + std::to_string(e + 1) + ",") != std::string::npos);
    std::filesystem::remove(whole);
    std::filesystem::remove(parts);
    std::filesystem::remove(log);
  }
}

TEST_CASE("train rejects bad configs and mismatched checkpoints") {
  data::Dataset ds = tiny_dataset();
  TrainConfig cfg = tiny_config(Algo::simclr, "");
  cfg.model_options.in_channels = 3;
  CHECK_THROWS_WITH_AS(train(ds, cfg), doctest::Contains("channels"), Error);
  cfg = tiny_config(Algo::simclr, "");
  cfg.batch_size = 100;  // drop_last leaves no batch
  CHECK_THROWS_WITH_AS(train(ds, cfg), doctest::Contains("no batch"), Error);
  cfg = tiny_config(Algo::simclr, "");
  cfg.epochs = 0;
  CHECK_THROWS_WITH_AS(train(ds, cfg), doctest::Contains("epochs"), Error);

  std::string path = temp_path("mismatch.h5");
  cfg = tiny_config(Algo::simclr, path);
  cfg.epochs = 1;
  train(ds, cfg);
  TrainConfig other = tiny_config(Algo::moco, path);
  other.resume = true;
  CHECK_THROWS_WITH_AS(train(ds, other), doctest::Contains("checkpoint holds a simclr"), Error);
  std::filesystem::remove(path);
  CHECK_THROWS_AS(make_augment(augment::parse_recipe("autoaugment"), "cifar10", 3, 32, 32), Error);
}

TEST_CASE("step_loss: train calls the hook once per step in place of learner.loss") {
  data::Dataset ds = tiny_dataset();
  for (Algo algo : {Algo::simclr, Algo::supervised}) {
    CAPTURE(std::string(algo_name(algo)));
    const bool supervised = algo == Algo::supervised;
    TrainConfig plain = tiny_config(algo, "");
    plain.epochs = 2;
    TrainResult without = train(ds, plain);

    TrainConfig hooked = plain;
    int64_t calls = 0;
    hooked.step_loss = [&calls, supervised](Learner& learner, const Batch& views, Generator&) {
      ++calls;
      CHECK(learner.is_training());
      // Contrastive: two views; supervised: one view and its labels.
      CHECK(views.view1.shape() == Shape{8, 1, 8, 8});
      CHECK(views.view2.defined() == !supervised);
      if (!supervised) CHECK(views.view2.shape() == Shape{8, 1, 8, 8});
      CHECK(views.labels.defined() == supervised);
      if (supervised) CHECK(views.labels.shape() == Shape{8});
      return learner.loss(views);
    };
    TrainResult with = train(ds, hooked);
    CHECK(calls == 2 * 3);  // 2 epochs of 24 / 8 steps
    // Returning learner.loss is the plain step: the same losses and weights, bit for bit.
    REQUIRE(with.history.size() == 2);
    CHECK(with.history[1].loss == without.history[1].loss);
    check_same_state(*with.learner, *without.learner);

    // The hook's loss is what the step minimises: a scaled loss is logged scaled.
    TrainConfig scaled = plain;
    scaled.epochs = 1;
    scaled.step_loss = [](Learner& learner, const Batch& views, Generator&) { return mul_scalar(learner.loss(views), 0.0); };
    CHECK(train(ds, scaled).history[0].loss == 0.0);

    TrainConfig bad = plain;
    bad.step_loss = [](Learner& learner, const Batch& views, Generator&) {
      return learner.encoder().forward(views.view1);  // not a scalar
    };
    CHECK_THROWS_WITH_AS(train(ds, bad), doctest::Contains("step_loss hook must return a scalar"), Error);
  }
}

TEST_CASE("a short SimCLR run on Fashion-MNIST lowers its loss and beats a random-init encoder's kNN") {
  const bool have = std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") ||
                    std::getenv("CPOISON_DATA") != nullptr;
  SKIP_UNLESS(have, "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
  data::Dataset train_full = data::load_dataset("fashion-mnist", data::Split::train);
  data::Dataset train_set = data::balanced_subset(train_full, 400, 1);
  data::Dataset test_set = data::balanced_subset(data::load_dataset("fashion-mnist", data::Split::test), 500, 2);

  TrainConfig cfg;
  cfg.algo = Algo::simclr;
  cfg.model_options.width = 4;
  cfg.model_options.in_channels = 1;
  cfg.algo_config = AlgoConfig::defaults(Algo::simclr);
  cfg.augment = make_augment(augment::Recipe::cpu_small, "fashion-mnist", 1, 28, 28);
  cfg.epochs = 8;
  cfg.batch_size = 100;
  cfg.lr = 0.3;
  cfg.warmup_steps = 4;
  cfg.warmup_start_lr = 0;
  cfg.final_lr_fraction = 0;
  cfg.seed = 1;
  cfg.progress_seconds = -1;
  TrainResult r = train(train_set, cfg);
  REQUIRE(r.history.size() == 8);
  CHECK(r.history.back().loss < r.history.front().loss - 0.05);

  std::vector<double> mean, stddev;
  dataset_normalization("fashion-mnist", 1, mean, stddev);
  auto knn_of = [&](models::Encoder& enc) {
    Tensor ftr = extract_features(enc, train_set, mean, stddev, 200);
    Tensor fte = extract_features(enc, test_set, mean, stddev, 250);
    return knn_accuracy(ftr, train_set.labels, fte, test_set.labels, 10, 50, 0.1);
  };
  nn::manual_seed(1);
  auto random_encoder = models::make_encoder("resnet18", cfg.model_options);
  double trained = knn_of(r.learner->encoder()), random = knn_of(*random_encoder);
  INFO("kNN trained " << trained << "% vs random-init " << random << "%");
  CHECK(trained > random);
}

TEST_CASE("dataset_normalization: a poisoned or defended set keeps its source's statistics") {
  // apply_poison names its result "<source>+<attack>": training (make_augment on the poisoned
  // set's name) and evaluation (the clean set's name) must normalise alike.
  std::vector<double> m0, s0, m1, s1, m2, s2;
  dataset_normalization("fashion-mnist", 1, m0, s0);
  dataset_normalization("fashion-mnist+cp-c", 1, m1, s1);
  CHECK(m0 == std::vector<double>{0.2860});
  CHECK(s0 == std::vector<double>{0.3530});
  CHECK(m1 == m0);
  CHECK(s1 == s0);
  augment::AugmentConfig a = make_augment(augment::Recipe::none, "fashion-mnist+random", 1, 28, 28);
  CHECK(a.mean == m0);
  CHECK(a.std == s0);
  dataset_normalization("cifar100+cp-s", 3, m2, s2);
  std::vector<double> mc, sc;
  dataset_normalization("cifar100", 3, mc, sc);
  CHECK(m2 == mc);
  CHECK(s2 == sc);
}

// ---------------------------------------------------------------- TrainingState (the model step)

TEST_CASE("TrainingState: a step is SGD on the online weights, then the EMA of the momentum copies") {
  for (Algo algo : {Algo::moco, Algo::byol, Algo::supervised}) {
    CAPTURE(std::string(algo_name(algo)));
    auto mine = tiny_learner(algo, 3), by_hand = tiny_learner(algo, 3);
    TrainingState state(mine, sgd_options());
    optim::SGD sgd(by_hand->named_online_parameters(), sgd_options());
    for (uint64_t s = 0; s < 2; ++s) {
      state.step(mine->loss(tiny_views(*mine, s)));
      sgd.zero_grad();
      autograd::backward(by_hand->loss(tiny_views(*by_hand, s)));
      sgd.step();
      by_hand->momentum_update();
    }
    check_same_state(*mine, *by_hand);
  }
}

TEST_CASE("TrainingState: views are the augmentation draws in order; labels only for a one-view learner") {
  const augment::AugmentConfig aug = augment::AugmentConfig::cpu_small();
  Generator images(7, 0);
  const Tensor x = uniform({4, 1, 8, 8}, 0.0, 1.0, images);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0}, {4});
  for (Algo algo : {Algo::simclr, Algo::supervised}) {
    CAPTURE(std::string(algo_name(algo)));
    auto learner = tiny_learner(algo, 1);
    TrainingState state(learner, sgd_options());
    Generator gen(11, 0xA06), ref(11, 0xA06);
    Batch views = state.views(x, labels, aug, gen);
    Tensor first = augment::apply(x, augment::sample_params(aug, 4, 8, 8, ref), aug);
    CHECK(views.view1.to_vector<float>() == first.to_vector<float>());
    if (algo == Algo::supervised) {
      CHECK_FALSE(views.view2.defined());
      CHECK(views.labels.to_vector<int64_t>() == labels.to_vector<int64_t>());
    } else {
      Tensor second = augment::apply(x, augment::sample_params(aug, 4, 8, 8, ref), aug);
      CHECK(views.view2.to_vector<float>() == second.to_vector<float>());
      CHECK_FALSE(views.labels.defined());
    }
    CHECK(gen.offset() == ref.offset());  // the generator moved exactly as far as the draws
  }
}

TEST_CASE("TrainingState: a loaded state steps on exactly as the saved one") {
  auto saved = tiny_learner(Algo::moco, 3);
  TrainingState a(saved, sgd_options());
  a.step(saved->loss(tiny_views(*saved, 0)));
  io::Checkpoint ck;
  a.save(ck, "learner");
  CHECK(ck.tensors.count("learner.encoder.conv1.weight") == 1);
  bool has_momentum_buffer = false;
  for (auto& [key, t] : ck.tensors) has_momentum_buffer |= key.rfind("optim/", 0) == 0;
  CHECK(has_momentum_buffer);

  auto loaded = tiny_learner(Algo::moco, 9);  // other weights until load
  TrainingState b(loaded, sgd_options());
  b.load(ck, "learner");
  check_same_state(*saved, *loaded);
  a.step(saved->loss(tiny_views(*saved, 1)));
  b.step(loaded->loss(tiny_views(*loaded, 1)));
  check_same_state(*saved, *loaded);
}
