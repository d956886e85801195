//! Shared FFT-convolution conventions of the Fourier-domain layers (Cayley, LOT), and the batched
//! complex Cayley transform (reference-protocol §1.5–1.7).
//!
//! A `k×k` cross-correlation with **circular** "same" padding on an `n×n` torus is diagonalised by
//! the 2-D DFT: at every frequency `f` it is the `co×ci` complex matrix
//!
//! ```text
//! Ŵ[f] = S[f] · conj(FFT2_n(w)[f]),   S_s[r,c] = exp(i·2π·s·(r+c)/n),   s = −(k−1)/2
//! ```
//!
//! (the conjugate because conv2d is a cross-correlation, the shift because the "same" output of
//! PyTorch's conv2d is centred on the kernel's middle tap). The kernel is zero-padded at the bottom
//! and right to `n×n`. The input spectrum is reshaped to `[N, ci, B]`, the output spectrum
//! `Ŷ = Ŵ @ X̂` is `[N, co, B]`, with `N` frequencies flattened row-major (§1.6). A test checks
//! that this operator equals PyTorch's conv2d with circular padding, for both layouts.
//!
//! Two layouts, [`Layout::Half`] (`rfft2`, `N = n·(n/2+1)`, the Cayley convention) and
//! [`Layout::Full`] (`fft2`, `N = n²`, the LOT convention). For a real kernel and a real input the
//! half layout computes the same real output with about half the frequencies: a per-frequency
//! map `Ŵ[f] ↦ φ(Ŵ[f])` that commutes with conjugation (Cayley, Newton–Schulz) keeps the spectrum
//! Hermitian, so `irfft2` of the half spectrum equals `real(ifft2)` of the full one.
//!
//! Everything here is device-agnostic (tensors are created on the argument's device) and runs in
//! float32 / complex64.
//!
//! **No host synchronisation** (for CUDA training steps): the shift matrices are built once per
//! (n, cols, s, device) and cached per thread ([`shift_matrix`]); the Cayley inverse is
//! `linalg_inv_ex` without its error check (which would copy the status to the host on every
//! forward). Its status is accumulated on the device and read once per epoch by the training loop
//! ([`take_singular_inverses`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::f64::consts::PI;
use tch::{nn, Device, Kind, Tensor};

thread_local! {
    /// Shift matrices by (n, cols, s, device).
    static SHIFTS: RefCell<HashMap<(i64, i64, i64, Device), Tensor>> = RefCell::new(HashMap::new());
    /// Largest `info` of the Cayley inverses since the last [`take_singular_inverses`], one per
    /// device the thread used (on that device; > 0 where a matrix was singular).
    static INVERSE_STATUS: RefCell<Vec<Tensor>> = const { RefCell::new(Vec::new()) };
}

/// Whether any Cayley inverse since the last call met a singular matrix (one read from the
/// device); resets the record. An error names it.
pub fn take_singular_inverses() -> anyhow::Result<()> {
    let status = INVERSE_STATUS.with(|s| std::mem::take(&mut *s.borrow_mut()));
    for info in status {
        let worst = info.f_int64_value(&[])?;
        anyhow::ensure!(worst == 0, "a Cayley transform met a singular matrix I + A (LAPACK/cuSOLVER info {worst})");
    }
    Ok(())
}

/// Records `info` of a batched `linalg_inv_ex` on the device, without reading it.
pub(crate) fn record_inverse_status(info: &Tensor) {
    let _guard = tch::no_grad_guard();
    let worst = if info.dim() == 0 { info.shallow_clone() } else { info.amax([0i64].as_slice(), false) };
    // Per device: a thread that changes device (the tests, CPU then CUDA) keeps both statuses,
    // and merging never copies between devices (no host synchronisation).
    INVERSE_STATUS.with(|s| {
        let mut s = s.borrow_mut();
        match s.iter_mut().find(|prev| prev.device() == worst.device()) {
            Some(prev) => *prev = prev.maximum(&worst),
            None => s.push(worst),
        }
    });
}

/// PyTorch's default `Conv2d` initialisation (reference-protocol §1.8), used by the Cayley and LOT
/// convolutions: `weight [co, ci, k, k]` then `bias [co]`, both `U(−1/√fan_in, 1/√fan_in)` with
/// `fan_in = ci·k²` (Kaiming-uniform with `a = √5` reduces to this bound).
pub fn torch_default_conv(p: &nn::Path, co: i64, ci: i64, k: i64) -> (Tensor, Tensor) {
    let bound = 1.0 / ((ci * k * k) as f64).sqrt();
    let weight = p.var("weight", &[co, ci, k, k], nn::Init::Uniform { lo: -bound, up: bound });
    let bias = p.var("bias", &[co], nn::Init::Uniform { lo: -bound, up: bound });
    (weight, bias)
}

