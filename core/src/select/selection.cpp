#include "xdq/select/selection.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <ostream>

#include "xdq/data/dataset.h"
#include "xdq/error.h"
#include "xdq/exec/executor.h"

namespace xdq {

namespace {

// Per-image summaries of one activation batch over its positions (a 2-D batch is its own summary); only
// what is asked: each a single read of the activation, no temporary of its size.
struct BatchSummary {
  at::Tensor mean, square, absmax;
};
// Where an activation keeps its images and its channels: a conv's input [N, C, H, W]; a linear's input on
// tokens [N, T, C] or, inside torchvision's attention, [T, N, C] (channels last, images in any one dim).
struct Layout {
  int batch_dim = 0;
  bool channels_last = false;
};
BatchSummary summarize(const at::Tensor& x, bool moments, bool absmax, const Layout& layout) {
  at::Tensor v = x.detach().to(at::kFloat).movedim(layout.batch_dim, 0);
  if (layout.channels_last && v.dim() > 2) v = v.movedim(-1, 1);
  BatchSummary s;
  if (v.dim() == 2) {
    if (moments) s = {v.cpu(), v.pow(2).cpu(), {}};
    if (absmax) s.absmax = v.abs().cpu();
    return s;
  }
  const at::Tensor flat = v.flatten(2);  // [B, C, positions]
  const double positions = static_cast<double>(flat.size(2));
  if (moments) {  // a sum and a 2-norm: each one read of the activation (var_mean and x² took 1.5-1.7 times as long)
    s.mean = (flat.sum(2) / positions).cpu();
    s.square = (at::linalg_vector_norm(flat, 2, {2}, false, c10::nullopt).pow(2) / positions).cpu();
  }
  if (absmax) {
    const auto [lo, hi] = at::aminmax(flat, 2);
    s.absmax = at::maximum(hi, -lo).cpu();
  }
  return s;
}

// One site being recorded: its value, what it summarizes, and the per-batch summaries so far.
struct Recorder {
  int value = -1;
  bool moments = false, absmax_wanted = false;
  Layout layout;
  std::vector<at::Tensor> mean, square, absmax;
  void add(const BatchSummary& s) {
    if (moments) mean.push_back(s.mean), square.push_back(s.square);
    if (absmax_wanted) absmax.push_back(s.absmax);
  }
  void finish(SiteFeatures& f) const {
    if (!mean.empty()) f.mean = at::cat(mean), f.square = at::cat(square);
    if (!absmax.empty()) f.absmax = at::cat(absmax);
  }
};

// Finds each layer input's image dimension, the one dimension whose size follows the batch's (the model run
// on 2 and on 3 images). A layer input whose images share a dimension with something else (the [T * N, C]
// input of torchvision's attention output projection) has no per-image features: it is left out, and
// the run's log says so.
void drop_merged_batches(const SelectionContext& context, const CalibrationImages& images, std::vector<Recorder>& layers,
                         std::vector<SiteFeatures>& sites) {
  if (images.size() < 3 || layers.empty()) return;
  const Executor probe(*context.graph);
  const at::Tensor three = context.preprocess.apply(images.head(3));
  const std::vector<c10::IValue> two_values = probe.all_values(three.slice(0, 0, 2)), three_values = probe.all_values(three);
  std::vector<std::string> dropped;
  for (std::size_t k = layers.size(); k-- > 0;) {
    const at::IntArrayRef a = two_values.at(layers[k].value).toTensor().sizes(), b = three_values.at(layers[k].value).toTensor().sizes();
    std::vector<int> follows;
    for (std::size_t d = 0; d < a.size() && a.size() == b.size(); ++d)
      if (a[d] != b[d]) follows.push_back(static_cast<int>(d));
    if (follows.size() == 1 && a[follows[0]] == 2 && b[follows[0]] == 3) {
      layers[k].layout.batch_dim = follows[0];
      continue;
    }
    dropped.push_back(sites[k].name);
    layers.erase(layers.begin() + static_cast<std::ptrdiff_t>(k));
    sites.erase(sites.begin() + static_cast<std::ptrdiff_t>(k));
  }
  if (!dropped.empty() && context.progress) {
    *context.progress << "xdq: selection: " << dropped.size() << " layer inputs hold images merged with another dimension, left out of the features:";
    for (auto it = dropped.rbegin(); it != dropped.rend(); ++it) *context.progress << " " << *it;
    *context.progress << "\n";
  }
  if (layers.empty()) throw Error("selection: no layer input of the model keeps its images in a dimension of their own");
}

PoolFeatures features(const SelectionContext& context, const CalibrationImages& images, const FeatureRequest& request) {
  if (!context.graph) throw Error("selection: no model");
  const Graph& graph = *context.graph;
  PoolFeatures out;
  std::vector<Recorder> bn, layers;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    if (request.bn_inputs && node.kind == OpKind::BatchNorm) {
      bn.push_back({node.inputs.at(0), request.moments, request.absmax, {}, {}, {}, {}});
      out.bn_inputs.push_back({node.name, {}, {}, {}, node.bn.mean.cpu().to(at::kFloat), node.bn.var.cpu().to(at::kFloat)});
    }
    if (request.layer_inputs && node.is_layer()) {
      layers.push_back({node.inputs.at(0), request.moments, request.absmax, {0, node.kind == OpKind::Linear}, {}, {}, {}});
      out.layer_inputs.push_back({node.name, {}, {}, {}, {}, {}});
    }
  }
  drop_merged_batches(context, images, layers, out.layer_inputs);
  const auto layer_nodes = graph.layer_nodes();
  if (request.penultimate && layer_nodes.empty()) throw Error("selection: the model has no conv or linear layer");
  Recorder penultimate{request.penultimate ? graph.nodes[layer_nodes.back()].inputs.at(0) : -1, true, false, {0, true}, {}, {}, {}};
  std::vector<at::Tensor> logits_batches;
  // One hook per value, feeding every recorder that watches it what any of them asks for.
  std::map<int, std::vector<Recorder*>> watchers;
  for (auto* list : {&bn, &layers})
    for (Recorder& r : *list) watchers[r.value].push_back(&r);
  if (penultimate.value >= 0) watchers[penultimate.value].push_back(&penultimate);
  Executor exec(graph);
  for (auto& [value, recorders] : watchers) {
    bool moments = false, absmax = false;
    for (const Recorder* r : recorders) moments = moments || r->moments, absmax = absmax || r->absmax_wanted;
    const Layout layout = recorders.front()->layout;  // one value, one layout
    exec.set_value_hook(value, [recorders = recorders, moments, absmax, layout](const at::Tensor& x) {
      const BatchSummary s = summarize(x, moments, absmax, layout);
      for (Recorder* r : recorders) r->add(s);
      return x;
    });
  }
  const at::NoGradGuard no_grad;
  images.for_each_batch(std::max<std::int64_t>(1, context.batch_size), [&](const at::Tensor& batch, std::int64_t) {
    const at::Tensor logits = exec.forward(context.preprocess.apply(batch));
    if (request.logits) logits_batches.push_back(logits.detach().to(at::kFloat).cpu());
  });
  for (std::size_t k = 0; k < bn.size(); ++k) bn[k].finish(out.bn_inputs[k]);
  for (std::size_t k = 0; k < layers.size(); ++k) layers[k].finish(out.layer_inputs[k]);
  if (request.logits) out.logits = at::cat(logits_batches);
  if (request.penultimate) out.penultimate = at::cat(penultimate.mean);
  return out;
}

}  // namespace

