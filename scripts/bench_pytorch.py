#!/usr/bin/env python3
"""PyTorch reference for `glandseg bench`: the same network (nnU-Net's PlainConvUNet as
glandseg builds it: per stage 2 x (conv3d k3, InstanceNorm3d affine, LeakyReLU 0.01),
stride-2 conv down, transposed conv up, skip concatenation, a 1x1x1 head per decoder
stage), the same loss (Dice + CE with deep supervision, weights 1/2^i, coarsest 0), one
Adam step; then a Gaussian-weighted sliding-window inference (step 0.5) over a 2-channel
cube. Prints one JSON line with the same keys as `glandseg bench --json`.

    python3 scripts/bench_pytorch.py --threads 2 --patch 64 --batch 2 --stages 4
"""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def topology(patch, stages, preset):
    base, cap = {"gpu": (32, 320), "tiny": (8, 64)}.get(preset, (16, 128))
    feats, size = [], patch
    for i in range(7):
        feats.append(min(base << i, cap))
        if size // 2 < 4:
            break
        size //= 2
    return feats[:stages]


def block(cin, cout, stride):
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride, 1), nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
        nn.LeakyReLU(0.01),
        nn.Conv3d(cout, cout, 3, 1, 1), nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
        nn.LeakyReLU(0.01))


class UNet(nn.Module):
    def __init__(self, cin, classes, feats):
        super().__init__()
        self.enc = nn.ModuleList()
        c = cin
        for i, f in enumerate(feats):
            self.enc.append(block(c, f, 1 if i == 0 else 2))
            c = f
        self.up, self.dec, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for lvl in reversed(range(len(feats) - 1)):
            self.up.append(nn.ConvTranspose3d(feats[lvl + 1], feats[lvl], 2, 2))
            self.dec.append(block(2 * feats[lvl], feats[lvl], 1))
            self.heads.append(nn.Conv3d(feats[lvl], classes, 1))

    def forward(self, x, all_levels=False):
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x)
            if i + 1 < len(self.enc):
                skips.append(x)
        outs = []
        for up, dec, head in zip(self.up, self.dec, self.heads):
            x = dec(torch.cat([up(x), skips.pop()], 1))
            outs.append(head(x))
        outs.reverse()
        return outs if all_levels else outs[0]


def dice_ce(logits, target):
    c = logits.shape[1]
    onehot = torch.nn.functional.one_hot(target, c).permute(0, 4, 1, 2, 3).float()
    ce = -(onehot * torch.log_softmax(logits, 1)).sum(1).mean()
    p = torch.softmax(logits, 1)
    dims = (0, 2, 3, 4)
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + 1 - dice[1:].mean()


def gaussian(patch):
    ax = np.arange(patch) - (patch - 1) / 2
    g = np.exp(-ax ** 2 / (2 * (patch / 8) ** 2))
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return torch.from_numpy((w / w.max()).astype(np.float32))


def starts(size, tile, step=0.5):
    if size <= tile:
        return [0]
    n = int(np.ceil((size - tile) / (tile * step))) + 1
    actual = (size - tile) / (n - 1)
    return [int(round(actual * i)) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--infer-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    feats = topology(a.patch, a.stages, a.preset)
    model = UNet(2, a.classes, feats).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    p = a.patch
    x = torch.randn(a.batch, 2, p, p, p, device=dev)
    labels = ((torch.arange(a.batch * p ** 3) // 997) % a.classes).reshape(a.batch, p, p, p).to(dev)
    levels = len(feats) - 1
    w = np.array([1 / 2 ** i for i in range(levels)])
    if levels > 1:
        w[-1] = 0
    w = w / w.sum()
    times = []
    for s in range(a.steps + 1):
        t = time.perf_counter()
        outs = model(x, all_levels=True)
        loss = 0
        for lvl, (o, wt) in enumerate(zip(outs, w)):
            if wt == 0:
                continue
            f = 2 ** lvl
            loss = loss + wt * dice_ce(o, labels[:, ::f, ::f, ::f])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if s > 0:
            times.append(time.perf_counter() - t)
    infer = None
    if a.infer_size > 0:
        n = a.infer_size
        model.eval()
        img = torch.rand(1, 2, n, n, n, device=dev) * 2 - 1
        g = gaussian(p).to(dev)
        t = time.perf_counter()
        with torch.no_grad():
            acc = torch.zeros(a.classes, n, n, n, device=dev)
            wsum = torch.zeros(n, n, n, device=dev)
            tiles = [(k, j, i) for k in starts(n, p) for j in starts(n, p) for i in starts(n, p)]
            for b in range(0, len(tiles), a.batch):
                chunk = tiles[b:b + a.batch]
                xb = torch.cat([img[:, :, k:k + p, j:j + p, i:i + p] for k, j, i in chunk])
                prob = torch.softmax(model(xb), 1)
                for (k, j, i), pr in zip(chunk, prob):
                    acc[:, k:k + p, j:j + p, i:i + p] += pr * g
                    wsum[k:k + p, j:j + p, i:i + p] += g
            out = acc / wsum
            if dev.type == "cuda":
                torch.cuda.synchronize()
        infer = time.perf_counter() - t
        assert torch.isfinite(out).all()
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "threads": a.threads, "patch": p, "batch": a.batch, "features": feats,
        "classes": a.classes, "train_step_s": sum(times) / len(times),
        "train_step_min_s": min(times),
        "inference_s": infer, "inference_size": a.infer_size,
    }))


if __name__ == "__main__":
    main()
