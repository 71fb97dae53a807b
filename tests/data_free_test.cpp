// Data-free quantization: BN-statistic losses and synthesis, DFQ passes (cross-layer equalization,
// high-bias absorption, analytic bias correction), BN-based ranges, synthesized domains in experiments.
// Expected values come from closed forms or from direct ATen computations, not from the code under test.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include <ATen/core/grad_mode.h>

#include "test_util.h"
#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/experiment/config.h"
#include "xdq/ir/dfq.h"
#include "xdq/plugin/interfaces.h"
#include "xdq/plugin/quantize.h"
#include "xdq/synthesis/synthesis.h"

using namespace xdq;
using namespace xdq::test;

namespace {

const std::string kModels = std::string(XDQ_SOURCE_DIR) + "/models/";


// x [N, C, H, W] whose statistics over `dims` are exactly mean m and variance v (unbiased if asked).
at::Tensor with_statistics(at::Tensor z, const at::Tensor& m, const at::Tensor& v, std::vector<std::int64_t> dims,
                           bool unbiased) {
  z = (z - z.mean(dims, true)) / z.var(dims, unbiased, true).sqrt();
  return z * v.sqrt().view({1, -1, 1, 1}) + m.view({1, -1, 1, 1});
}

// A built plugin with options from YAML text (defaults for the rest).
template <class T>
std::shared_ptr<T> make_plugin(const std::string& name, const std::string& yaml = "{}") {
  const PluginRecord& r = built_plugins().get(PluginKindOf<T>::value, name);
  return built_plugins().create<T>(name, validate_options(ConfigNode::parse(yaml, name + ".yaml"), r.options));
}

double normal_pdf(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI); }
double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

SynthesisModel synthesis_model(const ImportedModel& m, const std::string& name) {
  return {name, &m.graph, m.preprocess, {1, 28, 28}};
}

// A synthesizer plugin's default options (its paper's), cut to `iterations` steps of `batch_size` images.
BnSynthesisOptions plugin_defaults(const std::string& method, std::int64_t iterations, std::int64_t batch_size) {
  BnSynthesisOptions o =
      bn_synthesis_options(default_options(built_plugins().get(PluginKind::Synthesizer, method).options), method);
  o.iterations = iterations;
  o.batch_size = batch_size;
  o.warmup = std::min<std::int64_t>(o.warmup, iterations / 3);
  return o;
}

BnSynthesisOptions small_zeroq(std::int64_t iterations) { return plugin_defaults("zeroq", iterations, 8); }

// Sum over BN layers of ZeroQ's loss for `images` (pixels) through the model.
double zeroq_total_loss(const ImportedModel& m, const at::Tensor& images) {
  Executor exec(m.graph);
  std::vector<std::pair<int, at::Tensor>> captured;
  for (int n : batch_norm_nodes(m.graph, "m", "test")) {
    const int value = m.graph.nodes[n].inputs[0];
    exec.set_value_hook(value, [&captured, n](const at::Tensor& x) {
      captured.emplace_back(n, x);
      return x;
    });
  }
  at::NoGradGuard no_grad;
  exec.forward(m.preprocess.apply(images));
  double total = 0;
  for (const auto& [n, x] : captured) total += zeroq_bn_loss(x, m.graph.nodes[n].bn.mean, m.graph.nodes[n].bn.var).item<double>();
  return total;
}

// The BN losses' formulas with ATen's own var/mean (autograd differentiates them), for x [N, C, H, W].
at::Tensor zeroq_formula(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& var) {
  const std::int64_t N = x.size(0);
  const at::Tensor flat = x.reshape({N, x.size(1), -1});
  const at::Tensor m = flat.mean(2), s = at::sqrt(flat.var(2, true) + 1e-6);
  return (m - mean).pow(2).sum() / N + (s - at::sqrt(var + 1e-6)).pow(2).sum() / N;
}
at::Tensor deepinversion_formula(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& var) {
  const at::Tensor flat = x.transpose(0, 1).reshape({x.size(1), -1});
  return at::norm(flat.var(1, false) - var) + at::norm(flat.mean(1) - mean);
}

}  // namespace

