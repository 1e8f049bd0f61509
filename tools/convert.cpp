// `cpoison convert ...`: makes HDF5 dataset files (data/README.md describes the format).
//   cpoison convert imagefolder --input DIR [--test-input DIR] --out FILE.h5 --size 64
//   cpoison convert cifar10 --out FILE.h5 [--root DIR]          (any built-in dataset name)
// `cpoison dataset-info NAME|FILE.h5`: sizes, classes, per-class counts and channel statistics.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "engine/data/dataset.h"
#include "tools/command.h"
#include "tools/common.h"

namespace {

using namespace cpoison;
using namespace cpoison::data;

std::vector<std::string> read_class_list(const std::string& spec) {
  if (spec == "imagenet100") return imagenet100_classes();
  std::ifstream in(spec);
  CP_CHECK(in.good(), spec, "class list file not found (one folder name per line, or 'imagenet100')");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    // Lines may carry a description after the folder name ("n01558993 robin"); '#' starts a comment.
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    std::string first;
    if (words >> first) names.push_back(first);
  }
  CP_CHECK(!names.empty(), spec, "class list is empty");
  return names;
}

std::string file_stem(const std::string& path) {
  std::string base = path.substr(path.rfind('/') + 1);
  return base.substr(0, base.find('.'));
}

std::vector<Split> parse_splits(const std::string& list) {
  std::vector<Split> out;
  std::istringstream in(list);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(parse_split(item));
  CP_CHECK(!out.empty(), "--splits", "no split named in '", list, "'");
  return out;
}

void setup_imagefolder(CLI::App& app) {
  struct Options {
    std::string input, test_input, out, resize = "crop", classes, name;
    int64_t size = 64, limit_per_class = 0;
  };
  auto o = std::make_shared<Options>();
  app.add_option("--input", o->input, "Training images: DIR/<class>/<image>.JPEG (classes sorted by name)")->required();
  app.add_option("--test-input", o->test_input, "Test images in the same layout (then the file holds both splits)");
  app.add_option("--out", o->out, "Output HDF5 file")->required();
  app.add_option("--size", o->size, "Output side in pixels")
      ->check(tools::int_range(1, kMaxImageSide))
      ->capture_default_str();
  app.add_option("--resize", o->resize,
                 "crop: shorter side to SIZE then central crop; stretch: straight to SIZE x SIZE")
      ->check(CLI::IsMember({"crop", "stretch"}))
      ->capture_default_str();
  app.add_option("--classes", o->classes,
                 "Class folders to use, in label order: a text file (one per line) or 'imagenet100'");
  app.add_option("--name", o->name, "Dataset name stored in the file (default: the output file's stem)");
  app.add_option("--limit-per-class", o->limit_per_class, "Use only the first N images (by name) of each class")
      ->check(tools::int_range(0, kMaxAxis));
  app.callback([o] {
    ImageFolderOptions opt;
    opt.size = o->size;
    opt.resize = parse_resize_mode(o->resize);
    opt.limit_per_class = o->limit_per_class;
    if (!o->classes.empty()) opt.classes = read_class_list(o->classes);
    std::string name = o->name.empty() ? file_stem(o->out) : o->name;
    convert_image_folder(o->input, o->test_input, o->out, name, opt, [](int64_t done, int64_t total) {
      std::fprintf(stderr, "\rconverted %lld / %lld images", (long long)done, (long long)total);
      if (done == total) std::fprintf(stderr, "\n");
    });
    std::printf("wrote %s\n", o->out.c_str());
  });
}

