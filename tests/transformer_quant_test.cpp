// The quantizers transformers need beyond the CNN ones: the log-sqrt2 grid of post-softmax values, the
// twin uniform grid of post-GELU values, RepQ-ViT's quantile search and its LayerNorm scale reparameterization, each against an independent
// computation.
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/config/node.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/quantizer.h"
#include "xdq/quant/scheme.h"
#include "xdq/quant/statistics.h"

using namespace xdq;

namespace {

// The log-sqrt2 level nearest to x in log2 space, found by trying every code: s 2^(-k/2), k = 0 .. 2^b - 1,
// with x >= s at the top level and x below the last level's rounding boundary at 0.
double brute_force_log_sqrt2(double x, double s, int bits) {
  const int levels = 1 << bits;
  if (x <= 0) return 0;
  int best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int k = 0; k < levels + 4; ++k) {  // codes past the grid stand for 0
    const double distance = std::fabs(std::log2(x / s) + 0.5 * k);
    if (distance < best_distance) best_distance = distance, best = k;
  }
  if (x >= s) best = 0;
  return best < levels ? s * std::pow(2.0, -0.5 * best) : 0.0;
}

Graph vit_tiny() { return import_torchscript(std::string(XDQ_TORCHVISION_DIR) + "/vit_tiny28.pt").graph; }

}  // namespace

TEST(LogSqrt2, FakeQuantizeIsTheNearestLevelInLogSpace) {
  QuantSpec spec;
  spec.bits = 4;
  spec.grid = Grid::log_sqrt2;
  const QParams q = qparams_from_range(spec, Range{0.0, 0.8});
  EXPECT_EQ(q.qmin, 0);
  EXPECT_EQ(q.qmax, 15);
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 0.8f);
  // Values spread over the grid and beyond it (above the top level, below the last one, zero), away from
  // the rounding boundaries 2^(-(k + 1/2) / 2), where float32 and double could round differently.
  at::manual_seed(3);
  at::Tensor x = at::cat({at::exp2(-12.0 * at::rand({4000})) * 0.9, at::tensor({0.0f, 1.5f, 1e-6f})});
  const at::Tensor codes = -2.0 * at::log2(x / 0.8);
  const at::Tensor away = ((codes - at::round(codes)).abs() < 0.49) | x.eq(0) | x.gt(0.8);
  x = x.masked_select(away);
  const at::Tensor y = fake_quantize(x, q);
  const ScalarGrid grid(q);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double expected = brute_force_log_sqrt2(x[i].item<double>(), 0.8f, 4);
    ASSERT_NEAR(y[i].item<double>(), expected, 1e-6 * expected) << x[i].item<double>();
    ASSERT_NEAR(grid(x[i].item<double>()), expected, 1e-12 + 1e-12 * expected) << x[i].item<double>();
  }
  // Straight-through gradient.
  const at::Tensor leaf = x.clone().requires_grad_(true);
  fake_quantize(leaf, q).sum().backward();
  EXPECT_TRUE(leaf.grad().equal(at::ones_like(x)));
  EXPECT_THROW(qparams_from_range(spec, at::ones({3}), at::ones({3}), 0), Error);
}

TEST(LogSqrt2, VitAcademicPutsItOnEverySoftmaxOutputAndOnlyThere) {
  const Graph graph = vit_tiny();
  PtqSettings settings;
  settings.w_bits = settings.a_bits = 4;
  settings.scheme = Scheme::load("vit_academic", std::string(XDQ_SOURCE_DIR) + "/configs/presets");
  const QuantizedModel q(graph, settings);
  int log_grids = 0;
  for (const auto& a : q.activations()) {
    const int producer = graph.producer(a.value);
    const bool softmax = producer >= 0 && graph.nodes[producer].op == "aten::softmax";
    EXPECT_EQ(a.spec.grid == Grid::log_sqrt2, softmax) << a.name;
    log_grids += softmax;
    EXPECT_EQ(a.spec.bits, producer < 0 ? 8 : 4) << a.name;  // the image at 8 bits, as RepQ-ViT's patch embedding
  }
  EXPECT_EQ(log_grids, 2);  // one attention matrix per block
  // The preset key, checked where it is read.
  const std::string bad = "matmul_inputs: false\nsoftmax_outputs: log_sqrt2\n";
  EXPECT_NE(test::error_of([&] { Scheme::from_config("bad", ConfigNode::parse(bad, "bad.yaml")); }).find("bad.yaml:2"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { Scheme::from_config("bad", ConfigNode::parse("softmax_outputs: log2\n", "b.yaml")); })
                .find("expected uniform or log_sqrt2"),
            std::string::npos);
  // A calibrator for uniform grids only is refused, naming itself and the quantizer.
  RecipeSettings recipe;
  recipe.ptq = settings;
  recipe.calibrator = test::built_plugins().default_choice(PluginKind::Calibrator, "kl");
  recipe.rounding = test::built_plugins().default_choice(PluginKind::WeightOptimizer, "nearest");
  std::ostringstream log;
  const QuantizeRecipe kl(test::built_plugins(), recipe, log);
  const at::Tensor images = at::rand({4, 1, 28, 28});
  try {
    kl.quantize(graph, CalibrationData{images}, {});
    FAIL() << "kl was accepted for a log-sqrt2 quantizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("plugin 'kl'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("self_attention/bmm#1:input0"), std::string::npos) << e.what();
  }
}

