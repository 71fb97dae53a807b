// The xdq command end to end: bad input gives one clear line, a non-zero exit and no output files;
// a good experiment writes the results contract with values checked independently.
#include <algorithm>
#include <filesystem>
#include <regex>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>
#include <torch/csrc/jit/serialization/import.h>

#include "test_util.h"
#include "../core/cli/recorded_stderr.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/report/png.h"
#include "xdq/report/results_tables.h"
#include "xdq/experiment/results.h"
#include "xdq/files.h"
#include "xdq/parallel.h"
#include "xdq/train/zoo.h"

using namespace xdq;
namespace fs = std::filesystem;

namespace {

const char* kGoodExperiment = R"(experiment: cli_test
seed: 3
threads: 2
models:
  - name: tiny
    path: tiny.pt
calibration:
  source: fashion_mnist.train
  count: 64
  batch_size: 32
test:
  domains: [fashion_mnist.test]
  count: 500
quantization:
  preset: academic
  bits: [w8a8, w4a4]
  calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]
  rounding: [nearest]
)";

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::jit::Module m = zoo::make_resnet({8, 4, 1, 10}, 1);
    zoo::set_input_normalization(m, {0.286}, {0.353});
    m.eval();
    m.save(dir.file("tiny.pt"));
    test::write_text(dir.file("good.yaml"), kGoodExperiment);
  }
  // Writes the good experiment with `from` replaced by `to`, runs it, returns the result.
  test::CommandResult run_variant(const std::string& from, const std::string& to) { return run_variants({{from, to}}); }
  test::CommandResult run_variants(const std::vector<std::pair<std::string, std::string>>& edits) {
    std::string text = kGoodExperiment;
    for (const auto& [from, to] : edits) {
      const auto at = text.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      text.replace(at, from.size(), to);
    }
    test::write_text(dir.file("bad.yaml"), text);
    return test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("bad.yaml") + " --out " + dir.file("out"));
  }
  void expect_clean_failure(const test::CommandResult& r, const std::string& message) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir.file("out"))) << "partial output left behind";
  }
  test::TempDir dir;
};

}  // namespace

TEST_F(Cli, MalformedYaml) {
  expect_clean_failure(run_variant("count: 64\n", "count: [64\n"), dir.file("bad.yaml") + ":");
}
TEST_F(Cli, UnknownKey) {
  expect_clean_failure(run_variant("  batch_size: 32", "  batchsize: 32"), "bad.yaml:10 calibration.batchsize: unknown key");
}
TEST_F(Cli, WrongType) {
  expect_clean_failure(run_variant("count: 64", "count: many"), "bad.yaml:9 calibration.count: expected an integer, got 'many'");
}
TEST_F(Cli, MissingModelFile) {
  expect_clean_failure(run_variant("path: tiny.pt", "path: nothere.pt"), "bad.yaml:6 models[0].path: model file not found");
}
TEST_F(Cli, NotTorchScript) {
  test::write_text(dir.file("junk.pt"), "junk");
  expect_clean_failure(run_variant("path: tiny.pt", "path: junk.pt"), "junk.pt: not a TorchScript file");
}
TEST_F(Cli, UnknownCalibrator) {
  expect_clean_failure(run_variant("[minmax,", "[minmx,"),
                       "bad.yaml:17 quantization.calibrators[0]: unknown calibrator 'minmx' (available: ");
}
TEST_F(Cli, OptionOutOfRange) {
  expect_clean_failure(run_variant("percentile: 99.9", "percentile: 150"),
                       "quantization.calibrators[1].percentile: expected a number in (0, 100]");
}
TEST_F(Cli, BadBitsAndPreset) {
  expect_clean_failure(run_variant("w4a4]", "w1a4]"), "quantization.bits[1]: weight bits must be in [2, 8]");
  expect_clean_failure(run_variant("preset: academic", "preset: tpu"), "unknown quantization preset 'tpu'");
}
TEST_F(Cli, UnknownDataSource) {
  expect_clean_failure(run_variant("source: fashion_mnist.train", "source: mnist.train"), "calibration.source: unknown domain 'mnist.train'");
}

TEST_F(Cli, DomainErrorsNameFileLineAndKey) {
  const std::string domains = "domains:\n  night: {dataset: fashion_mnist, transforms: [{name: low_light, severity: 9}]}\ncalibration:";
  expect_clean_failure(run_variant("calibration:", domains), "bad.yaml:8 domains.night.transforms[0].severity: expected an integer in [1, 5], got 9");
  expect_clean_failure(run_variant("domains: [fashion_mnist.test]", "domains: [nightt]"), "test.domains[0]: unknown domain 'nightt'");
  std::filesystem::create_directories(dir.file("empty/class_a"));
  expect_clean_failure(run_variant("calibration:", "domains:\n  mine: {dataset: 'folder:empty'}\ncalibration:"),
                       "bad.yaml:8 domains.mine.dataset: " + dir.file("empty/class_a") + ": class folder holds no");
  expect_clean_failure(run_variant("domains: [fashion_mnist.test]", "domains: [natural]"),
                       "test.domains[0]: test domain 'natural' has no labels");
}

TEST_F(Cli, TestLabelsOutsideTheModelsClassesAreRefused) {
  // Eleven classes against a ten-class model (five images each: the fifth is the test split's).
  for (int c = 0; c < 11; ++c) {
    const std::string cls = dir.file("eleven/c" + std::string(c < 10 ? "0" : "") + std::to_string(c));
    std::filesystem::create_directories(cls);
    for (int k = 0; k < 5; ++k)
      std::ofstream(cls + "/x" + std::to_string(k) + ".png", std::ios::binary) << render_grid_png(at::zeros({1, 1, 28, 28}), 1, 1);
  }
  expect_clean_failure(run_variants({{"calibration:", "domains:\n  eleven: {dataset: 'folder:eleven'}\ncalibration:"},
                                     {"domains: [fashion_mnist.test]", "domains: [eleven]"}}),
                       "test.domains[0]: test domain 'eleven' has label 10 but model 'tiny' has 10 classes");
}

TEST_F(Cli, MixturesSizesAndRepeats) {
  const auto r = [&] {
    return run_variants({{"calibration:", "domains:\n  clean: {dataset: fashion_mnist}\n  noise: {dataset: noise_uniform}\n"
                                          "  mixed: {mix: {clean: 3, noise: 1}}\ncalibration:"},
                         {"source: fashion_mnist.train", "domains: [mixed]"},
                         {"count: 64", "count: [32, 64]\n  repeats: 2"},
                         {"bits: [w8a8, w4a4]", "bits: [w8a8]"},
                         {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]", "calibrators: [minmax]"}});
  }();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir.file("out/results.json"));
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["runs"].size(), 4u);  // 2 sizes x 2 seeds
  EXPECT_EQ(j["runs"][0]["calibration"]["count"], 32);
  EXPECT_EQ(j["runs"][0]["calibration"]["seed"], 3);
  EXPECT_EQ(j["runs"][1]["calibration"]["seed"], 4);
  EXPECT_EQ(j["runs"][3]["calibration"]["count"], 64);
  EXPECT_EQ(j["runs"][0]["calibration"]["source"], "mix(fashion_mnist.train+noise_uniform.train)");
  EXPECT_EQ(j["runs"][0]["calibration"]["domain"], "mixed");
  std::string text = test::read_text(dir.file("out/report.md"));
  EXPECT_NE(text.find("mean ± std over 2 calibration seeds"), std::string::npos);
}

