// oneDNN's Winograd convolution as an autograd function (built when oneDNN's headers are found).
// oneDNN runs it on activations blocked by 16 channels (nChw16c); a channels-last tensor with 16 channels
// already lies that way, so it is used in place, any other is reordered in and out by oneDNN.
#include <torch/csrc/autograd/custom_function.h>

#include <dnnl.hpp>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>

#include "xdq/error.h"
#include "xdq/exec/convolution.h"

namespace xdq {
namespace {

using Tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;
constexpr auto kF32 = dnnl::memory::data_type::f32;
constexpr std::int64_t kBlock = 16;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// oneDNN's description of a tensor as it lies in memory (any strides).
dnnl::memory::desc described(const at::Tensor& t) {
  return dnnl::memory::desc(dims(t.sizes().begin(), t.sizes().end()), kF32, dims(t.strides().begin(), t.strides().end()));
}

// A tensor's own memory, laid out as `desc` says (by default: as its strides say).
dnnl::memory memory_of(const at::Tensor& t, const dnnl::memory::desc& desc) {
  return dnnl::memory(desc, cpu_engine(), t.data_ptr<float>());
}
dnnl::memory memory_of(const at::Tensor& t) { return memory_of(t, described(t)); }

// Every primitive takes its scratchpad (the transformed tiles: megabytes) from one buffer per thread that
// only grows: oneDNN's own would be allocated at every call, and the fresh pages' faults took 30 % of
// an evaluation's time.
dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::memory scratchpad_for(const dnnl::memory::desc& want) {
  thread_local at::Tensor buffer;
  const auto bytes = static_cast<std::int64_t>(want.get_size());
  if (!buffer.defined() || buffer.numel() < bytes) buffer = at::empty({bytes}, at::kByte);
  return dnnl::memory(want, cpu_engine(), buffer.data_ptr());
}

// The primitives of one convolution shape, made once per shape and thread (making them runs oneDNN's
// search over its implementations).
struct Shape {
  std::int64_t n, c, k, h, w, pad;
  bool bias;
  bool residual = false, relu = false;  // the epilogue run inside the kernel (oneDNN's post-ops)
  bool operator<(const Shape& o) const {
    return std::tie(n, c, k, h, w, pad, bias, residual, relu) <
           std::tie(o.n, o.c, o.k, o.h, o.w, o.pad, o.bias, o.residual, o.relu);
  }
};

struct Primitives {
  dnnl::convolution_forward::primitive_desc forward_desc;
  dnnl::convolution_forward forward;
  // Made at the first backward pass.
  std::unique_ptr<dnnl::convolution_backward_data::primitive_desc> to_input_desc;
  std::unique_ptr<dnnl::convolution_backward_data> to_input;
  std::unique_ptr<dnnl::convolution_backward_weights::primitive_desc> to_weights_desc;
  std::unique_ptr<dnnl::convolution_backward_weights> to_weights;
};

struct ConvDescs {
  dnnl::memory::desc src, weights, bias, dst;
  dnnl::memory::dims stride, padding;
};

ConvDescs descs_of(const Shape& s) {
  const std::int64_t out_h = s.h + 2 * s.pad - 2, out_w = s.w + 2 * s.pad - 2;
  return {dnnl::memory::desc({s.n, s.c, s.h, s.w}, kF32, Tag::nChw16c),
          dnnl::memory::desc({s.k, s.c, 3, 3}, kF32, Tag::any),
          s.bias ? dnnl::memory::desc({s.k}, kF32, Tag::x) : dnnl::memory::desc(),
          dnnl::memory::desc({s.n, s.k, out_h, out_w}, kF32, Tag::nChw16c),
          {1, 1},
          {s.pad, s.pad}};
}

// The forward's attributes: the user scratchpad, and the epilogue: dst += conv (the residual written
// into dst before), then ReLU.
dnnl::primitive_attr forward_attr(const Shape& s) {
  dnnl::primitive_attr attr = user_scratchpad();
  dnnl::post_ops ops;
  if (s.residual) ops.append_sum(1.0f);
  if (s.relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  attr.set_post_ops(ops);
  return attr;
}

// The shape's primitives, or null where oneDNN has no Winograd kernel for it on this CPU.
Primitives* primitives(const Shape& s) {
  thread_local std::map<Shape, std::unique_ptr<Primitives>> made;
  auto it = made.find(s);
  if (it != made.end()) return it->second.get();
  if (made.size() >= 256) made.clear();  // batch sizes vary between passes; keep the cache bounded
  std::unique_ptr<Primitives> p;
  try {
    const ConvDescs d = descs_of(s);
    auto desc = s.bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                         dnnl::algorithm::convolution_winograd, d.src, d.weights,
                                                         d.bias, d.dst, d.stride, d.padding, d.padding)
                       : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                         dnnl::algorithm::convolution_winograd, d.src, d.weights,
                                                         d.dst, d.stride, d.padding, d.padding);
    dnnl::convolution_forward::primitive_desc pd(desc, forward_attr(s), cpu_engine());
    p.reset(new Primitives{pd, dnnl::convolution_forward(pd), nullptr, nullptr, nullptr, nullptr});
  } catch (const dnnl::error&) {
    p.reset();  // no Winograd implementation for this shape here
  }
  return made.emplace(s, std::move(p)).first->second.get();
}

// The shape's primitives; throws where oneDNN has none on this CPU.
Primitives& available_primitives(const Shape& s) {
  Primitives* found = primitives(s);
  if (!found) throw Error("winograd_conv2d: oneDNN has no Winograd kernel for this convolution on this CPU");
  return *found;
}

// The shape's primitives with the backward ones made.
Primitives& primitives_for_backward(const Shape& s) {
  Primitives& p = available_primitives(s);
  if (p.to_input) return p;
  const ConvDescs d = descs_of(s);
  p.to_input_desc.reset(new dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_winograd, d.src, d.weights, d.dst, d.stride,
                                            d.padding, d.padding),
      user_scratchpad(), cpu_engine(), p.forward_desc));
  auto weights_desc = s.bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_winograd, d.src,
                                                                        d.weights, d.bias, d.dst, d.stride, d.padding,
                                                                        d.padding)
                             : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_winograd, d.src,
                                                                        d.weights, d.dst, d.stride, d.padding,
                                                                        d.padding);
  p.to_weights_desc.reset(
      new dnnl::convolution_backward_weights::primitive_desc(weights_desc, user_scratchpad(), cpu_engine(), p.forward_desc));
  p.to_weights.reset(new dnnl::convolution_backward_weights(*p.to_weights_desc));
  p.to_input.reset(new dnnl::convolution_backward_data(*p.to_input_desc));
  return p;
}

