#include "algorithms/eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "engine/ops/ops.h"
#include "engine/optim/lbfgs.h"
#include "engine/optim/schedule.h"
#include "engine/optim/sgd.h"
#include "models/heads.h"

namespace cpoison::algorithms {
namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Restores a module's train/eval mode on scope exit.
class ModeGuard {
public:
  explicit ModeGuard(nn::Module& m) : m_(m), was_training_(m.is_training()) {}
  ~ModeGuard() { m_.train(was_training_); }

private:
  nn::Module& m_;
  bool was_training_;
};

void check_features(const char* where, const Tensor& f, const Tensor& labels, const char* what) {
  CP_CHECK(f.defined() && f.dim() == 2 && f.size(0) >= 1, where, what, " features must be [N >= 1, D], got ",
           f.defined() ? f.shape() : Shape{});
  CP_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == f.size(0), where, what, " labels must be [",
           f.size(0), "], got ", labels.defined() ? labels.shape() : Shape{});
}

std::vector<int64_t> checked_labels(const char* where, const Tensor& labels, int64_t classes, const char* what) {
  auto v = labels.to_vector<int64_t>();
  for (size_t i = 0; i < v.size(); ++i)
    CP_CHECK(v[i] >= 0 && v[i] < classes, where, what, " label ", v[i], " at row ", i, " outside [0, ", classes, ")");
  return v;
}

double accuracy_of_logits(const Tensor& logits, const std::vector<int64_t>& labels) {
  auto pred = argmax(logits, 1).to_vector<int64_t>();
  int64_t right = 0;
  for (size_t i = 0; i < pred.size(); ++i) right += pred[i] == labels[i];
  return 100.0 * right / std::max<size_t>(1, pred.size());
}

}  // namespace

// ---------------------------------------------------------------- features

Tensor extract_features(models::Encoder& encoder, const data::Dataset& ds, const std::vector<double>& channel_mean,
                        const std::vector<double>& channel_std, int64_t batch_size, Device device) {
  const char* where = "extract_features";
  CP_CHECK(ds.size() > 0, where, "empty dataset");
  CP_CHECK(ds.channels() == encoder.in_channels(), where, "the dataset has ", ds.channels(), " channels, the encoder ",
           encoder.name(), " takes ", encoder.in_channels());
  CP_CHECK(batch_size >= 1, where, "batch_size must be >= 1, got ", batch_size);
  ModeGuard mode(encoder);
  encoder.eval();
  autograd::NoGradGuard no_grad;
  Tensor out = Tensor::empty({ds.size(), encoder.feature_dim()}, DType::f32);
  for (int64_t i = 0; i < ds.size(); i += batch_size) {
    int64_t j = std::min(ds.size(), i + batch_size);
    Tensor x = augment::normalize(data::to_float_nchw(ds.images.slice0(i, j), device), channel_mean, channel_std);
    out.slice0(i, j).copy_(encoder.forward(x));
  }
  return out;
}

// ---------------------------------------------------------------- L-BFGS probe (engine/optim/lbfgs.h)

