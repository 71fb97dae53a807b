// Test plugins with a mismatching descriptor header: built twice, once with a foreign xdq plugin ABI
// (XDQ_TEST_BAD_ABI) and once with a foreign LibTorch version (XDQ_TEST_BAD_TORCH).
#include "xdq/plugin/interfaces.h"

namespace {
xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return nullptr; }
}  // namespace

namespace xdq_plugin_entry {
const xdq::PluginDescriptor& descriptor() {
#if defined(XDQ_TEST_BAD_ABI)
  static const xdq::PluginDescriptor d{xdq::kPluginAbiVersion + 100, XDQ_TORCH_VERSION, _GLIBCXX_USE_CXX11_ABI,
                                       "calibrator", "test_bad_abi", "0.1.0", "test", schema, create};
#else
  static const xdq::PluginDescriptor d{xdq::kPluginAbiVersion, "0.0.1", _GLIBCXX_USE_CXX11_ABI,
                                       "calibrator", "test_bad_torch", "0.1.0", "test", schema, create};
#endif
  return d;
}
}  // namespace xdq_plugin_entry
BOOST_DLL_ALIAS(xdq_plugin_entry::descriptor, xdq_plugin)