Shape shape_of(at::IntArrayRef x, const at::Tensor& w, const ConvAttrs& attrs, bool bias) {
  return {x[0], x[1], w.size(0), x[2], x[3], attrs.padding[0], bias};
}

// Whether `t` holds an activation in the blocked layout: a contiguous [N, C/16, H, W, 16] float32 CPU tensor.
bool is_blocked_activation(const at::Tensor& t) {
  return t.is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 5 && t.size(4) == kBlock && t.is_contiguous();
}

// The 4-d sizes [N, C, H, W] an activation stands for: its own, or a blocked one's (empty when `t` is
// not such a tensor).
std::vector<std::int64_t> logical_sizes(const at::Tensor& t, bool blocked) {
  if (blocked) {
    if (!is_blocked_activation(t)) return {};
    return {t.size(0), t.size(1) * kBlock, t.size(2), t.size(3)};
  }
  if (t.dim() != 4) return {};
  return t.sizes().vec();
}

// Memory laid out as `desc`, in a fresh tensor of `options` (kept alive by `storage`).
dnnl::memory allocated(const dnnl::memory::desc& desc, const at::TensorOptions& options, at::Tensor& storage) {
  storage = at::empty({static_cast<std::int64_t>(desc.get_size() / sizeof(float))}, options);
  return memory_of(storage, desc);
}

// `t` reordered into the layout `want` (kept alive by `storage`).
dnnl::memory reordered(const at::Tensor& t, const dnnl::memory::desc& want, dnnl::stream& stream, at::Tensor& storage) {
  dnnl::memory out = allocated(want, t.options(), storage);
  dnnl::memory in = memory_of(t);
  dnnl::reorder(in, out).execute(stream, in, out);
  return out;
}

// Whether a 4-d activation already lies in the blocked layout: channels-last with 16 channels.
bool lies_blocked(const at::Tensor& t) { return t.size(1) == kBlock && t.is_contiguous(at::MemoryFormat::ChannelsLast); }

