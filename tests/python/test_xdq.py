"""The Python package end to end, as a notebook would use it: the quickstart-sized experiment from Python,
its DataFrame pivoted into the calibration x test matrix, a model quantized from a torch tensor whose
top-1 equals the one `xdq run` reports, and errors as xdq.XdqError with file:line key messages.
Run by ctest with PYTHONPATH=<build>/python; argv[1]: the source folder."""
import json
import math
import pathlib
import shutil
import sys
import tempfile

import torch
import xdq

source, scratch = pathlib.Path(sys.argv[1]), pathlib.Path(tempfile.mkdtemp(prefix="xdq_python_"))
model = str(source / "models/resnet20_fmnist/model.pt")
config = {
    "experiment": "python_check",
    "seed": 0,
    "threads": 2,
    "models": [{"name": "resnet20", "path": model}],
    "calibration": {"domains": ["fashion_mnist.train", "fashion_mnist.test"], "count": 256, "batch_size": 256},
    "test": {"domains": ["fashion_mnist.train", "fashion_mnist.test"], "count": 500},
    "quantization": {"bits": ["w4a8"], "calibrators": ["minmax"], "rounding": ["nearest"]},
}

# The plan and the plugins, without running anything.
plan = xdq.plan(config)
assert plan.count("\njob ") + plan.startswith("job ") == 2, plan
names = {(p["kind"], p["name"]) for p in xdq.plugins()}
assert ("calibrator", "mse") in names and ("weight_optimizer", "brecq") in names, names
assert "layer1.block0" in xdq.inspect(model)

# Run from a dict; the files are those of `xdq run`, and the DataFrame has one row per run x test domain.
out = scratch / "run"
results = xdq.run(config, out=out, set={"test.count": 400})
assert len(results.runs) == 2, results
frame = xdq.load_results(out)
assert len(frame) == 4, frame
assert {"id", "calibrator", "rounding", "calibration_domain", "test_domain", "n", "quant_top1", "fp32_top1"} <= set(frame.columns)
assert (frame["n"] == 400).all()
assert (frame["rounding.init_images"] == "0").all(), frame.columns  # every plugin option is a column
matrix = frame.pivot_table(index="calibration_domain", columns="test_domain", values="quant_top1")
assert matrix.shape == (2, 2), matrix
on_disk = json.loads((out / "results.json").read_text())
for r, disk in zip(results.runs, on_disk["runs"]):
    assert r["results"] == disk["results"]

# The same model quantized from a torch tensor: the calibration subset a run uses (count 256, seed 0),
# the run's settings; its top-1 on the run's 400 test images equals the run's quant_top1 exactly.
calibration, _ = xdq.load_dataset("fashion_mnist.train", count=256, seed=0)
test_images, test_labels = xdq.load_dataset("fashion_mnist.test", count=400, seed=0)
assert calibration.shape == (256, 1, 28, 28) and calibration.dtype == torch.float32
q = xdq.Model(model).quantize(calibration, bits="w4a8", calibrator="minmax")
correct = sum(int((q(test_images[b:b + 100]).argmax(1) == test_labels[b:b + 100]).sum()) for b in range(0, 400, 100))
run_top1 = next(r["results"][1]["quant_top1"] for r in results.runs if r["calibration"]["domain"] == "fashion_mnist.train")
assert correct / 400 == run_top1, (correct / 400, run_top1)

# Per-image results: the run's bits are the images the tensor-quantized model gets right, and paired_test is
# McNemar's exact test on two runs' bits (recomputed here from its definition).
right = torch.cat([q(test_images[b:b + 100]).argmax(1) == test_labels[b:b + 100] for b in range(0, 400, 100)]).tolist()
cells = {(r["id"], d["domain"]): d for r in results.runs for d in r["results"]}


