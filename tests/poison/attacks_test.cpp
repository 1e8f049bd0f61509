// The attacks against contrastive learning that followed CP (docs/attacks.md): AUE and AAP
// (Wang et al. 2024), TUE's class-separability term in the noise objective, and CP-S started
// from another attack's poison file. Tiny data (8x8 grey images, 4 classes whose bright
// band differs), width-2 networks; every answer is known in advance: which way a loss
// moves, bounds, sums, exact resumes.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "algorithms/losses.h"
#include "engine/ops/ops.h"
#include "poison/apply.h"
#include "poison/generate.h"
#include "tests/support/temp_path.h"

using namespace cpoison;
using namespace cpoison::poison;
using algorithms::Algo;

namespace {

// n images 8x8x1 of 4 classes: class k has its bright band in rows 2k and 2k + 1 (unchanged by a
// horizontal flip), plus a seeded pattern per image, so a tiny classifier can learn the classes.
data::Dataset quadrant_set(int64_t n = 32) {
  Generator g(77);
  std::vector<int64_t> noise = randint({n * 64}, 0, 50, g, DType::i64).to_vector<int64_t>();
  std::vector<uint8_t> px(n * 64);
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = i % 4;
    lab[i] = k;
    for (int64_t y = 0; y < 8; ++y)
      for (int64_t x = 0; x < 8; ++x) {
        const bool bright = y / 2 == k;
        px[i * 64 + y * 8 + x] = (uint8_t)((bright ? 170 : 40) + noise[i * 64 + y * 8 + x]);
      }
  }
  data::Dataset ds;
  ds.images = Tensor::from_vector(px, {n, 8, 8, 1});
  ds.labels = Tensor::from_vector(lab, {n});
  ds.classes = 4;
  ds.name = "quadrants";
  return ds;
}

augment::AugmentConfig tiny_augment() {
  augment::AugmentConfig a = augment::AugmentConfig::cpu_small();
  a.out_h = a.out_w = 8;
  return a;
}

// A recipe shrunk to tiny sizes (the structure, schedule and strength stay the recipe's).
PoisonConfig tiny(const std::string& recipe, NoiseKind kind = NoiseKind::sample_wise) {
  PoisonConfig c = PoisonConfig::recipe(recipe, Algo::simclr);
  c.kind = kind;
  c.model_options.width = 2;
  c.model_options.in_channels = 1;
  c.augment = tiny_augment();
  c.batch_size = 8;
  c.progress_seconds = -1;
  c.seed = 5;
  if (c.attack == Attack::aue) {
    c.rounds = 4, c.model_steps = 4, c.noise_batches = 0, c.pgd_steps = kind == NoiseKind::class_wise ? 1 : 3;
  } else if (c.attack == Attack::aap) {
    // A smaller lr than the recipe's 0.5 (meant for batch 128): 80 steps of batch 8 then fit the
    // classes without making the width-2 classifier too robust for the noise to move.
    c.lr = 0.05;
    c.pretrain_epochs = 20, c.pretrain_warmup_epochs = 1, c.pgd_steps = 10, c.step = 2.5 / 10;
  } else {
    c.algo_config.proj_dim = 8;
    c.rounds = 2, c.model_steps = 2, c.noise_batches = 2, c.pgd_steps = 1;
  }
  return c;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::fabs(v));
  return m;
}

// Float images [N,1,8,8] of the whole set, and the poisoned ones (each image's delta row).
Tensor images(const data::Dataset& ds) { return data::to_float_nchw(ds.images, Device::cpu); }
Tensor rows_of(const Poison& p, const data::Dataset& ds) {
  return p.class_wise() ? index_select0(p.delta, ds.labels) : p.delta;
}

// Logits of the attacker's classifier, eval mode, on the normalised un-augmented images.
Tensor classify(const PoisonResult& r, const Tensor& x, const augment::AugmentConfig& aug) {
  auto& sup = static_cast<algorithms::SupervisedLearner&>(*r.attacker);
  sup.eval();
  autograd::NoGradGuard ng;
  return sup.encoder().logits(augment::apply(x, augment::AugmentParams::identity(x.size(0), 8, 8), aug));
}

