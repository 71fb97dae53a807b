// Bad input is refused early and by name: a fuzz test over mutants of the quickstart config, and one
// test per class of bad input (silently wrong values, late or vague errors, names that would escape the
// output folder, damaged caches, plugins that shadow each other). Every refusal names the file and
// leaves no output behind.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/experiment/config.h"

using namespace xdq;
namespace fs = std::filesystem;

namespace {

std::string quickstart_with_absolute_paths() {
  std::string text = test::read_text(std::string(XDQ_SOURCE_DIR) + "/experiments/quickstart.yaml");
  return std::regex_replace(text, std::regex(R"(\.\./models)"), std::string(XDQ_SOURCE_DIR) + "/models");
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// One seeded mutation: a value replaced (wrong type, out of range, non-finite, huge, malformed), a key
// renamed, a line deleted, duplicated or re-indented, two lines swapped, a stray character, a truncation.
std::string mutate(const std::string& text, std::mt19937& rng) {
  static const std::vector<std::string> values = {
      "-1", "0", "1", "4294967300", "99999999999999999999", ".nan", ".inf", "-.inf", "abc", "[]", "{}", "[1, 2",
      "w99999999999a8", "w4a4", "null", "~", "1e308", "-1e308", "true", "\"\"", "../../x", "'a/b'", "[w8a8, w1a1]",
      "{name: minmax, margin: 2}", "[minmax, minmax]", "0.5", "2147483648", "-9223372036854775809", "\"\\x00\""};
  auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  std::vector<std::string> lines = lines_of(text);
  const std::size_t i = pick(lines.size());
  std::string& line = lines[i];
  switch (pick(8)) {
    case 0: {  // a value
      const auto colon = line.find(": ");
      if (colon != std::string::npos) line = line.substr(0, colon + 2) + values[pick(values.size())];
      else line += " " + values[pick(values.size())];
      break;
    }
    case 1: {  // a key renamed
      const auto colon = line.find(':');
      if (colon != std::string::npos && colon > 0) line.insert(colon, 1, line[colon - 1]);
      break;
    }
    case 2: lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(i)); break;
    case 3: lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(i), line); break;  // duplicate key or item
    case 4: line = (pick(2) ? "  " : "") + line.substr(std::min<std::size_t>(line.size(), pick(3))); break;
    case 5: std::swap(line, lines[pick(lines.size())]); break;
    case 6: line.insert(pick(line.size() + 1), 1, ":[]{}-\t,#&*!|>'\""[pick(17)]); break;
    default: return join(lines).substr(0, pick(text.size()));  // truncated
  }
  return join(lines);
}

}  // namespace

TEST(Hardening, FuzzedQuickstartConfigsAreLoadedOrRefusedByName) {
  test::TempDir dir;
  const std::string original = quickstart_with_absolute_paths();
  std::mt19937 rng(20261128);
  int refused = 0, loaded = 0, cli_checked = 0;
  for (int k = 0; k < 600; ++k) {
    std::string text = original;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) text = mutate(text, rng);
    const std::string file = dir.file("mutant_" + std::to_string(k) + ".yaml");
    test::write_text(file, text);
    const auto start = std::chrono::steady_clock::now();
    try {
      load_experiment(file, {}, test::built_plugins());
      ++loaded;
    } catch (const Error& e) {
      ++refused;
      EXPECT_EQ(std::string(e.what()).rfind(file, 0), 0u) << "refusal without the file first: " << e.what() << "\n" << text;
      // A sample goes through the command line: exit 2 and no output folder.
      if (cli_checked < 12 && k % 7 == 0) {
        ++cli_checked;
        const auto r = test::run_command(std::string(XDQ_BINARY) + " run " + file + " --out " + dir.file("out"));
        EXPECT_EQ(r.exit_code, 2) << r.output;
        EXPECT_NE(r.output.find(file), std::string::npos) << r.output;
        EXPECT_FALSE(fs::exists(dir.file("out"))) << "partial output for\n" << text;
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "a bare library error escaped: " << e.what() << "\n" << text;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 10.0) << text;
  }
  EXPECT_GE(refused, 300);  // most mutants are wrong; some are still valid configs
  EXPECT_GE(loaded, 20);
  EXPECT_GE(cli_checked, 5);
}

