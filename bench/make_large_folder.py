"""An ImageNet-layout folder of any size for the memory and throughput measurements of the README.

Usage: make_large_folder.py OUT_DIR TRAIN_IMAGES VAL_IMAGES [CLASSES]
Writes OUT_DIR/{train,val}/n%08d/%06d.jpg: random crops (120-480 px a side, aspect 0.6-1.6) of opencv-doc's
photographs as JPEG (quality 90), spread over CLASSES class folders (default 100) of the 1 000 ids in
OUT_DIR/synsets.txt. Labels carry no meaning: the folder measures time and memory, not accuracy.
"""
import glob
import os
import sys

import numpy as np
from PIL import Image

PHOTOS = "/usr/share/doc/opencv-doc/examples/data"
SYNSETS = ["n%08d" % (1000000 + 7 * k) for k in range(1000)]


def main():
    out, train, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    classes = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    photos = [Image.open(p).convert("RGB") for p in sorted(glob.glob(os.path.join(PHOTOS, "*.jpg")))]
    photos = [p for p in photos if min(p.size) >= 240]
    rng = np.random.default_rng(0)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "synsets.txt"), "w") as f:
        f.write("\n".join(SYNSETS) + "\n")
    for split, count in (("train", train), ("val", val)):
        for k in range(count):
            photo = photos[rng.integers(len(photos))]
            w, h = photo.size
            cw = int(rng.integers(120, min(w, 480) + 1))
            ch = int(np.clip(cw * rng.uniform(0.6, 1.6), 120, h))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            folder = os.path.join(out, split, SYNSETS[k % classes])
            os.makedirs(folder, exist_ok=True)
            photo.crop((x, y, x + cw, y + ch)).save(os.path.join(folder, "%06d.jpg" % k), quality=90)
    print("wrote", out, train, "train and", val, "val images in", classes, "classes")


if __name__ == "__main__":
    main()
