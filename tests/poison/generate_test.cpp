// Poison generation on tiny data: projection bounds, class-wise gradient sums, the dual-branch
// gradient, PGD lowering the loss, exact resume, the poison ratio and the baselines.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/ops/ops.h"
#include "poison/apply.h"
#include "poison/generate.h"
#include "tests/support/temp_path.h"

using namespace cpoison;
using namespace cpoison::poison;
using algorithms::Algo;

namespace {
// 32 random 8x8 grayscale images in 4 classes (class k is brighter in a k-dependent corner, so
// the classes differ a little).
data::Dataset tiny_set(int64_t n = 32) {
  Generator g(123);
  Tensor px = randint({n, 8, 8, 1}, 0, 256, g, DType::u8);
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = i % 4;
  data::Dataset ds;
  ds.images = px;
  ds.labels = Tensor::from_vector(lab, {n});
  ds.classes = 4;
  ds.name = "tiny";
  return ds;
}

augment::AugmentConfig tiny_augment() {
  augment::AugmentConfig a = augment::AugmentConfig::cpu_small();
  a.out_h = a.out_w = 8;
  return a;
}

PoisonConfig tiny_config(Attack attack, Algo algo = Algo::simclr) {
  PoisonConfig c = PoisonConfig::recipe(attack == Attack::cp_sample ? "cpu-small-cp-s" : "cpu-small-cp-c", algo == Algo::supervised ? Algo::simclr : algo);
  c.attack = attack;
  c.kind = attack == Attack::cp_sample || attack == Attack::adversarial ? NoiseKind::sample_wise
                                                                        : NoiseKind::class_wise;
  c.algo = algo;
  c.algo_config = algorithms::AlgoConfig::defaults(algo);
  c.algo_config.queue_size = 16;
  c.algo_config.proj_dim = 8;
  c.algo_config.pred_hidden = 16;
  c.model_options.width = 2;
  c.model_options.in_channels = 1;
  c.augment = tiny_augment();
  c.batch_size = 8;
  c.rounds = 2;
  c.model_steps = 2;
  c.noise_batches = 2;
  c.pgd_steps = 2;
  c.progress_seconds = -1;
  c.seed = 5;
  return c;
}

std::shared_ptr<algorithms::ContrastiveLearner> tiny_learner(Algo algo, bool dual) {
  algorithms::AlgoConfig ac = algorithms::AlgoConfig::defaults(algo);
  ac.queue_size = 16;
  ac.proj_dim = 8;
  ac.pred_hidden = 16;
  ac.dual_branch = dual;
  models::ModelOptions mo;
  mo.width = 2;
  mo.in_channels = 1;
  nn::manual_seed(3);
  return algorithms::ContrastiveLearner::make(algo, "resnet18", mo, ac);
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::fabs(v));
  return m;
}
}  // namespace

TEST_CASE("noise inits: parse_noise_init and noise_init_name round-trip; a bad name's error lists them") {
  for (NoiseInit i : {NoiseInit::uniform, NoiseInit::zero, NoiseInit::file})
    CHECK(parse_noise_init(noise_init_name(i)) == i);
  CHECK(std::string(noise_init_name(NoiseInit::zero)) == "zero");
  CHECK_THROWS_WITH_AS(parse_noise_init("gaussian", "--init"),
                       "--init: init must be uniform, zero or file, got 'gaussian'", Error);
}