// A 4-d activation in the blocked layout: the tensor's own memory when it already lies that way, else a
// reordered copy (kept alive by `storage`).
dnnl::memory blocked(const at::Tensor& t, const dnnl::memory::desc& want, dnnl::stream& stream, at::Tensor& storage) {
  if (lies_blocked(t)) {
    storage = t;
    return memory_of(t, want);
  }
  return reordered(t, want, stream, storage);
}

// ATen's rule for a convolution's output layout: channels-last when the input or the weight is (the
// executor keeps weights channels-last, and a one-channel input cannot tell).
at::MemoryFormat output_format(const at::Tensor& x, const at::Tensor& w) {
  return x.suggest_memory_format() == at::MemoryFormat::ChannelsLast || w.suggest_memory_format() == at::MemoryFormat::ChannelsLast
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

// A tensor of `like`'s options in `format` holding a blocked oneDNN result: written in place
// where the layouts agree, else reordered out of `scratch`.
struct Unblocked {
  at::Tensor tensor, scratch;
  dnnl::memory memory;
};
Unblocked unblocked_output(at::IntArrayRef sizes, const at::Tensor& like, at::MemoryFormat format,
                           const dnnl::memory::desc& blocked_desc) {
  Unblocked u;
  u.tensor = at::empty(sizes, like.options(), format);
  u.memory = lies_blocked(u.tensor) ? memory_of(u.tensor, blocked_desc) : allocated(blocked_desc, like.options(), u.scratch);
  return u;
}
void finish(Unblocked& u, dnnl::stream& stream) {
  if (!u.scratch.defined()) return;
  dnnl::memory out = memory_of(u.tensor);
  dnnl::reorder(u.memory, out).execute(stream, u.memory, out);
}

// The convolution, and the residual added (when defined: dst holds it before the kernel runs) and ReLU
// where the primitives run them; x, the residual and the result laid out as `blocking` says.
at::Tensor forward_pass(const Primitives& p, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                        const at::Tensor& residual = {}, const WinogradBlocking& blocking = {},
                        bool residual_buffer_free = false) {
  dnnl::stream stream(cpu_engine());
  at::Tensor x_storage, w_storage;
  const dnnl::memory::desc& dst_desc = p.forward_desc.dst_desc();
  dnnl::memory src = blocking.input ? memory_of(x, p.forward_desc.src_desc())
                                    : blocked(x, p.forward_desc.src_desc(), stream, x_storage);
  // The weight is reordered at every call: the optimizers change it every step.
  dnnl::memory weights = reordered(w, p.forward_desc.weights_desc(), stream, w_storage);
  const auto& dst_dims = dst_desc.dims();
  Unblocked out;
  const at::MemoryFormat format = blocking.input ? at::MemoryFormat::ChannelsLast : output_format(x, w);
  const bool lies_as_output =
      residual.defined() && (blocking.output ? blocking.residual
                                             : !blocking.residual && format == at::MemoryFormat::ChannelsLast && lies_blocked(residual));
  const bool in_place = residual_buffer_free && lies_as_output && !residual.storage().is_alias_of(x.storage());
  if (in_place) {  // dst (the residual) += the convolution
    out.tensor = residual;
    out.memory = memory_of(residual, dst_desc);
  } else if (blocking.output) {
    out.tensor = at::empty({dst_dims[0], dst_dims[1] / kBlock, dst_dims[2], dst_dims[3], kBlock}, x.options());
    out.memory = memory_of(out.tensor, dst_desc);
  } else {
    out = unblocked_output({dst_dims[0], dst_dims[1], dst_dims[2], dst_dims[3]}, x, format, dst_desc);
  }
  if (residual.defined() && !in_place) {
    if (blocking.residual || lies_blocked(residual)) {
      // dst lies as the residual: a plain copy (oneDNN's reorder between equal layouts is serial)
      at::from_blob(out.memory.get_data_handle(), residual.sizes(), residual.strides(), residual.options()).copy_(residual);
    } else {
      dnnl::memory in = memory_of(residual);
      dnnl::reorder(in, out.memory).execute(stream, in, out.memory);
    }
  }
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, out.memory},
                                             {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.forward_desc.scratchpad_desc())}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, memory_of(bias, p.forward_desc.bias_desc()));
  p.forward.execute(stream, args);
  finish(out, stream);
  stream.wait();
  return out.tensor;
}

