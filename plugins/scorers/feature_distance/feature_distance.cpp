// feature_distance: distribution distances between the calibration set and the target sample in the FP
// model's penultimate features (the classifier's input), all in double:
//   frechet          ||μ_S − μ_T||² + Tr(Σ_S + Σ_T − 2 (Σ_S Σ_T)^½), covariances with n − 1 (the FID formula;
//                    Tr (Σ_S Σ_T)^½ is the sum of the square roots of the eigenvalues of Σ_S^½ Σ_T Σ_S^½);
//   mmd              the unbiased estimate of the squared maximum mean discrepancy with the Gaussian kernel
//                    exp(−||x − y||² / (2 h²)), h the median distance between the pooled features (or `bandwidth`);
//   gram_similarity  cosine (Frobenius) between the two feature Gram matrices G = FᵀF / n, the style
//                    statistic whose source/calibration similarity tracked cross-domain calibration accuracy.
#include <cmath>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

// Σ_S^½ for a symmetric positive semi-definite matrix (negative rounding eigenvalues clamped to 0).
at::Tensor psd_sqrt(const at::Tensor& m) {
  const auto [values, vectors] = at::linalg_eigh(m);
  return vectors.matmul(at::diag(values.clamp_min(0).sqrt())).matmul(vectors.t());
}

double frechet(const at::Tensor& s, const at::Tensor& t) {
  const at::Tensor ms = s.mean(0), mt = t.mean(0);
  const at::Tensor cs = (s - ms).t().matmul(s - ms) / static_cast<double>(s.size(0) - 1);
  const at::Tensor ct = (t - mt).t().matmul(t - mt) / static_cast<double>(t.size(0) - 1);
  const at::Tensor root = psd_sqrt(cs);
  const at::Tensor inner = root.matmul(ct).matmul(root);
  const double cross = at::linalg_eigvalsh(0.5 * (inner + inner.t())).clamp_min(0).sqrt().sum().item<double>();
  return (ms - mt).pow(2).sum().item<double>() + cs.trace().item<double>() + ct.trace().item<double>() - 2 * cross;
}

double mmd(const at::Tensor& s, const at::Tensor& t, double bandwidth) {
  if (bandwidth <= 0) {
    const at::Tensor pooled = at::cat({s, t});
    const at::Tensor d = at::cdist(pooled, pooled);
    const at::Tensor upper = d.masked_select(at::ones_like(d, at::kBool).triu(1));
    bandwidth = upper.median().item<double>();
    if (bandwidth <= 0) bandwidth = 1.0;  // more than half the pairs coincide
  }
  const auto kernel = [&](const at::Tensor& a, const at::Tensor& b) { return (-at::cdist(a, b).pow(2) / (2 * bandwidth * bandwidth)).exp(); };
  const double m = static_cast<double>(s.size(0)), n = static_cast<double>(t.size(0));
  const at::Tensor kss = kernel(s, s), ktt = kernel(t, t);
  const double ss = (kss.sum().item<double>() - kss.diagonal().sum().item<double>()) / (m * (m - 1));
  const double tt = (ktt.sum().item<double>() - ktt.diagonal().sum().item<double>()) / (n * (n - 1));
  return ss + tt - 2 * kernel(s, t).mean().item<double>();
}

double gram_similarity(const at::Tensor& s, const at::Tensor& t) {
  const at::Tensor gs = s.t().matmul(s) / static_cast<double>(s.size(0)), gt = t.t().matmul(t) / static_cast<double>(t.size(0));
  return (gs * gt).sum().item<double>() / (gs.norm().item<double>() * gt.norm().item<double>());
}

class FeatureDistance : public xdq::Scorer {
 public:
  explicit FeatureDistance(double bandwidth) : bandwidth_(bandwidth) {}
  std::vector<xdq::ScoreInfo> scores() const override {
    return {{"frechet", false, "Frechet distance of penultimate features, set vs target"},
            {"mmd", false, "squared MMD (Gaussian kernel, median bandwidth) of penultimate features, set vs target"},
            {"gram_similarity", true, "cosine of the penultimate-feature Gram matrices of set and target"}};
  }
  xdq::FeatureRequest features() const override {
    xdq::FeatureRequest r;
    r.penultimate = true;
    return r;
  }
  std::vector<double> score(const xdq::ScoringInputs& in) const override {
    const at::Tensor s = in.calibration_features.penultimate.to(at::kDouble), t = in.target_features.penultimate.to(at::kDouble);
    if (s.size(0) < 2 || t.size(0) < 2)
      throw xdq::Error("feature_distance: needs two images or more in both the set and the target sample");
    return {frechet(s, t), mmd(s, t, bandwidth_), gram_similarity(s, t)};
  }

 private:
  double bandwidth_;
};

const xdq::Option<double> kBandwidth =
    xdq::OptionSpec::number("bandwidth", 0.0, "Gaussian kernel width h of mmd (0: the median pairwise distance)").range(0, 1e12);
xdq::OptionSchema schema() { return {kBandwidth.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new FeatureDistance(kBandwidth(o)); }

}  // namespace

XDQ_PLUGIN(xdq::Scorer, "feature_distance", "1.0.0", "Frechet distance, MMD and Gram similarity of penultimate features, set vs target", schema, create)