TEST_CASE("poison knobs: knob_values lists the field list by key; set_knobs sets named knobs and refuses bad ones") {
  PoisonConfig c = PoisonConfig::recipe("cpu-small-aap", algorithms::Algo::supervised);
  const nlohmann::ordered_json v = knob_values(c);
  CHECK(v.at("rounds") == c.rounds);
  CHECK(v.at("target_shift") == c.target_shift);
  CHECK(v.at("augment_strength").get<double>() == c.augment_strength);
  CHECK(v.at("separability_space") == "noise");
  CHECK(v.begin().key() == "rounds");  // the list's order
  PoisonConfig d = c;
  set_knobs(d, {{"rounds", 4}, {"separability", 1}, {"separability_space", "features"}, {"separability_detach_spread", true},
                {"pattern_period", 2.5}},
            "poison.aap");
  CHECK(d.rounds == 4);
  CHECK(d.separability == 1.0);
  CHECK(d.separability_space == SeparabilitySpace::features);
  CHECK(d.separability_detach_spread);
  CHECK(d.pattern_period == 2.5);
  CHECK(d.pgd_steps == c.pgd_steps);  // the others as they were
  CHECK(d.eps == c.eps);
  // Round trip: the values of one config set onto another reproduce them.
  PoisonConfig e;
  set_knobs(e, nlohmann::json::parse(knob_values(d).dump()), "x");
  CHECK(knob_values(e) == knob_values(d));
  CHECK_THROWS_WITH_AS(set_knobs(d, {{"rounds", 2.5}}, "poison.aap"), "poison.aap.rounds: expected an integer, got 2.5",
                       Error);
  CHECK_THROWS_WITH_AS(set_knobs(d, {{"separability", "big"}}, "p"), "p.separability: expected a number, got \"big\"",
                       Error);
  CHECK_THROWS_WITH_AS(set_knobs(d, {{"separability_space", "pixels"}}, "p"),
                       doctest::Contains("p.separability_space"), Error);
  CHECK_THROWS_WITH_AS(set_knobs(d, {{"roundz", 2}}, "poison.cp_c"),
                       doctest::Contains("poison.cp_c: unknown knob 'roundz' (the knobs: rounds, model_steps"), Error);
}

TEST_CASE("cp-c generation keeps delta in [-1, 1] and records its settings") {
  data::Dataset ds = tiny_set();
  PoisonResult r = generate_poison(ds, tiny_config(Attack::cp_class), "tiny", 32);
  REQUIRE(r.finished);
  CHECK(r.poison.delta.shape() == Shape{4, 1, 8, 8});
  CHECK(max_abs(r.poison.delta) <= 1.0);
  CHECK(r.poison.kind == NoiseKind::class_wise);
  CHECK(r.poison.attack == "cp-c");
  CHECK(r.poison.algorithm == "simclr");
  CHECK(r.poison.rounds_done == 2);
  CHECK(r.history.size() == 2);
  // Sign steps of 0.1 from a uniform start move most entries by a multiple of 0.1 (or to a bound).
  data::Dataset victim = apply_poison(ds, r.poison);
  auto a = ds.images.to_vector<int64_t>(), b = victim.images.to_vector<int64_t>();
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= 8);
}

TEST_CASE("a class-wise delta receives the summed gradient of its class's images") {
  auto learner = tiny_learner(Algo::simclr, false);
  learner->eval();
  learner->set_requires_grad(false);
  data::Dataset ds = tiny_set(8);
  Tensor x = data::to_float_nchw(ds.images, Device::cpu);
  Generator g0(1);
  Tensor cls = uniform({4, 1, 8, 8}, -1, 1, g0);
  augment::AugmentConfig aug = tiny_augment();
  Generator ga(9);
  augment::AugmentParams p1 = augment::sample_params(aug, 8, 8, 8, ga), p2 = augment::sample_params(aug, 8, 8, 8, ga);
  auto loss_of = [&](const Tensor& rows) {
    Tensor xp = perturb(x, rows, 8.0 / 255.0);
    return learner->loss({augment::apply(xp, p1, aug), augment::apply(xp, p2, aug)});
  };
  Tensor leaf = cls.detach().set_requires_grad(true);
  Tensor g_class = autograd::grad(loss_of(index_select0(leaf, ds.labels)), {leaf})[0];
  Tensor rows = index_select0(cls, ds.labels).detach().set_requires_grad(true);
  Tensor g_rows = autograd::grad(loss_of(rows), {rows})[0];
  Tensor summed = index_add0(Tensor::zeros({4, 1, 8, 8}), ds.labels, g_rows);
  CHECK(max_abs(sub(g_class, summed)) < 1e-6 * std::max(1.0, max_abs(summed)));
  CHECK(max_abs(g_class) > 0);
}

