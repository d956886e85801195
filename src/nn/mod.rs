//! The convolution families of the study (the paper's, and the ones added since), behind one
//! trait and one registry.
//!
//! Every layer maps NCHW float32 tensors to NCHW tensors and is 1-Lipschitz in the L2 norm
//! (except [`Method::Standard`], the unconstrained baseline). The mathematics of each layer is in
//! `reference-protocol.md` §2; each file's module doc states its guarantee and tolerance.
//!
//! Parameter names are the checkpoint format: every layer registers its tensors under the
//! `nn::Path` it is given, with the leaf names of reference-protocol §2 (e.g. `kernel`, `bias`,
//! `q` for SLL; `weight`, `bias`, `alpha` for Cayley).

pub mod authors;
pub mod blocks;
pub mod checkpoint;
pub mod convnet;
pub mod fft;
pub mod ortho;
#[macro_use]
pub mod registry;
pub mod shim;
// One `pub mod` per line of the method table (registry.rs): `aol`, `bcop`, …
method_table!(declare_method_modules);

pub use convnet::{ConvNet, FrozenConvNet, ModelSize, NetSpec};
pub use registry::{Method, MethodInfo};

use tch::{nn, Tensor};

/// Shape of one convolution in a network: channels, (odd) kernel size and the spatial side `n` of
/// its square input. FFT-based layers (Cayley, LOT) and CPL's power-iteration state need `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub channels_in: i64,
    pub channels_out: i64,
    pub kernel: i64,
    pub spatial: i64,
}

impl ConvSpec {
    pub fn square(channels: i64, kernel: i64, spatial: i64) -> Self {
        ConvSpec { channels_in: channels, channels_out: channels, kernel, spatial }
    }
}

/// A layer of the study: a training forward (`forward_t(x, true)`: training iteration counts,
/// updates power-iteration state), an uncached evaluation forward (`forward_t(x, false)`:
/// evaluation iteration counts, no state change), and [`LipLayer::freeze`].
///
/// All tensors are 4-D `[B, C, H, W]`; a linear head sees `[B, W, 1, 1]` and returns the same
/// layout, so the network never branches on the layer kind.
pub trait LipLayer: nn::ModuleT {
    /// Input-independent transforms (rescaled or orthogonalised kernel, Fourier-domain weights),
    /// computed once under no-grad for inference. Returned by value: after another optimizer step
    /// the caller freezes again, so a stale cache cannot exist (design §5). The frozen module's
    /// forward equals `forward_t(x, false)`.
    fn freeze(&self) -> Box<dyn nn::Module>;

    /// What the Lipschitz audit may assume about the frozen map, so that it can use a sound
    /// bound instead of a power-iteration estimate (`certify` module doc). The default,
    /// [`Structure::Opaque`], is always correct; a layer that declares more must make it true of
    /// the module [`LipLayer::freeze`] returns now (same parameters, same state).
    fn structure(&self) -> Structure {
        Structure::Opaque
    }
}

/// The form of a frozen layer's map that gives its Lipschitz constant a closed-form bound
/// ([`LipLayer::structure`]; computed by `certify`). Kernels are `[out, in, k, k]`, odd `k`.
#[derive(Debug)]
pub enum Structure {
    /// No usable form (or non-linear without one): estimate by power iteration.
    Opaque,
    /// `x ↦ A x + b` with `A` commuting with circular shifts of the `[C, n, n]` input: a circular
    /// convolution of any support, or a dense matrix when `n = 1`. Exact: `‖A‖` is the largest
    /// singular value of the per-frequency matrices of its impulse response.
    CircularLinear,
    /// `x ↦ crop(C(pad(x))) + b`: the input zero-padded by `pad` on every side, the circular
    /// convolution `C` on the padded torus whose per-frequency matrices are `q [F, out, in]`
    /// (complex; any set of frequencies that holds every singular value, e.g. an `rfft2` half),
    /// the output cropped back. `‖·‖ ≤ max σ(q)`, with equality when `pad = 0` (LOT).
    Spectral { q: Tensor, pad: i64 },
    /// `x ↦ x − Gᵀ ρ(G x + b)` with `G` the zero-padded "same" convolution by `kernel` and `ρ`
    /// monotone, 1-Lipschitz and elementwise (ReLU; any per-channel scale already folded into
    /// `kernel`): the Jacobian is `I − Gᵀ D G` with `D` diagonal in `[0, 1]`, so
    /// `‖J‖ ≤ max(1, ‖G‖² − 1)`, with `‖G‖` bounded by FFT (CPL, SLL).
    ZeroPadResidual { kernel: Tensor },
    /// The series `Σ_{t≤terms} Aᵗ/t!` of the zero-padded "same" convolution `A` by a
    /// skew-symmetric `kernel` (so `A` is a skew-symmetric matrix), between a channel zero-pad
    /// and a channel truncation: `‖·‖ ≤ 1 + Σ_{t>terms} ‖A‖ᵗ/t!` (SOC).
    ZeroPadSkewExponential { kernel: Tensor, terms: i64 },
}

impl Structure {
    /// Whether the frozen map is affine (`x ↦ A x + b`), so that its matrix can be read from its
    /// impulse response (the pairwise head certificate needs it).
    pub fn is_affine(&self) -> bool {
        matches!(self, Structure::CircularLinear | Structure::Spectral { .. } | Structure::ZeroPadSkewExponential { .. })
    }
}

/// A frozen module that is just a closure over precomputed tensors.
pub struct FrozenFn<F: Fn(&Tensor) -> Tensor + Send>(pub F);

impl<F: Fn(&Tensor) -> Tensor + Send> std::fmt::Debug for FrozenFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrozenFn")
    }
}

impl<F: Fn(&Tensor) -> Tensor + Send> nn::Module for FrozenFn<F> {
    fn forward(&self, xs: &Tensor) -> Tensor {
        (self.0)(xs)
    }
}
