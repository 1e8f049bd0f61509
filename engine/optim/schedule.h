// Learning-rate schedules as pure functions of the step (or epoch) index, so a resumed run gets
// exactly the rate it would have had: lr = schedule.at(t). The unit of t is the caller's
// (optimizer steps, epochs, or fractional epochs such as epoch + batch / batches_per_epoch).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cpoison::optim {

class LrSchedule {
public:
  enum class Kind { constant, warmup_cosine, multistep };

  // lr(t) = lr.
  static LrSchedule constant(double lr);
  // Linear warm-up from warmup_start_lr at t = 0 to base_lr at t = warmup, then a half cosine
  // from base_lr at t = warmup to final_lr at t = total, and final_lr from then on:
  //   t < W:      start + (base - start) * t / W
  //   W <= t < T: final + (base - final) * (1 + cos(pi * (t - W) / (T - W))) / 2
  //   t >= T:     final
  // Throws Error unless 0 <= warmup <= total, total > 0 and every rate is >= 0.
  static LrSchedule warmup_cosine(double base_lr, double total, double warmup = 0, double warmup_start_lr = 0,
                                  double final_lr = 0);
  // lr(t) = base_lr * gamma^(number of milestones <= t), PyTorch's MultiStepLR.
  // Throws Error unless the milestones are >= 0 and strictly increasing, and gamma > 0.
  static LrSchedule multistep(double base_lr, std::vector<double> milestones, double gamma);

  // The rate at t >= 0 (Error for a negative or non-finite t).
  double at(double t) const;
  Kind kind() const { return kind_; }
  double base_lr() const { return base_lr_; }
  std::string describe() const;  // "warmup_cosine(base 0.3, warm-up 0 -> 0.3 over 20, to 0 at 600)"

private:
  Kind kind_ = Kind::constant;
  double base_lr_ = 0, total_ = 0, warmup_ = 0, warmup_start_lr_ = 0, final_lr_ = 0, gamma_ = 1;
  std::vector<double> milestones_;
};

}  // namespace cpoison::optim
