#include "xdq/plugin/registry.h"

#include "xdq/files.h"

#include <dlfcn.h>
#include <exception>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

namespace xdq {

namespace fs = std::filesystem;

// Key functions: the interfaces' type information lives in xdq_core, one copy for host and plugins.
Plugin::~Plugin() = default;
RangeObserver::~RangeObserver() = default;
Calibrator::~Calibrator() = default;
// A calibrator overrides the one of these three that its input() names.
Range Calibrator::range_from_statistics(const ActivationStatistics&, const QuantSpec&) const {
  throw Error("input() is Statistics but range_from_statistics is not implemented");
}
std::unique_ptr<RangeObserver> Calibrator::make_observer(const QuantSpec&) const {
  throw Error("input() is Activations but make_observer is not implemented");
}
Range Calibrator::range_from_graph(const Graph&, int, const Range&) const {
  throw Error("input() is Graph but range_from_graph is not implemented");
}
WeightOptimizer::~WeightOptimizer() = default;
Synthesizer::~Synthesizer() = default;
GraphPass::~GraphPass() = default;
DomainTransform::~DomainTransform() = default;
Selector::~Selector() = default;
Scorer::~Scorer() = default;

namespace {
constexpr std::pair<PluginKind, const char*> kKindNames[] = {
    {PluginKind::Calibrator, "calibrator"},         {PluginKind::Synthesizer, "synthesizer"},
    {PluginKind::WeightOptimizer, "weight_optimizer"}, {PluginKind::GraphPass, "graph_pass"},
    {PluginKind::DomainTransform, "domain_transform"}, {PluginKind::Selector, "selector"},
    {PluginKind::Scorer, "scorer"}};
}  // namespace

const char* to_string(PluginKind kind) {
  for (const auto& [k, name] : kKindNames)
    if (k == kind) return name;
  return "?";
}

bool parse_plugin_kind(const char* text, PluginKind& kind) {
  for (const auto& [k, name] : kKindNames)
    if (text && std::strcmp(text, name) == 0) {
      kind = k;
      return true;
    }
  return false;
}

const PluginRecord* PluginRegistry::loaded(const fs::path& file) const {
  std::error_code ec;
  const std::string path = fs::canonical(file, ec).string();
  for (const auto& r : records_)
    if (!ec && r.path == path) return &r;
  return nullptr;
}

const PluginRecord& PluginRegistry::load(const std::string& path_in) {
  std::error_code ec;
  if (!fs::is_regular_file(path_in, ec)) throw Error(path_in + ": plugin library not found");
  if (const PluginRecord* r = loaded(path_in)) return *r;
  const std::string path = fs::canonical(path_in).string();

  auto library = std::make_shared<boost::dll::shared_library>();
  try {
    library->load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    throw Error(path + ": cannot load plugin library (" + e.what() + ")");
  }
  if (!library->has("xdq_plugin"))
    throw Error(path + ": not an xdq plugin (no 'xdq_plugin' entry symbol)");
  const PluginDescriptor* d = nullptr;
  try {
    d = &library->get_alias<PluginEntry>("xdq_plugin")();
  } catch (const std::exception& e) {
    throw Error(path + ": reading the plugin descriptor failed (" + std::string(e.what()) + ")");
  }
  const std::string name = d->name ? d->name : "?";
  const std::string who = path + ": plugin '" + name + "'";
  if (d->abi_version != kPluginAbiVersion)
    throw Error(who + " was built for xdq plugin ABI " + std::to_string(d->abi_version) + ", this xdq has ABI " +
                std::to_string(kPluginAbiVersion) + "; rebuild the plugin");
  if (!d->abi_hash || std::strcmp(d->abi_hash, XDQ_PLUGIN_ABI_HASH) != 0)
    throw Error(who + " was built against other xdq plugin SDK headers (hash " +
                std::string(d->abi_hash ? d->abi_hash : "?") + ", this xdq has " + XDQ_PLUGIN_ABI_HASH +
                "); rebuild the plugin");
  if (!d->torch_version || std::strcmp(d->torch_version, XDQ_TORCH_VERSION) != 0)
    throw Error(who + " was built against LibTorch " + std::string(d->torch_version ? d->torch_version : "?") +
                ", this xdq uses " + XDQ_TORCH_VERSION + "; rebuild the plugin");
  if (d->cxx11_abi != _GLIBCXX_USE_CXX11_ABI)
    throw Error(who + " was built with _GLIBCXX_USE_CXX11_ABI=" + std::to_string(d->cxx11_abi) + ", this xdq uses " +
                std::to_string(_GLIBCXX_USE_CXX11_ABI) + "; rebuild the plugin");
  PluginRecord record;
  if (!parse_plugin_kind(d->kind, record.kind))
    throw Error(who + " declares an unknown kind '" + std::string(d->kind ? d->kind : "") + "'");
  if (!d->create || !d->options) throw Error(who + " has no factory or option schema");
  record.name = name;
  record.version = d->version ? d->version : "";
  record.summary = d->summary ? d->summary : "";
  record.path = path;
  record.create = d->create;
  record.library = library;
  record.options = plugin_call(record, "options", [&] { return d->options(); });
  // Two libraries declaring one name: neither is used under that name (a built-in must not be replaced
  // silently, nor a user's plugin ignored); an experiment naming it is refused, naming both.
  for (const auto& other : records_)
    if (other.kind == record.kind && other.name == record.name) {
      auto& paths = conflicts_[{record.kind, record.name}];
      if (paths.empty()) paths.push_back(other.path);
      paths.push_back(path);
      throw Error(who + " (" + to_string(record.kind) + ") declares the same name as " + other.path +
                  "; an experiment that uses '" + name + "' is refused until one of them leaves the plugin path");
    }
  records_.push_back(std::move(record));
  return records_.back();
}

namespace {

// Opens files[first..] one after another in a child process, reporting on `out` the index of each before
// opening it; returns the index of the library whose opening ended the child (or files.size()).
std::size_t first_library_that_kills(const std::vector<fs::path>& files, std::size_t first) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return files.size();  // no probe possible: load as before
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return files.size();
  }
  if (pid == 0) {  // the child: it never returns into the caller's code, whatever a library does
    std::set_terminate([] { ::_exit(3); });
    ::close(pipe_fds[0]);
    for (std::size_t i = first; i < files.size(); ++i) {
      const std::uint64_t index = i;
      if (::write(pipe_fds[1], &index, sizeof index) != sizeof index) ::_exit(2);
      // dlopen is declared noexcept, so a try around a direct call would be compiled away; a throwing
      // static initializer unwinds through it all the same. The call goes through a pointer the
      // compiler cannot see into, so the catch stays.
      void* (*volatile open)(const char*, int) = &::dlopen;
      try {
        open(files[i].c_str(), RTLD_NOW | RTLD_LOCAL);
      } catch (...) {
        ::_exit(3);
      }
    }
    const std::uint64_t done = files.size();
    if (::write(pipe_fds[1], &done, sizeof done) != sizeof done) ::_exit(2);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::uint64_t last = files.size(), index = 0;
  // The child reports before each library; a child still running after 30 s is stopped and its
  // current library counted as the culprit.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
  for (;;) {
    const ssize_t n = ::read(pipe_fds[0], &index, sizeof index);
    if (n == sizeof index) {
      last = index;
      if (last == files.size()) break;
      continue;
    }
    if (n == 0) break;  // the child ended
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return clean ? files.size() : static_cast<std::size_t>(last);
}

}  // namespace

std::vector<std::string> PluginRegistry::scan(const std::vector<std::string>& dirs) {
  std::vector<std::string> failures;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string file = entry.path().filename().string();
      if (entry.is_regular_file() && file.rfind("xdq_", 0) == 0 && entry.path().extension() == ".so" &&
          !loaded(entry.path()))
        files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    // A library whose static initializer throws or crashes would end this process when opened: each not
    // yet loaded is opened in a child process first, and one that ends the child is reported and skipped.
    std::set<std::size_t> fatal;
    for (std::size_t from = 0; from < files.size();) {
      const std::size_t culprit = first_library_that_kills(files, from);
      if (culprit >= files.size()) break;
      fatal.insert(culprit);
      failures.push_back(files[culprit].string() + ": opening the plugin library ends the process (its static "
                         "initialization throws or crashes); not loaded");
      from = culprit + 1;
    }
    for (std::size_t i = 0; i < files.size(); ++i) {
      if (fatal.count(i)) continue;
      try {
        load(files[i].string());
      } catch (const Error& e) {
        failures.push_back(e.what());
      }
    }
  }
  return failures;
}

