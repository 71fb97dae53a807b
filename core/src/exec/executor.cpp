#include "xdq/exec/executor.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/exec/convolution.h"

namespace xdq {

Executor::Executor(Graph graph)
    : graph_(std::move(graph)),
      device_(graph_.device()),
      hooks_(graph_.num_values),
      elementwise_(graph_.num_values, 0),
      weights_(graph_.nodes.size()),
      last_use_(graph_.num_values, -1) {
  for (std::size_t i = 0; i < graph_.nodes.size(); ++i)
    for (int v : graph_.nodes[i].inputs) last_use_[v] = static_cast<int>(i);
  for (int v : graph_.outputs) last_use_[v] = static_cast<int>(graph_.nodes.size());
  for (const auto& c : graph_.constants) last_use_[c.first] = static_cast<int>(graph_.nodes.size());
  clear_weights();
  plan_epilogues();
  plan_blocked_values();
  plan_per_sample_prefix();
}

namespace {
// Generic operators whose every output sample depends on the same sample of their tensor inputs alone,
// with the same arithmetic whatever the batch (elementwise maps, pooling, flattening after the batch).
bool per_sample_operator(const std::string& op) {
  static const std::vector<std::string> ops = {
      "aten::relu",      "aten::relu_",         "aten::relu6",      "aten::hardtanh",   "aten::hardtanh_",
      "aten::sigmoid",   "aten::hardsigmoid",   "aten::hardswish",  "aten::silu",       "aten::add",
      "aten::add_",      "aten::mul",           "aten::max_pool2d", "aten::avg_pool2d", "aten::adaptive_avg_pool2d",
      "aten::flatten",   "aten::dropout",       "aten::contiguous"};
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}
}  // namespace

void Executor::plan_per_sample_prefix() {
  std::vector<const c10::IValue*> constant(graph_.num_values, nullptr);
  for (const auto& c : graph_.constants) constant[c.first] = &c.second;
  auto per_sample = [&](const Node& n) {
    // A linear is a GEMM, whose rounding follows the number of rows.
    if (n.kind == OpKind::Conv || n.kind == OpKind::BatchNorm) return true;
    if (n.kind != OpKind::Generic || !per_sample_operator(n.op)) return false;
    for (int v : n.inputs)
      if (constant[v] && constant[v]->isTensor()) return false;  // might broadcast across samples
    if (n.op == "aten::flatten") {
      const c10::IValue* start = n.inputs.size() > 1 ? constant[n.inputs[1]] : nullptr;
      return start && start->isInt() && start->toInt() >= 1;
    }
    return true;
  };
  int k = 0;
  while (k < static_cast<int>(graph_.nodes.size()) && per_sample(graph_.nodes[k])) ++k;
  // What leaves the prefix: the values the rest reads, and the graph outputs made before the rest.
  std::vector<int> results = range_inputs(k, static_cast<int>(graph_.nodes.size()));
  for (int v : graph_.outputs)
    if (graph_.producer(v) < k && std::find(results.begin(), results.end(), v) == results.end()) results.push_back(v);
  // A graph input (or a constant returned as it is) among them needs the whole batch.
  const bool made_in_prefix =
      std::all_of(results.begin(), results.end(), [&](int v) { return graph_.producer(v) >= 0; });
  per_sample_prefix_ = graph_.inputs.size() == 1 && made_in_prefix ? k : 0;
  prefix_results_ = per_sample_prefix_ > 0 ? results : std::vector<int>();
}

void Executor::plan_epilogues() {
  epilogues_.assign(graph_.nodes.size(), Epilogue());
  if (graph_.convolution != ConvAlgorithm::Winograd) return;
  for (std::size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (graph_.nodes[i].kind != OpKind::Conv) continue;
    Epilogue e;
    int value = graph_.nodes[i].outputs[0], next = graph_.only_reader(value);
    e.skipped.push_back(value);
    if (next >= 0 && graph_.nodes[next].op == "aten::add" && graph_.nodes[next].inputs.size() == 3) {
      const Node& add = graph_.nodes[next];
      const int other = add.inputs[0] == value ? add.inputs[1] : add.inputs[0];
      if (other == value || graph_.producer(other) >= static_cast<int>(i)) continue;  // residual made later
      e.add = next;
      e.residual = other;
      e.alpha = add.inputs[2];
      value = add.outputs[0];
      next = graph_.only_reader(value);
      e.skipped.push_back(value);
    }
    if (next >= 0 && graph_.nodes[next].op == "aten::relu") {
      e.relu = next;
      value = graph_.nodes[next].outputs[0];
    } else {
      e.skipped.pop_back();  // the last value is the output
    }
    e.output = value;
    if (e.add >= 0 || e.relu >= 0) epilogues_[i] = e;
  }
}

void Executor::plan_blocked_values() {
  blockable_.assign(graph_.num_values, 0);
  std::vector<int> residual_of(graph_.nodes.size(), -1);  // per add node fused as an epilogue: its residual
  for (const Epilogue& e : epilogues_)
    if (e.add >= 0) residual_of[e.add] = e.residual;
  for (const Epilogue& e : epilogues_) {
    if (e.output < 0 || std::count(graph_.outputs.begin(), graph_.outputs.end(), e.output)) continue;
    const std::vector<int> readers = graph_.consumers(e.output);
    blockable_[e.output] = !readers.empty() && std::all_of(readers.begin(), readers.end(), [&](int r) {
      const Node& n = graph_.nodes[r];
      const bool fused_input = n.kind == OpKind::Conv && epilogues_[r].output >= 0 && n.inputs[0] == e.output &&
                               std::count(n.inputs.begin(), n.inputs.end(), e.output) == 1;
      return fused_input || residual_of[r] == e.output;
    });
  }
}

bool Executor::residual_buffer_free(int residual, int conv, int first, const std::vector<c10::IValue>& values,
                                    const std::vector<int>& wanted) const {
  const Node& add = graph_.nodes[epilogues_[conv].add];
  if (last_use_[residual] != epilogues_[conv].add || graph_.producer(residual) < first || residual == graph_.nodes[conv].inputs[0] ||
      std::count(add.inputs.begin(), add.inputs.end(), residual) != 1 || std::count(wanted.begin(), wanted.end(), residual))
    return false;
  // Made in this pass, read by nothing after the add: free when `values` holds the only reference to the
  // tensor and the tensor the only one to its memory (no view, capture or hook keeps either).
  const at::Tensor& r = values[residual].toTensor();
  return r.use_count() == 1 && r.storage().use_count() == 1;
}

int Executor::blocked_values() const { return static_cast<int>(std::count(blockable_.begin(), blockable_.end(), 1)); }

int Executor::fused_epilogues() const {
  return static_cast<int>(std::count_if(epilogues_.begin(), epilogues_.end(), [](const Epilogue& e) { return e.output >= 0; }));
}

namespace {
// Which of a fused convolution's activations (its input value, its residual value or -1) are held blocked.
WinogradBlocking held_blocked(int input, int residual, const std::vector<char>& blocked) {
  return {blocked[input] != 0, residual >= 0 && blocked[residual] != 0};
}
}  // namespace

bool Executor::fuses_epilogue(int i, int last, const std::vector<c10::IValue>& values, const std::vector<char>& blocked,
                              const std::vector<int>& wanted, const std::vector<c10::IValue>* all) const {
  const Epilogue& e = epilogues_[i];
  // Not with autograd: fused, a reconstruction block's forward + backward measured slower (README).
  if (e.output < 0 || all || at::GradMode::is_enabled() || std::max(e.add, e.relu) >= last) return false;
  for (int v : e.skipped)
    if (hooks_[v] || std::count(wanted.begin(), wanted.end(), v)) return false;
  const Node& conv = graph_.nodes[i];
  const at::Tensor& x = values[conv.inputs[0]].toTensor();
  const at::Tensor& w = weights_[i].defined() ? weights_[i] : conv.weight;
  at::Tensor residual;
  if (e.add >= 0) {
    const c10::IValue &r = values[e.residual], &alpha = values[e.alpha];
    if (!r.isTensor() || !(alpha.isInt() && alpha.toInt() == 1)) return false;
    residual = r.toTensor();
  }
  // Also checks the residual's shape.
  return winograd_applies(x, w, conv.conv, {residual, e.relu >= 0}, held_blocked(conv.inputs[0], e.residual, blocked));
}

void Executor::set_value_hook(int value, ValueHook hook) {
  hooks_.at(value) = std::move(hook);
  elementwise_[value] = 0;
}
void Executor::set_elementwise_hook(int value, ValueHook hook) {
  set_value_hook(value, std::move(hook));
  elementwise_[value] = 1;
}
void Executor::clear_value_hooks() {
  std::fill(hooks_.begin(), hooks_.end(), nullptr);
  std::fill(elementwise_.begin(), elementwise_.end(), 0);
}
namespace {
at::Tensor in_layout(const at::Tensor& t, bool channels_last) {
  if (!channels_last || t.dim() != 4) return t;
  // A one-channel NCHW tensor passes as channels-last, but ATen's convolution reads its strides as NCHW
  // and writes an NCHW output, reordered after (4x the stem's convolution time at 28x28): NHWC strides.
  if (t.size(1) == 1 && t.stride(1) != 1) return t.clone(at::MemoryFormat::ChannelsLast);
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}
// An input on `device`: a CPU tensor goes to a GPU through pinned memory, without waiting for the copy.
at::Tensor on_device(const at::Tensor& t, const c10::Device& device, bool channels_last) {
  if (t.device() == device) return in_layout(t, channels_last);
  const at::Tensor moved = t.is_cpu() && device.is_cuda() ? t.pin_memory().to(device, /*non_blocking=*/true) : t.to(device);
  return in_layout(moved, channels_last);
}
c10::IValue on_device(const c10::IValue& v, const c10::Device& device, bool channels_last) {
  return v.isTensor() ? c10::IValue(on_device(v.toTensor(), device, channels_last)) : v;
}
}  // namespace

void Executor::set_weight(int node, at::Tensor weight) {
  weights_.at(node) = graph_.nodes.at(node).kind == OpKind::Conv ? in_layout(weight, graph_.channels_last) : std::move(weight);
}

void Executor::clear_weights() {
  std::fill(weights_.begin(), weights_.end(), at::Tensor());
  if (!graph_.channels_last) return;
  for (std::size_t i = 0; i < graph_.nodes.size(); ++i)
    if (graph_.nodes[i].kind == OpKind::Conv) weights_[i] = in_layout(graph_.nodes[i].weight, true);
}

std::int64_t evaluation_sub_batch(std::int64_t batch, std::int64_t bytes_per_sample, std::int64_t cache_bytes) {
  if (bytes_per_sample <= 0) return 0;
  std::int64_t size = 1;
  while (2 * size <= kMaxSubBatch && 2 * size * bytes_per_sample <= cache_bytes / 2) size *= 2;
  return size >= kMinSubBatch && batch > size ? size : 0;
}

std::int64_t last_level_cache_bytes() {
  // Linux's view of the first CPU's caches: glibc's sysconf gives some virtual machines' whole-host L3
  // (320 MiB on a 2-core one whose CPU has 32 MiB).
  std::int64_t bytes = 0;
  for (int level = 0, index = 0; index < 16; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int l = 0;
    std::int64_t size = 0;
    std::string unit;
    if (!(level_file >> l) || !(size_file >> size)) break;
    size_file >> unit;
    size *= unit == "K" ? 1024 : unit == "M" ? 1024 * 1024 : 1;
    if (l >= level) level = l, bytes = size;
  }
  if (bytes > 0) return bytes;
  const long reported = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return reported > 0 ? reported : 0;
}

std::int64_t Executor::sub_batch(const at::Tensor& input) const {
  // 4-d only: a 3-d input may be one unbatched image, whose first dimension is its channels.
  if (per_sample_prefix_ == 0 || !device_.is_cpu() || at::GradMode::is_enabled() || input.dim() != 4) return 0;
  for (std::size_t v = 0; v < hooks_.size(); ++v)
    if (hooks_[v] && !elementwise_[v]) return 0;  // a hook that observes may depend on the batch
  const std::int64_t per_sample = input.numel() * static_cast<std::int64_t>(input.element_size()) / std::max<std::int64_t>(1, input.size(0));
  static const std::int64_t cache = last_level_cache_bytes();
  return evaluation_sub_batch(input.size(0), static_cast<std::int64_t>(activation_ratio_->load() * per_sample), cache);
}

std::vector<c10::IValue> Executor::run_in_sub_batches(const at::Tensor& input, std::int64_t size) const {
  const std::int64_t batch = input.size(0), count = (batch + size - 1) / size;
  std::vector<std::vector<at::Tensor>> parts(prefix_results_.size());
  for (std::int64_t k = 0, begin = 0; k < count; ++k) {
    const std::int64_t end = begin + batch / count + (k < batch % count ? 1 : 0);  // equal sizes, +-1
    std::vector<c10::IValue> values(graph_.num_values);
    const at::Tensor x = on_device(input.slice(0, begin, end), device_, graph_.channels_last);
    values[graph_.inputs[0]] = hooks_[graph_.inputs[0]] ? hooks_[graph_.inputs[0]](x) : x;
    std::vector<at::Tensor> captured(prefix_results_.size());
    execute(0, per_sample_prefix_, values, prefix_results_, captured);
    for (std::size_t j = 0; j < captured.size(); ++j) {
      if (!captured[j].defined() || captured[j].dim() == 0 || captured[j].size(0) != end - begin)
        throw Error("value '" + graph_.value_names.at(prefix_results_[j]) + "' is not one row per sample");
      parts[j].push_back(captured[j]);
    }
    begin = end;
  }
  std::vector<c10::IValue> values(graph_.num_values);
  for (std::size_t j = 0; j < parts.size(); ++j) values[prefix_results_[j]] = at::cat(parts[j]);
  std::vector<at::Tensor> none;
  execute(per_sample_prefix_, static_cast<int>(graph_.nodes.size()), values, {}, none);
  std::vector<c10::IValue> outputs;
  for (int v : graph_.outputs) outputs.push_back(values[v]);
  return outputs;
}

std::vector<c10::IValue> Executor::run(const std::vector<c10::IValue>& inputs) const {
  if (inputs.size() != graph_.inputs.size())
    throw Error("model expects " + std::to_string(graph_.inputs.size()) + " inputs, got " + std::to_string(inputs.size()));
  const at::Tensor input = inputs.size() == 1 && inputs[0].isTensor() ? inputs[0].toTensor() : at::Tensor();
  if (input.defined())
    if (const std::int64_t size = sub_batch(input)) return run_in_sub_batches(input, size);
  std::vector<c10::IValue> values(graph_.num_values);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    c10::IValue value = on_device(inputs[i], device_, graph_.channels_last);
    if (hooks_[graph_.inputs[i]] && value.isTensor()) value = hooks_[graph_.inputs[i]](value.toTensor());
    values[graph_.inputs[i]] = std::move(value);
  }
  std::vector<at::Tensor> none;
  std::int64_t largest = 0;
  execute(0, static_cast<int>(graph_.nodes.size()), values, {}, none, nullptr, &largest);
  if (input.defined() && input.numel() > 0)
    activation_ratio_->store(static_cast<double>(largest) / static_cast<double>(input.numel() * input.element_size()));
  std::vector<c10::IValue> outputs;
  for (int v : graph_.outputs) outputs.push_back(values[v]);
  return outputs;
}

