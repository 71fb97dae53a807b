#!/usr/bin/python3
"""The official BRECQ code's block-reconstruction iteration beside xdq's, in one run on the same machine
and threads: ResNet-20 (models/resnet20_fmnist, the same weights) layer1.block0, batch 32, 4-bit
weights, MSE reconstruction loss, 1 024 calibration images.

The official side calls the reference implementation's own block_reconstruction on its own QuantModel
(read from OFFICIAL, a checkout of github.com/yhhhli/BRECQ that is not part of xdq; its loop moves
batches to 'cuda', which is mapped to the CPU here), run for 1 and for 1 + ITERS iterations: the
difference is ITERS iterations without the caching. The xdq side is build/bin/xdq_bench's line for the
same block (its engine's own loop timing in its default layout, channels-last on the CPU, and the plain
ATen forward + backward floor in NCHW), one round of the bench per round here. Rounds alternate.

Usage: bench/official_brecq_speed.py OFFICIAL [--threads 2] [--rounds 3] [--iters 100] [--xdq-bench build/bin/xdq_bench]
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


def official_iteration_seconds(official_dir, iters):
    sys.path.insert(0, str(official_dir))
    import models.resnet as official_resnet
    from quant import QuantModel, QuantModule, block_reconstruction

    model, scripted = official_resnet20(official_resnet)
    mean, std = float(scripted.input_mean[0]), float(scripted.input_std[0])
    import gzip
    import numpy
    raw = gzip.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").read()
    images = torch.from_numpy(numpy.frombuffer(raw, numpy.uint8, offset=16).copy()).view(-1, 1, 28, 28)[:1024]
    cali = (images.float() / 255 - mean) / std
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

    return (run(1 + iters) - run(1)) / iters


def xdq_iteration_seconds(xdq_bench, threads):
    """xdq's BRECQ weight iteration in its default layout (channels-last on the CPU), with Winograd
    convolutions (None where this CPU has none), and the plain ATen block's NCHW floor, from one round of
    xdq_bench (its table's columns: NCHW, NHWC, NHWC+Winograd)."""
    out = subprocess.run([xdq_bench, "--threads", str(threads), "--rounds", "1"], capture_output=True, text=True, check=True).stdout

    def row(name):
        line = next(l for l in out.splitlines() if l.strip().startswith(name))
        return [float(ms) / 1e3 for ms in re.findall(r"([\d.]+) ms", line)]

    brecq = row("BRECQ weight iteration")
    return brecq[1], brecq[2] if len(brecq) > 2 else None, row("plain ATen fwd+bwd (floor)")[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", type=pathlib.Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--xdq-bench", default=str(ROOT / "build/bin/xdq_bench"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    official, xdq, winograd, floor = [], [], [], []
    for _ in range(args.rounds):
        official.append(official_iteration_seconds(args.official, args.iters))
        x, w, f = xdq_iteration_seconds(args.xdq_bench, args.threads)
        xdq.append(x)
        floor.append(f)
        if w is not None:
            winograd.append(w)
    o, x, f = (statistics.median(v) * 1e3 for v in (official, xdq, floor))
    print(f"threads {args.threads}, rounds {args.rounds} (medians); ResNet-20 layer1.block0, batch 32, W4, mse loss")
    print(f"official BRECQ iteration {o:.2f} ms   xdq BRECQ iteration {x:.2f} ms   xdq / official {x / o:.3f} (target <= 0.5)")
    if winograd:
        w = statistics.median(winograd) * 1e3
        print(f"xdq with convolution: winograd {w:.2f} ms   xdq / official {w / o:.3f} (target <= 0.5)")
    print(f"plain ATen fwd+bwd of the block (NCHW) {f:.2f} ms   official / floor {o / f:.3f}   xdq / floor {x / f:.3f}")

if __name__ == "__main__":
    main()
