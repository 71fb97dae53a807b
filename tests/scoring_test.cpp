// Scorer plugins (loaded from disk) on small hand-made inputs, each against a computation written here
// from its definition: loops in double, closed forms (the 2 x 2 Frechet trace, a checkerboard's spectrum),
// never the plugin's own tensor algebra; and the validation of scores against realized top-1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "test_util.h"
#include "xdq/plugin/interfaces.h"
#include "xdq/report/score_validation.h"

using namespace xdq;
using namespace xdq::test;

namespace {

std::vector<double> score_with(const std::string& name, const ScoringInputs& in, std::map<std::string, OptionValue> options = {}) {
  const Options defaults = default_options(built_plugins().get(PluginKind::Scorer, name).options);
  for (const auto& [key, value] : defaults.values()) options.emplace(key, value);
  return built_plugins().load<Scorer>(name, Options(options)).call("score", [&](const Scorer& s) { return s.score(in); });
}

at::Tensor random_features(std::int64_t n, std::int64_t f, double shift, std::uint64_t seed) {
  at::manual_seed(seed);
  return at::randn({n, f}, at::kDouble) * 0.7 + shift;
}

double at2(const at::Tensor& t, std::int64_t i, std::int64_t j) { return t.index({i, j}).item<double>(); }

// ||μ_S − μ||₂ + ||σ_S − σ||₂ per BN site from per-image means and mean squares, averaged over sites.
TEST(Scorers, BnDistanceIsTheMomentDistanceToTheRunningStatistics) {
  ScoringInputs in;
  for (int site = 0; site < 2; ++site) {
    SiteFeatures s;
    s.mean = random_features(6, 3, site, 1 + site);
    s.square = s.mean * s.mean + random_features(6, 3, 0, 11 + site).abs();
    s.running_mean = at::tensor({0.1, -0.2, 0.3}, at::kDouble);
    s.running_var = at::tensor({1.0, 0.5, 2.0}, at::kDouble);
    in.calibration_features.bn_inputs.push_back(s);
  }
  double expected = 0;
  for (const SiteFeatures& s : in.calibration_features.bn_inputs) {
    double dm = 0, ds = 0;
    for (int c = 0; c < 3; ++c) {
      double m = 0, q = 0;
      for (int i = 0; i < 6; ++i) m += at2(s.mean, i, c) / 6, q += at2(s.square, i, c) / 6;
      dm += std::pow(m - s.running_mean[c].item<double>(), 2);
      ds += std::pow(std::sqrt(q - m * m) - std::sqrt(s.running_var[c].item<double>()), 2);
    }
    expected += (std::sqrt(dm) + std::sqrt(ds)) / 2;
  }
  EXPECT_NEAR(score_with("bn_distance", in)[0], expected, 1e-12);
  EXPECT_THROW(score_with("bn_distance", ScoringInputs{}), Error);  // no BatchNorm: refused
}

// Frechet in 2-D: Tr (Σ_S Σ_T)^½ = sqrt(tr(Σ_S Σ_T) + 2 sqrt(det Σ_S det Σ_T)) (its two eigenvalues are
// real and non-negative); MMD² (unbiased, given bandwidth) and Gram cosine by loops; the median bandwidth
// is the lower middle of the pooled pairwise distances.
TEST(Scorers, FeatureDistancesAgainstLoopsAndTheTwoByTwoClosedForm) {
  ScoringInputs in;
  in.calibration_features.penultimate = random_features(9, 2, 0.0, 3);
  in.target_features.penultimate = random_features(7, 2, 0.8, 4) * at::tensor({1.5, 0.6}, at::kDouble);
  const at::Tensor& s = in.calibration_features.penultimate;
  const at::Tensor& t = in.target_features.penultimate;
  const auto moments = [](const at::Tensor& x, double mu[2], double cov[2][2]) {
    const std::int64_t n = x.size(0);
    for (int a = 0; a < 2; ++a) {
      mu[a] = 0;
      for (std::int64_t i = 0; i < n; ++i) mu[a] += at2(x, i, a) / n;
    }
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) {
        cov[a][b] = 0;
        for (std::int64_t i = 0; i < n; ++i) cov[a][b] += (at2(x, i, a) - mu[a]) * (at2(x, i, b) - mu[b]) / (n - 1);
      }
  };
  double ms[2], mt[2], cs[2][2], ct[2][2];
  moments(s, ms, cs);
  moments(t, mt, ct);
  double trace_product = 0;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) trace_product += cs[a][b] * ct[b][a];
  const double dets = cs[0][0] * cs[1][1] - cs[0][1] * cs[1][0], dett = ct[0][0] * ct[1][1] - ct[0][1] * ct[1][0];
  const double frechet = std::pow(ms[0] - mt[0], 2) + std::pow(ms[1] - mt[1], 2) + cs[0][0] + cs[1][1] + ct[0][0] + ct[1][1] -
                         2 * std::sqrt(trace_product + 2 * std::sqrt(dets * dett));
  const auto dist2 = [](const at::Tensor& a, std::int64_t i, const at::Tensor& b, std::int64_t j) {
    return std::pow(at2(a, i, 0) - at2(b, j, 0), 2) + std::pow(at2(a, i, 1) - at2(b, j, 1), 2);
  };
  const auto mmd = [&](double h) {
    double ss = 0, tt = 0, st = 0;
    const std::int64_t m = s.size(0), n = t.size(0);
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < m; ++j) ss += i == j ? 0 : std::exp(-dist2(s, i, s, j) / (2 * h * h)) / (m * (m - 1));
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) tt += i == j ? 0 : std::exp(-dist2(t, i, t, j) / (2 * h * h)) / (n * (n - 1));
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) st += std::exp(-dist2(s, i, t, j) / (2 * h * h)) / (m * n);
    return ss + tt - 2 * st;
  };
  std::vector<double> pairs;
  const at::Tensor pooled = at::cat({s, t});
  for (std::int64_t i = 0; i < pooled.size(0); ++i)
    for (std::int64_t j = i + 1; j < pooled.size(0); ++j) pairs.push_back(std::sqrt(dist2(pooled, i, pooled, j)));
  std::sort(pairs.begin(), pairs.end());
  const double median = pairs[(pairs.size() - 1) / 2];
  double gs[2][2] = {}, gt[2][2] = {};
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) {
      for (std::int64_t i = 0; i < s.size(0); ++i) gs[a][b] += at2(s, i, a) * at2(s, i, b) / s.size(0);
      for (std::int64_t i = 0; i < t.size(0); ++i) gt[a][b] += at2(t, i, a) * at2(t, i, b) / t.size(0);
    }
  double dot = 0, ns = 0, nt = 0;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) dot += gs[a][b] * gt[a][b], ns += gs[a][b] * gs[a][b], nt += gt[a][b] * gt[a][b];

  const std::vector<double> got = score_with("feature_distance", in);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_NEAR(got[0], frechet, 1e-9 * (1 + frechet));
  EXPECT_NEAR(got[1], mmd(median), 1e-12);
  EXPECT_NEAR(got[2], dot / std::sqrt(ns * nt), 1e-12);
  EXPECT_NEAR(score_with("feature_distance", in, {{"bandwidth", 2.5}})[1], mmd(2.5), 1e-12);
  // The same sample on both sides: Frechet 0, Gram cosine 1.
  in.target_features.penultimate = s;
  const std::vector<double> same = score_with("feature_distance", in);
  EXPECT_NEAR(same[0], 0.0, 1e-9);
  EXPECT_NEAR(same[2], 1.0, 1e-12);
}

