#!/usr/bin/python3
"""Traces a torchvision classifier into the TorchScript file an xdq experiment names.

Usage: tools/trace_torchvision.py MODEL OUT.pt [--weights FILE | --pretrained] [--size 224]
  MODEL         a torchvision.models constructor: resnet18, resnet50, mobilenet_v2, efficientnet_b0, regnet_x_400mf, ...
  --weights     a state_dict saved with torch.save (e.g. the file torchvision downloads to ~/.cache/torch/hub/checkpoints)
  --pretrained  torchvision's default ImageNet weights (downloaded by torchvision when not cached)
  --size        the input side the model is traced at and declares (input_size attribute), default 224
Transformers (vit_b_16, swin_t, ...) are traced with autograd on, so that nn.MultiheadAttention takes its
decomposed path (linear, bmm, softmax), which xdq imports and quantizes, rather than the fused
aten::_native_multi_head_attention it takes without autograd (the same function).
Without weights the model keeps its random initialization. The file records input_size = [size, size]: an
experiment whose preprocess crop or input_size disagrees is refused. Pair it with `preprocess: imagenet`.
"""
import argparse

import torch
import torchvision.models as tvm


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("out")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights")
    source.add_argument("--pretrained", action="store_true")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    make = getattr(tvm, args.model, None)
    if make is None or not callable(make):
        parser.error("torchvision.models has no model '%s'" % args.model)
    model = make(weights="DEFAULT") if args.pretrained else make()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    model.eval()
    traced = torch.jit.trace(model, torch.zeros(1, 3, args.size, args.size), check_trace=False)
    traced._c._register_attribute("input_size", torch._C.ListType.ofInts(), [args.size, args.size])
    traced.save(args.out)
    print("wrote %s (%s, input 3x%dx%d)" % (args.out, args.model, args.size, args.size))


if __name__ == "__main__":
    main()
