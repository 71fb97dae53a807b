// Loading real plugin libraries from disk: a good one, a wrong ABI, a wrong LibTorch, no entry symbol,
// not a library at all, and one that throws. Each failure is a clear Error and the process goes on.
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/plugin/registry.h"

using namespace xdq;

namespace {
std::string test_plugin(const std::string& file) { return std::string(XDQ_TEST_PLUGIN_DIR) + "/" + file; }

std::string load_error(const std::string& path) {
  PluginRegistry r;
  try {
    r.load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
}  // namespace

TEST(PluginLoading, GoodPluginLoadsWithDescriptorAndSchema) {
  PluginRegistry r;
  const PluginRecord& p = r.load(test_plugin("xdq_calibrator_test_fixed.so"));
  EXPECT_EQ(p.name, "test_fixed");
  EXPECT_EQ(p.kind, PluginKind::Calibrator);
  EXPECT_EQ(p.version, "0.1.0");
  ASSERT_EQ(p.options.size(), 1u);
  EXPECT_EQ(p.options[0].name, "value");
  // Loading the same file again returns the same record.
  EXPECT_EQ(&r.load(test_plugin("xdq_calibrator_test_fixed.so")), &p);
  auto cal = r.create<Calibrator>("test_fixed", Options({{"value", 2.0}}));
  auto obs = cal->make_observer(QuantSpec{});
  obs->observe(at::zeros({1}));
  obs->observe(at::zeros({1}));
  EXPECT_DOUBLE_EQ(obs->range().max, 4.0);
}

TEST(PluginLoading, WrongAbiIsRefusedNamingTheFile) {
  const std::string path = test_plugin("xdq_calibrator_test_bad_abi.so");
  const std::string e = load_error(path);
  EXPECT_TRUE(contains(e, path)) << e;
  EXPECT_TRUE(contains(e, "plugin ABI")) << e;
}

TEST(PluginLoading, PluginBuiltAgainstOtherSdkHeadersIsRefused) {
  const std::string path = test_plugin("xdq_calibrator_test_bad_hash.so");
  const std::string e = load_error(path);
  EXPECT_TRUE(contains(e, path)) << e;
  EXPECT_TRUE(contains(e, "other xdq plugin SDK headers (hash 0123456789abcdef, this xdq has " XDQ_PLUGIN_ABI_HASH ")"))
      << e;
}

// The hash follows the declarations a plugin compiles against: a field added to a struct that
// interfaces.h reaches through its includes changes it; a comment does not.
TEST(PluginLoading, AbiHashChangesWithTheSdkLayoutNotWithComments) {
  test::TempDir dir;
  auto hash_of = [&](const std::string& edit_from, const std::string& edit_to, const std::string& header = "quant/model_view.h") {
    const auto include = dir.path() / "include";
    std::filesystem::remove_all(include);
    std::filesystem::copy(std::string(XDQ_SOURCE_DIR) + "/core/include", include, std::filesystem::copy_options::recursive);
    const std::string view = (include / "xdq" / header).string();
    std::string text = test::read_text(view);
    if (!edit_from.empty()) {
      const auto at = text.find(edit_from);
      EXPECT_NE(at, std::string::npos) << edit_from;
      text.replace(at, edit_from.size(), edit_to);
    }
    test::write_text(view, text);
    const std::string out = dir.file("abi_hash.h");
    std::filesystem::remove(out);
    const auto r = test::run_command(std::string(XDQ_CMAKE_COMMAND) + " -DINCLUDE_DIR=" + include.string() + " -DROOTS=" +
                                     XDQ_SDK_HEADERS + " -DOUT=" + out + " -P " + XDQ_SOURCE_DIR + "/cmake/abi_hash.cmake");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return test::read_text(out);
  };
  const std::string original = hash_of("", "");
  EXPECT_NE(original.find(std::string("\"") + XDQ_PLUGIN_ABI_HASH + "\""), std::string::npos) << original;
  EXPECT_EQ(hash_of("struct RoundingContext {", "// a new comment\nstruct RoundingContext {"), original);
  EXPECT_NE(hash_of("  std::uint64_t seed = 0;", "  std::uint64_t seed = 0;\n  int added = 0;"), original);
  // A private member added to any class reachable from the SDK changes the hash, in every header of its
  // closure that has one; a header outside the SDK's reach does not.
  std::stringstream closure(XDQ_SDK_CLOSURE);
  int privates = 0;
  for (std::string header; std::getline(closure, header, ',');) {
    header = header.substr(4);  // "xdq/"
    if (test::read_text(std::string(XDQ_SOURCE_DIR) + "/core/include/xdq/" + header).find(" private:\n") == std::string::npos)
      continue;
    ++privates;
    EXPECT_NE(hash_of(" private:\n", " private:\n  int added_member_ = 0;\n", header), original) << header;
  }
  EXPECT_GE(privates, 5);
  EXPECT_EQ(hash_of("namespace xdq {\n", "namespace xdq {\nint outside_the_sdk();\n", "report/results_tables.h"), original);
  // The engine is not part of a plugin's ABI: plugins run graphs through GraphRun, which holds a pointer.
  EXPECT_EQ(hash_of(" private:\n", " private:\n  int added_member_ = 0;\n", "exec/executor.h"), original);
}

TEST(PluginLoading, WrongLibTorchIsRefused) {
  const std::string e = load_error(test_plugin("xdq_calibrator_test_bad_torch.so"));
  EXPECT_TRUE(contains(e, "LibTorch 0.0.1")) << e;
}

TEST(PluginLoading, MissingEntrySymbolIsRefused) {
  const std::string e = load_error(test_plugin("xdq_test_no_symbol.so"));
  EXPECT_TRUE(contains(e, "no 'xdq_plugin' entry symbol")) << e;
}

TEST(PluginLoading, NotALibraryOrMissingFile) {
  test::TempDir dir;
  test::write_text(dir.file("xdq_fake.so"), "not an ELF file");
  EXPECT_TRUE(contains(load_error(dir.file("xdq_fake.so")), "cannot load plugin library"));
  EXPECT_TRUE(contains(load_error(dir.file("absent.so")), "plugin library not found"));
}

TEST(PluginLoading, ThrowingPluginFailsItsCallNotTheProcess) {
  PluginRegistry r;
  const PluginRecord& p = r.load(test_plugin("xdq_calibrator_test_throws.so"));
  try {
    r.create<Calibrator>("test_throws", Options({{"fail_create", true}, {"fail_at_bits", std::int64_t{0}}, {"crash_on_batch", std::int64_t{0}}}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "plugin 'test_throws'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "factory exploded")) << e.what();
    EXPECT_TRUE(contains(e.what(), p.path)) << e.what();
  }
  auto cal = r.create<Calibrator>("test_throws", Options({{"fail_create", false}, {"fail_at_bits", std::int64_t{0}}, {"crash_on_batch", std::int64_t{0}}}));
  auto obs = cal->make_observer(QuantSpec{});
  try {
    plugin_call(p, "observe", [&] { obs->observe(at::zeros({1})); });
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "failed in observe: observer exploded")) << e.what();
  }
}

TEST(PluginLoading, ScanCollectsFailuresAndKeepsTheGoodOnes) {
  PluginRegistry r;
  const auto failures = r.scan({XDQ_TEST_PLUGIN_DIR, "/nonexistent/dir"});
  EXPECT_EQ(failures.size(), 4u);  // bad ABI, bad SDK header hash, bad LibTorch, no symbol
  EXPECT_NE(r.find(PluginKind::Calibrator, "test_fixed"), nullptr);
  EXPECT_NE(r.find(PluginKind::Calibrator, "test_throws"), nullptr);
}

TEST(PluginLoading, UnknownNameListsTheAvailableOnes) {
  PluginRegistry r;
  r.load(test_plugin("xdq_calibrator_test_fixed.so"));
  try {
    r.get(PluginKind::Calibrator, "nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "unknown calibrator 'nope' (available: test_fixed)")) << e.what();
  }
}

TEST(PluginLoading, ObjectKeepsItsLibraryLoadedAfterTheRegistryIsGone) {
  std::shared_ptr<Calibrator> cal;
  {
    PluginRegistry r;
    r.load(test_plugin("xdq_calibrator_test_fixed.so"));
    cal = r.create<Calibrator>("test_fixed", Options({{"value", 3.0}}));
  }
  auto obs = cal->make_observer(QuantSpec{});
  obs->observe(at::zeros({1}));
  EXPECT_DOUBLE_EQ(obs->range().min, -3.0);
}

TEST(ExamplePlugin, AbsMaxWithMargin) {
  PluginRegistry r;
  r.load(std::string(XDQ_BUILD_PLUGIN_DIR) + "/xdq_calibrator_absmax.so");
  auto cal = r.create<Calibrator>("absmax", Options({{"margin", 0.5}}));
  ActivationStatistics statistics;
  statistics.add(at::tensor({-3.0f, 1.0f}));
  statistics.add(at::tensor({2.0f}));
  EXPECT_DOUBLE_EQ(cal->range_from_statistics(statistics, QuantSpec{}).min, -1.5);
  EXPECT_DOUBLE_EQ(cal->range_from_statistics(statistics, QuantSpec{}).max, 1.5);
}
