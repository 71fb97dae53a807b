#pragma once
// The one error type of xdq. Messages are single lines that name where the problem is:
// a config file with line and key path, a model or data file, or a plugin and its library path.
#include <stdexcept>
#include <string>
#include <vector>

namespace xdq {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An Error in what was asked (the config, the command line) found only once work began, e.g. an
// override naming a layer the model lacks: the command line exits with status 2, as for a config error.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// "a, b, c": the `count` candidates closest to `name` by edit distance, for "no X named ...; closest: ..." messages.
std::string closest_names(const std::string& name, const std::vector<std::string>& candidates, std::size_t count = 3);

}  // namespace xdq
