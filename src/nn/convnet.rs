//! The ConvNet family of the paper (reference-protocol §4): one architecture, the convolution
//! method is a parameter.
//!
//! ```text
//! zero-pad 3→w channels · first conv (1×1) · MaxMin
//! Block i = 1..nb, width c = w·2^(i−1):  [conv(c,c,k) · MaxMin] × 5 · first c/2 channels · pixel-unshuffle
//! head (1×1 conv, or the method's linear head) · first `classes` logits
//! ```
//!
//! `nb = log2(input side)` so the last block leaves a 1×1 map (the authors' AdaptiveMaxPool is then
//! the identity and is omitted). The last block uses kernel 1: a 2×2 map does not allow k = 3.
//! Checkpoint names: `first_conv.*`, `block{i}.conv{j}.*` (both 1-based), `head.*`.

use super::blocks::{first_channels, max_min, pixel_unshuffle, zero_channel_pad};
use super::registry::Role;
use super::{ConvSpec, LipLayer, Method};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// Convolutions per block (the authors' `nrof_layers_per_block`).
pub const CONVS_PER_BLOCK: i64 = 5;

/// Model size: the base width at 32×32 input (16, 32, 64, 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ModelSize {
    XS,
    S,
    M,
    L,
}

impl ModelSize {
    pub const ALL: [ModelSize; 4] = [ModelSize::XS, ModelSize::S, ModelSize::M, ModelSize::L];

    /// Base width for 32×32 inputs.
    pub fn width_at_32(self) -> i64 {
        match self {
            ModelSize::XS => 16,
            ModelSize::S => 32,
            ModelSize::M => 64,
            ModelSize::L => 128,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelSize::XS => "XS",
            ModelSize::S => "S",
            ModelSize::M => "M",
            ModelSize::L => "L",
        }
    }
}

impl std::fmt::Display for ModelSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelSize {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelSize::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| anyhow::anyhow!("unknown model size {s:?}; expected one of XS, S, M, L"))
    }
}

impl clap::ValueEnum for ModelSize {
    fn value_variants<'a>() -> &'a [Self] {
        &ModelSize::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// Everything that determines a network's structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    pub method: Method,
    pub size: ModelSize,
    /// Kernel size of the block convolutions (3, or 1 for the paper's `_1x1` variant).
    pub kernel: i64,
    /// Side of the square input (32 for CIFAR, 64 for Tiny ImageNet).
    pub input_side: i64,
    pub classes: i64,
}

impl NetSpec {
    pub fn new(method: Method, size: ModelSize, input_side: i64, classes: i64) -> Self {
        NetSpec { method, size, kernel: 3, input_side, classes }
    }

    /// Number of blocks: each halves the side, down to 1×1.
    pub fn blocks(&self) -> i64 {
        let mut nb = 0;
        while (1i64 << nb) < self.input_side {
            nb += 1;
        }
        nb
    }

    /// Width after the zero-padding (the authors' `w = w32·32 / 2^nb`).
    pub fn base_width(&self) -> i64 {
        self.size.width_at_32() * 32 / (1i64 << self.blocks())
    }

    /// Width seen by the head, `w·2^nb`.
    pub fn head_width(&self) -> i64 {
        self.base_width() << self.blocks()
    }

    fn validate(&self) -> anyhow::Result<()> {
        let side = self.input_side;
        if side < 4 || side & (side - 1) != 0 {
            anyhow::bail!("input side {side} is not supported; use a power of two ≥ 4 (32 or 64)");
        }
        if self.kernel != 1 && self.kernel != 3 {
            anyhow::bail!("kernel size {} is not supported; use 3 or 1", self.kernel);
        }
        if self.classes < 1 || self.classes > self.head_width() {
            anyhow::bail!(
                "{} classes do not fit a {} network with {} output channels",
                self.classes, self.size, self.head_width()
            );
        }
        Ok(())
    }
}

/// A ConvNet of one method; `forward_t(x, train)` takes mean-centred `[B, 3, H, W]` floats.
#[derive(Debug)]
pub struct ConvNet {
    pub spec: NetSpec,
    first: Box<dyn LipLayer>,
    blocks: Vec<Vec<Box<dyn LipLayer>>>,
    head: Box<dyn LipLayer>,
}

impl ConvNet {
    pub fn new(p: &nn::Path, spec: NetSpec) -> anyhow::Result<Self> {
        spec.validate()?;
        let method = spec.method;
        let w = spec.base_width();
        let nb = spec.blocks();
        let first = method.build(&(p / "first_conv"), &ConvSpec::square(w, 1, spec.input_side), Role::First)?;
        let mut blocks = Vec::new();
        for i in 0..nb {
            let c = w << i;
            let side = spec.input_side >> i;
            let k = if i == nb - 1 { 1 } else { spec.kernel };
            let bp = p / format!("block{}", i + 1);
            let convs = (0..CONVS_PER_BLOCK)
                .map(|j| method.build(&(&bp / format!("conv{}", j + 1)), &ConvSpec::square(c, k, side), Role::Block))
                .collect::<anyhow::Result<Vec<_>>>()?;
            blocks.push(convs);
        }
        let head = method.build(&(p / "head"), &ConvSpec::square(spec.head_width(), 1, 1), Role::Head)?;
        Ok(ConvNet { spec, first, blocks, head })
    }

