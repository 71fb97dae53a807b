#pragma once
// Optimizers and learning-rate schedules shared by the gradient-based algorithms (reconstruction,
// synthesis). Numerics as PyTorch's: torch.optim.Adam (no weight decay, no amsgrad), CosineAnnealingLR
// to zero, ReduceLROnPlateau in 'min' mode with a relative threshold.
#include <cmath>
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace xdq {

class Adam {
 public:
  Adam(std::vector<at::Tensor> params, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  // One update from the parameters' gradients, which it then zeroes.
  void step();
  double lr;

 private:
  std::vector<at::Tensor> params_, m_, v_;
  double beta1_, beta2_, eps_;
  std::int64_t t_ = 0;
};

// 0.5·base·(1 + cos(π·t/total)).
double cosine_lr(double base, std::int64_t t, std::int64_t total);

// ReduceLROnPlateau: after more than `patience` steps without a relative improvement of `threshold`,
// the rate is multiplied by `factor` (not below `min_lr`).
class PlateauSchedule {
 public:
  PlateauSchedule(double patience, double min_lr, double factor = 0.1, double threshold = 1e-4)
      : patience_(patience), min_lr_(min_lr), factor_(factor), threshold_(threshold) {}
  // The rate to use after observing `loss` with rate `lr`.
  double step(double loss, double lr);

 private:
  double patience_, min_lr_, factor_, threshold_;
  double best_ = INFINITY;
  std::int64_t bad_steps_ = 0;
};

}  // namespace xdq
