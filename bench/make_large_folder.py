"""An ImageNet-layout folder of any size for the memory and throughput measurements of the README.

Usage: make_large_folder.py OUT_DIR TRAIN_IMAGES VAL_IMAGES [CLASSES]
Writes OUT_DIR/{train,val}/<synset>/%06d.jpg: random crops (120-480 px a side, aspect 0.6-1.6) of opencv-doc's
photographs as JPEG (quality 90), spread over CLASSES class folders (default 100) of the 1 000 ids in
OUT_DIR/synsets.txt. Labels carry no meaning: the folder measures time and memory, not accuracy.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from make_imagenet_folder import SYNSETS, photo_crops  # noqa: E402  (the test fixture's crops and class ids)


def main():
    out, train, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    classes = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    rng = np.random.default_rng(0)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "synsets.txt"), "w") as f:
        f.write("\n".join(SYNSETS) + "\n")
    for split, count in (("train", train), ("val", val)):
        for k, crop in enumerate(photo_crops(count, rng, largest=480)):
            folder = os.path.join(out, split, SYNSETS[k % classes])
            os.makedirs(folder, exist_ok=True)
            crop.save(os.path.join(folder, "%06d.jpg" % k), quality=90)
    print("wrote", out, train, "train and", val, "val images in", classes, "classes")


if __name__ == "__main__":
    main()
