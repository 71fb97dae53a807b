// Each calibrator plugin, loaded from the build's plugin folder, against an independent computation.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/statistics.h"

using namespace xdq;

namespace {

PluginRegistry& registry() { return test::built_plugins(); }

Range calibrate(const std::string& name, const QuantSpec& spec, const std::vector<at::Tensor>& batches,
                const Options* options = nullptr) {
  const PluginRecord& p = registry().get(PluginKind::Calibrator, name);
  auto calibrator = registry().create<Calibrator>(name, options ? *options : default_options(p.options));
  ActivationStatistics statistics;
  for (const auto& b : batches) statistics.add(b);
  return calibrator->range_from_statistics(statistics, spec);
}

const QuantSpec kAsym8{8, false, false, false, true, false};
const QuantSpec kSym8{8, true, false, false, false, false};

// The TensorRT entropy search written out independently from its description, on a given histogram.
double reference_kl_amax(std::vector<double> bins, double width, int levels, int start) {
  const int n = static_cast<int>(bins.size());
  bins[0] = bins[1];
  double total = 0;
  for (double b : bins) total += b;
  std::vector<double> divergences;
  for (int i = start; i <= n; ++i) {
    std::vector<double> p(bins.begin(), bins.begin() + i);
    for (int j = i; j < n; ++j) p[i - 1] += bins[j];
    std::vector<double> q(i, 0.0);
    for (int g = 0; g < levels; ++g) {
      // source bins j with g <= j * levels / i < g + 1
      double mass = 0, nonzero = 0;
      for (int j = 0; j < i; ++j)
        if (std::floor(double(j) * levels / i) == g && bins[j] != 0) mass += bins[j], nonzero += 1;
      for (int j = 0; j < i; ++j)
        if (std::floor(double(j) * levels / i) == g && bins[j] != 0) q[j] = mass / nonzero;
    }
    double qs = 0, ps = 0;
    for (int j = 0; j < i; ++j) qs += q[j], ps += p[j];
    double kl = 0;
    for (int j = 0; j < i; ++j) {
      if (p[j] == 0) continue;
      if (q[j] == 0) { kl = std::numeric_limits<double>::infinity(); break; }
      kl += p[j] / ps * std::log((p[j] / ps) / (q[j] / qs));
    }
    divergences.push_back(kl);
  }
  int last_argmin = 0;
  for (int k = 0; k < static_cast<int>(divergences.size()); ++k)
    if (divergences[k] <= divergences[last_argmin]) last_argmin = k;
  return (start + last_argmin) * width;
}

}  // namespace

TEST(Calibrators, AllSixAndNearestAreListed) {
  for (const char* name : {"minmax", "ema_minmax", "percentile", "mse", "kl", "aciq"})
    EXPECT_NE(registry().find(PluginKind::Calibrator, name), nullptr) << name;
  EXPECT_NE(registry().find(PluginKind::WeightOptimizer, "nearest"), nullptr);
}

TEST(Calibrators, MinMaxIsTheGlobalExtreme) {
  at::manual_seed(10);
  std::vector<at::Tensor> batches{at::randn({1000}), at::randn({1000}) * 3, at::randn({1000}) + 2};
  const Range r = calibrate("minmax", kAsym8, batches);
  EXPECT_DOUBLE_EQ(r.min, at::cat(batches).min().item<float>());
  EXPECT_DOUBLE_EQ(r.max, at::cat(batches).max().item<float>());
}

TEST(CalibrationStatistics, BatchSummariesAreExactAndIndependentOfTheThreadCount) {
  at::manual_seed(9);
  const at::Tensor x = at::randn({3, 70000}) * 2 + 0.5;  // batches longer than one summation chunk
  auto collect = [&](int threads) {
    const int before = at::get_num_threads();
    at::set_num_threads(threads);
    ActivationStatistics s(512);
    for (int b = 0; b < 3; ++b) s.add(x[b]);
    at::set_num_threads(before);
    return s;
  };
  const ActivationStatistics one = collect(1), two = collect(2);
  ASSERT_EQ(one.batches().size(), 3u);
  for (int b = 0; b < 3; ++b) {
    const at::Tensor xd = x[b].to(at::kDouble);
    const BatchSummary& s = one.batches()[b];
    EXPECT_EQ(s.count, 70000);
    EXPECT_EQ(s.min, x[b].min().item<float>());
    EXPECT_EQ(s.max, x[b].max().item<float>());
    EXPECT_NEAR(s.mean, xd.mean().item<double>(), 1e-12);
    EXPECT_NEAR(s.abs_deviation, (xd - xd.mean()).abs().mean().item<double>(), 1e-12);
    EXPECT_NEAR(s.squared_deviation, (xd - xd.mean()).pow(2).mean().item<double>(), 1e-11);
    const BatchSummary& t = two.batches()[b];  // bit for bit
    EXPECT_EQ(std::memcmp(&s, &t, sizeof s), 0) << "batch " << b;
  }
  EXPECT_EQ(one.histogram().positive(), two.histogram().positive());
  EXPECT_EQ(one.histogram().negative(), two.histogram().negative());
  EXPECT_EQ(one.histogram().width(), two.histogram().width());
}

