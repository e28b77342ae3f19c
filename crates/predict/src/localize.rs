//! Finding the head and neck in a scan of any field of view, before the full-resolution
//! network runs, so a whole-body PET/CT costs no more memory or time than a head scan.
//!
//! The method is anatomical rather than learned: the glands lie within 250 mm below the
//! top of the head in adults (vertex to hyoid is about 200 mm; the submandibular glands
//! sit just above the hyoid), so the region is the body's most superior 250 mm, cropped
//! in-plane to the body there plus a margin. It needs only the CT (HU > -500 is body), is
//! exact for head-first scans with arms down (the protocol of PSMA PET/CT), and needs no
//! second network to train. When the scan starts below the vertex (top of skull cut) the
//! region still starts at the scan's top edge, which is then inside the head. Arms raised
//! above the head would fool it: `predict --no-localize` turns it off, and the region used
//! is reported so a reviewer sees it.

use glandseg_core::Volume;

/// Voxel box `[lo, hi)` of the CT grid to segment in.
pub type Region = ([usize; 3], [usize; 3]);

/// Cross-sections smaller than this (mm²) are noise, table or a blanket, not the head.
const MIN_HEAD_AREA_MM2: f64 = 500.0;

/// The head-and-neck region of a CT: the body's most superior `extent_mm`, cropped in-plane to the body there, plus `margin_mm`.
pub fn head_neck_region(ct: &Volume<f32>, extent_mm: f64, margin_mm: f64) -> Region {
    let g = ct.geometry();
    let full: Region = ([0; 3], g.shape);
    let (si, up) = g.axis_along(2);
    let n = g.shape;
    let plane: Vec<usize> = (0..3).filter(|&a| a != si).collect();
    let pixel_area = g.spacing[plane[0]] * g.spacing[plane[1]];
    // Body voxels per slice along the superior-inferior voxel axis.
    let mut area = vec![0usize; n[si]];
    let data = ct.as_slice();
    for k in 0..n[2] {
        for j in 0..n[1] {
            for i in 0..n[0] {
                if data[(k * n[1] + j) * n[0] + i] > -500.0 {
                    area[[i, j, k][si]] += 1;
                }
            }
        }
    }
    let is_body = |s: usize| area[s] as f64 * pixel_area >= MIN_HEAD_AREA_MM2;
    // Walk from the superior end of the scan down to the first body slice.
    let order: Vec<usize> = if up {
        (0..n[si]).rev().collect()
    } else {
        (0..n[si]).collect()
    };
    let Some(top) = order.iter().copied().find(|&s| is_body(s)) else {
        return full;
    };
    let len = (extent_mm / g.spacing[si]).ceil() as usize;
    let (lo_s, hi_s) = if up {
        (top.saturating_sub(len), top + 1)
    } else {
        (top, (top + len + 1).min(n[si]))
    };
    // In-plane box of the body inside that slab.
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for k in 0..n[2] {
        for j in 0..n[1] {
            for i in 0..n[0] {
                let ijk = [i, j, k];
                if ijk[si] < lo_s || ijk[si] >= hi_s {
                    continue;
                }
                if data[(k * n[1] + j) * n[0] + i] > -500.0 {
                    for a in 0..3 {
                        lo[a] = lo[a].min(ijk[a]);
                        hi[a] = hi[a].max(ijk[a] + 1);
                    }
                }
            }
        }
    }
    if lo[0] == usize::MAX {
        return full;
    }
    lo[si] = lo_s;
    hi[si] = hi_s;
    for a in 0..3 {
        let m = (margin_mm / g.spacing[a]).ceil() as usize;
        lo[a] = lo[a].saturating_sub(m);
        hi[a] = (hi[a] + m).min(n[a]);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;

    #[test]
    fn region_is_the_top_of_the_body() {
        // A 400 mm tall "body" column in a 500 mm scan, 2 mm voxels; air above it.
        let g = Geometry::new([40, 40, 250], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]);
        let mut ct = Volume::filled(g, -1000.0f32);
        for k in 0..200 {
            for j in 10..30 {
                for i in 12..28 {
                    ct.set(i, j, k, 40.0);
                }
            }
        }
        let (lo, hi) = head_neck_region(&ct, 250.0, 10.0);
        assert_eq!(hi[2], 200 + 5, "top of the body plus the margin");
        assert_eq!(
            lo[2],
            199 - 125 - 5,
            "125 slices of 2 mm below the top slice"
        );
        assert_eq!((lo[0], hi[0]), (7, 33));
        // Same scan stored feet-first in k (k axis pointing inferior).
        let mut g2 = ct.geometry().clone();
        g2.direction = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]];
        let mut flipped = Volume::filled(g2, -1000.0f32);
        for k in 0..250 {
            for j in 0..40 {
                for i in 0..40 {
                    flipped.set(i, j, k, *ct.get(i, j, 249 - k));
                }
            }
        }
        let (lo, hi) = head_neck_region(&flipped, 250.0, 10.0);
        assert_eq!(lo[2], 50 - 5);
        assert_eq!(hi[2], 50 + 126 + 5);
    }
}
