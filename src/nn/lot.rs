//! LOT, layer-wise orthogonal training (Xu, Li & Li 2022, "LOT: Layer-wise Orthogonal Training on
//! Improving l2 Certified Robustness"; reference-protocol §2.8, §1.6).
//!
//! The input is zero-padded by `p = k/2` to `n = n₀+2p`, and on that `n×n` torus every
//! per-frequency kernel matrix `Ŵ[f]` (`co×ci`) is replaced by its orthogonal factor
//! `(ŴŴᴴ + 1e-4·I)^{-1/2}·Ŵ`. The inverse square root comes from a Newton–Schulz iteration on
//! `G = (ŴŴᴴ + 1e-4·I)/ν`, `ν = ‖ŴŴᴴ + 1e-4·I‖_F + 1e-4` (so that `G`'s eigenvalues lie in
//! `(0, 1]`, where the iteration converges), then the result is rescaled by `1/√ν`. The
//! output is cropped back to `n₀×n₀` and the bias is added.
//!
//! Guarantee: on the torus of size `n₀+2p` the operator is orthogonal up to the `1e-4` regulariser
//! and the truncated iteration (a per-frequency singular value `s` becomes `s/√(s²+1e-4)`); the
//! tests check the per-frequency matrices' singular values are 1 within 1e-4 for a
//! well-conditioned kernel. Cropping a padded orthogonal map gives a contraction, so the layer
//! as used (zero padding + crop) is 1-Lipschitz but not norm-preserving (§2.13).
//!
//! Iterations: 10 in training and 10 in evaluation (the authors' `LOT`; `LOT2t`, 2/10, is only
//! for ConvNetL, which was never trained). 10 iterations converge for eigenvalues of `G` above
//! ~0.05, which covers the well-conditioned kernels that training keeps (identity init).
//!
//! Departures from the authors' code (all numerically equivalent):
//! * Fourier layout: the authors use `fft2` and keep all `n²` frequencies. The kernel and the input
//!   are real, and every step of the orthogonalisation commutes with complex conjugation, so
//!   `Ŵ_o[−f] = conj(Ŵ_o[f])`: lipctl keeps only the `rfft2` half (`n·(n/2+1)` frequencies) and
//!   uses `irfft2`, which is `real(ifft2)` of the full spectrum. This halves the Newton–Schulz
//!   work on the large blocks; a test checks that the two layouts give the same layer.
//! * A 1×1 kernel (first conv, last block, head) has the same real matrix `W` at every frequency,
//!   so lipctl orthogonalises that one real matrix and applies a 1×1 convolution, instead of `N`
//!   identical complex copies (same values; a test compares with the fft2 computation).
//! * The first Newton–Schulz step starts from `Z = I`, so it is done without the two trivial
//!   products (same values).
//! * No eval cache inside the layer; [`LipLayer::freeze`] precomputes `Ŵ_o` (design §5).
//!
//! Checkpoint names: `weight [co,ci,k,k]`, `bias [co]`. Initialisation: PyTorch's default Conv2d
//! init, then, when `co == ci`, the identity kernel and zero bias (§2.8).

use super::fft::{self, Layout, SpectralOperator};
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use super::registry::{AuthorsTimes, Role, Tolerances};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: true,
    fft_based: true,
    cached_at_inference: "per-frequency orthogonalised kernel spectrum on the padded torus",
    guarantee: "orthogonal on the (n+2p) torus up to the 1e-4 regulariser; 1-Lipschitz after the crop",
    in_paper: true,
    color: (148, 103, 189),
    authors_cpu_b64_train_s: AuthorsTimes { xs: Some(8.4), s: Some(41.4) },
    tolerances: Tolerances { ortho_1x1: REGULARISER_TOL, ortho_kxk_two_sided: false, ..Tolerances::STRICT },
};

/// LOT is orthogonal as specified (reference-protocol §2.8) only on the zero-padded (n+2p) torus
/// and only up to its 1e-4 regulariser (`(ŴŴᴴ + 1e-4 I)^{−1/2} Ŵ`). On the layer's own n×n input,
/// measured: k=1 singular values in [0.99986, 0.99998] (the regulariser), k=3 in [0.947, 1.0] (the
/// crop after the padded FFT). The tests check k=1 within this tolerance of 1, and for k=3 only
/// σ_max ≤ 1 + 1e-4.
pub const REGULARISER_TOL: f64 = 5e-4;