// Mean cross-entropy of the attacker on augmented views of x (the same draws for every call).
double attacker_ce(const PoisonResult& r, const Tensor& x, const Tensor& labels, const augment::AugmentConfig& aug,
                   uint64_t seed) {
  auto& sup = static_cast<algorithms::SupervisedLearner&>(*r.attacker);
  sup.eval();
  autograd::NoGradGuard ng;
  Generator g(seed, 3);
  double total = 0;
  for (int k = 0; k < 4; ++k) {
    augment::AugmentParams p = augment::sample_params(aug, x.size(0), 8, 8, g);
    total += sup.loss({.view1 = augment::apply(x, p, aug), .labels = labels}).item() / 4;
  }
  return total;
}

double csd_of_noise(const Poison& p, const data::Dataset& ds) {
  return algorithms::class_separability_loss(mul_scalar(flatten(rows_of(p, ds), 1), p.eps), ds.labels).item();
}

}  // namespace

TEST_CASE("aue and aap: names, supervised attackers and the recipes' numbers") {
  CHECK(parse_attack("aue") == Attack::aue);
  CHECK(parse_attack("aap") == Attack::aap);
  CHECK(std::string(attack_name(Attack::aue)) == "aue");
  CHECK(std::string(attack_name(Attack::aap)) == "aap");
  CHECK(supervised_attack(Attack::aue));
  CHECK(supervised_attack(Attack::aap));
  CHECK(supervised_attack(Attack::unlearnable));
  CHECK_FALSE(supervised_attack(Attack::cp_sample));
  // docs/attacks.md: EhanW/AUE-AAP's CIFAR-10 settings.
  PoisonConfig aue = PoisonConfig::recipe("aue", Algo::simclr);
  CHECK(aue.attack == Attack::aue);
  CHECK(aue.algo == Algo::supervised);
  CHECK(aue.rounds == 60);
  CHECK(aue.model_steps == 0);
  CHECK(aue.noise_batches == 0);
  CHECK(aue.pgd_steps == 5);
  CHECK(aue.step == doctest::Approx(0.1));
  CHECK(aue.batch_size == 128);
  CHECK(aue.lr == doctest::Approx(0.1));
  CHECK(aue.cosine);
  CHECK(aue.final_lr_fraction == doctest::Approx(1e-5));
  CHECK(aue.init == NoiseInit::zero);
  CHECK(aue.augment_strength == doctest::Approx(0.6));
  PoisonConfig aap = PoisonConfig::recipe("aap", Algo::simclr);
  CHECK(aap.attack == Attack::aap);
  CHECK(aap.rounds == 1);
  CHECK(aap.pretrain_epochs == 40);
  CHECK(aap.pretrain_warmup_epochs == 10);
  CHECK(aap.pgd_steps == 250);
  CHECK(aap.step == doctest::Approx(0.01));  // 2.5 eps / 250 in units of eps
  CHECK(aap.lr == doctest::Approx(0.5));
  CHECK(aap.target_shift == 1);
  CHECK(aap.augment_strength == doctest::Approx(0.4));
  PoisonConfig small_aue = PoisonConfig::recipe("cpu-small-aue", Algo::simclr), small_aap = PoisonConfig::recipe("cpu-small-aap", Algo::simclr);
  CHECK(small_aue.attack == Attack::aue);
  CHECK(small_aap.attack == Attack::aap);
  CHECK(small_aap.step == doctest::Approx(2.5 / (double)small_aap.pgd_steps));
  for (const PoisonConfig* c : {&aue, &aap, &small_aue, &small_aap}) CHECK_NOTHROW(c->validate());
}

