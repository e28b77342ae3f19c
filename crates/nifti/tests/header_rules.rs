//! The reading rules the fixtures do not cover, checked by editing single header fields of
//! a file glandseg wrote: qform-only and pixdim-only transforms, scaling, a 4D file with
//! one volume, and label maps that scaling pushes out of 0..=255.

use glandseg_core::{Geometry, Volume};
use glandseg_nifti::{read_labels, read_nifti, read_volume, write_volume, TransformSource};
use std::path::{Path, PathBuf};

/// A plain little-endian `.nii` written by glandseg, returned as bytes for editing.
fn written<T: glandseg_nifti::NiftiStorable>(dir: &Path, vol: &Volume<T>) -> Vec<u8> {
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

fn left_handed_oblique() -> Geometry {
    let (s, c) = 25f64.to_radians().sin_cos();
    // Rotation about x times a mirror of i: det -1, so the qform needs qfac = -1.
    Geometry::new([4, 3, 5], [0.7, 1.2, 2.5], [3.0, -4.0, 50.0]).with_direction([
        [-1.0, 0.0, 0.0],
        [0.0, c, -s],
        [0.0, s, c],
    ])
}

#[test]
fn qform_is_used_when_sform_code_is_zero_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let g = left_handed_oblique();
    let v = Volume::filled(g.clone(), 1.5f32);
    let mut b = written(dir.path(), &v);
    put_i16(&mut b, 254, 0); // sform_code
                             // Garbage in srow must now be ignored.
    put_f32(&mut b, 280, 1234.0);
    let p = save(dir.path(), "qform.nii", &b);
    let img = read_nifti(&p).unwrap();
    assert_eq!(img.header.transform, TransformSource::Qform);
    assert!(
        img.geometry.same_grid(&g, 1e-5),
        "{:?} vs {g:?}",
        img.geometry
    );
}

/// Both codes 0: the NIfTI-1 standard's method 1, `x = pixdim * i` in RAS with no
/// offset (the choice documented in `choose_affine`; nibabel would centre the image).
#[test]
fn pixdim_fallback_is_the_standards_method_1() {
    let dir = tempfile::tempdir().unwrap();
    let v = Volume::filled(left_handed_oblique(), 0u8);
    let mut b = written(dir.path(), &v);
    put_i16(&mut b, 252, 0);
    put_i16(&mut b, 254, 0);
    let p = save(dir.path(), "pixdim.nii", &b);
    let img = read_nifti(&p).unwrap();
    assert_eq!(img.header.transform, TransformSource::Pixdim);
    let want = Geometry::new([4, 3, 5], [0.7, 1.2, 2.5], [0.0; 3]).with_direction([
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, 1.0],
    ]);
    assert!(img.geometry.same_grid(&want, 1e-5), "{:?}", img.geometry);
    assert_eq!(img.geometry.orientation_code(), "RAS");
}

#[test]
fn scaling_follows_the_standard() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::new([3, 2, 2], [1.0; 3], [0.0; 3]);
    let v = Volume::from_vec(g, (0..12u8).collect()).unwrap();
    let base = written(dir.path(), &v);
    let mut b = base.clone();
    put_f32(&mut b, 112, 2.5);
    put_f32(&mut b, 116, -1.0);
    let p = save(dir.path(), "scaled.nii", &b);
    let got = read_volume(&p).unwrap();
    let want: Vec<f32> = (0..12).map(|x| x as f32 * 2.5 - 1.0).collect();
    assert_eq!(got.as_slice(), &want[..]);
    // Slope 0 or NaN: no scaling at all (the intercept is ignored too).
    for slope in [0.0, f32::NAN] {
        let mut b = base.clone();
        put_f32(&mut b, 112, slope);
        put_f32(&mut b, 116, 7.0);
        let p = save(dir.path(), "noscale.nii", &b);
        let got = read_volume(&p).unwrap();
        assert_eq!(got.as_slice()[11], 11.0, "slope {slope}");
    }
    // A label map scaled out of 0..=255 or to fractions is refused, naming the file.
    for (slope, name) in [(30.0f32, "big.nii"), (0.5, "half.nii")] {
        let mut b = base.clone();
        put_f32(&mut b, 112, slope);
        let p = save(dir.path(), name, &b);
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("not a label map"), "{e}");
    }
}

#[test]
fn four_d_with_one_volume_is_3d() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::new([3, 2, 2], [1.0; 3], [0.0; 3]);
    let v = Volume::from_vec(g.clone(), (0..12).map(|x| x as f32).collect()).unwrap();
    let mut b = written(dir.path(), &v);
    put_i16(&mut b, 40, 4); // dim[0]
    put_i16(&mut b, 48, 1); // dim[4]
    let p = save(dir.path(), "t1.nii", &b);
    let got = read_volume(&p).unwrap();
    assert_eq!(got.as_slice(), v.as_slice());
    // Two volumes claimed but one stored: truncated, and said so.
    put_i16(&mut b, 48, 2);
    let p = save(dir.path(), "t2.nii", &b);
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(e.contains("t2.nii") && e.contains("truncated"), "{e}");
}

#[test]
fn random_headers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::new([3, 2, 2], [1.0; 3], [0.0; 3]);
    let base = written(dir.path(), &Volume::filled(g, 1i16));
    let mut state = 0x9E37_79B9u32;
    for n in 0..300 {
        let mut b = base.clone();
        // Overwrite a few random bytes of the header (and sometimes cut the file).
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let at = (state as usize) % 352;
            b[at] = (state >> 24) as u8;
        }
        if n % 5 == 0 {
            b.truncate((state as usize) % b.len());
        }
        let p = save(dir.path(), "fuzz.nii", &b);
        // Either outcome is fine; a panic fails the test.
        let _ = read_nifti(&p);
        let _ = read_labels(&p);
    }
}
