// Image folders (ImageNet-100 style) to HDF5 dataset files: JPEG/PNG decoding, a PIL-style
// bilinear resize, and a streaming converter.
// Layout letters: H rows, W columns, C channels; single images are u8 [H,W,C], datasets
// u8 [N,H,W,C].
#include <cstddef>
#include <cstdio>
// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>

#include "engine/data/dataset.h"
#include "engine/data/readers.h"
#include "engine/io/hdf5.h"

namespace cpoison::data {

namespace fs = std::filesystem;

const std::vector<std::string>& imagenet100_classes() {
  static const std::vector<std::string> wnids = {
      "n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831", "n04517823", "n04589890",
      "n03062245", "n01773797", "n01735189", "n07831146", "n07753275", "n03085013", "n04485082", "n02105505",
      "n01983481", "n02788148", "n03530642", "n04435653", "n02086910", "n02859443", "n13040303", "n03594734",
      "n02085620", "n02099849", "n01558993", "n04493381", "n02109047", "n04111531", "n02877765", "n04429376",
      "n02009229", "n01978455", "n02106550", "n01820546", "n01692333", "n07714571", "n02974003", "n02114855",
      "n03785016", "n03764736", "n03775546", "n02087046", "n07836838", "n04099969", "n04592741", "n03891251",
      "n02701002", "n03379051", "n02259212", "n07715103", "n03947888", "n04026417", "n02326432", "n03637318",
      "n01980166", "n02113799", "n02086240", "n03903868", "n02483362", "n04127249", "n02089973", "n03017168",
      "n02093428", "n02804414", "n02396427", "n04418357", "n02172182", "n01729322", "n02113978", "n03787032",
      "n02089867", "n02119022", "n03777754", "n04238763", "n02231487", "n03032252", "n02138441", "n02104029",
      "n03837869", "n03494278", "n04136333", "n03794056", "n03492542", "n02018207", "n04067472", "n03930630",
      "n03584829", "n02123045", "n04229816", "n02100583", "n03642806", "n04336792", "n03259280", "n02116738",
      "n02108089", "n03424325", "n01855672", "n02090622"};
  return wnids;
}

ResizeMode parse_resize_mode(const std::string& s) {
  if (s == "crop") return ResizeMode::crop;
  if (s == "stretch") return ResizeMode::stretch;
  fail("resize", "unknown resize mode '", s, "' (crop or stretch)");
}

namespace {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  CP_CHECK(in.good(), path, "cannot open: ", std::strerror(errno));
  std::streamsize size = in.tellg();
  in.seekg(0);
  std::vector<uint8_t> bytes((size_t)std::max<std::streamsize>(size, 0));
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  CP_CHECK(in.gcount() == size, path, "read error");
  return bytes;
}

// libjpeg reports fatal errors through error_exit, which must not return; we longjmp back
// to the decoder (C++ exceptions must not unwind through the C library's frames).
struct JpegErrorManager {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_on_message(j_common_ptr cinfo, int level) {
  // Warnings (level -1) such as "extraneous bytes before marker" are harmless and common in
  // ImageNet; a premature end of data is not: it leaves the rest of the image grey.
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) err->truncated = true;
}

// All objects with destructors live in the caller, so the longjmp skips none of them.
bool decode_jpeg_bytes(const std::vector<uint8_t>& bytes, std::vector<uint8_t>* pixels, int64_t* h, int64_t* w,
                       JpegErrorManager* err) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = jpeg_on_error;
  err->mgr.emit_message = jpeg_on_message;
  err->truncated = false;
  err->message[0] = 0;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), (unsigned long)bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;  // grayscale is expanded to RGB by libjpeg
  jpeg_start_decompress(&cinfo);
  *h = cinfo.output_height;
  *w = cinfo.output_width;
  int comps = cinfo.output_components;
  pixels->resize((size_t)(*h * *w * 3));
  JSAMPARRAY row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, cinfo.output_width * comps, 1);
  // Photoshop (Adobe marker) stores CMYK inverted: the byte is 255 - ink.
  bool inverted = cinfo.saw_Adobe_marker;
  while (cinfo.output_scanline < cinfo.output_height) {
    int64_t y = cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, row, 1);
    uint8_t* dst = pixels->data() + y * *w * 3;
    const JSAMPLE* src = row[0];
    if (!cmyk) {
      std::memcpy(dst, src, (size_t)(*w * 3));
      continue;
    }
    for (int64_t x = 0; x < *w; ++x) {
      int k = inverted ? src[x * 4 + 3] : 255 - src[x * 4 + 3];
      for (int c = 0; c < 3; ++c) {
        int v = inverted ? src[x * 4 + c] : 255 - src[x * 4 + c];
        dst[x * 3 + c] = (uint8_t)((v * k + 127) / 255);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

Tensor decode_png_bytes(const std::vector<uint8_t>& bytes, const std::string& path) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  CP_CHECK(png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()), path, "bad PNG: ", image.message);
  image.format = PNG_FORMAT_RGB;  // grey expanded, alpha composited
  Tensor out = Tensor::empty({(int64_t)image.height, (int64_t)image.width, 3}, DType::u8);
  if (!png_image_finish_read(&image, nullptr, out.data<uint8_t>(), 0, nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    fail(path, "bad PNG: ", message);
  }
  return out;
}

// PIL's separable resampling with the bilinear (triangle) filter: when shrinking, the filter
// widens by the scale so every input pixel contributes (no aliasing).
struct Taps {
  std::vector<int64_t> first;        // first input index per output index
  std::vector<std::vector<float>> w;  // normalised weights per output index
};

Taps triangle_taps(int64_t in_size, int64_t out_size) {
  Taps t;
  double scale = (double)in_size / (double)out_size;
  double filter_scale = std::max(scale, 1.0);
  double support = filter_scale;  // triangle support 1, widened
  t.first.resize((size_t)out_size);
  t.w.resize((size_t)out_size);
  for (int64_t i = 0; i < out_size; ++i) {
    double center = (i + 0.5) * scale;
    int64_t lo = std::max<int64_t>((int64_t)std::floor(center - support + 0.5), 0);
    int64_t hi = std::min<int64_t>((int64_t)std::floor(center + support + 0.5), in_size);
    std::vector<float> w;
    double total = 0;
    for (int64_t j = lo; j < hi; ++j) {
      double x = std::abs((j + 0.5 - center) / filter_scale);
      double v = x < 1.0 ? 1.0 - x : 0.0;
      w.push_back((float)v);
      total += v;
    }
    if (total <= 0) {  // cannot happen for in_size >= 1, kept as a guard against division by zero
      w.assign(w.size(), 0.f);
      w[0] = 1.f;
      total = 1;
    }
    for (auto& v : w) v = (float)(v / total);
    t.first[i] = lo;
    t.w[i] = std::move(w);
  }
  return t;
}

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  for (auto& ch : ext) ch = (char)std::tolower((unsigned char)ch);
  return ext == ".jpeg" || ext == ".jpg" || ext == ".png";
}

