//! What the clinic wants to know about each gland: how big it is, how much tracer it took
//! up (SUVmean, SUVmax, SUVpeak, SUV total) and what it looks like on CT (HU). PET and CT
//! must be on the label map's grid (callers resample explicitly first).
//!
//! SUVpeak follows PERCIST: the highest mean SUV within a 1 mL sphere (radius 6.2 mm),
//! the sphere's centre at any voxel of the gland (the sphere itself may reach outside the
//! gland, as PERCIST allows); voxels count when their centre lies within the sphere.
//!
//! `dilate_mm`: the partial-volume effect spills a small gland's activity outside its
//! outline, so uptake is also reported inside the mask grown by that many mm (kept off
//! the other labelled glands), as dosimetry studies grow organ masks by a few mm.

use glandseg_core::{Error, LabelMap, Result, Volume};
use glandseg_ops::morphology::dilate_mm;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

/// Radius (mm) of a 1 mL sphere.
pub const PEAK_RADIUS_MM: f64 = 6.203_504_908_994;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GlandStats {
    pub label: u8,
    pub name: String,
    pub voxels: usize,
    pub volume_ml: f64,
    pub suv_mean: Option<f64>,
    pub suv_max: Option<f64>,
    pub suv_peak: Option<f64>,
    /// SUVmean x volume (g): proportional to the gland's total activity.
    pub suv_total: Option<f64>,
    pub ct_hu_mean: Option<f64>,
    pub ct_hu_std: Option<f64>,
    pub centroid_lps_mm: Option<[f64; 3]>,
    /// Present when a dilation was asked for.
    pub dilated: Option<DilatedStats>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DilatedStats {
    pub dilate_mm: f64,
    pub volume_ml: f64,
    pub suv_mean: Option<f64>,
    pub suv_max: Option<f64>,
    pub suv_total: Option<f64>,
}

fn check_grid(
    name: &str,
    v: &glandseg_core::Geometry,
    labels: &glandseg_core::Geometry,
) -> Result<()> {
    if v.same_grid(labels, glandseg_core::geometry::GRID_TOLERANCE) {
        Ok(())
    } else {
        Err(Error::Geometry(format!("the {name} is not on the label map's grid ({name} {:?} spacing {:?}, labels {:?} spacing {:?}); resample it first", v.shape, v.spacing, labels.shape, labels.spacing)))
    }
}

/// Mean of `pet` in the 1 mL sphere centred at each voxel of `mask`; the maximum.
pub fn suv_peak(pet: &Volume<f32>, mask: &Volume<bool>) -> Option<f64> {
    let g = pet.geometry();
    let sp = g.spacing;
    let r = PEAK_RADIUS_MM;
    let reach: Vec<isize> = (0..3).map(|a| (r / sp[a]).floor() as isize).collect();
    let mut offsets = Vec::new();
    for dk in -reach[2]..=reach[2] {
        for dj in -reach[1]..=reach[1] {
            for di in -reach[0]..=reach[0] {
                let d2 = (di as f64 * sp[0]).powi(2)
                    + (dj as f64 * sp[1]).powi(2)
                    + (dk as f64 * sp[2]).powi(2);
                if d2 <= r * r + 1e-9 {
                    offsets.push([di, dj, dk]);
                }
            }
        }
    }
    let [nx, ny, nz] = g.shape;
    let data = pet.as_slice();
    let centres: Vec<usize> = mask
        .as_slice()
        .iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(i, _)| i)
        .collect();
    centres
        .par_iter()
        .map(|&p| {
            let (i, j, k) = (
                (p % nx) as isize,
                ((p / nx) % ny) as isize,
                (p / (nx * ny)) as isize,
            );
            let (mut s, mut n) = (0.0f64, 0usize);
            for o in &offsets {
                let (a, b, c) = (i + o[0], j + o[1], k + o[2]);
                if a >= 0
                    && b >= 0
                    && c >= 0
                    && (a as usize) < nx
                    && (b as usize) < ny
                    && (c as usize) < nz
                {
                    s += data[a as usize + nx * (b as usize + ny * c as usize)] as f64;
                    n += 1;
                }
            }
            s / n.max(1) as f64
        })
        .reduce_with(f64::max)
}

fn mean_max(values: impl Iterator<Item = f64>) -> (Option<f64>, Option<f64>, usize) {
    let (mut s, mut m, mut n) = (0.0, f64::NEG_INFINITY, 0usize);
    for v in values {
        s += v;
        m = m.max(v);
        n += 1;
    }
    if n == 0 {
        (None, None, 0)
    } else {
        (Some(s / n as f64), Some(m), n)
    }
}

