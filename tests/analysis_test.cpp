// Outlier-layer analysis against brute force: layerwise errors equal a whole-model run with only that
// layer quantized, graphwise SQNR equals a hook-captured comparison, weight and activation statistics
// equal their closed forms; `xdq analyze` writes the analysis.json contract and a mixed-precision
// fragment that an experiment can include; an override naming no layer lists the closest names.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "xdq/analysis/analysis.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/plugin/registry.h"

using namespace xdq;
namespace fs = std::filesystem;

namespace {

PluginRegistry& registry() { return test::built_plugins(); }

// 96 test images, min-max weight ranges, nearest rounding.
struct Quantized : test::QuantizedResnet20 {
  QuantizedModel* q;
  Quantized() : QuantizedResnet20(96, Split::Test, 1, "minmax"), q(quantized.get()) { q->round_to_nearest(); }
};

double sqnr(const at::Tensor& fp, const at::Tensor& q) {
  const at::Tensor f = fp.to(at::kDouble), d = q.to(at::kDouble) - f;
  return 10 * std::log10(f.pow(2).sum().item<double>() / d.pow(2).sum().item<double>());
}

}  // namespace

TEST(Analysis, OutputErrorClosedForms) {
  OutputError e;
  const at::Tensor fp = at::tensor({3.0f, 4.0f, 1.0f, 0.0f}).view({2, 2});
  const at::Tensor q = at::tensor({3.0f, 3.5f, 0.0f, 1.0f}).view({2, 2});
  e.add(fp, q, at::tensor({1, 0}, at::kLong));
  EXPECT_NEAR(e.sqnr_db(), 10 * std::log10(26.0 / 2.25), 1e-12);  // errors 0, -0.5, -1, 1
  EXPECT_NEAR(e.mse(), 2.25 / 4.0, 1e-12);
  EXPECT_NEAR(e.cosine(), (23.0 / (5 * std::sqrt(21.25)) + 0.0) / 2, 1e-9);
  EXPECT_NEAR(e.top1_drop(), 50.0, 1e-12);  // FP32 right on both, quantized on the first only
}

TEST(Analysis, LayerwiseEqualsAWholeModelRunWithOneLayerQuantized) {
  Quantized r;
  const auto errors = layerwise_errors(*r.q, LayerwiseMode::Both, r.images, r.labels, 40);
  const auto weights_only = layerwise_errors(*r.q, LayerwiseMode::Weights, r.images, r.labels, 40);
  ASSERT_EQ(errors.size(), r.q->layers().size());
  at::NoGradGuard no_grad;
  // The analysis runs batches of 40, the reference one batch of 96: other kernels, other rounding.
  const double gamma = test::forward_relative_error(20, 576);
  const at::Tensor fp = Executor(r.q->graph()).forward(r.images);
  for (std::size_t l : {std::size_t{1}, std::size_t{9}, r.q->layers().size() - 1}) {
    const QuantizedLayer& layer = r.q->layers()[l];
    Executor only(r.q->graph());
    only.set_weight(layer.node, layer.quantized_weight);
    const double weights_sqnr = sqnr(fp, only.forward(r.images));
    EXPECT_NEAR(weights_only[l].sqnr_db(), weights_sqnr, test::sqnr_tolerance_db(weights_sqnr, gamma)) << l;
    for (const auto& act : r.q->activations())
      if (act.value == r.q->graph().nodes[layer.node].inputs[0])
        only.set_value_hook(act.value, [q = act.qparams](const at::Tensor& x) { return fake_quantize(x, q); });
    const at::Tensor out = only.forward(r.images);
    const double both_sqnr = sqnr(fp, out);
    EXPECT_NEAR(errors[l].sqnr_db(), both_sqnr, test::sqnr_tolerance_db(both_sqnr, gamma)) << l;
    // Exact, except for images whose top-1 a float32 perturbation could flip (in either output).
    const double flippable = test::ambiguous_top1(fp, gamma) + test::ambiguous_top1(out, gamma);
    EXPECT_NEAR(errors[l].top1_drop(), 100.0 * (fp.argmax(1).eq(r.labels).sum().item<double>() -
                                                out.argmax(1).eq(r.labels).sum().item<double>()) / 96.0,
                100.0 * flippable / 96.0 + 1e-9) << l;
  }
}

