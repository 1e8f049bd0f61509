// Adversarial contrastive training on a tiny ResNet-18 (width 2, 1x8x8 images): PGD raises the
// loss above the unperturbed view's and stays in the eps-ball and the [0, 1] box (with and
// without normalised views), the model is left exactly as it was (weights, BatchNorm
// statistics, MoCo queue, no weight gradients), the training loss back-propagates into the
// weights, adversarial training runs through algorithms::train (and a run interrupted after a
// checkpoint resumes to the weights of an uninterrupted one), and the errors. The same for the
// supervised baseline (PGD on the cross-entropy of the one augmented batch). Layout: views and
// batches [B, C, H, W].
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "defense/adversarial.h"
#include "defense/defense.h"
#include "engine/io/hdf5.h"
#include "engine/ops/ops.h"
#include "models/registry.h"
#include "tests/support/temp_path.h"

using namespace cpoison;
using namespace cpoison::defense;
using namespace cpoison::algorithms;

namespace {

std::shared_ptr<ContrastiveLearner> tiny_learner(Algo a, uint64_t seed = 3) {
  models::ModelOptions o;
  o.width = 2;
  o.in_channels = 1;
  AlgoConfig c = AlgoConfig::defaults(a);
  c.proj_dim = 8;
  c.queue_size = 8;
  if (a == Algo::byol) c.proj_hidden = c.pred_hidden = 16;
  nn::manual_seed(seed);
  return ContrastiveLearner::make(a, "resnet18", o, c);
}

Tensor rnd(const Shape& shape, uint64_t seed) {
  Generator g(seed, 21);
  return uniform(shape, 0.0, 1.0, g);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

std::map<std::string, std::vector<double>> snapshot(const nn::Module& m) {
  std::map<std::string, std::vector<double>> out;
  for (auto& [name, t] : m.state_dict()) out[name] = t.to_vector<double>();
  return out;
}

std::shared_ptr<SupervisedLearner> tiny_supervised(uint64_t seed = 3) {
  models::ModelOptions o;
  o.width = 2;
  o.in_channels = 1;
  o.num_classes = 4;
  nn::manual_seed(seed);
  return SupervisedLearner::make("resnet18", o);
}

// 16 random 8x8 grayscale images, labels i % classes.
data::Dataset tiny_set(int64_t classes = 1) {
  Generator g(9);
  Tensor f = uniform({16, 8, 8, 1}, 0.0, 255.0, g);
  std::vector<uint8_t> px;
  for (double v : f.to_vector<double>()) px.push_back((uint8_t)v);
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {16, 8, 8, 1});
  std::vector<int64_t> labels(16);
  for (int64_t i = 0; i < 16; ++i) labels[i] = i % classes;
  ds.labels = Tensor::from_vector(labels, {16});
  ds.classes = classes;
  ds.name = "tiny";
  return ds;
}

// SimCLR on a width-2 ResNet-18, batch 8: two steps per epoch.
TrainConfig tiny_train_config() {
  TrainConfig cfg;
  cfg.algo = Algo::simclr;
  cfg.model_options.width = 2;
  cfg.model_options.in_channels = 1;
  cfg.algo_config = AlgoConfig::defaults(Algo::simclr);
  cfg.algo_config.proj_dim = 8;
  cfg.augment = make_augment(augment::Recipe::crop_flip, "fashion-mnist", 1, 8, 8);
  cfg.epochs = 1;
  cfg.batch_size = 8;
  cfg.warmup_epochs = 0;
  cfg.progress_seconds = -1;
  return cfg;
}

// The supervised baseline on the same images (4 classes), batch 8: two steps per epoch.
TrainConfig tiny_supervised_config() {
  TrainConfig cfg = tiny_train_config();
  cfg.algo = Algo::supervised;
  cfg.algo_config = AlgoConfig::defaults(Algo::supervised);
  return cfg;
}

}  // namespace

