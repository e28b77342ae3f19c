//! Fused InstanceNorm (affine) + LeakyReLU, forward and backward, on NCDHW `f32` slices.
//!
//! One kernel instead of three tensor ops (normalise, scale/shift, activate) because each of
//! those reads and writes the whole activation, and on the CPU these layers are limited by
//! memory traffic, not arithmetic. Fused, each row is read from memory once for its statistics
//! and once more, while still in cache, for the output, and no intermediate the size of the
//! activation is allocated.
//!
//! Rows are cut into fixed blocks for both the partial sums and the parallelism: the first U-Net
//! levels have a few dozen rows of 64^3 values or more, too few to keep every core busy, the deep
//! ones hundreds of rows of a few dozen values, too short to be worth splitting.
//! Partial sums are combined in `f64` in block order, and the blocks do not depend on the thread
//! count, so every output bit is the same on every machine and run.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Per-(batch, channel) statistics saved by the forward pass for the backward pass.
#[derive(Debug, Clone)]
pub struct NormStats {
    /// Row means, index `n_i * c + c_i`.
    pub mean: Vec<f32>,
    /// `1 / sqrt(var + eps)` per row, with the biased variance, same indexing as `mean`.
    pub rstd: Vec<f32>,
}

/// Values per parallel task and per partial sum. A constant (rather than derived from the
/// thread count) so that the summation order, and therefore every output bit, is the same on
/// every machine; 16k values (64 KiB) keeps a block in L2 and the task overhead negligible.
const BLOCK: usize = 16 * 1024;

/// Independent accumulators per sum: enough to hide the add latency and fill the vector
/// registers, without reassociating (which LLVM won't do for floats, so a single accumulator
/// would not vectorise at all).
const LANES: usize = 16;

/// Values summed per lane in `f32` before the lane's partial sum moves into `f64`: 16 terms
/// per lane keep the `f32` rounding near 1e-6 relative whatever the row length, while the hot
/// loop stays pure `f32` (converting every value to `f64` halves the vector width).
const RUN: usize = 16 * LANES;

// The per-block loops below are `#[inline(never)]` functions taking the row's constants by
// value: written inline in rayon closures, the constants were captured by reference and LLVM
// reloaded them every iteration instead of vectorising the loop. One call per block costs
// nothing, and the loops can be checked in the disassembly under their own names.

/// The sign test of the activation, written as a select so that it becomes a blend, not a branch.
#[inline(always)]
fn leaky(z: f32, slope: f32) -> f32 {
    if z >= 0.0 {
        z
    } else {
        slope * z
    }
}

/// The activation's derivative times `g`, selecting the factor (not the product) so that LLVM
/// emits a blend of two constants instead of a branch per lane.
#[inline(always)]
fn leaky_grad(z: f32, g: f32, slope: f32) -> f32 {
    g * if z >= 0.0 { 1.0 } else { slope }
}

fn check_shapes(what: &str, len: usize, n: usize, c: usize, spatial: usize) {
    assert_eq!(
        len,
        n * c * spatial,
        "{what}: length {len} does not match n * c * spatial = {n} * {c} * {spatial}"
    );
}

fn check_affine(gamma: &[f32], beta: &[f32], c: usize) {
    assert_eq!(
        gamma.len(),
        c,
        "gamma: length {} != channels {c}",
        gamma.len()
    );
    assert_eq!(beta.len(), c, "beta: length {} != channels {c}", beta.len());
}

/// `f` of each block of a row, in block order: in parallel for a long row, directly for a row
/// of one block (the deep levels' hundreds of short rows, where going through a nested parallel
/// iterator took twice as long as the work itself).
fn map_blocks<T: Send>(len: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    if len <= BLOCK {
        vec![f(0..len)]
    } else {
        (0..len.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| f(b * BLOCK..(b * BLOCK + BLOCK).min(len)))
            .collect()
    }
}

/// `f(offset, block)` for each block of a row that is written, serial or parallel as in
/// [`map_blocks`].
fn for_each_block_mut<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() <= BLOCK {
        f(0, out)
    } else {
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(b, o)| f(b * BLOCK, o));
    }
}

