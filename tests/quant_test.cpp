#include <cmath>
#include <set>

#include <ATen/core/grad_mode.h>

#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/train/zoo.h"
#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/hash.h"
#include "xdq/quant/calibration_images.h"
#include "xdq/quant/histogram.h"
#include "xdq/quant/quantizer.h"
#include "xdq/quant/scheme.h"

using namespace xdq;

namespace {
// Independent closed form of affine fake quantization (float arithmetic, round half to even).
float reference_fake_quant(float x, float scale, int zero, long qmin, long qmax) {
  const float inv = 1.0f / scale;
  const float code = std::fmin(std::fmax(static_cast<float>(zero) + std::nearbyint(x * inv), float(qmin)), float(qmax));
  return (code - static_cast<float>(zero)) * scale;
}
}  // namespace

TEST(FakeQuantize, PerTensorEqualsClosedFormBitForBit) {
  at::manual_seed(1);
  at::Tensor x = at::randn({4096}) * 3;
  QuantSpec spec{4, false, false, false, true, false};
  QParams q = qparams_from_range(spec, Range{-2.0, 5.0});
  at::Tensor y = fake_quantize(x, q);
  const float s = q.scale.item<float>();
  const int z = q.zero_point.item<int>();
  for (int64_t i = 0; i < x.numel(); ++i)
    ASSERT_EQ(y[i].item<float>(), reference_fake_quant(x[i].item<float>(), s, z, 0, 15)) << i;
}

