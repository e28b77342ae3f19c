//! Running a 1D operation over every line of a 3D array along one axis, in parallel.
//! Separable filters and the distance transform are all "do this to each line"; this is
//! the one place that knows how to walk lines along a strided axis without copying the
//! whole array.

use rayon::prelude::*;

/// A raw pointer that may cross threads. Safe here because every line touches a disjoint
/// set of indices (lines along one axis partition the array).
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Through a method, so closures capture the whole (Send) wrapper, not the raw field.
    fn get(self) -> *mut T {
        self.0
    }
}

/// Calls `f(line_in, line_out)` for every line along voxel axis `axis` (0 = i, fastest)
/// of `data` with shape `[nx, ny, nz]`, writing the result back in place.
pub(crate) fn for_each_line<T, F>(data: &mut [T], shape: [usize; 3], axis: usize, f: F)
where
    T: Copy + Send + Sync + Default,
    F: Fn(&[T], &mut [T]) + Sync,
{
    let [nx, ny, nz] = shape;
    assert_eq!(data.len(), nx * ny * nz);
    let strides = [1, nx, nx * ny];
    let n = shape[axis];
    let stride = strides[axis];
    // The two other axes enumerate the lines.
    let (a, b) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let nlines = shape[a] * shape[b];
    let ptr = SharedMut(data.as_mut_ptr());
    (0..nlines).into_par_iter().for_each_init(
        || (vec![T::default(); n], vec![T::default(); n]),
        |(inp, out), l| {
            let (ia, ib) = (l % shape[a], l / shape[a]);
            let base = ia * strides[a] + ib * strides[b];
            // SAFETY: the indices base + t * stride for t < n belong to this line only.
            unsafe {
                for t in 0..n {
                    inp[t] = *ptr.get().add(base + t * stride);
                }
                f(inp, out);
                for t in 0..n {
                    *ptr.get().add(base + t * stride) = out[t];
                }
            }
        },
    );
}
