// Datasets: whole image sets held as one u8 tensor (they fit in GPU memory), readers for the
// standard binary formats, our HDF5 dataset files, subsets, and batches.
// Layout letters: N images, H rows, W columns, C channels; stored images are u8 [N,H,W,C],
// batches handed to models are f32 [B,C,H,W] in [0,1].
//
// Every bad input (missing or truncated file, wrong magic number, image/label counts that
// disagree, label out of range, bad option) raises cpoison::Error naming the file or the
// function and what is wrong. data/README.md describes each file format and where it lives.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace cpoison::data {

enum class Split { train, test, unlabeled };
const char* split_name(Split s);              // "train", "test", "unlabeled"
Split parse_split(const std::string& name);  // Error on anything else

struct Dataset {
  Tensor images;  // u8 [N,H,W,C], contiguous
  Tensor labels;  // i64 [N] in [0, classes); -1 for unlabeled images (STL-10 unlabeled split)
  int64_t classes = 0;
  std::string name;                      // "cifar10", "fashion-mnist", an HDF5 file's name attribute
  std::vector<std::string> class_names;  // classes entries when known, else empty
  std::string source;                    // where the images came from (file or directory)
  // Per-channel normalisation constants kept with the data (an HDF5 dataset file's `mean` and
  // `std` attributes; subsets, poisoned and defended copies keep them); empty when unknown.
  // algorithms::dataset_normalization prefers them to the built-in names' constants.
  std::vector<double> mean, std;
  // The row of each image in the split it was read from, kept through every selection (subsets,
  // take_first, shuffles); empty means rows 0..N-1. Exports and poison files record it as
  // /source_rows so that a subset can be rebuilt without our generator.
  std::vector<int64_t> source_rows;

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  int64_t height() const { return images.size(1); }
  int64_t width() const { return images.size(2); }
  int64_t channels() const { return images.size(3); }
  Device device() const { return images.device(); }
  // source_rows, or 0..N-1 when it is empty.
  std::vector<int64_t> rows() const;
  // The same dataset with images and labels on `device` (the same handles when already there).
  Dataset to(Device device) const;
};

struct LoadOptions {
  // Directory holding the dataset's files. Empty: $CPOISON_DATA/<name> when CPOISON_DATA is
  // set, else the first existing of /usr/share/datasets/<name> and ./data/<name>.
  std::string root;
  int64_t pad_to = 0;    // > 0: zero-pad each image centrally to pad_to x pad_to (28 -> 32)
  int64_t channels = 0;  // 0 keeps the stored channels; 3 replicates a 1-channel image; 1 needs 1
  int64_t limit = 0;     // > 0: only the first `limit` images of the split (read no further)
};

// The built-in dataset names: fashion-mnist, mnist, cifar10, cifar100, stl10.
const std::vector<std::string>& dataset_names();
// The root directory load_dataset would use for a built-in name with these options.
std::string resolve_root(const std::string& name, const LoadOptions& opt);

// Loads one split of a built-in dataset (by name) or of an HDF5 dataset file (a path ending
// in .h5/.hdf5). Split::unlabeled exists only for stl10 (and HDF5 files holding it). Images
// come back on the CPU, contiguous, with options applied in the order limit, pad_to, channels.
Dataset load_dataset(const std::string& name_or_path, Split split, const LoadOptions& opt = {});

// ---- our HDF5 dataset files (readable with h5py)
// Flat layout: /images u8 [N,H,W,C], /labels i64 [N]; file attributes name (string),
// classes (int), source (string), class_names (string, one name per line, may be empty),
// mean and std (strings, comma-separated per-channel constants: recorded_normalization) and
// split (string) naming the split the file holds; /source_rows i64 [N] when the rows are a
// selection (Dataset::source_rows).
// Grouped layout: /train/images, /train/labels, /test/images, /test/labels (and
// /unlabeled/...), with the same file attributes except split.
// load_dataset reads the group of the requested split when present, else the flat datasets;
// a flat file whose split attribute names another split is an Error.
// Both write path.tmp and rename it into place.
void save_dataset_h5(const std::string& path, const Dataset& ds, Split split = Split::train);
struct NamedSplit {
  Split split;
  const Dataset* dataset;
};
void save_datasets_h5(const std::string& path, const std::vector<NamedSplit>& splits);