TEST(Analysis, GraphwiseSqnrEqualsHookedComparison) {
  Quantized r;
  const auto sqnrs = graphwise_sqnr(*r.q, r.images, 50);
  const int node = r.q->layers()[5].node;
  const int value = r.q->graph().nodes[node].outputs[0];
  at::Tensor fp_value, q_value;
  Executor fp(r.q->graph());
  fp.set_value_hook(value, [&](const at::Tensor& x) { return fp_value = x; });
  Executor q = r.q->executor();
  q.set_value_hook(value, [&](const at::Tensor& x) { return q_value = x; });
  at::NoGradGuard no_grad;
  fp.forward(r.images);
  q.forward(r.images);
  // Batches of 50 against one of 96; layer 5 is 6 layers deep.
  const double expected = sqnr(fp_value, q_value);
  EXPECT_NEAR(sqnrs[5], expected, test::sqnr_tolerance_db(expected, test::forward_relative_error(6, 576)));
  EXPECT_GT(sqnrs[5], 0);
}

TEST(Analysis, WeightAndActivationStatisticsClosedForms) {
  // Channel ranges 1, 2, 3, 12: median (lower middle, as torch) 2, ratio 6. Weights +-1 only: kurtosis 1.
  at::Tensor w = at::zeros({4, 2});
  w[0] = at::tensor({0.0f, 1.0f});
  w[1] = at::tensor({-1.0f, 1.0f});
  w[2] = at::tensor({-1.5f, 1.5f});
  w[3] = at::tensor({-6.0f, 6.0f});
  EXPECT_NEAR(weight_stats(w).channel_range_ratio, 6.0, 1e-12);
  EXPECT_NEAR(weight_stats(at::tensor({-1.0f, 1.0f, -1.0f, 1.0f}).view({2, 2})).kurtosis, 1.0, 1e-12);

  Quantized r;
  const auto ratios = activation_outlier_ratios(*r.q, r.images, 32);
  ASSERT_EQ(ratios.size(), r.q->activations().size());
  // The model input's quantizer: all 96 * 784 values, exact order statistic.
  ASSERT_EQ(r.q->activations()[0].value, r.q->graph().inputs[0]);
  const at::Tensor all = r.images.reshape({-1}).abs().to(at::kDouble);
  const auto k = static_cast<std::int64_t>(std::ceil(0.9999 * all.numel()));
  EXPECT_NEAR(ratios[0], all.max().item<double>() / std::get<0>(all.kthvalue(k)).item<double>(), 1e-9);
  for (double v : ratios) EXPECT_GE(v, 1.0);
  for (const MergeStats& m : merge_stats(r.q->graph(), r.images, 4, 48)) {
    EXPECT_EQ(m.inputs.size(), 2u);
    EXPECT_GE(m.range_ratio, 1.0);
    EXPECT_GE(m.own_sqnr_db, m.shared_sqnr_db - 1e-9) << m.name;  // one's own range never loses to a wider one here
  }
}

// A ViT's merges are its residual adds and the class token's cat; the shape arithmetic a trace records
// (0-dimensional tensors multiplied) is no merge. Two blocks: 4 residual adds, 1 cat, each input measured
// over the batch; the residual stream's range is shared by both sides of each add.
TEST(Analysis, TransformerMergesAreTheResidualAddsAndTheClassTokenCat) {
  const Graph graph = import_torchscript(std::string(XDQ_TORCHVISION_DIR) + "/vit_tiny28.pt").graph;
  const at::Tensor images = load_fashion_mnist(fashion_mnist_dir(), Split::Test).subset(16, 1).images;
  const auto merges = merge_stats(graph, images, 8, 8);
  std::map<std::string, int> ops;
  for (const MergeStats& m : merges) {
    ++ops[m.op];
    EXPECT_EQ(m.inputs.size(), 2u) << m.name;
    EXPECT_GE(m.range_ratio, 1.0) << m.name;
    EXPECT_TRUE(std::isfinite(m.own_sqnr_db) && std::isfinite(m.shared_sqnr_db)) << m.name;
  }
  EXPECT_EQ(ops, (std::map<std::string, int>{{"aten::add", 4}, {"aten::cat", 1}}));
}

TEST(Analysis, ChunkedModelRunsLayerByLayer) {
  // ShuffleNetV2 splits channels with chunk: a layer's run must start before the chunk, not between the
  // list and its items.
  const ImportedModel m = import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/shufflenet_v2_fmnist/model.pt");
  Graph folded = m.graph;
  fold_batch_norm(folded);
  PtqSettings s;
  s.w_bits = s.a_bits = 4;
  QuantizedModel q(folded, s);
  const at::Tensor images = m.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Test).subset(32, 2).images);
  calibrate_from_statistics(q, registry().load<Calibrator>("minmax", Options()), q.collect_statistics(images, 32, 2048));
  q.set_weight_ranges("minmax");
  q.round_to_nearest();
  const auto errors = layerwise_errors(q, LayerwiseMode::Both, images, at::Tensor(), 16);
  ASSERT_EQ(errors.size(), 19u);
  for (const auto& e : errors) EXPECT_TRUE(std::isfinite(e.sqnr_db()) && e.sqnr_db() > 0);
}

