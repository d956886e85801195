//! Certification: accuracy, certified robust accuracy (CRA), per-sample margins, and a Lipschitz
//! audit of the trained network (design §6; reference-protocol §7.1, §7.3).
//!
//! **The certificate.** For a network with L2 Lipschitz constant `L`, every logit difference
//! `z_i − z_j` is `√2·L`-Lipschitz, so a correctly classified point with margin
//! `top1 − top2 > √2·ε·L` keeps its label within radius `ε`. The inequality is strict (R1) and a
//! misclassified point never counts; a tie (`top1 = top2`) has margin 0 and is never certified.
//! Radii are exact fractions (36/255, …; design §5), in [0, 1] pixel units because inputs are
//! only centred (reference-protocol §5.2).
//!
//! **Which `L`.** The audit estimates the spectral norm `σ̂_i` of every layer's Jacobian by power
//! iteration on `JᵀJ` (through double backward, at the zero input as in R1 §7.3 and at
//! [`AuditOptions::random_points`] random inputs, keeping the largest, to a change below 1e-6
//! per iteration or a fixed iteration cap). The parameter-free parts of the ConvNet
//! (zero-channel padding, MaxMin, channel selection, pixel-unshuffle) are 1-Lipschitz by
//! construction and are not audited. The bound used is
//!
//! `L = max(1, Π_i σ̂_i)`.
//!
//! For a Lipschitz method the construction guarantees `L ≤ 1` in theory, so `L = 1` unless the
//! audit contradicts the theory; if it does (a layer measured above 1, e.g. a broken
//! implementation or float drift), every radius is shrunk by the measured product, so the report
//! never claims a radius that the audit does not support. The power iteration approaches `σ_max`
//! from below, so for the unconstrained baseline (Standard) `Π σ̂_i` is an estimate, not a proof;
//! the certificate records the per-layer values and whether each iteration converged.
//!
//! **Precision.** [`evaluate`], [`audit`] and [`certify`] run in full fp32 whatever the caller's
//! TF32 switches are ([`crate::precision::Fp32Guard`]): TF32 convolutions would put about 1e-3
//! relative error into margins and bounds. The certificate records the settings it ran with.

use crate::attack::{find_flips, AttackOptions};
use crate::eval::{cra, evaluate_with_head, is_certified, Evaluation, EPSILONS, RADII};
use crate::stats::median;
use crate::nn::{ConvNet, LipLayer, Structure};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Power-iteration settings of the audit.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct AuditOptions {
    /// Iteration cap (R1 uses 1000 at the end of training).
    pub max_iterations: usize,
    /// Stop when the estimate changes by less than this between iterations (R1: 1e-6).
    pub tolerance: f64,
    /// Seed of the random start vectors and points.
    pub seed: i64,
    /// Standard-normal points at which each layer's Jacobian is also measured, besides the zero
    /// input of R1; the layer's value is the largest. Matters for non-linear layers (CPL, SLL),
    /// whose Jacobian varies with the input.
    pub random_points: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions { max_iterations: 1000, tolerance: 1e-6, seed: 0, random_points: 1 }
    }
}

/// How an audited layer's value was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundKind {
    /// The exact spectral norm: a circular convolution or dense matrix
    /// ([`Structure::CircularLinear`]), f64 SVD of the per-frequency matrices of its impulse
    /// response (up to the float32 rounding of the frozen forward that produced the response).
    Exact,
    /// A proven upper bound ([`Structure::Spectral`] with padding, [`Structure::ZeroPadResidual`],
    /// [`Structure::ZeroPadSkewExponential`]).
    Upper,
    /// A power-iteration estimate: it approaches the norm from below, so it is evidence, not a
    /// bound; the layer's `converged` says whether it settled.
    Estimate,
}

impl BoundKind {
    /// The word the certificate and the report use.
    pub fn word(self) -> &'static str {
        match self {
            BoundKind::Exact => "exact",
            BoundKind::Upper => "upper bound",
            BoundKind::Estimate => "estimate",
        }
    }
}

/// One audited layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerAudit {
    pub name: String,
    pub input_shape: Vec<i64>,
    /// The layer's Lipschitz bound (exact or upper, see `kind`) or, for an opaque layer, the largest
    /// power-iteration estimate of its Jacobian's spectral norm over the zero input and the random
    /// points.
    pub sigma: f64,
    pub kind: BoundKind,
    /// Power-iteration steps (0 for a closed-form bound).
    pub iterations: usize,
    /// Whether the power iteration settled (always true for a closed-form bound).
    pub converged: bool,
}

/// The audit of a network and the bound derived from it (module doc).
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    pub layers: Vec<LayerAudit>,
    /// `Π σ̂_i` over the audited layers (1 when there are none).
    pub product: f64,
    /// The bound certificates use: `max(1, product)`.
    pub lipschitz: f64,
    pub options: AuditOptions,
}

impl Audit {
    /// Why no certificate may rest on this audit: a power-iteration estimate that did not settle
    /// (its value may be far below the true norm). `None` when every layer has a closed-form bound
    /// or a converged estimate.
    pub fn unconverged(&self) -> Option<String> {
        let bad: Vec<&str> = self.layers.iter().filter(|l| !l.converged).map(|l| l.name.as_str()).collect();
        (!bad.is_empty()).then(|| {
            format!(
                "the power iteration did not converge within {} steps for {} of {} layers ({})",
                self.options.max_iterations,
                bad.len(),
                self.layers.len(),
                bad.join(", ")
            )
        })
    }

    /// Product of the layers' values before the last (the head): the Lipschitz bound of the
    /// feature map the pairwise head certificate divides by.
    pub fn product_before_head(&self) -> f64 {
        let n = self.layers.len().saturating_sub(1);
        self.layers[..n].iter().map(|l| l.sigma).product()
    }
}

/// A layer to audit: a name, the shape of its input `[1, C, H, W]`, its (frozen) forward function
/// and the [`Structure`] its layer declares for that forward.
pub struct AuditLayer<'a> {
    pub name: String,
    pub input_shape: Vec<i64>,
    pub forward: Box<dyn Fn(&Tensor) -> Tensor + 'a>,
    pub structure: Structure,
}

/// Largest singular value of the Jacobian of `f` at the zero input of shape `input_shape`, by
/// power iteration on `JᵀJ` (see [`spectral_norm_at`]). Returns (estimate, iterations, converged).
pub fn spectral_norm(
    f: &dyn Fn(&Tensor) -> Tensor,
    input_shape: &[i64],
    device: Device,
    opts: &AuditOptions,
) -> anyhow::Result<(f64, usize, bool)> {
    spectral_norm_at(f, &Tensor::f_zeros(input_shape, (Kind::Float, device))?, opts)
}

/// Largest singular value of the Jacobian of `f` at `point` (one sample, `[1, …]`), by power
/// iteration on `JᵀJ` through autograd — the estimator of [`crate::lipschitz`], which the layer
/// tests validate against exact impulse-response singular values. The layer may be non-linear; the
/// estimate approaches σ_max from below. Returns (estimate, iterations, converged).
pub fn spectral_norm_at(f: &dyn Fn(&Tensor) -> Tensor, point: &Tensor, opts: &AuditOptions) -> anyhow::Result<(f64, usize, bool)> {
    let iteration = crate::lipschitz::PowerIteration { max_iters: opts.max_iterations, rel_tol: opts.tolerance };
    let est = crate::lipschitz::jacobian_spectral_norm(f, point, &iteration).context("audit")?;
    anyhow::ensure!(est.sigma.is_finite(), "audit: non-finite spectral norm estimate");
    Ok((est.sigma, est.iterations, est.converged))
}