/// Which half of the 2-D spectrum is kept (reference-protocol §1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `rfft2`/`irfft2`: columns `0..=n/2` only (Cayley, Sandwich).
    Half,
    /// `fft2`/`ifft2(..).real`: all `n²` frequencies (LOT in the authors' code).
    Full,
}

impl Layout {
    /// Number of frequency columns kept for a side `n`.
    pub fn cols(self, n: i64) -> i64 {
        match self {
            Layout::Half => n / 2 + 1,
            Layout::Full => n,
        }
    }

    /// Number of frequencies `N` (the batch dimension of the per-frequency matrices).
    pub fn frequencies(self, n: i64) -> i64 {
        n * self.cols(n)
    }
}

/// The shift exponent `s = −(k−1)/2` for an odd kernel size `k`; it moves the output of the
/// circular correlation so that it is centred like conv2d's "same" padding (§1.6).
pub fn shift_exponent(kernel: i64) -> i64 {
    -((kernel - 1) / 2)
}

/// The shift matrix `S_s[r,c] = exp(i·2π·s·(r+c)/n)` for `r ∈ [0,n)`, `c ∈ [0,cols)`, complex64
/// `[n, cols]` on `device`. The phase `s·(r+c) mod n` is reduced exactly in integers and the
/// exponential is taken in f64, so every entry is correctly rounded to complex64 (the authors
/// round `2π·s` to complex64 first; the difference is below 1e-6).
/// Cached: built once per (n, cols, s, device) and thread, then shared (no kernel launches).
pub fn shift_matrix(n: i64, cols: i64, s: i64, device: Device) -> Tensor {
    SHIFTS.with(|cache| {
        cache.borrow_mut().entry((n, cols, s, device)).or_insert_with(|| build_shift_matrix(n, cols, s, device)).shallow_clone()
    })
}

fn build_shift_matrix(n: i64, cols: i64, s: i64, device: Device) -> Tensor {
    let _guard = tch::no_grad_guard();
    let r = Tensor::arange(n, (Kind::Int64, device)).view([n, 1]);
    let c = Tensor::arange(cols, (Kind::Int64, device)).view([1, cols]);
    let phase = ((r + c) * s).remainder(n).to_kind(Kind::Double) * (2.0 * PI / n as f64);
    Tensor::polar(&phase.ones_like(), &phase).to_kind(Kind::ComplexFloat)
}

/// Kernel spectrum `Ŵ = S·conj(FFT2_n(w))` of a real kernel `w: [co, ci, k, k]` (`k ≤ n`),
/// as per-frequency matrices `[N, co, ci]` complex64 (§1.6).
pub fn kernel_spectrum(w: &Tensor, n: i64, layout: Layout) -> Tensor {
    let (co, ci, k) = {
        let s = w.size();
        (s[0], s[1], s[3])
    };
    let spectrum = match layout {
        Layout::Half => w.fft_rfft2(Some([n, n].as_slice()), [-2, -1], "backward"),
        Layout::Full => w.fft_fft2(Some([n, n].as_slice()), [-2, -1], "backward"),
    };
    let cols = layout.cols(n);
    let shift = shift_matrix(n, cols, shift_exponent(k), w.device());
    (spectrum.conj() * shift).permute([2, 3, 0, 1]).reshape([n * cols, co, ci])
}

/// Input spectrum of a real `x: [B, ci, n, n]` as `[N, ci, B]` complex64 (§1.6).
pub fn input_spectrum(x: &Tensor, layout: Layout) -> Tensor {
    let s = x.size();
    let (b, ci, n) = (s[0], s[1], s[2]);
    let spectrum = match layout {
        Layout::Half => x.fft_rfft2(None::<&[i64]>, [-2, -1], "backward"),
        Layout::Full => x.fft_fft2(None::<&[i64]>, [-2, -1], "backward"),
    };
    spectrum.permute([2, 3, 1, 0]).reshape([layout.frequencies(n), ci, b])
}

