// `cpoison export`: turns a poison file into what a victim or another toolkit consumes
// (docs/poison-format.md):
//   DIR/poisoned_train.h5    our HDF5 dataset format, the training set as the victim sees it (u8)
//   DIR/poisoned_train.bin   the same images as CIFAR-10 binary records
//   DIR/noise_class_<k>.png  the noise of class k, amplified to the full range
//   DIR/samples.png          clean | poisoned | amplified difference, for a few poisoned images
//   DIR/export.json          what the files are and which poison and data made them
//   --format picks the data files: h5, cifar-bin (32x32x3 data only), png-dir (DIR/poisoned_png/
//   <row>.png, APBench's layout), npz (DIR/poisoned_train.npz: images, labels, source_rows, delta,
//   indices, eps); default h5, plus cifar-bin when the images are 32x32x3.
//   cpoison export cpc.h5 --out cpc-export                (data from the poison file)
//   cpoison export cpc.h5 --data ~/cifar10.h5 --out dir   (the same data moved elsewhere)
// Layout letters: N images, C channels, H rows, W columns.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
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
  std::string poison, out, format = "auto";
  bool ignore_fingerprint = false;
  tools::DataOptions data;
};

// Integer attribute or `fallback`.
int64_t attr_int_or(const io::Attrs& a, const std::string& key, int64_t fallback) {
  auto it = a.find(key);
  if (it == a.end()) return fallback;
  if (auto* i = std::get_if<int64_t>(&it->second)) return *i;
  if (auto* d = std::get_if<double>(&it->second)) return (int64_t)*d;
  return fallback;
}
std::string attr_string_or(const io::Attrs& a, const std::string& key, const std::string& fallback) {
  auto it = a.find(key);
  if (it == a.end()) return fallback;
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  return fallback;
}

// Data flags given on the command line must agree with what the poison was made for; --data may
// name another path only when its images are provably the same (the recorded fingerprint).
// With --ignore-fingerprint a disagreement is a warning.
void check_data_agrees(const tools::DataOptions& given, const io::Attrs& recorded, const std::string& poison_path,
                       const std::string& fingerprint, bool ignore) {
  const std::string where = "export";
  auto check_or_warn = [&](bool ok, const std::string& message) {
    if (ok) return;
    CP_CHECK(ignore, where, message);
    std::fprintf(stderr, "warning: %s (--ignore-fingerprint)\n", message.c_str());
  };
  const struct {
    const char* flag;
    const char* key;
    int64_t value;
  } fields[] = {{"--subset", "subset", given.subset},
                {"--subset-seed", "subset_seed", (int64_t)given.subset_seed},
                {"--pad-to", "pad_to", given.pad_to},
                {"--channels", "channels", given.channels}};
  for (const auto& f : fields) {
    if (!given.given(f.flag) || !recorded.count(f.key)) continue;
    int64_t made_for = attr_int_or(recorded, f.key, 0);
    check_or_warn(f.value == made_for, std::string(f.flag) + " " + std::to_string(f.value) +
                                              " disagrees with the poison file " + poison_path + ", made for " + f.key +
                                              " " + std::to_string(made_for) +
                                              " (leave the flag out to use the poison's data)");
  }
  const std::string recorded_data = attr_string_or(recorded, "dataset", "");
  if (given.given("--data") && given.data != recorded_data)
    check_or_warn(!fingerprint.empty(), "--data " + given.data + " disagrees with the poison file " + poison_path +
                                               ", made for dataset '" + recorded_data + "' (leave --data out to use it)");
}

// The data files --format asks for ("auto": h5, plus cifar-bin for 32x32x3 images).
struct Formats {
  bool h5 = false, cifar_bin = false, png_dir = false, npz = false;
};
Formats parse_formats(const std::string& text, const data::Dataset& ds) {
  Formats f;
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = text.find(',', at);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(at, comma - at);
    at = comma + 1;
    const bool cifar_shape = ds.height() == 32 && ds.width() == 32 && ds.channels() == 3;
    if (item == "auto") f.h5 = true, f.cifar_bin = f.cifar_bin || cifar_shape;
    else if (item == "h5" || item == "hdf5") f.h5 = true;
    else if (item == "cifar-bin" || item == "bin") {
      // Records of another size (785 bytes for Fashion-MNIST) are read by no CIFAR reader.
      CP_CHECK(cifar_shape, "--format", "cifar-bin writes CIFAR-10 records of 32x32x3 images; these images are ",
               ds.height(), "x", ds.width(), "x", ds.channels(),
               " (a poison made for --pad-to 32 --channels 3 data exports as CIFAR binary; otherwise use h5, png-dir "
               "or npz)");
      f.cifar_bin = true;
    } else if (item == "png-dir" || item == "png") f.png_dir = true;
    else if (item == "npz") f.npz = true;
    else fail("--format", "unknown format '", item, "' in '", text, "' (auto, h5, cifar-bin, png-dir, npz, comma-separated)");
  }
  return f;
}

