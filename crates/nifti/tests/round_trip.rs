//! Writing and reading back: the grid survives (sform and qform agree), values too.

use glandseg_core::{Geometry, Volume};
use glandseg_nifti::{read_nifti, read_volume, write_ct_i16, write_volume, TransformSource};

fn rot(deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = (deg.to_radians().sin(), deg.to_radians().cos());
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}

fn geometries() -> Vec<Geometry> {
    let oblique =
        Geometry::new([7, 5, 4], [0.8, 1.1, 2.5], [-30.0, 12.5, 100.0]).with_direction(rot(17.0));
    // Left-handed: i toward the patient's right (as a RAS/LAS file stores it).
    let lefthanded = Geometry::new([6, 5, 3], [1.0, 2.0, 3.0], [5.0, -7.0, 1.0]).with_direction([
        [-1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    ]);
    let ras = Geometry::new([4, 4, 4], [1.5; 3], [0.0; 3]).with_direction([
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, 1.0],
    ]);
    // A 180-degree rotation: the quaternion's `a` is 0, the edge case of the standard.
    let flip180 = Geometry::new([3, 4, 5], [1.0; 3], [1.0, 2.0, 3.0]).with_direction([
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, 1.0],
    ]);
    vec![
        oblique,
        lefthanded,
        ras,
        flip180,
        Geometry::new([5, 6, 7], [0.9, 0.9, 3.0], [0.0; 3]),
    ]
}

#[test]
fn f32_u8_i16_round_trip_keeps_grid_and_values() {
    let dir = tempfile::tempdir().unwrap();
    for (n, g) in geometries().into_iter().enumerate() {
        let nv = g.num_voxels();
        let img =
            Volume::from_vec(g.clone(), (0..nv).map(|x| x as f32 * 0.5 - 3.25).collect()).unwrap();
        for ext in ["nii", "nii.gz"] {
            let p = dir.path().join(format!("img{n}.{ext}"));
            write_volume(&p, &img).unwrap();
            let back = read_volume(&p).unwrap();
            assert!(
                back.geometry().same_grid(&g, 1e-5),
                "{n} {ext}: {:?} vs {:?}",
                back.geometry(),
                g
            );
            assert_eq!(back.as_slice(), img.as_slice());
            // qform and sform encode the same grid.
            let full = read_nifti(&p).unwrap();
            assert_eq!(full.header.transform, TransformSource::Sform);
            let q = glandseg_nifti::qform_affine_of(&full.header);
            for r in 0..3 {
                for c in 0..4 {
                    assert!(
                        (q[r][c] - full.header.affine_ras[r][c]).abs() < 1e-4,
                        "{n}: qform != sform at [{r}][{c}]"
                    );
                }
            }
        }
        let lab = img.map(|x| (x.abs() as u32 % 7) as u8);
        let p = dir.path().join(format!("lab{n}.nii.gz"));
        write_volume(&p, &lab).unwrap();
        let back = glandseg_nifti::read_labels(&p).unwrap();
        assert_eq!(back.as_slice(), lab.as_slice());
        let p = dir.path().join(format!("ct{n}.nii.gz"));
        write_ct_i16(&p, &img.map(|x| x * 100.4)).unwrap();
        let back = read_nifti(&p).unwrap();
        assert_eq!(back.header.datatype, "int16");
        assert_eq!(back.data[3], (img.as_slice()[3] * 100.4).round());
    }
}

#[test]
fn write_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let v = Volume::filled(Geometry::new([2, 2, 2], [1.0; 3], [0.0; 3]), 0u8);
    let e = write_volume(&dir.path().join("x.png"), &v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.png"), "{e}");
}
