//! CI smoke test: a fixed number of mutants per reader (seeded, so every run sees the same
//! inputs), no panic and no hang (> 10 s) allowed. About 30-60 s for all readers in the
//! debug profile on 2 cores. Longer runs: `cargo run -p glandseg-fuzz --example fuzz`.

use glandseg_fuzz::{Campaign, Reader};

fn smoke(reader: Reader, execs: u64) {
    let mut c = Campaign::new(reader, execs);
    c.seed = 13;
    let r = c.run().unwrap();
    println!("{r}");
    assert_eq!(r.execs, execs);
    assert!(r.seeds.1 > 0, "no seed accepted: {r}");
    let findings: Vec<_> = r
        .findings
        .iter()
        .map(|f| {
            (
                f.outcome.clone(),
                f.sample
                    .files
                    .iter()
                    .map(|(p, b)| (p.clone(), b.len()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert!(findings.is_empty(), "{r}\n{findings:#?}");
}

#[test]
fn nifti() {
    smoke(Reader::Nifti, 2000);
}

#[test]
fn nifti_gz() {
    smoke(Reader::NiftiGz, 1500);
}

#[test]
fn dicom_file() {
    smoke(Reader::DicomFile, 1200);
}

#[test]
fn dicom_folder() {
    smoke(Reader::DicomFolder, 400);
}

#[test]
fn seg() {
    smoke(Reader::Seg, 1500);
}

#[test]
fn rtstruct() {
    smoke(Reader::RtStruct, 1500);
}

#[test]
fn plan_json() {
    smoke(Reader::Plan, 2000);
}

#[test]
fn model_folder() {
    smoke(Reader::Model, 1500);
}