// A run of model "m" (mse, nearest, W4A4) calibrated on domain `a`, tested on A and B (FP32 0.9 and 0.8).
RunResult gap_run(const std::string& a, std::uint64_t seed, double on_a, double on_b) {
  RunResult r;
  r.model = "m";
  r.calibrator = "mse";
  r.rounding = "nearest";
  r.w_bits = r.a_bits = 4;
  r.calibration_domain = a;
  r.calibration_count = 8;
  r.calibration_seed = seed;
  r.results = {{"A", 10, 0.9, on_a}, {"B", 10, 0.8, on_b}};
  return r;
}

TEST(GapMatrix, MeansStdsAndGapsComputedByHand) {
  ExperimentResults results;
  auto run = [&](const std::string& a, std::uint64_t seed, double on_a, double on_b) {
    results.runs.push_back(gap_run(a, seed, on_a, on_b));
  };
  run("A", 0, 0.80, 0.60);
  run("A", 1, 0.90, 0.70);
  run("B", 0, 0.50, 0.75);
  const auto matrices = gap_matrices(results);
  ASSERT_EQ(matrices.size(), 1u);
  const GapMatrix& m = matrices[0];
  EXPECT_EQ(m.repeats, 2);
  EXPECT_NEAR(m.quant_top1[0][0], 0.85, 1e-12);
  EXPECT_NEAR(m.quant_std[0][0], std::sqrt(0.005), 1e-12);  // sample std of {0.8, 0.9}
  EXPECT_NEAR(m.quant_top1[1][1], 0.75, 1e-12);
  const std::string md = gap_matrix_markdown(m);
  EXPECT_NE(md.find("| A | 85.00 ± 7.07 | 65.00 ± 7.07 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| A | +0.00 | -10.00 |"), std::string::npos) << md;  // 65 - 75 on B
  EXPECT_NE(md.find("| B | -35.00 | +0.00 |"), std::string::npos) << md;  // 50 - 85 on A
}

// With exported runs checked in an int8 runtime, every cell also has the runtime's top-1 and its
// difference to the simulation (runtime - quantized, in points); cells without a runtime check stay empty.
TEST(GapMatrix, RuntimeTwinAndItsDifferenceToTheSimulation) {
  ExperimentResults results;
  auto run = [&](const std::string& a, double on_a, double runtime_on_a, double on_b) {
    RunResult r = gap_run(a, 0, on_a, on_b);
    r.results[0].runtime_top1 = runtime_on_a;
    r.exported.runtime = "onnxruntime";
    results.runs.push_back(r);
  };
  run("A", 0.80, 0.81, 0.60);
  run("B", 0.50, 0.48, 0.75);
  const GapMatrix m = gap_matrices(results).at(0);
  EXPECT_EQ(m.runtime, "onnxruntime");
  EXPECT_NEAR(m.runtime_top1[1][0], 0.48, 1e-12);
  EXPECT_TRUE(std::isnan(m.runtime_top1[0][1]));
  const std::string md = gap_matrix_markdown(m);
  EXPECT_NE(md.find("In the int8 runtime (onnxruntime)"), std::string::npos) << md;
  EXPECT_NE(md.find("| A | 81.00 | – |"), std::string::npos) << md;
  EXPECT_NE(md.find("| A | +1.00 | – |"), std::string::npos) << md;  // 81 - 80
  EXPECT_NE(md.find("| B | -2.00 | – |"), std::string::npos) << md;  // 48 - 50
}

// The in-domain gap is marked where McNemar's exact test on the per-image results rejects equal accuracy:
// on A's 40 images, B's model is wrong on 10 that A's gets right and right on none it gets wrong (p = 2 /
// 2^10, marked); on B's images the two models differ on 2 images, one each way (p = 1, not marked). With
// repeats (two runs in a cell) there is no single pair to test, and nothing is marked.
TEST(GapMatrix, InDomainGapMarksSignificantDifferences) {
  auto images = [](int right, int of, int first_wrong = 0) {
    std::vector<bool> bits(static_cast<std::size_t>(of), false);
    for (int i = 0; i < right; ++i) bits[static_cast<std::size_t>((first_wrong + i) % of)] = true;
    return bits;
  };
  ExperimentResults results;
  for (const std::string a : {"A", "B"}) {
    RunResult r = gap_run(a, 0, 0, 0);
    r.results = {{"A", 40, 0.9, a == "A" ? 0.75 : 0.5}, {"B", 40, 0.8, 0.5}};
    r.results[0].correct = images(a == "A" ? 30 : 20, 40);
    r.results[1].correct = images(20, 40, a == "A" ? 0 : 1);  // B's model: shifted by one image
    results.runs.push_back(r);
  }
  GapMatrix m = gap_matrices(results).at(0);
  EXPECT_NEAR(m.in_domain_p[1][0], 2.0 / 1024, 1e-15);
  EXPECT_NEAR(m.in_domain_p[0][1], 1.0, 1e-15);
  EXPECT_TRUE(std::isnan(m.in_domain_p[0][0]) || m.in_domain_p[0][0] == 1.0);
  std::string md = gap_matrix_markdown(m);
  EXPECT_NE(md.find("| B | -25.00* | +0.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| A | +0.00 | +0.00 |"), std::string::npos) << md;
  results.runs.push_back(results.runs[1]);  // a repeat of B: its cells hold two runs
  m = gap_matrices(results).at(0);
  EXPECT_TRUE(std::isnan(m.in_domain_p[1][0]));
  md = gap_matrix_markdown(m);
  EXPECT_NE(md.find("| B | -25.00 | +0.00 |"), std::string::npos) << md;
  EXPECT_EQ(md.find("-25.00*"), std::string::npos) << md;
}

// --quiet prints nothing on success; run.log keeps what a terminal would show: run lines with their
// count and ETA, a progress line redrawn after '\r' once, no escape sequences.
TEST_F(Cli, QuietRunKeepsItsProgressInRunLog) {
  const auto r = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("good.yaml") + " --quiet --out " + dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "");
  const std::string log = test::read_text(dir.file("out/run.log"));
  EXPECT_NE(log.find("[1/4] (ETA "), std::string::npos) << log;
  EXPECT_NE(log.find("[4/4] tiny/"), std::string::npos) << log;  // the last run: no ETA
  EXPECT_NE(log.find("xdq: wrote "), std::string::npos) << log;
  {
    xdq::cli::RecordedStderr recorded(true);
    std::cerr << "bar 10%\r\033[Kbar 50%\r\033[Kbar 100%\nnext\n";
    EXPECT_EQ(recorded.text(), "bar 100%\nnext\n");
  }
}

