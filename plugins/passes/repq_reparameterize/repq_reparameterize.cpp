// repq_reparameterize (RepQ-ViT, Li et al., ICCV 2023: scale reparameterization of post-LayerNorm
// activations). A LayerNorm's output varies strongly from channel to channel, so RepQ-ViT calibrates it per
// channel and folds the channel grids into one per-tensor grid. Channel c's range is RepQ-ViT's quantile
// search ([Q(1 - q), Q(q)] for q = 0.999, 0.9999, 0.99999, least squared error) on the asymmetric grid of the
// run's activation bits: step s_c = (hi - lo) / (2^b - 1), zero point z_c = round(-lo / s_c), minimum
// m_c = -z_c s_c. With the common step s = mean(s_c), zero point z = mean(z_c), m = -z s, r_c = s_c / s and
// b_c = m_c / r_c - m:
//   the LayerNorm:            gamma_c / r_c, beta_c / r_c - b_c  (its output x_c becomes x_c / r_c - b_c)
//   each Linear reading it:   W[:, c] r_c, bias + W' b           (the same function as before)
// and channel c's grid maps exactly onto the common one. The run's calibrator then calibrates that one
// per-tensor quantizer on the reparameterized activations. It applies to each LayerNorm whose output only
// Linear layers read, directly or through transposes of leading dimensions (qkv and fc1 of a ViT block).
#include <cmath>
#include <limits>
#include <ostream>
#include <vector>

#include "xdq/error.h"
#include "xdq/plugin/graph_run.h"
#include "xdq/plugin/interfaces.h"

namespace {

struct Site {
  int norm = -1;
  std::vector<int> linears;
};

// The Linear layers reading `value`, or nothing when another kind of node (or the graph output) reads it.
std::vector<int> linear_readers(const xdq::Graph& g, int value) {
  std::vector<int> linears, frontier{value};
  while (!frontier.empty()) {
    const int v = frontier.back();
    frontier.pop_back();
    for (int out : g.outputs)
      if (out == v) return {};
    for (int r : g.consumers(v)) {
      const xdq::Node& n = g.nodes[r];
      const std::string op = xdq::strip_inplace(n.op);
      if (op == "aten::size" || op == "aten::dim") continue;  // reads the shape only, which stays
      const auto leading = [&](int dim) {
        const double d = g.constant_number(n.inputs[dim]).value_or(-1);
        return d >= 0 && d <= 1;
      };
      if (n.kind == xdq::OpKind::Linear && n.inputs[0] == v)
        linears.push_back(r);
      else if (op == "aten::transpose" && leading(1) && leading(2))
        frontier.push_back(n.outputs[0]);
      else
        return {};
    }
  }
  return linears;
}

// The tensor constant `value` holds (a handle: it stays valid while constants are added), or an undefined one.
at::Tensor constant_tensor(const xdq::Graph& g, int value) {
  for (const auto& [v, c] : g.constants)
    if (v == value && c.isTensor()) return c.toTensor();
  return {};
}

// Input `k` of node `node` becomes a constant of its own holding `t` (an import shares equal constants
// between nodes, e.g. the LayerNorms of a freshly initialized model).
void set_own_constant(xdq::Graph& g, int node, int k, const at::Tensor& t, const std::string& what) {
  const int value = g.add_value(g.nodes[node].name + "." + what);
  g.constants.emplace_back(value, t);
  g.nodes[node].inputs[k] = value;
}

// RepQ-ViT's per-channel grid of `x` ([C, M]: channel c's values in row c) at `bits`: steps and zero points.
std::pair<at::Tensor, at::Tensor> channel_grids(const at::Tensor& x, int bits) {
  const double levels = std::pow(2.0, bits) - 1;
  at::Tensor best_err, best_step, best_zero;
  for (int k = 3; k <= 5; ++k) {
    const double q = 1.0 - std::pow(10.0, -k);
    const at::Tensor hi = at::quantile(x, q, 1, true), lo = at::quantile(x, 1.0 - q, 1, true);
    const at::Tensor step = at::clamp_min((hi - lo) / levels, std::numeric_limits<float>::epsilon());
    const at::Tensor zero = at::round(-lo / step);
    const at::Tensor err = ((at::clamp(at::round(x / step) + zero, 0, levels) - zero) * step - x).pow(2).mean(1, true);
    if (!best_err.defined()) {
      best_err = err, best_step = step, best_zero = zero;
      continue;
    }
    const at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best_step = at::where(better, step, best_step);
    best_zero = at::where(better, zero, best_zero);
  }
  return {best_step.reshape({-1}), best_zero.reshape({-1})};
}

class RepqReparameterize : public xdq::GraphPass {
 public:
  explicit RepqReparameterize(std::int64_t batch_size) : batch_size_(batch_size) {}

  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    if (context.calibration.empty())
      throw xdq::Error("repq_reparameterize needs calibration images (it is not data-free)");
    const xdq::GraphRun fp(graph);
    int changed = 0;
    for (const Site& site : sites(graph)) {
      const xdq::Node& norm = graph.nodes[site.norm];
      const at::Tensor gamma = constant_tensor(graph, norm.inputs[2]), beta = constant_tensor(graph, norm.inputs[3]);
      if (!gamma.defined() || !beta.defined()) {
        if (context.log) *context.log << "repq_reparameterize: " << norm.name << " has no affine parameters; left as it is\n";
        continue;
      }
      const auto [step, zero] = channel_grids(channel_rows(fp, site, graph, context), context.a_bits);
      const at::Tensor target_step = step.mean(), target_zero = zero.mean();
      const at::Tensor ratio = step / target_step;
      const at::Tensor r = ratio.to(gamma.device());
      const at::Tensor b = ((-zero * step) / ratio + target_zero * target_step).to(gamma.device());
      set_own_constant(graph, site.norm, 2, gamma / r, "weight");
      set_own_constant(graph, site.norm, 3, beta / r - b, "bias");
      for (int l : site.linears) {
        xdq::Node& linear = graph.nodes[l];
        linear.weight = linear.weight * r.view({1, -1});
        const at::Tensor shift = at::matmul(linear.weight, b);
        linear.bias = linear.bias.defined() ? linear.bias + shift : shift;
      }
      ++changed;
    }
    if (context.log) *context.log << "repq_reparameterize: " << changed << " LayerNorm outputs folded to per-tensor grids\n";
  }

