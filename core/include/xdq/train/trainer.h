#pragma once
// `xdq train RECIPE.yaml`: trains a zoo model in C++ and saves it as standard TorchScript, with the
// training log beside it.
#include <string>
#include <vector>

namespace xdq {

struct TrainSummary {
  double test_top1 = 0.0;
  double seconds = 0.0;
  std::string model_path;
};

// Paths inside the recipe are relative to the recipe file. `overrides` are "key=value" pairs (--set).
TrainSummary train_from_recipe(const std::string& recipe_path, const std::vector<std::string>& overrides = {});

}  // namespace xdq
