//! The hand-written kernels give the same layers, network outputs and gradients as burn's
//! own modules (the path before them), on the CPU backend with autodiff.

use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv3dConfig, ConvTranspose3dConfig};
use burn::nn::{InstanceNormConfig, LeakyReluConfig, PaddingConfig3d};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use glandseg_net::backend::{self, with_burn_modules, NetBackend};
use glandseg_net::{downsample_labels, Cpu, CpuAutodiff, DeepSupervisionLoss, UNetConfig};
use glandseg_plan::plan::topology;

type B = CpuAutodiff;

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn grad_values<const D: usize>(
    t: &Tensor<B, D>,
    grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<f32> {
    t.grad(grads)
        .expect("a gradient")
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_close_at(what, a, b, tol, 1e-6);
}

/// Differences relative to the larger of `b`'s magnitude and `floor`.
fn assert_close_at(what: &str, a: &[f32], b: &[f32], tol: f32, floor: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tol * scale,
        "{what}: max difference {worst} (scale {scale})"
    );
}

type Grads = <B as burn::tensor::backend::AutodiffBackend>::Gradients;

/// The backend's random generator is global: tests that seed it run one at a time, so each
/// draws the inputs its seed gives (in parallel they drew each other's numbers, and one
/// draw in about eight took a gradient past the tolerance, relative error 1.1-1.4e-3).
fn seeded() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks the two forward outputs within `tol`, then returns the gradients of the same
/// random projection of each (compared with [`assert_grads_close`]).
fn forward_then_grads(
    what: &str,
    ours: Tensor<B, 5>,
    theirs: Tensor<B, 5>,
    tol: f32,
) -> (Grads, Grads) {
    let device = ours.device();
    let w = Tensor::<B, 5>::random(ours.dims(), Distribution::Default, &device);
    assert_close(
        &format!("{what} forward"),
        &values(ours.clone()),
        &values(theirs.clone()),
        tol,
    );
    let g1 = (ours * w.clone()).sum().backward();
    let g2 = (theirs * w).sum().backward();
    (g1, g2)
}

/// `t`'s gradient in both sets within `tol`.
fn assert_grads_close<const D: usize>(
    what: &str,
    t: &Tensor<B, D>,
    g1: &Grads,
    g2: &Grads,
    tol: f32,
) {
    assert_close(what, &grad_values(t, g1), &grad_values(t, g2), tol);
}

#[test]
fn the_cpu_backend_reports_kernels_and_the_override_turns_them_off() {
    assert!(<Cpu as NetBackend>::has_kernels());
    assert!(<B as NetBackend>::has_kernels());
    with_burn_modules(|| assert!(!<B as NetBackend>::has_kernels()));
    assert!(<B as NetBackend>::has_kernels());
}

#[test]
fn layers_match_burns_modules_forward_and_backward() {
    let _seeded = seeded();
    let device = Default::default();
    B::seed(&device, 3);
    for (cin, cout, stride, size) in [
        (3, 5, 1, [6, 7, 5]),
        (4, 6, 2, [8, 6, 7]),
        (2, 4, 1, [1, 3, 4]),
    ] {
        let conv = Conv3dConfig::new([cin, cout], [3, 3, 3])
            .with_stride([stride; 3])
            .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
            .init::<B>(&device);
        let x = Tensor::<B, 5>::random(
            [2, cin, size[0], size[1], size[2]],
            Distribution::Default,
            &device,
        )
        .require_grad();
        let ours = backend::conv3d(&conv, x.clone());
        let theirs = conv.forward(x.clone());
        let (g1, g2) = forward_then_grads("conv", ours, theirs, 1e-5);
        assert_grads_close("conv dx", &x, &g1, &g2, 1e-5);
        assert_grads_close("conv dw", &conv.weight.val(), &g1, &g2, 1e-5);
        let b = conv.bias.as_ref().unwrap().val();
        assert_grads_close("conv db", &b, &g1, &g2, 1e-5);
    }
    let up = ConvTranspose3dConfig::new([6, 3], [2, 2, 2])
        .with_stride([2, 2, 2])
        .init::<B>(&device);
    let x = Tensor::<B, 5>::random([2, 6, 3, 4, 2], Distribution::Default, &device).require_grad();
    let ours = backend::conv_transpose3d(&up, x.clone());
    let theirs = up.forward(x.clone());
    assert_eq!(ours.dims(), [2, 3, 6, 8, 4]);
    let (g1, g2) = forward_then_grads("convT", ours, theirs, 1e-5);
    assert_grads_close("convT dx", &x, &g1, &g2, 1e-5);
    assert_grads_close("convT dw", &up.weight.val(), &g1, &g2, 1e-5);

    let norm = InstanceNormConfig::new(4)
        .with_affine(true)
        .with_epsilon(1e-5)
        .init::<B>(&device);
    // Non-trivial affine parameters so a swapped gamma/beta would show.
    let norm = norm.map(&mut RandomiseParams { device });
    let act = LeakyReluConfig::new().with_negative_slope(0.01).init();
    let x = (Tensor::<B, 5>::random([2, 4, 5, 6, 7], Distribution::Default, &device) * 3.0 + 2.0)
        .detach()
        .require_grad();
    let ours = backend::norm_leaky(&norm, &act, x.clone());
    let theirs = act.forward(norm.forward(x.clone()));
    let (g1, g2) = forward_then_grads("norm", ours, theirs, 1e-5);
    assert_grads_close("norm dx", &x, &g1, &g2, 1e-4);
    for (name, p) in [("gamma", norm.gamma.as_ref()), ("beta", norm.beta.as_ref())] {
        assert_grads_close(name, &p.unwrap().val(), &g1, &g2, 1e-4);
    }
}

