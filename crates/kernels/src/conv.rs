//! 3D convolution (and its transpose) as implicit GEMM, forward and backward.
//!
//! The input is copied once into a zero-padded, channels-last buffer. In that layout the
//! input values a kernel tap `(kd, kh, kw)` needs for a whole output plane form a strided
//! matrix `[rows x in_channels]`: output position `(h, w)` of the plane is row
//! `m = h * row_width + w` and reads the input at `m * stride_w` (plus the tap's offset),
//! provided the padded width is a multiple of the stride and `row_width = stride_h *
//! padded_w / stride_w`. Rows with `w >= out_w` are padding ("junk") rows: computed and
//! thrown away in the forward pass, kept at zero in the gradients. So a convolution is one
//! `[rows x A] @ [A x B]` product per tap, accumulated, with no im2col copy; the weight
//! gradient is one `[A x rows] @ [rows x B]` product per tap and plane. Products go to the
//! `gemm` crate; planes are spread over rayon's threads.
//!
//! Written by hand (see the crate docs); only groups = 1 and dilation = 1 are handled: the
//! callers fall back to burn's own operations otherwise.
//!
//! Weights are in burn's / PyTorch's layout `[B][A][kd][kh][kw]`, where `A` is the channel
//! count on the strided side and `B` on the other: for a convolution `A` = input channels
//! and `B` = output channels (`[out, in, k..]`); for a transposed convolution the strided
//! side is its output, so its `[in, out, k..]` weight is the same `[B][A][k..]`.

use crate::layout::{to_channels_first, to_channels_last, SyncPtr};
use gemm::Parallelism;
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

mod amx;
pub use amx::{bf16_supported, conv3d_bf16, conv3d_bf16_uses_amx};

/// Shape of a convolution from the strided side (size `in_size`, `in_channels` = A) to the
/// other side (size [`ConvGeometry::out_size`], `out_channels` = B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// (D, H, W) of the strided side, before padding.
    pub in_size: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

impl ConvGeometry {
    /// Whether the kernels can run this shape (every size positive, the kernel fits).
    pub fn is_supported(&self) -> bool {
        self.batch > 0
            && self.in_channels > 0
            && self.out_channels > 0
            && (0..3).all(|i| {
                self.in_size[i] > 0
                    && self.kernel[i] > 0
                    && self.stride[i] > 0
                    && self.in_size[i] + 2 * self.padding[i] >= self.kernel[i]
            })
    }

    pub fn out_size(&self) -> [usize; 3] {
        let mut o = [0; 3];
        for i in 0..3 {
            o[i] = (self.in_size[i] + 2 * self.padding[i] - self.kernel[i]) / self.stride[i] + 1;
        }
        o
    }

    /// (D, H, W) of the padded channels-last buffer; W rounded up to a multiple of the stride.
    fn padded(&self) -> [usize; 3] {
        let w = self.in_size[2] + 2 * self.padding[2];
        [
            self.in_size[0] + 2 * self.padding[0],
            self.in_size[1] + 2 * self.padding[1],
            w.div_ceil(self.stride[2]) * self.stride[2],
        ]
    }

    fn row_width(&self) -> usize {
        self.stride[1] * self.padded()[2] / self.stride[2]
    }

    /// Rows per output plane, up to and including the last valid one.
    fn rows(&self) -> usize {
        let o = self.out_size();
        (o[1] - 1) * self.row_width() + o[2]
    }

    fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    fn in_len(&self) -> usize {
        self.batch * self.in_channels * self.in_size.iter().product::<usize>()
    }

    fn out_len(&self) -> usize {
        self.batch * self.out_channels * self.out_size().iter().product::<usize>()
    }

    fn weight_len(&self) -> usize {
        self.in_channels * self.out_channels * self.taps()
    }

    fn padded_plane(&self) -> usize {
        let p = self.padded();
        p[1] * p[2] * self.in_channels
    }

    /// Every tap's offset from the first input plane of an output plane, in the padded
    /// buffer (plane steps included).
    fn tap_offsets(&self) -> Vec<usize> {
        (0..self.taps())
            .map(|t| {
                let (kd, off) = self.tap_offset(t);
                kd * self.padded_plane() + off
            })
            .collect()
    }

    /// Offset of tap `t` (kd, kh, kw in row-major order) inside the padded buffer, relative
    /// to the first input plane of an output plane.
    fn tap_offset(&self, t: usize) -> (usize, usize) {
        let [_, kh, kw] = self.kernel;
        let (kd, r) = (t / (kh * kw), t % (kh * kw));
        let p = self.padded();
        (kd, ((r / kw) * p[2] + r % kw) * self.in_channels)
    }
}

/// Re-lays a weight out of burn's `[B][A][taps]`: `index(o, i, t)` gives each value's
/// place in the result (one helper for the tap-major copies the kernels read).
fn relayout(
    weight: &[f32],
    a: usize,
    b: usize,
    taps: usize,
    index: impl Fn(usize, usize, usize) -> usize,
) -> Vec<f32> {
    let mut out = vec![0f32; weight.len()];
    for o in 0..b {
        for i in 0..a {
            for t in 0..taps {
                out[index(o, i, t)] = weight[(o * a + i) * taps + t];
            }
        }
    }
    out
}

/// Gradients of a convolution (or transposed convolution).
#[derive(Debug, Clone)]
pub struct ConvGrads {
    /// Same layout as the layer's input; empty when not asked for.
    pub input: Vec<f32>,
    /// Burn's weight layout.
    pub weight: Vec<f32>,
    /// One value per channel of the layer's output.
    pub bias: Vec<f32>,
}

fn check(g: &ConvGeometry, what: &str, got: usize, want: usize) {
    assert!(g.is_supported(), "unsupported convolution geometry {g:?}");
    assert_eq!(got, want, "{what}: length {got} does not match {g:?}");
}

/// Convolution: `x` is `[N][A][D][H][W]`, `weight` `[B][A][kd][kh][kw]`; returns
/// `[N][B][oD][oH][oW]`.
pub fn conv3d(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    check(g, "conv3d input", x.len(), g.in_len());
    check(g, "conv3d weight", weight.len(), g.weight_len());
    let padded = pad_channels_last(x, g);
    gather(&padded, weight, bias, g)
}

