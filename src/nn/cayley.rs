//! Cayley convolution and Cayley linear head (Trockman & Kolter 2021, "Orthogonalizing
//! Convolutional Layers with the Cayley Transform"; reference-protocol §2.4, §2.5, §1.5–1.6).
//!
//! The convolution works in the Fourier domain of the `n×n` torus: the kernel spectrum `Ŵ`
//! (`rfft2` layout, [`fft::Layout::Half`]) is scaled to Frobenius norm `α` and every per-frequency
//! matrix is mapped through the Cayley transform, `Q = cayley(α·Ŵ/‖Ŵ‖_F)`; the output is
//! `irfft2(Q·rfft2(x)) + bias`. Each `Q[f]` is unitary (or has orthonormal columns/rows when
//! `co ≠ ci`), so the layer is **orthogonal under circular padding**: the tests check that every
//! singular value of the layer's matrix (impulse response, f64 SVD) is 1 within 1e-4.
//! The head is the same transform on a real `W×W` matrix, `y = x·Qᵀ + b`.
//!
//! Departures from the authors' code (design §5, reference-protocol §2.4, §12.4):
//! * `alpha` of the convolution is created at construction, from the initial weights' `‖Ŵ‖_F` at
//!   the spatial size of [`ConvSpec::spatial`], and **is trained** (the authors create it lazily
//!   at the first forward, after the optimizer was built, so it stays at `α₀`). The head's `alpha`
//!   exists from construction in the authors' code too and is trained there as well.
//! * No eval cache inside the layer: `forward_t(x, false)` recomputes `Q` from the current
//!   parameters, and [`LipLayer::freeze`] computes it once for inference, so no stale `Q` can be
//!   used after an optimizer step.
//! * A 1×1 kernel is applied as the 1×1 convolution by the one real matrix that every frequency
//!   carries, `cayley(α·W/(√N·‖W‖_F))` with `N = n·(n/2+1)` — the same values without `N` complex
//!   inverses (a test compares it with the spectral path).
//! * The shift and FFT size are taken from each input's side (the authors fix the shift at the
//!   first forward); `freeze` precomputes `Q` for `ConvSpec::spatial`.
//!
//! Checkpoint names: `weight [co,ci,k,k]`, `bias [co]`, `alpha []` (convolution);
//! `weight [out,in]`, `bias [out]`, `alpha [1]` (head).

use super::blocks::linear_on_maps;
use super::fft::{self, Layout, SpectralOperator};
use super::registry::Role;
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use tch::nn::{self, ModuleT};
use tch::Tensor;

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: true,
    fft_based: true,
    cached_at_inference: "per-frequency orthogonal matrices Q (rfft2 layout); the head's orthogonal matrix",
    guarantee: "orthogonal under circular padding: all singular values 1 within 1e-4",
};

/// Cayley convolutions everywhere, the Cayley linear layer as head (reference-protocol §4.3).
pub fn build(p: &nn::Path, spec: &ConvSpec, role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    match role {
        Role::Head => Ok(Box::new(CayleyLinear::new(p, spec)?)),
        Role::First | Role::Block => Ok(Box::new(CayleyConv::new(p, spec)?)),
    }
}

/// `CayleyConv` (reference-protocol §2.4): circular padding, stride 1, `in ≠ out` allowed.
#[derive(Debug)]
pub struct CayleyConv {
    weight: Tensor,
    bias: Tensor,
    alpha: Tensor,
    spatial: i64,
}

impl CayleyConv {
    pub fn new(p: &nn::Path, spec: &ConvSpec) -> anyhow::Result<Self> {
        if spec.kernel > spec.spatial {
            anyhow::bail!(
                "Cayley: kernel size {} does not fit a {}×{} input; use a kernel no larger than the input",
                spec.kernel, spec.spatial, spec.spatial
            );
        }
        let (weight, bias) = fft::torch_default_conv(p, spec.channels_out, spec.channels_in, spec.kernel);
        let alpha0 = tch::no_grad(|| fft::kernel_spectrum(&weight, spec.spatial, Layout::Half).norm());
        let alpha = p.var_copy("alpha", &alpha0);
        Ok(CayleyConv { weight, bias, alpha, spatial: spec.spatial })
    }

    /// `Q = cayley(α·Ŵ/‖Ŵ‖_F)` for an `n×n` input, `[n·(n/2+1), co, ci]` complex64.
    pub fn orthogonal_spectrum(&self, n: i64) -> Tensor {
        let w_hat = fft::kernel_spectrum(&self.weight, n, Layout::Half);
        fft::cayley(&(&self.alpha * &w_hat / w_hat.norm()))
    }

