//! Small charts for reports: a training curve (two y axes: loss and Dice) and box plots of
//! a metric per gland. Written on `image` with the embedded bitmap font rather than with
//! plotters, whose text needs system TrueType fonts (the `ttf` feature loads them through
//! font-kit) that a bare CI machine or a clinic's locked-down workstation may not have.

use crate::font::{draw_text, text_width};
use image::{Rgb, RgbImage};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Axis {
    Left,
    Right,
}

pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
    pub axis: Axis,
}

const W: u32 = 900;
const H: u32 = 480;
const PAD_L: i64 = 70;
const PAD_R: i64 = 70;
const PAD_T: i64 = 40;
const PAD_B: i64 = 50;
/// The chart palette (matplotlib's tab10), shared by every chart glandseg draws.
pub const COLORS: [Rgb<u8>; 8] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
];

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Bresenham, two pixels thick; pixels outside the image are skipped.
pub fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(img, x, y, c);
        put(img, x, y + 1, c);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, v| {
            (a.0.min(v), a.1.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let m = (hi - lo) * 0.05;
    (lo - m, hi + m)
}

fn frame(img: &mut RgbImage, title: &str, xlabel: &str) {
    let grey = Rgb([90, 90, 90]);
    let (x0, y0, x1, y1) = (PAD_L, PAD_T, W as i64 - PAD_R, H as i64 - PAD_B);
    line(img, (x0, y1), (x1, y1), grey);
    line(img, (x0, y0), (x0, y1), grey);
    line(img, (x1, y0), (x1, y1), grey);
    let tw = text_width(title, 2) as i64;
    draw_text(img, (W as i64 - tw) / 2, 8, title, 2, Rgb([0, 0, 0]));
    let lw = text_width(xlabel, 1) as i64;
    draw_text(img, (x0 + x1 - lw) / 2, H as i64 - 18, xlabel, 1, grey);
}

fn ticks(img: &mut RgbImage, lo: f64, hi: f64, x: i64, right: bool, label: &str) {
    let grey = Rgb([90, 90, 90]);
    let (y0, y1) = (PAD_T, H as i64 - PAD_B);
    for n in 0..=4 {
        let v = lo + (hi - lo) * n as f64 / 4.0;
        let y = y1 - ((y1 - y0) as f64 * n as f64 / 4.0) as i64;
        let t = format!("{v:.3}");
        let tx = if right {
            x + 6
        } else {
            x - 6 - text_width(&t, 1) as i64
        };
        draw_text(img, tx, y - 4, &t, 1, grey);
        line(img, (x - 3, y), (x + 3, y), grey);
    }
    let tx = if right {
        x + 6
    } else {
        x - text_width(label, 1) as i64 / 2
    };
    draw_text(img, tx.max(2), PAD_T - 16, label, 1, grey);
}

/// A line chart of `series` over `x`; each series on the left or the right y axis.
pub fn line_chart(
    title: &str,
    xlabel: &str,
    x: &[f64],
    series: &[Series],
    ylabels: (&str, &str),
) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    frame(&mut img, title, xlabel);
    let (xlo, xhi) = range(x.iter().cloned());
    let side = |a: Axis| {
        range(
            series
                .iter()
                .filter(|s| s.axis == a)
                .flat_map(|s| s.values.iter().cloned()),
        )
    };
    let (left, right) = (side(Axis::Left), side(Axis::Right));
    ticks(&mut img, left.0, left.1, PAD_L, false, ylabels.0);
    if series.iter().any(|s| s.axis == Axis::Right) {
        ticks(
            &mut img,
            right.0,
            right.1,
            W as i64 - PAD_R,
            true,
            ylabels.1,
        );
    }
    let (px0, py0, px1, py1) = (PAD_L, PAD_T, W as i64 - PAD_R, H as i64 - PAD_B);
    let to_px = |xv: f64, yv: f64, (lo, hi): (f64, f64)| {
        (
            px0 + ((xv - xlo) / (xhi - xlo) * (px1 - px0) as f64) as i64,
            py1 - ((yv - lo) / (hi - lo) * (py1 - py0) as f64) as i64,
        )
    };
    for (n, s) in series.iter().enumerate() {
        let c = COLORS[n % COLORS.len()];
        let r = if s.axis == Axis::Left { left } else { right };
        let pts: Vec<(i64, i64)> = x
            .iter()
            .zip(&s.values)
            .filter(|(_, v)| v.is_finite())
            .map(|(&xv, &yv)| to_px(xv, yv, r))
            .collect();
        if pts.len() == 1 {
            for d in -2..=2 {
                line(
                    &mut img,
                    (pts[0].0 - 2, pts[0].1 + d),
                    (pts[0].0 + 2, pts[0].1 + d),
                    c,
                );
            }
        }
        for w in pts.windows(2) {
            line(&mut img, w[0], w[1], c);
        }
        let ly = PAD_T + 6 + 14 * n as i64;
        line(&mut img, (PAD_L + 12, ly + 3), (PAD_L + 32, ly + 3), c);
        let tag = if s.axis == Axis::Left {
            ""
        } else {
            " (right axis)"
        };
        draw_text(&mut img, PAD_L + 38, ly, &format!("{}{tag}", s.name), 1, c);
    }
    let xt = format!("{xlo:.0}");
    draw_text(&mut img, px0, py1 + 6, &xt, 1, Rgb([90, 90, 90]));
    let xt = format!("{xhi:.0}");
    draw_text(
        &mut img,
        px1 - text_width(&xt, 1) as i64,
        py1 + 6,
        &xt,
        1,
        Rgb([90, 90, 90]),
    );
    img
}