ProbeResult linear_probe_features(const Tensor& train_features, const Tensor& train_labels,
                                  const Tensor& test_features, const Tensor& test_labels, int64_t classes,
                                  const FeatureProbeOptions& options) {
  const char* where = "linear_probe_features";
  const auto t0 = clock_type::now();
  check_features(where, train_features, train_labels, "training");
  check_features(where, test_features, test_labels, "test");
  CP_CHECK(train_features.size(1) == test_features.size(1), where, "training features ", train_features.shape(),
           " and test features ", test_features.shape(), " differ in dimension");
  CP_CHECK(classes >= 2, where, "need at least 2 classes, got ", classes);
  CP_CHECK(options.max_iterations >= 0 && options.history >= 1 && options.l2 >= 0, where,
           "bad options: max_iterations ", options.max_iterations, ", history ", options.history, ", l2 ", options.l2);
  auto ytr = checked_labels(where, train_labels, classes, "training");
  auto yte = checked_labels(where, test_labels, classes, "test");
  autograd::NoGradGuard no_grad;

  const int64_t n = train_features.size(0), d = train_features.size(1), k = classes;
  Tensor x = train_features.to(Device::cpu).to(DType::f64).contiguous();
  Tensor xt = test_features.to(Device::cpu).to(DType::f64).contiguous();
  if (options.standardize) {
    Tensor mu = mean(x, {0}, true);
    // Population std; a constant feature keeps scale 1 instead of dividing by zero.
    auto sd = sqrt(var(x, {0}, false, true)).to_vector<double>();
    for (double& s : sd) s = s > 1e-12 ? s : 1.0;
    Tensor sdt = Tensor::from_vector(sd, {1, d});
    x = div(sub(x, mu), sdt);
    xt = div(sub(xt, mu), sdt);
  }
  Tensor xT = transpose(x, 0, 1);
  std::vector<double> onehot(n * k, 0.0);
  for (int64_t i = 0; i < n; ++i) onehot[i * k + ytr[i]] = 1.0;
  Tensor y1 = Tensor::from_vector(onehot, {n, k});
  Tensor ytr_t = Tensor::from_vector(ytr, {n});

  const int64_t nw = d * k, np = nw + k;
  auto unpack = [&](const std::vector<double>& theta, Tensor& w, Tensor& b) {
    w = Tensor::from_vector(std::vector<double>(theta.begin(), theta.begin() + nw), {d, k});
    b = Tensor::from_vector(std::vector<double>(theta.begin() + nw, theta.end()), {k});
  };
  // Objective and gradient: mean CE + l2/2 ||W||^2, dW = Xᵀ(P - Y)/N + l2 W, db = Σ(P - Y)/N.
  auto evaluate = [&](const std::vector<double>& theta, std::vector<double>* grad) {
    Tensor w, b;
    unpack(theta, w, b);
    Tensor logp = log_softmax(add(matmul(x, w), b), 1);
    double wsq = 0;
    for (int64_t i = 0; i < nw; ++i) wsq += theta[i] * theta[i];
    double f = -mean(gather1(logp, ytr_t)).item() + 0.5 * options.l2 * wsq;
    if (grad) {
      Tensor g = mul_scalar(sub(exp(logp), y1), 1.0 / n);
      auto gw = matmul(xT, g).to_vector<double>();
      auto gb = sum(g, {0}).to_vector<double>();
      grad->resize(np);
      for (int64_t i = 0; i < nw; ++i) (*grad)[i] = gw[i] + options.l2 * theta[i];
      for (int64_t i = 0; i < k; ++i) (*grad)[nw + i] = gb[i];
    }
    return f;
  };

  optim::LbfgsOptions lo;
  lo.max_iterations = options.max_iterations;
  lo.history = options.history;
  lo.grad_tolerance = options.grad_tolerance;
  const optim::LbfgsResult fit = optim::lbfgs_minimize(evaluate, std::vector<double>(np, 0.0), lo);
  ProbeResult result;
  Tensor w, b;
  unpack(fit.x, w, b);
  result.iterations = fit.iterations;
  result.train_accuracy = accuracy_of_logits(add(matmul(x, w), b), ytr);
  result.final_accuracy = result.best_accuracy = accuracy_of_logits(add(matmul(xt, w), b), yte);
  result.seconds = seconds_since(t0);
  return result;
}

// ---------------------------------------------------------------- SGD probe

