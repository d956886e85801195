//! CPL: convex potential layer (Meunier et al., ICML 2022; reference-protocol §2.6).
//!
//! `f(x) = x − r·Kᵀ relu(Kx + b)` with `K` the zero-padded "same" convolution, `Kᵀ` its exact
//! adjoint (`conv_transpose2d`) and `r = 2/(σ² + 1e-6)`, where `σ` estimates `‖K‖₂`. This is the
//! gradient step of a convex potential and is 1-Lipschitz whenever `r·‖K‖² ≤ 2`. The guarantee
//! therefore rests on the power-iteration estimate of `σ`: it approaches `‖K‖` from below, so the
//! layer is 1-Lipschitz up to the power iteration's convergence (100 iterations at evaluation). The
//! tests check the exact Jacobian norm and random pairs at ≤ 1 + 1e-4.
//!
//! **Power-iteration state.** `u [1, out, H, W]` lives in the VarStore as non-trainable state (it
//! is in the checkpoint, so a resumed run continues the same estimate). Unlike the authors, who
//! create it lazily at the first forward, lipctl creates it at construction from `spec.spatial`,
//! drawn `N(0, 1)` from torch's generator. Every training forward does one power step
//! (ε = 1e-6) and stores the new `u`; evaluation (`forward_t(x, false)` and [`LipLayer::freeze`])
//! runs 100 steps (ε = 1e-12) from the stored `u` without changing it. `r` is differentiable in the
//! kernel; `u` and `v` are constants.
//!
//! Requires `in == out` (the residual). Zero padding, whatever the network asks (the authors
//! ignore `padding_mode`). Leaf names: `kernel (out, in, k, k)`, `bias (out)`, `u`.

use super::ortho::{conv2d_zero, conv2d_zero_adjoint, default_uniform, xavier_normal};
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use super::registry::{AuthorsTimes, Role, Tolerances, TrainIsEval};
use anyhow::Context;
use tch::{nn, Kind, Tensor};

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: false,
    fft_based: false,
    cached_at_inference: "scalar rescaling 2/σ² from 100 power iterations",
    guarantee: "1-Lipschitz up to power-iteration convergence (Jacobian norm ≤ 1 + 1e-4 in tests)",
    in_paper: true,
    color: (44, 160, 44),
    authors_cpu_b64_train_s: AuthorsTimes { xs: Some(0.47), s: Some(1.19) },
    // The self-test moves the kernel 10 % but not the stored vector; after the warm-up's 100
    // one-step updates and freeze's 100 steps, the sound audit still measures r·‖K‖² − 1 = 1.0329
    // (block2.conv1; the old power-iteration audit, which shares CPL's underestimate, could not
    // see it).
    tolerances: Tolerances {
        train_warmup_forwards: TRAIN_WARMUP_FORWARDS,
        train_is_eval: TrainIsEval::Never,
        selftest_audit: 5e-2,
        ..Tolerances::STRICT
    },
};

/// CPL's training forward rescales with the norm estimate of a *single* power iteration from its
/// stored vector (reference-protocol §2.6). Until that vector has converged the estimate is below
/// ‖W‖ and the training-mode map can expand (measured: up to 2.9 right after initialisation, 1.34
/// after large optimizer steps); evaluation uses 100 iterations and is 1-Lipschitz. So the tests
/// check the training-mode bound after this many training forwards at fixed parameters (its steady
/// state during training), and only print the value before them.
pub const TRAIN_WARMUP_FORWARDS: usize = 100;


/// Power steps per training forward, and their normalisation epsilon (§2.6).
pub const TRAIN_POWER_ITERS: i64 = 1;
const TRAIN_POWER_EPS: f64 = 1e-6;
/// Power steps for evaluation and freezing, from the stored `u`, and their epsilon (§2.6).
pub const EVAL_POWER_ITERS: i64 = 100;
const EVAL_POWER_EPS: f64 = 1e-12;
/// Added to σ² in the rescaling `2/(σ² + ε)` (§2.6).
const RESCALE_EPS: f64 = 1e-6;

/// A CPL layer.
#[derive(Debug)]
pub struct CplConv {
    kernel: Tensor,
    bias: Tensor,
    u: Tensor,
}

pub fn build(p: &nn::Path, spec: &ConvSpec, _role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    let (ci, co, k, n) = (spec.channels_in, spec.channels_out, spec.kernel, spec.spatial);
    if ci != co {
        anyhow::bail!(
            "CPL: {ci} input and {co} output channels; CPL is a residual layer and needs equal channel counts"
        );
    }
    if n < 1 {
        anyhow::bail!("CPL: spatial size {n} is not positive; the power-iteration state needs the input side");
    }
    // RNG order as the authors for kernel and bias (§2.6); u comes last because they draw it lazily.
    let kernel = p.f_var_copy("kernel", &xavier_normal([co, ci, k, k], p.device())).context("CPL: creating kernel")?;
    let bias = p
        .f_var_copy("bias", &default_uniform(&[co], ci * k * k, p.device()))
        .context("CPL: creating bias")?;
    let u = p.f_zeros_no_train("u", &[1, co, n, n]).context("CPL: creating u")?;
    tch::no_grad(|| {
        let _ = u.shallow_clone().normal_(0.0, 1.0);
    });
    Ok(Box::new(CplConv { kernel, bias, u }))
}

