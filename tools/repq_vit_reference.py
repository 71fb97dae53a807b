#!/usr/bin/python3
"""Runs the official RepQ-ViT code (github zkkli/RepQ-ViT, classification/test_quant.py, unmodified) on the
weights of an xdq zoo ViT, for the parity table in docs/transformers.md.

Usage: tools/repq_vit_reference.py --repq REPQ/classification --timm TIMM_SRC --model models/vit_fmnist/model.pt
           --w-bits 4 --a-bits 4 --seed 0 [--test-count 10000]
REPQ and TIMM_SRC are fetched source trees (RepQ-ViT's classification folder; pytorch-image-models' root, the
folder holding timm/). They are put on sys.path for this run only.

The model is torchvision's VisionTransformer as tools/train_vit.py trains it; its weights are copied into
timm's VisionTransformer of the same architecture (the FP32 outputs of the two are compared first), then
RepQ-ViT's own build_model patches timm's attention with its MatMul modules and its main() quantizes and
evaluates. Its data loaders are replaced by Fashion-MNIST ones: the calibration batch is the `count` images
xdq draws for the same seed (Dataset::subset: the first `count` of torch.randperm(60000) seeded with the
seed), the test set the t10k images; both normalized with the model's input_mean and input_std.
Prints "repq_vit top1 <percent>" on its last line.
"""
import argparse
import contextlib
import io
import os
import re
import sys
import types

import torch

from fashion_mnist import split

def normalized(name, mean, std):
    images, labels = split(name)
    return (images - mean) / std, labels


def timm_copy(traced, heads):
    """timm's VisionTransformer with the traced torchvision model's weights (a trace keeps no head count)."""
    from timm.models.vision_transformer import VisionTransformer
    p = {k: v.detach().clone() for k, v in traced.state_dict().items()}
    width = p["class_token"].shape[-1]
    depth = len({k.split(".")[2] for k in p if k.startswith("encoder.layers.")})
    patch = p["conv_proj.weight"].shape[-1]
    tokens = p["encoder.pos_embedding"].shape[1] - 1
    size = int(round(tokens ** 0.5)) * patch
    mlp = p["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0]
    model = VisionTransformer(img_size=size, patch_size=patch, in_chans=p["conv_proj.weight"].shape[1],
                              num_classes=p["heads.head.weight"].shape[0], embed_dim=width, depth=depth,
                              num_heads=heads, mlp_ratio=mlp / width, qkv_bias=True)
    names = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding", "patch_embed.proj.weight": "conv_proj.weight",
             "patch_embed.proj.bias": "conv_proj.bias", "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias",
             "head.weight": "heads.head.weight", "head.bias": "heads.head.bias"}
    for b in range(depth):
        tv = "encoder.layers.encoder_layer_%d." % b
        for ours, theirs in [("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.proj", "self_attention.out_proj"),
                             ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3")]:
            for t in ("weight", "bias"):
                names["blocks.%d.%s.%s" % (b, ours, t)] = tv + theirs + "." + t
        names["blocks.%d.attn.qkv.weight" % b] = tv + "self_attention.in_proj_weight"
        names["blocks.%d.attn.qkv.bias" % b] = tv + "self_attention.in_proj_bias"
    state = {ours: p[theirs] for ours, theirs in names.items()}
    missing = set(model.state_dict()) - set(state)
    if missing:
        sys.exit("no torchvision weight for timm's " + ", ".join(sorted(missing)))
    model.load_state_dict(state)
    return model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, kind in [("--repq", str), ("--timm", str), ("--model", str), ("--w-bits", int), ("--a-bits", int),
                       ("--seed", int)]:
        parser.add_argument(name, type=kind, required=True)
    parser.add_argument("--count", type=int, default=32, help="calibration images (RepQ-ViT: 32)")
    parser.add_argument("--test-count", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--heads", type=int, help="attention heads (default: the recipe.yaml beside the model)")
    a = parser.parse_args()
    if a.heads is None:
        import yaml
        a.heads = yaml.safe_load(open(os.path.join(os.path.dirname(a.model), "recipe.yaml")))["model"]["heads"]
    torch.set_num_threads(a.threads)
    sys.path[:0] = [a.repq, a.timm]
    traced = torch.jit.load(a.model).eval()
    mean, std = traced.input_mean[0], traced.input_std[0]
    model = timm_copy(traced, a.heads)
    train_x, _ = normalized("train", mean, std)
    test_x, test_y = normalized("t10k", mean, std)
    test_x, test_y = test_x[:a.test_count], test_y[:a.test_count]
    with torch.no_grad():
        gap = (model(test_x[:256]) - traced(test_x[:256])).abs().max().item()
    print("timm copy vs the TorchScript model: max |logit difference| %.3g on 256 images" % gap)
    if gap > 1e-3:
        sys.exit("the timm copy does not compute the model's function")
    calibration = train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(a.seed))[:a.count]]
    run_official(a, model, calibration, test_x, test_y)


def run_official(a, model, calibration, test_x, test_y):
    import utils  # RepQ-ViT's; its build_model patches timm's attention with MatMul modules
    sys.modules["utils.build_model"].timm.create_model = lambda name, pretrained=True: model
    import test_quant
    test_quant.build_dataset = lambda args: ([(calibration, torch.zeros(len(calibration), dtype=torch.long))],
                                             [(test_x[b:b + 500], test_y[b:b + 500]) for b in range(0, len(test_x), 500)])
    test_quant.args = types.SimpleNamespace(model="deit_tiny", dataset="", calib_batchsize=a.count, val_batchsize=500,
                                            num_workers=0, device="cpu", print_freq=10 ** 9, seed=a.seed,
                                            w_bits=a.w_bits, a_bits=a.a_bits)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        test_quant.main()
    found = re.findall(r"\* Prec@1 ([0-9.]+)", out.getvalue())
    if not found:
        sys.exit("RepQ-ViT printed no top-1:\n" + out.getvalue())
    print("repq_vit top1 %s" % found[-1])


if __name__ == "__main__":
    main()