TEST_CASE("dual branch: the delta gradient is the online-branch plus the momentum-branch gradient") {
  for (Algo algo : {Algo::moco, Algo::byol}) {
    std::string name = algorithms::algo_name(algo);
    CAPTURE(name);
    auto learner = tiny_learner(algo, true);
    learner->eval();
    learner->enqueue_keys = false;
    for (auto& [n, p] : learner->named_online_parameters()) p.set_requires_grad(false);
    learner->to(DType::f64);
    data::Dataset ds = tiny_set(8);
    Tensor x = data::to_float_nchw(ds.images, Device::cpu).to(DType::f64);
    Generator g0(2);
    Tensor delta = uniform({8, 1, 8, 8}, -0.5, 0.5, g0, DType::f64);
    augment::AugmentConfig aug = tiny_augment();
    Generator ga(4);
    augment::AugmentParams p1 = augment::sample_params(aug, 8, 8, 8, ga), p2 = augment::sample_params(aug, 8, 8, 8, ga);
    // Both views depend on delta; detaching one of them isolates one branch.
    auto grad_with = [&](bool keep1, bool keep2) {
      Tensor leaf = delta.detach().set_requires_grad(true);
      Tensor xp = perturb(x, leaf, 8.0 / 255.0);
      Tensor v1 = augment::apply(xp, p1, aug), v2 = augment::apply(xp, p2, aug);
      return autograd::grad(learner->loss({keep1 ? v1 : v1.detach(), keep2 ? v2 : v2.detach()}), {leaf})[0];
    };
    Tensor both = grad_with(true, true);
    Tensor online_only = grad_with(true, false);
    Tensor momentum_only = grad_with(false, true);
    CHECK(max_abs(momentum_only) > 0);
    CHECK(max_abs(sub(both, add(online_only, momentum_only))) < 1e-10 * std::max(1.0, max_abs(both)));
    learner->set_dual_branch(false);
    Tensor single = grad_with(true, true);
    if (algo == Algo::moco) {
      // MoCo's key view only feeds the momentum branch: without dual branch, detaching it changes nothing.
      CHECK(max_abs(sub(single, online_only)) < 1e-12 * std::max(1.0, max_abs(single)));
    } else {
      // BYOL sends each view through both branches; the target branch adds a non-zero share.
      CHECK(max_abs(sub(both, single)) > 1e-6 * max_abs(both));
    }
  }
}

TEST_CASE("PGD sign steps lower the contrastive loss on a fixed batch") {
  auto learner = tiny_learner(Algo::simclr, false);
  learner->eval();
  learner->set_requires_grad(false);
  data::Dataset ds = tiny_set(8);
  Tensor x = data::to_float_nchw(ds.images, Device::cpu);
  augment::AugmentConfig aug = tiny_augment();
  Generator ga(11);
  augment::AugmentParams p1 = augment::sample_params(aug, 8, 8, 8, ga), p2 = augment::sample_params(aug, 8, 8, 8, ga);
  Tensor delta = Tensor::zeros({8, 1, 8, 8});
  auto loss_at = [&](const Tensor& d) { return learner->loss({augment::apply(perturb(x, d, 16.0 / 255.0), p1, aug), augment::apply(perturb(x, d, 16.0 / 255.0), p2, aug)}); };
  double before;
  {
    autograd::NoGradGuard ng;
    before = loss_at(delta).item();
  }
  for (int s = 0; s < 5; ++s) {
    Tensor leaf = delta.detach().set_requires_grad(true);
    Tensor g = autograd::grad(loss_at(leaf), {leaf})[0];
    autograd::NoGradGuard ng;
    delta = clamp(sub(delta, mul_scalar(sign(g), 0.2)), -1.0, 1.0);
  }
  autograd::NoGradGuard ng;
  double after = loss_at(delta).item();
  CHECK(after < before);
  CHECK(max_abs(delta) <= 1.0);
}