TEST(BnLoss, ZeroqIsZeroForMatchingPerImageStatisticsAndClosedFormForAShift) {
  const at::Tensor mean = at::tensor({0.5f, -1.0f, 2.0f}), var = at::tensor({1.0f, 0.25f, 4.0f});
  // Per image and channel: mean `mean`, unbiased variance var + 1e-6 - 1e-6 (ZeroQ adds eps to both sides).
  const at::Tensor x = with_statistics(at::randn({4, 3, 5, 5}), mean, var, {2, 3}, true);
  EXPECT_LT(zeroq_bn_loss(x, mean, var).item<double>(), 1e-8);
  // Shifting every image by delta_c adds sum_c delta_c^2 (mean over the N images of ||delta||^2).
  const at::Tensor delta = at::tensor({0.1f, -0.2f, 0.3f});
  EXPECT_NEAR(zeroq_bn_loss(x + delta.view({1, -1, 1, 1}), mean, var).item<double>(), 0.01 + 0.04 + 0.09, 1e-5);
}

TEST(BnLoss, DeepInversionIsZeroForMatchingBatchStatisticsAndTheNormOfAShift) {
  const at::Tensor mean = at::tensor({0.5f, -1.0f}), var = at::tensor({2.0f, 0.5f});
  const at::Tensor x = with_statistics(at::randn({6, 2, 4, 4}), mean, var, {0, 2, 3}, false);
  EXPECT_LT(deepinversion_bn_loss(x, mean, var).item<double>(), 1e-5);
  const at::Tensor delta = at::tensor({0.3f, 0.4f});  // ||delta||_2 = 0.5, variance unchanged
  EXPECT_NEAR(deepinversion_bn_loss(x + delta.view({1, -1, 1, 1}), mean, var).item<double>(), 0.5, 1e-5);
}

// In both memory layouts (the one-pass sums read channels-last memory as it lies).
TEST(BnLoss, GradientsEqualAutogradOfTheFormulas) {
  const at::Tensor mean = at::randn({3}), var = at::rand({3}) + 0.5;
  const at::Tensor x0 = at::randn({5, 3, 4, 6});
  auto zeroq_reference = [&](const at::Tensor& x) { return zeroq_formula(x, mean, var); };
  auto deepinversion_reference = [&](const at::Tensor& x) { return deepinversion_formula(x, mean, var); };
  auto zeroq = [&](const at::Tensor& x) { return zeroq_bn_loss(x, mean, var); };
  auto deepinversion = [&](const at::Tensor& x) { return deepinversion_bn_loss(x, mean, var); };
  // As synthesis reads them: the layer reads the passed value (here a weighted sum with weights u), whose
  // gradient the moments' backward adds in.
  const at::Tensor u = at::randn({5, 3, 4, 6});
  auto read_by_a_layer = [&](BnStatistics statistics) {
    return std::function<at::Tensor(const at::Tensor&)>([&, statistics](const at::Tensor& x) {
      const BnMoments m = bn_moments(x, statistics);
      return bn_statistics_loss(m, statistics, mean, var) + (m.x * u).sum();
    });
  };
  auto with_layer = [&](const std::function<at::Tensor(const at::Tensor&)>& reference) {
    return std::function<at::Tensor(const at::Tensor&)>([&, reference](const at::Tensor& x) { return reference(x) + (x * u).sum(); });
  };
  for (at::MemoryFormat format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
    auto loss_and_grad = [&](const std::function<at::Tensor(const at::Tensor&)>& loss) {
      const at::Tensor x = x0.clone(format).requires_grad_(true);
      const at::Tensor value = loss(x);
      value.backward();
      return std::pair{value.item<double>(), x.grad()};
    };
    for (const auto& [ours, reference] : {std::pair{std::function<at::Tensor(const at::Tensor&)>(zeroq),
                                                     std::function<at::Tensor(const at::Tensor&)>(zeroq_reference)},
                                           std::pair{std::function<at::Tensor(const at::Tensor&)>(deepinversion),
                                                     std::function<at::Tensor(const at::Tensor&)>(deepinversion_reference)},
                                           std::pair{read_by_a_layer(BnStatistics::PerSample), with_layer(zeroq_reference)},
                                           std::pair{read_by_a_layer(BnStatistics::Batch), with_layer(deepinversion_reference)}}) {
      const auto [value, grad] = loss_and_grad(ours);
      const auto [expected_value, expected_grad] = loss_and_grad(reference);
      EXPECT_NEAR(value, expected_value, 1e-5 * std::abs(expected_value)) << (format == at::MemoryFormat::ChannelsLast);
      EXPECT_LT(max_relative_error(grad, expected_grad), 1e-5) << (format == at::MemoryFormat::ChannelsLast);
    }
  }
}

