#!/usr/bin/python3
"""Peak memory of calibration against the calibration-set size, at 224x224: a streamed folder set
(`stream_above_mb: 0`) beside the same set loaded in memory (forced by `unreadable: skip`), ResNet-18 (torchvision,
traced by tools/trace_torchvision.py; random weights: memory does not depend on them), calibrators minmax
and mse, for each count. Each run is its own `xdq run` process; its peak RSS is the kernel's (ru_maxrss).

Usage: bench/calibration_memory.py BUILD WORK [COUNT ...]     (default counts: 1024 8192)
WORK receives the folder (photo crops of opencv-doc's photographs, 256-384 px JPEGs, made once) and runs.
"""
import glob
import os
import random
import resource
import subprocess
import sys
import time

from PIL import Image

PHOTOS = "/usr/share/doc/opencv-doc/examples/data"


def make_folder(root, count):
    """`count` train images in 8 class folders and 16 val images; kept when already there."""
    if len(glob.glob(os.path.join(root, "train", "*", "*.jpg"))) >= count:
        return
    photos = [Image.open(p).convert("RGB") for p in sorted(glob.glob(os.path.join(PHOTOS, "*.jpg")))]
    photos = [p for p in photos if min(p.size) >= 256]
    rng = random.Random(0)
    for split, n in (("train", count), ("val", 16)):
        for k in range(n):
            photo = photos[rng.randrange(len(photos))]
            side = rng.randrange(256, min(384, min(photo.size)) + 1)
            x, y = rng.randrange(photo.size[0] - side + 1), rng.randrange(photo.size[1] - side + 1)
            folder = os.path.join(root, split, "c%d" % (k % 8))
            os.makedirs(folder, exist_ok=True)
            photo.crop((x, y, x + side, y + side)).save(os.path.join(folder, "%05d.jpg" % k), quality=90)


def run(xdq, work, model, folder, count, streamed):
    name = "%s_%d" % ("streamed" if streamed else "memory", count)
    config = os.path.join(work, name + ".yaml")
    with open(config, "w") as f:
        f.write("experiment: %s\nseed: 0\nthreads: 2\ndata: {cache: %s}\n" % (name, os.path.join(work, name + "_cache")))
        f.write("models: [{name: resnet18, path: %s, preprocess: imagenet}]\n" % model)
        f.write("domains:\n  photos: {dataset: 'folder:%s'%s}\n" % (folder, "" if streamed else ", unreadable: skip"))
        f.write("calibration: {source: photos, count: %d, batch_size: 64, stream_above_mb: 0}\n" % count)
        f.write("test: {domains: [photos]}\n")
        f.write("quantization: {bits: [w8a8], calibrators: [minmax, mse], rounding: [nearest]}\n")
    start = time.time()
    child = subprocess.Popen([xdq, "run", config, "--out", os.path.join(work, name), "--quiet"])
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        sys.exit("%s failed (status %d)" % (name, status))
    return usage.ru_maxrss / 1024.0, time.time() - start


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    build, work = sys.argv[1], os.path.abspath(sys.argv[2])
    counts = [int(c) for c in sys.argv[3:]] or [1024, 8192]
    os.makedirs(work, exist_ok=True)
    folder = os.path.join(work, "photos")
    make_folder(folder, max(counts))
    model = os.path.join(work, "resnet18.pt")
    if not os.path.exists(model):
        tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "trace_torchvision.py")
        subprocess.check_call(["/usr/bin/python3", tools, "resnet18", model])
    xdq = os.path.join(build, "bin", "xdq")
    print("count  streamed peak RSS (MiB)  in memory peak RSS (MiB)  streamed / in memory   (seconds: streamed, in memory)")
    for count in counts:
        streamed, t_s = run(xdq, work, model, folder, count, True)
        memory, t_m = run(xdq, work, model, folder, count, False)
        print("%5d  %23.0f  %24.0f  %20.2f   (%.0f, %.0f)" % (count, streamed, memory, streamed / memory, t_s, t_m), flush=True)


if __name__ == "__main__":
    main()
