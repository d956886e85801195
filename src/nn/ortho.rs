//! Shared orthogonalisation math (reference-protocol §1.1, §1.2, §1.8) and the padding conventions
//! of the convolution layers.
//!
//! Everything here is batched over leading dimensions, device-agnostic (new tensors are created on
//! the device and with the kind of the input) and differentiable unless stated otherwise. The layers
//! (BCOP, the Björck linear head, and later others) call these functions; none of them keeps its
//! own power iteration, Björck loop or padding helper.

use tch::{Kind, Tensor};

/// Björck–Bowie step size β (reference-protocol §1.2; the authors' only supported value, order 1).
pub const BJORCK_BETA: f64 = 0.5;

/// Power iterations used to scale a matrix before Björck (§1.2: 10, random start, no gradient).
pub const SCALING_POWER_ITERS: i64 = 10;

/// Result of [`power_iteration`]: left vector `u (..., m, 1)`, the estimate `sigma (...)` of the
/// top singular value, right vector `v (..., n, 1)`.
#[derive(Debug)]
pub struct PowerIteration {
    pub u: Tensor,
    pub sigma: Tensor,
    pub v: Tensor,
}

/// Power iteration for the top singular value of every matrix in `a (..., m, n)` (§1.1).
///
/// Starts from `init_u (..., m, 1)` when given (a persistent vector makes a cheap running
/// estimate), otherwise from `N(0, 1)` drawn from torch's generator on `a`'s device, so
/// `tch::manual_seed` makes it deterministic. Each iteration computes `v = Aᵀu/‖Aᵀu‖`, then
/// `u = Av/‖Av‖` (norms over dim −2, no epsilon, as the authors). Runs at least one iteration so
/// `v` is defined. `sigma = uᵀAv` never exceeds the true σ_max (it is a Rayleigh-type quotient), and
/// converges to it geometrically with ratio (σ₂/σ₁)². Gradients flow through `a` unless the caller
/// runs it under `no_grad`.
pub fn power_iteration(a: &Tensor, iters: i64, init_u: Option<&Tensor>) -> PowerIteration {
    let size = a.size();
    let nd = size.len();
    assert!(nd >= 2, "power_iteration needs a (..., m, n) tensor, got shape {size:?}");
    let mut u = match init_u {
        Some(u) => u.shallow_clone(),
        None => {
            let mut shape = size[..nd - 1].to_vec();
            shape.push(1);
            Tensor::randn(shape.as_slice(), (a.kind(), a.device()))
        }
    };
    let at = a.transpose(-2, -1);
    let normalize = |t: Tensor| {
        let norm = t.norm_scalaropt_dim(2, [-2i64].as_slice(), true);
        t / norm
    };
    let mut v = normalize(at.matmul(&u));
    u = normalize(a.matmul(&v));
    for _ in 1..iters {
        v = normalize(at.matmul(&u));
        u = normalize(a.matmul(&v));
    }
    let sigma = u.transpose(-2, -1).matmul(a).matmul(&v).squeeze_dim(-1).squeeze_dim(-1);
    PowerIteration { u, sigma, v }
}

/// How [`bjorck`] scales its input before iterating (§1.2). Björck converges only for singular
/// values in (0, √3), so the input has to be brought near σ_max ≈ 1 first unless it already is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BjorckScaling {
    /// Use the matrix as it is (e.g. `BnBLinear`, whose eye init keeps σ near 1).
    None,
    /// Divide each matrix by its [`power_iteration`] estimate (10 iterations, random start,
    /// no gradient through the scale). BCOP and the Björck linear head use this.
    PowerIteration,
    /// Divide by `sqrt(shape[0]·shape[1])` — the first two dims of the tensor, as the authors do,
    /// not the matrix dims.
    Default,
}

