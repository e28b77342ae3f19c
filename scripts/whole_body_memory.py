#!/usr/bin/env python3
"""Peak memory and time of `glandseg predict` on a whole-body-sized PET/CT.

The phantom covers head to upper chest; a PSMA PET/CT runs from the vertex to mid-thigh.
This script takes one head-neck-torso phantom case (scanner resolution) and embeds it at the
top of a whole-body grid: 512 x 512 in-plane at the case's spacing (a 50 cm field of view)
and `--length-mm` of slices, the body below the phantom continued as a soft-tissue trunk
(40 HU, SUV 1) so the localiser has a real body to search. The PET stays on its own coarser
grid, as scanners write it. Then it runs `glandseg predict` under `/usr/bin/time -v` and
prints the peak resident memory (what must fit, with the OS, into 24 GiB).

Usage: python3 scripts/whole_body_memory.py target/debug/glandseg MODEL_DIR [--length-mm 1100]
       [--threads 2] [--precision f32] [--work /tmp/wholebody]
"""
import argparse
import json
import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("glandseg")
ap.add_argument("model")
ap.add_argument("--length-mm", type=float, default=1100.0)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--precision", default="f32")
ap.add_argument("--work", default="/tmp/wholebody")
ap.add_argument("--seed", type=int, default=5)
a = ap.parse_args()

os.makedirs(a.work, exist_ok=True)
ph = os.path.join(a.work, "phantom")
if not os.path.isdir(os.path.join(ph, "imagesTr")):
    subprocess.run([a.glandseg, "phantom", "--cases", "1", "--seed", str(a.seed), "--fov",
                    "head-neck-torso", "--native", "--out", ph], check=True,
                   stdout=subprocess.DEVNULL)
case = sorted(f for f in os.listdir(os.path.join(ph, "imagesTr")) if f.endswith("_0000.nii.gz"))[0]
stem = case[: -len("_0000.nii.gz")]
ct = nib.load(os.path.join(ph, "imagesTr", case))
native = os.path.join(ph, "pet_native", f"{stem}.nii.gz")
pet = nib.load(native if os.path.exists(native) else os.path.join(ph, "imagesTr", f"{stem}_0001.nii.gz"))


def embed(img, inplane_n, fill_air, fill_body, dtype):
    """The image at the top (superior end) of a bigger grid with the same spacing and axes."""
    data = np.asarray(img.dataobj)
    zooms = img.header.get_zooms()[:3]
    nz = int(round(a.length_mm / zooms[2]))
    nx, ny = max(inplane_n[0], data.shape[0]), max(inplane_n[1], data.shape[1])
    out = np.full((nx, ny, max(nz, data.shape[2])), fill_air, dtype=dtype)
    # Trunk: an elliptic cylinder 36 x 24 cm under the phantom.
    x = (np.arange(nx) - nx / 2) * zooms[0]
    y = (np.arange(ny) - ny / 2) * zooms[1]
    inside = (x[:, None] / 180.0) ** 2 + (y[None, :] / 120.0) ** 2 <= 1.0
    extra = out.shape[2] - data.shape[2]
    out[:, :, :extra][inside] = fill_body
    ox, oy = (nx - data.shape[0]) // 2, (ny - data.shape[1]) // 2
    out[ox:ox + data.shape[0], oy:oy + data.shape[1], extra:] = data.astype(dtype)
    # The new first voxel sits `ox, oy` voxels before the old one in-plane and `extra`
    # slices below it (the NIfTI axes of the phantom are RAS-aligned, k = superior).
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, 3] - img.affine[:3, :3] @ np.array([ox, oy, extra])
    hdr = img.header.copy()
    hdr.set_data_dtype(dtype)
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0
    return nib.Nifti1Image(out, aff, hdr)


ct_zoom = ct.header.get_zooms()
pet_zoom = pet.header.get_zooms()
ct_wb = embed(ct, (512, 512), -1000, 40, np.int16)
pet_n = int(round(512 * ct_zoom[0] / pet_zoom[0]))
pet_wb = embed(pet, (pet_n, pet_n), 0.0, 1.0, np.float32)
inp = os.path.join(a.work, "input")
os.makedirs(inp, exist_ok=True)
nib.save(ct_wb, os.path.join(inp, "WB_0000.nii.gz"))
nib.save(pet_wb, os.path.join(inp, "WB_0001.nii.gz"))
print(f"CT {ct_wb.shape} at {tuple(round(float(z), 2) for z in ct_zoom[:3])} mm "
      f"({np.prod(ct_wb.shape) / 1e6:.0f} M voxels), PET {pet_wb.shape} at "
      f"{tuple(round(float(z), 2) for z in pet_zoom[:3])} mm")

out = os.path.join(a.work, "pred")
env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
r = subprocess.run(["/usr/bin/time", "-v", a.glandseg, "predict", "--quiet", "--precision",
                    a.precision, "-m", a.model, "-i", inp, "-o", out], env=env,
                   capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(f"predict failed:\n{r.stdout}\n{r.stderr}")
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
wall = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", r.stderr).group(1)
report = json.load(open(os.path.join(out, "WB", "prediction.json")))
print(json.dumps({
    "ct_shape": list(ct_wb.shape),
    "pet_shape": list(pet_wb.shape),
    "peak_rss_mib": round(rss_kb / 1024),
    "wall": wall,
    "predict_seconds": report.get("seconds"),
    "region": [report.get("region_lo"), report.get("region_hi")],
    "precision": report.get("precision"),
}))
