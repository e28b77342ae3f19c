//! Stage-1 prior channels for training a cascade's fine stage.
//!
//! At prediction the fine network reads, beside CT and PET, the coarse network's
//! probability of each gland class (summed over left and right) in its box. nnU-Net trains
//! its cascade's second stage on the first stage's cross-validation predictions, which
//! costs five extra trainings and a prediction of every training case; a CPU budget cannot
//! pay that. So the priors are made from the training labels, degraded the way a 3 mm
//! stage errs, and drawn afresh for every patch: blurred (a 3 mm grid linearly resampled
//! to 1 mm), shifted (stage 1's boundary and PET/CT misregistration), grown or shrunk
//! (stage 1's under- and over-segmentation), scaled down (a small gland stage 1 was
//! unsure of), or missing altogether (a gland stage 1 did not find, whose box the gland
//! atlas placed). A network trained on such priors learns to use them as a hint, not to
//! copy them: a perfect prior is never shown.

use rand::Rng;

/// How hard the priors are degraded (the defaults were chosen from what the demo's stage
/// 1 does at 3 mm: outlines about one coarse voxel off, lacrimal glands missed in about
/// one case in six).
#[derive(Clone, Debug, PartialEq)]
pub struct PriorDegradation {
    /// Chance that a class's prior is all zero (stage 1 missed the gland).
    pub p_missing: f64,
    /// Blur (Gaussian sigma, mm), drawn uniformly from this range.
    pub blur_mm: (f64, f64),
    /// Largest shift along each axis, mm.
    pub max_shift_mm: f64,
    /// Threshold on the blurred mask, drawn from this range: below 0.5 grows the prior,
    /// above shrinks it.
    pub threshold: (f64, f64),
    /// Peak probability, drawn from this range.
    pub peak: (f64, f64),
}

impl Default for PriorDegradation {
    fn default() -> Self {
        PriorDegradation {
            p_missing: 0.15,
            blur_mm: (0.75, 2.0),
            max_shift_mm: 3.0,
            threshold: (0.3, 0.7),
            peak: (0.5, 1.0),
        }
    }
}

/// The prior channels of one patch, `[values.len(), k, j, i]` flattened: for each label
/// value in `values`, a degraded probability of that class made from `labels` (the
/// patch's labels, `[k, j, i]` of shape `p`), on voxels of `spacing` mm.
pub fn prior_channels<R: Rng>(
    labels: &[u8],
    p: [usize; 3],
    spacing: [f64; 3],
    values: &[u8],
    d: &PriorDegradation,
    rng: &mut R,
) -> Vec<f32> {
    let vox = p[0] * p[1] * p[2];
    let mut out = vec![0f32; values.len() * vox];
    for (c, &v) in values.iter().enumerate() {
        // Draw every random number first, so a class's draws do not depend on whether it
        // is present in the patch (the sequence of patches stays reproducible).
        let missing = rng.random_bool(d.p_missing);
        let sigma_mm = rng.random_range(d.blur_mm.0..=d.blur_mm.1);
        let shift: [isize; 3] = [0, 1, 2].map(|a| {
            let s = rng.random_range(-d.max_shift_mm..=d.max_shift_mm) / spacing[a];
            s.round() as isize
        });
        let threshold = rng.random_range(d.threshold.0..=d.threshold.1) as f32;
        let peak = rng.random_range(d.peak.0..=d.peak.1) as f32;
        if missing {
            continue;
        }
        let Some((lo, hi)) = bounding_box(labels, p, v) else {
            continue;
        };
        // Work on the gland's box grown by the shift and the blur's reach only.
        let sigma = [0, 1, 2].map(|a| (sigma_mm / spacing[a]).max(0.3));
        let reach = [0, 1, 2].map(|a| (3.0 * sigma[a]).ceil() as isize + shift[a].abs() + 1);
        let blo = [0, 1, 2].map(|a| (lo[a] as isize - reach[a]).max(0) as usize);
        let bhi = [0, 1, 2].map(|a| ((hi[a] as isize + reach[a]) as usize).min(p[a]));
        let q = [0, 1, 2].map(|a| bhi[a] - blo[a]);
        let mut block = vec![0f32; q[0] * q[1] * q[2]];
        for k in 0..q[2] {
            for j in 0..q[1] {
                for i in 0..q[0] {
                    // The prior at (i, j, k) is the label at (i, j, k) - shift.
                    let src = [
                        (blo[0] + i) as isize - shift[0],
                        (blo[1] + j) as isize - shift[1],
                        (blo[2] + k) as isize - shift[2],
                    ];
                    if (0..3).all(|a| src[a] >= 0 && (src[a] as usize) < p[a]) {
                        let o = (src[2] as usize * p[1] + src[1] as usize) * p[0] + src[0] as usize;
                        if labels[o] == v {
                            block[(k * q[1] + j) * q[0] + i] = 1.0;
                        }
                    }
                }
            }
        }
        crate::augment::blur_axes(&mut block, q, sigma);
        // A soft threshold: 0 below threshold - 1/8, 1 above threshold + 1/8.
        let dst = &mut out[c * vox..(c + 1) * vox];
        for k in 0..q[2] {
            for j in 0..q[1] {
                for i in 0..q[0] {
                    let b = block[(k * q[1] + j) * q[0] + i];
                    let x = (0.5 + (b - threshold) * 4.0).clamp(0.0, 1.0) * peak;
                    dst[((blo[2] + k) * p[1] + blo[1] + j) * p[0] + blo[0] + i] = x;
                }
            }
        }
    }
    out
}