TEST_CASE("adversarial views raise the contrastive loss and stay in the eps-ball") {
  for (bool normalised : {false, true}) {
    INFO("normalised views: ", normalised);
    auto learner = tiny_learner(Algo::simclr);
    learner->train();
    Tensor x = rnd({8, 1, 8, 8}, 1);
    AdversarialOptions opt;
    opt.steps = 4;
    Tensor v1 = mul_scalar(x, 0.9), v2 = add_scalar(mul_scalar(x, 0.8), 0.1);
    if (normalised) {
      opt.mean = {0.3};
      opt.std = {0.4};
      v1 = mul_scalar(add_scalar(v1, -0.3), 1 / 0.4);
      v2 = mul_scalar(add_scalar(v2, -0.3), 1 / 0.4);
    }
    const auto before = snapshot(*learner);
    Generator g(2);
    AdversarialBatch adv = adversarial_batch(*learner, {v1, v2}, opt, g);
    CHECK(snapshot(*learner) == before);  // weights and BatchNorm statistics untouched
    for (const Tensor& p : learner->parameters()) CHECK_FALSE(p.grad().defined());
    CHECK(learner->is_training());
    REQUIRE(adv.losses.size() == 4);
    CHECK(max_abs_diff(adv.views.view2, v2) == 0);  // only view 1 is attacked

    // In pixels: |adv - x1| <= eps and adv in [0, 1].
    auto to_pixels = [&](const Tensor& v) { return normalised ? add_scalar(mul_scalar(v, 0.4), 0.3) : v; };
    auto a = to_pixels(adv.views.view1).to_vector<double>(), p = to_pixels(v1).to_vector<double>();
    double worst = 0, lo = 1, hi = 0;
    for (size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, std::abs(a[i] - p[i])), lo = std::min(lo, a[i]), hi = std::max(hi, a[i]);
    CHECK(worst <= opt.eps + 1e-6);
    CHECK(worst > 0.5 * opt.eps);
    CHECK(lo >= -1e-6);
    CHECK(hi <= 1 + 1e-6);

    // The attacked view's loss is above the clean one's (same BatchNorm mode, buffers restored).
    double clean;
    {
      autograd::NoGradGuard no_grad;
      clean = learner->loss({v1, v2}).item();
    }
    INFO("clean ", clean, ", adversarial ", adv.final_loss, ", PGD losses ", adv.losses[0], " .. ", adv.losses[3]);
    CHECK(adv.final_loss > clean + 1e-4);
    CHECK(adv.final_loss >= adv.losses[0]);
  }
}

TEST_CASE("adversarial views: no steps and no random start is the identity; eval BN mode") {
  auto learner = tiny_learner(Algo::simclr);
  Tensor x = rnd({4, 1, 8, 8}, 3);
  AdversarialOptions opt;
  opt.steps = 0;
  opt.random_start = false;
  Generator g(4);
  AdversarialBatch adv = adversarial_batch(*learner, {x, x}, opt, g);
  CHECK(max_abs_diff(adv.views.view1, x) == 0);
  CHECK(g.offset() == 0);
  opt.steps = 2;
  opt.random_start = true;
  opt.bn = AdversarialOptions::BnMode::eval;
  learner->train();
  adv = adversarial_batch(*learner, {x, mul_scalar(x, 0.5)}, opt, g);
  CHECK(learner->is_training());  // restored after the eval-mode attack
  CHECK(max_abs_diff(adv.views.view1, x) <= opt.eps + 1e-6);
}

TEST_CASE("adversarial views: both views (A2A) and MoCo's queue left untouched") {
  auto learner = tiny_learner(Algo::moco);
  learner->train();
  Tensor x = rnd({4, 1, 8, 8}, 5);
  AdversarialOptions opt;
  opt.both_views = true;
  opt.steps = 2;
  const auto before = snapshot(*learner);
  Generator g(6);
  AdversarialBatch adv = adversarial_batch(*learner, {x, mul_scalar(x, 0.7)}, opt, g);
  CHECK(snapshot(*learner) == before);  // queue, queue_ptr and BatchNorm statistics included
  CHECK(learner->enqueue_keys);
  CHECK(max_abs_diff(adv.views.view2, mul_scalar(x, 0.7)) > 0);
  CHECK(max_abs_diff(adv.views.view2, mul_scalar(x, 0.7)) <= opt.eps + 1e-6);
}

TEST_CASE("adversarial_contrastive_step: a loss that trains the weights") {
  auto learner = tiny_learner(Algo::byol);
  learner->train();
  Tensor x = rnd({4, 1, 8, 8}, 7);
  AdversarialOptions opt;
  opt.steps = 1;
  opt.clean_weight = 0.5;
  Generator g(8);
  Tensor loss = adversarial_step(*learner, {x, mul_scalar(x, 0.9)}, opt, g);
  CHECK(loss.requires_grad());
  CHECK(std::isfinite(loss.item()));
  autograd::backward(loss);
  int with_grad = 0;
  for (const Tensor& p : learner->online_parameters()) with_grad += p.grad().defined();
  CHECK(with_grad == (int)learner->online_parameters().size());
}

