//! A burn backend extension for the network's hot layers: 3D convolution, its transpose and
//! InstanceNorm + LeakyReLU as one operation.
//!
//! burn-flex runs these at a tenth of PyTorch's speed on the CPU (its convolution gradient
//! w.r.t. the weights is a convolution with the whole output gradient as kernel, and the
//! normalisation is a chain of a dozen tensor operations, each a pass over memory). On
//! `Flex` the operations here call `glandseg-kernels`; `Autodiff<B>` records them with
//! their own backward step; any other backend (CUDA) answers `has_kernels() == false` and
//! the model keeps burn's modules, so the GPU path is unchanged. The default method bodies
//! are burn's own operations, which keeps every backend correct if it is called anyway.
//!
//! Set `GLANDSEG_BURN_KERNELS=1` (or use [`with_burn_modules`]) to make `Flex` report no
//! kernels, which runs the network exactly as before: the benchmark's "before" column and
//! the equivalence tests.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{
    ConvOptions, ConvTransposeOptions, FloatTensor, FloatTensorOps, IntTensor, ModuleOps,
};
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use glandseg_kernels::conv::{self, ConvGeometry};
use glandseg_kernels::{loss, norm};
use std::borrow::Cow;

/// Gradients of a layer with a weight and an optional bias.
pub struct LayerGrads<B: Backend> {
    pub input: Option<FloatTensor<B>>,
    pub weight: FloatTensor<B>,
    pub bias: Option<FloatTensor<B>>,
}

/// Gradients of the fused InstanceNorm + LeakyReLU.
pub struct NormGrads<B: Backend> {
    pub input: FloatTensor<B>,
    pub gamma: FloatTensor<B>,
    pub beta: FloatTensor<B>,
}

/// The operations the U-Net needs beyond burn's, with burn's implementations as defaults.
pub trait NetBackend: Backend {
    /// Whether the hand-written kernels run on this backend (the model then uses the
    /// operations below instead of burn's modules).
    fn has_kernels() -> bool {
        false
    }

