// Dataset loading by name or HDF5 path, HDF5 dataset files, subsets, batches and the sampler.
// Layout letters: N images, H rows, W columns, C channels; images u8 [N,H,W,C].
#include "engine/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/data/readers.h"
#include "engine/io/hdf5.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/index.h"
#include "engine/ops/shape.h"
#include "engine/rng.h"
#include "engine/size.h"

namespace cpoison::data {

namespace {
constexpr uint32_t kBalancedStream = 0x5EED0001;
// The most classes a dataset file may declare (models::kMaxClasses; engine/ does not see models/).
constexpr int64_t models_max_classes = int64_t(1) << 24;
constexpr uint32_t kShuffleStream = 0x5EED0002;

bool ends_with(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i)
    if (std::tolower((unsigned char)s[s.size() - suffix.size() + i]) != suffix[i]) return false;
  return true;
}

bool is_h5_path(const std::string& s) { return ends_with(s, ".h5") || ends_with(s, ".hdf5"); }

std::string join_lines(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "\n" : "") + v[i];
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

void check_dataset(const Dataset& ds, const std::string& where) {
  CP_CHECK(ds.images.defined() && ds.labels.defined(), where, "dataset has no images or labels");
  CP_CHECK(ds.images.dtype() == DType::u8 && ds.images.dim() == 4, where, "images must be u8 [N,H,W,C], got ",
           ds.images.describe());
  CP_CHECK(ds.labels.dtype() == DType::i64 && ds.labels.dim() == 1 && ds.labels.size(0) == ds.images.size(0), where,
           "labels must be i64 [N] with N = ", ds.images.size(0), ", got ", ds.labels.describe());
}

// Zero border around each image so that it becomes side x side, the image in the middle
// (for an odd difference the extra row/column goes to the bottom/right).
Tensor pad_center(const Tensor& images, int64_t side) {
  int64_t n = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
  CP_CHECK(side >= h && side >= w, "load_dataset", "pad_to ", side, " is smaller than the images (", h, "x", w, ")");
  if (side == h && side == w) return images;
  const int64_t bytes = checked_numel({n, side, side, c}, "load_dataset: pad_to " + std::to_string(side));
  check_allocation((uint64_t)bytes, "load_dataset: pad_to " + std::to_string(side) + " for " + std::to_string(n) + " images");
  Tensor out = Tensor::zeros({n, side, side, c}, DType::u8);
  int64_t top = (side - h) / 2, left = (side - w) / 2;
  const uint8_t* src = images.data<uint8_t>();
  uint8_t* dst = out.data<uint8_t>();
#pragma omp parallel for schedule(static) if (n > 256)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      std::memcpy(dst + ((i * side + top + y) * side + left) * c, src + ((i * h + y) * w) * c, (size_t)(w * c));
  return out;
}

Tensor replicate_channels(const Tensor& images, int64_t channels) {
  int64_t n = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
  if (c == channels) return images;
  CP_CHECK(c == 1, "load_dataset", "channels ", channels, " needs 1-channel images to replicate, the images have ", c,
           " (colour to grayscale is not done here)");
  Tensor out = Tensor::empty({n, h, w, channels}, DType::u8);
  const uint8_t* src = images.data<uint8_t>();
  uint8_t* dst = out.data<uint8_t>();
  int64_t pixels = n * h * w;
#pragma omp parallel for schedule(static) if (pixels > 65536)
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t k = 0; k < channels; ++k) dst[p * channels + k] = src[p];
  return out;
}

