// Poison files: the perturbation a data owner adds, in unit scale, with what made it.
// Layout letters: N images, K classes, C channels, H rows, W columns.
//
// HDF5 layout (readable with h5py):
//   /delta    f32 [N, C, H, W] (kind "sample") or [K, C, H, W] (kind "class"), values in [-1, 1];
//             the pixel perturbation is eps * delta.
//   /indices  i64 [M]  the training-set rows that carry noise (all N rows at ratio 1).
//   file attributes: eps, kind, attack, algorithm, dual_branch, dataset, subset, seed,
//   rounds_done, rounds_total, ratio, classes, image_count, version; data_fingerprint and
//   subset_seed when known.
#pragma once
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace cpoison::poison {

// The noise's shape: one perturbation per training image, or one per class (added to each
// image of the class).
enum class NoiseKind { sample_wise, class_wise };
// "sample" | "class" (what files, settings and flags say); Error(where, ...) listing them otherwise.
NoiseKind parse_noise_kind(const std::string& name, const std::string& where = "kind");
const char* noise_kind_name(NoiseKind kind);

struct Poison {
  Tensor delta;             // f32 [N or K, C, H, W], unit scale
  Tensor indices;           // i64 [M], ascending: rows of the training set that are poisoned
  NoiseKind kind = NoiseKind::sample_wise;
  double eps = 8.0 / 255.0;     // L-infinity radius in [0, 1] pixel units
  std::string attack;           // cp-s, cp-c, random, unlearnable, adversarial
  std::string algorithm;        // simclr, moco, byol, supervised, none
  bool dual_branch = false;
  std::string dataset;          // the dataset name the poison was made for
  int64_t subset = 0;           // images of that dataset used (0: all)
  uint64_t seed = 0;
  int64_t rounds_done = 0, rounds_total = 0;
  double ratio = 1.0;           // poisoned fraction of the training set
  int64_t classes = 0;
  int64_t image_count = 0;      // N: size of the training set the indices refer to
  // data::fingerprint of the clean training images (after subset, pad_to, channels) it was
  // made for; "" when unknown (files written before it was recorded).
  std::string data_fingerprint;
  int64_t subset_seed = -1;     // the seed of that subset; -1: not recorded

  bool class_wise() const { return kind == NoiseKind::class_wise; }
  // Error naming `where` and the field when the fields disagree with each other (delta's rank,
  // class count, indices out of [0, image_count), eps outside (0, 1]) or when delta holds
  // a value that is not finite or outside [-1, 1] (naming its first such element).
  void validate(const std::string& where) const;
};

void save_poison(const std::string& path, const Poison& p);  // atomic (tmp + rename)
Poison load_poison(const std::string& path);                 // validates; Error names the file

// The poisoned rows of a training set of n images at `ratio` (0 < ratio <= 1): round(ratio * n)
// rows drawn by a seeded permutation (Philox stream 0x9015), returned in ascending order.
Tensor choose_poisoned_indices(int64_t n, double ratio, uint64_t seed);

}  // namespace cpoison::poison