/// Gradients of [`conv3d`] given the output gradient `gy`.
pub fn conv3d_backward(
    x: &[f32],
    weight: &[f32],
    gy: &[f32],
    g: &ConvGeometry,
    want_input: bool,
) -> ConvGrads {
    check(g, "conv3d_backward input", x.len(), g.in_len());
    check(g, "conv3d_backward weight", weight.len(), g.weight_len());
    check(g, "conv3d_backward output gradient", gy.len(), g.out_len());
    let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
    // Stride 1: the input gradient is a convolution of gy with the flipped, transposed
    // kernel (padding k - 1 - p), which runs as the faster `gather`.
    let stride1 = g.stride == [1, 1, 1] && (0..3).all(|i| g.padding[i] < g.kernel[i]);
    let gt = ConvGeometry {
        batch: g.batch,
        in_channels: b,
        out_channels: a,
        in_size: g.out_size(),
        kernel: g.kernel,
        stride: [1, 1, 1],
        padding: [0, 1, 2].map(|i| g.kernel[i].saturating_sub(1 + g.padding[i])),
    };
    // With k = 2p + 1 along W ("same" convolutions) the padded gy has the rows layout the
    // weight gradient reads (row width W + 2p, junk rows on zero padding), so one
    // channels-last copy of gy serves both gradients.
    let shared = stride1 && g.kernel[2] == 2 * g.padding[2] + 1;
    let gy_padded = (stride1 && (want_input || shared)).then(|| pad_channels_last(gy, &gt));
    let [od, _, _] = g.out_size();
    let (rows_buf, rows_at): (Cow<'_, [f32]>, RowsAt) = match (&gy_padded, shared) {
        (Some(p), true) => {
            let [_, hq, wq] = gt.padded();
            let q = gt.padding;
            let plane = hq * wq * b;
            let first = (q[1] * wq + q[2]) * b;
            (
                Cow::Borrowed(p.as_slice()),
                Box::new(move |task| {
                    let (n, z) = (task / od, task % od);
                    (n * (od + 2 * q[0]) + z + q[0]) * plane + first
                }),
            )
        }
        _ => {
            let per = g.rows() * b;
            (
                Cow::Owned(out_rows(gy, g)),
                Box::new(move |task| task * per),
            )
        }
    };
    let input = if !want_input {
        Vec::new()
    } else if let Some(p) = &gy_padded {
        let flipped = relayout(weight, a, b, taps, |o, i, t| {
            (i * b + o) * taps + (taps - 1 - t)
        });
        gather(p, &flipped, None, &gt)
    } else {
        match direct::Direct::for_channels(g.in_channels) {
            Some(kernel) => scatter_direct(&rows_buf, weight, g, kernel),
            None => unpad_channels_first(&scatter(&rows_buf, weight, g), g),
        }
    };
    let padded = pad_channels_last(x, g);
    ConvGrads {
        input,
        weight: wgrad(&padded, &rows_buf, &rows_at, g),
        bias: channel_sums(gy, g.batch, g.out_channels),
    }
}

/// Where each output plane's gradient rows start (see [`wgrad`]).
type RowsAt = Box<dyn Fn(usize) -> usize + Sync>;

/// Transposed convolution: `x` is the non-strided side `[N][B][oD][oH][oW]` (with `g.out_size()`),
/// `weight` `[B][A][k..]` (burn's `[in, out, k..]`); returns the strided side `[N][A][D][H][W]`.
/// Only shapes where every input voxel of the strided side is reached are meaningful (the
/// caller uses kernel == stride, no padding).
pub fn conv_transpose3d(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    check(g, "conv_transpose3d input", x.len(), g.out_len());
    check(g, "conv_transpose3d weight", weight.len(), g.weight_len());
    let exact = (0..3).all(|i| g.in_size[i] == g.out_size()[i] * g.stride[i]);
    match (g.kernel == g.stride && g.padding == [0; 3] && exact)
        .then(|| direct::Direct::for_channels(g.in_channels))
        .flatten()
    {
        Some(kernel) => upsample_direct(x, weight, bias, g, kernel),
        None => {
            let mut y = unpad_channels_first(&scatter(&out_rows(x, g), weight, g), g);
            if let Some(b) = bias {
                add_channel_bias(&mut y, b, g.batch, g.in_channels);
            }
            y
        }
    }
}

/// Transposed convolution with kernel == stride (the U-Net's upsampling): the taps do not
/// overlap, so each tap is a 1x1x1 convolution of `x` (B -> A channels) run by the direct
/// kernel, whose output rows are then spread onto every stride-th voxel of `y`.
fn upsample_direct(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    kernel: direct::Direct,
) -> Vec<f32> {
    let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
    let [xd, xh, xw] = g.out_size();
    let [yd, yh, yw] = g.in_size;
    let [sd, sh, sw] = g.stride;
    // x channels-last without padding: one plane of xh*xw rows of B values per (n, xd).
    let xg = ConvGeometry {
        batch: g.batch,
        in_channels: b,
        out_channels: a,
        in_size: [xd, xh, xw],
        kernel: [1; 3],
        stride: [1; 3],
        padding: [0; 3],
    };
    let xl = pad_channels_last(x, &xg);
    let rows = xh * xw;
    let ld = rows + DIRECT_ROWS_MAX;
    // [tap][B][A]: the 1x1 weights of each tap.
    let wt = relayout(weight, a, b, taps, |o, i, t| (t * b + o) * a + i);
    let [_, kh, kw] = g.kernel;
    // kernel == stride and exact sizes: every value of y is written exactly once below.
    let mut y: Vec<f32> = Vec::with_capacity(g.in_len());
    let dst = SyncPtr(y.as_mut_ptr());
    (0..g.batch * xd).into_par_iter().for_each(|task| {
        let (n, zx) = (task / xd, task % xd);
        SCRATCH.with_borrow_mut(|scratch| {
            // Per tap A columns of ld rows, each fully written by the kernel before it is
            // read: the thread's scratch is reused without zeroing.
            if scratch.len() < taps * a * ld {
                scratch.resize(taps * a * ld, 0.0);
            }
            let out = &mut scratch[..taps * a * ld];
            for t in 0..taps {
                // SAFETY: `xl` carries the direct kernel's slack after its last plane; `out`
                // has ld >= rows + block rows per channel; `wt` holds B x A for this tap.
                unsafe {
                    kernel.run(
                        xl.as_ptr().add(task * rows * b),
                        &[0],
                        b,
                        b,
                        wt.as_ptr().add(t * b * a),
                        a,
                        rows,
                        out.as_mut_ptr().add(t * a * ld),
                        ld,
                    );
                }
            }
            for c in 0..a {
                let add = bias.map_or(0.0, |bb| bb[c]);
                for tz in 0..sd {
                    let z = zx * sd + tz;
                    // SAFETY: task (n, zx) alone writes planes z = zx * sd + tz of batch n
                    // (every channel), inside the capacity of in_len values.
                    let plane: &mut [MaybeUninit<f32>] = unsafe {
                        std::slice::from_raw_parts_mut(
                            dst.get().add(((n * a + c) * yd + z) * yh * yw).cast(),
                            yh * yw,
                        )
                    };
                    for (yy, row) in plane.chunks_exact_mut(yw).enumerate() {
                        let (yx, ty) = (yy / sh, yy % sh);
                        for tx in 0..kw {
                            let t = (tz * kh + ty) * kw + tx;
                            let src = &out[(t * a + c) * ld + yx * xw..][..xw];
                            for (i, v) in src.iter().enumerate() {
                                row[i * sw + tx].write(v + add);
                            }
                        }
                    }
                }
            }
        });
    });
    // SAFETY: every value was written above.
    unsafe { y.set_len(g.in_len()) };
    y
}

