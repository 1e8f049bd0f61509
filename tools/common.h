// Pieces shared by the `cpoison` subcommands: the data options of every command that reads a
// dataset (--data, --data-root, --subset, --subset-seed, --pad-to, --channels), --device, number
// parsing for fractions like 8/255, output-path helpers, and the poison-file extras that
// `cpoison poison` writes and `cpoison export` reads back (data fingerprint, noise pictures).
// Layout letters: N images, K classes, C channels, H rows, W columns.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/data/dataset.h"
#include "engine/size.h"
#include "engine/io/hdf5.h"
#include "poison/poison_file.h"

namespace cpoison::tools {

// ---------------------------------------------------------------- data options

// Which training images a command works on. The same fields (under the attribute names of
// to_attrs()) are recorded in train checkpoints and poison files, so a later command can
// default to the data an earlier one used.
struct DataOptions {
  std::string data;       // built-in name (fashion-mnist, mnist, cifar10, cifar100, stl10) or an .h5 file
  std::string data_root;  // directory of a built-in dataset's files ("" = the usual places)
  int64_t subset = 0;     // > 0: a class-balanced subset of this many training images
  uint64_t subset_seed = 0;
  int64_t pad_to = 0;     // > 0: zero-pad images centrally to pad_to x pad_to
  int64_t channels = 0;   // 0: as stored; 3: replicate grayscale to colour; 1: needs 1-channel data
  std::string normalize;  // --normalize (apply_normalize_option); "" keeps the data's constants

  // The options add_data_options registered, by flag ("--subset"), to tell values given on the
  // command line from defaults. Empty when the struct was filled by hand.
  std::map<std::string, CLI::Option*> options;

  // True when `flag` was registered and given on the command line.
  bool given(const std::string& flag) const;
  // The registered option (for presets that change a default); Error when not registered.
  CLI::Option* option(const std::string& flag) const;

