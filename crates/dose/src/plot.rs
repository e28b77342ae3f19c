//! The TAC plot: each gland's activity per time point and its chosen fit.

use crate::job::DoseReport;
use glandseg_viz::chart::{points_and_curves, PointsCurve};
use image::RgbImage;

/// One chart, all glands: measured MBq (squares) and the chosen fit (line) from 0 to
/// 1.2 × the last time point; the trapezoid is drawn as its straight segments.
pub(crate) fn tac_plot(report: &DoseReport) -> RgbImage {
    let t = &report.times_h;
    let tmax = t.last().copied().unwrap_or(1.0) * 1.2;
    let series: Vec<PointsCurve> = report
        .glands
        .iter()
        .map(|g| {
            let fit = g.fits.iter().find(|f| f.model.as_str() == g.model);
            let curve: Vec<(f64, f64)> = match fit.and_then(|f| f.activity(0.0).map(|_| f)) {
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
            PointsCurve {
                name: format!("{} ({})", g.name, g.model),
                points: t
                    .iter()
                    .cloned()
                    .zip(g.activity_mbq.iter().cloned())
                    .collect(),
                curve,
            }
        })
        .collect();
    points_and_curves(
        &format!("Time-activity curves ({})", report.options.nuclide.name),
        "hours after injection",
        "MBq",
        &series,
    )
}
