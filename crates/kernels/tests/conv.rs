//! The implicit-GEMM convolution against a direct f64 loop over the definition.
use glandseg_kernels::conv::{
    conv3d, conv3d_backward, conv_transpose3d, conv_transpose3d_backward, ConvGeometry,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::{geometry, random};

/// Calls `f(n, b, o, a, i, t)` for every (output voxel o, input voxel i, tap t) pair the
/// convolution connects; o, i and t are flat indices.
fn for_each_pair(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize, usize)) {
    let o = g.out_size();
    let s = g.in_size;
    let k = g.kernel;
    for od in 0..o[0] {
        for oh in 0..o[1] {
            for ow in 0..o[2] {
                for kd in 0..k[0] {
                    for kh in 0..k[1] {
                        for kw in 0..k[2] {
                            let id = (od * g.stride[0] + kd) as isize - g.padding[0] as isize;
                            let ih = (oh * g.stride[1] + kh) as isize - g.padding[1] as isize;
                            let iw = (ow * g.stride[2] + kw) as isize - g.padding[2] as isize;
                            if id < 0 || ih < 0 || iw < 0 {
                                continue;
                            }
                            let (id, ih, iw) = (id as usize, ih as usize, iw as usize);
                            if id >= s[0] || ih >= s[1] || iw >= s[2] {
                                continue;
                            }
                            f(
                                (od * o[1] + oh) * o[2] + ow,
                                (id * s[1] + ih) * s[2] + iw,
                                (kd * k[1] + kh) * k[2] + kw,
                                0,
                            );
                        }
                    }
                }
            }
        }
    }
}

struct Reference {
    y: Vec<f64>,
    gx: Vec<f64>,
    gw: Vec<f64>,
}

