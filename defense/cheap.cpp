// JPEG compression, grayscale, bit-depth reduction and UEraser-style training (defense/cheap.h).
// Layout: batches [N, C, H, W] float in [0, 1].
#include "defense/cheap.h"

#include <jpeglib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "augment/augment.h"
#include "engine/autograd.h"
#include "engine/ops/ops.h"

namespace cpoison::defense {

using algorithms::Batch;
using algorithms::Learner;

namespace {

void check_batch(const Tensor& x, const char* where) {
  CP_CHECK(x.defined() && x.dim() == 4 && (x.dtype() == DType::f32 || x.dtype() == DType::f64), where,
           "needs float images [N, C, H, W], got ", x.defined() ? x.describe() : std::string("undefined"));
}

// libjpeg reports errors through longjmp; we turn them into cpoison::Error.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};
void on_jpeg_error(j_common_ptr info) {
  auto* e = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, e->message);
  std::longjmp(e->jump, 1);
}

// One image u8 [H, W, C] (C = 1 or 3) through a JPEG round trip at `quality`, in place.
void jpeg_round_trip(uint8_t* pixels, int64_t H, int64_t W, int64_t C, int quality) {
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  {
    jpeg_compress_struct cinfo;
    JpegError err;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = on_jpeg_error;
    if (setjmp(err.jump)) {
      jpeg_destroy_compress(&cinfo);
      std::free(buffer);
      fail("jpeg", "libjpeg could not compress a ", H, "x", W, "x", C, " image: ", err.message);
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &buffer, &size);
    cinfo.image_width = (JDIMENSION)W;
    cinfo.image_height = (JDIMENSION)H;
    cinfo.input_components = (int)C;
    cinfo.in_color_space = C == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
      JSAMPROW row = pixels + (int64_t)cinfo.next_scanline * W * C;
      jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
  }
  jpeg_decompress_struct dinfo;
  JpegError err;
  dinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = on_jpeg_error;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&dinfo);
    std::free(buffer);
    fail("jpeg", "libjpeg could not decode its own ", H, "x", W, "x", C, " image: ", err.message);
  }
  jpeg_create_decompress(&dinfo);
  jpeg_mem_src(&dinfo, buffer, size);
  jpeg_read_header(&dinfo, TRUE);
  dinfo.out_color_space = C == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&dinfo);
  while (dinfo.output_scanline < dinfo.output_height) {
    JSAMPROW row = pixels + (int64_t)dinfo.output_scanline * W * C;
    jpeg_read_scanlines(&dinfo, &row, 1);
  }
  jpeg_finish_decompress(&dinfo);
  jpeg_destroy_decompress(&dinfo);
  std::free(buffer);
}

}  // namespace

void JpegOptions::validate() const {
  CP_CHECK(quality >= 1 && quality <= 100, "jpeg", "q = ", quality, ": the JPEG quality must be in [1, 100]");
}

Tensor jpeg_compress(const Tensor& x, const JpegOptions& opt) {
  check_batch(x, "jpeg");
  opt.validate();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  CP_CHECK(C == 1 || C == 3, "jpeg", "JPEG codes 1- or 3-channel images, got ", x.describe());
  Tensor host = x.to(Device::cpu).to(DType::f32).contiguous();
  const float* in = host.data<float>();
  Tensor out = Tensor::empty({N, C, H, W}, DType::f32);
  float* o = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    std::vector<uint8_t> hwc(H * W * C);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p)
        hwc[p * C + c] = (uint8_t)std::nearbyint(255.0 * std::clamp((double)in[(n * C + c) * H * W + p], 0.0, 1.0));
    jpeg_round_trip(hwc.data(), H, W, C, (int)opt.quality);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) o[(n * C + c) * H * W + p] = (float)hwc[p * C + c] / 255.0f;
  }
  return out.to(x.dtype()).to(x.device());
}

Tensor grayscale_images(const Tensor& x) {
  check_batch(x, "grayscale");
  CP_CHECK(x.size(1) == 3, "grayscale", "needs colour images (3 channels), got ", x.describe(),
           ": grey data has nothing to remove");
  Tensor g = augment::rgb_to_grayscale(x);  // [N, 1, H, W]
  return concat({g, g, g}, 1);
}

void BitDepthOptions::validate() const {
  CP_CHECK(bits >= 1 && bits <= 8, "bits", "b = ", bits, ": the bit depth must be in [1, 8]");
}

Tensor reduce_bit_depth(const Tensor& x, const BitDepthOptions& opt) {
  check_batch(x, "bits");
  opt.validate();
  autograd::NoGradGuard no_grad;  // quantisation: no useful gradient
  const double levels = std::ldexp(1.0, (int)opt.bits) - 1.0;
  Tensor host = x.to(Device::cpu).to(DType::f64).contiguous();
  Tensor out = Tensor::empty(host.shape(), DType::f64);
  const double* in = host.data<double>();
  double* o = out.data<double>();
  const int64_t n = host.numel();
  for (int64_t i = 0; i < n; ++i) o[i] = std::nearbyint(std::clamp(in[i], 0.0, 1.0) * levels) / levels;
  return out.to(x.dtype()).to(x.device());
}

void UEraserOptions::validate() const {
  const char* where = "ueraser";
  CP_CHECK(k >= 1 && k <= 64, where, "k = ", k, ": the number of augmentations per step must be in [1, 64]");
  CP_CHECK(std::isfinite(strength) && strength >= 0 && strength <= 2, where, "strength = ", strength,
           ": must be in [0, 2]");
  CP_CHECK(std::isfinite(noise) && noise >= 0 && noise <= 1, where, "noise = ", noise,
           ": the noise amplitude must be in [0, 1] (pixel units)");
}

