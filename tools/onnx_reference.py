#!/usr/bin/env python3
"""A reference evaluator for the ONNX files xdq exports, written from the ONNX operator specification
with PyTorch's functional ops (no onnxruntime on Debian 12). It knows the operators xdq writes, in float32,
with QuantizeLinear's division and round-half-to-even as the specification states them.

    python3 tools/onnx_reference.py MODEL.onnx PARITY.pt   # max relative error vs xdq's logits in parity.pt
"""
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

INT_TYPES = {onnx.TensorProto.INT8: (-128, 127), onnx.TensorProto.UINT8: (0, 255)}


def attributes(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def per_axis(t, x, axis):
    """A scale or zero point shaped to broadcast along `axis` of x (a scalar stays a scalar)."""
    if t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quantize(x, scale, zero, axis, elem_range):
    lo, hi = elem_range
    s, z = per_axis(scale, x, axis), per_axis(zero.double(), x, axis)
    return torch.clamp(torch.round(x / s).double() + z, lo, hi)


def conv(x, w, b, a):
    pads = a.get("pads", [0, 0, 0, 0])
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError("asymmetric pads")
    return F.conv2d(x, w, b, a.get("strides", [1, 1]), pads[:2], a.get("dilations", [1, 1]), a.get("group", 1))


def pool(x, a, kind):
    pads = a.get("pads", [0, 0, 0, 0])
    k, s, ceil = a["kernel_shape"], a.get("strides", [1, 1]), bool(a.get("ceil_mode", 0))
    if kind == "max":
        return F.max_pool2d(x, k, s, pads[:2], a.get("dilations", [1, 1]), ceil)
    return F.avg_pool2d(x, k, s, pads[:2], ceil, bool(a.get("count_include_pad", 0)))


def run_node(op, ins, a, types):
    x = ins[0]
    if op == "QuantizeLinear":
        return quantize(x, ins[1], ins[2], a.get("axis", 1), types[2])
    if op == "DequantizeLinear":
        axis = a.get("axis", 1)
        return ((x - per_axis(ins[2].double(), x, axis)) * per_axis(ins[1].double(), x, axis)).float()
    if op == "QLinearConv":
        xs, xz, w, ws, wz, ys, yz = ins[1:8]
        acc = conv((x - xz.double()), (w - per_axis(wz.double(), w, 0)), None, a)
        if len(ins) > 8:
            acc = acc + ins[8].double().reshape(1, -1, 1, 1)
        y = acc * (xs.double() * ws.double().reshape(1, -1, 1, 1) / ys.double())
        return torch.clamp(torch.round(y) + yz.double(), *types[7])
    table = {
        "Conv": lambda: conv(x, ins[1], ins[2] if len(ins) > 2 else None, a),
        "Gemm": lambda: F.linear(x, ins[1] if a.get("transB", 0) else ins[1].t(), ins[2] if len(ins) > 2 else None),
        "Relu": lambda: F.relu(x),
        "Clip": lambda: torch.clamp(x, *([ins[1].item(), ins[2].item()] if len(ins) > 1 else [a["min"], a["max"]])),
        "Sigmoid": lambda: torch.sigmoid(x), "Tanh": lambda: torch.tanh(x), "Erf": lambda: torch.erf(x),
        "HardSigmoid": lambda: torch.clamp(x * a.get("alpha", 0.2) + a.get("beta", 0.5), 0, 1),
        "LeakyRelu": lambda: F.leaky_relu(x, a.get("alpha", 0.01)),
        "Add": lambda: x + ins[1], "Sub": lambda: x - ins[1], "Mul": lambda: x * ins[1], "Div": lambda: x / ins[1],
        "Concat": lambda: torch.cat(ins, a["axis"]),
        "MaxPool": lambda: pool(x, a, "max"), "AveragePool": lambda: pool(x, a, "avg"),
        "GlobalAveragePool": lambda: x.mean((2, 3), keepdim=True),
        "GlobalMaxPool": lambda: x.amax((2, 3), keepdim=True),
        "Flatten": lambda: x.reshape(int(np.prod(x.shape[:a.get("axis", 1)])), -1),
        "Reshape": lambda: x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(ins[1].tolist())]),
        "Transpose": lambda: x.permute(a["perm"]),
        "Identity": lambda: x,
        "Softmax": lambda: torch.softmax(x, a.get("axis", -1)),
        "LogSoftmax": lambda: torch.log_softmax(x, a.get("axis", -1)),
        "ReduceMean": lambda: x.mean(a["axes"], keepdim=bool(a.get("keepdims", 1))),
        "ReduceSum": lambda: x.sum(ins[1].tolist() if len(ins) > 1 else a["axes"], keepdim=bool(a.get("keepdims", 1))),
        "Squeeze": lambda: x.squeeze((ins[1].tolist() if len(ins) > 1 else a["axes"])[0]),
        "Unsqueeze": lambda: x.unsqueeze((ins[1].tolist() if len(ins) > 1 else a["axes"])[0]),
        "BatchNormalization": lambda: F.batch_norm(x, ins[3], ins[4], ins[1], ins[2], False, 0.0, a.get("epsilon", 1e-5)),
    }
    if op not in table:
        raise ValueError("operator " + op + " is not known to the reference evaluator")
    return table[op]()


def evaluate(model, inputs):
    values, types = {}, {}
    for init in model.graph.initializer:
        values[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
        types[init.name] = INT_TYPES.get(init.data_type)
    values[model.graph.input[0].name] = inputs
    for node in model.graph.node:
        ins = [values[i] for i in node.input]
        in_types = [types.get(i) for i in node.input]
        a = attributes(node)
        if node.op_type == "Split":
            sizes = ins[1].tolist() if len(ins) > 1 else a.get("split", [ins[0].shape[a["axis"]] // len(node.output)] * len(node.output))
            outs = torch.split(ins[0], sizes, a["axis"])
        else:
            outs = [run_node(node.op_type, ins, a, in_types)]
        for name, value in zip(node.output, outs):
            values[name] = value
            types[name] = in_types[2] if node.op_type == "QuantizeLinear" else (
                in_types[7] if node.op_type == "QLinearConv" else None)
    return [values[o.name] for o in model.graph.output]


def main():
    model = onnx.load(sys.argv[1])
    parity = torch.jit.load(sys.argv[2])
    with torch.no_grad():
        out = evaluate(model, parity.inputs)[0].float()
    ref = parity.logits
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    print(f"max_relative_error {err:.3e} top1_agreement {agree:.4f}")


if __name__ == "__main__":
    main()