// As synthesis runs a BN layer: the layer (eval mode), a residual block's add and its ReLU applied to the
// value passed on, one backward for ReLU, add, layer and moments; against the chain in float64 through
// ATen's batch_norm, add, relu and autograd. Each gradient element is a handful of float32 operations on
// sums of <= 480 terms. Inputs contiguous, channels-last, and strided (every other column of a wider
// tensor: the path through ATen ops that a GPU takes).
TEST(BnLoss, FusedLayerEqualsBatchNormReluAndMomentsInDouble) {
  const at::Tensor x0 = at::randn({5, 3, 4, 6}) * 2 + 0.5, u = at::randn({5, 3, 4, 6}), r0 = at::randn({5, 3, 4, 6});
  const BatchNormStats bn{at::rand({3}) + 0.5, at::randn({3}), at::randn({3}), at::rand({3}) + 0.5, 1e-5};
  const at::Tensor target_mean = at::randn({3}), target_var = at::rand({3}) + 0.5;
  auto as_double = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const at::Tensor layer_double = at::batch_norm(as_double(x0), as_double(bn.gamma), as_double(bn.beta), as_double(bn.mean),
                                                 as_double(bn.var), false, 0.0, bn.eps, true);
  // ReLU's mask is the same in float32 and float64
  ASSERT_GT(layer_double.abs().min().item<double>(), 1e-4);
  ASSERT_GT((layer_double + as_double(r0)).abs().min().item<double>(), 1e-4);
  for (BnStatistics statistics : {BnStatistics::PerSample, BnStatistics::Batch})
    for (bool relu : {false, true})
      for (bool with_residual : {false, true})
        for (const std::string layout : {"contiguous", "channels-last", "strided"}) {
          const at::MemoryFormat format = layout == "channels-last" ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
          // The leaf: x itself, or the wider tensor x is a view of.
          at::Tensor leaf = layout == "strided" ? at::zeros({5, 3, 4, 12}) : x0.clone(format);
          if (layout == "strided") leaf.slice(3, 0, 12, 2).copy_(x0);
          leaf.requires_grad_(true);
          const at::Tensor x = layout == "strided" ? leaf.slice(3, 0, 12, 2) : leaf;
          const at::Tensor residual = with_residual ? r0.clone(format).requires_grad_(true) : at::Tensor();
          const BnMoments m = bn_layer_moments(x, bn, relu, statistics, residual);
          const at::Tensor loss = bn_statistics_loss(m, statistics, target_mean, target_var) + (m.x * u).sum();
          loss.backward();
          const at::Tensor x_grad = layout == "strided" ? leaf.grad().slice(3, 0, 12, 2) : leaf.grad();
          const at::Tensor xd = as_double(x0).requires_grad_(true), rd = as_double(r0).requires_grad_(true);
          at::Tensor yd = at::batch_norm(xd, as_double(bn.gamma), as_double(bn.beta), as_double(bn.mean), as_double(bn.var),
                                         false, 0.0, bn.eps, true);
          if (with_residual) yd = yd + rd;
          if (relu) yd = at::relu(yd);
          const at::Tensor moments = statistics == BnStatistics::PerSample ? zeroq_formula(xd, target_mean, target_var)
                                                                           : deepinversion_formula(xd, target_mean, target_var);
          const at::Tensor expected = moments + (yd * as_double(u)).sum();
          expected.backward();
          const std::string where = std::string(relu ? "relu " : "") + (with_residual ? "residual " : "") + layout;
          EXPECT_LT(max_relative_error(as_double(m.x), yd.detach()), 1e-6) << where;
          EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-5 * std::abs(expected.item<double>())) << where;
          EXPECT_LT(max_relative_error(as_double(x_grad), xd.grad()), 1e-5) << where;
          if (with_residual) {  // the add's gradient: u, through ReLU's mask
            ASSERT_TRUE(residual.grad().defined()) << where;
            EXPECT_LT(max_relative_error(as_double(residual.grad()), rd.grad()), 1e-6) << where;
          }
        }
}