// Decodes images [begin, end) of a listing in parallel; the first failure (by index) is
// raised after the loop, so errors do not depend on the thread count.
void load_rows(const FolderListing& listing, int64_t begin, int64_t end, const ImageFolderOptions& opt, uint8_t* dst) {
  int64_t count = end - begin, row = opt.size * opt.size * 3;
  std::vector<std::exception_ptr> errors((size_t)count);
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < count; ++i) {
    try {
      Tensor img = load_folder_image(listing.files[begin + i], opt);
      std::memcpy(dst + i * row, img.data<uint8_t>(), (size_t)row);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace

Tensor decode_image_file(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  static const uint8_t kPng[4] = {0x89, 'P', 'N', 'G'};
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), kPng, 4) == 0) return decode_png_bytes(bytes, path);
  CP_CHECK(bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF, path,
           "not a JPEG or PNG file (", bytes.size(), " bytes, no JPEG SOI marker)");
  std::vector<uint8_t> pixels;
  int64_t h = 0, w = 0;
  JpegErrorManager err;
  CP_CHECK(decode_jpeg_bytes(bytes, &pixels, &h, &w, &err), path, "bad JPEG: ", err.message);
  CP_CHECK(!err.truncated, path, "truncated JPEG (premature end of data)");
  return Tensor::from_vector(pixels, {h, w, 3});
}