impl CplConv {
    /// `iters` power steps on `KᵀK` from `u` (§2.6 `update_uv`), under no-grad; returns `(u, v)`.
    fn power_steps(&self, iters: i64, eps: f64) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let kernel = self.kernel.detach();
        let mut u = self.u.detach();
        let mut v = Tensor::new();
        for _ in 0..iters {
            let ku = conv2d_zero(&u, &kernel, None);
            v = &ku / (ku.norm() + eps);
            let ktv = conv2d_zero_adjoint(&v, &kernel);
            u = &ktv / (ktv.norm() + eps);
        }
        (u, v)
    }

    /// `r = 2/((Σ K(u)·v)² + 1e-6)`, differentiable in the kernel.
    fn rescaling(&self, u: &Tensor, v: &Tensor) -> Tensor {
        let sigma = (conv2d_zero(u, &self.kernel, None) * v).sum(Kind::Float);
        2.0 / (sigma.square() + RESCALE_EPS)
    }

    fn residual(x: &Tensor, kernel: &Tensor, bias: &Tensor, r: &Tensor) -> Tensor {
        let h = conv2d_zero(x, kernel, Some(bias)).relu();
        // Not `conv2d_zero_adjoint(&h, &(kernel * r))`, although it is the same map and ~2 % faster:
        // on an AVX-512 Xeon its float32 backward gave a bias gradient 6e-2 away from float64's
        // (`lipctl doctor --selftest --methods CPL`; this form: 3e-6). Cause not found yet.
        x - conv2d_zero_adjoint(&h, kernel) * r
    }
}

impl nn::ModuleT for CplConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let r = if train {
            let (u, v) = self.power_steps(TRAIN_POWER_ITERS, TRAIN_POWER_EPS);
            tch::no_grad(|| self.u.shallow_clone().copy_(&u));
            self.rescaling(&u, &v)
        } else {
            let (u, v) = self.power_steps(EVAL_POWER_ITERS, EVAL_POWER_EPS);
            self.rescaling(&u, &v)
        };
        Self::residual(x, &self.kernel, &self.bias, &r)
    }
}