    fn net_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<3>,
    ) -> FloatTensor<Self> {
        Self::conv3d(x, weight, bias, options)
    }

    fn net_conv3d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gy: FloatTensor<Self>,
        options: ConvOptions<3>,
        want_input: bool,
        want_bias: bool,
    ) -> LayerGrads<Self> {
        LayerGrads {
            input: want_input.then(|| {
                Self::conv3d_x_backward(x.clone(), weight.clone(), gy.clone(), options.clone())
            }),
            bias: want_bias.then(|| channel_sum::<Self>(gy.clone())),
            weight: Self::conv3d_weight_backward(x, weight, gy, options),
        }
    }

    fn net_conv_transpose3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<3>,
    ) -> FloatTensor<Self> {
        Self::conv_transpose3d(x, weight, bias, options)
    }

    fn net_conv_transpose3d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        gy: FloatTensor<Self>,
        options: ConvTransposeOptions<3>,
        want_input: bool,
        want_bias: bool,
    ) -> LayerGrads<Self> {
        LayerGrads {
            input: want_input.then(|| {
                Self::conv_transpose3d_x_backward(weight.clone(), gy.clone(), options.clone())
            }),
            bias: want_bias.then(|| channel_sum::<Self>(gy.clone())),
            weight: Self::conv_transpose3d_weight_backward(x, weight, gy, options),
        }
    }

    /// Dice + cross-entropy of `[N, C, ...]` logits against `[N, ...]` labels: the loss as a
    /// one-element tensor, and its gradient with respect to the logits. The default runs
    /// the CPU kernel on the data read back from the device.
    fn net_dice_ce_with_grad(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = logits.shape();
        let device = Self::float_device(&logits);
        let z = wrap::<Self, 5>(logits).into_data().convert::<f32>();
        let l: Tensor<Self, 4, Int> = Tensor::from_primitive(labels);
        let l = label_bytes(l.into_data());
        let z = z.to_vec::<f32>().expect("f32 logits");
        let (n, c) = (shape[0], shape[1]);
        let r = loss::dice_ce(&z, &l, n, c, shape.num_elements() / (n * c));
        let loss = Tensor::<Self, 1>::from_data(TensorData::new(vec![r.loss], [1]), &device);
        let grad =
            Tensor::<Self, 1>::from_data(TensorData::new(r.grad, [shape.num_elements()]), &device);
        (float(loss), Self::float_reshape(float(grad), shape))
    }

    /// The loss of [`NetBackend::net_dice_ce_with_grad`] alone (autodiff records its gradient).
    fn net_dice_ce(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> FloatTensor<Self> {
        Self::net_dice_ce_with_grad(logits, labels).0
    }

    /// `[a, b]` concatenated along the channels (the decoder's skip connection).
    fn net_cat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_cat(vec![a, b], 1)
    }

    /// The inverse of [`NetBackend::net_cat_channels`] for its gradient: the first
    /// `channels` channels and the rest, each a tensor of its own.
    fn net_split_channels(
        x: FloatTensor<Self>,
        channels: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        narrow_split::<Self>(x, channels)
    }

    /// `leaky(InstanceNorm(x) * gamma + beta)`, biased variance per (sample, channel).
    fn net_norm_leaky(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        slope: f64,
    ) -> FloatTensor<Self> {
        let (z, shape) = norm_reference::<Self>(x, gamma, beta, eps);
        let z: Tensor<Self, 3> = Tensor::from_primitive(TensorPrimitive::Float(z));
        let y = burn::tensor::activation::leaky_relu(z, slope);
        Self::float_reshape(y.into_primitive().tensor(), shape)
    }

    /// The default runs the CPU kernel on the data read back from the device.
    fn net_norm_leaky_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        gy: FloatTensor<Self>,
        eps: f64,
        slope: f64,
    ) -> NormGrads<Self> {
        let shape = x.shape();
        let device = Self::float_device(&x);
        let host = |t: FloatTensor<Self>| -> Vec<f32> {
            let len = t.shape().num_elements();
            wrap::<Self, 1>(Self::float_reshape(t, Shape::new([len])))
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 values")
        };
        let (xs, gs, bs, gys) = (host(x), host(gamma), host(beta), host(gy));
        let (n, c) = (shape[0], shape[1]);
        let s = shape.num_elements() / (n * c);
        let stats = norm::instance_norm_stats(&xs, n, c, s, eps as f32);
        let (gx, dgamma, dbeta) =
            norm::instance_norm_leaky_backward(&xs, &gys, n, c, s, &gs, &bs, &stats, slope as f32);
        let upload = |v: Vec<f32>, to: Shape| {
            let len = v.len();
            let t = Tensor::<Self, 1>::from_data(TensorData::new(v, [len]), &device);
            Self::float_reshape(float(t), to)
        };
        NormGrads {
            input: upload(gx, shape),
            gamma: upload(dgamma, Shape::new([c])),
            beta: upload(dbeta, Shape::new([c])),
        }
    }
}

/// `x`'s first `channels` channels and the rest, as burn's (strided) narrow views.
fn narrow_split<B: Backend>(
    x: FloatTensor<B>,
    channels: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let total = x.shape()[1];
    let x = wrap::<B, 5>(x);
    let first = float(x.clone().narrow(1, 0, channels));
    (first, float(x.narrow(1, channels, total - channels)))
}

/// Integer labels as the loss kernel's bytes; a value outside 0..=255 becomes 255 rather
/// than wrapping into range, so the kernel's class check names it.
fn label_bytes(data: TensorData) -> Vec<u8> {
    data.convert::<i64>()
        .to_vec::<i64>()
        .expect("integer labels convert to i64")
        .into_iter()
        .map(|v| u8::try_from(v).unwrap_or(u8::MAX))
        .collect()
}

/// (z = gamma * xhat + beta as `[N, C, spatial]`, the input's shape) with burn's operations.
fn norm_reference<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, Shape) {
    let shape = x.shape();
    let (n, c) = (shape[0], shape[1]);
    let s = shape.num_elements() / (n * c);
    let x: Tensor<B, 3> = Tensor::from_primitive(TensorPrimitive::Float(B::float_reshape(
        x,
        Shape::new([n, c, s]),
    )));
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2);
    let rstd = var.add_scalar(eps).sqrt().recip();
    let xhat = centred * rstd;
    let gamma: Tensor<B, 1> = Tensor::from_primitive(TensorPrimitive::Float(gamma));
    let beta: Tensor<B, 1> = Tensor::from_primitive(TensorPrimitive::Float(beta));
    let z = xhat * gamma.reshape([1, c, 1]) + beta.reshape([1, c, 1]);
    (z.into_primitive().tensor(), shape)
}

