//! `report.md`: a short human-readable report of a dose computation: the inputs and
//! settings, a table per gland, the partial-volume caveat with the corrected and raw
//! values side by side, the TAC and DVH plots, and the formulas.
//!
//! Numbers are written by [`sig`] (4 significant digits, never in exponent notation), so
//! the report's values can be checked against `dose.json`; percentages with one decimal.

use crate::job::DoseReport;

/// `x` with `digits` significant digits in plain decimal notation (at most 12 decimals):
/// 2.0684 → `2.068`, 605.93 → `605.9`, 0.00041234 → `0.0004123`, 12345.6 → `12346`.
pub fn sig(x: f64, digits: u32) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor() as i64;
    let decimals = (digits as i64 - 1 - magnitude).clamp(0, 12) as usize;
    format!("{x:.decimals$}")
}

/// An input setting: up to 6 significant digits, trailing zeros dropped (7400, 12.8571).
fn short(x: f64) -> String {
    let s = sig(x, 6);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

const DASH: &str = "–";

fn sig4(v: Option<f64>) -> String {
    v.map(|x| sig(x, 4)).unwrap_or_else(|| DASH.to_string())
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}"))
        .unwrap_or_else(|| DASH.to_string())
}

/// A table cell: `|` escaped, line breaks flattened.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// A table's header; numeric columns (all but the first and the `fit` and `value` ones)
/// right-aligned.
fn header(cells: &[&str]) -> String {
    let mut s = row(&cells.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    let align: Vec<String> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 || matches!(*c, "fit" | "value") {
                "---".to_string()
            } else {
                "---:".to_string()
            }
        })
        .collect();
    s.push_str(&row(&align));
    s
}

/// Header of the per-gland table (the names a reader or a test finds the columns by).
pub const GLAND_COLUMNS: [&str; 15] = [
    "gland",
    "volume mL",
    "mass g",
    "fit",
    "T_eff h",
    "TIA MBq·h",
    "organ dose Gy",
    "voxel mean Gy",
    "Gy/GBq",
    "fit unc. %",
    "dose unc. %",
    "D2 Gy",
    "D50 Gy",
    "D98 Gy",
    "V20Gy %",
];

