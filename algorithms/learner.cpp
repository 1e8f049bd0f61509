#include "algorithms/learner.h"

#include <cmath>

#include "algorithms/losses.h"
#include "algorithms/momentum.h"
#include "engine/ops/ops.h"
#include "models/heads.h"
#include "models/registry.h"

namespace cpoison::algorithms {

Algo parse_algo(const std::string& name) {
  if (name == "simclr") return Algo::simclr;
  if (name == "moco" || name == "mocov2") return Algo::moco;
  if (name == "byol") return Algo::byol;
  if (name == "supervised") return Algo::supervised;
  fail("algorithm", "unknown algorithm '", name, "' (choose simclr, moco, byol or supervised)");
}

const char* algo_name(Algo a) {
  switch (a) {
    case Algo::simclr: return "simclr";
    case Algo::moco: return "moco";
    case Algo::byol: return "byol";
    case Algo::supervised: return "supervised";
  }
  return "?";
}

AlgoConfig AlgoConfig::defaults(Algo a) {
  AlgoConfig c;
  switch (a) {
    case Algo::simclr: c.temperature = 0.5; break;
    case Algo::moco:
      c.temperature = 0.2;
      c.momentum = 0.99;
      break;
    case Algo::byol:
      c.momentum = 0.999;
      c.proj_hidden = 4096;
      c.proj_dim = 256;
      c.pred_hidden = 4096;
      break;
    case Algo::supervised: break;
  }
  return c;
}

void AlgoConfig::validate(Algo a) const {
  const char* where = "AlgoConfig";
  CP_CHECK(temperature > 0 && temperature <= 100, where, "temperature must be in (0, 100], got ", temperature);
  CP_CHECK(momentum >= 0 && momentum <= 1, where, "momentum must be in [0, 1], got ", momentum);
  CP_CHECK(queue_size >= 0 && queue_size <= kMaxQueue, where, "queue_size must be in [0, ", kMaxQueue, "], got ",
           queue_size);
  CP_CHECK(proj_hidden >= 0 && proj_hidden <= kMaxHeadWidth, where, "proj_hidden must be in [0, ", kMaxHeadWidth,
           "] (0: the feature dim), got ", proj_hidden);
  CP_CHECK(proj_dim >= 1 && proj_dim <= kMaxHeadWidth, where, "proj_dim must be in [1, ", kMaxHeadWidth, "], got ",
           proj_dim);
  CP_CHECK(pred_hidden >= 1 && pred_hidden <= kMaxHeadWidth, where, "pred_hidden must be in [1, ", kMaxHeadWidth,
           "], got ", pred_hidden);
  CP_CHECK(std::isfinite(loss_scale) && loss_scale > 0, where, "loss_scale must be a finite number > 0, got ",
           loss_scale);
  (void)a;
}

// ---------------------------------------------------------------- Learner

Learner::Learner(Algo algo, const AlgoConfig& config, models::EncoderPtr encoder)
    : algo_(algo), config_(config), encoder_(std::move(encoder)) {
  register_module("encoder", encoder_);
}

std::vector<std::pair<std::string, Tensor>> Learner::named_online_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, p] : named_parameters())
    if (name.rfind("momentum_", 0) != 0) out.emplace_back(name, p);
  return out;
}

std::vector<Tensor> Learner::online_parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, p] : named_online_parameters()) out.push_back(p);
  return out;
}

void Learner::set_flow(FlowPtr flow) {
  CP_CHECK(!flow, "Learner::set_flow", "the ", algo_name(algo_),
           " learner has one branch and no gradient flow (a flow needs simclr, moco or byol)");
}

void Learner::set_loss(OutputLoss loss) {
  CP_CHECK(!loss, "Learner::set_loss", "the ", algo_name(algo_),
           " learner has no outputs for a loss over them (a loss needs simclr, moco or byol)");
}

// ---------------------------------------------------------------- ContrastiveLearner