TEST(BnLoss, TotalVariationMatchesLoops) {
  const at::Tensor x = at::randn({2, 1, 4, 5});
  auto a = x.accessor<float, 4>();
  double d[4] = {0, 0, 0, 0};
  for (int n = 0; n < 2; ++n)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 5; ++j) {
        if (j + 1 < 5) d[0] += std::pow(a[n][0][i][j] - a[n][0][i][j + 1], 2);
        if (i + 1 < 4) d[1] += std::pow(a[n][0][i][j] - a[n][0][i + 1][j], 2);
        if (i + 1 < 4 && j + 1 < 5) d[3] += std::pow(a[n][0][i][j] - a[n][0][i + 1][j + 1], 2);
        if (i >= 1 && j + 1 < 5) d[2] += std::pow(a[n][0][i][j] - a[n][0][i - 1][j + 1], 2);
      }
  EXPECT_NEAR(total_variation_l2(x).item<double>(), std::sqrt(d[0]) + std::sqrt(d[1]) + std::sqrt(d[2]) + std::sqrt(d[3]), 1e-4);
}

TEST(Synthesis, ZeroqLowersTheBnLossOfResnet20AndIsSeeded) {
  const ImportedModel m = import_torchscript(kModels + "resnet20_fmnist/model.pt");
  const std::vector<SynthesisModel> models{synthesis_model(m, "resnet20")};
  const Dataset a = synthesize_from_bn_statistics(models, {1, 28, 28}, 8, 3, small_zeroq(40), nullptr);
  const Dataset b = synthesize_from_bn_statistics(models, {1, 28, 28}, 8, 3, small_zeroq(40), nullptr);
  ASSERT_EQ(a.images.sizes(), (at::IntArrayRef{8, 1, 28, 28}));
  EXPECT_FALSE(a.labeled());
  EXPECT_TRUE(at::equal(a.images, b.images));
  // After one step from the same seeded noise, against after 40.
  const Dataset start = synthesize_from_bn_statistics(models, {1, 28, 28}, 8, 3, small_zeroq(1), nullptr);
  const double before = zeroq_total_loss(m, start.images), after = zeroq_total_loss(m, a.images);
  EXPECT_LT(after, 0.5 * before) << before << " -> " << after;
}