struct WinogradConv : public torch::autograd::Function<WinogradConv> {
  // `bias` is an empty tensor for none (autograd's apply takes no undefined tensor).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& w, const at::Tensor& bias, ConvAttrs attrs) {
    const bool has_bias = bias.numel() > 0;
    const at::Tensor y = forward_pass(available_primitives(shape_of(x.sizes(), w, attrs, has_bias)), x, w,
                                      has_bias ? bias.contiguous() : at::Tensor());
    ctx->save_for_backward({x, w});
    ctx->saved_data["padding"] = attrs.padding[0];
    ctx->saved_data["bias"] = has_bias;
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    ConvAttrs attrs;
    attrs.padding = {ctx->saved_data["padding"].toInt(), ctx->saved_data["padding"].toInt()};
    const Shape s = shape_of(x.sizes(), w, attrs, has_bias);
    const Primitives& p = primitives_for_backward(s);
    dnnl::stream stream(cpu_engine());
    at::Tensor dy_storage, w_storage, x_storage;
    const at::Tensor dy = grads[0].contiguous(output_format(x, w));
    const dnnl::memory diff_dst = blocked(dy, p.forward_desc.dst_desc(), stream, dy_storage);
    at::Tensor dx, dw, db;
    std::vector<Unblocked> outputs;
    if (ctx->needs_input_grad(0)) {
      const dnnl::memory weights = reordered(w, p.to_input_desc->weights_desc(), stream, w_storage);
      outputs.push_back(unblocked_output(x.sizes(), x, x.suggest_memory_format(), p.forward_desc.src_desc()));
      p.to_input->execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, weights},
                                   {DNNL_ARG_DIFF_SRC, outputs.back().memory},
                                   {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.to_input_desc->scratchpad_desc())}});
    }
    if (ctx->needs_input_grad(1) || (has_bias && ctx->needs_input_grad(2))) {
      const dnnl::memory src = blocked(x, p.forward_desc.src_desc(), stream, x_storage);
      const auto& wd = *p.to_weights_desc;
      at::Tensor dw_blocked;
      dnnl::memory diff_weights = allocated(wd.diff_weights_desc(), w.options(), dw_blocked);
      std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_WEIGHTS, diff_weights},
                                                 {DNNL_ARG_SCRATCHPAD, scratchpad_for(wd.scratchpad_desc())}};
      if (has_bias) {
        db = at::empty({s.k}, w.options());
        args.emplace(DNNL_ARG_DIFF_BIAS, memory_of(db, wd.diff_bias_desc()));
      }
      p.to_weights->execute(stream, args);
      dw = at::empty(w.sizes(), w.options(), w.suggest_memory_format());
      dnnl::memory dw_out = memory_of(dw);
      dnnl::reorder(diff_weights, dw_out).execute(stream, diff_weights, dw_out);
    }
    for (Unblocked& u : outputs) finish(u, stream);
    stream.wait();
    if (!outputs.empty()) dx = outputs.front().tensor;
    return {dx, dw, db, at::Tensor()};
  }
};

// Whether the convolution of an input of 4-d sizes `x` (empty: none) has the form oneDNN's Winograd kernels
// take (whether this CPU has them is the primitives' business).
bool winograd_form(const at::Tensor& input, at::IntArrayRef x, const at::Tensor& w, const ConvAttrs& attrs) {
  return input.is_cpu() && w.is_cpu() && input.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat &&
         x.size() == 4 && w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3 && attrs.groups == 1 &&
         attrs.stride == std::vector<std::int64_t>{1, 1} && attrs.dilation == std::vector<std::int64_t>{1, 1} &&
         attrs.padding[0] == attrs.padding[1] && attrs.padding[0] <= 1 && x[1] % kBlock == 0 && w.size(0) % kBlock == 0 &&
         w.size(1) == x[1];
}

// Whether `r` (blocked or not) can be the residual of a convolution of that form: a float32 CPU tensor of
// its output's shape.
bool residual_fits(const at::Tensor& r, bool blocked, at::IntArrayRef x, const at::Tensor& w, const ConvAttrs& attrs) {
  const std::int64_t out_h = x[2] + 2 * attrs.padding[0] - 2, out_w = x[3] + 2 * attrs.padding[1] - 2;
  return r.is_cpu() && r.scalar_type() == at::kFloat &&
         at::IntArrayRef(logical_sizes(r, blocked)) == at::IntArrayRef{x[0], w.size(0), out_h, out_w};
}

}  // namespace

