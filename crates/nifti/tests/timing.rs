//! Write/read timing for a CT-sized volume. Ignored by default (it is a measurement, not a
//! check of behaviour, and the shared machine is small); run with
//! `cargo test -p glandseg-nifti --test timing -- --ignored --nocapture`.

use glandseg_core::{Geometry, Volume};
use glandseg_nifti::{read_volume, write_ct_i16, write_volume};
use std::time::Instant;

#[test]
#[ignore]
fn write_and_read_512x512x200() {
    let g = Geometry::new([512, 512, 200], [0.98, 0.98, 2.0], [-250.0, -250.0, 0.0]);
    // CT-like content: a smooth body with noise (a constant image would flatter gzip).
    let mut state = 12345u32;
    let data: Vec<f32> = (0..g.num_voxels())
        .map(|n| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let (i, j) = ((n % 512) as f32 - 256.0, ((n / 512) % 512) as f32 - 256.0);
            let body = if i * i + j * j < 200.0 * 200.0 {
                40.0
            } else {
                -1000.0
            };
            body + (state % 64) as f32 - 32.0
        })
        .collect();
    let vol = Volume::from_vec(g, data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["ct.nii.gz", "ct.nii"] {
        let p = dir.path().join(name);
        let t = Instant::now();
        write_volume(&p, &vol).unwrap();
        let w = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = read_volume(&p).unwrap();
        let r = t.elapsed().as_secs_f64();
        let mb = std::fs::metadata(&p).unwrap().len() as f64 / 1e6;
        println!("f32 {name}: write {w:.2} s, read {r:.2} s, {mb:.0} MB");
        assert_eq!(back.as_slice()[12345], vol.as_slice()[12345]);
    }
    let p = dir.path().join("ct_i16.nii.gz");
    let t = Instant::now();
    write_ct_i16(&p, &vol).unwrap();
    let w = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = read_volume(&p).unwrap();
    let r = t.elapsed().as_secs_f64();
    let mb = std::fs::metadata(&p).unwrap().len() as f64 / 1e6;
    println!("i16 ct_i16.nii.gz: write {w:.2} s, read {r:.2} s, {mb:.0} MB");
    assert_eq!(back.as_slice()[12345], vol.as_slice()[12345].round());
}