// APBench's layout: DIR/<row>.png per training image (grey or RGB), plus labels.txt (one label
// per line, in row order) so that the folder stands alone.
void write_png_dir(const std::string& dir, const data::Dataset& ds) {
  fs::create_directories(dir);
  Tensor images = ds.images.to(Device::cpu).contiguous();
  const int64_t N = ds.size(), H = ds.height(), W = ds.width(), C = ds.channels();
  for (int64_t n = 0; n < N; ++n)
    io::write_png((fs::path(dir) / (std::to_string(n) + ".png")).string(), images.slice0(n, n + 1).reshape({H, W, C}));
  const std::string labels_path = (fs::path(dir) / "labels.txt").string(), tmp = labels_path + ".tmp";
  std::ofstream out(tmp, std::ios::trunc);
  CP_CHECK(out.good(), "export", "cannot open ", tmp, " for writing");
  for (int64_t l : ds.labels.to(Device::cpu).to_vector<int64_t>()) out << l << "\n";
  out.close();
  CP_CHECK(out.good(), "export", "writing ", tmp, " failed");
  fs::rename(tmp, labels_path);
}

// CIFAR-10 binary records: per image one label byte, then C*H*W bytes, channel by channel, each
// channel row by row (CIFAR-10's R plane, G plane, B plane). Written to path.tmp, then renamed.
void write_cifar_binary(const std::string& path, const data::Dataset& ds) {
  const std::string where = "export " + path;
  CP_CHECK(ds.height() == 32 && ds.width() == 32 && ds.channels() == 3, where,
           "CIFAR-10 binary records hold 32x32x3 images, not ", ds.height(), "x", ds.width(), "x", ds.channels());
  Tensor images = ds.images.to(Device::cpu).contiguous();
  std::vector<int64_t> labels = ds.labels.to(Device::cpu).to_vector<int64_t>();
  const int64_t N = ds.size(), H = ds.height(), W = ds.width(), C = ds.channels();
  const uint8_t* px = images.data<uint8_t>();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    CP_CHECK(out.good(), where, "cannot open ", tmp, " for writing");
    std::vector<char> record(1 + C * H * W);
    for (int64_t n = 0; n < N; ++n) {
      CP_CHECK(labels[n] >= 0 && labels[n] <= 255, where, "label ", labels[n], " of image ", n,
               " does not fit the one-byte label of the CIFAR-10 binary format");
      record[0] = (char)(uint8_t)labels[n];
      const uint8_t* im = px + n * H * W * C;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) record[1 + (c * H + y) * W + x] = (char)im[(y * W + x) * C + c];
      out.write(record.data(), (std::streamsize)record.size());
    }
    out.close();
    CP_CHECK(out.good(), where, "writing ", tmp, " failed (disk full?)");
  }
  fs::rename(tmp, path);
}

// Rows: clean image | poisoned image | (poisoned - clean) / (2 eps) + 1/2, for up to `count`
// poisoned images (lowest indices first).
int64_t write_samples(const std::string& path, const data::Dataset& clean, const data::Dataset& poisoned,
                      const poison::Poison& p, int64_t count) {
  std::vector<int64_t> rows = p.indices.to_vector<int64_t>();
  if ((int64_t)rows.size() > count) rows.resize(count);
  const int64_t H = clean.height(), W = clean.width(), C = clean.channels(), per = C * H * W;
  Tensor a = clean.images.to(Device::cpu).contiguous(), b = poisoned.images.to(Device::cpu).contiguous();
  const uint8_t *pa = a.data<uint8_t>(), *pb = b.data<uint8_t>();
  std::vector<float> tiles(rows.size() * 3 * per);
  for (size_t r = 0; r < rows.size(); ++r) {
    const uint8_t *ia = pa + rows[r] * per, *ib = pb + rows[r] * per;
    float* t = tiles.data() + r * 3 * per;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          int64_t hwc = (y * W + x) * C + c, chw = (c * H + y) * W + x;
          double diff = ((double)ib[hwc] - (double)ia[hwc]) / 255.0 / p.eps;
          t[chw] = (float)ia[hwc] / 255.0f;
          t[per + chw] = (float)ib[hwc] / 255.0f;
          t[2 * per + chw] = (float)((std::clamp(diff, -1.0, 1.0) + 1.0) / 2.0);
        }
  }
  tools::write_tiles_png(path, Tensor::from_vector(tiles, {(int64_t)rows.size() * 3, C, H, W}), 3);
  return (int64_t)rows.size();
}

void setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("poison", o->poison, "Poison file (HDF5) made by `cpoison poison`")->required();
  tools::add_data_options(app, o->data);
  app.footer("Data flags default to those recorded in the poison file; a flag given must agree with them.");
  app.add_option("--out", o->out, "Output directory (created when missing)")->required();
  app.add_option("--format", o->format,
                 "Data files, comma-separated: h5, cifar-bin (32x32x3 images only), png-dir (poisoned_png/<row>.png, "
                 "APBench's layout), npz (poisoned_train.npz); auto: h5, plus cifar-bin for 32x32x3 images")
      ->capture_default_str();
  app.add_flag("--ignore-fingerprint", o->ignore_fingerprint,
               "Apply the poison even to images whose fingerprint differs from the one it records (warns)");

  app.callback([o] {
    const auto t0 = std::chrono::steady_clock::now();
    poison::Poison p = poison::load_poison(o->poison);
    const io::Attrs recorded = io::H5Reader(o->poison).file_attrs();
    const std::string fingerprint = attr_string_or(recorded, "data_fingerprint", "");
    check_data_agrees(o->data, recorded, o->poison, fingerprint, o->ignore_fingerprint);
    tools::DataOptions d = o->data.with_recorded(recorded);
    CP_CHECK(!d.data.empty(), "export", "the poison file ", o->poison, " names no dataset; give --data");

    data::Dataset clean = tools::load_train(d);
    poison::check_fingerprint(p, clean, o->poison, o->ignore_fingerprint);
    data::Dataset poisoned = poison::apply_poison(clean, p);
    poisoned.source_rows = clean.rows();  // always recorded: the row of each image in its split
    const Formats formats = parse_formats(o->format, clean);

    fs::create_directories(o->out);
    const fs::path dir(o->out);
    const int64_t N = clean.size(), H = clean.height(), W = clean.width(), C = clean.channels();
    nlohmann::json files = nlohmann::json::array();

    const std::string quantised =
        "the training set as the victim sees it: poisoned rows quantised to u8 as round(255 * clamp(x + eps * "
        "delta, 0, 1)) clipped to the eps ball (docs/poison-format.md), the other rows unchanged";
    if (formats.h5) {
      data::save_dataset_h5((dir / "poisoned_train.h5").string(), poisoned, data::Split::train);
      files.push_back({{"name", "poisoned_train.h5"},
                       {"format", "cpoison HDF5 dataset: /images u8 [N,H,W,C], /labels i64 [N], /source_rows i64 [N]; "
                                  "attributes name, classes, source, class_names, mean, std, split"},
                       {"shape", {N, H, W, C}},
                       {"description", quantised}});
    }
    if (formats.npz) {
      const std::vector<int64_t> rows = poisoned.rows();
      io::write_npz((dir / "poisoned_train.npz").string(),
                    {{"images", poisoned.images.to(Device::cpu).contiguous()},
                     {"labels", poisoned.labels.to(Device::cpu).contiguous()},
                     {"source_rows", Tensor::from_vector(rows, {(int64_t)rows.size()})},
                     {"delta", p.delta.to(Device::cpu).contiguous()},
                     {"indices", p.indices.to(Device::cpu).contiguous()},
                     {"eps", Tensor::scalar(p.eps, DType::f64)}});
      files.push_back({{"name", "poisoned_train.npz"},
                       {"format", "NumPy .npz (np.load): images u8 [N,H,W,C], labels i64 [N], source_rows i64 [N], "
                                  "delta f32 [N or K,C,H,W] unit scale, indices i64 [M], eps f64 []"},
                       {"shape", {N, H, W, C}},
                       {"description", quantised + "; delta, indices and eps are the poison file's"}});
    }
    if (formats.png_dir) {
      write_png_dir((dir / "poisoned_png").string(), poisoned);
      files.push_back({{"name", "poisoned_png/"},
                       {"format", "one PNG per training image named by its row (0.png, 1.png, ...), grey or RGB, and "
                                  "labels.txt (one label per line, row order): APBench's layout"},
                       {"images", N},
                       {"description", quantised}});
    }
    if (formats.cifar_bin) {
    write_cifar_binary((dir / "poisoned_train.bin").string(), poisoned);
    files.push_back({{"name", "poisoned_train.bin"},
                     {"format", "CIFAR-10 binary records: 1 label byte, then C*H*W pixel bytes channel by channel, "
                                "each channel row by row"},
                     {"records", N},
                     {"record_bytes", 1 + C * H * W},
                     {"image", {{"channels", C}, {"height", H}, {"width", W}}},
                     {"description", "the same images and labels as poisoned_train.h5, in the same order"}});
    }

    nlohmann::json noise_files = nlohmann::json::array();
    for (int64_t k = 0; k < clean.classes; ++k) {
      std::vector<int64_t> rows;
      if (p.class_wise()) rows = {k};
      else rows = tools::poisoned_rows_of_class(p, clean, k, 64);
      if (rows.empty()) continue;  // no poisoned image of this class (ratio < 1)
      std::string name = "noise_class_" + std::to_string(k) + ".png";
      tools::write_noise_grid((dir / name).string(), p, rows, 8);
      noise_files.push_back({{"name", name}, {"class", k}, {"tiles", rows.size()}});
    }
    files.push_back({{"name", "noise_class_<k>.png"},
                     {"format", "PNG"},
                     {"description", p.class_wise() ? "the class's noise pattern, amplified: (delta + 1) / 2"
                                                    : "the noise of the class's first (up to 64) poisoned images, 8 per "
                                                      "row, amplified: (delta + 1) / 2"},
                     {"files", noise_files}});

    int64_t shown = write_samples((dir / "samples.png").string(), clean, poisoned, p, 8);
    files.push_back({{"name", "samples.png"},
                     {"format", "PNG"},
                     {"rows", shown},
                     {"description", "one poisoned image per row: clean | poisoned (u8) | difference amplified to the "
                                     "full range, (poisoned - clean) / (2 * eps) + 1/2"}});

    nlohmann::json manifest{
        {"poison",
         {{"file", o->poison},
          {"attack", p.attack},
          {"kind", poison::noise_kind_name(p.kind)},
          {"algorithm", p.algorithm},
          {"dual_branch", p.dual_branch},
          {"eps", p.eps},
          {"eps_pixels", tools::format_pixels(p.eps)},
          {"ratio", p.ratio},
          {"poisoned_images", p.indices.numel()},
          {"rounds_done", p.rounds_done},
          {"rounds_total", p.rounds_total},
          {"seed", p.seed}}},
        {"data",
         {{"dataset", d.data},
          {"name", clean.name},
          {"subset", d.subset},
          {"subset_seed", d.subset_seed},
          {"pad_to", d.pad_to},
          {"channels", d.channels},
          {"images", N},
          {"classes", clean.classes},
          {"height", H},
          {"width", W},
          {"image_channels", C},
          {"fingerprint", tools::data_fingerprint(clean)}}},
        {"files", files},
        {"software", std::string("cpoison ") + CPOISON_VERSION}};
    {
      const std::string json_path = (dir / "export.json").string(), tmp = json_path + ".tmp";
      std::ofstream out(tmp, std::ios::trunc);
      CP_CHECK(out.good(), "export", "cannot open ", tmp, " for writing");
      out << manifest.dump(2) << "\n";
      out.close();
      CP_CHECK(out.good(), "export", "writing ", tmp, " failed");
      fs::rename(tmp, json_path);
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("exported %s (%s, %s-wise, eps %s) applied to %s: %lld images %lldx%lldx%lld, %lld poisoned, "
                "%zu noise pictures, %.1f s; in %s\n",
                o->poison.c_str(), p.attack.c_str(), poison::noise_kind_name(p.kind),
                tools::format_pixels(p.eps).c_str(), d.describe().c_str(), (long long)N, (long long)H, (long long)W,
                (long long)C, (long long)p.indices.numel(), noise_files.size(), secs, o->out.c_str());
  });
}

}  // namespace
CPOISON_COMMAND(export, "Export a poisoned training set (HDF5, CIFAR-10 binary, noise PNGs, export.json)", setup);