/// Björck–Bowie orthonormalisation of every matrix in `w (..., m, n)` (§1.2, order 1, β = 0.5):
/// after scaling, `iters` times `w ← (1+β)·w − β·w·(wᵀw)`. A wide matrix is processed transposed,
/// so the result has orthonormal columns (tall) or rows (wide) once converged; each step maps a
/// singular value σ to σ(1+β−βσ²), which converges quadratically near 1. The result is
/// differentiable with respect to `w` (the power-iteration scale is a constant).
pub fn bjorck(w: &Tensor, iters: i64, scaling: BjorckScaling) -> Tensor {
    let size = w.size();
    let nd = size.len();
    assert!(nd >= 2, "bjorck needs a (..., m, n) tensor, got shape {size:?}");
    if size[nd - 2] < size[nd - 1] {
        return bjorck(&w.transpose(-2, -1), iters, scaling).transpose(-2, -1);
    }
    let mut w = match scaling {
        BjorckScaling::None => w.shallow_clone(),
        BjorckScaling::PowerIteration => {
            let sigma = tch::no_grad(|| power_iteration(w, SCALING_POWER_ITERS, None).sigma);
            w / sigma.unsqueeze(-1).unsqueeze(-1)
        }
        BjorckScaling::Default => w / ((size[0] * size[1]) as f64).sqrt(),
    };
    for _ in 0..iters {
        let wtw = w.transpose(-2, -1).matmul(&w);
        w = &w * (1.0 + BJORCK_BETA) - w.matmul(&wtw) * BJORCK_BETA;
    }
    w
}

/// PyTorch's `orthogonal_(t, gain)` (§1.8) for a tensor of shape `dims`: a `rows × (numel/rows)`
/// matrix with orthonormal rows or columns (whichever are fewer), times `gain`. The QR sign fix
/// makes the distribution Haar. Draws from torch's generator on `device`.
pub fn orthogonal(dims: &[i64], gain: f64, device: tch::Device) -> Tensor {
    let rows = dims[0];
    let cols: i64 = dims[1..].iter().product();
    let gaussian = Tensor::randn([rows, cols], (Kind::Float, device));
    let tall = if rows < cols { gaussian.transpose(0, 1) } else { gaussian };
    let (q, r) = Tensor::linalg_qr(&tall, "reduced");
    let q = q * r.diagonal(0, -2, -1).sign().unsqueeze(0);
    let q = if rows < cols { q.transpose(0, 1) } else { q };
    (q * gain).contiguous().view(dims)
}

/// PyTorch's `dirac_` (§1.8): `w[d, d, k/2, k/2] = 1` for `d < min(out, in)`, zero elsewhere.
/// A dirac kernel is the identity convolution (padded with zero channels when out > in).
pub fn dirac(out_channels: i64, in_channels: i64, kernel: i64, device: tch::Device) -> Tensor {
    let w = Tensor::zeros([out_channels, in_channels, kernel, kernel], (Kind::Float, device));
    let d = out_channels.min(in_channels);
    let eye = Tensor::eye(d, (Kind::Float, device));
    let _ = w.narrow(0, 0, d).narrow(1, 0, d).select(3, kernel / 2).select(2, kernel / 2).copy_(&eye);
    w
}

/// PyTorch's default `Conv2d`/`Linear` initialisation (§1.8): weight and bias `U(−b, b)` with
/// `b = 1/√fan_in` (Kaiming-uniform with a = √5 reduces to exactly this bound).
pub fn default_uniform(dims: &[i64], fan_in: i64, device: tch::Device) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::empty(dims, (Kind::Float, device)).uniform_(-bound, bound)
}

/// PyTorch's `xavier_normal_` for a conv weight `(out, in, k, k)` (§1.8):
/// `N(0, √(2/(in·k² + out·k²)))`.
pub fn xavier_normal(dims: [i64; 4], device: tch::Device) -> Tensor {
    let receptive = dims[2] * dims[3];
    let std = (2.0 / ((dims[0] + dims[1]) * receptive) as f64).sqrt();
    Tensor::randn(dims, (Kind::Float, device)) * std
}

/// `conv2d` with circular "same" padding (wrap `k/2` pixels on every side), as PyTorch's
/// `Conv2d(padding='same', padding_mode='circular')` for odd `k`. On the torus the layer is a
/// circulant operator whose singular values are given by the FFT (§1.7).
pub fn conv2d_circular(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let half = weight.size()[3] / 2;
    if half == 0 {
        return x.conv2d(weight, bias, [1, 1], [0, 0], [1, 1], 1);
    }
    pad_circular(x, half).conv2d(weight, bias, [1, 1], [0, 0], [1, 1], 1)
}