ProbeResult linear_probe_sgd(models::Encoder& encoder, const data::Dataset& train, const data::Dataset& test,
                             const SgdProbeOptions& options) {
  const char* where = "linear_probe_sgd";
  const auto t0 = clock_type::now();
  CP_CHECK(train.size() > 0 && test.size() > 0, where, "empty training or test set");
  CP_CHECK(train.classes >= 2 && train.classes == test.classes, where, "training set has ", train.classes,
           " classes, test set ", test.classes);
  CP_CHECK(options.epochs >= 1 && options.batch_size >= 1, where, "epochs and batch_size must be >= 1, got ",
           options.epochs, " and ", options.batch_size);
  options.augment.validate();
  auto ytr = checked_labels(where, train.labels, train.classes, "training");
  auto yte = checked_labels(where, test.labels, test.classes, "test");
  ModeGuard mode(encoder);
  encoder.eval();

  // Test features once: the encoder is frozen and test images are not augmented.
  Tensor test_features =
      extract_features(encoder, test, options.augment.mean, options.augment.std, options.batch_size, options.device)
          .to(options.device);

  nn::manual_seed(options.seed);
  auto head = models::make_linear_classifier(encoder.feature_dim(), train.classes);
  head->to(options.device);
  optim::SGDOptions so;
  so.lr = options.lr;
  so.momentum = options.momentum;
  so.weight_decay = options.weight_decay;
  optim::SGD opt(*head, so);
  auto schedule = optim::LrSchedule::multistep(options.lr, options.milestones, options.gamma);
  data::Dataset ds = train.to(options.device);
  data::BatchSampler sampler(ds.size(), options.batch_size, options.seed, /*shuffle=*/true, /*drop_last=*/false);
  Generator gen(options.seed, 0xA11);

  ProbeResult result;
  result.best_accuracy = -1;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    opt.set_lr(schedule.at((double)epoch));
    int64_t right = 0, seen = 0;
    for (int64_t s = 0; s < sampler.batches_per_epoch(); ++s) {
      data::Batch batch = data::gather_batch(ds, sampler.next());
      Tensor features;
      {
        autograd::NoGradGuard no_grad;
        Tensor x = data::to_float_nchw(batch.images, options.device);
        x = augment::apply(x, augment::sample_params(options.augment, x.size(0), x.size(2), x.size(3), gen),
                           options.augment);
        features = encoder.forward(x).detach();
      }
      Tensor logits = head->forward(features);
      Tensor loss = cross_entropy(logits, batch.labels);
      opt.zero_grad();
      autograd::backward(loss);
      opt.step();
      if (epoch + 1 == options.epochs) {
        auto pred = argmax(logits.detach(), 1).to_vector<int64_t>();
        auto lab = batch.labels.to_vector<int64_t>();
        for (size_t i = 0; i < pred.size(); ++i) right += pred[i] == lab[i];
        seen += (int64_t)pred.size();
      }
    }
    double acc;
    {
      autograd::NoGradGuard no_grad;
      acc = accuracy_of_logits(head->forward(test_features), yte);
    }
    result.epoch_accuracy.push_back(acc);
    result.best_accuracy = std::max(result.best_accuracy, acc);
    result.final_accuracy = acc;
    if (epoch + 1 == options.epochs) result.train_accuracy = 100.0 * right / std::max<int64_t>(1, seen);
    if (options.on_epoch) options.on_epoch(epoch + 1, acc);
  }
  result.seconds = seconds_since(t0);
  return result;
}

// ---------------------------------------------------------------- kNN