// Covering radius, entropy and energy by loops; the high-frequency share of a checkerboard (all power at
// 0.5 cycles per pixel) is 1, of a wave at 1/8 cycle per pixel and of a flat image 0.
TEST(Scorers, SetQualityAgainstLoopsAndKnownSpectra) {
  ScoringInputs in;
  in.calibration_features.penultimate = random_features(8, 3, 0.0, 5);
  in.target_features.penultimate = random_features(5, 3, 0.5, 6);
  in.calibration_features.logits = random_features(8, 4, 0.0, 7) * 3;
  at::Tensor board = at::empty({1, 1, 8, 8}), wave = at::empty({1, 1, 8, 8});
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) {
      board.index_put_({0, 0, y, x}, 0.5 + 0.5 * ((x + y) % 2 ? 1 : -1));
      wave.index_put_({0, 0, y, x}, 0.5 + 0.5 * std::cos(2 * M_PI * x / 8.0));
    }
  in.calibration = at::cat({board, board, board, board, board, board, board, board});
  in.target = at::cat({wave, at::full({1, 1, 8, 8}, 0.3), wave, wave, wave});
  const at::Tensor& s = in.calibration_features.penultimate;
  const at::Tensor& t = in.target_features.penultimate;
  double radius = 0;
  for (std::int64_t i = 0; i < t.size(0); ++i) {
    double nearest = 1e300;
    for (std::int64_t j = 0; j < s.size(0); ++j) {
      double d = 0;
      for (int k = 0; k < 3; ++k) d += std::pow(at2(t, i, k) - at2(s, j, k), 2);
      nearest = std::min(nearest, std::sqrt(d));
    }
    radius = std::max(radius, nearest);
  }
  double entropy = 0, energy = 0;
  const at::Tensor& z = in.calibration_features.logits;
  for (std::int64_t i = 0; i < 8; ++i) {
    double total = 0;
    for (int k = 0; k < 4; ++k) total += std::exp(at2(z, i, k));
    for (int k = 0; k < 4; ++k) {
      const double p = std::exp(at2(z, i, k)) / total;
      entropy -= p * std::log(p) / 8;
    }
    energy -= std::log(total) / 8;
  }
  const std::vector<double> got = score_with("set_quality", in);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_NEAR(got[0], radius, 1e-12);
  EXPECT_NEAR(got[1], entropy, 1e-12);
  EXPECT_NEAR(got[2], energy, 1e-12);
  EXPECT_NEAR(got[3], 1.0, 1e-12);
}

