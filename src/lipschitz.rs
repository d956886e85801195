//! Empirical Lipschitz estimates of a map `f` (a layer, a block or a whole network), used by the
//! tests and by `certify`'s audit (design §6, reference-protocol §7.3).
//!
//! Two estimators, both *lower* bounds on the true Lipschitz constant (so a value above 1 proves a
//! violation, and a value at or below 1 is evidence, not proof):
//!
//! * [`jacobian_spectral_norm`]: the spectral norm of the Jacobian `J = ∂f/∂x` at a point, by power
//!   iteration on `JᵀJ`. Unlike the authors' audit (§7.3, which linearises each module at the zero
//!   input and multiplies per-module values), it differentiates the whole map at the given inputs,
//!   so non-linear layers (CPL, SLL, MaxMin) are covered too.
//!   - Vector–Jacobian product `Jᵀw`: backward of `(f(x)·w).sum()` with respect to `x`.
//!   - Jacobian–vector product `Jv`: the double-backward trick. `g(u) = Jᵀu` is built once with
//!     `create_graph`, for a dummy `u` that requires grad; `g` is linear in `u`, so the gradient of
//!     `(g(u)·v).sum()` with respect to `u` is exactly `Jv`. This needs only reverse mode (libtorch
//!     has no forward-mode AD through `tch`), and `f` is evaluated once: the Jacobian belongs to one
//!     call, even for layers whose training forward changes state (CPL's `u`, SOC's counter).
//!   - Each iteration: `v ← JᵀJv / ‖JᵀJv‖` and `σ = ‖Jv‖` with `‖v‖ = 1`. `σ` is the square root of a
//!     Rayleigh quotient of `JᵀJ`, hence non-decreasing and ≤ σ_max. It stops when every sample's
//!     relative change falls below [`PowerIteration::rel_tol`] (converged), or after
//!     [`PowerIteration::max_iters`].
//!   - The batch runs independent iterations per sample (normalisation is per sample). This assumes
//!     `f` treats samples independently, which holds for every layer and network in lipctl (no batch
//!     statistics).
//! * [`difference_quotient_ascent`]: `max ‖f(x)−f(y)‖/‖x−y‖` by gradient ascent (Adam) over pairs
//!   `(x, y = x + δ)`, one pair per sample. This is non-local: it can find expansion that the
//!   Jacobian at one point does not show (e.g. across ReLU kinks), at the price of more evaluations.
//!
//! Both work in the dtype of `f` (f32 for the networks); their relative accuracy is then about 1e-6,
//! far below the 1e-4 tolerances the tests use.

use anyhow::{ensure, Context};
use tch::{Kind, Tensor};

/// Options of [`jacobian_spectral_norm`].
#[derive(Clone, Copy, Debug)]
pub struct PowerIteration {
    /// Upper bound on iterations (each costs two backward passes through `f`'s graph).
    pub max_iters: usize,
    /// Stop when `|σ_k − σ_{k−1}| ≤ rel_tol · σ_k` for every sample.
    pub rel_tol: f64,
}

impl Default for PowerIteration {
    /// 1e-6 relative change: about 8 units in the last place of an f32 estimate. A converged
    /// estimate still moves by a unit or two in the last place from iteration to iteration (the
    /// f32 rounding of `Jv` and of the normalisation), and one unit is 0.6–1.2e-7 relative, so a
    /// tolerance of 1e-7 left 41 of 3,000 random starts on a rank-one 1×1 convolution unconverged
    /// after 500 iterations (σ alternating between 5 ± one unit). 500 iterations suffice for the
    /// gaps of random convolutions at test sizes (and orthogonal maps converge in one).
    fn default() -> Self {
        PowerIteration { max_iters: 500, rel_tol: 1e-6 }
    }
}

/// Result of [`jacobian_spectral_norm`].
#[derive(Clone, Debug)]
pub struct SpectralEstimate {
    /// Largest per-sample estimate: a lower bound on the Lipschitz constant of `f`.
    pub sigma: f64,
    /// Per-sample estimates `‖J_b v_b‖`.
    pub per_sample: Vec<f64>,
    pub iterations: usize,
    /// Whether the relative-change criterion was met before `max_iters`.
    pub converged: bool,
}

