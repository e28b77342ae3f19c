//! The TAC plot: each gland's activity per time point (squares) and its chosen fit (line);
//! the DVH plot: each gland's cumulative dose-volume histogram. Drawn with glandseg-viz's
//! chart helpers (palette, lines, the embedded bitmap font: no system fonts needed); a
//! gland has the same colour in both (its place in the report).

use crate::job::DoseReport;
use glandseg_viz::chart::{line, COLORS};
use glandseg_viz::font::{draw_text, text_width};
use image::{Rgb, RgbImage};

const W: u32 = 900;
const H: u32 = 520;
const PAD_L: i64 = 80;
const PAD_R: i64 = 30;
const PAD_T: i64 = 40;
const PAD_B: i64 = 50;
const GREY: Rgb<u8> = Rgb([90, 90, 90]);

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    draw_text(img, x, y, s, 1, c);
}

fn width(s: &str) -> i64 {
    text_width(s, 1) as i64
}

/// One chart, all glands, 0 to 1.2 × the last time point. Glands whose model has no
/// curve (trapezoid) are drawn as straight segments from (0, 0) through their points.
pub(crate) fn tac_plot(report: &DoseReport) -> RgbImage {
    let t = &report.times_h;
    let tmax = t.last().copied().unwrap_or(1.0).max(1e-6) * 1.2;
    let mut series = Vec::new();
    for g in &report.glands {
        let fit = g
            .fits
            .iter()
            .find(|f| f.model.as_str() == g.model)
            .filter(|f| f.activity(0.0).is_some());
        let curve: Vec<(f64, f64)> = match fit {
            Some(f) => (0..=200)
                .map(|n| {
                    let x = tmax * n as f64 / 200.0;
                    (x, f.activity(x).unwrap_or(f64::NAN))
                })
                .collect(),
            None => std::iter::once((0.0, 0.0))
                .chain(t.iter().cloned().zip(g.activity_mbq.iter().cloned()))
                .collect(),
        };
        let points: Vec<(f64, f64)> = t
            .iter()
            .cloned()
            .zip(g.activity_mbq.iter().cloned())
            .collect();
        series.push((format!("{} ({})", g.name, g.model), points, curve));
    }
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().chain(&s.2).map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.08;
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (x0, y0, x1, y1) = (PAD_L, PAD_T, W as i64 - PAD_R, H as i64 - PAD_B);
    line(&mut img, (x0, y1), (x1, y1), GREY);
    line(&mut img, (x0, y0), (x0, y1), GREY);
    let title = format!("Time-activity curves ({})", report.options.nuclide.name);
    text(
        &mut img,
        (W as i64 - width(&title)) / 2,
        12,
        &title,
        Rgb([0, 0, 0]),
    );
    let xl = "hours after injection";
    text(&mut img, (x0 + x1 - width(xl)) / 2, H as i64 - 18, xl, GREY);
    text(&mut img, 8, y0 - 20, "MBq", GREY);
    let to_px = |(x, y): (f64, f64)| {
        (
            x0 + (x / tmax * (x1 - x0) as f64) as i64,
            y1 - (y / ymax * (y1 - y0) as f64) as i64,
        )
    };
    for n in 0..=4 {
        let (xv, yv) = (tmax * n as f64 / 4.0, ymax * n as f64 / 4.0);
        let (px, py) = to_px((xv, yv));
        line(&mut img, (px, y1), (px, y1 + 4), GREY);
        let s = format!("{xv:.0}");
        text(&mut img, px - width(&s) / 2, y1 + 8, &s, GREY);
        line(&mut img, (x0 - 4, py), (x0, py), GREY);
        let s = format!("{yv:.3}");
        text(&mut img, x0 - 8 - width(&s), py - 4, &s, GREY);
    }
    for (n, (name, points, curve)) in series.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        let px: Vec<(i64, i64)> = curve
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&p| to_px(p))
            .collect();
        for w in px.windows(2) {
            line(&mut img, w[0], w[1], c);
        }
        for &p in points.iter().filter(|p| p.1.is_finite()) {
            let (x, y) = to_px(p);
            for d in -3..=3 {
                line(&mut img, (x - 3, y + d), (x + 3, y + d), c);
            }
        }
        let ly = y0 + 6 + 14 * n as i64;
        line(&mut img, (x1 - 300, ly + 3), (x1 - 280, ly + 3), c);
        text(&mut img, x1 - 274, ly, name, c);
    }
    img
}

