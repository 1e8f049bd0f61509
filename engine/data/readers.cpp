// Readers for IDX (MNIST, Fashion-MNIST), CIFAR-10/100 binary and STL-10 binary files.
// Layout letters: N images, H rows, W columns, C channels; output images are u8 [N,H,W,C].
#include "engine/data/readers.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "engine/size.h"

namespace cpoison::data::detail {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

namespace {

int64_t file_size(const std::string& path) {
  struct stat st;
  CP_CHECK(::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode), path, "file not found");
  return (int64_t)st.st_size;
}

// Reads a gzip file, or a plain one (gzread passes uncompressed data through), exactly.
class GzInput {
public:
  explicit GzInput(std::string path) : path_(std::move(path)) {
    CP_CHECK(file_exists(path_), path_, "file not found");
    file_ = gzopen(path_.c_str(), "rb");
    CP_CHECK(file_ != nullptr, path_, "cannot open: ", std::strerror(errno));
    gzbuffer(file_, 1 << 18);
  }
  ~GzInput() {
    if (file_) gzclose(file_);
  }
  GzInput(const GzInput&) = delete;
  GzInput& operator=(const GzInput&) = delete;

  // Fills `n` bytes or raises an Error saying what was being read and where the data ended.
  void read(void* dst, int64_t n, const char* what) {
    char* p = static_cast<char*>(dst);
    int64_t done = 0;
    while (done < n) {
      unsigned chunk = (unsigned)std::min<int64_t>(n - done, 1 << 30);
      int got = gzread(file_, p + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        fail(path_, "corrupt or truncated while reading ", what, " at byte ", position_ + done, ": ", msg, hint(code));
      }
      if (got == 0) break;
      done += got;
    }
    if (done < n) {
      // A truncated gzip stream may report its error only now.
      int code = 0;
      const char* msg = gzerror(file_, &code);
      fail(path_, "truncated: needed ", n, " bytes of ", what, " at byte ", position_, " but found ", done,
           code != Z_OK ? std::string(" (") + msg + ")" + hint(code) : std::string());
    }
    position_ += n;
  }
  // Reads and drops n bytes (the records after `limit`), so that the end of the stream is still
  // checked: a limit must not hide a corrupt or truncated file.
  void skip(int64_t n, const char* what) {
    std::vector<char> scratch((size_t)std::min<int64_t>(n, 1 << 20));
    for (int64_t done = 0; done < n;) {
      const int64_t chunk = std::min<int64_t>(n - done, (int64_t)scratch.size());
      read(scratch.data(), chunk, what);
      done += chunk;
    }
  }
  // After the payload the header declares: the file must end there, and a gzip stream must end
  // with its trailer (CRC-32 and length, which zlib checks when it reaches them). Without this,
  // a stream cut just after the pixels, a wrong CRC or extra bytes would all read as fine.
  void expect_end() {
    char extra = 0;
    const int got = gzread(file_, &extra, 1);
    int code = Z_OK;
    const char* msg = gzerror(file_, &code);
    if (got < 0 || code != Z_OK)
      fail(path_, gzdirect(file_) ? "read error" : "corrupt or truncated gzip stream", " after the ", position_,
           " bytes the header declares: ", msg, hint(code));
    CP_CHECK(got == 0, path_, "holds more data than its header declares (", position_,
             " bytes); truncated header counts or trailing bytes are not this format");
  }
  // What a zlib error code means for a file that should be one complete gzip stream.
  static std::string hint(int code) {
    if (code == Z_BUF_ERROR) return " (the file ends early: truncated, or its gzip trailer with CRC-32 and length is missing)";
    if (code == Z_DATA_ERROR) return " (corrupt data, or the gzip CRC-32 or length check failed)";
    return "";
  }
  uint32_t read_be32(const char* what) {
    unsigned char b[4];
    read(b, 4, what);
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
  }
  const std::string& path() const { return path_; }

private:
  std::string path_;
  gzFile file_ = nullptr;
  int64_t position_ = 0;
};

// Reads the first `records` records of `record_bytes` from a plain binary file after checking
// that it holds a whole number of them.
std::vector<uint8_t> read_records(const std::string& path, int64_t record_bytes, int64_t limit, int64_t* records_out) {
  int64_t bytes = file_size(path);
  CP_CHECK(bytes > 0, path, "empty file");
  CP_CHECK(bytes % record_bytes == 0, path, "truncated or not this format: ", bytes, " bytes is not a whole number of ",
           record_bytes, "-byte records");
  int64_t records = bytes / record_bytes;
  if (limit > 0) records = std::min(records, limit);
  std::vector<uint8_t> buf((size_t)(records * record_bytes));
  std::ifstream in(path, std::ios::binary);
  CP_CHECK(in.good(), path, "cannot open: ", std::strerror(errno));
  in.read(reinterpret_cast<char*>(buf.data()), (std::streamsize)buf.size());
  CP_CHECK(in.gcount() == (std::streamsize)buf.size(), path, "read error after ", (int64_t)in.gcount(), " bytes");
  *records_out = records;
  return buf;
}

std::string join(const std::string& dir, const std::string& file) {
  if (dir.empty() || dir.back() == '/') return dir + file;
  return dir + "/" + file;
}

// A dataset's files live in root, or in the folder its tarball unpacks to inside root.
std::string locate(const std::string& root, const std::string& tar_folder, const std::string& file) {
  std::string direct = join(root, file);
  if (file_exists(direct)) return direct;
  std::string nested = join(join(root, tar_folder), file);
  if (file_exists(nested)) return nested;
  fail(direct, "file not found (also looked for ", nested,
       "; pass the dataset's root directory or set the CPOISON_DATA environment variable, see data/README.md)");
}

std::vector<std::string> read_name_lines(const std::string& path) {
  std::vector<std::string> names;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

// Class names from the tarball's text file when it is there and complete, else built in.
std::vector<std::string> class_names_from(const std::string& root, const std::string& tar_folder, const std::string& file,
                                          const std::vector<std::string>& builtin) {
  for (const auto& p : {join(root, file), join(join(root, tar_folder), file)}) {
    if (!file_exists(p)) continue;
    auto names = read_name_lines(p);
    if (names.size() == builtin.size()) return names;
  }
  return builtin;
}

const std::vector<std::string> kFashionNames = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
const std::vector<std::string> kDigitNames = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
const std::vector<std::string> kCifar10Names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                "dog",      "frog",       "horse", "ship", "truck"};
const std::vector<std::string> kStl10Names = {"airplane", "bird", "car", "cat", "deer",
                                              "dog",      "horse", "monkey", "ship", "truck"};
const std::vector<std::string> kCifar100Names = {
    "apple",      "aquarium_fish", "baby",     "bear",       "beaver",    "bed",         "bee",        "beetle",
    "bicycle",    "bottle",        "bowl",     "boy",        "bridge",    "bus",         "butterfly",  "camel",
    "can",        "castle",        "caterpillar", "cattle",  "chair",     "chimpanzee",  "clock",      "cloud",
    "cockroach",  "couch",         "crab",     "crocodile",  "cup",       "dinosaur",    "dolphin",    "elephant",
    "flatfish",   "forest",        "fox",      "girl",       "hamster",   "house",       "kangaroo",   "keyboard",
    "lamp",       "lawn_mower",    "leopard",  "lion",       "lizard",    "lobster",     "man",        "maple_tree",
    "motorcycle", "mountain",      "mouse",    "mushroom",   "oak_tree",  "orange",      "orchid",     "otter",
    "palm_tree",  "pear",          "pickup_truck", "pine_tree", "plain",  "plate",       "poppy",      "porcupine",
    "possum",     "rabbit",        "raccoon",  "ray",        "road",      "rocket",      "rose",       "sea",
    "seal",       "shark",         "shrew",    "skunk",      "skyscraper", "snail",      "snake",      "spider",
    "squirrel",   "streetcar",     "sunflower", "sweet_pepper", "table",  "tank",        "telephone",  "television",
    "tiger",      "tractor",       "train",    "trout",      "tulip",     "turtle",      "wardrobe",   "whale",
    "willow_tree", "wolf",         "woman",    "worm"};

// CIFAR pixels: 1024 R, 1024 G, 1024 B planes, each 32x32 row-major -> [32,32,3].
void cifar_planes_to_hwc(const uint8_t* src, uint8_t* dst) {
  for (int64_t y = 0; y < 32; ++y)
    for (int64_t x = 0; x < 32; ++x)
      for (int64_t c = 0; c < 3; ++c) dst[(y * 32 + x) * 3 + c] = src[c * 1024 + y * 32 + x];
}

}  // namespace

