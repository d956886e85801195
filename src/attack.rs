//! Attacks that try to break certificates (design §6): a certified point flipped inside its
//! certified radius proves a bug somewhere in the layers, the caching, the audit or the margin
//! code, and an attack's success rate gives the empirical robust accuracy, an upper bound on the
//! true robust accuracy that the CRA (a lower bound) must not exceed.
//!
//! Two attacks, both in the L2 ball of radius `ε` around the image in [0, 1] pixel units (the
//! units of the certificate, reference-protocol §5.2), with every iterate clipped to valid
//! images (`[0, 1]` per pixel; clipping only shortens the perturbation):
//!
//! * **untargeted PGD** (Madry et al. 2018) on the margin loss `max_{j≠y} z_j − z_y`, from a
//!   uniformly random point of the ball, [`AttackOptions::restarts`] times;
//! * **targeted margin attack** on `z_t − z_y` for each of the [`AttackOptions::targets`]
//!   runner-up classes `t` of the clean input, from the clean input.
//!
//! Each runs [`AttackOptions::steps`] normalised-gradient steps of size `2.5·ε/steps`, each
//! followed by the projection onto the ball. A point counts as **flipped** when any iterate of
//! any run has another class's logit above the true class's by more than float32 rounding
//! ([`FLIP_TOLERANCE`]; a tie is not a flip: the certificate's inequality is strict). The
//! result is evidence, not proof: no attack finding a flip does not mean none exists.

