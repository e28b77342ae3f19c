//! How long `compare` takes on a scan-sized label map (512 x 512 x 160 at
//! 0.98 x 0.98 x 2.5 mm, six glands of realistic size, each prediction shifted and
//! enlarged). Ignored by default (a few seconds, mostly building the inputs); run with
//! `cargo test -p glandseg-eval --test timing -- --ignored --nocapture`.

use glandseg_core::{Geometry, LabelMap, Volume};
use std::time::Instant;

fn paint(v: &mut Volume<u8>, label: u8, centre: [f64; 3], radii: [f64; 3]) {
    let g = v.geometry().clone();
    let lo = [0, 1, 2].map(|a| ((centre[a] - radii[a]) / g.spacing[a]).floor().max(0.0) as usize);
    let hi = [0, 1, 2]
        .map(|a| (((centre[a] + radii[a]) / g.spacing[a]).ceil() as usize + 1).min(g.shape[a]));
    for k in lo[2]..hi[2] {
        for j in lo[1]..hi[1] {
            for i in lo[0]..hi[0] {
                let p = [i, j, k].map(|x| x as f64);
                let r2: f64 = (0..3)
                    .map(|a| ((p[a] * g.spacing[a] - centre[a]) / radii[a]).powi(2))
                    .sum();
                if r2 <= 1.0 {
                    v.set(i, j, k, label);
                }
            }
        }
    }
}

#[test]
#[ignore]
fn compare_on_a_scan_sized_grid() {
    let g = Geometry::new([512, 512, 160], [0.98, 0.98, 2.5], [0.0; 3]);
    let (mut p, mut r) = (Volume::filled(g.clone(), 0u8), Volume::filled(g, 0u8));
    // (label, centre mm, radii mm): parotids ~25 mL, submandibular ~8 mL, lacrimal ~0.7 mL.
    let glands = [
        (1, [320.0, 250.0, 200.0], [15.0, 22.0, 20.0]),
        (2, [180.0, 250.0, 200.0], [15.0, 22.0, 20.0]),
        (3, [290.0, 200.0, 150.0], [11.0, 13.0, 13.0]),
        (4, [210.0, 200.0, 150.0], [11.0, 13.0, 13.0]),
        (5, [290.0, 170.0, 330.0], [6.0, 5.0, 5.0]),
        (6, [210.0, 170.0, 330.0], [6.0, 5.0, 5.0]),
    ];
    for (l, c, rad) in glands {
        paint(&mut r, l, c, rad);
        paint(
            &mut p,
            l,
            [c[0] + 1.5, c[1] - 1.0, c[2] + 2.5],
            rad.map(|x| x * 1.08),
        );
    }
    let t = Instant::now();
    let m = glandseg_eval::compare(&p, &r, &LabelMap::default()).unwrap();
    let s = t.elapsed().as_secs_f64();
    eprintln!("compare, 512x512x160, 6 classes: {s:.2} s");
    for c in &m {
        eprintln!(
            "  {:<20} dice {:.3} hd95 {:.2} mm ref {:.1} mL",
            c.name,
            c.dice,
            c.hd95.unwrap(),
            c.volume_ref_ml
        );
        // A 2.5 mm shift costs a 0.6 mL lacrimal gland far more Dice than a parotid.
        assert!(c.dice > 0.5 && c.hd95.unwrap() < 6.0, "{c:?}");
    }
}
