//! The fused InstanceNorm + LeakyReLU kernel against a plain f64 implementation of the textbook
//! formulas, and its gradients against finite differences of its own forward.

use glandseg_kernels::norm::{
    instance_norm_leaky_backward, instance_norm_leaky_forward, instance_norm_leaky_forward_inplace,
    instance_norm_stats,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EPS: f32 = 1e-5;
const SLOPE: f32 = 0.01;

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller; rand_distr is not a dependency of this crate.
    let u1: f64 = rng.random_range(1e-12..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn randn(rng: &mut ChaCha8Rng, len: usize, offset: f32, scale: f32) -> Vec<f32> {
    (0..len).map(|_| offset + scale * normal(rng)).collect()
}

struct Reference {
    y: Vec<f64>,
    mean: Vec<f64>,
    rstd: Vec<f64>,
    gx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

/// Straight from the definitions, one row at a time, all in f64.
fn reference(
    x: &[f32],
    gy: &[f32],
    n: usize,
    c: usize,
    s: usize,
    gamma: &[f32],
    beta: &[f32],
) -> Reference {
    let (eps, slope) = (EPS as f64, SLOPE as f64);
    let mut r = Reference {
        y: vec![0.0; x.len()],
        mean: vec![0.0; n * c],
        rstd: vec![0.0; n * c],
        gx: vec![0.0; x.len()],
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
    };
    for row in 0..n * c {
        let ch = row % c;
        let (g, b) = (gamma[ch] as f64, beta[ch] as f64);
        let xs: Vec<f64> = x[row * s..(row + 1) * s]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let gys: Vec<f64> = gy[row * s..(row + 1) * s]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / s as f64;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / s as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        r.mean[row] = mean;
        r.rstd[row] = rstd;
        let xhat: Vec<f64> = xs.iter().map(|v| (v - mean) * rstd).collect();
        let mut gxhat = vec![0.0; s];
        for i in 0..s {
            let z = g * xhat[i] + b;
            r.y[row * s + i] = if z >= 0.0 { z } else { slope * z };
            let gz = gys[i] * if z >= 0.0 { 1.0 } else { slope };
            r.dbeta[ch] += gz;
            r.dgamma[ch] += gz * xhat[i];
            gxhat[i] = gz * g;
        }
        let m1 = gxhat.iter().sum::<f64>() / s as f64;
        let m2 = gxhat.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / s as f64;
        for i in 0..s {
            r.gx[row * s + i] = rstd * (gxhat[i] - m1 - xhat[i] * m2);
        }
    }
    r
}

/// Element-wise relative error, with a floor at the array's RMS so that values that are
/// (nearly) zero by cancellation are judged on the array's scale.
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len().max(1) as f64).sqrt();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (w.abs() + rms) || err <= 1e-30,
            "{what}[{i}]: got {g}, want {w} (err {err:e}, rms {rms:e})"
        );
    }
}