TEST(FakeQuantize, InferencePathEqualsTorchKernelBitForBit) {
  at::manual_seed(6);
  for (const QuantSpec& spec : {QuantSpec{8, false, false, false, true, false}, QuantSpec{4, true, false, true, false, false},
                                QuantSpec{2, false, false, false, true, false}}) {
    QParams q = qparams_from_range(spec, Range{-1.3, 2.9});
    const float s = q.scale.item<float>();
    // Random values, exact ties (k + 0.5) * s, far outliers and signed zeros.
    at::Tensor ties = (at::arange(-300, 300, at::kFloat) + 0.5f) * s;
    at::Tensor x = at::cat({at::randn({100000}) * 2, ties, at::tensor({1e9f, -1e9f, 0.0f, -0.0f})});
    at::Tensor expected = at::fake_quantize_per_tensor_affine(x, s, q.zero_point.item<int>(), q.qmin, q.qmax);
    at::NoGradGuard no_grad;
    EXPECT_TRUE(fake_quantize(x, q).equal(expected)) << spec.describe();
    // A channels-last image batch keeps its layout and gets the same values.
    const at::Tensor nhwc = x.slice(0, 0, 2 * 3 * 8 * 8).view({2, 3, 8, 8}).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor out = fake_quantize(nhwc, q);
    EXPECT_TRUE(out.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(out.equal(expected.slice(0, 0, 2 * 3 * 8 * 8).view({2, 3, 8, 8}))) << spec.describe();
  }
}

TEST(FakeQuantize, PerChannelEqualsClosedForm) {
  at::manual_seed(2);
  at::Tensor w = at::randn({3, 5});
  QuantSpec spec{3, true, true, true, false, false};
  QParams q = weight_qparams(w, spec, "minmax");
  at::Tensor y = fake_quantize(w, q);
  for (int c = 0; c < 3; ++c) {
    const float amax = w[c].abs().max().item<float>();
    const float s = amax / 3.0f;  // narrow signed 3-bit grid [-3, 3]: (qmax - qmin) / 2 = 3
    EXPECT_NEAR(q.scale[c].item<float>(), s, 1e-7);
    for (int i = 0; i < 5; ++i)
      EXPECT_EQ(y[c][i].item<float>(), reference_fake_quant(w[c][i].item<float>(), q.scale[c].item<float>(), 0, -3, 3));
  }
}

TEST(QParams, ClosedFormScalesAndZeroPoints) {
  // Asymmetric 8-bit unsigned: s = 4/255, z = round(1/s) = round(63.75) = 64.
  QParams a = qparams_from_range(QuantSpec{8, false, false, false, true, false}, Range{-1.0, 3.0});
  EXPECT_FLOAT_EQ(a.scale.item<float>(), 4.0f / 255.0f);
  EXPECT_EQ(a.zero_point.item<int>(), 64);
  // Symmetric signed: s = amax / 127.5; narrow: amax / 127; unsigned: max / 255.
  EXPECT_FLOAT_EQ(qparams_from_range(QuantSpec{8, true, false, false, false, false}, Range{-2.0, 1.0}).scale.item<float>(), 2.0f / 127.5f);
  EXPECT_FLOAT_EQ(qparams_from_range(QuantSpec{8, true, false, true, false, false}, Range{-2.0, 1.0}).scale.item<float>(), 2.0f / 127.0f);
  EXPECT_FLOAT_EQ(qparams_from_range(QuantSpec{8, true, false, false, true, false}, Range{0.0, 3.0}).scale.item<float>(), 3.0f / 255.0f);
  // Power of two: 0.3 / 127.5 = 0.00235 -> 2^round(log2) = 2^-9.
  EXPECT_FLOAT_EQ(qparams_from_range(QuantSpec{8, true, false, false, false, true}, Range{-0.3, 0.3}).scale.item<float>(), std::ldexp(1.0f, -9));
  // A range not containing zero is widened to contain it.
  QParams pos = qparams_from_range(QuantSpec{8, false, false, false, true, false}, Range{1.0, 2.0});
  EXPECT_EQ(pos.zero_point.item<int>(), 0);
  EXPECT_FLOAT_EQ(pos.scale.item<float>(), 2.0f / 255.0f);
  // Grids.
  EXPECT_EQ((QuantSpec{4, true, false, true, false, false}.qmin()), -7);
  EXPECT_EQ((QuantSpec{4, true, false, false, false, false}.qmin()), -8);
  EXPECT_EQ((QuantSpec{4, false, false, false, true, false}.qmax()), 15);
}

TEST(FakeQuantize, StraightThroughGradientInsideRangeZeroOutside) {
  at::Tensor x = at::tensor({-5.0f, -0.3f, 0.2f, 0.9f, 7.0f}).requires_grad_(true);
  QParams q = qparams_from_range(QuantSpec{8, false, false, false, true, false}, Range{-1.0, 1.0});
  fake_quantize(x, q).sum().backward();
  EXPECT_TRUE(x.grad().equal(at::tensor({0.0f, 1.0f, 1.0f, 1.0f, 0.0f})));
}

TEST(WeightRanges, MseMatchesBruteForcePerChannel) {
  at::manual_seed(3);
  at::Tensor w = at::randn({4, 8, 3, 3});
  w[0][0][0][0] = 6.0f;  // an outlier: clipping pays off in channel 0
  QuantSpec spec{4, false, true, false, false, false};
  QParams q = weight_qparams(w, spec, "mse", 80, 2.4);
  for (int c = 0; c < 4; ++c) {
    at::Tensor wc = w[c].reshape({-1});
    const double lo = wc.min().item<double>(), hi = wc.max().item<double>();
    double best = 1e300, best_scale = 0;
    for (int k = 0; k < 80; ++k) {
      const double f = 1.0 - 0.01 * k;
      QParams qc = qparams_from_range(spec, Range{lo * f, hi * f});
      const double err = (fake_quantize(wc, qc) - wc).abs().pow(2.4).sum().item<double>();
      if (err < best) best = err, best_scale = qc.scale.item<float>();
    }
    EXPECT_FLOAT_EQ(q.scale[c].item<float>(), static_cast<float>(best_scale)) << "channel " << c;
  }
  EXPECT_LT(q.scale[0].item<float>(), weight_qparams(w, spec, "minmax").scale[0].item<float>());
}

TEST(Histogram, GrowingRangeBinsLikeTheFinalWidthFromTheStart) {
  at::manual_seed(4);
  at::Tensor a = at::randn({20000}), b = at::randn({20000}) * 5;
  Histogram h(256);
  h.add(a);
  h.add(b);
  // Brute force with the final width.
  const double w = h.width();
  EXPECT_GE(w * 256, std::max(a.abs().max().item<double>(), b.abs().max().item<double>()));
  std::vector<double> pos(256, 0), neg(256, 0);
  for (const at::Tensor& t : {a, b})
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double v = t[i].item<float>();
      const int bin = std::min(255, static_cast<int>(std::fabs(v) / w));
      (v < 0 ? neg : pos)[bin] += 1;
    }
  double mismatched = 0;
  for (int i = 0; i < 256; ++i) mismatched += std::fabs(pos[i] - h.positive()[i]) + std::fabs(neg[i] - h.negative()[i]);
  EXPECT_LE(mismatched, 4);  // float rounding at bin edges only
  EXPECT_EQ(h.count(), 40000);
  EXPECT_DOUBLE_EQ(h.max(), std::max(a.max().item<double>(), b.max().item<double>()));
}

