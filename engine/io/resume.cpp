#include "engine/io/resume.h"

#include <cstdio>

namespace cpoison::io {

namespace {

bool same_value(const nlohmann::ordered_json& a, const nlohmann::ordered_json& b) {
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  return a == b;
}

void collect(const nlohmann::ordered_json& recorded, const nlohmann::ordered_json& current, const std::string& prefix,
             std::vector<SettingChange>& out) {
  if (recorded.is_object() && current.is_object()) {
    for (auto it = current.begin(); it != current.end(); ++it) {
      const std::string field = prefix.empty() ? it.key() : prefix + "." + it.key();
      auto r = recorded.find(it.key());
      if (r == recorded.end()) out.push_back({field, "(absent)", it.value().dump()});
      else collect(*r, it.value(), field, out);
    }
    for (auto it = recorded.begin(); it != recorded.end(); ++it)
      if (!current.contains(it.key()))
        out.push_back({prefix.empty() ? it.key() : prefix + "." + it.key(), it.value().dump(), "(absent)"});
    return;
  }
  if (!same_value(recorded, current)) out.push_back({prefix.empty() ? "(settings)" : prefix, recorded.dump(), current.dump()});
}

}  // namespace

std::vector<SettingChange> setting_changes(const nlohmann::ordered_json& recorded, const nlohmann::ordered_json& current) {
  std::vector<SettingChange> out;
  collect(recorded, current, "", out);
  return out;
}

void check_resume_settings(const Attrs& attrs, const std::string& checkpoint, const nlohmann::ordered_json& current,
                           bool allow_changed, const std::string& allow_flag) {
  const std::string where = "resume from " + checkpoint;
  auto it = attrs.find(kSettingsAttr);
  nlohmann::ordered_json recorded;
  if (it == attrs.end() || !std::holds_alternative<std::string>(it->second)) {
    if (allow_changed) {
      std::fprintf(stderr, "warning: %s records no settings (an older checkpoint); resuming under this run's (%s)\n",
                   checkpoint.c_str(), allow_flag.c_str());
      return;
    }
    fail(where, "the checkpoint records no settings (attribute '", kSettingsAttr,
         "'; written by an older cpoison), so this run cannot prove it continues under the same ones; pass ",
         allow_flag, " to resume it anyway");
  }
  recorded = nlohmann::ordered_json::parse(std::get<std::string>(it->second), nullptr, /*allow_exceptions=*/false);
  CP_CHECK(recorded.is_object(), where, "attribute '", kSettingsAttr, "' is not a JSON object");
  const std::vector<SettingChange> changes = setting_changes(recorded, current);
  if (changes.empty()) return;
  if (allow_changed) {
    for (const auto& c : changes)
      std::fprintf(stderr, "warning: resuming %s with changed setting %s: %s in the checkpoint, now %s (%s)\n",
                   checkpoint.c_str(), c.field.c_str(), c.recorded.c_str(), c.current.c_str(), allow_flag.c_str());
    return;
  }
  const SettingChange& c = changes.front();
  fail(where, "setting '", c.field, "' differs: the checkpoint was made with ", c.recorded, ", this run asks for ",
       c.current, changes.size() > 1 ? " (and " + std::to_string(changes.size() - 1) + " more)" : std::string(),
       "; give the same settings, train afresh without --resume, or pass ", allow_flag, " to continue under the new ones");
}

void check_resume_progress(int64_t done, int64_t total, const std::string& checkpoint, const std::string& what,
                           const std::string& attr, const std::string& flag) {
  CP_CHECK(done >= 0, "resume from " + checkpoint, "attribute '", attr, "' is ", done, ": the ", what,
           " done must be >= 0");
  CP_CHECK(done <= total, "resume from " + checkpoint, "the checkpoint has ", done, " ", what, " done (attribute '", attr,
           "') but this run asks for ", flag, " ", total, " in all (give ", flag, " ", done, " or more)");
}

}  // namespace cpoison::io
