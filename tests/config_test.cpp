// Config reading and option validation: every error names file, line and key path.
#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/config/node.h"
#include "xdq/config/options.h"
#include "xdq/error.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/load.h"
#include "xdq/hash.h"

using namespace xdq;
using xdq::test::error_of;


TEST(ConfigNode, MalformedYamlNamesFileAndLine) {
  const std::string e = error_of([] { ConfigNode::parse("a: 1\nb: [1, 2\nc: 3\n", "x.yaml"); });
  EXPECT_EQ(e.rfind("x.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
}

TEST(ConfigNode, UnknownKeyNamesLineAndPath) {
  ConfigNode root = ConfigNode::parse("top:\n  good: 1\n  bda: 2\n", "x.yaml");
  const std::string e = error_of([&] { root["top"].check_keys({"good", "bad"}); });
  EXPECT_EQ(e, "x.yaml:3 top.bda: unknown key (allowed: good, bad)");
}

TEST(ConfigNode, WrongTypeNamesLineAndPath) {
  ConfigNode root = ConfigNode::parse("list:\n  - {count: abc}\n", "x.yaml");
  EXPECT_EQ(error_of([&] { root["list"][0]["count"].as_int(); }), "x.yaml:2 list[0].count: expected an integer, got 'abc'");
  EXPECT_EQ(error_of([&] { root["missing"].as_string(); }), "x.yaml:1 missing: missing value (expected a string)");
}

TEST(ConfigNode, SetOverridesReplaceAndCreate) {
  ConfigNode root = ConfigNode::parse("a:\n  b: 1\n", "x.yaml");
  root.set_path("a.b", "5");
  root.set_path("a.c.d", "[1, 2]");
  EXPECT_EQ(root["a"]["b"].as_int(), 5);
  EXPECT_EQ(root["a"]["c"]["d"].as_int_list(), (std::vector<long long>{1, 2}));
  EXPECT_THROW(root.set_path("a.b.x", "1"), Error);
}

TEST(Options, ValidatesTypesRangesChoicesAndUnknownKeys) {
  const OptionSchema schema = {OptionSpec::number("percentile", 99.99, "p").range(0, 100, true),
                               OptionSpec::integer("bins", 2048, "b").range(16, 65536),
                               OptionSpec::text("prior", "laplace", "d").one_of({"laplace", "gauss"})};
  ConfigNode ok = ConfigNode::parse("percentile: 99.9\n", "x.yaml");
  Options o = validate_options(ok, schema);
  EXPECT_DOUBLE_EQ(o.number("percentile"), 99.9);
  EXPECT_EQ(o.integer("bins"), 2048);
  EXPECT_EQ(o.text("prior"), "laplace");
  EXPECT_EQ(error_of([&] { validate_options(ConfigNode::parse("percentile: 150\n", "x.yaml"), schema); }),
            "x.yaml:1 percentile: expected a number in (0, 100], got 150");
  EXPECT_EQ(error_of([&] { validate_options(ConfigNode::parse("percentile: .nan\n", "x.yaml"), schema); }),
            "x.yaml:1 percentile: expected a finite number, got '.nan'");
  EXPECT_EQ(error_of([&] { validate_options(ConfigNode::parse("bins: 1.5\n", "x.yaml"), schema); }),
            "x.yaml:1 bins: expected an integer, got '1.5'");
  EXPECT_EQ(error_of([&] { validate_options(ConfigNode::parse("prior: cauchy\n", "x.yaml"), schema); }),
            "x.yaml:1 prior: expected one of: laplace, gauss, got 'cauchy'");
  EXPECT_EQ(error_of([&] { validate_options(ConfigNode::parse("name: kl\nprecentile: 3\n", "x.yaml"), schema, {"name"}); }),
            "x.yaml:2 precentile: unknown key (allowed: name, percentile, bins, prior)");
}

// config.resolved.yaml is an experiment file: loading it gives back the same config, for every shipped
// experiment (the text written from the reloaded config equals the text it was loaded from).
TEST(ExperimentConfig, ResolvedConfigRoundTripsForEveryExperiment) {
  test::TempDir dir;
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(XDQ_SOURCE_DIR) + "/experiments")) {
    if (entry.path().extension() != ".yaml") continue;
    std::vector<std::string> sets;
    if (entry.path().filename() == "imagenet_folder.yaml") sets = test::imagenet_fixture_sets();  // the user's data
    const ExperimentConfig cfg = load_experiment(entry.path().string(), sets, test::built_plugins());
    const std::string resolved = resolved_config_yaml(cfg, YAML::Node());
    const std::string file = dir.file(entry.path().filename().string());
    test::write_text(file, resolved);
    const ExperimentConfig again = load_experiment(file, {}, test::built_plugins());
    EXPECT_EQ(resolved_config_yaml(again, YAML::Node()), resolved) << entry.path();
    EXPECT_EQ(again.models.size(), cfg.models.size());
    EXPECT_EQ(again.calibration.domains.size(), cfg.calibration.domains.size());
    EXPECT_EQ(again.quantization.scheme.weights.per_channel, cfg.quantization.scheme.weights.per_channel);
    ++checked;
  }
  EXPECT_GE(checked, 15);
}

// SHA-256 against the FIPS 180-4 examples (one block, two blocks) and the million-'a' message.
TEST(Hash, Sha256MatchesTheStandardsExamples) {
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two.data(), two.size()), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