  data::LoadOptions load_options() const;  // root, pad_to, channels
  // Attributes dataset, subset, subset_seed, pad_to, channels (the names train checkpoints use).
  io::Attrs to_attrs() const;
  // A copy in which every value not given on the command line comes from `recorded` (attributes
  // as to_attrs() writes them); values absent there keep their defaults.
  DataOptions with_recorded(const io::Attrs& recorded) const;
  // "fashion-mnist (subset 5000, seed 0, pad to 32, 3 channels)", omitting defaults.
  std::string describe() const;
};

// Registers --data (required when `data_required`; otherwise o.data, when not empty, is shown
// as the default), --data-root, --subset, --subset-seed, --pad-to and --channels on `app`, bound
// to `o` (which must outlive the parse, e.g. held by a shared_ptr captured in the callback).
void add_data_options(CLI::App& app, DataOptions& o, bool data_required = false);
// Only --pad-to and --channels, for commands that describe their other data options in their
// own words (cpoison train, defend).
void add_pad_and_channels_options(CLI::App& app, DataOptions& o);

// --normalize TEXT on a loaded training set: "" changes nothing (the constants the file records,
// else the built-in name's); "data": the images' own per-channel statistics; a built-in dataset
// name (cifar10, cifar100, fashion-mnist, mnist, stl10): its constants; "M1,M2,M3/S1,S2,S3" (or
// one mean and one std for all channels): those. Error naming --normalize for anything else.
void apply_normalize_option(data::Dataset& ds, const std::string& text);
// The normalisation a training checkpoint records (attributes normalize_mean / normalize_std,
// written by algorithms::train); false when it has none (older files).
bool checkpoint_normalization(const io::Attrs& attrs, const std::string& path, std::vector<double>& mean,
                              std::vector<double>& stddev);
// Registers --normalize bound to `value`.
CLI::Option* add_normalize_option(CLI::App& app, std::string& value);

// The training split with pad_to/channels applied, then the balanced subset when subset > 0,
// then --normalize.
// Errors (from data::load_dataset / balanced_subset) name the dataset and what is wrong; an
// empty o.data is an Error asking for --data.
data::Dataset load_train(const DataOptions& o);
// The same without --normalize and without checking the options first (load_dataset's and
// balanced_subset's errors only): for commands that poison the images before they normalise
// them, or never normalise them.
data::Dataset load_train_subset(const DataOptions& o);
// The test split with pad_to/channels applied (never subset: evaluations use the whole test
// set), or its first `limit` images when limit > 0.
data::Dataset load_test(const DataOptions& o, int64_t limit = 0);

// "cpu" or "cuda"; Error naming --device for anything else or when CUDA is unavailable.
Device parse_device(const std::string& s);

// ---------------------------------------------------------------- numeric option ranges

// The declared range of a numeric option, checked by CLI11 when the option is parsed, so that
// every command refuses "--lr -1", "--lr nan" or "--width 4611686018427387904" with
// "--lr: must be ...". The text must be a finite number (NaN and Inf are refused, which
// CLI::Range lets through) in [lo, hi] (an open end with lo_open / hi_open), or exactly one of
// `special` (sentinels such as -1 for "the default"); integral: no fractional part.
// Bounds shared by several commands' options (sizes use engine/size.h's kMaxAxis, kMaxImageSide).
inline constexpr int64_t kMaxEpochs = 1000000;  // epochs, rounds, steps per round, checkpoint intervals

struct Range {
  double lo, hi;
  bool lo_open = false, hi_open = false;
  std::vector<double> special = {};
  bool integral = false;
};
CLI::Validator in_range(const Range& r);
// Shorthands: an integer in [lo, hi] (plus sentinels), a real number in [lo, hi].
CLI::Validator int_range(int64_t lo, int64_t hi, std::vector<double> special = {});
CLI::Validator real_range(double lo, double hi);
// An integer option that takes one of `values` (--channels: 0, 1 or 3).
CLI::Validator one_of(std::vector<int64_t> values);
// A fraction option's text (parse_fraction: "8/255" or "0.0314") within the range.
CLI::Validator fraction_range(const Range& r);

// ---------------------------------------------------------------- small parsers and paths

// A number written as a decimal ("0.0314", "1e-2") or a fraction ("8/255"). Error naming
// `flag` and the text when it is neither or the denominator is zero.
double parse_fraction(const std::string& text, const std::string& flag);
// "8/255" when value * 255 is (within 1e-9) an integer, else "%g".
std::string format_pixels(double value);
// path without a trailing ".h5"/".hdf5", plus `suffix` ("out.h5", ".png" -> "out.png").
std::string with_suffix(const std::string& path, const std::string& suffix);

// ---------------------------------------------------------------- poison-file extras

// data::fingerprint: FNV-1a 64 over the images' shape, pixels and labels, as 16 hex digits.
// `cpoison poison` records it so that train, probe, defend and export can prove they apply a
// poison to the same images (poison::check_fingerprint).
std::string data_fingerprint(const data::Dataset& ds);

// Saves a poison file (poison::save_poison's layout) with extra root attributes and extra
// datasets (such as /source_rows, the training set's row in its source split per image); atomic.
// Error when an extra key collides with a different value of one save_poison writes.
void save_poison_with_attrs(const std::string& path, const poison::Poison& p, const io::Attrs& extra,
                            const std::map<std::string, Tensor>& extra_datasets = {});

// The training rows (ascending) that carry noise and have label k, at most `limit` of them.
std::vector<int64_t> poisoned_rows_of_class(const poison::Poison& p, const data::Dataset& ds, int64_t k, int64_t limit);

// Tiles float images [R, C, H, W] in [0, 1] into a PNG, `columns` per row, white 1-pixel gaps.
// Small images are enlarged by an integer factor (nearest neighbour) so that a tile is at least
// 64 pixels on its longer side: 28x28 -> 56x56, 8x8 -> 64x64, 32x32 -> 64x64, 96x96 unchanged.
void write_tiles_png(const std::string& path, const Tensor& images, int64_t columns);

// Writes a PNG grid of amplified noise, (delta + 1) / 2, one tile per entry of delta_rows
// (rows of p.delta; -1 leaves a blank white tile), `columns` tiles per row.
void write_noise_grid(const std::string& path, const poison::Poison& p, const std::vector<int64_t>& delta_rows,
                      int64_t columns);

// The picture `cpoison poison` writes beside the poison file: class-wise, one tile per class;
// sample-wise, one row per class holding the noise of its first 8 poisoned images.
void write_poison_overview(const std::string& path, const poison::Poison& p, const data::Dataset& train);

}  // namespace cpoison::tools
