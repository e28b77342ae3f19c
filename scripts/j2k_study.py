#!/usr/bin/env python3
"""Copy a DICOM study folder with its CT images re-encoded as JPEG 2000 (lossless) and new
Study/Series/SOP Instance UIDs (the frame of reference is renewed consistently), for the
PACS test of a compressed study.  Needs pydicom >= 3 and pylibjpeg-openjpeg.

usage: j2k_study.py IN_DIR OUT_DIR
"""
import sys
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless, generate_uid


def main() -> int:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    uids: dict[str, str] = {}

    def renew(uid: str) -> str:
        if uid not in uids:
            uids[uid] = generate_uid(prefix="2.25.")
        return uids[uid]

    n = 0
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f)
        except Exception:
            continue
        if "PixelData" not in ds or ds.Modality not in ("CT", "PT"):
            continue
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if kw in ds:
                setattr(ds, kw, renew(getattr(ds, kw)))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # The CT only: the phantom's small PET slices have fewer pixels than OpenJPEG's
        # default six resolution levels need.
        if ds.Modality == "CT":
            ds.compress(JPEG2000Lossless)
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
        n += 1
    print(f"{n} images written to {dst} (CT as JPEG 2000)")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
