//! Every input the fuzzer once found crashing, hanging or slow (`regressions/<reader>/*/`,
//! each with `finding.txt` saying what it did) is now refused quickly and cleanly.

use std::time::Duration;

#[test]
fn saved_findings_are_refused_quickly() {
    // Each ran 1-10 s (gigabyte allocations) or panicked before its fix; now milliseconds.
    let bad = glandseg_fuzz::replay_regressions(Duration::from_secs(3)).unwrap();
    assert!(bad.is_empty(), "{bad:#?}");
    // Nor do they cost memory: several once made a reader size a buffer of gigabytes
    // from a declared length (zeroed: resident, not just reserved). The process's peak
    // resident size (Linux) covers every replay in this binary.
    if std::path::Path::new("/proc/self/status").is_file() {
        let peak_kb = glandseg_fuzz::peak_rss_kb().expect("VmHWM in /proc/self/status");
        assert!(peak_kb < 1 << 20, "peak resident {peak_kb} kB");
    }
}

#[test]
fn length_past_the_end_is_named() {
    use glandseg_fuzz::{execute, regressions_dir, Outcome, Reader, Sample};
    let scratch = tempfile::tempdir().unwrap();
    for (reader, case, words) in [
        (Reader::Nifti, "nifti/dims-product-overflows", "overflows"),
        (
            Reader::NiftiGz,
            "nifti-gz/dims-product-overflows",
            "overflows",
        ),
        (
            Reader::DicomFile,
            "dicom/data-set-length-past-end",
            "(7F7F,7FFF)",
        ),
        (
            Reader::DicomFile,
            "dicom/item-never-ended-length-past-end",
            "(7FFF,7FFF), which starts at byte 1722 and declares 2147450879 bytes",
        ),
        (
            Reader::DicomFile,
            "dicom/meta-group-length-past-end",
            "MediaStorageSOPInstanceUID",
        ),
        (
            Reader::RtStruct,
            "rtstruct/meta-group-length-past-end",
            "declares",
        ),
        (
            Reader::DicomFile,
            "dicom/j2k-siz-width-8388352",
            "declares a 8388352 x 512 image",
        ),
        (
            Reader::DicomFile,
            "dicom/j2k-siz-height-4194816",
            "declares a 512 x 4194816 image",
        ),
        (
            Reader::Model,
            "model/plans-without-stages",
            "\"stages\" holds 0 stages",
        ),
        (
            Reader::Model,
            "model/checkpoint-model-block-undecodable",
            "checkpoint_final.ckpt: weights do not fit",
        ),
    ] {
        let sample = Sample::from_dir(&regressions_dir().join(case).join("files")).unwrap();
        match execute(reader, &sample, scratch.path()) {
            Outcome::Refused(msg) => assert!(msg.contains(words), "{case}: {msg}"),
            o => panic!("{case}: {o:?}"),
        }
    }
}
