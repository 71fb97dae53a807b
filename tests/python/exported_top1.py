"""Top-1 of an exported model.pt on Fashion-MNIST's test split, read and normalized here (Python only):
    python3 exported_top1.py MODEL.pt [FASHION_MNIST_DIR]"""
import gzip
import sys

import numpy as np
import torch

folder = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
with gzip.open(folder + "/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
with gzip.open(folder + "/t10k-labels-idx1-ubyte.gz") as f:
    labels = torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64))
model = torch.jit.load(sys.argv[1])
mean = torch.tensor(model.input_mean).reshape(1, -1, 1, 1)
std = torch.tensor(model.input_std).reshape(1, -1, 1, 1)
x = (torch.from_numpy(images.astype(np.float32)) / 255 - mean) / std
correct = 0
with torch.no_grad():
    for i in range(0, len(x), 500):
        correct += (model(x[i:i + 500]).argmax(1) == labels[i:i + 500]).sum().item()
print(f"top1 {correct} {len(x)}")
