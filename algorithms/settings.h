// The resolved settings of a run as JSON, for the `settings` attribute of checkpoints: a resumed
// run compares them with its own (engine/io/resume.h) and refuses the first that differs.
#pragma once
#include <nlohmann/json.hpp>

#include "algorithms/learner.h"
#include "augment/augment.h"
#include "models/encoder.h"

namespace cpoison::algorithms {

// Every field of the augmentation pipeline (sizes, probabilities, strengths, normalisation).
nlohmann::ordered_json augment_settings(const augment::AugmentConfig& a);
// Every field of the learner's configuration (temperature, EMA, queue, heads, loss scale, seed).
nlohmann::ordered_json algo_settings(const AlgoConfig& c);
// The backbone's options (width, in_channels, num_classes).
nlohmann::ordered_json model_settings(const std::string& model, const models::ModelOptions& o);

}  // namespace cpoison::algorithms