/// Newton–Schulz iterations in training (the authors' `iter_T`).
pub const TRAIN_ITERS: i64 = 10;
/// Newton–Schulz iterations in evaluation and for the frozen spectrum (`eval_iter_T`).
pub const EVAL_ITERS: i64 = 10;
/// Regulariser added to `ŴŴᴴ`, keeping the inverse square root finite for rank-deficient `Ŵ`.
pub const REGULARISER: f64 = 1e-4;
/// Offset added to `‖G‖_F` before normalising (guards an all-zero kernel).
pub const NORM_OFFSET: f64 = 1e-4;

/// The Fourier layout lipctl uses for LOT (see the module doc).
const LAYOUT: Layout = Layout::Half;

/// LOT is used in every role, including the first convolution and the 1×1 head (§4.3).
pub fn build(p: &nn::Path, spec: &ConvSpec, _role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    Ok(Box::new(Lot::new(p, spec)?))
}

#[derive(Debug)]
pub struct Lot {
    weight: Tensor,
    bias: Tensor,
    kernel: i64,
    spatial: i64,
}

/// `(ŴŴᴴ + ε·I)^{-1/2}·Ŵ` per frequency for `w_hat: [N, co, ci]`, by `iters` Newton–Schulz steps
/// (reference-protocol §2.8, `calculate_wfft`).
pub fn orthogonalise(w_hat: &Tensor, iters: i64) -> Tensor {
    let co = w_hat.size()[1];
    let eye = Tensor::eye(co, (w_hat.kind(), w_hat.device()));
    let gram = w_hat.matmul(&w_hat.mh()) + &eye * REGULARISER;
    let nu = gram.norm_scalaropt_dim(2.0, [-2, -1], true) + NORM_OFFSET;
    let g = gram / &nu;
    // Coupled iteration: Y → G^{1/2}, Z → G^{-1/2}. With Z₀ = I the first step is T = (3I − G)/2,
    // Y₁ = G·T, Z₁ = T.
    let mut z = (&eye * 3.0 - &g) * 0.5;
    let mut y = g.matmul(&z);
    for _ in 1..iters {
        let t = (&eye * 3.0 - z.matmul(&y)) * 0.5;
        y = y.matmul(&t);
        z = t.matmul(&z);
    }
    z.matmul(w_hat) / nu.sqrt()
}

impl Lot {
    pub fn new(p: &nn::Path, spec: &ConvSpec) -> anyhow::Result<Self> {
        let (co, ci, k) = (spec.channels_out, spec.channels_in, spec.kernel);
        let (mut weight, mut bias) = fft::torch_default_conv(p, co, ci, k);
        if co == ci {
            tch::no_grad(|| {
                let _ = weight.zero_();
                let _ = weight.narrow(2, k / 2, 1).narrow(3, k / 2, 1).squeeze_dim(3).squeeze_dim(2).copy_(&Tensor::eye(co, (Kind::Float, weight.device())));
                let _ = bias.zero_();
            });
        }
        Ok(Lot { weight, bias, kernel: k, spatial: spec.spatial })
    }

    fn padding(&self) -> i64 {
        self.kernel / 2
    }

    /// The orthogonalised spectrum `Ŵ_o` on the padded torus of side `n` (= input side + 2p), in
    /// the `rfft2` layout: `[n·(n/2+1), co, ci]` complex64.
    pub fn orthogonal_spectrum(&self, n: i64, iters: i64) -> Tensor {
        orthogonalise(&fft::kernel_spectrum(&self.weight, n, LAYOUT), iters)
    }

