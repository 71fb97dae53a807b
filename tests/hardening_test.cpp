// Bad input is refused early and by name: a fuzz test over mutants of the quickstart config, and one
// test per class of bad input (silently wrong values, late or vague errors, names that would escape the
// output folder, damaged caches, plugins that shadow each other). Every refusal names the file and
// leaves no output behind.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>
#include <zlib.h>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "xdq/data/dataset.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/data/image_files.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/load.h"

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
// renamed, a line deleted, duplicated or re-indented, two lines swapped, a stray character, a truncation;
// or YAML's graph features: an anchor and an alias to it elsewhere, a recursive alias, an alias to no
// anchor, a list or map as a key.
std::string mutate(const std::string& text, std::mt19937& rng) {
  static const std::vector<std::string> values = {
      "-1", "0", "1", "4294967300", "99999999999999999999", ".nan", ".inf", "-.inf", "abc", "[]", "{}", "[1, 2",
      "w99999999999a8", "w4a4", "null", "~", "1e308", "-1e308", "true", "\"\"", "../../x", "'a/b'", "[w8a8, w1a1]",
      "{name: minmax, margin: 2}", "[minmax, minmax]", "0.5", "2147483648", "-9223372036854775809", "\"\\x00\""};
  auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  std::vector<std::string> lines = lines_of(text);
  if (lines.empty()) return text + values[pick(values.size())];  // a mutant truncated to nothing
  const std::size_t i = pick(lines.size());
  std::string& line = lines[i];
  const auto value_at = [](const std::string& l) { return l.find(": "); };
  switch (pick(12)) {
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
    case 8: {  // an anchor on one value, an alias to it in another line's value
      const std::size_t j = pick(lines.size());
      if (value_at(line) == std::string::npos || value_at(lines[j]) == std::string::npos) break;
      line.insert(value_at(line) + 2, "&m ");
      lines[j] = lines[j].substr(0, value_at(lines[j]) + 2) + "*m";
      break;
    }
    case 9: {  // a recursive alias, as a list or a map
      static const std::vector<std::string> recursive = {"&r [*r]", "&r {a: *r}", "&r [1, [2, *r]]", "&r {a: [*r, *r]}"};
      const auto colon = value_at(line);
      line = (colon == std::string::npos ? line + ":" : line.substr(0, colon + 1)) + " " + recursive[pick(recursive.size())];
      break;
    }
    case 10: {  // a list or a map as a key
      static const std::vector<std::string> keys = {"[1, 2]: 3", "{a: 1}: b", "? [a]\n: b", "? - x\n  - y\n: z"};
      const std::string indent = line.substr(0, line.find_first_not_of(' ') == std::string::npos ? 0 : line.find_first_not_of(' '));
      lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(i), indent + keys[pick(keys.size())]);
      break;
    }
    case 11: {  // an alias to no anchor, or to an anchor defined after it
      const auto colon = value_at(line);
      if (colon != std::string::npos) line = line.substr(0, colon + 2) + (pick(2) ? "*nowhere" : "*m");
      break;
    }
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
  for (int k = 0; k < 1200; ++k) {
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
  std::cout << "fuzz: " << loaded << " mutants loaded, " << refused << " refused by name, " << cli_checked << " through the CLI\n";
  EXPECT_GE(refused, 600);  // most mutants are wrong; some are still valid configs
  EXPECT_GE(loaded, 20);
  EXPECT_GE(cli_checked, 5);
}

namespace {

class BadInput : public ::testing::Test {
 protected:
  // The quickstart with edits, written to bad.yaml; returns its path.
  std::string write_quickstart(const std::vector<std::pair<std::string, std::string>>& edits) {
    std::string text = quickstart_with_absolute_paths();
    for (const auto& [from, to] : edits) {
      const auto at = text.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      if (at != std::string::npos) text.replace(at, from.size(), to);
    }
    test::write_text(dir.file("bad.yaml"), text);
    return dir.file("bad.yaml");
  }
  // The quickstart with one edit; run through the CLI.
  test::CommandResult run_with(const std::string& from, const std::string& to, const std::string& out = "") {
    return test::run_command(std::string(XDQ_BINARY) + " run " + write_quickstart({{from, to}}) + " --out " +
                             (out.empty() ? dir.file("out") : out));
  }
  // `xdq <command> bad.yaml` (the quickstart with `edits`) with more arguments.
  test::CommandResult run_args(const std::vector<std::pair<std::string, std::string>>& edits, const std::string& args,
                               const std::string& command = "run") {
    return test::run_command(std::string(XDQ_BINARY) + " " + command + " " + write_quickstart(edits) + " " + args);
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
  // A folder the system will not let anyone write (root included) is found before any work too.
  const auto proc = run_with("seed: 0", "seed: 0", "/proc/xdq_out");
  EXPECT_EQ(proc.exit_code, 2) << proc.output;
  EXPECT_NE(proc.output.find("/proc/xdq_out: the output folder cannot be written (/proc is not a writable folder)"), std::string::npos)
      << proc.output;
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

TEST_F(BadInput, IntegersAreReadAs64BitAndRangeCheckedBeforeNarrowing) {
  // 2^32 + 4 was cast to int (4) before its range check.
  expect_refused(run_with("w_bits: 8, a_bits: 8}", "w_bits: 4294967300, a_bits: 8}"),
                 "bad.yaml:25 quantization.overrides[0].w_bits: expected an integer in [2, 8], got 4294967300");
  expect_refused(run_args({}, "--out " + dir.file("out") +
                                  " --set 'quantization.overrides=[{layers: [first, last], w_bits: 4294967300, a_bits: 8}]'"),
                 "bad.yaml --set quantization.overrides[0].w_bits: expected an integer in [2, 8], got 4294967300");
  expect_refused(run_with("w_bits: 8, a_bits: 8}", "w_bits: 8, a_bits: -4294967292}"),
                 "quantization.overrides[0].a_bits: expected an integer in [2, 16], got -4294967292");
}

TEST_F(BadInput, ASetValueIsLocatedAtItsSetKey) {
  expect_refused(run_args({}, "--out " + dir.file("out") + " --set threads=lots"), "bad.yaml --set threads: expected an integer");
  expect_refused(run_args({}, "--out " + dir.file("out") + " --set 'calibration={[1, 2]: 3}'"),
                 "--set calibration:1: a key must be a name, not a list or a map");
}

TEST_F(BadInput, CalibrationOnFewerImagesThanAskedIsAnErrorUnlessAllowed) {
  // Two class folders whose every file is unreadable, the domain skipping them: the old code calibrated
  // on 0 images and reported a top-1. Then 6 readable images of the 8 asked (the train split holds four
  // of each class's five): refused, and run with min_images 6, reporting the 6 used.
  for (int c = 0; c < 2; ++c) {
    fs::create_directories(dir.file("images/" + std::to_string(c)));
    for (int k = 0; k < 5; ++k) test::write_text(dir.file("images/" + std::to_string(c) + "/" + std::to_string(k) + ".png"), "not a png");
  }
  const std::vector<std::pair<std::string, std::string>> junk = {
      {"calibration:\n  source: fashion_mnist.train\n  count: 1024",
       "domains:\n  junk: {dataset: 'folder:" + dir.file("images") + "', unreadable: skip}\ncalibration:\n  source: junk\n  count: 8"},
      {"test:\n  domains: [fashion_mnist.test]", "test:\n  domains: [fashion_mnist.test]\n  count: 100"},
      {"bits: [w8a8, w4a8]", "bits: [w8a8]"},
      {"calibrators: [minmax, ema_minmax, percentile, mse, kl, aciq]", "calibrators: [minmax]"}};
  const std::string out = "--out " + dir.file("out");
  expect_refused(run_args(junk, out), "calibration domain 'junk' holds 0 usable images of the 8 asked (calibration.count)", 1);
  for (int k = 0; k < 6; ++k) {
    const std::string file = dir.file("images/" + std::to_string(k % 2) + "/" + std::to_string(k / 2) + ".png");
    const auto made = test::run_command("/usr/bin/python3 -c \"from PIL import Image; Image.new('L', (28, 28), " +
                                        std::to_string(40 * k) + ").save('" + file + "')\"");
    ASSERT_EQ(made.exit_code, 0) << made.output;
  }
  expect_refused(run_args(junk, out), "holds 6 usable images of the 8 asked (calibration.count); set calibration.min_images", 1);
  expect_refused(run_args(junk, out + " --set calibration.min_images=7"), "(it is 7)", 1);
  const auto allowed = run_args(junk, out + " --set calibration.min_images=6");
  ASSERT_EQ(allowed.exit_code, 0) << allowed.output;
  EXPECT_NE(allowed.output.find("warning: calibration domain 'junk' holds 6 usable images of the 8 asked"), std::string::npos)
      << allowed.output;
  const auto results = nlohmann::json::parse(test::read_text(dir.file("out/results.json")));
  EXPECT_EQ(results["runs"][0]["calibration"]["count"], 6);
}

TEST_F(BadInput, ATargetSampleLargerThanItsDomainIsRefused) {
  // The OpenCV digits' train split holds 4 000 images: 5 000 asked are not silently cut to them.
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"calibration:\n  source: fashion_mnist.train\n  count: 1024",
       "calibration:\n  source: fashion_mnist.train\n  count: 16\n  pool_size: 64\n  selector: target_match\n"
       "  target_sample: {domain: opencv_digits.train, count: 5000}"},
      {"test:\n  domains: [fashion_mnist.test]", "test:\n  domains: [fashion_mnist.test]\n  count: 100"},
      {"bits: [w8a8, w4a8]", "bits: [w8a8]"},
      {"calibrators: [minmax, ema_minmax, percentile, mse, kl, aciq]", "calibrators: [minmax]"}};
  expect_refused(run_args(edits, "--out " + dir.file("out")),
                 "calibration.target_sample.count: 5000 images asked of domain 'opencv_digits.train', which holds 4000", 1);
}

TEST_F(BadInput, AliasesThatRecurseOrExplodeAreRefusedByLine) {
  // A self-referencing alias crashed the duplicate-key walk (it followed aliases forever).
  expect_refused(run_with("seed: 0", "seed: 0\nbogus: &s [*s]"),
                 "bad.yaml:6 bogus[0]: an alias inside the node it names (a recursive alias)");
  // Nine levels of ten aliases each: 10^9 nodes once expanded. Refused at once, even for --dry-run.
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int level = 1; level < 9; ++level) {
    const std::string prev = "*a" + std::to_string(level - 1);
    bomb += "a" + std::to_string(level) + ": &a" + std::to_string(level) + " [" + prev;
    for (int k = 1; k < 10; ++k) bomb += ", " + prev;
    bomb += "]\n";
  }
  const auto start = std::chrono::steady_clock::now();
  const auto r = run_args({{"seed: 0", "seed: 0\n" + bomb}}, "--dry-run", "run");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("bad.yaml:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("the document expands to more than 100000 nodes"), std::string::npos) << r.output;
  // A few aliases of a small node are fine: the quickstart with its overrides given by alias.
  const auto ok = run_args({{"seed: 0", "seed: 0\nfirst_last: &fl {layers: [first, last], w_bits: 8, a_bits: 8}"},
                            {"    - {layers: [first, last], w_bits: 8, a_bits: 8}", "    - *fl"}},
                           "--dry-run");
  EXPECT_EQ(ok.exit_code, 2) << ok.output;  // the anchor's key is not an experiment key ...
  EXPECT_NE(ok.output.find("bad.yaml:6 first_last: unknown key"), std::string::npos) << ok.output;  // ... named as such
}

TEST_F(BadInput, ComplexKeysAndUnterminatedQuotesNameTheFileAndLine) {
  expect_refused(run_with("seed: 0", "seed: 0\n[1, 2]: 3"), "bad.yaml:6: a key must be a name, not a list or a map");
  expect_refused(run_with("threads: 0", "threads: 0\nmodels_extra:\n  ? [a, b]\n  : c"),
                 "bad.yaml:8 models_extra: a key must be a name, not a list or a map");
  test::write_text(dir.file("quote.yaml"), "experiment: \"quickstart\nseed: 0\n");
  const auto r = test::run_command(std::string(XDQ_BINARY) + " run " + dir.file("quote.yaml") + " --out " + dir.file("out"));
  expect_refused(r, dir.file("quote.yaml") + ":");
  EXPECT_EQ(r.output.find("missing section"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("quote.yaml:1 experiment: a quoted string is not closed before the end of the file"), std::string::npos)
      << r.output;
}

// Every value `xdq submit` writes into a batch script is checked: a newline, ';', $(...), backquotes or
// quotes in any option are refused naming the option, and no script is written.
TEST_F(BadInput, BatchScriptsCannotBeInjected) {
  const std::string pwned = dir.file("pwned");
  const std::vector<std::string> payloads = {"short\ntouch " + pwned, "short; touch " + pwned, "$(touch " + pwned + ")",
                                             "`touch " + pwned + "`", "short'\"", "short\rtouch"};
  const std::string cfg = write_quickstart({});
  const auto submit = [&](const std::string& option, const std::string& value, const std::string& out) {
    // The value goes through a file and $(cat) so that the shell passes it as one argument, unchanged.
    test::write_text(dir.file("value"), value);
    return test::run_command(std::string(XDQ_BINARY) + " submit " + cfg + " --slurm --dry-run --out " + out + " " +
                             option + "=\"$(cat " + dir.file("value") + "; printf x)\"");
  };
  for (const std::string option : {"--partition", "--time", "--sbatch-arg"})
    for (const std::string& payload : payloads) {
      const auto r = submit(option, payload, dir.file("sweep"));
      EXPECT_EQ(r.exit_code, 2) << option << " " << payload << "\n" << r.output;
      EXPECT_NE(r.output.find(option + " '"), std::string::npos) << r.output;
      EXPECT_FALSE(fs::exists(dir.file("sweep"))) << option << " " << payload;
    }
  for (const std::string& payload : payloads) {
    const std::string out = dir.file("o") + payload.substr(0, payload.find('/')) + "x";
    const auto r = test::run_command(std::string(XDQ_BINARY) + " submit " + cfg + " --slurm --dry-run --partition short --out \"$(printf '%s' " +
                                     "'" + std::regex_replace(out, std::regex("'"), "'\\''") + "')\"");
    EXPECT_EQ(r.exit_code, 2) << payload << "\n" << r.output;
    EXPECT_NE(r.output.find("--out '"), std::string::npos) << r.output;
  }
  EXPECT_FALSE(fs::exists(pwned));
  // Well-formed values are written as given.
  const auto good = test::run_command(std::string(XDQ_BINARY) + " submit " + cfg + " --slurm --dry-run --out " + dir.file("sweep") +
                                      " --partition short,long --time 1-02:30:00 --sbatch-arg=--mem=4G --sbatch-arg=--constraint=avx512");
  ASSERT_EQ(good.exit_code, 0) << good.output;
  const std::string script = test::read_text(dir.file("sweep/slurm/array.sbatch"));
  for (const char* line : {"#SBATCH --partition=short,long\n", "#SBATCH --time=1-02:30:00\n", "#SBATCH --mem=4G\n",
                           "#SBATCH --constraint=avx512\n"})
    EXPECT_NE(script.find(line), std::string::npos) << script;
}

// Damaged data files and folders end in one xdq error naming the file, not a LibTorch backtrace.
TEST_F(BadInput, DamagedDataFilesAndFoldersAreNamed) {
  const auto error_of = [](const std::function<void()>& load) {
    try {
      load();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // IDX headers: dimensions whose product overflows 64 bits, and an empty set.
  const auto write_idx = [&](const std::string& name, const std::vector<std::uint32_t>& dims) {
    std::string bytes = {0, 0, 0x08, static_cast<char>(dims.size())};
    for (std::uint32_t d : dims)
      for (int shift = 24; shift >= 0; shift -= 8) bytes += static_cast<char>((d >> shift) & 0xff);
    bytes += std::string(64, '\1');
    test::write_text(dir.file(name + ".raw"), bytes);
    EXPECT_EQ(test::run_command("gzip -c " + dir.file(name + ".raw") + " > " + dir.file(name)).exit_code, 0);
    return dir.file(name);
  };
  const std::string huge = write_idx("huge.gz", {0xffffffffu, 0xffffffffu, 0x10000u});
  EXPECT_EQ(error_of([&] { read_idx_gz(huge); }), huge + ": the IDX header declares more bytes than the file holds");
  const std::string empty = write_idx("empty.gz", {0u, 28u, 28u});
  EXPECT_EQ(error_of([&] { read_idx_gz(empty); }), empty + ": the IDX header declares an empty dimension (no images)");
  // A synthesized-set file whose header declares 2^32 x 2^32 x 1 x 1 images.
  save_dataset(Dataset{"s", at::zeros({2, 1, 4, 4}), {}}, dir.file("set.xdqimg"));
  std::string set = test::read_text(dir.file("set.xdqimg"));
  const std::int64_t big = 1LL << 32;
  std::memcpy(&set[8], &big, sizeof big);
  std::memcpy(&set[16], &big, sizeof big);
  test::write_text(dir.file("set.xdqimg"), set);
  EXPECT_NE(error_of([&] { load_dataset_file(dir.file("set.xdqimg")); }).find(dir.file("set.xdqimg") + ": corrupt header"),
            std::string::npos);
  // A folder whose class folder is a symbolic-link loop.
  fs::create_directories(dir.file("loop"));
  fs::create_directory_symlink(dir.file("loop/a"), dir.file("loop/a"));
  EXPECT_NE(error_of([&] { list_image_folder(dir.file("loop"), Split::Train, {}); }).find(dir.file("loop") + ": cannot list the image folder ("),
            std::string::npos);
  // A PNG whose header declares 100000 x 100000 pixels, as a calibration folder's images.
  const auto chunk = [](const std::string& type, const std::string& data) {
    std::string out;
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((data.size() >> shift) & 0xff);
    const std::string body = type + data;
    const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
    out += body;
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((crc >> shift) & 0xff);
    return out;
  };
  const std::string side = {0, 1, static_cast<char>(0x86), static_cast<char>(0xa0)};  // 100000, big-endian
  const std::string rows(1000, '\0');
  uLongf packed_size = compressBound(static_cast<uLong>(rows.size()));
  std::string packed(packed_size, '\0');
  compress(reinterpret_cast<Bytef*>(packed.data()), &packed_size, reinterpret_cast<const Bytef*>(rows.data()), rows.size());
  packed.resize(packed_size);
  const std::string png = "\x89PNG\r\n\x1a\n" + chunk("IHDR", side + side + std::string{8, 0, 0, 0, 0}) + chunk("IDAT", packed) +
                          chunk("IEND", "");
  for (const char* c : {"a", "b"}) {
    fs::create_directories(dir.file(std::string("big/") + c));
    for (int k = 0; k < 5; ++k) test::write_text(dir.file(std::string("big/") + c + "/" + std::to_string(k) + ".png"), png);
  }
  const auto big_png = run_args({{"calibration:\n  source: fashion_mnist.train\n  count: 1024",
                             "domains:\n  big: {dataset: 'folder:" + dir.file("big") + "'}\ncalibration:\n  source: big\n  count: 8"}},
                            "--out " + dir.file("out"));
  expect_refused(big_png, ".png: cannot decode image (OpenCV: pixels <= CV_IO_MAX_IMAGE_PIXELS in validateInputImageSize)", 1);
  EXPECT_NE(big_png.output.find(dir.file("big/")), std::string::npos) << big_png.output;
  // Mixture weights whose sum overflows.
  expect_refused(run_with("calibration:", "domains:\n  m: {mix: {fashion_mnist.train: 1e308, noise_uniform: 1e308}}\ncalibration:"),
                 "bad.yaml:13 domains.m.mix.noise_uniform: the weights' sum is not a finite number");
}