/// Gradients of [`conv_transpose3d`] given the gradient `gy` of its (strided-side) output.
pub fn conv_transpose3d_backward(
    x: &[f32],
    weight: &[f32],
    gy: &[f32],
    g: &ConvGeometry,
    want_input: bool,
) -> ConvGrads {
    check(g, "conv_transpose3d_backward input", x.len(), g.out_len());
    check(
        g,
        "conv_transpose3d_backward weight",
        weight.len(),
        g.weight_len(),
    );
    check(
        g,
        "conv_transpose3d_backward output gradient",
        gy.len(),
        g.in_len(),
    );
    let padded = pad_channels_last(gy, g);
    let input = if want_input {
        gather(&padded, weight, None, g)
    } else {
        Vec::new()
    };
    ConvGrads {
        input,
        weight: wgrad(
            &padded,
            &out_rows(x, g),
            &|task| task * g.rows() * g.out_channels,
            g,
        ),
        bias: channel_sums(gy, g.batch, g.in_channels),
    }
}

/// `[N][A][D][H][W]` -> zero-padded `[N][pD][pH][pW][A]`.
fn pad_channels_last(x: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let [d, h, w] = g.in_size;
    let a = g.in_channels;
    let [dp, hp, wp] = g.padded();
    let len = g.batch * dp * hp * wp * a;
    let mut out: Vec<f32> = Vec::with_capacity(len + slack(g));
    let (planes, tail) = out.spare_capacity_mut()[..len + slack(g)].split_at_mut(len);
    tail.fill(MaybeUninit::new(0.0));
    fill_padded(planes, g, 0.0, |n, z, y, row| {
        let src = &x[(n * a * d + z) * h * w + y * w..];
        assert!(src.len() > (a - 1) * d * h * w + w - 1);
        // SAFETY: `src` holds A channels of W values at stride D*H*W (asserted), `row` W
        // voxels of A channels.
        unsafe { to_channels_last(src.as_ptr(), d * h * w, a, w, row.as_mut_ptr().cast(), a) };
    });
    // SAFETY: `fill_padded` wrote every value of the planes, the slack was zeroed above.
    unsafe { out.set_len(len + slack(g)) };
    out
}

/// Writes the zero-padded channels-last planes `[N][pD][pH][pW][A]` of `g` into `planes`
/// (any element type; the bf16 copy uses it too): `zero` in the padding, and
/// `row(n, z, y, dst)` must write all W x A interior values of input row (n, z, y). Only the
/// padding is zeroed: the interior is written once (zeroing it first cost as much again
/// in memory traffic). Planes are filled in parallel.
pub(super) fn fill_padded<T: Copy + Send + Sync>(
    planes: &mut [MaybeUninit<T>],
    g: &ConvGeometry,
    zero: T,
    row: impl Fn(usize, usize, usize, &mut [MaybeUninit<T>]) + Sync,
) {
    let [d, h, w] = g.in_size;
    let [pd, ph, pw] = g.padding;
    let [dp, hp, wp] = g.padded();
    let a = g.in_channels;
    let zero = MaybeUninit::new(zero);
    assert_eq!(
        planes.len(),
        g.batch * dp * hp * wp * a,
        "padded planes of {g:?}"
    );
    planes
        .par_chunks_mut(hp * wp * a)
        .enumerate()
        .for_each(|(pi, dst)| {
            let (n, zp) = (pi / dp, pi % dp);
            if zp < pd || zp >= pd + d {
                dst.fill(zero);
                return;
            }
            dst[..ph * wp * a].fill(zero);
            dst[(ph + h) * wp * a..].fill(zero);
            for y in 0..h {
                let line = &mut dst[(y + ph) * wp * a..][..wp * a];
                line[..pw * a].fill(zero);
                line[(pw + w) * a..].fill(zero);
                row(n, zp - pd, y, &mut line[pw * a..][..w * a]);
            }
        });
}

/// Zeros after the padded planes: the direct kernel's last row block may read this far.
fn slack(g: &ConvGeometry) -> usize {
    DIRECT_ROWS_MAX * g.stride[2] * g.in_channels
}

/// Rows of the largest block the direct kernel computes at once.
const DIRECT_ROWS_MAX: usize = 24;

/// Inverse of [`pad_channels_last`] (the padding is dropped).
fn unpad_channels_first(p: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let [d, h, w] = g.in_size;
    let [pd, ph, pw] = g.padding;
    let [dp, hp, wp] = g.padded();
    let a = g.in_channels;
    let mut out = vec![0f32; g.in_len()];
    let dst = SyncPtr(out.as_mut_ptr());
    (0..g.batch * d).into_par_iter().for_each(|task| {
        let (n, z) = (task / d, task % d);
        let plane = &p[(n * dp + z + pd) * hp * wp * a..][..hp * wp * a];
        for y in 0..h {
            let src = &plane[((y + ph) * wp + pw) * a..][..w * a];
            // SAFETY: task (n, z) writes only rows (n, c, z, y) of `out` (len in_len), A
            // channels of W values at stride D*H*W; `src` holds W voxels of A channels.
            unsafe {
                let dst = dst.get().add((n * a * d + z) * h * w + y * w);
                to_channels_first(src.as_ptr(), a, a, w, dst, d * h * w)
            };
        }
    });
    out
}

/// Non-strided side `[N][B][oD][oH][oW]` -> `[N][oD][rows][B]` with zero junk rows.
fn out_rows(y: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let [od, oh, ow] = g.out_size();
    let (rows, rw, b) = (g.rows(), g.row_width(), g.out_channels);
    let mut out = vec![0f32; g.batch * od * rows * b];
    out.par_chunks_mut(rows * b)
        .enumerate()
        .for_each(|(plane, dst)| {
            let (n, z) = (plane / od, plane % od);
            for r in 0..oh {
                let src = &y[(n * b * od + z) * oh * ow + r * ow..];
                let row = &mut dst[r * rw * b..][..ow * b];
                assert!(src.len() > (b - 1) * od * oh * ow + ow - 1);
                // SAFETY: `src` holds B channels of oW values at stride oD*oH*oW (checked
                // above), `row` oW rows of B channels.
                unsafe { to_channels_last(src.as_ptr(), od * oh * ow, b, ow, row.as_mut_ptr(), b) };
            }
        });
    out
}

/// Rows per gemm call: keeps the accumulated block (rows x B floats) near 256 KiB, in L2.
fn row_chunk(b: usize) -> usize {
    ((1 << 16) / b.max(1)).max(64)
}