namespace {

struct UEraserRun {
  UEraserOptions opt;
  augment::AugmentConfig jitter;  // colour jitter with probability 1 and a flip, no crop, no normalisation
  std::vector<double> mean, std;

  UEraserRun(const algorithms::TrainConfig& cfg, const UEraserOptions& o) : opt(o) {
    opt.validate();
    jitter.crop = false;
    jitter.flip = true;
    jitter.jitter = opt.strength > 0;
    jitter.jitter_p = 1.0;
    jitter.brightness_strength = jitter.contrast_strength = jitter.saturation_strength = 0.5 * opt.strength;
    jitter.hue_strength = std::min(0.5, 0.25 * opt.strength);
    jitter.grayscale = false;
    jitter.normalize = false;
    if (cfg.augment.normalize) mean = cfg.augment.mean, std = cfg.augment.std;
  }

  // One augmentation of normalised views v: to pixels, jitter + flip + noise, clamp, back.
  Tensor draw(const Tensor& v, Generator& gen) const {
    const int64_t C = v.size(1);
    Tensor m, s;
    Tensor x = v;
    if (!mean.empty()) {
      CP_CHECK((int64_t)mean.size() == C, "ueraser", "views ", v.describe(), " have ", C,
               " channels but the normalisation has ", mean.size());
      m = Tensor::from_vector(mean, {1, C, 1, 1}, v.dtype(), v.device());
      s = Tensor::from_vector(std, {1, C, 1, 1}, v.dtype(), v.device());
      x = add(mul(v, s), m);
    }
    x = clamp(x, 0.0, 1.0);
    augment::AugmentConfig a = jitter;
    a.out_h = v.size(2), a.out_w = v.size(3);
    x = augment::augment(x, a, gen);
    if (opt.noise > 0) {
      autograd::NoGradGuard no_grad;
      Tensor n = uniform(x.shape(), -opt.noise, opt.noise, gen, x.dtype(), x.device());
      x = add(x, n);
    }
    x = clamp(x, 0.0, 1.0);
    return mean.empty() ? x : div(sub(x, m), s);
  }
};

// Per-image cross-entropy [B] (the loss before the batch mean) of the classifier's logits.
Tensor per_image_cross_entropy(Learner& learner, const Tensor& view, const Tensor& labels) {
  Tensor logits = learner.encoder().logits(view);
  return neg(gather1(log_softmax(logits, 1), labels.to(view.device())));
}

// UEraser-Max (supervised): per image, the largest of the k draws' cross-entropies.
algorithms::TrainConfig::StepLoss ueraser_supervised(const algorithms::TrainConfig& cfg, const UEraserOptions& opt) {
  auto run = std::make_shared<UEraserRun>(cfg, opt);
  const double scale = cfg.algo_config.loss_scale;
  return [run, scale](Learner& learner, const Batch& views, Generator& gen) {
    const Tensor &x = views.view1, &labels = views.labels;
    std::vector<Tensor> losses;
    for (int64_t i = 0; i < run->opt.k; ++i) losses.push_back(per_image_cross_entropy(learner, run->draw(x, gen), labels));
    // UEraser-Max: per image, the draw with the largest loss. The choice is a constant mask,
    // so the gradient flows through the chosen draw only.
    const int64_t B = x.size(0);
    std::vector<std::vector<double>> values;
    for (const Tensor& l : losses) values.push_back(l.detach().to(Device::cpu).to(DType::f64).to_vector<double>());
    std::vector<std::vector<float>> masks(losses.size(), std::vector<float>(B, 0.0f));
    for (int64_t b = 0; b < B; ++b) {
      size_t best = 0;
      for (size_t i = 1; i < values.size(); ++i)
        if (values[i][b] > values[best][b]) best = i;
      masks[best][b] = 1.0f;
    }
    Tensor total;
    for (size_t i = 0; i < losses.size(); ++i) {
      Tensor mask = Tensor::from_vector(masks[i], {B}, DType::f32, Device::cpu).to(losses[i].dtype()).to(x.device());
      Tensor part = sum(mul(losses[i], mask));
      total = total.defined() ? add(total, part) : part;
    }
    return mul_scalar(total, scale / (double)B);
  };
}

// Contrastive (SimCLR, BYOL): the largest of the k draws' batch losses.
algorithms::TrainConfig::StepLoss ueraser_contrastive(const algorithms::TrainConfig& cfg, const UEraserOptions& opt) {
  auto run = std::make_shared<UEraserRun>(cfg, opt);
  return [run](Learner& learner, const Batch& views, Generator& gen) {
    Tensor best;
    double best_value = -INFINITY;
    for (int64_t i = 0; i < run->opt.k; ++i) {
      // View 2's draw first: the order in which GCC evaluated the arguments of the former
      // learner.loss(draw(view1), draw(view2)) (right to left), so runs keep their bits.
      Batch drawn = views;
      drawn.view2 = run->draw(views.view2, gen);
      drawn.view1 = run->draw(views.view1, gen);
      Tensor l = learner.loss(drawn);
      const double v = l.item();
      if (!best.defined() || v > best_value) best = l, best_value = v;
    }
    return best;
  };
}

}  // namespace

algorithms::TrainConfig::StepLoss ueraser_loss_hook(const algorithms::TrainConfig& cfg, const UEraserOptions& opt) {
  if (cfg.algo == algorithms::Algo::supervised) return ueraser_supervised(cfg, opt);
  CP_CHECK(cfg.algo == algorithms::Algo::simclr || cfg.algo == algorithms::Algo::byol, "ueraser",
           "UEraser-style training takes simclr, byol or supervised, not ", algorithms::algo_name(cfg.algo),
           " (MoCo would enqueue the keys of every one of the k draws)");
  return ueraser_contrastive(cfg, opt);
}

}  // namespace cpoison::defense