// results.csv is RFC 4180: a field with a comma or a quote is quoted (quotes doubled); a failed run has
// one row with empty numbers and status `failed`.
TEST(ResultsCsv, QuotesFieldsAndKeepsFailedRunsWithoutNumbers) {
  ExperimentResults results;
  RunResult ok;
  ok.id = "m/w4a4/p,99/nearest/n8";
  ok.model = "m";
  ok.calibrator = "p,99";
  ok.rounding = "say \"hi\"";
  ok.passes = {"bn_reestimate", "bias_correction"};
  ok.calibrator_options = {{"percentile", "99.9"}, {"bins", "2048"}};
  ok.results = {{"A", 10, 0.5, 0.25}};
  RunResult failed = ok;
  failed.id = "m/failed";
  failed.results.clear();
  failed.error = "plugin threw";
  RunResult exported = ok;  // run by the int8 runtime: its two columns filled
  exported.id = "m/exported";
  exported.results[0].runtime_top1 = 0.75;
  exported.results[0].runtime_disagreements = 3;
  RunResult selected = ok;  // chosen from a pool by a selector: its two columns filled
  selected.id = "m/selected";
  selected.selection.selector = "kcenter";
  selected.selection.composition = {{"clean", 3}, {"night", 5}};
  results.runs = {ok, failed, exported, selected};
  const std::string csv = results_csv(results);
  const std::string header = csv.substr(0, csv.find('\n'));
  EXPECT_EQ(header.substr(header.rfind(",seconds,")),
            ",seconds,passes,status,calibrator_options,rounding_options,runtime_top1,runtime_disagreements,selector,composition,"
            "quant_top1_low,quant_top1_high");
  EXPECT_NE(csv.find("\n\"m/w4a4/p,99/nearest/n8\",m,8,8,\"p,99\",\"say \"\"hi\"\"\","), std::string::npos) << csv;
  EXPECT_NE(csv.find(",A,10,0.5,0.25,0,bn_reestimate+bias_correction,ok,bins=2048;percentile=99.9,,,,,,"), std::string::npos)
      << csv;
  EXPECT_NE(csv.find("\nm/failed,m,8,8,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",,,,,0,bn_reestimate+bias_correction,failed,bins=2048;percentile=99.9,,,,,,,\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\nm/exported,m,8,8,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",ok,bins=2048;percentile=99.9,,0.75,3,,,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\nm/selected,m,8,8,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",ok,bins=2048;percentile=99.9,,,,kcenter,clean=3;night=5,"), std::string::npos) << csv;
}

TEST_F(Cli, GoodExperimentWritesTheResultsContract) {
  const auto r = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("good.yaml") + " --out " + dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"config.resolved.yaml", "results.json", "results.csv", "report.md"})
    EXPECT_TRUE(fs::exists(dir.file(std::string("out/") + f))) << f;
  std::ifstream in(dir.file("out/results.json"));
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["experiment"], "cli_test");
  ASSERT_EQ(j["runs"].size(), 4u);
  const auto& run = j["runs"][1];
  EXPECT_EQ(run["id"], "tiny/w8a8/p999/nearest");
  EXPECT_EQ(run["w_bits"], 8);
  EXPECT_EQ(run["calibration"]["source"], "fashion_mnist.train");
  EXPECT_EQ(run["calibration"]["count"], 64);
  EXPECT_EQ(run["calibration"]["domain"], "fashion_mnist.train");
  const auto& res = run["results"][0];
  EXPECT_EQ(res["domain"], "fashion_mnist.test");
  EXPECT_EQ(res["n"], 500);
  // FP32 top-1 recomputed here with the TorchScript module on the same seeded subset.
  torch::jit::Module m = torch::jit::load(dir.file("tiny.pt"));
  m.eval();
  const Dataset test = load_fashion_mnist(fashion_mnist_dir(), Split::Test).subset(500, 3);
  const at::Tensor logits = m.forward({Preprocess{{0.286}, {0.353}}.apply(test.images)}).toTensor();
  const double fp32 = logits.argmax(1).eq(test.labels).sum().item<double>() / 500.0;
  // xdq's executor batches differently: only images with a near-tie of the two top logits may differ.
  const double gamma = test::forward_relative_error(4, 9 * 8);
  EXPECT_NEAR(res["fp32_top1"].get<double>(), fp32, test::ambiguous_top1(logits, gamma) / 500.0 + 1e-12);
  EXPECT_GE(res["quant_top1"].get<double>(), 0.0);
  EXPECT_LE(res["quant_top1"].get<double>(), 1.0);
  // Per-image results: as many right answers as the top-1 counts, and an interval around it.
  const std::vector<bool> right = unpack_bits(res["correct"].get<std::string>(), 500);
  EXPECT_EQ(std::count(right.begin(), right.end(), true), std::llround(res["quant_top1"].get<double>() * 500));
  EXPECT_LT(res["quant_top1_ci"][0].get<double>(), res["quant_top1"].get<double>());
  EXPECT_GT(res["quant_top1_ci"][1].get<double>(), res["quant_top1"].get<double>());
  std::string text = test::read_text(dir.file("out/config.resolved.yaml"));
  EXPECT_NE(text.find("sha256: "), std::string::npos);
  EXPECT_NE(text.find("percentile: 99.9"), std::string::npos);
}

