// Applying a poison: the attacker's differentiable float path and the victim's u8 dataset.
// Layout letters: B batch, N images, C channels, H rows, W columns.
#pragma once
#include "engine/data/dataset.h"
#include "poison/poison_file.h"

namespace cpoison::poison {

// clamp(x + eps * clamp(delta, -1, 1), 0, 1) for x, delta [B, C, H, W] (float, same device);
// differentiable w.r.t. delta (and x).
Tensor perturb(const Tensor& x, const Tensor& delta, double eps);

// The victim's quantisation of one pixel: round(255 * clamp(x + eps * delta, 0, 1)) with
// x = pixel / 255, clipped to [pixel - floor(255 eps), pixel + floor(255 eps)], computed in
// double (in which 255 * (k / 255) == k exactly, so a zero delta returns the pixel unchanged).
// The release floors instead (docs/reference-implementation.md §6), which can leave the
// L-infinity ball by one level; ours never does (docs/poison-format.md).
uint8_t quantise_pixel(uint8_t pixel, double eps, double delta);

// The training set as the victim sees it: the rows in p.indices get the quantised perturbation
// (sample-wise: their own delta row; class-wise: the row of their label), the others stay clean.
// Error when the poison's image count, class count or image shape disagree with the dataset.
data::Dataset apply_poison(const data::Dataset& clean, const Poison& p);

// Checks that a poison is applied to the images it was made for: Error naming the poison file
// `path`, the data it was made for and both fingerprints unless data::fingerprint(clean) (the
// clean training images after subset, pad_to and channels) equals p.data_fingerprint. With
// `ignore` (--ignore-fingerprint) a mismatch is a warning on stderr instead; a poison that
// records no fingerprint (an older file) gets a warning too.
void check_fingerprint(const Poison& p, const data::Dataset& clean, const std::string& path, bool ignore);

// Loads a poison file, checks its fingerprint against `clean` and applies it (the victim side
// of `cpoison train --poison FILE.h5`, and of probe and defend).
data::Dataset apply_poison_file(const data::Dataset& clean, const std::string& path, bool ignore_fingerprint = false);

// FNV-1a 64 (16 hex digits) of a poison's noise: kind, eps, delta and indices. What a training
// checkpoint records of the poison its victim was trained on (so a resume can tell).
std::string poison_digest(const Poison& p);

}  // namespace cpoison::poison