fn check_against_reference(seed: u64, n: usize, c: usize, s: usize, offset: f32, scale: f32) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = randn(&mut rng, n * c * s, offset, scale);
    let gy = randn(&mut rng, n * c * s, 0.0, 1.0);
    // Negative gammas flip which side of the kink the large values land on.
    let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(-2.0..2.0)).collect();
    let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-1.0..1.0)).collect();
    assert!(
        gamma.iter().any(|&g| g < 0.0) || c < 3,
        "seed gives no negative gamma"
    );

    let want = reference(&x, &gy, n, c, s, &gamma, &beta);
    let (y, stats) = instance_norm_leaky_forward(&x, n, c, s, &gamma, &beta, EPS, SLOPE);
    let tag = format!("n={n} c={c} s={s}");
    assert_close(&format!("{tag} y"), &y, &want.y, 1e-4);
    assert_close(&format!("{tag} mean"), &stats.mean, &want.mean, 1e-6);
    assert_close(&format!("{tag} rstd"), &stats.rstd, &want.rstd, 1e-4);

    let mut y_inplace = x.clone();
    let stats_inplace =
        instance_norm_leaky_forward_inplace(&mut y_inplace, n, c, s, &gamma, &beta, EPS, SLOPE);
    assert_eq!(
        y_inplace, y,
        "{tag}: in-place forward differs from the allocating one"
    );
    assert_eq!(stats_inplace.mean, stats.mean);
    assert_eq!(stats_inplace.rstd, stats.rstd);
    // The backward pass recomputes the statistics alone: they must be the forward's bits.
    let alone = instance_norm_stats(&x, n, c, s, EPS);
    assert_eq!(alone.mean, stats.mean, "{tag}: statistics alone differ");
    assert_eq!(alone.rstd, stats.rstd, "{tag}: statistics alone differ");

    let (gx, dgamma, dbeta) =
        instance_norm_leaky_backward(&x, &gy, n, c, s, &gamma, &beta, &stats, SLOPE);
    assert_close(&format!("{tag} gx"), &gx, &want.gx, 1e-4);
    assert_close(&format!("{tag} dgamma"), &dgamma, &want.dgamma, 1e-4);
    assert_close(&format!("{tag} dbeta"), &dbeta, &want.dbeta, 1e-4);
}

#[test]
fn matches_reference_small_rows() {
    check_against_reference(1, 2, 3, 1000, 0.0, 1.0);
    check_against_reference(2, 1, 4, 7, 0.5, 2.0);
}

#[test]
fn single_value_rows_normalise_to_beta() {
    check_against_reference(3, 1, 1, 1, 3.0, 1.0);
    check_against_reference(4, 2, 3, 1, -3.0, 1.0);
    // var = 0, so xhat = 0 and y = leaky(beta); no gradient reaches x.
    let (y, stats) =
        instance_norm_leaky_forward(&[7.5, -2.0], 1, 2, 1, &[3.0, 3.0], &[0.5, -1.0], EPS, SLOPE);
    assert_eq!(y, vec![0.5, -0.01]);
    assert_eq!(stats.mean, vec![7.5, -2.0]);
    let (gx, _, dbeta) = instance_norm_leaky_backward(
        &[7.5, -2.0],
        &[1.0, 1.0],
        1,
        2,
        1,
        &[3.0, 3.0],
        &[0.5, -1.0],
        &stats,
        SLOPE,
    );
    assert_eq!(gx, vec![0.0, 0.0]);
    assert_eq!(dbeta, vec![1.0, 0.01]);
}

/// A large mean over a small spread: a naive E[x^2] - E[x]^2 in f32 loses every digit here.
#[test]
fn matches_reference_with_large_offset() {
    check_against_reference(5, 2, 2, 4096, 100.0, 5.0);
    check_against_reference(6, 1, 2, 3000, 1000.0, 0.5);
}

/// Rows longer than the kernel's block (16k values), so the per-block partial sums and the
/// split of one row over several tasks are exercised, with a length that is not a multiple
/// of the block or the lane count.
#[test]
fn matches_reference_with_rows_split_into_blocks() {
    check_against_reference(7, 1, 2, 3 * 16384 + 13, 10.0, 3.0);
    // The longest rows of a full-resolution patch, where naive f32 sums drift.
    check_against_reference(9, 1, 1, (1 << 19) + 3, 20.0, 2.0);
}

/// The blocks that partial sums are taken over are fixed, so the thread count must not change a
/// single bit (training runs are compared across machines).
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (n, c, s) = (2, 3, 2 * 16384 + 5);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = randn(&mut rng, n * c * s, 4.0, 2.0);
    let gy = randn(&mut rng, n * c * s, 0.0, 1.0);
    let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(-2.0..2.0)).collect();
    let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-1.0..1.0)).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (y, stats) = instance_norm_leaky_forward(&x, n, c, s, &gamma, &beta, EPS, SLOPE);
            let grads =
                instance_norm_leaky_backward(&x, &gy, n, c, s, &gamma, &beta, &stats, SLOPE);
            (y, stats.mean, stats.rstd, grads)
        })
    };
    assert!(run(1) == run(3), "outputs differ between 1 and 3 threads");
}