TEST(AnalyzeCli, WritesTheContractAndAnIncludableMixedPrecisionFragment) {
  test::TempDir dir;
  const std::string model = std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt";
  const std::string common = "seed: 0\nthreads: 2\nmodels:\n  - {name: resnet20, path: " + model +
                             "}\ncalibration: {source: fashion_mnist.train, count: 64, batch_size: 64}\n"
                             "test: {domains: [fashion_mnist.test], count: 128}\n";
  test::write_text(dir.file("a.yaml"), "experiment: a\n" + common +
                                            "quantization: {preset: academic, bits: [w4a4], calibrators: [minmax], "
                                            "overrides: [{layers: [first, last], w_bits: 8, a_bits: 8}]}\n"
                                            "analysis: {images: 64, target_drop: 0.0}\n");
  const auto r = test::run_command(std::string(XDQ_BINARY) + " analyze " + dir.file("a.yaml") + " --out " + dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir.file("out/resnet20_w4a4/analysis.json"));
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["layers"].size(), 22u);
  for (const auto& l : j["layers"]) {
    for (const char* key : {"name", "op", "sqnr_db", "cosine", "top1_drop", "flags"}) EXPECT_TRUE(l.contains(key)) << key;
    EXPECT_TRUE(l["flags"].is_array());
  }
  EXPECT_EQ(j["layers"][0]["name"], "conv1");
  ASSERT_GE(j["pareto"].size(), 1u);
  for (std::size_t i = 0; i < j["pareto"].size(); ++i) {
    const auto& p = j["pareto"][i];
    EXPECT_EQ(p["bits"].size(), 22u);
    if (i > 0) {  // a front: larger and strictly more accurate
      EXPECT_GT(p["size_bytes"].get<std::int64_t>(), j["pareto"][i - 1]["size_bytes"].get<std::int64_t>());
      EXPECT_GT(p["quant_top1"].get<double>(), j["pareto"][i - 1]["quant_top1"].get<double>());
    }
  }
  // All-4-bit size by hand: first and last layer 8 bit, the rest 4 bit.
  const ImportedModel m = import_torchscript(model);
  double bytes = 0;
  const auto layers = m.graph.layer_nodes();
  for (int n : layers) bytes += m.graph.nodes[n].weight.numel() * ((n == layers.front() || n == layers.back()) ? 1.0 : 0.5);
  EXPECT_EQ(j["search"][0]["size_bytes"].get<std::int64_t>(), static_cast<std::int64_t>(bytes));
  EXPECT_TRUE(std::filesystem::exists(dir.file("out/analysis.md")));
  // analysis.csv: a header and the 22 layers, ranked; the top row is analysis.json's worst layer.
  const std::string csv = test::read_text(dir.file("out/analysis.csv"));
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 23) << csv;
  double worst = 1e9;
  std::string worst_name;
  for (const auto& l : j["layers"])
    if (l["sqnr_db"].get<double>() < worst) worst = l["sqnr_db"].get<double>(), worst_name = l["name"].get<std::string>();
  EXPECT_NE(csv.find("\nresnet20,w4a4,1," + worst_name + ","), std::string::npos) << csv;
  ASSERT_TRUE(std::filesystem::exists(dir.file("out/resnet20_w4a4/mixed_precision.yaml")));

  // The fragment, included by an experiment, reproduces the chosen bits.
  test::write_text(dir.file("b.yaml"), "experiment: b\n" + common +
                                            "quantization: {preset: academic, bits: [w4a4], calibrators: [minmax], "
                                            "overrides: [{include: out/resnet20_w4a4/mixed_precision.yaml}]}\n");
  const auto run = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("b.yaml") + " --out " + dir.file("run"));
  EXPECT_EQ(run.exit_code, 0) << run.output;
}

TEST(AnalyzeCli, UnknownLayerInAnOverrideListsTheClosestNames) {
  test::TempDir dir;
  test::write_text(dir.file("c.yaml"), "experiment: c\nmodels:\n  - {name: r, path: " + std::string(XDQ_SOURCE_DIR) +
                                            "/models/resnet20_fmnist/model.pt}\n"
                                            "calibration: {source: fashion_mnist.train, count: 16}\n"
                                            "test: {domains: [fashion_mnist.test], count: 16}\n"
                                            "quantization:\n  bits: [w4a4]\n  calibrators: [minmax]\n  overrides:\n"
                                            "    - {layers: [layer1.blok0.conv1], w_bits: 8}\n");
  for (const char* command : {" run ", " analyze "}) {
    const auto r = test::run_command(std::string(XDQ_BINARY) + command + dir.file("c.yaml") + " --out " + dir.file("o"));
    EXPECT_EQ(r.exit_code, 2);  // a config error, found once the model is read
    EXPECT_NE(r.output.find("c.yaml:10 quantization.overrides[0].layers: no conv/linear layer named 'layer1.blok0.conv1' "
                            "in this model; closest: layer1.block0.conv1"),
              std::string::npos)
        << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir.file("o")));
  }
}