TEST_CASE("train_adversarial: a short run, and its errors") {
  data::Dataset ds = tiny_set();
  TrainConfig cfg = tiny_train_config();
  AdversarialOptions opt;
  opt.steps = 1;
  TrainResult r = train_adversarial(ds, cfg, opt);
  REQUIRE(r.history.size() == 1);
  CHECK(r.history[0].steps == 2);
  CHECK(std::isfinite(r.history[0].loss));
  CHECK(r.epochs_done == 1);
  // The same seed gives the same weights.
  TrainResult again = train_adversarial(ds, cfg, opt);
  CHECK(snapshot(*again.learner) == snapshot(*r.learner));

  // It is algorithms::train with the adversarial loss hook, bit for bit.
  TrainConfig hooked = cfg;
  hooked.step_loss = adversarial_loss_hook(cfg, opt);
  CHECK(snapshot(*algorithms::train(ds, hooked).learner) == snapshot(*r.learner));
  // The attack changes the training: plain training ends elsewhere.
  CHECK(snapshot(*algorithms::train(ds, cfg).learner) != snapshot(*r.learner));

  TrainConfig bad = cfg;
  bad.step_loss = hooked.step_loss;
  CHECK_THROWS_WITH_AS(train_adversarial(ds, bad, opt), doctest::Contains("leave it empty"), Error);
  bad = tiny_supervised_config();
  AdversarialOptions both = opt;
  both.both_views = true;
  CHECK_THROWS_WITH_AS(adversarial_loss_hook(bad, both), doctest::Contains("both = 1"), Error);
  AdversarialOptions bad_opt;
  bad_opt.mean = {0.5, 0.5};
  bad_opt.std = {0.5, 0.5};
  CHECK_THROWS_WITH_AS(train_adversarial(ds, cfg, bad_opt), doctest::Contains("normalisation has 2"), Error);
}

TEST_CASE("train_adversarial checkpoints, and an interrupted run resumes to the uninterrupted weights") {
  namespace fs = std::filesystem;
  const std::string whole = cpoison::test::temp_path("cpoison_adv_whole.h5").string(), parts = cpoison::test::temp_path("cpoison_adv_parts.h5").string();
  fs::remove(whole);
  fs::remove(parts);
  data::Dataset ds = tiny_set();
  AdversarialOptions opt;
  opt.steps = 1;  // its random start draws from the augmentation generator, which the checkpoint holds

  TrainConfig full_cfg = tiny_train_config();
  full_cfg.epochs = 2;
  full_cfg.checkpoint_path = whole;
  TrainResult full = train_adversarial(ds, full_cfg, opt);
  CHECK(full.epochs_done == 2);
  Defense d;
  d.kind = DefenseKind::adversarial;
  d.adversarial = opt;
  CHECK(std::get<std::string>(io::H5Reader(whole).file_attrs().at("defense")) == d.spec());

  // Checkpoint after epoch 1, then "killed"; the second call resumes from it.
  TrainConfig first = full_cfg;
  first.checkpoint_path = parts;
  first.checkpoint_every = 1;
  first.on_epoch_end = [](int64_t done) { return done < 1; };
  CHECK(train_adversarial(ds, first, opt).epochs_done == 1);
  TrainConfig second = first;
  second.on_epoch_end = nullptr;
  second.resume = true;
  TrainResult resumed = train_adversarial(ds, second, opt);
  CHECK(resumed.start_epoch == 1);
  CHECK(resumed.epochs_done == 2);
  REQUIRE(resumed.history.size() == 1);
  CHECK(resumed.history[0].loss == full.history[1].loss);
  CHECK(snapshot(*resumed.learner) == snapshot(*full.learner));
  CHECK(snapshot(*algorithms::load_learner(parts)) == snapshot(*algorithms::load_learner(whole)));
  fs::remove(whole);
  fs::remove(parts);
}