TEST_CASE("AUE lowers its classifier's cross-entropy on the poisoned views; delta stays in [-1, 1]") {
  data::Dataset ds = quadrant_set();
  for (const NoiseKind kind : {NoiseKind::sample_wise, NoiseKind::class_wise}) {
    CAPTURE(noise_kind_name(kind));
    PoisonConfig c = tiny("cpu-small-aue", kind);
    c.eps = 32.0 / 255.0;
    PoisonResult r = generate_poison(ds, c, "quadrants", 32);
    REQUIRE(r.finished);
    REQUIRE(r.attacker);
    CHECK(r.poison.attack == "aue");
    CHECK(r.poison.algorithm == "supervised");
    CHECK(r.poison.delta.size(0) == (kind == NoiseKind::class_wise ? 4 : 32));
    CHECK(max_abs(r.poison.delta) <= 1.0);
    CHECK(max_abs(r.poison.delta) > 0.5);  // from zero, after several sign steps of 0.1
    // The noise is error-minimising: the attacker's loss on its (augmented) poisoned views is
    // below its loss on the same views of the clean images, i.e. with the initial (zero) noise.
    augment::AugmentConfig aug = augment::with_strength(c.augment, c.augment_strength);
    Tensor x = images(ds);
    double clean = attacker_ce(r, x, ds.labels, aug, 1);
    double poisoned = attacker_ce(r, perturb(x, rows_of(r.poison, ds), c.eps), ds.labels, aug, 1);
    CHECK(poisoned < clean);
    CHECK(r.history.size() == 4);
  }
}

TEST_CASE("class-wise AUE: a class's pattern receives the summed cross-entropy gradient of its images") {
  data::Dataset ds = quadrant_set(8);
  models::ModelOptions mo;
  mo.width = 2;
  mo.in_channels = 1;
  mo.num_classes = 4;
  nn::manual_seed(3);
  auto learner = algorithms::SupervisedLearner::make("resnet18", mo);
  learner->eval();
  learner->set_requires_grad(false);
  Tensor x = images(ds);
  Generator g0(1);
  Tensor cls = uniform({4, 1, 8, 8}, -1, 1, g0);
  augment::AugmentConfig aug = augment::with_strength(tiny_augment(), 0.6);
  Generator ga(9);
  augment::AugmentParams p = augment::sample_params(aug, 8, 8, 8, ga);
  // The mean CE over the batch: the class gradient is the sum of the per-image gradients of that mean.
  auto loss_of = [&](const Tensor& rows) { return learner->loss({.view1 = augment::apply(perturb(x, rows, 8.0 / 255.0), p, aug), .labels = ds.labels}); };
  Tensor leaf = cls.detach().set_requires_grad(true);
  Tensor g_class = autograd::grad(loss_of(index_select0(leaf, ds.labels)), {leaf})[0];
  Tensor rows = index_select0(cls, ds.labels).detach().set_requires_grad(true);
  Tensor g_rows = autograd::grad(loss_of(rows), {rows})[0];
  Tensor summed = index_add0(Tensor::zeros({4, 1, 8, 8}), ds.labels, g_rows);
  CHECK(max_abs(sub(g_class, summed)) < 1e-6 * std::max(1.0, max_abs(summed)));
  CHECK(max_abs(g_class) > 0);
}

