//! The unconstrained baseline: a plain convolution (reference-protocol §2.12, the R1 variant).
//!
//! Circular "same" padding and PyTorch's default initialisation (§1.8: weight and bias
//! `U(±1/√(in·k²))`). It is **not** Lipschitz-bounded; it is in the study as the speed and accuracy
//! reference, and every certificate path treats it as such ([`Method::is_lipschitz`] is false).
//! Leaf names: `weight (out, in, k, k)`, `bias (out)`.
//!
//! [`Method::is_lipschitz`]: super::Method::is_lipschitz

use super::ortho::{conv2d_circular, default_uniform};
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use super::registry::{AuthorsTimes, Role, Tolerances};
use anyhow::Context;
use tch::{nn, Tensor};

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: false,
    fft_based: false,
    cached_at_inference: "nothing (plain weights)",
    guarantee: "none: unconstrained baseline, not Lipschitz-bounded",
    in_paper: true,
    color: (90, 90, 90),
    authors_cpu_b64_train_s: AuthorsTimes { xs: Some(0.37), s: Some(0.91) },
    tolerances: Tolerances {
        lipschitz_train: f64::INFINITY,
        lipschitz_eval: f64::INFINITY,
        lipschitz_network: f64::INFINITY,
        ..Tolerances::STRICT
    },
};

/// A plain convolution with circular "same" padding.
#[derive(Debug)]
pub struct StandardConv {
    weight: Tensor,
    bias: Tensor,
}

pub fn build(p: &nn::Path, spec: &ConvSpec, _role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    let (co, ci, k) = (spec.channels_out, spec.channels_in, spec.kernel);
    let fan_in = ci * k * k;
    let weight = p
        .f_var_copy("weight", &default_uniform(&[co, ci, k, k], fan_in, p.device()))
        .context("Standard: creating weight")?;
    let bias = p.f_var_copy("bias", &default_uniform(&[co], fan_in, p.device())).context("Standard: creating bias")?;
    Ok(Box::new(StandardConv { weight, bias }))
}

impl nn::ModuleT for StandardConv {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        conv2d_circular(x, &self.weight, Some(&self.bias))
    }
}

impl LipLayer for StandardConv {
    /// There is no transform to precompute: the frozen module reads the live (detached) weights.
    fn freeze(&self) -> Box<dyn nn::Module> {
        let (weight, bias) = (self.weight.detach(), self.bias.detach());
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
    use crate::nn::ortho::testing::max_abs_diff;
    use tch::{Device, Kind};

    #[test]
    fn circular_padding_wraps_around() {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = build(&vs.root(), &ConvSpec::square(1, 3, 4), Role::Block).unwrap();
        // Kernel that copies the left neighbour: y[r, c] = x[r, c − 1 mod n].
        tch::no_grad(|| {
            let mut w = vs.root().get("weight").unwrap();
            let _ = w.zero_();
            let _ = w.narrow(3, 0, 1).narrow(2, 1, 1).fill_(1.0);
            let _ = vs.root().get("bias").unwrap().zero_();
        });
        let x = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 4, 4]);
        let y = layer.forward_t(&x, false);
        let expected = x.roll([1i64].as_slice(), [3i64].as_slice());
        assert_eq!(max_abs_diff(&y, &expected), 0.0);
        assert_eq!(max_abs_diff(&layer.freeze().forward(&x), &expected), 0.0);
    }

    #[test]
    fn default_init_bounds() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = build(&vs.root(), &ConvSpec::square(8, 3, 4), Role::Block).unwrap();
        let bound = 1.0 / 72f64.sqrt();
        for name in ["weight", "bias"] {
            let t = vs.root().get(name).unwrap();
            assert!(t.abs().max().double_value(&[]) <= bound);
            // U(−b, b) has standard deviation b/√3; 576 weights estimate it within ~10 %.
            if name == "weight" {
                let std = t.std(true).double_value(&[]);
                assert!((std - bound / 3f64.sqrt()).abs() < 0.1 * bound, "{std}");
            }
        }
    }

    #[test]
    fn parameter_counts_match_reference() {
        // reference-protocol §4.4 (Std / AOL row): everything trainable.
        for (size, expected) in [(ModelSize::XS, (1_572_288, 0)), (ModelSize::S, (6_283_136, 0))] {
            let vs = nn::VarStore::new(Device::Cpu);
            ConvNet::new(&vs.root(), NetSpec::new(Method::Standard, size, 32, 10)).unwrap();
            assert_eq!(parameter_counts(&vs), expected, "{size}");
        }
    }
}