/// Five-number summary with Tukey whiskers (1.5 IQR); points beyond are drawn one by one.
fn quartiles(v: &[f64]) -> Option<[f64; 5]> {
    let mut s: Vec<f64> = v.iter().cloned().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (s.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
    };
    let (q1, q2, q3) = (q(0.25), q(0.5), q(0.75));
    let iqr = q3 - q1;
    let wlo = s
        .iter()
        .cloned()
        .find(|&x| x >= q1 - 1.5 * iqr)
        .unwrap_or(q1);
    let whi = s
        .iter()
        .rev()
        .cloned()
        .find(|&x| x <= q3 + 1.5 * iqr)
        .unwrap_or(q3);
    Some([wlo, q1, q2, q3, whi])
}

/// One box per group (e.g. per gland), all on one y axis.
pub fn box_plot(title: &str, ylabel: &str, groups: &[(String, Vec<f64>)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    frame(&mut img, title, "");
    let (lo, hi) = range(groups.iter().flat_map(|g| g.1.iter().cloned()));
    ticks(&mut img, lo, hi, PAD_L, false, ylabel);
    let (px0, py0, px1, py1) = (PAD_L, PAD_T, W as i64 - PAD_R, H as i64 - PAD_B);
    let y = |v: f64| py1 - ((v - lo) / (hi - lo) * (py1 - py0) as f64) as i64;
    let n = groups.len().max(1) as i64;
    let slot = (px1 - px0) / n;
    for (g, (name, values)) in groups.iter().enumerate() {
        let c = COLORS[g % COLORS.len()];
        let cx = px0 + slot * g as i64 + slot / 2;
        let hw = (slot / 4).clamp(4, 40);
        let label = if text_width(name, 1) as i64 > slot - 4 {
            name.chars()
                .take(((slot - 4) / 8).max(1) as usize)
                .collect()
        } else {
            name.clone()
        };
        draw_text(
            &mut img,
            cx - text_width(&label, 1) as i64 / 2,
            py1 + 6,
            &label,
            1,
            Rgb([0, 0, 0]),
        );
        let Some([wlo, q1, q2, q3, whi]) = quartiles(values) else {
            draw_text(&mut img, cx - 12, (py0 + py1) / 2, "n/a", 1, c);
            continue;
        };
        let (ya, yb) = (y(q1), y(q3));
        line(&mut img, (cx - hw, ya), (cx + hw, ya), c);
        line(&mut img, (cx - hw, yb), (cx + hw, yb), c);
        line(&mut img, (cx - hw, ya), (cx - hw, yb), c);
        line(&mut img, (cx + hw, ya), (cx + hw, yb), c);
        line(&mut img, (cx - hw, y(q2)), (cx + hw, y(q2)), Rgb([0, 0, 0]));
        line(&mut img, (cx, y(q1)), (cx, y(wlo)), c);
        line(&mut img, (cx, y(q3)), (cx, y(whi)), c);
        line(&mut img, (cx - hw / 2, y(wlo)), (cx + hw / 2, y(wlo)), c);
        line(&mut img, (cx - hw / 2, y(whi)), (cx + hw / 2, y(whi)), c);
        for &v in values
            .iter()
            .filter(|v| v.is_finite() && (**v < wlo || **v > whi))
        {
            let yy = y(v);
            line(&mut img, (cx - 2, yy), (cx + 2, yy), c);
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_of_a_known_sample() {
        let q = quartiles(&[1.0, 2.0, 3.0, 4.0, 5.0, 100.0]).unwrap();
        assert_eq!(q[2], 3.5);
        assert_eq!(q[1], 2.25);
        assert_eq!(q[4], 5.0, "100 is an outlier beyond 1.5 IQR");
        assert!(quartiles(&[f64::NAN]).is_none());
    }

    #[test]
    fn charts_draw_their_series() {
        let x = [1.0, 2.0, 3.0];
        let img = line_chart(
            "t",
            "epoch",
            &x,
            &[Series {
                name: "loss".into(),
                values: vec![1.0, 0.5, 0.2],
                axis: Axis::Left,
            }],
            ("loss", "Dice"),
        );
        let blue = img.pixels().filter(|p| **p == COLORS[0]).count();
        assert!(blue > 100, "the series is drawn ({blue} pixels)");
        let b = box_plot(
            "Dice",
            "Dice",
            &[("a".into(), vec![0.8, 0.9, 0.85]), ("b".into(), vec![])],
        );
        assert!(b.pixels().filter(|p| **p == COLORS[0]).count() > 20);
    }
}