// The normalisation constants of a built-in dataset (fashion-mnist, mnist, cifar10, cifar100;
// stl10 uses CIFAR-10's), read from the name up to its first '+' ("fashion-mnist+cp-c" is
// fashion-mnist). False, leaving mean and std alone, for any other name.
bool builtin_normalization(const std::string& name, std::vector<double>& mean, std::vector<double>& std);
// Per-channel mean and (population) standard deviation of the pixels / 255, over every image.
void pixel_statistics(const Dataset& ds, std::vector<double>& mean, std::vector<double>& std);
// What a dataset file records as its normalisation: ds.mean/ds.std when set, else the built-in
// name's constants, else pixel_statistics of ds itself (documented in data/README.md).
void recorded_normalization(const Dataset& ds, std::vector<double>& mean, std::vector<double>& std);
// "0.4914,0.4822,0.4465": the text of the `mean` / `std` attributes. parse_constants reads it
// back (Error naming `where` unless every entry is a finite number).
std::string format_constants(const std::vector<double>& values);
std::vector<double> parse_constants(const std::string& text, const std::string& where);

// FNV-1a 64 over the images' shape (int64 each), pixels (u8 NHWC) and labels (i64), as 16 hex
// digits: the identity of a training set and its order. Poison files record it (`cpoison
// poison`), so that train, probe, defend and export can prove a poison is applied to the images
// it was made for; training checkpoints record it so that a resume uses the same images.
std::string fingerprint(const Dataset& ds);

// ---- subsets (labels, classes and names carried over; images stay on their device)
Dataset take_first(const Dataset& ds, int64_t n);  // a view of the first min(n, N) images
Dataset subset(const Dataset& ds, const std::vector<int64_t>& indices);  // copies, in index order
// n indices, as equal per class as possible: each class gets n / classes, the classes with the
// lowest ids get one more for the remainder, and a class with too few images gives its share
// to the others (still lowest ids first). Which images of a class: a seeded permutation of that
// class (Philox, `seed`, stream 0x5EED0001). Returned in ascending order. Error when n > N
// labelled images.
std::vector<int64_t> balanced_indices(const Tensor& labels, int64_t classes, int64_t n, uint64_t seed);
Dataset balanced_subset(const Dataset& ds, int64_t n, uint64_t seed);
// A seeded permutation of 0..n-1 (Philox, `seed`, stream 0x5EED0002).
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);
Dataset shuffled(const Dataset& ds, uint64_t seed);
std::vector<int64_t> class_counts(const Dataset& ds);  // images per class, size `classes`

// ---- batches
struct Batch {
  Tensor images;   // u8 [B,H,W,C] on the dataset's device
  Tensor labels;   // i64 [B]
  Tensor indices;  // i64 [B]: rows of the dataset (to index per-sample noise)
};
// Rows `indices` of the dataset (Error naming the index when out of range).
Batch gather_batch(const Dataset& ds, const std::vector<int64_t>& indices);
// u8 [B,H,W,C] -> f32 [B,C,H,W] with value / 255 (exactly as PyTorch's ToTensor), on `device`.
// Not recorded by autograd (the input is integer data).
Tensor to_float_nchw(const Tensor& u8_nhwc, Device device);

// Visits 0..n-1 in batches, epoch after epoch. With shuffle, epoch e's order is a permutation
// drawn from Philox (seed, stream, offset e * 2^32), so any (epoch, batch) position can be
// recomputed without replaying earlier epochs: a run checkpoints state() and resumes exactly
// with restore(). drop_last drops the last incomplete batch of each epoch.
class BatchSampler {
public:
  static constexpr uint32_t default_stream = 0x5EED0003;
  BatchSampler(int64_t n, int64_t batch_size, uint64_t seed, bool shuffle = true, bool drop_last = true,
               uint32_t stream = default_stream);