TEST(BatchNormFolding, FoldedConvEqualsConvThenBatchNorm) {
  at::manual_seed(5);
  Graph g;
  const int in = g.add_value("x"), conv_out = g.add_value("c"), bn_out = g.add_value("b");
  g.inputs = {in};
  Node conv;
  conv.kind = OpKind::Conv;
  conv.op = "conv2d";
  conv.name = "conv";
  conv.weight = at::randn({6, 3, 3, 3});
  conv.conv.padding = {1, 1};
  conv.inputs = {in};
  conv.outputs = {conv_out};
  Node bn;
  bn.kind = OpKind::BatchNorm;
  bn.op = "batch_norm";
  bn.name = "bn";
  bn.bn = {at::rand({6}) + 0.5, at::randn({6}), at::randn({6}), at::rand({6}) + 0.1, 1e-5};
  bn.inputs = {conv_out};
  bn.outputs = {bn_out};
  g.nodes = {conv, bn};
  g.outputs = {bn_out};
  at::Tensor x = at::randn({2, 3, 8, 8});
  at::Tensor expected = at::batch_norm(at::conv2d(x, conv.weight, {}, 1, 1), bn.bn.gamma, bn.bn.beta, bn.bn.mean,
                                       bn.bn.var, false, 0.0, 1e-5, true);
  Graph folded = g;
  EXPECT_EQ(fold_batch_norm(folded), 1);
  ASSERT_EQ(folded.nodes.size(), 1u);
  EXPECT_TRUE(folded.nodes[0].folded_bn.gamma.defined());
  EXPECT_LT(test::max_relative_error(Executor(folded).forward(x), expected), 1e-5);
  EXPECT_LT(test::max_relative_error(Executor(g).forward(x), expected), 1e-6);
}

TEST(Scheme, PresetsAndOverrides) {
  const std::string dir = std::string(XDQ_SOURCE_DIR) + "/configs/presets";
  Scheme trt = Scheme::load("tensorrt", dir);
  EXPECT_TRUE(trt.weight_spec(8).narrow_range);
  EXPECT_TRUE(trt.weight_spec(8).per_channel);
  EXPECT_FALSE(trt.activation_spec(8, true).unsigned_range);
  Scheme vitis = Scheme::load("vitis", dir);
  EXPECT_TRUE(vitis.weight_spec(4).pow2_scale);
  Scheme academic = Scheme::load("academic", dir);
  EXPECT_FALSE(academic.activation_spec(4, false).symmetric);
  EXPECT_TRUE(Scheme::load("snpe", dir).weight_spec(8).per_channel == false);
  EXPECT_THROW(Scheme::load("nope", dir), Error);

  Graph g;
  for (const char* name : {"conv1", "layer1.block0.conv1", "layer1.block0.conv2", "fc"}) {
    Node n;
    n.kind = std::string(name) == "fc" ? OpKind::Linear : OpKind::Conv;
    n.name = name;
    g.nodes.push_back(n);
  }
  LayerOverride edges{{"first", "last"}, 8, 8}, glob{{"layer1.*.conv2"}, 2, std::nullopt};
  EXPECT_TRUE(override_matches(edges, g, 0));
  EXPECT_FALSE(override_matches(edges, g, 1));
  EXPECT_TRUE(override_matches(edges, g, 3));
  EXPECT_TRUE(override_matches(glob, g, 2));
  EXPECT_FALSE(override_matches(glob, g, 1));
  const LayerOverride penultimate{{"penultimate"}, std::nullopt, 8};
  EXPECT_TRUE(override_matches(penultimate, g, 2));
  EXPECT_FALSE(override_matches(penultimate, g, 3));
}