/// Real output `[B, co, n, n]` from an output spectrum `[N, co, B]` (§1.6).
pub fn output_from_spectrum(y: &Tensor, n: i64, layout: Layout) -> Tensor {
    let s = y.size();
    let (co, b) = (s[1], s[2]);
    let grid = y.reshape([n, layout.cols(n), co, b]).permute([3, 2, 0, 1]);
    match layout {
        Layout::Half => grid.fft_irfft2(Some([n, n].as_slice()), [-2, -1], "backward"),
        Layout::Full => grid.fft_ifft2(None::<&[i64]>, [-2, -1], "backward").real(),
    }
}

/// Applies per-frequency matrices `q: [N, co, ci]` to a real `x: [B, ci, n, n]`: the circular
/// convolution whose spectrum is `q`, returning `[B, co, n, n]`.
pub fn spectral_conv(q: &Tensor, x: &Tensor, layout: Layout) -> Tensor {
    let n = x.size()[2];
    output_from_spectrum(&q.matmul(&input_spectrum(x, layout)), n, layout)
}

/// The precomputed weights of a Fourier-domain layer (Cayley, LOT): per-frequency matrices applied
/// on an `n×n` torus, or, for a 1×1 kernel (one real matrix at every frequency), that 1×1
/// convolution. Computed once per forward, or once at `freeze()` for inference.
pub enum SpectralOperator {
    /// Spectrum `q` `[N, co, ci]` on the torus of the input zero-padded by `pad` on every side;
    /// the output is cropped back to the input's size (`pad = 0`: plain circular convolution).
    Spectral { q: Tensor, pad: i64, layout: Layout },
    /// A `[co, ci, 1, 1]` kernel.
    Pointwise(Tensor),
}

impl SpectralOperator {
    /// `[B, ci, n, n] → [B, co, n, n]`: pad, apply the spectrum, crop, add `bias` `[co]` (or the
    /// 1×1 convolution with its bias).
    pub fn apply(&self, x: &Tensor, bias: &Tensor) -> Tensor {
        match self {
            SpectralOperator::Spectral { q, pad, layout } => {
                let (n, p) = (x.size()[2], *pad);
                let padded = if p > 0 { x.constant_pad_nd([p, p, p, p]) } else { x.shallow_clone() };
                let z = spectral_conv(q, &padded, *layout);
                let cropped = if p > 0 { z.narrow(2, p, n).narrow(3, p, n) } else { z };
                cropped + bias.view([1, -1, 1, 1])
            }
            SpectralOperator::Pointwise(w) => x.conv2d(w, Some(bias), [1, 1], [0, 0], [1, 1], 1),
        }
    }
}

/// Cayley transform of batched (complex or real) matrices `w: [N, co, ci]` (or one `[co, ci]`),
/// reference-protocol §1.5. The result has orthonormal columns when `co ≥ ci` (`QᴴQ = I`) and
/// orthonormal rows when `co < ci` (`QQᴴ = I`); for square input it is unitary.
///
/// For `co ≥ ci`, with `U = w[:ci]`, `V = w[ci:]`, `A = U − Uᴴ + VᴴV` and `M = (I + A)⁻¹`, the
/// result is `[M(I − A); −2VM]`. Since `M(I − A) = M(2I − (I + A)) = 2M − I`, the top block is
/// computed without a second product. For `co < ci` the transform is applied to the plain
/// (non-conjugated) transpose and transposed back, as the authors do.
pub fn cayley(w: &Tensor) -> Tensor {
    if w.dim() == 2 {
        return cayley(&w.unsqueeze(0)).squeeze_dim(0);
    }
    let s = w.size();
    let (co, ci) = (s[1], s[2]);
    if ci > co {
        return cayley(&w.transpose(1, 2)).transpose(1, 2);
    }
    let eye = Tensor::eye(ci, (w.kind(), w.device()));
    let u = w.narrow(1, 0, ci);
    let mut a = &u - u.mh();
    let v = w.narrow(1, ci, co - ci);
    if co > ci {
        a = a + v.mh().matmul(&v);
    }
    // No error check here (it would synchronise with the host): the status is read per epoch.
    let (m, info) = Tensor::linalg_inv_ex(&(&eye + a), false);
    record_inverse_status(&info);
    let top = &m * 2.0 - eye;
    if co == ci {
        top
    } else {
        Tensor::cat(&[top, v.matmul(&m) * -2.0], 1)
    }
}