/// Sum over every axis but the channel axis (the bias gradient).
fn channel_sum<B: Backend>(gy: FloatTensor<B>) -> FloatTensor<B> {
    let shape = gy.shape();
    let c = shape[1];
    let t = B::float_swap_dims(gy, 0, 1);
    let t = B::float_reshape(t, Shape::new([c, shape.num_elements() / c]));
    B::float_reshape(B::float_sum_dim(t, 1), Shape::new([c]))
}

// ---------------------------------------------------------------------------------------
// Flex: the hand-written kernels.
// ---------------------------------------------------------------------------------------

fn kernels_disabled() -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    BURN_MODULES.get()
        || *DISABLED.get_or_init(|| {
            std::env::var("GLANDSEG_BURN_KERNELS").is_ok_and(|v| !v.is_empty() && v != "0")
        })
}

thread_local! {
    static BURN_MODULES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with burn's own modules instead of the kernels on this thread: the network as it
/// ran before the kernels existed, for side-by-side comparisons in tests and benchmarks.
pub fn with_burn_modules<T>(f: impl FnOnce() -> T) -> T {
    with_thread_setting(&BURN_MODULES, true, f)
}

/// Runs `f` with the thread-local `setting` at `value`, restored afterwards even if `f`
/// panics.
fn with_thread_setting<V: Copy + 'static, T>(
    setting: &'static std::thread::LocalKey<std::cell::Cell<V>>,
    value: V,
    f: impl FnOnce() -> T,
) -> T {
    struct Restore<V: Copy + 'static>(&'static std::thread::LocalKey<std::cell::Cell<V>>, V);
    impl<V: Copy + 'static> Drop for Restore<V> {
        fn drop(&mut self) {
            self.0.set(self.1);
        }
    }
    let _restore = Restore(setting, setting.replace(value));
    f()
}

/// Arithmetic of the convolutions at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 throughout (training always runs this way).
    #[default]
    F32,
    /// Convolutions read bf16 inputs and weights and accumulate in f32 on the CPU's AMX
    /// tiles (Intel Sapphire Rapids and later); everything else stays f32. Layers the tiles
    /// do not fit (fewer than 16 input channels, output channels not a multiple of 16) and
    /// CPUs without AMX run f32.
    Bf16,
}

impl Precision {
    /// Whether `self` changes anything on this machine (bf16 needs AMX).
    pub fn is_available(self) -> bool {
        match self {
            Precision::F32 => true,
            Precision::Bf16 => conv::bf16_supported(),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision {s:?} (f32 or bf16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

thread_local! {
    static PRECISION: std::cell::Cell<Precision> = const { std::cell::Cell::new(Precision::F32) };
}

/// Runs `f` (an inference) with the convolutions on this thread in `precision`. Only the
/// forward convolution of `Flex` changes; a tracked (training) forward must not run inside
/// this, since its backward pass assumes f32.
pub fn with_precision<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    with_thread_setting(&PRECISION, precision, f)
}

fn f32s(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.clone()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("an f32 tensor converts to f32 values"),
        ),
    }
}

fn tensor(v: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape.to_vec()))
}

fn dims5(t: &FlexTensor) -> [usize; 5] {
    let s = t.shape();
    [s[0], s[1], s[2], s[3], s[4]]
}

/// The kernels' geometry for a burn convolution, or None where they do not apply.
fn conv_geometry(x: &FlexTensor, w: &FlexTensor, o: &ConvOptions<3>) -> Option<ConvGeometry> {
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 || o.groups != 1 || o.dilation != [1; 3] {
        return None;
    }
    let [n, a, d, h, wd] = dims5(x);
    let [b, a2, kd, kh, kw] = dims5(w);
    let g = ConvGeometry {
        batch: n,
        in_channels: a,
        out_channels: b,
        in_size: [d, h, wd],
        kernel: [kd, kh, kw],
        stride: o.stride,
        padding: o.padding,
    };
    (a == a2 && g.is_supported()).then_some(g)
}

