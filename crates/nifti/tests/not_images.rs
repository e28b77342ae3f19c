//! Files that are not (orthogonal) images: a sheared sform, non-image intents (CIFTI,
//! vectors, matrices) and dimensions 5-7. Each is built by editing a file glandseg wrote.

use glandseg_core::{Geometry, Volume};
use glandseg_nifti::{describe::describe, read_nifti, read_volume, write_volume, TransformSource};
use std::path::{Path, PathBuf};

fn written(dir: &Path, vol: &Volume<f32>) -> Vec<u8> {
    let p = dir.join("base.nii");
    write_volume(&p, vol).unwrap();
    std::fs::read(&p).unwrap()
}

fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// srow_x = (1, 0.5, 0, x0): the j axis leans 26.6 degrees towards x. The qform (written
/// with code 1) still holds the orthogonal grid.
fn sheared(dir: &Path) -> (Geometry, Vec<u8>) {
    let g = Geometry::new([20, 20, 10], [1.0, 1.0, 2.0], [10.0, -20.0, 30.0]);
    let mut b = written(dir, &Volume::filled(g.clone(), 1.0f32));
    put_f32(&mut b, 284, 0.5); // srow_x[1]
    (g, b)
}

#[test]
fn sheared_sform_falls_back_to_a_valid_qform() {
    let dir = tempfile::tempdir().unwrap();
    let (g, b) = sheared(dir.path());
    let p = save(dir.path(), "sheared_q.nii", &b);
    let img = read_nifti(&p).unwrap();
    assert_eq!(img.header.transform, TransformSource::Qform);
    assert!(
        img.geometry.same_grid(&g, 1e-5),
        "{:?} vs {g:?}",
        img.geometry
    );
    let note = img.header.transform_note.clone().unwrap_or_default();
    assert!(note.contains("shear"), "{note}");
    // `glandseg info` says so too.
    let info = describe(&p).unwrap();
    assert!(info.to_string().contains("shear"), "{info}");
}

#[test]
fn sheared_sform_without_qform_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut b) = sheared(dir.path());
    put_i16(&mut b, 252, 0); // qform_code
    let p = save(dir.path(), "sheared_noq.nii", &b);
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(
        e.contains("sheared_noq.nii") && e.contains("shear") && e.contains("sform"),
        "{e}"
    );
    // The message says how far an orthogonal grid would move voxels (here: j = 19 leans
    // 9.5 mm along x).
    assert!(e.contains("mm"), "{e}");
}

#[test]
fn slightly_rounded_sform_is_still_orthogonal() {
    // float32 rounding of an oblique rotation is not a shear.
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = 17f64.to_radians().sin_cos();
    let g = Geometry::new([5, 6, 7], [0.9, 0.9, 3.0], [1.0, 2.0, 3.0]).with_direction([
        [c, -s, 0.0],
        [s, c, 0.0],
        [0.0, 0.0, 1.0],
    ]);
    let mut b = written(dir.path(), &Volume::filled(g.clone(), 0.0f32));
    put_i16(&mut b, 252, 0);
    let p = save(dir.path(), "oblique.nii", &b);
    let img = read_nifti(&p).unwrap();
    assert_eq!(img.header.transform, TransformSource::Sform);
    assert!(img.geometry.same_grid(&g, 1e-5));
}

/// A 10 x 10 float file relabelled as CIFTI: dim = (6; 1, 1, 1, 1, 10, 10).
#[test]
fn cifti_is_refused_not_read_as_4d() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::new([10, 10, 1], [1.0; 3], [0.0; 3]);
    let mut b = written(
        dir.path(),
        &Volume::from_vec(g, (0..100).map(|x| x as f32).collect()).unwrap(),
    );
    for (a, v) in [6, 1, 1, 1, 1, 10, 10, 1].into_iter().enumerate() {
        put_i16(&mut b, 40 + 2 * a, v);
    }
    put_i16(&mut b, 68, 3006); // NIFTI_INTENT_CONNECTIVITY_DENSE_SCALARS
    let p = save(dir.path(), "cifti.dscalar.nii", &b);
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(
        e.contains("cifti.dscalar.nii") && e.contains("CIFTI") && e.contains("3006"),
        "{e}"
    );
    assert!(describe(&p).is_err());
    // Without the intent the 5th-7th dimensions alone say it is not an image.
    put_i16(&mut b, 68, 0);
    let p = save(dir.path(), "dims56.nii", &b);
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(e.contains("dims56.nii") && e.contains("dim[5]"), "{e}");
}

#[test]
fn non_image_intents_are_refused_image_intents_read() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::new([4, 3, 2], [1.0; 3], [0.0; 3]);
    let base = written(dir.path(), &Volume::filled(g.clone(), 2.0f32));
    for (code, word) in [
        (1007, "vector"),
        (1005, "matrix"),
        (1008, "point set"),
        (2003, "RGB"),
    ] {
        let mut b = base.clone();
        put_i16(&mut b, 68, code);
        let name = format!("intent{code}.nii");
        let p = save(dir.path(), &name, &b);
        let e = read_nifti(&p).unwrap_err().to_string();
        assert!(
            e.contains(&name) && e.contains(word) && e.contains("intent"),
            "{e}"
        );
    }
    // Statistics, labels, estimates and plain values are images.
    for code in [0, 3, 5, 1001, 1002, 1011] {
        let mut b = base.clone();
        put_i16(&mut b, 68, code);
        let p = save(dir.path(), "ok.nii", &b);
        let v = read_volume(&p).unwrap_or_else(|e| panic!("intent {code}: {e}"));
        assert!(v.geometry().same_grid(&g, 1e-6));
    }
}
