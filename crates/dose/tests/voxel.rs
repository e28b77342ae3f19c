//! Voxel-level dose: the kernel, the FFT convolution, DVH metrics, and the whole
//! computation over a small label map.

use glandseg_core::{Geometry, LabelMap, Volume};
use glandseg_dose::voxel::{build_kernel, convolve, cumulative_dvh, dvh, local_deposition};
use glandseg_dose::{compute_dose, write_outputs, DoseOptions, Nuclide, TimePoint};

fn lu() -> Nuclide {
    Nuclide::lookup("Lu-177").unwrap()
}

#[test]
fn single_voxel_convolution_returns_the_kernel() {
    let k = build_kernel(&lu(), [2.0, 2.0, 3.0], 1.0, 12.0);
    assert_eq!(k.radius, [6, 6, 4]);
    let shape = [17, 15, 11];
    let c = [8usize, 7, 5];
    let mut tia = vec![0.0; shape.iter().product()];
    tia[c[0] + shape[0] * (c[1] + shape[1] * c[2])] = 1.0;
    let d = convolve(&tia, shape, &k);
    let peak = k.at([0, 0, 0]);
    let mut worst: f64 = 0.0;
    for kk in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let off = [
                    i as isize - c[0] as isize,
                    j as isize - c[1] as isize,
                    kk as isize - c[2] as isize,
                ];
                let got = d[i + shape[0] * (j + shape[1] * kk)];
                worst = worst.max((got - k.at(off)).abs() / peak);
            }
        }
    }
    println!("single voxel: max |conv - kernel| / kernel(0) = {worst:e}");
    assert!(worst < 1e-12, "{worst}");
    // Centre: the electron energy in one 0.012 mL voxel plus the photon self-share.
    let m = 2.0 * 2.0 * 3.0 / 1000.0;
    assert!(peak * m > lu().electron_gy_g_per_mbq_h());
    assert!(peak * m < lu().electron_gy_g_per_mbq_h() * 1.01);
}

#[test]
fn uniform_region_approaches_local_deposition() {
    let sp = [3.0, 3.0, 3.0];
    let k = build_kernel(&lu(), sp, 1.0, 30.0);
    let shape = [40, 40, 40];
    let tia = vec![1.0; shape.iter().product()];
    let d = convolve(&tia, shape, &k);
    let m = 27.0 / 1000.0;
    let local = local_deposition(&tia, &lu(), m)[0];
    let centre = d[20 + 40 * (20 + 40 * 20)];
    let kernel_sum: f64 = k.values.iter().sum();
    let info = k.info(&lu(), 1.0);
    println!(
        "uniform: centre {centre:.5} Gy, local deposition {local:.5} Gy, ratio {:.5}, kernel keeps {:.4} of the emitted energy",
        centre / local,
        info.energy_kept
    );
    // Far from the edges the convolution is exactly the kernel's sum...
    assert!((centre - kernel_sum).abs() < 1e-9 * kernel_sum);
    // ...which is local electron deposition plus the photon share kept within 30 mm:
    // 1 - e^(-0.00293·30) = 8.4 % of E_γ = 2.0 % of E_e.
    let ke = lu().electron_gy_g_per_mbq_h();
    let kg = lu().photon_gy_g_per_mbq_h();
    let kept_photons = 1.0 - (-lu().photon_mu_en_per_mm * 30.0).exp();
    assert!(centre >= local);
    let expect = (ke + kept_photons * kg) / m;
    assert!(
        ((centre - expect) / expect).abs() < 0.01,
        "{centre} vs {expect}"
    );
    assert!(centre / local < 1.025);
}