TEST(Synthesis, DeepInversionClampsPixelsAndReturnsTargetLabels) {
  const ImportedModel m = import_torchscript(kModels + "resnet20_fmnist/model.pt");
  const BnSynthesisOptions o = plugin_defaults("deepinversion", 30, 6);
  const Dataset d = synthesize_from_bn_statistics({synthesis_model(m, "r")}, {1, 28, 28}, 6, 0, o, nullptr);
  EXPECT_GE(d.images.min().item<double>(), -1e-6);
  EXPECT_LE(d.images.max().item<double>(), 1 + 1e-6);
  ASSERT_TRUE(d.labeled());
  EXPECT_GE(d.labels.min().item<std::int64_t>(), 0);
  EXPECT_LT(d.labels.max().item<std::int64_t>(), 10);
  // Optimized towards their targets: the model predicts most of them.
  at::NoGradGuard no_grad;
  const at::Tensor predicted = Executor(m.graph).forward(m.preprocess.apply(d.images)).argmax(1);
  EXPECT_GE(predicted.eq(d.labels).sum().item<std::int64_t>(), 4);
}

TEST(Synthesis, RefusesModelsWithoutBatchNormAndMismatchedMixtures) {
  const ImportedModel resnet = import_torchscript(kModels + "resnet20_fmnist/model.pt");
  ImportedModel folded = resnet;
  fold_batch_norm(folded.graph);
  EXPECT_NE(error_of([&] { synthesize_from_bn_statistics({synthesis_model(folded, "folded_resnet")}, {1, 28, 28}, 2, 0, small_zeroq(1), nullptr); })
                .find("zeroq: model 'folded_resnet' has no BatchNorm layer"),
            std::string::npos);
  SynthesisModel wide = synthesis_model(resnet, "wide");
  wide.input_shape = {1, 32, 32};
  BnSynthesisOptions mix = small_zeroq(1);
  mix.method = "mixmix";
  EXPECT_NE(error_of([&] { synthesize_from_bn_statistics({synthesis_model(resnet, "a"), wide}, {1, 28, 28}, 2, 0, mix, nullptr); })
                .find("model 'wide' reads 1x32x32 images"),
            std::string::npos);
  // A model with 5 classes: the last linear layer cut to its first 5 outputs.
  ImportedModel five = import_torchscript(kModels + "vgg_fmnist/model.pt");
  Node& fc = five.graph.nodes[five.graph.layer_nodes().back()];
  fc.weight = fc.weight.slice(0, 0, 5).contiguous();
  fc.bias = fc.bias.slice(0, 0, 5).contiguous();
  EXPECT_NE(error_of([&] { synthesize_from_bn_statistics({synthesis_model(resnet, "resnet20"), synthesis_model(five, "vgg5")}, {1, 28, 28}, 2, 0, mix, nullptr); })
                .find("models 'resnet20' and 'vgg5' predict different numbers of classes (10 vs 5)"),
            std::string::npos);
  // zeroq and deepinversion take one model; several is feature mixing.
  const BnSynthesizer zeroq(small_zeroq(1));
  SynthesisContext ctx;
  ctx.models = {synthesis_model(resnet, "a"), synthesis_model(resnet, "b")};
  ctx.input_shape = {1, 28, 28};
  ctx.count = 2;
  EXPECT_NE(error_of([&] { zeroq.synthesize(ctx); }).find("zeroq synthesizes from one model, the domain lists 2"), std::string::npos);
}

TEST(Synthesis, DataMixingPastesTheResizedPartnerIntoTheBox) {
  const at::Tensor x = at::rand({3, 2, 10, 12});
  const at::Tensor perm = at::tensor({2, 0, 1}, at::kLong);
  const at::Tensor mixed = paste_into_box(x, perm, 3, 4, 5, 6);
  for (std::int64_t i = 0; i < 3; ++i) {
    at::Tensor expected = x[i].clone();
    const std::int64_t partner = perm[i].item<std::int64_t>();
    expected.slice(1, 3, 8).slice(2, 4, 10).copy_(
        at::upsample_bilinear2d(x[partner].unsqueeze(0), {5, 6}, false).squeeze(0));
    EXPECT_TRUE(at::allclose(mixed[i], expected, 1e-6, 1e-6)) << i;
  }
}

