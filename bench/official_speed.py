#!/usr/bin/python3
"""The official BRECQ and QDrop code's block-reconstruction iterations beside xdq's, in one run on the same
machine and threads: ResNet-20 (models/resnet20_fmnist, the same weights) layer1.block0, batch 32, 4-bit
weights, 1 024 calibration images.

Each official side calls the reference implementation's own reconstruction function on its own quantized
model, read from a checkout that is not part of xdq, run for 1 and for 1 + ITERS iterations: the
difference is ITERS iterations without the caching.
  --brecq DIR  github.com/yhhhli/BRECQ: block_reconstruction on its QuantModel, MSE loss, weights only
               (its loop moves batches to 'cuda', which is mapped to the CPU here);
  --qdrop DIR  github.com/wimh966/QDrop: reconstruction on the model its main script builds (BN folded,
               AdaRound weights, LSQ activations at 4 bits observed with MSE on 256 images), dropping 0.5.
The xdq side is build/bin/xdq_bench's lines for the same block (its engine's own loop timing: BRECQ's
weight iteration, QDrop's iteration) in its default layout (channels-last on the CPU) and with Winograd
convolutions where this CPU has them, and the plain ATen forward + backward floor in NCHW; one round of
the bench per round here. Rounds alternate.

Usage: bench/official_speed.py [--brecq DIR] [--qdrop DIR] [--threads 2] [--rounds 3] [--iters 100]
                               [--xdq-bench build/bin/xdq_bench]
"""
import argparse
import pathlib
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

ROOT = pathlib.Path(__file__).resolve().parent.parent


def official_resnet20(official_resnet):
    """xdq's ResNet-20 in the reference code's module types (its BasicBlock), weights loaded by name."""
    Block = official_resnet.BasicBlock

    def stage(cin, cout, stride):
        blocks = []
        for k in range(3):
            down = None
            if k == 0 and (stride != 1 or cin != cout):
                down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            blocks.append(Block(cin if k == 0 else cout, cout, stride if k == 0 else 1, down, norm_layer=nn.BatchNorm2d))
        return nn.Sequential(*blocks)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            self.layer1, self.layer2, self.layer3 = stage(16, 16, 1), stage(16, 32, 2), stage(32, 64, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
            return self.fc(torch.flatten(self.pool(x), 1))

    scripted = torch.jit.load(str(ROOT / "models/resnet20_fmnist/model.pt"))
    state = {}
    for name, value in scripted.state_dict().items():
        name = re.sub(r"\.block(\d)\.", r".\1.", name)
        name = name.replace("downsample.conv.", "downsample.0.").replace("downsample.bn.", "downsample.1.")
        state[name] = value
    model = ResNet20().eval()
    model.load_state_dict(state)
    with torch.no_grad():  # the same function as the TorchScript file
        x = torch.rand(8, 1, 28, 28)
        assert torch.allclose(model(x), scripted(x), atol=1e-5), "official-structured ResNet-20 differs from the model file"
    return model, scripted


def calibration_images(scripted):
    """The first 1 024 Fashion-MNIST training images, preprocessed as the model file says."""
    import gzip
    import numpy
    mean, std = float(scripted.input_mean[0]), float(scripted.input_std[0])
    raw = gzip.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").read()
    images = torch.from_numpy(numpy.frombuffer(raw, numpy.uint8, offset=16).copy()).view(-1, 1, 28, 28)[:1024]
    return (images.float() / 255 - mean) / std


def seconds_per_iteration(run, iters):
    """run(n) reconstructs with n iterations and returns its seconds; the caching cancels in the difference."""
    return (run(1 + iters) - run(1)) / iters


def official_brecq_setup(official_dir):
    """A function timing the reference BRECQ's block_reconstruction of layer1.block0 for n iterations."""
    sys.path.insert(0, str(official_dir))
    import models.resnet as official_resnet
    from quant import QuantModel, QuantModule, block_reconstruction

    model, scripted = official_resnet20(official_resnet)
    cali = calibration_images(scripted)
    qnn = QuantModel(model, {"n_bits": 4, "channel_wise": True, "scale_method": "mse"}, {"n_bits": 4, "scale_method": "mse"})
    qnn.set_quant_state(True, False)
    with torch.no_grad():  # the weight quantizers' ranges, as the reference's main script sets them
        qnn(cali[:64])
    block = qnn.model.layer1[0]
    plain_quantizers = {m: m.weight_quantizer for m in block.modules() if isinstance(m, QuantModule)}

    to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):  # the reference loop's .to('cuda'): stay on the CPU
        if args and args[0] == "cuda":
            return self
        return to(self, *args, **kwargs)

    def run(n):
        torch.Tensor.to = to_cpu
        try:
            start = time.perf_counter()
            block_reconstruction(qnn, block, cali, batch_size=32, iters=n, weight=0.01, opt_mode="mse", act_quant=False)
            return time.perf_counter() - start
        finally:
            torch.Tensor.to = to
            for m, q in plain_quantizers.items():  # the next call starts from the same quantizers
                m.weight_quantizer = q

    return run