TEST(TwinUniform, FakeQuantizeIsTheNearestLevelOfBothHalves) {
  QuantSpec spec;
  spec.bits = 4;
  spec.grid = Grid::twin_uniform;
  const QParams q = qparams_from_range(spec, Range{-0.3, 2.1});
  EXPECT_EQ(q.qmin, -8);
  EXPECT_EQ(q.qmax, 7);
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 0.3f);  // 2.1 / 7: the range's max alone sets the positive half
  // Every level of both halves: s k for k = 0 .. 7 (s = 0.3 in float32), and GELU's minimum / 8 * k for
  // k = -8 .. 0. For any x the nearest of them lies on x's side of 0, so the nearest level of the union is the
  // expected output.
  const double step = q.scale.item<float>(), negative_step = 0.16997124254703522 / 8;
  std::vector<double> levels;
  for (int k = 0; k <= 7; ++k) levels.push_back(step * k);
  for (int k = -8; k < 0; ++k) levels.push_back(negative_step * k);
  at::manual_seed(4);
  at::Tensor x = at::cat({at::rand({3000}) * 2.6 - 0.1, at::rand({1000}) * -0.25, at::tensor({0.0f, -5.0f, 9.0f})});
  const ScalarGrid grid(q);
  const at::Tensor y = fake_quantize(x, q);
  int checked = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double v = x[i].item<double>();
    std::vector<double> distance;
    for (double level : levels) distance.push_back(std::fabs(v - level));
    std::vector<double> sorted = distance;
    std::sort(sorted.begin(), sorted.end());
    if (sorted[1] - sorted[0] < 1e-5) continue;  // a rounding boundary: float32 and double may differ
    const double expected = levels[std::min_element(distance.begin(), distance.end()) - distance.begin()];
    ASSERT_NEAR(y[i].item<double>(), expected, 1e-6) << v;
    ASSERT_NEAR(grid(v), expected, 1e-12) << v;
    ++checked;
  }
  EXPECT_GT(checked, 3900);
  const at::Tensor leaf = x.clone().requires_grad_(true);  // straight-through gradient
  fake_quantize(leaf, q).sum().backward();
  EXPECT_TRUE(leaf.grad().equal(at::ones_like(x)));
  EXPECT_THROW(qparams_from_range(spec, at::ones({3}), at::ones({3}), 0), Error);
}

TEST(TwinUniform, PresetKeyPutsItOnEveryGeluOutputAndOnlyThere) {
  const Graph graph = vit_tiny();
  const std::string presets = std::string(XDQ_SOURCE_DIR) + "/configs/presets";
  PtqSettings settings;
  settings.w_bits = settings.a_bits = 4;
  settings.scheme = Scheme::load("vit_twin", presets);
  const QuantizedModel q(graph, settings);
  int twins = 0;
  for (const auto& a : q.activations()) {
    // The quantizer reads a GELU output through the MLP's dropout: the second linear's input.
    int producer = graph.producer(a.value);
    while (producer >= 0 && graph.nodes[producer].op == "aten::dropout") producer = graph.producer(graph.nodes[producer].inputs[0]);
    const bool gelu = producer >= 0 && graph.nodes[producer].op == "aten::gelu";
    EXPECT_EQ(a.spec.grid == Grid::twin_uniform, gelu) << a.name;
    twins += gelu;
  }
  EXPECT_EQ(twins, 2);  // one MLP per block
  const std::string error =
      test::error_of([] { Scheme::from_config("bad", ConfigNode::parse("gelu_outputs: log_sqrt2\n", "b.yaml")); });
  for (const char* part : {"b.yaml:1", "gelu_outputs", "expected uniform or twin_uniform"})
    EXPECT_NE(error.find(part), std::string::npos) << error;
}