fn per_sample_norm(t: &Tensor) -> Tensor {
    t.flatten(1, -1).norm_scalaropt_dim(2, [1i64].as_slice(), false)
}

fn normalize_per_sample(t: &Tensor) -> Tensor {
    let n = per_sample_norm(t).clamp_min(1e-30);
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, t.dim() - 1));
    t / n.view(shape.as_slice())
}

/// Spectral norm of the Jacobian of `f` at each sample of `x` (`[B, ...]`), by power iteration on
/// `JᵀJ` through autograd (see the module doc). `f` is called exactly once; `x` is not modified.
/// The random start vector comes from the global generator (seed with `tch::manual_seed`).
pub fn jacobian_spectral_norm(
    f: &dyn Fn(&Tensor) -> Tensor,
    x: &Tensor,
    opts: &PowerIteration,
) -> anyhow::Result<SpectralEstimate> {
    ensure!(x.dim() >= 1 && x.size()[0] >= 1, "jacobian_spectral_norm: x needs a batch dimension, got {:?}", x.size());
    // Works under a caller's no_grad guard too (e.g. inside an evaluation loop).
    tch::with_grad(|| power_iteration(f, x, opts))
}

fn power_iteration(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, opts: &PowerIteration) -> anyhow::Result<SpectralEstimate> {
    let x = x.detach().set_requires_grad(true);
    let y = f(&x);
    ensure!(y.size()[0] == x.size()[0], "f changed the batch size: {:?} -> {:?}", x.size(), y.size());
    let u = y.zeros_like().detach().set_requires_grad(true);
    // g = Jᵀu, kept differentiable in u: its gradient against v is Jv.
    let g = Tensor::f_run_backward(&[(&y * &u).sum(Kind::Float)], &[&x], true, true)
        .context("backward of (f(x)·u).sum() failed (is f differentiable in x?)")?
        .remove(0);
    ensure!(g.requires_grad(), "Jᵀu does not depend on u: f's output does not depend on its input");

    let mut v = normalize_per_sample(&x.randn_like());
    let mut sigma_prev: Option<Vec<f64>> = None;
    let mut per_sample = Vec::new();
    let mut converged = false;
    let mut iterations = 0;
    for it in 1..=opts.max_iters {
        iterations = it;
        let jv = Tensor::f_run_backward(&[(&g * &v).sum(Kind::Float)], &[&u], true, false)
            .context("double backward (Jv) failed")?
            .remove(0);
        let jtjv = Tensor::f_run_backward(&[(&y * &jv).sum(Kind::Float)], &[&x], true, false)
            .context("backward (JᵀJv) failed")?
            .remove(0);
        per_sample = Vec::<f64>::try_from(per_sample_norm(&jv).to_kind(Kind::Double))
            .context("reading the per-sample estimates")?;
        v = normalize_per_sample(&jtjv.detach());
        if let Some(prev) = &sigma_prev {
            if per_sample.iter().zip(prev).all(|(s, p)| (s - p).abs() <= opts.rel_tol * s.abs().max(1e-30)) {
                converged = true;
                break;
            }
        }
        sigma_prev = Some(per_sample.clone());
    }
    let sigma = per_sample.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Ok(SpectralEstimate { sigma, per_sample, iterations, converged })
}

/// Options of [`difference_quotient_ascent`].
#[derive(Clone, Copy, Debug)]
pub struct Ascent {
    pub steps: usize,
    /// Adam step size, relative to the scale of the inputs (their RMS).
    pub lr: f64,
    /// Initial `‖y − x‖` relative to `‖x‖`: small pairs approach the local (Jacobian) value, large
    /// pairs probe non-local expansion; the ascent moves both freely.
    pub initial_gap: f64,
}

impl Default for Ascent {
    fn default() -> Self {
        Ascent { steps: 100, lr: 0.01, initial_gap: 0.1 }
    }
}