/// The response of an affine map `f` (on `[B, C, n, n]` float inputs) to a unit impulse at pixel
/// (0, 0) of each of its `C` input channels, its bias removed: `f(e_c) − f(0)` as `[C, …]` in
/// f64. For a circular convolution that is its kernel spread over the torus; for a dense head
/// (`n = 1`) row `c` is `W·e_c`.
fn impulse_response(f: &dyn Fn(&Tensor) -> Tensor, c: i64, n: i64, device: Device) -> anyhow::Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let impulses = Tensor::f_eye(c, (Kind::Float, device))?.f_view([c, c, 1, 1])?.f_constant_pad_nd([0, n - 1, 0, n - 1])?;
    let zero = Tensor::f_zeros([1, c, n, n], (Kind::Float, device))?;
    Ok(f(&impulses).f_sub(&f(&zero))?.f_to_kind(Kind::Double)?)
}

/// The exact spectral norm of a map `f` on `[1, c, n, n]` inputs that is affine and commutes
/// with circular shifts ([`Structure::CircularLinear`]): the response to an impulse at pixel
/// (0, 0) of each input channel is the circular kernel `h [out, c, n, n]`, and the operator's
/// singular values are those of the matrices `FFT2(h)[ω]` over the `n²` frequencies (Sedghi et
/// al. 2019). The bias cancels in `f(e) − f(0)`. SVD in f64.
pub fn circular_linear_norm(f: &dyn Fn(&Tensor) -> Tensor, input_shape: &[i64], device: Device) -> anyhow::Result<f64> {
    let &[1, c, n, m] = input_shape else { anyhow::bail!("audit: input shape {input_shape:?} is not [1, C, n, n]") };
    anyhow::ensure!(n == m, "audit: input shape {input_shape:?} is not square");
    let response = impulse_response(f, c, n, device)?; // [c, out, n, n]
    anyhow::ensure!(response.dim() == 4 && response.size()[2..] == [n, n], "audit: the layer's output {:?} is not [·, ·, {n}, {n}]", response.size());
    let per_frequency = response.f_fft_fft2(None::<&[i64]>, [-2i64, -1].as_slice(), "backward")?.f_permute([2, 3, 1, 0])?;
    max_singular_value(&per_frequency)
}

/// Largest input dimension `C·n²` for which [`zero_pad_conv_norm`] computes the exact norm from
/// the dense matrix (a `d×d` f64 eigenvalue problem: ~20 s at 4096 on one core).
pub const DENSE_NORM_LIMIT: i64 = 4096;

/// The spectral norm of the zero-padded "same" convolution `G` by `kernel [out, in, k, k]` on
/// `n×n` inputs, or an upper bound on it, and which of the two it is:
/// * `in·n² ≤ dense_limit`: exact, the largest eigenvalue of `GᵀG` from the dense matrix (f64);
/// * otherwise [`torus_bound`], sound but with slack that shrinks as `n` grows (measured on random
///   3×3 kernels: +0.1–0.2 % at n = 32, +0.5 % at n = 16, +3 % at n = 8, +7–15 % at n = 4), which
///   is why the small sides, where it is large, get the dense norm.
pub fn zero_pad_conv_norm(kernel: &Tensor, n: i64, dense_limit: i64) -> anyhow::Result<(f64, BoundKind)> {
    let size = kernel.size();
    let (ci, k) = (size.get(1).copied().context("audit: kernel is not [out, in, k, k]")?, size.last().copied().unwrap_or(1));
    let d = ci * n * n;
    if d > dense_limit {
        return Ok((torus_bound(kernel, n)?, BoundKind::Upper));
    }
    let _guard = tch::no_grad_guard();
    let w = kernel.f_detach()?.f_to_kind(Kind::Double)?;
    let basis = Tensor::f_eye(d, (Kind::Double, w.device()))?.f_view([d, ci, n, n])?;
    // Row i: G·e_i, i.e. the rows of Gᵀ; GᵀG = R·Rᵀ.
    let rows = basis.f_conv2d(&w, None::<&Tensor>, [1, 1], [k / 2, k / 2], [1, 1], 1)?.f_reshape([d, -1])?;
    let gram = rows.f_matmul(&rows.f_tr()?)?;
    let top = gram.f_linalg_eigvalsh("L")?.f_max()?.f_double_value(&[])?;
    anyhow::ensure!(top.is_finite(), "audit: non-finite eigenvalue");
    Ok((top.max(0.0).sqrt(), BoundKind::Exact))
}

/// An upper bound on the norm of the zero-padded "same" convolution by `kernel [out, in, k, k]` on
/// `n×n` inputs: on an `N`-torus with `N ≥ n + k/2` the zero-padded map is a restriction of the
/// circular convolution (embed the input with zeros, convolve without wrap-around into the output
/// window, crop), so every such torus's exact norm bounds it; the smallest over
/// `N = n + k/2 … n + k/2 + 4` (different grids of frequencies).
pub fn torus_bound(kernel: &Tensor, n: i64) -> anyhow::Result<f64> {
    let k = kernel.size().last().copied().context("audit: empty kernel")?;
    let w = kernel.f_detach()?.f_to_kind(Kind::Double)?;
    let mut best = f64::INFINITY;
    for torus in n + k / 2..=n + k / 2 + 4 {
        let per_frequency = w.f_fft_fft2(Some([torus, torus].as_slice()), [-2i64, -1].as_slice(), "backward")?.f_permute([2, 3, 0, 1])?;
        best = best.min(max_singular_value(&per_frequency)?);
    }
    Ok(best)
}

fn max_singular_value(matrices: &Tensor) -> anyhow::Result<f64> {
    // `svd` rather than `linalg_svdvals` (see `nn::fft::circular_conv_singular_values`).
    let (_, s, _) = matrices.f_svd(true, false)?;
    let sigma = s.f_max()?.f_double_value(&[])?;
    anyhow::ensure!(sigma.is_finite(), "audit: non-finite singular value");
    Ok(sigma)
}

/// `Σ_{t>terms} ρᵗ/t!`: the truncation tail of the exponential series at `ρ ≥ 0`.
pub fn exponential_tail(rho: f64, terms: i64) -> f64 {
    let mut term = 1.0;
    for t in 1..=terms {
        term *= rho / t as f64;
    }
    let mut tail = 0.0;
    let mut t = terms;
    loop {
        t += 1;
        term *= rho / t as f64;
        tail += term;
        if term <= tail * 1e-17 || t > terms + 10_000 {
            return tail;
        }
    }
}

/// The closed-form bound of a layer whose [`Structure`] gives one (`None` for
/// [`Structure::Opaque`]), for its input shape `[1, C, n, n]`: `(value, kind)`. A closed form
/// has nothing to converge.
pub fn structural_bound(layer: &AuditLayer<'_>, device: Device) -> anyhow::Result<Option<(f64, BoundKind)>> {
    let n = layer.input_shape.last().copied().unwrap_or(1);
    Ok(match &layer.structure {
        Structure::Opaque => None,
        Structure::CircularLinear => Some((circular_linear_norm(&*layer.forward, &layer.input_shape, device)?, BoundKind::Exact)),
        Structure::Spectral { q, pad } => {
            let sigma = max_singular_value(&q.f_detach()?.f_to_kind(Kind::ComplexDouble)?)?;
            Some((sigma, if *pad == 0 { BoundKind::Exact } else { BoundKind::Upper }))
        }
        Structure::ZeroPadResidual { kernel } => {
            let (g, _) = zero_pad_conv_norm(kernel, n, DENSE_NORM_LIMIT)?;
            Some(((g * g - 1.0).max(1.0), BoundKind::Upper))
        }
        // The norm only enters the truncation tail (~1e-6 at ‖A‖ ≈ 2): the torus bound suffices.
        Structure::ZeroPadSkewExponential { kernel, terms } => {
            Some((1.0 + exponential_tail(torus_bound(kernel, n)?, *terms), BoundKind::Upper))
        }
    })
}