/// Circular padding by `p ≥ 1` pixels on each side of the last two dimensions: `[..., h, w]` →
/// `[..., h + 2p, w + 2p]`, `p ≤ h, w`. The values are `pad(x, "circular")`'s; while training on
/// the CPU the backward is the shim's one-pass fold ([`super::shim::circular_pad`]) instead of
/// autograd through ATen's five slice copies, each of which copies the whole padded gradient.
pub fn pad_circular(x: &Tensor, p: i64) -> Tensor {
    super::shim::circular_pad(x, p).unwrap_or_else(|| x.pad([p, p, p, p], "circular", None))
}

/// The exact adjoint of [`conv2d_circular`] without bias (the transposed convolution on the
/// torus): circular "same" cross-correlation with the kernel's channels swapped and its taps
/// flipped, `wᵀ[i, o, a, b] = w[o, i, k−1−a, k−1−b]`. `y [B, out, n, n]` → `[B, in, n, n]`.
pub fn conv2d_circular_adjoint(y: &Tensor, weight: &Tensor) -> Tensor {
    conv2d_circular(y, &weight.transpose(0, 1).flip([2i64, 3].as_slice()), None)
}

/// The full 2-D autocorrelation of a kernel `k [c, d, kh, kw]` over its first dimension:
/// `A[a, b] = Σ_i k[a, i] ⋆ k[b, i]`, shape `[c, c, 2kh−1, 2kw−1]` (the Gram matrix of the
/// convolution's rows, offset by offset), differentiable in `k`. AOL (§2.1, on the transposed
/// kernel) and SLL (§2.10) bound their layers with it.
///
/// Computed as a product `f(k, k)`, bilinear in its two arguments: a convolution of a batch of `c`
/// "images" `k` by the kernel `k` (padding `(kh−1, kw−1)`), or for a 1×1 kernel the matrix product `K Kᵀ`
/// as one GEMM (oneDNN runs it as a convolution ~4× slower forward and backward at 512–1024
/// channels on 2 CPU cores, torch 2.11: 19 → 5 ms and 157 → 33 ms per forward+backward).
///
/// Gradient: autograd of `f(k, k)` would differentiate both arguments, and for a convolution the
/// weight gradient is the slow one (~80 GFLOP/s against ~200 for the forward pass at 256 channels
/// on this project's 2-core Xeon). But `A` is symmetric, `A = τ(A)` with `τ(X)[a, b, t] =
/// X[b, a, −t]` (swap the channels, flip the taps), and `f(p, q) = τ(f(q, p))`, so the two
/// contributions are one: `∂L/∂k = 2·J_1ᵀ σ(G)` with `G = ∂L/∂A`, `σ(X) = (X + τ(X))/2` and `J_1` the
/// derivative in the first argument only (a convolution's input gradient). Hence the value is
/// `W = σ(f(k, stop_grad(k)))`, and `2W − stop_grad(W)` (exactly `W` unless `|W|` overflows:
/// doubling and the Sterbenz subtraction are exact) carries the factor 2. First derivatives only:
/// a second derivative in `k` through this graph is wrong (no caller takes one; the Lipschitz
/// checks differentiate in the input). Forward + backward of a 256-channel 3×3 kernel:
/// ~85 → ~48 ms (PyTorch prototype, same libtorch).
pub fn autocorrelation(kernel: &Tensor) -> Tensor {
    let size = kernel.size();
    let (c, kh, kw) = (size[0], size[2], size[3]);
    let partner = kernel.detach();
    let one_sided = if kh == 1 && kw == 1 {
        kernel.flatten(1, 3).matmul(&partner.flatten(1, 3).transpose(0, 1)).view([c, c, 1, 1])
    } else {
        kernel.conv2d(&partner, None::<Tensor>, [1, 1], [kh - 1, kw - 1], [1, 1], 1)
    };
    let swapped = one_sided.transpose(0, 1).flip([2i64, 3].as_slice());
    let symmetric = (&one_sided + swapped) * 0.5;
    if !kernel.requires_grad() {
        return symmetric;
    }
    &symmetric * 2.0 - symmetric.detach()
}