/// y[n][b][o] = sum w[b][a][t] x[n][a][i]; gradients for the loss sum(y * gy).
fn reference(g: &ConvGeometry, x: &[f32], w: &[f32], gy: &[f32]) -> Reference {
    let (a, b) = (g.in_channels, g.out_channels);
    let vo: usize = g.out_size().iter().product();
    let vi: usize = g.in_size.iter().product();
    let taps: usize = g.kernel.iter().product();
    let mut r = Reference {
        y: vec![0.0; g.batch * b * vo],
        gx: vec![0.0; g.batch * a * vi],
        gw: vec![0.0; b * a * taps],
    };
    let mut pairs = Vec::new();
    for_each_pair(g, |o, i, t, _| pairs.push((o, i, t)));
    for n in 0..g.batch {
        for ob in 0..b {
            for ia in 0..a {
                for &(o, i, t) in &pairs {
                    let wv = w[(ob * a + ia) * taps + t] as f64;
                    let xv = x[(n * a + ia) * vi + i] as f64;
                    let gv = gy[(n * b + ob) * vo + o] as f64;
                    r.y[(n * b + ob) * vo + o] += wv * xv;
                    r.gx[(n * a + ia) * vi + i] += wv * gv;
                    r.gw[(ob * a + ia) * taps + t] += xv * gv;
                }
            }
        }
    }
    r
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-5 * scale + 1e-5,
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn geometries() -> Vec<ConvGeometry> {
    let g = geometry;
    vec![
        g(2, 3, 4, [5, 6, 7], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        g(1, 2, 5, [6, 7, 9], [3, 3, 3], [2, 2, 2], [1, 1, 1]),
        g(2, 4, 3, [4, 6, 8], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
        g(1, 3, 2, [5, 5, 5], [3, 3, 3], [1, 2, 1], [1, 1, 1]),
        g(2, 5, 3, [3, 4, 5], [1, 1, 1], [1, 1, 1], [0, 0, 0]),
        g(1, 1, 1, [1, 1, 1], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        g(1, 2, 3, [7, 5, 6], [2, 2, 2], [2, 2, 2], [0, 0, 0]),
        g(1, 17, 33, [4, 4, 4], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        // 8 output channels (the tiny network's first level) through the gemm crate, with
        // more rows per plane (91 x 94 + 92) than one row chunk holds (65536 / 8).
        g(1, 8, 8, [2, 92, 92], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        // Output channels in multiples of 16 take the direct AVX-512 kernel where the CPU
        // has it (1, 2 and 4 vectors per block; row counts that are not whole blocks).
        g(2, 2, 16, [5, 7, 9], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        g(1, 3, 32, [6, 5, 7], [3, 3, 3], [2, 2, 2], [1, 1, 1]),
        g(1, 16, 64, [3, 5, 4], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        g(1, 16, 48, [4, 3, 5], [1, 3, 3], [1, 1, 1], [0, 1, 1]),
        // Stride 1 along W with kernel width 3 and one or two vectors of output channels
        // take the direct kernel's tap-run variant (forward and input gradient); W not a
        // multiple of its 24 or 12 rows, batch > 1, channel counts 6 (odd per voxel), 16,
        // 32 and 48 (three one-vector column blocks).
        g(2, 16, 16, [7, 9, 30], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        g(1, 6, 16, [3, 4, 27], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        g(2, 32, 32, [4, 5, 13], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
        g(1, 16, 16, [4, 5, 11], [3, 3, 3], [1, 1, 1], [0, 0, 0]),
        g(1, 16, 48, [3, 4, 9], [2, 2, 3], [1, 1, 1], [1, 0, 1]),
        // Strided, 16 input channels: the input gradient takes the direct scatter.
        g(2, 16, 16, [6, 7, 5], [3, 3, 3], [2, 2, 2], [1, 1, 1]),
        g(1, 32, 16, [5, 6, 8], [3, 3, 3], [1, 2, 2], [1, 1, 1]),
        // Upsampling (transposed, kernel = stride) with 16 output channels: direct path.
        g(2, 16, 8, [4, 6, 8], [2, 2, 2], [2, 2, 2], [0, 0, 0]),
        g(1, 32, 5, [2, 4, 6], [1, 2, 2], [1, 2, 2], [0, 0, 0]),
    ]
}

#[test]
fn convolution_forward_and_gradients_match_the_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for g in geometries() {
        let vo: usize = g.out_size().iter().product();
        let vi: usize = g.in_size.iter().product();
        let taps: usize = g.kernel.iter().product();
        let x = random(g.batch * g.in_channels * vi, &mut rng);
        let w = random(g.out_channels * g.in_channels * taps, &mut rng);
        let bias = random(g.out_channels, &mut rng);
        let gy = random(g.batch * g.out_channels * vo, &mut rng);
        let r = reference(&g, &x, &w, &gy);
        let y = conv3d(&x, &w, Some(&bias), &g);
        let want: Vec<f64> =
            r.y.iter()
                .enumerate()
                .map(|(i, v)| v + bias[(i / vo) % g.out_channels] as f64)
                .collect();
        assert_close(&format!("{g:?} y"), &y, &want);
        let grads = conv3d_backward(&x, &w, &gy, &g, true);
        assert_close(&format!("{g:?} gx"), &grads.input, &r.gx);
        assert_close(&format!("{g:?} gw"), &grads.weight, &r.gw);
        let mut gb = vec![0f64; g.out_channels];
        for (i, v) in gy.iter().enumerate() {
            gb[(i / vo) % g.out_channels] += *v as f64;
        }
        assert_close(&format!("{g:?} gb"), &grads.bias, &gb);
    }
}

#[test]
fn transposed_convolution_is_the_adjoint() {
    // convT(x) = conv's input gradient for output gradient x; its input gradient is the
    // convolution itself and its weight gradient the convolution's with the roles swapped.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for g in geometries() {
        let vo: usize = g.out_size().iter().product();
        let vi: usize = g.in_size.iter().product();
        let taps: usize = g.kernel.iter().product();
        let x = random(g.batch * g.out_channels * vo, &mut rng);
        let w = random(g.out_channels * g.in_channels * taps, &mut rng);
        let bias = random(g.in_channels, &mut rng);
        let gy = random(g.batch * g.in_channels * vi, &mut rng);
        // Reference with the strided side as "input": y = convT(x) is r.gx for gy := x.
        let r = reference(&g, &gy, &w, &x);
        let y = conv_transpose3d(&x, &w, Some(&bias), &g);
        let want: Vec<f64> =
            r.gx.iter()
                .enumerate()
                .map(|(i, v)| v + bias[(i / vi) % g.in_channels] as f64)
                .collect();
        assert_close(&format!("{g:?} convT y"), &y, &want);
        let grads = conv_transpose3d_backward(&x, &w, &gy, &g, true);
        assert_close(&format!("{g:?} convT gx"), &grads.input, &r.y);
        assert_close(&format!("{g:?} convT gw"), &grads.weight, &r.gw);
    }
}
