//! The per-case review image: a column per view (axial slices through each gland pair, a
//! coronal and a sagittal slice), a row of CT with label outlines and a row of CT with the
//! PET overlaid, a legend and a title.

use crate::font::{draw_text, text_width};
use glandseg_core::{Geometry, LabelMap, Volume};
use image::{Rgb, RgbImage};
use std::path::Path;

const PANEL: u32 = 240;
const GAP: u32 = 4;
const TITLE_H: u32 = 26;
const HEADER_H: u32 = 18;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

struct View {
    plane: Plane,
    /// World coordinate of the slice along the plane's normal (z, y or x), mm.
    at: f64,
    caption: String,
}

/// World AABB of the volume's voxel centres.
fn extent(g: &Geometry) -> ([f64; 3], [f64; 3]) {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in g.corners() {
        for d in 0..3 {
            lo[d] = lo[d].min(c[d]);
            hi[d] = hi[d].max(c[d]);
        }
    }
    (lo, hi)
}

/// Margin around the glands in every panel, mm: enough to show the skull, jaw and skin
/// around them (is the gland where it belongs?) without shrinking the head to a thumbnail
/// when the scan reaches down to the thorax.
const MARGIN_MM: f64 = 50.0;

/// A world (LPS) box: lowest and highest corner, mm.
type WorldBox = ([f64; 3], [f64; 3]);