void check_labels(const Tensor& labels, int64_t classes, const std::string& file, bool allow_unlabeled) {
  const int64_t* l = labels.data<int64_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    if (allow_unlabeled && l[i] == -1) continue;
    CP_CHECK(l[i] >= 0 && l[i] < classes, file, "label ", l[i], " of image ", i, " is out of range [0, ", classes, ")");
  }
}

Tensor read_idx_images(const std::string& path, int64_t limit, int64_t* stored) {
  GzInput in(path);
  uint32_t magic = in.read_be32("the magic number");
  CP_CHECK(magic == 0x00000803, path, "bad magic number 0x", [&] {
    char b[16];
    std::snprintf(b, sizeof b, "%08x", magic);
    return std::string(b);
  }(), ": an IDX image file starts with 0x00000803 (unsigned bytes, 3 dimensions)");
  int64_t n = in.read_be32("the image count"), h = in.read_be32("the row count"), w = in.read_be32("the column count");
  CP_CHECK(n > 0, path, "the header declares no images (count 0)");
  CP_CHECK(h > 0 && w > 0 && h <= kMaxImageSide && w <= kMaxImageSide, path, "implausible image size ", h, "x", w,
           " (rows and columns must be in [1, ", kMaxImageSide, "])");
  const int64_t stored_pixels = checked_numel({n, h, w}, path + ": the header's image count x rows x columns");
  if (stored) *stored = n;
  const int64_t kept = limit > 0 ? std::min(n, limit) : n;
  check_allocation((uint64_t)(kept * h * w), path + ": " + std::to_string(kept) + " images of " + std::to_string(h) + "x" +
                                                 std::to_string(w));
  Tensor images = Tensor::empty({kept, h, w, 1}, DType::u8);
  in.read(images.data<uint8_t>(), kept * h * w, "the pixels");
  in.skip(stored_pixels - kept * h * w, "the pixels");
  in.expect_end();
  return images;
}