def bits_of(cell):
    raw = bytes.fromhex(cell["correct"])
    return [bool(raw[i // 8] >> (i % 8) & 1) for i in range(cell["n"])]


train_run = next(r["id"] for r in results.runs if r["calibration"]["domain"] == "fashion_mnist.train")
assert bits_of(cells[(train_run, "fashion_mnist.test")]) == right
ids = [r["id"] for r in results.runs]
a, b = bits_of(cells[(ids[0], "fashion_mnist.test")]), bits_of(cells[(ids[1], "fashion_mnist.test")])
a_only, b_only = sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))
m = a_only + b_only
expected = min(1.0, 2 * sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1)) / 2 ** m) if m else 1.0
assert abs(xdq.paired_test(out, ids[0], ids[1], "fashion_mnist.test") - expected) < 1e-12, (a_only, b_only)
assert {"quant_top1_low", "quant_top1_high", "fp32_top1_low"} <= set(frame.columns) and "correct" not in frame.columns
assert ((frame["quant_top1_low"] <= frame["quant_top1"]) & (frame["quant_top1"] <= frame["quant_top1_high"])).all()
assert (frame["worst_domain"].isin(["fashion_mnist.train", "fashion_mnist.test"])).all()
scored = xdq._frame({"runs": [{"id": "r", "results": [{"domain": "night", "quant_top1": 0.5, "scores": {"frechet": 1.5, "agreement": 0.9}}]}]})
assert scored.loc[0, "score.frechet"] == 1.5 and scored.loc[0, "score.agreement"] == 0.9 and "scores" not in scored.columns
acts = q.activations()
assert acts[0]["name"] == "conv1:input" and acts[0]["bits"] == 8 and float(acts[0]["scale"]) > 0
layers = q.layers()
assert layers[0]["weight"].shape == (16, 1, 3, 3)
# Overrides and graph passes go through the recipe a run uses: W4A4 with the first and last layers at
# 8 bits, empirical bias correction after rounding; the Python model's top-1 equals the run's, and
# differs from the model quantized without them (they were applied).
eight_bit_ends = [{"layers": ["first", "last"], "w_bits": 8, "a_bits": 8}]
recipe_run = xdq.run(dict(config, experiment="python_recipe",
                          calibration={"domains": ["fashion_mnist.train"], "count": 256, "batch_size": 256},
                          test={"domains": ["fashion_mnist.test"], "count": 400},
                          quantization={"bits": ["w4a4"], "calibrators": ["mse"], "rounding": ["nearest"],
                                        "passes": [{"name": "bias_correction", "images": 256}],
                                        "overrides": eight_bit_ends}))


def top1(quantized):
    return sum(int((quantized(test_images[b:b + 100]).argmax(1) == test_labels[b:b + 100]).sum())
               for b in range(0, 400, 100)) / 400


with_recipe = xdq.Model(model).quantize(calibration, bits="w4a4", calibrator="mse", overrides=eight_bit_ends,
                                        passes=[{"name": "bias_correction", "images": 256}], device="cpu")
assert top1(with_recipe) == recipe_run.runs[0]["results"][0]["quant_top1"]
assert with_recipe.layers()[0]["bits"] == 8 and with_recipe.layers()[1]["bits"] == 4
plain = xdq.Model(model).quantize(calibration, bits="w4a4", calibrator="mse")
assert plain.layers()[0]["bits"] == 4
assert not torch.equal(plain(test_images[:100]), with_recipe(test_images[:100]))

# The FP32 model through xdq equals TorchScript's forward on the normalized images (float32 tolerance;
# the model's input_mean / input_std attributes are the normalization it was trained with).
reference = torch.jit.load(model).eval()
mean, std = torch.tensor(reference.input_mean).view(1, -1, 1, 1), torch.tensor(reference.input_std).view(1, -1, 1, 1)
with torch.no_grad():
    fp = xdq.Model(model)(test_images[:64])
    expected = reference((test_images[:64] - mean) / std)