  struct State {
    int64_t epoch = 0;  // epochs finished
    int64_t batch = 0;  // batches already returned in the current epoch (< batches_per_epoch)
  };

  int64_t batches_per_epoch() const;
  // The next batch's indices; moves into the next epoch when the current one is done.
  std::vector<int64_t> next();
  // True when the next call to next() starts a new epoch (no batch of this epoch drawn yet).
  bool at_epoch_start() const { return state_.batch == 0; }
  // The whole order of one epoch (what next() walks through for that epoch).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  State state() const { return state_; }
  // Error when negative or past the epoch's batch count ((e, batches_per_epoch) reads as (e+1, 0)).
  void restore(State s);
  int64_t size() const { return n_; }
  int64_t batch_size() const { return batch_size_; }

private:
  void ensure_order();
  int64_t n_, batch_size_;
  uint64_t seed_;
  bool shuffle_, drop_last_;
  uint32_t stream_;
  State state_;
  int64_t order_epoch_ = -1;  // epoch whose order is cached in order_
  std::vector<int64_t> order_;
};

// ---- image folders (ImageNet-100 style): DIR/<class>/<image>.JPEG, classes sorted by name
enum class ResizeMode {
  crop,     // bilinear resize of the shorter side to `size`, then a central size x size crop
  stretch,  // bilinear resize straight to size x size (aspect ratio not kept)
};
ResizeMode parse_resize_mode(const std::string& s);  // "crop" | "stretch"

struct ImageFolderOptions {
  int64_t size = 64;
  ResizeMode resize = ResizeMode::crop;
  // Class folder names to use, in this order (their label = position); empty: every
  // sub-folder, sorted by name.
  std::vector<std::string> classes;
  int64_t limit_per_class = 0;  // > 0: only the first files (sorted by name) of each class
};

// The 100 ImageNet class folders (WordNet ids) of ImageNet-100 as used by CMC (Tian et al.
// 2019) and the contrastive-poisoning paper, in that list's order.
const std::vector<std::string>& imagenet100_classes();

// Decodes one JPEG (or PNG, some ImageNet ".JPEG" files are PNGs) to u8 [H,W,3] RGB
// (grayscale replicated, CMYK converted). Error naming the file when unreadable.
Tensor decode_image_file(const std::string& path);
// Resizes u8 [H,W,C] with a bilinear (triangle) filter that widens when shrinking, like
// PIL's Image.resize(BILINEAR), so downscaling averages instead of aliasing.
Tensor resize_image(const Tensor& hwc, int64_t out_h, int64_t out_w);
// decode + resize/crop per ImageFolderOptions -> u8 [size,size,3].
Tensor load_folder_image(const std::string& path, const ImageFolderOptions& opt);

// The class folders and files an image folder holds (sorted by name; files with a .jpeg,
// .jpg or .png extension of any case).
struct FolderListing {
  std::vector<std::string> class_names;
  std::vector<std::string> files;
  std::vector<int64_t> labels;
};
FolderListing list_image_folder(const std::string& dir, const ImageFolderOptions& opt);
// Reads a whole image folder into memory (small folders, tests).
Dataset read_image_folder(const std::string& dir, const ImageFolderOptions& opt);
// Converts image folders to one HDF5 dataset file, streaming rows to disk (ImageNet-100's
// 126k training images never sit in memory at once). test_dir may be empty: then a flat
// file holding the train split; else the grouped layout with train and test. The class list
// of test_dir must equal that of train_dir. `progress` (may be empty) gets (done, total).
void convert_image_folder(const std::string& train_dir, const std::string& test_dir, const std::string& out_path,
                          const std::string& name, const ImageFolderOptions& opt,
                          const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace cpoison::data