#[test]
fn dvh_metrics() {
    let doses: Vec<f64> = (0..101).map(|i| i as f64 * 0.4).collect(); // 0..40 Gy
    let h = dvh(&doses).unwrap();
    assert!((h.d50_gy - 20.0).abs() < 1e-9);
    assert!((h.d2_gy - 39.2).abs() < 1e-9);
    assert!((h.d98_gy - 0.8).abs() < 1e-9);
    assert!((h.v20gy_pct - 100.0 * 51.0 / 101.0).abs() < 1e-9);
    assert!(dvh(&[]).is_none());
}

#[test]
fn cumulative_dvh_curve() {
    // 101 voxels at 0, 1, ..., 100 Gy: at least d Gy in (101 - d) of them.
    let doses: Vec<f64> = (0..=100).rev().map(|i| i as f64).collect();
    let c = cumulative_dvh(&doses, 100).unwrap();
    assert_eq!(c.dose_gy.len(), 101);
    assert_eq!(c.volume_pct.len(), 101);
    for i in 0..=100 {
        assert_eq!(c.dose_gy[i], i as f64);
        let want = 100.0 * (101 - i) as f64 / 101.0;
        assert!(
            (c.volume_pct[i] - want).abs() < 1e-9,
            "{i}: {}",
            c.volume_pct[i]
        );
    }
    // Coarser steps: every 25 Gy; the last point is the maximum.
    let c = cumulative_dvh(&doses, 4).unwrap();
    assert_eq!(c.dose_gy, vec![0.0, 25.0, 50.0, 75.0, 100.0]);
    assert!((c.volume_pct[2] - 100.0 * 51.0 / 101.0).abs() < 1e-9);
    assert!((c.volume_pct[4] - 100.0 / 101.0).abs() < 1e-9);
    // Uniform 2 Gy: 100 % up to 2 Gy.
    let c = cumulative_dvh(&[2.0; 10], 10).unwrap();
    assert!(c.volume_pct.iter().all(|&v| v == 100.0));
    assert_eq!(*c.dose_gy.last().unwrap(), 2.0);
    // 0 Gy everywhere: one point; nothing: None.
    let c = cumulative_dvh(&[0.0; 5], 100).unwrap();
    assert_eq!((c.dose_gy, c.volume_pct), (vec![0.0], vec![100.0]));
    assert!(cumulative_dvh(&[], 100).is_none());
}

