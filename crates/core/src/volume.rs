//! A [`Volume`] is an image or label map together with its [`Geometry`]. Keeping them in
//! one value means cropping, padding and resampling can never forget to move the origin.

use crate::error::{Error, Result};
use crate::geometry::Geometry;
use ndarray::{s, Array3};

/// Voxels plus where they are. `data` is indexed `[k, j, i]` (slowest to fastest), so
/// `data.shape() == geometry.array_shape()` always holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume<T> {
    geometry: Geometry,
    data: Array3<T>,
}

impl<T: Clone> Volume<T> {
    /// Pairs data with a geometry; the array shape must be the geometry's `[k, j, i]`.
    pub fn new(geometry: Geometry, data: Array3<T>) -> Result<Self> {
        if data.shape() != geometry.array_shape() {
            return Err(Error::Shape(format!(
                "array shape {:?} (k, j, i) does not match geometry shape {:?} (i, j, k)",
                data.shape(),
                geometry.shape
            )));
        }
        // Standard (C) layout is assumed by every fast path that takes `as_slice`.
        let data = if data.is_standard_layout() {
            data
        } else {
            data.as_standard_layout().to_owned()
        };
        Ok(Volume { geometry, data })
    }

    /// Builds a volume from a flat buffer in memory order (i fastest).
    pub fn from_vec(geometry: Geometry, values: Vec<T>) -> Result<Self> {
        if values.len() != geometry.num_voxels() {
            return Err(Error::Shape(format!(
                "{} values for a grid of {:?} = {} voxels",
                values.len(),
                geometry.shape,
                geometry.num_voxels()
            )));
        }
        let data = Array3::from_shape_vec(geometry.array_shape(), values)
            .map_err(|e| Error::Shape(e.to_string()))?;
        Ok(Volume { geometry, data })
    }