/// Exact singular values of the circular convolution with kernel `w: [co, ci, k, k]` on an `n×n`
/// torus (Sedghi et al. 2019; reference-protocol §1.7): the singular values of the per-frequency
/// matrices `FFT2_n(w)[f]`, returned as `[n, n, min(co, ci)]` (real). Conjugation and the
/// unit-modulus shift do not change singular values, so no shift is applied. A test oracle.
pub fn circular_conv_singular_values(w: &Tensor, n: i64) -> Tensor {
    let per_frequency = w
        .fft_fft2(Some([n, n].as_slice()), [-2, -1], "backward")
        .permute([2, 3, 0, 1]);
    // `svd` rather than `linalg_svdvals`: tch passes the driver as a string, and any string
    // (even "") is rejected on the CPU.
    let (_, s, _) = per_frequency.svd(true, false);
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// float32 round-off accumulated over an FFT, a small inverse and a few products.
    const F32_TOL: f64 = 1e-4;

    pub(crate) use crate::nn::ortho::testing::{impulse_matrix, max_abs_diff};

    /// `freeze()` must recompute from the current parameters (design §5): freeze once, move every
    /// trainable parameter, freeze again and compare with the uncached evaluation forward.
    pub(crate) fn check_freeze_matches_eval(vs: &nn::VarStore, layer: &dyn crate::nn::LipLayer, x: &Tensor) {
        /// Same float32 ops in the same order up to caching: only reassociation differences.
        const FREEZE_TOL: f64 = 1e-5;
        let _stale = layer.freeze();
        tch::no_grad(|| {
            for mut v in vs.trainable_variables() {
                let _ = v.g_add_(&(v.randn_like() * 0.05));
            }
        });
        let frozen = layer.freeze();
        let a = tch::no_grad(|| nn::Module::forward(frozen.as_ref(), x));
        let b = tch::no_grad(|| nn::ModuleT::forward_t(layer, x, false));
        let diff = max_abs_diff(&a, &b);
        assert!(diff < FREEZE_TOL, "frozen and eval forward differ by {diff}");
    }

    /// A training forward and backward of a random linear functional of the output gives every
    /// trainable parameter a finite, non-zero gradient.
    pub(crate) fn check_gradients_reach_every_parameter(vs: &nn::VarStore, layer: &dyn crate::nn::LipLayer, x: &Tensor) {
        for v in vs.trainable_variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let y = nn::ModuleT::forward_t(layer, x, true);
        (&y * y.randn_like()).sum(Kind::Float).backward();
        for (name, v) in vs.variables() {
            if !v.requires_grad() {
                continue;
            }
            let g = v.grad();
            assert!(g.defined(), "{name} got no gradient");
            let norm = g.norm().double_value(&[]);
            assert!(norm.is_finite() && norm > 0.0, "{name}: gradient norm {norm}");
        }
    }

    /// Singular values (f64) of a dense matrix.
    pub(crate) fn singular_values(m: &Tensor) -> Tensor {
        m.svd(true, false).1
    }

    /// Circular "same" cross-correlation by PyTorch's conv2d: the independent reference.
    fn conv_circular(x: &Tensor, w: &Tensor) -> Tensor {
        let p = w.size()[3] / 2;
        x.pad([p, p, p, p], "circular", None).conv2d(w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
    }

    /// The status of the batched inverses is kept unread until [`take_singular_inverses`], which
    /// reports the worst `info` since the last call (LAPACK's: the 1-based index of a zero pivot)
    /// and starts afresh; an unsingular record passes.
    #[test]
    fn singular_inverses_are_reported_once_with_the_worst_info() {
        let info = |v: &[i32]| Tensor::from_slice(v);
        record_inverse_status(&info(&[0, 0]));
        assert!(take_singular_inverses().is_ok());
        record_inverse_status(&info(&[0, 2, 0]));
        record_inverse_status(&info(&[3, 0]));
        record_inverse_status(&info(&[0]));
        let err = take_singular_inverses().unwrap_err().to_string();
        assert!(err.contains("singular matrix") && err.ends_with("info 3)"), "{err}");
        assert!(take_singular_inverses().is_ok(), "the record was not reset");
        // A real batched inverse of a singular matrix reports through the same path.
        let (_, status) = Tensor::linalg_inv_ex(&Tensor::from_slice(&[1.0f32, 2.0, 2.0, 4.0]).view([1, 2, 2]), false);
        record_inverse_status(&status);
        assert!(take_singular_inverses().is_err(), "linalg_inv_ex's info of a singular matrix went unnoticed");
    }

    #[test]
    fn spectral_operator_equals_circular_conv2d_for_both_layouts() {
        tch::manual_seed(0);
        for layout in [Layout::Half, Layout::Full] {
            for (co, ci, k, n) in [(3, 2, 3, 6), (2, 3, 3, 5), (4, 4, 1, 4), (2, 2, 3, 8)] {
                let w = Tensor::randn([co, ci, k, k], (Kind::Float, Device::Cpu));
                let x = Tensor::randn([2, ci, n, n], (Kind::Float, Device::Cpu));
                let ours = spectral_conv(&kernel_spectrum(&w, n, layout), &x, layout);
                let reference = conv_circular(&x, &w);
                let diff = max_abs_diff(&ours, &reference);
                assert!(diff < F32_TOL, "{layout:?} co={co} ci={ci} k={k} n={n}: diff {diff}");
            }
        }
    }

    #[test]
    fn shift_matrix_matches_hand_values() {
        // n = 4, s = −1: S[r,c] = exp(−iπ(r+c)/2); S[0,1] = −i, S[1,1] = −1, S[1,2] = i.
        let s = shift_matrix(4, 3, -1, Device::Cpu);
        let re = s.real();
        let im = s.imag();
        let at = |t: &Tensor, r: i64, c: i64| t.double_value(&[r, c]);
        assert!((at(&re, 0, 0) - 1.0).abs() < 1e-7 && at(&im, 0, 0).abs() < 1e-7);
        assert!(at(&re, 0, 1).abs() < 1e-7 && (at(&im, 0, 1) + 1.0).abs() < 1e-7);
        assert!((at(&re, 1, 1) + 1.0).abs() < 1e-7 && at(&im, 1, 1).abs() < 1e-7);
        assert!(at(&re, 1, 2).abs() < 1e-7 && (at(&im, 1, 2) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn cayley_transform_is_unitary_for_square_tall_and_wide() {
        tch::manual_seed(1);
        for (co, ci) in [(5, 5), (7, 3), (3, 7)] {
            let re = Tensor::randn([4, co, ci], (Kind::Float, Device::Cpu));
            let im = Tensor::randn([4, co, ci], (Kind::Float, Device::Cpu));
            let q = cayley(&Tensor::complex(&re, &im));
            assert_eq!(q.size(), vec![4, co, ci]);
            let (gram, m) = if co >= ci { (q.mh().matmul(&q), ci) } else { (q.matmul(&q.mh()), co) };
            let eye = Tensor::eye(m, (Kind::ComplexFloat, Device::Cpu));
            let diff = max_abs_diff(&gram, &eye);
            assert!(diff < F32_TOL, "co={co} ci={ci}: |QᴴQ − I| = {diff}");
            // Real input stays real and orthogonal.
            let qr = cayley(&re.get(0));
            assert_eq!(qr.kind(), Kind::Float);
            let g = if co >= ci { qr.tr().matmul(&qr) } else { qr.matmul(&qr.tr()) };
            assert!(max_abs_diff(&g, &Tensor::eye(m, (Kind::Float, Device::Cpu))) < F32_TOL);
        }
    }

    #[test]
    fn cayley_of_skew_matrix_matches_hand_value() {
        // A = [[0, −t], [t, 0]] (U − Uᵀ for U = [[0,−t/2],[t/2,0]]): (I+A)⁻¹(I−A) is the rotation
        // [[c, s], [−s, c]] with c = (1−t²)/(1+t²), s = 2t/(1+t²).
        let t = 0.5f64;
        let u = Tensor::from_slice(&[0.0f32, -0.25, 0.25, 0.0]).view([2, 2]);
        let q = cayley(&u);
        let (c, s) = ((1.0 - t * t) / (1.0 + t * t), 2.0 * t / (1.0 + t * t));
        let expected = Tensor::from_slice(&[c as f32, s as f32, -s as f32, c as f32]).view([2, 2]);
        assert!(max_abs_diff(&q, &expected) < 1e-6, "{q}");
    }

    #[test]
    fn circular_singular_values_match_the_impulse_response() {
        tch::manual_seed(2);
        let (co, ci, k, n) = (3, 2, 3, 4);
        let w = Tensor::randn([co, ci, k, k], (Kind::Float, Device::Cpu));
        let oracle = circular_conv_singular_values(&w, n).flatten(0, -1).sort(0, true).0;
        let dense = impulse_matrix(&|x| conv_circular(x, &w), ci, n, Device::Cpu);
        let exact = singular_values(&dense).to_kind(Kind::Float);
        assert_eq!(oracle.size(), exact.size());
        let diff = max_abs_diff(&oracle, &exact);
        assert!(diff < F32_TOL, "diff {diff}");
    }
}