TEST_CASE("a killed cp-s run resumes to the same delta as an uninterrupted one") {
  data::Dataset ds = tiny_set();
  auto dir = cpoison::test::temp_path("cpoison_resume_test");
  std::filesystem::create_directories(dir);
  PoisonConfig c = tiny_config(Attack::cp_sample);
  c.rounds = 3;
  c.model_steps = 0;    // one epoch: exercises the persistent sampler across rounds
  c.noise_batches = 0;  // one pass
  c.pgd_steps = 1;
  PoisonResult whole = generate_poison(ds, c, "tiny", 32);

  c.checkpoint_path = (dir / "run.ckpt.h5").string();
  std::filesystem::remove(c.checkpoint_path);
  c.on_round_end = [](int64_t done) { return done < 2; };  // "killed" after round 2
  PoisonResult first = generate_poison(ds, c, "tiny", 32);
  CHECK_FALSE(first.finished);
  CHECK(first.poison.rounds_done == 2);
  c.on_round_end = nullptr;
  c.resume = true;
  PoisonResult resumed = generate_poison(ds, c, "tiny", 32);
  CHECK(resumed.finished);
  CHECK(resumed.history.size() == 1);
  CHECK(resumed.poison.delta.to_vector<float>() == whole.poison.delta.to_vector<float>());
  // The JSONL log beside the checkpoint (engine/progress_log.h's schema) holds each round once.
  std::ifstream log(dir / "run.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(log, line);) lines.push_back(nlohmann::json::parse(line));
  REQUIRE(lines.size() == 3);
  for (int64_t r = 0; r < 3; ++r) {
    CHECK(lines[r]["run"] == "poison");
    CHECK(lines[r]["unit"] == "round");
    CHECK(lines[r]["round"] == r + 1);
    CHECK(lines[r]["rounds"] == 3);
    CHECK(lines[r]["attack"] == "cp-s");
  }
  CHECK(lines[2]["noise_loss"] == resumed.history[0].noise_loss);
  std::filesystem::remove_all(dir);
}

TEST_CASE("poison ratio: only the chosen rows carry or learn noise") {
  data::Dataset ds = tiny_set();
  PoisonConfig c = tiny_config(Attack::cp_sample);
  c.ratio = 0.25;
  c.init = NoiseInit::zero;
  PoisonResult r = generate_poison(ds, c, "tiny", 32);
  auto idx = r.poison.indices.to_vector<int64_t>();
  CHECK(idx.size() == 8);
  std::vector<bool> chosen(32, false);
  for (int64_t i : idx) chosen[i] = true;
  auto d = r.poison.delta.to_vector<float>();
  int moved = 0;
  for (int64_t n = 0; n < 32; ++n) {
    double m = 0;
    for (int64_t k = 0; k < 64; ++k) m = std::max(m, (double)std::fabs(d[n * 64 + k]));
    if (!chosen[n]) CHECK(m == 0.0);
    else moved += m > 0;
  }
  CHECK(moved > 0);
  data::Dataset victim = apply_poison(ds, r.poison);
  auto a = ds.images.to_vector<int64_t>(), b = victim.images.to_vector<int64_t>();
  for (int64_t n = 0; n < 32; ++n)
    if (!chosen[n])
      for (int64_t k = 0; k < 64; ++k) CHECK(a[n * 64 + k] == b[n * 64 + k]);
}

TEST_CASE("baselines: random noise, unlearnable examples, adversarial poisoning") {
  data::Dataset ds = tiny_set();
  PoisonConfig rc = tiny_config(Attack::random);
  rc.kind = NoiseKind::sample_wise;
  PoisonResult rnd = generate_poison(ds, rc, "tiny", 32);
  CHECK(rnd.poison.algorithm == "none");
  auto v = rnd.poison.delta.to_vector<double>();
  double mean = 0;
  for (double x : v) mean += x / v.size();
  CHECK(std::fabs(mean) < 0.05);
  CHECK(max_abs(rnd.poison.delta) <= 1.0);

  PoisonConfig ue = tiny_config(Attack::unlearnable, Algo::supervised);
  ue.kind = NoiseKind::class_wise;
  PoisonResult u = generate_poison(ds, ue, "tiny", 32);
  CHECK(u.poison.algorithm == "supervised");
  CHECK(u.history.size() == 2);

  PoisonConfig adv = tiny_config(Attack::adversarial, Algo::supervised);
  adv.pretrain_epochs = 1;
  adv.rounds = 1;
  PoisonResult a = generate_poison(ds, adv, "tiny", 32);
  CHECK(a.poison.kind == NoiseKind::sample_wise);
  CHECK(max_abs(a.poison.delta) <= 1.0);
  CHECK(max_abs(a.poison.delta) > 0);
}

TEST_CASE("bad poison settings are rejected by name") {
  data::Dataset ds = tiny_set();
  PoisonConfig c = tiny_config(Attack::cp_class);
  c.eps = 2.0;
  CHECK_THROWS_WITH_AS(generate_poison(ds, c, "tiny", 0), doctest::Contains("eps 2"), Error);
  c = tiny_config(Attack::cp_class, Algo::supervised);
  CHECK_THROWS_WITH_AS(generate_poison(ds, c, "tiny", 0), doctest::Contains("needs --algo simclr, moco or byol"), Error);
  c = tiny_config(Attack::cp_class);
  c.model_options.in_channels = 3;
  CHECK_THROWS_WITH_AS(generate_poison(ds, c, "tiny", 0), doctest::Contains("1 channels but the model expects 3"), Error);
  CHECK_THROWS_WITH_AS(parse_attack("cp-x"), doctest::Contains("unknown attack 'cp-x'"), Error);
}

TEST_CASE("poison diagnosis: the attacker's loss on poisoned vs clean views, round by round, changes no bit of the poison") {
  data::Dataset ds = tiny_set();
  for (Algo algo : {Algo::simclr, Algo::moco}) {
    INFO(algorithms::algo_name(algo));
    PoisonConfig c = tiny_config(Attack::cp_class, algo);
    c.diagnose_images = 16;
    PoisonResult with = generate_poison(ds, c, "tiny", 0);
    c.diagnose_images = 0;
    PoisonResult without = generate_poison(ds, c, "tiny", 0);
    CHECK(with.poison.delta.to_vector<float>() == without.poison.delta.to_vector<float>());
    REQUIRE(with.history.size() == 2);
    for (const auto& h : with.history) {
      CHECK(std::isfinite(h.probe_loss_poisoned));
      CHECK(std::isfinite(h.probe_loss_clean));
      CHECK(h.views_per_s > 0);
    }
    CHECK(std::isnan(without.history[0].probe_loss_poisoned));
  }
  // A vanishing eps leaves the poisoned views equal to the clean ones: the two losses agree.
  PoisonConfig c = tiny_config(Attack::cp_class);
  c.diagnose_images = 16;
  c.eps = 1e-9;
  PoisonResult r = generate_poison(ds, c, "tiny", 0);
  for (const auto& h : r.history) CHECK(h.probe_loss_poisoned == doctest::Approx(h.probe_loss_clean).epsilon(1e-5));
  // A supervised attacker (unlearnable examples) is diagnosed by its cross-entropy.
  PoisonConfig u = tiny_config(Attack::unlearnable, Algo::supervised);
  u.diagnose_images = 16;
  PoisonResult ru = generate_poison(ds, u, "tiny", 0);
  CHECK(std::isfinite(ru.history.back().probe_loss_poisoned));
}