TEST(Synthesis, FeatureMixingOverCopiesOfOneModelEqualsThatModel) {
  // Two copies of one model (the second reached through the pixel-space conversion) give the images
  // that model alone gives, seed for seed.
  const ImportedModel m = import_torchscript(kModels + "vgg_fmnist/model.pt");
  const BnSynthesisOptions o = plugin_defaults("mixmix", 6, 4);
  const Dataset one = synthesize_from_bn_statistics({synthesis_model(m, "a")}, {1, 28, 28}, 4, 1, o, nullptr);
  const Dataset two = synthesize_from_bn_statistics({synthesis_model(m, "a"), synthesis_model(m, "b")}, {1, 28, 28}, 4, 1, o, nullptr);
  EXPECT_LT(max_relative_error(two.images, one.images), 1e-4);
  EXPECT_TRUE(at::equal(two.labels, one.labels));
}

TEST(Synthesis, MixMixDataMixingNeedsLabelsAndBoxesAreOrdered) {
  const PluginRecord& mixmix = built_plugins().get(PluginKind::Synthesizer, "mixmix");
  auto with = [&](const std::string& yaml) { return validate_options(ConfigNode::parse(yaml, "m.yaml"), mixmix.options); };
  EXPECT_NE(error_of([&] { bn_synthesis_options(with("ce_weight: 0\n"), "mixmix"); }).find("data_mixing mixes the target labels"),
            std::string::npos);
  EXPECT_NE(error_of([&] { bn_synthesis_options(with("mix_min_side: 0.8\n"), "mixmix"); }).find("mix_min_side is above"),
            std::string::npos);
}

TEST(Moments, ClippedNormalMatchesClosedForms) {
  const at::Tensor mu = at::tensor({-1.0, 0.3, 2.0}, at::kDouble), sigma = at::tensor({0.5, 1.0, 3.0}, at::kDouble);
  const ChannelMoments relu = clipped_normal_moments(mu, sigma, 0, INFINITY);
  const ChannelMoments relu6 = clipped_normal_moments(mu, sigma, 0, 6);
  for (int c = 0; c < 3; ++c) {
    const double m = mu[c].item<double>(), s = sigma[c].item<double>(), a = -m / s, b = (6 - m) / s;
    // E[max(X, 0)] and E[max(X, 0)^2] for X ~ N(m, s^2).
    const double e = m * (1 - normal_cdf(a)) + s * normal_pdf(a);
    const double e2 = (m * m + s * s) * (1 - normal_cdf(a)) + m * s * normal_pdf(a);
    EXPECT_NEAR(relu.mean[c].item<double>(), e, 1e-6);
    EXPECT_NEAR(relu.std[c].item<double>(), std::sqrt(e2 - e * e), 1e-5);
    const double e6 = m * (normal_cdf(b) - normal_cdf(a)) + s * (normal_pdf(a) - normal_pdf(b)) + 6 * (1 - normal_cdf(b));
    EXPECT_NEAR(relu6.mean[c].item<double>(), e6, 1e-6);
  }
}

TEST(Dfq, CrossLayerEqualizationKeepsResnet20AndEvensPairRanges) {
  const ImportedModel m = import_torchscript(kModels + "resnet20_fmnist/model.pt");
  Graph g = m.graph;
  std::ostringstream log;
  PassContext ctx;
  ctx.log = &log;
  make_plugin<GraphPass>("cross_layer_equalization")->run(g, ctx);
  Graph reference = m.graph;
  fold_batch_norm(reference);
  const at::Tensor x = m.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Test).subset(64, 1).images);
  at::NoGradGuard no_grad;
  const at::Tensor before = Executor(reference).forward(x), after = Executor(g).forward(x);
  EXPECT_LT(max_relative_error(after, before), 1e-5);
  const auto pairs = layer_pairs(g);
  ASSERT_EQ(pairs.size(), 9u) << log.str();  // conv1 -> ReLU -> conv2 in each of the 9 blocks
  int changed = 0;
  for (const auto& p : pairs) {
    const at::Tensor r1 = g.nodes[p.first].weight.abs().amax({1, 2, 3});
    const at::Tensor r2 = g.nodes[p.second].weight.abs().amax({0, 2, 3});
    EXPECT_LT((r1 / r2 - 1).abs().max().item<double>(), 1e-3) << g.nodes[p.first].name;
    changed += !at::allclose(g.nodes[p.first].weight, reference.nodes[p.first].weight);
  }
  EXPECT_EQ(changed, 9);
}

