#include "xdq/experiment/diagnostics.h"

#include <ATen/core/grad_mode.h>

namespace xdq {

namespace {

constexpr int kBins = 256;

struct Tally {
  std::vector<double> hist = std::vector<double>(kBins, 0.0);
  double total = 0, clipped = 0;
};

// FP forward passes over `images`, counting for every activation quantizer the values outside its range
// and (with `histograms`) their histogram over the widened range.
std::vector<Tally> tally(const QuantizedModel& q, const at::Tensor& images, std::int64_t batch_size, bool histograms) {
  const auto& acts = q.activations();
  std::vector<Tally> out(acts.size());
  Executor exec(q.graph());
  for (std::size_t i = 0; i < acts.size(); ++i) {
    const Range r = acts[i].range;
    const double width = std::max(r.max - r.min, 1e-12);
    const double lo = r.min - width, hi = r.max + width;
    Tally* t = &out[i];
    exec.set_value_hook(acts[i].value, [t, r, lo, hi, histograms](const at::Tensor& x) {
      const at::Tensor flat = x.detach().reshape({-1}).to(at::kDouble);
      t->total += static_cast<double>(flat.numel());
      t->clipped += (flat.lt(r.min) | flat.gt(r.max)).sum().item<double>();
      if (!histograms) return x;
      const at::Tensor h = at::histc(flat.clamp(lo, hi), kBins, lo, hi).cpu();
      const auto* hp = h.data_ptr<double>();
      for (int b = 0; b < kBins; ++b) t->hist[b] += hp[b];
      return x;
    });
  }
  at::NoGradGuard no_grad;
  for (std::int64_t b = 0; b < images.size(0); b += batch_size)
    exec.forward(images.slice(0, b, std::min(images.size(0), b + batch_size)));
  return out;
}

double fraction_clipped(const Tally& t) { return t.total > 0 ? t.clipped / t.total : 0.0; }

}  // namespace

std::vector<LayerShift> measure_layer_shift(const QuantizedModel& calibrated, const at::Tensor& reference,
                                            const std::vector<std::pair<std::string, at::Tensor>>& tests,
                                            std::int64_t batch_size) {
  const auto ref = tally(calibrated, reference, batch_size, true);
  std::vector<LayerShift> out;
  for (const auto& [name, images] : tests) {
    const auto on_b = tally(calibrated, images, batch_size, true);
    for (std::size_t i = 0; i < on_b.size(); ++i) {
      LayerShift s;
      s.layer = calibrated.activations()[i].name;
      s.domain = name;
      s.clipped_fraction = fraction_clipped(on_b[i]);
      double tv = 0;
      for (int b = 0; b < kBins; ++b)
        tv += std::abs(ref[i].hist[b] / std::max(ref[i].total, 1.0) - on_b[i].hist[b] / std::max(on_b[i].total, 1.0));
      s.tv_distance = 0.5 * tv;
      out.push_back(s);
    }
  }
  return out;
}

std::vector<std::pair<std::string, double>> clipped_fractions(const QuantizedModel& calibrated, const at::Tensor& images,
                                                              std::int64_t batch_size) {
  const auto tallies = tally(calibrated, images, batch_size, false);
  std::vector<std::pair<std::string, double>> out;
  for (std::size_t i = 0; i < tallies.size(); ++i)
    out.emplace_back(calibrated.activations()[i].name, fraction_clipped(tallies[i]));
  return out;
}

}  // namespace xdq