/// Audits `layers` (module doc): a closed-form bound where the layer's [`Structure`] gives one,
/// else the power-iteration estimate; then `L = max(1, Π σ_i)`.
pub fn audit(layers: &[AuditLayer<'_>], device: Device, opts: &AuditOptions) -> anyhow::Result<Audit> {
    let _fp32 = crate::precision::Fp32Guard::new()?;
    tch::manual_seed(opts.seed);
    let mut out = Vec::new();
    for layer in layers {
        let context = || format!("auditing layer {}", layer.name);
        if let Some((sigma, kind)) = structural_bound(layer, device).with_context(context)? {
            out.push(LayerAudit { name: layer.name.clone(), input_shape: layer.input_shape.clone(), sigma, kind, iterations: 0, converged: true });
            continue;
        }
        let mut points = vec![Tensor::f_zeros(layer.input_shape.as_slice(), (Kind::Float, device))?];
        for _ in 0..opts.random_points {
            points.push(Tensor::f_randn(layer.input_shape.as_slice(), (Kind::Float, device))?);
        }
        let mut worst = LayerAudit {
            name: layer.name.clone(),
            input_shape: layer.input_shape.clone(),
            sigma: 0.0,
            kind: BoundKind::Estimate,
            iterations: 0,
            converged: true,
        };
        for point in &points {
            let (sigma, iterations, converged) = spectral_norm_at(&*layer.forward, point, opts).with_context(context)?;
            worst.iterations += iterations;
            worst.converged &= converged;
            worst.sigma = worst.sigma.max(sigma);
        }
        out.push(worst);
    }
    let product: f64 = out.iter().map(|l| l.sigma).product();
    Ok(Audit { layers: out, product, lipschitz: product.max(1.0), options: *opts })
}

/// The audit layers of a ConvNet in forward order, with the input shapes its forward sees:
/// `first_conv` at `[1, w, n, n]`, `block{i}.conv{j}` at `[1, w·2^(i−1), n/2^(i−1), …]`, `head` at
/// `[1, w·2^nb, 1, 1]`. Each layer is audited through its frozen (inference) module, i.e.
/// exactly the weights certification uses, computed in full fp32 ([`ConvNet::freeze`]); by the
/// [`LipLayer::freeze`] contract it equals `forward_t(x, false)`. Freezing first also keeps the
/// weight transforms (orthogonalisation, rescaling) out of the differentiated graph, which makes
/// the audit cheap. Errors as [`ConvNet::freeze`].
pub fn convnet_layers(net: &ConvNet) -> anyhow::Result<Vec<AuditLayer<'static>>> {
    let spec = net.spec;
    let (w, n) = (spec.base_width(), spec.input_side);
    let mut shapes = vec![("first_conv".to_string(), vec![1, w, n, n])];
    for i in 0..spec.blocks() {
        for j in 0..crate::nn::convnet::CONVS_PER_BLOCK {
            shapes.push((format!("block{}.conv{}", i + 1, j + 1), vec![1, w << i, n >> i, n >> i]));
        }
    }
    shapes.push(("head".to_string(), vec![1, spec.head_width(), 1, 1]));
    // The structures' kernels are weight transforms too: fp32 like the frozen layers.
    let _fp32 = crate::precision::Fp32Guard::new()?;
    let frozen = net.freeze()?.into_layers();
    let layers = net.layers();
    anyhow::ensure!(
        layers.len() == frozen.len() && frozen.len() == shapes.len(),
        "{} layers, {} frozen modules and {} audit shapes: the network and the audit disagree",
        layers.len(),
        frozen.len(),
        shapes.len()
    );
    Ok(layers
        .into_iter()
        .zip(frozen)
        .zip(shapes)
        .map(|((layer, frozen), (name, input_shape)): ((&dyn LipLayer, _), _)| AuditLayer {
            name,
            input_shape,
            forward: Box::new(move |x: &Tensor| frozen.forward(x)),
            structure: layer.structure(),
        })
        .collect())
}

/// The pairwise head certificate's inputs: the row distances of a linear head and the bound of
/// the feature map before it (module doc).
#[derive(Debug)]
pub struct HeadGeometry {
    /// `‖w_y − w_j‖₂ [K, K]` (f64, CPU) over the rows of the classes the network outputs.
    pub distances: Tensor,
    /// `L_φ`: the product of the audited values of every layer before the head.
    pub feature_bound: f64,
}

/// The row distances of the head's matrix, read from its frozen map's impulse response, when its
/// [`Structure`] says it is affine (`None` otherwise: the CPL and SLL heads are residual maps).
/// `head.input_shape` is `[1, W, 1, 1]`; the network keeps the first `classes` outputs.
pub fn head_geometry(head: &AuditLayer<'_>, classes: i64, audit: &Audit, device: Device) -> anyhow::Result<Option<HeadGeometry>> {
    if !head.structure.is_affine() {
        return Ok(None);
    }
    let &[1, w, 1, 1] = head.input_shape.as_slice() else { anyhow::bail!("head input shape {:?} is not [1, W, 1, 1]", head.input_shape) };
    // Row i of the response is W·e_i: transposed, the head's matrix [out, W].
    let matrix = impulse_response(&*head.forward, w, 1, device)?.f_flatten(1, -1)?.f_tr()?;
    anyhow::ensure!(matrix.size()[0] >= classes, "the head has {} outputs for {classes} classes", matrix.size()[0]);
    let rows = matrix.f_narrow(0, 0, classes)?.f_to_device(Device::Cpu)?;
    let distances = rows.f_unsqueeze(1)?.f_sub(&rows.f_unsqueeze(0)?)?.f_norm_scalaropt_dim(2, [2i64].as_slice(), false)?;
    Ok(Some(HeadGeometry { distances, feature_bound: audit.product_before_head() }))
}

/// Accuracy and CRA of one split under an audited bound, with the per-sample data behind them.
#[derive(Clone, Debug, Serialize)]
pub struct Certificate {
    pub samples: usize,
    pub accuracy: f64,
    /// `(ε, CRA)` for ε in [`EPSILONS`] by the global rule; empty when not certifiable.
    pub cra: Vec<(f64, f64)>,
    /// `(ε, CRA)` by the pairwise head certificate, when the head is linear and the network is
    /// certifiable (else empty).
    pub cra_pairwise: Vec<(f64, f64)>,
    /// Why the network gets no CRA (`None` when it is certifiable).
    pub not_certifiable: Option<String>,
    pub median_margin: f64,
    pub loss: f64,
    /// The bound used (`audit.lipschitz`).
    pub lipschitz: f64,
    /// `L_φ` of the pairwise certificate, when it applies.
    pub feature_bound: Option<f64>,
    pub audit: Audit,
    /// The device and TF32 switches the evaluation ran with (full fp32 by construction).
    pub precision: crate::precision::PrecisionRecord,
    #[serde(skip)]
    pub evaluation: Evaluation,
}

/// `certify.json` of a `certify` artifact (docs/artifacts.md; [`crate::records`]): the
/// certificate's summary, or why the run has none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertifyRecord {
    /// `ok` when certified; otherwise why there is no model.
    pub status: CertifyStatus,
    /// With `diverged`: the train record's attempts, copied verbatim (typed as
    /// `train::Attempt` there; certify sits beside train in the layering and does not name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<serde_json::Value>>,
    /// With `does_not_fit` / `no_epoch_count`: why the run was not trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The numbers, when the model was certified.
    #[serde(flatten)]
    pub certified: Option<Certified>,
}

/// What `certify.json` says about a certified model (fractions, not percent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Certified {
    /// Samples certified.
    pub n: usize,
    /// Clean accuracy (fraction).
    pub accuracy: f64,
    /// CRA by radius, keyed by [`radius_name`] ("0", "36/255", …, "1"), by the global rule
    /// (the paper's column); empty when the network is not certifiable.
    pub cra: BTreeMap<String, f64>,
    /// CRA by the pairwise head certificate (module doc), where the head is linear.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cra_pairwise: BTreeMap<String, f64>,
    /// Why there is no CRA: not Lipschitz by construction, or an audit that did not converge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_certifiable: Option<String>,
    pub lipschitz: LipschitzSummary,
    /// Median margin (top-1 minus top-2 logit) over all samples.
    pub margin_median: f64,
    /// Wall-clock seconds of the certification (audit and attack included).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// What the evaluation ran with (absent in records written before lipctl recorded it).
    #[serde(default)]
    pub precision: Option<crate::precision::PrecisionRecord>,
    /// SHA-256 of the model file certified (provenance: a rebuilt model invalidates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// The attack check, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackSummary>,
}