// A ResNet with one basic block per stage (stages 2 and 3 with a downsample conv), BN-folded.
Graph one_block_resnet() {
  test::TempDir dir;
  torch::jit::Module m = zoo::make_resnet({8, 4, 1, 10}, 1);
  m.eval();
  m.save(dir.file("r.pt"));
  Graph folded = import_torchscript(dir.file("r.pt")).graph;
  fold_batch_norm(folded);
  return folded;
}

// Which values get an activation quantizer, and at which bits, under each placement, on a ResNet with one
// basic block per stage (stages 2 and 3 with a downsample conv): the lists are written by hand from the
// model's forward code and the presets' comments.
TEST(Scheme, PlacementOfLayerInputsAndOfTheReferenceCodesLayerOutputs) {
  const Graph folded = one_block_resnet();
  const auto placed = [&](const std::string& preset) {
    PtqSettings settings;
    settings.w_bits = settings.a_bits = 4;
    settings.scheme = Scheme::load(preset, std::string(XDQ_SOURCE_DIR) + "/configs/presets");
    const QuantizedModel q(folded, settings);
    std::vector<std::pair<std::string, int>> acts, weights;
    for (const auto& a : q.activations()) acts.emplace_back(a.name, a.spec.bits);
    for (const auto& l : q.layers()) weights.emplace_back(folded.nodes[l.node].name, l.spec.bits);
    return std::make_pair(acts, weights);
  };
  using Bits = std::vector<std::pair<std::string, int>>;
  // Academic: every value a layer reads, the model input included; a block input read by conv1 and the
  // downsample conv has one quantizer.
  EXPECT_EQ(placed("academic").first, (Bits{{"conv1:input", 4}, {"layer1.block0.conv1:input", 4},
                                             {"layer1.block0.conv2:input", 4}, {"layer2.block0.conv1:input", 4},
                                             {"layer2.block0.conv2:input", 4}, {"layer3.block0.conv1:input", 4},
                                             {"layer3.block0.conv2:input", 4}, {"fc:input", 4}}));
  // BRECQ's code: the stem's output (8 bit, its first-layer rule), each block's conv1 output, each
  // block's output after add + ReLU; not conv2 or the downsample conv (they end a branch), not the logits,
  // not the input. The classifier reads the last block's 4-bit output.
  const Bits reference_outputs = {{"conv1:output", 8}, {"layer1.block0.conv1:output", 4}, {"layer1.block0/add:output", 4},
                                  {"layer2.block0.conv1:output", 4}, {"layer2.block0/add:output", 4},
                                  {"layer3.block0.conv1:output", 4}, {"layer3.block0/add:output", 4}};
  const auto brecq = placed("brecq_paper");
  EXPECT_EQ(brecq.first, reference_outputs);
  const Bits weights = {{"conv1", 8}, {"layer1.block0.conv1", 4}, {"layer1.block0.conv2", 4},
                        {"layer2.block0.conv1", 4}, {"layer2.block0.conv2", 4}, {"layer2.block0.downsample.conv", 4},
                        {"layer3.block0.conv1", 4}, {"layer3.block0.conv2", 4}, {"layer3.block0.downsample.conv", 4},
                        {"fc", 8}};
  EXPECT_EQ(brecq.second, weights);
  // QDrop's code: the same places, the stem's output at 4 bit.
  Bits qdrop_outputs = reference_outputs;
  qdrop_outputs[0].second = 4;
  EXPECT_EQ(placed("qdrop_paper").first, qdrop_outputs);
  EXPECT_EQ(placed("qdrop_paper").second, weights);
}

