//! BCOP: block convolutional orthogonal parametrisation (Li et al., NeurIPS 2019;
//! reference-protocol §2.2), and the Björck linear head of the BCOP networks (§2.3).
//!
//! **Convolution.** `K_n = 2(k−1)+1` unconstrained `C × C` matrices (`C = max(in, out)`) are
//! orthogonalised by Björck–Bowie (20 iterations, power-iteration scaling, [`bjorck`]). The first
//! gives the channel map `H`; the others, masked to their first `⌊C/2⌋` columns, give symmetric
//! projectors `P_j = (O_j·m)(O_j·m)ᵀ`. A 2×2 block kernel `[[PQ, P(I−Q)], [(I−P)Q, (I−P)(I−Q)]]`
//! is an orthogonal convolution on the torus; `k−1` of them are matrix-convolved into a `k × k`
//! kernel and left-multiplied by `H`. With circular padding the layer is therefore orthogonal (or
//! an isometry / co-isometry when `in ≠ out`): the tests check every circular singular value
//! (§1.7) equals 1 within 1e-4, the residual of 20 Björck iterations in f32.
//!
//! **Head** ([`BjorckLinear`], used for [`Role::Head`]): the layer named in all of the authors'
//! BCOP training runs: orthogonal init, Björck with power-iteration scaling, 3 iterations in
//! training (cheap, the weight is already near-orthogonal after each small step) and 15 in
//! evaluation (converged to f32 precision, so the certificate holds). Input `[B, W, 1, 1]`,
//! output `[B, W, 1, 1]`.
//!
//! **Departure from the authors (design §5):** their eval mode reuses the kernel built at the last
//! training forward, i.e. from the parameters *before* the last optimizer step, and never refreshes
//! it. lipctl's `forward_t(x, false)` recomputes the kernel from the current parameters, and
//! [`LipLayer::freeze`] precomputes it from the current parameters, so no stale kernel exists.
//! The power-iteration start is drawn from torch's generator at every call (as the authors), so
//! `tch::manual_seed` makes it reproducible.
//!
//! Leaf names: `param_matrices (K_n, C, C)`, `mask (K_n−1, 1, C)` (non-trainable state, kept in
//! the checkpoint like the authors' `requires_grad=False` parameter), `bias (out)`; the head has
//! `weight (out, in)`, `bias (out)`.

use super::blocks::linear_on_maps;
use super::ortho::{bjorck, conv2d_circular, default_uniform, orthogonal, BjorckScaling};
use super::{ConvSpec, FrozenFn, LipLayer, MethodInfo};
use super::registry::{AuthorsTimes, Role, Tolerances, TrainIsEval};
use anyhow::Context;
use tch::{nn, Tensor};

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: true,
    fft_based: false,
    cached_at_inference: "orthogonal kernel (Björck 20 iterations); head weight (Björck 15 iterations)",
    guarantee: "orthogonal with circular padding: all circular singular values 1 within 1e-4",
    in_paper: true,
    color: (255, 127, 14),
    authors_cpu_b64_train_s: AuthorsTimes { xs: Some(1.06), s: Some(4.6) },
    tolerances: Tolerances { train_is_eval: TrainIsEval::ExceptHead, ..Tolerances::STRICT },
};

/// Björck iterations for the convolution's matrices, training and evaluation alike (§2.2).
pub const BCOP_BJORCK_ITERS: i64 = 20;
/// Björck iterations of the linear head in training: few, because the weight stays close to
/// orthogonal between optimizer steps (§2.3).
pub const HEAD_TRAIN_ITERS: i64 = 3;
/// Björck iterations of the linear head in evaluation: enough to converge in f32 (§2.3).
pub const HEAD_EVAL_ITERS: i64 = 15;

pub fn build(p: &nn::Path, spec: &ConvSpec, role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    match role {
        Role::Head => Ok(Box::new(BjorckLinear::new(p, spec.channels_in, spec.channels_out)?)),
        Role::First | Role::Block => Ok(Box::new(BcopConv::new(p, spec)?)),
    }
}

/// A BCOP convolution (stride 1, circular "same" padding).
#[derive(Debug)]
pub struct BcopConv {
    param_matrices: Tensor,
    mask: Tensor,
    bias: Tensor,
    channels_in: i64,
    channels_out: i64,
    kernel: i64,
}