TEST_CASE("AAP pushes the reference classifier towards class y + 1 and away from y") {
  data::Dataset ds = quadrant_set(32);
  PoisonConfig c = tiny("cpu-small-aap");
  c.eps = 64.0 / 255.0;  // the bands differ by 130/255: a trained tiny classifier needs a large radius
  PoisonResult r = generate_poison(ds, c, "quadrants", 32);
  REQUIRE(r.finished);
  CHECK(r.poison.attack == "aap");
  CHECK(r.poison.kind == NoiseKind::sample_wise);
  CHECK(max_abs(r.poison.delta) <= 1.0);
  augment::AugmentConfig aug = augment::with_strength(c.augment, c.augment_strength);
  Tensor x = images(ds);
  Tensor clean = softmax(classify(r, x, aug), 1);
  Tensor poisoned = softmax(classify(r, perturb(x, r.poison.delta, c.eps), aug), 1);
  std::vector<int64_t> lab = ds.labels.to_vector<int64_t>(), target(32);
  for (int64_t i = 0; i < 32; ++i) target[i] = (lab[i] + 1) % 4;
  Tensor tgt = Tensor::from_vector(target, {32});
  auto mean_prob = [&](const Tensor& probs, const Tensor& which) {
    return mean(gather1(probs, which)).item();
  };
  auto accuracy = [&](const Tensor& probs, const Tensor& which) {
    auto pred = argmax(probs, 1).to_vector<int64_t>(), w = which.to_vector<int64_t>();
    double hit = 0;
    for (size_t i = 0; i < pred.size(); ++i) hit += pred[i] == w[i];
    return hit / (double)pred.size();
  };
  const double p_target_clean = mean_prob(clean, tgt), p_target_poisoned = mean_prob(poisoned, tgt);
  const double acc_clean = accuracy(clean, ds.labels), acc_poisoned = accuracy(poisoned, ds.labels);
  INFO("target prob ", p_target_clean, " -> ", p_target_poisoned, "; accuracy ", acc_clean, " -> ", acc_poisoned,
       "; target hits ", accuracy(poisoned, tgt));
  CHECK(acc_clean > 0.9);  // the reference classifier learnt the clean classes
  CHECK(p_target_poisoned > p_target_clean + 0.3);
  CHECK(acc_poisoned < acc_clean - 0.3);
  CHECK(accuracy(poisoned, tgt) > accuracy(clean, tgt) + 0.3);

  // One pass reaches every image, the partial last batch included (30 = 3 x 8 + 6).
  data::Dataset odd = quadrant_set(30);
  PoisonConfig o = tiny("cpu-small-aap");
  o.pretrain_epochs = 1, o.pretrain_warmup_epochs = 0, o.pgd_steps = 1;
  Poison q = generate_poison(odd, o, "quadrants", 30).poison;
  auto d = q.delta.to_vector<float>();
  for (int64_t i = 0; i < 30; ++i) {
    double m = 0;
    for (int64_t k = 0; k < 64; ++k) m = std::max(m, (double)std::fabs(d[i * 64 + k]));
    CHECK(m > 0);
  }
  // Class-wise AAP: one targeted pattern per class.
  o.kind = NoiseKind::class_wise;
  Poison qc = generate_poison(odd, o, "quadrants", 30).poison;
  CHECK(qc.delta.shape() == Shape{4, 1, 8, 8});
  CHECK(max_abs(qc.delta) > 0);
  CHECK(max_abs(qc.delta) <= 1.0);
}