Tensor resize_image(const Tensor& hwc, int64_t out_h, int64_t out_w) {
  CP_CHECK(hwc.defined() && hwc.dtype() == DType::u8 && hwc.dim() == 3 && hwc.size(0) > 0 && hwc.size(1) > 0,
           "resize_image", "expects a non-empty u8 [H,W,C], got ", hwc.defined() ? hwc.describe() : std::string("undefined"));
  CP_CHECK(out_h > 0 && out_w > 0, "resize_image", "output size must be positive, got ", out_h, "x", out_w);
  Tensor src_t = hwc.contiguous();
  int64_t h = src_t.size(0), w = src_t.size(1), c = src_t.size(2);
  if (h == out_h && w == out_w) return src_t.clone();
  const uint8_t* src = src_t.data<uint8_t>();
  Taps tx = triangle_taps(w, out_w), ty = triangle_taps(h, out_h);
  // Horizontal pass into floats [h, out_w, c], then vertical with rounding to bytes.
  std::vector<float> mid((size_t)(h * out_w * c));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < out_w; ++x)
      for (int64_t k = 0; k < c; ++k) {
        float acc = 0;
        const auto& wx = tx.w[x];
        for (size_t j = 0; j < wx.size(); ++j) acc += wx[j] * src[(y * w + tx.first[x] + (int64_t)j) * c + k];
        mid[(y * out_w + x) * c + k] = acc;
      }
  Tensor out = Tensor::empty({out_h, out_w, c}, DType::u8);
  uint8_t* dst = out.data<uint8_t>();
  for (int64_t y = 0; y < out_h; ++y)
    for (int64_t x = 0; x < out_w; ++x)
      for (int64_t k = 0; k < c; ++k) {
        float acc = 0;
        const auto& wy = ty.w[y];
        for (size_t j = 0; j < wy.size(); ++j) acc += wy[j] * mid[((ty.first[y] + (int64_t)j) * out_w + x) * c + k];
        dst[(y * out_w + x) * c + k] = (uint8_t)std::clamp(std::lround(acc), 0L, 255L);
      }
  return out;
}

Tensor load_folder_image(const std::string& path, const ImageFolderOptions& opt) {
  CP_CHECK(opt.size > 0, "image folder", "size must be > 0, got ", opt.size);
  Tensor img = decode_image_file(path);
  int64_t h = img.size(0), w = img.size(1), s = opt.size;
  if (opt.resize == ResizeMode::stretch) return resize_image(img, s, s);
  // Shorter side to s (the longer one truncated as torchvision's Resize(int) does), then the
  // central s x s window (offsets rounded as torchvision's CenterCrop).
  int64_t nh = h <= w ? s : std::max<int64_t>(s, (int64_t)((double)s * h / w));
  int64_t nw = h <= w ? std::max<int64_t>(s, (int64_t)((double)s * w / h)) : s;
  Tensor resized = resize_image(img, nh, nw);
  int64_t top = (int64_t)std::lround((nh - s) / 2.0), left = (int64_t)std::lround((nw - s) / 2.0);
  Tensor out = Tensor::empty({s, s, 3}, DType::u8);
  const uint8_t* src = resized.data<uint8_t>();
  uint8_t* dst = out.data<uint8_t>();
  for (int64_t y = 0; y < s; ++y) std::memcpy(dst + y * s * 3, src + ((top + y) * nw + left) * 3, (size_t)(s * 3));
  return out;
}

FolderListing list_image_folder(const std::string& dir, const ImageFolderOptions& opt) {
  CP_CHECK(detail::dir_exists(dir), dir, "image folder not found (expected DIR/<class>/<image>.JPEG)");
  FolderListing listing;
  if (opt.classes.empty()) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.is_directory()) listing.class_names.push_back(entry.path().filename().string());
    CP_CHECK(!ec, dir, "cannot list: ", ec.message());
    std::sort(listing.class_names.begin(), listing.class_names.end());
  } else {
    listing.class_names = opt.classes;
  }
  CP_CHECK(!listing.class_names.empty(), dir, "holds no class folders (expected DIR/<class>/<image>.JPEG)");
  for (size_t c = 0; c < listing.class_names.size(); ++c) {
    fs::path class_dir = fs::path(dir) / listing.class_names[c];
    CP_CHECK(detail::dir_exists(class_dir.string()), class_dir.string(), "class folder not found");
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(class_dir, ec))
      if (entry.is_regular_file() && has_image_extension(entry.path())) files.push_back(entry.path().string());
    CP_CHECK(!ec, class_dir.string(), "cannot list: ", ec.message());
    CP_CHECK(!files.empty(), class_dir.string(), "class folder holds no .jpeg/.jpg/.png files");
    std::sort(files.begin(), files.end());
    if (opt.limit_per_class > 0 && (int64_t)files.size() > opt.limit_per_class) files.resize((size_t)opt.limit_per_class);
    for (auto& f : files) {
      listing.files.push_back(std::move(f));
      listing.labels.push_back((int64_t)c);
    }
  }
  return listing;
}

