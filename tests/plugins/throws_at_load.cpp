// Test plugin whose static initializer throws while the library is being opened: the host must warn,
// naming the file, and go on without it.
#include <stdexcept>

#include "xdq/plugin/interfaces.h"

namespace {
struct ThrowsAtLoad {
  ThrowsAtLoad() { throw std::runtime_error("static initializer exploded"); }
} throws_at_load;

class Never : public xdq::Calibrator {};
xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Never(); }
}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "test_throws_at_load", "0.1.0", "test: throws while loading", schema, create)
