"""xdq from Python: run YAML experiments, read their results as DataFrames, quantize one model.

    import xdq
    results = xdq.run("experiments/quickstart.yaml", out="runs/quickstart", set={"test.count": 1000})
    frame = xdq.load_results("runs/quickstart")        # one row per run x test domain
    images, labels = xdq.load_dataset("fashion_mnist.train", count=256, seed=0)
    q = xdq.Model("models/resnet20_fmnist/model.pt").quantize(images, bits="w4a8", calibrator="mse")
    logits = q(test_images)                             # fake-quantized forward on a torch tensor

Errors are xdq.XdqError with the messages of the command line (file:line key.path).
"""
import json
import os
import pathlib

import torch  # noqa: F401  (loads LibTorch's Python bindings before the extension)

from . import _xdq
from ._xdq import XdqError

__version__ = _xdq.__version__
__all__ = ["run", "plan", "plugins", "inspect", "load_results", "load_dataset", "paired_test", "Model", "Results",
           "XdqError"]


def _config(config):
    """(text or path, is_text, base folder): a dict becomes YAML text (JSON is YAML) whose relative paths
    start at the current folder."""
    if isinstance(config, dict):
        return json.dumps(config), True, os.getcwd()
    return str(config), False, ""


def _sets(values):
    return [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in (values or {}).items()]


class Results:
    """What xdq.run returns: `.runs` as in results.json, `.frame()` as a DataFrame, `.out` the folder."""

    def __init__(self, data, out=None):
        self.data, self.out = data, out
        self.runs = data["runs"]

    def frame(self):
        return _frame(self.data)

    def __repr__(self):
        return f"Results({self.data['experiment']!r}, {len(self.runs)} runs, out={self.out!r})"


def run(config, out=None, set=None):
    """Runs an experiment (a YAML path or a dict); with `out`, writes every file `xdq run` writes."""
    text, is_text, base = _config(config)
    return Results(json.loads(_xdq.run(text, is_text, base, str(out or ""), _sets(set))), out)


def plan(config, set=None):
    """The plan `xdq run --dry-run` prints: jobs, runs, cells, work."""
    text, is_text, base = _config(config)
    return _xdq.plan(text, is_text, base, _sets(set))


def plugins():
    """Every plugin found: kind, name, version, path, summary, options."""
    return json.loads(_xdq.plugins())["plugins"]


def inspect(model_path):
    """A TorchScript model's layers, conv-BN pairs, residual blocks and merges, as `xdq inspect` prints."""
    return _xdq.inspect(str(model_path))


def load_dataset(name, count=0, seed=0):
    """(images [N, C, H, W] in [0, 1], labels) of "<dataset>.<split>", the subset a run with this count
    and seed calibrates on (count 0: all)."""
    return _xdq.load_dataset(name, count, seed)


def _frame(data):
    import pandas

    rows = []
    for r in data["runs"]:
        skip = ("results", "calibration", "units", "calibrator_options", "rounding_options", "export")
        base = {k: v for k, v in r.items() if k not in skip}
        calibration = dict(r.get("calibration", {}))
        selection = calibration.pop("selection", None)
        base.update({f"calibration_{k}": v for k, v in calibration.items()})
        if selection:  # a selected set: selector, its options, composition per source domain, measures
            base["selector"] = selection["selector"]
            base["selection_seconds"] = selection["seconds"]
            base.update({f"selector.{k}": v for k, v in selection["options"].items()})
            base.update({f"composition.{k}": v for k, v in selection["composition"].items()})
            base.update({f"selection.{k}": v for k, v in selection["measures"].items()})
        base.update({f"export_{k}": v for k, v in r.get("export", {}).items() if k != "files"})
        for plugin in ("calibrator", "rounding"):  # every option its own column: calibrator.percentile, ...
            base.update({f"{plugin}.{k}": v for k, v in r.get(f"{plugin}_options", {}).items()})
        if "passes" in base:
            base["passes"] = "+".join(base["passes"])
        worst = base.pop("worst_domain", None)
        if worst:
            base.update({"worst_domain": worst["domain"], "worst_quant_top1": worst["quant_top1"],
                         "worst_drop": worst["drop"]})
        for d in r.get("results") or [{}]:
            row = dict(base)
            for k, v in d.items():
                if k.endswith("_ci"):  # [low, high] as two columns: quant_top1_low, quant_top1_high
                    row[k[:-3] + "_low"], row[k[:-3] + "_high"] = v
                elif k == "scores":  # scoring: every score its own column, score.frechet, ...
                    row.update({f"score.{name}": value for name, value in v.items()})
                elif k != "correct":  # per-image bits: paired_test reads them from results.json
                    row["test_domain" if k == "domain" else k] = v
            rows.append(row)
    return pandas.DataFrame(rows)