namespace {

class BadInput : public ::testing::Test {
 protected:
  // The quickstart, reduced, with one edit; run through the CLI.
  test::CommandResult run_with(const std::string& from, const std::string& to, const std::string& out = "") {
    std::string text = quickstart_with_absolute_paths();
    const auto at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    test::write_text(dir.file("bad.yaml"), text);
    return test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("bad.yaml") + " --out " +
                             (out.empty() ? dir.file("out") : out));
  }
  void expect_refused(const test::CommandResult& r, const std::string& message, int exit_code = 2) {
    EXPECT_EQ(r.exit_code, exit_code) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir.file("out"))) << "partial output left behind";
  }
  test::TempDir dir;
};

}  // namespace

TEST_F(BadInput, ValuesThatWouldBeSilentlyWrong) {
  expect_refused(run_with("seed: 0", "seed: 0\nseed: 1"), "bad.yaml:6 seed: duplicate key (first at line 5)");
  expect_refused(run_with("bits: [w8a8, w4a8]", "bits: [w8a8, w99999999999a8]"),
                 "quantization.bits[1]: expected a bit setting like w4a8");
  expect_refused(run_with("batch_size: 256", "batch_size: 4294967300"), "calibration.batch_size: expected an integer in [1, 65536], got 4294967300");
  expect_refused(run_with("count: 1024", "count: 99999999999999999999"), "calibration.count: expected an integer");
  expect_refused(run_with("    path:", "    mean: [.nan]\n    std: [1]\n    path:"), "models[0].mean[0]: expected a finite number, got '.nan'");
  expect_refused(run_with("    path:", "    mean: [0.5]\n    std: [.inf]\n    path:"), "models[0].std[0]: expected a finite number");
}

TEST_F(BadInput, PreprocessAndFolderOptionsAreCheckedByKey) {
  expect_refused(run_with("    path:", "    preprocess: imagenette\n    path:"), "models[0].preprocess: unknown preprocess preset 'imagenette'");
  expect_refused(run_with("    path:", "    preprocess: {resize: 32}\n    path:"), "models[0].preprocess: a resize needs a crop");
  expect_refused(run_with("    path:", "    preprocess: {resize: 32, crop: 28, interpolation: lanczos}\n    path:"),
                 "models[0].preprocess.interpolation: expected bilinear, bicubic or nearest");
  expect_refused(run_with("    path:", "    preprocess: {crop: 28, channels: yuv}\n    path:"), "models[0].preprocess.channels: expected rgb or bgr");
  expect_refused(run_with("    path:", "    mean: [0.5]\n    std: [0.5]\n    preprocess: imagenet\n    path:"),
                 "models[0].preprocess: mean/std given twice");
  expect_refused(run_with("calibration:", "domains:\n  d: {dataset: fashion_mnist, classes: c.txt}\ncalibration:"),
                 "domains.d.classes: only a folder:PATH dataset has this option");
  fs::create_directories(dir.file("images/a"));
  expect_refused(run_with("calibration:", "domains:\n  d: {dataset: 'folder:" + dir.file("images") + "', unreadable: ignore}\ncalibration:"),
                 "domains.d.unreadable: expected error or skip");
  expect_refused(run_with("calibration:", "domains:\n  d: {dataset: 'folder:" + dir.file("images") + "', classes: none.txt}\ncalibration:"),
                 "domains.d.classes: classes file not found");
}

TEST_F(BadInput, NamesThatWouldLeaveTheOutputFolder) {
  expect_refused(run_with("experiment: quickstart", "experiment: ../../x"), "bad.yaml:4 experiment: experiment name '../../x'");
  expect_refused(run_with("  - name: resnet20", "  - name: a/b"), "models[0]: model name 'a/b'");
  expect_refused(run_with("calibrators: [minmax,", "calibrators: [{name: minmax, label: ../m},"), "label '../m'");
  expect_refused(run_with("calibration:", "domains:\n  ../night: {dataset: fashion_mnist}\ncalibration:"), "domain name '../night'");
}

TEST_F(BadInput, ResourcesAndFilesThatAreNotConfigs) {
  expect_refused(run_with("threads: 0", "threads: 100000"), "bad.yaml:6 threads: expected an integer in [0, 4096], got 100000");
  const auto device = test::run_command(std::string(XDQ_BINARY) + " run /dev/zero --out " + dir.file("out"));
  expect_refused(device, "/dev/zero: not a regular file");
  test::write_text(dir.file("big.yaml"), std::string(2 << 20, '#'));
  expect_refused(test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("big.yaml") + " --out " + dir.file("out")),
                 "big.yaml: larger than 1048576 bytes");
}

