// The layer order of core/ (docs/architecture.md), checked on the sources: a file may include xdq
// headers of its own layer or of layers below it, never above, and two modules of one layer never include
// each other. Lowest first:
//   base (error, hash, parallel, progress, optim, config/) -> ir -> exec -> quant -> data, analysis, train, export
//   -> plugin (the SDK interfaces) -> synthesis -> experiment (config, plan, pipeline, runner, results)
//   -> report (every rendering: tables, JSON, CSV, markdown, PNG) -> commands (run, analyze, export into a
//   folder) -> cli
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fs = std::filesystem;

namespace {

// The layer of a path relative to core/include/xdq or core/src; -1 when the path is in no layer.
int layer_of(const std::string& path) {
  static const std::vector<std::pair<std::string, int>> layers = {
      {"error.", 0},       {"hash.", 0},      {"files.", 0},      {"parallel.", 0},   {"progress.", 0},  {"optim.", 0},  {"statistics.", 0}, {"vector_clones.", 0}, {"vector_math.", 0},
      {"config/", 0},       {"ir/", 1},        {"exec/", 2},       {"quant/", 3},     {"data/", 4},
      {"analysis/", 4},     {"train/", 4},     {"export/", 4},     {"plugin/", 5},     {"synthesis/", 6}, {"select/", 6}, {"experiment/", 7}, {"report/", 8},
      {"commands/", 9}};
  for (const auto& [prefix, layer] : layers)
    if (path.rfind(prefix, 0) == 0) return layer;
  return -1;
}

struct Violation {
  std::string file, include;
};

std::vector<Violation> violations_under(const fs::path& root, int& files_checked) {
  std::vector<Violation> out;
  static const std::regex include_line(R"re(^\s*#\s*include\s*"xdq/([^"]+)")re");
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), root).string();
    const int own = layer_of(rel);
    EXPECT_GE(own, 0) << "core file in no layer (add it to the order): " << entry.path();
    ++files_checked;
    std::ifstream in(entry.path());
    std::string line;
    std::smatch m;
    while (std::getline(in, line))
      if (std::regex_search(line, m, include_line)) {
        const int used = layer_of(m[1].str());
        if (used < 0 && (m[1].str() == "abi_hash.h" || m[1].str() == "version.h")) continue;  // generated, no includes
        if (used < 0 || used > own) out.push_back({entry.path().string(), m[1].str()});
      }
  }
  return out;
}

}  // namespace

TEST(Layering, NoCoreFileIncludesALayerAboveItsOwn) {
  int files = 0;
  std::vector<Violation> all;
  for (const char* dir : {"/core/include/xdq", "/core/src"}) {
    const auto v = violations_under(fs::path(XDQ_SOURCE_DIR + std::string(dir)), files);
    all.insert(all.end(), v.begin(), v.end());
  }
  EXPECT_GT(files, 60);
  for (const auto& v : all) ADD_FAILURE() << v.file << " includes xdq/" << v.include << ", a layer above its own";
}