/// A lane-wise sum in `f64`, fed with runs of up to [`RUN`] values that are summed lane-wise in
/// `f32` first.
///
/// Reductions compute their terms into a run-sized buffer with a plain element-wise loop and
/// then add the buffer here, one sum at a time. Accumulating two sums in the same loop (say
/// `d` and `d * d`) looks simpler, but LLVM then packed each pair of sums into one register
/// instead of packing the lanes, and the loop ran two to four times slower, depending on
/// the lane count.
struct LaneSum([f64; LANES]);

impl LaneSum {
    fn new() -> Self {
        LaneSum([0.0; LANES])
    }

    #[inline(always)]
    fn add_run(&mut self, run: &[f32]) {
        debug_assert!(run.len() <= RUN);
        let mut acc = [0.0f32; LANES];
        let chunks = run.chunks_exact(LANES);
        let tail = chunks.remainder();
        for ch in chunks {
            let ch: &[f32; LANES] = ch.try_into().unwrap();
            for i in 0..LANES {
                acc[i] += ch[i];
            }
        }
        for (a, &v) in acc.iter_mut().zip(tail) {
            *a += v;
        }
        for i in 0..LANES {
            self.0[i] += acc[i] as f64;
        }
    }

    fn total(&self) -> f64 {
        self.0.iter().sum()
    }
}

/// Count, mean and sum of squared deviations of one block. A first pass finds the block's
/// approximate mean `c`; a second pass over the block, still in cache, sums `x - c` and its
/// square, so neither the variance (`sum d^2 - (sum d)^2 / n` with `sum d` near zero) nor the
/// mean (`c + sum d / n`, whose `f32` rounding is relative to the spread, not to the offset)
/// loses digits when the mean is large compared with the spread. Blocks are combined with
/// Chan's formula in `f64`, so the whole row still takes one pass over memory.
#[inline(never)]
fn block_moments(x: &[f32]) -> (f64, f64, f64) {
    let len = x.len() as f64;
    let mut sum = LaneSum::new();
    for run in x.chunks(RUN) {
        sum.add_run(run);
    }
    let center = (sum.total() / len) as f32;
    let (mut s, mut sq) = (LaneSum::new(), LaneSum::new());
    let mut buf = [0.0f32; RUN];
    for run in x.chunks(RUN) {
        let buf = &mut buf[..run.len()];
        for (d, &v) in buf.iter_mut().zip(run) {
            *d = v - center;
        }
        s.add_run(buf);
        for d in buf.iter_mut() {
            *d *= *d;
        }
        sq.add_run(buf);
    }
    let (s, sq) = (s.total(), sq.total());
    (len, center as f64 + s / len, (sq - s * s / len).max(0.0))
}

/// Mean and `1 / sqrt(var + eps)` of one row.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    // Collected in order and combined sequentially: rayon's `reduce` may pair the blocks
    // differently from run to run.
    let parts = map_blocks(row.len(), |r| block_moments(&row[r]));
    let (n, mean, m2) = parts
        .iter()
        .fold((0.0, 0.0, 0.0), |(n, mean, m2), &(nb, mb, m2b)| {
            let total = n + nb;
            let delta = mb - mean;
            (
                total,
                mean + delta * nb / total,
                m2 + m2b + delta * delta * n * nb / total,
            )
        });
    let var = m2 / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// Applies normalisation, affine and activation to one block of one row.
#[inline(never)]
fn forward_block(
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    mean: f32,
    scale: f32,
    beta: f32,
    slope: f32,
) {
    for (y, &x) in y.iter_mut().zip(x) {
        y.write(leaky((x - mean) * scale + beta, slope));
    }
}

#[inline(never)]
fn forward_block_inplace(x: &mut [f32], mean: f32, scale: f32, beta: f32, slope: f32) {
    for x in x.iter_mut() {
        *x = leaky((*x - mean) * scale + beta, slope);
    }
}

fn empty_stats(rows: usize) -> NormStats {
    NormStats {
        mean: vec![0.0; rows],
        rstd: vec![0.0; rows],
    }
}