TEST_CASE("adversarial views: errors") {
  auto learner = tiny_learner(Algo::simclr);
  Tensor x = rnd({4, 1, 8, 8}, 10);
  Generator g(11);
  AdversarialOptions opt;
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {x, rnd({3, 1, 8, 8}, 12)}, opt, g), doctest::Contains("differ"), Error);
  opt.eps = -0.1;
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {x, x}, opt, g), doctest::Contains("eps = -0.1"), Error);
  opt = AdversarialOptions{};
  opt.mean = {0.5};
  opt.std = {0.0};
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {x, x}, opt, g), doctest::Contains("std > 0"), Error);
  opt.std = {0.5, 0.5};
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {x, x}, opt, g), doctest::Contains("mean has 1 entries"), Error);
}

TEST_CASE("supervised adversarial batch raises the cross-entropy and stays in the eps-ball") {
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3}, {8});
  for (bool normalised : {false, true}) {
    INFO("normalised batch: ", normalised);
    auto learner = tiny_supervised();
    learner->train();
    Tensor x = rnd({8, 1, 8, 8}, 13);
    AdversarialOptions opt;
    opt.steps = 4;
    if (normalised) {
      opt.mean = {0.3};
      opt.std = {0.4};
      x = mul_scalar(add_scalar(x, -0.3), 1 / 0.4);
    }
    const auto before = snapshot(*learner);
    Generator g(14);
    AdversarialBatch adv = adversarial_batch(*learner, {.view1 = x, .labels = labels}, opt, g);
    CHECK(snapshot(*learner) == before);  // weights and BatchNorm running statistics untouched
    for (const Tensor& p : learner->parameters()) CHECK_FALSE(p.grad().defined());
    CHECK(learner->is_training());
    CHECK_FALSE(adv.views.view1.requires_grad());
    REQUIRE(adv.losses.size() == 4);

    auto to_pixels = [&](const Tensor& v) { return normalised ? add_scalar(mul_scalar(v, 0.4), 0.3) : v; };
    auto a = to_pixels(adv.views.view1).to_vector<double>(), p = to_pixels(x).to_vector<double>();
    double worst = 0, lo = 1, hi = 0;
    for (size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, std::abs(a[i] - p[i])), lo = std::min(lo, a[i]), hi = std::max(hi, a[i]);
    CHECK(worst <= opt.eps + 1e-6);
    CHECK(worst > 0.5 * opt.eps);
    CHECK(lo >= -1e-6);
    CHECK(hi <= 1 + 1e-6);

    // The adversarial batch's cross-entropy is above the clean batch's (same BatchNorm mode).
    double clean;
    {
      autograd::NoGradGuard no_grad;
      clean = learner->loss({.view1 = x, .labels = labels}).item();
    }
    INFO("clean ", clean, ", adversarial ", adv.final_loss, ", PGD losses ", adv.losses[0], " .. ", adv.losses[3]);
    CHECK(adv.final_loss > clean + 1e-4);
    CHECK(adv.final_loss >= adv.losses[0]);
  }
}

TEST_CASE("supervised adversarial batch: eval BN mode, no steps, and the training loss") {
  auto learner = tiny_supervised();
  learner->train();
  Tensor x = rnd({4, 1, 8, 8}, 15);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{3, 2, 1, 0}, {4});
  AdversarialOptions opt;
  opt.steps = 0;
  opt.random_start = false;
  Generator g(16);
  CHECK(max_abs_diff(adversarial_batch(*learner, {.view1 = x, .labels = labels}, opt, g).views.view1, x) == 0);
  CHECK(g.offset() == 0);

  opt.steps = 2;
  opt.random_start = true;
  opt.bn = AdversarialOptions::BnMode::eval;
  const auto before = snapshot(*learner);
  AdversarialBatch adv = adversarial_batch(*learner, {.view1 = x, .labels = labels}, opt, g);
  CHECK(learner->is_training());  // restored after the eval-mode attack
  CHECK(snapshot(*learner) == before);
  CHECK(max_abs_diff(adv.views.view1, x) <= opt.eps + 1e-6);

  opt.bn = AdversarialOptions::BnMode::batch;
  opt.clean_weight = 0.5;
  Tensor loss = adversarial_step(*learner, {.view1 = x, .labels = labels}, opt, g);
  CHECK(loss.requires_grad());
  CHECK(std::isfinite(loss.item()));
  autograd::backward(loss);
  int with_grad = 0;
  for (const Tensor& p : learner->online_parameters()) with_grad += p.grad().defined();
  CHECK(with_grad == (int)learner->online_parameters().size());
}

