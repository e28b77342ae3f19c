//! Connected components: postprocessing keeps each gland's largest component, statistics
//! count lesions. Breadth-first with an explicit queue, so a whole-body mask cannot
//! overflow the stack.

use glandseg_core::Volume;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    /// Faces only.
    Six,
    /// Faces, edges and corners.
    TwentySix,
}

impl Connectivity {
    fn offsets(self) -> Vec<[isize; 3]> {
        let mut v = Vec::new();
        for dz in -1..=1isize {
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let n = dx.abs() + dy.abs() + dz.abs();
                    let keep = match self {
                        Connectivity::Six => n == 1,
                        Connectivity::TwentySix => n >= 1,
                    };
                    if keep {
                        v.push([dx, dy, dz]);
                    }
                }
            }
        }
        v
    }
}

pub struct Components {
    /// Component id per voxel, 0 = background, ids from 1 in scan order.
    pub labels: Volume<u32>,
    /// Voxel count per id; `sizes[0]` is unused (0).
    pub sizes: Vec<usize>,
}

impl Components {
    pub fn count(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Id of the largest component, if any.
    pub fn largest(&self) -> Option<u32> {
        (1..self.sizes.len())
            .max_by_key(|&i| (self.sizes[i], std::cmp::Reverse(i)))
            .map(|i| i as u32)
    }
}

pub fn label_components(mask: &Volume<bool>, conn: Connectivity) -> Components {
    let g = mask.geometry().clone();
    let [nx, ny, nz] = g.shape;
    let m = mask.as_slice();
    let mut lab = vec![0u32; m.len()];
    let mut sizes = vec![0usize];
    let offs = conn.offsets();
    let mut queue = VecDeque::new();
    for start in 0..m.len() {
        if !m[start] || lab[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0;
        lab[start] = id;
        queue.push_back(start);
        while let Some(p) = queue.pop_front() {
            size += 1;
            let (i, j, k) = (
                (p % nx) as isize,
                ((p / nx) % ny) as isize,
                (p / (nx * ny)) as isize,
            );
            for o in &offs {
                let (a, b, c) = (i + o[0], j + o[1], k + o[2]);
                if a < 0
                    || b < 0
                    || c < 0
                    || a >= nx as isize
                    || b >= ny as isize
                    || c >= nz as isize
                {
                    continue;
                }
                let q = a as usize + nx * (b as usize + ny * c as usize);
                if m[q] && lab[q] == 0 {
                    lab[q] = id;
                    queue.push_back(q);
                }
            }
        }
        sizes.push(size);
    }
    Components {
        labels: Volume::from_vec(g, lab).expect("same grid"),
        sizes,
    }
}

/// The largest component (26-connected) of `mask`; empty in, empty out.
pub fn keep_largest(mask: &Volume<bool>) -> Volume<bool> {
    let c = label_components(mask, Connectivity::TwentySix);
    match c.largest() {
        Some(id) => c.labels.map(|&l| l == id),
        None => mask.clone(),
    }
}

/// Drops components (26-connected) smaller than `min_voxels`.
pub fn remove_smaller_than(mask: &Volume<bool>, min_voxels: usize) -> Volume<bool> {
    let c = label_components(mask, Connectivity::TwentySix);
    c.labels
        .map(|&l| l != 0 && c.sizes[l as usize] >= min_voxels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;

    #[test]
    fn corner_touching_voxels_depend_on_connectivity() {
        let g = Geometry::new([6, 6, 6], [1.0; 3], [0.0; 3]);
        let mut m = Volume::filled(g, false);
        m.set(1, 1, 1, true);
        m.set(2, 2, 2, true); // corner neighbour of (1,1,1)
        for i in 0..3 {
            m.set(i + 3, 5, 5, true); // a 3-voxel bar
        }
        let six = label_components(&m, Connectivity::Six);
        assert_eq!(six.count(), 3);
        let mut s = six.sizes[1..].to_vec();
        s.sort();
        assert_eq!(s, vec![1, 1, 3]);
        let tw = label_components(&m, Connectivity::TwentySix);
        assert_eq!(tw.count(), 2);
        let largest = keep_largest(&m);
        assert_eq!(largest.as_slice().iter().filter(|&&x| x).count(), 3);
        assert!(*largest.get(4, 5, 5));
        let pruned = remove_smaller_than(&m, 2);
        assert_eq!(pruned.as_slice().iter().filter(|&&x| x).count(), 5);
    }
}