/// The kernel of "convolve with `first`, then with `second`" (stride 1, no bias): for
/// `first [c2, c1, k, k]` and `second [c3, c2, l, l]`, `[c3, c1, k+l−1, k+l−1]` with
/// `K[o, i, t] = Σ_{c, a+b=t} second[o, c, b]·first[c, i, a]` (cross-correlation offsets add). On
/// the torus, [`conv2d_circular`] by `K` equals the two circular convolutions in turn when `k`, `l`
/// and `k+l−1` are odd (the centres add); for even sizes it is the same up to a circular shift.
/// Computed as one conv2d of `first`'s transpose by the flipped `second` (the block convolution
/// of Boissin et al., ICML 2025, `fast_matrix_conv`).
pub fn compose_kernels(first: &Tensor, second: &Tensor) -> Tensor {
    let l = second.size()[3];
    first
        .transpose(0, 1)
        .conv2d(&second.flip([2i64, 3].as_slice()), None::<Tensor>, [1, 1], [l - 1, l - 1], [1, 1], 1)
        .transpose(0, 1)
}

/// `conv2d` with zero "same" padding (`k/2` on every side, odd `k`), used by CPL and SLL.
pub fn conv2d_zero(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let half = weight.size()[3] / 2;
    x.conv2d(weight, bias, [1, 1], [half, half], [1, 1], 1)
}

/// The exact adjoint of [`conv2d_zero`] without bias: `conv_transpose2d` with padding `(k−1)/2`.
pub fn conv2d_zero_adjoint(y: &Tensor, weight: &Tensor) -> Tensor {
    let half = (weight.size()[3] - 1) / 2;
    y.conv_transpose2d(weight, None::<Tensor>, [1, 1], [half, half], [0, 0], 1, [1, 1])
}

/// Test helpers shared by the layer tests of this crate (one copy, used by every layer).
#[cfg(test)]
pub(crate) mod testing {
    use tch::{Kind, Tensor};

    /// Exact singular values of the circular convolution with kernel `w (co, ci, k, k)` on an
    /// `n × n` torus (Sedghi et al. 2019; reference-protocol §1.7): FFT2 of the zero-padded kernel,
    /// then an SVD per frequency. Cross-correlation and kernel centring only change phases, which
    /// leave the singular values unchanged. Computed in f64; returns a flat vector.
    pub fn circular_conv_singular_values(w: &Tensor, n: i64) -> Vec<f64> {
        let w = w.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let spectrum = w.fft_fft2([n, n].as_slice(), [-2i64, -1].as_slice(), "backward");
        let per_freq = spectrum.permute([2, 3, 0, 1]);
        let sv = svdvals(&per_freq);
        Vec::<f64>::try_from(sv.flatten(0, -1)).expect("singular values are a real f64 tensor")
    }

    /// The dense matrix `[out_dim, c·n·n]` of a map on `[1, c, n, n]` inputs, from its impulse
    /// response: column `j` is `f(e_j) − f(0)` for every one-hot `e_j` of the basis (so a bias does
    /// not count). Only meaningful for affine `f` (linear layers, or a Jacobian at a point).
    /// Returned in f64 for the singular value computation.
    pub fn impulse_matrix(f: &dyn Fn(&Tensor) -> Tensor, c: i64, n: i64, device: tch::Device) -> Tensor {
        let dim = c * n * n;
        let basis = Tensor::eye(dim, (Kind::Float, device)).view([dim, c, n, n]);
        let zero = Tensor::zeros([1, c, n, n], (Kind::Float, device));
        (f(&basis) - f(&zero)).reshape([dim, -1]).transpose(0, 1).to_kind(Kind::Double)
    }