    /// The layer's operator for an `n0×n0` input. A 1×1 kernel has no padding and the same real
    /// spectrum `W` at every frequency (no shift), so every `Ŵ_o[f]` is the one real matrix
    /// `(WWᵀ + 1e-4 I)^{-1/2}W`: the layer is that 1×1 convolution. Same values as the spectral
    /// path without `N` complex Newton–Schulz iterations (the first conv, block 5 and the head,
    /// where the channel count is largest).
    fn operator(&self, n0: i64, iters: i64) -> SpectralOperator {
        if self.kernel == 1 {
            let s = self.weight.size();
            let w_o = orthogonalise(&self.weight.view([1, s[0], s[1]]), iters);
            SpectralOperator::Pointwise(w_o.view([s[0], s[1], 1, 1]))
        } else {
            let p = self.padding();
            SpectralOperator::Spectral { q: self.orthogonal_spectrum(n0 + 2 * p, iters), pad: p, layout: LAYOUT }
        }
    }
}

impl ModuleT for Lot {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let iters = if train { TRAIN_ITERS } else { EVAL_ITERS };
        self.operator(x.size()[2], iters).apply(x, &self.bias)
    }
}

impl LipLayer for Lot {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let (op, bias) = tch::no_grad(|| (self.operator(self.spatial, EVAL_ITERS), self.bias.detach()));
        Box::new(FrozenFn(move |x: &Tensor| op.apply(x, &bias)))
    }

    /// The frozen spectrum on the padded torus (a 1×1 kernel: one real matrix, a circular map).
    fn structure(&self) -> super::Structure {
        match tch::no_grad(|| self.operator(self.spatial, EVAL_ITERS)) {
            SpectralOperator::Spectral { q, pad, .. } => super::Structure::Spectral { q, pad },
            SpectralOperator::Pointwise(_) => super::Structure::CircularLinear,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::fft::tests::{
        check_freeze_matches_eval, check_gradients_reach_every_parameter, impulse_matrix, max_abs_diff,
        singular_values,
    };
    use crate::nn::{convnet, ConvNet, Method, ModelSize, NetSpec};
    use tch::Device;

    /// The regulariser moves a per-frequency singular value s to s/√(s²+1e-4) ≈ 1 − 5e-5/s²; with
    /// s ≥ 0.8 that is < 8e-5, plus float32 round-off.
    const ORTHO_TOL: f64 = 1e-4;

    /// A square layer moved away from its identity init, but still well conditioned.
    fn perturbed(vs: &nn::VarStore, c: i64, k: i64, n: i64, scale: f64) -> Box<dyn LipLayer> {
        let layer = build(&vs.root(), &ConvSpec::square(c, k, n), Role::Block).unwrap();
        let mut w = vs.variables()["weight"].shallow_clone();
        let _ = tch::no_grad(|| w.g_add_(&(w.randn_like() * scale)));
        layer
    }

    #[test]
    fn per_frequency_matrices_are_orthogonal_on_the_padded_torus() {
        tch::manual_seed(7);
        let (c, k, n0) = (4, 3, 6);
        let vs = nn::VarStore::new(Device::Cpu);
        let _layer = perturbed(&vs, c, k, n0, 0.02);
        let w = vs.variables()["weight"].shallow_clone();
        let n = n0 + 2 * (k / 2);
        // Independent of the layer's FFT layout: the full fft2 spectrum of the kernel, its
        // orthogonalisation, and the singular values in f64.
        let w_hat = fft::kernel_spectrum(&w, n, Layout::Full);
        let q = tch::no_grad(|| orthogonalise(&w_hat, EVAL_ITERS));
        let s = singular_values(&q.to_kind(Kind::ComplexDouble));
        assert_eq!(s.size(), vec![n * n, c]);
        let dev = (&s - 1.0).abs().max().double_value(&[]);
        assert!(dev < ORTHO_TOL, "max |σ − 1| = {dev}");
        // The input spectrum was well conditioned (the premise of the tolerance).
        let s_in = fft::circular_conv_singular_values(&w, n);
        assert!(s_in.min().double_value(&[]) > 0.8);
    }

    #[test]
    fn orthogonalisation_agrees_with_the_exact_polar_factor() {
        // (ŴŴᴴ + εI)^{-1/2}Ŵ computed in f64 from the SVD Ŵ = UΣVᴴ: U·diag(σ/√(σ²+ε))·Vᴴ.
        tch::manual_seed(8);
        let re = Tensor::eye(3, (Kind::Float, Device::Cpu)) + Tensor::randn([5, 3, 3], (Kind::Float, Device::Cpu)) * 0.2;
        let im = Tensor::randn([5, 3, 3], (Kind::Float, Device::Cpu)) * 0.2;
        let w = Tensor::complex(&re, &im);
        let (u, s, v) = w.to_kind(Kind::ComplexDouble).svd(true, true);
        let scale = (&s / (&s * &s + REGULARISER).sqrt()).to_kind(Kind::ComplexDouble);
        let exact = u.matmul(&(scale.unsqueeze(-1) * v.mh()));
        let ours = orthogonalise(&w, EVAL_ITERS).to_kind(Kind::ComplexDouble);
        let diff = max_abs_diff(&ours, &exact);
        assert!(diff < ORTHO_TOL, "diff {diff}");
    }

    #[test]
    fn layer_equals_the_authors_full_fft2_computation() {
        // Covers the rfft2 half layout (k = 3) and the 1×1 shortcut (k = 1).
        tch::manual_seed(9);
        for (c, k, n0) in [(3, 3, 6), (3, 1, 4)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let layer = perturbed(&vs, c, k, n0, 0.1);
            let w = vs.variables()["weight"].shallow_clone();
            let b = vs.variables()["bias"].shallow_clone();
            let x = Tensor::randn([2, c, n0, n0], (Kind::Float, Device::Cpu));
            let p = k / 2;
            let full = tch::no_grad(|| {
                let q = orthogonalise(&fft::kernel_spectrum(&w, n0 + 2 * p, Layout::Full), EVAL_ITERS);
                let z = fft::spectral_conv(&q, &x.constant_pad_nd([p, p, p, p]), Layout::Full);
                z.narrow(2, p, n0).narrow(3, p, n0) + b.view([1, -1, 1, 1])
            });
            let ours = tch::no_grad(|| layer.forward_t(&x, false));
            // Same math, different float32 summation order in the FFTs.
            let diff = max_abs_diff(&ours, &full);
            assert!(diff < 1e-5, "k={k}: diff {diff}");
        }
    }

    #[test]
    fn layer_is_identity_at_init_and_a_contraction_after_the_crop() {
        tch::manual_seed(10);
        let (c, k, n0) = (2, 3, 4);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = build(&vs.root(), &ConvSpec::square(c, k, n0), Role::Block).unwrap();
        let x = Tensor::randn([3, c, n0, n0], (Kind::Float, Device::Cpu));
        // Identity kernel: Ŵ = I at every frequency, so Ŵ_o = I/√(1+1e-4) up to Newton–Schulz.
        let y = tch::no_grad(|| layer.forward_t(&x, false));
        let diff = max_abs_diff(&y, &(&x / (1.0 + REGULARISER).sqrt()));
        assert!(diff < 1e-5, "identity init: diff {diff}");

        let mut w = vs.variables()["weight"].shallow_clone();
        tch::no_grad(|| w.copy_(&w.randn_like()));
        let m = tch::no_grad(|| impulse_matrix(&|x| layer.forward_t(x, false), c, n0, Device::Cpu));
        let s_max = singular_values(&m).max().double_value(&[]);
        assert!(s_max <= 1.0 + ORTHO_TOL, "σ_max {s_max}");
    }

    #[test]
    fn frozen_forward_equals_eval_forward() {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = build(&vs.root(), &ConvSpec { channels_in: 3, channels_out: 4, kernel: 3, spatial: 6 }, Role::Block).unwrap();
        check_freeze_matches_eval(&vs, layer.as_ref(), &Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu)));
    }

    #[test]
    fn gradients_reach_weight_and_bias() {
        tch::manual_seed(12);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = perturbed(&vs, 3, 3, 6, 0.1);
        check_gradients_reach_every_parameter(&vs, layer.as_ref(), &Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu)));
        assert_eq!(vs.trainable_variables().len(), 2);
    }

    #[test]
    fn parameter_counts_match_reference_protocol_4_4() {
        for (size, expected) in [(ModelSize::XS, 1_572_288), (ModelSize::S, 6_283_136)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = ConvNet::new(&vs.root(), NetSpec::new(Method::Lot, size, 32, 10)).unwrap();
            assert_eq!(convnet::parameter_counts(&vs), (expected, 0), "{size}");
        }
    }
}