TEST_CASE("killed AUE and AAP runs resume to the delta of uninterrupted ones") {
  data::Dataset ds = quadrant_set();
  auto dir = cpoison::test::temp_path("cpoison_attacks_resume_test");
  std::filesystem::create_directories(dir);
  for (const std::string recipe : {"cpu-small-aue", "cpu-small-aap"}) {
    CAPTURE(recipe);
    PoisonConfig c = tiny(recipe);
    if (c.attack == Attack::aap) c.rounds = 2, c.pretrain_epochs = 2, c.pgd_steps = 2;  // pre-training in round 1 only
    c.separability = 0.5;  // the separability path resumes too
    PoisonResult whole = generate_poison(ds, c, "quadrants", 32);
    c.checkpoint_path = (dir / (recipe + ".ckpt.h5")).string();
    std::filesystem::remove(c.checkpoint_path);
    c.on_round_end = [](int64_t done) { return done < 1; };
    PoisonResult first = generate_poison(ds, c, "quadrants", 32);
    CHECK_FALSE(first.finished);
    c.on_round_end = nullptr;
    c.resume = true;
    PoisonResult resumed = generate_poison(ds, c, "quadrants", 32);
    CHECK(resumed.finished);
    CHECK(resumed.history.size() == (size_t)c.rounds - 1);
    CHECK(resumed.poison.delta.to_vector<float>() == whole.poison.delta.to_vector<float>());
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("CP-S starts from any poison file: class-wise by label, sample-wise as is, rescaled to its eps") {
  data::Dataset ds = quadrant_set();
  auto dir = cpoison::test::temp_path("cpoison_attacks_init_test");
  std::filesystem::create_directories(dir);
  // Sources: a class-wise AUE and a sample-wise AAP poison at 8/255.
  PoisonConfig aue = tiny("cpu-small-aue", NoiseKind::class_wise);
  aue.rounds = 1;
  aue.init = NoiseInit::uniform;  // so that every entry is non-zero and the copy is visible
  PoisonConfig aap = tiny("cpu-small-aap");
  aap.pretrain_epochs = 1, aap.pgd_steps = 2;
  aap.init = NoiseInit::uniform;
  const std::string aue_file = (dir / "aue.h5").string(), aap_file = (dir / "aap.h5").string();
  save_poison(aue_file, generate_poison(ds, aue, "quadrants", 32).poison);
  save_poison(aap_file, generate_poison(ds, aap, "quadrants", 32).poison);
  for (const std::string& file : {aue_file, aap_file}) {
    for (double eps : {8.0 / 255.0, 16.0 / 255.0}) {
      CAPTURE(file);
      CAPTURE(eps);
      Poison src = load_poison(file);
      PoisonConfig c = tiny("cpu-small-cp-s", NoiseKind::sample_wise);
      c.rounds = 1, c.model_steps = 1, c.noise_batches = 0, c.pgd_steps = 1;  // each image moves once by 0.1
      c.eps = eps;
      c.init = NoiseInit::file;
      c.init_file = file;
      PoisonResult r = generate_poison(ds, c, "quadrants", 32);
      // The start: the source's rows (by label for class-wise), its pixel perturbation kept.
      Tensor start = mul_scalar(rows_of(src, ds), src.eps / eps);
      CHECK(max_abs(sub(r.poison.delta, start)) <= 0.1 + 1e-6);
      CHECK(max_abs(r.poison.delta) <= 1.0);
      CHECK(r.poison.delta.shape() == Shape{32, 1, 8, 8});
    }
  }
  // CP-C from the class-wise file copies it; from the sample-wise one it refuses, naming the file.
  PoisonConfig cpc = tiny("cpu-small-cp-c", NoiseKind::class_wise);
  cpc.init = NoiseInit::file;
  cpc.init_file = aap_file;
  CHECK_THROWS_WITH_AS(generate_poison(ds, cpc, "quadrants", 32), doctest::Contains("holds sample-wise noise"), Error);
  cpc.init_file = aue_file;
  CHECK_NOTHROW(generate_poison(ds, cpc, "quadrants", 32));
  // A sample-wise file of other images is refused.
  PoisonConfig cps = tiny("cpu-small-cp-s", NoiseKind::sample_wise);
  cps.init = NoiseInit::file;
  cps.init_file = aap_file;
  CHECK_THROWS_WITH_AS(generate_poison(quadrant_set(16), cps, "quadrants", 16), doctest::Contains("same images"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("the separability term makes the noise more class-separable; both spaces run") {
  data::Dataset ds = quadrant_set();
  // Sample-wise unlearnable examples from uniform noise, with and without TUE's term on the noise.
  PoisonConfig c = tiny("cpu-small-aue");
  c.init = NoiseInit::uniform;
  c.augment_strength = 0;
  PoisonResult plain = generate_poison(ds, c, "quadrants", 32);
  c.separability = 5.0;
  PoisonResult separated = generate_poison(ds, c, "quadrants", 32);
  const double before = csd_of_noise(plain.poison, ds), after = csd_of_noise(separated.poison, ds);
  INFO("CSD of the noise without / with the term: ", before, " / ", after);
  CHECK(after < 0.9 * before);
  // The release's gradient (spreads detached) also separates, less directly.
  c.separability_detach_spread = true;
  CHECK(csd_of_noise(generate_poison(ds, c, "quadrants", 32).poison, ds) < before);
  // On a contrastive attacker's embeddings (CP-C), and on a classifier's (AUE).
  for (const std::string recipe : {"cpu-small-cp-c", "cpu-small-aue"}) {
    CAPTURE(recipe);
    PoisonConfig e = tiny(recipe, recipe == "cpu-small-cp-c" ? NoiseKind::class_wise : NoiseKind::sample_wise);
    e.separability = 1.0;
    e.separability_space = SeparabilitySpace::embedding;
    PoisonResult r = generate_poison(ds, e, "quadrants", 32);
    CHECK(r.finished);
    CHECK(std::isfinite(r.history.back().noise_loss));
    CHECK(max_abs(r.poison.delta) <= 1.0);
  }
}

TEST_CASE("bad AUE / AAP / separability settings are rejected by name") {
  data::Dataset ds = quadrant_set();
  PoisonConfig c = tiny("cpu-small-aap");
  c.target_shift = 4;  // (y + 4) mod 4 = y
  CHECK_THROWS_WITH_AS(generate_poison(ds, c, "quadrants", 32), doctest::Contains("must differ from y"), Error);
  c = tiny("cpu-small-aap");
  c.target_shift = 0;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("target_shift must be >= 1"), Error);
  c = tiny("cpu-small-aap");
  c.pretrain_warmup_epochs = c.pretrain_epochs + 1;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("pretrain_warmup_epochs"), Error);
  c = tiny("cpu-small-aue");
  c.augment_strength = 3;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("augment_strength 3"), Error);
  c = tiny("cpu-small-aue");
  c.separability = -1;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("separability must be a weight >= 0"), Error);
  // The space is named where it is read (flags, settings): parse and name round-trip.
  for (SeparabilitySpace s : {SeparabilitySpace::noise, SeparabilitySpace::embedding, SeparabilitySpace::features})
    CHECK(parse_separability_space(separability_space_name(s)) == s);
  CHECK_THROWS_WITH_AS(parse_separability_space("pixels", "--separability-space"),
                       "--separability-space: separability_space must be 'noise', 'embedding' or 'features', got "
                       "'pixels'",
                       Error);
  c = tiny("cpu-small-cp-c", NoiseKind::class_wise);
  c.attack = Attack::adversarial, c.kind = NoiseKind::sample_wise;
  c.separability = 1;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("not adversarial"), Error);
  CHECK_THROWS_WITH_AS(PoisonConfig::recipe("cpu-small-aux", Algo::simclr), doctest::Contains("cpu-small-aue"), Error);
}