TEST_F(Cli, PluginsJsonListsTheSixCalibratorsAndNearest) {
  const auto r = test::run_command(std::string(XDQ_BINARY) + " plugins --json 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  std::set<std::string> names;
  for (const auto& p : j["plugins"]) names.insert(p["kind"].get<std::string>() + "/" + p["name"].get<std::string>());
  for (const char* n : {"calibrator/minmax", "calibrator/ema_minmax", "calibrator/percentile", "calibrator/mse",
                        "calibrator/kl", "calibrator/aciq", "weight_optimizer/nearest"})
    EXPECT_TRUE(names.count(n)) << n;
}

TEST_F(Cli, InspectPrintsLayersPairsAndBlocks) {
  const auto r = test::run_command(std::string(XDQ_BINARY) + " inspect " + dir.file("tiny.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layer2.block0.downsample.conv"), std::string::npos);
  EXPECT_NE(r.output.find("conv-bn pairs (9)"), std::string::npos);
  EXPECT_NE(r.output.find("residual blocks (3)"), std::string::npos);
}

TEST_F(Cli, DataFreeErrorsNameFileLineAndKey) {
  expect_clean_failure(run_variant("source: fashion_mnist.train", "source: none"),
                       "bad.yaml:17 quantization.calibrators[0]: calibrator 'minmax' observes data, but calibration domain "
                       "'none' has no images");
  const std::string zeroq = "domains:\n  zq: {synthesizer: zeroq}\ncalibration:";
  expect_clean_failure(run_variants({{"calibration:", zeroq}, {"domains: [fashion_mnist.test]", "domains: [zq]"}}),
                       "test.domains[0]: test domain 'zq' is synthesized; test on real data");
  expect_clean_failure(run_variant("calibration:", "domains:\n  mm: {synthesizer: mixmix, models: [tiny, other]}\ncalibration:"),
                       "bad.yaml:8 domains.mm.models: domain 'mm' synthesizes from model 'other', which `models:` does not "
                       "list (tiny)");
  expect_clean_failure(run_variant("calibration:", "domains:\n  di: {synthesizer: {name: deepinversion, iterations: 10}}\ncalibration:"),
                       "warmup (100) must be below iterations (10)");
  expect_clean_failure(run_variant("calibration:", "domains:\n  zq: {synthesizer: zeroq, dataset: natural}\ncalibration:"),
                       "bad.yaml:8 domains.zq: a synthesized domain has no dataset, transforms or mix of its own");
  expect_clean_failure(run_variant("calibration:", "domains:\n  zq: {synthesizer: zerq}\ncalibration:"),
                       "bad.yaml:8 domains.zq.synthesizer: unknown synthesizer 'zerq'");
}

TEST_F(Cli, SynthesizedDomainsAreCachedReloadedAndShownAsGrids) {
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"calibration:", "data: {cache: " + dir.file("cache") + "}\ndomains:\n  zq: {synthesizer: {name: zeroq, iterations: 3, "
                       "batch_size: 4}}\n  g: {synthesizer: gaussian}\ncalibration:"},
      {"source: fashion_mnist.train", "domains: [zq, g]"},
      {"count: 64", "count: 8"},
      {"bits: [w8a8, w4a4]", "bits: [w8a8]"},
      {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]", "calibrators: [minmax]"}};
  const auto first = run_variants(edits);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("domain 'zq': 8 images synthesized, cached in " + dir.file("cache") + "/synthesized/zeroq_"),
            std::string::npos)
      << first.output;
  EXPECT_TRUE(fs::exists(dir.file("out/synthesized_zq_tiny.png")));
  const std::string text = test::read_text(dir.file("out/report.md"));
  EXPECT_NE(text.find("## Synthesized calibration images"), std::string::npos);
  auto results = [&] {
    std::ifstream in(dir.file("out/results.json"));
    return nlohmann::json::parse(in);
  };
  const auto j1 = results();
  ASSERT_EQ(j1["runs"].size(), 2u);
  EXPECT_EQ(j1["runs"][0]["calibration"]["count"], 8);
  EXPECT_EQ(j1["runs"][0]["calibration"]["source"], "synthesized:zeroq");
  auto set_hashes = [&] {
    std::vector<std::string> hashes;
    for (const auto& set : YAML::LoadFile(dir.file("out/config.resolved.yaml"))["provenance"]["calibration_sets"])
      hashes.push_back(set["hash"].as<std::string>());
    return hashes;
  };
  const auto hashes = set_hashes();
  ASSERT_EQ(hashes.size(), 2u);  // zq and g
  // The synthesized set is also a file torch.load reads, named with the content hash the provenance gives.
  const std::string pt = dir.file("out/sets/zq_tiny_n8_s3_" + hashes[0] + ".pt");
  ASSERT_TRUE(fs::exists(pt)) << pt;
  const auto loaded = test::run_command("/usr/bin/python3 -c \"import torch; d = torch.load('" + pt +
                                        "'); x = d['images']; print(tuple(x.shape), x.dtype, bool(x.isfinite().all()), float(x.std()) > 0)\"");
  EXPECT_NE(loaded.output.find("(8, 1, 28, 28) torch.float32 True True"), std::string::npos) << loaded.output;

  fs::remove_all(dir.file("out"));
  const auto second = run_variants(edits);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("domain 'zq': synthesized images from the cache"), std::string::npos) << second.output;
  EXPECT_EQ(set_hashes(), hashes);  // the same images, read back

  // A damaged cache file (truncated, or one flipped byte) is named in a warning and the set synthesized
  // again: the same images as the first time, and the file rewritten whole.
  for (const bool truncate : {true, false}) {
    fs::remove_all(dir.file("out"));
    std::string damaged;
    for (const auto& f : fs::directory_iterator(dir.file("cache/synthesized")))
      if (f.path().filename().string().rfind("zeroq_", 0) == 0 && f.path().extension() == ".xdqimg") {
        damaged = f.path().string();
        if (truncate) {
          fs::resize_file(f.path(), 100);
        } else {
          std::fstream file(f.path(), std::ios::in | std::ios::out | std::ios::binary);
          file.seekp(200);
          file.put('\x7f');
        }
      }
    ASSERT_FALSE(damaged.empty());
    const auto again = run_variants(edits);
    ASSERT_EQ(again.exit_code, 0) << again.output;
    EXPECT_NE(again.output.find("warning: " + damaged + ": " + (truncate ? "file is truncated" : "content does not match its checksum")),
              std::string::npos) << again.output;
    EXPECT_NE(again.output.find("domain 'zq': 8 images synthesized, cached in"), std::string::npos) << again.output;
    EXPECT_EQ(set_hashes(), hashes);
  }
}

namespace {
// quant_top1 of every (run, test domain) of a results.json, with the run ids, in file order.
std::vector<std::pair<std::string, double>> accuracies(const std::string& results_json) {
  std::ifstream in(results_json);
  const auto j = nlohmann::json::parse(in);
  std::vector<std::pair<std::string, double>> out;
  for (const auto& run : j["runs"])
    for (const auto& d : run["results"]) out.emplace_back(run["id"].get<std::string>() + "@" + d["domain"].get<std::string>(), d["quant_top1"].get<double>());
  return out;
}
}  // namespace

TEST_F(Cli, CalibrationStatisticsAreCachedAndServeAnotherCalibrator) {
  const std::string cache = "data: {cache: " + dir.file("cache") + "}\ncalibration:";
  auto with = [&](const std::string& calibrators) {
    return std::vector<std::pair<std::string, std::string>>{
        {"calibration:", cache},
        {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]", "calibrators: " + calibrators}};
  };
  // Cold: minmax collects the statistics (one file: one model, one calibration set).
  const auto cold = run_variants(with("[minmax]"));
  ASSERT_EQ(cold.exit_code, 0) << cold.output;
  EXPECT_EQ(cold.output.find("calibration statistics from the cache"), std::string::npos) << cold.output;
  std::vector<fs::path> files;
  for (const auto& f : fs::directory_iterator(dir.file("cache/statistics"))) files.push_back(f.path());
  ASSERT_EQ(files.size(), 1u);
  // Warm: mse reads them; its results equal those of mse on a fresh cache, which runs the model.
  fs::remove_all(dir.file("out"));
  const auto warm = run_variants(with("[mse]"));
  ASSERT_EQ(warm.exit_code, 0) << warm.output;
  EXPECT_NE(warm.output.find("calibration statistics from the cache " + files[0].string()), std::string::npos) << warm.output;
  const auto from_cache = accuracies(dir.file("out/results.json"));
  fs::remove_all(dir.file("out"));
  fs::remove_all(dir.file("cache"));
  ASSERT_EQ(run_variants(with("[mse]")).exit_code, 0);
  EXPECT_EQ(accuracies(dir.file("out/results.json")), from_cache);
  // A damaged statistics file is named, recomputed and rewritten; the results do not change.
  fs::remove_all(dir.file("out"));
  const auto size = fs::file_size(files[0]);
  fs::resize_file(files[0], 100);
  const auto damaged = run_variants(with("[mse]"));
  ASSERT_EQ(damaged.exit_code, 0) << damaged.output;
  EXPECT_NE(damaged.output.find("warning: " + files[0].string() +
                                ": calibration statistics do not match their checksum (truncated or damaged file); recomputing it"),
            std::string::npos) << damaged.output;
  EXPECT_EQ(accuracies(dir.file("out/results.json")), from_cache);
  EXPECT_EQ(fs::file_size(files[0]), size);
}

TEST_F(Cli, ParallelRunsGiveTheSerialResults) {
  // Three calibration sets, nearest rounding and a short BRECQ.
  auto run_with = [&](const std::string& threads, const std::string& jobs) {
    fs::remove_all(dir.file("out"));
    const auto r = run_variants(
        {{"threads: 2", "threads: " + threads + "\njobs: " + jobs},
         {"calibration:", "domains:\n  clean: {dataset: fashion_mnist}\n  noise: {dataset: noise_uniform}\n"
                          "  gauss: {dataset: noise_gaussian}\ncalibration:"},
         {"source: fashion_mnist.train", "domains: [clean, noise, gauss]"},
         {"bits: [w8a8, w4a4]", "bits: [w4a4]"},
         {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]", "calibrators: [mse]"},
         {"rounding: [nearest]", "rounding: [nearest, {name: brecq, iters: 10}]"}});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return accuracies(dir.file("out/results.json"));
  };
  auto nearest_only = [](std::vector<std::pair<std::string, double>> all) {
    all.erase(std::remove_if(all.begin(), all.end(), [](const auto& a) { return a.first.find("/brecq/") != std::string::npos; }),
              all.end());
    return all;
  };
  const auto parallel = run_with("2", "2");  // two jobs of one thread each
  ASSERT_EQ(parallel.size(), 3u * 2u);
  const YAML::Node resolved = YAML::LoadFile(dir.file("out/config.resolved.yaml"));
  EXPECT_EQ(resolved["jobs"].as<int>(), 2);                                                // as asked
  EXPECT_EQ(resolved["provenance"]["jobs"].as<int>(), parallel_jobs_available() ? 2 : 1);  // as run (1 without TBB)
  // Every run equals the serial run with the same threads per run; calibration and nearest rounding
  // equal the serial run with any thread count (learned rounding sums gradients in thread-dependent order).
  EXPECT_EQ(run_with("1", "1"), parallel);
  EXPECT_EQ(nearest_only(run_with("2", "1")), nearest_only(parallel));
}

TEST_F(Cli, BadJobsOrHistogramBins) {
  expect_clean_failure(run_variant("threads: 2", "threads: 2\njobs: 0"), "bad.yaml:4 jobs: expected an integer in [1, 4096], got 0");
  expect_clean_failure(run_variant("  batch_size: 32", "  batch_size: 32\n  histogram_bins: 8"),
                       "bad.yaml:11 calibration.histogram_bins: expected an integer in [16, 65536]");
}

TEST_F(Cli, Level1DataFreeQuantizationReadsNoImage) {
  const auto r = run_variants(
      {{"path: tiny.pt", "path: " + std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt"},
       {"source: fashion_mnist.train", "source: none"},
       {"bits: [w8a8, w4a4]", "bits: [w8a8]"},
       {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]",
        "calibrators: [bn_ranges]\n  passes: [cross_layer_equalization, bias_absorption, analytic_bias_correction]"}});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir.file("out/results.json"));
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["runs"].size(), 1u);
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["calibration"]["count"], 0);
  // W8A8 from BN statistics alone stays within a point of FP32 on 500 test images.
  const double fp32 = run["results"][0]["fp32_top1"], quant = run["results"][0]["quant_top1"];
  EXPECT_GT(fp32, 0.9);
  EXPECT_GT(quant, fp32 - 0.01) << r.output;
}