// The onnxruntime preset's placement, layer_inputs_and_outputs: each conv reads a quantized value and its
// output (after its ReLU) is quantized, the branch ends before a residual add included, as is each add's
// output; the logits are not. On a 3-stage ResNet with one block per stage, counted from the architecture:
// the image, the stem's output, per block conv1's and conv2's outputs, the downsample convs' outputs
// (stages 2 and 3), each add's output, and the classifier's pooled input: 1 + 1 + 3 x 2 + 2 + 3 + 1 = 14.
TEST(Scheme, LayerInputsAndOutputsQuantizeWhatAnIntegerRuntimeComputes) {
  const Graph folded = one_block_resnet();
  PtqSettings settings;
  settings.scheme = Scheme::load("onnxruntime", std::string(XDQ_SOURCE_DIR) + "/configs/presets");
  const QuantizedModel q(folded, settings);
  std::set<int> quantized;
  for (const auto& a : q.activations()) quantized.insert(a.value);
  EXPECT_EQ(quantized.size(), 14u);
  const auto after_relu = [&](int v) {
    const auto readers = folded.consumers(v);
    return readers.size() == 1 && strip_inplace(folded.nodes[readers[0]].op) == "aten::relu" ? folded.nodes[readers[0]].outputs[0] : v;
  };
  for (const Node& n : folded.nodes) {
    if (n.is_layer()) EXPECT_TRUE(quantized.count(n.inputs[0])) << n.name << " input";
    if (n.kind == OpKind::Conv || strip_inplace(n.op) == "aten::add")
      EXPECT_TRUE(quantized.count(after_relu(n.outputs[0]))) << n.name << " output";
  }
  for (int v : folded.outputs) EXPECT_FALSE(quantized.count(v));
  EXPECT_TRUE(settings.scheme.weights.symmetric && settings.scheme.weights.per_channel);
}