Tensor ContrastiveLearner::loss(const Batch& batch) {
  LearnerOutputs out = compute_outputs(batch.view1, batch.view2);
  Tensor l;
  if (custom_loss_) {
    l = custom_loss_(out);
    CP_CHECK(l.defined() && l.numel() == 1, "ContrastiveLearner::loss",
             "the loss set with set_loss must return one element, got ", l.defined() ? l.shape() : Shape{});
  } else {
    l = builtin_loss(out);
  }
  after_loss(out);
  return l;
}

LearnerOutputs ContrastiveLearner::empty_outputs(const Tensor& view1, const Tensor& view2) const {
  LearnerOutputs out;
  out.algo = algo_;
  out.config = &config_;
  out.view1 = view1;
  out.view2 = view2;
  return out;
}

Tensor ContrastiveLearner::branch_input(Branch b, int view, const Tensor& v) const {
  const double w = flow().branch_weight(b);
  Tensor x = v;
  // Weight 0 cuts the branch: the online branch sees the view detached (its weights still
  // train), the momentum branch runs under a NoGradGuard (records() is false), so v stays.
  if (w == 0.0) {
    if (b == Branch::online) x = v.detach();
  } else {
    x = scale_grad(v, w);  // v itself when w == 1
  }
  return tap(b, view, "input", x);
}

Tensor ContrastiveLearner::run_head(nn::Module& head, Branch b, int view, const std::string& name,
                                    const Tensor& x) const {
  Tensor h = x;
  const auto& layers = head.children();
  for (size_t i = 0; i < layers.size(); ++i) h = tap(b, view, name + "." + std::to_string(i), layers[i].second->forward(h));
  return tap(b, view, name, h);
}

namespace {

void check_views(const char* where, const Tensor& v1, const Tensor& v2) {
  CP_CHECK(v1.defined() && v2.defined(), where, "undefined view");
  CP_CHECK(v1.dim() == 4 && v1.shape() == v2.shape(), where, "views must both be [B, C, H, W] of one shape, got ",
           v1.shape(), " and ", v2.shape());
  CP_CHECK(v1.size(0) >= 1, where, "empty batch ", v1.shape());
}

// A new encoder of the same architecture holding the same values, with frozen weights.
models::EncoderPtr frozen_copy(const models::Encoder& online) {
  models::ModelOptions opt = online.options();
  auto copy = models::make_encoder(online.name(), opt);
  copy->copy_from(online);
  copy->set_requires_grad(false);
  return copy;
}

std::shared_ptr<nn::Sequential> frozen_copy(const nn::Sequential& online, std::shared_ptr<nn::Sequential> fresh) {
  fresh->copy_from(online);
  fresh->set_requires_grad(false);
  return fresh;
}

// ---------------------------------------------------------------- SimCLR

class SimCLRLearner final : public ContrastiveLearner {
public:
  SimCLRLearner(const AlgoConfig& config, models::EncoderPtr encoder)
      : ContrastiveLearner(Algo::simclr, config, std::move(encoder)) {
    projector_ = register_module(
        "projector", models::make_projection_head(encoder_->feature_dim(), config_.proj_dim, config_.proj_hidden));
  }

  LearnerOutputs compute_outputs(const Tensor& view1, const Tensor& view2) override {
    check_views("SimCLR loss", view1, view2);
    const int64_t b = view1.size(0);
    LearnerOutputs out = empty_outputs(view1, view2);
    // One batched call: BatchNorm statistics cover both views (as the release does).
    Tensor x = concat({branch_input(Branch::online, 1, view1), branch_input(Branch::online, 2, view2)}, 0);
    Tensor h = tap(Branch::online, 0, "encoder", encoder_->forward(x));
    Tensor z = run_head(*projector_, Branch::online, 0, "projector", h);
    auto halves = split(z, {b, b}, 0);
    out.online1 = halves[0];
    out.online2 = halves[1];
    return out;
  }

