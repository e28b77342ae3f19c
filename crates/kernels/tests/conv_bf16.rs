//! The bf16 (AMX) forward convolution against the f32 one.
use glandseg_kernels::conv::{
    bf16_supported, conv3d, conv3d_bf16, conv3d_bf16_uses_amx, ConvGeometry,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::{geometry, random};

/// Rounding both operands to bf16 (8 significant bits, round to nearest even) changes each
/// by at most 2^-9 relative, so each product by at most 2^-8 + 2^-18 relative: the error of
/// an output is bounded by 2^-8 * sum |x||w| over its taps and channels. Both sides also
/// accumulate in f32 in different orders: at most (taps * A) * 2^-24 * sum |x||w| each,
/// below 1e-4 * sum for these shapes.
fn compare(g: &ConvGeometry, with_bias: bool, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (a, b) = (g.in_channels, g.out_channels);
    let taps: usize = g.kernel.iter().product();
    let x = random(g.batch * a * g.in_size.iter().product::<usize>(), &mut rng);
    let w = random(b * a * taps, &mut rng);
    let bias = with_bias.then(|| random(b, &mut rng));
    let want = conv3d(&x, &w, bias.as_deref(), g);
    let got = conv3d_bf16(&x, &w, bias.as_deref(), g);
    assert_eq!(got.len(), want.len(), "{g:?}");
    let abs = |v: &[f32]| v.iter().map(|e| e.abs()).collect::<Vec<f32>>();
    let bound = conv3d(&abs(&x), &abs(&w), None, g);
    for (i, ((p, q), s)) in got.iter().zip(&want).zip(&bound).enumerate() {
        let tol = s * (1.0 / 256.0 + 1e-4) + 1e-6;
        assert!(
            (p - q).abs() <= tol,
            "{g:?} output {i}: bf16 {p} vs f32 {q} (bound {tol})"
        );
    }
    if conv3d_bf16_uses_amx(g) {
        assert!(got != want, "{g:?}: bf16 path returned the f32 result");
    } else {
        assert!(got == want, "{g:?}: the fallback must be conv3d");
    }
}

#[test]
fn amx_runs_where_supported() {
    let g = geometry(1, 16, 16, [9, 10, 11], [3; 3], [1; 3], [1; 3]);
    assert_eq!(conv3d_bf16_uses_amx(&g), bf16_supported());
    // Channel counts off the 16 grid always take the f32 path.
    let g = geometry(1, 8, 16, [4; 3], [3; 3], [1; 3], [1; 3]);
    assert!(!conv3d_bf16_uses_amx(&g));
    compare(&g, false, 1);
}

#[test]
fn bf16_convolution_matches_f32_within_bf16_rounding() {
    let cases = [
        // The first U-Net layer's shape, junk rows at the end of each row.
        geometry(1, 16, 16, [9, 10, 11], [3; 3], [1; 3], [1; 3]),
        // Strided downsampling, 2 x 2 tiles.
        geometry(1, 16, 32, [9, 10, 11], [3; 3], [2; 3], [1; 3]),
        geometry(1, 32, 32, [7, 6, 5], [3; 3], [1; 3], [1; 3]),
        geometry(1, 64, 64, [4, 5, 6], [3; 3], [1; 3], [1; 3]),
        // 1x1x1: one K-block of 32 per plane, no padding.
        geometry(1, 32, 64, [5, 6, 7], [1; 3], [1; 3], [0; 3]),
        // kw * A = 16: K-blocks of 16.
        geometry(1, 16, 16, [3, 5, 7], [1; 3], [1; 3], [0; 3]),
        // Batch 2, B = 48: a pair of columns and a single one; more than 64 rows.
        geometry(2, 16, 48, [5, 7, 9], [3; 3], [1; 3], [1; 3]),
        // Odd everything: kw * A = 144 (last K-block overlaps), strides and padding per
        // axis, B = 16 with a partial last block of rows.
        geometry(1, 48, 16, [7, 9, 13], [3, 2, 3], [1, 2, 3], [1, 0, 2]),
        // Many rows per plane (4 x 1 blocks of 64 rows, then 32 and 16).
        geometry(1, 16, 16, [2, 12, 17], [1, 3, 3], [1; 3], [0, 1, 1]),
        geometry(2, 32, 96, [3, 4, 5], [2, 2, 2], [1; 3], [0; 3]),
        // Output rows of exactly 16 and 32 values: tiles per output row, skipping the junk
        // rows (half of them with stride 2).
        geometry(1, 16, 48, [3, 20, 32], [3; 3], [2; 3], [1; 3]),
        geometry(1, 32, 16, [2, 3, 32], [3; 3], [1; 3], [1; 3]),
    ];
    for (i, g) in cases.iter().enumerate() {
        compare(g, false, 10 + i as u64);
    }
}

#[test]
fn bf16_convolution_adds_the_bias() {
    compare(
        &geometry(2, 32, 48, [5, 6, 7], [3; 3], [2, 1, 2], [1; 3]),
        true,
        99,
    );
    compare(
        &geometry(1, 16, 16, [6, 6, 6], [3; 3], [1; 3], [1; 3]),
        true,
        100,
    );
}