Dataset load_h5(const std::string& path, Split split, int64_t limit) {
  CP_CHECK(detail::file_exists(path), path, "file not found");
  io::H5Reader r(path);
  io::Attrs fa = r.file_attrs();
  std::string group = std::string(split_name(split)) + "/";
  std::string prefix;
  if (r.has(group + "images")) {
    prefix = group;
  } else if (r.has("images")) {
    auto it = fa.find("split");
    if (it != fa.end() && std::holds_alternative<std::string>(it->second)) {
      const std::string& held = std::get<std::string>(it->second);
      CP_CHECK(held == split_name(split), path, "holds the ", held, " split only, not ", split_name(split));
    }
  } else {
    fail(path, "holds neither /", group, "images nor /images (see data/README.md for the dataset file format)");
  }
  std::string images_name = prefix + "images", labels_name = prefix + "labels";
  CP_CHECK(r.has(labels_name), path, "has /", images_name, " but no /", labels_name);
  Shape is = r.shape(images_name), ls = r.shape(labels_name);
  CP_CHECK(r.dtype(images_name) == DType::u8 && is.size() == 4, path, "/", images_name, " must be u8 [N,H,W,C], got ",
           dtype_name(r.dtype(images_name)), is);
  for (size_t d = 0; d < is.size(); ++d)
    CP_CHECK(is[d] > 0, path, "/", images_name, " has shape ", is, ": every dimension must be > 0 (N images, H rows, ",
             "W columns, C channels)");
  CP_CHECK(is[3] <= 4 && is[1] <= kMaxImageSide && is[2] <= kMaxImageSide, path, "/", images_name, " has shape ", is,
           ": expected [N, H, W, C] with H and W at most ", kMaxImageSide, " and C at most 4 (channels last)");
  CP_CHECK(ls.size() == 1 && ls[0] == is[0], path, "/", labels_name, " has shape ", ls, " but /", images_name, " holds ",
           is[0], " images");
  DType ld = r.dtype(labels_name);
  CP_CHECK(ld == DType::i64 || ld == DType::i32 || ld == DType::u8, path, "/", labels_name,
           " must hold integers, got ", dtype_name(ld));
  int64_t n = limit > 0 ? std::min(is[0], limit) : is[0];

  Dataset ds;
  ds.images = n == is[0] ? r.read(images_name) : r.read_rows(images_name, 0, n);
  ds.labels = (n == is[0] ? r.read(labels_name) : r.read_rows(labels_name, 0, n)).to(DType::i64).contiguous();
  ds.images = ds.images.contiguous();
  auto name_it = fa.find("name");
  if (name_it != fa.end() && std::holds_alternative<std::string>(name_it->second)) {
    ds.name = std::get<std::string>(name_it->second);
  } else {
    std::string base = path.substr(path.rfind('/') + 1);
    ds.name = base.substr(0, base.rfind('.'));
  }
  auto classes_it = fa.find("classes");
  if (classes_it != fa.end()) {
    ds.classes = io::attr_int(fa, "classes", path);
    CP_CHECK(ds.classes >= 0 && ds.classes <= models_max_classes, path, "attribute 'classes' must be in [0, ",
             models_max_classes, "], got ", ds.classes);
  } else {
    // Files written by hand (h5py) may omit it: the labels tell.
    int64_t top = -1;
    for (int64_t v : ds.labels.to_vector<int64_t>()) top = std::max(top, v);
    CP_CHECK(top < models_max_classes, path, "/", labels_name, " holds label ", top, " (without a 'classes' attribute the ",
             "largest label + 1 is the class count, at most ", models_max_classes, ")");
    ds.classes = top + 1;
  }
  CP_CHECK(ds.classes > 0 || split == Split::unlabeled, path, "attribute 'classes' is ", ds.classes,
           " (a labelled split needs at least 1 class)");
  detail::check_labels(ds.labels, ds.classes, path + " /" + labels_name, split == Split::unlabeled);
  auto names_it = fa.find("class_names");
  if (names_it != fa.end() && std::holds_alternative<std::string>(names_it->second)) {
    auto names = split_lines(std::get<std::string>(names_it->second));
    if ((int64_t)names.size() == ds.classes) ds.class_names = names;
  }
  // Normalisation constants recorded with the data (data/README.md): one per channel or one for all.
  for (const char* key : {"mean", "std"}) {
    auto it = fa.find(key);
    if (it == fa.end()) continue;
    std::vector<double> v;
    if (auto* text = std::get_if<std::string>(&it->second)) v = parse_constants(*text, path + " attribute '" + key + "'");
    else if (auto* d = std::get_if<double>(&it->second)) v = {*d};
    else fail(path, "attribute '", key, "' must be a string of comma-separated numbers (\"0.4914,0.4822,0.4465\")");
    CP_CHECK((int64_t)v.size() == is[3] || v.size() == 1, path, "attribute '", key, "' has ", v.size(),
             " values for images with ", is[3], " channels (expected ", is[3], " or 1)");
    for (double x : v)
      CP_CHECK(std::isfinite(x) && (std::string(key) == "mean" || x > 0), path, "attribute '", key, "' holds ", x,
               std::string(key) == "std" ? ": every std must be finite and > 0" : ": every mean must be finite");
    (std::string(key) == "mean" ? ds.mean : ds.std) = v;
  }
  CP_CHECK(ds.mean.size() == ds.std.size(), path, "has attribute '", ds.mean.empty() ? "std" : "mean",
           "' without '", ds.mean.empty() ? "mean" : "std", "' (the normalisation needs both)");
  // The split's own origin (an attribute of its images) before the file's.
  ds.source = path;
  for (const io::Attrs& a : {fa, r.attrs(images_name)}) {
    auto it = a.find("source");
    if (it != a.end() && std::holds_alternative<std::string>(it->second)) ds.source = std::get<std::string>(it->second);
  }
  return ds;
}