// Within a layer the modules (a header and its source, e.g. experiment/plan.{h,cpp}) depend one way: no
// two include each other. A module is its folder and file stem; "pipeline.h" in core/src/experiment is
// experiment/pipeline, "xdq/experiment/plan.h" is experiment/plan.
std::map<std::string, std::set<std::string>> module_includes() {
  static const std::regex include_line(R"re(^\s*#\s*include\s*"(xdq/)?([^"]+)\.h")re");
  std::map<std::string, std::set<std::string>> uses;
  for (const char* dir : {"/core/include/xdq", "/core/src"}) {
    const fs::path root = XDQ_SOURCE_DIR + std::string(dir);
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      if (!entry.is_regular_file()) continue;
      const fs::path rel = fs::relative(entry.path(), root);
      const std::string folder = rel.parent_path().string(), module = (rel.parent_path() / rel.stem()).string();
      std::ifstream in(entry.path());
      std::smatch m;
      for (std::string line; std::getline(in, line);)
        if (std::regex_search(line, m, include_line)) {
          const std::string used = m[1].matched ? m[2].str() : (fs::path(folder) / m[2].str()).string();
          if (used != module) uses[module].insert(used);
        }
    }
  }
  return uses;
}

TEST(Layering, NoTwoModulesOfALayerIncludeEachOther) {
  const auto uses = module_includes();
  EXPECT_GT(uses.size(), 40u);
  EXPECT_TRUE(uses.at("experiment/runner").count("experiment/pipeline"));  // the table reads both kinds of include
  for (const auto& [module, used] : uses)
    for (const std::string& other : used)
      if (module < other && uses.count(other) && uses.at(other).count(module))
        ADD_FAILURE() << module << " and " << other << " include each other (one must depend on the other only)";
}

TEST(Layering, TheCheckFindsAnUpwardInclude) {
  // A quant header that includes the plugin SDK (the cycle this order forbids) and an ir file that
  // includes data: both are found; quant including ir is not.
  const fs::path root = fs::temp_directory_path() / ("xdq_layering_" + std::to_string(::getpid()));
  fs::create_directories(root / "quant");
  fs::create_directories(root / "ir");
  std::ofstream(root / "quant/x.h") << "#include \"xdq/ir/graph.h\"\n#include \"xdq/plugin/interfaces.h\"\n";
  std::ofstream(root / "ir/y.cpp") << "  #include \"xdq/data/dataset.h\"\n";
  int files = 0;
  const auto found = violations_under(root, files);
  fs::remove_all(root);
  EXPECT_EQ(files, 2);
  ASSERT_EQ(found.size(), 2u);
  std::vector<std::string> includes{found[0].include, found[1].include};
  std::sort(includes.begin(), includes.end());
  EXPECT_EQ(includes, (std::vector<std::string>{"data/dataset.h", "plugin/interfaces.h"}));
}

// Functions stay short enough to read at once: no function body in core/, the plugins, the Python module
// or the benchmarks over 80 lines. Class bodies are looked into (their methods count, not the class).
TEST(Layering, NoFunctionIsLongerThan80Lines) {
  std::vector<std::string> too_long;
  int functions = 0;
  for (const char* dir : {"/core/src", "/core/cli", "/plugins", "/python/src", "/bench"})
    for (const auto& entry : fs::recursive_directory_iterator(XDQ_SOURCE_DIR + std::string(dir))) {
      if (entry.path().extension() != ".cpp") continue;
      std::ifstream in(entry.path());
      std::vector<std::string> lines;
      for (std::string line; std::getline(in, line);) lines.push_back(line);
      // Brace depth per line, outside strings and comments; a block opened at container depth by a
      // namespace, class or struct line is a container, any other block a function body.
      std::vector<bool> container_stack;  // for each open brace: does it open a container?
      int function_start = -1;
      for (std::size_t i = 0; i < lines.size(); ++i) {
        std::string code = std::regex_replace(lines[i], std::regex(R"re(//.*$)re"), "");
        code = std::regex_replace(code, std::regex(R"re("(\\.|[^"\\])*"|'(\\.|[^'\\])*')re"), "\"\"");
        for (char ch : code) {
          const bool in_function = function_start >= 0;
          if (ch == '{') {
            const bool container = !in_function && std::regex_search(lines[i], std::regex(R"re(^\s*(namespace|class|struct)\b|^\s*(template\s*<.*>\s*)?(class|struct)\b)re"));
            if (!in_function && !container) function_start = static_cast<int>(i);
            container_stack.push_back(container);
          } else if (ch == '}') {
            if (container_stack.empty()) continue;
            container_stack.pop_back();
            const bool back_to_container =
                std::all_of(container_stack.begin(), container_stack.end(), [](bool c) { return c; });
            if (function_start >= 0 && back_to_container) {
              ++functions;
              const int length = static_cast<int>(i) - function_start + 1;
              if (length > 80)
                too_long.push_back(entry.path().string() + ":" + std::to_string(function_start + 1) + " (" +
                                   std::to_string(length) + " lines)");
              function_start = -1;
            }
          }
        }
      }
    }
  EXPECT_GT(functions, 300);
  for (const auto& f : too_long) ADD_FAILURE() << "function over 80 lines: " << f;
}

namespace {

std::vector<std::string> sdk_headers() {
  std::vector<std::string> out;
  std::stringstream list(XDQ_SDK_HEADERS);
  for (std::string h; std::getline(list, h, ',');) out.push_back(h);
  return out;
}

}  // namespace

// A plugin (in tree, a test plugin, the out-of-tree example) includes only the SDK's headers: what the
// ABI hash covers.
TEST(Layering, PluginsIncludeOnlyTheSdkHeaders) {
  const std::vector<std::string> sdk = sdk_headers();
  static const std::regex include_line(R"re(^\s*#\s*include\s*"(xdq/[^"]+)")re");
  int files = 0;
  for (const char* dir : {"/plugins", "/tests/plugins", "/tests/out_of_tree"})
    for (const auto& entry : fs::recursive_directory_iterator(XDQ_SOURCE_DIR + std::string(dir))) {
      if (!entry.is_regular_file() || (entry.path().extension() != ".cpp" && entry.path().extension() != ".h")) continue;
      ++files;
      std::ifstream in(entry.path());
      std::smatch m;
      for (std::string line; std::getline(in, line);)
        if (std::regex_search(line, m, include_line) && std::find(sdk.begin(), sdk.end(), m[1].str()) == sdk.end())
          ADD_FAILURE() << entry.path() << " includes " << m[1].str() << ", outside the plugin SDK (XDQ_SDK_HEADERS)";
    }
  EXPECT_GT(files, 30);
}

// Each plugin option is declared once (xdq::Option: name, default, range, doc) and read through that
// declaration: no plugin, and no reader of a plugin family's options, reads one by a name string.
TEST(Layering, PluginOptionsAreReadThroughTheirDeclaration) {
  static const std::regex read_by_name(R"re(\.(number|integer|flag|text)\(")re");
  int files = 0;
  const auto check = [&](const fs::path& file) {
    ++files;
    std::ifstream in(file);
    int line_no = 0;
    for (std::string line; std::getline(in, line);)
      if (++line_no, std::regex_search(line, read_by_name))
        ADD_FAILURE() << file.string() << ":" << line_no << " reads an option by its name: " << line;
  };
  for (const char* dir : {"/plugins", "/tests/plugins", "/tests/out_of_tree"})
    for (const auto& entry : fs::recursive_directory_iterator(XDQ_SOURCE_DIR + std::string(dir)))
      if (entry.is_regular_file() && entry.path().extension() == ".cpp") check(entry.path());
  for (const char* family : {"/core/src/quant/reconstruction.cpp", "/core/src/synthesis/synthesis.cpp"})
    check(XDQ_SOURCE_DIR + std::string(family));
  EXPECT_GT(files, 40);
}

// docs/architecture.md's layer list (its "## Layers" block, lowest first) names the layers of the
// table above in the same order: the document describes the code as the check enforces it.
TEST(Layering, TheArchitectureDocumentListsTheSameLayers) {
  std::ifstream in(XDQ_SOURCE_DIR + std::string("/docs/architecture.md"));
  std::vector<std::string> doc_layers;
  bool in_block = false, seen_heading = false;
  for (std::string line; std::getline(in, line);) {
    if (line == "## Layers") {
      seen_heading = true;
    } else if (seen_heading && line.rfind("```", 0) == 0) {
      if (in_block) break;  // the block's end
      in_block = true;
    } else if (in_block && !line.empty() && line[0] != ' ') {
      // The name ends at two spaces; "data | analysis | train | export" names four.
      std::stringstream names(std::regex_replace(line.substr(0, line.find("  ")), std::regex(" \\| "), "|"));
      for (std::string name; std::getline(names, name, '|');) doc_layers.push_back(name);
    }
  }
  // The table's layer of each documented name ("plugin SDK" is plugin/, base the files of layer 0).
  std::vector<int> order;
  for (const std::string& name : doc_layers) {
    if (name == "cli" || name == "python") continue;  // above commands; outside core's table
    const std::string first = name.substr(0, name.find(' '));
    const int layer = first == "base" ? 0 : layer_of(first + "/");
    EXPECT_GE(layer, 0) << "docs/architecture.md names layer '" << name << "', which the table does not have";
    order.push_back(layer);
  }
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end())) << "docs/architecture.md lists the layers in another order";
  for (int layer = 0; layer <= 9; ++layer)
    EXPECT_NE(std::find(order.begin(), order.end(), layer), order.end()) << "layer " << layer << " is missing from the document";
  EXPECT_GE(doc_layers.size(), 14u);
}
