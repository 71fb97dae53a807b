"""Fashion-MNIST as the Debian package installs it, for the tools written in Python (train_vit.py,
repq_vit_reference.py): split("train" | "t10k") -> images [N, 1, 28, 28] in [0, 1], labels [N]."""
import gzip
import os

import numpy as np
import torch

FOLDER = "/usr/share/datasets/fashion-mnist"


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def split(name):
    images = torch.from_numpy(idx(os.path.join(FOLDER, name + "-images-idx3-ubyte.gz")).copy()).float() / 255
    labels = torch.from_numpy(idx(os.path.join(FOLDER, name + "-labels-idx1-ubyte.gz")).astype(np.int64))
    return images.unsqueeze(1), labels