// Analysis jobs (one per model and bit setting) behave like a sweep's: run apart and merged, or killed
// after a phase and resumed, they give the files of one uninterrupted analysis.
TEST(AnalyzeCli, JobsRunApartOrResumedAfterAKillEqualOneAnalysis) {
  test::TempDir dir;
  const std::string model = std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt";
  test::write_text(dir.file("a.yaml"), "experiment: a\nseed: 0\nthreads: 2\nmodels:\n  - {name: resnet20, path: " + model +
                                            "}\ncalibration: {domains: [fashion_mnist.train, fashion_mnist.test], count: 32}\n"
                                            "test: {domains: [fashion_mnist.test], count: 64}\n"
                                            "quantization: {bits: [w4a4, w3a8], calibrators: [minmax]}\nanalysis: {images: 64}\n");
  const std::string xdq = std::string(XDQ_BINARY) + " analyze " + dir.file("a.yaml");
  ASSERT_EQ(test::run_command(xdq + " --out " + dir.file("whole")).exit_code, 0);
  // Every file equal; of analysis.md the sections after the header (which names the config read).
  const auto same_files = [&](const std::string& out) {
    for (const std::string file : {"analysis.md", "resnet20_w4a4/analysis.json", "resnet20_w3a8/analysis.json",
                                   "resnet20_w4a4/mixed_precision.yaml"}) {
      ASSERT_TRUE(fs::exists(dir.file(out + "/" + file))) << out << "/" << file;
      std::string text = test::read_text(dir.file(out + "/" + file)), whole = test::read_text(dir.file("whole/" + file));
      if (file == "analysis.md") {
        text = text.substr(text.find("\n## "));
        whole = whole.substr(whole.find("\n## "));
      }
      EXPECT_EQ(text, whole) << out << "/" << file;
    }
  };
  const auto dry = test::run_command(xdq + " --dry-run");
  EXPECT_NE(dry.output.find("2 analysis jobs (one per model and bit setting):\n  0-resnet20_w4a4\n  1-resnet20_w3a8\n"),
            std::string::npos) << dry.output;

  const auto job1 = test::run_command(xdq + " --job 1 --out " + dir.file("split"));
  ASSERT_EQ(job1.exit_code, 0) << job1.output;
  EXPECT_FALSE(fs::exists(dir.file("split/analysis.md")));  // a job alone writes its shard only
  const auto partial = test::run_command(std::string(XDQ_BINARY) + " merge " + dir.file("split"));
  EXPECT_EQ(partial.exit_code, 3) << partial.output;
  EXPECT_NE(partial.output.find("1 jobs have no shard yet: 0-resnet20_w4a4"), std::string::npos) << partial.output;
  ASSERT_EQ(test::run_command(xdq + " --job 0 --out " + dir.file("split")).exit_code, 0);
  const auto merged = test::run_command(std::string(XDQ_BINARY) + " merge " + dir.file("split"));
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  same_files("split");

  // Killed (SIGKILL) as soon as job 0 has checkpointed a phase: the resumed run reads the checkpoint.
  const std::string killed = dir.file("killed");
  test::run_command("(" + xdq + " --out " + killed + " > /dev/null 2>&1 & pid=$!; for i in $(seq 600); do ls " + killed +
                    "/analysis_jobs/0-*.phases.json > /dev/null 2>&1 && break; sleep 0.05; done; kill -9 $pid; wait $pid)");
  ASSERT_TRUE(fs::exists(killed + "/analysis_jobs"));
  const auto resumed = test::run_command(xdq + " --out " + killed);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const bool from_checkpoint = resumed.output.find("resnet20_w4a4: 1 phase(s) finished before") != std::string::npos ||
                               resumed.output.find("resnet20_w4a4: 2 phase(s) finished before") != std::string::npos;
  EXPECT_TRUE(from_checkpoint) << resumed.output;  // the later phases take seconds: the kill lands in them
  same_files("killed");
  for (const auto& e : fs::directory_iterator(killed + "/analysis_jobs"))
    EXPECT_EQ(e.path().string().find(".phases.json"), std::string::npos) << "checkpoint left behind: " << e.path();

  // Another config into the folder is refused before any work.
  const auto other = test::run_command(xdq + " --out " + killed + " --set seed=1");
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("holds the finished jobs of another configuration"), std::string::npos) << other.output;
}