void setup_builtin(CLI::App& app, const std::string& dataset) {
  struct Options {
    std::string root, out, splits;
    int64_t pad_to = 0, channels = 0, limit = 0;
  };
  auto o = std::make_shared<Options>();
  o->splits = dataset == "stl10" ? "train,test,unlabeled" : "train,test";
  app.add_option("--root", o->root, "Directory holding the dataset's files (default: see data/README.md)");
  app.add_option("--out", o->out, "Output HDF5 file")->required();
  app.add_option("--splits", o->splits, "Comma-separated splits to copy")->capture_default_str();
  app.add_option("--pad-to", o->pad_to, "Zero-pad images centrally to this side (0: keep)")
      ->check(tools::int_range(0, kMaxImageSide));
  app.add_option("--channels", o->channels, "3: replicate grayscale images to RGB (0: keep)")->check(tools::one_of({0, 1, 3}));
  app.add_option("--limit", o->limit, "Only the first N images of each split (0: all)")->check(tools::int_range(0, kMaxAxis));
  app.callback([o, dataset] {
    LoadOptions opt;
    opt.root = o->root;
    opt.pad_to = o->pad_to;
    opt.channels = o->channels;
    opt.limit = o->limit;
    std::vector<Dataset> loaded;
    std::vector<Split> splits = parse_splits(o->splits);
    for (Split s : splits) {
      loaded.push_back(load_dataset(dataset, s, opt));
      std::printf("%s %s: %lld images\n", dataset.c_str(), split_name(s), (long long)loaded.back().size());
    }
    std::vector<NamedSplit> named;
    for (size_t i = 0; i < splits.size(); ++i) named.push_back({splits[i], &loaded[i]});
    save_datasets_h5(o->out, named);
    std::printf("wrote %s\n", o->out.c_str());
  });
}

void setup_convert(CLI::App& app) {
  app.require_subcommand(1);
  setup_imagefolder(*app.add_subcommand("imagefolder", "Class-folder JPEGs (ImageNet-100 style) to an HDF5 dataset"));
  for (const auto& name : dataset_names())
    setup_builtin(*app.add_subcommand(name, "HDF5 copy of " + name + " (train and test in one file)"), name);
}

void print_info(const Dataset& ds, Split split) {
  std::printf("%s %s: %lld images of %lldx%lldx%lld (HxWxC), %lld classes, from %s\n", ds.name.c_str(),
              split_name(split), (long long)ds.size(), (long long)ds.height(), (long long)ds.width(),
              (long long)ds.channels(), (long long)ds.classes, ds.source.c_str());
  auto counts = class_counts(ds);
  std::printf("  per class:");
  for (size_t c = 0; c < counts.size(); ++c) {
    std::printf(" %lld", (long long)counts[c]);
    if (c < ds.class_names.size() && counts.size() <= 20) std::printf(" (%s)", ds.class_names[c].c_str());
  }
  std::printf("\n");
  // Channel statistics in [0,1], the numbers a Normalize step wants.
  int64_t c = ds.channels(), pixels = ds.size() * ds.height() * ds.width();
  std::vector<double> sum((size_t)c, 0.0), sum2((size_t)c, 0.0);
  const uint8_t* p = ds.images.data<uint8_t>();
  for (int64_t i = 0; i < pixels; ++i)
    for (int64_t k = 0; k < c; ++k) {
      double v = p[i * c + k] / 255.0;
      sum[k] += v;
      sum2[k] += v * v;
    }
  std::printf("  channel mean / std:");
  for (int64_t k = 0; k < c; ++k) {
    double mean = pixels ? sum[k] / pixels : 0.0;
    double var = pixels ? std::max(0.0, sum2[k] / pixels - mean * mean) : 0.0;
    std::printf(" %.4f / %.4f", mean, std::sqrt(var));
  }
  std::printf("\n");
}

void setup_info(CLI::App& app) {
  struct Options {
    std::string name, root, splits = "train,test";
  };
  auto o = std::make_shared<Options>();
  app.add_option("name", o->name, "Dataset name (fashion-mnist, mnist, cifar10, cifar100, stl10) or FILE.h5")->required();
  app.add_option("--root", o->root, "Directory holding the dataset's files");
  app.add_option("--splits", o->splits, "Comma-separated splits to describe")->capture_default_str();
  app.callback([o] {
    LoadOptions opt;
    opt.root = o->root;
    for (Split s : parse_splits(o->splits)) print_info(load_dataset(o->name, s, opt), s);
  });
}

}  // namespace

CPOISON_COMMAND(convert, "Convert datasets (image folders, CIFAR, STL-10, ...) to HDF5 dataset files", setup_convert);
// The macro names the command after a C++ identifier; this one has a hyphen.
static const int cpoison_command_dataset_info =
    ::cpoison::tools::register_command({"dataset-info", "Describe a dataset: sizes, classes, channel statistics", setup_info});