PoolFeatures pool_features(const SelectionContext& context, const FeatureRequest& request) {
  if (context.progress)
    *context.progress << "xdq: selection: one FP32 pass over the pool (" << context.pool.size() << " images"
                      << (context.pool.streamed() ? ", decoded from its files" : "") << ")\n";
  return features(context, context.pool, request);
}

PoolFeatures image_features(const SelectionContext& context, const at::Tensor& images, const FeatureRequest& request) {
  return features(context, images, request);
}

void sample_moments(const std::vector<SiteFeatures>& sites, std::vector<at::Tensor>& mean, std::vector<at::Tensor>& var) {
  mean.clear();
  var.clear();
  for (const SiteFeatures& s : sites) {
    const at::Tensor m = s.mean.to(at::kDouble).mean(0);
    mean.push_back(m.to(at::kFloat));
    var.push_back((s.square.to(at::kDouble).mean(0) - m.pow(2)).clamp_min(0).to(at::kFloat));
  }
}

at::Tensor standardized_moment_gaps(const std::vector<SiteFeatures>& sites, const std::vector<at::Tensor>& reference_mean,
                                    const std::vector<at::Tensor>& reference_var) {
  std::vector<at::Tensor> parts;
  for (std::size_t k = 0; k < sites.size(); ++k) {
    const at::Tensor mu = reference_mean.at(k).to(at::kDouble), var = reference_var.at(k).to(at::kDouble);
    // A channel the reference never moves (σ = 0) gets σ of the site's mean scale, not a division by zero.
    const at::Tensor sigma = var.sqrt().clamp_min(1e-3 * (var.mean().sqrt().item<double>() + 1e-12));
    const double scale = 1.0 / std::sqrt(2.0 * static_cast<double>(mu.size(0)));
    const at::Tensor gap_mean = (sites[k].mean.to(at::kDouble) - mu) / sigma;
    const at::Tensor gap_square = (sites[k].square.to(at::kDouble) - mu.pow(2) - sigma.pow(2)) / sigma.pow(2);
    parts.push_back((gap_mean * scale).to(at::kFloat));
    parts.push_back((gap_square * scale).to(at::kFloat));
  }
  if (parts.empty()) throw Error("selection: the model has no activation site to match moments at");
  return at::cat(parts, 1).contiguous();
}