void write_split(io::H5Writer& w, const std::string& prefix, const Dataset& ds) {
  // Each split keeps its own origin (the file attribute names the first split's).
  w.write(prefix + "images", ds.images.to(Device::cpu).contiguous(), {{"source", ds.source}});
  w.write(prefix + "labels", ds.labels.to(Device::cpu).contiguous());
  if (!ds.source_rows.empty())
    w.write(prefix + "source_rows", Tensor::from_vector(ds.source_rows, {(int64_t)ds.source_rows.size()}));
}

void write_file_attrs(io::H5Writer& w, const Dataset& ds) {
  w.set_file_attr("name", ds.name);
  w.set_file_attr("classes", ds.classes);
  w.set_file_attr("source", ds.source);
  w.set_file_attr("class_names", join_lines(ds.class_names));
  std::vector<double> mean, stddev;
  recorded_normalization(ds, mean, stddev);
  w.set_file_attr("mean", format_constants(mean));
  w.set_file_attr("std", format_constants(stddev));
}

Dataset with_rows(const Dataset& ds, Tensor images, Tensor labels) {
  Dataset out;
  out.images = std::move(images);
  out.labels = std::move(labels);
  out.classes = ds.classes;
  out.name = ds.name;
  out.class_names = ds.class_names;
  out.source = ds.source;
  out.mean = ds.mean;
  out.std = ds.std;
  return out;
}

Tensor index_tensor(const std::vector<int64_t>& indices, int64_t n, Device device, const char* where) {
  for (size_t i = 0; i < indices.size(); ++i)
    CP_CHECK(indices[i] >= 0 && indices[i] < n, where, "index ", indices[i], " at position ", i, " is out of range [0, ",
             n, ")");
  return Tensor::from_vector(indices, {(int64_t)indices.size()}, DType::i64, device);
}
}  // namespace

const char* split_name(Split s) {
  switch (s) {
    case Split::train: return "train";
    case Split::test: return "test";
    case Split::unlabeled: return "unlabeled";
  }
  return "?";
}

Split parse_split(const std::string& name) {
  if (name == "train") return Split::train;
  if (name == "test") return Split::test;
  if (name == "unlabeled") return Split::unlabeled;
  fail("split", "unknown split '", name, "' (train, test or unlabeled)");
}

