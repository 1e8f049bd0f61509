// Augmentation configs, parameter sampling and the pipeline (NCHW: N images, C channels, H rows,
// W columns). Sampling runs on the host from a cpoison::Generator; application is a chain of
// differentiable ops on x's device.
#include "augment/augment.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/image.h"
#include "engine/ops/shape.h"

namespace cpoison::augment {

Recipe parse_recipe(const std::string& name) {
  for (Recipe r : {Recipe::simclr, Recipe::cpu_small, Recipe::crop_flip, Recipe::none})
    if (name == recipe_name(r)) return r;
  fail("augment", "unknown augmentation '", name, "' (choose simclr, cpu-small, crop-flip or none)");
}

const char* recipe_name(Recipe recipe) {
  switch (recipe) {
    case Recipe::simclr: return "simclr";
    case Recipe::cpu_small: return "cpu-small";
    case Recipe::crop_flip: return "crop-flip";
    case Recipe::none: return "none";
  }
  return "none";
}

AugmentConfig AugmentConfig::simclr_cifar(int64_t out_size) {
  AugmentConfig cfg;
  cfg.out_h = cfg.out_w = out_size;
  return cfg;
}

AugmentConfig AugmentConfig::cpu_small() {
  AugmentConfig cfg;
  cfg.out_h = cfg.out_w = 28;
  cfg.saturation = cfg.hue = false;
  cfg.random_jitter_order = false;
  cfg.grayscale = false;
  cfg.mean = kFashionMnistMean;
  cfg.std = kFashionMnistStd;
  return cfg;
}

AugmentConfig with_strength(const AugmentConfig& base, double s) {
  CP_CHECK(std::isfinite(s) && s >= 0 && s <= 2, "augment strength", "strength must be in [0, 2], got ", s);
  AugmentConfig c = base;
  c.scale_min = std::min(std::max(1.0 - 0.9 * s, 0.05), c.scale_max);
  c.brightness_strength = c.contrast_strength = c.saturation_strength = 0.4 * s;
  c.hue_strength = 0.1 * s;
  c.jitter_p = std::min(0.99, 0.8 * s);
  c.grayscale_p = 0.2 * s;
  c.validate();
  return c;
}

void AugmentConfig::validate() const {
  const char* where = "AugmentConfig";
  CP_CHECK(out_h >= 1 && out_w >= 1, where, "output size must be positive, got ", out_h, "x", out_w);
  CP_CHECK(0 < scale_min && scale_min <= scale_max && scale_max <= 1, where, "crop scale must satisfy 0 < min <= max <= 1, got [",
           scale_min, ", ", scale_max, "]");
  CP_CHECK(0 < ratio_min && ratio_min <= ratio_max && std::isfinite(ratio_max), where,
           "crop ratio must satisfy 0 < min <= max, got [", ratio_min, ", ", ratio_max, "]");
  auto probability = [&](double p, const char* name) {
    CP_CHECK(p >= 0 && p <= 1, where, name, " must be a probability in [0, 1], got ", p);
  };
  probability(flip_p, "flip_p");
  probability(jitter_p, "jitter_p");
  probability(grayscale_p, "grayscale_p");
  auto strength = [&](double s, double hi, const char* name) {
    CP_CHECK(s >= 0 && s <= hi, where, name, " must be in [0, ", hi, "], got ", s);
  };
  strength(brightness_strength, INFINITY, "brightness_strength");
  strength(contrast_strength, INFINITY, "contrast_strength");
  strength(saturation_strength, INFINITY, "saturation_strength");
  strength(hue_strength, 0.5, "hue_strength");
  if (normalize) {
    CP_CHECK(!mean.empty() && mean.size() == std.size(), where, "normalize needs one mean and one std per channel, got ", mean.size(),
             " means and ", std.size(), " stds");
    for (double s : std) CP_CHECK(s > 0 && std::isfinite(s), where, "std values must be positive, got ", std);
  }
}

AugmentParams AugmentParams::identity(int64_t n, int64_t in_h, int64_t in_w) {
  CP_CHECK(n >= 0 && in_h >= 1 && in_w >= 1, "AugmentParams::identity", "bad batch ", n, " of ", in_h, "x", in_w, " images");
  AugmentParams p;
  p.n = n, p.in_h = in_h, p.in_w = in_w;
  p.boxes.resize(4 * n);
  for (int64_t i = 0; i < n; ++i) {
    p.boxes[4 * i + 2] = (double)in_h;
    p.boxes[4 * i + 3] = (double)in_w;
  }
  p.flip.assign(n, 0);
  p.jitter.assign(n, 0);
  p.brightness.assign(n, 1.0);
  p.contrast.assign(n, 1.0);
  p.saturation.assign(n, 1.0);
  p.hue.assign(n, 0.0);
  p.grayscale.assign(n, 0);
  return p;
}

namespace {

double uniform_in(Generator& gen, double lo, double hi) { return lo + (hi - lo) * gen.uniform01(); }

// torchvision RandomResizedCrop.get_params; Python's round() is round-half-even, as nearbyint.
void sample_crop(const AugmentConfig& cfg, int64_t H, int64_t W, Generator& gen, double* box) {
  const double area = (double)H * (double)W;
  const double log_lo = std::log(cfg.ratio_min), log_hi = std::log(cfg.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target = area * uniform_in(gen, cfg.scale_min, cfg.scale_max);
    double ratio = std::exp(uniform_in(gen, log_lo, log_hi));
    int64_t w = (int64_t)std::nearbyint(std::sqrt(target * ratio));
    int64_t h = (int64_t)std::nearbyint(std::sqrt(target / ratio));
    if (0 < w && w <= W && 0 < h && h <= H) {
      box[0] = (double)gen.randint(0, H - h + 1);
      box[1] = (double)gen.randint(0, W - w + 1);
      box[2] = (double)h;
      box[3] = (double)w;
      return;
    }
  }
  double in_ratio = (double)W / (double)H;
  int64_t w = W, h = H;
  if (in_ratio < cfg.ratio_min) h = (int64_t)std::nearbyint((double)W / cfg.ratio_min);
  else if (in_ratio > cfg.ratio_max) w = (int64_t)std::nearbyint((double)H * cfg.ratio_max);
  box[0] = (double)((H - h) / 2);
  box[1] = (double)((W - w) / 2);
  box[2] = (double)h;
  box[3] = (double)w;
}

bool draw(Generator& gen, double p) { return gen.uniform01() < p; }

}  // namespace

AugmentParams sample_params(const AugmentConfig& cfg, int64_t n, int64_t in_h, int64_t in_w, Generator& gen) {
  cfg.validate();
  CP_CHECK(n >= 0 && in_h >= 1 && in_w >= 1, "sample_params", "bad batch ", n, " of ", in_h, "x", in_w, " images");
  AugmentParams p = AugmentParams::identity(n, in_h, in_w);
  if (cfg.jitter && cfg.random_jitter_order) {
    std::vector<int64_t> order = gen.permutation(4);
    for (int k = 0; k < 4; ++k) p.jitter_order[k] = (JitterOp)order[k];
  }
  for (int64_t i = 0; i < n; ++i) {
    if (cfg.crop) sample_crop(cfg, in_h, in_w, gen, &p.boxes[4 * i]);
    if (cfg.flip) p.flip[i] = draw(gen, cfg.flip_p);
    if (cfg.jitter) {
      p.jitter[i] = draw(gen, cfg.jitter_p);
      // Factors are drawn for every image so that the stream layout does not depend on the flags.
      double b = uniform_in(gen, std::max(0.0, 1 - cfg.brightness_strength), 1 + cfg.brightness_strength);
      double c = uniform_in(gen, std::max(0.0, 1 - cfg.contrast_strength), 1 + cfg.contrast_strength);
      double s = uniform_in(gen, std::max(0.0, 1 - cfg.saturation_strength), 1 + cfg.saturation_strength);
      double h = uniform_in(gen, -cfg.hue_strength, cfg.hue_strength);
      if (p.jitter[i]) {
        if (cfg.brightness) p.brightness[i] = b;
        if (cfg.contrast) p.contrast[i] = c;
        if (cfg.saturation) p.saturation[i] = s;
        if (cfg.hue) p.hue[i] = h;
      }
    }
    if (cfg.grayscale) p.grayscale[i] = draw(gen, cfg.grayscale_p);
  }
  return p;
}

namespace {
bool any(const std::vector<uint8_t>& flags) {
  return std::any_of(flags.begin(), flags.end(), [](uint8_t f) { return f != 0; });
}
bool any_not(const std::vector<double>& values, double identity) {
  return std::any_of(values.begin(), values.end(), [&](double v) { return v != identity; });
}
}  // namespace

Tensor apply(const Tensor& x, const AugmentParams& params, const AugmentConfig& cfg) {
  const char* where = "augment apply";
  cfg.validate();
  CP_CHECK(x.defined() && x.dim() == 4 && is_floating(x.dtype()), where, "expects float images [N, C, H, W], got ",
           x.defined() ? x.describe() : std::string("undefined"));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  CP_CHECK(C == 1 || C == 3, where, "expects 1 or 3 channels, got ", x.describe());
  CP_CHECK(params.n == N && params.in_h == H && params.in_w == W, where, "params were drawn for ", params.n, " images of ", params.in_h,
           "x", params.in_w, ", input is ", x.describe());
  const size_t n = (size_t)N;
  CP_CHECK(params.boxes.size() == 4 * n && params.flip.size() == n && params.jitter.size() == n && params.brightness.size() == n &&
               params.contrast.size() == n && params.saturation.size() == n && params.hue.size() == n && params.grayscale.size() == n,
           where, "params vectors do not all have ", N, " entries (boxes 4N)");
  if (cfg.normalize)
    CP_CHECK((int64_t)cfg.mean.size() == C, where, "normalize has ", cfg.mean.size(), " means for ", C, "-channel input ", x.describe());

  Tensor y = x;
  if (cfg.crop || H != cfg.out_h || W != cfg.out_w) {
    std::vector<double> boxes = cfg.crop ? params.boxes : AugmentParams::identity(N, H, W).boxes;
    y = resize_window(y, Tensor::from_vector(boxes, {N, 4}, DType::f64), cfg.out_h, cfg.out_w);
  }
  if (cfg.flip && any(params.flip)) y = flip_horizontal(y, Tensor::from_vector(params.flip, {N}, DType::u8));
  if (cfg.jitter && any(params.jitter)) {
    for (JitterOp op : params.jitter_order) {
      switch (op) {
        case JitterOp::brightness:
          if (cfg.brightness && any_not(params.brightness, 1.0)) y = adjust_brightness(y, params.brightness);
          break;
        case JitterOp::contrast:
          if (cfg.contrast && any_not(params.contrast, 1.0)) y = adjust_contrast(y, params.contrast);
          break;
        case JitterOp::saturation:
          if (cfg.saturation && C == 3 && any_not(params.saturation, 1.0)) y = adjust_saturation(y, params.saturation);
          break;
        case JitterOp::hue:
          if (cfg.hue && C == 3 && any_not(params.hue, 0.0)) y = adjust_hue(y, params.hue);
          break;
      }
    }
  }
  if (cfg.grayscale && C == 3 && any(params.grayscale)) y = grayscale_where(y, params.grayscale);
  if (cfg.normalize) y = normalize(y, cfg.mean, cfg.std);
  return y;
}

Tensor augment(const Tensor& x, const AugmentConfig& cfg, Generator& gen) {
  CP_CHECK(x.defined() && x.dim() == 4, "augment", "expects images [N, C, H, W], got ", x.defined() ? x.describe() : std::string("undefined"));
  return apply(x, sample_params(cfg, x.size(0), x.size(2), x.size(3), gen), cfg);
}

Tensor random_translate(const Tensor& x, int64_t max_shift, Generator& gen) {
  CP_CHECK(x.dim() == 4, "random_translate", "x must be [B,C,H,W], got ", x.shape());
  CP_CHECK(max_shift >= 0, "random_translate", "max_shift must be >= 0, got ", max_shift);
  if (max_shift == 0) return x;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), s = max_shift;
  Tensor rows = Tensor::zeros({B, C, s, W}, x.dtype(), x.device());
  Tensor tall = concat({rows, x, rows}, 2);  // [B, C, H + 2s, W]
  Tensor cols = Tensor::zeros({B, C, H + 2 * s, s}, x.dtype(), x.device());
  Tensor padded = concat({cols, tall, cols}, 3);  // [B, C, H + 2s, W + 2s]
  std::vector<double> boxes(4 * B);
  for (int64_t i = 0; i < B; ++i) {
    boxes[4 * i] = (double)gen.randint(0, 2 * s + 1);
    boxes[4 * i + 1] = (double)gen.randint(0, 2 * s + 1);
    boxes[4 * i + 2] = (double)H;
    boxes[4 * i + 3] = (double)W;
  }
  // A window of the input's own size maps pixel to pixel (align_corners): a pure shift.
  return resize_window(padded, Tensor::from_vector(boxes, {B, 4}, DType::f64), H, W);
}

}  // namespace cpoison::augment
