//! Offset ("Lipschitz") cross-entropy, reference-protocol §6.1.
//!
//! `ℓ(z, y) = T · CE((z − m·e_y)/T, y) = T·[log Σ_j exp((z_j − m·1[j=y])/T) − (z_y − m)/T]`
//!
//! The offset `m` asks the true logit to beat every other logit by a margin before the loss
//! flattens out; the temperature `T` sharpens the softmax towards a hinge. lipctl uses the exact
//! offset `2·√2·36/255` (design §5: exact fractions, not the rounded 0.3993 of R1's settings):
//! a margin of `m` certifies radius `m/√2 = 2·36/255` for a 1-Lipschitz network.

use anyhow::Context;
use tch::{Reduction, Tensor};

/// The offset `m = 2·√2·36/255 = 0.399307…` (exact, reference-protocol §6.1, §12.11).
pub fn default_offset() -> f64 {
    2.0 * std::f64::consts::SQRT_2 * 36.0 / 255.0
}

/// The temperature `T = 1/4` of R1 and R2.
pub const DEFAULT_TEMPERATURE: f64 = 0.25;

/// Offset cross-entropy with offset `m` and temperature `T`.
///
/// `logits` is `[B, K]` float, `labels` `[B]` int64 in `0..K`. `Reduction::Mean` gives the batch
/// mean used for training (§6.1); `Reduction::None` the per-sample values. Computed with
/// `log_softmax`, so large logits (or a tiny `T`) do not overflow.
pub fn offset_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    offset: f64,
    temperature: f64,
    reduction: Reduction,
) -> anyhow::Result<Tensor> {
    anyhow::ensure!(temperature > 0.0, "temperature must be positive, got {temperature}");
    let classes = *logits.size().last().context("logits must be [B, K]")?;
    let one_hot = labels
        .f_one_hot(classes)
        .context("labels must be int64 class indices below the number of logits")?
        .f_to_kind(logits.kind())?;
    let shifted = (logits - one_hot * offset) / temperature;
    let log_p = shifted.f_log_softmax(-1, logits.kind())?;
    let nll = -log_p.f_gather(1, &labels.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
    let per_sample = nll * temperature;
    Ok(match reduction {
        Reduction::None => per_sample,
        Reduction::Sum => per_sample.f_sum(logits.kind())?,
        Reduction::Mean => per_sample.f_mean(logits.kind())?,
        Reduction::Other(_) => anyhow::bail!("unsupported reduction"),
    })
}

/// The training loss of the paper: exact offset, `T = 1/4`, batch mean.
pub fn lipschitz_loss(logits: &Tensor, labels: &Tensor) -> anyhow::Result<Tensor> {
    offset_cross_entropy(logits, labels, default_offset(), DEFAULT_TEMPERATURE, Reduction::Mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// f64 arithmetic on O(1) values: a few ulps.
    const TOL_F64: f64 = 1e-12;

    fn f64s(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// The §9.2 scores, all labelled 0.
    fn r2_scores(kind: Kind) -> (Tensor, Tensor) {
        let z = Tensor::from_slice(&[1.0f64, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 2.0, 1.1, 0.9])
            .view([5, 2])
            .to_kind(kind);
        (z, Tensor::zeros([5], (Kind::Int64, Device::Cpu)))
    }

    #[test]
    fn hand_computed_three_class_case() {
        // z = (1, 2, 0.5), y = 1, m = default, T = 1/4, by hand:
        // ℓ = T·[log(e^{4·1} + e^{4·(2−m)} + e^{4·0.5}) − 4·(2−m)].
        let m = default_offset();
        let z = Tensor::from_slice(&[1.0f64, 2.0, 0.5]).view([1, 3]);
        let y = Tensor::from_slice(&[1i64]);
        let expected = 0.25 * (((4.0f64).exp() + (4.0 * (2.0 - m)).exp() + (2.0f64).exp()).ln() - 4.0 * (2.0 - m));
        let got = f64s(&lipschitz_loss(&z, &y).unwrap())[0];
        assert!((got - expected).abs() < TOL_F64, "{got} vs {expected}");
        assert!((m - 0.399_307_36).abs() < 1e-8, "offset {m}");
    }

    #[test]
    fn offset_zero_temperature_one_is_plain_cross_entropy() {
        let (z, y) = r2_scores(Kind::Double);
        let ours = f64s(&offset_cross_entropy(&z, &y, 0.0, 1.0, Reduction::None).unwrap());
        // Plain CE by hand: log(e^{z0} + e^{z1}) − z0.
        let zs = f64s(&z);
        for (i, got) in ours.iter().enumerate() {
            let (a, b) = (zs[2 * i], zs[2 * i + 1]);
            let expected = (a.exp() + b.exp()).ln() - a;
            assert!((got - expected).abs() < TOL_F64, "sample {i}: {got} vs {expected}");
        }
    }

    fn grad_of_sum(offset: f64) -> Vec<f64> {
        let (z, y) = r2_scores(Kind::Float);
        let z = z.set_requires_grad(true);
        let loss = offset_cross_entropy(&z, &y, offset, DEFAULT_TEMPERATURE, Reduction::None).unwrap();
        loss.sum(Kind::Float).backward();
        f64s(&z.grad())
    }

    #[test]
    fn huge_offsets_saturate_the_gradient() {
        // m = 100: the softmax puts all mass on the wrong class, so ∂ℓ/∂z = softmax − e_y = ±1.
        for g in grad_of_sum(100.0).chunks(2) {
            assert_eq!(g, [-1.0, 1.0]);
        }
        // m = −100: the true class already wins by far, the gradient vanishes.
        assert!(grad_of_sum(-100.0).iter().all(|g| g.abs() < 1e-5));
        // The mean loss has every gradient entry below 1 in absolute value.
        let (z, y) = r2_scores(Kind::Float);
        let z = z.set_requires_grad(true);
        lipschitz_loss(&z, &y).unwrap().backward();
        assert!(f64s(&z.grad()).iter().all(|g| g.abs() < 1.0));
    }

    #[test]
    fn tiny_temperature_is_the_hinge() {
        // T = 1e-5, m = 0: ℓ = max(−(z0 − z1), 0) = [0, 0, 1, 2, 0] exactly (f32, as in R2).
        let (z, y) = r2_scores(Kind::Float);
        let loss = offset_cross_entropy(&z, &y, 0.0, 1e-5, Reduction::None).unwrap();
        assert_eq!(f64s(&loss), vec![0.0, 0.0, 1.0, 2.0, 0.0]);
    }
}