Dataset Dataset::to(Device device) const {
  Dataset out = with_rows(*this, images.to(device), labels.to(device));
  out.source_rows = source_rows;
  return out;
}

std::vector<int64_t> Dataset::rows() const {
  if (!source_rows.empty()) return source_rows;
  std::vector<int64_t> r((size_t)size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = (int64_t)i;
  return r;
}

bool builtin_normalization(const std::string& name, std::vector<double>& mean, std::vector<double>& stddev) {
  const std::string base = name.substr(0, name.find('+'));
  // The numbers of augment/augment.h (kCifar10Mean, ...): the data layer sits below augment/,
  // so they are repeated here; tests/engine/data_test.cpp checks that both agree.
  if (base == "fashion-mnist") mean = {0.2860}, stddev = {0.3530};
  else if (base == "mnist") mean = {0.1307}, stddev = {0.3081};
  else if (base == "cifar100") mean = {0.5071, 0.4867, 0.4408}, stddev = {0.2675, 0.2565, 0.2761};
  else if (base == "cifar10" || base == "stl10") mean = {0.4914, 0.4822, 0.4465}, stddev = {0.2023, 0.1994, 0.2010};
  else return false;
  return true;
}

void pixel_statistics(const Dataset& ds, std::vector<double>& mean, std::vector<double>& stddev) {
  CP_CHECK(ds.images.defined() && ds.images.dim() == 4, "pixel_statistics", "needs u8 [N, H, W, C] images");
  Tensor images = ds.images.to(Device::cpu).contiguous();
  const uint8_t* p = images.data<uint8_t>();
  const int64_t C = ds.channels(), pixels = C > 0 ? images.numel() / C : 0;
  std::vector<double> sum(C, 0.0), sq(C, 0.0);
  for (int64_t i = 0; i < pixels; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const double v = p[i * C + c] / 255.0;
      sum[c] += v, sq[c] += v * v;
    }
  mean.assign(C, 0.0), stddev.assign(C, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    if (pixels == 0) {  // an empty set (files written to test the readers): nothing to measure
      stddev[c] = 1.0;
      continue;
    }
    mean[c] = sum[c] / (double)pixels;
    // A constant channel would divide by zero: its std counts as 1 (nothing to scale).
    const double var = std::max(0.0, sq[c] / (double)pixels - mean[c] * mean[c]);
    stddev[c] = var > 1e-12 ? std::sqrt(var) : 1.0;
  }
}

void recorded_normalization(const Dataset& ds, std::vector<double>& mean, std::vector<double>& stddev) {
  if (!ds.mean.empty() && ds.mean.size() == ds.std.size()) {
    mean = ds.mean, stddev = ds.std;
    return;
  }
  if (builtin_normalization(ds.name, mean, stddev)) return;
  pixel_statistics(ds, mean, stddev);
}

std::string format_constants(const std::vector<double>& values) {
  std::string out;
  for (double v : values) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    if (!out.empty()) out += ',';
    out += buf;
  }
  return out;
}

std::vector<double> parse_constants(const std::string& text, const std::string& where) {
  std::vector<double> out;
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = text.find(',', at);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(at, comma - at);
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    CP_CHECK(!item.empty() && end != item.c_str() && std::string(end).find_first_not_of(" \t") == std::string::npos &&
                 std::isfinite(v),
             where, "'", text, "': '", item, "' is not a finite number (expected numbers separated by commas)");
    out.push_back(v);
    at = comma + 1;
  }
  return out;
}

const std::vector<std::string>& dataset_names() {
  static const std::vector<std::string> names = {"fashion-mnist", "mnist", "cifar10", "cifar100", "stl10"};
  return names;
}

std::string resolve_root(const std::string& name, const LoadOptions& opt) {
  if (!opt.root.empty()) return opt.root;
  if (const char* env = std::getenv("CPOISON_DATA"); env && *env) return std::string(env) + "/" + name;
  std::vector<std::string> candidates = {"/usr/share/datasets/" + name, "data/" + name};
  for (const auto& c : candidates)
    if (detail::dir_exists(c)) return c;
  return candidates.front();  // so that the "not found" error names the usual place
}