namespace {
nlohmann::json results_without_timings(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json j = nlohmann::json::parse(in);
  for (auto& run : j["runs"]) {
    run.erase("seconds");
    run.erase("peak_rss_mib");
  }
  return j;
}
}  // namespace

TEST_F(Cli, AFailedRunIsRecordedAndTheSweepGoesOn) {
  // 2 bit settings x 2 calibrators; test_throws fails only where activations have 4 bits: one run of four.
  const auto edits = std::vector<std::pair<std::string, std::string>>{
      {"models:", std::string("plugins: {paths: [") + XDQ_TEST_PLUGIN_DIR + "]}\nmodels:"},
      {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]",
       "calibrators: [minmax, {name: test_throws, fail_at_bits: 4}]"}};
  const auto r = run_variants(edits);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("tiny/w4a4/test_throws/nearest  FAILED: plugin 'test_throws'"), std::string::npos) << r.output;
  const auto j = results_without_timings(dir.file("out/results.json"));
  ASSERT_EQ(j["runs"].size(), 4u);
  for (const auto& run : j["runs"]) {
    const bool should_fail = run["id"] == "tiny/w4a4/test_throws/nearest";
    EXPECT_EQ(run.contains("status"), should_fail) << run["id"];
    EXPECT_EQ(run["results"].size(), should_fail ? 0u : 1u) << run["id"];
    if (should_fail) {
      EXPECT_EQ(run["status"], "failed");
      EXPECT_NE(run["error"].get<std::string>().find("failed in observe: observer exploded"), std::string::npos);
    }
  }
  const std::string text = test::read_text(dir.file("out/report.md"));
  EXPECT_NE(text.find("## Failed runs"), std::string::npos);

  // on_error: stop ends the sweep at the failure, with no output.
  fs::remove_all(dir.file("out"));
  auto stop = edits;
  stop.push_back({"threads: 2", "threads: 2\non_error: stop"});
  const auto stopped = run_variants(stop);
  EXPECT_EQ(stopped.exit_code, 1) << stopped.output;
  EXPECT_NE(stopped.output.find("tiny/w4a4/test_throws/nearest: plugin 'test_throws'"), std::string::npos) << stopped.output;
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

// Transformers: a preset whose quantizers have no place in the model names the model and the key; a ViT
// fed another image size (another token count) names the model, the node that fails and the key to set.
TEST_F(Cli, TransformerPresetAndInputSizeErrorsNameModelLayerAndKey) {
  const test::CommandResult preset = run_variant("preset: academic", "preset: vit_academic");
  expect_clean_failure(preset, "model 'tiny' has no token matmul");
  EXPECT_NE(preset.output.find("(quantization.preset)"), std::string::npos) << preset.output;
  fs::copy_file(std::string(XDQ_TORCHVISION_DIR) + "/deit_tiny.pt", dir.file("deit.pt"));
  const test::CommandResult size = run_variant("path: tiny.pt", "path: deit.pt\n    input_size: [112, 112]");
  expect_clean_failure(size, "model 'tiny' cannot run on 3x112x112 inputs (set the model's input_size)");
  // 7x7 patches and the class token: 50 tokens where the position embedding holds 197.
  EXPECT_NE(size.output.find("at 'encoder/add'"), std::string::npos) << size.output;
}

TEST_F(Cli, ExitCodesSeparateConfigErrorsFromRuntimeErrors) {
  EXPECT_EQ(run_variant("count: 64", "count: many").exit_code, 2);  // config
  test::write_text(dir.file("junk.pt"), "junk");
  EXPECT_EQ(run_variant("path: tiny.pt", "path: junk.pt").exit_code, 1);  // a model file that fails at run time
  EXPECT_EQ(test::run_command(std::string(XDQ_BINARY) + " run").exit_code, 2);  // usage
  EXPECT_EQ(test::run_command(std::string(XDQ_BINARY) + " frobnicate").exit_code, 2);
}

