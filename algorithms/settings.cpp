#include "algorithms/settings.h"

namespace cpoison::algorithms {

nlohmann::ordered_json augment_settings(const augment::AugmentConfig& a) {
  return {{"out_h", a.out_h},
          {"out_w", a.out_w},
          {"crop", a.crop},
          {"scale", {a.scale_min, a.scale_max}},
          {"ratio", {a.ratio_min, a.ratio_max}},
          {"flip", a.flip},
          {"flip_p", a.flip_p},
          {"jitter", a.jitter},
          {"jitter_p", a.jitter_p},
          {"jitter_ops", {a.brightness, a.contrast, a.saturation, a.hue}},
          {"jitter_strengths", {a.brightness_strength, a.contrast_strength, a.saturation_strength, a.hue_strength}},
          {"random_jitter_order", a.random_jitter_order},
          {"grayscale", a.grayscale},
          {"grayscale_p", a.grayscale_p},
          {"normalize", a.normalize},
          {"mean", a.mean},
          {"std", a.std}};
}

nlohmann::ordered_json algo_settings(const AlgoConfig& c) {
  return {{"temperature", c.temperature}, {"ema_momentum", c.momentum},   {"queue_size", c.queue_size},
          {"proj_hidden", c.proj_hidden}, {"proj_dim", c.proj_dim},       {"pred_hidden", c.pred_hidden},
          {"dual_branch", c.dual_branch}, {"byol_detach_target", c.byol_detach_target},
          {"loss_scale", c.loss_scale},   {"seed", c.seed}};
}

nlohmann::ordered_json model_settings(const std::string& model, const models::ModelOptions& o) {
  return {{"name", model}, {"width", o.width}, {"in_channels", o.in_channels}, {"num_classes", o.num_classes}};
}

}  // namespace cpoison::algorithms