    /// Exact singular values (f64 SVD) of [`impulse_matrix`]`(f, c, n)`, descending.
    pub fn impulse_singular_values(f: &dyn Fn(&Tensor) -> Tensor, c: i64, n: i64, device: tch::Device) -> Vec<f64> {
        let sv = svdvals(&impulse_matrix(f, c, n, device));
        Vec::<f64>::try_from(sv.to_device(tch::Device::Cpu)).expect("singular values are a real f64 tensor")
    }

    /// Singular values of every matrix in `a (..., m, n)`, descending (LAPACK SVD, independent of
    /// the iterations under test). tch's `linalg_svdvals` cannot pass "no driver" on CPU, so this
    /// goes through `svd` without vectors.
    pub fn svdvals(a: &Tensor) -> Tensor {
        a.svd(true, false).1
    }

    /// Full Jacobian `[out_dim, in_dim]` of `f` at `x0` by one backward pass per output coordinate.
    pub fn jacobian(f: &dyn Fn(&Tensor) -> Tensor, x0: &Tensor) -> Tensor {
        let x = x0.detach().set_requires_grad(true);
        let y = f(&x).flatten(0, -1);
        let rows: Vec<Tensor> = (0..y.size()[0])
            .map(|i| {
                let g = Tensor::run_backward(&[y.get(i)], &[&x], true, false);
                g[0].flatten(0, -1).to_kind(Kind::Double)
            })
            .collect();
        Tensor::stack(&rows, 0)
    }