    /// The layer's operator for an `n×n` input. A 1×1 kernel has the same real spectrum `W` at
    /// each of the `N = n·(n/2+1)` frequencies (no shift), so `‖Ŵ‖_F = √N·‖W‖_F` and every `Q[f]`
    /// is the one real matrix `cayley(α·W/(√N·‖W‖_F))`: the layer is that 1×1 convolution. Same
    /// values as the spectral path, without N complex inverses (the first conv, block 5).
    fn operator(&self, n: i64) -> SpectralOperator {
        if self.weight.size()[3] == 1 {
            let s = self.weight.size();
            let w = self.weight.view([s[0], s[1]]);
            let root_n = (Layout::Half.frequencies(n) as f64).sqrt();
            let q = fft::cayley(&(&self.alpha * &w / (w.norm() * root_n)));
            SpectralOperator::Pointwise(q.view([s[0], s[1], 1, 1]))
        } else {
            SpectralOperator::Spectral { q: self.orthogonal_spectrum(n), pad: 0, layout: Layout::Half }
        }
    }
}

impl ModuleT for CayleyConv {
    /// Training and evaluation compute the same thing (there are no iteration counts).
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        self.operator(x.size()[2]).apply(x, &self.bias)
    }
}

impl LipLayer for CayleyConv {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let (op, bias) = tch::no_grad(|| (self.operator(self.spatial), self.bias.detach()));
        Box::new(FrozenFn(move |x: &Tensor| op.apply(x, &bias)))
    }

    /// An orthogonal circular convolution applied per frequency (a dense matrix for the head), plus a bias.
    fn structure(&self) -> super::Structure {
        super::Structure::CircularLinear
    }
}

/// `CayleyLinear` (reference-protocol §2.5) on `[B, in, 1, 1]` inputs.
#[derive(Debug)]
pub struct CayleyLinear {
    weight: Tensor,
    bias: Tensor,
    alpha: Tensor,
}

impl CayleyLinear {
    pub fn new(p: &nn::Path, spec: &ConvSpec) -> anyhow::Result<Self> {
        if spec.kernel != 1 || spec.spatial != 1 {
            anyhow::bail!(
                "Cayley head: expected a 1×1 kernel on a 1×1 input, got kernel {} on {}×{}",
                spec.kernel, spec.spatial, spec.spatial
            );
        }
        // The authors' reset_parameters: U(±1/√in) for weight then bias; α = ‖W‖_F.
        let bound = 1.0 / (spec.channels_in as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        let weight = p.var("weight", &[spec.channels_out, spec.channels_in], init);
        let bias = p.var("bias", &[spec.channels_out], init);
        let alpha0 = tch::no_grad(|| weight.norm().view([1]));
        let alpha = p.var_copy("alpha", &alpha0);
        Ok(CayleyLinear { weight, bias, alpha })
    }

    /// `Q = cayley(α·W/‖W‖_F)`, a real `[out, in]` matrix with orthonormal rows or columns.
    pub fn orthogonal_matrix(&self) -> Tensor {
        fft::cayley(&(&self.alpha * &self.weight / self.weight.norm()))
    }
}

impl ModuleT for CayleyLinear {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        linear_on_maps(x, &self.orthogonal_matrix(), &self.bias)
    }
}