def official_qdrop_setup(official_dir):
    """A function timing the reference QDrop's reconstruction of layer1.block0 for n iterations."""
    import copy
    import types
    # Its solver's utilities import easydict for config files, which this script does not read.
    sys.modules.setdefault("easydict", types.SimpleNamespace(EasyDict=dict))
    sys.path.insert(0, str(official_dir))
    sys.path.insert(0, str(official_dir / "qdrop" / "solver"))
    import qdrop.model.resnet as official_resnet
    from fold_bn import search_fold_and_remove_bn
    from main_imagenet import quantize_model
    from recon import reconstruction
    from qdrop.quantization.state import enable_calibration_woquantization, enable_quantization, disable_all
    import logging
    logging.disable(logging.INFO)  # its main script logs every module and state change at INFO

    model, scripted = official_resnet20(official_resnet)
    cali = calibration_images(scripted)
    search_fold_and_remove_bn(model)
    qconfig = types.SimpleNamespace(
        a_qconfig=types.SimpleNamespace(quantizer="LSQFakeQuantize", observer="MSEObserver", bit=4, symmetric=False, ch_axis=-1),
        w_qconfig=types.SimpleNamespace(quantizer="AdaRoundFakeQuantize", observer="MSEObserver", bit=4, symmetric=False, ch_axis=0))
    model = quantize_model(model, qconfig).eval()
    fp_model = copy.deepcopy(model)
    disable_all(fp_model)
    with torch.no_grad():  # its main script's calibration
        enable_calibration_woquantization(model, quantizer_type="act_fake_quant")
        model(cali[:256])
        enable_calibration_woquantization(model, quantizer_type="weight_fake_quant")
        model(cali[:2])
    enable_quantization(model)
    # Its ResNet-18 W2A4 configuration's reconstruction settings.
    recon = dict(batch_size=32, scale_lr=4.0e-5, warm_up=0.2, weight=0.01, b_range=[20, 2], keep_gpu=True,
                 round_mode="learned_hard_sigmoid", drop_prob=0.5)

    def run(n):
        m = copy.deepcopy(model)  # the reconstruction rewrites the block's weights and quantizers
        start = time.perf_counter()
        reconstruction(m, fp_model, m.layer1[0], fp_model.layer1[0], cali, types.SimpleNamespace(iters=n, **recon))
        return time.perf_counter() - start

    return run


def xdq_iteration_seconds(xdq_bench, threads):
    """From one round of xdq_bench (its table's columns: NCHW, NHWC, NHWC+Winograd): per iteration line,
    the default layout's (channels-last on the CPU) and the Winograd column's seconds (None where this
    CPU has none); and the plain ATen block's NCHW floor."""
    out = subprocess.run([xdq_bench, "--threads", str(threads), "--rounds", "1"], capture_output=True, text=True, check=True).stdout

    def row(name):
        line = next(l for l in out.splitlines() if l.strip().startswith(name))
        return [float(ms) / 1e3 for ms in re.findall(r"([\d.]+) ms", line)]

    lines = {"brecq": row("BRECQ weight iteration"), "qdrop": row("QDrop iteration")}
    return {m: (v[1], v[2] if len(v) > 2 else None) for m, v in lines.items()}, row("plain ATen fwd+bwd (floor)")[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brecq", type=pathlib.Path, help="a checkout of the official BRECQ code")
    parser.add_argument("--qdrop", type=pathlib.Path, help="a checkout of the official QDrop code")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--xdq-bench", default=str(ROOT / "build/bin/xdq_bench"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setups = {"brecq": official_brecq_setup, "qdrop": official_qdrop_setup}
    runs = {m: setups[m](getattr(args, m)) for m in setups if getattr(args, m) is not None}
    if not runs:
        parser.error("give --brecq, --qdrop or both")
    official = {m: [] for m in runs}
    xdq = {m: [] for m in runs}
    winograd = {m: [] for m in runs}
    floor = []
    for _ in range(args.rounds):
        for m, run in runs.items():
            official[m].append(seconds_per_iteration(run, args.iters))
        lines, f = xdq_iteration_seconds(args.xdq_bench, args.threads)
        floor.append(f)
        for m in runs:
            xdq[m].append(lines[m][0])
            if lines[m][1] is not None:
                winograd[m].append(lines[m][1])
    ms = lambda v: statistics.median(v) * 1e3
    f = ms(floor)
    print(f"threads {args.threads}, rounds {args.rounds} (medians); ResNet-20 layer1.block0, batch 32, W4"
          + (" (QDrop: A4)" if "qdrop" in runs else ""))
    for m in runs:
        name = {"brecq": "BRECQ", "qdrop": "QDrop"}[m]
        o, x = ms(official[m]), ms(xdq[m])
        print(f"official {name} iteration {o:.2f} ms   xdq {name} iteration {x:.2f} ms   xdq / official {x / o:.3f} (target <= 0.5)")
        if winograd[m]:
            w = ms(winograd[m])
            print(f"  xdq with convolution: winograd {w:.2f} ms   xdq / official {w / o:.3f} (target <= 0.5)")
        print(f"  official / floor {o / f:.3f}   xdq / floor {x / f:.3f}")
    print(f"plain ATen fwd+bwd of the block (NCHW) {f:.2f} ms")


if __name__ == "__main__":
    main()
