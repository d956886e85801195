//! The layer kernels of the C++ shim (`src/shim/`): custom autograd functions for what libtorch's
//! composed ops run slower, each used only where it applies (the CPU, with autograd recording) and
//! otherwise left to the composed path by returning `None`. In a build without the shim every
//! entry point answers "not applicable".

use std::os::raw::{c_char, c_int, c_long};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

#[cfg(lipctl_shim)]
extern "C" {
    fn lipctl_max_min(x: *const C_tensor, out: *mut *mut C_tensor, err: *mut c_char, err_len: c_long) -> c_int;
    fn lipctl_circular_pad(x: *const C_tensor, p: c_long, out: *mut *mut C_tensor, err: *mut c_char, err_len: c_long) -> c_int;
}

/// The entry points of a build without the shim: "not applicable" (1).
#[cfg(not(lipctl_shim))]
unsafe fn lipctl_max_min(_: *const C_tensor, _: *mut *mut C_tensor, _: *mut c_char, _: c_long) -> c_int {
    1
}
#[cfg(not(lipctl_shim))]
unsafe fn lipctl_circular_pad(_: *const C_tensor, _: c_long, _: *mut *mut C_tensor, _: *mut c_char, _: c_long) -> c_int {
    1
}

/// Runs one shim entry point that makes a new tensor: `Some` on success, `None` when it answers
/// "not applicable" (1).
///
/// # Panics
/// When the shim reports an error, with `what()` (only built then, off the hot path) and
/// libtorch's message, as tch's own ops do.
fn call(what: impl FnOnce() -> String, entry: impl FnOnce(*mut *mut C_tensor, *mut c_char, c_long) -> c_int) -> Option<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let mut err = crate::failure::ShimError::new();
    let (err_ptr, err_len) = err.as_arg();
    match entry(&mut out, err_ptr, err_len) {
        1 => None,
        // SAFETY: on success the shim stored in `out` a new `at::Tensor*` that nobody else owns.
        0 if !out.is_null() => Some(unsafe { Tensor::from_ptr(out) }),
        _ => panic!("{} failed: {}", what(), err.message()),
    }
}

/// The fused MaxMin of `x` (`src/shim/max_min.cpp`; even channel count), or `None` where it does
/// not apply: when autograd records nothing, off the CPU, kinds other than float32/float64, or a
/// build without the shim.
///
/// # Panics
/// When the shim reports an error, with its message, as tch's own ops do.
pub fn max_min(x: &Tensor) -> Option<Tensor> {
    if x.device() != Device::Cpu || !matches!(x.kind(), Kind::Float | Kind::Double) {
        return None;
    }
    // SAFETY: `x` is a live tch handle (an `at::Tensor*`) borrowed for the call; the shim catches
    // every C++ exception and writes at most `len` bytes into `err`.
    call(|| format!("MaxMin (fused CPU kernel) on {:?} {:?}", x.kind(), x.size()), |out, err, len| unsafe {
        lipctl_max_min(x.as_ptr(), out, err, len)
    })
}