TEST_F(Cli, DryRunPrintsThePlanAndReadsNothing) {
  const auto r = test::run_command(std::string(XDQ_BINARY) + " run --dry-run " + XDQ_SOURCE_DIR +
                                   "/experiments/cross_domain.yaml --out " + dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // 4 models x 7 calibration sources = 28 jobs; x 3 bit settings x 1 calibrator x 1 rounding = 84 runs;
  // x 7 test domains = 588 cells.
  EXPECT_NE(r.output.find("28 jobs (model x calibration set), 84 runs, 588 cells"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("job 27: shufflenet_v2 calibrated on noise (1024 images, seed 0), 3 runs"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("  resnet20/w4a3/mse/nearest/nir\n"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

TEST_F(Cli, TheResolvedConfigRepeatsTheRun) {
  const auto first = run_variant("seed: 3", "seed: 3");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // Run from another folder: every path in the resolved config is absolute.
  const auto again = test::run_command("cd / && " + std::string(XDQ_BINARY) + " run " + dir.file("out/config.resolved.yaml") +
                                       " --out " + dir.file("again"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(results_without_timings(dir.file("again/results.json")), results_without_timings(dir.file("out/results.json")));
  // A pinned model hash that does not match the file is refused.
  std::string text = test::read_text(dir.file("again/config.resolved.yaml"));
  // The SHA-256 written is the file's (sha256sum, an independent implementation).
  const auto sum = test::run_command("sha256sum " + dir.file("tiny.pt"));
  const auto at = text.find("sha256: ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(text.substr(at + 8, 64), sum.output.substr(0, 64));
  text.replace(at + 8, 4, text.substr(at + 8, 4) == "0000" ? "1111" : "0000");
  test::write_text(dir.file("pinned.yaml"), text);
  const auto pinned = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("pinned.yaml") + " --out " + dir.file("p"));
  EXPECT_EQ(pinned.exit_code, 2);
  EXPECT_NE(pinned.output.find("models[0].sha256: model file "), std::string::npos) << pinned.output;
  EXPECT_FALSE(fs::exists(dir.file("p")));
}

// Job shards: every finished job is kept in <out>/jobs; jobs run one per process and merged, or a sweep
// killed mid-way and run again, give the results of one uninterrupted run.
TEST_F(Cli, JobsRunApartAndMergedEqualOneRun) {
  const std::vector<std::pair<std::string, std::string>> two_jobs = {{"count: 64", "count: [32, 64]"}};
  ASSERT_EQ(run_variants(two_jobs).exit_code, 0);
  const auto whole = results_without_timings(dir.file("out/results.json"));
  ASSERT_EQ(whole["runs"].size(), 8u);
  const std::string bad = dir.file("bad.yaml"), split = dir.file("split");
  const auto job1 = test::run_command(std::string(XDQ_BINARY) + " run " + bad + " --job 1 --out " + split);
  ASSERT_EQ(job1.exit_code, 0) << job1.output;
  EXPECT_FALSE(fs::exists(split + "/results.json"));  // a job alone writes its shard only
  // Merging with job 0 missing names it, and says so in the exit status.
  const auto partial = test::run_command(std::string(XDQ_BINARY) + " merge " + split);
  EXPECT_EQ(partial.exit_code, 3) << partial.output;
  EXPECT_NE(partial.output.find("1 jobs have no shard yet: 0-tiny-fashion_mnist.train-n32-s3"), std::string::npos)
      << partial.output;
  const auto job0 = test::run_command(std::string(XDQ_BINARY) + " run " + bad + " --job 0 --out " + split);
  ASSERT_EQ(job0.exit_code, 0) << job0.output;
  const auto merged = test::run_command(std::string(XDQ_BINARY) + " merge " + split);
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  EXPECT_EQ(results_without_timings(split + "/results.json"), whole);
  EXPECT_EQ(test::run_command(std::string(XDQ_BINARY) + " run " + bad + " --job 2 --out " + split).exit_code, 2);
}

TEST_F(Cli, AKilledSweepResumesWithoutRedoingFinishedJobs) {
  const std::vector<std::pair<std::string, std::string>> two_jobs = {{"count: 64", "count: [32, 64]"}};
  ASSERT_EQ(run_variants(two_jobs).exit_code, 0);
  const auto whole = results_without_timings(dir.file("out/results.json"));
  // Killed (SIGKILL) as soon as the first job's shard exists.
  const std::string killed = dir.file("killed");
  const auto r = test::run_command("(" + std::string(XDQ_BINARY) + " run " + dir.file("bad.yaml") + " --out " + killed +
                                   " > /dev/null 2>&1 & pid=$!; for i in $(seq 600); do ls " + killed +
                                   "/jobs/0-*/shard.json > /dev/null 2>&1 && break; sleep 0.1; done; kill -9 $pid; wait $pid; echo killed $?)");
  EXPECT_NE(r.output.find("killed"), std::string::npos) << r.output;
  ASSERT_TRUE(fs::exists(killed + "/jobs"));
  const auto resumed = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("bad.yaml") + " --out " + killed);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("job 0-tiny-fashion_mnist.train-n32-s3 finished before; read from its shard"),
            std::string::npos) << resumed.output;
  EXPECT_EQ(resumed.output.find("tiny/w8a8/minmax/nearest/n32 "), std::string::npos) << resumed.output;  // not run again
  EXPECT_EQ(results_without_timings(killed + "/results.json"), whole);
  // Another config into a folder holding shards is refused before any work, saying why.
  const auto other = run_variants({{"count: 64", "count: [32, 64]"}, {"seed: 3", "seed: 4"}});
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("holds the finished jobs of another configuration"), std::string::npos) << other.output;
}

// xdq submit --slurm --dry-run: the resolved experiment and the two sbatch scripts (an array of one
// task per job, each `xdq run --job $SLURM_ARRAY_TASK_ID`, and the merge), nothing submitted.
TEST_F(Cli, SubmitWritesAnArrayWithOneTaskPerJobAndAMerge) {
  test::write_text(dir.file("bad.yaml"), std::string(kGoodExperiment).replace(std::string(kGoodExperiment).find("count: 64"), 9,
                                                                                "count: [16, 32, 64]"));
  const auto r = test::run_command(std::string(XDQ_BINARY) + " submit " + dir.file("bad.yaml") + " --out " + dir.file("sweep") +
                                   " --slurm --dry-run --cpus-per-task 2 --partition short --max-parallel 2 --sbatch-arg=--mem=4G");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string script = test::read_text(dir.file("sweep/slurm/array.sbatch"));
  EXPECT_NE(script.find("#SBATCH --array=0-2%2\n"), std::string::npos) << script;  // 3 jobs, 2 at a time
  EXPECT_NE(script.find("#SBATCH --cpus-per-task=2\n#SBATCH --output="), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --partition=short\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --mem=4G\n"), std::string::npos) << script;
  EXPECT_NE(script.find(" run '" + dir.file("sweep/experiment.yaml") + "' --out '" + dir.file("sweep") +
                        "' --job \"$SLURM_ARRAY_TASK_ID\""), std::string::npos) << script;
  EXPECT_NE(r.output.find("--dependency=afterany:$id " + dir.file("sweep/slurm/merge.sbatch")), std::string::npos) << r.output;
  // The experiment the tasks run is the resolved config with the task's threads, and one of its jobs runs.
  EXPECT_EQ(YAML::LoadFile(dir.file("sweep/experiment.yaml"))["threads"].as<int>(), 2);
  const auto task = test::run_command("SLURM_ARRAY_TASK_ID=1 bash -c \"$(grep '^exec' " + dir.file("sweep/slurm/array.sbatch") + ")\"");
  ASSERT_EQ(task.exit_code, 0) << task.output;
  EXPECT_TRUE(fs::exists(dir.file("sweep/jobs/1-tiny-fashion_mnist.train-n32-s3/shard.json")));
}

// xdq submit --analyze: one array task per analysis job (model x bit setting), each `xdq analyze --job`.
TEST_F(Cli, SubmitAnalyzeWritesAnArrayOfAnalysisJobs) {
  const auto r = test::run_command(std::string(XDQ_BINARY) + " submit " + dir.file("good.yaml") + " --out " +
                                   dir.file("sweep") + " --slurm --analyze --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string script = test::read_text(dir.file("sweep/slurm/analysis_array.sbatch"));
  EXPECT_NE(script.find("#SBATCH --array=0-1\n"), std::string::npos) << script;  // tiny x {w8a8, w4a4}
  EXPECT_TRUE(fs::exists(dir.file("sweep/slurm/analysis_merge.sbatch")));
  EXPECT_NE(script.find(" analyze '" + dir.file("sweep/experiment.yaml") + "' --out '" + dir.file("sweep") +
                        "' --job \"$SLURM_ARRAY_TASK_ID\""), std::string::npos) << script;
  const auto task = test::run_command("SLURM_ARRAY_TASK_ID=1 bash -c \"$(grep '^exec' " +
                                      dir.file("sweep/slurm/analysis_array.sbatch") + ")\"");
  ASSERT_EQ(task.exit_code, 0) << task.output;
  EXPECT_TRUE(fs::exists(dir.file("sweep/analysis_jobs/1-tiny_w4a4/shard.json")));
}

// Shards are sealed: one from another configuration (same job id), or one edited after it was written,
// is refused on merge and on resume, naming the file and how to recompute it.
TEST_F(Cli, ShardsOfAnotherConfigurationOrEditedAreRefused) {
  ASSERT_EQ(run_variant("calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]", "calibrators: [minmax]").exit_code, 0);
  const std::string a = dir.file("out"), b = dir.file("b");
  ASSERT_TRUE(fs::exists(a + "/jobs"));
  const std::string config = test::read_text(dir.file("bad.yaml"));
  test::write_text(dir.file("mse.yaml"), std::regex_replace(config, std::regex("calibrators: \\[minmax\\]"), "calibrators: [mse]"));
  ASSERT_EQ(test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("mse.yaml") + " --out " + b).exit_code, 0);
  const std::string job = "0-tiny-fashion_mnist.train-n64-s3";
  const std::string shard = a + "/jobs/" + job + "/shard.json";
  const std::string original = test::read_text(shard);
  fs::copy(b + "/jobs/" + job, a + "/jobs/" + job, fs::copy_options::overwrite_existing | fs::copy_options::recursive);
  fs::remove(a + "/results.json");
  for (const std::string command : {" merge " + a, " run " + dir.file("bad.yaml") + " --out " + a}) {
    const auto r = test::run_command(std::string(XDQ_BINARY) + command);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(shard + ": was computed under another configuration"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("remove " + a + "/jobs/" + job + " and run the experiment into this folder again"), std::string::npos)
        << r.output;
    EXPECT_FALSE(fs::exists(a + "/results.json"));
  }
  // One digit of a top-1 changed: the checksum differs.
  std::string edited = original;
  const auto at = edited.find("\"quant_top1\": 0.");
  ASSERT_NE(at, std::string::npos);
  edited.insert(at + 16, "1");
  test::write_text(shard, edited);
  const auto r = test::run_command(std::string(XDQ_BINARY) + " merge " + a);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(shard + ": its content does not match its checksum"), std::string::npos) << r.output;
  // A file beside the shard changed (one byte of its sample images): the shard is refused too; restored,
  // the folder merges again.
  test::write_text(shard, original);
  const std::string sample = a + "/jobs/" + job + "/sample_0.xdqimg";
  const std::string images = test::read_text(sample);
  std::string changed = images;
  changed[changed.size() / 2] = static_cast<char>(changed[changed.size() / 2] ^ 1);
  test::write_text(sample, changed);
  const auto swapped = test::run_command(std::string(XDQ_BINARY) + " merge " + a);
  EXPECT_EQ(swapped.exit_code, 1) << swapped.output;
  EXPECT_NE(swapped.output.find(shard + ": the files beside it are not the ones it was written with"), std::string::npos)
      << swapped.output;
  test::write_text(sample, images);
  EXPECT_EQ(test::run_command(std::string(XDQ_BINARY) + " merge " + a).exit_code, 0);
}

// One writer per output folder: a second run, merge or export into a folder another process writes is
// refused at once; `--job K` runs share the folder, but not one job.
TEST_F(Cli, ASecondWriterOfAnOutputFolderIsRefused) {
  const std::string out = dir.file("out");
  {
    const PathLock held(out, PathLock::Mode::Exclusive, "into this folder");
    const auto r = run_variant("count: 64", "count: 64");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(out + ": another xdq process is writing into this folder (it holds " + dir.file(".out.lock")),
              std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(out));
    const auto merge = test::run_command(std::string(XDQ_BINARY) + " merge " + out);
    EXPECT_NE(merge.exit_code, 0) << merge.output;
  }
  {
    const PathLock shared(out, PathLock::Mode::Shared, "into this folder");  // another job of the sweep
    const PathLock job(out + "/jobs/1-tiny-fashion_mnist.train-n64-s3", PathLock::Mode::Exclusive, "job");
    const std::string two = dir.file("two.yaml");
    test::write_text(two, std::regex_replace(kGoodExperiment, std::regex("count: 64"), "count: [32, 64]"));
    const auto job0 = test::run_command(std::string(XDQ_BINARY) + " run " + two + " --job 0 --out " + out);
    EXPECT_EQ(job0.exit_code, 0) << job0.output;
    const auto job1 = test::run_command(std::string(XDQ_BINARY) + " run " + two + " --job 1 --out " + out);
    EXPECT_EQ(job1.exit_code, 1) << job1.output;
    EXPECT_NE(job1.output.find("another xdq process is writing job 1-tiny-fashion_mnist.train-n64-s3"), std::string::npos)
        << job1.output;
    const auto whole = test::run_command(std::string(XDQ_BINARY) + " run " + two + " --out " + out);
    EXPECT_EQ(whole.exit_code, 1) << whole.output;
  }
  EXPECT_FALSE(fs::exists(dir.file(".out.lock")));  // the last holder removed it
}

// isolation: process. A plugin that ends its process (SIGSEGV on the count-32 job's batches) fails
// that job's runs, recorded with the signal; the other job runs; exit 3.
TEST_F(Cli, ACrashingPluginFailsItsJobAndTheSweepGoesOn) {
  const auto r = run_variants({{"models:", std::string("isolation: process\nplugins: {paths: [") + XDQ_TEST_PLUGIN_DIR + "]}\nmodels:"},
                               {"count: 64", "count: [32, 64]"},
                               {"batch_size: 32", "batch_size: 64"},
                               {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]",
                                "calibrators: [{name: test_throws, crash_on_batch: 32}]"}});
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("job 0-tiny-fashion_mnist.train-n32-s3 FAILED: the job's process ended with signal 11"),
            std::string::npos) << r.output;
  const auto j = results_without_timings(dir.file("out/results.json"));
  ASSERT_EQ(j["runs"].size(), 4u);
  for (const auto& run : j["runs"]) {
    const bool crashed = run["calibration"]["count"] == 32;
    EXPECT_EQ(run.contains("status"), crashed) << run;
    if (crashed) EXPECT_NE(run["error"].get<std::string>().find("signal 11"), std::string::npos) << run;
    else EXPECT_EQ(run["results"].size(), 1u) << run;
  }
  EXPECT_FALSE(fs::exists(dir.file("out/jobs/0-tiny-fashion_mnist.train-n32-s3")));  // resumed, it runs again
  EXPECT_TRUE(fs::exists(dir.file("out/jobs/1-tiny-fashion_mnist.train-n64-s3/shard.json")));
}

// Flipped bytes inside a tensor of a TorchScript file load and run in LibTorch; xdq checks the zip's
// CRC-32 of every entry first and refuses the file, naming the entry, with no sha256 pin.
TEST_F(Cli, AModelWithFlippedBytesIsRefusedWithoutAPin) {
  std::string bytes = test::read_text(dir.file("tiny.pt"));
  // The largest tensor's bytes lie near the file's middle; 64 bytes there flipped.
  for (std::size_t k = 0; k < 64; ++k) bytes[bytes.size() / 2 + k] = static_cast<char>(~bytes[bytes.size() / 2 + k]);
  test::write_text(dir.file("tiny.pt"), bytes);
  const auto r = run_variant("count: 64", "count: 64");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir.file("tiny.pt") + ": damaged model file: "), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

// Requests that name what does not exist are usage errors (exit 2), found when the work starts.
TEST_F(Cli, MissingFoldersJobsAndLayersAreUsageErrors) {
  const auto merge = test::run_command(std::string(XDQ_BINARY) + " merge " + dir.file("nowhere"));
  EXPECT_EQ(merge.exit_code, 2) << merge.output;
  EXPECT_NE(merge.output.find(dir.file("nowhere") + ": holds no job shards"), std::string::npos) << merge.output;
  const auto job = run_variant("count: 64", "count: 64");
  ASSERT_EQ(job.exit_code, 0) << job.output;
  const auto far = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("bad.yaml") + " --job 99 --out " + dir.file("j"));
  EXPECT_EQ(far.exit_code, 2) << far.output;
  EXPECT_NE(far.output.find("--job 99: the plan has 1 jobs"), std::string::npos) << far.output;
  fs::remove_all(dir.file("out"));
  const auto layer = run_variant("rounding: [nearest]", "rounding: [nearest]\n  overrides: [{layers: [conv99], w_bits: 4}]");
  EXPECT_EQ(layer.exit_code, 2) << layer.output;
  EXPECT_NE(layer.output.find("quantization.overrides[0].layers: no conv/linear layer named 'conv99'"), std::string::npos)
      << layer.output;
}

// A graph pass that reads the run's activation bits (repq_reparameterize): each bit width of a sweep gets its
// own adapted graph, so a run of the sweep equals the same run alone.
TEST_F(Cli, PassesReadingTheBitsAdaptTheGraphPerBitWidth) {
  fs::copy_file(std::string(XDQ_TORCHVISION_DIR) + "/vit_tiny28.pt", dir.file("vit.pt"));
  const std::vector<std::pair<std::string, std::string>> vit = {
      {"path: tiny.pt", "path: vit.pt"},
      {"preset: academic", "preset: vit_academic\n  passes: [repq_reparameterize]"},
      {"calibrators: [minmax, {name: percentile, percentile: 99.9, label: p999}]", "calibrators: [quantile_search]"}};
  auto with = [&](const std::string& bits) {
    auto edits = vit;
    edits.push_back({"bits: [w8a8, w4a4]", "bits: " + bits});
    const test::CommandResult r = run_variants(edits);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::map<std::string, nlohmann::json> runs;
    const nlohmann::json results = results_without_timings(dir.file("out/results.json"));
    for (const auto& run : results["runs"]) runs[run["id"].get<std::string>()] = run["results"];
    const std::string log = test::read_text(dir.file("out/run.log"));
    std::size_t passes = 0;
    for (auto at = log.find("repq_reparameterize: 4 LayerNorm"); at != std::string::npos; at = log.find("repq_reparameterize: 4", at + 1))
      ++passes;
    EXPECT_EQ(passes, runs.size()) << log;  // one reparameterization per bit width
    fs::remove_all(dir.file("out"));
    return runs;
  };
  const auto sweep = with("[w4a4, w6a6]");
  const auto alone = with("[w6a6]");
  ASSERT_EQ(sweep.size(), 2u);
  ASSERT_EQ(alone.size(), 1u);
  EXPECT_EQ(sweep.at(alone.begin()->first), alone.begin()->second);
}

// scoring: every cell carries every declared score; scores of the FP model alone are the same for both
// calibrators of a calibration set, and the scores `xdq rank` ranks by are the run's own, in order.
TEST_F(Cli, ScoringFillsEveryCellAndRankOrdersTheSameScores) {
  const std::string scoring = "scoring:\n  scorers: [feature_distance, quantized_outputs]\n  target_count: 48\nquantization:";
  const std::string sources = "calibration:\n  domains: [fashion_mnist, dark]\n  count: 64";
  std::string text = kGoodExperiment;
  text.replace(text.find("quantization:"), 13, scoring);
  text.replace(text.find("calibration:\n  source: fashion_mnist.train\n  count: 64"), 52, sources);
  text.replace(text.find("bits: [w8a8, w4a4]"), 18, "bits: [w4a4]");
  text.replace(text.find("count: 500"), 10, "count: 200");
  text += "domains:\n  fashion_mnist: {dataset: fashion_mnist}\n  dark: {dataset: fashion_mnist, transforms: [{name: low_light, severity: 2}]}\n";
  test::write_text(dir.file("scored.yaml"), text);
  const auto r = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("scored.yaml") + " --out " + dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir.file("out/results.json"));
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["scores"].size(), 6u);
  std::map<std::string, std::map<std::string, double>> kl;  // setting -> calibration domain -> logit_kl
  std::map<std::string, double> frechet;                     // calibration domain -> frechet (any calibrator)
  for (const auto& run : j["runs"]) {
    const auto& scores = run["results"][0]["scores"];
    ASSERT_EQ(scores.size(), 6u) << run["id"];
    const std::string domain = run["calibration"]["domain"], setting = run["id"].get<std::string>().substr(5);
    const double f = scores["frechet"];
    if (frechet.count(domain)) EXPECT_EQ(frechet[domain], f) << run["id"];
    frechet[domain] = f;
    EXPECT_GE(scores["agreement"].get<double>(), 0.0);
    EXPECT_LE(scores["agreement"].get<double>(), 1.0);
    kl[setting.substr(0, setting.rfind('/'))][domain] = scores["logit_kl"];
  }
  EXPECT_NE(frechet["fashion_mnist"], frechet["dark"]);
  EXPECT_NE(test::read_text(dir.file("out/report.md")).find("Which calibration set will work"), std::string::npos);

  const auto ranked = test::run_command(std::string(XDQ_BINARY) + " rank " + dir.file("scored.yaml") +
                                        " --target fashion_mnist.test --by logit_kl --out " + dir.file("rank"));
  ASSERT_EQ(ranked.exit_code, 0) << ranked.output;
  std::ifstream rin(dir.file("rank/rank.json"));
  const auto rankings = nlohmann::json::parse(rin);
  ASSERT_EQ(rankings.size(), 2u);  // tiny w4a4 x (minmax, p999), one target
  for (const auto& k : rankings) {
    const auto& sets = k["sets"];
    ASSERT_EQ(sets.size(), 2u);
    EXPECT_LE(sets[0]["score"].get<double>(), sets[1]["score"].get<double>());  // lower KL ranks first
    const auto& by_domain = kl.at(k["setting"].get<std::string>());
    for (const auto& s : sets) {
      const std::string run = s["run"];
      EXPECT_EQ(s["score"].get<double>(), by_domain.at(run.substr(run.rfind('/') + 1))) << run;
    }
  }
  const auto unknown = test::run_command(std::string(XDQ_BINARY) + " rank " + dir.file("scored.yaml") +
                                         " --target fashion_mnist.test --by accuracy");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("no scorer plugin declares this score"), std::string::npos) << unknown.output;
  EXPECT_NE(unknown.output.find("logit_kl"), std::string::npos) << unknown.output;
}

TEST_F(Cli, TwoScorersDeclaringOneScoreAreRefused) {
  expect_clean_failure(run_variant("quantization:", "scoring:\n  scorers: [feature_distance, {name: feature_distance, label: again}]\nquantization:"),
                       "both declare a score named 'frechet'");
}