Dataset load_dataset(const std::string& name_or_path, Split split, const LoadOptions& opt) {
  CP_CHECK(opt.limit >= 0, "load_dataset", "limit must be >= 0, got ", opt.limit);
  CP_CHECK(opt.pad_to >= 0 && opt.pad_to <= kMaxImageSide, "load_dataset", "pad_to must be in [0, ", kMaxImageSide,
           "], got ", opt.pad_to);
  CP_CHECK(opt.channels == 0 || opt.channels == 1 || opt.channels == 3, "load_dataset", "channels must be 0, 1 or 3, got ",
           opt.channels);
  Dataset ds;
  if (is_h5_path(name_or_path)) {
    ds = load_h5(name_or_path, split, opt.limit);
  } else {
    const std::string& name = name_or_path;
    auto& names = dataset_names();
    CP_CHECK(std::find(names.begin(), names.end(), name) != names.end(), "load_dataset", "unknown dataset '", name,
             "': expected one of ", names, " or a path ending in .h5");
    std::string root = resolve_root(name, opt);
    if (name == "fashion-mnist" || name == "mnist")
      ds = detail::read_mnist_like(name, root, split, opt.limit);
    else if (name == "cifar10")
      ds = detail::read_cifar10(root, split, opt.limit);
    else if (name == "cifar100")
      ds = detail::read_cifar100(root, split, opt.limit);
    else
      ds = detail::read_stl10(root, split, opt.limit);
  }
  if (opt.pad_to > 0) ds.images = pad_center(ds.images, opt.pad_to);
  if (opt.channels > 0) ds.images = replicate_channels(ds.images, opt.channels);
  return ds;
}

void save_dataset_h5(const std::string& path, const Dataset& ds, Split split) {
  check_dataset(ds, "save_dataset_h5 " + path);
  io::H5Writer w(path);
  write_split(w, "", ds);
  write_file_attrs(w, ds);
  w.set_file_attr("split", std::string(split_name(split)));
  w.commit();
}

void save_datasets_h5(const std::string& path, const std::vector<NamedSplit>& splits) {
  CP_CHECK(!splits.empty(), "save_datasets_h5 " + path, "no splits to write");
  for (size_t i = 0; i < splits.size(); ++i) {
    CP_CHECK(splits[i].dataset != nullptr, "save_datasets_h5 " + path, "split ", split_name(splits[i].split), " is null");
    check_dataset(*splits[i].dataset, std::string("save_datasets_h5 ") + path + " (" + split_name(splits[i].split) + ")");
    CP_CHECK(splits[i].dataset->classes == splits[0].dataset->classes, "save_datasets_h5 " + path, "split ",
             split_name(splits[i].split), " has ", splits[i].dataset->classes, " classes but ",
             split_name(splits[0].split), " has ", splits[0].dataset->classes);
    for (size_t j = 0; j < i; ++j)
      CP_CHECK(splits[j].split != splits[i].split, "save_datasets_h5 " + path, "split ", split_name(splits[i].split),
               " given twice");
  }
  io::H5Writer w(path);
  for (const auto& s : splits) write_split(w, std::string(split_name(s.split)) + "/", *s.dataset);
  write_file_attrs(w, *splits[0].dataset);
  w.commit();
}