/// The world box every panel shows: the labelled voxels plus `MARGIN_MM`, within the CT's
/// extent. Without labels, or where the labels lie outside the CT, the CT's extent.
fn display_box(ct: &Geometry, labels: &Volume<u8>) -> WorldBox {
    let (mut lo, mut hi) = extent(ct);
    let Some((a, b)) = labels.bbox_nonzero() else {
        return (lo, hi);
    };
    let g = labels.geometry();
    let (mut llo, mut lhi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for n in 0..8 {
        let ijk = [0, 1, 2].map(|d| if n & (1 << d) == 0 { a[d] } else { b[d] - 1 } as f64);
        let w = g.index_to_world(ijk);
        for d in 0..3 {
            llo[d] = llo[d].min(w[d]);
            lhi[d] = lhi[d].max(w[d]);
        }
    }
    for d in 0..3 {
        let (l, h) = (lo[d].max(llo[d] - MARGIN_MM), hi[d].min(lhi[d] + MARGIN_MM));
        if l < h {
            (lo[d], hi[d]) = (l, h);
        }
    }
    (lo, hi)
}

/// Colour of a label: partners share a hue, the left one saturated, the right one lighter.
fn label_color(map: &LabelMap, value: u8) -> Rgb<u8> {
    const HUES: [[u8; 3]; 6] = [
        [0, 190, 255],
        [40, 230, 40],
        [255, 60, 255],
        [255, 170, 0],
        [255, 60, 60],
        [160, 120, 255],
    ];
    let name = map.name(value).unwrap_or("");
    let (stem, side) = match LabelMap::side_of(name) {
        Some((stem, s)) => (stem.to_string(), Some(s)),
        None => (name.to_string(), None),
    };
    // Stable hue per stem, in order of first appearance in the map.
    let mut stems: Vec<String> = Vec::new();
    for (_, n) in map.foreground() {
        let s = LabelMap::side_of(n).map(|x| x.0).unwrap_or(n).to_string();
        if !stems.contains(&s) {
            stems.push(s);
        }
    }
    let idx = stems
        .iter()
        .position(|s| *s == stem)
        .unwrap_or(value as usize);
    let base = HUES[idx % HUES.len()];
    match side {
        Some(glandseg_core::Side::Right) => {
            Rgb([base[0] / 2 + 127, base[1] / 2 + 127, base[2] / 2 + 127])
        }
        _ => Rgb(base),
    }
}

fn hot(t: f32) -> [f32; 3] {
    // Black-red-yellow-white ("hot metal").
    let t = t.clamp(0.0, 1.0);
    [
        (t * 3.0).min(1.0),
        (t * 3.0 - 1.0).clamp(0.0, 1.0),
        (t * 3.0 - 2.0).clamp(0.0, 1.0),
    ]
}

fn centroid(labels: &Volume<u8>, values: &[u8]) -> Option<[f64; 3]> {
    let (mut n, mut c) = (0usize, [0.0f64; 3]);
    for ((k, j, i), l) in labels.data().indexed_iter() {
        if *l != 0 && values.contains(l) {
            n += 1;
            c[0] += i as f64;
            c[1] += j as f64;
            c[2] += k as f64;
        }
    }
    (n > 0).then(|| {
        labels
            .geometry()
            .index_to_world([c[0] / n as f64, c[1] / n as f64, c[2] / n as f64])
    })
}

fn choose_views(labels: &Volume<u8>, map: &LabelMap) -> Vec<View> {
    let (lo, hi) = extent(labels.geometry());
    let mid = [
        (lo[0] + hi[0]) / 2.0,
        (lo[1] + hi[1]) / 2.0,
        (lo[2] + hi[2]) / 2.0,
    ];
    let mut views = Vec::new();
    // Axial slices through each left/right pair (or single label), up to three.
    let mut groups: Vec<(String, Vec<u8>)> = map
        .lateral_pairs()
        .into_iter()
        .map(|(l, r, s)| (s, vec![l, r]))
        .collect();
    for (v, n) in map.foreground() {
        if !groups.iter().any(|g| g.1.contains(&v)) {
            groups.push((n.to_string(), vec![v]));
        }
    }
    for (name, vals) in groups.iter().take(3) {
        if let Some(c) = centroid(labels, vals) {
            views.push(View {
                plane: Plane::Axial,
                at: c[2],
                caption: format!("axial {name}"),
            });
        }
    }
    let all: Vec<u8> = map.foreground().map(|(v, _)| v).collect();
    let c = centroid(labels, &all).unwrap_or(mid);
    if views.is_empty() {
        views.push(View {
            plane: Plane::Axial,
            at: mid[2],
            caption: "axial".into(),
        });
    }
    // Coronal through the first pair (parotids in the default map), sagittal through the
    // first left-side gland.
    let cor_y = groups
        .first()
        .and_then(|g| centroid(labels, &g.1))
        .map(|p| p[1])
        .unwrap_or(c[1]);
    views.push(View {
        plane: Plane::Coronal,
        at: cor_y,
        caption: "coronal".into(),
    });
    let left = map
        .foreground()
        .find(|(_, n)| matches!(LabelMap::side_of(n), Some((_, glandseg_core::Side::Left))));
    let (sag_x, sag_name) =
        match left.and_then(|(v, n)| centroid(labels, &[v]).map(|p| (p[0], n.to_string()))) {
            Some((x, n)) => (x, format!("sagittal {n}")),
            None => (c[0], "sagittal".into()),
        };
    views.push(View {
        plane: Plane::Sagittal,
        at: sag_x,
        caption: sag_name,
    });
    views
}

/// Samples a panel: returns (width, height, per pixel: world point).
fn panel_points(bx: &WorldBox, view: &View) -> (u32, u32, Vec<[f64; 3]>) {
    let (lo, hi) = *bx;
    // In-plane axes: (u axis world dim, v axis world dim, v runs downward from hi?)
    let (du, dv) = match view.plane {
        Plane::Axial => (0, 1), // u: x right->left of patient (R on image left); v: y anterior->posterior
        Plane::Coronal => (0, 2), // u: x; v: z superior at top
        Plane::Sagittal => (1, 2), // u: y anterior on the left; v: z superior at top
    };
    let (wu, wv) = (hi[du] - lo[du], hi[dv] - lo[dv]);
    let mm = (wu.max(wv) / PANEL as f64).max(1e-6);
    let (w, h) = (
        ((wu / mm).round() as u32).max(1),
        ((wv / mm).round() as u32).max(1),
    );
    let normal = match view.plane {
        Plane::Axial => 2,
        Plane::Coronal => 1,
        Plane::Sagittal => 0,
    };
    let mut pts = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let mut p = [0.0; 3];
            p[normal] = view.at;
            p[du] = lo[du] + (x as f64 + 0.5) * mm;
            p[dv] = if view.plane == Plane::Axial {
                lo[dv] + (y as f64 + 0.5) * mm
            } else {
                hi[dv] - (y as f64 + 0.5) * mm
            };
            pts.push(p);
        }
    }
    (w, h, pts)
}

fn sample<T: Copy>(v: &Volume<T>, p: [f64; 3]) -> Option<T> {
    let ijk = v.geometry().world_to_index(p);
    let s = v.geometry().shape;
    let mut idx = [0usize; 3];
    for a in 0..3 {
        let r = ijk[a].round();
        if r < 0.0 || r >= s[a] as f64 {
            return None;
        }
        idx[a] = r as usize;
    }
    Some(*v.get(idx[0], idx[1], idx[2]))
}