/// A 25 mL cube gland and a 0.5 mL one, uniform activity, mono-exponential T_eff 42 h.
#[test]
fn compute_dose_on_a_small_label_map() {
    let g = Geometry::new([30, 30, 30], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]);
    let vox_ml = 0.008;
    let mut lab = vec![0u8; 27000];
    let mut n_big = 0;
    let mut n_small = 0;
    for k in 0..30 {
        for j in 0..30 {
            for i in 0..30 {
                let v = i + 30 * (j + 30 * k);
                // 15 x 15 x 14 = 3150 voxels = 25.2 mL
                if (2..17).contains(&i) && (2..17).contains(&j) && (2..16).contains(&k) {
                    lab[v] = 1;
                    n_big += 1;
                } else if (22..26).contains(&i) && (22..26).contains(&j) && (22..26).contains(&k) {
                    lab[v] = 5;
                    n_small += 1;
                }
            }
        }
    }
    let labels = Volume::from_vec(g.clone(), lab.clone()).unwrap();
    let lam = 2f64.ln() / 42.0;
    let a0 = 10.0; // MBq in the big gland
    let conc0_big = a0 * 1e6 / (n_big as f64 * vox_ml); // Bq/mL
    let conc0_small = 0.2 * 1e6 / (n_small as f64 * vox_ml);
    let tps: Vec<TimePoint> = [4.0, 24.0, 48.0, 96.0, 168.0]
        .iter()
        .map(|&t| {
            let f = (-lam * t).exp();
            let data: Vec<f32> = lab
                .iter()
                .map(|&l| match l {
                    1 => (conc0_big * f) as f32,
                    5 => (conc0_small * f) as f32,
                    _ => 0.0,
                })
                .collect();
            TimePoint {
                time_h: t,
                activity: Volume::from_vec(g.clone(), data).unwrap(),
            }
        })
        .collect();
    let mut opt = DoseOptions::new(lu());
    opt.injected_mbq = Some(7400.0);
    let (rep, map) = compute_dose(&labels, &LabelMap::default(), &tps, &opt).unwrap();
    let big = rep.glands.iter().find(|g| g.label == 1).unwrap();
    let tia = a0 / lam;
    let mass = n_big as f64 * vox_ml;
    let d = tia * lu().electron_gy_g_per_mbq_h() / mass;
    println!(
        "big gland: {} TIA {:.2} (truth {tia:.2}), dose {:.4} Gy (truth {d:.4}), voxel mean {:?}, sphere {:.4}",
        big.model, big.tia_mbq_h, big.dose_gy, big.dose_gy_voxel_mean, big.dose_gy_sphere
    );
    assert!((big.tia_mbq_h - tia).abs() / tia < 1e-3);
    assert!((big.dose_gy - d).abs() / d < 1e-3);
    let vm = big.dose_gy_voxel_mean.unwrap();
    assert!(vm > d && vm < d * 1.03, "voxel mean {vm} vs {d}");
    assert!(big.d98_gy.unwrap() <= big.d50_gy.unwrap() && big.d50_gy <= big.d2_gy);
    assert!((big.dose_gy_per_gbq.unwrap() - d / 7.4).abs() < 1e-9);
    assert!(big.caveat.is_none());
    let small = rep.glands.iter().find(|g| g.label == 5).unwrap();
    assert!(small
        .caveat
        .as_deref()
        .unwrap()
        .contains("SPECT resolution"));
    assert_eq!(rep.absent.len(), 4);
    assert!(map.geometry().same_grid(&g, 1e-9));
    let dir = tempfile::tempdir().unwrap();
    write_outputs(dir.path(), &rep).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("dose.csv")).unwrap();
    assert!(csv.starts_with("label,name,volume_ml,mass_g,model,t_eff_h,tia_mbq_h"));
    assert_eq!(csv.lines().count(), 3);
    assert!(std::fs::metadata(dir.path().join("tac.png")).unwrap().len() > 1000);
    assert!(std::fs::metadata(dir.path().join("dvh.png")).unwrap().len() > 1000);
    assert!(std::fs::read_to_string(dir.path().join("report.md"))
        .unwrap()
        .contains("lacrimal_left"));
    // The DVH curve: from 100 % at 0 Gy, non-increasing, to the hottest voxel; D50 on it.
    let c = big.dvh.as_ref().unwrap();
    assert_eq!(c.volume_pct[0], 100.0);
    assert!(c.volume_pct.windows(2).all(|w| w[1] <= w[0]));
    let d50 = big.d50_gy.unwrap();
    assert!(*c.dose_gy.last().unwrap() >= big.d2_gy.unwrap());
    // At the last sampled dose ≤ D50 at least half the volume; at the first sampled dose
    // above D2 at most 2 % (0 beyond the hottest voxel).
    let below = |d: f64| c.volume_pct[c.dose_gy.iter().rposition(|&x| x <= d).unwrap()];
    let above = |d: f64| {
        c.dose_gy
            .iter()
            .position(|&x| x > d)
            .map_or(0.0, |i| c.volume_pct[i])
    };
    assert!(below(d50) >= 50.0 - 1e-9, "{}", below(d50));
    assert!(above(big.d2_gy.unwrap()) <= 2.0 + 1e-9);
    assert!(above(d50) < 50.0 + 1e-9 && below(big.d98_gy.unwrap()) >= 98.0 - 1e-9);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dose.json")).unwrap()).unwrap();
    assert_eq!(json["glands"][0]["name"], "parotid_left");
    // A single time point: Hänscheid; with a population T_eff: Madsen (exact here).
    let one = &tps[2..3];
    let (rep, _) = compute_dose(&labels, &LabelMap::default(), one, &opt).unwrap();
    assert_eq!(rep.glands[0].model, "hanscheid");
    opt.population_t_eff_h = Some(42.0);
    let (rep, _) = compute_dose(&labels, &LabelMap::default(), one, &opt).unwrap();
    assert_eq!(rep.glands[0].model, "madsen");
    assert!((rep.glands[0].tia_mbq_h - tia).abs() / tia < 1e-6);
}