    /// Precomputes every layer's input-independent transform (see [`LipLayer::freeze`]), in full
    /// fp32 whatever the caller's training mode ([`crate::precision::Fp32Guard`]): the frozen
    /// network is what the per-epoch evaluation, the audit and the certificate describe, so on a
    /// GPU its rescalings and orthogonalisations (AOL's and SLL's autocorrelations, CPL's power
    /// iteration, AOC's kernel composition: convolutions) never carry TF32's ~1e-3 rounding.
    /// Errors only when libtorch's precision switches cannot be read or set: always in a build
    /// without the C++ shim (`src/shim/`), which cannot train or certify either.
    pub fn freeze(&self) -> anyhow::Result<FrozenConvNet> {
        let _fp32 = crate::precision::Fp32Guard::new()?;
        let transforms_tf32 = crate::precision::current()?;
        let _guard = tch::no_grad_guard();
        Ok(FrozenConvNet {
            spec: self.spec,
            first: self.first.freeze(),
            blocks: self.blocks.iter().map(|b| b.iter().map(|l| l.freeze()).collect()).collect(),
            head: self.head.freeze(),
            transforms_tf32,
        })
    }

    /// The layers in forward order, for per-layer audits.
    pub fn layers(&self) -> Vec<&dyn LipLayer> {
        let mut all: Vec<&dyn LipLayer> = vec![self.first.as_ref()];
        for block in &self.blocks {
            all.extend(block.iter().map(|l| l.as_ref()));
        }
        all.push(self.head.as_ref());
        all
    }
}

/// Shared forward structure of the trainable and the frozen network.
fn run_net(spec: &NetSpec, x: &Tensor, first: &dyn Fn(&Tensor) -> Tensor, block: &dyn Fn(usize, usize, &Tensor) -> Tensor, head: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
    let w = spec.base_width();
    let mut h = max_min(&first(&zero_channel_pad(x, w)));
    for i in 0..spec.blocks() as usize {
        let c = w << i;
        for j in 0..CONVS_PER_BLOCK as usize {
            h = max_min(&block(i, j, &h));
        }
        h = pixel_unshuffle(&first_channels(&h, c / 2));
    }
    first_channels(&head(&h).flatten(1, -1), spec.classes)
}

impl ModuleT for ConvNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        run_net(
            &self.spec,
            x,
            &|h| self.first.forward_t(h, train),
            &|i, j, h| self.blocks[i][j].forward_t(h, train),
            &|h| self.head.forward_t(h, train),
        )
    }
}

/// The inference network: every weight transform precomputed.
#[derive(Debug)]
pub struct FrozenConvNet {
    pub spec: NetSpec,
    first: Box<dyn nn::Module>,
    blocks: Vec<Vec<Box<dyn nn::Module>>>,
    head: Box<dyn nn::Module>,
    transforms_tf32: crate::precision::Tf32,
}

impl FrozenConvNet {
    /// libtorch's TF32 switches while the transforms were computed: off, by [`ConvNet::freeze`].
    pub fn transforms_tf32(&self) -> crate::precision::Tf32 {
        self.transforms_tf32
    }

    /// The frozen layers in forward order ([`ConvNet::layers`]' order: the first convolution, the
    /// blocks' convolutions, the head), each an eval-mode module of one layer alone.
    pub fn into_layers(self) -> Vec<Box<dyn nn::Module>> {
        std::iter::once(self.first).chain(self.blocks.into_iter().flatten()).chain(std::iter::once(self.head)).collect()
    }

    /// The logits `[B, classes]` and, in forward order, the output of every convolution before its
    /// activation: `first_conv` `[B, w, n, n]`, then `block{i}.conv{j}` `[B, c_i, n_i, n_i]`, then the
    /// head `[B, head_width, 1, 1]` (all channels, before the first `classes` are kept). For
    /// comparing a network layer by layer with another implementation.
    pub fn forward_traced(&self, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        let trace = std::cell::RefCell::new(Vec::new());
        let keep = |y: Tensor| {
            trace.borrow_mut().push(y.shallow_clone());
            y
        };
        let logits = run_net(
            &self.spec,
            x,
            &|h| keep(self.first.forward(h)),
            &|i, j, h| keep(self.blocks[i][j].forward(h)),
            &|h| keep(self.head.forward(h)),
        );
        (logits, trace.into_inner())
    }
}

impl Module for FrozenConvNet {
    fn forward(&self, x: &Tensor) -> Tensor {
        run_net(
            &self.spec,
            x,
            &|h| self.first.forward(h),
            &|i, j, h| self.blocks[i][j].forward(h),
            &|h| self.head.forward(h),
        )
    }
}

/// Trainable and non-trainable parameter counts of a VarStore (buffers included in the latter).
pub fn parameter_counts(vs: &nn::VarStore) -> (i64, i64) {
    let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let all: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    (trainable, all - trainable)
}

/// The convolutions of the network of `spec` as `(channels, kernel, side)`, written out from the
/// module doc (not from [`ConvNet::new`]): the first conv (1×1 on `w`), five per block (`w·2^i`
/// channels on `side/2^i`, kernel `spec.kernel` except the last block's 1), the head (1×1 on
/// `w·2^nb`, side 1). For the parameter-count formulas of the layer tests.
#[cfg(test)]
pub(crate) fn conv_shapes(spec: &NetSpec) -> Vec<(i64, i64, i64)> {
    let (w, nb, side) = (spec.base_width(), spec.blocks(), spec.input_side);
    let mut shapes = vec![(w, 1, side)];
    for i in 0..nb {
        let k = if i == nb - 1 { 1 } else { spec.kernel };
        shapes.extend(std::iter::repeat((w << i, k, side >> i)).take(CONVS_PER_BLOCK as usize));
    }
    shapes.push((w << nb, 1, 1));
    shapes
}
