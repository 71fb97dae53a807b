// Every test starts from the same random state: LibTorch's C++ default generator is seeded from the system
// otherwise, so a test's random inputs (at::randn without a seed of its own) would change from run to run.
#include <gtest/gtest.h>

#include <ATen/Context.h>

namespace {

class SeedEachTest : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override { at::manual_seed(0); }
};

const bool kSeeded = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new SeedEachTest);
  return true;
}();

}  // namespace
