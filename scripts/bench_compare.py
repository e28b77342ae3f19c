#!/usr/bin/env python3
"""Runs `glandseg bench` and the PyTorch reference on the same network, input and thread
count, and prints the table (seconds, ratio glandseg / PyTorch, GFLOP/s of the training
step, share of the CPU's f32 peak).

With --repeat N the two run alternately N times: this machine is shared and single runs
vary by +-30 % (PyTorch's as much as ours), so the table gives the median and the best
(minimum) of the N runs for each, and the ratio of each.

Usage: python3 scripts/bench_compare.py target/debug/glandseg [--threads 2] [--patch 64]
[--batch 2] [--stages 4] [--preset cpu] [--steps 3] [--infer-size 128] [--repeat 1]
[--peak-gflops 333]"""
import argparse
import json
import os
import statistics
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
ap.add_argument("--repeat", type=int, default=1)
# Two cores x 2 AVX-512 FMA units x 16 lanes x 2 flops x 2.6 GHz.
ap.add_argument("--peak-gflops", type=float, default=333.0)
a = ap.parse_args()
common = ["--patch", str(a.patch), "--batch", str(a.batch), "--stages", str(a.stages),
          "--preset", a.preset, "--steps", str(a.steps), "--infer-size", str(a.infer_size)]
env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
here = os.path.dirname(os.path.abspath(__file__))


def ours_run():
    return json.loads(subprocess.run([a.glandseg, "bench", "--json"] + common, env=env,
                                     check=True, capture_output=True, text=True).stdout)


def torch_run():
    out = subprocess.run([sys.executable, os.path.join(here, "bench_pytorch.py"),
                          "--threads", str(a.threads)] + common, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


runs = []
for _ in range(a.repeat):
    runs.append((ours_run(), torch_run()))


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


def series(which, key):
    vals = []
    for o, t in runs:
        r = o if which == "ours" else t
        v = r.get(key)
        if isinstance(v, dict):
            v = v.get("seconds")
        if v is not None:
            vals.append(v)
    return vals


ours0, torch0 = runs[0]
fwd = conv_flops(a.patch, ours0["features"], a.batch)
print(f"network: features {ours0['features']}, patch {a.patch}^3, batch {a.batch}, "
      f"{a.threads} threads, {a.repeat} alternating run(s)")
print(f"{'':26} {'glandseg':>9} {'PyTorch':>9} {'ratio':>6}   {'best':>9} {'best':>9} {'ratio':>6}")
rows = [("training step (s)", "train_step_s", "train_step_s"),
        (f"inference {a.infer_size}^3 (s)", "inference_s", "inference_s"),
        (f"inference bf16 {a.infer_size}^3", "inference_bf16", "inference_s")]
for name, ko, kt in rows:
    o, t = series("ours", ko), series("torch", kt)
    if not o or not t:
        continue
    mo, mt = statistics.median(o), statistics.median(t)
    if ko == "train_step_s":
        # Best single step (not best mean) where both report it.
        o = series("ours", "train_step_min_s") or o
        t = series("torch", "train_step_min_s") or t
    bo, bt = min(o), min(t)
    print(f"{name:26} {mo:9.3f} {mt:9.3f} {mo / mt:6.2f}   {bo:9.3f} {bt:9.3f} {bo / bt:6.2f}")
print("(inference bf16 is set beside PyTorch's f32 inference; median | best of the runs)")
for who, key in [("glandseg", "ours"), ("PyTorch", "torch")]:
    s = statistics.median(series(key, "train_step_s"))
    g = 3 * fwd / s / 1e9
    print(f"training step, {who}: {g:.1f} GFLOP/s (3x forward conv FLOPs), "
          f"{100 * g / a.peak_gflops:.0f} % of the {a.peak_gflops:.0f} GFLOP/s f32 peak")
agree = [o["inference_bf16"]["argmax_agreement"] for o, _ in runs if o.get("inference_bf16")]
if agree:
    print(f"bf16 vs f32 argmax agreement (random weights): min {min(agree):.4f}")
print(json.dumps({"runs": [{"glandseg": o, "pytorch": t} for o, t in runs]}))