/// Circular padding by `p` pixels on each side of the last two dimensions of `x [..., h, w]`
/// (`src/shim/circular_pad.cpp`: `at::pad`'s values, a one-pass backward), or `None` where it
/// does not apply: when autograd records nothing, off the CPU, or a build without the shim.
///
/// # Panics
/// When the shim reports an error (`p` not in `1..=min(h, w)`), with its message.
pub fn circular_pad(x: &Tensor, p: i64) -> Option<Tensor> {
    if x.device() != Device::Cpu {
        return None;
    }
    // SAFETY: as in `max_min`.
    call(|| format!("circular padding by {p} of {:?} {:?}", x.kind(), x.size()), |out, err, len| unsafe {
        lipctl_circular_pad(x.as_ptr(), p as c_long, out, err, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ortho::testing::{fixed_randn, max_abs_diff};

    /// The definition, by index arithmetic: `padded[.., I, J] = x[.., (I − p) mod h, (J − p) mod w]`.
    /// Its gradient is `index_select`'s (an index_add), independent of both padding paths.
    fn pad_by_index(x: &Tensor, p: i64) -> Tensor {
        let wrap = |n: i64| Tensor::from_slice(&(0..n + 2 * p).map(|i| (i - p).rem_euclid(n)).collect::<Vec<i64>>());
        let (h, w) = (x.size()[x.dim() - 2], x.size()[x.dim() - 1]);
        x.index_select(-2, &wrap(h)).index_select(-1, &wrap(w))
    }

    /// `pad`'s value, its gradient `∂⟨v, pad(x)⟩/∂x` as a function of `v`, and the gradient of
    /// that in `v` (`∂⟨u, gx⟩/∂v`, which is `pad(u)`: the fold's transpose), all in f64.
    fn value_grad_and_second(pad: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, v: &Tensor, u: &Tensor) -> (Tensor, Tensor, Tensor) {
        let x = x.detach().set_requires_grad(true);
        let v = v.detach().set_requires_grad(true);
        let y = pad(&x);
        let gx = Tensor::run_backward(&[(&y * &v).sum(Kind::Double)], &[&x], true, true).remove(0);
        let gv = Tensor::run_backward(&[(&gx * u).sum(Kind::Double)], &[&v], false, false).remove(0);
        (y.detach(), gx.detach(), gv)
    }

    /// The shim's padding equals the definition in value, gradient and second derivative, for
    /// square and non-square maps, p = 1, 2 and p = the full side; and `conv2d_circular` takes
    /// it while training. Checked to fail when the fold drops a strip (`fold_last`'s first add:
    /// "gradient differs") and when `Fold`'s backward pads with zeros ("second derivative").
    #[test]
    fn shim_circular_pad_matches_the_definition() {
        assert!(cfg!(lipctl_shim), "built without the C++ shim: the fused path would not be under test");
        let probe = Tensor::zeros([1, 1, 3, 3], (Kind::Float, Device::Cpu));
        assert!(circular_pad(&probe, 1).is_none(), "no autograd: the composed path");
        assert!(circular_pad(&probe.set_requires_grad(true), 1).is_some());
        let shim = |p: i64| move |x: &Tensor| circular_pad(x, p).expect("the shim applies");
        for (i, (dims, p)) in [(vec![2, 3, 5, 5], 1), (vec![1, 2, 4, 6], 2), (vec![2, 1, 3, 3], 3), (vec![3, 7, 4], 1)].into_iter().enumerate() {
            let mut padded = dims.clone();
            let r = padded.len();
            padded[r - 2] += 2 * p;
            padded[r - 1] += 2 * p;
            let seed = 10 * i as u64;
            let (x, v, u) = (fixed_randn(&dims, seed), fixed_randn(&padded, seed + 1), fixed_randn(&dims, seed + 2));
            let (y0, gx0, gv0) = value_grad_and_second(&|x| pad_by_index(x, p), &x, &v, &u);
            let (y1, gx1, gv1) = value_grad_and_second(&shim(p), &x, &v, &u);
            assert!(y1.equal(&y0), "{dims:?} p={p}: values differ");
            assert!(max_abs_diff(&gx1, &gx0) < 1e-12, "{dims:?} p={p}: gradient differs by {}", max_abs_diff(&gx1, &gx0));
            assert!(max_abs_diff(&gv1, &gv0) < 1e-12, "{dims:?} p={p}: second derivative differs by {}", max_abs_diff(&gv1, &gv0));
        }
        // float32, as training runs it: ATen's padding's values exactly.
        let x = fixed_randn(&[2, 4, 6, 6], 99).to_kind(Kind::Float).set_requires_grad(true);
        assert!(shim(1)(&x).equal(&x.detach().pad([1, 1, 1, 1], "circular", None)));
    }

    /// A bad padding is a panic with libtorch's message (as tch's own ops), not an abort.
    #[test]
    fn shim_circular_pad_reports_a_bad_width() {
        let x = Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let err = std::panic::catch_unwind(|| circular_pad(&x, 3)).expect_err("p > side must fail");
        let msg = crate::failure::panic_message(err.as_ref());
        assert!(msg.contains("circular padding by 3") && msg.contains("1 ≤ p ≤ h, w"), "{msg}");
    }
}