// RepQ-ViT's placement (vit_academic) on a DeiT-style encoder: every linear's input (the patch embedding's
// too), and both operands of each block's two token matmuls (q·kᵀ, attention·v), counted from the
// architecture: 1 patch conv + 12 x (qkv, proj, fc1, fc2) + head = 50 layer inputs, of which qkv and fc1 read
// a LayerNorm output nobody else reads; 12 x 2 matmuls x 2 operands = 48 more, all distinct values. Every
// weight at the run's bits; of the inputs only the image is at 8 bits (RepQ-ViT's patch embedding).
TEST(Scheme, VitAcademicQuantizesLinearInputsAndBothOperandsOfEveryTokenMatmul) {
  const Graph graph = import_torchscript(std::string(XDQ_TORCHVISION_DIR) + "/deit_tiny.pt").graph;
  PtqSettings settings;
  settings.w_bits = settings.a_bits = 4;
  settings.scheme = Scheme::load("vit_academic", std::string(XDQ_SOURCE_DIR) + "/configs/presets");
  ASSERT_TRUE(settings.scheme.matmul_inputs);
  const QuantizedModel q(graph, settings);
  const std::vector<int> matmuls = token_matmuls(graph);
  ASSERT_EQ(matmuls.size(), 24u);
  for (int m : matmuls) EXPECT_EQ(graph.nodes[m].op, "aten::bmm");
  std::set<int> quantized;
  for (const auto& a : q.activations()) {
    EXPECT_TRUE(quantized.insert(a.value).second) << a.name;
    EXPECT_EQ(a.spec.bits, a.value == graph.inputs[0] ? 8 : 4) << a.name;  // the image at 8 bits, as RepQ-ViT
  }
  EXPECT_EQ(q.activations().size(), 50u + 48u);
  for (int m : matmuls)
    for (int k = 0; k < 2; ++k) EXPECT_TRUE(quantized.count(graph.nodes[m].inputs[k])) << graph.nodes[m].name << " " << k;
  for (const auto& l : q.layers()) {
    EXPECT_TRUE(quantized.count(graph.nodes[l.node].inputs[0])) << graph.nodes[l.node].name;
    EXPECT_EQ(l.spec.bits, 4) << graph.nodes[l.node].name;
  }
  EXPECT_EQ(q.activations()[50].name, "encoder.layers.encoder_layer_0.self_attention/bmm#0:input0");
  // The first operand of attention·v is the softmax's output.
  const int scores = graph.producer(graph.nodes[matmuls[1]].inputs[0]);
  EXPECT_EQ(graph.nodes[scores].op, "aten::softmax");
  // A CNN has no place for them: the academic preset quantizes no matmul there, and the preset is refused
  // when the experiment is prepared (Cli tests).
  EXPECT_TRUE(token_matmuls(import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt").graph).empty());
}

#include "xdq/experiment/diagnostics.h"

TEST(LayerShift, ClippedFractionAndTotalVariationByHand) {
  // One linear layer: its input quantizer sees the model input itself.
  Graph g;
  const int in = g.add_value("x"), out = g.add_value("y");
  g.inputs = {in};
  Node fc;
  fc.kind = OpKind::Linear;
  fc.op = "linear";
  fc.name = "fc";
  fc.weight = at::ones({1, 4});
  fc.inputs = {in};
  fc.outputs = {out};
  g.nodes = {fc};
  g.outputs = {out};
  PtqSettings settings;
  QuantizedModel q(g, settings);
  ASSERT_EQ(q.activations().size(), 1u);
  q.activations()[0].range = Range{0.0, 1.0};
  at::manual_seed(21);
  const at::Tensor reference = at::rand({1000, 4});
  const at::Tensor wider = at::rand({1000, 4}) * 2;  // values in [0, 2): about half above the range
  const at::Tensor far = at::rand({1000, 4}) + 5;    // entirely above the widened range
  const auto shifts = measure_layer_shift(q, reference, {{"same", reference}, {"wider", wider}, {"far", far}}, 256);
  ASSERT_EQ(shifts.size(), 3u);
  EXPECT_EQ(shifts[0].layer, "fc:input");
  EXPECT_DOUBLE_EQ(shifts[0].clipped_fraction, 0.0);
  EXPECT_NEAR(shifts[0].tv_distance, 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(shifts[1].clipped_fraction, wider.gt(1.0).sum().item<double>() / 4000.0);
  EXPECT_DOUBLE_EQ(shifts[2].clipped_fraction, 1.0);
  EXPECT_NEAR(shifts[2].tv_distance, 1.0, 1e-12);
}

// A streamed calibration set reads as the same tensor in memory does: batches of the asked size with
// their first rows, a head that stops early, preprocessing applied per batch, and one content hash (the
// FNV-1a of shape and float32 bytes, recomputed here by hand).
TEST(CalibrationImages, StreamedAndInMemorySetsReadAlike) {
  const at::Tensor all = at::rand({10, 2, 3, 3});
  std::int64_t decoded = 0;  // rows the stream was asked for
  const CalibrationImages streamed(10, {2, 3, 3}, [&](std::int64_t batch, std::int64_t rows, const CalibrationImages::Visit& visit) {
    for (std::int64_t b = 0; b < rows; b += batch) {
      const std::int64_t e = std::min(rows, b + batch);
      decoded += e - b;
      visit(all.slice(0, b, e), b);
    }
  });
  const CalibrationImages memory(all);
  for (const CalibrationImages* set : {&streamed, &memory}) {
    std::vector<std::int64_t> firsts;
    std::vector<at::Tensor> batches;
    set->for_each_batch(4, [&](const at::Tensor& x, std::int64_t first) {
      firsts.push_back(first);
      batches.push_back(x);
    });
    EXPECT_EQ(firsts, (std::vector<std::int64_t>{0, 4, 8}));
    EXPECT_TRUE(at::cat(batches).equal(all));
    EXPECT_TRUE(set->head(3).equal(all.slice(0, 0, 3)));
    EXPECT_EQ(set->head(99).size(0), 10);
    EXPECT_TRUE(at::cat({set->mapped([](const at::Tensor& x) { return x * 2; }).head(10)}).equal(all * 2));
  }
  decoded = 0;
  streamed.head(3);
  EXPECT_EQ(decoded, 3);  // a head decodes no more than it returns
  const std::vector<std::int64_t> shape{10, 2, 3, 3};
  const std::uint64_t expected =
      fnv1a(all.data_ptr(), all.nbytes(), fnv1a(shape.data(), shape.size() * sizeof(std::int64_t)));
  EXPECT_EQ(memory.content_hash(), expected);
  EXPECT_EQ(streamed.content_hash(), expected);
  EXPECT_NE(CalibrationImages(all + 1e-3).content_hash(), expected);
  EXPECT_TRUE(CalibrationImages().empty());
  EXPECT_EQ(CalibrationImages().head(5).size(0), 0);
}