TEST(Calibrators, EmaMinMaxFollowsTheRecurrence) {
  std::vector<at::Tensor> batches{at::tensor({-1.0f, 2.0f}), at::tensor({-3.0f, 4.0f}), at::tensor({0.0f, 10.0f})};
  const Range r = calibrate("ema_minmax", kAsym8, batches);
  double lo = -1, hi = 2;
  for (auto [l, h] : {std::pair{-3.0, 4.0}, std::pair{0.0, 10.0}}) lo = 0.99 * lo + 0.01 * l, hi = 0.99 * hi + 0.01 * h;
  EXPECT_NEAR(r.min, lo, 1e-12);
  EXPECT_NEAR(r.max, hi, 1e-12);
}

TEST(Calibrators, PercentileMatchesASortWithinOneBin) {
  at::manual_seed(11);
  at::Tensor x = at::randn({200000});
  x[0] = 40.0f;  // an outlier the percentile must ignore
  Options o(std::map<std::string, OptionValue>{{"percentile", 99.9}});
  const Range r = calibrate("percentile", kSym8, {x}, &o);
  at::Tensor sorted = std::get<0>(x.abs().sort());
  const double q = sorted[static_cast<int64_t>(std::ceil(0.999 * x.numel())) - 1].item<float>();
  const double width = 40.0 / 2048;
  EXPECT_GE(r.max, q - 1e-9);
  EXPECT_LE(r.max, q + width + 1e-9);
  EXPECT_NEAR(r.min, -r.max, 1e-12);
}

TEST(Calibrators, KlMatchesTheReferenceEntropySearch) {
  at::manual_seed(12);
  at::Tensor x = at::cat({at::randn({100000}), at::randn({100}) * 8});  // Gaussian with a heavy tail
  const Range r = calibrate("kl", kSym8, {x});
  // Histogram of |x| over [0, max|x|] in 2048 bins, built here by brute force.
  const double amax = x.abs().max().item<float>(), width = amax / 2048;
  std::vector<double> bins(2048, 0);
  at::Tensor idx = (x.abs().to(at::kDouble) / width).floor().clamp_max(2047).to(at::kLong);
  auto acc = idx.accessor<int64_t, 1>();
  for (int64_t i = 0; i < idx.numel(); ++i) bins[acc[i]] += 1;
  const double expected = reference_kl_amax(bins, width, 128, 128);
  EXPECT_NEAR(r.max, expected, 1.5 * width);
  EXPECT_LT(r.max, 0.7 * amax);  // the tail is clipped
}

TEST(Calibrators, MseIsWithinOnePercentOfTheBruteForceOptimum) {
  at::manual_seed(13);
  at::Tensor x = at::cat({at::randn({50000}).relu(), at::rand({20}) * 30});
  const QuantSpec spec{4, false, false, false, true, false};
  const Range r = calibrate("mse", spec, {x.slice(0, 0, 25000), x.slice(0, 25000)});
  auto error = [&](const Range& c) {
    return (fake_quantize(x, qparams_from_range(spec, c)) - x).abs().pow(2.4).sum().item<double>();
  };
  const double lo = x.min().item<float>(), hi = x.max().item<float>();
  double best = 1e300;
  for (int k = 0; k < 80; ++k) best = std::min(best, error(Range{lo * (1 - 0.01 * k), hi * (1 - 0.01 * k)}));
  EXPECT_LE(error(r), 1.01 * best);
  EXPECT_LT(r.max, 0.9 * hi);
}

TEST(Calibrators, AciqUsesTheLaplaceClosedForm) {
  at::manual_seed(14);
  at::Tensor x = at::randn({50000}).to(at::kDouble);
  const double b = (x - x.mean()).abs().mean().item<double>(), mean = x.mean().item<double>();
  const Range r = calibrate("aciq", QuantSpec{4, false, false, false, true, false}, {x.to(at::kFloat)});
  EXPECT_NEAR(r.max, std::min(x.max().item<double>(), mean + 5.03 * b), 1e-4);
  EXPECT_NEAR(r.min, std::max(x.min().item<double>(), mean - 5.03 * b), 1e-4);
  at::Tensor pos = x.relu();
  const double bp = (pos - pos.mean()).abs().mean().item<double>();
  const Range rp = calibrate("aciq", QuantSpec{4, false, false, false, true, false}, {pos.to(at::kFloat)});
  EXPECT_DOUBLE_EQ(rp.min, 0.0);
  EXPECT_NEAR(rp.max, std::min(pos.max().item<double>(), 6.2 * bp), 1e-4);
}

