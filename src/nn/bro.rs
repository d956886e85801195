//! BRO: the block reflector orthogonal convolution (Lai et al., ICML 2025, "Enhancing
//! Certified Robustness via Block Reflector Orthogonal Layers and Logit Annealing Loss";
//! reference code `ntuaislab/BRONet`, MIT). Not in the paper.
//!
//! A low-rank kernel `V [c, r, k, k]` is taken to the Fourier domain of the `n×n` torus
//! ([`fft::kernel_spectrum`], [`Layout::Half`], complex64), and at every frequency the block
//! reflector
//!
//! ```text
//! W_f = I − 2·V̂_f (V̂_fᴴ V̂_f + ε·I)⁻¹ V̂_fᴴ,     ε = 1e-7 · mean diag(V̂_fᴴ V̂_f)
//! ```
//!
//! is formed with a Cholesky factorisation and solve; the output is `irfft2(W·rfft2(x)) + bias`.
//! With `V̂ = UΣRᴴ`, `W = I − 2U·diag(σ²/(σ²+ε))·Uᴴ` is Hermitian with eigenvalues in `[−1, 1]`,
//! so the layer is **1-Lipschitz for any V**, and **orthogonal** (a reflection through the range
//! of `V̂_f`) up to the relative `ε`: the tests check every circular singular value of the layer
//! (impulse response, f64 SVD) is 1 within 1e-4, and the Lipschitz bound within 1e-4 after
//! optimizer steps. A 1×1 kernel has the same real `V` at every frequency, so the layer is the
//! 1×1 convolution by one real matrix `I − 2V(VᵀV + εI)⁻¹Vᵀ` (also the linear head).
//!
//! **Rank**: `r = ⌊c·0.5⌋`, the `backbone_weight_rank_ratio: 0.5` of the authors' convolutional
//! backbones (their CIFAR-10/100 and Tiny ImageNet configs), at least 1 and below `c`.
//!
//! **Departures from the reference code** (design §5):
//! * circular "same" padding on the layer's own `n×n` input, like lipctl's other FFT layers (the
//!   authors zero-pad by `k/2` every layer and let the feature map grow);
//! * `V` is the parameter itself, initialised as the identity on its first `r` channels at the
//!   centre tap plus `N(0, 1/(c·k²)²)` noise (their backbone adds the per-layer `gamma`, the
//!   `depth^−½` scale and the quasi-residual identity around it, and a batch-mean centring of the
//!   output: those belong to their network, not the layer);
//! * no eval cache inside the layer: [`LipLayer::freeze`] computes the per-frequency matrices (or
//!   the 1×1 matrix) once for `ConvSpec::spatial`, and `forward_t(x, false)` recomputes them, so
//!   no stale matrices exist after an optimizer step;
//! * the Cholesky status is accumulated on the device and checked once per epoch with the Cayley
//!   inverses ([`fft::take_singular_inverses`]) instead of raising inside the step.
//!
//! Leaf names: `weight (c, r, k, k)`, `bias (c)` (PyTorch's default `U(±1/√(c·k²))`).

use super::fft::{self, Layout, SpectralOperator};
use super::ortho::{default_uniform, dirac};
use super::registry::{AuthorsTimes, Role, Tolerances};
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use anyhow::Context;
use tch::{nn, Kind, Tensor};

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: true,
    fft_based: true,
    cached_at_inference: "per-frequency block reflectors (1×1: one real matrix)",
    guarantee: "orthogonal with circular padding up to ε = 1e-7 relative: all circular singular values 1 within 1e-4",
    in_paper: false,
    color: (188, 189, 34),
    authors_cpu_b64_train_s: AuthorsTimes::NONE,
    tolerances: Tolerances::STRICT,
};

/// `r/c`, the authors' `backbone_weight_rank_ratio` for convolutional backbones.
pub const RANK_RATIO: f64 = 0.5;

/// `ε` relative to the mean diagonal of `VᴴV` (the authors' `1e-7`).
pub const EPS_RELATIVE: f64 = 1e-7;

/// The rank `r` of `V` for `c` channels: `⌊c·RANK_RATIO⌋`, clamped to `[1, c−1]`.
pub fn rank(channels: i64) -> i64 {
    ((channels as f64 * RANK_RATIO) as i64).clamp(1, channels - 1)
}

