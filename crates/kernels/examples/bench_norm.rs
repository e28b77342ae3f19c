//! Times the fused InstanceNorm + LeakyReLU kernel on the shapes of a 3D U-Net's levels: the
//! first two (few long rows, split within rows) and the deepest (many short rows).
//!
//! `cargo run --release -p glandseg-kernels --example bench_norm`
//!
//! Each figure is the best of several runs, the one least disturbed by the rest of the machine.
//! A plain copy of `x` is timed alongside as the memory-bandwidth yardstick.

use std::time::{Duration, Instant};

use glandseg_kernels::norm::{
    instance_norm_leaky_backward, instance_norm_leaky_forward, instance_norm_leaky_forward_inplace,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Best of `reps` timings of `run`, each after an untimed `setup` and before an untimed drop of
/// what it returns (freeing a large buffer unmaps it, which is not the kernel's cost).
fn best<S, T>(reps: usize, mut setup: impl FnMut() -> S, mut run: impl FnMut(S) -> T) -> Duration {
    (0..reps)
        .map(|_| {
            let input = setup();
            let t = Instant::now();
            let out = std::hint::black_box(run(input));
            let elapsed = t.elapsed();
            drop(out);
            elapsed
        })
        .min()
        .unwrap()
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!("rayon threads: {}", rayon::current_num_threads());
    for (n, c, spatial) in [
        (2, 16, 64 * 64 * 64),
        (2, 32, 32 * 32 * 32),
        (2, 320, 4 * 4 * 4),
    ] {
        let len = n * c * spatial;
        let x: Vec<f32> = (0..len).map(|_| rng.random_range(-2.0..3.0)).collect();
        let gy: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(-1.5..1.5)).collect();
        let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
        let (eps, slope) = (1e-5, 0.01);
        let reps = if len < 100_000 { 200 } else { 10 };

        let mut buf = x.clone();
        let copy = best(reps, || (), |_| buf.copy_from_slice(&x));
        drop(buf);
        let fwd = best(
            reps,
            || (),
            |_| instance_norm_leaky_forward(&x, n, c, spatial, &gamma, &beta, eps, slope),
        );
        let fwd_inplace = best(
            reps,
            || x.clone(),
            |mut buf| {
                instance_norm_leaky_forward_inplace(
                    &mut buf, n, c, spatial, &gamma, &beta, eps, slope,
                );
                buf
            },
        );
        let (_, stats) = instance_norm_leaky_forward(&x, n, c, spatial, &gamma, &beta, eps, slope);
        let bwd = best(
            reps,
            || (),
            |_| instance_norm_leaky_backward(&x, &gy, n, c, spatial, &gamma, &beta, &stats, slope),
        );

        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "n={n} c={c} spatial={spatial} ({:.2} MB): forward {:.2} ms, forward in place {:.2} ms, \
             backward {:.2} ms (copy of x: {:.2} ms)",
            len as f64 * 4.0 / 1e6,
            ms(fwd),
            ms(fwd_inplace),
            ms(bwd),
            ms(copy),
        );
    }
}
