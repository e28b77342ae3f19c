#!/usr/bin/env python3
"""Check that nibabel, a reader no one here wrote, sees NIfTI files written by glandseg
exactly as glandseg describes them.

Usage: scripts/check_nifti_roundtrip.py FOLDER REPORT.json

REPORT.json is what glandseg says it wrote:

    {"files": [{"file": "a.nii.gz",            # relative to FOLDER
                "shape": [i, j, k],
                "affine_lps": [[4 x 4]],       # glandseg's LPS voxel -> world affine
                "dtype": "float32",            # optional: numpy dtype name on disk
                "sum": 123.0,                  # optional: sum of the (scaled) values
                "samples": [{"index": [i, j, k], "value": v}, ...]}]}   # optional

For each file: nibabel loads it; shape matches; nibabel's affine, the sform and the qform
(both with code > 0) all equal diag(-1,-1,1,1) @ affine_lps (NIfTI is RAS, glandseg is
LPS); dtype, sum and samples match. Samples are indexed [i, j, k] the way nibabel indexes
the array, so a transposed or flipped voxel order fails here even when the sum agrees.

Exit status 0 when every check passed, 1 otherwise (each failure is printed).
"""
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
AFFINE_TOL = 1e-4  # mm; the header stores float32


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    folder, report = Path(sys.argv[1]), Path(sys.argv[2])
    files = json.loads(report.read_text())["files"]
    failures = []
    checks = 0

    def check(ok: bool, what: str) -> None:
        nonlocal checks
        checks += 1
        if not ok:
            failures.append(what)
            print(f"FAIL: {what}")

    for entry in files:
        name = entry["file"]
        img = nib.load(str(folder / name))
        check(list(img.shape) == list(entry["shape"]), f"{name}: shape nibabel {img.shape} vs glandseg {entry['shape']}")
        want = LPS_TO_RAS @ np.array(entry["affine_lps"], dtype=float)
        check(np.allclose(img.affine, want, atol=AFFINE_TOL), f"{name}: affine\n{img.affine}\nvs\n{want}")
        sform, scode = img.header.get_sform(coded=True)
        check(scode is not None and int(scode) > 0, f"{name}: sform_code {scode}")
        check(sform is not None and np.allclose(sform, want, atol=AFFINE_TOL), f"{name}: sform\n{sform}\nvs\n{want}")
        qform, qcode = img.header.get_qform(coded=True)
        check(qcode is not None and int(qcode) > 0, f"{name}: qform_code {qcode}")
        check(qform is not None and np.allclose(qform, want, atol=AFFINE_TOL), f"{name}: qform\n{qform}\nvs\n{want}")
        if "dtype" in entry:
            got = img.get_data_dtype().name
            check(got == entry["dtype"], f"{name}: dtype {got} vs {entry['dtype']}")
        data = np.asanyarray(img.dataobj).astype(np.float64)
        if "sum" in entry:
            s = float(data.sum())
            check(abs(s - entry["sum"]) <= 1e-6 * max(1.0, abs(entry["sum"])), f"{name}: sum {s} vs {entry['sum']}")
        for smp in entry.get("samples", []):
            i, j, k = smp["index"]
            v = float(data[i, j, k])
            check(abs(v - smp["value"]) <= 1e-6 * max(1.0, abs(smp["value"])), f"{name}: value at {smp['index']} {v} vs {smp['value']}")

    print(f"{len(files)} files, {checks} checks, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
