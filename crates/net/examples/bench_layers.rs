//! Where a training step's time goes, layer by layer (flex backend, this machine's threads).
//! `cargo run --release -p glandseg-net --example bench_layers`
use burn::module::Module;
use burn::nn::conv::{Conv3dConfig, ConvTranspose3dConfig};
use burn::nn::{InstanceNormConfig, PaddingConfig3d};
use burn::tensor::{Distribution, Tensor};
use glandseg_net::{Cpu, CpuAutodiff};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, reps: usize, mut f: F) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    println!(
        "{name:<48} {:>9.1} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

fn main() {
    let d = Default::default();
    let s = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(48usize);
    for (cin, cout) in [(2usize, 8usize), (8, 8), (16, 16), (32, 32)] {
        let x = Tensor::<Cpu, 5>::random([2, cin, s, s, s], Distribution::Default, &d);
        let conv = Conv3dConfig::new([cin, cout], [3, 3, 3])
            .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
            .init::<Cpu>(&d);
        time(&format!("conv3d {cin}->{cout} k3 {s}^3 b2 fwd"), 3, || {
            let _ = conv.forward(x.clone()).into_data();
        });
        let xa = Tensor::<CpuAutodiff, 5>::random([2, cin, s, s, s], Distribution::Default, &d)
            .require_grad();
        let conva = Conv3dConfig::new([cin, cout], [3, 3, 3])
            .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
            .init::<CpuAutodiff>(&d);
        time(
            &format!("conv3d {cin}->{cout} k3 {s}^3 b2 fwd+bwd"),
            3,
            || {
                let y = conva.forward(xa.clone()).sum();
                let _ = y.backward();
            },
        );
        let gflop = 2.0 * 2.0 * (s * s * s) as f64 * 27.0 * (cin * cout) as f64 / 1e9;
        println!("   ({gflop:.2} GFLOP forward)");
    }
    let x = Tensor::<Cpu, 5>::random([2, 8, s, s, s], Distribution::Default, &d);
    let norm = InstanceNormConfig::new(8).with_affine(true).init::<Cpu>(&d);
    time("instance norm 8ch fwd", 5, || {
        let _ = norm.forward(x.clone()).into_data();
    });
    let xa =
        Tensor::<CpuAutodiff, 5>::random([2, 8, s, s, s], Distribution::Default, &d).require_grad();
    let norma = InstanceNormConfig::new(8)
        .with_affine(true)
        .init::<CpuAutodiff>(&d);
    time("instance norm 8ch fwd+bwd", 5, || {
        let _ = norma.forward(xa.clone()).sum().backward();
    });
    let down = Conv3dConfig::new([8, 16], [3, 3, 3])
        .with_stride([2, 2, 2])
        .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
        .init::<CpuAutodiff>(&d);
    time("conv3d 8->16 stride 2 fwd+bwd", 3, || {
        let _ = down.forward(xa.clone()).sum().backward();
    });
    let h =
        Tensor::<CpuAutodiff, 5>::random([2, 16, s / 2, s / 2, s / 2], Distribution::Default, &d)
            .require_grad();
    let up = ConvTranspose3dConfig::new([16, 8], [2, 2, 2])
        .with_stride([2, 2, 2])
        .init::<CpuAutodiff>(&d);
    time("conv transpose 16->8 x2 fwd+bwd", 3, || {
        let _ = up.forward(h.clone()).sum().backward();
    });
    let _ = down.num_params();
}
