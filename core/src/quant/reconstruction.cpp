#include "xdq/quant/reconstruction.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/passes.h"
#include "xdq/optim.h"
#include "xdq/progress.h"

namespace xdq {

namespace {

constexpr std::int64_t kCaptureBatch = 256;

int name_depth(const std::string& name) { return 1 + static_cast<int>(std::count(name.begin(), name.end(), '.')); }

std::string name_prefix(const std::string& name, int depth) {
  std::size_t pos = 0;
  for (int d = 0; d < depth; ++d) {
    pos = name.find('.', pos);
    if (pos == std::string::npos) return name;
    if (d + 1 < depth) ++pos;
  }
  return name.substr(0, pos);
}

ReconstructionUnit layer_unit(const Graph& graph, int node) {
  ReconstructionUnit u{graph.nodes[node].name, node, node + 1, graph.nodes[node].outputs[0], {node}};
  const auto readers = graph.consumers(u.output_value);
  const bool is_output = std::count(graph.outputs.begin(), graph.outputs.end(), u.output_value) > 0;
  if (readers.size() == 1 && !is_output && is_activation_op(graph.nodes[readers[0]])) {
    u.last = readers[0] + 1;
    u.output_value = graph.nodes[readers[0]].outputs[0];
  }
  return u;
}

// Appends b to a (b follows a in graph order).
void absorb(ReconstructionUnit& a, const ReconstructionUnit& b) {
  a.name += "+" + b.name;
  a.first = std::min(a.first, b.first);
  a.last = std::max(a.last, b.last);
  a.output_value = b.output_value;
  a.layers.insert(a.layers.end(), b.layers.begin(), b.layers.end());
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string format_loss(double v) {
  std::ostringstream s;
  s << std::setprecision(3) << std::scientific << v;
  return s.str();
}

class Engine {
 public:
  Engine(RoundingContext& ctx, const ReconstructionOptions& opt)
      : ctx_(ctx), opt_(opt), graph_(*ctx.graph), fp_(graph_), gen_(at::detail::createCPUGenerator(ctx.seed)) {
    if (ctx.calibration.empty())
      throw Error(opt.method + " needs calibration images (reconstruction learns from data)");
    for (std::size_t i = 0; i < ctx.layers->size(); ++i) layer_index_[(*ctx.layers)[i].node] = static_cast<int>(i);
    if (ctx.activations)
      for (std::size_t i = 0; i < ctx.activations->size(); ++i) act_index_[(*ctx.activations)[i].value] = static_cast<int>(i);
    for (auto& layer : *ctx.layers) layer.quantized_weight = fake_quantize(graph_.nodes[layer.node].weight, layer.qparams);
  }

  std::vector<UnitReport> run() {
    at::AutoGradMode grad(true);  // whatever the caller's mode: the rounding is learned by gradient
    auto units = reconstruction_units(graph_, opt_.granularity);
    // A unit starts where its inputs are tensors (not between a chunk and its items).
    const std::vector<bool> is_tensor = fp_.tensor_values(ctx_.calibration.head(1));
    for (auto& u : units) u.first = fp_.tensor_inputs_start(u.first, u.last, is_tensor);
    // The BRECQ code keeps the first layer at nearest rounding (ignore_reconstruction), both passes.
    if (opt_.skip_first && !units.empty() && units.front().layers == std::vector<int>{graph_.layer_nodes().front()})
      units.erase(units.begin());
    // The reference code initialises activation ranges once the weights they see are final: before the
    // rounding when activations are quantized while it is learned, else after it.
    const bool initialize = opt_.init_images > 0 && ctx_.activations;
    if (initialize && opt_.act_quant) initialize_activation_ranges(ctx_, opt_.init_images, opt_.p);
    std::vector<UnitReport> reports;
    for (std::size_t k = 0; k < units.size(); ++k) reports.push_back(round_unit(units[k], k, units.size()));
    if (initialize && !opt_.act_quant) initialize_activation_ranges(ctx_, opt_.init_images, opt_.p);
    if (opt_.act_steps == "after" && ctx_.activations)
      for (std::size_t k = 0; k < units.size(); ++k) learn_steps_after(units[k], k, units.size(), reports[k]);
    return reports;
  }

 private:
  struct Cached {
    std::vector<int> inputs;               // values the unit reads from outside
    // Over the calibration set, in float32 or (large units, cache_precision) float16; read back as float32.
    std::vector<at::Tensor> fp_in, q_in;   // per input
    at::Tensor fp_out;                     // FP target
    at::Tensor fisher;                     // |dKL/d out| + 1, or undefined
  };

  // The model quantized up to node `before` as reconstructed so far: current weights of the layers before
  // it, and (when `with_acts`) the activation quantizers on values produced before it; FP32 after it.
  Executor quantized_executor(bool with_acts, int before) const {
    Executor e(graph_);
    for (const auto& layer : *ctx_.layers)
      if (layer.node < before) e.set_weight(layer.node, layer.quantized_weight);
    if (with_acts && ctx_.activations)
      for (const auto& act : *ctx_.activations)
        if (graph_.producer(act.value) < before) set_fake_quantizer(e, act.value, act.qparams);
    return e;
  }

  // Runs `exec` over the calibration images up to node `upto`, returning `wanted` values for all images,
  // stored as `dtype` (written batch by batch into place: no second copy while caching). A float16 store
  // of a value beyond its range (65 504) sets `overflow`.
  std::vector<at::Tensor> capture(const Executor& exec, int upto, const std::vector<int>& wanted, at::ScalarType dtype,
                                  bool& overflow) const {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> out;
    const std::int64_t n = ctx_.calibration.size();
    ctx_.calibration.for_each_batch(kCaptureBatch, [&](const at::Tensor& x, std::int64_t first) {
      store_rows(exec.run_nodes(0, upto, {{graph_.inputs.at(0), x}}, wanted), n, first, dtype, overflow, out);
    });
    return out;
  }

  // `batch(b, e)` gives values for rows [b, e) of the calibration set; they are stored in n-row tensors.
  template <class Batch>
  static std::vector<at::Tensor> capture_batches(std::int64_t n, at::ScalarType dtype, bool& overflow, Batch&& batch) {
    std::vector<at::Tensor> out;
    for (std::int64_t b = 0; b < n; b += kCaptureBatch) store_rows(batch(b, std::min(n, b + kCaptureBatch)), n, b, dtype, overflow, out);
    return out;
  }

  // Values `got` of rows [first, first + b) written into place in `out` (n-row tensors made on the first
  // batch, as `dtype`); a float16 store of a value beyond its range (65 504) sets `overflow`.
  static void store_rows(const std::vector<at::Tensor>& got, std::int64_t n, std::int64_t first, at::ScalarType dtype,
                         bool& overflow, std::vector<at::Tensor>& out) {
    for (std::size_t k = 0; k < got.size(); ++k) {
      if (out.size() <= k) {
        std::vector<std::int64_t> shape = got[k].sizes().vec();
        shape[0] = n;
        out.push_back(at::empty(shape, got[k].options().dtype(dtype), got[k].suggest_memory_format()));
      }
      if (dtype == at::kHalf && got[k].abs().max().item<double>() > 65504.0) overflow = true;
      out[k].slice(0, first, first + got[k].size(0)).copy_(got[k]);
    }
  }

  // float16 when the unit's caches in float32 would exceed cache_limit_mb (cache_precision: auto): the
  // sizes of its inputs (FP and quantized) and output (target, and Fisher weights) on one image.
  at::ScalarType cache_dtype(const ReconstructionUnit& u, const std::vector<int>& inputs) const {
    if (opt_.cache_precision != "auto") return opt_.cache_precision == "float16" ? at::kHalf : at::kFloat;
    at::NoGradGuard no_grad;
    std::vector<int> wanted = inputs;
    wanted.push_back(u.output_value);
    const auto one = fp_.run_nodes(0, u.last, {{graph_.inputs.at(0), ctx_.calibration.head(1)}}, wanted);
    double per_image = (opt_.fisher ? 2.0 : 1.0) * static_cast<double>(one.back().numel());
    for (std::size_t k = 0; k < inputs.size(); ++k) per_image += 2.0 * static_cast<double>(one[k].numel());
    const double bytes = 4.0 * per_image * static_cast<double>(ctx_.calibration.size());
    return bytes > static_cast<double>(opt_.cache_limit_mb) * 1048576.0 ? at::kHalf : at::kFloat;
  }

  Cached cache_unit(const ReconstructionUnit& u, bool act_quant) {
    const at::ScalarType dtype = ctx_.calibration.size() > 0 ? cache_dtype(u, fp_.range_inputs(u.first, u.last)) : at::kFloat;
    if (dtype == at::kHalf && ctx_.progress)
      *ctx_.progress << opt_.method << ": unit '" << u.name << "' cached in float16 (cache_precision)\n";
    bool overflow = false;
    Cached c = cache_unit_as(u, act_quant, dtype, overflow);
    if (!overflow) return c;
    // A value float16 cannot hold: the unit is cached again in float32 rather than with infinities.
    if (ctx_.progress)
      *ctx_.progress << opt_.method << ": unit '" << u.name << "' has activations beyond float16's range; cached in float32\n";
    c = Cached();
    return cache_unit_as(u, act_quant, at::kFloat, overflow);
  }

  Cached cache_unit_as(const ReconstructionUnit& u, bool act_quant, at::ScalarType dtype, bool& overflow) {
    Cached c;
    c.inputs = fp_.range_inputs(u.first, u.last);
    c.fp_in = capture(fp_, u.first, c.inputs, dtype, overflow);
    c.q_in = capture(quantized_executor(act_quant, u.first), u.first, c.inputs, dtype, overflow);
    {
      at::NoGradGuard no_grad;
      c.fp_out = capture_batches(c.fp_in[0].size(0), dtype, overflow, [&](std::int64_t b, std::int64_t e) {
        return fp_.run_nodes(u.first, u.last, given(c.fp_in, c.inputs, b, e - b), {u.output_value});
      })[0];
    }
    if (opt_.fisher) c.fisher = fisher_weights(u, act_quant, dtype);
    return c;
  }

  std::vector<std::pair<int, at::Tensor>> given(const std::vector<at::Tensor>& tensors, const std::vector<int>& values,
                                                std::int64_t begin, std::int64_t count) const {
    std::vector<std::pair<int, at::Tensor>> g;
    for (std::size_t k = 0; k < values.size(); ++k)
      g.emplace_back(values[k], tensors[k].slice(0, begin, std::min(tensors[k].size(0), begin + count)).to(at::kFloat));
    return g;
  }

  // BRECQ's Fisher diagonal: the gradient of KL(FP output || quantized output) w.r.t. the unit's output, the
  // model quantized up to and including this unit (nearest rounding here), |g| + 1. The unit's output is
  // made a leaf by a hook; nothing before it requires grad, so autograd records only what follows.
  // Stored as `dtype`.
  at::Tensor fisher_weights(const ReconstructionUnit& u, bool act_quant, at::ScalarType dtype) {
    Executor q = quantized_executor(act_quant, u.last);
    std::optional<QParams> output_quantizer;
    if (auto it = act_index_.find(u.output_value); act_quant && it != act_index_.end())
      output_quantizer = (*ctx_.activations)[it->second].qparams;
    at::Tensor leaf;
    q.set_value_hook(u.output_value, [&leaf, output_quantizer](const at::Tensor& x) {
      leaf = (output_quantizer ? fake_quantize(x, *output_quantizer) : x).detach().requires_grad_(true);
      return leaf;
    });
    std::vector<at::Tensor> grads;
    ctx_.calibration.for_each_batch(opt_.batch_size, [&](const at::Tensor& x, std::int64_t) {
      at::Tensor target;
      {
        at::NoGradGuard no_grad;
        target = at::softmax(fp_.forward(x), 1);
      }
      const at::Tensor out = q.forward(x);
      if (!out.requires_grad())
        throw Error(opt_.method + ": the output of unit '" + u.name + "' does not reach the model output (fisher loss)");
      const at::Tensor kl = (target * (at::log(target.clamp_min(1e-30)) - at::log_softmax(out, 1))).sum() / x.size(0);
      kl.backward();
      grads.push_back((leaf.grad().abs() + 1.0).to(dtype));
    });
    return at::cat(grads);
  }

  struct Step {
    at::Tensor scale;  // learnable, 0-d
    int act = -1;      // index in context.activations
  };

  // Hooks of the training executor: activation quantizers produced inside the unit, with learnable steps
  // (LSQ) where given, and QDrop's random dropping.
  void install_activation_hooks(Executor& exec, const ReconstructionUnit& u, std::vector<Step>& steps, bool learn) {
    for (int i = u.first; i < u.last; ++i)
      for (int v : graph_.nodes[i].outputs) {
        auto it = act_index_.find(v);
        if (it == act_index_.end()) continue;
        const ActivationQuantizer& act = (*ctx_.activations)[it->second];
        const QParams q = act.qparams;
        const double drop = opt_.drop_prob;
        at::Generator gen = gen_;
        const bool uniform_per_tensor = !q.per_channel() && q.grid == Grid::uniform;  // LSQ steps and the one-pass kernel
        if (learn && uniform_per_tensor) {
          steps.push_back({q.scale.clone().to(at::kFloat).requires_grad_(true), it->second});
          at::Tensor scale = steps.back().scale;
          const bool lsq = opt_.lsq_grad_scale;
          exec.set_value_hook(v, [scale, q, drop, gen, lsq](const at::Tensor& x) mutable {
            const double factor = lsq ? 1.0 / std::sqrt(static_cast<double>(x.numel()) * static_cast<double>(q.qmax)) : 1.0;
            return lsq_fake_quantize(x, scale, q, factor, drop, drop > 0 ? next_draw_key(gen) : 0);
          });
        } else if (uniform_per_tensor) {  // a fixed step: the same one-pass quantizer, its step gradient unused
          const at::Tensor scale = q.scale.to(at::kFloat);
          exec.set_value_hook(v, [scale, q, drop, gen](const at::Tensor& x) mutable {
            return lsq_fake_quantize(x, scale, q, 1.0, drop, drop > 0 ? next_draw_key(gen) : 0);
          });
        } else {
          exec.set_value_hook(v, [q, drop, gen](const at::Tensor& x) mutable {
            return drop > 0 ? qdrop_mix(fake_quantize(x, q), x, drop, next_draw_key(gen)) : fake_quantize(x, q);
          });
        }
      }
  }

  // Mean reconstruction loss over the cached set for the unit's current weights and activation steps.
  double unit_loss(const ReconstructionUnit& u, const Cached& c, bool act_quant) {
    Executor exec(graph_);
    for (int node : u.layers) exec.set_weight(node, (*ctx_.layers)[layer_index_.at(node)].quantized_weight);
    if (act_quant && ctx_.activations)
      for (int i = u.first; i < u.last; ++i)
        for (int v : graph_.nodes[i].outputs)
          if (auto it = act_index_.find(v); it != act_index_.end())
            set_fake_quantizer(exec, v, (*ctx_.activations)[it->second].qparams);
    at::NoGradGuard no_grad;
    double total = 0;
    const std::int64_t n = c.fp_out.size(0);
    for (std::int64_t b = 0; b < n; b += kCaptureBatch) {
      const std::int64_t m = std::min(n, b + kCaptureBatch) - b;
      const at::Tensor out = exec.run_nodes(u.first, u.last, given(c.q_in, c.inputs, b, m), {u.output_value})[0];
      total += reconstruction_loss(out, c.fp_out.slice(0, b, b + m).to(at::kFloat), at::Tensor()).item<double>() *
               static_cast<double>(m);
    }
    return total / static_cast<double>(n);
  }

  // The rows of one optimization batch, drawn on the CPU generator, placed where the caches are.
  at::Tensor batch_rows(std::int64_t count, const c10::Device& device) {
    return at::randperm(count, gen_, at::kLong).slice(0, 0, std::min(opt_.batch_size, count)).to(device);
  }

  std::vector<std::pair<int, at::Tensor>> sample(const Cached& c, const at::Tensor& idx, bool mix) {
    std::vector<std::pair<int, at::Tensor>> g;
    for (std::size_t k = 0; k < c.inputs.size(); ++k) {
      g.emplace_back(c.inputs[k], mix ? qdrop_mix_of_rows(c.q_in[k], c.fp_in[k], idx, opt_.drop_prob, next_draw_key(gen_))
                                      : gather_rows(c.q_in[k], idx).to(at::kFloat));
    }
    return g;
  }

  void check_finite(double loss, const ReconstructionUnit& u, std::int64_t t) const {
    if (!std::isfinite(loss))
      throw Error(opt_.method + ": loss became " + (std::isnan(loss) ? "NaN" : "infinite") + " at iteration " +
                  std::to_string(t) + " of unit '" + u.name + "'");
  }

  std::string label(const ReconstructionUnit& u, std::size_t k, std::size_t n) const {
    return opt_.method + " " + u.name + " (" + std::to_string(k + 1) + "/" + std::to_string(n) + ")";
  }

  UnitReport round_unit(const ReconstructionUnit& u, std::size_t k, std::size_t n) {
    const auto start = std::chrono::steady_clock::now();
    UnitReport report;
    report.name = report.timing.name = u.name;
    const bool act_quant = opt_.act_quant && ctx_.activations;
    Cached c = cache_unit(u, act_quant);
    report.timing.caching_seconds = seconds_since(start);
    report.loss_nearest = unit_loss(u, c, act_quant);

    std::vector<at::Tensor> logits;
    for (int node : u.layers)
      logits.push_back(initial_rounding_logits(graph_.nodes[node].weight, (*ctx_.layers)[layer_index_.at(node)].qparams)
                           .requires_grad_(true));
    Executor exec(graph_);
    std::vector<Step> steps;
    if (act_quant) install_activation_hooks(exec, u, steps, opt_.act_steps == "joint");
    Adam rounding(logits, opt_.lr);
    std::vector<at::Tensor> scales;
    for (const auto& s : steps) scales.push_back(s.scale);
    Adam stepping(scales, opt_.act_lr);

    ProgressBar bar(ctx_.progress, label(u, k, n), opt_.iters);
    const std::int64_t count = c.fp_out.size(0);
    const bool mix = act_quant && opt_.drop_prob > 0;
    double rec_value = 0, round_value = 0;
    const auto loop_start = std::chrono::steady_clock::now();
    for (std::int64_t t = 0; t < opt_.iters; ++t) {
      const at::Tensor idx = batch_rows(count, c.fp_out.device());
      const double beta = opt_.beta.beta(t, opt_.iters);
      const bool regularizing = opt_.beta.regularizing(t, opt_.iters);
      at::Tensor round_loss;
      for (std::size_t l = 0; l < u.layers.size(); ++l) {
        const int node = u.layers[l];
        const SoftRounding r = soft_rounding(logits[l], graph_.nodes[node].weight,
                                             (*ctx_.layers)[layer_index_.at(node)].qparams, regularizing ? beta : 0.0);
        exec.set_weight(node, r.weight);
        if (regularizing) round_loss = round_loss.defined() ? round_loss + r.regularizer : r.regularizer;
      }
      const at::Tensor out = exec.run_nodes(u.first, u.last, sample(c, idx, mix), {u.output_value})[0];
      const at::Tensor rec = reconstruction_loss_of_rows(out, c.fp_out, c.fisher, idx);
      const at::Tensor loss = round_loss.defined() ? rec + opt_.round_weight * round_loss : rec;
      rec_value = rec.item<double>();
      round_value = round_loss.defined() ? round_loss.item<double>() : 0.0;
      check_finite(rec_value + round_value, u, t);
      loss.backward();
      rounding.step();
      if (!scales.empty()) {
        stepping.lr = cosine_lr(opt_.act_lr, t, opt_.iters);
        stepping.step();
        at::NoGradGuard no_grad;
        for (auto& s : scales) s.clamp_min_(1e-8);
      }
      if (t % opt_.record_every == 0 || t + 1 == opt_.iters) report.curve.push_back({t, rec_value, round_value, beta});
      bar.update(t + 1, "rec " + format_loss(rec_value) + " round " + format_loss(round_value));
    }
    report.timing.iterations = opt_.iters;
    report.timing.seconds_per_iteration = seconds_since(loop_start) / static_cast<double>(opt_.iters);
    for (std::size_t l = 0; l < u.layers.size(); ++l) {
      QuantizedLayer& layer = (*ctx_.layers)[layer_index_.at(u.layers[l])];
      const at::Tensor hard = (logits[l].detach() >= 0).to(at::kFloat);
      layer.quantized_weight = soft_quantized_weight(graph_.nodes[u.layers[l]].weight, layer.qparams, hard).detach();
    }
    for (const auto& s : steps) (*ctx_.activations)[s.act].qparams.scale = s.scale.detach().clone().reshape({});
    report.loss_final = unit_loss(u, c, act_quant);
    report.timing.seconds = seconds_since(start);
    bar.finish("loss " + format_loss(report.loss_nearest) + " (nearest) -> " + format_loss(report.loss_final));
    return report;
  }

  // BRECQ's second stage: weights fixed, the activation steps inside each unit learned on the quantized
  // model's inputs (activation quantization on), MSE to the FP output.
  void learn_steps_after(const ReconstructionUnit& u, std::size_t k, std::size_t n, UnitReport& report) {
    const auto start = std::chrono::steady_clock::now();
    Cached c = cache_unit(u, true);
    const double caching = seconds_since(start);
    Executor exec(graph_);
    for (int node : u.layers) exec.set_weight(node, (*ctx_.layers)[layer_index_.at(node)].quantized_weight);
    std::vector<Step> steps;
    install_activation_hooks(exec, u, steps, true);
    if (steps.empty()) return;
    std::vector<at::Tensor> scales;
    for (const auto& s : steps) scales.push_back(s.scale);
    Adam stepping(scales, opt_.act_after_lr);
    ProgressBar bar(ctx_.progress, label(u, k, n) + " steps", opt_.act_iters);
    const std::int64_t count = c.fp_out.size(0);
    const double before = unit_loss(u, c, true);
    const auto loop_start = std::chrono::steady_clock::now();
    for (std::int64_t t = 0; t < opt_.act_iters; ++t) {
      const at::Tensor idx = batch_rows(count, c.fp_out.device());
      const at::Tensor out = exec.run_nodes(u.first, u.last, sample(c, idx, false), {u.output_value})[0];
      const at::Tensor loss = reconstruction_loss_of_rows(out, c.fp_out, at::Tensor(), idx, opt_.p);
      const double value = loss.item<double>();
      check_finite(value, u, t);
      loss.backward();
      stepping.lr = cosine_lr(opt_.act_after_lr, t, opt_.act_iters);
      stepping.step();
      {
        at::NoGradGuard no_grad;
        for (auto& s : scales) s.clamp_min_(1e-8);
      }
      bar.update(t + 1, "rec " + format_loss(value));
    }
    report.timing.step_iterations = opt_.act_iters;
    report.timing.step_seconds_per_iteration = seconds_since(loop_start) / static_cast<double>(opt_.act_iters);
    report.timing.step_caching_seconds = caching;
    for (const auto& s : steps) (*ctx_.activations)[s.act].qparams.scale = s.scale.detach().clone().reshape({});
    report.loss_final = unit_loss(u, c, true);
    report.timing.seconds += seconds_since(start);
    bar.finish("loss " + format_loss(before) + " -> " + format_loss(report.loss_final));
  }

  RoundingContext& ctx_;
  const ReconstructionOptions& opt_;
  const Graph& graph_;
  Executor fp_;
  at::Generator gen_;
  std::map<int, int> layer_index_, act_index_;
};

void write_curves(RoundingContext& ctx, const ReconstructionOptions& opt, const std::vector<UnitReport>& reports) {
  if (!ctx.files) return;
  std::string base = (ctx.run_name.empty() ? opt.method : ctx.run_name) + "_curves";
  for (char& ch : base)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-') ch = '_';
  std::ostringstream csv;
  csv << "unit,iteration,reconstruction_loss,rounding_loss,beta,unit_seconds_per_iteration,unit_caching_seconds\n"
      << std::setprecision(8);
  for (const auto& r : reports)
    for (const auto& p : r.curve)
      csv << r.name << "," << p.iteration << "," << p.reconstruction << "," << p.rounding << "," << p.beta << ","
          << r.timing.seconds_per_iteration << "," << r.timing.caching_seconds << "\n";
  (*ctx.files)[base + ".csv"] = csv.str();
}

}  // namespace

std::vector<ReconstructionUnit> reconstruction_units(const Graph& graph, Granularity granularity) {
  const std::vector<int> layers = graph.layer_nodes();
  std::vector<ReconstructionUnit> units;
  if (granularity == Granularity::Layer) {
    for (int node : layers) units.push_back(layer_unit(graph, node));
  } else {
    std::vector<ReconstructionUnit> blocks;
    std::map<int, int> depth_votes;
    for (const ResidualBlock& b : find_residual_blocks(graph, /*include_concat=*/true)) {
      ReconstructionUnit u{b.name, *std::min_element(b.nodes.begin(), b.nodes.end()),
                           *std::max_element(b.nodes.begin(), b.nodes.end()) + 1, b.output_value, {}};
      for (int node : layers)
        if (node >= u.first && node < u.last) u.layers.push_back(node);
      if (u.layers.empty()) continue;
      blocks.push_back(u);
      ++depth_votes[name_depth(b.name)];
    }
    // The module depth of blocks ("layer1.block0": 2); layers below a module of that depth that no merge
    // closes (an inverted residual without skip) form a block too.
    int depth = 0;
    for (const auto& [d, votes] : depth_votes)
      if (depth == 0 || votes > depth_votes[depth]) depth = d;
    std::string open_key;
    for (int node : layers) {
      auto in_block = std::find_if(blocks.begin(), blocks.end(), [&](const ReconstructionUnit& b) {
        return node >= b.first && node < b.last;
      });
      if (in_block != blocks.end()) {
        if (units.empty() || units.back().first != in_block->first) units.push_back(*in_block);
        open_key.clear();
        continue;
      }
      const std::string& name = graph.nodes[node].name;
      const std::string key = depth > 0 && name_depth(name) > depth ? name_prefix(name, depth) : "";
      ReconstructionUnit u = layer_unit(graph, node);
      if (!key.empty() && key == open_key) {
        absorb(units.back(), u);
        units.back().name = key;
      } else {
        if (!key.empty()) u.name = key;
        units.push_back(u);
      }
      open_key = key;
    }
  }
  // Units must not overlap in graph order: merge any that do.
  std::sort(units.begin(), units.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<ReconstructionUnit> disjoint;
  for (auto& u : units) {
    if (!disjoint.empty() && u.first < disjoint.back().last) absorb(disjoint.back(), u);
    else disjoint.push_back(std::move(u));
  }
  if (granularity != Granularity::TwoBlocks) return disjoint;
  std::vector<ReconstructionUnit> pairs;
  for (std::size_t i = 0; i < disjoint.size(); i += 2) {
    pairs.push_back(disjoint[i]);
    if (i + 1 < disjoint.size()) absorb(pairs.back(), disjoint[i + 1]);
  }
  return pairs;
}

Granularity parse_granularity(const std::string& text) {
  if (text == "layer") return Granularity::Layer;
  if (text == "block") return Granularity::Block;
  if (text == "two_blocks") return Granularity::TwoBlocks;
  throw Error("unknown granularity '" + text + "' (layer, block, two_blocks)");
}

double BetaSchedule::beta(std::int64_t t, std::int64_t iters) const {
  const double warm = warmup * static_cast<double>(iters);
  if (t < warm) return start;
  const double rel = (static_cast<double>(t) - warm) / std::max(1.0, static_cast<double>(iters) - warm);
  if (cosine) return end + 0.5 * (start - end) * (1 + std::cos(M_PI * std::min(rel, 1.0)));
  return end + (start - end) * std::max(0.0, 1 - rel);
}

namespace {

const char* granularity_name(Granularity g) {
  return g == Granularity::Layer ? "layer" : g == Granularity::Block ? "block" : "two_blocks";
}

// The family's options, each declared once; the schema gives each the default of the family member
// (adaround, brecq, qdrop), kPlain's are placeholders.
const ReconstructionOptions kPlain;
const Option<std::string> kGranularity =
    OptionSpec::text("granularity", granularity_name(kPlain.granularity), "unit of optimization: layer, block (residual/concat block), two_blocks")
        .one_of({"layer", "block", "two_blocks"});
const Option<std::int64_t> kIters =
    OptionSpec::integer("iters", kPlain.iters, "iterations per unit (papers: 10000 AdaRound, 20000 BRECQ/QDrop on GPUs)")
        .range(1, 1e7);
const Option<std::int64_t> kBatchSize =
    OptionSpec::integer("batch_size", kPlain.batch_size, "images per iteration").range(1, 1 << 16);
const Option<double> kLr =
    OptionSpec::number("lr", kPlain.lr, "Adam learning rate of the rounding variables V").range(0, 10, true);
const Option<double> kRoundWeight =
    OptionSpec::number("round_weight", kPlain.round_weight, "lambda of the rounding regularizer (0.1 for MobileNetV2 in BRECQ)")
        .range(0, 1e6);
const Option<double> kBetaStart =
    OptionSpec::number("beta_start", kPlain.beta.start, "regularizer exponent at the start of annealing").range(0, 1e3, true);
const Option<double> kBetaEnd =
    OptionSpec::number("beta_end", kPlain.beta.end, "regularizer exponent at the end").range(0, 1e3, true);
const Option<double> kWarmup =
    OptionSpec::number("warmup", kPlain.beta.warmup, "fraction of iterations with the regularizer off").range(0, 1);
const Option<std::string> kBetaSchedule =
    OptionSpec::text("beta_schedule", kPlain.beta.cosine ? "cosine" : "linear", "annealing of beta: linear (BRECQ), cosine (AIMET)")
        .one_of({"linear", "cosine"});
const Option<std::string> kLoss =
    OptionSpec::text("loss", kPlain.fisher ? "fisher" : "mse", "mse, or fisher (squared error weighted by the Fisher diagonal)")
        .one_of({"mse", "fisher"});
const Option<bool> kActQuant =
    OptionSpec::flag("act_quant", kPlain.act_quant, "activation quantizers on while the rounding is learned");
const Option<double> kDropProb =
    OptionSpec::number("drop_prob", kPlain.drop_prob,
        "QDrop: probability that an activation element skips quantization while learning (needs act_quant)")
        .range(0, 1);
const Option<std::string> kActSteps =
    OptionSpec::text("act_steps", kPlain.act_steps,
        "learn activation steps (LSQ): none, joint (with the rounding, QDrop), after (second pass, BRECQ)")
        .one_of({"none", "joint", "after"});
const Option<double> kActLr =
    OptionSpec::number("act_lr", kPlain.act_lr, "Adam learning rate of steps learned jointly (cosine-annealed)").range(0, 10, true);
const Option<std::int64_t> kActIters =
    OptionSpec::integer("act_iters", kPlain.act_iters, "iterations per unit of the 'after' pass (BRECQ: 5000)").range(1, 1e7);
const Option<double> kActAfterLr =
    OptionSpec::number("act_after_lr", kPlain.act_after_lr, "Adam learning rate of the 'after' pass (cosine-annealed)")
        .range(0, 10, true);
const Option<bool> kLsqGradScale =
    OptionSpec::flag("lsq_grad_scale", kPlain.lsq_grad_scale, "scale step gradients by 1/sqrt(numel * qmax) as LSQ");
const Option<bool> kSkipFirst =
    OptionSpec::flag("skip_first", kPlain.skip_first,
        "leave the first conv/linear at nearest rounding, its output step unlearned, when it is a unit "
        "alone (the BRECQ code's ignore_reconstruction)");
const Option<double> kP =
    OptionSpec::number("p", kPlain.p, "exponent of the 'after' step loss sum|out - target|^p and of the init_images search (BRECQ: 2.4)")
        .range(1, 10);
const Option<std::int64_t> kInitImages =
    OptionSpec::integer("init_images", kPlain.init_images,
        "re-initialise activation ranges on this many calibration images through the model quantized "
        "so far, Lp search of 80 candidates (BRECQ/QDrop code: 64); 0 keeps the calibrator's ranges")
        .range(0, 1 << 20);
const Option<std::int64_t> kRecordEvery =
    OptionSpec::integer("record_every", kPlain.record_every, "loss-curve sampling interval (iterations)").range(1, 1e7);
const Option<std::string> kCachePrecision =
    OptionSpec::text("cache_precision", kPlain.cache_precision,
        "cached unit inputs/targets: auto (float16 when a unit's float32 cache exceeds cache_limit_mb), "
        "float32, float16")
        .one_of({"auto", "float32", "float16"});
const Option<std::int64_t> kCacheLimitMb =
    OptionSpec::integer("cache_limit_mb", kPlain.cache_limit_mb, "float32 cache size of a unit above which auto stores float16")
        .range(1, 1 << 30);

}  // namespace

OptionSchema reconstruction_schema(const ReconstructionOptions& d) {
  return {
      kGranularity.spec(granularity_name(d.granularity)),
      kIters.spec(d.iters),
      kBatchSize.spec(d.batch_size),
      kLr.spec(d.lr),
      kRoundWeight.spec(d.round_weight),
      kBetaStart.spec(d.beta.start),
      kBetaEnd.spec(d.beta.end),
      kWarmup.spec(d.beta.warmup),
      kBetaSchedule.spec(d.beta.cosine ? "cosine" : "linear"),
      kLoss.spec(d.fisher ? "fisher" : "mse"),
      kActQuant.spec(d.act_quant),
      kDropProb.spec(d.drop_prob),
      kActSteps.spec(d.act_steps),
      kActLr.spec(d.act_lr),
      kActIters.spec(d.act_iters),
      kActAfterLr.spec(d.act_after_lr),
      kLsqGradScale.spec(d.lsq_grad_scale),
      kSkipFirst.spec(d.skip_first),
      kP.spec(d.p),
      kInitImages.spec(d.init_images),
      kRecordEvery.spec(d.record_every),
      kCachePrecision.spec(d.cache_precision),
      kCacheLimitMb.spec(d.cache_limit_mb),
  };
}

ReconstructionOptions reconstruction_options(const Options& o, const std::string& method) {
  ReconstructionOptions r;
  r.method = method;
  r.granularity = parse_granularity(kGranularity(o));
  r.iters = kIters(o);
  r.batch_size = kBatchSize(o);
  r.lr = kLr(o);
  r.round_weight = kRoundWeight(o);
  r.beta.start = kBetaStart(o);
  r.beta.end = kBetaEnd(o);
  r.beta.warmup = kWarmup(o);
  r.beta.cosine = kBetaSchedule(o) == "cosine";
  r.fisher = kLoss(o) == "fisher";
  r.act_quant = kActQuant(o);
  r.drop_prob = kDropProb(o);
  r.act_steps = kActSteps(o);
  r.act_lr = kActLr(o);
  r.act_iters = kActIters(o);
  r.cache_precision = kCachePrecision(o);
  r.cache_limit_mb = kCacheLimitMb(o);
  r.act_after_lr = kActAfterLr(o);
  r.lsq_grad_scale = kLsqGradScale(o);
  r.p = kP(o);
  r.skip_first = kSkipFirst(o);
  r.init_images = kInitImages(o);
  r.record_every = kRecordEvery(o);
  if (r.act_steps == "joint" && !r.act_quant)
    throw Error(method + ": act_steps 'joint' needs act_quant: true (the steps are learned while quantizing)");
  if (r.drop_prob > 0 && !r.act_quant) throw Error(method + ": drop_prob needs act_quant: true");
  return r;
}

void initialize_activation_ranges(RoundingContext& context, std::int64_t count, double p) {
  const Graph& g = *context.graph;
  auto& acts = *context.activations;
  const at::Tensor images = context.calibration.head(count);
  std::vector<std::size_t> order(acts.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return g.producer(acts[a].value) < g.producer(acts[b].value); });
  at::NoGradGuard no_grad;
  for (std::size_t i : order) {
    ActivationQuantizer& act = acts[i];
    const int producer = g.producer(act.value);
    Executor exec(g);
    for (const auto& layer : *context.layers)
      if (layer.quantized_weight.defined()) exec.set_weight(layer.node, layer.quantized_weight);
    for (const auto& earlier : acts)
      if (g.producer(earlier.value) < producer) set_fake_quantizer(exec, earlier.value, earlier.qparams);
    const at::Tensor x = producer < 0 ? images : exec.run_nodes(0, producer + 1, {{g.inputs.at(0), images}}, {act.value})[0];
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    double best = std::numeric_limits<double>::infinity();
    for (int k = 0; k < 80; ++k) {
      const Range r{lo * (1 - 0.01 * k), hi * (1 - 0.01 * k)};
      const QParams q = qparams_from_range(act.spec, r);
      const double score = (fake_quantize(x, q) - x).abs().pow(p).mean().item<double>();
      if (score < best) {
        best = score;
        act.range = r;
        act.qparams = q;
      }
    }
  }
}

std::vector<UnitReport> reconstruct(RoundingContext& context, const ReconstructionOptions& options) {
  Engine engine(context, options);
  std::vector<UnitReport> reports = engine.run();
  write_curves(context, options, reports);
  if (context.timings)
    for (const auto& r : reports) context.timings->push_back(r.timing);
  return reports;
}


}  // namespace xdq