impl BcopConv {
    pub fn new(p: &nn::Path, spec: &ConvSpec) -> anyhow::Result<Self> {
        let (ci, co, k) = (spec.channels_in, spec.channels_out, spec.kernel);
        let c = ci.max(co);
        let kn = 2 * (k - 1) + 1;
        // Each matrix gets its own orthogonal_(C×C, gain 1/√C) (§2.2); scale is irrelevant after
        // Björck's power-iteration scaling but keeps the raw parameters comparable to the authors'.
        let gain = 1.0 / (c as f64).sqrt();
        let mats: Vec<Tensor> = (0..kn).map(|_| orthogonal(&[c, c], gain, p.device())).collect();
        let param_matrices =
            p.f_var_copy("param_matrices", &Tensor::stack(&mats, 0)).context("BCOP: creating param_matrices")?;
        let mask = p.f_zeros_no_train("mask", &[kn - 1, 1, c]).context("BCOP: creating mask")?;
        tch::no_grad(|| {
            let _ = mask.narrow(2, 0, c / 2).fill_(1.0);
        });
        let bias = p.f_var_copy("bias", &default_uniform(&[co], co, p.device())).context("BCOP: creating bias")?;
        Ok(BcopConv { param_matrices, mask, bias, channels_in: ci, channels_out: co, kernel: k })
    }

    /// The orthogonal kernel `(out, in, k, k)` from the current parameters (§2.2
    /// `update_weight`), differentiable in `param_matrices`.
    pub fn kernel(&self) -> Tensor {
        let (ci, co, k) = (self.channels_in, self.channels_out, self.kernel);
        let ortho = bjorck(&self.param_matrices, BCOP_BJORCK_ITERS, BjorckScaling::PowerIteration);
        let flipped = ci > co;
        // H is in×out; the flipped case works with Hᵀ (out×in) so it always maps onto C = max.
        let h = ortho.get(0).narrow(0, 0, ci).narrow(1, 0, co);
        let h = if flipped { h.transpose(0, 1) } else { h };
        if k == 1 {
            // A 1×1 kernel is the (sub-)orthogonal matrix itself, as an (out, in) weight. The
            // authors' not-flipped in < out case yields an invalid (in, out) shape; lipctl uses
            // Hᵀ there (an isometry). The networks only have in == out, where W = H as theirs.
            let w = if ci < co { h.transpose(0, 1) } else { h };
            return w.contiguous().view([co, ci, 1, 1]);
        }
        let kn = 2 * (k - 1) + 1;
        let masked = ortho.narrow(0, 1, kn - 1) * &self.mask;
        let projectors = masked.matmul(&masked.transpose(-2, -1));
        let mut dict = block_dictionary(&projectors.get(0), &projectors.get(1));
        for t in 1..(k - 1) {
            let step = block_dictionary(&projectors.get(2 * t), &projectors.get(2 * t + 1));
            dict = matrix_convolve(&dict, &step);
        }
        // p[x, y] = H · dict[x, y]: (ci_eff × C)·(C × C).
        let blocks = h.matmul(&dict);
        if flipped {
            blocks.permute([2, 3, 1, 0]).contiguous()
        } else {
            blocks.permute([3, 2, 1, 0]).contiguous()
        }
    }
}

/// The 2×2 dictionary of an orthogonal 2×2 convolution from projectors `P`, `Q` (§2.2),
/// as a `[2, 2, C, C]` tensor: `[[PQ, P(I−Q)], [(I−P)Q, (I−P)(I−Q)]]`. AOC builds its 2×2
/// kernels from it too.
pub(crate) fn block_dictionary(p: &Tensor, q: &Tensor) -> Tensor {
    let pq = p.matmul(q);
    let eye = Tensor::eye(p.size()[0], (p.kind(), p.device()));
    let p_not_q = p - &pq;
    let not_p_q = q - &pq;
    let not_p_not_q = eye - p - q + &pq;
    Tensor::stack(&[Tensor::stack(&[pq, p_not_q], 0), Tensor::stack(&[not_p_q, not_p_not_q], 0)], 0)
}

/// Matrix convolution of block dictionaries `m1 [k1, k1, C, C]` and `m2 [l, l, C, C]`:
/// `r[i, j] = Σ m1[a, b] · m2[i−a, j−b]`, shape `[k1+l−1, k1+l−1, C, C]` (§2.2). Each block of `m2`
/// multiplies all of `m1` at once and is placed at its offset by zero padding (no in-place writes,
/// so autograd stays simple).
fn matrix_convolve(m1: &Tensor, m2: &Tensor) -> Tensor {
    let k1 = m1.size()[0];
    let l = m2.size()[0];
    let mut out: Option<Tensor> = None;
    for c in 0..l {
        for d in 0..l {
            let term = m1.matmul(&m2.get(c).get(d));
            // constant_pad_nd lists the last dim first: (C, C, cols, rows).
            let placed = term.constant_pad_nd([0, 0, 0, 0, d, l - 1 - d, c, l - 1 - c]);
            out = Some(match out {
                Some(acc) => acc + placed,
                None => placed,
            });
        }
    }
    let out = out.expect("a block dictionary has at least one block");
    debug_assert_eq!(out.size()[0], k1 + l - 1);
    out
}