  Tensor embed(const Tensor& x) override { return l2_normalize(projector_->forward(encoder_->forward(x)), 1); }

private:
  std::shared_ptr<nn::Sequential> projector_;
};

// ---------------------------------------------------------------- MoCo v2

class MoCoLearner final : public ContrastiveLearner {
public:
  MoCoLearner(const AlgoConfig& config, models::EncoderPtr encoder)
      : ContrastiveLearner(Algo::moco, config, std::move(encoder)) {
    const int64_t d = encoder_->feature_dim();
    projector_ = register_module("projector", models::make_projection_head(d, config_.proj_dim, config_.proj_hidden));
    momentum_encoder_ = register_module("momentum_encoder", frozen_copy(*encoder_));
    momentum_projector_ = register_module(
        "momentum_projector",
        frozen_copy(*projector_, models::make_projection_head(d, config_.proj_dim, config_.proj_hidden)));
    Generator gen(config_.seed, kQueueStream);
    queue_ = register_buffer("queue", make_key_queue(config_.queue_size, config_.proj_dim, gen));
    queue_ptr_ = register_buffer("queue_ptr", Tensor::zeros({1}, DType::i64));
  }

  LearnerOutputs compute_outputs(const Tensor& view1, const Tensor& view2) override {
    check_views("MoCo loss", view1, view2);
    LearnerOutputs out = empty_outputs(view1, view2);
    Tensor x1 = branch_input(Branch::online, 1, view1);
    Tensor q = run_head(*projector_, Branch::online, 1, "projector", tap(Branch::online, 1, "encoder", encoder_->forward(x1)));
    Tensor k;
    if (records(Branch::momentum)) {
      // Recorded: the positive key carries ∂L/∂view2 (the key weights are frozen, so they get none).
      k = key(view2);
    } else {
      autograd::NoGradGuard no_grad;
      k = key(view2);
    }
    out.online1 = q;
    out.momentum2 = k;
    out.queue = queue_.dtype() == q.dtype() ? queue_ : queue_.to(q.dtype());
    return out;
  }

  void after_loss(const LearnerOutputs& out) override {
    const Tensor& k = out.momentum2;
    if (enqueue_keys && queue_.size(0) > 0) {
      autograd::NoGradGuard no_grad;
      Tensor keys = l2_normalize(k.detach(), 1);
      if (keys.dtype() != queue_.dtype()) keys = keys.to(queue_.dtype());
      int64_t ptr = (int64_t)queue_ptr_.item();
      queue_ptr_.fill_((double)enqueue_ring(queue_, ptr, keys));
    }
  }

  void momentum_update() override {
    ema_update(*momentum_encoder_, *encoder_, config_.momentum);
    ema_update(*momentum_projector_, *projector_, config_.momentum);
  }

  Tensor embed(const Tensor& x) override { return l2_normalize(projector_->forward(encoder_->forward(x)), 1); }

private:
  Tensor key(const Tensor& view2) {
    Tensor x = branch_input(Branch::momentum, 2, view2);
    Tensor h = tap(Branch::momentum, 2, "encoder", momentum_encoder_->forward(x));
    return run_head(*momentum_projector_, Branch::momentum, 2, "projector", h);
  }
  std::shared_ptr<nn::Sequential> projector_, momentum_projector_;
  models::EncoderPtr momentum_encoder_;
  Tensor queue_, queue_ptr_;
};

// ---------------------------------------------------------------- BYOL

class BYOLLearner final : public ContrastiveLearner {
public:
  BYOLLearner(const AlgoConfig& config, models::EncoderPtr encoder)
      : ContrastiveLearner(Algo::byol, config, std::move(encoder)) {
    const int64_t d = encoder_->feature_dim();
    const int64_t hidden = config_.proj_hidden > 0 ? config_.proj_hidden : d;
    projector_ = register_module("projector", models::make_byol_projector(d, hidden, config_.proj_dim));
    predictor_ = register_module("predictor", models::make_byol_predictor(config_.proj_dim, config_.pred_hidden));
    momentum_encoder_ = register_module("momentum_encoder", frozen_copy(*encoder_));
    momentum_projector_ = register_module(
        "momentum_projector", frozen_copy(*projector_, models::make_byol_projector(d, hidden, config_.proj_dim)));
  }

