// Test plugins with a mismatching descriptor header: built three times, with a foreign xdq plugin ABI
// (XDQ_TEST_BAD_ABI), with a foreign hash of the SDK headers (XDQ_TEST_BAD_HASH: what a plugin compiled
// against changed headers carries) and with a foreign LibTorch version (otherwise).
#include "xdq/plugin/interfaces.h"

namespace {
xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return nullptr; }
}  // namespace

namespace xdq_plugin_entry {
const xdq::PluginDescriptor& descriptor() {
#if defined(XDQ_TEST_BAD_ABI)
  static const xdq::PluginDescriptor d{xdq::kPluginAbiVersion + 100, XDQ_PLUGIN_ABI_HASH, XDQ_TORCH_VERSION,
                                       _GLIBCXX_USE_CXX11_ABI, "calibrator", "test_bad_abi", "0.1.0", "test", schema, create};
#elif defined(XDQ_TEST_BAD_HASH)
  static const xdq::PluginDescriptor d{xdq::kPluginAbiVersion, "0123456789abcdef", XDQ_TORCH_VERSION,
                                       _GLIBCXX_USE_CXX11_ABI, "calibrator", "test_bad_hash", "0.1.0", "test", schema, create};
#else
  static const xdq::PluginDescriptor d{xdq::kPluginAbiVersion, XDQ_PLUGIN_ABI_HASH, "0.0.1", _GLIBCXX_USE_CXX11_ABI,
                                       "calibrator", "test_bad_torch", "0.1.0", "test", schema, create};
#endif
  return d;
}
}  // namespace xdq_plugin_entry
BOOST_DLL_ALIAS(xdq_plugin_entry::descriptor, xdq_plugin)
