#pragma once
// The one error type of xdq. Messages are single lines that name where the problem is:
// a config file with line and key path, a model or data file, or a plugin and its library path.
#include <stdexcept>
#include <string>

namespace xdq {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace xdq
