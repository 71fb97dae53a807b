"""Evaluation throughput of a torchvision model at 224x224, batch 64: xdq's executor in FP32 and with W8A8
fake quantization (minmax, academic preset) against PyTorch eager FP32, rounds interleaved in one process
and medians compared (the machine's noise hits all three alike).

Usage: PYTHONPATH=build/python /usr/bin/python3 bench/imagenet_throughput.py [--model resnet18] [--threads 2]
       [--rounds 5] [--batch 64]
Weights are random (speed does not depend on them); the same LibTorch runs both, threads set once for both.
"""
import argparse
import os
import statistics
import tempfile
import time

import torch
import torchvision.models as tvm

import xdq


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = getattr(tvm, args.model)().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, args.model + ".pt")
        with torch.no_grad():
            torch.jit.trace(model, x[:1]).save(path)
        fp32 = xdq.Model(path)
        w8a8 = fp32.quantize(x[:32], bits="w8a8", calibrator="minmax")

    def timed(f):
        start = time.perf_counter()
        f(x)
        return time.perf_counter() - start

    eager = lambda images: model(images)
    times = {"pytorch": [], "xdq_fp32": [], "xdq_w8a8": []}
    with torch.no_grad():
        for f in (eager, fp32, w8a8):  # warm-up: oneDNN primitive caches, allocator
            f(x)
        for _ in range(args.rounds):
            times["pytorch"].append(timed(eager))
            times["xdq_fp32"].append(timed(fp32))
            times["xdq_w8a8"].append(timed(w8a8))
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    print("%s 3x224x224, batch %d, %d threads, %d rounds (medians)" % (args.model, args.batch, args.threads, args.rounds))
    print("PyTorch eager FP32   %7.1f img/s" % rate["pytorch"])
    print("xdq FP32             %7.1f img/s   ratio to PyTorch %.3f   (target >= 1.0)" % (rate["xdq_fp32"], rate["xdq_fp32"] / rate["pytorch"]))
    print("xdq W8A8 fake-quant  %7.1f img/s   ratio to PyTorch %.3f   (target >= 0.85)" % (rate["xdq_w8a8"], rate["xdq_w8a8"] / rate["pytorch"]))


if __name__ == "__main__":
    main()
