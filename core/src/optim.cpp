#include "xdq/optim.h"

#include <algorithm>

#include <ATen/core/grad_mode.h>

namespace xdq {

Adam::Adam(std::vector<at::Tensor> params, double learning_rate, double beta1, double beta2, double eps)
    : lr(learning_rate), params_(std::move(params)), beta1_(beta1), beta2_(beta2), eps_(eps) {
  for (const auto& x : params_) {
    m_.push_back(at::zeros_like(x));
    v_.push_back(at::zeros_like(x));
  }
}

void Adam::step() {
  ++t_;
  at::NoGradGuard no_grad;
  const double c1 = 1 - std::pow(beta1_, t_), c2 = 1 - std::pow(beta2_, t_);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    at::Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    m_[i].mul_(beta1_).add_(g, 1 - beta1_);
    v_[i].mul_(beta2_).addcmul_(g, g, 1 - beta2_);
    params_[i].addcdiv_(m_[i], (v_[i].sqrt() / std::sqrt(c2)).add_(eps_), -lr / c1);
    g.zero_();
  }
}

double cosine_lr(double base, std::int64_t t, std::int64_t total) {
  return 0.5 * base * (1 + std::cos(M_PI * static_cast<double>(t) / static_cast<double>(std::max<std::int64_t>(total, 1))));
}

double PlateauSchedule::step(double loss, double lr) {
  if (loss < best_ * (1 - threshold_)) {
    best_ = loss;
    bad_steps_ = 0;
    return lr;
  }
  if (++bad_steps_ <= patience_) return lr;
  bad_steps_ = 0;
  return std::max(lr * factor_, min_lr_);
}

}  // namespace xdq