/// Renders the review image for one case. `pet` must be on any grid overlapping the CT
/// (it is sampled in world coordinates); labels likewise.
///
/// Every panel pixel is a world (LPS) point mapped back through each volume's own
/// direction matrix, rather than a voxel-axis slice picked with `Geometry::axis_along`:
/// that keeps flipped, permuted and oblique volumes upright and puts the patient's left on
/// the image's right without special cases, and gives square (isotropic) display pixels.
pub fn render_review(
    ct: &Volume<f32>,
    pet: Option<&Volume<f32>>,
    labels: &Volume<u8>,
    label_map: &LabelMap,
    title: &str,
) -> RgbImage {
    let views = choose_views(labels, label_map);
    let bx = display_box(ct.geometry(), labels);
    let panels: Vec<(u32, u32, Vec<[f64; 3]>)> =
        views.iter().map(|v| panel_points(&bx, v)).collect();
    let rows = if pet.is_some() { 2 } else { 1 };
    let width = panels.iter().map(|p| p.0 + GAP).sum::<u32>() + GAP;
    let legend_h = 22;
    let height = TITLE_H + HEADER_H + rows * (PANEL + GAP) + legend_h + GAP;
    let legend_w: u32 = label_map
        .foreground()
        .map(|(_, n)| 14 + text_width(n, 1) + 12)
        .sum::<u32>()
        + GAP
        + if pet.is_some() {
            8 + text_width("PET: SUV 0-99.9", 1)
        } else {
            0
        };
    let width = width.max(legend_w).max(text_width(title, 2) + 12);
    let mut img = RgbImage::from_pixel(width, height, Rgb([16, 16, 16]));
    draw_text(&mut img, 6, 5, title, 2, Rgb([255, 255, 255]));

    // PET display range: SUV 0 .. max(10, 99.9th percentile of the voxels above 0.5 SUV).
    // The percentile ignores air and background so a small head-only FOV (mostly air) does
    // not drag it down; 10 keeps a cold scan from being stretched into looking hot.
    let vmax = pet
        .map(|p| {
            let mut v: Vec<f32> = p
                .as_slice()
                .iter()
                .copied()
                .filter(|x| x.is_finite() && *x > 0.5)
                .collect();
            if v.is_empty() {
                return 10.0;
            }
            let k = ((v.len() as f64 * 0.999) as usize).min(v.len() - 1);
            let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
            x.max(10.0)
        })
        .unwrap_or(10.0);

    let mut x0 = GAP;
    for (view, (w, h, pts)) in views.iter().zip(&panels) {
        draw_text(
            &mut img,
            x0 as i64,
            (TITLE_H + 2) as i64,
            // Cut to the panel's width so it never runs into the next caption.
            &view
                .caption
                .chars()
                .take((*w / 8) as usize)
                .collect::<String>(),
            1,
            Rgb([200, 200, 200]),
        );
        let labs: Vec<u8> = pts
            .iter()
            .map(|p| sample(labels, *p).unwrap_or(0))
            .collect();
        for row in 0..rows {
            let y0 = TITLE_H + HEADER_H + row * (PANEL + GAP);
            for y in 0..*h {
                for x in 0..*w {
                    let i = (y * w + x) as usize;
                    let hu = sample(ct, pts[i]).unwrap_or(-1000.0);
                    let g = ((hu - (40.0 - 200.0)) / 400.0).clamp(0.0, 1.0);
                    let mut rgb = [g, g, g];
                    if row == 1 {
                        if let Some(s) = pet.and_then(|p| sample(p, pts[i])) {
                            let a = ((s - 0.5) / (0.25 * vmax)).clamp(0.0, 0.85);
                            let c = hot(s / vmax);
                            for d in 0..3 {
                                rgb[d] = rgb[d] * (1.0 - a) + c[d] * a;
                            }
                        }
                    }
                    let l = labs[i];
                    let mut px = Rgb([
                        (rgb[0] * 255.0) as u8,
                        (rgb[1] * 255.0) as u8,
                        (rgb[2] * 255.0) as u8,
                    ]);
                    if l != 0 {
                        let edge = (x == 0 || labs[i - 1] != l)
                            || (x + 1 == *w || labs[i + 1] != l)
                            || (y == 0 || labs[i - *w as usize] != l)
                            || (y + 1 == *h || labs[i + *w as usize] != l);
                        if edge {
                            px = label_color(label_map, l);
                        }
                    }
                    img.put_pixel(x0 + x, y0 + y, px);
                }
            }
            // Orientation letters.
            let (left, right, top, bottom) = match view.plane {
                Plane::Axial => ("R", "L", "A", "P"),
                Plane::Coronal => ("R", "L", "S", "I"),
                Plane::Sagittal => ("A", "P", "S", "I"),
            };
            let c = Rgb([255, 255, 0]);
            let (xi, yi, wi, hi) = (x0 as i64, y0 as i64, *w as i64, *h as i64);
            draw_text(&mut img, xi + 2, yi + hi / 2 - 4, left, 1, c);
            draw_text(&mut img, xi + wi - 10, yi + hi / 2 - 4, right, 1, c);
            draw_text(&mut img, xi + wi / 2 - 4, yi + 2, top, 1, c);
            draw_text(&mut img, xi + wi / 2 - 4, yi + hi - 10, bottom, 1, c);
        }
        x0 += w + GAP;
    }
    // Legend.
    let ly = (height - legend_h) as i64;
    let mut lx = GAP as i64;
    for (v, n) in label_map.foreground() {
        let c = label_color(label_map, v);
        for dy in 0..10 {
            for dx in 0..10 {
                let (px, py) = (lx + dx, ly + 4 + dy);
                if (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, c);
                }
            }
        }
        draw_text(&mut img, lx + 14, ly + 5, n, 1, Rgb([230, 230, 230]));
        lx += 14 + text_width(n, 1) as i64 + 12;
    }
    if pet.is_some() {
        let t = format!("PET: SUV 0-{vmax:.1}");
        draw_text(&mut img, lx + 8, ly + 5, &t, 1, Rgb([255, 180, 80]));
    }
    img
}

