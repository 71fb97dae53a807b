#include "xdq/analysis/analysis.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/passes.h"

namespace xdq {

namespace {

double db(double signal, double noise) {
  if (noise <= 0) return std::numeric_limits<double>::infinity();
  return 10 * std::log10(signal / noise);
}

template <class F>
void for_batches(const at::Tensor& images, std::int64_t batch_size, F&& f) {
  for (std::int64_t b = 0; b < images.size(0); b += batch_size) f(b, std::min(images.size(0), b + batch_size));
}

}  // namespace

void OutputError::add(const at::Tensor& fp, const at::Tensor& quant, const at::Tensor& labels) {
  const at::Tensor f = fp.reshape({fp.size(0), -1}).to(at::kDouble), q = quant.reshape({quant.size(0), -1}).to(at::kDouble);
  signal += f.pow(2).sum().item<double>();
  const double err = (q - f).pow(2).sum().item<double>();
  noise += err;
  squared_error_sum += err;
  cosine_sum += at::cosine_similarity(f, q, 1, 1e-12).sum().item<double>();
  samples += f.size(0);
  elements += f.numel();
  if (labels.defined()) {
    fp_correct += fp.argmax(1).cpu().eq(labels).sum().item<std::int64_t>();
    quant_correct += quant.argmax(1).cpu().eq(labels).sum().item<std::int64_t>();
  }
}

double OutputError::sqnr_db() const { return db(signal, noise); }
double OutputError::cosine() const { return samples ? cosine_sum / static_cast<double>(samples) : 1.0; }
double OutputError::mse() const { return elements ? squared_error_sum / static_cast<double>(elements) : 0.0; }
double OutputError::top1_drop() const {
  return samples ? 100.0 * static_cast<double>(fp_correct - quant_correct) / static_cast<double>(samples) : 0.0;
}

LayerwiseMode parse_layerwise_mode(const std::string& text) {
  if (text == "weights") return LayerwiseMode::Weights;
  if (text == "activation") return LayerwiseMode::Activation;
  if (text == "both") return LayerwiseMode::Both;
  throw Error("unknown layerwise mode '" + text + "' (weights, activation, both)");
}

std::vector<OutputError> layerwise_errors(const QuantizedModel& model, LayerwiseMode mode, const at::Tensor& images,
                                          const at::Tensor& labels, std::int64_t batch_size) {
  const Graph& g = model.graph();
  const Executor fp(g);
  const int end = static_cast<int>(g.nodes.size());
  const int output = g.outputs.at(0);
  // One executor per layer: only that layer's weight and/or the activation quantizer it reads.
  std::vector<Executor> single;
  std::vector<int> start;              // first node of each layer's run
  std::vector<std::vector<int>> live;  // values each layer's run starts from
  std::set<int> needed;
  const std::vector<bool> is_tensor = fp.tensor_values(images.slice(0, 0, 1));
  for (const auto& layer : model.layers()) {
    Executor e(g);
    if (mode != LayerwiseMode::Activation) e.set_weight(layer.node, layer.quantized_weight);
    if (mode != LayerwiseMode::Weights) {
      const int value = g.nodes[layer.node].inputs[0];
      for (const auto& act : model.activations())
        if (act.value == value) set_fake_quantizer(e, value, act.qparams);
    }
    single.push_back(std::move(e));
    // A quantized activation is seen by every layer reading it, so the run starts at its first reader.
    int first = layer.node;
    if (mode != LayerwiseMode::Weights)
      for (int reader : g.consumers(g.nodes[layer.node].inputs[0])) first = std::min(first, reader);
    first = fp.tensor_inputs_start(first, end, is_tensor);
    start.push_back(first);
    live.push_back(fp.range_inputs(first, end));
    needed.insert(live.back().begin(), live.back().end());
  }
  std::vector<int> wanted(needed.begin(), needed.end());
  wanted.push_back(output);
  std::vector<OutputError> errors(model.layers().size());
  at::NoGradGuard no_grad;
  for_batches(images, batch_size, [&](std::int64_t b, std::int64_t e) {
    const auto values = fp.run_nodes(0, end, {{g.inputs.at(0), images.slice(0, b, e)}}, wanted);
    std::map<int, at::Tensor> by_value;
    for (std::size_t k = 0; k + 1 < wanted.size(); ++k) by_value[wanted[k]] = values[k];
    const at::Tensor fp_out = values.back();
    const at::Tensor y = labels.defined() ? labels.slice(0, b, e) : at::Tensor();
    for (std::size_t l = 0; l < single.size(); ++l) {
      std::vector<std::pair<int, at::Tensor>> given;
      for (int v : live[l]) given.emplace_back(v, by_value.at(v));
      errors[l].add(fp_out, single[l].run_nodes(start[l], end, given, {output})[0], y);
    }
  });
  return errors;
}

std::vector<double> graphwise_sqnr(const QuantizedModel& model, const at::Tensor& images, std::int64_t batch_size) {
  const Graph& g = model.graph();
  const Executor fp(g), quant = model.executor();
  std::vector<int> outputs;
  for (const auto& layer : model.layers()) outputs.push_back(g.nodes[layer.node].outputs[0]);
  const int end = static_cast<int>(g.nodes.size());
  std::vector<double> signal(outputs.size()), noise(outputs.size());
  at::NoGradGuard no_grad;
  for_batches(images, batch_size, [&](std::int64_t b, std::int64_t e) {
    const at::Tensor x = images.slice(0, b, e);
    const auto f = fp.run_nodes(0, end, {{g.inputs.at(0), x}}, outputs);
    const auto q = quant.run_nodes(0, end, {{g.inputs.at(0), x}}, outputs);
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      signal[k] += f[k].to(at::kDouble).pow(2).sum().item<double>();
      noise[k] += (q[k].to(at::kDouble) - f[k].to(at::kDouble)).pow(2).sum().item<double>();
    }
  });
  std::vector<double> out;
  for (std::size_t k = 0; k < outputs.size(); ++k) out.push_back(db(signal[k], noise[k]));
  return out;
}