/// Statistics of every foreground label. `pet` and `ct` are optional (a CT-only or
/// PET-only study still gets volumes).
pub fn gland_stats(
    labels: &Volume<u8>,
    map: &LabelMap,
    ct: Option<&Volume<f32>>,
    pet: Option<&Volume<f32>>,
    dilate: Option<f64>,
) -> Result<Vec<GlandStats>> {
    if let Some(c) = ct {
        check_grid("CT", c.geometry(), labels.geometry())?;
    }
    if let Some(p) = pet {
        check_grid("PET", p.geometry(), labels.geometry())?;
    }
    let g = labels.geometry();
    let vox = g.voxel_volume_ml();
    let lab = labels.as_slice();
    let mut out = Vec::new();
    for (v, name) in map.foreground() {
        let mask = labels.map(|&l| l == v);
        let idx: Vec<usize> = lab
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == v)
            .map(|(i, _)| i)
            .collect();
        let n = idx.len();
        let volume = n as f64 * vox;
        let [nx, ny, _] = g.shape;
        let centroid = (n > 0).then(|| {
            let mut c = [0.0; 3];
            for &p in &idx {
                c[0] += (p % nx) as f64;
                c[1] += ((p / nx) % ny) as f64;
                c[2] += (p / (nx * ny)) as f64;
            }
            g.index_to_world([c[0] / n as f64, c[1] / n as f64, c[2] / n as f64])
        });
        let (suv_mean, suv_max, suv_peak) = match pet {
            Some(p) => {
                let d = p.as_slice();
                let (m, x, _) = mean_max(idx.iter().map(|&i| d[i] as f64));
                (m, x, if n > 0 { suv_peak(p, &mask) } else { None })
            }
            None => (None, None, None),
        };
        let (hu_mean, hu_std) = match ct {
            Some(c) if n > 0 => {
                let d = c.as_slice();
                let m = idx.iter().map(|&i| d[i] as f64).sum::<f64>() / n as f64;
                let var = idx.iter().map(|&i| (d[i] as f64 - m).powi(2)).sum::<f64>()
                    / (n.max(2) - 1) as f64;
                (Some(m), Some(var.sqrt()))
            }
            _ => (None, None),
        };
        let dilated = match (dilate, pet) {
            (Some(mm), Some(p)) => {
                let grown = dilate_mm(&mask, mm);
                let d = p.as_slice();
                // Grow into background and this gland only: never into another gland.
                let sel = grown
                    .as_slice()
                    .iter()
                    .zip(lab)
                    .enumerate()
                    .filter(|(_, (g, l))| **g && (**l == 0 || **l == v))
                    .map(|(i, _)| d[i] as f64);
                let (m, x, nn) = mean_max(sel);
                Some(DilatedStats {
                    dilate_mm: mm,
                    volume_ml: nn as f64 * vox,
                    suv_mean: m,
                    suv_max: x,
                    suv_total: m.map(|m| m * nn as f64 * vox),
                })
            }
            _ => None,
        };
        out.push(GlandStats {
            label: v,
            name: name.to_string(),
            voxels: n,
            volume_ml: volume,
            suv_mean,
            suv_max,
            suv_peak,
            suv_total: suv_mean.map(|m| m * volume),
            ct_hu_mean: hu_mean,
            ct_hu_std: hu_std,
            centroid_lps_mm: centroid,
            dilated,
        });
    }
    Ok(out)
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

/// `stats.json` and `stats.csv` in `dir`, written atomically.
pub fn write_stats(dir: &Path, case: &str, stats: &[GlandStats]) -> Result<()> {
    glandseg_core::atomic::write_json(
        &dir.join("stats.json"),
        &serde_json::json!({"case": case, "glands": stats}),
    )?;
    let mut s = String::from("case,label,name,voxels,volume_ml,suv_mean,suv_max,suv_peak,suv_total,ct_hu_mean,ct_hu_std,centroid_x_lps,centroid_y_lps,centroid_z_lps,dilate_mm,dilated_volume_ml,dilated_suv_mean,dilated_suv_max,dilated_suv_total\n");
    for g in stats {
        let c = g.centroid_lps_mm;
        let d = g.dilated.as_ref();
        s.push_str(&format!(
            "{case},{},{},{},{:.4},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            g.label,
            g.name,
            g.voxels,
            g.volume_ml,
            opt(g.suv_mean),
            opt(g.suv_max),
            opt(g.suv_peak),
            opt(g.suv_total),
            opt(g.ct_hu_mean),
            opt(g.ct_hu_std),
            opt(c.map(|c| c[0])),
            opt(c.map(|c| c[1])),
            opt(c.map(|c| c[2])),
            opt(d.map(|d| d.dilate_mm)),
            opt(d.map(|d| d.volume_ml)),
            opt(d.and_then(|d| d.suv_mean)),
            opt(d.and_then(|d| d.suv_max)),
            opt(d.and_then(|d| d.suv_total)),
        ));
    }
    glandseg_core::atomic::write_bytes(&dir.join("stats.csv"), s.as_bytes())
}
