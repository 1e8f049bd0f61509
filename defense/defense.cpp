// Defence specifications, their batch transforms and offline dataset preprocessing.
// Layout: batches [N, C, H, W] float, datasets [N, H, W, C] u8.
#include "defense/defense.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "engine/autograd.h"

namespace cpoison::defense {

const char* defense_name(DefenseKind k) {
  switch (k) {
    case DefenseKind::none: return "none";
    case DefenseKind::usvt: return "usvt";
    case DefenseKind::noise: return "noise";
    case DefenseKind::smooth: return "smooth";
    case DefenseKind::cutout: return "cutout";
    case DefenseKind::adversarial: return "adv";
    case DefenseKind::jpeg: return "jpeg";
    case DefenseKind::grayscale: return "grayscale";
    case DefenseKind::bits: return "bits";
    case DefenseKind::ueraser: return "ueraser";
  }
  return "?";
}

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Shortest text that reads back as the same double.
std::string number_text(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// The key=value pairs of one specification, consumed by typed getters; whatever is left at
// the end is an unknown key.
class Params {
public:
  Params(std::string where, std::map<std::string, std::string> kv) : where_(std::move(where)), kv_(std::move(kv)) {}

  bool has(const std::string& key) const { return kv_.count(key) != 0; }

  double number(const std::string& key, double fallback) {
    auto it = kv_.find(key);
    if (it == kv_.end()) return fallback;
    const std::string v = it->second;
    kv_.erase(it);
    auto parse_one = [&](const std::string& text) {
      const std::string t = trim(text);
      char* end = nullptr;
      double d = t.empty() ? NAN : std::strtod(t.c_str(), &end);
      CP_CHECK(!t.empty() && end == t.c_str() + t.size() && std::isfinite(d), where_, "key '", key, "' = '", v,
               "' is not a finite number");
      return d;
    };
    const auto slash = v.find('/');
    if (slash == std::string::npos) return parse_one(v);
    const double num = parse_one(v.substr(0, slash)), den = parse_one(v.substr(slash + 1));
    CP_CHECK(den != 0, where_, "key '", key, "' = '", v, "' divides by zero");
    return num / den;
  }

  int64_t integer(const std::string& key, int64_t fallback) {
    const std::string text = has(key) ? kv_.at(key) : std::string();
    double d = number(key, (double)fallback);
    CP_CHECK(d == std::floor(d) && std::abs(d) < 9e15, where_, "key '", key, "' = '", text, "' is not an integer");
    return (int64_t)d;
  }

  bool flag(const std::string& key, bool fallback) {
    std::string v = word(key, fallback ? "1" : "0");
    if (v == "1" || v == "true" || v == "on" || v == "yes") return true;
    if (v == "0" || v == "false" || v == "off" || v == "no") return false;
    fail(where_, "key '", key, "' = '", v, "' is not a switch (1/0, true/false, on/off)");
  }

  std::string word(const std::string& key, const std::string& fallback) {
    auto it = kv_.find(key);
    if (it == kv_.end()) return fallback;
    std::string v = trim(it->second);
    kv_.erase(it);
    return v;
  }

  std::string choice(const std::string& key, const std::string& fallback, const std::vector<std::string>& allowed) {
    std::string v = word(key, fallback);
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return v;
    std::ostringstream os;
    for (size_t i = 0; i < allowed.size(); ++i) os << (i ? ", " : "") << allowed[i];
    fail(where_, "key '", key, "' = '", v, "' is not one of ", os.str());
  }

  // Error naming the first key nobody asked for.
  void finish(const std::string& name, const std::vector<std::string>& known) {
    if (kv_.empty()) return;
    std::ostringstream os;
    for (size_t i = 0; i < known.size(); ++i) os << (i ? ", " : "") << known[i];
    fail(where_, "unknown key '", kv_.begin()->first, "' = '", kv_.begin()->second, "' for ", name,
         known.empty() ? std::string(" (it takes no parameters)") : " (keys: " + os.str() + ")");
  }

  const std::string& where() const { return where_; }

private:
  std::string where_;
  std::map<std::string, std::string> kv_;
};

// Runs an options struct's validate() and re-raises its message under the specification's name.
template <class F>
void validate_as(const std::string& where, F&& validate) {
  try {
    validate();
  } catch (const Error& e) {
    throw Error(where, e.reason());
  }
}

}  // namespace

std::string Defense::spec() const {
  std::ostringstream os;
  os << defense_name(kind);
  switch (kind) {
    case DefenseKind::none: break;
    case DefenseKind::usvt:
      os << ":p=" << number_text(usvt.p) << ",keep=" << number_text(usvt.keep) << ",mode=" << usvt_mode_name(usvt.mode);
      if (usvt.threshold == UsvtThreshold::chatterjee) os << ",threshold=chatterjee,eta=" << number_text(usvt.eta);
      if (usvt.threshold == UsvtThreshold::absolute) os << ",threshold=" << number_text(usvt.threshold_value);
      break;
    case DefenseKind::noise: os << ":std=" << number_text(noise.std) << ",clip=" << (noise.clip ? 1 : 0); break;
    case DefenseKind::smooth: os << ":k=" << smooth.kernel << ",sigma=" << number_text(smooth.resolved_sigma()); break;
    case DefenseKind::cutout: os << ":size=" << cutout.size; break;
    case DefenseKind::adversarial:
      os << ":eps=" << number_text(adversarial.eps) << ",alpha=" << number_text(adversarial.alpha)
         << ",steps=" << adversarial.steps << ",start=" << (adversarial.random_start ? 1 : 0)
         << ",bn=" << (adversarial.bn == AdversarialOptions::BnMode::batch ? "batch" : "eval")
         << ",both=" << (adversarial.both_views ? 1 : 0) << ",clean=" << number_text(adversarial.clean_weight);
      break;
    case DefenseKind::jpeg: os << ":q=" << jpeg.quality; break;
    case DefenseKind::grayscale: break;
    case DefenseKind::bits: os << ":b=" << bits.bits; break;
    case DefenseKind::ueraser:
      os << ":k=" << ueraser.k << ",strength=" << number_text(ueraser.strength) << ",noise=" << number_text(ueraser.noise);
      break;
  }
  return os.str();
}

Defense parse_defense(const std::string& spec_in) {
  const std::string spec = trim(spec_in);
  const std::string where = "defense '" + spec + "'";
  const auto colon = spec.find(':');
  const std::string name = trim(spec.substr(0, colon));
  std::map<std::string, std::string> kv;
  if (colon != std::string::npos) {
    std::istringstream items(spec.substr(colon + 1));
    std::string item;
    while (std::getline(items, item, ',')) {
      const auto eq = item.find('=');
      const std::string key = trim(item.substr(0, eq));
      CP_CHECK(eq != std::string::npos && !key.empty(), where, "parameter '", trim(item), "' is not KEY=VALUE");
      CP_CHECK(kv.count(key) == 0, where, "key '", key, "' is given twice");
      kv[key] = trim(item.substr(eq + 1));
    }
    CP_CHECK(!kv.empty(), where, "nothing after ':' (write NAME alone or NAME:KEY=VALUE,...)");
  }
  Params params(where, kv);
  Defense d;
  if (name == "none") {
    d.kind = DefenseKind::none;
    params.finish(name, {});
  } else if (name == "usvt") {
    d.kind = DefenseKind::usvt;
    UsvtOptions& o = d.usvt;
    o.p = params.number("p", o.p);
    const std::string threshold = params.word("threshold", "none");
    if (threshold == "chatterjee") {
      o.threshold = UsvtThreshold::chatterjee;
    } else if (threshold != "none") {
      o.threshold = UsvtThreshold::absolute;
      Params one(where, {{"threshold", threshold}});
      o.threshold_value = one.number("threshold", 0);
    }
    CP_CHECK(!params.has("eta") || o.threshold == UsvtThreshold::chatterjee, where, "key 'eta' = '",
             params.word("eta", ""), "' applies only with threshold=chatterjee");
    o.eta = params.number("eta", o.eta);
    // With a threshold, the threshold alone decides unless a fraction is asked for as well.
    o.keep = params.number("keep", o.threshold == UsvtThreshold::none ? o.keep : 1.0);
    o.mode = params.choice("mode", "channel", {"channel", "stacked"}) == "channel" ? UsvtMode::channel
                                                                                   : UsvtMode::stacked;
    params.finish(name, {"p", "keep", "mode", "threshold", "eta"});
    validate_as(where, [&] { o.validate(); });
  } else if (name == "noise") {
    d.kind = DefenseKind::noise;
    d.noise.std = params.number("std", d.noise.std);
    d.noise.clip = params.flag("clip", d.noise.clip);
    params.finish(name, {"std", "clip"});
    validate_as(where, [&] { d.noise.validate(); });
  } else if (name == "smooth") {
    d.kind = DefenseKind::smooth;
    CP_CHECK(!(params.has("k") && params.has("kernel")), where, "give the kernel size once (k or kernel)");
    d.smooth.kernel = params.integer(params.has("kernel") ? "kernel" : "k", d.smooth.kernel);
    d.smooth.sigma = params.number("sigma", d.smooth.sigma);
    params.finish(name, {"k", "kernel", "sigma"});
    validate_as(where, [&] { d.smooth.validate(); });
  } else if (name == "cutout") {
    d.kind = DefenseKind::cutout;
    d.cutout.size = params.integer("size", d.cutout.size);
    params.finish(name, {"size"});
    validate_as(where, [&] { d.cutout.validate(); });
    // A hole of side 0 cuts nothing: asked for by name, that is a mistake, not a defence.
    CP_CHECK(d.cutout.size >= 1, where, "key 'size' = ", d.cutout.size, ": the hole side must be >= 1");
  } else if (name == "adv" || name == "adversarial") {
    d.kind = DefenseKind::adversarial;
    AdversarialOptions& o = d.adversarial;
    o.eps = params.number("eps", o.eps);
    o.alpha = params.number("alpha", o.alpha);
    o.steps = params.integer("steps", o.steps);
    o.random_start = params.flag("start", o.random_start);
    o.bn = params.choice("bn", "batch", {"batch", "eval"}) == "batch" ? AdversarialOptions::BnMode::batch
                                                                      : AdversarialOptions::BnMode::eval;
    o.both_views = params.flag("both", o.both_views);
    o.clean_weight = params.number("clean", o.clean_weight);
    params.finish(name, {"eps", "alpha", "steps", "start", "bn", "both", "clean"});
    validate_as(where, [&] { o.validate(); });
  } else if (name == "jpeg") {
    d.kind = DefenseKind::jpeg;
    CP_CHECK(!(params.has("q") && params.has("quality")), where, "give the quality once (q or quality)");
    d.jpeg.quality = params.integer(params.has("quality") ? "quality" : "q", d.jpeg.quality);
    params.finish(name, {"q", "quality"});
    validate_as(where, [&] { d.jpeg.validate(); });
  } else if (name == "grayscale" || name == "gray" || name == "grey") {
    d.kind = DefenseKind::grayscale;
    params.finish(name, {});
  } else if (name == "bits") {
    d.kind = DefenseKind::bits;
    CP_CHECK(!(params.has("b") && params.has("bits")), where, "give the bit depth once (b or bits)");
    d.bits.bits = params.integer(params.has("bits") ? "bits" : "b", d.bits.bits);
    params.finish(name, {"b", "bits"});
    validate_as(where, [&] { d.bits.validate(); });
  } else if (name == "ueraser") {
    d.kind = DefenseKind::ueraser;
    d.ueraser.k = params.integer("k", d.ueraser.k);
    d.ueraser.strength = params.number("strength", d.ueraser.strength);
    d.ueraser.noise = params.number("noise", d.ueraser.noise);
    params.finish(name, {"k", "strength", "noise"});
    validate_as(where, [&] { d.ueraser.validate(); });
  } else {
    fail(where, "unknown defence '", name, "' (none, usvt, noise, smooth, cutout, adv, jpeg, grayscale, bits, ueraser)");
  }
  return d;
}

Tensor apply_defense(const Defense& d, const Tensor& x, Generator& gen) {
  switch (d.kind) {
    case DefenseKind::none: return x;
    case DefenseKind::usvt: return matrix_completion(x, d.usvt, gen);
    case DefenseKind::noise: return gaussian_noise(x, d.noise, gen);
    case DefenseKind::smooth: return gaussian_smooth(x, d.smooth);
    case DefenseKind::cutout: return cutout(x, d.cutout, gen);
    case DefenseKind::jpeg: return jpeg_compress(x, d.jpeg);
    case DefenseKind::grayscale: return grayscale_images(x);
    case DefenseKind::bits: return reduce_bit_depth(x, d.bits);
    case DefenseKind::adversarial:
    case DefenseKind::ueraser: break;
  }
  fail("defense '" + d.spec() + "'", d.kind == DefenseKind::ueraser ? "UEraser-style training is a training mode, not a batch transform (use defense::train_with_defense)" : "adversarial training is a training mode, not a batch transform "
                                     "(use defense::train_adversarial)");
}

BatchHook defense_batch_hook(const Defense& d) {
  if (d.kind == DefenseKind::none) return {};
  CP_CHECK(d.is_batch_transform(), "defense '" + d.spec() + "'",
           "a training mode (adv, ueraser), not a batch transform (use defense::train_with_defense)");
  return [d](const Tensor& x, const data::Batch&, Generator& gen) { return apply_defense(d, x, gen); };
}

void chain_batch_hook(algorithms::TrainConfig& cfg, const Defense& d) {
  if (auto defend = defense_batch_hook(d)) {
    auto before = cfg.batch_hook;
    cfg.batch_hook = [before, defend](const Tensor& x, const data::Batch& b, Generator& gen) {
      return defend(before ? before(x, b, gen) : x, b, gen);
    };
  }
}

algorithms::TrainResult train_with_defense(const data::Dataset& train_set, const algorithms::TrainConfig& cfg_in,
                                           const Defense& d) {
  if (d.kind == DefenseKind::adversarial) return train_adversarial(train_set, cfg_in, d.adversarial);
  algorithms::TrainConfig cfg = cfg_in;
  if (!cfg.extra_attrs.count("defense")) cfg.extra_attrs["defense"] = d.spec();
  if (d.kind == DefenseKind::ueraser) {
    CP_CHECK(!cfg.step_loss, "defense '" + d.spec() + "'", "sets the loss hook itself; leave cfg.step_loss empty");
    cfg.step_loss = ueraser_loss_hook(cfg, d.ueraser);
  } else {
    chain_batch_hook(cfg, d);
  }
  return algorithms::train(train_set, cfg);
}

data::Dataset defend_dataset(const data::Dataset& ds, const Defense& d, uint64_t seed, int64_t batch_size,
                             Device device, const std::function<void(int64_t, int64_t)>& progress) {
  const std::string where = "defend " + d.spec();
  CP_CHECK(d.is_batch_transform(), where, "a training mode (adv, ueraser); it cannot preprocess a dataset");
  CP_CHECK(batch_size >= 1, where, "batch size must be >= 1, got ", batch_size);
  CP_CHECK(ds.size() > 0 && ds.images.dim() == 4 && ds.images.dtype() == DType::u8, where,
           "needs a non-empty u8 [N, H, W, C] dataset, got ",
           ds.images.defined() ? ds.images.describe() : std::string("no images"));
  autograd::NoGradGuard no_grad;
  const int64_t N = ds.size(), H = ds.height(), W = ds.width(), C = ds.channels();
  Tensor out_images = Tensor::empty({N, H, W, C}, DType::u8, Device::cpu);
  uint8_t* dst = out_images.data<uint8_t>();
  Generator gen(seed, kDefendStream);
  const Tensor images = ds.images.contiguous();
  for (int64_t begin = 0; begin < N; begin += batch_size) {
    const int64_t end = std::min(N, begin + batch_size), B = end - begin;
    Tensor x = data::to_float_nchw(images.slice0(begin, end), device);
    Tensor y = apply_defense(d, x, gen).to(Device::cpu).to(DType::f32).contiguous();
    const float* py = y.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) {
            double v = std::clamp((double)py[((b * C + c) * H + h) * W + w], 0.0, 1.0);
            dst[(((begin + b) * H + h) * W + w) * C + c] = (uint8_t)std::nearbyint(255.0 * v);
          }
    if (progress) progress(end, N);
  }
  data::Dataset out;
  out.images = out_images;
  out.labels = ds.labels.defined() ? ds.labels.to(Device::cpu) : ds.labels;
  out.classes = ds.classes;
  out.name = ds.name;
  out.class_names = ds.class_names;
  out.mean = ds.mean;
  out.std = ds.std;
  out.source_rows = ds.source_rows;
  out.source = "defense " + d.spec() + " (seed " + std::to_string(seed) + ") of " + ds.source;
  return out;
}

}  // namespace cpoison::defense