std::vector<at::Tensor> Executor::run_nodes(int first, int last, const std::vector<std::pair<int, at::Tensor>>& given,
                                            const std::vector<int>& wanted) const {
  if (first < 0 || last > static_cast<int>(graph_.nodes.size()) || first > last)
    throw Error("node range [" + std::to_string(first) + ", " + std::to_string(last) + ") outside the graph");
  std::vector<c10::IValue> values(graph_.num_values);
  std::vector<at::Tensor> captured(wanted.size());
  for (const auto& [v, tensor] : given) {
    const at::Tensor moved = on_device(tensor, device_, graph_.channels_last);
    at::Tensor value = hooks_.at(v) ? hooks_[v](moved) : moved;
    for (std::size_t k = 0; k < wanted.size(); ++k)
      if (wanted[k] == v) captured[k] = value;
    values[v] = std::move(value);
  }
  execute(first, last, values, wanted, captured);
  for (std::size_t k = 0; k < wanted.size(); ++k)
    if (!captured[k].defined())
      throw Error("value '" + graph_.value_names.at(wanted[k]) + "' is not produced by nodes [" + std::to_string(first) +
                  ", " + std::to_string(last) + ")");
  return captured;
}

std::vector<int> Executor::range_inputs(int first, int last) const {
  std::vector<bool> inside(graph_.num_values, false), constant(graph_.num_values, false);
  for (const auto& c : graph_.constants) constant[c.first] = true;
  std::vector<int> out;
  for (int i = first; i < last; ++i) {
    for (int v : graph_.nodes[i].inputs)
      if (!inside[v] && !constant[v] && std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    for (int v : graph_.nodes[i].outputs) inside[v] = true;
  }
  return out;
}

std::vector<c10::IValue> Executor::all_values(const at::Tensor& example) const {
  std::vector<c10::IValue> values(graph_.num_values), all(graph_.num_values);
  const at::Tensor input = on_device(example, device_, graph_.channels_last);
  for (int v : graph_.inputs) {
    values[v] = hooks_[v] ? hooks_[v](input) : input;
    all[v] = values[v];
  }
  for (const auto& c : graph_.constants) all[c.first] = c.second;
  std::vector<at::Tensor> none;
  execute(0, static_cast<int>(graph_.nodes.size()), values, {}, none, &all);
  return all;
}

std::vector<bool> Executor::tensor_values(const at::Tensor& example) const {
  std::vector<bool> is_tensor;
  for (const c10::IValue& v : all_values(example)) is_tensor.push_back(v.isTensor());
  return is_tensor;
}

int Executor::tensor_inputs_start(int first, int last, const std::vector<bool>& is_tensor) const {
  for (bool moved = true; moved;) {
    moved = false;
    for (int v : range_inputs(first, last))
      if (!is_tensor.at(v) && graph_.producer(v) >= 0 && graph_.producer(v) < first) {
        first = graph_.producer(v);
        moved = true;
      }
  }
  return first;
}

void Executor::execute(int first, int last, std::vector<c10::IValue>& values, const std::vector<int>& wanted,
                       std::vector<at::Tensor>& captured, std::vector<c10::IValue>* all, std::int64_t* largest) const {
  for (const auto& c : graph_.constants) values[c.first] = c.second;
  std::vector<char> blocked(graph_.num_values, 0);  // values held in oneDNN's blocked layout
  auto produce = [&](int v, c10::IValue value) {
    if (hooks_[v] && value.isTensor()) {
      const at::Tensor before = value.toTensor();
      value = hooks_[v](before);
      if (blocked[v] && !(value.isTensor() && value.toTensor().sizes() == before.sizes() && value.toTensor().is_contiguous()))
        throw Error("the elementwise hook on value '" + graph_.value_names.at(v) + "' changed its shape or memory layout");
    }
    if (all) (*all)[v] = value;
    if (largest && value.isTensor()) *largest = std::max<std::int64_t>(*largest, value.toTensor().nbytes());
    for (std::size_t k = 0; k < wanted.size(); ++k)
      if (wanted[k] == v && value.isTensor()) captured[k] = value.toTensor();
    values[v] = std::move(value);
  };
  std::vector<c10::IValue> stack;
  std::vector<bool> fused(graph_.nodes.size(), false);  // nodes a convolution ran as its epilogue
  auto keeps_blocked = [&](int v) {
    return blockable_[v] && (!hooks_[v] || elementwise_[v]) && !std::count(wanted.begin(), wanted.end(), v);
  };
  auto as_logical = [&](int v) {
    if (!blocked[v]) return;
    values[v] = from_blocked(values[v].toTensor());
    blocked[v] = 0;
  };
  for (int i = first; i < last; ++i) {
    const Node& node = graph_.nodes[i];
    if (fused[i]) {
      for (int v : node.inputs)
        if (last_use_[v] == i) values[v] = c10::IValue();
      continue;
    }
    const bool fuses = node.kind == OpKind::Conv && fuses_epilogue(i, last, values, blocked, wanted, all);
    if (!fuses) std::for_each(node.inputs.begin(), node.inputs.end(), as_logical);
    switch (node.kind) {
      case OpKind::Conv: {
        const at::Tensor& w = weights_[i].defined() ? weights_[i] : node.weight;
        if (fuses) {
          const Epilogue& e = epilogues_[i];
          const bool reuse = e.add >= 0 && residual_buffer_free(e.residual, i, first, values, wanted);  // before a copy
          const ConvEpilogue epilogue{e.add >= 0 ? values[e.residual].toTensor() : at::Tensor(), e.relu >= 0, reuse};
          WinogradBlocking blocking = held_blocked(node.inputs[0], e.residual, blocked);
          blocking.output = keeps_blocked(e.output);
          const at::Tensor y = winograd_conv2d_fused(values[node.inputs[0]].toTensor(), w, node.bias, node.conv, epilogue, blocking);
          blocked[e.output] = blocking.output;
          produce(e.output, blocking.output ? y : in_layout(y, graph_.channels_last));
          for (int n : {e.add, e.relu})
            if (n >= 0) fused[n] = true;
          break;
        }
        // In layout even after a one-channel input, where ATen's choice follows strides that cannot tell.
        produce(node.outputs[0], in_layout(convolve(values[node.inputs[0]].toTensor(), w, node.bias, node.conv, graph_.convolution),
                                           graph_.channels_last));
        break;
      }
      case OpKind::Linear: {
        const at::Tensor& w = weights_[i].defined() ? weights_[i] : node.weight;
        produce(node.outputs[0], at::linear(values[node.inputs[0]].toTensor(), w, node.bias));
        break;
      }
      case OpKind::BatchNorm:
        produce(node.outputs[0], at::batch_norm(values[node.inputs[0]].toTensor(), node.bn.gamma, node.bn.beta,
                                                node.bn.mean, node.bn.var, false, 0.0, node.bn.eps, true));
        break;
      case OpKind::Generic: {
        stack.clear();
        for (int v : node.inputs) stack.push_back(values[v]);
        node.run(stack);
        if (stack.size() != node.outputs.size())
          throw Error("operator " + node.op + " at '" + node.name + "' left " + std::to_string(stack.size()) +
                      " values for " + std::to_string(node.outputs.size()) + " outputs");
        for (std::size_t k = 0; k < node.outputs.size(); ++k) produce(node.outputs[k], std::move(stack[k]));
        break;
      }
    }
    for (int v : node.inputs)
      if (last_use_[v] == i) values[v] = c10::IValue();
  }
}

at::Tensor Executor::forward(const at::Tensor& input) const {
  auto outputs = run({input});
  if (outputs.empty()) throw Error("model has no outputs");
  if (outputs[0].isTensor()) return outputs[0].toTensor();
  if (outputs[0].isTuple()) return outputs[0].toTupleRef().elements().at(0).toTensor();
  throw Error("model's first output is not a tensor");
}

}  // namespace xdq