double knn_accuracy(const Tensor& train_features, const Tensor& train_labels, const Tensor& test_features,
                    const Tensor& test_labels, int64_t classes, int64_t k, double temperature) {
  const char* where = "knn_accuracy";
  check_features(where, train_features, train_labels, "training");
  check_features(where, test_features, test_labels, "test");
  CP_CHECK(train_features.size(1) == test_features.size(1), where, "feature dimensions differ: ",
           train_features.shape(), " vs ", test_features.shape());
  CP_CHECK(classes >= 1 && k >= 1 && temperature > 0, where, "need classes >= 1, k >= 1, temperature > 0; got ",
           classes, ", ", k, ", ", temperature);
  auto ytr = checked_labels(where, train_labels, classes, "training");
  auto yte = checked_labels(where, test_labels, classes, "test");
  autograd::NoGradGuard no_grad;
  Tensor bank = l2_normalize(train_features.to(DType::f32), 1);
  Tensor bank_t = transpose(bank, 0, 1);
  Tensor queries = l2_normalize(test_features.to(DType::f32).to(bank.device()), 1);
  const int64_t n = bank.size(0), m = queries.size(0), kk = std::min(k, n), chunk = 256;
  int64_t right = 0;
  std::vector<int64_t> order(n);
  std::vector<double> votes(classes);
  for (int64_t i = 0; i < m; i += chunk) {
    int64_t j = std::min(m, i + chunk);
    auto sim = matmul(queries.slice0(i, j), bank_t).to_vector<float>();  // [j - i, n]
    for (int64_t r = 0; r < j - i; ++r) {
      const float* row = sim.data() + r * n;
      std::iota(order.begin(), order.end(), 0);
      // Ties broken by the lower index, so the result does not depend on the sort's internals.
      std::partial_sort(order.begin(), order.begin() + kk, order.end(),
                        [&](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      std::fill(votes.begin(), votes.end(), 0.0);
      for (int64_t t = 0; t < kk; ++t) votes[ytr[order[t]]] += std::exp((double)row[order[t]] / temperature);
      int64_t pred = std::max_element(votes.begin(), votes.end()) - votes.begin();
      right += pred == yte[i + r];
    }
  }
  return 100.0 * right / m;
}

// ---------------------------------------------------------------- alignment / uniformity

Alignment alignment(Learner& learner, const Tensor& poisoned_u8, const Tensor& clean_u8,
                    const augment::AugmentConfig& augment, Generator& gen, int64_t n, int64_t batch_size,
                    Device device) {
  const char* where = "alignment";
  CP_CHECK(poisoned_u8.defined() && clean_u8.defined() && poisoned_u8.dim() == 4 &&
               poisoned_u8.shape() == clean_u8.shape(),
           where, "poisoned and clean images must be u8 [N, H, W, C] of one shape, got ",
           poisoned_u8.defined() ? poisoned_u8.shape() : Shape{}, " and ", clean_u8.defined() ? clean_u8.shape() : Shape{});
  CP_CHECK(poisoned_u8.dtype() == DType::u8 && clean_u8.dtype() == DType::u8, where, "images must be u8, got ",
           poisoned_u8.describe(), " and ", clean_u8.describe());
  CP_CHECK(batch_size >= 1, where, "batch_size must be >= 1, got ", batch_size);
  augment.validate();
  const int64_t total = n <= 0 ? poisoned_u8.size(0) : std::min(n, poisoned_u8.size(0));
  CP_CHECK(total >= 1, where, "no images");
  ModeGuard mode(learner);
  learner.eval();
  autograd::NoGradGuard no_grad;
  double sum_p = 0, sum_c = 0;
  const int64_t h = poisoned_u8.size(1), w = poisoned_u8.size(2);
  for (int64_t i = 0; i < total; i += batch_size) {
    int64_t j = std::min(total, i + batch_size);
    Tensor xp = data::to_float_nchw(poisoned_u8.slice0(i, j), device);
    Tensor xc = data::to_float_nchw(clean_u8.slice0(i, j), device);
    augment::AugmentParams p1 = augment::sample_params(augment, j - i, h, w, gen),
                           p2 = augment::sample_params(augment, j - i, h, w, gen);
    auto dist = [&](const Tensor& x) {
      Tensor z1 = learner.embed(augment::apply(x, p1, augment)), z2 = learner.embed(augment::apply(x, p2, augment));
      return sum(square(sub(z1, z2))).item();
    };
    sum_p += dist(xp);
    sum_c += dist(xc);
  }
  return Alignment{sum_p / total, sum_c / total, total};
}

double uniformity(const Tensor& z, double t) {
  const char* where = "uniformity";
  CP_CHECK(z.defined() && z.dim() == 2 && z.size(0) >= 2, where, "z must be [N >= 2, D], got ",
           z.defined() ? z.shape() : Shape{});
  CP_CHECK(t > 0, where, "t must be > 0, got ", t);
  autograd::NoGradGuard no_grad;
  Tensor zz = z.to(Device::cpu).to(DType::f64).contiguous();
  const int64_t n = zz.size(0), chunk = 512;
  auto sq = sum(square(zz), {1}).to_vector<double>();
  Tensor zt = transpose(zz, 0, 1);
  // Running log-sum-exp over the pairs i < j.
  double m = -INFINITY, s = 0;
  for (int64_t i = 0; i < n; i += chunk) {
    int64_t e = std::min(n, i + chunk);
    auto dots = matmul(zz.slice0(i, e), zt).to_vector<double>();
    for (int64_t r = i; r < e; ++r)
      for (int64_t c = r + 1; c < n; ++c) {
        double d2 = std::max(0.0, sq[r] + sq[c] - 2 * dots[(r - i) * n + c]);
        double v = -t * d2;
        if (v > m) {
          s = s * std::exp(m - v) + 1.0;
          m = v;
        } else {
          s += std::exp(v - m);
        }
      }
  }
  const double pairs = 0.5 * (double)n * (double)(n - 1);
  return m + std::log(s) - std::log(pairs);
}

double classifier_accuracy(Learner& learner, const data::Dataset& ds, const std::vector<double>& mean,
                           const std::vector<double>& std, int64_t batch_size, Device device) {
  CP_CHECK(ds.size() > 0, "classifier_accuracy", "empty dataset");
  models::Encoder& enc = learner.encoder();
  const bool was_training = learner.is_training();
  learner.eval();
  autograd::NoGradGuard no_grad;
  auto labels = ds.labels.to_vector<int64_t>();
  int64_t right = 0;
  for (int64_t i = 0; i < ds.size(); i += batch_size) {
    int64_t j = std::min(ds.size(), i + batch_size);
    Tensor x = augment::normalize(data::to_float_nchw(ds.images.slice0(i, j), device), mean, std);
    auto pred = argmax(enc.logits(x), 1).to(Device::cpu).to_vector<int64_t>();
    for (int64_t k = 0; k < j - i; ++k) right += pred[k] == labels[i + k];
  }
  learner.train(was_training);
  return 100.0 * (double)right / (double)ds.size();
}

}  // namespace cpoison::algorithms
