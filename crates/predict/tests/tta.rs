//! Test-time mirroring keeps laterality: with the left-right flip averaged in (flip back AND
//! swap left/right classes), the prediction for a mirrored image is exactly the mirrored,
//! class-swapped prediction for the original — for any network, trained or not. A plain
//! flip without the swap would break this.

use burn::tensor::backend::Backend;
use glandseg_net::{Cpu, UNetConfig};
use glandseg_predict::sliding::{predict_probabilities, SlidingWindow, Tta};

#[test]
fn lr_tta_is_equivariant_under_mirror_with_swap() {
    let device = Default::default();
    Cpu::seed(&device, 11);
    let p = [16, 16, 16];
    let stages = glandseg_plan::plan::topology(p, [1.0; 3], glandseg_plan::Preset::Tiny);
    let classes = 5; // background, a_left, a_right, b_left, b_right
    let model = UNetConfig {
        in_channels: 2,
        num_classes: classes,
        stages,
    }
    .init::<Cpu>(&device);
    let swap = vec![0, 2, 1, 4, 3];
    let lr_axis = 0;
    let n = p[0] * p[1] * p[2];
    // An asymmetric two-channel image.
    let image: Vec<f32> = (0..2 * n)
        .map(|v| ((v * 7919 + v / 13) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let mirror = |data: &[f32], chans: usize| -> Vec<f32> {
        let mut out = vec![0f32; data.len()];
        for c in 0..chans {
            for k in 0..p[2] {
                for j in 0..p[1] {
                    for i in 0..p[0] {
                        out[c * n + (k * p[1] + j) * p[0] + i] =
                            data[c * n + (k * p[1] + j) * p[0] + (p[0] - 1 - i)];
                    }
                }
            }
        }
        out
    };
    let window = SlidingWindow {
        patch: p,
        step: 0.5,
        batch: 1,
    };
    let tta = Tta {
        mirror_lr: true,
        mirror_other_axes: false,
        lr_axis,
        swap: swap.clone(),
    };
    let run = |img: &[f32]| {
        predict_probabilities(
            std::slice::from_ref(&model),
            img,
            p,
            2,
            classes,
            &[0.0, 0.0],
            &window,
            &tta,
            &device,
            &glandseg_core::NoProgress,
        )
    };
    let original = run(&image);
    let of_mirrored = run(&mirror(&image, 2));
    // Mirror the original's probabilities and swap the left/right classes.
    let flipped = mirror(&original, classes);
    let mut expected = vec![0f32; flipped.len()];
    for c in 0..classes {
        expected[c * n..(c + 1) * n].copy_from_slice(&flipped[swap[c] * n..(swap[c] + 1) * n]);
    }
    let max_diff = expected
        .iter()
        .zip(&of_mirrored)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff < 1e-5,
        "TTA output not mirror-equivariant: {max_diff}"
    );
    // And the class-swap matters: without it the equality fails (the network is asymmetric).
    let unswapped = mirror(&original, classes);
    let diff_unswapped = unswapped
        .iter()
        .zip(&of_mirrored)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff_unswapped > 1e-3,
        "the test would not notice a missing swap"
    );
}
