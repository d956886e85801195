//! The eight convolution families of the study, behind one trait and one registry.
//!
//! Every layer maps NCHW float32 tensors to NCHW tensors and is 1-Lipschitz in the L2 norm
//! (except [`Method::Standard`], the unconstrained baseline). The mathematics of each layer is in
//! `reference-protocol.md` §2; each file's module doc states its guarantee and tolerance.
//!
//! Parameter names are the checkpoint format: every layer registers its tensors under the
//! `nn::Path` it is given, with the leaf names of reference-protocol §2 (e.g. `kernel`, `bias`,
//! `q` for SLL; `weight`, `bias`, `alpha` for Cayley).

pub mod aol;
pub mod authors;
pub mod bcop;
pub mod checkpoint;
pub mod blocks;
pub mod cayley;
pub mod convnet;
pub mod cpl;
pub mod fft;
pub mod lot;
pub mod ortho;
pub mod registry;
pub mod sll;
pub mod soc;
pub mod standard;

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
