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

use crate::eval::{cra, evaluate, Evaluation, EPSILONS};
use crate::stats::median;
use crate::nn::{ConvNet, LipLayer};
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

/// One audited layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerAudit {
    pub name: String,
    pub input_shape: Vec<i64>,
    /// Largest power-iteration estimate of the Jacobian's spectral norm over the zero input and
    /// the random points.
    pub sigma: f64,
    pub iterations: usize,
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

/// A layer to audit: a name, the shape of its input `[1, C, H, W]`, and its forward function.
pub struct AuditLayer<'a> {
    pub name: String,
    pub input_shape: Vec<i64>,
    pub forward: Box<dyn Fn(&Tensor) -> Tensor + 'a>,
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

/// Audits `layers` (module doc) and derives the bound `L = max(1, Π σ̂_i)`.
pub fn audit(layers: &[AuditLayer<'_>], device: Device, opts: &AuditOptions) -> anyhow::Result<Audit> {
    let _fp32 = crate::precision::Fp32Guard::new()?;
    tch::manual_seed(opts.seed);
    let mut out = Vec::new();
    for layer in layers {
        let mut points = vec![Tensor::f_zeros(layer.input_shape.as_slice(), (Kind::Float, device))?];
        for _ in 0..opts.random_points {
            points.push(Tensor::f_randn(layer.input_shape.as_slice(), (Kind::Float, device))?);
        }
        let mut worst = LayerAudit { name: layer.name.clone(), input_shape: layer.input_shape.clone(), sigma: 0.0, iterations: 0, converged: true };
        for point in &points {
            let (sigma, iterations, converged) =
                spectral_norm_at(&*layer.forward, point, opts).with_context(|| format!("auditing layer {}", layer.name))?;
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
/// exactly the weights certification uses; by the [`LipLayer::freeze`] contract it equals
/// `forward_t(x, false)`. Freezing first also keeps the weight transforms (orthogonalisation,
/// rescaling) out of the differentiated graph, which makes the audit cheap.
pub fn convnet_layers(net: &ConvNet) -> Vec<AuditLayer<'static>> {
    let spec = net.spec;
    let (w, n) = (spec.base_width(), spec.input_side);
    let mut shapes = vec![("first_conv".to_string(), vec![1, w, n, n])];
    for i in 0..spec.blocks() {
        for j in 0..crate::nn::convnet::CONVS_PER_BLOCK {
            shapes.push((format!("block{}.conv{}", i + 1, j + 1), vec![1, w << i, n >> i, n >> i]));
        }
    }
    shapes.push(("head".to_string(), vec![1, spec.head_width(), 1, 1]));
    net.layers()
        .into_iter()
        .zip(shapes)
        .map(|(layer, (name, input_shape)): (&dyn LipLayer, _)| {
            let frozen = layer.freeze();
            AuditLayer { name, input_shape, forward: Box::new(move |x: &Tensor| frozen.forward(x)) }
        })
        .collect()
}

/// Accuracy and CRA of one split under an audited bound, with the per-sample data behind them.
#[derive(Clone, Debug, Serialize)]
pub struct Certificate {
    pub samples: usize,
    pub accuracy: f64,
    /// `(ε, CRA)` for ε in [`EPSILONS`].
    pub cra: Vec<(f64, f64)>,
    pub median_margin: f64,
    pub loss: f64,
    /// The bound used (`audit.lipschitz`).
    pub lipschitz: f64,
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
    /// CRA by radius, keyed by [`radius_name`] ("0", "36/255", …, "1").
    pub cra: BTreeMap<String, f64>,
    pub lipschitz: LipschitzSummary,
    /// Median margin (top-1 minus top-2 logit) over all samples.
    pub margin_median: f64,
    /// Wall-clock seconds of the certification (audit included).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// What the evaluation ran with (absent in records written before lipctl recorded it).
    #[serde(default)]
    pub precision: Option<crate::precision::PrecisionRecord>,
}

/// The audited bound of a certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LipschitzSummary {
    /// `L = max(1, Π σ̂_i)` (module doc).
    pub bound: f64,
    /// `σ̂_i` of every audited layer, in network order.
    pub per_layer: Vec<f64>,
    /// How the bound was obtained, in words.
    pub method: String,
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
    /// The record of a certificate that took `seconds`.
    pub fn certified(cert: &Certificate, seconds: f64) -> Self {
        let certified = Certified {
            n: cert.samples,
            accuracy: cert.accuracy,
            cra: cert.cra.iter().map(|(eps, value)| (radius_name(*eps), *value)).collect(),
            lipschitz: LipschitzSummary {
                bound: cert.lipschitz,
                per_layer: cert.audit.layers.iter().map(|l| l.sigma).collect(),
                method: "power iteration on each frozen layer's Jacobian (zero input and random points); bound = max(1, product)".into(),
            },
            margin_median: cert.median_margin,
            seconds: Some(seconds),
            precision: Some(cert.precision.clone()),
        };
        CertifyRecord { status: CertifyStatus::Ok, attempts: None, reason: None, certified: Some(certified) }
    }

    /// The record of a run without a model: `status` and, where known, its attempts or reason.
    pub fn not_certified(status: CertifyStatus, attempts: Option<Vec<serde_json::Value>>, reason: Option<String>) -> Self {
        CertifyRecord { status, attempts, reason, certified: None }
    }

    /// The CRA at radius `name` ("36/255", …), when certified.
    pub fn cra(&self, name: &str) -> Option<f64> {
        self.certified.as_ref()?.cra.get(name).copied()
    }
}

/// The exact-fraction spelling of a radius used as a JSON key: "0", "36/255", …, "1".
pub fn radius_name(eps: f64) -> String {
    let in_255 = eps * 255.0;
    if (in_255 - 255.0).abs() < 1e-9 {
        "1".into()
    } else if in_255.abs() < 1e-9 {
        "0".into()
    } else {
        format!("{}/255", in_255.round() as i64)
    }
}

/// Certifies `model` (eval mode) on a split, using the bound of `audit`, in full fp32.
pub fn certify(
    model: &dyn nn::Module,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    batch_size: i64,
    device: Device,
    audit: Audit,
) -> anyhow::Result<Certificate> {
    let _fp32 = crate::precision::Fp32Guard::new()?;
    let precision = crate::precision::PrecisionRecord::observe(device)?;
    let ev = evaluate(model, images, labels, channel_mean, batch_size, device)?;
    let l = audit.lipschitz;
    anyhow::ensure!(l >= 1.0 && l.is_finite(), "audited Lipschitz bound {l} is not a finite number ≥ 1");
    Ok(Certificate {
        samples: ev.correct.len(),
        accuracy: ev.accuracy(),
        cra: EPSILONS.iter().map(|&e| (e, cra(&ev.correct, &ev.margins, e, l))).collect(),
        median_margin: median(&ev.margins),
        loss: ev.loss,
        lipschitz: l,
        audit,
        precision,
        evaluation: ev,
    })
}

impl Certificate {
    /// Writes one row per sample: `index,label,prediction,correct,margin,certified_radius`, where
    /// the radius is `margin/(√2·L)` (0 when wrong): the largest ε the point is certified below.
    pub fn write_margins_csv(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(["index", "label", "prediction", "correct", "margin", "certified_radius"])?;
        let ev = &self.evaluation;
        for i in 0..ev.correct.len() {
            let radius = if ev.correct[i] { ev.margins[i] / (std::f64::consts::SQRT_2 * self.lipschitz) } else { 0.0 };
            // Margins and radii in Rust's shortest round-trip scientific notation (`{:e}`).
            out.write_record([
                i.to_string(),
                ev.labels[i].to_string(),
                ev.predictions[i].to_string(),
                (ev.correct[i] as u8).to_string(),
                format!("{:e}", ev.margins[i]),
                format!("{radius:e}"),
            ])?;
        }
        let bytes = out.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        crate::fsx::write_atomic(path, &bytes)
    }
}

/// The certify stage for a trained ConvNet: builds the network of `spec` on `device`, loads the
/// model file written by training, audits it, certifies the split, and writes
/// `certificate.json` and `margins.csv` into `out_dir`.
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
) -> anyhow::Result<Certificate> {
    let mut vs = nn::VarStore::new(device);
    let net = ConvNet::new(&vs.root(), spec)?;
    crate::nn::checkpoint::load_strict(&mut vs, model_file).with_context(|| format!("loading model {}", model_file.display()))?;
    let audit = audit(&convnet_layers(&net), device, opts)?;
    let frozen = net.freeze();
    let cert = certify(&frozen, images, labels, channel_mean, batch_size, device, audit)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    cert.write_margins_csv(&out_dir.join("margins.csv"))?;
    let json = serde_json::to_vec_pretty(&cert).context("serialising the certificate")?;
    crate::fsx::write_atomic(&out_dir.join("certificate.json"), &json)?;
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

    /// logits = A·(image/255) with A = 2·I₃ (spectral norm 2), on 1×1 RGB "images".
    fn doubling_model() -> impl nn::Module {
        nn::func(|x: &Tensor| x.flatten(1, -1) * 2.0)
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
        let cert = certify(&doubling_model(), &images, &labels, [0.0; 3], 2, Device::Cpu, identity_audit(1.0)).unwrap();
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
        let layer = AuditLayer { name: "double".into(), input_shape: vec![1, 3, 1, 1], forward: Box::new(|x: &Tensor| x * 2.0) };
        let opts = AuditOptions { tolerance: 1e-7, ..Default::default() };
        let audit = audit(&[layer], Device::Cpu, &opts).unwrap();
        assert!((audit.layers[0].sigma - 2.0).abs() < TOL_POWER, "{:?}", audit.layers);
        assert!((audit.lipschitz - 2.0).abs() < TOL_POWER);
        let cert = certify(&model, &images, &labels, [0.0; 3], 5, Device::Cpu, audit).unwrap();
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
        let half = AuditLayer { name: "half".into(), input_shape: vec![1, 3, 2, 2], forward: Box::new(|x: &Tensor| x * 0.5) };
        let audit = audit(&[half], Device::Cpu, &opts).unwrap();
        assert!((audit.product - 0.5).abs() < TOL_POWER);
        assert_eq!(audit.lipschitz, 1.0);
        // Non-linear layer |x| + 3x: Jacobian diag(sign x) + 3I, so σ = 3 at the zero input
        // (autograd's sign(0) = 0) and 4 at a point with a positive coordinate (a random point
        // of 8 coordinates has one with probability 1 − 2⁻⁸; the seed is fixed).
        let abs3 = || AuditLayer { name: "abs+3x".into(), input_shape: vec![1, 2, 2, 2], forward: Box::new(|x: &Tensor| x.abs() + x * 3.0) };
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
}