/// The audited bound of a certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LipschitzSummary {
    /// `L = max(1, Π σ_i)` (module doc).
    pub bound: f64,
    /// `σ_i` of every audited layer, in network order.
    pub per_layer: Vec<f64>,
    /// How each `σ_i` was obtained ([`BoundKind::word`]; "estimate (not converged)" when the
    /// power iteration did not settle).
    #[serde(default)]
    pub per_layer_kind: Vec<String>,
    /// How the bound was obtained, in words.
    pub method: String,
}

/// The attack check of a certificate ([`crate::attack`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackSummary {
    pub options: AttackOptions,
    /// Points attacked: `options.samples` test points evenly spaced over the split ([`attacked_points`]), or all.
    pub samples: usize,
    /// Certified points attacked at their own certified radius (the larger of the global and
    /// the pairwise one).
    pub attacked_at_certified_radius: usize,
    /// How many of those the attack flipped: must be 0.
    pub flipped_at_certified_radius: usize,
    /// Per radius ([`radius_name`]): CRA and empirical robust accuracy on the attacked points,
    /// and certified points flipped.
    pub per_radius: BTreeMap<String, AttackRow>,
    /// Whether no certified point was flipped (`false` marks the run `unsound`).
    pub sound: bool,
}

/// One radius of [`AttackSummary`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackRow {
    /// CRA on the attacked points by the better of the two certificates (absent when not
    /// certifiable): a lower bound on robust accuracy.
    pub cra: Option<f64>,
    /// Correct and not flipped by the attack: an upper bound on robust accuracy.
    pub era: f64,
    /// Points certified at this radius that the attack flipped (must be 0).
    pub flipped: usize,
}

/// `certify.json`'s `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertifyStatus {
    /// Certified: the record has its numbers.
    Ok,
    /// The training run diverged: no model to certify.
    Diverged,
    /// Not trained: the model does not fit its budget.
    DoesNotFit,
    /// Not trained: the paper's Table 8 has no epoch count for the model.
    NoEpochCount,
}

impl CertifyStatus {
    /// The word the tables use (as in the file).
    pub fn word(self) -> &'static str {
        match self {
            CertifyStatus::Ok => "ok",
            CertifyStatus::Diverged => "diverged",
            CertifyStatus::DoesNotFit => "does_not_fit",
            CertifyStatus::NoEpochCount => "no_epoch_count",
        }
    }
}

impl crate::records::Record for CertifyRecord {
    const FILE: &'static str = "certify.json";
    const SCHEMA_VERSION: u32 = 1;
    const WHAT: &'static str = "a certificate summary";
    const KEY_ORDER: crate::records::KeyOrder = crate::records::KeyOrder::Sorted;
}

impl CertifyRecord {
    /// Provenance: whether this certificate describes a model that no longer exists. It names the
    /// SHA-256 of the model file it certified, and `current` (the checksum of the model its train
    /// artifact holds now; `None` when that holds no model or is gone) is another. A record that
    /// certified nothing (its run diverged or was not trained, so there was no model) is stale once
    /// the train artifact holds a model: the run was trained again, and "diverged" no longer
    /// describes it. A certificate written before lipctl recorded checksums is never stale.
    pub fn is_stale(&self, current: Option<&str>) -> bool {
        match &self.certified {
            Some(c) => c.model_sha256.as_deref().is_some_and(|certified| Some(certified) != current),
            None => current.is_some(),
        }
    }

    /// The record of a certificate that took `seconds`, of the model file with checksum
    /// `model_sha256`, with its attack check when it ran.
    pub fn certified(cert: &Certificate, seconds: f64, model_sha256: Option<String>, attack: Option<AttackSummary>) -> Self {
        let by_name = |pairs: &[(f64, f64)]| pairs.iter().map(|(eps, value)| (radius_name(*eps), *value)).collect();
        let certified = Certified {
            n: cert.samples,
            accuracy: cert.accuracy,
            cra: by_name(&cert.cra),
            cra_pairwise: by_name(&cert.cra_pairwise),
            not_certifiable: cert.not_certifiable.clone(),
            lipschitz: LipschitzSummary {
                bound: cert.lipschitz,
                per_layer: cert.audit.layers.iter().map(|l| l.sigma).collect(),
                per_layer_kind: cert
                    .audit
                    .layers
                    .iter()
                    .map(|l| if l.converged { l.kind.word().to_string() } else { format!("{} (not converged)", l.kind.word()) })
                    .collect(),
                method: "per frozen layer: exact spectral norm (circular convolutions, dense matrices), a proven upper bound \
                         (zero-padded residual and exponential layers), else power iteration on the Jacobian; bound = max(1, product)"
                    .into(),
            },
            margin_median: cert.median_margin,
            seconds: Some(seconds),
            precision: Some(cert.precision.clone()),
            model_sha256,
            attack,
        };
        CertifyRecord { status: CertifyStatus::Ok, attempts: None, reason: None, certified: Some(certified) }
    }

    /// The record of a run without a model: `status` and, where known, its attempts or reason.
    pub fn not_certified(status: CertifyStatus, attempts: Option<Vec<serde_json::Value>>, reason: Option<String>) -> Self {
        CertifyRecord { status, attempts, reason, certified: None }
    }

    /// The CRA at radius `name` ("36/255", …), when certified (and certifiable).
    pub fn cra(&self, name: &str) -> Option<f64> {
        self.certified.as_ref()?.cra.get(name).copied()
    }

    /// The pairwise CRA at radius `name`, when the certificate has one.
    pub fn cra_pairwise(&self, name: &str) -> Option<f64> {
        self.certified.as_ref()?.cra_pairwise.get(name).copied()
    }
}

/// The exact-fraction spelling of a radius used as a JSON key: "0", "36/255", …, "1"; a radius
/// that is no multiple of 1/255 keeps its decimal spelling ("0.5").
pub fn radius_name(eps: f64) -> String {
    let in_255 = eps * 255.0;
    if (in_255 - 255.0).abs() < 1e-9 {
        "1".into()
    } else if in_255.abs() < 1e-9 {
        "0".into()
    } else if (in_255 - in_255.round()).abs() < 1e-9 {
        format!("{}/255", in_255.round() as i64)
    } else {
        format!("{eps}")
    }
}

/// Certifies `model` (eval mode) on a split, using the bound of `audit`, in full fp32. A network
/// is certifiable when `lipschitz_by_construction` and the audit converged; otherwise the
/// certificate has accuracy and margins but no CRA, and says why. `head`: the pairwise head
/// certificate's inputs, when the head is linear.
#[allow(clippy::too_many_arguments)]
pub fn certify(
    model: &dyn nn::Module,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    batch_size: i64,
    device: Device,
    audit: Audit,
    lipschitz_by_construction: bool,
    head: Option<&HeadGeometry>,
) -> anyhow::Result<Certificate> {
    let _fp32 = crate::precision::Fp32Guard::new()?;
    let precision = crate::precision::PrecisionRecord::observe(device)?;
    let not_certifiable = if lipschitz_by_construction {
        audit.unconverged()
    } else {
        Some("not Lipschitz by construction: its audited product bounds nothing a certificate needs".to_string())
    };
    let head = head.filter(|_| not_certifiable.is_none());
    let ev = evaluate_with_head(model, images, labels, channel_mean, batch_size, device, head.map(|h| &h.distances))?;
    let l = audit.lipschitz;
    anyhow::ensure!(l >= 1.0 && l.is_finite(), "audited Lipschitz bound {l} is not a finite number ≥ 1");
    let certifiable = not_certifiable.is_none();
    let cra_pairwise = match head {
        Some(h) => EPSILONS.iter().map(|&e| (e, pairwise_cra(&ev.correct, &ev.pairwise_margins, e, h.feature_bound))).collect(),
        None => Vec::new(),
    };
    Ok(Certificate {
        samples: ev.correct.len(),
        accuracy: ev.accuracy(),
        cra: if certifiable { EPSILONS.iter().map(|&e| (e, cra(&ev.correct, &ev.margins, e, l))).collect() } else { Vec::new() },
        cra_pairwise,
        not_certifiable,
        median_margin: median(&ev.margins),
        loss: ev.loss,
        lipschitz: l,
        feature_bound: head.map(|h| h.feature_bound),
        audit,
        precision,
        evaluation: ev,
    })
}