/// Geometry of the convolution whose transpose this is (strided side = the output).
fn conv_transpose_geometry(
    x: &FlexTensor,
    w: &FlexTensor,
    o: &ConvTransposeOptions<3>,
) -> Option<ConvGeometry> {
    if x.dtype() != DType::F32
        || w.dtype() != DType::F32
        || o.groups != 1
        || o.dilation != [1; 3]
        || o.padding_out != [0; 3]
    {
        return None;
    }
    let [n, b, xd, xh, xw] = dims5(x);
    let [b2, a, kd, kh, kw] = dims5(w);
    let k = [kd, kh, kw];
    let mut size = [0; 3];
    for i in 0..3 {
        let full = (([xd, xh, xw][i] - 1) * o.stride[i] + k[i]).checked_sub(2 * o.padding[i])?;
        size[i] = full;
    }
    let g = ConvGeometry {
        batch: n,
        in_channels: a,
        out_channels: b,
        in_size: size,
        kernel: k,
        stride: o.stride,
        padding: o.padding,
    };
    (b == b2 && g.is_supported() && g.out_size() == [xd, xh, xw]).then_some(g)
}

fn out_shape(g: &ConvGeometry) -> [usize; 5] {
    let o = g.out_size();
    [g.batch, g.out_channels, o[0], o[1], o[2]]
}

fn in_shape(g: &ConvGeometry) -> [usize; 5] {
    let s = g.in_size;
    [g.batch, g.in_channels, s[0], s[1], s[2]]
}

impl NetBackend for Flex {
    fn has_kernels() -> bool {
        !kernels_disabled()
    }