/// Forward convolution from the padded buffer; output in `[N][B][oD][oH][oW]`.
fn gather(padded: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
    let [od, oh, ow] = g.out_size();
    let (rows, rw, sw) = (g.rows(), g.row_width(), g.stride[2]);
    let [dp, _, _] = g.padded();
    let plane_len = g.padded_plane();
    // [tap][A][B] so each tap's matrix is contiguous.
    let wt = relayout(weight, a, b, taps, |o, i, t| (t * a + i) * b + o);
    // With few input channels (the first layer) even kw * A is a short inner dimension for
    // the matrix product, so those planes are unrolled into all taps (a small im2col).
    let unroll = a * g.kernel[2] < 16;
    let direct = direct::Direct::for_channels(b);
    assert!(direct.is_none() || padded.len() >= g.batch * dp * plane_len + slack(g));
    let offs = g.tap_offsets();
    let ld = rows + DIRECT_ROWS_MAX;
    let mut out: Vec<f32> = Vec::with_capacity(g.out_len());
    let dst = SyncPtr(out.as_mut_ptr());
    (0..g.batch * od).into_par_iter().for_each(|task| {
        let (n, z) = (task / od, task % od);
        SCRATCH.with_borrow_mut(|scratch| {
            // Every value of `acc` a plane's copy below reads is written first (the direct
            // kernel stores whole blocks, the first gemm of a plane overwrites), so the
            // thread's scratch is reused without zeroing it.
            if scratch.len() < ld * b {
                scratch.resize(ld * b, 0.0);
            }
            let acc = &mut scratch[..ld * b];
            let plane0 = (n * dp + z * g.stride[0]) * plane_len;
            match direct {
                Some(kernel) if unroll => {
                    // The taps of the few channels as one long row per output voxel (a small
                    // im2col), then a single-tap product through the direct kernel.
                    let k = taps * a;
                    // Rows past `rows` (up to ld) feed only discarded outputs.
                    with_im2col(padded, plane0, &offs, a, sw * a, rows, ld * k, |col| {
                        // SAFETY: `col` holds ld >= rows + block rows of k values, `wt` k x B,
                        // `acc` B columns of ld.
                        unsafe {
                            kernel.run(
                                col.as_ptr(),
                                &[0],
                                k,
                                k,
                                wt.as_ptr(),
                                b,
                                rows,
                                acc.as_mut_ptr(),
                                ld,
                            );
                        }
                    });
                }
                Some(kernel) if sw == 1 => {
                    // SAFETY: as below; the taps come in runs of kw one voxel apart (the
                    // (kd, kh, kw) row-major order of `tap_offsets`).
                    unsafe {
                        kernel.run_stride1(
                            padded.as_ptr().add(plane0),
                            &offs,
                            g.kernel[2],
                            a,
                            wt.as_ptr(),
                            b,
                            rows,
                            acc.as_mut_ptr(),
                            ld,
                        );
                    }
                }
                Some(kernel) => {
                    // SAFETY: the padded buffer carries `slack` zeros at its end, so the up to
                    // DIRECT_ROWS_MAX - 1 rows past `rows` a block reads stay inside it; `acc`
                    // has room for as many extra rows; `wt` holds taps x A x B.
                    unsafe {
                        kernel.run(
                            padded.as_ptr().add(plane0),
                            &offs,
                            a,
                            sw * a,
                            wt.as_ptr(),
                            b,
                            rows,
                            acc.as_mut_ptr(),
                            ld,
                        );
                    }
                }
                None => gemm_plane(padded, &wt, g, plane0, unroll, &offs, acc),
            }
            // This task's output values: channel c, plane z of batch n, for every c.
            for c in 0..b {
                let add = bias.map_or(0.0, |bb| bb[c]);
                // SAFETY: task (n, z) alone writes these oH*oW values of `out`, whose
                // capacity is out_len; `set_len` follows once every task has written.
                let plane: &mut [MaybeUninit<f32>] = unsafe {
                    std::slice::from_raw_parts_mut(
                        dst.get().add(((n * b + c) * od + z) * oh * ow).cast(),
                        oh * ow,
                    )
                };
                for (y, row) in plane.chunks_exact_mut(ow).enumerate() {
                    if direct.is_some() {
                        // Column-major: this channel's rows are contiguous.
                        let src = &acc[c * ld + y * rw..][..ow];
                        for (v, s) in row.iter_mut().zip(src) {
                            v.write(s + add);
                        }
                    } else {
                        for (i, v) in row.iter_mut().enumerate() {
                            v.write(acc[(y * rw + i) * b + c] + add);
                        }
                    }
                }
            }
        });
    });
    // SAFETY: the tasks above wrote all N x B x oD x oH x oW values.
    unsafe { out.set_len(g.out_len()) };
    out
}

/// Runs `f` on this thread's im2col buffer (at least `len` values) after filling its first
/// `rows` rows with [`im2col`]; values past them are left from earlier use.
#[allow(clippy::too_many_arguments)]
fn with_im2col<T>(
    padded: &[f32],
    plane0: usize,
    offs: &[usize],
    a: usize,
    row_stride: usize,
    rows: usize,
    len: usize,
    f: impl FnOnce(&[f32]) -> T,
) -> T {
    COLUMNS.with_borrow_mut(|col| {
        if col.len() < len {
            col.resize(len, 0.0);
        }
        im2col(padded, plane0, offs, a, row_stride, rows, col);
        f(col)
    })
}