TEST_CASE("pattern: one full-amplitude square-wave grating per class, orientation pi c / K, the given period") {
  const int64_t K = 4, H = 16, W = 16;
  const double period = 8;
  Tensor g = grating_patterns(K, 2, H, W, period, 11);
  REQUIRE(g.shape() == Shape{K, 2, H, W});
  std::vector<float> v = g.to_vector<float>();
  auto at = [&](int64_t c, int64_t ch, int64_t y, int64_t x) { return v[(size_t)(((c * 2 + ch) * H + y) * W + x)]; };
  for (float e : v) CHECK(std::fabs(e) == 1.0f);  // full amplitude: the noise is +-eps everywhere
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      CHECK(at(0, 0, y, x) == at(0, 1, y, x));      // the same on every channel
      CHECK(at(0, 0, y, x) == at(0, 0, 0, x));      // class 0 (theta 0): constant along columns
      CHECK(at(2, 0, y, x) == at(2, 0, y, 0));      // class K/2 (theta pi/2): constant along rows
      if (x + 8 < W) CHECK(at(0, 0, y, x) == at(0, 0, y, x + 8));  // periodic with the period
      if (x + 4 < W) CHECK(at(0, 0, y, x) == -at(0, 0, y, x + 4));  // and a half period flips the sign
    }
  // Class 1 (theta pi/4) is constant along the anti-diagonal x + y = const.
  for (int64_t y = 1; y < H; ++y)
    for (int64_t x = 0; x + 1 < W; ++x) CHECK(at(1, 0, y, x) == at(1, 0, y - 1, x + 1));
  // The phases come from the seed: the same seed gives the same bits, another seed others.
  CHECK(max_abs(sub(g, grating_patterns(K, 2, H, W, period, 11))) == 0.0);
  CHECK(max_abs(sub(g, grating_patterns(K, 2, H, W, period, 12))) > 0.0);
  CHECK_THROWS_WITH_AS(grating_patterns(K, 1, H, W, 1.5, 0), doctest::Contains("period must be >= 2"), Error);
  // A blank class gets no grating; every other class keeps exactly its own.
  std::vector<float> b = grating_patterns(K, 2, H, W, period, 11, 2).to_vector<float>();
  const size_t per_class = (size_t)(2 * H * W);
  for (size_t i = 0; i < b.size(); ++i) CHECK(b[i] == (i / per_class == 2 ? 0.0f : v[i]));
}

