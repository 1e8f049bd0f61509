#include "engine/io/png.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

namespace cpoison::io {

void write_png(const std::string& path, const Tensor& image) {
  CP_CHECK(image.defined() && image.dim() == 3, "write_png", "'", path, "': image must be [H, W, C], got ",
           image.defined() ? image.describe() : std::string("undefined"));
  const int64_t h = image.size(0), w = image.size(1), c = image.size(2);
  CP_CHECK(c == 1 || c == 3 || c == 4, "write_png", "'", path, "': image ", image.describe(), " must have 1, 3 or 4 channels");
  CP_CHECK(h > 0 && w > 0 && h <= (int64_t)PNG_UINT_31_MAX && w <= (int64_t)PNG_UINT_31_MAX, "write_png", "'", path,
           "': image size ", image.shape(), " not representable in PNG");
  CP_CHECK(image.dtype() == DType::u8 || is_floating(image.dtype()), "write_png", "'", path,
           "': image must be u8 or float in [0, 1], got ", image.describe());
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  CP_CHECK(parent.empty() || std::filesystem::is_directory(parent), "write_png", "'", path, "': directory '",
           parent.string(), "' does not exist");

  std::vector<uint8_t> pixels;
  if (image.dtype() == DType::u8) {
    pixels = image.detach().to_vector<uint8_t>();
  } else {
    std::vector<double> v = image.detach().to_vector<double>();
    pixels.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      double x = std::isnan(v[i]) ? 0.0 : std::clamp(v[i], 0.0, 1.0);
      pixels[i] = (uint8_t)std::lround(x * 255.0);
    }
  }

  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)w;
  img.height = (png_uint_32)h;
  img.format = c == 1 ? PNG_FORMAT_GRAY : c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
  const std::string tmp = path + ".tmp";
  int ok = png_image_write_to_file(&img, tmp.c_str(), 0, pixels.data(), (png_int_32)(w * c), nullptr);
  std::string message = img.message;
  png_image_free(&img);
  std::error_code ec;
  if (!ok) {
    std::filesystem::remove(tmp, ec);
    fail("write_png", "'", path, "': libpng failed: ", message);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    fail("write_png", "cannot rename '", tmp, "' to '", path, "': ", ec.message());
  }
}

Tensor tile_images(const Tensor& images, int64_t columns, int64_t pad, double pad_value) {
  CP_CHECK(images.defined() && images.dim() == 4 && is_floating(images.dtype()), "tile_images",
           "images must be float [N, C, H, W], got ", images.defined() ? images.describe() : std::string("undefined"));
  CP_CHECK(columns >= 1, "tile_images", "columns must be >= 1, got ", columns);
  CP_CHECK(pad >= 0, "tile_images", "pad must be >= 0, got ", pad);
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  CP_CHECK(n > 0, "tile_images", "no images in ", images.describe());
  const int64_t cols = std::min(columns, n), rows = (n + cols - 1) / cols;
  const int64_t out_h = rows * (h + pad) + pad, out_w = cols * (w + pad) + pad;
  std::vector<float> src = images.detach().to_vector<float>();
  Tensor out = Tensor::full({out_h, out_w, c}, pad_value, DType::f32);
  float* o = out.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t top = pad + (i / cols) * (h + pad), left = pad + (i % cols) * (w + pad);
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) o[((top + y) * out_w + left + x) * c + ch] = src[((i * c + ch) * h + y) * w + x];
  }
  return out;
}

}  // namespace cpoison::io

namespace cpoison::io {

Tensor read_png(const std::string& path, int64_t channels) {
  CP_CHECK(channels == 1 || channels == 3, "read_png", "'", path, "': channels must be 1 or 3, got ", channels);
  CP_CHECK(std::filesystem::is_regular_file(path), path, "no such PNG file");
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  CP_CHECK(png_image_begin_read_from_file(&image, path.c_str()) != 0, path, "not a readable PNG (libpng: ", image.message,
           ")");
  // Colour files are read as RGB and grey ones as grey (alpha composited on black); converting
  // between them happens below, exactly, never through libpng's gamma-aware colour-to-grey.
  const bool colour = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
  image.format = colour ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  const int64_t h = image.height, w = image.width, stored = colour ? 3 : 1;
  std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(image));
  if (png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr) == 0) {
    std::string message = image.message;
    png_image_free(&image);
    fail(path, "reading the PNG failed (libpng: ", message, ")");
  }
  Tensor out = Tensor::empty({h, w, channels}, DType::u8);
  uint8_t* o = out.data<uint8_t>();
  for (int64_t p = 0; p < h * w; ++p) {
    const uint8_t* px = pixels.data() + p * stored;
    if (channels == stored) {
      for (int64_t c = 0; c < channels; ++c) o[p * channels + c] = px[c];
    } else if (channels == 3) {  // grey file, colour data: replicate
      o[p * 3] = o[p * 3 + 1] = o[p * 3 + 2] = px[0];
    } else {  // colour file, grey data: only when every pixel is grey already (no information lost)
      CP_CHECK(px[0] == px[1] && px[1] == px[2], path, "is a colour PNG (pixel row ", p / w, ", column ", p % w, " is RGB ",
               (int)px[0], ",", (int)px[1], ",", (int)px[2], ") but the data has 1 channel: expected a grey image");
      o[p] = px[0];
    }
  }
  return out;
}

}  // namespace cpoison::io