impl nn::ModuleT for BcopConv {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        conv2d_circular(x, &self.kernel(), Some(&self.bias))
    }
}

impl LipLayer for BcopConv {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let _guard = tch::no_grad_guard();
        let weight = self.kernel();
        let bias = self.bias.detach();
        Box::new(FrozenFn(move |x: &Tensor| conv2d_circular(x, &weight, Some(&bias))))
    }

    /// A circular convolution (or a dense matrix on 1×1 maps) plus a bias.
    fn structure(&self) -> super::Structure {
        super::Structure::CircularLinear
    }
}

/// The Björck-orthonormalised linear layer of the BCOP networks (§2.3 `BjorckLinear`), on
/// `[B, in, 1, 1]` → `[B, out, 1, 1]`.
#[derive(Debug)]
pub struct BjorckLinear {
    weight: Tensor,
    bias: Tensor,
}

impl BjorckLinear {
    pub fn new(p: &nn::Path, channels_in: i64, channels_out: i64) -> anyhow::Result<Self> {
        let weight = p
            .f_var_copy("weight", &orthogonal(&[channels_out, channels_in], 1.0, p.device()))
            .context("BCOP head: creating weight")?;
        let bias = p
            .f_var_copy("bias", &default_uniform(&[channels_out], channels_in, p.device()))
            .context("BCOP head: creating bias")?;
        Ok(BjorckLinear { weight, bias })
    }

    /// The orthonormalised weight `(out, in)`; `train` picks 3 or 15 Björck iterations.
    pub fn orthogonal_weight(&self, train: bool) -> Tensor {
        let iters = if train { HEAD_TRAIN_ITERS } else { HEAD_EVAL_ITERS };
        bjorck(&self.weight, iters, BjorckScaling::PowerIteration)
    }
}

impl nn::ModuleT for BjorckLinear {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        linear_on_maps(x, &self.orthogonal_weight(train), &self.bias)
    }
}

