// Channels-last memory (memory_format: channels_last) against the contiguous layout, engine by engine, on
// the zoo's ResNet-20: other kernels computing the same functions, so the results agree within float32
// rounding carried through each engine. The contiguous run is the reference (LibTorch's NCHW kernels).
#include <gtest/gtest.h>

#include <map>

#include "test_util.h"
#include "xdq/exec/convolution.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/load.h"
#include "xdq/quant/reconstruction.h"
#include "xdq/synthesis/synthesis.h"

namespace xdq::test {
namespace {

double relative_to_largest(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-30, b.abs().max().item<double>());
}

// Activation ranges from statistics collected in each layout: minmax within 1e-5 of the largest bound
// (the same maxima, rounded differently inside the convolutions); mse, a search over the histogram,
// within 1 % (a value near a bin edge may change bins).
TEST(Layout, CalibrationRangesMatchTheContiguousLayout) {
  QuantizedResnet20 nchw(512, Split::Train, 0, "minmax"), nhwc(512, Split::Train, 0, "minmax", true);
  ASSERT_TRUE(nhwc.quantized->graph().channels_last);
  for (const char* calibrator : {"minmax", "mse"}) {
    const Options defaults = default_options(built_plugins().get(PluginKind::Calibrator, calibrator).options);
    for (QuantizedResnet20* m : {&nchw, &nhwc})
      calibrate_from_statistics(*m->quantized, built_plugins().load<Calibrator>(calibrator, defaults),
                                m->quantized->collect_statistics(m->images, 256, 2048));
    const auto &a = nhwc.quantized->activations(), &b = nchw.quantized->activations();
    ASSERT_EQ(a.size(), b.size());
    const double tolerance = std::string(calibrator) == "minmax" ? 1e-5 : 1e-2;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const double scale = std::max(std::abs(b[i].range.min), std::abs(b[i].range.max));
      EXPECT_LE(std::abs(a[i].range.min - b[i].range.min), tolerance * scale) << calibrator << " " << a[i].name;
      EXPECT_LE(std::abs(a[i].range.max - b[i].range.max), tolerance * scale) << calibrator << " " << a[i].name;
    }
  }
}

// FP32 and W4A4 logits: within 1e-4 of the largest logit.
TEST(Layout, LogitsMatchTheContiguousLayout) {
  QuantizedResnet20 nchw(256, Split::Test, 0, "minmax"), nhwc(256, Split::Test, 0, "minmax", true);
  nchw.quantized->round_to_nearest();
  nhwc.quantized->round_to_nearest();
  at::NoGradGuard no_grad;
  EXPECT_LE(relative_to_largest(Executor(nhwc.model.graph).forward(nhwc.images), Executor(nchw.model.graph).forward(nchw.images)),
            1e-4);
  EXPECT_LE(relative_to_largest(nhwc.quantized->executor().forward(nhwc.images), nchw.quantized->executor().forward(nchw.images)),
            1e-4);
}

// A one-channel NCHW input passes ATen's channels-last check as it is, and ATen's convolution would then
// read its strides as NCHW and write an NCHW output: the executor hands it on with NHWC strides (the
// stem's convolution runs NHWC; its logits are among those compared above).
TEST(Layout, OneChannelInputTakesChannelsLastStrides) {
  QuantizedResnet20 nhwc(8, Split::Test, 0, "minmax", true);
  ASSERT_EQ(nhwc.images.size(1), 1);
  ASSERT_EQ(nhwc.images.stride(1), 28 * 28);
  Executor exec(nhwc.model.graph);
  std::vector<std::int64_t> strides;
  exec.set_value_hook(nhwc.model.graph.inputs.at(0), [&](const at::Tensor& x) {
    strides = x.strides().vec();
    return x;
  });
  at::NoGradGuard no_grad;
  exec.forward(nhwc.images);
  EXPECT_EQ(strides, (std::vector<std::int64_t>{28 * 28, 1, 28, 1}));
}

struct Reconstructed {
  std::vector<UnitReport> reports;
  std::vector<at::Tensor> weights;
  std::vector<double> steps;
};

Reconstructed reconstruct_in(QuantizedResnet20& m, const ReconstructionOptions& o) {
  RoundingContext ctx;
  ctx.calibration = m.images;
  ctx.seed = 5;
  ctx = m.quantized->rounding_context(ctx);
  Reconstructed r{reconstruct(ctx, o), {}, {}};
  for (const auto& layer : m.quantized->layers()) r.weights.push_back(layer.quantized_weight.contiguous());
  for (const auto& act : m.quantized->activations()) r.steps.push_back(act.qparams.scale.item<double>());
  return r;
}