assert torch.allclose(fp, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())), (fp - expected).abs().max()
# With Winograd convolutions: within 1e-3 of the largest logit (the C++ tests' bound, Winograd.*).
try:
    with torch.no_grad():
        winograd = xdq.Model(model, convolution="winograd")(test_images[:64])
    assert (winograd - expected).abs().max() <= 1e-3 * float(expected.abs().max()), (winograd - expected).abs().max()
except xdq.XdqError as e:
    assert "libdnnl-dev" in str(e), str(e)
    print("skipped: Winograd convolutions (" + str(e) + ")")

# Errors: a bad config names the key; an unknown calibrator lists the known ones.
bad = dict(config, quantization={"bits": ["w9a8"], "calibrators": ["minmax"]})
try:
    xdq.run(bad)
    raise AssertionError("expected XdqError")
except xdq.XdqError as e:
    assert "quantization.bits" in str(e) and "weight bits must be in [2, 8]" in str(e), str(e)
try:
    xdq.Model(model, convolution="fast")
    raise AssertionError("expected XdqError")
except xdq.XdqError as e:
    assert "convolution" in str(e) and "fast" in str(e), str(e)
try:
    xdq.Model(model).quantize(calibration, calibrator="nope")
    raise AssertionError("expected XdqError")
except xdq.XdqError as e:
    assert "nope" in str(e), str(e)


def refused(call, *fragments):
    """`call` raises xdq.XdqError whose message holds every fragment."""
    try:
        call()
    except xdq.XdqError as e:
        assert all(f in str(e) for f in fragments), str(e)
        return
    raise AssertionError(f"expected XdqError with {fragments}")


# Model.quantize checks its device, overrides and passes as an experiment file's keys.
refused(lambda: xdq.Model(model).quantize(calibration, device="tpu"), "device", "expected cpu, cuda or cuda:N")
refused(lambda: xdq.Model(model).quantize(calibration, overrides=[{"layers": ["no_such_layer"], "w_bits": 8}]),
        "no_such_layer")
refused(lambda: xdq.Model(model).quantize(calibration, passes=["no_such_pass"]), "no_such_pass")

# An output path that is a file: refused before any work; overrides read as 64-bit integers.
(scratch / "a_file").write_text("x")
refused(lambda: xdq.run(config, out=scratch / "a_file"), "the output folder exists and is not a folder")
refused(lambda: xdq.plan(config, set={"quantization.overrides": [{"layers": ["first"], "w_bits": 2**32 + 4}]}),
        "--set quantization.overrides[0].w_bits", "expected an integer in [2, 8], got 4294967300")
# A malformed results.json, NaN images and images of the wrong shape or type.
(scratch / "bad_results").mkdir()
(scratch / "bad_results" / "results.json").write_text("{\"runs\": [{\"results\": 3}]")
refused(lambda: xdq.load_results(scratch / "bad_results"), "results.json: not an xdq results.json")
refused(lambda: xdq.load_results(scratch / "absent"), "results.json: cannot read")
refused(lambda: xdq.paired_test(out, ids[0], "nope", "fashion_mnist.test"), "no result of nope")
nan_images = test_images[:4].clone()
nan_images[0, 0, 0, 0] = float("nan")
refused(lambda: xdq.Model(model)(nan_images), "images: the images hold NaN or infinite values")
refused(lambda: q(nan_images), "images: the images hold NaN or infinite values")
refused(lambda: xdq.Model(model).quantize(nan_images), "calibration: the images hold NaN or infinite values")
refused(lambda: xdq.Model(model)(test_images[0]), "images: expected float images [N, C, H, W]")
refused(lambda: xdq.Model(model)(torch.zeros(2, 3, 28, 28)), model + ": cannot run on images of shape [2, 3, 28, 28]")
refused(lambda: xdq.Model(model)([1, 2]), "images: expected a torch.Tensor")
shutil.rmtree(scratch)
print("ok: python package", xdq.__version__)
