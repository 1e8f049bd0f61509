#include "engine/progress.h"

#include "engine/progress_log.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/error.h"

namespace cpoison {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", (int)(s / 3600), (int)std::fmod(s / 60, 60));
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", (int)(s / 60), (int)std::fmod(s, 60));
  else std::snprintf(buf, sizeof buf, "%.1fs", s);
  return buf;
}

Progress::Progress(Options options) : opt_(std::move(options)), start_(Clock::now()), last_print_(start_) {
  if (opt_.log_path.empty()) return;
  // On resume keep the lines of the units the checkpoint holds; later ones (written after the
  // last checkpoint by the killed run) are run again and logged again.
  std::vector<std::string> kept;
  if (opt_.start > 0) {
    std::ifstream old(opt_.log_path);
    for (std::string line; std::getline(old, line);) {
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains(opt_.unit) && j[opt_.unit].is_number_integer() &&
          j[opt_.unit].get<int64_t>() <= opt_.start)
        kept.push_back(line);
    }
  }
  log_.open(opt_.log_path, std::ios::trunc);
  CP_CHECK(log_.good(), opt_.log_path, "cannot open the ", opt_.run, " log for writing");
  for (auto& line : kept) log_ << line << "\n";
  log_.flush();
}

void Progress::note(const std::string& text) const {
  if (!quiet()) std::fprintf(stderr, "[%s] %s\n", opt_.tag.c_str(), text.c_str());
}

double Progress::elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

double Progress::eta(double work_done) const {
  const double left = (double)(opt_.total - opt_.start) - work_done;
  return work_done > 0 ? elapsed() / work_done * left : NAN;
}

void Progress::begin_unit(int64_t unit) {
  unit_ = unit;
  unit_start_ = Clock::now();
}

double Progress::unit_seconds() const { return std::chrono::duration<double>(Clock::now() - unit_start_).count(); }

void Progress::print(const std::string& position, const std::string& metrics, double rate, double unit_seconds,
                     double eta) {
  std::string line = "[" + opt_.tag + "] " + position;
  if (!metrics.empty()) line += "  " + metrics;
  char buf[64];
  std::snprintf(buf, sizeof buf, "  %.0f %s", rate, opt_.rate_unit.c_str());
  line += buf;
  if (unit_seconds >= 0) line += "  " + format_duration(unit_seconds) + "/" + opt_.unit;
  line += "  ETA " + format_duration(eta);
  std::fprintf(stderr, "%s\n", line.c_str());
  last_print_ = Clock::now();
}

void Progress::step(int64_t step, int64_t steps, double items, const std::string& metrics) {
  this->step(step, steps, items, [&metrics] { return metrics; });
}

void Progress::step(int64_t step, int64_t steps, double items, const std::function<std::string()>& metrics) {
  if (quiet() || step >= steps) return;
  if (std::chrono::duration<double>(Clock::now() - last_print_).count() < opt_.seconds) return;
  const double secs = unit_seconds();
  const double work = (double)(unit_ - opt_.start) + (double)step / (double)steps;
  print(opt_.unit + " " + std::to_string(unit_ + 1) + "/" + std::to_string(opt_.total) + " step " + std::to_string(step) +
            "/" + std::to_string(steps),
        metrics(), items / secs, -1, eta(work));
}

void Progress::unit_done(double unit_seconds, double items, const std::string& metrics,
                         const nlohmann::ordered_json& fields) {
  const int64_t done = unit_ + 1;
  const double rate = items / std::max(unit_seconds, 1e-9);
  const double left = eta((double)(done - opt_.start));
  if (!quiet() && (opt_.every_unit || done == opt_.start + 1 || done == opt_.total ||
                   std::chrono::duration<double>(Clock::now() - last_print_).count() >= opt_.seconds))
    print(opt_.unit + " " + std::to_string(done) + "/" + std::to_string(opt_.total), metrics, rate, unit_seconds, left);
  if (!log_.is_open()) return;
  nlohmann::ordered_json j;
  j["run"] = opt_.run;
  j["unit"] = opt_.unit;
  j[opt_.unit] = done;
  j[opt_.unit + "s"] = opt_.total;
  j["seconds"] = unit_seconds;
  j["elapsed"] = elapsed();
  j["eta"] = std::isfinite(left) ? nlohmann::ordered_json(left) : nlohmann::ordered_json(nullptr);
  j["rate"] = rate;
  j["rate_unit"] = opt_.rate_unit;
  for (const auto& [key, value] : fields.items()) j[key] = value;
  log_ << j.dump() << "\n";
  log_.flush();
}

}  // namespace cpoison