TEST_CASE("pattern attack: class-wise, no attacker, no rounds; the victim's data stays in the eps ball") {
  data::Dataset ds = quadrant_set();
  PoisonConfig c;
  c.attack = Attack::pattern;
  c.kind = NoiseKind::class_wise;
  c.pattern_period = 4;
  c.seed = 3;
  c.progress_seconds = -1;
  c.model_options.in_channels = 1;
  PoisonResult r = generate_poison(ds, c, "quadrants", 32);
  CHECK(r.finished);
  CHECK(r.attacker == nullptr);
  CHECK(r.history.empty());
  CHECK(r.poison.rounds_total == 0);
  CHECK(r.poison.attack == "pattern");
  CHECK(r.poison.delta.shape() == Shape{4, 1, 8, 8});
  // Class 0 is blank by default: no grating, the images of class 0 stay as they are.
  CHECK(max_abs(sub(r.poison.delta, grating_patterns(4, 1, 8, 8, 4, 3, 0))) == 0.0);
  CHECK(max_abs(r.poison.delta.slice0(0, 1)) == 0.0);
  CHECK(max_abs(r.poison.delta.slice0(1, 4)) == 1.0);
  Tensor victim = apply_poison(ds, r.poison).images;  // u8, quantised as the victim sees it
  std::vector<int64_t> a = ds.images.to(DType::i64).to_vector<int64_t>(), b = victim.to(DType::i64).to_vector<int64_t>();
  int64_t worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max<int64_t>(worst, std::llabs(a[i] - b[i]));
  CHECK(worst == 8);  // eps = 8/255: full amplitude reaches the bound and never passes it
  // pattern_blank -1: every class a grating; a class the data does not have is refused.
  c.pattern_blank = -1;
  CHECK(max_abs(sub(generate_poison(ds, c, "quadrants", 32).poison.delta, grating_patterns(4, 1, 8, 8, 4, 3))) == 0.0);
  c.pattern_blank = 4;
  CHECK_THROWS_WITH_AS(generate_poison(ds, c, "quadrants", 32), doctest::Contains("not a class of the data"), Error);
  c.pattern_blank = -2;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("pattern_blank"), Error);
  c.pattern_blank = 0;
  c.kind = NoiseKind::sample_wise;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("pattern noise is class-wise"), Error);
  c.kind = NoiseKind::class_wise;
  c.pattern_period = 1;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("pattern_period"), Error);
  c.pattern_period = 8;
  c.separability = 1;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("not pattern"), Error);
  CHECK(parse_attack("pattern") == Attack::pattern);
  CHECK(synthetic_attack(Attack::pattern));
  CHECK(synthetic_attack(Attack::random));
  CHECK_FALSE(synthetic_attack(Attack::cp_class));
}

TEST_CASE("separability on the backbone features, with or without the attack's own loss") {
  data::Dataset ds = quadrant_set();
  PoisonConfig c = tiny("cpu-small-cp-c", NoiseKind::class_wise);
  c.separability = 1.0;
  c.separability_space = SeparabilitySpace::features;
  PoisonResult with_own = generate_poison(ds, c, "quadrants", 32);
  CHECK(with_own.finished);
  CHECK(max_abs(with_own.poison.delta) <= 1.0);
  c.attack_loss_weight = 0;  // TUE's SimCLR setting: the separability term alone
  PoisonResult alone = generate_poison(ds, c, "quadrants", 32);
  CHECK(alone.finished);
  // Without InfoNCE the noise objective is the CSD alone: a ratio of distances, well below the
  // InfoNCE of a batch of 8 (about log 15).
  CHECK(alone.history.back().noise_loss < with_own.history.back().noise_loss);
  CHECK(max_abs(sub(alone.poison.delta, with_own.poison.delta)) > 0.0);
  c.separability = 0;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("attack_loss_weight 0 leaves the noise no objective"), Error);
}
