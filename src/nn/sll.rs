//! SLL: SDP-based Lipschitz layer (Araujo et al., ICLR 2023; reference-protocol §2.10).
//!
//! `f(x) = x − Kᵀ(r ⊙ relu(Kx + b))` with `K` the zero-padded "same" convolution, `Kᵀ` its exact
//! adjoint, and per-channel `r_a = 2/(Σ_b |KK_ab · q̃_b| / q̃_a + ε)`, where `KK = K Kᵀ` as a
//! convolution (the kernel's autocorrelation, shape `(out, out, 2k−1, 2k−1)`) and
//! `q̃ = |q| + ε` a trained diagonal scaling. With `t = 2/r`, the weighted Gershgorin bound gives
//! `diag(t) ⪰ K Kᵀ`, the condition of the paper's theorem, so the layer is 1-Lipschitz for any
//! parameters, without iterations; it is not orthogonal. The tests check the exact Jacobian
//! norm ≤ 1 + 1e-5 at random points after randomising the parameters, and random pairs.
//!
//! This is the authors' older SLL version (§2.10 version note). Zero padding (their
//! `padding_mode` is ignored); with `in ≠ out` the output keeps `in` channels. Initialisation in
//! the authors' RNG order: `q ~ N(0, 1)`, `kernel ~ xavier_normal`, `bias ~ U(±1/√(in·k²))`.
//! Leaf names: `kernel (out, in, k, k)`, `bias (out)`, `q (out)`. [`LipLayer::freeze`] folds `r`
//! into the transposed kernel.

use super::ortho::{autocorrelation, conv2d_zero, conv2d_zero_adjoint, default_uniform, xavier_normal};
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use super::registry::{AuthorsTimes, Role, Tolerances};
use anyhow::Context;
use tch::{nn, Tensor};

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: false,
    fft_based: false,
    cached_at_inference: "per-channel rescaling folded into the transposed kernel",
    guarantee: "1-Lipschitz for any parameters (SDP rescaling; Jacobian norm ≤ 1 + 1e-5 in tests)",
    in_paper: true,
    color: (140, 86, 75),
    authors_cpu_b64_train_s: AuthorsTimes { xs: Some(0.62), s: Some(2.21) },
    tolerances: Tolerances::STRICT,
};

/// The ε of §2.10, used twice: in `q̃ = |q| + ε` and in `2/(bound + ε)`.
const SLL_EPS: f64 = 1e-6;

/// An SLL residual layer.
#[derive(Debug)]
pub struct SllConv {
    kernel: Tensor,
    bias: Tensor,
    q: Tensor,
}

pub fn build(p: &nn::Path, spec: &ConvSpec, _role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    let (ci, co, k) = (spec.channels_in, spec.channels_out, spec.kernel);
    let device = p.device();
    let q = p.f_var_copy("q", &Tensor::randn([co], (tch::Kind::Float, device))).context("SLL: creating q")?;
    let kernel = p.f_var_copy("kernel", &xavier_normal([co, ci, k, k], device)).context("SLL: creating kernel")?;
    let bias = p.f_var_copy("bias", &default_uniform(&[co], ci * k * k, device)).context("SLL: creating bias")?;
    Ok(Box::new(SllConv { kernel, bias, q }))
}

/// The per-output-channel rescaling `r (out)` of §2.10, differentiable in `kernel` and `q`.
pub fn sll_rescaling(kernel: &Tensor, q: &Tensor) -> Tensor {
    // KK[a,b] = Σ_i K[a,i] ⋆ K[b,i]: the output-channel Gram matrix as a full 2-D correlation.
    let kk = autocorrelation(kernel);
    let q_abs = q.abs() + SLL_EPS;
    let weighted = (kk * q_abs.view([1, -1, 1, 1])).abs();
    let bound = weighted.sum_dim_intlist([1i64, 2, 3].as_slice(), false, kernel.kind()) / &q_abs;
    2.0 / (bound + SLL_EPS)
}

fn residual(x: &Tensor, kernel: &Tensor, bias: &Tensor, scaled_adjoint: &Tensor) -> Tensor {
    let h = conv2d_zero(x, kernel, Some(bias)).relu();
    x - conv2d_zero_adjoint(&h, scaled_adjoint)
}

impl nn::ModuleT for SllConv {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let r = sll_rescaling(&self.kernel, &self.q);
        // Kᵀ(r ⊙ h) = (K scaled by r per output channel)ᵀ h: the rescaling goes on the kernel,
        // not on the activation (a product of kernel size instead of activation size).
        residual(x, &self.kernel, &self.bias, &(&self.kernel * r.view([-1, 1, 1, 1])))
    }
}

