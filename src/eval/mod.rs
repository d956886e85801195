//! Evaluation shared by training and certification (design §6; reference-protocol §6.1, §7.1):
//! per-sample margins, the global certificate rule and CRA, mean-centring of uint8 batches, the
//! offset cross-entropy ([`loss`]), and one pass of a network over a split ([`evaluate`]).
//!
//! A leaf of the layering (`docs/architecture.md`): it uses only [`crate::nn`] and
//! [`crate::precision`], and both `train` and `certify` build on it.

pub mod loss;

pub use loss::{lipschitz_loss, offset_cross_entropy};

use anyhow::Context;
use tch::{nn, Device, Kind, Tensor};

/// The radii tracked during training (R1's list, as exact fractions).
pub const RADII: [f64; 4] = [36.0 / 255.0, 72.0 / 255.0, 108.0 / 255.0, 1.0];

/// The radii reported by `certify`: 0 (clean accuracy without ties) and [`RADII`].
pub const EPSILONS: [f64; 5] = [0.0, 36.0 / 255.0, 72.0 / 255.0, 108.0 / 255.0, 1.0];

/// Per-sample correctness (`argmax z = y`, first index on ties) and margin (`top1 − top2`, or 0
/// when wrong), reference-protocol §7.1. `logits` `[B, K]` with `K ≥ 2`, `labels` `[B]` int64.
/// The margin is returned in f64 so that comparisons with f64 radii do not round the radius.
pub fn correct_and_margin(logits: &Tensor, labels: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
    let (top, _) = logits.f_topk(2, -1, true, true).context("margins need at least two classes")?;
    let top = top.f_to_kind(Kind::Double)?;
    let gap = top.f_select(1, 0)? - top.f_select(1, 1)?;
    let correct = logits.f_argmax(-1, false)?.f_eq_tensor(labels)?;
    let margin = gap.f_where_self(&correct, &Tensor::f_zeros_like(&gap)?)?;
    Ok((correct, margin))
}

/// Whether each point is certified at radius `eps` for Lipschitz bound `lipschitz`:
/// correct and `margin > √2·eps·lipschitz` (strict).
pub fn is_certified(correct: bool, margin: f64, eps: f64, lipschitz: f64) -> bool {
    correct && margin > std::f64::consts::SQRT_2 * eps * lipschitz
}

/// The pairwise head margin of each sample (0 when wrong): `min_{j≠y} (z_y − z_j) / d[y, j]`,
/// with `d [K, K]` the distances `‖w_y − w_j‖₂` between the rows of a linear head (any device,
/// f64). With logits `W·φ(x) + b` and φ `L_φ`-Lipschitz, a correct point whose pairwise margin
/// exceeds `ε·L_φ` keeps its label within radius ε: `z_y − z_j` is `L_φ·‖w_y − w_j‖`-Lipschitz.
/// `logits [B, K]`, `labels [B]` int64; returns `[B]` f64.
pub fn pairwise_margin(logits: &Tensor, labels: &Tensor, distances: &Tensor) -> anyhow::Result<Tensor> {
    let z = logits.f_to_kind(Kind::Double)?;
    let y = labels.f_unsqueeze(1)?;
    let gap = z.f_gather(1, &y, false)?.f_sub(&z)?;
    let d = distances.f_to_device(z.device())?.f_index_select(0, labels)?.f_clamp_min(1e-300)?;
    let ratio = gap.f_div(&d)?.f_scatter_value(1, &y, f64::INFINITY)?;
    let correct = logits.f_argmax(-1, false)?.f_eq_tensor(labels)?;
    let best = ratio.f_amin([1i64].as_slice(), false)?;
    Ok(best.f_where_self(&correct, &Tensor::f_zeros_like(&best)?)?)
}

/// Fraction of points certified at `eps`.
pub fn cra(correct: &[bool], margins: &[f64], eps: f64, lipschitz: f64) -> f64 {
    if correct.is_empty() {
        return f64::NAN;
    }
    let n = correct.iter().zip(margins).filter(|(c, m)| is_certified(**c, **m, eps, lipschitz)).count();
    n as f64 / correct.len() as f64
}

/// Outputs of one pass of a network over a split.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// Mean over batches of the batch-mean training loss (unweighted, reference-protocol §7.2).
    pub loss: f64,
    pub labels: Vec<i64>,
    pub predictions: Vec<i64>,
    pub correct: Vec<bool>,
    pub margins: Vec<f64>,
    /// [`pairwise_margin`] per sample, when the caller gave head distances (else empty).
    pub pairwise_margins: Vec<f64>,
}