TEST_F(BadInput, AnOutputFolderThatCannotBeWrittenIsRefusedBeforeAnyWork) {
  test::write_text(dir.file("a_file"), "x");
  const auto start = std::chrono::steady_clock::now();
  const auto r = run_with("seed: 0", "seed: 0", dir.file("a_file"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(dir.file("a_file") + ": the output folder exists and is not a folder"), std::string::npos) << r.output;
  const auto nested = run_with("seed: 0", "seed: 0", dir.file("a_file") + "/sub");
  EXPECT_EQ(nested.exit_code, 2) << nested.output;
  EXPECT_NE(nested.output.find("is not a writable folder"), std::string::npos) << nested.output;
  // Refused before the model runs (the quickstart takes over a minute).
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
}

TEST_F(BadInput, ModelsWithNonFiniteWeightsOrNegativeVariancesAreNamed) {
  // The tiny ResNet with one BN variance made negative, and one with a NaN weight: refused at import,
  // naming the file and the tensor, before any calibration.
  for (const bool nan_weight : {false, true}) {
    const std::string model = dir.file(nan_weight ? "nan.pt" : "negative.pt");
    const auto r = test::run_command(
        "/usr/bin/python3 -c \"import torch; m = torch.jit.load('" + std::string(XDQ_SOURCE_DIR) +
        "/models/resnet20_fmnist/model.pt'); sd = dict(m.named_buffers()); p = dict(m.named_parameters()); "
        "import sys; " + (nan_weight ? "p['conv1.weight'].data[0, 0, 0, 0] = float('nan')"
                                     : "sd['bn1.running_var'].data[0] = -1.0") +
        "; m.save('" + model + "')\"");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_refused(run_with(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt", model),
                   nan_weight ? model + ": 'conv1' weight holds NaN or infinite values"
                              : model + ": 'bn1' running_var has negative values",
                   1);
  }
}

TEST_F(BadInput, AModelThatCannotReadTheInputSizeIsNamedBeforeAnyWork) {
  // A conv and a linear layer over the flattened 26x26 maps: only 28x28 inputs fit.
  const std::string model = dir.file("fixed28.pt");
  const auto made = test::run_command(
      "/usr/bin/python3 -c \"import torch; torch.manual_seed(0); "
      "m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10)); "
      "torch.jit.trace(m.eval(), torch.zeros(1, 1, 28, 28)).save('" + model + "')\"");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  expect_refused(run_with(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt", model + "\n    input_size: [12, 12]"),
                 model + ": model 'resnet20' cannot run on 1x12x12 inputs (set the model's input_size): ", 1);
}

TEST(PluginShadowing, ABuiltInNameDeclaredAgainIsRefusedNamingBothLibraries) {
  test::TempDir dir;
  fs::create_directories(dir.file("plugins"));
  const std::string copy = dir.file("plugins/xdq_calibrator_my_minmax.so");
  fs::copy_file(std::string(XDQ_BUILD_PLUGIN_DIR) + "/xdq_calibrator_minmax.so", copy);
  std::string text = quickstart_with_absolute_paths();
  text.replace(text.find("models:"), 7, "plugins: {paths: [" + dir.file("plugins") + "]}\nmodels:");
  test::write_text(dir.file("e.yaml"), text);
  const auto r = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("e.yaml") + " --out " + dir.file("out"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("quantization.calibrators[0]: calibrator 'minmax' is declared by more than one library ("),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find(fs::canonical(copy).string()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(fs::canonical(std::string(XDQ_BUILD_PLUGIN_DIR) + "/xdq_calibrator_minmax.so").string()),
            std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

// A library whose static initializer throws (it would end the process when opened) is found in a child
// process, named in a warning and skipped; the experiment that does not use it runs.
TEST(PluginShadowing, ALibraryThatThrowsWhileOpeningIsSkippedWithAWarning) {
  const auto listed = test::run_command(std::string(XDQ_BINARY) + " plugins --path " + XDQ_THROWING_INIT_PLUGIN_DIR);
  EXPECT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_NE(listed.output.find("warning: " + std::string(XDQ_THROWING_INIT_PLUGIN_DIR) +
                               "/xdq_calibrator_test_throws_at_load.so: opening the plugin library ends the process"),
            std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find("calibrator  minmax"), std::string::npos) << listed.output;
  test::TempDir dir;
  std::string text = quickstart_with_absolute_paths();
  text.replace(text.find("models:"), 7, std::string("plugins: {paths: [") + XDQ_THROWING_INIT_PLUGIN_DIR + "]}\nmodels:");
  test::write_text(dir.file("e.yaml"), text);
  const auto planned = test::run_command(std::string(XDQ_BINARY) + " run --dry-run " + dir.file("e.yaml"));
  EXPECT_EQ(planned.exit_code, 0) << planned.output;
  EXPECT_NE(planned.output.find("12 runs"), std::string::npos) << planned.output;
}
