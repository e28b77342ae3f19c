//! Throughput of the convolution kernels on the network's layer shapes.
//! `cargo run -p glandseg-kernels --example bench_conv [size]`
use glandseg_kernels::conv::{
    conv3d, conv3d_backward, conv3d_bf16, conv3d_bf16_uses_amx, conv_transpose3d, ConvGeometry,
};
use std::time::Instant;

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let _ = f();
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let s: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    println!("threads {}", rayon::current_num_threads());
    for (a, b, size, stride) in [
        (2usize, 16usize, s, 1usize),
        (16, 16, s, 1),
        (16, 32, s, 2),
        (32, 32, s / 2, 1),
        (64, 64, s / 4, 1),
        (128, 128, s / 8, 1),
    ] {
        let g = ConvGeometry {
            batch: 2,
            in_channels: a,
            out_channels: b,
            in_size: [size; 3],
            kernel: [3; 3],
            stride: [stride; 3],
            padding: [1; 3],
        };
        let vi = size * size * size;
        let vo: usize = g.out_size().iter().product();
        let x = vec![0.5f32; 2 * a * vi];
        let w = vec![0.01f32; a * b * 27];
        let gy = vec![0.1f32; 2 * b * vo];
        let flops = 2.0 * 2.0 * (a * b * 27 * vo) as f64;
        let f = time(3, || conv3d(&x, &w, None, &g));
        let bw = time(3, || conv3d_backward(&x, &w, &gy, &g, true));
        println!(
            "conv {a:>3}->{b:<3} {size}^3 s{stride} b2: fwd {:7.1} ms ({:5.1} GFLOP/s)  bwd {:7.1} ms ({:5.1} GFLOP/s)",
            f * 1e3,
            flops / f / 1e9,
            bw * 1e3,
            2.0 * flops / bw / 1e9
        );
        if conv3d_bf16_uses_amx(&g) {
            let h = time(3, || conv3d_bf16(&x, &w, None, &g));
            println!(
                "    bf16 fwd {:7.1} ms ({:5.1} GFLOP/s)",
                h * 1e3,
                flops / h / 1e9
            );
        } else {
            println!("    bf16 n/a");
        }
    }
    let (a, b, size) = (16usize, 32usize, s);
    let g = ConvGeometry {
        batch: 2,
        in_channels: a,
        out_channels: b,
        in_size: [size; 3],
        kernel: [2; 3],
        stride: [2; 3],
        padding: [0; 3],
    };
    let vo: usize = g.out_size().iter().product();
    let x = vec![0.5f32; 2 * b * vo];
    let w = vec![0.01f32; a * b * 8];
    let t = time(3, || conv_transpose3d(&x, &w, None, &g));
    println!(
        "convT {b}->{a} k2 s2 to {size}^3 b2: {:.1} ms ({:.1} GFLOP/s)",
        t * 1e3,
        2.0 * 2.0 * (a * b * 8 * vo) as f64 / t / 1e9
    );
}
