#include "poison/apply.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/ops/ops.h"

namespace cpoison::poison {

Tensor perturb(const Tensor& x, const Tensor& delta, double eps) {
  CP_CHECK(x.shape() == delta.shape(), "perturb", "image batch ", x.describe(), " and delta ", delta.describe(), " differ in shape");
  return clamp(add(x, mul_scalar(clamp(delta, -1.0, 1.0), eps)), 0.0, 1.0);
}

uint8_t quantise_pixel(uint8_t pixel, double eps, double delta) {
  double d = std::clamp(delta, -1.0, 1.0);
  if (!std::isfinite(d)) d = 0;  // loaders reject non-finite deltas; never turn one into a pixel
  // Round to nearest, then clip to the u8 ball: floor(255 * x) could land 9 levels away when
  // 255 * eps = 8.16, and the threat model's bound is hard (docs/poison-format.md).
  const double radius = std::floor(255.0 * eps + 1e-9);
  const double target = std::nearbyint(255.0 * std::clamp((double)pixel / 255.0 + eps * d, 0.0, 1.0));
  const double v = std::clamp(target, (double)pixel - radius, (double)pixel + radius);
  return (uint8_t)std::clamp(v, 0.0, 255.0);
}

data::Dataset apply_poison(const data::Dataset& clean, const Poison& p) {
  std::string where = "apply_poison";
  p.validate(where);
  CP_CHECK(clean.size() == p.image_count, where, "poison was made for ", p.image_count, " images, dataset '", clean.name,
           "' has ", clean.size(), " (use the same --data/--subset as the poison: dataset '", p.dataset, "', subset ", p.subset, ")");
  const int64_t N = clean.size(), H = clean.height(), W = clean.width(), C = clean.channels();
  CP_CHECK(p.delta.size(1) == C && p.delta.size(2) == H && p.delta.size(3) == W, where, "delta ", p.delta.describe(),
           " does not fit images of ", C, "x", H, "x", W, " (C x H x W)");
  if (p.class_wise()) CP_CHECK(clean.classes == p.classes, where, "poison has ", p.classes, " classes, dataset ", clean.classes);
  Tensor images = clean.images.to(Device::cpu).clone();
  Tensor labels = clean.labels.to(Device::cpu);
  Tensor delta = p.delta.to(Device::cpu).contiguous();
  const float* dl = delta.data<float>();
  const int64_t* lab = labels.data<int64_t>();
  uint8_t* img = images.data<uint8_t>();
  std::vector<int64_t> rows = p.indices.to_vector<int64_t>();
  for (int64_t r : rows) CP_CHECK(r < N, where, "poisoned index ", r, " outside the dataset");
#pragma omp parallel for schedule(static)
  for (size_t k = 0; k < rows.size(); ++k) {
    int64_t n = rows[k];
    int64_t drow = p.class_wise() ? lab[n] : n;
    if (drow < 0) continue;  // unlabeled image under a class-wise poison: nothing to add
    const float* d = dl + drow * C * H * W;
    uint8_t* im = img + n * H * W * C;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c) {
          uint8_t& px = im[(y * W + x) * C + c];
          px = quantise_pixel(px, p.eps, d[(c * H + y) * W + x]);
        }
  }
  data::Dataset out = clean;
  out.images = images.to(clean.device());
  out.name = clean.name + "+" + (p.attack.empty() ? "poison" : p.attack);
  return out;
}

void check_fingerprint(const Poison& p, const data::Dataset& clean, const std::string& path, bool ignore) {
  const std::string where = "poison file " + path;
  if (p.data_fingerprint.empty()) {
    std::fprintf(stderr,
                 "warning: %s records no data fingerprint (an older file): cannot check that it is applied to the "
                 "images it was made for\n",
                 path.c_str());
    return;
  }
  const std::string found = data::fingerprint(clean);
  if (found == p.data_fingerprint) return;
  std::string made_for = "dataset '" + p.dataset + "', subset " + std::to_string(p.subset);
  if (p.subset > 0 && p.subset_seed >= 0) made_for += " with --subset-seed " + std::to_string(p.subset_seed);
  made_for += ", " + std::to_string(p.image_count) + " images";
  if (ignore) {
    std::fprintf(stderr,
                 "warning: %s was made for other images (%s; data fingerprint %s, these %s): applied anyway "
                 "(--ignore-fingerprint)\n",
                 path.c_str(), made_for.c_str(), p.data_fingerprint.c_str(), found.c_str());
    return;
  }
  fail(where, "the training images here ('", clean.name, "', ", clean.size(), " images; data fingerprint ", found,
       ") differ from those the poison was made for (", made_for, "; data fingerprint ", p.data_fingerprint,
       "): give the data options it was made for (--data, --subset, --subset-seed, --pad-to, --channels), or "
       "--ignore-fingerprint to apply it anyway");
}

data::Dataset apply_poison_file(const data::Dataset& clean, const std::string& path, bool ignore_fingerprint) {
  Poison p = load_poison(path);
  check_fingerprint(p, clean, path, ignore_fingerprint);
  return apply_poison(clean, p);
}

std::string poison_digest(const Poison& p) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 offset basis
  auto mix = [&h](const void* bytes, size_t n) {
    const auto* b = static_cast<const uint8_t*>(bytes);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  const std::string kind = noise_kind_name(p.kind);  // the name, as digests made before the enum hashed it
  mix(kind.data(), kind.size());
  mix(&p.eps, sizeof p.eps);
  Tensor delta = p.delta.to(Device::cpu).contiguous(), indices = p.indices.to(Device::cpu).contiguous();
  for (int64_t d : delta.shape()) mix(&d, sizeof d);
  mix(delta.raw_data(), (size_t)delta.numel() * sizeof(float));
  mix(indices.raw_data(), (size_t)indices.numel() * sizeof(int64_t));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

}  // namespace cpoison::poison
