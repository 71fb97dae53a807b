#!/usr/bin/env python3
"""Round trips of the export for the four zoo models at W8A8 and W4A4 (quickstart setting: 1 024
calibration images, mse ranges, first and last layer at 8 bit, Fashion-MNIST's 10 000 test images):
for each, `xdq export` one run, then in Python
  - model.pt (torch.jit.load) on the test split: its top-1 against the quant_top1 xdq reported,
  - onnx.checker on every ONNX file,
  - model.onnx through tools/onnx_reference.py on parity.pt: relative error and top-1 agreement,
  - encodings.json against model.onnx's own scale initializers.
    python3 bench/export_roundtrip.py [--xdq build/bin/xdq] [--out /tmp/xdq_roundtrip]"""
import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import onnx_reference  # noqa: E402

ZOO = ["resnet20_fmnist", "mobilenet_v2_fmnist", "shufflenet_v2_fmnist", "vgg_fmnist"]


def python_top1(model_path):
    out = subprocess.run([sys.executable, str(ROOT / "tests/python/exported_top1.py"), str(model_path)],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[1]), int(out[2])


def encodings_match(folder):
    """Every activation encoding's scale equals model.onnx's <T>_scale, every weight's its .weight_scale."""
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(folder / "model.onnx").graph.initializer}
    enc = json.loads((folder / "encodings.json").read_text())
    for tensor, entries in enc["activation_encodings"].items():
        if not np.array_equal(np.float32([e["scale"] for e in entries]), inits[tensor + "_scale"].reshape(-1)):
            return False
    for weight, entries in enc["param_encodings"].items():
        if not np.array_equal(np.float32([e["scale"] for e in entries]), inits[weight + "_scale"].reshape(-1)):
            return False
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--xdq", default=str(ROOT / "build/bin/xdq"))
    p.add_argument("--out", default="/tmp/xdq_roundtrip")
    args = p.parse_args()
    print("| model | bits | quant_top1 (xdq) | model.pt top-1 (Python) | onnx.checker | model.onnx vs xdq (rel. err, top-1 agreement) | encodings = ONNX scales |")
    print("|---|---|---:|---:|---|---|---|")
    for model in ZOO:
        for bits in ["w8a8", "w4a4"]:
            folder = pathlib.Path(args.out) / f"{model}_{bits}"
            name = model.replace("_fmnist", "")
            subprocess.run([args.xdq, "export", str(ROOT / "experiments/quickstart.yaml"), "--quiet",
                            "--run", f"{name}/{bits}/mse/nearest", "--out", str(folder), "--set", f"models.0.name={name}",
                            "--set", f"models.0.path={ROOT}/models/{model}/model.pt", "--set", f"quantization.bits=[{bits}]",
                            "--set", "quantization.calibrators=[mse]"], check=True)
            run = json.loads((folder / "results.json").read_text())["runs"][0]
            cell = run["results"][0]
            correct, total = python_top1(folder / "model.pt")
            checked = all(onnx.checker.check_model(onnx.load(folder / f), full_check=True) is None
                          for f in ["model.onnx", "model_fp32.onnx"])
            parity = torch.jit.load(str(folder / "parity.pt"))
            with torch.no_grad():
                logits = onnx_reference.evaluate(onnx.load(folder / "model.onnx"), parity.inputs)[0]
            err = ((logits - parity.logits).abs().max() / parity.logits.abs().max()).item()
            agree = (logits.argmax(1) == parity.logits.argmax(1)).float().mean().item()
            same = "exact" if correct == round(cell["quant_top1"] * total) else "DIFFERS"
            print(f"| {model} | {bits} | {100 * cell['quant_top1']:.2f} % | {100 * correct / total:.2f} % ({same}) | "
                  f"{'pass' if checked else 'FAIL'} | {err:.1e}, {100 * agree:.0f} % | {encodings_match(folder)} |")


if __name__ == "__main__":
    main()
