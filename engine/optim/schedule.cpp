#include "engine/optim/schedule.h"

#include <cmath>
#include <numbers>
#include <sstream>

#include "engine/error.h"

namespace cpoison::optim {

LrSchedule LrSchedule::constant(double lr) {
  CP_CHECK(std::isfinite(lr) && lr >= 0, "LrSchedule::constant", "learning rate must be finite and >= 0, got ", lr);
  LrSchedule s;
  s.kind_ = Kind::constant;
  s.base_lr_ = lr;
  return s;
}

LrSchedule LrSchedule::warmup_cosine(double base_lr, double total, double warmup, double warmup_start_lr, double final_lr) {
  const char* where = "LrSchedule::warmup_cosine";
  CP_CHECK(std::isfinite(base_lr) && base_lr >= 0 && std::isfinite(warmup_start_lr) && warmup_start_lr >= 0 &&
               std::isfinite(final_lr) && final_lr >= 0,
           where, "rates must be finite and >= 0, got base ", base_lr, ", warm-up start ", warmup_start_lr, ", final ", final_lr);
  CP_CHECK(std::isfinite(total) && total > 0, where, "total length must be > 0, got ", total);
  CP_CHECK(warmup >= 0 && warmup <= total, where, "warm-up length ", warmup, " must lie in [0, total = ", total, "]");
  LrSchedule s;
  s.kind_ = Kind::warmup_cosine;
  s.base_lr_ = base_lr;
  s.total_ = total;
  s.warmup_ = warmup;
  s.warmup_start_lr_ = warmup_start_lr;
  s.final_lr_ = final_lr;
  return s;
}

LrSchedule LrSchedule::multistep(double base_lr, std::vector<double> milestones, double gamma) {
  const char* where = "LrSchedule::multistep";
  CP_CHECK(std::isfinite(base_lr) && base_lr >= 0, where, "learning rate must be finite and >= 0, got ", base_lr);
  CP_CHECK(std::isfinite(gamma) && gamma > 0, where, "gamma must be finite and > 0, got ", gamma);
  for (size_t i = 0; i < milestones.size(); ++i) {
    CP_CHECK(milestones[i] >= 0, where, "milestones must be >= 0, got ", milestones);
    CP_CHECK(i == 0 || milestones[i] > milestones[i - 1], where, "milestones must increase strictly, got ", milestones);
  }
  LrSchedule s;
  s.kind_ = Kind::multistep;
  s.base_lr_ = base_lr;
  s.gamma_ = gamma;
  s.milestones_ = std::move(milestones);
  return s;
}

double LrSchedule::at(double t) const {
  CP_CHECK(std::isfinite(t) && t >= 0, "LrSchedule::at", "step must be finite and >= 0, got ", t);
  switch (kind_) {
    case Kind::constant:
      return base_lr_;
    case Kind::warmup_cosine:
      if (t < warmup_) return warmup_start_lr_ + (base_lr_ - warmup_start_lr_) * t / warmup_;
      if (t >= total_) return final_lr_;
      return final_lr_ + (base_lr_ - final_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * (t - warmup_) / (total_ - warmup_)));
    case Kind::multistep: {
      double lr = base_lr_;
      for (double m : milestones_)
        if (t >= m) lr *= gamma_;
      return lr;
    }
  }
  return base_lr_;
}

std::string LrSchedule::describe() const {
  std::ostringstream os;
  switch (kind_) {
    case Kind::constant:
      os << "constant(" << base_lr_ << ")";
      break;
    case Kind::warmup_cosine:
      os << "warmup_cosine(base " << base_lr_ << ", warm-up " << warmup_start_lr_ << " -> " << base_lr_ << " over " << warmup_
         << ", to " << final_lr_ << " at " << total_ << ")";
      break;
    case Kind::multistep:
      os << "multistep(base " << base_lr_ << ", x" << gamma_ << " at [";
      for (size_t i = 0; i < milestones_.size(); ++i) os << (i ? ", " : "") << milestones_[i];
      os << "])";
      break;
  }
  return os.str();
}

}  // namespace cpoison::optim
