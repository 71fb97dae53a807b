"""Checks an ONNX model against TensorRT's rules for explicit quantization, from the ONNX file alone.

Usage: check_tensorrt_qdq.py MODEL.onnx

TensorRT builds an explicitly quantized engine from QuantizeLinear/DequantizeLinear pairs and accepts only
symmetric signed int8 there: every zero point an int8 zero, positive scales, one scale per activation
tensor, and per-channel weight scales along the output-channel axis. A convolution, Gemm or MatMul runs in
int8 when its data input comes through a Q/DQ pair and its weight through a DequantizeLinear of an int8
initializer (pre-quantized weights); any other one runs in float.

Prints `int8_layers K of N` and one line per float layer; each broken rule is a line starting with
`error:` naming the node or tensor, and the exit status is 1 then.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTED = ("Conv", "Gemm", "MatMul")


def output_axis(node):
    """The weight axis of `node` that holds its output channels."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1  # MatMul: [K, N]


def check(model):
    graph = model.graph
    errors, float_layers = [], []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        errors.append(f"opset {opset}: per-channel Q/DQ needs opset 13")
    initializers = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{node.op_type} '{node.name or node.output[0]}'"
        if len(node.input) < 3 or node.input[2] not in initializers:
            errors.append(f"{where}: no zero-point initializer (TensorRT needs an int8 zero point of 0)")
            continue
        zero_point = initializers[node.input[2]]
        if zero_point.data_type != onnx.TensorProto.INT8:
            errors.append(f"{where}: zero point '{zero_point.name}' is "
                          f"{onnx.TensorProto.DataType.Name(zero_point.data_type)}, TensorRT takes int8 only")
        elif np.any(numpy_helper.to_array(zero_point) != 0):
            errors.append(f"{where}: zero point '{zero_point.name}' is not 0 (TensorRT quantizes symmetrically)")
        scale = numpy_helper.to_array(initializers[node.input[1]]) if node.input[1] in initializers else None
        if scale is None or np.any(scale <= 0):
            errors.append(f"{where}: scale '{node.input[1]}' is not a positive initializer")
            continue
        weight = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is None:
            if scale.size != 1:
                errors.append(f"{where}: {scale.size} scales on an activation (TensorRT takes one per tensor)")
        elif weight.data_type != onnx.TensorProto.INT8:
            errors.append(f"{where}: weight '{weight.name}' is not int8")

    def dequantized_weight(node, name):
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in initializers:
            return False
        scale = numpy_helper.to_array(initializers[dq.input[1]])
        if scale.size > 1:
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            channels = initializers[dq.input[0]].dims[output_axis(node)]
            if axis != output_axis(node) or scale.size != channels:
                errors.append(f"{node.op_type} '{node.name}': weight scales on axis {axis} ({scale.size}), "
                              f"not per output channel (axis {output_axis(node)}, {channels})")
        return True

    def quantized_activation(name):
        dq = producer.get(name)
        return dq is not None and dq.op_type == "DequantizeLinear" and \
            producer.get(dq.input[0]) is not None and producer[dq.input[0]].op_type == "QuantizeLinear"

    layers = [n for n in graph.node if n.op_type in WEIGHTED]
    for node in layers:
        if not (quantized_activation(node.input[0]) and dequantized_weight(node, node.input[1])):
            float_layers.append(node)
    return errors, layers, float_layers


def main():
    model = onnx.load(sys.argv[1])
    errors, layers, float_layers = check(model)
    print(f"int8_layers {len(layers) - len(float_layers)} of {len(layers)}")
    for node in float_layers:
        print(f"float layer: {node.op_type} '{node.name}' (its input or weight has no Q/DQ)")
    for e in errors:
        print("error: " + e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
