// A contrastive loss of one's own, built outside the cpoison tree against the installed library:
// alignment + uniformity (Wang & Isola, ICML 2020) on the two views' SimCLR embeddings, checked
// against f64 finite differences, then used by a SimCLR attacker to make a small CP-C poison.
// docs/extending.md walks through it.
//   make && ./custom_loss [dataset name or .h5 file] [images] [out.h5]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "algorithms/train.h"  // make_augment
#include "engine/ops/ops.h"
#include "poison/generate.h"

using namespace cpoison;

// U(x) = log mean_{i != j} exp(-2 |x_i - x_j|^2) over unit rows x [B, D], using
// |x_i - x_j|^2 = 2 - 2 x_i.x_j.
Tensor uniformity(const Tensor& x) {
  const int64_t n = x.size(0);
  std::vector<double> off_diagonal(n * n, 1.0);
  for (int64_t i = 0; i < n; ++i) off_diagonal[i * n + i] = 0.0;
  Tensor mask = Tensor::from_vector(off_diagonal, {n, n}, x.dtype(), x.device());
  Tensor sq_dist = 2.0 - 2.0 * matmul(x, transpose(x, 0, 1));
  return log(sum(exp(-2.0 * sq_dist) * mask) / (double)(n * (n - 1)));
}

// L = mean_i |u_i - v_i|^2 + (U(u) + U(v)) / 2, u and v the normalised embeddings [B, D].
Tensor align_uniform(const Tensor& z1, const Tensor& z2) {
  Tensor u = l2_normalize(z1, 1), v = l2_normalize(z2, 1);
  return mean(sum(square(u - v), {1})) + 0.5 * (uniformity(u) + uniformity(v));
}

// Central differences in f64 against autograd, for every element of z1 and z2.
double max_gradient_error() {
  Generator gen(7);
  std::vector<Tensor> z = {uniform({6, 4}, -1.0, 1.0, gen, DType::f64), uniform({6, 4}, -1.0, 1.0, gen, DType::f64)};
  for (Tensor& t : z) t.set_requires_grad(true);
  std::vector<Tensor> analytic = autograd::grad(align_uniform(z[0], z[1]), z);
  autograd::NoGradGuard no_grad;
  const double h = 1e-6;
  double worst = 0;
  for (int which = 0; which < 2; ++which) {
    std::vector<double> base = z[which].to_vector<double>(), g = analytic[which].to_vector<double>();
    for (size_t k = 0; k < base.size(); ++k) {
      auto loss_at = [&](double dx) {
        std::vector<double> moved = base;
        moved[k] += dx;
        std::vector<Tensor> in = z;
        in[which] = Tensor::from_vector(moved, z[which].shape(), DType::f64);
        return align_uniform(in[0], in[1]).item();
      };
      double numeric = (loss_at(h) - loss_at(-h)) / (2 * h);
      worst = std::max(worst, std::fabs(numeric - g[k]) / std::max(1.0, std::fabs(numeric)));
    }
  }
  return worst;
}

int main(int argc, char** argv) try {
  const std::string data = argc > 1 ? argv[1] : "fashion-mnist";
  const int64_t images = argc > 2 ? std::atoll(argv[2]) : 64;
  const std::string out = argc > 3 ? argv[3] : "custom_loss_poison.h5";

  const double err = max_gradient_error();
  std::printf("gradient check (f64, central differences): max relative error %.2e\n", err);
  if (!(err < 1e-6)) throw std::runtime_error("the loss's gradient disagrees with finite differences");

  data::LoadOptions load;
  load.limit = images;
  data::Dataset train = data::load_dataset(data, data::Split::train, load);
  poison::PoisonConfig cfg = poison::PoisonConfig::recipe("cpu-small-cp-c", algorithms::Algo::simclr);
  cfg.model_options.width = 4;
  cfg.model_options.in_channels = train.channels();
  cfg.augment = algorithms::make_augment(augment::Recipe::cpu_small, train);
  cfg.batch_size = 16;
  cfg.rounds = 2, cfg.model_steps = 2, cfg.noise_batches = 2;
  cfg.diagnose_images = 0;
  cfg.progress_seconds = -1;
  // The loss over the learner's outputs: SimCLR's projector outputs of view 1 and view 2.
  cfg.loss = [](const algorithms::LearnerOutputs& o) { return align_uniform(o.online1, o.online2); };

  poison::PoisonResult res = poison::generate_poison(train, cfg, data, images);
  for (const poison::RoundStats& r : res.history)
    std::printf("round %lld: model loss %.4f, noise loss %.4f\n", (long long)r.round, r.model_loss, r.noise_loss);
  poison::save_poison(out, res.poison);
  std::printf("alignment + uniformity: %s-wise poison %s written to %s\n", poison::noise_kind_name(res.poison.kind),
              res.poison.delta.describe().c_str(), out.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "custom_loss: %s\n", e.what());
  return 1;
}
