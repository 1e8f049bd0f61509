// Resumed runs refuse changed settings. A run records its resolved settings as one JSON object,
// the `settings` attribute of every checkpoint it writes (training checkpoints and poison
// generation checkpoints); a resume compares the recorded object with its own and stops at the
// first field that differs, unless the caller allows changes (`--allow-changed`), which turns
// the refusal into a warning listing every changed field.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/io/hdf5.h"

namespace cpoison::io {

// The checkpoint attribute holding the settings (a JSON object as a string).
inline constexpr const char* kSettingsAttr = "settings";

struct SettingChange {
  std::string field;     // dotted path ("algo.temperature"); a key present on one side only counts
  std::string recorded;  // JSON text of the checkpoint's value ("(absent)" when it has none)
  std::string current;   // JSON text of this run's value
};

// Every field whose value differs, in the order of `current`'s keys (then keys only in
// `recorded`). Objects are compared field by field; numbers compare equal when their JSON texts
// are equal or both are numbers with the same double value.
std::vector<SettingChange> setting_changes(const nlohmann::ordered_json& recorded, const nlohmann::ordered_json& current);

// Checks that a run resuming from `checkpoint` (whose attributes are `attrs`) asks for the
// settings it was made with. Error naming the checkpoint, the first differing field with both
// values, and `allow_flag`; with allow_changed, one warning line per changed field on stderr.
// A checkpoint without settings (written before they were recorded) is refused the same way.
void check_resume_settings(const Attrs& attrs, const std::string& checkpoint, const nlohmann::ordered_json& current,
                           bool allow_changed, const std::string& allow_flag = "--allow-changed");

// A resume whose `done` progress (epochs, rounds; the checkpoint's attribute `attr`) is negative
// or exceeds the requested `total` is refused: Error naming the checkpoint, the attribute,
// `what` ("epochs"), both numbers and `flag` ("--epochs").
void check_resume_progress(int64_t done, int64_t total, const std::string& checkpoint, const std::string& what,
                           const std::string& attr, const std::string& flag);

}  // namespace cpoison::io
