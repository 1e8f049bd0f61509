#include "tools/common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "engine/runtime.h"
#include "engine/size.h"
#include "engine/io/png.h"

namespace cpoison::tools {

// ---------------------------------------------------------------- data options

bool DataOptions::given(const std::string& flag) const {
  auto it = options.find(flag);
  return it != options.end() && it->second && it->second->count() > 0;
}

CLI::Option* DataOptions::option(const std::string& flag) const {
  auto it = options.find(flag);
  CP_CHECK(it != options.end() && it->second, "DataOptions", "option ", flag, " was not registered (call add_data_options)");
  return it->second;
}

data::LoadOptions DataOptions::load_options() const {
  data::LoadOptions lo;
  lo.root = data_root;
  lo.pad_to = pad_to;
  lo.channels = channels;
  return lo;
}

io::Attrs DataOptions::to_attrs() const {
  return {{"dataset", data},
          {"subset", subset},
          {"subset_seed", (int64_t)subset_seed},
          {"pad_to", pad_to},
          {"channels", channels}};
}

namespace {
// Integer attribute (written as int64 or double) or nothing.
bool recorded_int(const io::Attrs& a, const std::string& key, int64_t& out) {
  auto it = a.find(key);
  if (it == a.end()) return false;
  if (auto* i = std::get_if<int64_t>(&it->second)) return out = *i, true;
  if (auto* d = std::get_if<double>(&it->second)) return out = (int64_t)std::llround(*d), true;
  return false;
}
}  // namespace

DataOptions DataOptions::with_recorded(const io::Attrs& recorded) const {
  DataOptions r = *this;
  auto it = recorded.find("dataset");
  if (!given("--data") && it != recorded.end())
    if (auto* s = std::get_if<std::string>(&it->second); s && !s->empty()) r.data = *s;
  int64_t v = 0;
  if (!given("--subset") && recorded_int(recorded, "subset", v)) r.subset = v;
  if (!given("--subset-seed") && recorded_int(recorded, "subset_seed", v)) r.subset_seed = (uint64_t)v;
  if (!given("--pad-to") && recorded_int(recorded, "pad_to", v)) r.pad_to = v;
  if (!given("--channels") && recorded_int(recorded, "channels", v)) r.channels = v;
  return r;
}

std::string DataOptions::describe() const {
  std::string s = data.empty() ? std::string("(no dataset)") : data, extra;
  auto add = [&](const std::string& piece) { extra += (extra.empty() ? "" : ", ") + piece; };
  if (subset > 0) add("subset " + std::to_string(subset) + ", seed " + std::to_string(subset_seed));
  if (pad_to > 0) add("pad to " + std::to_string(pad_to));
  if (channels > 0) add(std::to_string(channels) + " channels");
  return extra.empty() ? s : s + " (" + extra + ")";
}

void add_data_options(CLI::App& app, DataOptions& o, bool data_required) {
  auto* data = app.add_option("--data", o.data,
                              "Dataset name (fashion-mnist, mnist, cifar10, cifar100, stl10) or an HDF5 dataset file");
  if (data_required) data->required();
  else if (!o.data.empty()) data->capture_default_str();
  o.options["--data"] = data;
  o.options["--data-root"] = app.add_option("--data-root", o.data_root,
                                            "Directory of the dataset's files (default: $CPOISON_DATA/NAME, "
                                            "/usr/share/datasets/NAME, ./data/NAME)");
  o.options["--subset"] = app.add_option("--subset", o.subset, "Use a class-balanced subset of N training images (0: all)")
                              ->check(int_range(0, kMaxAxis))
                              ->capture_default_str();
  o.options["--subset-seed"] = app.add_option("--subset-seed", o.subset_seed, "Seed of the subset's choice")->capture_default_str();
  o.options["--pad-to"] = app.add_option("--pad-to", o.pad_to, "Zero-pad images centrally to this size (0: as stored)")
                              ->check(int_range(0, kMaxImageSide))
                              ->capture_default_str();
  o.options["--channels"] =
      app.add_option("--channels", o.channels, "0: as stored; 3: replicate grayscale to colour; 1: needs grayscale data")
          ->check(one_of({0, 1, 3}))
          ->capture_default_str();
  o.options["--normalize"] = add_normalize_option(app, o.normalize);
}

void add_pad_and_channels_options(CLI::App& app, DataOptions& o) {
  o.options["--pad-to"] = app.add_option("--pad-to", o.pad_to, "Zero-pad images centrally to this size (0: as stored)")
                              ->check(int_range(0, kMaxImageSide))
                              ->capture_default_str();
  o.options["--channels"] = app.add_option("--channels", o.channels, "0: as stored; 3: replicate grayscale to colour")
                                ->check(one_of({0, 1, 3}))
                                ->capture_default_str();
}

data::Dataset load_train(const DataOptions& o) {
  CP_CHECK(!o.data.empty(), "--data", "no dataset given (a built-in name or an HDF5 dataset file)");
  CP_CHECK(o.subset >= 0, "--subset", "must be >= 0, got ", o.subset);
  CP_CHECK(o.pad_to >= 0, "--pad-to", "must be >= 0, got ", o.pad_to);
  data::Dataset ds = load_train_subset(o);
  apply_normalize_option(ds, o.normalize);
  return ds;
}

data::Dataset load_train_subset(const DataOptions& o) {
  data::Dataset ds = data::load_dataset(o.data, data::Split::train, o.load_options());
  if (o.subset > 0) ds = data::balanced_subset(ds, o.subset, o.subset_seed);
  return ds;
}

void apply_normalize_option(data::Dataset& ds, const std::string& text) {
  if (text.empty()) return;
  std::vector<double> mean, stddev;
  if (text == "data") {
    data::pixel_statistics(ds, mean, stddev);
  } else if (data::builtin_normalization(text, mean, stddev) && text.find('+') == std::string::npos) {
    // a built-in dataset's constants
  } else {
    const auto slash = text.find('/');
    CP_CHECK(slash != std::string::npos, "--normalize", "'", text,
             "' is none of: data, a built-in dataset name (cifar10, cifar100, fashion-mnist, mnist, stl10), MEAN/STD "
             "with comma-separated per-channel numbers (0.49,0.48,0.45/0.2,0.2,0.2)");
    mean = data::parse_constants(text.substr(0, slash), "--normalize");
    stddev = data::parse_constants(text.substr(slash + 1), "--normalize");
    CP_CHECK(mean.size() == stddev.size(), "--normalize", "'", text, "' has ", mean.size(), " means but ", stddev.size(),
             " stds");
    for (double s : stddev) CP_CHECK(s > 0, "--normalize", "'", text, "': every std must be > 0, got ", s);
  }
  CP_CHECK((int64_t)mean.size() == ds.channels() || mean.size() == 1 || (ds.channels() == 1 && mean.size() == 3),
           "--normalize", "'", text, "' gives ", mean.size(), " constants for images with ", ds.channels(), " channels");
  ds.mean = mean;
  ds.std = stddev;
}

bool checkpoint_normalization(const io::Attrs& attrs, const std::string& path, std::vector<double>& mean,
                              std::vector<double>& stddev) {
  auto m = attrs.find("normalize_mean"), s = attrs.find("normalize_std");
  if (m == attrs.end() || s == attrs.end()) return false;
  mean = data::parse_constants(io::attr_string(attrs, "normalize_mean", path), path + " attribute 'normalize_mean'");
  stddev = data::parse_constants(io::attr_string(attrs, "normalize_std", path), path + " attribute 'normalize_std'");
  CP_CHECK(mean.size() == stddev.size(), path, "normalize_mean has ", mean.size(), " values but normalize_std ",
           stddev.size());
  for (double v : stddev) CP_CHECK(v > 0, path, "normalize_std holds ", v, " (every std must be > 0)");
  return true;
}

CLI::Option* add_normalize_option(CLI::App& app, std::string& value) {
  return app.add_option("--normalize", value,
                        "Normalisation constants: data (the training images' statistics), a built-in dataset name "
                        "(cifar10, ...) or MEAN/STD (0.49,0.48,0.45/0.2,0.2,0.2). Default: those the HDF5 file records, "
                        "else the built-in name's; an unknown dataset without them is an error");
}

data::Dataset load_test(const DataOptions& o, int64_t limit) {
  CP_CHECK(!o.data.empty(), "--data", "no dataset given (a built-in name or an HDF5 dataset file)");
  data::LoadOptions lo = o.load_options();
  lo.limit = limit;
  return data::load_dataset(o.data, data::Split::test, lo);
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu;
  CP_CHECK(s == "cuda", "--device", "unknown device '", s, "' (cpu or cuda)");
  CP_CHECK(cuda_available(), "--device", "cuda requested but no usable GPU (or a build without CUDA)");
  return Device::cuda;
}

// ---------------------------------------------------------------- small parsers and paths

namespace {
// The whole of `text` (blanks around it allowed) as a finite number.
bool parse_number(const std::string& text, double& out) {
  const size_t first = text.find_first_not_of(" \t"), last = text.find_last_not_of(" \t");
  if (first == std::string::npos) return false;
  const std::string trimmed = text.substr(first, last - first + 1);
  char* end = nullptr;
  out = std::strtod(trimmed.c_str(), &end);
  return end == trimmed.c_str() + trimmed.size() && std::isfinite(out);
}

std::string number_text(double v) {
  char buf[64];
  if (std::fabs(v) >= 1e15 && v == std::floor(v) && std::fabs(v) < 9.3e18) std::snprintf(buf, sizeof buf, "%lld", (long long)v);
  else std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

std::string range_text(const Range& r) {
  std::string s = std::string(r.lo_open ? "(" : "[") + number_text(r.lo) + ", " + number_text(r.hi) + (r.hi_open ? ")" : "]");
  for (double v : r.special) s += " or " + number_text(v);
  return s;
}

// "" when `value` (already parsed) is within r, else the reason.
std::string range_error(const Range& r, double value, const std::string& text) {
  for (double v : r.special)
    if (value == v) return "";
  const bool in = (r.lo_open ? value > r.lo : value >= r.lo) && (r.hi_open ? value < r.hi : value <= r.hi);
  const bool whole = !r.integral || value == std::floor(value);
  if (in && whole) return "";
  return std::string("expected ") + (r.integral ? "an integer" : "a number") + " in " + range_text(r) + ", got " + text;
}
}  // namespace

CLI::Validator in_range(const Range& r) {
  return CLI::Validator(
      [r](std::string& text) -> std::string {
        double value = 0;
        if (!parse_number(text, value)) return "expected a finite number in " + range_text(r) + ", got " + text;
        return range_error(r, value, text);
      },
      range_text(r), "RANGE");
}

CLI::Validator int_range(int64_t lo, int64_t hi, std::vector<double> special) {
  return in_range(Range{(double)lo, (double)hi, false, false, std::move(special), true});
}

CLI::Validator real_range(double lo, double hi) { return in_range(Range{lo, hi}); }

CLI::Validator one_of(std::vector<int64_t> values) {
  std::string list;
  for (int64_t v : values) list += (list.empty() ? "" : ", ") + std::to_string(v);
  return CLI::Validator(
      [values, list](std::string& text) -> std::string {
        double value = 0;
        if (parse_number(text, value))
          for (int64_t v : values)
            if (value == (double)v) return "";
        return "expected one of " + list + ", got " + text;
      },
      "{" + list + "}", "ONE_OF");
}

CLI::Validator fraction_range(const Range& r) {
  return CLI::Validator(
      [r](std::string& text) -> std::string {
        double value = 0;
        try {
          value = parse_fraction(text, "value");
        } catch (const Error&) {
          return "expected a number or a fraction like 8/255 in " + range_text(r) + ", got " + text;
        }
        return range_error(r, value, text);
      },
      range_text(r), "RANGE");
}

double parse_fraction(const std::string& text, const std::string& flag) {
  double value = 0;
  size_t slash = text.find('/');
  if (slash == std::string::npos) {
    CP_CHECK(parse_number(text, value), flag, "'", text, "' is not a number or a fraction like 8/255");
    return value;
  }
  double num = 0, den = 0;
  CP_CHECK(parse_number(text.substr(0, slash), num) && parse_number(text.substr(slash + 1), den), flag, "'", text,
           "' is not a number or a fraction like 8/255");
  CP_CHECK(den != 0, flag, "'", text, "' divides by zero");
  return num / den;
}

std::string format_pixels(double value) {
  double levels = value * 255.0;
  char buf[64];
  if (std::fabs(levels - std::round(levels)) < 1e-9) std::snprintf(buf, sizeof buf, "%g/255", std::round(levels));
  else std::snprintf(buf, sizeof buf, "%g", value);
  return buf;
}

std::string with_suffix(const std::string& path, const std::string& suffix) {
  for (const std::string ext : {".h5", ".hdf5"})
    if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
      return path.substr(0, path.size() - ext.size()) + suffix;
  return path + suffix;
}

// ---------------------------------------------------------------- poison-file extras

std::string data_fingerprint(const data::Dataset& ds) { return data::fingerprint(ds); }

void save_poison_with_attrs(const std::string& path, const poison::Poison& p, const io::Attrs& extra,
                            const std::map<std::string, Tensor>& extra_datasets) {
  // save_poison owns the layout; we let it write a scratch file and copy every dataset and
  // attribute from it, adding ours, so the poison format has one definition.
  const std::string scratch = path + ".base";
  poison::save_poison(scratch, p);
  try {
    io::H5Reader base(scratch);
    io::Attrs attrs = base.file_attrs();
    for (auto& [key, value] : extra) {
      // The same value twice (data_fingerprint, which save_poison writes when the poison knows it) is no conflict.
      CP_CHECK(!attrs.count(key) || attrs.at(key) == value, "save poison " + path, "extra attribute '", key,
               "' would replace the poison's own");
      attrs[key] = value;
    }
    io::H5Writer w(path);
    for (const std::string& name : base.datasets()) w.write(name, base.read(name), base.attrs(name));
    for (const auto& [name, t] : extra_datasets) {
      CP_CHECK(!base.has(name), "save poison " + path, "extra dataset '", name, "' would replace the poison's own");
      w.write(name, t);
    }
    for (auto& [key, value] : attrs) w.set_file_attr(key, value);
    w.commit();
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(scratch, ec);
    throw;
  }
  std::filesystem::remove(scratch);
}

std::vector<int64_t> poisoned_rows_of_class(const poison::Poison& p, const data::Dataset& ds, int64_t k, int64_t limit) {
  std::vector<int64_t> labels = ds.labels.to(Device::cpu).to_vector<int64_t>();
  std::vector<int64_t> rows;
  for (int64_t i : p.indices.to_vector<int64_t>()) {
    if ((int64_t)rows.size() >= limit) break;
    CP_CHECK(i < (int64_t)labels.size(), "poison", "poisoned index ", i, " outside a dataset of ", labels.size(), " images");
    if (labels[i] == k) rows.push_back(i);
  }
  return rows;
}

void write_tiles_png(const std::string& path, const Tensor& images, int64_t columns) {
  CP_CHECK(images.defined() && images.dim() == 4, "picture " + path, "images must be [N, C, H, W], got ", images.describe());
  const int64_t N = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  const int64_t scale = std::max<int64_t>(1, 64 / std::max<int64_t>(1, std::max(H, W)));
  Tensor src = images.to(Device::cpu).to(DType::f32).contiguous();
  Tensor big = src;
  if (scale > 1) {
    big = Tensor::empty({N, C, H * scale, W * scale}, DType::f32);
    const float* in = src.data<float>();
    float* out = big.data<float>();
    const int64_t HS = H * scale, WS = W * scale;
    for (int64_t nc = 0; nc < N * C; ++nc)
      for (int64_t y = 0; y < HS; ++y)
        for (int64_t x = 0; x < WS; ++x) out[(nc * HS + y) * WS + x] = in[(nc * H + y / scale) * W + x / scale];
  }
  io::write_png(path, io::tile_images(big, std::max<int64_t>(1, columns), 1, 1.0));
}

void write_noise_grid(const std::string& path, const poison::Poison& p, const std::vector<int64_t>& delta_rows,
                      int64_t columns) {
  CP_CHECK(!delta_rows.empty(), "noise picture " + path, "no noise rows to draw");
  Tensor delta = p.delta.to(Device::cpu).contiguous();
  const int64_t C = delta.size(1), H = delta.size(2), W = delta.size(3), per = C * H * W;
  const float* d = delta.data<float>();
  std::vector<float> tiles(delta_rows.size() * per, 1.0f);  // blank tiles stay white, like the padding
  for (size_t t = 0; t < delta_rows.size(); ++t) {
    int64_t r = delta_rows[t];
    if (r < 0) continue;
    CP_CHECK(r < delta.size(0), "noise picture " + path, "delta row ", r, " outside ", delta.describe());
    for (int64_t j = 0; j < per; ++j) tiles[t * per + j] = (std::clamp(d[r * per + j], -1.0f, 1.0f) + 1.0f) / 2.0f;
  }
  write_tiles_png(path, Tensor::from_vector(tiles, {(int64_t)delta_rows.size(), C, H, W}), columns);
}

void write_poison_overview(const std::string& path, const poison::Poison& p, const data::Dataset& train) {
  std::vector<int64_t> rows;
  if (p.class_wise()) {
    for (int64_t k = 0; k < p.classes; ++k) rows.push_back(k);
    write_noise_grid(path, p, rows, std::min<int64_t>(p.classes, 10));
    return;
  }
  constexpr int64_t per_class = 8;
  for (int64_t k = 0; k < std::max<int64_t>(train.classes, 1); ++k) {
    std::vector<int64_t> of_class = poisoned_rows_of_class(p, train, k, per_class);
    of_class.resize(per_class, -1);
    rows.insert(rows.end(), of_class.begin(), of_class.end());
  }
  write_noise_grid(path, p, rows, per_class);
}

}  // namespace cpoison::tools