pub fn build(p: &nn::Path, spec: &ConvSpec, _role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    let (ci, co, k, n) = (spec.channels_in, spec.channels_out, spec.kernel, spec.spatial);
    if ci != co {
        anyhow::bail!("BRO: {ci} input and {co} output channels; a block reflector is square, use equal counts");
    }
    if co < 2 {
        anyhow::bail!("BRO: {co} channel(s); a block reflector of rank < channels needs at least 2 channels");
    }
    if k > n {
        anyhow::bail!("BRO: kernel size {k} does not fit a {n}×{n} input; use a kernel no larger than the input");
    }
    let r = rank(co);
    let noise = Tensor::randn([co, r, k, k], (Kind::Float, p.device())) / (co * k * k) as f64;
    let init = dirac(co, r, k, p.device()) + noise;
    let weight = p.f_var_copy("weight", &init).context("BRO: creating weight")?;
    let bias = p.f_var_copy("bias", &default_uniform(&[co], co * k * k, p.device())).context("BRO: creating bias")?;
    Ok(Box::new(BroConv { weight, bias, spatial: n }))
}

/// `I − 2V(VᴴV + εI)⁻¹Vᴴ` for every matrix of `v [..., c, r]` (real or complex), through a
/// Cholesky factorisation of `VᴴV + εI` (status recorded, not read). Returns `[..., c, c]`.
pub fn block_reflector(v: &Tensor) -> Tensor {
    let s = v.size();
    let (c, r) = (s[s.len() - 2], s[s.len() - 1]);
    let gram = v.mh().matmul(v);
    let eps = gram.diagonal(0, -2, -1).real().mean_dim([-1i64].as_slice(), true, Kind::Float) * EPS_RELATIVE;
    let eye_r = Tensor::eye(r, (v.kind(), v.device()));
    let regularised = &gram + eye_r * eps.unsqueeze(-1).to_kind(v.kind());
    let (l, info) = regularised.linalg_cholesky_ex(false, false);
    fft::record_inverse_status(&info);
    let x = v.mh().cholesky_solve(&l, false);
    Tensor::eye(c, (v.kind(), v.device())) - v.matmul(&x) * 2.0
}

/// A BRO convolution (stride 1, circular "same" padding, equal channel counts).
#[derive(Debug)]
pub struct BroConv {
    weight: Tensor,
    bias: Tensor,
    spatial: i64,
}

impl BroConv {
    /// The layer's operator for an `n×n` input: per-frequency reflectors `[n·(n/2+1), c, c]`, or
    /// for a 1×1 kernel the one real reflector as a `[c, c, 1, 1]` kernel.
    fn operator(&self, n: i64) -> SpectralOperator {
        let s = self.weight.size();
        if s[3] == 1 {
            let w = block_reflector(&self.weight.view([s[0], s[1]]));
            SpectralOperator::Pointwise(w.view([s[0], s[0], 1, 1]))
        } else {
            let v_hat = fft::kernel_spectrum(&self.weight, n, Layout::Half);
            SpectralOperator::Spectral { q: block_reflector(&v_hat), pad: 0, layout: Layout::Half }
        }
    }
}

impl nn::ModuleT for BroConv {
    /// Training and evaluation compute the same thing (no iteration counts, no state).
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        self.operator(x.size()[2]).apply(x, &self.bias)
    }
}

