//! Prints, per case, the grid, gland volumes (label map vs target), SUVmean/SUVmax on the
//! PET channel, CT HU means and tissue SUVs, with the time each case took to generate.
//! Usage: `cargo run -p glandseg-phantom --example phantom_report -- [cases] [scale] [seed] [fov]`.
//! With a fifth argument, a folder, it instead times `write_dataset` (the whole cohort in
//! the nnU-Net layout, native PET included) and prints the cohort's ranges.

use glandseg_phantom::{generate_case, Fov, PhantomConfig};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cases: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let scale: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let fov: Fov = args
        .get(4)
        .map(|s| s.parse().expect("fov"))
        .unwrap_or(Fov::HeadNeck);
    let cfg = PhantomConfig {
        seed,
        fov,
        cut_top: std::env::var_os("CUT_TOP").is_some(),
        scale,
        style: std::env::var("STYLE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default(),
        style_from: None,
    };
    if let Some(out) = args.get(5) {
        let t = Instant::now();
        let s =
            glandseg_phantom::write_dataset(std::path::Path::new(out), &cfg, cases, true, &|c| {
                eprintln!("{} done at {:.1} s", c.id, t.elapsed().as_secs_f64())
            })
            .expect("write_dataset");
        println!(
            "{cases} cases written in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        for (name, (lo, hi)) in &s.volume_ml {
            let (a, b) = s.suv_max[name];
            println!("  {name:<20} {lo:6.2}-{hi:6.2} mL  SUVmax {a:5.1}-{b:5.1}");
        }
        return;
    }
    for i in 0..cases {
        let t = Instant::now();
        let c = generate_case(&cfg, i);
        let dt = t.elapsed().as_secs_f64();
        let m = &c.meta;
        println!(
            "{} {:.2}s CT {:?} {:.2}x{:.2}x{:.2} ({} vox) PET {:?} {:.2}x{:.2}x{:.2} FWHM {:.1} noise {:.0} HU top_cut {} fat {:.2}",
            c.id,
            dt,
            m.ct_shape,
            m.ct_spacing_mm[0],
            m.ct_spacing_mm[1],
            m.ct_spacing_mm[2],
            c.ct.as_slice().len(),
            m.pet_shape,
            m.pet_spacing_mm[0],
            m.pet_spacing_mm[1],
            m.pet_spacing_mm[2],
            m.pet_psf_fwhm_mm,
            m.ct_noise_sigma_hu,
            m.top_cut,
            m.parotid_fat_fraction
        );
        for g in &m.glands {
            println!(
                "  {:<20} {:6.2} mL (target {:6.2})  HU {:6.1}  SUV true {:5.1} mean {:5.1} max {:5.1}  x {:6.1}",
                g.name,
                g.label_volume_ml,
                g.target_volume_ml,
                g.ct_hu_mean,
                g.true_suv,
                g.suv_mean,
                g.suv_max,
                g.centroid_lps[0]
            );
        }
    }
}