  LearnerOutputs compute_outputs(const Tensor& view1, const Tensor& view2) override {
    check_views("BYOL loss", view1, view2);
    LearnerOutputs out = empty_outputs(view1, view2);
    // Each view through the online branch in its own call (separate BN statistics), as the
    // release does.
    out.online1 = online(1, view1);
    out.online2 = online(2, view2);
    if (records(Branch::momentum)) {
      out.momentum1 = target(1, view1);
      out.momentum2 = target(2, view2);
    } else {
      autograd::NoGradGuard no_grad;
      out.momentum1 = target(1, view1);
      out.momentum2 = target(2, view2);
    }
    return out;
  }

  void momentum_update() override {
    ema_update(*momentum_encoder_, *encoder_, config_.momentum);
    ema_update(*momentum_projector_, *projector_, config_.momentum);
  }

  Tensor embed(const Tensor& x) override { return l2_normalize(projector_->forward(encoder_->forward(x)), 1); }

private:
  Tensor online(int view, const Tensor& v) {
    Tensor h = tap(Branch::online, view, "encoder", encoder_->forward(branch_input(Branch::online, view, v)));
    Tensor z = run_head(*projector_, Branch::online, view, "projector", h);
    return run_head(*predictor_, Branch::online, view, "predictor", z);
  }
  Tensor target(int view, const Tensor& v) {
    Tensor h = tap(Branch::momentum, view, "encoder", momentum_encoder_->forward(branch_input(Branch::momentum, view, v)));
    return run_head(*momentum_projector_, Branch::momentum, view, "projector", h);
  }
  std::shared_ptr<nn::Sequential> projector_, predictor_, momentum_projector_;
  models::EncoderPtr momentum_encoder_;
};

}  // namespace

// ---------------------------------------------------------------- factories

std::shared_ptr<ContrastiveLearner> ContrastiveLearner::make(Algo algo, const std::string& encoder_name,
                                                             const models::ModelOptions& options,
                                                             const AlgoConfig& config) {
  config.validate(algo);
  models::ModelOptions opt = options;
  opt.num_classes = 0;
  auto encoder = models::make_encoder(encoder_name, opt);
  switch (algo) {
    case Algo::simclr: return std::make_shared<SimCLRLearner>(config, encoder);
    case Algo::moco: return std::make_shared<MoCoLearner>(config, encoder);
    case Algo::byol: return std::make_shared<BYOLLearner>(config, encoder);
    case Algo::supervised: break;
  }
  fail("ContrastiveLearner::make", "'", algo_name(algo), "' is not a contrastive algorithm (use SupervisedLearner)");
}

std::shared_ptr<SupervisedLearner> SupervisedLearner::make(const std::string& encoder_name,
                                                           const models::ModelOptions& options,
                                                           const AlgoConfig& config) {
  config.validate(Algo::supervised);
  CP_CHECK(options.num_classes >= 1, "SupervisedLearner::make", "num_classes must be >= 1, got ",
           options.num_classes);
  auto encoder = models::make_encoder(encoder_name, options);
  return std::shared_ptr<SupervisedLearner>(new SupervisedLearner(Algo::supervised, config, encoder));
}

Tensor SupervisedLearner::loss(const Batch& batch) {
  const Tensor &view = batch.view1, &labels = batch.labels;
  CP_CHECK(view.defined() && view.dim() == 4, "supervised loss", "view must be [B, C, H, W], got ",
           view.defined() ? view.shape() : Shape{});
  CP_CHECK(!batch.view2.defined(), "supervised loss", "one view per batch (view1), got a second view ",
           batch.view2.shape());
  CP_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == view.size(0), "supervised loss",
           "labels must be [", view.size(0), "], got ", labels.defined() ? labels.shape() : Shape{});
  return mul_scalar(cross_entropy(encoder_->logits(view), labels.to(view.device())), config_.loss_scale);
}

Tensor SupervisedLearner::embed(const Tensor& x) { return l2_normalize(encoder_->forward(x), 1); }

std::shared_ptr<Learner> make_learner(Algo algo, const std::string& encoder_name, const models::ModelOptions& options,
                                      const AlgoConfig& config) {
  if (algo == Algo::supervised) return SupervisedLearner::make(encoder_name, options, config);
  return ContrastiveLearner::make(algo, encoder_name, options, config);
}

}  // namespace cpoison::algorithms