/// The report as Markdown (written as `report.md` next to `tac.png` and `dvh.png`).
pub fn markdown(r: &DoseReport) -> String {
    let o = &r.options;
    let nu = &o.nuclide;
    let mut s = String::new();
    s.push_str("# glandseg dose report\n\n");
    s.push_str(&format!(
        "glandseg {}: absorbed dose per gland from {} activity image{} ({}).\n\n",
        env!("CARGO_PKG_VERSION"),
        r.times_h.len(),
        if r.times_h.len() == 1 { "" } else { "s" },
        nu.name
    ));

    s.push_str("## Inputs\n\n");
    s.push_str(&header(&["input", "value"]));
    let times: Vec<String> = r.times_h.iter().map(|&t| short(t)).collect();
    let mut kv = |k: &str, v: String| s.push_str(&row(&[k.to_string(), cell(&v)]));
    kv("time points (h after injection)", times.join(", "));
    if let Some(src) = &r.sources {
        if let Some(l) = &src.labels {
            kv("label map", format!("`{l}`"));
        }
        for (t, p) in r.times_h.iter().zip(&src.activity) {
            kv(
                &format!("activity image at {} h", short(*t)),
                format!("`{p}`"),
            );
        }
    }
    kv(
        "nuclide",
        format!(
            "{} (T½ {} h; {} MeV electrons, {} MeV photons per decay; {})",
            nu.name,
            short(nu.half_life_h),
            nu.electron_mev,
            nu.photon_mev,
            nu.source
        ),
    );
    kv(
        "injected activity",
        match o.injected_mbq {
            Some(a) => format!("{} MBq", short(a)),
            None => "not given (no Gy/GBq)".to_string(),
        },
    );
    kv(
        "images decay-corrected to the injection",
        if o.decay_corrected {
            "yes (undone before the fit)".to_string()
        } else {
            "no".to_string()
        },
    );
    if r.times_h.len() == 1 {
        kv(
            "single time point",
            match o.population_t_eff_h {
                Some(te) => format!("Madsen, population T_eff {} h", short(te)),
                None => "Hänscheid, TIA = A(t)·2t/ln2".to_string(),
            },
        );
    }
    kv("tissue density", format!("{} g/mL", short(o.density_g_ml)));
    let k = &r.kernel;
    kv(
        "voxel S-value kernel",
        format!(
            "truncated at {} mm on {} × {} × {} mm voxels, keeps {:.1} % of the emitted energy",
            short(k.truncation_mm),
            short(k.spacing_mm[0]),
            short(k.spacing_mm[1]),
            short(k.spacing_mm[2]),
            100.0 * k.energy_kept
        ),
    );
    kv(
        "partial-volume correction",
        match o.pvc_fwhm_mm {
            Some(f) => {
                let (surround, d) = match &r.pvc {
                    Some(g) => (g.surround_mm, o.pvc_fwhm_uncertainty_mm.unwrap_or(1.0)),
                    None => (
                        o.pvc_surround_mm.unwrap_or(2.0 * f),
                        o.pvc_fwhm_uncertainty_mm.unwrap_or(1.0),
                    ),
                };
                format!(
                    "geometric transfer matrix, PSF FWHM {} mm (± {} mm), surround {} mm",
                    short(f),
                    short(d),
                    short(surround)
                )
            }
            None => match &r.recovery_curve {
                Some(c) => format!(
                    "recovery curve by volume, RC = {:.3} / (1 + ({:.3} mL / V)^{:.2}), from {} \
                     (each gland treated as a sphere of its volume)",
                    c.a, c.b_ml, c.c, c.source
                ),
                None => "off (no --pvc-fwhm-mm or --recovery-curve)".to_string(),
            },
        },
    );
    kv(
        "calibration uncertainty",
        o.calibration_uncertainty_pct
            .map(|p| format!("{} %", short(p)))
            .unwrap_or_else(|| "not given".to_string()),
    );
    kv(
        "volume uncertainty",
        o.volume_uncertainty_pct
            .map(|p| format!("{} %", short(p)))
            .unwrap_or_else(|| "not given".to_string()),
    );
    s.push('\n');

    s.push_str("## Dose per gland\n\n");
    s.push_str(&header(&GLAND_COLUMNS));
    for g in &r.glands {
        s.push_str(&row(&[
            cell(&g.name),
            sig(g.volume_ml, 4),
            sig(g.mass_g, 4),
            cell(&g.model),
            sig4(g.t_eff_h),
            sig(g.tia_mbq_h, 4),
            sig(g.dose_gy, 4),
            sig4(g.dose_gy_voxel_mean),
            sig4(g.dose_gy_per_gbq),
            pct(g.uncertainty_pct),
            pct(g.dose_uncertainty_pct),
            sig4(g.d2_gy),
            sig4(g.d50_gy),
            sig4(g.d98_gy),
            pct(g.v20gy_pct),
        ]));
    }
    s.push_str(
        "\nOrgan dose: local electron deposition, TIA × E_e / mass (the sphere model's value \
         is `dose_gy_sphere` in dose.json). Voxel mean: the voxel S-value dose map averaged \
         over the gland. Fit unc.: the TIA's standard uncertainty from the fit covariance. \
         Dose unc.: fit, calibration, volume and partial-volume correction in quadrature \
         (k = 1). D2/D50/D98: the dose received by at least 2/50/98 % of the gland. \
         Numbers have 4 significant digits; dose.json and dose.csv hold them in full.\n",
    );
    if !r.absent.is_empty() {
        s.push_str(&format!(
            "\nLabels without any voxel (not reported): {}.\n",
            r.absent.join(", ")
        ));
    }
    s.push('\n');

    s.push_str("## Partial volume\n\n");
    if r.glands.iter().any(|g| g.dose_gy_uncorrected.is_some()) {
        s.push_str(if r.recovery_curve.is_some() {
            "Gland activities divided by the sphere-phantom recovery coefficient at each \
             gland's volume (an elongated gland recovers less than its sphere, so this \
             under-corrects it); the raw (uncorrected) values beside:\n\n"
        } else {
            "Gland activities corrected for partial-volume effects (spill-out and spill-in) \
             by the geometric transfer matrix; the raw (uncorrected) values beside:\n\n"
        });
        s.push_str(&header(&[
            "gland",
            "recovery",
            "TIA corrected MBq·h",
            "TIA raw MBq·h",
            "organ dose corrected Gy",
            "organ dose raw Gy",
            "PVC unc. %",
        ]));
        for g in &r.glands {
            s.push_str(&row(&[
                cell(&g.name),
                g.recovery
                    .map(|x| format!("{x:.3}"))
                    .unwrap_or_else(|| DASH.to_string()),
                sig(g.tia_mbq_h, 4),
                sig4(g.tia_mbq_h_uncorrected),
                sig(g.dose_gy, 4),
                sig4(g.dose_gy_uncorrected),
                pct(g.pvc_uncertainty_pct),
            ]));
        }
        s.push('\n');
    } else {
        s.push_str(
            "No partial-volume correction (give `--pvc-fwhm-mm` with the images' resolution, \
             or `--recovery-curve` from `glandseg recovery`): \
             the values above are raw, and glands at or below the resolution are biased \
             low.\n\n",
        );
    }
    let caveats: Vec<_> = r.glands.iter().filter(|g| g.caveat.is_some()).collect();
    if caveats.is_empty() {
        s.push_str("No gland carries a caveat.\n\n");
    } else {
        s.push_str("Caveats:\n\n");
        for g in caveats {
            let side = match g.dose_gy_uncorrected {
                Some(raw) => format!(
                    " Organ dose: recovery-corrected {} Gy, raw {} Gy.",
                    sig(g.dose_gy, 4),
                    sig(raw, 4)
                ),
                None => format!(" Organ dose (raw): {} Gy.", sig(g.dose_gy, 4)),
            };
            s.push_str(&format!(
                "- **{}**: {}.{side}\n",
                cell(&g.name),
                g.caveat.as_deref().unwrap_or_default()
            ));
        }
        s.push('\n');
    }

    s.push_str("## Plots\n\n");
    s.push_str("Time-activity curves, the measured activities and the chosen fit per gland ([tac.png](tac.png)):\n\n");
    s.push_str("![Time-activity curves](tac.png)\n\n");
    s.push_str("Cumulative dose-volume histograms of the voxel dose map ([dvh.png](dvh.png)):\n\n");
    s.push_str("![Cumulative DVH](dvh.png)\n\n");

    s.push_str("## Method\n\n");
    for m in &r.method {
        s.push_str(&format!("- {m}\n"));
    }
    s.push_str(
        "\nNext to this report: dose.json (everything, with every fitted model and the DVH \
         curves), dose.csv, tac.png, dvh.png; from `glandseg dose` also dose_map.nii.gz and \
         rtdose.dcm (the dose map).\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits() {
        assert_eq!(sig(2.06841, 4), "2.068");
        assert_eq!(sig(605.93, 4), "605.9");
        assert_eq!(sig(0.000412345, 4), "0.0004123");
        assert_eq!(sig(12345.6, 4), "12346");
        assert_eq!(sig(-1.5, 4), "-1.500");
        assert_eq!(sig(0.0, 4), "0");
        assert_eq!(sig(1e-20, 4), "0.000000000000");
        assert_eq!(short(7400.0), "7400");
        assert_eq!(short(12.857142857), "12.8571");
        assert_eq!(short(159.528), "159.528");
        assert_eq!(short(6.0), "6");
    }
}
