//! `report.md` and `dvh.png` from `write_outputs`: with the partial-volume correction, a
//! lacrimal gland's caveat carries its recovery-corrected and raw dose side by side.

use glandseg_core::{Geometry, LabelMap, Volume};
use glandseg_dose::{compute_dose, write_outputs, DoseOptions, Nuclide, Sources, TimePoint};
use std::collections::HashMap;

/// 4 significant digits, plain decimals (the report's rule, written again here).
fn sig4(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let decimals = (3 - x.abs().log10().floor() as i64).clamp(0, 12) as usize;
    format!("{x:.decimals$}")
}

/// The rows of the Markdown table whose header has `column`, by their first cell.
fn table(md: &str, column: &str) -> HashMap<String, HashMap<String, String>> {
    let split = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect()
    };
    let lines: Vec<&str> = md.lines().collect();
    let h = lines
        .iter()
        .position(|l| l.starts_with('|') && split(l).iter().any(|c| c == column))
        .unwrap_or_else(|| panic!("no table with a {column:?} column in\n{md}"));
    let head = split(lines[h]);
    let mut rows = HashMap::new();
    for l in lines[h + 2..].iter().take_while(|l| l.starts_with('|')) {
        let cells = split(l);
        assert_eq!(cells.len(), head.len(), "{l}");
        rows.insert(
            cells[0].clone(),
            head.iter().cloned().zip(cells.iter().cloned()).collect(),
        );
    }
    rows
}

#[test]
fn report_with_pvc_has_corrected_and_raw_side_by_side() {
    // 2 mm voxels: a 10 x 10 x 8 parotid (6.4 mL) and a 3 x 3 x 3 lacrimal (0.22 mL).
    let g = Geometry::new([24, 24, 20], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]);
    let mut lab = vec![0u8; g.num_voxels()];
    for k in 0..20 {
        for j in 0..24 {
            for i in 0..24 {
                let v = i + 24 * (j + 24 * k);
                if (2..12).contains(&i) && (2..12).contains(&j) && (2..10).contains(&k) {
                    lab[v] = 1;
                } else if (17..20).contains(&i) && (17..20).contains(&j) && (12..15).contains(&k) {
                    lab[v] = 5;
                }
            }
        }
    }
    let labels = Volume::from_vec(g.clone(), lab.clone()).unwrap();
    let times = [4.0, 24.0, 48.0, 96.0, 168.0];
    let tps: Vec<TimePoint> = times
        .iter()
        .map(|&t| {
            let f = (-(2f64.ln()) / 40.0 * t).exp();
            let data = lab
                .iter()
                .map(|&l| match l {
                    1 => (1e6 * f) as f32,
                    5 => (5e5 * f) as f32,
                    _ => 0.0,
                })
                .collect();
            TimePoint {
                time_h: t,
                activity: Volume::from_vec(g.clone(), data).unwrap(),
            }
        })
        .collect();
    let mut opt = DoseOptions::new(Nuclide::lookup("Lu-177").unwrap());
    opt.injected_mbq = Some(7400.0);
    opt.pvc_fwhm_mm = Some(6.0);
    opt.kernel_truncation_mm = 10.0;
    let (mut rep, _) = compute_dose(&labels, &LabelMap::default(), &tps, &opt).unwrap();
    rep.sources = Some(Sources {
        labels: Some("labels.nii.gz".into()),
        activity: times.iter().map(|t| format!("A{t}.nii.gz")).collect(),
    });
    let dir = tempfile::tempdir().unwrap();
    write_outputs(dir.path(), &rep).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    println!("{md}");
    for s in [
        "| time points (h after injection) | 4, 24, 48, 96, 168 |",
        "| activity image at 96 h | `A96.nii.gz` |",
        "| injected activity | 7400 MBq |",
        "PSF FWHM 6 mm (± 1 mm), surround 12 mm",
        "![Time-activity curves](tac.png)",
        "![Cumulative DVH](dvh.png)",
    ] {
        assert!(md.contains(s), "{s:?} missing");
    }
    let per_gland = table(&md, "organ dose Gy");
    let pvc = table(&md, "organ dose raw Gy");
    assert_eq!(per_gland.len(), 2);
    for gl in &rep.glands {
        let r = &per_gland[&gl.name];
        assert_eq!(r["organ dose Gy"], sig4(gl.dose_gy), "{}", gl.name);
        assert_eq!(r["TIA MBq·h"], sig4(gl.tia_mbq_h));
        assert_eq!(r["voxel mean Gy"], sig4(gl.dose_gy_voxel_mean.unwrap()));
        assert_eq!(r["Gy/GBq"], sig4(gl.dose_gy_per_gbq.unwrap()));
        assert_eq!(r["D50 Gy"], sig4(gl.d50_gy.unwrap()));
        assert_eq!(r["fit"], gl.model);
        let p = &pvc[&gl.name];
        let raw = gl.dose_gy_uncorrected.unwrap();
        assert_eq!(p["organ dose corrected Gy"], sig4(gl.dose_gy));
        assert_eq!(p["organ dose raw Gy"], sig4(raw));
        assert_eq!(p["recovery"], format!("{:.3}", gl.recovery.unwrap()));
    }
    // The lacrimal gland: recovered well below 1, so corrected and raw differ, and its
    // caveat says so with both numbers.
    let lac = rep.glands.iter().find(|g| g.label == 5).unwrap();
    let raw = lac.dose_gy_uncorrected.unwrap();
    assert!(lac.recovery.unwrap() < 0.8 && lac.dose_gy > 1.2 * raw);
    let bullet = md
        .lines()
        .find(|l| l.starts_with("- **lacrimal_left**"))
        .expect("lacrimal caveat");
    assert!(bullet.contains("SPECT resolution"), "{bullet}");
    assert!(
        bullet.contains(&format!(
            "recovery-corrected {} Gy, raw {} Gy",
            sig4(lac.dose_gy),
            sig4(raw)
        )),
        "{bullet}"
    );
    // dvh.png: the chart, with each gland's line in its palette colour.
    let img = image::open(dir.path().join("dvh.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (900, 520));
    for c in &glandseg_viz::chart::COLORS[..2] {
        assert!(img.pixels().filter(|p| *p == c).count() > 50, "{c:?}");
    }
}
