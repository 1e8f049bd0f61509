// `cpoison import`: poisons made by other tools -> our HDF5 dataset and poison files
// (docs/poison-format.md, "Importing"). Inputs:
//   DIR/               a folder of per-image PNGs named by row (0.png, 1.png, ... or 00001.png),
//                      APBench's layout: the poisoned training images
//   FILE.npy|FILE.npz  uint8 images [N,H,W,C] (or [N,H,W] for grey), or a float delta
//                      [N or K, C,H,W] / [N or K, H,W,C] in the scale --scale names
// Labels, class names and the data fingerprint come from the clean dataset --data names (with
// --subset etc. as for every other command), so the result trains and evaluates like our own.
//   cpoison import apbench/ --data cifar10 --out ue.h5                   (a poisoned dataset)
//   cpoison import apbench/ --data cifar10 --as poison --eps 8/255 --out ue-poison.h5
//   cpoison import delta.npy --data cifar10 --scale pixel --eps 8/255 --out tue.h5   (a poison file)
// Layout letters: N images, K classes, C channels, H rows, W columns.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/io/npy.h"
#include "engine/io/png.h"
#include "poison/apply.h"
#include "tools/command.h"
#include "tools/common.h"

namespace {

using namespace cpoison;
namespace fs = std::filesystem;

struct Options {
  std::string input, out, as = "auto", scale, eps = "8/255", layout = "auto", kind = "auto", key, name, attack = "import";
  bool trust_scale = false;
  tools::DataOptions data;
};

std::string lower(std::string s) {
  for (char& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

std::string shape_text(const Shape& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// ---------------------------------------------------------------- PNG folder

// The poisoned images of a folder of <row>.png files, checked against the clean set: every row
// 0..N-1 present exactly once, no other row, every image H x W. A labels.txt beside them (our
// export writes one) must agree with the clean labels.
Tensor read_png_folder(const std::string& dir, const data::Dataset& clean) {
  const int64_t N = clean.size(), H = clean.height(), W = clean.width(), C = clean.channels();
  std::vector<std::string> path_of((size_t)N);
  int64_t found = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string file = entry.path().filename().string();
    if (lower(entry.path().extension().string()) != ".png") continue;
    const std::string stem = entry.path().stem().string();
    CP_CHECK(!stem.empty() && stem.size() <= 12 && std::all_of(stem.begin(), stem.end(), ::isdigit), entry.path().string(),
             "is not named by a row number (expected <row>.png such as 0.png or 00017.png)");
    const int64_t row = std::stoll(stem);
    CP_CHECK(row < N, entry.path().string(), "row ", row, " is outside the clean training set of ", N,
             " images (", clean.name, ")");
    CP_CHECK(path_of[row].empty(), entry.path().string(), "row ", row, " appears twice (also ", path_of[row], ")");
    path_of[row] = entry.path().string();
    ++found;
  }
  if (found < N) {
    int64_t first = 0;
    while (!path_of[first].empty()) ++first;
    fail(dir, "holds ", found, " PNG images, expected ", N, " (the clean training set ", clean.name,
         "): the first missing is ", first, ".png");
  }
  Tensor images = Tensor::empty({N, H, W, C}, DType::u8);
  uint8_t* dst = images.data<uint8_t>();
  for (int64_t n = 0; n < N; ++n) {
    Tensor im = io::read_png(path_of[n], C);
    CP_CHECK(im.size(0) == H && im.size(1) == W, path_of[n], "is ", im.size(0), "x", im.size(1), ", expected ", H, "x", W,
             " (the clean training images)");
    std::copy(im.data<uint8_t>(), im.data<uint8_t>() + H * W * C, dst + n * H * W * C);
  }
  const fs::path labels_path = fs::path(dir) / "labels.txt";
  if (fs::exists(labels_path)) {
    std::ifstream in(labels_path);
    const std::vector<int64_t> labels = clean.labels.to(Device::cpu).to_vector<int64_t>();
    int64_t value = 0, row = 0;
    while (in >> value) {
      CP_CHECK(row < N, labels_path.string(), "holds more than ", N, " labels");
      CP_CHECK(value == labels[row], labels_path.string(), "label of row ", row, " is ", value, " but the clean set ",
               clean.name, " has ", labels[row], ": the images are in another order or of other data");
      ++row;
    }
    CP_CHECK(row == N && in.eof(), labels_path.string(), "holds ", row, " readable labels, expected ", N);
  }
  return images;
}

// ---------------------------------------------------------------- NumPy arrays

io::NpyArray pick_array(const std::string& path, const std::string& key) {
  if (!io::is_zip_file(path)) {
    CP_CHECK(key.empty(), "--key", "names an array of an .npz; ", path, " is a single .npy array");
    return io::read_npy(path);
  }
  auto arrays = io::read_npz(path);
  CP_CHECK(!arrays.empty(), path, "holds no arrays");
  std::string names;
  for (auto& [n, a] : arrays) names += (names.empty() ? "" : ", ") + n + " " + a.descr + " " + shape_text(a.shape);
  if (!key.empty()) {
    for (auto& [n, a] : arrays)
      if (n == key) return a;
    fail("--key", "no array '", key, "' in ", path, " (it holds: ", names, ")");
  }
  if (arrays.size() == 1) return arrays[0].second;
  for (const char* preferred : {"delta", "noise", "perturbation", "images", "x", "data"})
    for (auto& [n, a] : arrays)
      if (n == preferred) return a;
  fail(path, "holds several arrays (", names, "): name one with --key");
}

// Labels stored beside the array (an npz's "labels" / "y" / "targets") must be the clean ones.
void check_npz_labels(const std::string& path, const data::Dataset& clean) {
  if (!io::is_zip_file(path)) return;
  for (auto& [n, a] : io::read_npz(path)) {
    if (n != "labels" && n != "y" && n != "targets") continue;
    const std::vector<double> got = a.to_doubles(path + " entry " + n);
    const std::vector<int64_t> want = clean.labels.to(Device::cpu).to_vector<int64_t>();
    CP_CHECK((int64_t)got.size() == (int64_t)want.size(), path, "entry ", n, " holds ", got.size(), " labels, the clean set ",
             clean.name, " ", want.size());
    for (size_t i = 0; i < got.size(); ++i)
      CP_CHECK(got[i] == (double)want[i], path, "entry ", n, ": label of row ", i, " is ", got[i], " but the clean set ",
               clean.name, " has ", want[i], ": the rows are in another order or of other data");
  }
}

// A 3- or 4-d array's rows as [R, C, H, W] given the clean image size: "nchw" / "nhwc" / auto
// (whichever matches; both matching is an Error asking for --layout). Returns the layout used.
std::string resolve_layout(const Shape& s, int64_t C, int64_t H, int64_t W, const std::string& layout,
                           const std::string& where) {
  const bool nchw = s.size() == 4 && s[1] == C && s[2] == H && s[3] == W;
  const bool nhwc = (s.size() == 4 && s[1] == H && s[2] == W && s[3] == C) || (s.size() == 3 && C == 1 && s[1] == H && s[2] == W);
  const std::string want = "[rows, " + std::to_string(C) + ", " + std::to_string(H) + ", " + std::to_string(W) +
                           "] (nchw) or [rows, " + std::to_string(H) + ", " + std::to_string(W) + ", " +
                           std::to_string(C) + "] (nhwc)";
  if (layout == "nchw") {
    CP_CHECK(nchw, where, "shape ", shape_text(s), " is not nchw for the clean images: expected ", want);
    return layout;
  }
  if (layout == "nhwc") {
    CP_CHECK(nhwc, where, "shape ", shape_text(s), " is not nhwc for the clean images: expected ", want);
    return layout;
  }
  CP_CHECK(nchw || nhwc, where, "shape ", shape_text(s), " does not fit the clean images (", H, "x", W, "x", C,
           "): expected ", want);
  CP_CHECK(!(nchw && nhwc), where, "shape ", shape_text(s), " reads as both nchw and nhwc: give --layout");
  return nchw ? "nchw" : "nhwc";
}

// ---------------------------------------------------------------- outputs

poison::Poison base_poison(const Options& o, const tools::DataOptions& d, const data::Dataset& clean, double eps) {
  poison::Poison p;
  p.eps = eps;
  p.attack = o.attack;
  p.algorithm = "none";
  p.dataset = d.data;
  p.subset = d.subset;
  p.subset_seed = (int64_t)d.subset_seed;
  p.classes = clean.classes;
  p.image_count = clean.size();
  p.ratio = 1.0;
  p.data_fingerprint = tools::data_fingerprint(clean);
  std::vector<int64_t> all((size_t)clean.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = (int64_t)i;
  p.indices = Tensor::from_vector(all, {clean.size()});
  return p;
}

void save_imported_poison(const Options& o, const tools::DataOptions& d, const data::Dataset& clean, poison::Poison& p,
                          const std::string& how) {
  p.validate("import " + o.input);
  const std::vector<int64_t> rows = clean.rows();
  io::Attrs extra{{"dataset_name", clean.name},
                  {"subset_seed", (int64_t)d.subset_seed},
                  {"pad_to", d.pad_to},
                  {"channels", d.channels},
                  {"data_fingerprint", p.data_fingerprint},
                  {"imported_from", fs::absolute(o.input).string()},
                  {"import", how}};
  tools::save_poison_with_attrs(o.out, p, extra, {{"source_rows", Tensor::from_vector(rows, {(int64_t)rows.size()})}});
}

// The largest |poisoned - clean| in levels, and where.
int64_t max_change(const Tensor& poisoned, const data::Dataset& clean, int64_t& at) {
  Tensor a = clean.images.to(Device::cpu).contiguous();
  const uint8_t *pa = a.data<uint8_t>(), *pb = poisoned.data<uint8_t>();
  int64_t top = 0;
  at = -1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const int64_t d = std::abs((int64_t)pb[i] - (int64_t)pa[i]);
    if (d > top) top = d, at = i;
  }
  return top;
}

void import_images(const Options& o, const tools::DataOptions& d, const data::Dataset& clean, const Tensor& images,
                   double eps) {
  const int64_t H = clean.height(), W = clean.width(), C = clean.channels();
  int64_t at = -1;
  const int64_t change = max_change(images, clean, at);
  auto position = [&](int64_t i) {
    const int64_t n = i / (H * W * C), r = i % (H * W * C);
    return "image " + std::to_string(n) + ", row " + std::to_string(r / (W * C)) + ", column " +
           std::to_string((r / C) % W) + ", channel " + std::to_string(r % C);
  };
  std::fprintf(stderr, "import %s: %lld images %lldx%lldx%lld against %s; largest change %lld levels (%s)\n",
               o.input.c_str(), (long long)clean.size(), (long long)H, (long long)W, (long long)C, d.describe().c_str(),
               (long long)change, at >= 0 ? position(at).c_str() : "no pixel changed");
  const std::string as = o.as == "auto" ? "dataset" : o.as;
  if (as == "dataset") {
    data::Dataset out = clean;
    out.images = images;
    out.name = o.name.empty() ? clean.name + "+" + o.attack : o.name;
    out.source = fs::absolute(o.input).string();
    data::recorded_normalization(clean, out.mean, out.std);  // the clean data's constants, not the poison's
    out.source_rows = clean.rows();
    data::save_dataset_h5(o.out, out, data::Split::train);
    std::printf("imported %s as a dataset: %lld images, name %s; %s\n", o.input.c_str(), (long long)clean.size(),
                out.name.c_str(), o.out.c_str());
    return;
  }
  // As a poison file: delta = (poisoned - clean) / (255 eps), which apply_poison turns back into
  // exactly these images when every change is within floor(255 eps) levels.
  const int64_t radius = (int64_t)std::floor(255.0 * eps + 1e-9);
  CP_CHECK(change <= radius, o.input, "pixel at ", position(at), " moved ", change, " levels, more than eps ",
           tools::format_pixels(eps), " allows (", radius, "): give the poison's --eps, or import it --as dataset");
  const int64_t N = clean.size();
  Tensor a = clean.images.to(Device::cpu).contiguous();
  const uint8_t *pa = a.data<uint8_t>(), *pb = images.data<uint8_t>();
  std::vector<float> delta((size_t)(N * C * H * W));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t hwc = ((n * H + y) * W + x) * C + c;
          delta[((n * C + c) * H + y) * W + x] = (float)(((double)pb[hwc] - (double)pa[hwc]) / (255.0 * eps));
        }
  poison::Poison p = base_poison(o, d, clean, eps);
  p.kind = poison::NoiseKind::sample_wise;
  p.delta = Tensor::from_vector(delta, {N, C, H, W});
  // Float rounding must not move a pixel: check the round trip before writing.
  data::Dataset back = poison::apply_poison(clean, p);
  const Tensor got = back.images.to(Device::cpu).contiguous();
  CP_CHECK(std::equal(pb, pb + images.numel(), got.data<uint8_t>()), "import", "internal: the poison does not reproduce ",
           o.input, " exactly");
  save_imported_poison(o, d, clean, p, "images");
  std::printf("imported %s as a sample-wise poison (eps %s, largest change %lld levels): %s\n", o.input.c_str(),
              tools::format_pixels(eps).c_str(), (long long)change, o.out.c_str());
}

void import_delta(const Options& o, const tools::DataOptions& d, const data::Dataset& clean, const io::NpyArray& a,
                  double eps) {
  const std::string where = o.input;
  const int64_t N = clean.size(), H = clean.height(), W = clean.width(), C = clean.channels(), K = clean.classes;
  CP_CHECK(o.as != "dataset", "--as", "a float delta becomes a poison file (--as poison); apply it with `cpoison export` ",
           "to get the poisoned dataset");
  CP_CHECK(!o.scale.empty(), "--scale", where, " holds a float delta (", a.descr, " ", shape_text(a.shape),
           "): say its scale with --scale unit (values in [-1, 1], pixel noise eps * delta, as cpoison writes), pixel "
           "(the perturbation itself in [0, 1] image units, |delta| <= eps) or levels (in 0..255 units, |delta| <= 255 eps)");
  const std::string layout = resolve_layout(a.shape, C, H, W, o.layout, where);
  const int64_t R = a.shape[0];
  std::string kind = o.kind;
  if (kind == "auto") {
    CP_CHECK(R == N || R == K, where, "has ", R, " rows; expected ", N, " (one per training image: sample-wise) or ", K,
             " (one per class: class-wise)");
    CP_CHECK(!(R == N && R == K), where, "has ", R, " rows, both the image and the class count: give --kind");
    kind = R == N ? "sample" : "class";
  }
  CP_CHECK(kind == "sample" ? R == N : R == K, where, "has ", R, " rows; --kind ", kind, " needs ",
           kind == "sample" ? N : K, kind == "sample" ? " (one per training image)" : " (one per class)");
  std::vector<double> v = a.to_doubles(where);
  double top = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    CP_CHECK(std::isfinite(v[i]), where, "element ", i, " is ", v[i], ": every value must be finite");
    top = std::max(top, std::fabs(v[i]));
  }
  // The range check that catches the wrong --scale.
  double divide = 1.0, limit = 1.0;
  if (o.scale == "unit") divide = 1.0, limit = 1.0;
  else if (o.scale == "pixel") divide = eps, limit = eps;
  else divide = 255.0 * eps, limit = 255.0 * eps;
  const double tolerance = 1e-4 * limit + 1e-6;
  char found[64];
  std::snprintf(found, sizeof found, "%.6g", top);
  CP_CHECK(top <= limit + tolerance, "--scale", "--scale ", o.scale, " allows |delta| <= ", limit, " (eps ",
           tools::format_pixels(eps), "), but ", where, " reaches ", found,
           top <= 1 + 1e-6 ? ": is it unit scale (--scale unit)?" : top <= 255.0 ? ": is it in 0..255 levels (--scale levels)?" : "",
           " (or give the poison's --eps)");
  if (!o.trust_scale && top > 0) {
    // A scale that is too large for the values: pixel noise read as unit scale would be weakened
    // 1/eps times, silently.
    const double next_smaller = o.scale == "unit" ? eps : o.scale == "levels" ? 1.0 : 0.0;
    CP_CHECK(!(next_smaller > 0 && top <= next_smaller * (1 + 1e-4) + 1e-6), "--scale", where, " reaches only ", found,
             " under --scale ", o.scale, ": that looks like ", o.scale == "unit" ? "pixel scale (--scale pixel)" : "unit or pixel scale",
             "; pass --trust-scale to import it as ", o.scale, " anyway");
  }
  std::vector<float> delta((size_t)(R * C * H * W));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          const int64_t from = layout == "nchw" ? ((r * C + c) * H + y) * W + x : ((r * H + y) * W + x) * C + c;
          delta[((r * C + c) * H + y) * W + x] = (float)std::clamp(v[from] / divide, -1.0, 1.0);
        }
  poison::Poison p = base_poison(o, d, clean, eps);
  p.kind = poison::parse_noise_kind(kind, "--kind");
  p.delta = Tensor::from_vector(delta, {R, C, H, W});
  std::fprintf(stderr, "import %s: %s-wise delta %s (%s, %s scale, max |delta| %s) against %s\n", where.c_str(),
               kind.c_str(), shape_text(a.shape).c_str(), layout.c_str(), o.scale.c_str(), found, d.describe().c_str());
  save_imported_poison(o, d, clean, p, "delta, " + o.scale + " scale, " + layout);
  std::printf("imported %s as a %s-wise poison (eps %s): %s\n", where.c_str(), kind.c_str(), tools::format_pixels(eps).c_str(),
              o.out.c_str());
}

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("input", o->input, "A folder of <row>.png images, or an .npy / .npz array")->required();
  tools::add_data_options(app, o->data, /*data_required=*/true);
  app.add_option("--out", o->out, "Output HDF5 file (dataset or poison)")->required();
  app.add_option("--as", o->as, "dataset | poison (default: images -> dataset, a float delta -> poison)")
      ->check(CLI::IsMember({"auto", "dataset", "poison"}))
      ->capture_default_str();
  app.add_option("--scale", o->scale,
                 "A float delta's scale: unit ([-1, 1], noise eps * delta), pixel (|delta| <= eps in [0, 1] image units) "
                 "or levels (|delta| <= 255 eps)")
      ->check(CLI::IsMember({"unit", "pixel", "levels"}));
  app.add_option("--eps", o->eps, "The poison's L-infinity radius in [0, 1] pixels")
      ->check(tools::fraction_range({0, 1, true, false}))
      ->capture_default_str();
  app.add_option("--layout", o->layout, "A delta's layout: auto | nchw | nhwc")
      ->check(CLI::IsMember({"auto", "nchw", "nhwc"}))
      ->capture_default_str();
  app.add_option("--kind", o->kind, "A delta's kind: auto | sample (one row per image) | class (one per class)")
      ->check(CLI::IsMember({"auto", "sample", "class"}))
      ->capture_default_str();
  app.add_option("--key", o->key, "The array of an .npz to import (default: the only one, or delta/noise/images/x)");
  app.add_option("--name", o->name, "The dataset's name attribute (default: <clean name>+<attack>)");
  app.add_option("--attack", o->attack, "The attack's name, recorded in the file")->capture_default_str();
  app.add_flag("--trust-scale", o->trust_scale,
               "Accept a delta whose values look like a smaller scale than --scale says (the range check warns of "
               "pixel-scale noise imported as unit scale)");
  app.callback([o] {
    const double eps = tools::parse_fraction(o->eps, "--eps");
    CP_CHECK(fs::exists(o->input), o->input, "no such file or folder");
    {
      const fs::path parent = fs::path(o->out).parent_path();
      CP_CHECK(parent.empty() || fs::is_directory(parent), "--out", "directory '", parent.string(), "' does not exist");
    }
    data::Dataset clean = tools::load_train(o->data);
    if (fs::is_directory(o->input)) {
      CP_CHECK(o->scale.empty(), "--scale", "applies to a float delta; ", o->input, " is a folder of images");
      import_images(*o, o->data, clean, read_png_folder(o->input, clean), eps);
      return;
    }
    const std::string ext = lower(fs::path(o->input).extension().string());
    CP_CHECK(ext == ".npy" || ext == ".npz", o->input,
             "is neither a folder of PNGs nor an .npy / .npz file (PyTorch .pt files: tools/python/torch_to_h5.py)");
    io::NpyArray a = pick_array(o->input, o->key);
    check_npz_labels(o->input, clean);
    if (a.kind() == 'u' && a.item_size() == 1) {
      CP_CHECK(o->scale.empty(), "--scale", "applies to a float delta; ", o->input, " holds uint8 images");
      const int64_t N = clean.size(), H = clean.height(), W = clean.width(), C = clean.channels();
      const std::string layout = resolve_layout(a.shape, C, H, W, o->layout, o->input);
      CP_CHECK(a.shape[0] == N, o->input, "holds ", a.shape[0], " images, the clean training set ", clean.name, " ", N,
               " (", o->data.describe(), ")");
      Tensor nhwc = Tensor::empty({N, H, W, C}, DType::u8);
      uint8_t* dst = nhwc.data<uint8_t>();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t y = 0; y < H; ++y)
            for (int64_t x = 0; x < W; ++x) {
              const int64_t from = layout == "nchw" ? ((n * C + c) * H + y) * W + x : ((n * H + y) * W + x) * C + c;
              dst[((n * H + y) * W + x) * C + c] = a.bytes[(size_t)from];
            }
      import_images(*o, o->data, clean, nhwc, eps);
      return;
    }
    CP_CHECK(a.kind() == 'f', o->input, "holds ", a.descr, " values: expected uint8 images or a float delta (float16, ",
             "float32 or float64)");
    import_delta(*o, o->data, clean, a, eps);
  });
}

}  // namespace
CPOISON_COMMAND(import, "Import another tool's poison (PNG folder, .npy, .npz) as an HDF5 dataset or poison file", setup);