WeightStats weight_stats(const at::Tensor& weight) {
  const at::Tensor w = weight.detach().to(at::kDouble);
  const at::Tensor flat = w.reshape({w.size(0), -1});
  const at::Tensor ranges = std::get<0>(flat.max(1)) - std::get<0>(flat.min(1));
  WeightStats s;
  const double median = ranges.median().item<double>();
  s.channel_range_ratio = ranges.max().item<double>() / std::max(median, 1e-30);
  const at::Tensor centered = w - w.mean();
  const double var = centered.pow(2).mean().item<double>();
  s.kurtosis = var > 0 ? centered.pow(4).mean().item<double>() / (var * var) : 0.0;
  return s;
}

std::vector<MergeStats> merge_stats(const Graph& graph, const at::Tensor& images, int a_bits, std::int64_t batch_size) {
  std::vector<MergeStats> merges;
  std::vector<int> wanted;
  for (int node : merge_nodes(graph)) {
    const Node& n = graph.nodes[node];
    MergeStats m;
    m.node = node;
    m.name = n.name;
    m.op = n.op;
    std::vector<int> inputs = {n.inputs[0], n.inputs[1]};
    if (n.op == "aten::cat") {
      const int list = graph.producer(n.inputs[0]);
      if (list < 0 || graph.nodes[list].op != "prim::ListConstruct") continue;
      inputs = graph.nodes[list].inputs;
    }
    for (int v : inputs) m.inputs.push_back(graph.value_names.at(v));
    merges.push_back(m);
    wanted.insert(wanted.end(), inputs.begin(), inputs.end());
  }
  if (merges.empty()) return merges;
  const Executor fp(graph);
  std::vector<std::vector<at::Tensor>> samples(wanted.size());
  at::NoGradGuard no_grad;
  for_batches(images, batch_size, [&](std::int64_t b, std::int64_t e) {
    const auto got = fp.run_nodes(0, static_cast<int>(graph.nodes.size()), {{graph.inputs.at(0), images.slice(0, b, e)}}, wanted);
    for (std::size_t k = 0; k < wanted.size(); ++k) samples[k].push_back(got[k]);
  });
  // Asymmetric a_bits grid over [lo, hi] (zero included): SQNR of x quantized on it.
  auto sqnr_on = [&](const at::Tensor& x, double lo, double hi) {
    QuantSpec spec{a_bits, false, false, false, true, false};
    const QParams q = qparams_from_range(spec, Range{lo, hi});
    const at::Tensor d = x.to(at::kDouble);
    return db(d.pow(2).sum().item<double>(), (fake_quantize(x, q).to(at::kDouble) - d).pow(2).sum().item<double>());
  };
  std::size_t k = 0;
  for (auto& m : merges) {
    std::vector<at::Tensor> xs;
    double lo = 0, hi = 0;
    std::vector<std::pair<double, double>> own;
    for (std::size_t i = 0; i < m.inputs.size(); ++i, ++k) {
      xs.push_back(at::cat(samples[k]));
      const double a = xs.back().min().item<double>(), b = xs.back().max().item<double>();
      own.emplace_back(a, b);
      lo = std::min(lo, a);
      hi = std::max(hi, b);
      m.ranges.push_back(b - a);
    }
    const double widest = *std::max_element(m.ranges.begin(), m.ranges.end());
    const double narrowest = *std::min_element(m.ranges.begin(), m.ranges.end());
    m.range_ratio = widest / std::max(narrowest, 1e-30);
    m.own_sqnr_db = m.shared_sqnr_db = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < xs.size(); ++i) {
      m.own_sqnr_db = std::min(m.own_sqnr_db, sqnr_on(xs[i], own[i].first, own[i].second));
      m.shared_sqnr_db = std::min(m.shared_sqnr_db, sqnr_on(xs[i], lo, hi));
    }
  }
  return merges;
}

std::vector<double> activation_outlier_ratios(const QuantizedModel& model, const at::Tensor& images,
                                              std::int64_t batch_size) {
  const Graph& g = model.graph();
  const Executor fp(g);
  std::vector<int> wanted;
  for (const auto& act : model.activations()) wanted.push_back(act.value);
  std::vector<std::vector<at::Tensor>> parts(wanted.size());
  at::NoGradGuard no_grad;
  // Up to 2^20 evenly strided elements per activation and batch stand in for the distribution.
  for_batches(images, batch_size, [&](std::int64_t b, std::int64_t e) {
    const auto got = fp.run_nodes(0, static_cast<int>(g.nodes.size()), {{g.inputs.at(0), images.slice(0, b, e)}}, wanted);
    for (std::size_t k = 0; k < wanted.size(); ++k) {
      const at::Tensor flat = got[k].reshape({-1}).abs();
      const std::int64_t stride = std::max<std::int64_t>(1, flat.numel() >> 20);
      parts[k].push_back(flat.slice(0, 0, flat.numel(), stride));
    }
  });
  std::vector<double> ratios;
  for (auto& p : parts) {
    const at::Tensor all = at::cat(p).to(at::kDouble);
    const std::int64_t n = all.numel();
    const std::int64_t rank = std::max<std::int64_t>(1, std::min<std::int64_t>(n, static_cast<std::int64_t>(std::ceil(0.9999 * n))));
    const double p9999 = std::get<0>(all.kthvalue(rank)).item<double>();
    ratios.push_back(all.max().item<double>() / std::max(p9999, 1e-30));
  }
  return ratios;
}

}  // namespace xdq
