#pragma once
// The plugin ABI. A plugin library exports one entry symbol, `xdq_plugin`, returning a descriptor. The
// host reads the descriptor's header (xdq plugin ABI, LibTorch version, C++11 string ABI, hash of the
// SDK headers) before anything else and refuses a mismatch with a message naming the file; only then it
// reads the schema and calls the factory. Registration is explicit: nothing runs at library load.
//
//   XDQ_PLUGIN(xdq::Calibrator, "kl", "1.0.0", "TensorRT entropy calibration", schema, create)
//
// where `schema` is `xdq::OptionSchema()` and `create` is `xdq::Plugin*(const xdq::Options&)`.
#include <cstdint>

#include <boost/config.hpp>
#include <boost/dll/alias.hpp>
#include <torch/version.h>

#include "xdq/abi_hash.h"
#include "xdq/config/options.h"

namespace xdq {

// For humans: bumped with releases that change the plugin interfaces. What guards the layout is
// XDQ_PLUGIN_ABI_HASH (generated at build time from the SDK headers, cmake/abi_hash.cmake): any change to
// interfaces.h or a header it includes changes it, and plugins built before are refused.
constexpr std::uint32_t kPluginAbiVersion = 6;

#define XDQ_STRINGIFY_(x) #x
#define XDQ_STRINGIFY(x) XDQ_STRINGIFY_(x)
#define XDQ_TORCH_VERSION \
  XDQ_STRINGIFY(TORCH_VERSION_MAJOR) "." XDQ_STRINGIFY(TORCH_VERSION_MINOR) "." XDQ_STRINGIFY(TORCH_VERSION_PATCH)

enum class PluginKind { Calibrator, Synthesizer, WeightOptimizer, GraphPass, DomainTransform, Selector, Scorer };
const char* to_string(PluginKind kind);
// "calibrator" -> PluginKind; false when unknown.
bool parse_plugin_kind(const char* text, PluginKind& kind);

// Base of every plugin object; interfaces derive from it so the host can check the kind with dynamic_cast.
class BOOST_SYMBOL_VISIBLE Plugin {
 public:
  virtual ~Plugin();
};

struct PluginDescriptor {
  // Header: checked in this order; abi_version is read first and its place never moves.
  std::uint32_t abi_version;
  const char* abi_hash;  // XDQ_PLUGIN_ABI_HASH the plugin was compiled with
  const char* torch_version;
  int cxx11_abi;
  const char* kind;  // "calibrator", "synthesizer", "weight_optimizer", "graph_pass", "domain_transform", "selector",
                     // "scorer"
  const char* name;
  const char* version;
  const char* summary;
  // Body: trusted only when the header matches the host.
  OptionSchema (*options)();
  Plugin* (*create)(const Options& options);
};

using PluginEntry = const PluginDescriptor&();

template <class Interface>
struct PluginKindOf;

}  // namespace xdq

#define XDQ_PLUGIN(INTERFACE, NAME, VERSION, SUMMARY, SCHEMA_FN, CREATE_FN)                                   \
  namespace xdq_plugin_entry {                                                                                  \
  const ::xdq::PluginDescriptor& descriptor() {                                                                 \
    static const ::xdq::PluginDescriptor d{::xdq::kPluginAbiVersion, XDQ_PLUGIN_ABI_HASH, XDQ_TORCH_VERSION,   \
                                           _GLIBCXX_USE_CXX11_ABI,                                              \
                                           ::xdq::to_string(::xdq::PluginKindOf<INTERFACE>::value), NAME,       \
                                           VERSION, SUMMARY, SCHEMA_FN, CREATE_FN};                             \
    return d;                                                                                                   \
  }                                                                                                             \
  }                                                                                                             \
  BOOST_DLL_ALIAS(xdq_plugin_entry::descriptor, xdq_plugin)