 private:
  static std::vector<Site> sites(const xdq::Graph& g) {
    std::vector<Site> found;
    for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i)
      if (xdq::strip_inplace(g.nodes[i].op) == "aten::layer_norm")
        if (auto linears = linear_readers(g, g.nodes[i].outputs[0]); !linears.empty()) found.push_back({i, linears});
    return found;
  }

  // The LayerNorm's output over the calibration set as [C, M] (channels in rows), on the CPU.
  at::Tensor channel_rows(const xdq::GraphRun& fp, const Site& site, const xdq::Graph& g, const xdq::PassContext& context) const {
    const int value = g.nodes[site.norm].outputs[0];
    std::vector<at::Tensor> parts;
    context.calibration.for_each_batch(batch_size_, [&](const at::Tensor& images, std::int64_t) {
      const at::Tensor x = fp.values(images, {value}, site.norm + 1)[0];
      parts.push_back(x.reshape({-1, x.size(-1)}).to(at::kCPU, at::kFloat));
    });
    const at::Tensor rows = at::cat(parts).t().contiguous();
    if (rows.numel() > (std::int64_t{1} << 24))  // at::quantile's limit on its input
      throw xdq::Error("repq_reparameterize: " + g.nodes[site.norm].name + " gives " + std::to_string(rows.numel()) +
                       " values over the calibration set, more than the 16.7 M its exact quantiles take; use fewer images");
    return rows;
  }

  std::int64_t batch_size_;
};

const xdq::Option<std::int64_t> kBatchSize =
    xdq::OptionSpec::integer("batch_size", 32, "images per forward pass").range(1, 1 << 16);
xdq::OptionSchema schema() { return {kBatchSize.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new RepqReparameterize(kBatchSize(o)); }

}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "repq_reparameterize", "1.0.0",
           "RepQ-ViT: per-channel LayerNorm-output grids folded into per-tensor ones", schema, create)