TEST(QuantileSearch, PicksTheQuantileRangeWithTheLeastSquaredErrorOnTheData) {
  // A Laplace-like sample with outliers: the three candidates differ, and the data decides.
  at::manual_seed(11);
  const at::Tensor u = at::rand({200000}, at::kDouble) - 0.5;
  const at::Tensor x = (-u.sign() * at::log1p(-2 * u.abs()) * 0.3).to(at::kFloat);
  const QuantSpec spec{4, false, false, false, true, false};
  auto calibrator = test::built_plugins().create<Calibrator>(
      "quantile_search", default_options(test::built_plugins().get(PluginKind::Calibrator, "quantile_search").options));
  ActivationStatistics statistics;
  statistics.add(x);
  const Range r = calibrator->range_from_statistics(statistics, spec);
  // Exact quantiles of the data and the error of each candidate on the data itself.
  double best = std::numeric_limits<double>::infinity();
  Range expected;
  for (double q : {0.999, 0.9999, 0.99999}) {
    const Range c{at::quantile(x, 1 - q).item<double>(), at::quantile(x, q).item<double>()};
    const double err = (fake_quantize(x, qparams_from_range(spec, c)) - x).pow(2).sum().item<double>();
    if (err < best) best = err, expected = c;
  }
  // The plugin reads quantiles from the histogram: within a bin width of the exact ones.
  const double width = statistics.histogram().width();
  EXPECT_NEAR(r.min, expected.min, 1.5 * width);
  EXPECT_NEAR(r.max, expected.max, 1.5 * width);
}

TEST(RepqReparameterize, KeepsTheFunctionAndGivesEveryLayerNormChannelOneGrid) {
  Graph graph = vit_tiny();
  const Graph before = graph;
  at::manual_seed(5);
  const at::Tensor images = at::rand({16, 1, 28, 28});
  auto pass = test::built_plugins().create<GraphPass>(
      "repq_reparameterize", default_options(test::built_plugins().get(PluginKind::GraphPass, "repq_reparameterize").options));
  PassContext context;
  context.calibration = images;
  context.a_bits = 4;
  std::ostringstream log;
  context.log = &log;
  pass->run(graph, context);
  EXPECT_NE(log.str().find("4 LayerNorm outputs"), std::string::npos) << log.str();  // ln_1 and ln_2 of 2 blocks
  at::NoGradGuard no_grad;
  const at::Tensor expected = Executor(before).forward(images), out = Executor(graph).forward(images);
  // The same function up to float32 rounding: the weights scaled by r and back (relative eps each), through
  // 2 blocks of 4 layers with fan-in up to 128.
  EXPECT_LT(test::max_relative_error(out, expected), 4 * test::forward_relative_error(8, 128));
  // Each reparameterized LayerNorm output: every channel's RepQ-ViT grid (the quantile range of least
  // squared error on the old output, spread over 2^4 - 1 steps) has one step on the new output; before, the
  // steps differed by more than a factor of 2.
  int checked = 0;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    if (graph.nodes[i].op != "aten::layer_norm" || graph.nodes[i].name.find("encoder.ln") == 0) continue;
    const int value = graph.nodes[i].outputs[0];
    auto rows = [&](const Graph& g) {
      const at::Tensor x = Executor(g).all_values(images)[value].toTensor();
      return x.reshape({-1, x.size(-1)}).t().contiguous();
    };
    const at::Tensor old_rows = rows(before), new_rows = rows(graph);
    const std::int64_t channels = old_rows.size(0);
    at::Tensor old_steps = at::empty({channels}, at::kDouble), new_steps = at::empty({channels}, at::kDouble);
    for (std::int64_t c = 0; c < channels; ++c) {
      double best = std::numeric_limits<double>::infinity();
      for (double q : {0.999, 0.9999, 0.99999}) {
        const at::Tensor x = old_rows[c];
        const double hi = at::quantile(x, q).item<double>(), lo = at::quantile(x, 1 - q).item<double>();
        const double step = (hi - lo) / 15, zero = std::nearbyint(-lo / step);
        const double err = ((at::clamp(at::round(x / step) + zero, 0, 15) - zero) * step - x).pow(2).mean().item<double>();
        if (err >= best) continue;
        best = err;
        old_steps[c] = step;
        new_steps[c] = (at::quantile(new_rows[c], q) - at::quantile(new_rows[c], 1 - q)).item<double>() / 15;
      }
    }
    EXPECT_GT((old_steps.max() / old_steps.min()).item<double>(), 2.0) << graph.nodes[i].name;
    EXPECT_LT(((new_steps.max() - new_steps.min()) / new_steps.mean()).item<double>(), 1e-4) << graph.nodes[i].name;
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}
