// Defences by name: a parsed specification, its batch transform (a training-time augmentation
// through algorithms::TrainConfig::batch_hook), and offline preprocessing of a whole dataset.
// Images: batches float [N, C, H, W] in [0, 1] (N images, C channels, H rows, W columns);
// datasets u8 [N, H, W, C].
//
// Specification strings: NAME or NAME:KEY=VALUE,KEY=VALUE. Numbers may be written as fractions
// ("8/255"). Keys and defaults (docs/defenses.md gives the formulas):
//   none
//   usvt:p=0.25,keep=0.8,mode=channel        mode channel|stacked; threshold=chatterjee (with
//        eta=0.01) or threshold=<number>; keep defaults to 1 when a threshold is given
//   noise:std=0.0314,clip=1                  (std 8/255)
//   smooth:k=3,sigma=0.8                     (sigma default 0.3((k-1)/2-1)+0.8)
//   cutout:size=16
//   adv:eps=8/255,alpha=2/255,steps=5,start=1,bn=batch,both=0,clean=0  (a training mode, not a
//        batch transform: see defense/adversarial.h)
//   jpeg:q=75                                JPEG compression at quality q (defense/cheap.h)
//   grayscale                                colour to grey, kept in C channels (colour data only)
//   bits:b=4                                 bit-depth reduction to b bits per channel
//   ueraser:k=5,strength=1,noise=8/255       UEraser-style training: the largest loss over k random
//        augmentations (a loss hook like adv: see defense/cheap.h)
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "defense/adversarial.h"
#include "defense/augmentations.h"
#include "defense/cheap.h"
#include "defense/usvt.h"
#include "engine/data/dataset.h"

namespace cpoison::defense {

enum class DefenseKind { none, usvt, noise, smooth, cutout, adversarial, jpeg, grayscale, bits, ueraser };
// "none", "usvt", "noise", "smooth", "cutout", "adv", "jpeg", "grayscale", "bits", "ueraser"
const char* defense_name(DefenseKind k);

struct Defense {
  DefenseKind kind = DefenseKind::none;
  UsvtOptions usvt;
  NoiseOptions noise;
  SmoothOptions smooth;
  CutoutOptions cutout;
  AdversarialOptions adversarial;
  JpegOptions jpeg;
  BitDepthOptions bits;
  UEraserOptions ueraser;
  // The canonical specification with every parameter ("usvt:p=0.25,keep=0.8,mode=channel").
  std::string spec() const;
  // Training modes that replace the loss of a step (adv, ueraser) are not batch transforms.
  bool is_loss_hook() const { return kind == DefenseKind::adversarial || kind == DefenseKind::ueraser; }
  bool is_batch_transform() const { return !is_loss_hook(); }
};

// Parses a specification. Error("defense '<spec>'", ...) naming the key and the value for an
// unknown name or key, a value that is not a number (or not one of the allowed words), a
// repeated key, or a value out of range (p outside [0, 1), keep outside (0, 1], an even or
// non-positive kernel size, a negative std, size or eps, ...).
Defense parse_defense(const std::string& spec);

// Applies a batch-transform defence to x [N, C, H, W] (float, [0, 1]) drawing from gen; none
// returns x. Error for adv (a training mode) and for bad input.
Tensor apply_defense(const Defense& d, const Tensor& x, Generator& gen);

// The algorithms::TrainConfig::batch_hook for a defence: empty for none (no hook), else a
// function applying apply_defense with the augmentation generator. Error for adv (use
// train_adversarial).
using BatchHook = std::function<Tensor(const Tensor& x, const data::Batch& batch, Generator& gen)>;
BatchHook defense_batch_hook(const Defense& d);
// cfg.batch_hook becomes the hook already there (if any), then the batch-transform defence d;
// none leaves cfg unchanged. Error for a training mode (adv, ueraser).
void chain_batch_hook(algorithms::TrainConfig& cfg, const Defense& d);

// algorithms::train with the defence in place: a batch transform as cfg.batch_hook (after any
// hook already set), adv through train_adversarial, ueraser through its loss hook (recording
// the canonical spec as the checkpoint's `defense` attribute in each case). Error for ueraser
// with MoCo (each of its k losses would enqueue keys).
algorithms::TrainResult train_with_defense(const data::Dataset& train_set, const algorithms::TrainConfig& cfg,
                                           const Defense& d);

// The Philox stream of offline preprocessing (defend_dataset).
inline constexpr uint32_t kDefendStream = 0xDEF0;

// Offline preprocessing: every image of ds through the defence, in order, in batches of
// batch_size on `device`, from Generator(seed, kDefendStream); the result is quantised back to
// u8 by round(255 x) (so an unchanged pixel stays the same byte). Every transform draws its
// random numbers image by image, so the result does not depend on batch_size. Labels, classes,
// names and the name are kept; source records the defence. progress (may be empty) gets
// (images done, total) after each batch. Error for adv, an empty dataset or batch_size < 1.
data::Dataset defend_dataset(const data::Dataset& ds, const Defense& d, uint64_t seed, int64_t batch_size = 256,
                             Device device = Device::cpu,
                             const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace cpoison::defense