def paired_test(results, run_a, run_b, domain):
    """McNemar's exact p-value that runs `run_a` and `run_b` (ids) are equally accurate on the images of test
    domain `domain`, from their per-image results; `results` is a run folder or an xdq.Results."""
    data = results.data if isinstance(results, Results) else json.loads((pathlib.Path(results) / "results.json").read_text())
    cells = {}
    for r in data["runs"]:
        for d in r.get("results", []):
            cells[(r["id"], d["domain"])] = d
    missing = [run for run in (run_a, run_b) if (run, domain) not in cells]
    if missing:
        raise XdqError(f"paired_test: no result of {', '.join(missing)} on test domain {domain!r}")
    a, b = cells[(run_a, domain)], cells[(run_b, domain)]
    if "correct" not in a or "correct" not in b or a["n"] != b["n"]:
        raise XdqError(f"paired_test: {run_a} and {run_b} have no per-image results on the same {domain!r} images")
    return _xdq.paired_test(a["correct"], b["correct"], a["n"])


def load_results(directory):
    """results.json of a run folder as a DataFrame: one row per run x test domain, every field a column."""
    path = pathlib.Path(directory) / "results.json"
    try:
        with open(path) as f:
            return _frame(json.load(f))
    except OSError as e:
        raise XdqError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise XdqError(f"{path}: not an xdq results.json ({type(e).__name__}: {e})") from None


def _images(images, what):
    """A tensor, or an XdqError (shape and values are checked by the C++ side)."""
    import torch

    if not isinstance(images, torch.Tensor):
        raise XdqError(f"{what}: expected a torch.Tensor of images [N, C, H, W], got {type(images).__name__}")
    return images


class Model:
    """A TorchScript classifier as xdq imports it; calling it runs the FP32 graph (with the model's input
    normalization) on [0, 1] images. `convolution`: "direct" or "winograd", as the experiment key."""

    def __init__(self, path, convolution="direct"):
        self._model = _xdq.Model(str(path), convolution)

    def __call__(self, images):
        return self._model(_images(images, "images"))

    def quantize(self, calibration, bits="w8a8", calibrator="minmax", rounding="nearest", preset="academic",
                 weight_range="minmax", calibrator_options=None, rounding_options=None, passes=(), overrides=(),
                 device="cpu", batch_size=256, histogram_bins=2048, seed=0):
        """Quantized by the recipe `xdq run` uses (passes before quantization, BN folded, ranges from
        `calibration` images in [0, 1], weights rounded, passes after rounding); the result is callable and
        exposes .activations() and .layers() (scales, zero points). `passes` and `overrides` are what an
        experiment's quantization.passes and quantization.overrides hold (names or dicts; dicts with
        layers, w_bits, a_bits); `device` is "cpu" or "cuda[:k]"."""
        def plugin(name, options):
            return json.dumps({"name": name, **(options or {})})
        return self._model.quantize(_images(calibration, "calibration"), bits, plugin(calibrator, calibrator_options),
                                    plugin(rounding, rounding_options), json.dumps(list(passes)),
                                    json.dumps(list(overrides)), preset, weight_range, device, batch_size,
                                    histogram_bins, seed)
