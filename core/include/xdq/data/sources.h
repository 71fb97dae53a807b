#pragma once
// The named data sources an experiment can use for calibration and testing.
#include <string>
#include <vector>

#include "xdq/data/dataset.h"

namespace xdq {

struct DataLocations {
  std::string fashion_mnist;  // empty: $XDQ_FASHION_MNIST_DIR or the Debian package's folder
};

const std::vector<std::string>& known_sources();
bool is_known_source(const std::string& name);
Dataset load_source(const std::string& name, const DataLocations& where);

}  // namespace xdq
