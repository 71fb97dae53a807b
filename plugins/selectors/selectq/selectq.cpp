// selectq: SelectQ's calibration data selection (Zhang et al., 2024), as its paper describes it: the
// per-channel mean activation of every quantized layer's input is a per-image statistic; each layer's
// statistics (standardized over the pool) are clustered with k-means; an image's knowledge distance is
// the sum over layers of its distance to its cluster's centroid, each layer's distances divided by their
// pool mean. The chosen images are those nearest their centroids: each cluster of the deepest layer gives
// a share proportional to its size (largest remainders), its images of smallest knowledge distance first.
// k-means: k-means++ seeding from the seed, then Lloyd iterations.
#include <algorithm>
#include <numeric>

#include "xdq/select/selection.h"

namespace {

struct Clustering {
  at::Tensor assignment;  // [N] cluster of each row
  at::Tensor distance;    // [N] distance to its centroid
};

at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& centroids) {
  return (x.pow(2).sum(1, true) - 2 * at::mm(x, centroids.t()) + centroids.pow(2).sum(1).unsqueeze(0)).clamp_min(0);
}

Clustering kmeans(const at::Tensor& x, std::int64_t k, int iterations, at::Generator& gen) {
  const std::int64_t n = x.size(0);
  k = std::min(k, n);
  std::vector<std::int64_t> seeds{at::randint(n, {1}, gen).item<std::int64_t>()};
  at::Tensor nearest = (x - x[seeds[0]]).pow(2).sum(1);
  while (static_cast<std::int64_t>(seeds.size()) < k) {  // k-means++: drawn in proportion to D²
    const at::Tensor p = nearest.sum().item<double>() > 0 ? nearest : at::ones_like(nearest);
    seeds.push_back(at::multinomial(p, 1, false, gen).item<std::int64_t>());
    nearest = at::minimum(nearest, (x - x[seeds.back()]).pow(2).sum(1));
  }
  at::Tensor centroids = x.index_select(0, at::tensor(seeds, at::kLong)).clone();
  at::Tensor assignment;
  for (int it = 0; it < iterations; ++it) {
    assignment = squared_distances(x, centroids).argmin(1);
    at::Tensor sums = at::zeros_like(centroids).index_add_(0, assignment, x);
    const at::Tensor counts = at::bincount(assignment, {}, k).to(x.scalar_type()).unsqueeze(1);
    // An empty cluster keeps its centroid.
    centroids = at::where(counts.gt(0), sums / counts.clamp_min(1), centroids);
  }
  const at::Tensor d = squared_distances(x, centroids);
  assignment = d.argmin(1);
  return {assignment, d.gather(1, assignment.unsqueeze(1)).squeeze(1).sqrt()};
}

class SelectQ : public xdq::Selector {
 public:
  SelectQ(std::int64_t clusters, int iterations) : clusters_(clusters), iterations_(iterations) {}
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    xdq::FeatureRequest request;
    request.layer_inputs = true;
    const xdq::PoolFeatures f = xdq::pool_features(context, request);
    auto gen = at::detail::createCPUGenerator(context.seed);
    const std::int64_t n = context.pool.size();
    at::Tensor knowledge = at::zeros({n}, at::kDouble);
    Clustering deepest;
    for (const xdq::SiteFeatures& s : f.layer_inputs) {
      const at::Tensor x = s.mean.to(at::kDouble);
      const at::Tensor z = (x - x.mean(0)) / x.std(0, false).clamp_min(1e-12);
      deepest = kmeans(z, clusters_, iterations_, gen);
      knowledge += deepest.distance / deepest.distance.mean().clamp_min(1e-30);
    }
    xdq::Selection out;
    out.indices = nearest_per_cluster(deepest.assignment, knowledge, context.count);
    out.measures["knowledge_distance"] =
        knowledge.index_select(0, at::tensor(out.indices, at::kLong)).mean().item<double>();
    out.measures["knowledge_distance_pool"] = knowledge.mean().item<double>();
    return out;
  }

 private:
  // Shares proportional to cluster sizes (largest remainders, ties to the lower cluster); in each cluster
  // the rows of smallest knowledge distance.
  static std::vector<std::int64_t> nearest_per_cluster(const at::Tensor& assignment, const at::Tensor& knowledge,
                                                       std::int64_t count) {
    const std::int64_t n = assignment.size(0), k = assignment.max().item<std::int64_t>() + 1;
    std::vector<std::vector<std::int64_t>> members(static_cast<std::size_t>(k));
    const auto* a = assignment.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < n; ++i) members[static_cast<std::size_t>(a[i])].push_back(i);
    std::vector<std::int64_t> share(static_cast<std::size_t>(k));
    std::vector<std::pair<double, std::size_t>> remainders;
    std::int64_t given = 0;
    for (std::size_t c = 0; c < members.size(); ++c) {
      const double exact = static_cast<double>(count) * static_cast<double>(members[c].size()) / static_cast<double>(n);
      share[c] = static_cast<std::int64_t>(exact);
      given += share[c];
      remainders.push_back({-(exact - static_cast<double>(share[c])), c});
    }
    std::sort(remainders.begin(), remainders.end());
    for (std::size_t r = 0; given < count; r = (r + 1) % remainders.size()) {
      const std::size_t c = remainders[r].second;
      if (share[c] < static_cast<std::int64_t>(members[c].size())) ++share[c], ++given;
    }
    const auto* kd = knowledge.data_ptr<double>();
    std::vector<std::int64_t> out;
    for (std::size_t c = 0; c < members.size(); ++c) {
      auto& m = members[c];
      std::stable_sort(m.begin(), m.end(), [&](std::int64_t x, std::int64_t y) { return kd[x] < kd[y]; });
      out.insert(out.end(), m.begin(), m.begin() + share[c]);
    }
    return out;
  }

  std::int64_t clusters_;
  int iterations_;
};

const xdq::Option<std::int64_t> kClusters =
    xdq::OptionSpec::integer("clusters", 10, "k-means clusters per layer").range(1, 100000);
const xdq::Option<std::int64_t> kIterations =
    xdq::OptionSpec::integer("iterations", 20, "Lloyd iterations per layer").range(1, 10000);
xdq::OptionSchema schema() { return {kClusters.spec(), kIterations.spec()}; }
xdq::Plugin* create(const xdq::Options& o) {
  return new SelectQ(kClusters(o), static_cast<int>(kIterations(o)));
}

}  // namespace

XDQ_PLUGIN(xdq::Selector, "selectq", "1.0.0", "layer-wise k-means of activation statistics, nearest to centroids (SelectQ)", schema, create)