impl LipLayer for SllConv {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let _guard = tch::no_grad_guard();
        let r = sll_rescaling(&self.kernel, &self.q);
        let scaled = &self.kernel * r.view([-1, 1, 1, 1]);
        let (kernel, bias) = (self.kernel.detach(), self.bias.detach());
        Box::new(FrozenFn(move |x: &Tensor| residual(x, &kernel, &bias, &scaled)))
    }

    /// `x − Kᵀ(r ⊙ relu(Kx + b))`: with `G = diag(√r)·K` (rows of `K` per output channel) the
    /// Jacobian is `I − Gᵀ D G`, `D` the ReLU's 0/1 diagonal.
    fn structure(&self) -> super::Structure {
        let _guard = tch::no_grad_guard();
        let r = sll_rescaling(&self.kernel, &self.q);
        super::Structure::ZeroPadResidual { kernel: self.kernel.detach() * r.sqrt().view([-1, 1, 1, 1]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::convnet::parameter_counts;
    use crate::nn::ortho::testing::{jacobian, max_abs_diff, svdvals};
    use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
    use tch::{Device, Kind};

    /// f32 rounding in a product of a few convolutions with entries of order 1.
    const F32_TOL: f64 = 1e-5;

    fn layer(vs: &nn::VarStore, c: i64, k: i64) -> Box<dyn LipLayer> {
        build(&vs.root(), &ConvSpec::square(c, k, 4), Role::Block).unwrap()
    }

    /// Kernel far from the init scale, mixed-sign q and a bias that mixes the ReLUs.
    fn randomise(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for (name, scale) in [("kernel", 2.0), ("bias", 0.3), ("q", 1.0)] {
                let t = vs.variables()[name].shallow_clone();
                let _ = t.shallow_clone().copy_(&(t.randn_like() * scale));
            }
        });
    }

    #[test]
    fn rescaling_by_hand_on_a_one_by_one_kernel() {
        // K = [[1,2],[3,4]]: K Kᵀ = [[5,11],[11,25]]; q = (1, −2) so q̃ ≈ (1, 2):
        // bound₀ = 5 + 11·2/1 = 27, bound₁ = 11·1/2 + 25 = 30.5.
        let kernel = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2, 1, 1]);
        let q = Tensor::from_slice(&[1.0f32, -2.0]);
        let r = sll_rescaling(&kernel, &q);
        let expected = Tensor::from_slice(&[2.0 / 27.0, 2.0 / 30.5]);
        // ε = 1e-6 perturbs the values by < 1e-7 relative; f32 rounding dominates.
        assert!(max_abs_diff(&r, &expected) < 1e-6);
    }

    #[test]
    fn jacobian_norm_and_random_pairs_within_one() {
        tch::manual_seed(41);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = layer(&vs, 2, 3);
        randomise(&vs);
        for _ in 0..3 {
            let x0 = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu));
            let top = svdvals(&jacobian(&|x| l.forward_t(x, false), &x0)).double_value(&[0]);
            assert!(top <= 1.0 + F32_TOL, "Jacobian norm {top}");
        }
        let frozen = l.freeze();
        for _ in 0..20 {
            let x = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu));
            let y = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu)) * 0.1 + &x;
            let out = (frozen.forward(&x) - frozen.forward(&y)).norm().double_value(&[]);
            let inp = (&x - &y).norm().double_value(&[]);
            assert!(out <= inp * (1.0 + F32_TOL), "{out} > {inp}");
        }
    }

    #[test]
    fn freeze_matches_eval_and_gradients_reach_parameters() {
        tch::manual_seed(42);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = layer(&vs, 3, 3);
        randomise(&vs);
        let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        assert!(max_abs_diff(&l.freeze().forward(&x), &l.forward_t(&x, false)) < F32_TOL);
        l.forward_t(&x, true).square().sum(Kind::Float).backward();
        for (name, t) in vs.variables() {
            assert!(t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "no gradient for {name}");
        }
    }

    #[test]
    fn parameter_counts_match_reference() {
        // reference-protocol §4.4: Standard's count plus q (c per layer).
        for (size, expected) in [(ModelSize::XS, (1_575_296, 0)), (ModelSize::S, (6_289_152, 0))] {
            let vs = nn::VarStore::new(Device::Cpu);
            ConvNet::new(&vs.root(), NetSpec::new(Method::Sll, size, 32, 10)).unwrap();
            assert_eq!(parameter_counts(&vs), expected, "{size}");
        }
    }
}