TEST(Dfq, CrossLayerEqualizationSkipsReLU6PairsByNameOrReplacesThem) {
  const ImportedModel m = import_torchscript(kModels + "mobilenet_v2_fmnist/model.pt");
  Graph skipped = m.graph;
  std::ostringstream log;
  PassContext ctx;
  ctx.log = &log;
  make_plugin<GraphPass>("cross_layer_equalization")->run(skipped, ctx);
  EXPECT_NE(log.str().find("skipped features1.expand.conv -> features1.depthwise.conv: aten::hardtanh clips to [0, 6]"),
            std::string::npos)
      << log.str();
  // relu6: replace equalizes conv -> depthwise -> conv triples as two pairs; the result computes what the
  // folded model with the pairs' ReLU6 replaced by ReLU (built here by hand) computes.
  Graph replaced = m.graph;
  make_plugin<GraphPass>("cross_layer_equalization", "relu6: replace\n")->run(replaced, ctx);
  Graph relu_only = m.graph;
  fold_batch_norm(relu_only);
  for (const LayerPair& p : layer_pairs(relu_only)) {
    if (p.activation < 0) continue;
    Node& n = relu_only.nodes[p.activation];
    n.op = "aten::relu";
    n.inputs.resize(1);
    n.run = [](std::vector<c10::IValue>& s) {
      const at::Tensor t = s.at(0).toTensor();
      s = {at::relu(t)};
    };
  }
  const at::Tensor x = m.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Test).subset(32, 2).images);
  at::NoGradGuard no_grad;
  EXPECT_LT(max_relative_error(Executor(replaced).forward(x), Executor(relu_only).forward(x)), 1e-5);
  EXPECT_EQ(layer_pairs(replaced).size(), 13u);
}

TEST(Dfq, BiasAbsorptionMovesTheClosedFormShift) {
  const ImportedModel m = import_torchscript(kModels + "resnet20_fmnist/model.pt");
  Graph g = m.graph;
  fold_batch_norm(g);
  const Graph before = g;
  make_plugin<GraphPass>("bias_absorption", "n: 0\n")->run(g, PassContext());
  const LayerPair p = layer_pairs(before).front();
  const Node &f0 = before.nodes[p.first], &s0 = before.nodes[p.second];
  const at::Tensor c = at::clamp_min(f0.folded_bn.beta, 0);  // n = 0: the whole positive beta
  ASSERT_GT(c.sum().item<double>(), 0);
  EXPECT_TRUE(at::allclose(g.nodes[p.first].bias, f0.bias - c, 1e-5, 1e-6));
  at::Tensor expected = s0.bias.clone();
  for (std::int64_t o = 0; o < s0.weight.size(0); ++o)
    for (std::int64_t i = 0; i < s0.weight.size(1); ++i)
      expected[o] += s0.weight[o][i].sum() * c[i];
  EXPECT_TRUE(at::allclose(g.nodes[p.second].bias, expected, 1e-4, 1e-5));
}

