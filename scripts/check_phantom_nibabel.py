#!/usr/bin/env python3
"""Cross-check glandseg's NIfTI output with nibabel, a reader no one here wrote.

Runs `glandseg phantom` for a small cohort, then for every image and label file compares
what nibabel reads with what `glandseg info --json` reports: shape, affine (nibabel's RAS
affine == diag(-1,-1,1,1) @ glandseg's LPS affine), sform == qform, codes > 0; and checks
that CT, PET and labels of a case share a grid and the labels hold all seven values.

Usage: scripts/check_phantom_nibabel.py [path/to/glandseg]   (default target/debug/glandseg)
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def main() -> int:
    exe = sys.argv[1] if len(sys.argv) > 1 else "target/debug/glandseg"
    passed, failed = 0, 0

    def check(ok: bool, what: str) -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"FAIL: {what}")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phantom"
        subprocess.run([exe, "phantom", "--cases", "4", "--scale", "0.5", "--preview", "--out", str(out)], check=True)
        ds = json.loads((out / "dataset.json").read_text())
        check(ds["channel_names"] == {"0": "CT", "1": "PET"}, "dataset.json channel_names")
        check(ds["numTraining"] == 4, "dataset.json numTraining")
        check(ds["file_ending"] == ".nii.gz", "dataset.json file_ending")
        labels = ds["labels"]
        for case in sorted(p.name[: -len(".nii.gz")] for p in (out / "labelsTr").glob("*.nii.gz")):
            files = [out / "imagesTr" / f"{case}_0000.nii.gz", out / "imagesTr" / f"{case}_0001.nii.gz", out / "labelsTr" / f"{case}.nii.gz"]
            affines = []
            for f in files:
                info = json.loads(subprocess.run([exe, "info", "--json", str(f)], check=True, capture_output=True, text=True).stdout)
                img = nib.load(str(f))
                check(list(img.shape) == info["shape"], f"{f.name}: shape nibabel {img.shape} vs glandseg {info['shape']}")
                want = LPS_TO_RAS @ np.array(info["affine_lps"])
                check(np.allclose(img.affine, want, atol=1e-4), f"{f.name}: affine nibabel\n{img.affine}\nvs glandseg (RAS)\n{want}")
                hdr = img.header
                check(int(hdr["sform_code"]) > 0 and int(hdr["qform_code"]) > 0, f"{f.name}: sform/qform codes")
                check(np.allclose(hdr.get_sform(), hdr.get_qform(), atol=1e-4), f"{f.name}: sform != qform")
                data = np.asanyarray(img.dataobj)
                check(abs(float(data.min()) - info["min"]) < 1e-3 and abs(float(data.max()) - info["max"]) < 1e-3, f"{f.name}: value range")
                affines.append(img.affine)
            check(all(np.allclose(a, affines[0], atol=1e-4) for a in affines), f"{case}: CT, PET and labels on one grid")
            lab = np.asanyarray(nib.load(str(files[2])).dataobj)
            check(set(np.unique(lab).tolist()) == set(labels.values()), f"{case}: label values {np.unique(lab)}")
            # Laterality in world space: each _left centroid at larger LPS x (smaller RAS x).
            aff = nib.load(str(files[2])).affine
            for name, v in labels.items():
                if name.endswith("_left"):
                    r = labels[name[: -len("_left")] + "_right"]
                    cl = aff @ np.append(np.argwhere(lab == v).mean(0), 1)
                    cr = aff @ np.append(np.argwhere(lab == r).mean(0), 1)
                    check(cl[0] < cr[0], f"{case}: {name} RAS x {cl[0]:.1f} not left of partner {cr[0]:.1f}")
            check((out / "preview" / f"{case}.png").is_file(), f"{case}: preview")
    print(f"nibabel check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
