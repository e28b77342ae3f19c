//! Uptake statistics on volumes whose answers are known by construction.

use glandseg_core::{Geometry, LabelMap, Volume};
use glandseg_stats::{gland_stats, suv_peak, write_stats, PEAK_RADIUS_MM};

fn grid() -> Geometry {
    Geometry::new([40, 40, 30], [1.0, 1.0, 1.5], [-20.0, -20.0, -20.0])
}

#[test]
fn uniform_sphere_gives_its_own_values() {
    let g = grid();
    let mut labels = Volume::filled(g.clone(), 0u8);
    let mut pet = Volume::filled(g.clone(), 0.5f32);
    let ct = Volume::filled(g.clone(), 40.0f32);
    for ((k, j, i), l) in labels.data_mut().indexed_iter_mut() {
        let w = g.index_to_world([i as f64, j as f64, k as f64]);
        if (w[0] - 6.0).powi(2) + w[1].powi(2) + w[2].powi(2) <= 81.0 {
            *l = 1;
        }
    }
    for ((k, j, i), p) in pet.data_mut().indexed_iter_mut() {
        if *labels.get(i, j, k) == 1 {
            *p = 10.0;
        }
    }
    let s = gland_stats(
        &labels,
        &LabelMap::default(),
        Some(&ct),
        Some(&pet),
        Some(3.0),
    )
    .unwrap();
    let p = &s[0];
    assert_eq!(p.name, "parotid_left");
    let exact_ml = 4.0 / 3.0 * std::f64::consts::PI * 729.0 / 1000.0;
    assert!(
        (p.volume_ml - exact_ml).abs() / exact_ml < 0.05,
        "{}",
        p.volume_ml
    );
    assert_eq!(p.suv_mean, Some(10.0));
    assert_eq!(p.suv_max, Some(10.0));
    // The 1 mL sphere fits inside the 9 mm sphere: SUVpeak is the uniform value.
    assert!((p.suv_peak.unwrap() - 10.0).abs() < 1e-6);
    assert!((p.suv_total.unwrap() - 10.0 * p.volume_ml).abs() < 1e-9);
    assert_eq!(p.ct_hu_mean, Some(40.0));
    assert_eq!(p.ct_hu_std, Some(0.0));
    let c = p.centroid_lps_mm.unwrap();
    assert!(
        (c[0] - 6.0).abs() < 0.1 && c[1].abs() < 0.1 && c[2].abs() < 0.1,
        "{c:?}"
    );
    // Dilated by 3 mm: more volume, lower mean (it takes in 0.5-SUV background).
    let d = p.dilated.as_ref().unwrap();
    assert!(d.volume_ml > p.volume_ml && d.suv_mean.unwrap() < 10.0);
    // Absent labels: zero volume, undefined uptake.
    assert_eq!(s[1].voxels, 0);
    assert_eq!(s[1].suv_mean, None);
    let dir = tempfile::tempdir().unwrap();
    write_stats(dir.path(), "case", &s).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("stats.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
}

#[test]
fn suv_peak_is_the_best_1ml_sphere_mean() {
    let g = grid();
    // A single hot voxel inside a large mask: the best sphere is centred on it and its mean
    // is the hot value spread over the sphere's voxel count.
    let mut pet = Volume::filled(g.clone(), 0.0f32);
    pet.set(20, 20, 15, 100.0);
    let mask = Volume::filled(g.clone(), true);
    let peak = suv_peak(&pet, &mask).unwrap();
    let mut n = 0;
    for dk in -5i32..=5 {
        for dj in -7i32..=7 {
            for di in -7i32..=7 {
                if (di as f64).powi(2) + (dj as f64).powi(2) + (dk as f64 * 1.5).powi(2)
                    <= PEAK_RADIUS_MM.powi(2)
                {
                    n += 1;
                }
            }
        }
    }
    assert!(
        (peak - 100.0 / n as f64).abs() < 1e-9,
        "{peak} vs {}",
        100.0 / n as f64
    );
}

#[test]
fn off_grid_pet_is_refused() {
    let labels = Volume::filled(grid(), 0u8);
    let pet = Volume::filled(
        Geometry::new([20, 20, 15], [2.0, 2.0, 3.0], [-20.0, -20.0, -20.0]),
        0.0f32,
    );
    let e = gland_stats(&labels, &LabelMap::default(), None, Some(&pet), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("PET") && e.contains("resample"), "{e}");
}