double mean_gap(const at::Tensor& z, const std::vector<std::int64_t>& rows) {
  const at::Tensor index = at::tensor(rows, at::kLong);
  return z.index_select(0, index).to(at::kDouble).mean(0).pow(2).sum().item<double>();
}

namespace {
// The row minimizing ||sum + z_j||² over rows not `taken`, from `projection` = z·sum: ||sum||² +
// 2 sum·z_j + ||z_j||², the first term the same for every j; ranked in float32, ties to the lowest row.
std::int64_t best_row(const at::Tensor& projection, const at::Tensor& norms, const at::Tensor& taken) {
  return (projection * 2 + norms).masked_fill_(taken, std::numeric_limits<float>::infinity()).argmin().item<std::int64_t>();
}
}  // namespace

MeanMatch match_mean(const at::Tensor& z, std::int64_t count, std::int64_t first, int max_rounds) {
  const std::int64_t n = z.size(0);
  if (count > n) throw Error("selection: " + std::to_string(count) + " images asked from a pool of " + std::to_string(n));
  const at::Tensor norms = z.pow(2).sum(1);
  const auto row = [&](std::int64_t j) { return z[j].to(at::kDouble); };
  at::Tensor taken = at::zeros({n}, at::kBool);
  bool* is_taken = taken.data_ptr<bool>();
  MeanMatch out;
  at::Tensor sum = row(first);  // of the chosen rows, in double
  out.rows.push_back(first);
  is_taken[first] = true;
  while (static_cast<std::int64_t>(out.rows.size()) < count) {
    const std::int64_t j = best_row(at::mv(z, sum.to(at::kFloat)), norms, taken);
    out.rows.push_back(j);
    is_taken[j] = true;
    sum += row(j);
  }
  const double k = static_cast<double>(count);
  double current = (sum / k).pow(2).sum().item<double>();
  out.trace.push_back(current);
  // Swaps: z·z_p for every chosen p in one product per round (columns of `dots`), z·sum kept up to date
  // with one product per accepted swap; whether a swap lowers the objective is decided in double.
  for (int round = 0; round < max_rounds && !out.converged; ++round) {
    at::Tensor dots = at::mm(z, z.index_select(0, at::tensor(out.rows, at::kLong)).t()).contiguous();
    at::Tensor projection = at::mv(z, sum.to(at::kFloat));
    bool changed = false;
    for (std::size_t p = 0; p < out.rows.size(); ++p) {
      const std::int64_t old = out.rows[p];
      const at::Tensor column = dots.select(1, static_cast<std::int64_t>(p));
      is_taken[old] = false;
      const std::int64_t j = best_row(projection - column, norms, taken);
      const at::Tensor swapped = sum - row(old) + row(j);
      const double candidate = (swapped / k).pow(2).sum().item<double>();
      if (j != old && candidate < current) {  // the trace never rises
        const at::Tensor added = at::mv(z, z[j]);
        projection += added - column;
        column.copy_(added);
        out.rows[p] = j;
        sum = swapped;
        current = candidate;
        out.trace.push_back(current);
        changed = true;
      }
      is_taken[out.rows[p]] = true;
    }
    out.converged = !changed;
  }
  return out;
}

Selection select_by_moments(const at::Tensor& gaps, const SelectionContext& context, int max_rounds) {
  const MeanMatch m = match_mean(gaps, context.count, seeded_index(gaps.size(0), context.seed), max_rounds);
  Selection out;
  out.indices = m.rows;
  out.trace = m.trace;
  out.measures["moment_distance"] = m.trace.back();
  out.measures["moment_distance_greedy"] = m.trace.front();
  const at::Tensor random = subset_rows(gaps.size(0), context.count, context.seed);
  out.measures["moment_distance_random"] =
      mean_gap(gaps, std::vector<std::int64_t>(random.data_ptr<std::int64_t>(), random.data_ptr<std::int64_t>() + random.numel()));
  out.measures["swaps_converged"] = m.converged ? 1 : 0;
  return out;
}

std::int64_t seeded_index(std::int64_t n, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(n, {1}, gen).item<std::int64_t>();
}

}  // namespace xdq
