//! Real files made awkward the way converters and archives make them (issue #13): geometry
//! in VR UN, Philips private tags in Implicit VR, trailing bytes after the Pixel Data, and
//! truncated files. Every fixture is built at run time from a file in shared/testdata.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use glandseg_dicom::suv::suv_factors_of_file;
use glandseg_dicom::{load_series, scan_folder};
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    glandseg_core::testdata::dir(env!("CARGO_MANIFEST_DIR"), "dicom").join("dicom")
}

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// Rewrites `src` into `dst` with `edit` applied and the data set in `ts`.
fn rewrite(
    src: &Path,
    dst: &Path,
    ts: Option<&str>,
    edit: impl FnOnce(&mut dicom_object::DefaultDicomObject),
) {
    let mut obj = dicom_object::open_file(src).unwrap();
    edit(&mut obj);
    if let Some(ts) = ts {
        let mut t = ts.to_string();
        if t.len() % 2 == 1 {
            t.push('\0');
        }
        obj.meta_mut().transfer_syntax = t;
        obj.meta_mut().update_information_group_length();
    }
    obj.write_to_file(dst).unwrap();
}

#[test]
fn geometry_in_vr_un_is_decoded_with_the_dictionary_vr() {
    let dir = tempfile::tempdir().unwrap();
    let src = testdata().join("compressed/CT_small.dcm");
    let dst = dir.path().join("un.dcm");
    rewrite(&src, &dst, None, |obj| {
        for tag in [
            tags::IMAGE_POSITION_PATIENT,
            tags::IMAGE_ORIENTATION_PATIENT,
            tags::PIXEL_SPACING,
            tags::RESCALE_SLOPE,
            tags::RESCALE_INTERCEPT,
            tags::ROWS,
        ] {
            let e = obj.element(tag).unwrap();
            let bytes = if e.vr() == VR::US {
                e.to_int::<u16>().unwrap().to_le_bytes().to_vec()
            } else {
                let mut b = e.to_str().unwrap().as_bytes().to_vec();
                if b.len() % 2 == 1 {
                    b.push(b' ');
                }
                b
            };
            obj.put(DataElement::new(tag, VR::UN, PrimitiveValue::from(bytes)));
        }
    });
    // The rewritten file really holds UN (what the converter bug produces).
    let raw = dicom_object::open_file(&dst).unwrap();
    assert_eq!(
        raw.element(tags::IMAGE_POSITION_PATIENT).unwrap().vr(),
        VR::UN
    );
    let want = load_series(&scan_folder(&src).unwrap().series[0]).unwrap();
    let scan = scan_folder(&dst).unwrap();
    assert_eq!(scan.series.len(), 1, "{:?}", scan.skipped);
    let got = load_series(&scan.series[0]).unwrap();
    assert_eq!(got.volume.geometry(), want.volume.geometry());
    assert_eq!(got.volume.as_slice(), want.volume.as_slice());
}

#[test]
fn philips_private_suv_factor_is_read_in_implicit_vr() {
    let dir = tempfile::tempdir().unwrap();
    let src =
        testdata().join("pet_suv/philips_acrin_nsclc_fdg_pet_ACRIN-NSCLC-FDG-PET-229_004.dcm");
    let dst = dir.path().join("philips_implicit.dcm");
    rewrite(&src, &dst, Some(IMPLICIT_VR_LE), |_| {});
    let want = suv_factors_of_file(&src).unwrap();
    assert!(want.derivation.iter().any(|d| d.contains("7053")));
    let got = suv_factors_of_file(&dst).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.suvbw, want.suvbw);
    // The geometry still reads (Implicit VR makes every private tag UN, never a standard one).
    let scan = scan_folder(&dst).unwrap();
    assert_eq!(scan.series.len(), 1, "{:?}", scan.skipped);
}

/// The 20-slice CT series copied to `dir`, sorted by file name.
fn copy_ct_series(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(testdata().join("ct_series")).unwrap() {
        let p = e.unwrap().path();
        let d = dir.join(p.file_name().unwrap());
        std::fs::copy(&p, &d).unwrap();
        out.push(d);
    }
    out.sort();
    out
}

#[test]
fn zero_padding_after_pixel_data_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let files = copy_ct_series(dir.path());
    let want = load_series(&scan_folder(dir.path()).unwrap().series[0]).unwrap();
    let mut b = std::fs::read(&files[3]).unwrap();
    b.extend(std::iter::repeat_n(0u8, 2_500_000));
    std::fs::write(&files[3], &b).unwrap();
    let scan = scan_folder(dir.path()).unwrap();
    assert_eq!(scan.series.len(), 1);
    assert_eq!(scan.series[0].slices.len(), 20, "{:?}", scan.skipped);
    let got = load_series(&scan.series[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.volume.as_slice(), want.volume.as_slice());
}

#[test]
fn truncated_file_says_where_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let files = copy_ct_series(dir.path());
    let b = std::fs::read(&files[5]).unwrap();
    let cut = b.len() - 100_000;
    std::fs::write(&files[5], &b[..cut]).unwrap();
    let scan = scan_folder(dir.path()).unwrap();
    let e = load_series(&scan.series[0]).unwrap_err().to_string();
    let name = files[5].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        e.contains(&name) && e.contains("truncated") && e.contains(&cut.to_string()),
        "{e}"
    );
    assert!(e.contains("(7FE0,0010)"), "{e}");
    assert!(!e.contains("Could not read data set token"), "{e}");
    // Cut inside the header: the scan lists the file with the same kind of reason.
    std::fs::write(&files[5], &b[..700]).unwrap();
    let scan = scan_folder(dir.path()).unwrap();
    let (p, why) = scan
        .skipped
        .iter()
        .find(|(p, _)| p == &files[5])
        .expect("skipped");
    assert!(
        why.contains("truncated") && why.contains("700"),
        "{}: {why}",
        p.display()
    );
}

/// An Icon Image Sequence (0088,0200) holds a small Pixel Data of its own inside an item.
/// The header-only read must not take it for the image's Pixel Data (its length checks
/// stop at the top-level one only, since a damaged file whose item never ended had its
/// image read as part of the item: `crates/fuzz/regressions/dicom/item-never-ended-*`).
#[test]
fn icon_image_sequence_does_not_derail_the_header() {
    use dicom_core::value::DataSetSequence;
    use dicom_core::Length;
    use dicom_object::InMemDicomObject;
    let dir = tempfile::tempdir().unwrap();
    let files = copy_ct_series(dir.path());
    let want = load_series(&scan_folder(dir.path()).unwrap().series[0]).unwrap();
    for f in &files {
        rewrite(f, f, None, |obj| {
            let icon = InMemDicomObject::from_element_iter([
                DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(4u16)),
                DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(4u16)),
                DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)),
                DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OB,
                    PrimitiveValue::from(vec![7u8; 16]),
                ),
            ]);
            obj.put(DataElement::new(
                tags::ICON_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::new(vec![icon], Length::UNDEFINED),
            ));
        });
    }
    let scan = scan_folder(dir.path()).unwrap();
    assert_eq!(scan.series.len(), 1, "{:?}", scan.skipped);
    assert_eq!(scan.series[0].slices.len(), 20, "{:?}", scan.skipped);
    let got = load_series(&scan.series[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.volume.as_slice(), want.volume.as_slice());
    assert_eq!(got.volume.geometry(), want.volume.geometry());
}