TEST(Scorers, ClippingSummarizesThePerActivationShares) {
  ScoringInputs in;
  in.target_clipped = {{"input", 0.25}, {"a", 0.0}, {"b", 0.5}, {"c", 0.05}};
  const std::vector<double> got = score_with("clipping", in);
  EXPECT_DOUBLE_EQ(got[0], 0.2);
  EXPECT_DOUBLE_EQ(got[1], 0.5);
  EXPECT_DOUBLE_EQ(got[2], 0.25);
}

// Agreement, KL(p_FP || p_Q) and the logits' SQNR by loops.
TEST(Scorers, QuantizedOutputsAgainstLoops) {
  ScoringInputs in;
  in.target_features.logits = random_features(6, 3, 0.0, 8) * 2;
  in.quantized_target_logits = in.target_features.logits + random_features(6, 3, 0.0, 9) * 0.8;
  const at::Tensor &p = in.target_features.logits, &q = in.quantized_target_logits;
  double agree = 0, kl = 0, signal = 0, noise = 0;
  for (std::int64_t i = 0; i < 6; ++i) {
    int ap = 0, aq = 0;
    double zp = 0, zq = 0;
    for (int k = 0; k < 3; ++k) {
      if (at2(p, i, k) > at2(p, i, ap)) ap = k;
      if (at2(q, i, k) > at2(q, i, aq)) aq = k;
      zp += std::exp(at2(p, i, k)), zq += std::exp(at2(q, i, k));
      signal += std::pow(at2(p, i, k), 2), noise += std::pow(at2(p, i, k) - at2(q, i, k), 2);
    }
    agree += ap == aq ? 1.0 / 6 : 0.0;
    for (int k = 0; k < 3; ++k) {
      const double pp = std::exp(at2(p, i, k)) / zp, pq = std::exp(at2(q, i, k)) / zq;
      kl += pp * std::log(pp / pq) / 6;
    }
  }
  const std::vector<double> got = score_with("quantized_outputs", in);
  EXPECT_NEAR(got[0], agree, 1e-12);
  EXPECT_NEAR(got[1], kl, 1e-12);
  EXPECT_NEAR(got[2], 10 * std::log10(signal / noise), 1e-9);
}

// validate_scores on hand-made results: a score equal to top-1 correlates at 1 in every group; one that
// falls as top-1 rises and is declared lower-is-better also at 1 (oriented); within-target averages
// the per-(model, domain) rankings; pooled groups join models of one setting.
TEST(Scorers, ValidationOrientsScoresAndGroupsCells) {
  ExperimentResults results;
  results.scores = {{"exact", "x", true, ""}, {"inverse", "x", false, ""}, {"noise", "x", true, ""}};
  const std::vector<double> top1{0.9, 0.5, 0.7, 0.2};
  for (const std::string model : {"a", "b"})
    for (int set = 0; set < 4; ++set) {
      RunResult r;
      r.model = model;
      r.w_bits = r.a_bits = 4;
      r.calibrator = "mse";
      r.rounding = "nearest";
      for (const std::string domain : {"clean", "night"}) {
        DomainResult d;
        d.domain = domain;
        d.quant_top1 = top1[set] - (domain == "night" ? 0.1 : 0.0) - (model == "b" ? 0.05 : 0.0);
        d.scores = {{"exact", d.quant_top1}, {"inverse", -3 * d.quant_top1}, {"noise", set == 1 ? 1.0 : 0.0}};
        r.results.push_back(d);
      }
      results.runs.push_back(r);
    }
  const std::vector<ScoreCorrelation> all = validate_scores(results);
  ASSERT_EQ(all.size(), 9u);  // 3 scores x (a, b, pooled)
  for (const ScoreCorrelation& c : all) {
    if (c.score == "noise") continue;
    EXPECT_DOUBLE_EQ(c.spearman, 1.0) << c.score << " " << c.group;
    EXPECT_DOUBLE_EQ(c.kendall, 1.0) << c.score << " " << c.group;
    EXPECT_DOUBLE_EQ(c.within_target, 1.0);
    EXPECT_DOUBLE_EQ(c.spearman_ci.low, 1.0);
    EXPECT_EQ(c.cells, c.pooled ? 16u : 8u);
  }
  // "noise" marks set 1 (the 0.5 row): within a domain, ranks 1 2 1 1 (tied) against top-1 ranks 4 2 3 1.
  const double within = spearman({0, 1, 0, 0}, {0.9, 0.5, 0.7, 0.2});
  for (const ScoreCorrelation& c : all)
    if (c.score == "noise") EXPECT_NEAR(c.within_target, within, 1e-12);
}

}  // namespace
