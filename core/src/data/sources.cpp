#include "xdq/data/sources.h"

#include <algorithm>

#include "xdq/data/fashion_mnist.h"
#include "xdq/error.h"

namespace xdq {

const std::vector<std::string>& known_sources() {
  static const std::vector<std::string> sources = {"fashion_mnist.train", "fashion_mnist.test"};
  return sources;
}

bool is_known_source(const std::string& name) {
  const auto& known = known_sources();
  return std::find(known.begin(), known.end(), name) != known.end();
}

Dataset load_source(const std::string& name, const DataLocations& where) {
  const std::string dir = fashion_mnist_dir(where.fashion_mnist);
  if (name == "fashion_mnist.train") return load_fashion_mnist(dir, Split::Train);
  if (name == "fashion_mnist.test") return load_fashion_mnist(dir, Split::Test);
  throw Error("unknown data source '" + name + "'");
}

}  // namespace xdq