impl LipLayer for CayleyLinear {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let (q, bias) = tch::no_grad(|| (self.orthogonal_matrix(), self.bias.detach()));
        Box::new(FrozenFn(move |x: &Tensor| linear_on_maps(x, &q, &bias)))
    }

    /// An orthogonal circular convolution applied per frequency (a dense matrix for the head), plus a bias.
    fn structure(&self) -> super::Structure {
        super::Structure::CircularLinear
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::fft::tests::{
        check_freeze_matches_eval, check_gradients_reach_every_parameter, impulse_matrix, singular_values,
    };
    use crate::nn::{convnet, ConvNet, Method, ModelSize, NetSpec};
    use tch::{Device, Kind};

    /// float32 FFT, 4×4 inverse and products, then an f64 SVD of the impulse response.
    const ORTHO_TOL: f64 = 1e-4;

    fn randomize(vs: &nn::VarStore, name: &str) {
        let mut w = vs.variables()[name].shallow_clone();
        tch::no_grad(|| w.copy_(&w.randn_like()));
    }

    fn max_dev_from_one(s: &Tensor) -> f64 {
        (s - 1.0).abs().max().double_value(&[])
    }

    #[test]
    fn convolution_is_orthogonal_on_the_torus_square_tall_and_wide() {
        tch::manual_seed(3);
        let n = 4;
        for (ci, co, k) in [(3, 3, 3), (2, 4, 3), (4, 2, 3), (3, 3, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let spec = ConvSpec { channels_in: ci, channels_out: co, kernel: k, spatial: n };
            let layer = build(&vs.root(), &spec, Role::Block).unwrap();
            randomize(&vs, "weight");
            let m = tch::no_grad(|| impulse_matrix(&|x| layer.forward_t(x, false), ci, n, Device::Cpu));
            let s = singular_values(&m);
            assert_eq!(s.size(), vec![ci.min(co) * n * n]);
            let dev = max_dev_from_one(&s);
            assert!(dev < ORTHO_TOL, "ci={ci} co={co} k={k}: max |σ − 1| = {dev}");
        }
    }

    #[test]
    fn pointwise_shortcut_equals_the_spectral_path_for_1x1_kernels() {
        tch::manual_seed(13);
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = ConvSpec { channels_in: 3, channels_out: 5, kernel: 1, spatial: 4 };
        let layer = CayleyConv::new(&vs.root(), &spec).unwrap();
        let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let spectral = tch::no_grad(|| fft::spectral_conv(&layer.orthogonal_spectrum(4), &x, Layout::Half));
        let bias = vs.variables()["bias"].view([1, -1, 1, 1]);
        let ours = tch::no_grad(|| layer.forward_t(&x, true));
        let diff = (ours - bias - spectral).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "diff {diff}");
    }

    #[test]
    fn head_is_orthogonal() {
        tch::manual_seed(4);
        for (ci, co) in [(6, 6), (4, 6), (6, 4)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let spec = ConvSpec { channels_in: ci, channels_out: co, kernel: 1, spatial: 1 };
            let layer = build(&vs.root(), &spec, Role::Head).unwrap();
            randomize(&vs, "weight");
            let m = tch::no_grad(|| impulse_matrix(&|x| layer.forward_t(x, false), ci, 1, Device::Cpu));
            let dev = max_dev_from_one(&singular_values(&m));
            assert!(dev < ORTHO_TOL, "ci={ci} co={co}: max |σ − 1| = {dev}");
        }
    }

    #[test]
    fn alpha_starts_at_the_frobenius_norm_of_the_spectrum() {
        // On a 1×1 torus with a 1×1 kernel the spectrum is the weight matrix itself.
        let vs = nn::VarStore::new(Device::Cpu);
        let _layer = build(&vs.root(), &ConvSpec::square(5, 1, 1), Role::First).unwrap();
        let vars = vs.variables();
        let expected = vars["weight"].square().sum(Kind::Double).sqrt().double_value(&[]);
        let alpha = vars["alpha"].double_value(&[]);
        assert!((alpha - expected).abs() < 1e-5 * expected, "alpha {alpha} vs ‖W‖ {expected}");
        assert!(vars["alpha"].requires_grad(), "alpha must be trained (design §5)");
    }

    #[test]
    fn frozen_forward_equals_eval_forward() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = build(&(vs.root() / "conv"), &ConvSpec::square(4, 3, 8), Role::Block).unwrap();
        let x = Tensor::randn([2, 4, 8, 8], (Kind::Float, Device::Cpu));
        check_freeze_matches_eval(&vs, conv.as_ref(), &x);

        let vs = nn::VarStore::new(Device::Cpu);
        let head = build(&vs.root(), &ConvSpec::square(6, 1, 1), Role::Head).unwrap();
        let x = Tensor::randn([3, 6, 1, 1], (Kind::Float, Device::Cpu));
        check_freeze_matches_eval(&vs, head.as_ref(), &x);
    }

    #[test]
    fn gradients_reach_weight_bias_and_alpha() {
        tch::manual_seed(6);
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = build(&vs.root(), &ConvSpec::square(4, 3, 8), Role::Block).unwrap();
        check_gradients_reach_every_parameter(&vs, conv.as_ref(), &Tensor::randn([2, 4, 8, 8], (Kind::Float, Device::Cpu)));
        assert_eq!(vs.trainable_variables().len(), 3);

        let vs = nn::VarStore::new(Device::Cpu);
        let head = build(&vs.root(), &ConvSpec::square(6, 1, 1), Role::Head).unwrap();
        check_gradients_reach_every_parameter(&vs, head.as_ref(), &Tensor::randn([3, 6, 1, 1], (Kind::Float, Device::Cpu)));
        assert_eq!(vs.trainable_variables().len(), 3);
    }

    #[test]
    fn parameter_counts_match_reference_protocol_4_4() {
        // Std + one alpha per CayleyConv (26) + the head's alpha.
        for (size, expected) in [(ModelSize::XS, 1_572_315), (ModelSize::S, 6_283_163)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = ConvNet::new(&vs.root(), NetSpec::new(Method::Cayley, size, 32, 10)).unwrap();
            assert_eq!(convnet::parameter_counts(&vs), (expected, 0), "{size}");
        }
    }
}
