//! Binary dilation and erosion by a ball given in millimetres (an ellipsoid in voxels on
//! anisotropic grids), via the exact distance transform: a voxel is in the dilation when
//! its centre lies within `radius_mm` of a mask voxel's centre.

use crate::distance::edt_squared_mm;
use glandseg_core::Volume;

pub fn dilate_mm(mask: &Volume<bool>, radius_mm: f64) -> Volume<bool> {
    let r2 = radius_mm * radius_mm * (1.0 + 1e-9) + 1e-12;
    edt_squared_mm(mask).map(|&d| d <= r2)
}

pub fn erode_mm(mask: &Volume<bool>, radius_mm: f64) -> Volume<bool> {
    let complement = mask.map(|&m| !m);
    let grown = dilate_mm(&complement, radius_mm);
    // A mask that fills the whole grid has no background to erode from.
    if complement.as_slice().iter().all(|&c| !c) {
        return mask.clone();
    }
    grown.map(|&g| !g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;

    #[test]
    fn dilating_one_voxel_gives_the_voxels_within_the_radius() {
        let sp = [0.8, 1.0, 2.0];
        let g = Geometry::new([15, 15, 9], sp, [0.0; 3]);
        let mut m = Volume::filled(g, false);
        m.set(7, 7, 4, true);
        let r = 3.0;
        let d = dilate_mm(&m, r);
        for ((k, j, i), &v) in d.data().indexed_iter() {
            let dist = (((i as f64 - 7.0) * sp[0]).powi(2)
                + ((j as f64 - 7.0) * sp[1]).powi(2)
                + ((k as f64 - 4.0) * sp[2]).powi(2))
            .sqrt();
            assert_eq!(v, dist <= r, "({i},{j},{k}) at {dist}");
        }
        let e = erode_mm(&d, r);
        assert!(*e.get(7, 7, 4));
        assert!(
            e.as_slice().iter().filter(|&&x| x).count()
                < d.as_slice().iter().filter(|&&x| x).count()
        );
    }
}