struct RandomiseParams {
    device: burn::tensor::Device<B>,
}

impl burn::module::ModuleMapper<B> for RandomiseParams {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let r = Tensor::<B, D>::random(t.shape(), Distribution::Uniform(-1.5, 1.5), &self.device);
        burn::module::Param::from_mapped_value(id, r.detach().require_grad(), mapper)
    }
}

#[test]
fn unet_outputs_and_gradients_match_burns_modules() {
    let _seeded = seeded();
    let device = Default::default();
    B::seed(&device, 5);
    let s = 16;
    let stages = topology([s, s, s], [1.0; 3], glandseg_plan::Preset::Tiny);
    let model = UNetConfig {
        in_channels: 2,
        num_classes: 4,
        stages: stages.clone(),
    }
    .init::<B>(&device);
    let x = Tensor::<B, 5>::random([2, 2, s, s, s], Distribution::Default, &device);
    let labels: Vec<u8> = (0..2 * s * s * s).map(|v| ((v / 37) % 4) as u8).collect();
    let run = || {
        let outs = model.forward_all(x.clone());
        let loss_fn = DeepSupervisionLoss::new(outs.len());
        let targets: Vec<_> = (0..outs.len())
            .map(|level| {
                let f = 1usize << level;
                let (v, shape) = downsample_labels(&labels, [2, s, s, s], [f, f, f]);
                Tensor::<B, 4, burn::tensor::Int>::from_data(
                    TensorData::new(v.into_iter().map(|l| l as i64).collect::<Vec<_>>(), shape),
                    &device,
                )
            })
            .collect();
        let logits = values(outs[0].clone());
        let loss = loss_fn.loss(outs, targets);
        let grads = loss.backward();
        let mut gv = Vec::new();
        model.visit(&mut Collect {
            grads: &grads,
            out: &mut gv,
        });
        (logits, gv)
    };
    let (logits, grads) = run();
    let (logits_burn, grads_burn) = with_burn_modules(run);
    assert_close("logits", &logits, &logits_burn, 1e-4);
    assert_eq!(grads.len(), grads_burn.len());
    // Biases in front of an InstanceNorm have a zero gradient (up to rounding), so the
    // differences are measured against the largest gradient of the whole network.
    let largest = grads_burn
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(largest > 0.0);
    for (i, (a, b)) in grads.iter().zip(&grads_burn).enumerate() {
        assert_close_at(&format!("parameter {i} gradient"), a, b, 1e-3, largest);
    }
    // The inference model (no autodiff) gives the same logits as well.
    let valid = model.valid();
    let inner = values2(valid.forward(x.inner()));
    assert_close("inference logits", &inner, &logits, 1e-5);
}

fn values2(t: Tensor<Cpu, 5>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

struct Collect<'a> {
    grads: &'a <B as burn::tensor::backend::AutodiffBackend>::Gradients,
    out: &'a mut Vec<Vec<f32>>,
}

impl burn::module::ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        // The coarsest head has deep-supervision weight 0, hence no gradient on either path.
        let g = param.val().grad(self.grads);
        self.out.push(g.map_or_else(Vec::new, |g| {
            g.into_data().convert::<f32>().to_vec().unwrap()
        }));
    }
}

#[test]
fn fused_dice_ce_matches_the_tensor_op_loss_and_its_gradient() {
    let _seeded = seeded();
    let device = Default::default();
    B::seed(&device, 9);
    // Class 3 of 4 never occurs in the labels: its Dice term rests on the epsilon alone.
    let (n, c, d, h, w) = (2, 4, 5, 6, 7);
    let labels: Vec<i64> = (0..n * d * h * w)
        .map(|v| ((v * 7 + v / 5) % 3) as i64)
        .collect();
    let labels = Tensor::<B, 4, burn::tensor::Int>::from_data(
        TensorData::new(labels, [n, d, h, w]),
        &device,
    );
    let z = (Tensor::<B, 5>::random([n, c, d, h, w], Distribution::Default, &device) * 4.0)
        .detach()
        .require_grad();
    let ours = backend::dice_ce(z.clone(), labels.clone());
    let theirs = glandseg_net::loss::dice_ce_reference(z.clone(), labels);
    assert_close("loss", &values(ours.clone()), &values(theirs.clone()), 1e-5);
    // Scaled upstream gradient, so the backward's use of it is checked too.
    let g1 = (ours * 3.0).sum().backward();
    let g2 = (theirs * 3.0).sum().backward();
    assert_close("dL/dz", &grad_values(&z, &g1), &grad_values(&z, &g2), 1e-4);
}