Tensor read_idx_labels(const std::string& path, int64_t limit, int64_t* stored) {
  GzInput in(path);
  uint32_t magic = in.read_be32("the magic number");
  CP_CHECK(magic == 0x00000801, path, "bad magic number 0x", [&] {
    char b[16];
    std::snprintf(b, sizeof b, "%08x", magic);
    return std::string(b);
  }(), ": an IDX label file starts with 0x00000801 (unsigned bytes, 1 dimension)");
  const int64_t stored_count = in.read_be32("the label count");
  CP_CHECK(stored_count > 0, path, "the header declares no labels (count 0)");
  if (stored) *stored = stored_count;
  const int64_t n = limit > 0 ? std::min(stored_count, limit) : stored_count;
  std::vector<uint8_t> raw((size_t)n);
  in.read(raw.data(), n, "the labels");
  in.skip(stored_count - n, "the labels");
  in.expect_end();
  Tensor labels = Tensor::empty({n}, DType::i64);
  int64_t* l = labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) l[i] = raw[i];
  return labels;
}

Dataset read_mnist_like(const std::string& name, const std::string& root, Split split, int64_t limit) {
  CP_CHECK(split != Split::unlabeled, name, "has no unlabeled split");
  std::string prefix = split == Split::train ? "train" : "t10k";
  // The Debian package and the original site ship .gz files; an unpacked copy works too.
  auto find = [&](const std::string& base) {
    std::string gz = join(root, base + ".gz");
    if (file_exists(gz)) return gz;
    if (file_exists(join(root, base))) return join(root, base);
    fail(gz, "file not found (nor ", base, "; pass the dataset's root directory or set the CPOISON_DATA ",
         "environment variable, see data/README.md)");
  };
  std::string image_path = find(prefix + "-images-idx3-ubyte");
  std::string label_path = find(prefix + "-labels-idx1-ubyte");
  Dataset ds;
  int64_t stored_images = 0, stored_labels = 0;
  ds.images = read_idx_images(image_path, limit, &stored_images);
  ds.labels = read_idx_labels(label_path, limit, &stored_labels);
  CP_CHECK(stored_images == stored_labels, label_path, "holds ", stored_labels, " labels but ", image_path, " holds ",
           stored_images, " images");
  ds.classes = 10;
  check_labels(ds.labels, ds.classes, label_path);
  ds.name = name;
  ds.class_names = name == "mnist" ? kDigitNames : kFashionNames;
  ds.source = image_path;
  return ds;
}