    fn net_conv3d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: ConvOptions<3>,
    ) -> FlexTensor {
        let Some(g) = conv_geometry(&x, &weight, &options) else {
            return Flex::conv3d(x, weight, bias, options);
        };
        let b = bias.as_ref().map(f32s);
        let y = match PRECISION.get() {
            Precision::F32 => conv::conv3d(&f32s(&x), &f32s(&weight), b.as_deref(), &g),
            Precision::Bf16 => conv::conv3d_bf16(&f32s(&x), &f32s(&weight), b.as_deref(), &g),
        };
        tensor(y, &out_shape(&g))
    }

    fn net_conv3d_backward(
        x: FlexTensor,
        weight: FlexTensor,
        gy: FlexTensor,
        options: ConvOptions<3>,
        want_input: bool,
        want_bias: bool,
    ) -> LayerGrads<Flex> {
        let Some(g) = conv_geometry(&x, &weight, &options) else {
            return LayerGrads {
                input: want_input.then(|| {
                    Flex::conv3d_x_backward(x.clone(), weight.clone(), gy.clone(), options.clone())
                }),
                bias: want_bias.then(|| channel_sum::<Flex>(gy.clone())),
                weight: Flex::conv3d_weight_backward(x, weight, gy, options),
            };
        };
        let wshape = dims5(&weight);
        let r = conv::conv3d_backward(&f32s(&x), &f32s(&weight), &f32s(&gy), &g, want_input);
        LayerGrads {
            input: want_input.then(|| tensor(r.input, &in_shape(&g))),
            weight: tensor(r.weight, &wshape),
            bias: want_bias.then(|| tensor(r.bias, &[g.out_channels])),
        }
    }

    fn net_conv_transpose3d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: ConvTransposeOptions<3>,
    ) -> FlexTensor {
        let Some(g) = conv_transpose_geometry(&x, &weight, &options) else {
            return Flex::conv_transpose3d(x, weight, bias, options);
        };
        let b = bias.as_ref().map(f32s);
        let y = conv::conv_transpose3d(&f32s(&x), &f32s(&weight), b.as_deref(), &g);
        tensor(y, &in_shape(&g))
    }

    fn net_conv_transpose3d_backward(
        x: FlexTensor,
        weight: FlexTensor,
        gy: FlexTensor,
        options: ConvTransposeOptions<3>,
        want_input: bool,
        want_bias: bool,
    ) -> LayerGrads<Flex> {
        let Some(g) = conv_transpose_geometry(&x, &weight, &options) else {
            return LayerGrads {
                input: want_input.then(|| {
                    Flex::conv_transpose3d_x_backward(weight.clone(), gy.clone(), options.clone())
                }),
                bias: want_bias.then(|| channel_sum::<Flex>(gy.clone())),
                weight: Flex::conv_transpose3d_weight_backward(x, weight, gy, options),
            };
        };
        let wshape = dims5(&weight);
        let r =
            conv::conv_transpose3d_backward(&f32s(&x), &f32s(&weight), &f32s(&gy), &g, want_input);
        LayerGrads {
            input: want_input.then(|| tensor(r.input, &out_shape(&g))),
            weight: tensor(r.weight, &wshape),
            bias: want_bias.then(|| tensor(r.bias, &[g.in_channels])),
        }
    }

    fn net_dice_ce_with_grad(logits: FlexTensor, labels: FlexTensor) -> (FlexTensor, FlexTensor) {
        let shape = logits.shape();
        let (n, c) = (shape[0], shape[1]);
        let l = label_bytes(labels.into_data());
        let r = loss::dice_ce(&f32s(&logits), &l, n, c, shape.num_elements() / (n * c));
        (tensor(vec![r.loss], &[1]), tensor(r.grad, &shape.to_vec()))
    }

    fn net_split_channels(x: FlexTensor, channels: usize) -> (FlexTensor, FlexTensor) {
        // burn's narrow gives strided views; every later use (the gradient sums of the
        // skip connection, the convolutions' host copies) then walked them element by
        // element (~5 % of a training step). Two plain copies instead.
        let [n, c, d, h, w] = dims5(&x);
        assert!(channels <= c, "split at channel {channels} of {c}");
        if x.dtype() != DType::F32 {
            return narrow_split::<Flex>(x, channels);
        }
        let v = d * h * w;
        let data = f32s(&x);
        let part = |lo: usize, k: usize| {
            let mut out = Vec::with_capacity(n * k * v);
            for b in 0..n {
                out.extend_from_slice(&data[(b * c + lo) * v..][..k * v]);
            }
            tensor(out, &[n, k, d, h, w])
        };
        (part(0, channels), part(channels, c - channels))
    }

    fn net_norm_leaky(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
        slope: f64,
    ) -> FlexTensor {
        if x.dtype() != DType::F32 || x.shape().num_dims() < 3 {
            let (z, shape) = norm_reference::<Flex>(x, gamma, beta, eps);
            let z: Tensor<Flex, 3> = Tensor::from_primitive(TensorPrimitive::Float(z));
            let y = burn::tensor::activation::leaky_relu(z, slope);
            return Flex::float_reshape(y.into_primitive().tensor(), shape);
        }
        let shape = x.shape();
        let (n, c) = (shape[0], shape[1]);
        let s = shape.num_elements() / (n * c);
        // Inference hands over the convolution's output, which nothing else holds: normalise
        // it in place (saves an allocation and a pass of fresh pages per layer).
        let mut x = x;
        let whole = x.is_contiguous() && x.layout().start_offset() == 0;
        let (gv, bv) = (f32s(&gamma).into_owned(), f32s(&beta).into_owned());
        if whole {
            if let Some(buf) = x.try_storage_mut::<f32>() {
                if buf.len() == n * c * s {
                    norm::instance_norm_leaky_forward_inplace(
                        buf,
                        n,
                        c,
                        s,
                        &gv,
                        &bv,
                        eps as f32,
                        slope as f32,
                    );
                    return x;
                }
            }
        }
        let (y, _) = norm::instance_norm_leaky_forward(
            &f32s(&x),
            n,
            c,
            s,
            &gv,
            &bv,
            eps as f32,
            slope as f32,
        );
        tensor(y, &shape.to_vec())
    }

    fn net_norm_leaky_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        gy: FlexTensor,
        eps: f64,
        slope: f64,
    ) -> NormGrads<Flex> {
        let shape = x.shape();
        let (n, c) = (shape[0], shape[1]);
        let s = shape.num_elements() / (n * c);
        let (xs, gs, bs) = (f32s(&x), f32s(&gamma), f32s(&beta));
        // The forward's statistics are recomputed (one pass over x) rather than stored.
        let stats = norm::instance_norm_stats(&xs, n, c, s, eps as f32);
        let (gx, dgamma, dbeta) = norm::instance_norm_leaky_backward(
            &xs,
            &f32s(&gy),
            n,
            c,
            s,
            &gs,
            &bs,
            &stats,
            slope as f32,
        );
        NormGrads {
            input: tensor(gx, &shape.to_vec()),
            gamma: tensor(dgamma, &[c]),
            beta: tensor(dbeta, &[c]),
        }
    }
}