    /// A volume filled with `value`.
    pub fn filled(geometry: Geometry, value: T) -> Self {
        let data = Array3::from_elem(geometry.array_shape(), value);
        Volume { geometry, data }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Places the same voxels on another grid of the same shape (a rigid motion of the
    /// whole image: registration moves an image by its geometry, not its voxels).
    pub fn set_geometry(&mut self, geometry: Geometry) -> Result<()> {
        if geometry.shape != self.geometry.shape {
            return Err(Error::Shape(format!(
                "a grid of {:?} for a volume of {:?}",
                geometry.shape, self.geometry.shape
            )));
        }
        self.geometry = geometry;
        Ok(())
    }

    pub fn data(&self) -> &Array3<T> {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut Array3<T> {
        &mut self.data
    }

    pub fn into_parts(self) -> (Geometry, Array3<T>) {
        (self.geometry, self.data)
    }

    /// The voxels in memory order (i fastest).
    pub fn as_slice(&self) -> &[T] {
        self.data
            .as_slice()
            .expect("volumes are kept in standard layout")
    }

    pub fn as_slice_mut(&mut self) -> &mut [T] {
        self.data
            .as_slice_mut()
            .expect("volumes are kept in standard layout")
    }

    pub fn shape(&self) -> [usize; 3] {
        self.geometry.shape
    }

    /// Voxel `(i, j, k)`.
    pub fn get(&self, i: usize, j: usize, k: usize) -> &T {
        &self.data[[k, j, i]]
    }

    pub fn set(&mut self, i: usize, j: usize, k: usize, value: T) {
        self.data[[k, j, i]] = value;
    }

    /// Same grid, new values.
    pub fn map<U: Clone, F: Fn(&T) -> U>(&self, f: F) -> Volume<U> {
        Volume {
            geometry: self.geometry.clone(),
            data: self.data.map(f),
        }
    }

    /// A volume on the same grid with other data (checked).
    pub fn with_data<U: Clone>(&self, data: Array3<U>) -> Result<Volume<U>> {
        Volume::new(self.geometry.clone(), data)
    }

    /// The sub-block `[lo, hi)` in voxel indices, with the origin moved so that every voxel
    /// keeps its world position.
    pub fn crop(&self, lo: [usize; 3], hi: [usize; 3]) -> Result<Volume<T>> {
        let geometry = self.geometry.crop(lo, hi)?;
        let data = self
            .data
            .slice(s![lo[2]..hi[2], lo[1]..hi[1], lo[0]..hi[0]])
            .to_owned();
        Ok(Volume { geometry, data })
    }

    /// Pads `before` voxels in front of and `after` voxels behind each axis with `value`;
    /// the origin moves back so the existing voxels stay where they are in the world.
    pub fn pad(&self, before: [usize; 3], after: [usize; 3], value: T) -> Volume<T> {
        let start = [
            -(before[0] as isize),
            -(before[1] as isize),
            -(before[2] as isize),
        ];
        let size = [
            self.geometry.shape[0] + before[0] + after[0],
            self.geometry.shape[1] + before[1] + after[1],
            self.geometry.shape[2] + before[2] + after[2],
        ];
        self.extract(start, size, value)
    }

    /// A block of `size` voxels starting at voxel `start` of this grid; parts outside the
    /// volume are `fill`. Crop and pad in one, as a sliding window or a patch sampler
    /// needs near the border.
    pub fn extract(&self, start: [isize; 3], size: [usize; 3], fill: T) -> Volume<T> {
        let geometry = self.geometry.region(start, size);
        let mut data = Array3::from_elem(geometry.array_shape(), fill);
        let mut src_lo = [0usize; 3];
        let mut src_hi = [0usize; 3];
        let mut dst_lo = [0usize; 3];
        for a in 0..3 {
            let n = self.geometry.shape[a] as isize;
            let lo = start[a].max(0);
            let hi = (start[a] + size[a] as isize).min(n);
            if lo >= hi {
                return Volume { geometry, data };
            }
            src_lo[a] = lo as usize;
            src_hi[a] = hi as usize;
            dst_lo[a] = (lo - start[a]) as usize;
        }
        let len = [
            src_hi[0] - src_lo[0],
            src_hi[1] - src_lo[1],
            src_hi[2] - src_lo[2],
        ];
        data.slice_mut(s![
            dst_lo[2]..dst_lo[2] + len[2],
            dst_lo[1]..dst_lo[1] + len[1],
            dst_lo[0]..dst_lo[0] + len[0]
        ])
        .assign(&self.data.slice(s![
            src_lo[2]..src_hi[2],
            src_lo[1]..src_hi[1],
            src_lo[0]..src_hi[0]
        ]));
        Volume { geometry, data }
    }

    /// Reverses voxel axis `axis` (0 = i, 1 = j, 2 = k) *and* moves the geometry so that
    /// every value stays at the same world position: the image looks unchanged to a
    /// viewer. (A mirror in the world, as augmentation wants, is
    /// [`Volume::mirror_world`].)
    pub fn flip_axis_keep_world(&self, axis: usize) -> Volume<T> {
        let mut data = self.data.clone();
        data.invert_axis(ndarray::Axis(2 - axis));
        let mut g = self.geometry.clone();
        let n = g.shape[axis] as f64 - 1.0;
        let mut last = [0.0; 3];
        last[axis] = n;
        g.origin = g.index_to_world(last);
        for r in 0..3 {
            g.direction[r][axis] = -g.direction[r][axis];
        }
        Volume { geometry: g, data }
    }

    /// Mirrors the content along voxel axis `axis` and keeps the geometry: what was at the
    /// patient's left is now at the patient's right. Only correct for label maps together
    /// with swapping left/right labels (see `LabelMap::swap_table`).
    pub fn mirror_world(&self, axis: usize) -> Volume<T> {
        let mut data = self.data.clone();
        data.invert_axis(ndarray::Axis(2 - axis));
        Volume {
            geometry: self.geometry.clone(),
            data: data.as_standard_layout().to_owned(),
        }
    }
}

impl<T: Clone + PartialEq + Default> Volume<T> {
    /// Bounding box `[lo, hi)` of the voxels that are not `T::default()` (zero), or `None`
    /// when all are.
    pub fn bbox_nonzero(&self) -> Option<([usize; 3], [usize; 3])> {
        let zero = T::default();
        self.bbox_where(|v| *v != zero)
    }
}

impl<T: Clone> Volume<T> {
    /// Bounding box `[lo, hi)` of the voxels where `pred` holds.
    pub fn bbox_where<F: Fn(&T) -> bool>(&self, pred: F) -> Option<([usize; 3], [usize; 3])> {
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        let mut any = false;
        for ((k, j, i), v) in self.data.indexed_iter() {
            if pred(v) {
                any = true;
                let ijk = [i, j, k];
                for a in 0..3 {
                    lo[a] = lo[a].min(ijk[a]);
                    hi[a] = hi[a].max(ijk[a] + 1);
                }
            }
        }
        any.then_some((lo, hi))
    }
}

impl<T> Volume<T>
where
    T: Copy + Into<f64>,
{
    /// Minimum and maximum value (NaN ignored), `None` if there are no finite values.
    pub fn min_max(&self) -> Option<(f64, f64)> {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for v in self.data.iter() {
            let x: f64 = (*v).into();
            if x.is_finite() {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        (lo <= hi).then_some((lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Volume<f32> {
        let g = Geometry::new([4, 5, 6], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]);
        let n = g.num_voxels();
        Volume::from_vec(g, (0..n).map(|x| x as f32).collect()).unwrap()
    }

    #[test]
    fn memory_order_is_i_fastest() {
        let v = ramp();
        assert_eq!(*v.get(1, 0, 0), 1.0);
        assert_eq!(*v.get(0, 1, 0), 4.0);
        assert_eq!(*v.get(0, 0, 1), 20.0);
        assert!(Volume::from_vec(v.geometry().clone(), vec![0.0f32; 3]).is_err());
    }

    #[test]
    fn crop_then_pad_restores_world_positions() {
        let v = ramp();
        let c = v.crop([1, 1, 2], [3, 4, 5]).unwrap();
        assert_eq!(*c.get(0, 0, 0), *v.get(1, 1, 2));
        let w = v.geometry().index_to_world([1.0, 1.0, 2.0]);
        assert_eq!(c.geometry().index_to_world([0.0; 3]), w);
        let p = c.pad([1, 1, 2], [1, 1, 1], -1.0);
        assert!(p.geometry().same_grid(v.geometry(), 1e-9));
        assert_eq!(*p.get(2, 2, 3), *v.get(2, 2, 3));
        assert_eq!(*p.get(0, 0, 0), -1.0);
    }

    #[test]
    fn extract_beyond_borders() {
        let v = ramp();
        let e = v.extract([-2, 3, 4], [4, 4, 4], -5.0);
        assert_eq!(*e.get(0, 0, 0), -5.0);
        assert_eq!(*e.get(2, 0, 0), *v.get(0, 3, 4));
        assert_eq!(*e.get(3, 1, 1), *v.get(1, 4, 5));
        assert_eq!(*e.get(3, 2, 1), -5.0);
    }

    #[test]
    fn bbox() {
        let g = Geometry::new([5, 5, 5], [1.0; 3], [0.0; 3]);
        let mut v = Volume::filled(g, 0u8);
        assert_eq!(v.bbox_nonzero(), None);
        v.set(1, 2, 3, 7);
        v.set(3, 2, 4, 7);
        assert_eq!(v.bbox_nonzero(), Some(([1, 2, 3], [4, 3, 5])));
    }

    #[test]
    fn flip_keep_world_keeps_values_in_place() {
        let v = ramp();
        let f = v.flip_axis_keep_world(0);
        let w = v.geometry().index_to_world([1.0, 2.0, 3.0]);
        let ijk = f.geometry().world_to_index(w);
        let ijk = [
            ijk[0].round() as usize,
            ijk[1].round() as usize,
            ijk[2].round() as usize,
        ];
        assert_eq!(ijk, [2, 2, 3]);
        assert_eq!(*f.get(2, 2, 3), *v.get(1, 2, 3));
    }
}