TEST(Calibrators, NearestRoundingEqualsFakeQuantizedWeights) {
  at::manual_seed(15);
  Graph g;
  Node conv;
  conv.kind = OpKind::Conv;
  conv.weight = at::randn({4, 2, 3, 3});
  g.nodes.push_back(conv);
  std::vector<QuantizedLayer> layers(1);
  layers[0].node = 0;
  layers[0].spec = QuantSpec{4, false, true, false, false, false};
  layers[0].qparams = weight_qparams(conv.weight, layers[0].spec, "minmax");
  RoundingContext ctx;
  ctx.graph = &g;
  ctx.layers = &layers;
  auto nearest = registry().create<WeightOptimizer>(
      "nearest", default_options(registry().get(PluginKind::WeightOptimizer, "nearest").options));
  nearest->optimize(ctx);
  const QParams& q = layers[0].qparams;
  at::Tensor expected = at::fake_quantize_per_channel_affine(conv.weight, q.scale, q.zero_point, 0, q.qmin, q.qmax);
  EXPECT_TRUE(layers[0].quantized_weight.equal(expected));
}

TEST(GraphPasses, BnReestimateMatchesTrainModeBatchNormAveragedOverBatches) {
  // conv -> BN -> relu -> conv -> BN, built by hand.
  at::manual_seed(16);
  Graph g;
  const int x = g.add_value("x");
  g.inputs = {x};
  auto add = [&](Node n, int input) {
    n.inputs = {input};
    n.outputs = {g.add_value(n.name)};
    g.nodes.push_back(n);
    return n.outputs[0];
  };
  Node conv1, bn1, relu, conv2, bn2;
  conv1.kind = conv2.kind = OpKind::Conv;
  conv1.name = "conv1";
  conv2.name = "conv2";
  conv1.weight = at::randn({4, 2, 3, 3});
  conv2.weight = at::randn({3, 4, 3, 3});
  bn1.kind = bn2.kind = OpKind::BatchNorm;
  bn1.name = "bn1";
  bn2.name = "bn2";
  bn1.bn = {at::rand({4}) + 0.5, at::randn({4}), at::zeros({4}), at::ones({4}), 1e-5};
  bn2.bn = {at::rand({3}) + 0.5, at::randn({3}), at::zeros({3}), at::ones({3}), 1e-5};
  relu.name = "relu";
  relu.op = "aten::relu";
  relu.run = [](std::vector<c10::IValue>& s) { s = {at::relu(s.at(0).toTensor())}; };
  int v = add(conv1, x);
  v = add(bn1, v);
  v = add(relu, v);
  v = add(conv2, v);
  v = add(bn2, v);
  g.outputs = {v};

  const at::Tensor images = at::randn({192, 2, 8, 8}) * 2 + 1;
  // Reference: PyTorch's train-mode batch_norm on each batch of 64, running stats averaged over batches.
  at::Tensor m1 = at::zeros({4}), v1 = at::zeros({4}), m2 = at::zeros({3}), v2 = at::zeros({3});
  for (int b = 0; b < 3; ++b) {
    const at::Tensor xb = images.slice(0, 64 * b, 64 * (b + 1));
    const at::Tensor y1 = at::conv2d(xb, conv1.weight);
    m1 += y1.mean({0, 2, 3}) / 3;
    v1 += y1.var({0, 2, 3}, true) / 3;
    const at::Tensor z = at::relu(at::batch_norm(y1, bn1.bn.gamma, bn1.bn.beta, {}, {}, true, 0.0, 1e-5, false));
    const at::Tensor y2 = at::conv2d(z, conv2.weight);
    m2 += y2.mean({0, 2, 3}) / 3;
    v2 += y2.var({0, 2, 3}, true) / 3;
  }
  auto pass = registry().create<GraphPass>("bn_reestimate", Options({{"batch_size", std::int64_t{64}}}));
  PassContext ctx;
  ctx.calibration = images;
  pass->run(g, ctx);
  EXPECT_TRUE(at::allclose(g.nodes[1].bn.mean, m1, 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(g.nodes[1].bn.var, v1, 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(g.nodes[4].bn.mean, m2, 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(g.nodes[4].bn.var, v2, 1e-4, 1e-5));
  PassContext empty;
  EXPECT_THROW(pass->run(g, empty), std::exception);
}