impl Evaluation {
    pub fn accuracy(&self) -> f64 {
        self.correct.iter().filter(|c| **c).count() as f64 / self.correct.len().max(1) as f64
    }
}

/// Runs `model` (an eval-mode module, e.g. a frozen ConvNet) over uint8 `images` `[N, 3, H, W]`
/// with int64 `labels` `[N]`, centred with `channel_mean`, in batches on `model_device`. No
/// gradients are recorded. Results are moved to the host once, at the end.
pub fn evaluate(
    model: &dyn nn::Module,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    batch_size: i64,
    model_device: Device,
) -> anyhow::Result<Evaluation> {
    evaluate_with_head(model, images, labels, channel_mean, batch_size, model_device, None)
}

/// [`evaluate`], plus the [`pairwise_margin`]s for the head row distances `distances [K, K]`
/// when given.
pub fn evaluate_with_head(
    model: &dyn nn::Module,
    images: &Tensor,
    labels: &Tensor,
    channel_mean: [f64; 3],
    batch_size: i64,
    model_device: Device,
    distances: Option<&Tensor>,
) -> anyhow::Result<Evaluation> {
    anyhow::ensure!(batch_size > 0, "batch size must be positive, got {batch_size}");
    let _fp32 = crate::precision::Fp32Guard::new()?;
    let _guard = tch::no_grad_guard();
    let n = images.size().first().copied().context("images must be [N, 3, H, W]")?;
    anyhow::ensure!(labels.size() == [n], "{} labels for {n} images", labels.numel());
    let centering = Centering::new(channel_mean, model_device)?;
    let (mut losses, mut preds, mut corrects, mut margins, mut pairwise) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        let x = images.f_narrow(0, start, len)?.f_to_device(model_device)?;
        let y = labels.f_narrow(0, start, len)?.f_to_device(model_device)?;
        let logits = model.forward(&centering.apply(&x)?);
        losses.push(loss::lipschitz_loss(&logits, &y)?.f_to_kind(Kind::Double)?);
        let (c, m) = correct_and_margin(&logits, &y)?;
        if let Some(d) = distances {
            pairwise.push(pairwise_margin(&logits, &y, d)?);
        }
        preds.push(logits.f_argmax(-1, false)?);
        corrects.push(c);
        margins.push(m);
        start += len;
    }
    if n == 0 {
        return Ok(Evaluation { loss: f64::NAN, ..Default::default() });
    }
    let loss = Tensor::f_stack(&losses, 0)?.f_mean(Kind::Double)?.f_double_value(&[])?;
    Ok(Evaluation {
        loss,
        labels: Vec::<i64>::try_from(labels.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?)?,
        predictions: Vec::<i64>::try_from(Tensor::f_cat(&preds, 0)?.f_to_device(Device::Cpu)?)?,
        correct: Vec::<bool>::try_from(Tensor::f_cat(&corrects, 0)?.f_to_device(Device::Cpu)?)?,
        margins: Vec::<f64>::try_from(Tensor::f_cat(&margins, 0)?.f_to_device(Device::Cpu)?)?,
        pairwise_margins: if pairwise.is_empty() {
            Vec::new()
        } else {
            Vec::<f64>::try_from(Tensor::f_cat(&pairwise, 0)?.f_to_device(Device::Cpu)?)?
        },
    })
}

/// Mean-centering (`x/255 − mean`, the formula of [`crate::nn::blocks::center`]) with the mean already on the
/// device, so that a batch costs no host-to-device copy.
#[derive(Debug)]
pub struct Centering {
    mean: Tensor,
}

impl Centering {
    pub fn new(channel_mean: [f64; 3], device: tch::Device) -> anyhow::Result<Self> {
        let mean = Tensor::from_slice(&channel_mean).f_to_kind(Kind::Float)?.f_to_device(device)?.f_view([1, 3, 1, 1])?;
        Ok(Centering { mean })
    }

    /// The channel means `[1, 3, 1, 1]` (float32, on the device) that [`Centering::apply`] subtracts.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// Float32 centred batch from uint8 images `[B, 3, H, W]` (on the mean's device).
    pub fn apply(&self, images_u8: &Tensor) -> anyhow::Result<Tensor> {
        Ok(images_u8.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?.f_sub(&self.mean)?)
    }
}