/// Whether a point is certified at `eps` by the pairwise head certificate: correct and
/// pairwise margin `> eps·L_φ` (strict, as the global rule).
pub fn pairwise_certified(correct: bool, pairwise_margin: f64, eps: f64, feature_bound: f64) -> bool {
    correct && pairwise_margin > eps * feature_bound
}

fn pairwise_cra(correct: &[bool], pairwise: &[f64], eps: f64, feature_bound: f64) -> f64 {
    if correct.is_empty() {
        return f64::NAN;
    }
    let n = correct.iter().zip(pairwise).filter(|(c, m)| pairwise_certified(**c, **m, eps, feature_bound)).count();
    n as f64 / correct.len() as f64
}

impl Certificate {
    /// The largest radius each sample is certified below (0 when wrong or not certifiable): the
    /// larger of the global `margin/(√2·L)` and, where it applies, the pairwise
    /// `pairwise_margin/L_φ`.
    pub fn certified_radii(&self) -> Vec<f64> {
        let ev = &self.evaluation;
        if self.not_certifiable.is_some() {
            return vec![0.0; ev.correct.len()];
        }
        (0..ev.correct.len())
            .map(|i| {
                if !ev.correct[i] {
                    return 0.0;
                }
                let global = ev.margins[i] / (std::f64::consts::SQRT_2 * self.lipschitz);
                let pairwise = match (self.feature_bound, ev.pairwise_margins.get(i)) {
                    (Some(lf), Some(m)) => m / lf,
                    _ => 0.0,
                };
                global.max(pairwise)
            })
            .collect()
    }

    /// Whether sample `i` is certified at `eps` by either certificate.
    fn certified_at(&self, i: usize, eps: f64) -> bool {
        let ev = &self.evaluation;
        if self.not_certifiable.is_some() {
            return false;
        }
        is_certified(ev.correct[i], ev.margins[i], eps, self.lipschitz)
            || matches!((self.feature_bound, ev.pairwise_margins.get(i)), (Some(lf), Some(m)) if pairwise_certified(ev.correct[i], *m, eps, lf))
    }

    /// Writes one row per sample: `index,label,prediction,correct,margin,certified_radius`, where
    /// the radius is [`Certificate::certified_radii`]'s (empty when the network is not
    /// certifiable): the largest ε the point is certified below.
    pub fn write_margins_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(["index", "label", "prediction", "correct", "margin", "certified_radius"])?;
        let ev = &self.evaluation;
        let radii = self.certified_radii();
        for i in 0..ev.correct.len() {
            // Margins and radii in Rust's shortest round-trip scientific notation (`{:e}`).
            let radius = if self.not_certifiable.is_some() { String::new() } else { format!("{:e}", radii[i]) };
            out.write_record([
                i.to_string(),
                ev.labels[i].to_string(),
                ev.predictions[i].to_string(),
                (ev.correct[i] as u8).to_string(),
                format!("{:e}", ev.margins[i]),
                radius,
            ])?;
        }
        let bytes = out.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        crate::fsx::write_atomic(path, &bytes)
    }
}

/// The attack check of `cert` (module doc of [`crate::attack`]): every certified point among the
/// [`attacked_points`] attacked at its certified radius, and every correct one at
/// each radius of [`RADII`]; the flips of certified points counted.
#[allow(clippy::too_many_arguments)]
pub fn attack_certificate(
    model: &dyn nn::Module,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    cert: &Certificate,
    opts: &AttackOptions,
    batch_size: i64,
    device: Device,
) -> anyhow::Result<AttackSummary> {
    attack_certificate_at(model, images, labels, channel_mean, cert, &RADII, opts, batch_size, device)
}

/// The indices of the test points the attack check attacks: all `total` when `samples` is
/// `None` or at least `total`, else `samples` points evenly spaced over the split (index
/// `⌊j·total/samples⌋` for `j < samples`), so that a split stored class by class is attacked in
/// every class, not only in its first ones.
pub fn attacked_points(total: usize, samples: Option<u32>) -> Vec<usize> {
    let n = samples.map_or(total, |s| (s as usize).min(total));
    (0..n).map(|j| j * total / n.max(1)).collect()
}

/// [`attack_certificate`] at the radii `radii` (pixel units, each > 0) instead of [`RADII`].
#[allow(clippy::too_many_arguments)]
pub fn attack_certificate_at(
    model: &dyn nn::Module,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    cert: &Certificate,
    radii_to_attack: &[f64],
    opts: &AttackOptions,
    batch_size: i64,
    device: Device,
) -> anyhow::Result<AttackSummary> {
    anyhow::ensure!(radii_to_attack.iter().all(|r| r.is_finite() && *r > 0.0), "attack radii must be positive numbers, got {radii_to_attack:?}");
    let points = attacked_points(cert.evaluation.correct.len(), opts.samples);
    let n = points.len();
    let index = Tensor::from_slice(&points.iter().map(|&i| i as i64).collect::<Vec<_>>()).f_to_device(images.device())?;
    let (images, labels) = (images.f_index_select(0, &index)?, labels.f_index_select(0, &index.f_to_device(labels.device())?)?);
    let all_radii = cert.certified_radii();
    let own: Vec<f64> = points.iter().map(|&i| all_radii[i]).collect();
    let flips_own = find_flips(model, &images, &labels, channel_mean, &own, opts, batch_size, device)?;
    let attacked_at_certified_radius = own.iter().filter(|r| **r > 0.0).count();
    let flipped_at_certified_radius = flips_own.iter().filter(|f| **f).count();
    let mut per_radius = BTreeMap::new();
    let certifiable = cert.not_certifiable.is_none();
    for &eps in radii_to_attack {
        let correct: Vec<bool> = points.iter().map(|&i| cert.evaluation.correct[i]).collect();
        let radii: Vec<f64> = correct.iter().map(|&c| if c { eps } else { 0.0 }).collect();
        let flips = find_flips(model, &images, &labels, channel_mean, &radii, opts, batch_size, device)?;
        let robust = (0..n).filter(|&j| correct[j] && !flips[j]).count();
        let certified: Vec<bool> = points.iter().map(|&i| cert.certified_at(i, eps)).collect();
        let flipped = (0..n).filter(|&j| certified[j] && flips[j]).count();
        let frac = |k: usize| if n == 0 { f64::NAN } else { k as f64 / n as f64 };
        let cra = certifiable.then(|| frac(certified.iter().filter(|c| **c).count()));
        per_radius.insert(radius_name(eps), AttackRow { cra, era: frac(robust), flipped });
    }
    let sound = flipped_at_certified_radius == 0 && per_radius.values().all(|r| r.flipped == 0);
    Ok(AttackSummary { options: *opts, samples: n, attacked_at_certified_radius, flipped_at_certified_radius, per_radius, sound })
}

/// A trained ConvNet loaded from its model file, frozen, and audited.
pub struct LoadedModel {
    pub spec: crate::nn::NetSpec,
    pub frozen: crate::nn::FrozenConvNet,
    pub audit: Audit,
    pub head: Option<HeadGeometry>,
    /// SHA-256 of the model file.
    pub sha256: String,
}