/// `col[m][t][i] = padded[plane0 + offs[t] + m * row_stride + i]` for m < rows: each
/// output voxel's inputs for every tap in one row (the first layer's few channels).
fn im2col(
    padded: &[f32],
    plane0: usize,
    offs: &[usize],
    a: usize,
    row_stride: usize,
    rows: usize,
    col: &mut [f32],
) {
    /// With the channel count a constant, each voxel's copy is a couple of moves instead
    /// of a call to `memcpy`.
    fn fixed<const A: usize>(
        padded: &[f32],
        plane0: usize,
        offs: &[usize],
        row_stride: usize,
        rows: usize,
        col: &mut [f32],
    ) {
        let k = offs.len() * A;
        for (m, dst) in col.chunks_exact_mut(k).take(rows).enumerate() {
            let base = plane0 + m * row_stride;
            for (d, o) in dst.chunks_exact_mut(A).zip(offs) {
                let src: &[f32; A] = padded[base + o..][..A].try_into().expect("A values");
                d.copy_from_slice(src);
            }
        }
    }
    match a {
        1 => fixed::<1>(padded, plane0, offs, row_stride, rows, col),
        2 => fixed::<2>(padded, plane0, offs, row_stride, rows, col),
        3 => fixed::<3>(padded, plane0, offs, row_stride, rows, col),
        4 => fixed::<4>(padded, plane0, offs, row_stride, rows, col),
        _ => {
            let k = offs.len() * a;
            for (m, dst) in col.chunks_exact_mut(k).take(rows).enumerate() {
                for (t, o) in offs.iter().enumerate() {
                    let src = plane0 + o + m * row_stride;
                    dst[t * a..][..a].copy_from_slice(&padded[src..][..a]);
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread accumulator of one output plane, reused across planes and layers.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread im2col rows of the first layer.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One output plane through the gemm crate (output channels not a multiple of 16, or no
/// AVX-512), into the row-major `acc` (rows x B).
fn gemm_plane(
    padded: &[f32],
    wt: &[f32],
    g: &ConvGeometry,
    plane0: usize,
    unroll: bool,
    offs: &[usize],
    acc: &mut [f32],
) {
    let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
    let (rows, sw) = (g.rows(), g.stride[2]);
    let plane_len = g.padded_plane();
    let kw = g.kernel[2];
    let groups = taps / kw;
    let chunk = row_chunk(b);
    if unroll {
        let k = taps * a;
        with_im2col(padded, plane0, offs, a, sw * a, rows, rows * k, |col| {
            // SAFETY: `col` holds at least rows x (taps*A), `wt` (taps*A) x B, `acc` rows x B.
            unsafe {
                gemm::gemm(
                    rows,
                    b,
                    k,
                    acc.as_mut_ptr(),
                    1,
                    b as isize,
                    false,
                    col.as_ptr(),
                    1,
                    k as isize,
                    wt.as_ptr(),
                    1,
                    b as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
        return;
    }
    for m0 in (0..rows).step_by(chunk) {
        let mc = chunk.min(rows - m0);
        // The kw taps of one (kd, kh) read kw consecutive A-blocks per row, so they form
        // one product with inner dimension kw * A (rows overlap; only read).
        for grp in 0..groups {
            let t = grp * kw;
            let (kd, off) = g.tap_offset(t);
            let base = plane0 + kd * plane_len + off + m0 * sw * a;
            assert!(base + (mc - 1) * sw * a + kw * a <= padded.len());
            assert!(acc.len() >= (m0 + mc) * b && wt.len() >= (t + kw) * a * b);
            // SAFETY: `acc` holds rows x B; the lhs rows (stride sw*A, kw*A wide) stay inside
            // the padded input (asserted); `wt` holds taps x A x B.
            unsafe {
                gemm::gemm(
                    mc,
                    b,
                    kw * a,
                    acc.as_mut_ptr().add(m0 * b),
                    1,
                    b as isize,
                    grp > 0,
                    padded.as_ptr().add(base),
                    1,
                    (sw * a) as isize,
                    wt.as_ptr().add(t * a * b),
                    1,
                    b as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
    }
}

/// Transpose of [`gather`]: spreads `[N][oD][rows][B]` back onto the padded strided side.
fn scatter(rows_buf: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
    let [od, _, _] = g.out_size();
    let (rows, sw) = (g.rows(), g.stride[2]);
    let [dp, _, _] = g.padded();
    let plane_len = g.padded_plane();
    let sd = g.stride[0];
    // [tap][B][A].
    let wt = relayout(weight, a, b, taps, |o, i, t| (t * b + o) * a + i);
    let mut out = vec![0f32; g.batch * dp * plane_len];
    // Each padded plane gathers the contributions of the output planes that reach it, so
    // planes can be filled in parallel without two threads writing the same values.
    out.par_chunks_mut(plane_len)
        .enumerate()
        .for_each(|(plane, dst)| {
            let (n, zp) = (plane / dp, plane % dp);
            let mut first = true;
            for kd in 0..g.kernel[0] {
                if zp < kd || (zp - kd) % sd != 0 || (zp - kd) / sd >= od {
                    continue;
                }
                let z = (zp - kd) / sd;
                let src = &rows_buf[(n * od + z) * rows * b..][..rows * b];
                let per_d = taps / g.kernel[0];
                for t in kd * per_d..(kd + 1) * per_d {
                    let (_, off) = g.tap_offset(t);
                    debug_assert!(off + (rows - 1) * sw * a + a <= dst.len());
                    // SAFETY: rows of `dst` (stride sw*A, A wide) are disjoint and inside the
                    // plane (module docs); `src` holds rows x B; `wt` taps x B x A.
                    unsafe {
                        gemm::gemm(
                            rows,
                            a,
                            b,
                            dst.as_mut_ptr().add(off),
                            1,
                            (sw * a) as isize,
                            !first,
                            src.as_ptr(),
                            1,
                            b as isize,
                            wt.as_ptr().add(t * b * a),
                            1,
                            a as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                    // Rows not written by this product keep their zero, so accumulating
                    // from here on is right even when `first` skipped reading.
                    first = false;
                }
            }
        });
    out
}

/// [`scatter`] through the direct kernel, for a strided convolution's input gradient: each
/// tap's product `gy_rows @ W_t` (B -> A channels, a 1x1x1 convolution) lands column-major
/// in a small buffer and is added onto every stride-th voxel of a channels-first padded
/// plane, which is then cropped into the `[N][A][D][H][W]` result.
fn scatter_direct(
    rows_buf: &[f32],
    weight: &[f32],
    g: &ConvGeometry,
    kernel: direct::Direct,
) -> Vec<f32> {
    let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
    let [od, _, _] = g.out_size();
    let (rows, sw, sd) = (g.rows(), g.stride[2], g.stride[0]);
    let [dp, hp, wp] = g.padded();
    let [d, h, w] = g.in_size;
    let [pd, ph, pw] = g.padding;
    let [kd_n, kh_n, kw_n] = g.kernel;
    let wt = relayout(weight, a, b, taps, |o, i, t| (t * b + o) * a + i);
    let plane = hp * wp;
    let ld = rows + DIRECT_ROWS_MAX;
    // The gradient rows with the direct kernel's slack after the last plane.
    let mut src = Vec::with_capacity(rows_buf.len() + DIRECT_ROWS_MAX * b);
    src.extend_from_slice(rows_buf);
    src.resize(rows_buf.len() + DIRECT_ROWS_MAX * b, 0.0);
    let mut padded = vec![0f32; g.batch * dp * a * plane];
    padded
        .par_chunks_mut(a * plane)
        .enumerate()
        .for_each(|(pi, dst)| {
            let (n, zp) = (pi / dp, pi % dp);
            let mut tmp = vec![0f32; a * ld];
            for kd in 0..kd_n {
                if zp < kd || (zp - kd) % sd != 0 || (zp - kd) / sd >= od {
                    continue;
                }
                let z = (zp - kd) / sd;
                for kh in 0..kh_n {
                    for kw in 0..kw_n {
                        let t = (kd * kh_n + kh) * kw_n + kw;
                        // SAFETY: `src` holds this plane's rows x B plus the kernel's slack;
                        // `tmp` holds A x ld; `wt` holds B x A for this tap.
                        unsafe {
                            kernel.run(
                                src.as_ptr().add((n * od + z) * rows * b),
                                &[0],
                                b,
                                b,
                                wt.as_ptr().add(t * b * a),
                                a,
                                rows,
                                tmp.as_mut_ptr(),
                                ld,
                            );
                        }
                        let off = kh * wp + kw;
                        for c in 0..a {
                            let col = &tmp[c * ld..][..rows];
                            let out = &mut dst[c * plane + off..];
                            for (m, v) in col.iter().enumerate() {
                                out[m * sw] += v;
                            }
                        }
                    }
                }
            }
        });
    let mut out = vec![0f32; g.in_len()];
    out.par_chunks_mut(h * w).enumerate().for_each(|(r, dst)| {
        let (n, c, z) = (r / (a * d), (r / d) % a, r % d);
        let src = &padded[((n * dp + z + pd) * a + c) * plane..][..plane];
        for y in 0..h {
            dst[y * w..][..w].copy_from_slice(&src[(y + ph) * wp + pw..][..w]);
        }
    });
    out
}

/// Sums `add(partial, task)` over tasks in fixed groups added in a fixed order, so weight
/// gradients are bit-identical whatever the thread count or scheduling: training must
/// reproduce itself from a seed and after a resume (a rayon fold/reduce would not).
fn deterministic_sum(tasks: usize, len: usize, add: impl Fn(&mut [f32], usize) + Sync) -> Vec<f32> {
    let groups = tasks.clamp(1, 16);
    let per = tasks.div_ceil(groups);
    let partials: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|gi| {
            let mut acc = vec![0f32; len];
            for task in gi * per..((gi + 1) * per).min(tasks) {
                add(&mut acc, task);
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; len];
    for p in &partials {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
    out
}

/// Weight gradient: sum over planes of `padded_tap^T @ rows`, in burn's weight layout.
/// `rows_at(task)` is where plane `task` (= n * oD + z) of the output gradient's rows starts
/// in `rows_buf` (rows x B values, zero junk rows).
fn wgrad(
    padded: &[f32],
    rows_buf: &[f32],
    rows_at: &(dyn Fn(usize) -> usize + Sync),
    g: &ConvGeometry,
) -> Vec<f32> {
    let (a, b, taps) = (g.in_channels, g.out_channels, g.taps());
    let [od, _, _] = g.out_size();
    let (rows, sw) = (g.rows(), g.stride[2]);
    let [dp, _, _] = g.padded();
    let plane_len = g.padded_plane();
    if let Some(kernel) = direct::Direct::for_channels(b) {
        let offs = g.tap_offsets();
        let unroll = a * g.kernel[2] < 16;
        let acc = deterministic_sum(g.batch * od, taps * a * b, |acc, task| {
            let (n, z) = (task / od, task % od);
            let plane0 = (n * dp + z * g.stride[0]) * plane_len;
            if unroll {
                // Few channels (the first layer): every tap's inputs in one row per voxel,
                // so the kernel keeps 16 of the taps x A weights in registers, not A.
                let k = taps * a;
                with_im2col(padded, plane0, &offs, a, sw * a, rows, rows * k, |col| {
                    // SAFETY: `col` holds rows x k values, the gradient rows rows x B, `acc`
                    // k x B (= taps x A x B).
                    unsafe {
                        kernel.wgrad(
                            col.as_ptr(),
                            &[0],
                            k,
                            k,
                            rows_buf.as_ptr().add(rows_at(task)),
                            b,
                            rows,
                            acc.as_mut_ptr(),
                        );
                    }
                });
                return;
            }
            // SAFETY: every row read is a valid row of the plane (module docs); the
            // gradient rows hold rows x B; `acc` holds taps x A x B.
            unsafe {
                kernel.wgrad(
                    padded.as_ptr().add(plane0),
                    &offs,
                    a,
                    sw * a,
                    rows_buf.as_ptr().add(rows_at(task)),
                    b,
                    rows,
                    acc.as_mut_ptr(),
                );
            }
        });
        let mut w = vec![0f32; taps * a * b];
        for o in 0..b {
            for i in 0..a {
                for t in 0..taps {
                    w[(o * a + i) * taps + t] = acc[(t * a + i) * b + o];
                }
            }
        }
        return w;
    }
    let acc = deterministic_sum(g.batch * od, taps * a * b, |acc, task| {
        let (n, z) = (task / od, task % od);
        let src = &rows_buf[rows_at(task)..][..rows * b];
        let kw = g.kernel[2];
        for t in (0..taps).step_by(kw) {
            let (kd, off) = g.tap_offset(t);
            let base = (n * dp + z * g.stride[0] + kd) * plane_len + off;
            debug_assert!(base + (rows - 1) * sw * a + kw * a <= padded.len());
            // SAFETY: as in `gather`; the destination is this fold's own block for the
            // kw taps of one (kd, kh), stored column-major as B x (kw*A) so that the
            // micro-kernel's vectors run along kw*A rather than along B.
            unsafe {
                gemm::gemm(
                    kw * a,
                    b,
                    rows,
                    acc.as_mut_ptr().add(t * a * b),
                    (kw * a) as isize,
                    1,
                    true,
                    padded.as_ptr().add(base),
                    (sw * a) as isize,
                    1,
                    src.as_ptr(),
                    1,
                    b as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
    });
    // acc: per group of kw taps, [B][kw][A].
    let kw = g.kernel[2];
    let mut w = vec![0f32; taps * a * b];
    for o in 0..b {
        for i in 0..a {
            for t in 0..taps {
                let (grp, k) = (t / kw, t % kw);
                w[(o * a + i) * taps + t] = acc[grp * kw * a * b + o * kw * a + k * a + i];
            }
        }
    }
    w
}

/// Sum per channel of `[N][C][..]` (the bias gradient).
fn channel_sums(x: &[f32], n: usize, c: usize) -> Vec<f32> {
    let len = x.len() / (n * c);
    // Rows in parallel, 16 f32 lanes over runs of 256 values, runs added in f64: vectorised,
    // and the same bits for any thread count (each row's order is fixed).
    let rows: Vec<f64> = x
        .par_chunks(len.max(1))
        .map(|row| {
            row.chunks(256)
                .map(|run| {
                    let mut lanes = [0f32; 16];
                    let mut blocks = run.chunks_exact(16);
                    for b in &mut blocks {
                        for (l, v) in lanes.iter_mut().zip(b) {
                            *l += v;
                        }
                    }
                    let tail: f32 = blocks.remainder().iter().sum();
                    lanes.iter().map(|v| *v as f64).sum::<f64>() + tail as f64
                })
                .sum::<f64>()
        })
        .collect();
    let mut s = vec![0f64; c];
    for (r, v) in rows.iter().enumerate() {
        s[r % c] += v;
    }
    s.into_iter().map(|v| v as f32).collect()
}

fn add_channel_bias(y: &mut [f32], bias: &[f32], n: usize, c: usize) {
    let len = y.len() / (n * c);
    y.par_chunks_mut(len)
        .enumerate()
        .for_each(|(r, row)| row.iter_mut().for_each(|v| *v += bias[r % c]));
}

/// A direct convolution micro-kernel for AVX-512: a block of R output rows x 16*NB output
/// channels stays in registers while the taps and input channels stream past, each input
/// value broadcast against NB weight vectors. The gemm crate's micro-kernels put the output
/// channels (16 or 32 here) along their short side and reach a third of this speed on these
/// shapes; oneDNN, which PyTorch runs, uses the same blocking.
mod direct {
    #[derive(Clone, Copy)]
    pub struct Direct {
        rows: usize,
        vectors: usize,
    }

    impl Direct {
        /// The kernel for `b` output channels, when this CPU has AVX-512 and `b` is a
        /// multiple of 16.
        pub fn for_channels(b: usize) -> Option<Direct> {
            #[cfg(target_arch = "x86_64")]
            {
                if !b.is_multiple_of(16) || !std::arch::is_x86_feature_detected!("avx512f") {
                    return None;
                }
                let vectors = if b.is_multiple_of(64) {
                    4
                } else if b.is_multiple_of(32) {
                    2
                } else {
                    1
                };
                Some(Direct {
                    rows: 24 / vectors,
                    vectors,
                })
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = b;
                None
            }
        }

        /// `dst[c * ld + m] = sum_t sum_i input[offs[t] + m * row_stride + i] * wt[t][i][c]`
        /// for m in 0..rows (rounded up to the block) and every c in 0..b: `dst` is
        /// column-major (one run of `ld` rows per output channel), which makes the copy into
        /// the channels-first output contiguous.
        ///
        /// # Safety
        /// Every read and write implied above must be inside its buffer, for `rows` rounded
        /// up to a multiple of the block's rows (at most `DIRECT_ROWS_MAX`).
        #[allow(unused_variables)]
        pub unsafe fn run(
            &self,
            input: *const f32,
            offs: &[usize],
            a: usize,
            row_stride: usize,
            wt: *const f32,
            b: usize,
            rows: usize,
            dst: *mut f32,
            ld: usize,
        ) {
            #[cfg(target_arch = "x86_64")]
            unsafe {
                for m0 in (0..rows).step_by(self.rows) {
                    for c0 in (0..b).step_by(16 * self.vectors) {
                        let (x, d) = (input.add(m0 * row_stride), dst.add(c0 * ld + m0));
                        match self.vectors {
                            4 => block::<6, 4>(x, offs, a, row_stride, wt, b, c0, d, ld),
                            2 => block::<12, 2>(x, offs, a, row_stride, wt, b, c0, d, ld),
                            _ => block::<24, 1>(x, offs, a, row_stride, wt, b, c0, d, ld),
                        }
                    }
                }
            }
        }
    }

    impl Direct {
        /// [`Direct::run`] for a stride-1 row (`row_stride` = `a`) whose taps come in runs of
        /// `kw` (the kernel width) one voxel apart: `offs[g * kw + k] = offs[g * kw] + k * a`.
        /// Kernel width 3 with output channels in blocks of one or two vectors: see
        /// [`block_kw`]; otherwise the same as `run`.
        ///
        /// # Safety
        /// As for [`Direct::run`] with `row_stride` = `a`; `offs.len()` a multiple of `kw`.
        #[allow(unused_variables)]
        pub unsafe fn run_stride1(
            &self,
            input: *const f32,
            offs: &[usize],
            kw: usize,
            a: usize,
            wt: *const f32,
            b: usize,
            rows: usize,
            dst: *mut f32,
            ld: usize,
        ) {
            #[cfg(target_arch = "x86_64")]
            unsafe {
                debug_assert!(offs.len().is_multiple_of(kw.max(1)));
                debug_assert!(offs
                    .chunks(kw.max(1))
                    .all(|run| run.iter().enumerate().all(|(k, o)| *o == run[0] + k * a)));
                let nb = self.vectors;
                match (kw, nb) {
                    (3, 1) => {
                        for m0 in (0..rows).step_by(24) {
                            for c0 in (0..b).step_by(16) {
                                let (x, d) = (input.add(m0 * a), dst.add(c0 * ld + m0));
                                block_kw::<24, 1, 3>(x, offs, a, wt, b, c0, d, ld);
                            }
                        }
                        return;
                    }
                    (3, 2) => {
                        for m0 in (0..rows).step_by(12) {
                            for c0 in (0..b).step_by(32) {
                                let (x, d) = (input.add(m0 * a), dst.add(c0 * ld + m0));
                                block_kw::<12, 2, 3>(x, offs, a, wt, b, c0, d, ld);
                            }
                        }
                        return;
                    }
                    _ => {}
                }
                self.run(input, offs, a, a, wt, b, rows, dst, ld);
            }
        }

        /// `acc[t][i][c] += sum_m input[offs[t] + m * row_stride + i] * g[m * b + c]` over
        /// m in 0..rows: the weight gradient, with `R` input channels x `16 NB` output
        /// channels in registers while the rows stream past.
        ///
        /// # Safety
        /// Every read and write implied above must be inside its buffer.
        #[allow(unused_variables)]
        pub unsafe fn wgrad(
            &self,
            input: *const f32,
            offs: &[usize],
            a: usize,
            row_stride: usize,
            g: *const f32,
            b: usize,
            rows: usize,
            acc: *mut f32,
        ) {
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let nb = self.vectors.min(2);
                for (t, &off) in offs.iter().enumerate() {
                    let mut i0 = 0;
                    while i0 < a {
                        let left = a - i0;
                        for c0 in (0..b).step_by(16 * nb) {
                            let x = input.add(off + i0);
                            let (gg, d) = (g.add(c0), acc.add((t * a + i0) * b + c0));
                            match (nb, left) {
                                (2, 8..) => wblock::<8, 2>(x, row_stride, gg, b, rows, d),
                                (2, 4..) => wblock::<4, 2>(x, row_stride, gg, b, rows, d),
                                (2, 2..) => wblock::<2, 2>(x, row_stride, gg, b, rows, d),
                                (2, _) => wblock::<1, 2>(x, row_stride, gg, b, rows, d),
                                (_, 16..) => wblock::<16, 1>(x, row_stride, gg, b, rows, d),
                                (_, 8..) => wblock::<8, 1>(x, row_stride, gg, b, rows, d),
                                (_, 4..) => wblock::<4, 1>(x, row_stride, gg, b, rows, d),
                                (_, 2..) => wblock::<2, 1>(x, row_stride, gg, b, rows, d),
                                _ => wblock::<1, 1>(x, row_stride, gg, b, rows, d),
                            }
                        }
                        i0 += match (nb, left) {
                            (2, 8..) => 8,
                            (_, 16..) if nb == 1 => 16,
                            (_, 8..) => 8,
                            (_, 4..) => 4,
                            (_, 2..) => 2,
                            _ => 1,
                        };
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn wblock<const R: usize, const NB: usize>(
        input: *const f32,
        row_stride: usize,
        g: *const f32,
        b: usize,
        rows: usize,
        acc: *mut f32,
    ) {
        use std::arch::x86_64::*;
        unsafe {
            let mut sum = [[_mm512_setzero_ps(); NB]; R];
            for m in 0..rows {
                let mut gv = [_mm512_setzero_ps(); NB];
                for (j, v) in gv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(g.add(m * b + 16 * j));
                }
                let x = input.add(m * row_stride);
                for (r, s) in sum.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x.add(r));
                    for j in 0..NB {
                        s[j] = _mm512_fmadd_ps(xv, gv[j], s[j]);
                    }
                }
            }
            for (r, s) in sum.iter().enumerate() {
                for (j, v) in s.iter().enumerate() {
                    let p = acc.add(r * b + 16 * j);
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *v));
                }
            }
        }
    }

    /// [`block`] for stride 1, taking the KW taps of a kernel row together. With one
    /// vector of output channels `block` needs a broadcast load per FMA and is bound by the
    /// load ports; here input voxel `v` of the block feeds output rows `v - k` through tap
    /// `k` of the run, so each broadcast serves KW FMAs (R + KW - 1 broadcasts and KW weight
    /// loads per R x KW FMAs). Every accumulator index is a constant once the loops are
    /// unrolled, so the R accumulators, KW x NB weights and the broadcast stay in registers
    /// (R * NB + KW * NB + 1 <= 32).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_kw<const R: usize, const NB: usize, const KW: usize>(
        input: *const f32,
        offs: &[usize],
        a: usize,
        wt: *const f32,
        b: usize,
        c0: usize,
        dst: *mut f32,
        ld: usize,
    ) {
        use std::arch::x86_64::*;
        const { assert!(R + KW - 1 <= 32 && (R + KW) * NB < 32) };
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NB]; R];
            for (grp, &off) in offs.iter().step_by(KW).enumerate() {
                let x0 = input.add(off);
                let w0 = wt.add(grp * KW * a * b + c0);
                for i in 0..a {
                    let mut w = [[_mm512_setzero_ps(); NB]; KW];
                    for (k, wk) in w.iter_mut().enumerate() {
                        for (j, wkj) in wk.iter_mut().enumerate() {
                            *wkj = _mm512_loadu_ps(w0.add((k * a + i) * b + 16 * j));
                        }
                    }
                    let x = x0.add(i);
                    // One call per input voxel, each with its index as a constant (LLVM
                    // does not unroll a loop this long, and a runtime index would put
                    // the accumulators on the stack). Voxels in steps of 3: consecutive
                    // voxels update overlapping rows, so in plain order each FMA would
                    // wait on one issued a cycle or two before (4 cycles' latency); in
                    // this order a row's updates are a third of the block apart.
                    macro_rules! voxels {
                        ($($v:literal)*) => { $(voxel::<$v, R, NB, KW>(&mut acc, &w, x, a);)* };
                    }
                    voxels!(0 3 6 9 12 15 18 21 24 27 30 1 4 7 10 13 16 19 22 25 28 31 2 5 8 11 14 17 20 23 26 29);
                }
            }
            store_columns(&acc, dst, ld);
        }
    }

    /// `dst[(16 j + l) * ld + r] = acc[r][j][l]`: the block's rows stored column-major, 16
    /// rows at a time transposed in registers (as in `layout::transpose_avx512`) and
    /// written as one contiguous run per channel; cheaper than a scatter per row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_columns<const R: usize, const NB: usize>(
        acc: &[[std::arch::x86_64::__m512; NB]; R],
        dst: *mut f32,
        ld: usize,
    ) {
        use std::arch::x86_64::*;
        for m0 in (0..R).step_by(16) {
            let n = (R - m0).min(16);
            let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
            for j in 0..NB {
                let mut r = [_mm512_setzero_ps(); 16];
                for (k, v) in r.iter_mut().enumerate().take(n) {
                    *v = acc[m0 + k][j];
                }
                crate::layout::transpose16(&mut r);
                for (l, v) in r.iter().enumerate() {
                    // SAFETY: rows m0..m0 + n of channel 16 j + l, inside the caller's
                    // block of `dst`.
                    unsafe { _mm512_mask_storeu_ps(dst.add((16 * j + l) * ld + m0), mask, *v) };
                }
            }
        }
    }

    /// Input voxel `V` of a [`block_kw`] block (nothing when `V >= R + KW - 1`): one
    /// broadcast of channel `x[V * a]`, FMAs into output rows `V - k` for the KW taps.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn voxel<const V: usize, const R: usize, const NB: usize, const KW: usize>(
        acc: &mut [[std::arch::x86_64::__m512; NB]; R],
        w: &[[std::arch::x86_64::__m512; NB]; KW],
        x: *const f32,
        a: usize,
    ) {
        use std::arch::x86_64::*;
        if V >= R + KW - 1 {
            return;
        }
        // SAFETY: the caller's block reads voxels 0..R + KW - 1 of this row.
        let xv = _mm512_set1_ps(unsafe { *x.add(V * a) });
        for k in 0..KW {
            if V >= k && V - k < R {
                for j in 0..NB {
                    acc[V - k][j] = _mm512_fmadd_ps(xv, w[k][j], acc[V - k][j]);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const R: usize, const NB: usize>(
        input: *const f32,
        offs: &[usize],
        a: usize,
        row_stride: usize,
        wt: *const f32,
        b: usize,
        c0: usize,
        dst: *mut f32,
        ld: usize,
    ) {
        use std::arch::x86_64::*;
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NB]; R];
            for (t, &off) in offs.iter().enumerate() {
                let x0 = input.add(off);
                let w0 = wt.add(t * a * b + c0);
                for i in 0..a {
                    let mut w = [_mm512_setzero_ps(); NB];
                    for (j, wj) in w.iter_mut().enumerate() {
                        *wj = _mm512_loadu_ps(w0.add(i * b + 16 * j));
                    }
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(*x0.add(r * row_stride + i));
                        for j in 0..NB {
                            acc_r[j] = _mm512_fmadd_ps(xv, w[j], acc_r[j]);
                        }
                    }
                }
            }
            // Lane l of vector j is channel c0 + 16j + l: scattered to its channel's run.
            let ld = ld as i32;
            let lanes = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(ld),
            );
            for (r, acc_r) in acc.iter().enumerate() {
                for (j, v) in acc_r.iter().enumerate() {
                    let base = dst.add(16 * j * ld as usize + r);
                    _mm512_i32scatter_ps::<4>(base, lanes, *v);
                }
            }
        }
    }
}