    /// Deterministic N(0, 1) samples of shape `dims` (splitmix64 + Box–Muller), f64 on the CPU.
    /// Tests run in parallel threads that share torch's global generator, so `manual_seed` does
    /// not make a test's draws reproducible; data whose exact values matter come from here.
    pub fn fixed_randn(dims: &[i64], seed: u64) -> Tensor {
        let n: i64 = dims.iter().product();
        let mut rng = crate::stats::SplitMix64::new(seed);
        // In (0, 1): never 0, so the logarithm below is finite.
        let mut next_unit = || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let values: Vec<f64> = (0..n)
            .map(|_| {
                let (a, b) = (next_unit(), next_unit());
                (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
            })
            .collect();
        Tensor::from_slice(&values).view(dims)
    }

    /// Largest absolute difference between two tensors, in f64.
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::testing::max_abs_diff;
    use super::*;
    use tch::Device;

    /// f64 arithmetic on well-conditioned small matrices: agreement to ~1e-10 is expected; 1e-8
    /// leaves room for the iteration's own convergence error.
    const F64_TOL: f64 = 1e-8;

    /// [`autocorrelation`] (a GEMM for 1×1 kernels, a one-sided convolution with a symmetrised,
    /// doubled gradient otherwise) against the autograd of the correlation of the kernel with
    /// itself by definition (a convolution differentiated in both its input and its weight),
    /// values and gradients, in float64, for wide, tall and square kernels of 1×1, 2×2 and 3×3.
    /// The loss is not symmetric in `A`, so a gradient without the symmetrisation, or without
    /// its factor 2, fails here.
    #[test]
    fn autocorrelation_matches_the_correlation_by_definition_with_gradients() {
        for (c, d, k) in [(5, 3, 1), (3, 5, 1), (4, 4, 1), (5, 3, 3), (3, 5, 3), (4, 4, 3), (4, 3, 2)] {
            let by_definition = |w: &Tensor| w.conv2d(w, None::<Tensor>, [1, 1], [k - 1, k - 1], [1, 1], 1);
            let kernel = testing::fixed_randn(&[c, d, k, k], 15);
            let r = testing::fixed_randn(&[c, c, 2 * k - 1, 2 * k - 1], 16);
            let value_and_grad = |f: &dyn Fn(&Tensor) -> Tensor| {
                let w = kernel.detach().set_requires_grad(true);
                let a = f(&w);
                // abs: the callers' nonlinearity, so that signs matter in the gradient.
                (a.abs() * &r).sum(Kind::Double).backward();
                (a.detach(), w.grad())
            };
            let (a, g) = value_and_grad(&autocorrelation);
            let (a_ref, g_ref) = value_and_grad(&by_definition);
            assert_eq!(a.size(), vec![c, c, 2 * k - 1, 2 * k - 1]);
            assert!(max_abs_diff(&a, &a_ref) < 1e-12, "({c},{d},{k}) values");
            assert!(max_abs_diff(&g, &g_ref) < 1e-12, "({c},{d},{k}) gradients: {}", max_abs_diff(&g, &g_ref));
            assert!(g.abs().max().double_value(&[]) > 1e-3, "a vanishing gradient proves nothing");
            // Without a gradient, the same value and no autograd graph.
            let plain = autocorrelation(&kernel.detach());
            assert!(!plain.requires_grad());
            assert_eq!(max_abs_diff(&plain, &a), 0.0, "({c},{d},{k}) value without gradient");
        }
    }

    /// A matrix `U diag(s) Vᵀ` with prescribed singular values (U, V from QR of Gaussians), f64.
    fn with_singular_values(m: i64, n: i64, s: &[f64]) -> (Tensor, Tensor, Tensor) {
        let (u, _) = Tensor::linalg_qr(&testing::fixed_randn(&[m, n], 100 + m as u64), "reduced");
        let (v, _) = Tensor::linalg_qr(&testing::fixed_randn(&[n, n], 200 + n as u64), "reduced");
        let a = u.matmul(&Tensor::from_slice(s).diag_embed(0, -2, -1)).matmul(&v.transpose(0, 1));
        (a, u, v)
    }

    #[test]
    fn power_iteration_matches_svdvals_batched() {
        let a = testing::fixed_randn(&[3, 6, 4], 1);
        let est = power_iteration(&a, 500, None);
        assert_eq!(est.sigma.size(), vec![3]);
        assert_eq!(est.u.size(), vec![3, 6, 1]);
        assert_eq!(est.v.size(), vec![3, 4, 1]);
        let sv = testing::svdvals(&a);
        // Precondition of the tolerance: σ₂/σ₁ < 0.97 in every matrix, so 500 iterations converge
        // far below F64_TOL (the data are fixed, so this holds on every run).
        assert!((sv.select(1, 1) / sv.select(1, 0)).max().double_value(&[]) < 0.97);
        let exact = sv.select(1, 0);
        assert!(max_abs_diff(&est.sigma, &exact) < F64_TOL, "{:?} vs {:?}", est.sigma, exact);
    }

    #[test]
    fn power_iteration_known_spectrum_and_persistent_start() {
        // σ₂/σ₁ = 1/2: error shrinks by 4 per iteration, 40 iterations give < 1e-20 relative.
        let (a, _, _) = with_singular_values(5, 4, &[3.0, 1.5, 1.0, 0.5]);
        let first = power_iteration(&a, 40, None);
        assert!((first.sigma.double_value(&[]) - 3.0).abs() < F64_TOL);
        // Restarting from the converged u needs a single iteration.
        let again = power_iteration(&a, 1, Some(&first.u));
        assert!((again.sigma.double_value(&[]) - 3.0).abs() < F64_TOL);
    }

    #[test]
    fn bjorck_gives_the_polar_factor() {
        // Singular values in [0.3, 2.5]: power-iteration scaling maps them into (0.12, 1], where
        // 30 iterations converge to the polar factor U Vᵀ (the closest orthonormal matrix).
        let (a, u, v) = with_singular_values(7, 4, &[2.5, 1.7, 0.9, 0.3]);
        let polar = u.matmul(&v.transpose(0, 1));
        let q = bjorck(&a, 30, BjorckScaling::PowerIteration);
        assert!(max_abs_diff(&q, &polar) < F64_TOL);
        let gram = q.transpose(0, 1).matmul(&q);
        assert!(max_abs_diff(&gram, &Tensor::eye(4, (Kind::Double, Device::Cpu))) < F64_TOL);
        // A wide matrix gets orthonormal rows.
        let wide = bjorck(&a.transpose(0, 1), 30, BjorckScaling::PowerIteration);
        assert!(max_abs_diff(&wide.matmul(&wide.transpose(0, 1)), &Tensor::eye(4, (Kind::Double, Device::Cpu))) < F64_TOL);
    }

    #[test]
    fn bjorck_one_step_by_hand() {
        // diag(0.5, 1): σ ↦ σ(1.5 − 0.5σ²) gives 0.6875 and 1.
        let w = Tensor::from_slice(&[0.5f64, 0.0, 0.0, 1.0]).view([2, 2]);
        let q = bjorck(&w, 1, BjorckScaling::None);
        let expected = Tensor::from_slice(&[0.6875f64, 0.0, 0.0, 1.0]).view([2, 2]);
        assert!(max_abs_diff(&q, &expected) < 1e-15);
    }

    #[test]
    fn orthogonal_init_has_orthonormal_rows_or_columns() {
        tch::manual_seed(4);
        let w = orthogonal(&[3, 2, 2, 2], 2.0, Device::Cpu).view([3, 8]).to_kind(Kind::Double);
        // 3 rows × 8 cols: rows orthonormal, scaled by the gain 2.
        let gram = w.matmul(&w.transpose(0, 1));
        // f32 storage: 1e-5 covers rounding of unit-norm rows.
        assert!(max_abs_diff(&gram, &(Tensor::eye(3, (Kind::Double, Device::Cpu)) * 4.0)) < 1e-5);
    }

    #[test]
    fn dirac_is_the_identity_convolution() {
        let w = dirac(3, 2, 3, Device::Cpu);
        let x = Tensor::randn([1, 2, 5, 5], (Kind::Float, Device::Cpu));
        let y = conv2d_circular(&x, &w, None);
        assert!(max_abs_diff(&y.narrow(1, 0, 2), &x) == 0.0);
        assert!(y.narrow(1, 2, 1).abs().max().double_value(&[]) == 0.0);
    }

    #[test]
    fn zero_adjoint_is_the_adjoint() {
        let w = testing::fixed_randn(&[3, 3, 3, 3], 51);
        let x = testing::fixed_randn(&[1, 3, 5, 5], 52);
        let y = testing::fixed_randn(&[1, 3, 5, 5], 53);
        let lhs = (conv2d_zero(&x, &w, None) * &y).sum(Kind::Double).double_value(&[]);
        let rhs = (&x * conv2d_zero_adjoint(&y, &w)).sum(Kind::Double).double_value(&[]);
        assert!((lhs - rhs).abs() < F64_TOL * lhs.abs().max(1.0));
    }

    #[test]
    fn fft_oracle_agrees_with_impulse_response() {
        // Checks the test oracle itself on an unconstrained kernel whose norm is far from 1.
        let w = testing::fixed_randn(&[2, 2, 3, 3], 6).to_kind(Kind::Float);
        let mut fft = testing::circular_conv_singular_values(&w, 4);
        let mut imp = testing::impulse_singular_values(&|x| conv2d_circular(x, &w, None), 2, 4, Device::Cpu);
        fft.sort_by(|a, b| b.total_cmp(a));
        imp.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(fft.len(), imp.len());
        // f32 convolution: relative 1e-5 on values of order 1–10.
        for (a, b) in fft.iter().zip(&imp) {
            assert!((a - b).abs() < 1e-5 * a.max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn composed_kernel_equals_two_circular_convolutions_in_turn() {
        use super::testing::fixed_randn;
        let first = fixed_randn(&[3, 2, 3, 3], 31);
        let second = fixed_randn(&[4, 3, 3, 3], 32);
        let x = fixed_randn(&[2, 2, 6, 6], 33);
        let k = compose_kernels(&first, &second);
        assert_eq!(k.size(), vec![4, 2, 5, 5]);
        let twice = conv2d_circular(&conv2d_circular(&x, &first, None), &second, None);
        assert!(max_abs_diff(&conv2d_circular(&x, &k, None), &twice) < 1e-10);
        // A 1×1 first kernel is a matrix product: K[:, :, t] = second[:, :, t]·first.
        let m = fixed_randn(&[3, 2, 1, 1], 34);
        let k = compose_kernels(&m, &second);
        let expected = second.permute([2, 3, 0, 1]).matmul(&m.view([3, 2])).permute([2, 3, 0, 1]);
        assert!(max_abs_diff(&k, &expected) < 1e-12);
    }
}