/// y = leaky(gamma[c] * (x - mean) * rstd + beta[c]), biased variance over each row (like PyTorch's InstanceNorm3d / burn's InstanceNorm).
///
/// `z` is formed as `(x - mean) * (gamma * rstd) + beta` rather than `x * a + b` so that a large
/// mean does not cost precision; the backward recomputes it the same way, so both agree on
/// which side of the kink every value lies.
pub fn instance_norm_leaky_forward(
    x: &[f32],
    n: usize,
    c: usize,
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    slope: f32,
) -> (Vec<f32>, NormStats) {
    check_shapes("x", x.len(), n, c, spatial);
    check_affine(gamma, beta, c);
    if x.is_empty() {
        return (Vec::new(), empty_stats(n * c));
    }
    // The output is written once, without zeroing it first (that was a whole extra pass
    // over memory).
    let mut y: Vec<f32> = Vec::with_capacity(x.len());
    // Statistics and output row by row, so that the second read of a row hits the cache.
    let (mean, rstd) = y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(spatial)
        .zip(x.par_chunks(spatial))
        .enumerate()
        .map(|(r, (yrow, xrow))| {
            let (mean, rstd) = row_stats(xrow, eps);
            let (scale, b) = (gamma[r % c] * rstd, beta[r % c]);
            for_each_block_mut(yrow, |at, yb| {
                forward_block(&xrow[at..at + yb.len()], yb, mean, scale, b, slope)
            });
            (mean, rstd)
        })
        .unzip();
    // SAFETY: every row's blocks were written by `forward_block`, which writes each value
    // of its block.
    unsafe { y.set_len(x.len()) };
    (y, NormStats { mean, rstd })
}

/// The statistics [`instance_norm_leaky_forward`] returns, without computing its output:
/// the backward pass recomputes them (one read of `x`) rather than keeping them per layer.
/// Bit-identical to the forward's.
pub fn instance_norm_stats(x: &[f32], n: usize, c: usize, spatial: usize, eps: f32) -> NormStats {
    check_shapes("x", x.len(), n, c, spatial);
    if x.is_empty() {
        return empty_stats(n * c);
    }
    let (mean, rstd) = x.par_chunks(spatial).map(|row| row_stats(row, eps)).unzip();
    NormStats { mean, rstd }
}

/// The inference path of [`instance_norm_leaky_forward`]: the activation overwrites its input,
/// saving the allocation (whose first touch of fresh pages costs as much as the kernel).
/// Bit-identical to the allocating version.
pub fn instance_norm_leaky_forward_inplace(
    x: &mut [f32],
    n: usize,
    c: usize,
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    slope: f32,
) -> NormStats {
    check_shapes("x", x.len(), n, c, spatial);
    check_affine(gamma, beta, c);
    if x.is_empty() {
        return empty_stats(n * c);
    }
    let (mean, rstd) = x
        .par_chunks_mut(spatial)
        .enumerate()
        .map(|(r, row)| {
            let (mean, rstd) = row_stats(row, eps);
            let (scale, b) = (gamma[r % c] * rstd, beta[r % c]);
            for_each_block_mut(row, |_, xb| {
                forward_block_inplace(xb, mean, scale, b, slope)
            });
            (mean, rstd)
        })
        .unzip();
    NormStats { mean, rstd }
}

/// Per row: sum of `gz` and of `gz * xhat` over one block (the two reductions the input
/// gradient needs, which are also the row's contributions to `dbeta` and `dgamma`).
#[inline(never)]
fn backward_block_sums(
    x: &[f32],
    gy: &[f32],
    mean: f32,
    rstd: f32,
    scale: f32,
    beta: f32,
    slope: f32,
) -> (f64, f64) {
    let (mut s, mut sx) = (LaneSum::new(), LaneSum::new());
    let (mut gz_buf, mut gzx_buf) = ([0.0f32; RUN], [0.0f32; RUN]);
    for (xr, gr) in x.chunks(RUN).zip(gy.chunks(RUN)) {
        let gz_run = &mut gz_buf[..xr.len()];
        let gzx_run = &mut gzx_buf[..xr.len()];
        for (((gz, gzx), &x), &gy) in gz_run.iter_mut().zip(gzx_run.iter_mut()).zip(xr).zip(gr) {
            let d = x - mean;
            *gz = leaky_grad(d * scale + beta, gy, slope);
            *gzx = *gz * (d * rstd);
        }
        s.add_run(gz_run);
        sx.add_run(gzx_run);
    }
    (s.total(), sx.total())
}