/// The `[lo, hi)` voxel box of label `v` in `labels`, if present.
fn bounding_box(labels: &[u8], p: [usize; 3], v: u8) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for (o, &l) in labels.iter().enumerate() {
        if l == v {
            let x = [o % p[0], (o / p[0]) % p[1], o / (p[0] * p[1])];
            for a in 0..3 {
                lo[a] = lo[a].min(x[a]);
                hi[a] = hi[a].max(x[a] + 1);
            }
            any = true;
        }
    }
    any.then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sphere(p: [usize; 3], c: [f64; 3], r: f64, v: u8, labels: &mut [u8]) {
        for k in 0..p[2] {
            for j in 0..p[1] {
                for i in 0..p[0] {
                    let d2 = (i as f64 - c[0]).powi(2)
                        + (j as f64 - c[1]).powi(2)
                        + (k as f64 - c[2]).powi(2);
                    if d2 <= r * r {
                        labels[(k * p[1] + j) * p[0] + i] = v;
                    }
                }
            }
        }
    }

    #[test]
    fn priors_follow_their_class_and_are_never_exact() {
        let p = [32, 32, 24];
        let mut labels = vec![0u8; p[0] * p[1] * p[2]];
        sphere(p, [9.0, 9.0, 12.0], 6.0, 1, &mut labels);
        sphere(p, [22.0, 22.0, 12.0], 5.0, 3, &mut labels);
        let vox = labels.len();
        let d = PriorDegradation {
            p_missing: 0.0,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20 {
            let pr = prior_channels(&labels, p, [1.0; 3], &[1, 2, 3], &d, &mut rng);
            assert_eq!(pr.len(), 3 * vox);
            // Class 2 is absent from the patch: its channel is empty.
            assert!(pr[vox..2 * vox].iter().all(|&x| x == 0.0));
            for (c, v) in [(0usize, 1u8), (2, 3)] {
                let ch = &pr[c * vox..(c + 1) * vox];
                assert!(ch.iter().all(|&x| (0.0..=1.0).contains(&x)));
                // Mostly inside its own gland: the prior's mass-weighted share of the
                // gland's voxels is high, and it is not the label itself.
                let inside: f32 = ch
                    .iter()
                    .zip(&labels)
                    .filter(|(_, &l)| l == v)
                    .map(|(x, _)| *x)
                    .sum();
                let total: f32 = ch.iter().sum();
                assert!(total > 0.0);
                assert!(inside / total > 0.3, "class {v}: {inside} of {total}");
                let exact = ch
                    .iter()
                    .zip(&labels)
                    .all(|(x, &l)| (*x == 1.0) == (l == v));
                assert!(!exact, "class {v}: the prior equals the label");
            }
            // Far from both glands the priors are zero.
            assert_eq!(pr[(2 * p[1] + 30) * p[0] + 30], 0.0);
        }
    }

    #[test]
    fn a_missing_prior_is_zero_and_the_draws_stay_aligned() {
        let p = [16, 16, 16];
        let mut labels = vec![0u8; 16 * 16 * 16];
        sphere(p, [8.0, 8.0, 8.0], 4.0, 1, &mut labels);
        let d = PriorDegradation {
            p_missing: 1.0,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let pr = prior_channels(&labels, p, [1.0; 3], &[1], &d, &mut rng);
        assert!(pr.iter().all(|&x| x == 0.0));
        // Same seed, present or absent class: the RNG advances the same.
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let _ = prior_channels(&labels, p, [1.0; 3], &[1], &Default::default(), &mut a);
        let _ = prior_channels(
            &vec![0u8; 4096],
            p,
            [1.0; 3],
            &[1],
            &Default::default(),
            &mut b,
        );
        assert_eq!(a.random::<u64>(), b.random::<u64>());
    }
}