// QDrop (activations quantized with learned LSQ steps, half of them dropped by draws that follow the
// logical index) and BRECQ's Fisher-weighted rounding then activation steps, 30 iterations a unit: every
// unit's final loss within 1e-3 relative, at most 0.2 % of the weights rounded the other way (a
// learned rounding variable within float32 noise of 0), learned steps within 1e-3 relative.
TEST(Layout, ReconstructionMatchesTheContiguousLayout) {
  ReconstructionOptions qdrop;
  qdrop.iters = 30;
  qdrop.batch_size = 16;
  qdrop.act_quant = true;
  qdrop.drop_prob = 0.5;
  qdrop.act_steps = "joint";
  ReconstructionOptions brecq;
  brecq.iters = brecq.act_iters = 30;
  brecq.batch_size = 16;
  brecq.fisher = true;
  brecq.act_steps = "after";
  for (const auto& [name, o] : {std::pair{"qdrop", qdrop}, std::pair{"brecq", brecq}}) {
    QuantizedResnet20 nchw(64, Split::Train, 0, "mse"), nhwc(64, Split::Train, 0, "mse", true);
    const Reconstructed a = reconstruct_in(nhwc, o), b = reconstruct_in(nchw, o);
    ASSERT_EQ(a.reports.size(), b.reports.size());
    for (std::size_t u = 0; u < a.reports.size(); ++u)
      EXPECT_NEAR(a.reports[u].loss_final, b.reports[u].loss_final, 1e-3 * b.reports[u].loss_final)
          << name << " " << b.reports[u].name;
    double flipped = 0, total = 0;
    for (std::size_t l = 0; l < a.weights.size(); ++l) {
      flipped += (a.weights[l] != b.weights[l]).sum().item<double>();
      total += static_cast<double>(b.weights[l].numel());
    }
    EXPECT_LE(flipped / total, 2e-3) << name;
    for (std::size_t i = 0; i < a.steps.size(); ++i) EXPECT_NEAR(a.steps[i], b.steps[i], 1e-3 * b.steps[i]) << name;
  }
}

// ZeroQ's and DeepInversion's synthesis, 10 Adam steps from the same noise: the images within 1e-3 of
// their largest magnitude on average (a step's sign may flip where a gradient is within rounding of 0).
TEST(Layout, SynthesisMatchesTheContiguousLayout) {
  ImportedModel m = import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt");
  Graph nhwc = m.graph;
  nhwc.channels_last = true;
  for (BnSynthesisOptions o : {BnSynthesisOptions(), deepinversion_defaults()}) {
    o.iterations = 10;
    o.batch_size = 8;
    o.warmup = 0;
    const auto images = [&](const Graph& g) {
      return synthesize_from_bn_statistics({{"resnet20", &g, m.preprocess, {1, 28, 28}}}, {1, 28, 28}, 8, 3, o, nullptr).images;
    };
    const at::Tensor a = images(nhwc), b = images(m.graph);
    EXPECT_LE((a - b).abs().mean().item<double>(), 1e-3 * b.abs().max().item<double>()) << o.method;
  }
}

// An experiment in each layout: the quickstart's W4A4 top-1 within 0.1 point; a layout that is not one
// is refused naming the file and the --set key that gave it.
TEST(Layout, ExperimentTop1MatchesTheContiguousLayout) {
  TempDir dir;
  std::map<std::string, std::map<std::string, double>> top1;
  for (const char* layout : {"contiguous", "channels_last"})
    top1[layout] = quickstart_w4a4_top1(dir.file(layout), "[minmax, mse]", std::string("--set memory_format=") + layout);
  ASSERT_EQ(top1["contiguous"].size(), 2u);
  for (const auto& [id, value] : top1["contiguous"]) EXPECT_NEAR(top1["channels_last"].at(id), value, 0.001) << id;
  const std::string quickstart = std::string(XDQ_SOURCE_DIR) + "/experiments/quickstart.yaml";
  const std::string bad = error_of([&] { load_experiment(quickstart, {"memory_format=nhwc"}, built_plugins()); });
  EXPECT_NE(bad.find("quickstart.yaml --set memory_format: "), std::string::npos) << bad;
}

// The sub-batch rule: the largest power of two up to 64 whose largest activation fits half the cache,
// none under 32 or at least the batch.
TEST(SubBatches, LargestActivationFitsHalfTheCache) {
  const std::int64_t mib = 1 << 20, image = 16 * 28 * 28 * 4;   // ResNet-20's largest activation at 28x28
  EXPECT_EQ(evaluation_sub_batch(256, image, 32 * mib), 64);     // 64 x 49 KiB = 3.1 MiB <= 16
  EXPECT_EQ(evaluation_sub_batch(65, image, 32 * mib), 64);
  EXPECT_EQ(evaluation_sub_batch(64, image, 32 * mib), 0);       // the batch is no larger
  EXPECT_EQ(evaluation_sub_batch(10000, 1000, 1024 * mib), 64);  // at most 64
  const std::int64_t expanded = 96 * 28 * 28 * 4;               // 294 KiB
  EXPECT_EQ(evaluation_sub_batch(256, expanded, 32 * mib), 32);  // 32 x 294 KiB = 9.2 MiB <= 16, 64: 18.4 > 16
  EXPECT_EQ(evaluation_sub_batch(256, image, 4 * mib), 32);      // 32 x 49 KiB = 1.5 MiB <= 2, 64: 3.1 > 2
  EXPECT_EQ(evaluation_sub_batch(256, image, 2 * mib), 0);       // 16 < 32
  EXPECT_EQ(evaluation_sub_batch(256, 0, 32 * mib), 0);          // nothing measured yet
  EXPECT_EQ(evaluation_sub_batch(256, image, 0), 0);
}