/// The input gradient over one block: `rstd * gamma * (gz - mean(gz) - xhat * mean(gz * xhat))`,
/// the textbook formula with `gxhat = gamma * gz` and `gamma` taken out of the means.
#[inline(never)]
fn backward_block_gx(
    gx: &mut [f32],
    x: &[f32],
    gy: &[f32],
    mean: f32,
    rstd: f32,
    scale: f32,
    beta: f32,
    slope: f32,
    m_gz: f32,
    m_gzx: f32,
) {
    for ((gx, &x), &gy) in gx.iter_mut().zip(x).zip(gy) {
        let d = x - mean;
        let xhat = d * rstd;
        let gz = leaky_grad(d * scale + beta, gy, slope);
        *gx = scale * (gz - m_gz - xhat * m_gzx);
    }
}

/// Gradients with respect to x, gamma and beta, given the forward input x and the output gradient gy.
///
/// Takes `x` and the saved statistics rather than the forward's output, so the caller need only
/// keep what a plain InstanceNorm would, and recomputes `z` exactly as the forward did.
/// Returns `(gx, dgamma, dbeta)`; `dgamma` and `dbeta` have length `c`, summed over the batch.
pub fn instance_norm_leaky_backward(
    x: &[f32],
    gy: &[f32],
    n: usize,
    c: usize,
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    stats: &NormStats,
    slope: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    check_shapes("x", x.len(), n, c, spatial);
    check_shapes("gy", gy.len(), n, c, spatial);
    check_affine(gamma, beta, c);
    let rows = n * c;
    assert_eq!(
        stats.mean.len(),
        rows,
        "stats.mean: length != n * c = {rows}"
    );
    assert_eq!(
        stats.rstd.len(),
        rows,
        "stats.rstd: length != n * c = {rows}"
    );
    let mut gx = vec![0.0f32; x.len()];
    if x.is_empty() {
        return (gx, vec![0.0; c], vec![0.0; c]);
    }

    // Per row: the two sums (one pass), then gx (a second pass, over a row still in cache).
    let sums: Vec<(f64, f64)> = gx
        .par_chunks_mut(spatial)
        .zip(x.par_chunks(spatial).zip(gy.par_chunks(spatial)))
        .enumerate()
        .map(|(r, (gxrow, (xrow, grow)))| {
            let (mean, rstd) = (stats.mean[r], stats.rstd[r]);
            let (scale, b) = (gamma[r % c] * rstd, beta[r % c]);
            let parts = map_blocks(spatial, |r| {
                backward_block_sums(&xrow[r.clone()], &grow[r], mean, rstd, scale, b, slope)
            });
            let (s, sx) = parts
                .iter()
                .fold((0.0, 0.0), |(s, sx), &(bs, bsx)| (s + bs, sx + bsx));
            let m_gz = (s / spatial as f64) as f32;
            let m_gzx = (sx / spatial as f64) as f32;
            for_each_block_mut(gxrow, |at, gxb| {
                let r = at..at + gxb.len();
                let (xb, gb) = (&xrow[r.clone()], &grow[r]);
                backward_block_gx(gxb, xb, gb, mean, rstd, scale, b, slope, m_gz, m_gzx)
            });
            (s, sx)
        })
        .collect();

    let mut dgamma = vec![0.0f64; c];
    let mut dbeta = vec![0.0f64; c];
    for (r, &(s, sx)) in sums.iter().enumerate() {
        dbeta[r % c] += s;
        dgamma[r % c] += sx;
    }
    (
        gx,
        dgamma.into_iter().map(|v| v as f32).collect(),
        dbeta.into_iter().map(|v| v as f32).collect(),
    )
}
