#pragma once
// Loads plugin libraries, checks their descriptors, validates options against their schemas and creates
// plugin objects. Every object keeps its library loaded (its deleter holds the library); the process-wide
// registry is never destroyed, so no library is unloaded at exit.
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace xdq {

struct PluginRecord {
  PluginKind kind = PluginKind::Calibrator;
  std::string name, version, summary, path;
  OptionSchema options;
  Plugin* (*create)(const Options&) = nullptr;
  std::shared_ptr<void> library;  // the loaded boost::dll::shared_library
};

// A plugin chosen by name with validated options (an experiment's list item, or a Python argument).
struct PluginChoice {
  std::string name;
  std::string label;  // unique within its list: name, or the config's `label`
  Options options;
};

// The exception barrier, written once: whatever a plugin throws becomes an xdq::Error naming the plugin,
// its library and the call. Everything else reaches plugins through Loaded<T>::call.
template <class F>
auto plugin_call(const PluginRecord& plugin, const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    throw Error(std::string("plugin '") + plugin.name + "' (" + plugin.path + ") failed in " + what + ": " + e.what());
  } catch (...) {
    throw Error(std::string("plugin '") + plugin.name + "' (" + plugin.path + ") failed in " + what +
                ": unknown exception");
  }
}

// A plugin object with its record: the only way the core calls into a plugin. `call(what, f)` runs
// f(object) behind the barrier; the object keeps its library loaded.
template <class Interface>
class Loaded {
 public:
  Loaded(const PluginRecord& record, std::shared_ptr<Interface> object) : record_(&record), object_(std::move(object)) {}

  template <class F>
  auto call(const char* what, F&& f) const -> decltype(f(std::declval<const Interface&>())) {
    return plugin_call(*record_, what, [&]() -> decltype(auto) { return f(static_cast<const Interface&>(*object_)); });
  }
  const PluginRecord& record() const { return *record_; }
  const std::string& name() const { return record_->name; }

 private:
  const PluginRecord* record_;
  std::shared_ptr<Interface> object_;
};

class PluginRegistry {
 public:
  // Loads one library. Errors name the path: missing file, not loadable, no entry symbol, or a
  // descriptor built for another xdq ABI / SDK headers / LibTorch version / C++11 ABI. Loading the same
  // file twice returns the first record; the same kind and name from another file is an error, and from
  // then on that name is unusable (find() gives null, get() and unknown_name_message name both files).
  const PluginRecord& load(const std::string& path);

  // Loads every xdq_*.so in `dirs` (missing dirs are skipped). Returns one line per library that failed.
  std::vector<std::string> scan(const std::vector<std::string>& dirs);

  const PluginRecord* find(PluginKind kind, const std::string& name) const;
  // Like find, but an unknown name is an Error listing the names of that kind that exist.
  const PluginRecord& get(PluginKind kind, const std::string& name) const;
  const std::deque<PluginRecord>& records() const { return records_; }
  std::vector<std::string> names(PluginKind kind) const;
  std::string unknown_name_message(PluginKind kind, const std::string& name) const;

  // Makes and discards an object: options that only the factory can check are refused before any work.
  void try_create(const PluginRecord& plugin, const Options& options) const {
    delete plugin_call(plugin, "create", [&] { return plugin.create(options); });
  }

  // `name` with its default options, as a list item naming only the plugin chooses it.
  PluginChoice default_choice(PluginKind kind, const std::string& name) const {
    return {name, name, default_options(get(kind, name).options)};
  }

  // A plugin object made by its factory from validated options.
  template <class Interface>
  Loaded<Interface> load(const std::string& name, const Options& options) const {
    return Loaded<Interface>(get(PluginKindOf<Interface>::value, name), create<Interface>(name, options));
  }

  template <class Interface>
  std::shared_ptr<Interface> create(const std::string& name, const Options& options) const {
    const PluginRecord& plugin = get(PluginKindOf<Interface>::value, name);
    Plugin* raw = plugin_call(plugin, "create", [&] { return plugin.create(options); });
    auto* typed = dynamic_cast<Interface*>(raw);
    if (!typed) {
      delete raw;
      throw Error("plugin '" + name + "' (" + plugin.path + ") did not create a " + to_string(plugin.kind));
    }
    std::shared_ptr<void> library = plugin.library;
    return std::shared_ptr<Interface>(typed, [library](Interface* p) { delete p; });
  }

 private:
  // The record of the library at `file` (any path to it), or null when it is not loaded.
  const PluginRecord* loaded(const std::filesystem::path& file) const;

  std::deque<PluginRecord> records_;
  std::map<std::pair<PluginKind, std::string>, std::vector<std::string>> conflicts_;  // name -> its libraries
};

// The process-wide registry (never destroyed).
PluginRegistry& global_registry();

// Where plugins are searched: `extra` (from the experiment file) first, then $XDQ_PLUGIN_PATH
// (colon-separated), then the plugins built with xdq: <build>/plugins, or <prefix>/lib/xdq/plugins in an
// installed tree (both found from libxdq_core.so's folder).
std::vector<std::string> plugin_search_dirs(const std::vector<std::string>& extra = {});

}  // namespace xdq
