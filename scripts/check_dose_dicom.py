"""pydicom reads what `glandseg dose` and `glandseg phantom --timepoints --dicom` write the
way glandseg describes it: the NM objects (units, injected MBq, times, grid) and the
RTDOSE (Gy, Dose Grid Scaling, GridFrameOffsetVector, the CT's Frame of Reference).

Usage: check_dose_dicom.py NM_FILE CT_DIR RTDOSE DOSE_JSON
Prints one JSON line with what it read; exits non-zero on a mismatch.
"""
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom


def dt(date, time):
    return datetime.strptime(date + time.split(".")[0], "%Y%m%d%H%M%S")


def main():
    nm_path, ct_dir, rtdose_path, dose_json = sys.argv[1:5]
    nm = pydicom.dcmread(nm_path)
    assert nm.Modality == "NM", nm.Modality
    assert nm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20"
    rp = nm.RadiopharmaceuticalInformationSequence[0]
    # NM objects store Radionuclide Total Dose in MBq (PET: Bq).
    assert abs(float(rp.RadionuclideTotalDose) - 7400.0) < 1e-6, rp.RadionuclideTotalDose
    inj = datetime.strptime(rp.RadiopharmaceuticalStartDateTime.split(".")[0], "%Y%m%d%H%M%S")
    hours = (dt(nm.AcquisitionDate, nm.AcquisitionTime) - inj).total_seconds() / 3600.0
    rwvm = nm.RealWorldValueMappingSequence[0]
    assert rwvm.MeasurementUnitsCodeSequence[0].CodeValue == "Bq/ml"
    bqml = nm.pixel_array.astype(np.float64) * float(rwvm.RealWorldValueSlope) + float(
        rwvm.RealWorldValueIntercept
    )
    assert bqml.shape == (int(nm.NumberOfFrames), int(nm.Rows), int(nm.Columns)), bqml.shape

    ct_for = {pydicom.dcmread(p, stop_before_pixels=True).FrameOfReferenceUID for p in Path(ct_dir).glob("*.dcm")}
    rd = pydicom.dcmread(rtdose_path)
    assert rd.Modality == "RTDOSE" and rd.DoseUnits == "GY", (rd.Modality, rd.DoseUnits)
    assert rd.FrameOfReferenceUID in ct_for, (rd.FrameOfReferenceUID, ct_for)
    gy = rd.pixel_array.astype(np.float64) * float(rd.DoseGridScaling)
    offsets = [float(v) for v in rd.GridFrameOffsetVector]
    assert offsets[0] == 0.0 and len(offsets) == int(rd.NumberOfFrames)
    report = json.load(open(dose_json))
    hottest = max(g["d2_gy"] for g in report["glands"])
    print(
        json.dumps(
            {
                "nm_hours": hours,
                "nm_injected_mbq": float(rp.RadionuclideTotalDose),
                "nm_max_bqml": float(bqml.max()),
                "rtdose_max_gy": float(gy.max()),
                "rtdose_frames": int(rd.NumberOfFrames),
                "hottest_d2_gy": hottest,
            }
        )
    )
    # The map's maximum is at least the hottest gland's D2 and of its order.
    assert gy.max() >= 0.99 * hottest and gy.max() < 3 * hottest, (gy.max(), hottest)


if __name__ == "__main__":
    main()