/// Tick label of a value on an axis running to `max`: enough decimals to tell the five
/// ticks apart.
fn tick(v: f64, max: f64) -> String {
    let d = if max >= 20.0 {
        0
    } else if max >= 2.0 {
        1
    } else {
        (2.0 - max.log10().floor()).clamp(2.0, 8.0) as usize
    };
    format!("{v:.d$}")
}

/// One chart, all glands: volume % (0-100) against dose, 0 to 1.05 × the highest voxel
/// dose. Each curve drops to 0 % at its gland's maximum; the legend (name and voxel mean
/// dose) sits in a boxed corner at the lower left, where cumulative DVHs rarely run.
pub(crate) fn dvh_plot(report: &DoseReport) -> RgbImage {
    let dmax = report
        .glands
        .iter()
        .filter_map(|g| g.dvh.as_ref())
        .flat_map(|c| c.dose_gy.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let xmax = if dmax > 0.0 { dmax * 1.05 } else { 1.0 };
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (x0, y0, x1, y1) = (PAD_L, PAD_T, W as i64 - PAD_R, H as i64 - PAD_B);
    line(&mut img, (x0, y1), (x1, y1), GREY);
    line(&mut img, (x0, y0), (x0, y1), GREY);
    let title = format!(
        "Cumulative dose-volume histograms ({}, voxel S-value dose)",
        report.options.nuclide.name
    );
    text(
        &mut img,
        (W as i64 - width(&title)) / 2,
        12,
        &title,
        Rgb([0, 0, 0]),
    );
    let xl = "absorbed dose (Gy)";
    text(&mut img, (x0 + x1 - width(xl)) / 2, H as i64 - 18, xl, GREY);
    text(&mut img, 8, y0 - 20, "volume %", GREY);
    let to_px = |(x, y): (f64, f64)| {
        (
            x0 + (x / xmax * (x1 - x0) as f64).round() as i64,
            y1 - (y / 100.0 * (y1 - y0) as f64).round() as i64,
        )
    };
    for n in 0..=4 {
        let (xv, yv) = (xmax * n as f64 / 4.0, 100.0 * n as f64 / 4.0);
        let (px, py) = to_px((xv, yv));
        line(&mut img, (px, y1), (px, y1 + 4), GREY);
        let s = tick(xv, xmax);
        text(&mut img, px - width(&s) / 2, y1 + 8, &s, GREY);
        line(&mut img, (x0 - 4, py), (x0, py), GREY);
        let s = format!("{yv:.0}");
        text(&mut img, x0 - 8 - width(&s), py - 4, &s, GREY);
    }
    let mut legend = Vec::new();
    for (n, g) in report.glands.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        let Some(curve) = &g.dvh else { continue };
        let mut px: Vec<(i64, i64)> = curve
            .dose_gy
            .iter()
            .zip(&curve.volume_pct)
            .filter(|(d, v)| d.is_finite() && v.is_finite())
            .map(|(&d, &v)| to_px((d, v)))
            .collect();
        // Beyond the hottest voxel nothing is left: drop to 0 %.
        if let Some(&(x, _)) = px.last() {
            px.push((x, y1));
        }
        for w in px.windows(2) {
            line(&mut img, w[0], w[1], c);
        }
        let mean = g
            .dose_gy_voxel_mean
            .map(|m| format!(" (mean {} Gy)", crate::report::sig(m, 4)))
            .unwrap_or_default();
        legend.push((format!("{}{mean}", g.name), c));
    }
    if !legend.is_empty() {
        let lw = legend.iter().map(|(s, _)| width(s)).max().unwrap_or(0) + 40;
        let lh = 14 * legend.len() as i64 + 8;
        let (lx, ly) = (x0 + 30, y1 - 20 - lh);
        for y in ly..ly + lh {
            for x in lx..lx + lw {
                if x >= 0 && y >= 0 && (x as u32) < W && (y as u32) < H {
                    img.put_pixel(x as u32, y as u32, Rgb([255, 255, 255]));
                }
            }
        }
        let border = Rgb([200, 200, 200]);
        line(&mut img, (lx, ly), (lx + lw, ly), border);
        line(&mut img, (lx, ly + lh), (lx + lw, ly + lh), border);
        line(&mut img, (lx, ly), (lx, ly + lh), border);
        line(&mut img, (lx + lw, ly), (lx + lw, ly + lh), border);
        for (n, (s, c)) in legend.iter().enumerate() {
            let y = ly + 6 + 14 * n as i64;
            line(&mut img, (lx + 8, y + 3), (lx + 28, y + 3), *c);
            text(&mut img, lx + 34, y, s, *c);
        }
    }
    img
}

