//! Shared helpers of the integration tests (style guide, "Tests: properties checked against
//! independent math"): the exact operator matrix of a linear map by its impulse response, the exact
//! singular values of a circular convolution by the FFT formula (reference-protocol §1.7), a
//! `for_each_device` runner and the named tolerances. Written once; every test file uses these.
#![allow(dead_code)]

use tch::{Device, Kind, Tensor};

/// Float32 layers composed of a few hundred multiply-adds: relative rounding ~1e-6. A bound
/// `σ ≤ 1 + LIPSCHITZ_TOL` leaves two orders of magnitude of slack for rounding and none for a real
/// violation (a broken rescaling overshoots by percents). Design §6 and the orthogonium tests use
/// the same 1e-4.
pub const LIPSCHITZ_TOL: f64 = 1e-4;
/// Orthogonal layers preserve distances: `|‖f(x)−f(y)‖/‖x−y‖ − 1| ≤ ORTHO_TOL`; same budget as above.
pub const ORTHO_TOL: f64 = 1e-4;
/// `freeze()` must compute what `forward_t(x, false)` computes, possibly with a different but
/// equivalent op order (cached kernel, precomputed spectrum): f32 rounding only, relative to the
/// output's RMS.
pub const FROZEN_TOL: f64 = 1e-5;
/// The estimator in f32 against an f64 SVD: power iteration converges to ~1e-7 relative, f32
/// products add ~1e-6.
pub const ESTIMATOR_TOL: f64 = 1e-5;

/// CPU, plus CUDA device 0 when libtorch sees one. Every numerical test runs through this.
/// `LIPCTL_TEST_DEVICE` picks one instead: `cpu`, or `cuda`, which makes CUDA mandatory (the GPU
/// check, scripts/gpu-check.sh, must not pass by testing the CPU alone, which CI covers).
pub fn devices() -> Vec<Device> {
    let cuda = tch::Cuda::is_available();
    match std::env::var("LIPCTL_TEST_DEVICE").unwrap_or_default().as_str() {
        "" | "auto" => {
            let mut d = vec![Device::Cpu];
            if cuda {
                d.push(Device::Cuda(0));
            }
            d
        }
        "cpu" => vec![Device::Cpu],
        "cuda" => {
            assert!(cuda, "LIPCTL_TEST_DEVICE=cuda but libtorch sees no CUDA device");
            vec![Device::Cuda(0)]
        }
        other => panic!("LIPCTL_TEST_DEVICE={other:?}: use cpu, cuda or auto"),
    }
}

/// Runs `test` on every device of [`devices`], naming the device if it panics. The tests run in
/// full fp32 (lipctl's numerics policy, src/precision.rs): on a GPU, TF32's ~1e-3 relative error
/// would break tolerances of 1e-4.
pub fn for_each_device(mut test: impl FnMut(Device)) {
    let _fp32 = lipctl::precision::Fp32Guard::new().expect("libtorch's TF32 switches are readable");
    for device in devices() {
        eprintln!("-- device {device:?}");
        test(device);
    }
}

/// The matrix of an affine map `f` on `[1, c, n, n]` inputs, bias removed: column `j` is
/// `f(e_j) − f(0)` for the one-hot image `e_j` (C·H·W of them, fed as one batch), flattened.
/// Returned in f64, shape `[out_dim, c·n·n]`.
pub fn impulse_response(f: &dyn Fn(&Tensor) -> Tensor, c: i64, n: i64, device: Device) -> Tensor {
    let _g = tch::no_grad_guard();
    let dim = c * n * n;
    let basis = Tensor::eye(dim, (Kind::Float, device)).view([dim, c, n, n]);
    let zero = Tensor::zeros([1, c, n, n], (Kind::Float, device));
    let out = f(&basis).to_kind(Kind::Double).flatten(1, -1);
    let offset = f(&zero).to_kind(Kind::Double).flatten(1, -1);
    (out - offset).transpose(0, 1).to_device(Device::Cpu)
}

/// Singular values (descending) of a real or complex matrix or batch of matrices, in f64.
pub fn svdvals(m: &Tensor) -> Vec<f64> {
    // `linalg_svdvals` in tch always passes a `driver` string, which CPU libtorch rejects; the
    // older `svd` without U/V computes the same values.
    let (_, s, _) = m.to_device(Device::Cpu).svd(true, false);
    let s = s.to_kind(Kind::Double).flatten(0, -1);
    let mut v = Vec::<f64>::try_from(s).expect("svdvals are real");
    v.sort_by(|a, b| b.total_cmp(a));
    v
}

/// Exact singular values of the circularly padded ("same") convolution with kernel
/// `w [co, ci, k, k]` on an `n×n` torus (Sedghi et al. 2019; reference-protocol §1.7): the FFT2 of
/// the zero-padded kernel at each of the n² frequencies is a `co×ci` matrix, and the operator's
/// singular values are the union of theirs. Cross-correlation vs convolution and the centring
/// shift only conjugate or multiply by a unimodular phase, which leave singular values unchanged.
pub fn circular_conv_singular_values(w: &Tensor, n: i64) -> Vec<f64> {
    let w = w.to_device(Device::Cpu).to_kind(Kind::Double);
    let spectrum = w.fft_fft2([n, n].as_slice(), [-2i64, -1].as_slice(), "backward"); // [co, ci, n, n]
    svdvals(&spectrum.permute([2, 3, 0, 1]))
}

/// Circular "same" cross-correlation, written with plain tch ops (an unconstrained reference
/// convolution, independent of every layer in `src/nn/`).
pub fn circular_conv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let p = w.size()[2] / 2;
    let padded = if p > 0 { x.pad([p, p, p, p].as_slice(), "circular", None) } else { x.shallow_clone() };
    padded.conv2d(w, bias, [1, 1].as_slice(), [0, 0].as_slice(), [1, 1].as_slice(), 1)
}

/// Largest relative deviation `max |a−b| / rms(b)` (rms floored at 1e-12).
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let rms = b.square().mean(Kind::Double).sqrt().double_value(&[]).max(1e-12);
    (a - &b).abs().max().double_value(&[]) / rms
}

/// Per-sample L2 norms of `[B, ...]`, in f64.
pub fn sample_norms(t: &Tensor) -> Vec<f64> {
    let n = t.to_kind(Kind::Double).flatten(1, -1).norm_scalaropt_dim(2, [1i64].as_slice(), false);
    Vec::<f64>::try_from(n.to_device(Device::Cpu)).expect("norms are f64")
}