/// `max_b ‖f(x_b)−f(y_b)‖ / ‖x_b−y_b‖`, maximised by Adam over `x_b` and `δ_b = y_b − x_b`, starting
/// at `x` and a random `δ`. Returns the best quotient seen (a lower bound on the Lipschitz
/// constant). Gradients flow only into the pairs, never into `f`'s parameters' `.grad`.
pub fn difference_quotient_ascent(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, opts: &Ascent) -> anyhow::Result<f64> {
    tch::with_grad(|| ascent(f, x, opts))
}

fn ascent(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, opts: &Ascent) -> anyhow::Result<f64> {
    let scale = x.square().mean(Kind::Double).sqrt().double_value(&[]).max(1e-3);
    let x0 = x.detach().copy();
    let d0 = normalize_per_sample(&x.randn_like()) * per_sample_norm(&x0).clamp_min(scale).mean(Kind::Float) * opts.initial_gap;
    let mut params = [x0, d0];
    let mut m = [params[0].zeros_like(), params[1].zeros_like()];
    let mut s = [params[0].zeros_like(), params[1].zeros_like()];
    let (b1, b2, eps) = (0.9, 0.999, 1e-12);
    let lr = opts.lr * scale;
    let mut best = f64::NEG_INFINITY;
    for step in 1..=opts.steps.max(1) {
        let xs = params[0].detach().set_requires_grad(true);
        let ds = params[1].detach().set_requires_grad(true);
        // One call on the stacked pair, so stateful training forwards see both points alike.
        let both = f(&Tensor::cat(&[&xs, &(&xs + &ds)], 0));
        let n = xs.size()[0];
        let diff = both.narrow(0, 0, n) - both.narrow(0, n, n);
        let quotient = per_sample_norm(&diff) / per_sample_norm(&ds).clamp_min(1e-30);
        let q = Vec::<f64>::try_from(quotient.detach().to_kind(Kind::Double)).context("reading quotients")?;
        best = q.iter().cloned().fold(best, f64::max);
        if step == opts.steps.max(1) {
            break;
        }
        let grads = Tensor::f_run_backward(&[quotient.sum(Kind::Float)], &[&xs, &ds], false, false)
            .context("backward of the difference quotient failed")?;
        let _ng = tch::no_grad_guard();
        let t = step as i32;
        for i in 0..2 {
            let g = &grads[i];
            m[i] = &m[i] * b1 + g * (1.0 - b1);
            s[i] = &s[i] * b2 + g.square() * (1.0 - b2);
            let mhat = &m[i] / (1.0 - b1.powi(t));
            let shat = &s[i] / (1.0 - b2.powi(t));
            // Ascent: move along +gradient.
            params[i] = &params[i] + mhat / (shat.sqrt() + eps) * lr;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Float32 sums over a few hundred terms: relative error ~1e-6; allow 1e-5.
    const F32_REL: f64 = 1e-5;

    #[test]
    fn diagonal_scaling_by_hand() {
        // f(x) = diag(3, -5, 0.5) x on [B, 3]: σ_max = 5 exactly.
        tch::manual_seed(0);
        let d = Tensor::from_slice(&[3.0f32, -5.0, 0.5]);
        let f = |x: &Tensor| x * &d;
        let x = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let est = jacobian_spectral_norm(&f, &x, &PowerIteration::default()).unwrap();
        assert!(est.converged, "{est:?}");
        assert!((est.sigma - 5.0).abs() < 5.0 * F32_REL, "{est:?}");
        let q = difference_quotient_ascent(&f, &x, &Ascent::default()).unwrap();
        assert!(q <= 5.0 * (1.0 + F32_REL) && q > 4.9, "quotient {q}");
    }

    #[test]
    fn relu_jacobian_depends_on_the_point() {
        // f(x) = 2·relu(x): Jacobian 2 where x > 0 and 0 where x < 0.
        let f = |x: &Tensor| x.relu() * 2.0;
        let pos = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        let neg = Tensor::from_slice(&[-1.0f32, -2.0]).view([1, 2]);
        let opts = PowerIteration::default();
        assert!((jacobian_spectral_norm(&f, &pos, &opts).unwrap().sigma - 2.0).abs() < 2.0 * F32_REL);
        assert!(jacobian_spectral_norm(&f, &neg, &opts).unwrap().sigma.abs() < 1e-6);
    }
}