/// gx, dgamma and dbeta against central differences of L = sum(y * w) computed with the
/// kernel's own forward.
#[test]
fn gradients_match_finite_differences() {
    let (n, c, s) = (1, 2, 10);
    let h = 1e-2f32;
    // The leaky kink makes the difference quotient meaningless for a value whose z lies within
    // about h of zero; take the first seed whose values all keep clear of it.
    let (x, w, gamma, beta) = (0..100u64)
        .find_map(|seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
            let x = randn(&mut rng, n * c * s, 0.0, 1.0);
            let w = randn(&mut rng, n * c * s, 0.0, 1.0);
            let gamma = vec![rng.random_range(0.5..1.5), -rng.random_range(0.5..1.5)];
            let beta = vec![rng.random_range(-0.5..0.5), rng.random_range(-0.5..0.5)];
            let r = reference(&x, &w, n, c, s, &gamma, &beta);
            let clear = (0..n * c * s).all(|i| {
                let ch = (i / s) % c;
                let z = gamma[ch] as f64 * (x[i] as f64 - r.mean[i / s]) * r.rstd[i / s]
                    + beta[ch] as f64;
                z.abs() > 0.1
            });
            let mixed = r.y.iter().any(|&y| y < 0.0) && r.y.iter().any(|&y| y > 0.0);
            (clear && mixed).then_some((x, w, gamma, beta))
        })
        .expect("no seed keeps clear of the kink");

    let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
        let (y, _) = instance_norm_leaky_forward(x, n, c, s, gamma, beta, EPS, SLOPE);
        y.iter().zip(&w).map(|(&y, &w)| y as f64 * w as f64).sum()
    };
    let (_, stats) = instance_norm_leaky_forward(&x, n, c, s, &gamma, &beta, EPS, SLOPE);
    let (gx, dgamma, dbeta) =
        instance_norm_leaky_backward(&x, &w, n, c, s, &gamma, &beta, &stats, SLOPE);

    let fd = |plus: f64, minus: f64| (plus - minus) / (2.0 * h as f64);
    let check = |what: &str, i: usize, got: f32, want: f64| {
        assert!(
            (got as f64 - want).abs() <= 2e-3 * (1.0 + want.abs()),
            "{what}[{i}]: analytic {got}, finite difference {want}"
        );
    };
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        check(
            "gx",
            i,
            gx[i],
            fd(loss(&xp, &gamma, &beta), loss(&xm, &gamma, &beta)),
        );
    }
    for ch in 0..c {
        let (mut gp, mut gm) = (gamma.clone(), gamma.clone());
        gp[ch] += h;
        gm[ch] -= h;
        check(
            "dgamma",
            ch,
            dgamma[ch],
            fd(loss(&x, &gp, &beta), loss(&x, &gm, &beta)),
        );
        let (mut bp, mut bm) = (beta.clone(), beta.clone());
        bp[ch] += h;
        bm[ch] -= h;
        check(
            "dbeta",
            ch,
            dbeta[ch],
            fd(loss(&x, &gamma, &bp), loss(&x, &gamma, &bm)),
        );
    }
}

#[test]
#[should_panic(expected = "gamma")]
fn wrong_gamma_length_is_named() {
    instance_norm_leaky_forward(&[0.0; 6], 1, 2, 3, &[1.0], &[0.0, 0.0], EPS, SLOPE);
}

#[test]
#[should_panic(expected = "gy")]
fn wrong_gradient_length_is_named() {
    let x = [0.0f32; 6];
    let (_, stats) = instance_norm_leaky_forward(&x, 1, 2, 3, &[1.0; 2], &[0.0; 2], EPS, SLOPE);
    instance_norm_leaky_backward(&x, &[0.0; 5], 1, 2, 3, &[1.0; 2], &[0.0; 2], &stats, SLOPE);
}