TEST_CASE("supervised adversarial training through algorithms::train resumes to the uninterrupted weights") {
  namespace fs = std::filesystem;
  const std::string whole = cpoison::test::temp_path("cpoison_supadv_whole.h5").string(),
                    parts = cpoison::test::temp_path("cpoison_supadv_parts.h5").string();
  fs::remove(whole);
  fs::remove(parts);
  data::Dataset ds = tiny_set(4);
  AdversarialOptions opt;
  opt.steps = 1;  // its random start draws from the augmentation generator, which the checkpoint holds

  TrainConfig full_cfg = tiny_supervised_config();
  full_cfg.epochs = 2;
  full_cfg.checkpoint_path = whole;
  full_cfg.step_loss = adversarial_loss_hook(full_cfg, opt);
  TrainResult full = algorithms::train(ds, full_cfg);
  CHECK(full.epochs_done == 2);

  // Checkpoint after epoch 1, then "killed"; the second call resumes from it.
  TrainConfig first = full_cfg;
  first.checkpoint_path = parts;
  first.checkpoint_every = 1;
  first.on_epoch_end = [](int64_t done) { return done < 1; };
  CHECK(algorithms::train(ds, first).epochs_done == 1);
  TrainConfig second = first;
  second.on_epoch_end = nullptr;
  second.resume = true;
  TrainResult resumed = algorithms::train(ds, second);
  CHECK(resumed.start_epoch == 1);
  REQUIRE(resumed.history.size() == 1);
  CHECK(resumed.history[0].loss == full.history[1].loss);
  CHECK(snapshot(*resumed.learner) == snapshot(*full.learner));

  // train_adversarial picks the supervised hook: the same weights, and the defence recorded.
  TrainConfig plain = full_cfg;
  plain.step_loss = nullptr;
  TrainResult via = train_adversarial(ds, plain, opt);
  CHECK(snapshot(*via.learner) == snapshot(*full.learner));
  Defense d;
  d.kind = DefenseKind::adversarial;
  d.adversarial = opt;
  CHECK(std::get<std::string>(io::H5Reader(whole).file_attrs().at("defense")) == d.spec());
  // The attack changes the training: plain supervised training ends elsewhere.
  plain.checkpoint_path.clear();
  CHECK(snapshot(*algorithms::train(ds, plain).learner) != snapshot(*full.learner));
  fs::remove(whole);
  fs::remove(parts);
}

TEST_CASE("supervised adversarial training: errors") {
  auto learner = tiny_supervised();
  Tensor x = rnd({4, 1, 8, 8}, 17);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3}, {4});
  Generator g(18);
  AdversarialOptions both;
  both.both_views = true;
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {.view1 = x, .labels = labels}, both, g), doctest::Contains("one view"), Error);
  TrainConfig cfg = tiny_supervised_config();
  CHECK_THROWS_WITH_AS(adversarial_loss_hook(cfg, both), doctest::Contains("both = 1"), Error);
  CHECK_THROWS_WITH_AS(train_adversarial(tiny_set(4), cfg, both), doctest::Contains("one view"), Error);
  TrainConfig hooked = cfg;
  hooked.step_loss = adversarial_loss_hook(cfg, AdversarialOptions{});
  CHECK_THROWS_WITH_AS(train_adversarial(tiny_set(4), hooked, AdversarialOptions{}), doctest::Contains("leave it empty"),
                       Error);
  AdversarialOptions opt;
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {.view1 = x, .labels = Tensor::zeros({3}, DType::i64)}, opt, g),
                       doctest::Contains("labels must be [4]"), Error);
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {.view1 = Tensor::zeros({4, 64}), .labels = labels}, opt, g),
                       doctest::Contains("the batch must be float [B, C, H, W]"), Error);
  opt.mean = {0.5, 0.5};
  opt.std = {0.5, 0.5};
  CHECK_THROWS_WITH_AS(adversarial_batch(*learner, {.view1 = x, .labels = labels}, opt, g), doctest::Contains("normalisation has 2"), Error);
  CHECK_THROWS_WITH_AS(adversarial_loss_hook(cfg, opt), doctest::Contains("normalisation has 2"), Error);
}