const PluginRecord* PluginRegistry::find(PluginKind kind, const std::string& name) const {
  if (conflicts_.count({kind, name})) return nullptr;
  for (const auto& r : records_)
    if (r.kind == kind && r.name == name) return &r;
  return nullptr;
}

std::vector<std::string> PluginRegistry::names(PluginKind kind) const {
  std::vector<std::string> out;
  for (const auto& r : records_)
    if (r.kind == kind) out.push_back(r.name);
  std::sort(out.begin(), out.end());
  return out;
}

std::string PluginRegistry::unknown_name_message(PluginKind kind, const std::string& name) const {
  if (const auto conflict = conflicts_.find({kind, name}); conflict != conflicts_.end()) {
    std::string paths;
    for (const auto& p : conflict->second) paths += (paths.empty() ? "" : " and ") + p;
    return std::string(to_string(kind)) + " '" + name + "' is declared by more than one library (" + paths +
           "); keep one of them on the plugin path";
  }
  std::string known;
  for (const auto& n : names(kind)) known += (known.empty() ? "" : ", ") + n;
  return std::string("unknown ") + to_string(kind) + " '" + name + "' (available: " +
         (known.empty() ? "none loaded" : known) + ")";
}

const PluginRecord& PluginRegistry::get(PluginKind kind, const std::string& name) const {
  if (const PluginRecord* r = find(kind, name)) return *r;
  throw Error(unknown_name_message(kind, name));
}

PluginRegistry& global_registry() {
  static PluginRegistry* registry = new PluginRegistry();  // intentionally leaked: never unload at exit
  return *registry;
}

std::vector<std::string> plugin_search_dirs(const std::vector<std::string>& extra) {
  std::vector<std::string> dirs = extra;
  if (const char* env = std::getenv("XDQ_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string dir; std::getline(ss, dir, ':');)
      if (!dir.empty()) dirs.push_back(dir);
  }
  // The plugins built with this library: <build>/plugins beside <build>/lib, or <prefix>/lib/xdq/plugins.
  const std::string lib = core_library_dir();
  if (!lib.empty())
    for (const auto& dir : {std::filesystem::path(lib).parent_path() / "plugins", std::filesystem::path(lib) / "xdq" / "plugins"})
      if (std::filesystem::is_directory(dir)) dirs.push_back(dir.string());
  return dirs;
}

}  // namespace xdq
