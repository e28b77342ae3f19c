//! Mirroring raw `[k][j][i]` blocks (patches, network tiles) along one voxel axis, in place.
//!
//! Training mirrors patches and prediction mirrors its test-time inputs and outputs with
//! this one function, so the two cannot disagree on which axis is which. It moves values
//! only: the caller swaps the left and right labels or classes that a left-right mirror
//! turns into each other (laterality is part of the label).

/// Reverses every `p`-sized block `[k][j][i]` (i fastest) of `data` along voxel `axis`
/// (0 = i, 1 = j, 2 = k). `data.len()` must be a multiple of the block size.
pub fn flip_blocks<T: Copy>(data: &mut [T], p: [usize; 3], axis: usize) {
    let (row, slice) = (p[0], p[0] * p[1]);
    let block = slice * p[2];
    assert!(axis < 3, "flip axis {axis} (0, 1 or 2)");
    assert!(
        block > 0 && data.len().is_multiple_of(block),
        "flip: {} values are not whole {p:?} blocks",
        data.len()
    );
    for b in data.chunks_exact_mut(block) {
        match axis {
            0 => b.chunks_exact_mut(row).for_each(|r| r.reverse()),
            1 => {
                for s in b.chunks_exact_mut(slice) {
                    for j in 0..p[1] / 2 {
                        let (front, back) = s.split_at_mut((p[1] - 1 - j) * row);
                        front[j * row..][..row].swap_with_slice(&mut back[..row]);
                    }
                }
            }
            _ => {
                for k in 0..p[2] / 2 {
                    let (front, back) = b.split_at_mut((p[2] - 1 - k) * slice);
                    front[k * slice..][..slice].swap_with_slice(&mut back[..slice]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_axis_mirrors_and_undoes_itself() {
        // Two blocks of 4 x 3 x 2 (i fastest).
        let p = [4, 3, 2];
        let data: Vec<u32> = (0..48).collect();
        for axis in 0..3 {
            let mut f = data.clone();
            flip_blocks(&mut f, p, axis);
            for (n, v) in f.iter().enumerate() {
                let (b, o) = (n / 24, n % 24);
                let mut q = [o % 4, (o / 4) % 3, o / 12];
                q[axis] = p[axis] - 1 - q[axis];
                assert_eq!(
                    *v,
                    data[b * 24 + (q[2] * 3 + q[1]) * 4 + q[0]],
                    "axis {axis}"
                );
            }
            flip_blocks(&mut f, p, axis);
            assert_eq!(f, data);
        }
    }
}