/// The recovery curve over log volume (0.1-100 mL, or wider to hold the points): the
/// measured spheres as squares, the fitted curve as a line, the curve ± one standard error
/// dotted, and the dashed plateau.
pub(crate) fn recovery_plot(curve: &crate::recovery::RecoveryCurve) -> RgbImage {
    let (vmin, vmax) = curve.volume_range();
    let lo = (vmin.min(0.1) / 1.5).log10().floor();
    let hi = (vmax.max(100.0) * 1.5).log10().ceil();
    let ymax = curve
        .points
        .iter()
        .map(|p| p[1])
        .fold(curve.a, f64::max)
        .max(1.0)
        * 1.1;
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (x0, y0, x1, y1) = (PAD_L, PAD_T, W as i64 - PAD_R, H as i64 - PAD_B);
    line(&mut img, (x0, y1), (x1, y1), GREY);
    line(&mut img, (x0, y0), (x0, y1), GREY);
    let title = "Recovery coefficient by volume (sphere phantom)";
    text(
        &mut img,
        (W as i64 - width(title)) / 2,
        12,
        title,
        Rgb([0, 0, 0]),
    );
    let xl = "volume (mL, log scale)";
    text(&mut img, (x0 + x1 - width(xl)) / 2, H as i64 - 18, xl, GREY);
    text(&mut img, 8, y0 - 20, "RC", GREY);
    let to_px = |(v, y): (f64, f64)| {
        (
            x0 + ((v.log10() - lo) / (hi - lo) * (x1 - x0) as f64).round() as i64,
            y1 - (y / ymax * (y1 - y0) as f64).round() as i64,
        )
    };
    let mut e = lo;
    while e <= hi + 1e-9 {
        let v = 10f64.powf(e);
        let (px, _) = to_px((v, 0.0));
        line(&mut img, (px, y1), (px, y1 + 4), GREY);
        let s = if v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        };
        text(&mut img, px - width(&s) / 2, y1 + 8, &s, GREY);
        e += 1.0;
    }
    for n in 0..=4 {
        let yv = ymax * n as f64 / 4.0;
        let (_, py) = to_px((1.0, yv));
        line(&mut img, (x0 - 4, py), (x0, py), GREY);
        let s = format!("{yv:.2}");
        text(&mut img, x0 - 8 - width(&s), py - 4, &s, GREY);
    }
    let c = COLORS[0];
    let steps = 300;
    let at = |n: usize| 10f64.powf(lo + (hi - lo) * n as f64 / steps as f64);
    for n in 0..steps {
        let (va, vb) = (at(n), at(n + 1));
        line(
            &mut img,
            to_px((va, curve.at(va))),
            to_px((vb, curve.at(vb))),
            c,
        );
        if n % 3 == 0 {
            for sign in [-1.0, 1.0] {
                let p = to_px((va, curve.at(va) + sign * curve.standard_error(va)));
                line(&mut img, p, p, GREY);
            }
        }
        if n % 6 < 3 {
            line(&mut img, to_px((va, curve.a)), to_px((vb, curve.a)), GREY);
        }
    }
    for p in &curve.points {
        let (x, y) = to_px((p[0], p[1]));
        for d in -3..=3 {
            line(&mut img, (x - 3, y + d), (x + 3, y + d), COLORS[1]);
        }
    }
    let legend = format!(
        "RC = {:.3} / (1 + ({:.3} mL / V)^{:.2});  squares: spheres",
        curve.a, curve.b_ml, curve.c
    );
    text(&mut img, x0 + 12, y0 + 6, &legend, c);
    img
}
