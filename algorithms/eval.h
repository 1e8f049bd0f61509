// Evaluating a learned encoder: the spec's linear probe (SGD on augmented images), a fast
// probe on pre-extracted features (standardised features, multinomial logistic regression by
// full-batch L-BFGS, as docs/cpu-scale-reference.md), kNN, and the alignment / uniformity metrics
// of Wang & Isola. Images: datasets u8 [N,H,W,C]; features [N, D]; accuracies in percent.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "algorithms/learner.h"
#include "augment/augment.h"
#include "engine/data/dataset.h"
#include "engine/rng.h"
#include "models/encoder.h"

namespace cpoison::algorithms {

// Backbone features [N, D] (f32, on the CPU) of every image of ds, un-augmented and normalised
// per channel (mean/std need C entries), with the encoder in eval mode and no autograd. The
// encoder's mode is restored afterwards. Error when ds's channels differ from the encoder's.
Tensor extract_features(models::Encoder& encoder, const data::Dataset& ds, const std::vector<double>& mean,
                        const std::vector<double>& std, int64_t batch_size = 512, Device device = Device::cpu);

struct ProbeResult {
  double final_accuracy = 0;           // test accuracy of the last epoch / the converged model
  double best_accuracy = 0;            // best test accuracy over epochs (= final for L-BFGS)
  double train_accuracy = 0;           // of the final classifier on its training data
  std::vector<double> epoch_accuracy;  // test accuracy after each epoch (SGD probe)
  int64_t iterations = 0;              // L-BFGS iterations run
  double seconds = 0;
};

// ---- fast probe on features
struct FeatureProbeOptions {
  int64_t max_iterations = 300;
  double l2 = 1e-4;         // objective: mean cross-entropy + l2 / 2 * ||W||^2 (bias not penalised)
  int64_t history = 10;     // L-BFGS memory
  double grad_tolerance = 1e-7;  // stop when max |gradient| falls below
  bool standardize = true;  // (x - mean) / std with the training features' statistics
};
// Multinomial logistic regression on train features [N, D] with labels i64 [N] in [0, classes),
// by full-batch L-BFGS (two-loop recursion, backtracking Armijo line search) in f64 on the CPU;
// returns its test accuracy. Error naming the shapes when they disagree or a label is out of range.
ProbeResult linear_probe_features(const Tensor& train_features, const Tensor& train_labels,
                                  const Tensor& test_features, const Tensor& test_labels, int64_t classes,
                                  const FeatureProbeOptions& options = {});

// ---- the spec's linear probe
struct SgdProbeOptions {
  int64_t epochs = 100;
  int64_t batch_size = 512;
  double lr = 1.0;
  double momentum = 0.9;
  double weight_decay = 0;
  std::vector<double> milestones{60, 75, 90};  // lr x gamma after these epochs
  double gamma = 0.2;
  uint64_t seed = 0;
  augment::AugmentConfig augment;  // training transform: crop (scale 0.2-1) + flip + normalize
  Device device = Device::cpu;
  // Called after each epoch with (epoch, test accuracy); may print progress.
  std::function<void(int64_t, double)> on_epoch;
};
// Frozen encoder in eval mode, Linear(D, classes) trained with SGD on augmented clean training
// images (fresh crops and flips every epoch), tested on the un-augmented test set after every
// epoch. Reports the final and the best test accuracy. Encoder weights and mode are left
// unchanged; the head's initial weights come from nn::init_generator() seeded with options.seed.
ProbeResult linear_probe_sgd(models::Encoder& encoder, const data::Dataset& train, const data::Dataset& test,
                             const SgdProbeOptions& options);

// ---- kNN
// Weighted kNN (InstDisc): cosine similarity between L2-normalised features, the k most similar
// training points vote with weight exp(sim / temperature); accuracy in percent.
double knn_accuracy(const Tensor& train_features, const Tensor& train_labels, const Tensor& test_features,
                    const Tensor& test_labels, int64_t classes, int64_t k = 200, double temperature = 0.1);

// ---- alignment and uniformity
struct Alignment {
  double poisoned = 0;  // mean ||z(v1) - z(v2)||^2 over the poisoned images' two views
  double clean = 0;     // the same augmentation draws applied to the clean images
  int64_t images = 0;
};
// For the first n images (n <= 0: all) of two image sets of the same shape (row i of `poisoned`
// is the poisoned version of row i of `clean`), draws two augmentations per image from gen and
// applies the same draws to both sets; z = learner.embed (unit length). The learner runs in
// eval mode (its mode is restored). Error naming the shapes when the sets differ.
Alignment alignment(Learner& learner, const Tensor& poisoned_u8, const Tensor& clean_u8,
                    const augment::AugmentConfig& augment, Generator& gen, int64_t n = 1000, int64_t batch_size = 256,
                    Device device = Device::cpu);

// log mean_{i<j} exp(-t ||z_i - z_j||^2) over the rows of z [N, D] (N >= 2), Wang & Isola's
// uniformity (lower is more uniform). Rows are used as given (pass unit-length embeddings).
double uniformity(const Tensor& z, double t = 2.0);

// Test accuracy (%) of a supervised learner's classifier on ds (un-augmented, normalised by
// mean/std, eval mode, no autograd).
double classifier_accuracy(Learner& learner, const data::Dataset& ds, const std::vector<double>& mean,
                           const std::vector<double>& std, int64_t batch_size, Device device);

}  // namespace cpoison::algorithms