std::string fingerprint(const Dataset& ds) {
  check_dataset(ds, "fingerprint");
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 offset basis
  auto mix = [&h](const void* bytes, size_t n) {
    const auto* b = static_cast<const uint8_t*>(bytes);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  Tensor images = ds.images.to(Device::cpu).contiguous();
  Tensor labels = ds.labels.to(Device::cpu).contiguous();
  for (int64_t d : images.shape()) mix(&d, sizeof d);
  mix(images.raw_data(), (size_t)images.numel());
  mix(labels.raw_data(), (size_t)labels.numel() * sizeof(int64_t));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

Dataset take_first(const Dataset& ds, int64_t n) {
  CP_CHECK(n >= 0, "take_first", "n must be >= 0, got ", n);
  n = std::min(n, ds.size());
  Dataset out = with_rows(ds, ds.images.slice0(0, n), ds.labels.slice0(0, n));
  out.source_rows = ds.rows();
  out.source_rows.resize((size_t)n);
  return out;
}

Dataset subset(const Dataset& ds, const std::vector<int64_t>& indices) {
  Tensor idx = index_tensor(indices, ds.size(), ds.device(), "subset");
  Dataset out = with_rows(ds, index_select0(ds.images, idx), index_select0(ds.labels, idx));
  const std::vector<int64_t> rows = ds.rows();
  out.source_rows.resize(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) out.source_rows[i] = rows[(size_t)indices[i]];
  return out;
}

std::vector<int64_t> balanced_indices(const Tensor& labels, int64_t classes, int64_t n, uint64_t seed) {
  CP_CHECK(labels.defined() && labels.dtype() == DType::i64 && labels.dim() == 1, "balanced_indices",
           "labels must be i64 [N], got ", labels.defined() ? labels.describe() : std::string("undefined"));
  CP_CHECK(classes > 0, "balanced_indices", "classes must be > 0, got ", classes);
  CP_CHECK(n >= 0, "balanced_indices", "n must be >= 0, got ", n);
  std::vector<int64_t> l = labels.to_vector<int64_t>();
  std::vector<std::vector<int64_t>> members((size_t)classes);
  for (int64_t i = 0; i < (int64_t)l.size(); ++i) {
    if (l[i] == -1) continue;  // unlabeled
    CP_CHECK(l[i] >= 0 && l[i] < classes, "balanced_indices", "label ", l[i], " of image ", i, " is out of range [0, ",
             classes, ")");
    members[(size_t)l[i]].push_back(i);
  }
  int64_t labelled = 0;
  for (const auto& m : members) labelled += (int64_t)m.size();
  CP_CHECK(n <= labelled, "balanced_indices", "asked for ", n, " images but only ", labelled, " are labelled");

  // Water-filling: equal shares among the classes that still have images, the remainder to
  // the lowest class ids.
  std::vector<int64_t> quota((size_t)classes, 0);
  int64_t remaining = n;
  while (remaining > 0) {
    std::vector<int64_t> open;
    for (int64_t c = 0; c < classes; ++c)
      if (quota[c] < (int64_t)members[c].size()) open.push_back(c);
    int64_t share = remaining / (int64_t)open.size();
    if (share == 0) {
      for (int64_t k = 0; k < remaining; ++k) ++quota[open[k]];
      break;
    }
    for (int64_t c : open) {
      int64_t add = std::min(share, (int64_t)members[c].size() - quota[c]);
      quota[c] += add;
      remaining -= add;
    }
  }
  Generator gen(seed, kBalancedStream);
  std::vector<int64_t> picked;
  picked.reserve((size_t)n);
  for (int64_t c = 0; c < classes; ++c) {
    // Every class draws its permutation, so one class's quota never changes another's picks.
    std::vector<int64_t> perm = gen.permutation((int64_t)members[c].size());
    for (int64_t k = 0; k < quota[c]; ++k) picked.push_back(members[c][perm[k]]);
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

Dataset balanced_subset(const Dataset& ds, int64_t n, uint64_t seed) {
  return subset(ds, balanced_indices(ds.labels, ds.classes, n, seed));
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  CP_CHECK(n >= 0, "shuffled_indices", "n must be >= 0, got ", n);
  Generator gen(seed, kShuffleStream);
  return gen.permutation(n);
}

Dataset shuffled(const Dataset& ds, uint64_t seed) { return subset(ds, shuffled_indices(ds.size(), seed)); }

std::vector<int64_t> class_counts(const Dataset& ds) {
  std::vector<int64_t> counts((size_t)std::max<int64_t>(ds.classes, 0), 0);
  for (int64_t v : ds.labels.to_vector<int64_t>())
    if (v >= 0 && v < ds.classes) ++counts[(size_t)v];
  return counts;
}

Batch gather_batch(const Dataset& ds, const std::vector<int64_t>& indices) {
  check_dataset(ds, "gather_batch");
  Batch b;
  b.indices = index_tensor(indices, ds.size(), ds.device(), "gather_batch");
  b.images = index_select0(ds.images, b.indices);
  b.labels = index_select0(ds.labels, b.indices);
  return b;
}

Tensor to_float_nchw(const Tensor& u8_nhwc, Device device) {
  CP_CHECK(u8_nhwc.defined() && u8_nhwc.dtype() == DType::u8 && u8_nhwc.dim() == 4, "to_float_nchw",
           "expects u8 [B,H,W,C], got ", u8_nhwc.defined() ? u8_nhwc.describe() : std::string("undefined"));
  // Move the bytes first (4x less to copy than floats), then lay out and convert there.
  Tensor x = permute(u8_nhwc.to(device), {0, 3, 1, 2}).to(DType::f32);
  return div(x, Tensor::scalar(255.0, DType::f32, device));
}

// ---- BatchSampler

BatchSampler::BatchSampler(int64_t n, int64_t batch_size, uint64_t seed, bool shuffle, bool drop_last, uint32_t stream)
    : n_(n), batch_size_(batch_size), seed_(seed), shuffle_(shuffle), drop_last_(drop_last), stream_(stream) {
  CP_CHECK(n >= 0, "BatchSampler", "size must be >= 0, got ", n);
  CP_CHECK(batch_size > 0, "BatchSampler", "batch size must be > 0, got ", batch_size);
  CP_CHECK(batches_per_epoch() > 0, "BatchSampler", "no batch per epoch: ", n, " items, batch size ", batch_size,
           drop_last ? " with drop_last" : "");
}

int64_t BatchSampler::batches_per_epoch() const {
  return drop_last_ ? n_ / batch_size_ : (n_ + batch_size_ - 1) / batch_size_;
}

std::vector<int64_t> BatchSampler::epoch_order(int64_t epoch) const {
  CP_CHECK(epoch >= 0, "BatchSampler", "epoch must be >= 0, got ", epoch);
  if (!shuffle_) {
    std::vector<int64_t> order((size_t)n_);
    for (int64_t i = 0; i < n_; ++i) order[i] = i;
    return order;
  }
  Generator gen(seed_, stream_);
  gen.set_offset((uint64_t)epoch << 32);  // disjoint counter ranges per epoch
  return gen.permutation(n_);
}

void BatchSampler::ensure_order() {
  if (order_epoch_ == state_.epoch) return;
  order_ = epoch_order(state_.epoch);
  order_epoch_ = state_.epoch;
}

std::vector<int64_t> BatchSampler::next() {
  ensure_order();
  int64_t begin = state_.batch * batch_size_, end = std::min(begin + batch_size_, n_);
  std::vector<int64_t> batch(order_.begin() + begin, order_.begin() + end);
  // Keep the state normalised: a finished epoch reads as (epoch + 1, 0).
  if (++state_.batch == batches_per_epoch()) {
    ++state_.epoch;
    state_.batch = 0;
  }
  return batch;
}

void BatchSampler::restore(State s) {
  CP_CHECK(s.epoch >= 0 && s.batch >= 0 && s.batch <= batches_per_epoch(), "BatchSampler::restore", "position (epoch ",
           s.epoch, ", batch ", s.batch, ") is invalid for ", batches_per_epoch(), " batches per epoch");
  state_ = s;
  if (state_.batch == batches_per_epoch()) {
    ++state_.epoch;
    state_.batch = 0;
  }
}

}  // namespace cpoison::data