Dataset read_image_folder(const std::string& dir, const ImageFolderOptions& opt) {
  CP_CHECK(opt.size > 0, "image folder", "size must be > 0, got ", opt.size);
  FolderListing listing = list_image_folder(dir, opt);
  int64_t n = (int64_t)listing.files.size();
  Dataset ds;
  ds.images = Tensor::empty({n, opt.size, opt.size, 3}, DType::u8);
  load_rows(listing, 0, n, opt, ds.images.data<uint8_t>());
  ds.labels = Tensor::from_vector(listing.labels, {n});
  ds.classes = (int64_t)listing.class_names.size();
  ds.class_names = listing.class_names;
  ds.name = fs::path(dir).filename().string();
  ds.source = dir;
  return ds;
}

void convert_image_folder(const std::string& train_dir, const std::string& test_dir, const std::string& out_path,
                          const std::string& name, const ImageFolderOptions& opt,
                          const std::function<void(int64_t, int64_t)>& progress) {
  CP_CHECK(opt.size > 0, "convert imagefolder", "size must be > 0, got ", opt.size);
  struct Part {
    std::string prefix, dir;
    FolderListing listing;
  };
  std::vector<Part> parts;
  parts.push_back({test_dir.empty() ? "" : "train/", train_dir, list_image_folder(train_dir, opt)});
  if (!test_dir.empty()) {
    parts.push_back({"test/", test_dir, list_image_folder(test_dir, opt)});
    CP_CHECK(parts[1].listing.class_names == parts[0].listing.class_names, test_dir, "its class folders (",
             parts[1].listing.class_names.size(), ") differ from those of ", train_dir, " (",
             parts[0].listing.class_names.size(), "); both need the same classes");
  }
  int64_t total = 0, done = 0;
  for (const auto& p : parts) total += (int64_t)p.listing.files.size();

  io::H5Writer writer(out_path);
  constexpr int64_t kChunk = 512;
  // The training images' per-channel statistics, accumulated while streaming: the file's
  // normalisation constants (data/README.md).
  std::vector<double> sum(3, 0.0), sq(3, 0.0);
  int64_t train_pixels = 0;
  for (const auto& [prefix, dir, listing] : parts) {
    int64_t n = (int64_t)listing.files.size();
    writer.create(prefix + "images", {n, opt.size, opt.size, 3}, DType::u8, {{"source", dir}});
    for (int64_t begin = 0; begin < n; begin += kChunk) {
      int64_t end = std::min(n, begin + kChunk);
      Tensor rows = Tensor::empty({end - begin, opt.size, opt.size, 3}, DType::u8);
      load_rows(listing, begin, end, opt, rows.data<uint8_t>());
      if (prefix != "test/") {
        const uint8_t* px = rows.data<uint8_t>();
        const int64_t pixels = rows.numel() / 3;
        for (int64_t i = 0; i < pixels; ++i)
          for (int c = 0; c < 3; ++c) {
            const double v = px[i * 3 + c] / 255.0;
            sum[c] += v, sq[c] += v * v;
          }
        train_pixels += pixels;
      }
      writer.write_rows(prefix + "images", begin, rows);
      done += end - begin;
      if (progress) progress(done, total);
    }
    writer.write(prefix + "labels", Tensor::from_vector(listing.labels, {n}));
  }
  const auto& class_names = parts[0].listing.class_names;
  std::string joined;
  for (size_t i = 0; i < class_names.size(); ++i) joined += (i ? "\n" : "") + class_names[i];
  writer.set_file_attr("name", name);
  writer.set_file_attr("classes", (int64_t)class_names.size());
  writer.set_file_attr("source", train_dir + (test_dir.empty() ? "" : " + " + test_dir));
  writer.set_file_attr("class_names", joined);
  std::vector<double> mean(3), stddev(3);
  for (int c = 0; c < 3; ++c) {
    mean[c] = sum[c] / (double)std::max<int64_t>(1, train_pixels);
    const double var = sq[c] / (double)std::max<int64_t>(1, train_pixels) - mean[c] * mean[c];
    stddev[c] = var > 1e-12 ? std::sqrt(var) : 1.0;
  }
  writer.set_file_attr("mean", format_constants(mean));
  writer.set_file_attr("std", format_constants(stddev));
  writer.set_file_attr("resize", std::string(opt.resize == ResizeMode::crop ? "crop" : "stretch"));
  if (test_dir.empty()) writer.set_file_attr("split", std::string("train"));
  writer.commit();
}

}  // namespace cpoison::data
