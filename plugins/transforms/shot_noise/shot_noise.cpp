// shot_noise: Poisson photon noise, x' = Poisson(lambda x) / lambda, lambda = 60..3 (ImageNet-C).
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const double lambda = xdq::transforms::at_severity<double>({60, 25, 12, 5, 3}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG& rng) {
      for (auto it = img.begin<float>(); it != img.end<float>(); ++it) {
        // Knuth sampling: lambda * x <= 60 keeps it short.
        const double limit = std::exp(-lambda * std::max(0.0f, *it));
        int k = 0;
        for (double p = rng.uniform(0.0, 1.0); p > limit; p *= rng.uniform(0.0, 1.0)) ++k;
        *it = static_cast<float>(k / lambda);
      }
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "shot_noise", "1.0.0", "Poisson shot noise", schema, create)