TEST(Dfq, AnalyticBiasCorrectionRemovesTheMeanShiftOfRoundedWeights) {
  test::QuantizedResnet20 q(256, Split::Train, 0, "minmax");
  q.quantized->round_to_nearest();
  const Graph& g = q.quantized->graph();
  // layer1.block0.conv2 reads ReLU(conv1 + folded BN): input channels ~ ReLU(N(beta, gamma^2)).
  int node = -1;
  for (int n : g.layer_nodes())
    if (g.nodes[n].name == "layer1.block0.conv2") node = n;
  ASSERT_GE(node, 0);
  const Node& prev = g.nodes[g.producer(g.nodes[g.producer(g.nodes[node].inputs[0])].inputs[0])];
  const at::Tensor beta = prev.folded_bn.beta, gamma = prev.folded_bn.gamma.abs();
  // Samples of the modelled input, convolved with W and with the rounded W~; interior positions only.
  auto gen = at::detail::createCPUGenerator(5);
  const at::Tensor x = at::relu(at::randn({512, beta.size(0), 12, 12}, gen) * gamma.view({1, -1, 1, 1}) + beta.view({1, -1, 1, 1}));
  const QuantizedLayer& layer = *std::find_if(q.quantized->layers().begin(), q.quantized->layers().end(),
                                              [&](const QuantizedLayer& l) { return l.node == node; });
  auto mean_out = [&](const at::Tensor& w, const at::Tensor& b) {
    return at::conv2d(x, w, b).mean({0, 2, 3});  // no padding: every position sees 3x3 real inputs
  };
  const Node& n = g.nodes[node];
  const at::Tensor shift_before = mean_out(layer.quantized_weight, n.bias) - mean_out(n.weight, n.bias);
  Graph corrected = g;
  PassContext ctx;
  ctx.layers = &q.quantized->layers();
  make_plugin<GraphPass>("analytic_bias_correction")->run(corrected, ctx);
  const at::Tensor shift_after = mean_out(layer.quantized_weight, corrected.nodes[node].bias) - mean_out(n.weight, n.bias);
  EXPECT_GT(shift_before.abs().max().item<double>(), 0.01);
  EXPECT_LT(shift_after.abs().max().item<double>(), 0.1 * shift_before.abs().max().item<double>());
}

TEST(Dfq, BnRangesFromClosedFormAndNamedRefusal) {
  const ImportedModel m = import_torchscript(kModels + "resnet20_fmnist/model.pt");
  Graph g = m.graph;
  fold_batch_norm(g);
  auto cal = make_plugin<Calibrator>("bn_ranges");
  EXPECT_EQ(cal->input(), Calibrator::Input::Graph);
  // The value after the stem's ReLU: [0, max_c(beta + 5|gamma|)].
  const Node& stem = g.nodes[g.layer_nodes().front()];
  const int relu_out = g.nodes[g.consumers(stem.outputs[0]).front()].outputs[0];
  const Range r = cal->range_from_graph(g, relu_out, {-1, 2});
  EXPECT_DOUBLE_EQ(r.min, 0);
  EXPECT_NEAR(r.max, (stem.folded_bn.beta + 5 * stem.folded_bn.gamma.abs()).max().item<double>(), 1e-5);
  const Range input = cal->range_from_graph(g, g.inputs[0], {-0.8, 2.0});
  EXPECT_DOUBLE_EQ(input.min, -0.8);
  EXPECT_DOUBLE_EQ(input.max, 2.0);
  // ShuffleNetV2 splits channels with chunk: no rule, and the error names the value and the node.
  Graph shuffle = import_torchscript(kModels + "shufflenet_v2_fmnist/model.pt").graph;
  fold_batch_norm(shuffle);
  QuantizedModel qm(shuffle, PtqSettings{});
  const std::string e = error_of([&] {
    calibrate_from_graph(qm, Loaded<Calibrator>(built_plugins().get(PluginKind::Calibrator, "bn_ranges"), cal), {-1, 2});
  });
  EXPECT_NE(e.find("bn_ranges: no range for"), std::string::npos) << e;
  EXPECT_NE(e.find("has no BN-statistics rule"), std::string::npos) << e;
}