/// Decay-corrected images, a density, a gland without activity, an image off the grid.
#[test]
fn compute_dose_options_and_bad_input() {
    let g = Geometry::new([12, 12, 12], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]);
    let mut lab = vec![0u8; 1728];
    for k in 2..10 {
        for j in 2..10 {
            for i in 2..6 {
                lab[i + 12 * (j + 12 * k)] = 1; // 256 voxels, 2.048 mL
                lab[(i + 5) + 12 * (j + 12 * k)] = 3; // no activity
            }
        }
    }
    let labels = Volume::from_vec(g.clone(), lab.clone()).unwrap();
    let nu = lu();
    let lam_bio = 2f64.ln() / 60.0;
    let conc0 = 2e6 / 2.048; // 2 MBq
                             // Decay-corrected to injection: only the biological clearance is left in the images.
    let tps: Vec<TimePoint> = [4.0, 24.0, 72.0, 168.0]
        .iter()
        .map(|&t| TimePoint {
            time_h: t,
            activity: Volume::from_vec(
                g.clone(),
                lab.iter()
                    .map(|&l| {
                        if l == 1 {
                            (conc0 * (-lam_bio * t).exp()) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            )
            .unwrap(),
        })
        .collect();
    let mut opt = DoseOptions::new(nu.clone());
    opt.decay_corrected = true;
    opt.density_g_ml = 1.05;
    opt.calibration_uncertainty_pct = Some(3.0);
    opt.volume_uncertainty_pct = Some(4.0);
    let (rep, _) = compute_dose(&labels, &LabelMap::default(), &tps, &opt).unwrap();
    let lam = lam_bio + nu.lambda_per_h();
    let tia = 2.0 / lam;
    let gl = &rep.glands[0];
    assert_eq!(gl.model, "mono_exp");
    assert!(
        (gl.tia_mbq_h - tia).abs() / tia < 1e-4,
        "{} vs {tia}",
        gl.tia_mbq_h
    );
    assert!((gl.mass_g - 2.048 * 1.05).abs() < 1e-9);
    let d = tia * nu.electron_gy_g_per_mbq_h() / (2.048 * 1.05);
    assert!((gl.dose_gy - d).abs() / d < 1e-4);
    assert!((gl.t_eff_h.unwrap() - 2f64.ln() / lam).abs() < 1e-3);
    // Noiseless fit: the dose uncertainty is the calibration's and the volume's, 5 %.
    assert!((gl.dose_uncertainty_pct.unwrap() - 5.0).abs() < 1e-3);
    // The empty gland: TIA 0 and a caveat, not an error.
    let empty = &rep.glands[1];
    assert_eq!(empty.tia_mbq_h, 0.0);
    assert!(empty
        .caveat
        .as_deref()
        .unwrap()
        .contains("no positive activity"));
    // An activity image on another grid is refused by the library (the CLI resamples).
    let off = TimePoint {
        time_h: 200.0,
        activity: Volume::filled(g.with_spacing([2.5, 2.0, 2.0]), 0f32),
    };
    let mut bad: Vec<TimePoint> = tps;
    bad.push(off);
    let e = compute_dose(&labels, &LabelMap::default(), &bad, &opt)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("activity:") && e.contains("200 h"), "{e}");
    // A kernel too large for the voxel size.
    opt.kernel_truncation_mm = 500.0;
    let e = compute_dose(&labels, &LabelMap::default(), &bad[..2], &opt)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("kernel_truncation_mm:"), "{e}");
}