impl LipLayer for CplConv {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let _guard = tch::no_grad_guard();
        let (u, v) = self.power_steps(EVAL_POWER_ITERS, EVAL_POWER_EPS);
        let r = self.rescaling(&u, &v);
        let (kernel, bias) = (self.kernel.detach(), self.bias.detach());
        Box::new(FrozenFn(move |x: &Tensor| Self::residual(x, &kernel, &bias, &r)))
    }

    /// `x − r·Kᵀ relu(Kx + b)`: with `G = √r·K` the Jacobian is `I − Gᵀ D G`, `D` the ReLU's
    /// 0/1 diagonal; the same `r` as [`LipLayer::freeze`] (100 steps from the stored `u`).
    fn structure(&self) -> super::Structure {
        let _guard = tch::no_grad_guard();
        let (u, v) = self.power_steps(EVAL_POWER_ITERS, EVAL_POWER_EPS);
        let r = self.rescaling(&u, &v);
        super::Structure::ZeroPadResidual { kernel: self.kernel.detach() * r.sqrt() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::convnet::parameter_counts;
    use crate::nn::ortho::testing::{fixed_randn, impulse_singular_values, jacobian, max_abs_diff, svdvals};
    use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
    use tch::Device;

    /// 100 power iterations on a small operator converge to ~1e-6 relative; f32 rounding on top.
    const LIP_TOL: f64 = 1e-4;
    /// f32 rounding of a forward pass with entries of order 1.
    const F32_TOL: f64 = 1e-5;

    fn layer(vs: &nn::VarStore, c: i64, k: i64, n: i64) -> Box<dyn LipLayer> {
        build(&vs.root(), &ConvSpec::square(c, k, n), Role::Block).unwrap()
    }

    /// Scales the kernel up (norm far from 1) and the bias so that ReLUs are mixed.
    fn randomise(vs: &nn::VarStore, kernel_scale: f64) {
        tch::no_grad(|| {
            let k = vs.variables()["kernel"].shallow_clone();
            let _ = k.shallow_clone().copy_(&(k.randn_like() * kernel_scale));
            let b = vs.variables()["bias"].shallow_clone();
            let _ = b.shallow_clone().copy_(&(b.randn_like() * 0.3));
        });
    }

    #[test]
    fn rejects_unequal_channels() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = build(&vs.root(), &ConvSpec { channels_in: 3, channels_out: 4, kernel: 3, spatial: 4 }, Role::Block)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CPL") && err.contains('3') && err.contains('4'), "{err}");
    }

    #[test]
    fn power_iteration_finds_the_convolution_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _layer = layer(&vs, 2, 3, 4);
        // A smooth kernel plus noise: a clearly dominant low-frequency singular value.
        let kernel = (fixed_randn(&[2, 2, 3, 3], 31) * 0.3 + 1.0).to_kind(Kind::Float);
        // Exact ‖K‖ from the impulse response of the zero-padded convolution.
        let exact = impulse_singular_values(&|x| conv2d_zero(x, &kernel, None), 2, 4, Device::Cpu);
        // Precondition of the tolerance (fixed data): a spectral gap σ₂/σ₁ < 0.8 makes 100
        // iterations converge to ~0.8^200 relative, far below LIP_TOL, from any start.
        assert!(exact[1] / exact[0] < 0.8, "{exact:?}");
        let exact = exact[0];
        let cpl = CplConv { kernel: kernel.shallow_clone(), bias: vs.variables()["bias"].detach(), u: vs.variables()["u"].shallow_clone() };
        let (u, v) = cpl.power_steps(EVAL_POWER_ITERS, EVAL_POWER_EPS);
        let sigma = (conv2d_zero(&u, &kernel, None) * &v).sum(Kind::Float).double_value(&[]);
        assert!((sigma - exact).abs() < LIP_TOL * exact, "{sigma} vs {exact}");
    }

    #[test]
    fn jacobian_norm_and_random_pairs_within_one() {
        tch::manual_seed(32);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = layer(&vs, 2, 3, 4);
        randomise(&vs, 2.0);
        let frozen = l.freeze();
        // Jacobian at random points: f is piecewise affine, so it is the matrix of
        // z ↦ f(x₀ + z) − f(x₀) for tiny z; autograd gives it exactly instead.
        for _ in 0..3 {
            let x0 = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu));
            let jac = jacobian(&|x| l.forward_t(x, false), &x0);
            let top = svdvals(&jac).double_value(&[0]);
            assert!(top <= 1.0 + LIP_TOL, "Jacobian norm {top}");
        }
        for _ in 0..20 {
            let x = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu));
            let y = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu)) * 0.1 + &x;
            let out = (frozen.forward(&x) - frozen.forward(&y)).norm().double_value(&[]);
            let inp = (&x - &y).norm().double_value(&[]);
            assert!(out <= inp * (1.0 + LIP_TOL), "{out} > {inp}");
        }
    }

    #[test]
    fn training_forward_updates_u_and_eval_does_not() {
        tch::manual_seed(33);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = layer(&vs, 2, 3, 4);
        let u = vs.variables()["u"].shallow_clone();
        assert_eq!(u.size(), vec![1, 2, 4, 4]);
        let before = u.copy();
        let x = Tensor::randn([2, 2, 4, 4], (Kind::Float, Device::Cpu));
        let _ = l.forward_t(&x, false);
        let _ = l.freeze();
        assert_eq!(max_abs_diff(&u, &before), 0.0);
        let _ = l.forward_t(&x, true);
        assert!(max_abs_diff(&u, &before) > 1e-3);
        // After a power step u is a unit vector.
        assert!((u.norm().double_value(&[]) - 1.0).abs() < F32_TOL);
    }

    #[test]
    fn freeze_matches_eval_and_gradients_reach_parameters() {
        tch::manual_seed(34);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = layer(&vs, 3, 3, 5);
        randomise(&vs, 1.0);
        let x = Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu));
        assert!(max_abs_diff(&l.freeze().forward(&x), &l.forward_t(&x, false)) < F32_TOL);
        l.forward_t(&x, true).square().sum(Kind::Float).backward();
        assert_eq!(vs.trainable_variables().len(), 2);
        for name in ["kernel", "bias"] {
            let g = vs.variables()[name].grad();
            assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "no gradient for {name}");
        }
    }

    #[test]
    fn parameter_counts_match_reference() {
        // reference-protocol §4.4: Standard's trainable count, plus u (c·H² per layer).
        for (size, expected) in [(ModelSize::XS, (1_572_288, 175_616)), (ModelSize::S, (6_283_136, 351_232))] {
            let vs = nn::VarStore::new(Device::Cpu);
            ConvNet::new(&vs.root(), NetSpec::new(Method::Cpl, size, 32, 10)).unwrap();
            assert_eq!(parameter_counts(&vs), expected, "{size}");
        }
    }
}