use crate::eval::Centering;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Settings of [`find_flips`] (the pipeline's `certify.attack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttackOptions {
    /// Whether `certify` attacks at all.
    pub enabled: bool,
    /// Gradient steps per run.
    pub steps: u32,
    /// Untargeted PGD runs from random starts.
    pub restarts: u32,
    /// Runner-up classes attacked by the targeted margin attack.
    pub targets: u32,
    /// Attack only N test points, evenly spaced over the split (all when absent; see
    /// [`crate::certify::attacked_points`]).
    pub samples: Option<u32>,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Default for AttackOptions {
    /// 10 steps, 1 random restart, 1 runner-up target, every test point: 20 forward and backward
    /// passes per point and radius.
    fn default() -> Self {
        AttackOptions { enabled: true, steps: 10, restarts: 1, targets: 1, samples: None, seed: 0 }
    }
}

/// How far (relative to `max(1, max_j |z_j|)`) another logit must exceed the true class's for a
/// flip to count: the float32 rounding of a forward pass through a few dozen layers is ~1e-6
/// relative, and a certificate that is tight (a linear model's pairwise radius) lets an attack
/// reach the decision boundary up to that rounding. Ties and rounding are not flips.
pub const FLIP_TOLERANCE: f64 = 1e-5;

/// `[B]`: `max_{j≠y} z_j − z_y` of `logits [B, K]` and int64 `labels [B]`, differentiable (the
/// untargeted attack's objective; positive when the point is misclassified).
fn runner_up_gap(logits: &Tensor, labels: &Tensor) -> anyhow::Result<Tensor> {
    let y = labels.f_unsqueeze(1)?;
    let true_logit = logits.f_gather(1, &y, false)?.f_squeeze_dim(1)?;
    let others = logits.f_scatter_value(1, &y, f64::NEG_INFINITY)?;
    Ok(others.f_amax([1i64].as_slice(), false)?.f_sub(&true_logit)?)
}

/// `[B]` booleans: whether some class's logit exceeds the true class's in `logits [B, K]` by more
/// than [`FLIP_TOLERANCE`].
pub fn flipped(logits: &Tensor, labels: &Tensor) -> anyhow::Result<Tensor> {
    let scale = logits.f_abs()?.f_amax([1i64].as_slice(), false)?.f_clamp_min(1.0)?;
    Ok(runner_up_gap(logits, labels)?.f_gt_tensor(&(scale * FLIP_TOLERANCE))?)
}

/// Per-sample L2 norm of `[B, …]` as `[B, 1, 1, 1]`, floored away from 0.
fn norms(t: &Tensor) -> anyhow::Result<Tensor> {
    Ok(t.f_flatten(1, -1)?.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?.f_clamp_min(1e-12)?.f_view([-1, 1, 1, 1])?)
}

/// One attack run on a batch: `steps` steps maximising `objective(logits)` (per sample) from
/// `delta`, inside the balls of radii `eps [B, 1, 1, 1]`; returns the flipped flags of every
/// iterate, OR-ed.
fn run(
    model: &dyn nn::Module,
    centering: &Centering,
    x0: &Tensor,
    labels: &Tensor,
    eps: &Tensor,
    mut delta: Tensor,
    steps: u32,
    objective: &dyn Fn(&Tensor) -> anyhow::Result<Tensor>,
) -> anyhow::Result<Tensor> {
    let step = eps * (2.5 / steps as f64);
    let mut broken = Tensor::f_zeros([x0.size()[0]], (Kind::Bool, x0.device()))?;
    for i in 0..=steps {
        let delta_in = delta.f_detach()?.set_requires_grad(true);
        let x = (x0 + &delta_in).f_clamp(0.0, 1.0)?;
        let logits = model.forward(&x.f_sub(centering.mean())?);
        broken = broken.f_logical_or(&flipped(&logits, labels)?)?;
        if i == steps {
            break;
        }
        let loss = objective(&logits)?.f_sum(Kind::Float)?;
        let grad = Tensor::f_run_backward(&[loss], &[&delta_in], false, false)?.remove(0);
        let moved = delta.f_detach()? + &step * &grad / norms(&grad)?;
        let projected = &moved * (eps / norms(&moved)?).f_clamp_max(1.0)?;
        delta = (x0 + projected).f_clamp(0.0, 1.0)? - x0;
    }
    Ok(broken)
}

/// For each of the `n` uint8 `images [n, 3, H, W]` with int64 `labels [n]`: whether the attacks
/// of the module doc found an input within L2 distance `radii[i]` (pixel units in [0, 1]) of the
/// image on which `model` (eval mode, taking centred inputs) does not predict the label. Points
/// with a radius ≤ 0 are not attacked (`false`). Runs in full fp32 in batches of `batch_size`
/// on `device`.
#[allow(clippy::too_many_arguments)]
pub fn find_flips(
    model: &dyn nn::Module,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    radii: &[f64],
    opts: &AttackOptions,
    batch_size: i64,
    device: Device,
) -> anyhow::Result<Vec<bool>> {
    anyhow::ensure!(opts.steps > 0, "attack: steps must be at least 1");
    anyhow::ensure!(radii.iter().all(|r| r.is_finite()), "attack: radii must be finite numbers");
    let _fp32 = crate::precision::Fp32Guard::new()?;
    let centering = Centering::new(channel_mean, device)?;
    let targets: Vec<i64> = radii.iter().enumerate().filter(|(_, r)| **r > 0.0).map(|(i, _)| i as i64).collect();
    let mut result = vec![false; radii.len()];
    tch::manual_seed(opts.seed as i64);
    for chunk in targets.chunks(batch_size.max(1) as usize) {
        // `index_select` wants its index on the data's device (the images may live on the GPU).
        let index = Tensor::from_slice(chunk);
        let x0 = images.f_index_select(0, &index.f_to_device(images.device())?)?.f_to_device(device)?.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?;
        let y = labels.f_index_select(0, &index.f_to_device(labels.device())?)?.f_to_device(device)?;
        let eps_values: Vec<f32> = chunk.iter().map(|&i| radii[i as usize] as f32).collect();
        let eps = Tensor::from_slice(&eps_values).f_to_device(device)?.f_view([-1, 1, 1, 1])?;
        let broken = tch::with_grad(|| attack_batch(model, &centering, &x0, &y, &eps, opts)).context("attack")?;
        let broken = Vec::<bool>::try_from(broken.f_to_device(Device::Cpu)?)?;
        for (&i, b) in chunk.iter().zip(broken) {
            result[i as usize] = b;
        }
    }
    Ok(result)
}

/// Every run of the module doc on one batch; the flipped flags OR-ed.
fn attack_batch(model: &dyn nn::Module, centering: &Centering, x0: &Tensor, y: &Tensor, eps: &Tensor, opts: &AttackOptions) -> anyhow::Result<Tensor> {
    let y_col = y.f_unsqueeze(1)?;
    let untargeted = |z: &Tensor| runner_up_gap(z, y);
    let mut broken = Tensor::f_zeros([x0.size()[0]], (Kind::Bool, x0.device()))?;
    for _ in 0..opts.restarts {
        // Uniform in the ball: a Gaussian direction, radius ε·U^(1/d).
        let direction = x0.f_randn_like()?;
        let d = (x0.numel() as i64 / x0.size()[0]) as f64;
        let radius = eps * x0.f_rand_like()?.f_narrow(1, 0, 1)?.f_narrow(2, 0, 1)?.f_narrow(3, 0, 1)?.f_pow_tensor_scalar(1.0 / d)?;
        let start = (x0 + &direction / norms(&direction)? * radius).f_clamp(0.0, 1.0)? - x0;
        broken = broken.f_logical_or(&run(model, centering, x0, y, eps, start, opts.steps, &untargeted)?)?;
    }
    if opts.targets > 0 {
        let centred = x0.f_sub(centering.mean())?;
        let clean = tch::no_grad(|| model.forward(&centred));
        let classes = clean.size()[1];
        let masked = clean.f_scatter_value(1, &y_col, f64::NEG_INFINITY)?;
        let (_, runner_ups) = masked.f_topk((opts.targets as i64).min(classes - 1), 1, true, true)?;
        for t in 0..runner_ups.size()[1] {
            let target = runner_ups.f_narrow(1, t, 1)?;
            let targeted = |z: &Tensor| -> anyhow::Result<Tensor> {
                Ok(z.f_gather(1, &target, false)?.f_squeeze_dim(1)? - z.f_gather(1, &y_col, false)?.f_squeeze_dim(1)?)
            };
            broken = broken.f_logical_or(&run(model, centering, x0, y, eps, x0.f_zeros_like()?, opts.steps, &targeted)?)?;
        }
    }
    Ok(broken)
}
