#!/usr/bin/python3
"""Trains the zoo's DeiT-style vision transformer on Fashion-MNIST and saves it as TorchScript.

Usage: tools/train_vit.py RECIPE.yaml        (e.g. models/vit_fmnist/recipe.yaml)
The recipe gives the architecture (torchvision's VisionTransformer with a one-channel patch embedding),
the data normalization, the optimizer (AdamW, linear warm-up then cosine decay, label smoothing) and the
augmentation (random crop after padding, horizontal flip); the model file and log are written beside it.
The file is traced with autograd on (decomposed attention, as tools/trace_torchvision.py does) and records
input_size, input_mean and input_std, like the models `xdq train` writes.
"""
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision.models as tvm
import yaml

from fashion_mnist import split


def make_model(arch):
    model = tvm.VisionTransformer(image_size=arch["image_size"], patch_size=arch["patch_size"],
                                  num_layers=arch["depth"], num_heads=arch["heads"], hidden_dim=arch["width"],
                                  mlp_dim=arch["mlp"], num_classes=arch["num_classes"])
    model.conv_proj = torch.nn.Conv2d(arch["in_channels"], arch["width"], arch["patch_size"], arch["patch_size"])
    return model


def augment(x, padding, gen):
    """Each image cropped back to its size at a random offset of its zero-padded copy, then flipped with p = 1/2."""
    n, _, h, w = x.shape
    padded = F.pad(x, [padding] * 4)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen).tolist()
    out = torch.stack([padded[k, :, dy:dy + h, dx:dx + w] for k, (dy, dx) in enumerate(offsets)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def evaluate(model, images, labels, mean, std, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(images), batch):
            correct += (model((images[b:b + batch] - mean) / std).argmax(1) == labels[b:b + batch]).sum().item()
    return correct / len(images)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    recipe_path = sys.argv[1]
    folder = os.path.dirname(os.path.abspath(recipe_path))
    recipe = yaml.safe_load(open(recipe_path))
    arch, data, train = recipe["model"], recipe["data"], recipe["train"]
    torch.manual_seed(recipe["seed"])
    torch.set_num_threads(recipe["threads"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    mean, std = data["mean"][0], data["std"][0]
    train_x, train_y = split("train")
    test_x, test_y = split("t10k")
    model = make_model(arch)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "pos_embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "pos_embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train["weight_decay"]},
                                   {"params": other, "weight_decay": 0.0}], lr=train["lr"], betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(train_x) / train["batch_size"])
    total, warmup = train["epochs"] * steps_per_epoch, train["warmup_epochs"] * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    log = open(os.path.join(folder, recipe["log"]), "w")
    start = time.time()
    for epoch in range(1, train["epochs"] + 1):
        model.train()
        t0 = time.time()
        order = torch.randperm(len(train_x), generator=gen)
        seen = correct = 0
        loss_sum = 0.0
        for b in range(0, len(order), train["batch_size"]):
            rows = order[b:b + train["batch_size"]]
            x = augment(train_x[rows], train["crop_padding"], gen)
            y = train_y[rows]
            out = model((x - mean) / std)
            loss = F.cross_entropy(out, y, label_smoothing=train["label_smoothing"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train["clip_grad"])
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(rows)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(rows)
        test_top1 = evaluate(model, test_x, test_y, mean, std)
        line = "epoch %d/%d loss %.4f train_top1 %.4f test_top1 %.4f seconds %.1f" % (
            epoch, train["epochs"], loss_sum / seen, correct / seen, test_top1, time.time() - t0)
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
    model.eval()
    traced = torch.jit.trace(model, torch.zeros(1, arch["in_channels"], arch["image_size"], arch["image_size"]),
                             check_trace=False)
    traced._c._register_attribute("input_size", torch._C.ListType.ofInts(), [arch["image_size"]] * 2)
    traced._c._register_attribute("input_mean", torch._C.ListType.ofFloats(), [mean])
    traced._c._register_attribute("input_std", torch._C.ListType.ofFloats(), [std])
    out = os.path.join(folder, recipe["output"])
    traced.save(out)
    line = "saved %s test_top1 %.4f total_seconds %.1f" % (os.path.relpath(out), test_top1, time.time() - start)
    print(line)
    log.write(line + "\n")


if __name__ == "__main__":
    main()
