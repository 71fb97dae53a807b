// Winograd convolutions (convolution: winograd) against a float64 ATen convolution, forward and backward.
// Error bound: each output (or gradient element) is a sum of products p_i; a float32 evaluation of it is
// within c·eps·Σ|p_i| of the exact value, c ~ the number of roundings each product passes (direct: the
// summation depth). Winograd forms the products in transformed space: F(4x4, 3x3)'s input and output
// transforms combine up to 6x6 tile values with coefficients up to 8 (points 0, ±1, ±2, ±1/2), so each
// product's rounding error reaches the output multiplied by their row norms; c = 1024 covers that
// amplification (measured: at most 22 on these shapes), and one wrong or missing product of the 144-576
// in a sum exceeds it more than tenfold.
// The Σ|p_i| of every element comes from the same float64 convolution run on absolute values.
#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "test_util.h"
#include "xdq/exec/convolution.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/load.h"
#include "xdq/quant/statistics_cache.h"

namespace xdq::test {
namespace {

constexpr double kEps32 = std::numeric_limits<float>::epsilon();
constexpr double kWinogradRoundings = 1024;

ConvAttrs attrs_with_padding(std::int64_t pad) {
  ConvAttrs a;
  a.padding = {pad, pad};
  return a;
}

// Skips (with the reason printed) where oneDNN has no Winograd kernel: built without libdnnl-dev, or a CPU
// without AVX-512.
#define SKIP_WITHOUT_WINOGRAD()                                                                               \
  if (!winograd_on_this_cpu())                                                                                \
  GTEST_SKIP() << (winograd_built() ? "this CPU has no oneDNN Winograd kernels (AVX-512 needed)"             \
                                    : "built without oneDNN's headers (libdnnl-dev)")

struct Case {
  std::int64_t n, c, k, size, pad;
  bool bias, channels_last;
};

// max over elements of |got - exact| / (eps·Σ|p_i|)
double rounding_multiple(const at::Tensor& got, const at::Tensor& exact, const at::Tensor& abs_sum) {
  return ((got.to(at::kDouble) - exact).abs() / (kEps32 * abs_sum + 1e-300)).max().item<double>();
}

TEST(Winograd, ForwardAndGradientsMatchFloat64WithinTheTransformsRoundingBound) {
  SKIP_WITHOUT_WINOGRAD();
  at::manual_seed(3);
  for (const Case& t : {Case{3, 16, 16, 28, 1, true, true}, Case{2, 32, 16, 13, 1, false, false},
                        Case{2, 16, 48, 9, 0, true, false}, Case{4, 64, 32, 7, 1, true, true}}) {
    const auto format = t.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    const at::Tensor x = at::randn({t.n, t.c, t.size, t.size}).contiguous(format),
                     w = (at::randn({t.k, t.c, 3, 3}) * 0.2).contiguous(format),
                     b = t.bias ? at::randn({t.k}) : at::Tensor();
    const ConvAttrs attrs = attrs_with_padding(t.pad);
    ASSERT_TRUE(winograd_applies(x, w, attrs));
    at::Tensor xv = x.clone().requires_grad_(), wv = w.clone().requires_grad_(),
               bv = t.bias ? b.clone().requires_grad_() : at::Tensor();
    const at::Tensor y = winograd_conv2d(xv, wv, bv, attrs);
    EXPECT_EQ(y.is_contiguous(at::MemoryFormat::ChannelsLast) && !y.is_contiguous(), t.channels_last);
    const at::Tensor dy = at::randn(y.sizes());
    y.backward(dy);

    // float64 references: the values, and the same convolution on absolute values (Σ|p_i|).
    auto reference = [&](const at::Tensor& xs, const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& g) {
      at::Tensor xd = xs.to(at::kDouble).requires_grad_(), wd = ws.to(at::kDouble).requires_grad_(),
                 bd = bs.defined() ? bs.to(at::kDouble).requires_grad_() : at::Tensor();
      const at::Tensor yd = at::conv2d(xd, wd, bd, {1, 1}, attrs.padding);
      yd.backward(g.to(at::kDouble));
      return std::vector<at::Tensor>{yd.detach(), xd.grad(), wd.grad(), bd.defined() ? bd.grad() : at::Tensor()};
    };
    const auto exact = reference(x, w, b, dy), scale = reference(x.abs(), w.abs(), t.bias ? b.abs() : b, dy.abs());
    const std::string where = "case c=" + std::to_string(t.c) + " k=" + std::to_string(t.k);
    EXPECT_LE(rounding_multiple(y.detach(), exact[0], scale[0]), kWinogradRoundings) << where << " output";
    EXPECT_LE(rounding_multiple(xv.grad(), exact[1], scale[1]), kWinogradRoundings) << where << " input gradient";
    EXPECT_LE(rounding_multiple(wv.grad(), exact[2], scale[2]), kWinogradRoundings) << where << " weight gradient";
    if (t.bias) EXPECT_LE(rounding_multiple(bv.grad(), exact[3], scale[3]), kWinogradRoundings) << where << " bias gradient";
    EXPECT_EQ(xv.grad().suggest_memory_format(), format) << where;
  }
}

// Only the gradients asked for are formed, and autograd flows through a Winograd convolution into the
// ops around it (here a weight computed from a parameter, as soft rounding does).
TEST(Winograd, GradientsFlowThroughComputedWeights) {
  SKIP_WITHOUT_WINOGRAD();
  at::manual_seed(4);
  const at::Tensor x = at::randn({2, 16, 10, 10}), v = at::randn({16, 16, 3, 3}).requires_grad_();
  const ConvAttrs attrs = attrs_with_padding(1);
  winograd_conv2d(x, v.sigmoid(), at::Tensor(), attrs).square().sum().backward();
  at::Tensor vd = v.detach().to(at::kDouble).requires_grad_();
  at::conv2d(x.to(at::kDouble), vd.sigmoid(), {}, {1, 1}, attrs.padding).square().sum().backward();
  EXPECT_LE((v.grad().to(at::kDouble) - vd.grad()).abs().max().item<double>(), 1e-3 * vd.grad().abs().max().item<double>());
}

// Convolutions oneDNN has no Winograd kernel for stay ATen's: bit-equal to at::conv2d.
TEST(Winograd, UncoveredConvolutionsStayDirect) {
  at::manual_seed(5);
  ConvAttrs strided = attrs_with_padding(1);
  strided.stride = {2, 2};
  const at::Tensor x = at::randn({2, 16, 12, 12}), w3 = at::randn({16, 16, 3, 3}), w1 = at::randn({16, 16, 1, 1}),
                   x3 = at::randn({2, 3, 12, 12}), w_rgb = at::randn({16, 3, 3, 3});
  EXPECT_FALSE(winograd_applies(x, w3, strided));
  EXPECT_FALSE(winograd_applies(x, w1, attrs_with_padding(0)));
  EXPECT_FALSE(winograd_applies(x3, w_rgb, attrs_with_padding(1)));
  EXPECT_TRUE(at::equal(convolve(x, w3, {}, strided, ConvAlgorithm::Winograd), at::conv2d(x, w3, {}, {2, 2}, {1, 1})));
  EXPECT_TRUE(at::equal(convolve(x3, w_rgb, {}, attrs_with_padding(1), ConvAlgorithm::Winograd),
                        at::conv2d(x3, w_rgb, {}, {1, 1}, {1, 1})));
  EXPECT_THROW(winograd_conv2d(x, w3, {}, strided), Error);
}

// A whole model: ResNet-20's logits within 1e-3 of the largest (twenty layers, each within the bound
// above relative to its own scale, and the two algorithms round differently: not bit-equal, which also
// shows that the executor ran Winograd).
TEST(Winograd, ResnetLogitsMatchDirectConvolutions) {
  SKIP_WITHOUT_WINOGRAD();
  for (bool channels_last : {false, true}) {
    QuantizedResnet20 direct(128, Split::Test, 0, "minmax", channels_last);
    Graph winograd = direct.model.graph;
    winograd.convolution = ConvAlgorithm::Winograd;
    at::NoGradGuard no_grad;
    const at::Tensor a = Executor(winograd).forward(direct.images), b = Executor(direct.model.graph).forward(direct.images);
    EXPECT_LE((a - b).abs().max().item<double>(), 1e-3 * b.abs().max().item<double>()) << channels_last;
    EXPECT_FALSE(at::equal(a, b));
  }
}

// Evaluation without autograd runs a Winograd convolution's add and ReLU inside its kernel: ResNet-20's
// conv -> ReLU and conv -> add -> ReLU chains, with the logits the separate ops give (one float addition
// per add, ReLU exact: within one rounding per fused add, carried through twenty layers). A hook on a
// value in between keeps that chain's ops separate, so the hook still sees and replaces the value.
TEST(Winograd, EvaluationRunsTheAddAndReluInsideTheConvolution) {
  SKIP_WITHOUT_WINOGRAD();
  QuantizedResnet20 direct(128, Split::Test, 0, "minmax", true);
  Graph graph = direct.model.graph;
  fold_batch_norm(graph);
  EXPECT_EQ(Executor(graph).fused_epilogues(), 0);  // direct convolutions
  graph.convolution = ConvAlgorithm::Winograd;
  Executor exec(graph);
  // Every ReLU after a conv, and every add with the conv computed after the other operand: the second
  // conv of seven blocks, the shortcut's 1x1 conv of two (planned; at run time only 3x3 stride-1 convs
  // with 16k channels have the kernels, so the stem and the shortcuts stay direct and separate).
  EXPECT_EQ(exec.fused_epilogues(), 1 + 9 + 9);
  auto evaluate = [&](bool autograd) {
    at::AutoGradMode mode(autograd);  // autograd on: every op separate
    return exec.forward(direct.images).detach();
  };
  const at::Tensor fused = evaluate(false), separate = evaluate(true);
  EXPECT_LE(max_relative_error(fused, separate), forward_relative_error(20, 576));
  const auto conv = std::find_if(graph.nodes.begin(), graph.nodes.end(), [](const Node& n) { return n.name == "layer1.block0.conv1"; });
  ASSERT_NE(conv, graph.nodes.end());
  exec.set_value_hook(conv->outputs[0], [](const at::Tensor& x) { return x * 0.5; });
  const at::Tensor hooked = evaluate(false);
  EXPECT_LE(max_relative_error(hooked, evaluate(true)), forward_relative_error(20, 576));
  EXPECT_GT(max_relative_error(hooked, fused), 1e-2);  // the hook halved a layer's output
}

// A blocked activation holds channel c of pixel (h, w) at [n][c / 16][h][w][c % 16]: the same convolutions
// to and from that layout give the bits of the 4-d ones, with the layout formed by ATen's view and permute.
TEST(Winograd, BlockedActivationsHoldTheChannelsInBlocksOf16) {
  SKIP_WITHOUT_WINOGRAD();
  at::manual_seed(6);
  for (std::int64_t c : {16, 32}) {
    const at::Tensor x = at::randn({3, c, 9, 9}).contiguous(at::MemoryFormat::ChannelsLast),
                     w1 = (at::randn({c, c, 3, 3}) * 0.2).contiguous(at::MemoryFormat::ChannelsLast),
                     w2 = (at::randn({c, c, 3, 3}) * 0.2).contiguous(at::MemoryFormat::ChannelsLast), b = at::randn({c});
    const ConvAttrs same = attrs_with_padding(1);
    auto to_blocks = [&](const at::Tensor& t) {
      return t.reshape({t.size(0), c / 16, 16, t.size(2), t.size(3)}).permute({0, 1, 3, 4, 2}).contiguous();
    };
    const at::Tensor h = winograd_conv2d_fused(x, w1, b, same, {at::Tensor(), true});
    const at::Tensor h_blocked = winograd_conv2d_fused(x, w1, b, same, {at::Tensor(), true}, {false, false, true});
    ASSERT_EQ(h_blocked.sizes(), (at::IntArrayRef{3, c / 16, 9, 9, 16})) << c;
    EXPECT_TRUE(at::equal(h_blocked, to_blocks(h))) << c;
    EXPECT_TRUE(at::equal(from_blocked(h_blocked), h)) << c;
    // Blocked input and residual, 4-d or blocked output.
    ASSERT_TRUE(winograd_applies(h_blocked, w2, same, {h_blocked, true}, {true, true, false}));
    const at::Tensor out = winograd_conv2d_fused(h, w2, b, same, {h, true});
    EXPECT_TRUE(at::equal(winograd_conv2d_fused(h_blocked, w2, b, same, {h_blocked, true}, {true, true, false}), out)) << c;
    EXPECT_TRUE(at::equal(winograd_conv2d_fused(h_blocked, w2, b, same, {h, true}, {true, false, true}), to_blocks(out))) << c;
    // What is not a blocked activation is refused.
    EXPECT_FALSE(winograd_applies(h, w2, same, {}, {true, false, false}));
    EXPECT_FALSE(winograd_applies(h_blocked, w2, same, {h_blocked, false}, {true, false, false}));
    EXPECT_THROW(winograd_conv2d_fused(h_blocked.transpose(2, 3), w2, b, same, {}, {true, false, false}), Error);
    EXPECT_THROW(from_blocked(h), Error);
  }
}

// Evaluation keeps the activations between Winograd convolutions blocked: an elementwise hook on each ReLU
// output sees 13 of ResNet-20's 19 so (all but the stem's, those made by the stride-2 and 1x1 convolutions
// of the two downsampling blocks, which stay direct, and the last, which the pooling reads), and the
// logits carry the bits of the run where plain hooks keep every value 4-d; so do the quantized model's
// (W4A4), whose per-tensor fake quantizers are elementwise hooks.
TEST(Winograd, EvaluationKeepsActivationsBetweenWinogradConvolutionsBlocked) {
  SKIP_WITHOUT_WINOGRAD();
  QuantizedResnet20 direct(64, Split::Test, 0, "minmax", true);
  QuantizedModel q = *direct.quantized;
  q.graph_for_rewrite().convolution = ConvAlgorithm::Winograd;
  const Graph& graph = q.graph();
  std::vector<int> relu_outputs;
  for (const Node& n : graph.nodes)
    if (n.op == "aten::relu") relu_outputs.push_back(n.outputs[0]);
  ASSERT_EQ(relu_outputs.size(), 19u);
  at::NoGradGuard no_grad;
  Executor blocked_run(graph), logical_run(graph);
  int seen_blocked = 0;
  for (int v : relu_outputs) {
    blocked_run.set_elementwise_hook(v, [&seen_blocked](const at::Tensor& x) {
      seen_blocked += x.dim() == 5;
      return x;
    });
    logical_run.set_value_hook(v, [](const at::Tensor& x) { return x; });
  }
  EXPECT_TRUE(at::equal(blocked_run.forward(direct.images), logical_run.forward(direct.images)));
  EXPECT_EQ(seen_blocked, 13);

  q.round_to_nearest();
  Executor quantized = q.executor(), quantized_logical(graph);
  for (const QuantizedLayer& layer : q.layers()) quantized_logical.set_weight(layer.node, layer.quantized_weight);
  for (const ActivationQuantizer& act : q.activations()) {
    const QParams p = act.qparams;
    quantized_logical.set_value_hook(act.value, [p](const at::Tensor& x) { return fake_quantize(x, p); });
  }
  EXPECT_TRUE(at::equal(quantized.forward(direct.images), quantized_logical.forward(direct.images)));
  // A hook that is not elementwise after all is refused, naming the value.
  blocked_run.set_elementwise_hook(relu_outputs[2], [](const at::Tensor& x) { return x.sum(4); });
  EXPECT_THROW(blocked_run.forward(direct.images), Error);
}

// A fused add writes its output into the residual's memory when nothing else holds or reads it (ResNet-20:
// layer1.block1's output lands where layer1.block0's lay), and never into a residual the caller gave or
// captures or a hook kept: those keep their values.
TEST(Winograd, FusedAddWritesIntoAResidualNothingElseHolds) {
  SKIP_WITHOUT_WINOGRAD();
  QuantizedResnet20 direct(32, Split::Test, 0, "minmax", true);
  Graph graph = direct.model.graph;
  fold_batch_norm(graph);
  graph.convolution = ConvAlgorithm::Winograd;
  auto output_of = [&](const std::string& block) {  // the ReLU after the block's add
    const auto add = std::find_if(graph.nodes.begin(), graph.nodes.end(), [&](const Node& x) { return x.name == block + "/add"; });
    return add == graph.nodes.end() ? -1 : graph.nodes.at(graph.consumers(add->outputs[0]).at(0)).outputs[0];
  };
  const int block0 = output_of("layer1.block0"), block1 = output_of("layer1.block1");
  ASSERT_GE(block0, 0);
  ASSERT_GE(block1, 0);
  Executor exec(graph);
  const void *memory0 = nullptr, *memory1 = nullptr;
  exec.set_elementwise_hook(block0, [&](const at::Tensor& x) { return memory0 = x.data_ptr(), x; });
  exec.set_elementwise_hook(block1, [&](const at::Tensor& x) { return memory1 = x.data_ptr(), x; });
  at::NoGradGuard no_grad;
  const int input = graph.inputs.at(0), last = static_cast<int>(graph.nodes.size()), logits = graph.outputs.at(0);
  const at::Tensor plain = exec.run_nodes(0, last, {{input, direct.images}}, {logits})[0];
  EXPECT_EQ(memory0, memory1);
  // Captured: block0's value as the run that ends where it is made gives it, and the same logits.
  const auto captured = exec.run_nodes(0, last, {{input, direct.images}}, {logits, block0});
  EXPECT_NE(memory0, memory1);
  const at::Tensor block0_alone = exec.run_nodes(0, graph.producer(block0) + 1, {{input, direct.images}}, {block0})[0];
  EXPECT_TRUE(at::equal(captured[1], block0_alone));
  EXPECT_TRUE(at::equal(captured[0], plain));
  // Kept by a hook: the kept tensor holds block0's value after the run.
  at::Tensor kept;
  exec.set_elementwise_hook(block0, [&kept](const at::Tensor& x) { return kept = x, x; });
  EXPECT_TRUE(at::equal(exec.run_nodes(0, last, {{input, direct.images}}, {logits})[0], plain));
  EXPECT_TRUE(at::equal(kept.dim() == 5 ? from_blocked(kept) : kept, block0_alone));
  // Given: the caller's tensor is left as it was.
  const int first = graph.producer(block0) + 1;
  ASSERT_EQ(exec.range_inputs(first, last), std::vector<int>{block0});
  const at::Tensor given = block0_alone.clone(at::MemoryFormat::ChannelsLast);
  const at::Tensor before = given.clone();
  EXPECT_TRUE(at::equal(exec.run_nodes(first, last, {{block0, given}}, {logits})[0], plain));
  EXPECT_TRUE(at::equal(given, before));
}

// Statistics collected with Winograd convolutions are cached apart from the direct ones' (their values
// differ in rounding): each algorithm computes its own once, then reads it back.
TEST(Winograd, StatisticsCacheKeepsTheAlgorithmsApart) {
  SKIP_WITHOUT_WINOGRAD();
  QuantizedResnet20 direct(64, Split::Train, 0, "minmax", true);
  QuantizedModel winograd = *direct.quantized;
  winograd.graph_for_rewrite().convolution = ConvAlgorithm::Winograd;
  TempDir dir;
  auto from_cache = [&](const QuantizedModel& m) {
    std::ostringstream log;
    StatisticsCache(dir.file("cache")).get(m, direct.images, 64, 256, log);
    return log.str().find("from the cache") != std::string::npos;
  };
  EXPECT_FALSE(from_cache(*direct.quantized));
  EXPECT_FALSE(from_cache(winograd));
  EXPECT_TRUE(from_cache(winograd));
  EXPECT_TRUE(from_cache(*direct.quantized));
}

// The experiment key: the quickstart's W4A4 top-1 with Winograd convolutions within 0.1 point of direct
// ones; a value that is not an algorithm is refused naming the file and the --set key that gave it.
TEST(Winograd, ExperimentTop1MatchesDirectConvolutions) {
  const std::string quickstart = std::string(XDQ_SOURCE_DIR) + "/experiments/quickstart.yaml";
  const std::string bad = error_of([&] { load_experiment(quickstart, {"convolution=fast"}, built_plugins()); });
  EXPECT_NE(bad.find("quickstart.yaml --set convolution: "), std::string::npos) << bad;
  SKIP_WITHOUT_WINOGRAD();
  TempDir dir;
  std::map<std::string, double> top1;
  for (const char* algorithm : {"direct", "winograd"}) {
    const auto runs = quickstart_w4a4_top1(dir.file(algorithm), "[mse]", std::string("--set convolution=") + algorithm);
    ASSERT_EQ(runs.size(), 1u);
    top1[algorithm] = runs.begin()->second;
    EXPECT_NE(read_text(dir.file(algorithm) + "/config.resolved.yaml").find(std::string("convolution: ") + algorithm), std::string::npos);
  }
  EXPECT_NEAR(top1["winograd"], top1["direct"], 0.001);
}

// Where the CPU has no Winograd kernels (here oneDNN limited to AVX2, as on such a CPU) a run asking for
// them says so and convolves directly: the quickstart's W4A4 top-1 within 0.1 point of the direct run's.
TEST(Winograd, WithoutKernelsARunWarnsAndConvolvesDirectly) {
  if (!winograd_built()) GTEST_SKIP() << "built without oneDNN's headers (libdnnl-dev)";
  TempDir dir;
  const CommandResult r = run_command("DNNL_MAX_CPU_ISA=AVX2 " + std::string(XDQ_BINARY) + " run " + XDQ_SOURCE_DIR +
                                      "/experiments/quickstart.yaml --out " + dir.file("avx2") +
                                      " --set convolution=winograd --set calibration.count=256 --set test.count=2000"
                                      " --set 'quantization.calibrators=[mse]' --set 'quantization.bits=[w4a4]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("this CPU has no oneDNN Winograd kernels (AVX-512 needed); every convolution runs direct"),
            std::string::npos) << r.output;
  std::ifstream in(dir.file("avx2") + "/results.json");
  const double avx2 = nlohmann::json::parse(in).at("runs")[0].at("results")[0].at("quant_top1").get<double>();
  const auto direct = quickstart_w4a4_top1(dir.file("direct"), "[mse]", "--set convolution=direct");
  ASSERT_EQ(direct.size(), 1u);
  EXPECT_NEAR(avx2, direct.begin()->second, 0.001);
}

}  // namespace
}  // namespace xdq::test