Dataset read_cifar10(const std::string& root, Split split, int64_t limit) {
  CP_CHECK(split != Split::unlabeled, "cifar10", "has no unlabeled split");
  std::vector<std::string> files;
  if (split == Split::train)
    for (int b = 1; b <= 5; ++b) files.push_back("data_batch_" + std::to_string(b) + ".bin");
  else
    files.push_back("test_batch.bin");
  constexpr int64_t kRecord = 1 + 3072;
  std::vector<std::string> paths;
  for (const auto& f : files) paths.push_back(locate(root, "cifar-10-batches-bin", f));

  std::vector<uint8_t> pixels, labels;
  for (const auto& p : paths) {
    int64_t want = limit > 0 ? limit - (int64_t)labels.size() : 0;
    if (limit > 0 && want <= 0) break;
    int64_t records = 0;
    auto buf = read_records(p, kRecord, want, &records);
    size_t base = labels.size();
    labels.resize(base + records);
    pixels.resize((base + records) * 3072);
    for (int64_t r = 0; r < records; ++r) {
      const uint8_t* rec = buf.data() + r * kRecord;
      CP_CHECK(rec[0] < 10, p, "label ", (int)rec[0], " of record ", r, " is out of range [0, 10)");
      labels[base + r] = rec[0];
      cifar_planes_to_hwc(rec + 1, pixels.data() + (base + r) * 3072);
    }
  }
  int64_t n = (int64_t)labels.size();
  Dataset ds;
  ds.images = Tensor::from_vector(pixels, {n, 32, 32, 3});
  ds.labels = Tensor::from_vector(std::vector<int64_t>(labels.begin(), labels.end()), {n});
  ds.classes = 10;
  ds.name = "cifar10";
  ds.class_names = class_names_from(root, "cifar-10-batches-bin", "batches.meta.txt", kCifar10Names);
  ds.source = paths.front().substr(0, paths.front().rfind('/'));
  return ds;
}

Dataset read_cifar100(const std::string& root, Split split, int64_t limit) {
  CP_CHECK(split != Split::unlabeled, "cifar100", "has no unlabeled split");
  std::string path = locate(root, "cifar-100-binary", split == Split::train ? "train.bin" : "test.bin");
  constexpr int64_t kRecord = 2 + 3072;
  int64_t n = 0;
  auto buf = read_records(path, kRecord, limit, &n);
  Tensor images = Tensor::empty({n, 32, 32, 3}, DType::u8);
  Tensor labels = Tensor::empty({n}, DType::i64);
  uint8_t* px = images.data<uint8_t>();
  int64_t* l = labels.data<int64_t>();
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* rec = buf.data() + r * kRecord;
    // rec[0] is the coarse (superclass) label, rec[1] the fine label we train on.
    CP_CHECK(rec[0] < 20, path, "coarse label ", (int)rec[0], " of record ", r, " is out of range [0, 20)");
    CP_CHECK(rec[1] < 100, path, "fine label ", (int)rec[1], " of record ", r, " is out of range [0, 100)");
    l[r] = rec[1];
    cifar_planes_to_hwc(rec + 2, px + r * 3072);
  }
  Dataset ds;
  ds.images = images;
  ds.labels = labels;
  ds.classes = 100;
  ds.name = "cifar100";
  ds.class_names = class_names_from(root, "cifar-100-binary", "fine_label_names.txt", kCifar100Names);
  ds.source = path;
  return ds;
}

Dataset read_stl10(const std::string& root, Split split, int64_t limit) {
  std::string stem = split == Split::train ? "train" : split == Split::test ? "test" : "unlabeled";
  std::string image_path = locate(root, "stl10_binary", stem + "_X.bin");
  constexpr int64_t kSide = 96, kImage = kSide * kSide * 3;
  int64_t n = 0;
  auto buf = read_records(image_path, kImage, limit, &n);
  Tensor images = Tensor::empty({n, kSide, kSide, 3}, DType::u8);
  uint8_t* px = images.data<uint8_t>();
  // Each channel plane is column-major (written from MATLAB): byte c*9216 + x*96 + y.
#pragma omp parallel for schedule(static) if (n > 64)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* src = buf.data() + i * kImage;
    uint8_t* dst = px + i * kImage;
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t x = 0; x < kSide; ++x)
        for (int64_t y = 0; y < kSide; ++y) dst[(y * kSide + x) * 3 + c] = src[c * kSide * kSide + x * kSide + y];
  }
  Tensor labels = Tensor::full({n}, -1.0, DType::i64);
  if (split != Split::unlabeled) {
    std::string label_path = locate(root, "stl10_binary", stem + "_y.bin");
    int64_t available = 0;
    auto raw = read_records(label_path, 1, 0, &available);
    int64_t images_in_file = file_size(image_path) / kImage;
    CP_CHECK(available == images_in_file, label_path, "holds ", available, " labels but ", image_path, " holds ",
             images_in_file, " images");
    int64_t* l = labels.data<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      // Stored 1..10; we use 0..9.
      CP_CHECK(raw[i] >= 1 && raw[i] <= 10, label_path, "label ", (int)raw[i], " of image ", i,
               " is out of range [1, 10]");
      l[i] = raw[i] - 1;
    }
  }
  Dataset ds;
  ds.images = images;
  ds.labels = labels;
  ds.classes = 10;
  ds.name = "stl10";
  ds.class_names = class_names_from(root, "stl10_binary", "class_names.txt", kStl10Names);
  ds.source = image_path;
  return ds;
}

}  // namespace cpoison::data::detail
