#!/usr/bin/env python3
"""Cross-check glandseg's 3D Slicer segmentations with pynrrd and slicerio.

    python3 scripts/check_seg_nrrd.py PRED_DIR [--labels dataset.json]

For every PRED_DIR/CASE.seg.nrrd beside CASE.nii.gz: pynrrd reads the header and voxels,
slicerio reads it as a Slicer segmentation; the voxels equal nibabel's reading of the
NIfTI, the grid (LPS, from `space directions` / `space origin`) equals the NIfTI's
affine (RAS, x and y negated) within float32 precision, and every gland is a segment
with its name, label value, layer 0, a colour and SNOMED CT terminology (category
"Anatomical Structure", the gland's type code, Left/Right as type modifier).
Exit status 0 when all hold; prints one line per case.
"""

import argparse
import json
import pathlib
import sys

import nibabel
import nrrd
import numpy as np
import slicerio

GLAND_CODES = {"parotid": "45289007", "submandibular": "54019009", "lacrimal": "13561001"}
SIDE_CODES = {"left": "7771000", "right": "24028007"}
DEFAULT_LABELS = {
    "parotid_left": 1,
    "parotid_right": 2,
    "submandibular_left": 3,
    "submandibular_right": 4,
    "lacrimal_left": 5,
    "lacrimal_right": 6,
}


def check_case(seg_path: pathlib.Path, nii_path: pathlib.Path, labels: dict) -> list:
    problems = []
    data, header = nrrd.read(str(seg_path))
    if header.get("space") != "left-posterior-superior":
        problems.append(f"space is {header.get('space')!r}")
    if header.get("encoding") != "gzip":
        problems.append(f"encoding is {header.get('encoding')!r}")
    img = nibabel.load(str(nii_path))
    ref = np.asarray(img.dataobj)
    if data.shape != ref.shape:
        problems.append(f"shape {data.shape} != NIfTI {ref.shape}")
    elif not np.array_equal(data, ref.astype(data.dtype)):
        problems.append(f"{int((data != ref).sum())} voxels differ from the NIfTI")
    # NRRD: world = origin + directions^T . ijk (rows of `space directions` are the axes).
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(header["space directions"], dtype=float).T
    lps[:3, 3] = np.asarray(header["space origin"], dtype=float)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    if not np.allclose(ras, img.affine, atol=1e-3):
        problems.append(f"affine differs:\n{ras}\nvs NIfTI\n{img.affine}")

    seg = slicerio.read_segmentation(str(seg_path))
    segments = {s["name"]: s for s in seg["segments"]}
    for name, value in labels.items():
        s = segments.get(name)
        if s is None:
            problems.append(f"no segment {name!r} (segments: {sorted(segments)})")
            continue
        if s.get("labelValue") != value:
            problems.append(f"{name}: labelValue {s.get('labelValue')} != {value}")
        if s.get("layer") != 0:
            problems.append(f"{name}: layer {s.get('layer')}")
        colour = s.get("color")
        if not colour or len(colour) != 3 or not all(0.0 <= c <= 1.0 for c in colour):
            problems.append(f"{name}: colour {colour}")
        stem, _, side = name.rpartition("_")
        t = s.get("terminology", {})
        if stem in GLAND_CODES:
            if t.get("category", [None, None])[1] != "123037004":
                problems.append(f"{name}: category {t.get('category')}")
            if t.get("type", [None, None])[1] != GLAND_CODES[stem]:
                problems.append(f"{name}: type {t.get('type')}")
            if t.get("typeModifier", [None, None])[1] != SIDE_CODES.get(side):
                problems.append(f"{name}: laterality {t.get('typeModifier')}")
        voxels = int((data == value).sum())
        mask = slicerio.segment_mask(seg, s) if voxels else None
        if mask is not None and int(mask.sum()) != voxels:
            problems.append(f"{name}: slicerio mask {int(mask.sum())} voxels, NRRD {voxels}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred", type=pathlib.Path)
    ap.add_argument("--labels", type=pathlib.Path, help="dataset.json naming the labels")
    a = ap.parse_args()
    labels = DEFAULT_LABELS
    if a.labels:
        labels = {k: v for k, v in json.loads(a.labels.read_text())["labels"].items() if v != 0}
    files = sorted(a.pred.glob("*.seg.nrrd"))
    if not files:
        print(f"{a.pred}: no .seg.nrrd files", file=sys.stderr)
        return 1
    failed = 0
    for f in files:
        case = f.name[: -len(".seg.nrrd")]
        problems = check_case(f, a.pred / f"{case}.nii.gz", labels)
        print(f"{case}: {'ok' if not problems else 'FAILED'}")
        for p in problems:
            print(f"  {p}")
        failed += bool(problems)
    print(f"{len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