impl LipLayer for BroConv {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let (op, bias) = tch::no_grad(|| (self.operator(self.spatial), self.bias.detach()));
        Box::new(FrozenFn(move |x: &Tensor| op.apply(x, &bias)))
    }

    /// Per-frequency block reflectors on the unpadded torus (a circular convolution), or one real
    /// matrix for a 1×1 kernel.
    fn structure(&self) -> super::Structure {
        super::Structure::CircularLinear
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::convnet::{conv_shapes, parameter_counts};
    use crate::nn::fft::tests::{check_freeze_matches_eval, check_gradients_reach_every_parameter, impulse_matrix, singular_values};
    use crate::nn::ortho::testing::{fixed_randn, max_abs_diff};
    use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
    use tch::nn::ModuleT;
    use tch::Device;

    /// f32 FFT, complex64 Cholesky and products, then an f64 SVD of the impulse response.
    const ORTHO_TOL: f64 = 1e-4;

    fn layer(vs: &nn::VarStore, c: i64, k: i64, n: i64) -> Box<dyn LipLayer> {
        build(&vs.root(), &ConvSpec::square(c, k, n), Role::Block).unwrap()
    }

    fn randomise(vs: &nn::VarStore, seed: u64) {
        let w = vs.variables()["weight"].shallow_clone();
        let values = fixed_randn(&w.size(), seed).to_kind(Kind::Float);
        tch::no_grad(|| w.shallow_clone().copy_(&values));
    }

    #[test]
    fn rank_is_half_the_channels() {
        assert_eq!([rank(2), rank(4), rank(5), rank(16), rank(512)], [1, 2, 2, 8, 256]);
    }

    #[test]
    fn hand_computed_reflector_of_one_vector() {
        // V = (3, 4)ᵀ/5·√2: W = I − 2vvᵀ/(vᵀv(1+1e-7)) ≈ Householder [[7, −24], [−24, −7]]/25.
        let v = Tensor::from_slice(&[3.0f64, 4.0]).view([2, 1]) * 0.2 * 2f64.sqrt();
        let w = block_reflector(&v);
        let expected = Tensor::from_slice(&[7.0f64, -24.0, -24.0, -7.0]).view([2, 2]) / 25.0;
        assert!(max_abs_diff(&w, &expected) < 1e-6, "{w}");
    }

    #[test]
    fn layer_is_orthogonal_on_the_torus() {
        for (c, k, n, seed) in [(4, 3, 4, 1), (6, 3, 5, 2), (5, 1, 3, 3), (4, 5, 6, 4)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let l = layer(&vs, c, k, n);
            randomise(&vs, seed);
            let m = tch::no_grad(|| impulse_matrix(&|x| l.forward_t(x, false), c, n, Device::Cpu));
            let s = singular_values(&m);
            assert_eq!(s.size(), vec![c * n * n]);
            let dev = (s - 1.0).abs().max().double_value(&[]);
            assert!(dev < ORTHO_TOL, "c={c} k={k} n={n}: max |σ − 1| = {dev}");
        }
    }

    #[test]
    fn pointwise_path_equals_the_spectral_path() {
        // A 1×1 kernel taken through the FFT gives the same real reflector at every frequency.
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = layer(&vs, 4, 1, 4);
        randomise(&vs, 5);
        let bro = BroConv { weight: vs.variables()["weight"].shallow_clone(), bias: vs.variables()["bias"].shallow_clone(), spatial: 4 };
        let v_hat = fft::kernel_spectrum(&bro.weight, 4, Layout::Half);
        let spectral = SpectralOperator::Spectral { q: block_reflector(&v_hat), pad: 0, layout: Layout::Half };
        let x = fixed_randn(&[2, 4, 4, 4], 6).to_kind(Kind::Float);
        let diff = tch::no_grad(|| max_abs_diff(&spectral.apply(&x, &bro.bias), &bro.forward_t(&x, false)));
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn freeze_matches_eval_and_gradients_reach_the_parameters() {
        let vs = nn::VarStore::new(Device::Cpu);
        let l = layer(&vs, 4, 3, 5);
        let x = fixed_randn(&[2, 4, 5, 5], 7).to_kind(Kind::Float);
        check_freeze_matches_eval(&vs, l.as_ref(), &x);
        check_gradients_reach_every_parameter(&vs, l.as_ref(), &x);
    }

    #[test]
    fn rejects_unequal_channels_and_a_single_channel() {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ConvSpec { channels_in: 3, channels_out: 4, kernel: 3, spatial: 4 };
        let err = build(&vs.root(), &spec, Role::Block).unwrap_err().to_string();
        assert!(err.contains("BRO") && err.contains('3') && err.contains('4'), "{err}");
        let err = build(&vs.root(), &ConvSpec::square(1, 1, 4), Role::Block).unwrap_err().to_string();
        assert!(err.contains("BRO") && err.contains("2 channels"), "{err}");
    }

    #[test]
    fn parameter_counts_follow_the_formula() {
        // Per conv: V (c·⌊c/2⌋·k²) and bias (c); no buffers.
        for size in [ModelSize::XS, ModelSize::S] {
            let vs = nn::VarStore::new(Device::Cpu);
            let spec = NetSpec::new(Method::Bro, size, 32, 10);
            tch::no_grad(|| ConvNet::new(&vs.root(), spec).unwrap());
            let shapes = conv_shapes(&spec);
            let trainable: i64 = shapes.iter().map(|&(c, k, _)| c * (c / 2) * k * k + c).sum();
            assert_eq!(parameter_counts(&vs), (trainable, 0), "{size}");
        }
    }
}