/// Builds the network of `spec` on `device`, loads `model_file` strictly (every name and shape;
/// an error names the file), audits it and reads its head's geometry.
pub fn load_model(spec: crate::nn::NetSpec, model_file: &Path, device: Device, opts: &AuditOptions) -> anyhow::Result<LoadedModel> {
    let sha256 = crate::fsx::checksum_file(model_file)?.sha256;
    let mut vs = nn::VarStore::new(device);
    let net = ConvNet::new(&vs.root(), spec)?;
    crate::nn::checkpoint::load_strict(&mut vs, model_file).with_context(|| format!("loading model {}", model_file.display()))?;
    let layers = convnet_layers(&net)?;
    let audit = audit(&layers, device, opts)?;
    let head = match layers.last() {
        Some(last) => head_geometry(last, spec.classes, &audit, device)?,
        None => None,
    };
    Ok(LoadedModel { spec, frozen: net.freeze()?, audit, head, sha256 })
}

/// The certify stage for a trained ConvNet: loads and audits the model file written by
/// training ([`load_model`]), certifies the split, runs the attack check when `attack` is given
/// and enabled, and writes `certificate.json`, `margins.csv` and `certify.json` into `out_dir`.
#[allow(clippy::too_many_arguments)]
pub fn certify_model_file(
    spec: crate::nn::NetSpec,
    model_file: &Path,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    batch_size: i64,
    device: Device,
    out_dir: &Path,
    opts: &AuditOptions,
    attack: Option<&AttackOptions>,
) -> anyhow::Result<Certificate> {
    let started = std::time::Instant::now();
    let model = load_model(spec, model_file, device, opts)?;
    let LoadedModel { frozen, audit, head, sha256, .. } = model;
    let cert = certify(&frozen, images, labels, channel_mean, batch_size, device, audit, spec.method.is_lipschitz(), head.as_ref())?;
    let summary = match attack.filter(|a| a.enabled) {
        Some(a) => Some(attack_certificate(&frozen, images, labels, channel_mean, &cert, a, batch_size, device)?),
        None => None,
    };
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    cert.write_margins_csv(&out_dir.join("margins.csv"))?;
    let json = serde_json::to_vec_pretty(&cert).context("serialising the certificate")?;
    crate::fsx::write_atomic(&out_dir.join("certificate.json"), &json)?;
    let record = CertifyRecord::certified(&cert, started.elapsed().as_secs_f64(), Some(sha256), summary);
    crate::records::write(out_dir, &record)?;
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{correct_and_margin, is_certified};

    /// f64 comparisons of values computed in f32 (logits of a 3×3 map): f32 rounding of O(1).
    const TOL_F32: f64 = 1e-6;
    /// Power iteration stopped at a change below 1e-7 on a 2×2 or 3×3 map: well below this.
    const TOL_POWER: f64 = 1e-4;

    /// A record of a run without a model (diverged, does not fit, no epoch count) describes the
    /// train artifact while that holds no model, and is stale once it holds one (trained again).
    #[test]
    fn a_record_without_a_model_is_stale_once_the_run_has_one() {
        for status in [CertifyStatus::Diverged, CertifyStatus::DoesNotFit, CertifyStatus::NoEpochCount] {
            let record = CertifyRecord::not_certified(status, None, None);
            assert!(!record.is_stale(None), "{status:?} with no model now");
            assert!(record.is_stale(Some("ab12")), "{status:?} after the run was trained again");
        }
    }

    /// logits = A·(image/255) with A = 2·I₃ (spectral norm 2), on 1×1 RGB "images".
    fn doubling_model() -> impl nn::Module {
        nn::func(|x: &Tensor| x.flatten(1, -1) * 2.0)
    }

    /// A split stored class by class (10 classes × 100 points, as the quick pipeline's subset):
    /// 500 attacked points are 50 of every class, not all of the first five; hand-computed
    /// indices for a small case; `None` or more samples than points attack every point.
    #[test]
    fn attacked_points_cover_every_class_of_a_class_ordered_split() {
        let labels: Vec<usize> = (0..1000).map(|i| i / 100).collect();
        let points = attacked_points(1000, Some(500));
        assert_eq!(points.len(), 500);
        for class in 0..10 {
            assert_eq!(points.iter().filter(|&&i| labels[i] == class).count(), 50, "class {class}");
        }
        assert_eq!(attacked_points(10, Some(4)), [0, 2, 5, 7]);
        assert_eq!(attacked_points(5, None), [0, 1, 2, 3, 4]);
        assert_eq!(attacked_points(5, Some(9)), [0, 1, 2, 3, 4]);
        assert!(attacked_points(0, Some(3)).is_empty());
    }

    /// Five samples whose margins are known by hand (see the test).
    fn five_samples() -> (Tensor, Tensor) {
        let pixels: [[u8; 3]; 5] = [[255, 0, 0], [255, 128, 0], [255, 210, 0], [255, 0, 0], [255, 255, 0]];
        let flat: Vec<u8> = pixels.iter().flatten().copied().collect();
        let images = Tensor::from_slice(&flat).view([5, 3, 1, 1]);
        let labels = Tensor::from_slice(&[0i64, 0, 0, 1, 0]);
        (images, labels)
    }

    fn identity_audit(lipschitz: f64) -> Audit {
        Audit { layers: vec![], product: lipschitz, lipschitz, options: AuditOptions::default() }
    }

    #[test]
    fn margins_of_a_hand_built_model() {
        let (images, labels) = five_samples();
        let cert = certify(&doubling_model(), &images, &labels, [0.0; 3], 2, Device::Cpu, identity_audit(1.0), true, None).unwrap();
        // logits: (2,0,0) ✓ margin 2; (2,256/255,0) ✓ 2·127/255; (2,420/255,0) ✓ 2·45/255;
        // label 1 but predicts 0 → margin 0; (2,2,0) tie → class 0 (first index) correct, margin 0.
        let expected = [2.0, 2.0 * 127.0 / 255.0, 2.0 * 45.0 / 255.0, 0.0, 0.0];
        for (got, want) in cert.evaluation.margins.iter().zip(expected) {
            assert!((got - want).abs() < TOL_F32, "{got} vs {want}");
        }
        assert_eq!(cert.evaluation.correct, vec![true, true, true, false, true]);
        assert_eq!(cert.accuracy, 0.8);
        // L = 1: thresholds √2·ε = 0, 0.1997, 0.3993, 0.5990, 1.4142.
        let cras: Vec<f64> = cert.cra.iter().map(|c| c.1).collect();
        assert_eq!(cras, vec![0.6, 0.6, 0.4, 0.4, 0.2]);
        assert!((median(&cert.evaluation.margins) - expected[2]).abs() < TOL_F32);
    }

    #[test]
    fn audited_norm_two_halves_the_radii() {
        let (images, labels) = five_samples();
        let model = doubling_model();
        let layer = AuditLayer { name: "double".into(), input_shape: vec![1, 3, 1, 1], forward: Box::new(|x: &Tensor| x * 2.0), structure: Structure::Opaque };
        let opts = AuditOptions { tolerance: 1e-7, ..Default::default() };
        let audit = audit(&[layer], Device::Cpu, &opts).unwrap();
        assert!((audit.layers[0].sigma - 2.0).abs() < TOL_POWER, "{:?}", audit.layers);
        assert!((audit.lipschitz - 2.0).abs() < TOL_POWER);
        let cert = certify(&model, &images, &labels, [0.0; 3], 5, Device::Cpu, audit, true, None).unwrap();
        // L = 2: thresholds 2√2·ε = 0, 0.3993, 0.7986, 1.1979, 2.8284.
        let cras: Vec<f64> = cert.cra.iter().map(|c| c.1).collect();
        assert_eq!(cras, vec![0.6, 0.4, 0.4, 0.2, 0.0]);
    }

    #[test]
    fn power_iteration_matches_hand_computed_norms() {
        // [[1, 1], [0, 1]] has σ_max = golden ratio (1+√5)/2 (eigenvalues of AᵀA: (3±√5)/2).
        let a = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0]).view([2, 2]);
        let f = move |x: &Tensor| x.flatten(1, -1).matmul(&a.tr()).view([1, 2, 1, 1]);
        let opts = AuditOptions { tolerance: 1e-7, ..Default::default() };
        let (sigma, _, converged) = spectral_norm(&f, &[1, 2, 1, 1], Device::Cpu, &opts).unwrap();
        assert!(converged);
        assert!((sigma - (1.0 + 5f64.sqrt()) / 2.0).abs() < TOL_POWER, "{sigma}");
        // A contraction (norm ½) audits to L = max(1, ½) = 1: never a bound below the theory's.
        let half = AuditLayer { name: "half".into(), input_shape: vec![1, 3, 2, 2], forward: Box::new(|x: &Tensor| x * 0.5), structure: Structure::Opaque };
        let audit = audit(&[half], Device::Cpu, &opts).unwrap();
        assert!((audit.product - 0.5).abs() < TOL_POWER);
        assert_eq!(audit.lipschitz, 1.0);
        // Non-linear layer |x| + 3x: Jacobian diag(sign x) + 3I, so σ = 3 at the zero input
        // (autograd's sign(0) = 0) and 4 at a point with a positive coordinate (a random point
        // of 8 coordinates has one with probability 1 − 2⁻⁸; the seed is fixed).
        let abs3 = || AuditLayer { name: "abs+3x".into(), input_shape: vec![1, 2, 2, 2], forward: Box::new(|x: &Tensor| x.abs() + x * 3.0), structure: Structure::Opaque };
        let at_zero = super::audit(&[abs3()], Device::Cpu, &AuditOptions { random_points: 0, ..opts }).unwrap();
        assert!((at_zero.product - 3.0).abs() < TOL_POWER, "{:?}", at_zero.layers);
        let with_random = super::audit(&[abs3()], Device::Cpu, &AuditOptions { random_points: 2, ..opts }).unwrap();
        assert!((with_random.product - 4.0).abs() < TOL_POWER, "{:?}", with_random.layers);
    }

    #[test]
    fn strict_inequality_and_misclassified_points() {
        let s2 = std::f64::consts::SQRT_2;
        // Exactly at the threshold is not certified (strict).
        assert!(!is_certified(true, s2 * 0.5, 0.5, 1.0));
        assert!(is_certified(true, 0.71, 0.5, 1.0));
        assert!(!is_certified(false, 10.0, 0.0, 1.0));
        assert!(!is_certified(true, 0.0, 0.0, 1.0));
        let (c, m) = correct_and_margin(
            &Tensor::from_slice(&[1.0f32, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 2.0, 1.1, 0.9]).view([5, 2]),
            &Tensor::zeros([5], (Kind::Int64, Device::Cpu)),
        )
        .unwrap();
        // §9.2 test_cra: CRA(0) = [1,1,0,0,1]; CRA(1) = [0,1,0,0,0]; CRA(1) with rescaling ½
        // (i.e. L = ½) = [1,1,0,0,0].
        let c = Vec::<bool>::try_from(c).unwrap();
        let m = Vec::<f64>::try_from(m).unwrap();
        let at = |eps: f64, l: f64| c.iter().zip(&m).map(|(c, m)| is_certified(*c, *m, eps, l) as u8).collect::<Vec<_>>();
        assert_eq!(at(0.0, 1.0), vec![1, 1, 0, 0, 1]);
        assert_eq!(at(1.0, 1.0), vec![0, 1, 0, 0, 0]);
        assert_eq!(at(1.0, 0.5), vec![1, 1, 0, 0, 0]);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    /// Linear 3-class model `z = W·x` on 1×1 RGB images with `W = diag(1, 1, 3)`; as a head
    /// layer on `[B, 3, 1, 1]` maps.
    fn diag_113(x: &Tensor) -> Tensor {
        let w = Tensor::from_slice(&[1.0f32, 1.0, 3.0]).view([1, 3, 1, 1]);
        x.view([-1, 3, 1, 1]) * w
    }

    #[test]
    fn pairwise_head_certificate_on_a_hand_built_linear_model() {
        // Rows w0 = e0, w1 = e1, w2 = 3·e2: ‖w0 − w1‖ = √2, ‖w0 − w2‖ = ‖w1 − w2‖ = √10; ‖W‖ = 3.
        let head = AuditLayer { name: "head".into(), input_shape: vec![1, 3, 1, 1], forward: Box::new(diag_113), structure: Structure::CircularLinear };
        let audit = audit(&[head], Device::Cpu, &AuditOptions::default()).unwrap();
        assert!((audit.lipschitz - 3.0).abs() < TOL_F32, "{:?}", audit.layers);
        assert_eq!(audit.layers[0].kind, BoundKind::Exact);
        let head = AuditLayer { name: "head".into(), input_shape: vec![1, 3, 1, 1], forward: Box::new(diag_113), structure: Structure::CircularLinear };
        let geometry = head_geometry(&head, 3, &audit, Device::Cpu).unwrap().unwrap();
        let d = Vec::<f64>::try_from(geometry.distances.flatten(0, -1)).unwrap();
        let (r2, r10) = (2f64.sqrt(), 10f64.sqrt());
        for (got, want) in d.iter().zip([0.0, r2, r10, r2, 0.0, r10, r10, r10, 0.0]) {
            assert!((got - want).abs() < TOL_F32, "{d:?}");
        }
        assert_eq!(geometry.feature_bound, 1.0);
        // A = (1, 0, 0) label 0: z = (1, 0, 0); pairwise radius min(1/√2, 1/√10) = 0.3162, global
        // 1/(√2·3) = 0.2357. B = (0, 0, 0.2) label 2: z = (0, 0, 0.6); pairwise 0.6/√10 = 0.1897,
        // global 0.6/(3√2) = 0.1414 (just above 36/255 = 0.1412). C = (1, 0, 0) labelled 1: wrong.
        let images = Tensor::from_slice(&[255u8, 0, 0, 0, 0, 51, 255, 0, 0]).view([3, 3, 1, 1]);
        let labels = Tensor::from_slice(&[0i64, 2, 1]);
        let model = nn::func(|x: &Tensor| diag_113(x).flatten(1, -1));
        let cert = certify(&model, &images, &labels, [0.0; 3], 3, Device::Cpu, audit, true, Some(&geometry)).unwrap();
        let pm = &cert.evaluation.pairwise_margins;
        assert!((pm[0] - 1.0 / r10).abs() < TOL_F32 && (pm[1] - 0.6 / r10).abs() < TOL_F32 && pm[2] == 0.0, "{pm:?}");
        let third = |v: &[(f64, f64)]| v.iter().map(|c| (c.1 * 3.0).round() as i64).collect::<Vec<_>>();
        // Radii 0, 36, 72, 108, 255 of 255 (0, .141, .282, .424, 1).
        assert_eq!(third(&cert.cra), vec![2, 2, 0, 0, 0]);
        assert_eq!(third(&cert.cra_pairwise), vec![2, 2, 1, 0, 0]);
        let radii = cert.certified_radii();
        assert!((radii[0] - 1.0 / r10).abs() < TOL_F32 && (radii[1] - 0.6 / r10).abs() < TOL_F32 && radii[2] == 0.0, "{radii:?}");
        // The pairwise radius of this linear model is its exact distance to the decision boundary,
        // so the attack at the certified radius finds nothing, and at 1.2× it flips both points.
        // Both other classes as targets: A's runner-up is a tie (z1 = z2 = 0), so with one target
        // the random start picks class 1, whose boundary is beyond 1.2× the radius, about one draw
        // in twenty (the draw is not the seed's: other tests share torch's global generator).
        let opts = AttackOptions { steps: 20, targets: 2, ..AttackOptions::default() };
        let at = |scale: f64| find_flips(&model, &images, &labels, [0.0; 3], &radii.iter().map(|r| r * scale).collect::<Vec<_>>(), &opts, 3, Device::Cpu).unwrap();
        assert_eq!(at(1.0), vec![false, false, false]);
        assert_eq!(at(1.2), vec![true, true, false]);
    }

    #[test]
    fn the_attack_flips_certified_points_when_the_certificate_is_unsound() {
        // z = 2·x: true Lipschitz constant 2 per logit difference direction. Certified as if L
        // were 1, the claimed radii are twice the true distances to the boundary.
        let model = nn::func(|x: &Tensor| x.flatten(1, -1) * 2.0);
        let mut rng = crate::stats::SplitMix64::new(7);
        let pixels: Vec<u8> = (0..3 * 40).map(|_| rng.below(256) as u8).collect();
        let images = Tensor::from_slice(&pixels).view([40, 3, 1, 1]);
        let labels = images.view([40, 3]).argmax(1, false);
        let opts = AttackOptions { samples: None, ..AttackOptions::default() };
        let check = |lipschitz: f64| {
            let cert = certify(&model, &images, &labels, [0.0; 3], 16, Device::Cpu, identity_audit(lipschitz), true, None).unwrap();
            attack_certificate(&model, &images, &labels, [0.0; 3], &cert, &opts, 16, Device::Cpu).unwrap()
        };
        let unsound = check(1.0);
        assert!(!unsound.sound && unsound.flipped_at_certified_radius > 20, "{unsound:?}");
        // With the true constant (2), or a looser one, nothing certified is flipped, and the
        // empirical robust accuracy is at least the CRA at every radius.
        for l in [2.0, 2.5] {
            let sound = check(l);
            assert!(sound.sound && sound.flipped_at_certified_radius == 0, "L = {l}: {sound:?}");
            for (radius, row) in &sound.per_radius {
                assert!(row.era >= row.cra.unwrap(), "L = {l}, {radius}: {row:?}");
            }
        }
    }

    #[test]
    fn closed_form_bounds_of_hand_computed_cases() {
        // Σ_{t>2} 1/t! = e − 2.5.
        assert!((exponential_tail(1.0, 2) - (std::f64::consts::E - 2.5)).abs() < 1e-15);
        let partial: f64 = (0..=12).map(|t| 2f64.powi(t) / (1..=t).map(|i| i as f64).product::<f64>()).sum();
        // e² − partial loses ~1e-15 absolute to cancellation against a tail of ~2.5e-6.
        assert!((exponential_tail(2.0, 12) - (2f64.exp() - partial)).abs() < 1e-8 * exponential_tail(2.0, 12));
        // A 1×1 kernel [[2]] is the map 2·x whatever the padding.
        let two = Tensor::from_slice(&[2.0f32]).view([1, 1, 1, 1]);
        assert!((torus_bound(&two, 4).unwrap() - 2.0).abs() < 1e-12);
        for limit in [0, DENSE_NORM_LIMIT] {
            assert!((zero_pad_conv_norm(&two, 4, limit).unwrap().0 - 2.0).abs() < 1e-12);
        }
        // The 3-tap average (1/3)(x₋₁ + x₀ + x₊₁) per row: symbol norm 1 at frequency 0 on every
        // torus; zero-padded on n pixels its norm is below 1 but tends to 1.
        let avg = Tensor::zeros([1, 1, 3, 3], (Kind::Float, Device::Cpu));
        let _ = avg.narrow(2, 1, 1).fill_(1.0 / 3.0);
        // (three float32 copies of 1/3 sum to 1 + 3e-8)
        let torus = torus_bound(&avg, 6).unwrap();
        assert!((torus - 1.0).abs() < 1e-7, "{torus}");
        // The exact norm on 6 pixels: the 6×6 tridiagonal Toeplitz (1/3)(1, 1, 1) has eigenvalues
        // (1/3)(1 + 2·cos(jπ/7)), j = 1…6; the largest is (1 + 2·cos(π/7))/3. Dense: exact;
        // the f64 power iteration (limit 0) converges to it from below.
        let want = (1.0 + 2.0 * (std::f64::consts::PI / 7.0).cos()) / 3.0;
        let (exact, kind) = zero_pad_conv_norm(&avg, 6, DENSE_NORM_LIMIT).unwrap();
        assert!((exact - want).abs() < 1e-7 && kind == BoundKind::Exact, "{exact} vs {want}");
        // Above the dense limit: the torus bound, 1 here, above the exact 0.9349.
        let (bound, kind) = zero_pad_conv_norm(&avg, 6, 0).unwrap();
        assert!((bound - 1.0).abs() < 1e-7 && bound > want && kind == BoundKind::Upper, "{bound} vs {want}");
    }

    /// Each method's declared [`Structure`] against independent oracles on a small layer whose
    /// parameters were moved off their initialisation: a closed-form `Exact` value equals the
    /// largest singular value of the dense impulse-response matrix (f64 SVD), an `Upper` value is
    /// at least the exact Jacobian norm at random points. The last assertion shows the check
    /// can fail: a wrongly declared structure gives a value the oracle contradicts.
    #[test]
    fn declared_structures_give_bounds_that_hold() {
        use crate::nn::ortho::testing::{impulse_matrix, jacobian, svdvals};
        use crate::nn::registry::Role;
        use crate::nn::{ConvSpec, Method};
        let dev = Device::Cpu;
        for method in Method::ALL {
            for (role, c, n) in [(Role::Block, 4, 5), (Role::Head, 6, 1)] {
                tch::manual_seed(3);
                let vs = nn::VarStore::new(dev);
                let layer = method.build(&vs.root(), &ConvSpec::square(c, 3.min(2 * n - 1), n), role).unwrap();
                tch::no_grad(|| {
                    for mut v in vs.trainable_variables() {
                        let noise = v.randn_like() * 0.1;
                        let _ = v.g_add_(&noise);
                    }
                });
                let frozen = layer.freeze();
                let f = |x: &Tensor| frozen.forward(x);
                let shape = vec![1, c, n, n];
                let audit_layer = AuditLayer { name: format!("{method}"), input_shape: shape.clone(), forward: Box::new(f), structure: layer.structure() };
                let Some((bound, kind)) = structural_bound(&audit_layer, dev).unwrap() else {
                    panic!("{method} {role:?}: no closed-form bound (every paper method declares one)")
                };
                let oracle = match kind {
                    BoundKind::Exact => svdvals(&impulse_matrix(&f, c, n, dev)).max().double_value(&[]),
                    _ => (0..4)
                        .map(|_| svdvals(&jacobian(&f, &Tensor::randn([1, c, n, n], (Kind::Float, dev)))).max().double_value(&[]))
                        .fold(0.0, f64::max),
                };
                match kind {
                    BoundKind::Exact => assert!((bound - oracle).abs() <= 1e-5 * oracle.max(1.0), "{method} {role:?}: {bound} vs {oracle}"),
                    _ => assert!(bound >= oracle - 1e-5, "{method} {role:?}: bound {bound} below the exact norm {oracle}"),
                }
            }
        }
        // The check can fail: a layer that declared a zero-padded map circular gets a value that
        // the dense oracle contradicts.
        let kernel = Tensor::randn([2, 2, 3, 3], (Kind::Float, dev));
        let f = |x: &Tensor| crate::nn::ortho::conv2d_zero(x, &kernel, None);
        let wrong = AuditLayer { name: "zero-padded declared circular".into(), input_shape: vec![1, 2, 4, 4], forward: Box::new(f), structure: Structure::CircularLinear };
        let (claimed, _) = structural_bound(&wrong, dev).unwrap().unwrap();
        let exact = svdvals(&impulse_matrix(&f, 2, 4, dev)).max().double_value(&[]);
        assert!((claimed - exact).abs() > 1e-3, "{claimed} vs {exact}");
    }
}