#[cfg(feature = "cuda")]
impl NetBackend for burn::backend::Cuda {}

// ---------------------------------------------------------------------------------------
// Autodiff: the same operations with their backward steps.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct ConvBackward;

impl<B: NetBackend> Backward<B, 3> for ConvBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, ConvOptions<3>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let gy = grads.consume::<B>(&ops.node);
        let (x, w, options) = ops.state;
        let r = B::net_conv3d_backward(x, w, gy, options, node_x.is_some(), node_b.is_some());
        if let (Some(node), Some(g)) = (node_x, r.input) {
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, r.weight);
        }
        if let (Some(node), Some(g)) = (node_b, r.bias) {
            grads.register::<B>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct ConvTransposeBackward;

impl<B: NetBackend> Backward<B, 3> for ConvTransposeBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, ConvTransposeOptions<3>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let gy = grads.consume::<B>(&ops.node);
        let (x, w, options) = ops.state;
        let r =
            B::net_conv_transpose3d_backward(x, w, gy, options, node_x.is_some(), node_b.is_some());
        if let (Some(node), Some(g)) = (node_x, r.input) {
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, r.weight);
        }
        if let (Some(node), Some(g)) = (node_b, r.bias) {
            grads.register::<B>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct NormBackward;

impl<B: NetBackend> Backward<B, 3> for NormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let gy = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, eps, slope) = ops.state;
        let r = B::net_norm_leaky_backward(x, gamma, beta, gy, eps, slope);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, r.input);
        }
        if let Some(node) = node_g {
            grads.register::<B>(node.id, r.gamma);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, r.beta);
        }
    }
}

#[derive(Debug)]
struct CatBackward;

impl<B: NetBackend> Backward<B, 2> for CatBackward {
    type State = usize;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (ga, gb) = B::net_split_channels(g, ops.state);
        if let Some(node) = node_a {
            grads.register::<B>(node.id, ga);
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, gb);
        }
    }
}

#[derive(Debug)]
struct DiceCeBackward;

