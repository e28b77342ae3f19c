#!/usr/bin/env python3
"""Runs `glandseg bench` and the PyTorch reference on the same network, input and thread
count, and prints the table (seconds, ratio glandseg / PyTorch, GFLOP/s of the training
step). Usage: python3 scripts/bench_compare.py target/debug/glandseg [--threads 2]
[--patch 64] [--batch 2] [--stages 4] [--preset cpu] [--infer-size 128]"""
import argparse
import json
import os
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("glandseg")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--patch", type=int, default=64)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--stages", type=int, default=4)
ap.add_argument("--preset", default="cpu")
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--infer-size", type=int, default=128)
a = ap.parse_args()
common = ["--patch", str(a.patch), "--batch", str(a.batch), "--stages", str(a.stages),
          "--preset", a.preset, "--steps", str(a.steps), "--infer-size", str(a.infer_size)]
env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
ours = json.loads(subprocess.run([a.glandseg, "bench", "--json"] + common, env=env,
                                 check=True, capture_output=True, text=True).stdout)
here = os.path.dirname(os.path.abspath(__file__))
torch = json.loads(subprocess.run([sys.executable, os.path.join(here, "bench_pytorch.py"),
                                   "--threads", str(a.threads)] + common, check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1])


def conv_flops(patch, feats, batch):
    """Forward multiply-adds x2 of every 3x3x3 conv (encoder + decoder), for GFLOP/s."""
    total, size, cin = 0.0, patch, 2
    for i, f in enumerate(feats):
        if i > 0:
            size //= 2
        v = size ** 3
        total += v * 27 * (cin * f + f * f)
        if i < len(feats) - 1:
            total += v * 27 * (2 * f * f + f * f)  # decoder block at this level
        cin = f
    return 2 * total * batch


fwd = conv_flops(a.patch, ours["features"], a.batch)
print(f"network: features {ours['features']}, patch {a.patch}^3, batch {a.batch}, {a.threads} threads")
print(f"{'':24} {'glandseg':>10} {'PyTorch':>10} {'ratio':>7}")
for key, name in [("train_step_s", "training step (s)"), ("inference_s", f"inference {a.infer_size}^3 (s)")]:
    o, t = ours[key], torch[key]
    if o is None or t is None:
        continue
    print(f"{name:24} {o:10.3f} {t:10.3f} {o / t:7.2f}")
bf16 = ours.get("inference_bf16")
if bf16 and torch.get("inference_s"):
    print(f"{'inference bf16 (s)':24} {bf16['seconds']:10.3f} {torch['inference_s']:10.3f} "
          f"{bf16['seconds'] / torch['inference_s']:7.2f}   (vs PyTorch f32; argmax agreement "
          f"with our f32 {bf16['argmax_agreement']:.4f})")
print(f"training step GFLOP/s (3x forward conv FLOPs): glandseg {3 * fwd / ours['train_step_s'] / 1e9:.1f}, "
      f"PyTorch {3 * fwd / torch['train_step_s'] / 1e9:.1f}")
print(json.dumps({"glandseg": ours, "pytorch": torch}))