/// Writes a PNG atomically.
pub fn save_png(path: &Path, img: &RgbImage) -> glandseg_core::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| glandseg_core::Error::io(path, std::io::Error::other(e)))?;
    glandseg_core::atomic::write_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(flip_i: bool) -> (Volume<f32>, Volume<u8>) {
        // 60 x 40 x 20 mm; a "parotid_left" blob at +x (patient's left).
        let mut g = Geometry::new([60, 40, 20], [1.0, 1.0, 2.0], [-30.0, -20.0, 0.0]);
        if flip_i {
            g = Geometry::new([60, 40, 20], [1.0, 1.0, 2.0], [29.0, -20.0, 0.0]).with_direction([
                [-1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0],
            ]);
        }
        let mut ct = Volume::filled(g.clone(), 40.0f32);
        let mut lab = Volume::filled(g.clone(), 0u8);
        for k in 0..20 {
            for j in 0..40 {
                for i in 0..60 {
                    let w = g.index_to_world([i as f64, j as f64, k as f64]);
                    if (w[0] - 18.0).abs() < 6.0 && w[1].abs() < 6.0 && (w[2] - 20.0).abs() < 8.0 {
                        lab.set(i, j, k, 1);
                        ct.set(i, j, k, -50.0);
                    }
                }
            }
        }
        (ct, lab)
    }

    #[test]
    fn patients_left_is_on_the_images_right_in_axial_view() {
        for flip in [false, true] {
            let (ct, lab) = scene(flip);
            let map = LabelMap::default();
            let img = render_review(&ct, Some(&ct), &lab, &map, "test");
            let col = label_color(&map, 1);
            // First panel (axial through the parotid pair): find contour pixels.
            let (w, _, _) = panel_points(
                &display_box(ct.geometry(), &lab),
                &View {
                    plane: Plane::Axial,
                    at: 20.0,
                    caption: String::new(),
                },
            );
            let mut xs = Vec::new();
            for y in TITLE_H + HEADER_H..TITLE_H + HEADER_H + PANEL {
                for x in GAP..GAP + w {
                    if *img.get_pixel(x, y) == col {
                        xs.push(x - GAP);
                    }
                }
            }
            assert!(!xs.is_empty(), "contour drawn (flip {flip})");
            let mean = xs.iter().sum::<u32>() as f64 / xs.len() as f64;
            assert!(
                mean > w as f64 * 0.6,
                "left gland drawn on the image's right: mean x {mean} of {w} (flip {flip})"
            );
        }
    }

    /// A 60 x 40 x 20 (x 2 mm) grid centred on world 0 with `dir` as its direction matrix,
    /// holding one box per (label, world centre); CT 40 HU, -50 HU in the boxes, PET 6
    /// SUV in the boxes and 0 elsewhere (display range SUV 0-10).
    fn boxes(
        dir: [[f64; 3]; 3],
        blobs: &[(u8, [f64; 3])],
    ) -> (Volume<f32>, Volume<f32>, Volume<u8>) {
        let shape = [60usize, 40, 20];
        let sp = [1.0, 1.0, 2.0];
        let mut origin = [0.0; 3];
        for (r, o) in origin.iter_mut().enumerate() {
            for c in 0..3 {
                *o -= dir[r][c] * sp[c] * (shape[c] - 1) as f64 / 2.0;
            }
        }
        let g = Geometry::new(shape, sp, origin).with_direction(dir);
        let mut ct = Volume::filled(g.clone(), 40.0f32);
        let mut pet = Volume::filled(g.clone(), 0.0f32);
        let mut lab = Volume::filled(g.clone(), 0u8);
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    let w = g.index_to_world([i as f64, j as f64, k as f64]);
                    for (l, c) in blobs {
                        if (0..3).all(|d| (w[d] - c[d]).abs() < 5.0) {
                            lab.set(i, j, k, *l);
                            ct.set(i, j, k, -50.0);
                            pet.set(i, j, k, 6.0);
                        }
                    }
                }
            }
        }
        (ct, pet, lab)
    }

    /// Pixels of colour `col` in panel `n`, row `row`, as fractions (x / width, y / height).
    fn find(
        img: &RgbImage,
        ct: &Volume<f32>,
        lab: &Volume<u8>,
        n: usize,
        row: u32,
        col: Rgb<u8>,
    ) -> Vec<(f64, f64)> {
        let views = choose_views(lab, &LabelMap::default());
        let bx = display_box(ct.geometry(), lab);
        let mut x0 = GAP;
        for v in &views[..n] {
            x0 += panel_points(&bx, v).0 + GAP;
        }
        let (w, h, _) = panel_points(&bx, &views[n]);
        let y0 = TITLE_H + HEADER_H + row * (PANEL + GAP);
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                if *img.get_pixel(x0 + x, y0 + y) == col {
                    out.push((x as f64 / w as f64, y as f64 / h as f64));
                }
            }
        }
        out
    }

    fn mean(p: &[(f64, f64)]) -> (f64, f64) {
        assert!(!p.is_empty(), "colour not found in the panel");
        let n = p.len() as f64;
        (
            p.iter().map(|a| a.0).sum::<f64>() / n,
            p.iter().map(|a| a.1).sum::<f64>() / n,
        )
    }

    const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

    #[test]
    fn coronal_has_superior_up_and_sagittal_anterior_left() {
        // Left parotid high (+z) and anterior (-y), so both are visible in one scene.
        let (ct, pet, lab) = boxes(IDENTITY, &[(1, [15.0, -10.0, 10.0])]);
        let map = LabelMap::default();
        let img = render_review(&ct, Some(&pet), &lab, &map, "t");
        let col = label_color(&map, 1);
        // Views: axial parotid, coronal, sagittal parotid_left.
        let (cx, cy) = mean(&find(&img, &ct, &lab, 1, 0, col));
        assert!(
            cx > 0.6,
            "coronal: patient's left on the image's right ({cx})"
        );
        assert!(cy < 0.45, "coronal: superior up ({cy})");
        let (sx, sy) = mean(&find(&img, &ct, &lab, 2, 0, col));
        assert!(sx < 0.4, "sagittal: anterior on the image's left ({sx})");
        assert!(sy < 0.45, "sagittal: superior up ({sy})");
        let (ax, ay) = mean(&find(&img, &ct, &lab, 0, 0, col));
        assert!(
            ax > 0.6 && ay < 0.4,
            "axial: left on the right, anterior up ({ax}, {ay})"
        );
    }

    #[test]
    fn oblique_volume_keeps_laterality_and_partners_get_their_own_colour() {
        // Voxel axes rotated 30 degrees about z and the i axis reversed: world placement
        // must not depend on how the voxels are stored.
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let dir = [[-c, -s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]];
        let (ct, pet, lab) = boxes(dir, &[(1, [15.0, 0.0, 0.0]), (2, [-15.0, 0.0, 0.0])]);
        let map = LabelMap::default();
        let (cl, cr) = (label_color(&map, 1), label_color(&map, 2));
        assert_ne!(cl, cr, "left and right partners are told apart");
        let img = render_review(&ct, Some(&pet), &lab, &map, "oblique");
        let (lx, _) = mean(&find(&img, &ct, &lab, 0, 0, cl));
        let (rx, _) = mean(&find(&img, &ct, &lab, 0, 0, cr));
        assert!(
            lx > 0.6 && rx < 0.4,
            "left {lx} on the right, right {rx} on the left"
        );
    }

    #[test]
    fn pet_is_overlaid_only_in_the_second_row() {
        let (ct, pet, lab) = boxes(IDENTITY, &[(1, [15.0, 0.0, 0.0])]);
        let img = render_review(&ct, Some(&pet), &lab, &LabelMap::default(), "t");
        // Inside the box, away from the outline: CT row grey, PET row hot (red > blue).
        let views = choose_views(&lab, &LabelMap::default());
        let (w, h, pts) = panel_points(&display_box(ct.geometry(), &lab), &views[0]);
        let centre = pts
            .iter()
            .enumerate()
            .min_by(|a, b| {
                let d = |p: &[f64; 3]| (p[0] - 15.0).powi(2) + p[1].powi(2);
                d(a.1).total_cmp(&d(b.1))
            })
            .map(|(i, _)| i as u32)
            .unwrap();
        let (x, y) = (GAP + centre % w, TITLE_H + HEADER_H + centre / w);
        assert!(y < TITLE_H + HEADER_H + h);
        let grey = img.get_pixel(x, y).0;
        assert_eq!(grey[0], grey[2], "CT row is not tinted: {grey:?}");
        let hot = img.get_pixel(x, y + PANEL + GAP).0;
        assert!(
            hot[0] as i32 > hot[2] as i32 + 100,
            "PET row shows uptake: {hot:?}"
        );
    }

    #[test]
    fn panels_zoom_to_the_glands_but_stay_inside_the_scan() {
        // A 400 mm wide, 300 mm tall scan with one 10 mm gland at x = +100 mm.
        let g = Geometry::new([200, 20, 150], [2.0, 2.0, 2.0], [-199.0, -19.0, -149.0]);
        let mut lab = Volume::filled(g.clone(), 0u8);
        for k in 70..75 {
            for j in 8..12 {
                for i in 147..152 {
                    lab.set(i, j, k, 1);
                }
            }
        }
        let (lo, hi) = display_box(&g, &lab);
        // x: gland 95..103 mm, +-50 mm; y: the scan's own extent is narrower than that.
        assert!(
            (lo[0] - 45.0).abs() < 1e-9 && (hi[0] - 153.0).abs() < 1e-9,
            "{lo:?} {hi:?}"
        );
        assert_eq!((lo[1], hi[1]), (-19.0, 19.0));
        assert!((lo[2] - (-59.0)).abs() < 1e-9 && (hi[2] - 49.0).abs() < 1e-9);
        // Labels outside the scan: show the whole scan rather than nothing.
        let far = Volume::filled(
            Geometry::new([4, 4, 4], [1.0; 3], [900.0, 900.0, 900.0]),
            1u8,
        );
        assert_eq!(display_box(&g, &far), extent(&g));
        let empty = Volume::filled(g.clone(), 0u8);
        assert_eq!(display_box(&g, &empty), extent(&g));
    }

    #[test]
    fn image_has_panels_legend_and_title() {
        let (ct, lab) = scene(false);
        let img = render_review(&ct, None, &lab, &LabelMap::default(), "GLAND_000");
        assert_eq!(img.height(), TITLE_H + HEADER_H + PANEL + GAP + 22 + GAP);
        // Title text is white somewhere in the title strip.
        let white = (0..img.width())
            .flat_map(|x| (0..TITLE_H).map(move |y| (x, y)))
            .any(|(x, y)| *img.get_pixel(x, y) == Rgb([255, 255, 255]));
        assert!(white);
        let dir = std::env::temp_dir().join(format!("glandseg-viz-{}", std::process::id()));
        let p = dir.join("x.png");
        save_png(&p, &img).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > 100);
        let _ = std::fs::remove_dir_all(dir);
    }
}
