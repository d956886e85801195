//! AOL: almost-orthogonal Lipschitz convolution (Prach & Lampert, ECCV 2022; reference-protocol
//! §2.1).
//!
//! Each input channel `a` of the raw kernel `W (out, in, k, k)` is divided by `sqrt(d_a + 1e-6)`,
//! where `d_a = Σ_{b,y,x} |V[a,b,y,x]|` and `V = WᵀW` as a convolution (the kernel's
//! autocorrelation, shape `(in, in, 2k−1, 2k−1)`). This bounds the spectral norm of the
//! convolution by 1 for any padding (a Gershgorin/Schur-test bound), so the layer is 1-Lipschitz
//! but in general not orthogonal. The tests check the exact circular singular values (§1.7) are
//! ≤ 1 within float rounding.
//!
//! Circular "same" padding. Initialisation as in the training runs (§2.1, §4.3): `dirac_` for the
//! block convolutions (AOLConv2dDirac), `orthogonal_` on the flattened weight for the first
//! convolution and the head (AOLConv2dOrth); the bias starts at zero. The authors draw the default
//! Conv2d init first and overwrite it; lipctl skips the overwritten draw (same distributions, not
//! bitwise-identical RNG streams). Leaf names: `weight` (the raw kernel), `bias`.
//!
//! The rescaled kernel is recomputed at every forward (training and uncached eval) and precomputed
//! once by [`LipLayer::freeze`].

use super::ortho::{autocorrelation, conv2d_circular, dirac, orthogonal};
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use super::registry::{AuthorsTimes, Role, Tolerances};
use anyhow::Context;
use tch::{nn, Tensor};

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: false,
    fft_based: false,
    cached_at_inference: "rescaled kernel",
    guarantee: "1-Lipschitz: spectral norm ≤ 1 by the AOL rescaling (circular singular values ≤ 1 + 1e-5)",
    in_paper: true,
    color: (31, 119, 180),
    authors_cpu_b64_train_s: AuthorsTimes { xs: Some(0.51), s: Some(1.86) },
    tolerances: Tolerances::STRICT,
};

/// Added to `d_a` before the square root (§2.1), so an all-zero input channel does not divide by 0.
const AOL_EPS: f64 = 1e-6;

/// An AOL convolution.
#[derive(Debug)]
pub struct AolConv {
    weight: Tensor,
    bias: Tensor,
}

pub fn build(p: &nn::Path, spec: &ConvSpec, role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    let (co, ci, k) = (spec.channels_out, spec.channels_in, spec.kernel);
    let init = match role {
        Role::Block => dirac(co, ci, k, p.device()),
        Role::First | Role::Head => orthogonal(&[co, ci, k, k], 1.0, p.device()),
    };
    let weight = p.f_var_copy("weight", &init).context("AOL: creating weight")?;
    let bias = p.f_zeros("bias", &[co]).context("AOL: creating bias")?;
    Ok(Box::new(AolConv { weight, bias }))
}

/// The AOL-rescaled kernel `W̃[o,a] = W[o,a] / sqrt(d_a + 1e-6)` (§2.1), differentiable in `W`.
pub fn aol_rescale(weight: &Tensor) -> Tensor {
    // V[a,b] = Σ_o W[o,a] ⋆ W[o,b]: the input-channel Gram matrix as a full 2-D correlation.
    let v = autocorrelation(&weight.transpose(0, 1));
    let d = v.abs().sum_dim_intlist([1i64, 2, 3].as_slice(), false, weight.kind());
    weight / (d + AOL_EPS).sqrt().view([1, -1, 1, 1])
}

impl nn::ModuleT for AolConv {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        conv2d_circular(x, &aol_rescale(&self.weight), Some(&self.bias))
    }
}

