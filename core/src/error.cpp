#include "xdq/error.h"

#include <algorithm>

namespace xdq {

namespace {
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string closest_names(const std::string& name, const std::vector<std::string>& candidates, std::size_t count) {
  std::vector<std::pair<std::size_t, std::string>> ranked;
  for (const auto& c : candidates) ranked.emplace_back(edit_distance(name, c), c);
  std::sort(ranked.begin(), ranked.end());
  std::string out;
  for (std::size_t k = 0; k < std::min(count, ranked.size()); ++k) out += (k ? ", " : "") + ranked[k].second;
  return out;
}

}  // namespace xdq
