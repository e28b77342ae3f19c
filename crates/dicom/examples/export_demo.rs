//! Writes the synthetic gland case as DICOM (CT, PET, SEG, RTSTRUCT) plus `labels.npy` and
//! `expected.json` into OUTDIR, for `scripts/check_dicom_export.py` or a DICOM viewer:
//!
//! ```text
//! cargo run -p glandseg-dicom --example export_demo -- OUTDIR
//! python3 scripts/check_dicom_export.py OUTDIR
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: export_demo OUTDIR");
        std::process::exit(2);
    };
    let case = common::write_export(std::path::Path::new(&out));
    println!(
        "{}",
        serde_json::to_string_pretty(&case).expect("the summary serialises")
    );
}