impl LipLayer for AolConv {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let _guard = tch::no_grad_guard();
        let weight = aol_rescale(&self.weight);
        let bias = self.bias.detach();
        Box::new(FrozenFn(move |x: &Tensor| conv2d_circular(x, &weight, Some(&bias))))
    }

    /// A circular convolution (or a dense matrix on 1×1 maps) plus a bias.
    fn structure(&self) -> super::Structure {
        super::Structure::CircularLinear
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::convnet::parameter_counts;
    use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
    use crate::nn::ortho::testing::{circular_conv_singular_values, fixed_randn, max_abs_diff};
    use tch::{Device, Kind};

    /// f32 rounding of rescaled kernels with entries of order 1.
    const F32_TOL: f64 = 1e-5;

    fn set(t: &Tensor, values: &Tensor) {
        tch::no_grad(|| t.shallow_clone().copy_(values));
    }

    #[test]
    fn one_by_one_rescaling_by_hand() {
        // W = [[1,2],[3,4]] (out × in): WᵀW = [[10,14],[14,20]], row sums d = (24, 34).
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2, 1, 1]);
        let got = aol_rescale(&w).view([2, 2]);
        let (s0, s1) = ((24.0f64 + 1e-6).sqrt(), (34.0f64 + 1e-6).sqrt());
        let expected = Tensor::from_slice(&[1.0 / s0, 2.0 / s1, 3.0 / s0, 4.0 / s1]).view([2, 2]);
        assert!(max_abs_diff(&got, &expected) < F32_TOL);
    }

    #[test]
    fn one_by_one_rescaling_is_gram_column_sum_normalisation() {
        // in ≠ out: 5 outputs, 3 inputs; d is per input channel.
        let w = fixed_randn(&[5, 3], 11);
        let gram = w.transpose(0, 1).matmul(&w).abs();
        let d = gram.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        let expected = &w / (d + AOL_EPS).sqrt().view([1, 3]);
        let got = aol_rescale(&w.to_kind(Kind::Float).view([5, 3, 1, 1])).view([5, 3]);
        assert!(max_abs_diff(&got, &expected) < F32_TOL);
    }

    #[test]
    fn circular_singular_values_at_most_one() {
        for (co, ci) in [(4, 4), (3, 5), (6, 2)] {
            let w = fixed_randn(&[co, ci, 3, 3], 12).to_kind(Kind::Float);
            let sv = circular_conv_singular_values(&aol_rescale(&w), 6);
            let top = sv.iter().cloned().fold(0.0, f64::max);
            assert!(top <= 1.0 + F32_TOL, "({co},{ci}): σ_max = {top}");
            // The bound is not vacuous: a random kernel keeps a good part of its norm.
            assert!(top > 0.3, "({co},{ci}): σ_max = {top}");
        }
    }

    #[test]
    fn inits_per_role() {
        tch::manual_seed(13);
        let vs = nn::VarStore::new(Device::Cpu);
        let block = build(&(vs.root() / "b"), &ConvSpec::square(4, 3, 5), Role::Block).unwrap();
        let first = build(&(vs.root() / "f"), &ConvSpec::square(4, 1, 5), Role::First).unwrap();
        // Dirac: the identity, up to 1/sqrt(1 + 1e-6).
        let x = Tensor::randn([2, 4, 5, 5], (Kind::Float, Device::Cpu));
        assert!(max_abs_diff(&block.forward_t(&x, true), &x) < F32_TOL);
        // Orthogonal 1×1: WᵀW = I, so d = 1 and the layer preserves norms.
        let w = vs.variables()["f.weight"].view([4, 4]);
        assert!(max_abs_diff(&w.transpose(0, 1).matmul(&w), &Tensor::eye(4, (Kind::Float, Device::Cpu))) < F32_TOL);
        let y = first.forward_t(&x, true);
        let ratio = y.norm().double_value(&[]) / x.norm().double_value(&[]);
        assert!((ratio - 1.0).abs() < F32_TOL, "{ratio}");
        assert_eq!(vs.variables()["b.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn freeze_matches_eval_and_gradients_reach_parameters() {
        tch::manual_seed(14);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = build(&vs.root(), &ConvSpec { channels_in: 3, channels_out: 4, kernel: 3, spatial: 5 }, Role::Block).unwrap();
        set(&vs.root().get("weight").unwrap(), &Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu)));
        set(&vs.root().get("bias").unwrap(), &Tensor::randn([4], (Kind::Float, Device::Cpu)));
        let x = Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu));
        let eval = layer.forward_t(&x, false);
        assert!(max_abs_diff(&layer.freeze().forward(&x), &eval) < F32_TOL);
        layer.forward_t(&x, true).square().sum(Kind::Float).backward();
        for (name, t) in vs.variables() {
            assert!(t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "no gradient for {name}");
        }
    }

    #[test]
    fn parameter_counts_match_reference() {
        // reference-protocol §4.4 (Std / AOL row): everything trainable.
        for (size, expected) in [(ModelSize::XS, (1_572_288, 0)), (ModelSize::S, (6_283_136, 0))] {
            let vs = nn::VarStore::new(Device::Cpu);
            ConvNet::new(&vs.root(), NetSpec::new(Method::Aol, size, 32, 10)).unwrap();
            assert_eq!(parameter_counts(&vs), expected, "{size}");
        }
    }
}