impl<B: NetBackend> Backward<B, 1> for DiceCeBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let grad = ops.state;
            let ones = Shape::from(vec![1usize; grad.shape().num_dims()]);
            let g = B::float_mul(grad, B::float_reshape(upstream, ones));
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: NetBackend, C: CheckpointStrategy> NetBackend for Autodiff<B, C> {
    fn has_kernels() -> bool {
        B::has_kernels()
    }

    fn net_dice_ce(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> FloatTensor<Self> {
        match DiceCeBackward
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, grad) = B::net_dice_ce_with_grad(logits.primitive, labels);
                prep.finish(grad, loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::net_dice_ce(logits.primitive, labels)),
        }
    }

    fn net_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<3>,
    ) -> FloatTensor<Self> {
        // A missing bias is a zero bias that is not tracked.
        let bias = bias.unwrap_or_else(|| {
            let c = weight.primitive.shape()[0];
            Self::float_zeros(
                Shape::new([c]),
                &Self::float_device(&weight),
                weight.primitive.dtype().into(),
            )
        });
        match ConvBackward
            .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::net_conv3d(
                    x.primitive.clone(),
                    weight.primitive.clone(),
                    Some(bias.primitive),
                    options.clone(),
                );
                prep.finish((x.primitive, weight.primitive, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::net_conv3d(
                x.primitive,
                weight.primitive,
                Some(bias.primitive),
                options,
            )),
        }
    }

    fn net_conv_transpose3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvTransposeOptions<3>,
    ) -> FloatTensor<Self> {
        let bias = bias.unwrap_or_else(|| {
            let c = weight.primitive.shape()[1];
            Self::float_zeros(
                Shape::new([c]),
                &Self::float_device(&weight),
                weight.primitive.dtype().into(),
            )
        });
        match ConvTransposeBackward
            .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::net_conv_transpose3d(
                    x.primitive.clone(),
                    weight.primitive.clone(),
                    Some(bias.primitive),
                    options.clone(),
                );
                prep.finish((x.primitive, weight.primitive, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::net_conv_transpose3d(
                x.primitive,
                weight.primitive,
                Some(bias.primitive),
                options,
            )),
        }
    }

    fn net_cat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let channels = a.primitive.shape()[1];
        match CatBackward
            .prepare::<C>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish(channels, B::net_cat_channels(a.primitive, b.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::net_cat_channels(a.primitive, b.primitive)),
        }
    }

    fn net_norm_leaky(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        slope: f64,
    ) -> FloatTensor<Self> {
        match NormBackward
            .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::net_norm_leaky(
                    x.primitive.clone(),
                    gamma.primitive.clone(),
                    beta.primitive.clone(),
                    eps,
                    slope,
                );
                prep.finish(
                    (x.primitive, gamma.primitive, beta.primitive, eps, slope),
                    y,
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::net_norm_leaky(
                x.primitive,
                gamma.primitive,
                beta.primitive,
                eps,
                slope,
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Module-level entry points used by the model.
// ---------------------------------------------------------------------------------------

use burn::nn::conv::{Conv3d, ConvTranspose3d};
use burn::nn::{InstanceNorm, LeakyRelu, PaddingConfig3d};

fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn wrap<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `Tensor::cat(vec![a, b], 1)` through [`NetBackend::net_cat_channels`].
pub fn cat_channels<B: NetBackend>(a: Tensor<B, 5>, b: Tensor<B, 5>) -> Tensor<B, 5> {
    if !B::has_kernels() {
        return Tensor::cat(vec![a, b], 1);
    }
    wrap(B::net_cat_channels(float(a), float(b)))
}

/// `conv.forward(x)` through [`NetBackend::net_conv3d`].
pub fn conv3d<B: NetBackend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    let padding = match &conv.padding {
        PaddingConfig3d::Explicit(a, b, c) => [*a, *b, *c],
        PaddingConfig3d::Valid => [0; 3],
        PaddingConfig3d::Same => return conv.forward(x),
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    wrap(B::net_conv3d(
        float(x),
        float(conv.weight.val()),
        conv.bias.as_ref().map(|b| float(b.val())),
        options,
    ))
}

/// `conv.forward(x)` through [`NetBackend::net_conv_transpose3d`].
pub fn conv_transpose3d<B: NetBackend>(conv: &ConvTranspose3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    let options = ConvTransposeOptions::new(
        conv.stride,
        conv.padding,
        conv.padding_out,
        conv.dilation,
        conv.groups,
    );
    wrap(B::net_conv_transpose3d(
        float(x),
        float(conv.weight.val()),
        conv.bias.as_ref().map(|b| float(b.val())),
        options,
    ))
}

/// Dice + cross-entropy through [`NetBackend::net_dice_ce`].
pub fn dice_ce<B: NetBackend>(logits: Tensor<B, 5>, labels: Tensor<B, 4, Int>) -> Tensor<B, 1> {
    wrap(B::net_dice_ce(float(logits), labels.into_primitive()))
}

/// `act.forward(norm.forward(x))` through [`NetBackend::net_norm_leaky`].
pub fn norm_leaky<B: NetBackend>(
    norm: &InstanceNorm<B>,
    act: &LeakyRelu,
    x: Tensor<B, 5>,
) -> Tensor<B, 5> {
    match (&norm.gamma, &norm.beta) {
        (Some(g), Some(b)) => wrap(B::net_norm_leaky(
            float(x),
            float(g.val()),
            float(b.val()),
            norm.epsilon,
            act.negative_slope,
        )),
        _ => act.forward(norm.forward(x)),
    }
}

/// A training backend: autodiff over a backend with the network's operations.
pub trait NetAutodiffBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: NetBackend> + NetBackend
{
}

impl<T> NetAutodiffBackend for T where
    T: burn::tensor::backend::AutodiffBackend<InnerBackend: NetBackend> + NetBackend
{
}