bool winograd_built() { return true; }

bool winograd_applies(const at::Tensor& x, const at::Tensor& w, const ConvAttrs& attrs, const ConvEpilogue& epilogue,
                      const WinogradBlocking& blocking) {
  const std::vector<std::int64_t> sizes = logical_sizes(x, blocking.input);
  if (!winograd_form(x, sizes, w, attrs) ||
      (epilogue.residual.defined() && !residual_fits(epilogue.residual, blocking.residual, sizes, w, attrs)) ||
      (blocking.residual && !epilogue.residual.defined()))
    return false;
  Shape s = shape_of(sizes, w, attrs, false);
  s.residual = epilogue.residual.defined();
  s.relu = epilogue.relu;
  return primitives(s) != nullptr;
}

namespace {
// Refuses what the kernels do not take (the forward pass looks the primitives up once and refuses a
// shape without them on this CPU).
void check_form(const char* function, const at::Tensor& x, at::IntArrayRef sizes, const at::Tensor& w,
                const at::Tensor& bias, const ConvAttrs& attrs) {
  if (!winograd_form(x, sizes, w, attrs))
    throw Error(std::string(function) + ": not a convolution oneDNN's Winograd kernels take (input " +
                std::to_string(x.dim()) + "-d" + (x.dim() == 5 && sizes.empty() ? " but not blocked" : "") + ", weight " +
                std::to_string(w.dim()) + "-d)");
  if (bias.defined() && (!bias.is_cpu() || bias.scalar_type() != at::kFloat || bias.numel() != w.size(0)))
    throw Error(std::string(function) + ": the bias must be " + std::to_string(w.size(0)) + " float32 values on the CPU");
}
}  // namespace

at::Tensor winograd_conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const ConvAttrs& attrs) {
  check_form("winograd_conv2d", x, logical_sizes(x, false), w, bias, attrs);
  const at::Tensor b = bias.defined() ? bias : at::empty({0}, w.options());
  return WinogradConv::apply(x.contiguous(x.suggest_memory_format()), w, b, attrs)[0];
}

at::Tensor winograd_conv2d_fused(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const ConvAttrs& attrs,
                                 const ConvEpilogue& epilogue, const WinogradBlocking& blocking) {
  const std::vector<std::int64_t> sizes = logical_sizes(x, blocking.input);
  check_form("winograd_conv2d_fused", x, sizes, w, bias, attrs);
  const at::Tensor& r = epilogue.residual;
  if (r.defined() ? !residual_fits(r, blocking.residual, sizes, w, attrs) : blocking.residual)
    throw Error(std::string("winograd_conv2d_fused: the residual must be a float32 CPU tensor of the output's shape") +
                (blocking.residual ? ", blocked" : ""));
  Shape s = shape_of(sizes, w, attrs, bias.defined());
  s.residual = r.defined();
  s.relu = epilogue.relu;
  at::NoGradGuard no_grad;
  return forward_pass(available_primitives(s), blocking.input ? x : x.contiguous(x.suggest_memory_format()), w,
                      bias.defined() ? bias.contiguous() : at::Tensor(), r, blocking, epilogue.residual_buffer_free);
}

at::Tensor from_blocked(const at::Tensor& blocked) {
  if (!is_blocked_activation(blocked))
    throw Error("from_blocked: expected a contiguous [N, C/16, H, W, 16] float32 CPU tensor, got " +
                std::to_string(blocked.dim()) + "-d");
  const std::vector<std::int64_t> sizes = logical_sizes(blocked, true);
  if (blocked.size(1) == 1) return blocked.view({sizes[0], sizes[2], sizes[3], kBlock}).permute({0, 3, 1, 2});  // NHWC already
  at::Tensor out = at::empty(sizes, blocked.options(), at::MemoryFormat::ChannelsLast);
  dnnl::stream stream(cpu_engine());
  dnnl::memory in = memory_of(blocked, dnnl::memory::desc(sizes, kF32, Tag::nChw16c));
  dnnl::memory to = memory_of(out);
  dnnl::reorder(in, to).execute(stream, in, to);
  stream.wait();
  return out;
}

}  // namespace xdq