// ResNet-20 over 300 images: the first call runs whole (an elementwise hook on the input sees 300), later
// ones in equal sub-batches of the rule's size up to the linear (the last node), then the linear on all
// 300; the logits bit-equal to a whole run (forced by a hook that observes), for the FP32 graph in both
// layouts and with Winograd, and for the W4A4 model with its fake quantizers. With autograd, whole.
TEST(SubBatches, EvaluationGivesTheWholeBatchsBits) {
  QuantizedResnet20 m(300, Split::Test, 0, "minmax", true);
  const std::int64_t size = evaluation_sub_batch(300, 16 * 28 * 28 * 4, last_level_cache_bytes());
  const std::int64_t parts = size ? (300 + size - 1) / size : 1;
  Graph folded = m.model.graph;
  fold_batch_norm(folded);
  std::vector<Executor> execs;
  for (bool channels_last : {false, true})
    for (ConvAlgorithm conv : {ConvAlgorithm::Direct, ConvAlgorithm::Winograd}) {
      if (conv == ConvAlgorithm::Winograd && (!channels_last || !winograd_on_this_cpu())) continue;
      Graph g = folded;
      g.channels_last = channels_last;
      g.convolution = conv;
      execs.emplace_back(g);
    }
  execs.push_back(m.quantized->executor());
  at::NoGradGuard no_grad;
  for (Executor& exec : execs) {
    const Graph& g = exec.graph();
    ASSERT_EQ(g.nodes.back().kind, OpKind::Linear);
    EXPECT_EQ(exec.per_sample_prefix(), static_cast<int>(g.nodes.size()) - 1);
    std::vector<std::int64_t> seen;
    exec.set_elementwise_hook(g.inputs[0], [&](const at::Tensor& x) {
      seen.push_back(x.size(0));
      return x;
    });
    const at::Tensor first = exec.forward(m.images);
    EXPECT_EQ(seen, std::vector<std::int64_t>{300});
    seen.clear();
    const at::Tensor split = exec.forward(m.images);
    EXPECT_EQ(seen, std::vector<std::int64_t>(parts, 300 / parts));  // 300 = 5 x 60 for sub-batches of 64
    exec.set_value_hook(g.outputs[0], [](const at::Tensor& y) { return y; });
    seen.clear();
    const at::Tensor whole = exec.forward(m.images);
    EXPECT_EQ(seen, std::vector<std::int64_t>{300});
    EXPECT_TRUE(at::equal(split, whole));
    EXPECT_TRUE(at::equal(first, whole));
    exec.set_value_hook(g.outputs[0], nullptr);
    at::AutoGradMode grad(true);
    seen.clear();
    exec.forward(m.images);
    EXPECT_EQ(seen, std::vector<std::int64_t>{300});
  }
}

// ShuffleNetV2's units concatenate their branches' outputs, gathered in a list first (and shuffle channels
// with views of sizes read at run time): the prefix stops at the first unit's list, with only
// convolutions, ReLUs and the max pooling before it, and the logits keep the whole run's bits.
TEST(SubBatches, PrefixStopsAtTheFirstOpThatIsNotPerSample) {
  ImportedModel m = import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/shufflenet_v2_fmnist/model.pt");
  fold_batch_norm(m.graph);
  m.graph.channels_last = true;
  Executor exec(m.graph);
  const int prefix = exec.per_sample_prefix();
  ASSERT_GT(prefix, 0);
  ASSERT_LT(prefix, static_cast<int>(m.graph.nodes.size()));
  for (int i = 0; i < prefix; ++i) {
    const std::string& op = m.graph.nodes[i].op;
    EXPECT_TRUE(op == "conv2d" || op == "aten::relu" || op == "aten::max_pool2d") << op;
  }
  EXPECT_EQ(m.graph.nodes[prefix].op, "prim::ListConstruct");
  const at::Tensor images = m.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Test).subset(300, 1).images);
  at::NoGradGuard no_grad;
  const at::Tensor first = exec.forward(images), second = exec.forward(images);
  EXPECT_TRUE(at::equal(first, second));
}

}  // namespace
}  // namespace xdq::test