impl LipLayer for BjorckLinear {
    fn freeze(&self) -> Box<dyn nn::Module> {
        let _guard = tch::no_grad_guard();
        let weight = self.orthogonal_weight(false);
        let bias = self.bias.detach();
        Box::new(FrozenFn(move |x: &Tensor| linear_on_maps(x, &weight, &bias)))
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
    use crate::nn::ortho::testing::{circular_conv_singular_values, max_abs_diff};
    use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
    use tch::nn::ModuleT;
    use tch::{Device, Kind};

    /// 20 Björck iterations in f32 leave singular values within ~1e-6 of 1 when converged; 1e-4 is
    /// the bound the module doc promises (room for f32 rounding in the block products).
    const ORTHO_TOL: f64 = 1e-4;
    /// f32 rounding of a forward pass with entries of order 1.
    const F32_TOL: f64 = 1e-5;

    fn perturb(t: &Tensor, scale: f64) {
        tch::no_grad(|| {
            let noise = t.randn_like() * scale;
            let _ = t.shallow_clone().g_add_(&noise);
        });
    }

    fn conv(vs: &nn::VarStore, ci: i64, co: i64, k: i64) -> BcopConv {
        BcopConv::new(&vs.root(), &ConvSpec { channels_in: ci, channels_out: co, kernel: k, spatial: 6 }).unwrap()
    }

    #[test]
    fn kernel_is_orthogonal_on_the_torus() {
        tch::manual_seed(21);
        for (ci, co, k) in [(4, 4, 3), (6, 6, 5), (3, 5, 3), (5, 3, 3), (4, 4, 1), (3, 5, 1), (5, 3, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let layer = conv(&vs, ci, co, k);
            // Move away from the orthogonal init, as training does.
            perturb(&layer.param_matrices, 0.1);
            let w = tch::no_grad(|| layer.kernel());
            assert_eq!(w.size(), vec![co, ci, k, k]);
            let sv = circular_conv_singular_values(&w, 7);
            assert_eq!(sv.len() as i64, 49 * ci.min(co));
            for s in sv {
                assert!((s - 1.0).abs() < ORTHO_TOL, "({ci},{co},{k}): singular value {s}");
            }
        }
    }

    #[test]
    fn block_dictionary_is_a_partition_of_identity() {
        // Σ of all blocks of a dictionary of projectors is I (PQ + P(I−Q) + (I−P)Q + (I−P)(I−Q)),
        // and matrix convolution keeps that: the kernel sums to H.
        tch::manual_seed(22);
        let a = orthogonal(&[4, 4], 1.0, Device::Cpu).narrow(1, 0, 2);
        let p = a.matmul(&a.transpose(0, 1));
        let b = orthogonal(&[4, 4], 1.0, Device::Cpu).narrow(1, 0, 2);
        let q = b.matmul(&b.transpose(0, 1));
        let d = matrix_convolve(&block_dictionary(&p, &q), &block_dictionary(&q, &p));
        assert_eq!(d.size(), vec![3, 3, 4, 4]);
        let total = d.sum_dim_intlist([0i64, 1].as_slice(), false, Kind::Float);
        assert!(max_abs_diff(&total, &Tensor::eye(4, (Kind::Float, Device::Cpu))) < F32_TOL);
    }

    #[test]
    fn mask_is_state_and_gradients_reach_parameters() {
        tch::manual_seed(23);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = conv(&vs, 4, 4, 3);
        let mask = &vs.variables()["mask"];
        assert_eq!(mask.size(), vec![4, 1, 4]);
        assert_eq!(Vec::<f32>::try_from(mask.get(0).flatten(0, -1)).unwrap(), vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(vs.trainable_variables().len(), 2);
        let x = Tensor::randn([2, 4, 5, 5], (Kind::Float, Device::Cpu));
        layer.forward_t(&x, true).square().sum(Kind::Float).backward();
        for name in ["param_matrices", "bias"] {
            let g = vs.variables()[name].grad();
            assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "no gradient for {name}");
        }
    }

    #[test]
    fn freeze_matches_eval() {
        tch::manual_seed(24);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = conv(&vs, 4, 4, 3);
        perturb(&layer.param_matrices, 0.1);
        let x = Tensor::randn([2, 4, 5, 5], (Kind::Float, Device::Cpu));
        // The power-iteration start is random, but 20 Björck iterations converge to the polar
        // factor whatever the scale, so eval and freeze agree to f32 rounding.
        let eval = layer.forward_t(&x, false);
        assert!(max_abs_diff(&layer.freeze().forward(&x), &eval) < F32_TOL);
        // Not stale: a parameter change is seen by the next freeze.
        perturb(&layer.param_matrices, 0.1);
        let eval2 = layer.forward_t(&x, false);
        assert!(max_abs_diff(&layer.freeze().forward(&x), &eval2) < F32_TOL);
        assert!(max_abs_diff(&eval, &eval2) > 1e-3);
    }

    #[test]
    fn bjorck_head_is_orthogonal_and_keeps_the_map_layout() {
        tch::manual_seed(25);
        let vs = nn::VarStore::new(Device::Cpu);
        let head = BjorckLinear::new(&vs.root(), 6, 6).unwrap();
        perturb(&head.weight, 0.05);
        let w = tch::no_grad(|| head.orthogonal_weight(false));
        let gram = w.transpose(0, 1).matmul(&w);
        assert!(max_abs_diff(&gram, &Tensor::eye(6, (Kind::Float, Device::Cpu))) < ORTHO_TOL);
        // Norm preservation of the linear part, through the [B, W, 1, 1] interface.
        let x = Tensor::randn([3, 6, 1, 1], (Kind::Float, Device::Cpu));
        let frozen = head.freeze();
        let zero = frozen.forward(&Tensor::zeros([1, 6, 1, 1], (Kind::Float, Device::Cpu)));
        let y = frozen.forward(&x) - zero;
        assert_eq!(y.size(), vec![3, 6, 1, 1]);
        let ratio = y.norm().double_value(&[]) / x.norm().double_value(&[]);
        assert!((ratio - 1.0).abs() < ORTHO_TOL, "{ratio}");
        head.forward_t(&x, true).sum(Kind::Float).backward();
        for (name, t) in vs.variables() {
            assert!(t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "no gradient for {name}");
        }
    }

    #[test]
    fn parameter_counts_match_reference() {
        // reference-protocol §4.4: trainable, plus the non-trainable masks.
        for (size, expected) in [(ModelSize::XS, (1_137_088, 4_800)), (ModelSize::S, (4_542_336, 9_600))] {
            let vs = nn::VarStore::new(Device::Cpu);
            ConvNet::new(&vs.root(), NetSpec::new(Method::Bcop, size, 32, 10)).unwrap();
            assert_eq!(parameter_counts(&vs), expected, "{size}");
        }
    }
}
