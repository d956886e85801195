//! SGD with momentum and coupled weight decay, PyTorch semantics (reference-protocol §6.2),
//! implemented on the VarStore so that the momentum buffers can be checkpointed.
//!
//! tch's `nn::Sgd` wraps libtorch's C++ optimizer, whose state (the momentum buffers) tch cannot
//! save or restore; an interrupted run resumed with fresh buffers would not reproduce the
//! uninterrupted one. Here the buffers are plain tensors keyed by parameter name, saved with the
//! checkpoint. For every trainable parameter `p` with a gradient:
//!
//! 1. `g ← ∇p + wd·p` (coupled L2 on *every* trainable parameter, biases included);
//! 2. `buf ← g` at the parameter's first step, otherwise `buf ← μ·buf + g` (dampening 0);
//! 3. `p ← p − lr·buf` (no Nesterov: R1).
//!
//! Parameters without `requires_grad` (power-iteration state, buffers) are never touched.

use anyhow::Context;
use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};

/// Name prefix of the momentum buffers inside a checkpoint file.
pub const STATE_PREFIX: &str = "sgd_momentum/";

#[derive(Debug)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// The trainable variables of the store, sorted by name (a fixed update order).
    params: Vec<(String, Tensor)>,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// An optimizer over the variables of `vs` that require a gradient. Build the network first:
    /// variables added to `vs` later are not optimised.
    pub fn new(vs: &nn::VarStore, lr: f64, momentum: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Sgd { lr, momentum, weight_decay, params, buffers: BTreeMap::new() }
    }

    /// Sets every trainable gradient to zero (PyTorch's `zero_grad(set_to_none=False)`).
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// One update of every trainable parameter that has a gradient: one fused libtorch call per
    /// parameter kind (`at::_fused_sgd_` through `src/shim/sgd.cpp`) for the parameters that
    /// already have a momentum buffer, and one for those at their first step. No host
    /// synchronisation. Falls back to [`Sgd::step_reference`] without the shim, and in the one case
    /// the fused kernel does not cover: momentum 0 while buffers exist (it would leave them stale).
    pub fn step(&mut self) -> anyhow::Result<()> {
        if !cfg!(lipctl_shim) {
            return self.step_reference();
        }
        let _guard = tch::no_grad_guard();
        // (parameter index, gradient) of the parameters with a gradient, split by first step.
        let mut with_buf: Vec<(usize, Tensor)> = Vec::new();
        let mut first: Vec<(usize, Tensor)> = Vec::new();
        for (i, (name, p)) in self.params.iter().enumerate() {
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            // The fused CPU kernel walks raw memory: it wants dense gradients (they nearly always are).
            let grad = if grad.is_contiguous() { grad } else { grad.f_contiguous()? };
            if self.buffers.contains_key(name.as_str()) {
                with_buf.push((i, grad));
            } else {
                first.push((i, grad));
            }
        }
        if self.momentum == 0.0 && !with_buf.is_empty() {
            return self.step_reference();
        }
        if self.momentum == 0.0 {
            // No buffers are created or read: p ← p − lr·(∇p + wd·p).
            return self.fused(&first, false);
        }
        for (i, _) in &first {
            let (name, p) = &self.params[*i];
            let buf = p.f_empty_like()?;
            self.buffers.insert(name.clone(), buf);
        }
        self.fused(&with_buf, false)?;
        self.fused(&first, true)
    }

    /// One `_fused_sgd_` call per parameter kind over `group` (indices into `params`).
    fn fused(&self, group: &[(usize, Tensor)], first_step: bool) -> anyhow::Result<()> {
        let mut kinds: Vec<(Kind, Device)> = Vec::new();
        for (i, _) in group {
            let p = &self.params[*i].1;
            if !kinds.contains(&(p.kind(), p.device())) {
                kinds.push((p.kind(), p.device()));
            }
        }
        for key in kinds {
            let members: Vec<&(usize, Tensor)> =
                group.iter().filter(|(i, _)| (self.params[*i].1.kind(), self.params[*i].1.device()) == key).collect();
            let params: Vec<*const torch_sys::C_tensor> = members.iter().map(|(i, _)| self.params[*i].1.as_ptr()).collect();
            let grads: Vec<*const torch_sys::C_tensor> = members.iter().map(|(_, g)| g.as_ptr()).collect();
            let bufs: Vec<*const torch_sys::C_tensor> = if self.momentum != 0.0 {
                members
                    .iter()
                    .map(|(i, _)| self.buffers.get(self.params[*i].0.as_str()).map(|b| b.as_ptr()))
                    .collect::<Option<_>>()
                    .context("a parameter lacks its momentum buffer")?
            } else {
                Vec::new()
            };
            shim::fused_sgd(&params, &grads, &bufs, self.weight_decay, self.momentum, self.lr, first_step).with_context(|| {
                // The shim names a parameter by its index in this call.
                let names: Vec<&str> = members.iter().map(|(i, _)| self.params[*i].0.as_str()).collect();
                format!("the call's parameters, by index: {}", names.join(", "))
            })?;
        }
        Ok(())
    }

    /// The per-parameter update (≈6 kernels and 3 temporaries per parameter): the definition the
    /// fused [`Sgd::step`] is tested against, and its fallback.
    pub fn step_reference(&mut self) -> anyhow::Result<()> {
        let _guard = tch::no_grad_guard();
        for (name, p) in self.params.iter_mut() {
            let name = name.as_str();
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            let d_p = if self.weight_decay != 0.0 { grad.f_add(&p.f_mul_scalar(self.weight_decay)?)? } else { grad };
            let update = match self.buffers.get_mut(name) {
                Some(buf) => {
                    let _ = buf.f_mul_scalar_(self.momentum)?;
                    let _ = buf.f_add_(&d_p)?;
                    buf.shallow_clone()
                }
                None if self.momentum != 0.0 => {
                    let buf = d_p.f_detach_copy()?;
                    self.buffers.insert(name.to_string(), buf.shallow_clone());
                    buf
                }
                None => d_p,
            };
            let _ = p.f_sub_(&(update * self.lr)).with_context(|| format!("SGD update of {name}"))?;
        }
        Ok(())
    }

    /// The momentum buffers as named tensors (`sgd_momentum/<parameter>`), for the checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers.iter().map(|(n, t)| (format!("{STATE_PREFIX}{n}"), t.shallow_clone())).collect()
    }

    /// Restores the buffers from checkpoint tensors; names without the prefix are ignored.
    /// Buffers of parameters this optimizer does not have are an error (another model's file).
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> anyhow::Result<()> {
        self.buffers.clear();
        for (name, t) in named {
            if let Some(param) = name.strip_prefix(STATE_PREFIX) {
                let (_, p) = self
                    .params
                    .iter()
                    .find(|(n, _)| n == param)
                    .with_context(|| format!("checkpoint has momentum for unknown parameter {param:?}"))?;
                anyhow::ensure!(
                    p.size() == t.size(),
                    "checkpoint momentum for {param} has shape {:?}, the model {:?}",
                    t.size(),
                    p.size()
                );
                self.buffers.insert(param.to_string(), t.f_to_device(p.device())?.f_to_kind(p.kind())?);
            }
        }
        Ok(())
    }
}

/// The C entry point of `src/shim/sgd.cpp`.
mod shim {
    #[cfg(lipctl_shim)]
    extern "C" {
        fn lipctl_fused_sgd(
            params: *const *const torch_sys::C_tensor,
            grads: *const *const torch_sys::C_tensor,
            bufs: *const *const torch_sys::C_tensor,
            n: std::os::raw::c_long,
            weight_decay: f64,
            momentum: f64,
            lr: f64,
            first_step: std::os::raw::c_int,
            err: *mut std::os::raw::c_char,
            err_len: std::os::raw::c_long,
        ) -> std::os::raw::c_int;
    }

    /// `at::_fused_sgd_` over the tensors behind the handles (all of one kind and device; `bufs`
    /// as long as `params`, or empty when `momentum` is 0).
    #[cfg(lipctl_shim)]
    pub fn fused_sgd(
        params: &[*const torch_sys::C_tensor],
        grads: &[*const torch_sys::C_tensor],
        bufs: &[*const torch_sys::C_tensor],
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        first_step: bool,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(params.len() == grads.len(), "fused SGD: {} parameters, {} gradients", params.len(), grads.len());
        anyhow::ensure!(momentum == 0.0 || bufs.len() == params.len(), "fused SGD: {} buffers for {} parameters", bufs.len(), params.len());
        if params.is_empty() {
            return Ok(());
        }
        let mut err = crate::failure::ShimError::new();
        let (err_ptr, err_len) = err.as_arg();
        // SAFETY: every pointer is a live tch handle (an `at::Tensor*`) borrowed for the call; the
        // shim catches every C++ exception and writes at most `err_len` bytes into `err`.
        let rc = unsafe {
            lipctl_fused_sgd(
                params.as_ptr(),
                grads.as_ptr(),
                if bufs.is_empty() { std::ptr::null() } else { bufs.as_ptr() },
                params.len() as std::os::raw::c_long,
                weight_decay,
                momentum,
                lr,
                first_step as std::os::raw::c_int,
                err_ptr,
                err_len,
            )
        };
        if rc != 0 {
            anyhow::bail!("fused SGD step failed: {}", err.message());
        }
        Ok(())
    }

    #[cfg(not(lipctl_shim))]
    pub fn fused_sgd(
        _params: &[*const torch_sys::C_tensor],
        _grads: &[*const torch_sys::C_tensor],
        _bufs: &[*const torch_sys::C_tensor],
        _weight_decay: f64,
        _momentum: f64,
        _lr: f64,
        _first_step: bool,
    ) -> anyhow::Result<()> {
        anyhow::bail!("this lipctl was built without the C++ shim (no fused SGD)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ortho::testing::fixed_randn;

    /// Two f64 updates of small numbers: a few ulps.
    const TOL: f64 = 1e-14;

    #[test]
    fn two_steps_by_hand() {
        // loss = a·p²/2 → ∇ = a·p. lr 0.1, μ 0.9, wd 0.01, a = 2, p0 = 1.
        // A trainable f64 parameter, so the hand computation below is exact to f64 rounding.
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root().add("p", Tensor::from_slice(&[1.0f64]), true);
        let _frozen = vs.root().f_zeros_no_train("state", &[1]).unwrap();
        let mut opt = Sgd::new(&vs, 0.1, 0.9, 0.01);
        let (a, lr, mu, wd) = (2.0, 0.1, 0.9, 0.01);
        let mut p_hand = 1.0f64;
        let mut buf = 0.0f64;
        for step in 0..2 {
            opt.zero_grad();
            (&p * &p * (a / 2.0)).sum(Kind::Double).backward();
            opt.step().unwrap();
            let g = a * p_hand + wd * p_hand;
            buf = if step == 0 { g } else { mu * buf + g };
            p_hand -= lr * buf;
            let got = p.double_value(&[0]);
            assert!((got - p_hand).abs() < TOL, "step {step}: {got} vs {p_hand}");
        }
        // After step 1: p = 1 − 0.1·2.01 = 0.799; buffer round-trips through the state.
        assert!((p_hand - (0.799 - 0.1 * (0.9 * 2.01 + 2.01 * 0.799))).abs() < TOL);
        let state = opt.state();
        assert_eq!(state.len(), 1, "the non-trainable state gets no buffer");
        let mut fresh = Sgd::new(&vs, 0.1, 0.9, 0.01);
        fresh.load_state(&state).unwrap();
        assert_eq!(fresh.buffers["p"].double_value(&[0]), buf);
    }

    /// A small float32 network-like store: two weights, a bias, a frozen state and a parameter
    /// that gets no gradient.
    /// The same store for the same seed, drawn without torch's global generator: concurrent
    /// tests reseed and draw from it between a `manual_seed` and the draws (measured: 3 runs in
    /// 25 built two different stores).
    fn store(seed: u64) -> (nn::VarStore, Vec<Tensor>) {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let var = |name: &str, dims: &[i64], k: u64| root.var_copy(name, &fixed_randn(dims, 4 * seed + k).to_kind(Kind::Float));
        let w1 = var("w1", &[8, 5], 0);
        let w2 = var("w2", &[3, 8], 1);
        let b = var("b", &[3], 2);
        let _unused = var("unused", &[4], 3);
        let _frozen = root.f_zeros_no_train("state", &[2]).unwrap();
        (vs, vec![w1, w2, b])
    }

    fn loss(t: &[Tensor], x: &Tensor) -> Tensor {
        (x.matmul(&t[0].tr()).tanh().matmul(&t[1].tr()) + &t[2]).square().mean(Kind::Float)
    }

    /// 20 steps with weight decay and a varying momentum (0 at the start, as OneCycle's first
    /// epochs never are, then switched on: buffers created mid-run) and learning rate: the fused
    /// step equals the per-parameter definition to float rounding, and moves the parameters.
    #[test]
    fn fused_step_equals_the_reference_over_20_steps() {
        assert!(cfg!(lipctl_shim), "built without the C++ shim: the fused path would not be under test");
        let (vs_a, pa) = store(3);
        let (vs_b, pb) = store(3);
        let mut fused = Sgd::new(&vs_a, 0.0, 0.0, 5e-3);
        let mut reference = Sgd::new(&vs_b, 0.0, 0.0, 5e-3);
        let start = pa[0].copy();
        for step in 0..20 {
            let x = Tensor::randn([16, 5], (Kind::Float, Device::Cpu));
            let (lr, mu) = (0.05 + 0.01 * step as f64, if step < 2 { 0.0 } else { 0.85 + 0.005 * step as f64 });
            for (opt, params) in [(&mut fused, &pa), (&mut reference, &pb)] {
                opt.lr = lr;
                opt.momentum = mu;
                opt.zero_grad();
                loss(params, &x).backward();
            }
            fused.step().unwrap();
            reference.step_reference().unwrap();
            for (a, b) in pa.iter().zip(&pb) {
                let scale = b.abs().max().double_value(&[]).max(1.0);
                let diff = (a - b).abs().max().double_value(&[]);
                // float32: a few ulps per step, accumulated over 20 steps.
                assert!(diff <= 2e-6 * scale, "step {step}: fused and reference differ by {diff}");
            }
        }
        assert!((&pa[0] - &start).abs().max().double_value(&[]) > 1e-3, "the parameters did not move");
        assert_eq!(fused.state().len(), 3, "one buffer per trainable parameter with a gradient");
        for ((na, ta), (nb, tb)) in fused.state().iter().zip(reference.state().iter()) {
            assert_eq!(na, nb);
            assert!((ta - tb).abs().max().double_value(&[]) <= 2e-6 * tb.abs().max().double_value(&[]).max(1.0));
        }
        assert!(vs_a.variables()["unused"].equal(&vs_b.variables()["unused"]));
    }

    /// The comparison above can fail: a different weight decay is visible after one step.
    #[test]
    fn comparison_detects_a_different_update() {
        let (vs_a, pa) = store(4);
        let (vs_b, pb) = store(4);
        let mut fused = Sgd::new(&vs_a, 0.1, 0.9, 5e-3);
        let mut other = Sgd::new(&vs_b, 0.1, 0.9, 6e-3);
        let x = Tensor::randn([16, 5], (Kind::Float, Device::Cpu));
        for (opt, params) in [(&mut fused, &pa), (&mut other, &pb)] {
            opt.zero_grad();
            loss(params, &x).backward();
        }
        fused.step().unwrap();
        other.step_reference().unwrap();
        let diff = (&pa[0] - &pb[0]).abs().max().double_value(&[]);
        assert!(diff > 2e-6, "a 20 % weight-decay change went unnoticed ({diff})");
    }

    /// A gradient or momentum buffer whose shape or layout is not its parameter's is refused
    /// before the kernel runs (libtorch's CPU kernel would walk the parameter's length through
    /// the other tensor's memory), and the parameter is left as it was.
    #[cfg(lipctl_shim)]
    #[test]
    fn the_shim_refuses_a_gradient_or_buffer_of_another_shape() {
        let p = Tensor::ones([4], (Kind::Float, Device::Cpu));
        let (g, b) = (Tensor::ones([4], (Kind::Float, Device::Cpu)), Tensor::ones([4], (Kind::Float, Device::Cpu)));
        let short = Tensor::ones([2], (Kind::Float, Device::Cpu));
        // Same shape, another layout: the kernel would pair the wrong elements.
        let strided = Tensor::ones([2, 4], (Kind::Float, Device::Cpu)).select(1, 0);
        let (p2, g2) = (Tensor::ones([2], (Kind::Float, Device::Cpu)), Tensor::ones([2], (Kind::Float, Device::Cpu)));
        let err = shim::fused_sgd(&[p2.as_ptr()], &[g2.as_ptr()], &[strided.as_ptr()], 0.0, 0.9, 0.1, false).unwrap_err();
        assert!(format!("{err:#}").contains("its momentum buffer Float[2] on cpu (not contiguous)"), "{err:#}");
        for (grad, buf, what) in [(&short, &b, "its gradient"), (&g, &short, "its momentum buffer")] {
            let err = shim::fused_sgd(&[p.as_ptr()], &[grad.as_ptr()], &[buf.as_ptr()], 0.0, 0.9, 0.1, false).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("parameter 0 is Float[4]") && msg.contains(&format!("{what} Float[2]")), "{msg}");
            assert!(p.equal(&Tensor::ones([4], (Kind::Float, Device::Cpu))), "the parameter changed: {p:?}");
        }
        // The same call with matching shapes goes through: p ← 1 − 0.1·(0.9·1 + 1).
        shim::fused_sgd(&[p.as_ptr()], &[g.as_ptr()], &[b.as_ptr()], 0.0, 0.9, 0.1, false).unwrap();
        assert!((&p - 0.81).abs().max().double_value(&[]) < 1e-6, "{p:?}");
    }

    /// A libtorch error inside the shim comes back as an error with libtorch's message (through
    /// `src/shim/error.h` and [`crate::failure::ShimError`]), not as an abort or an empty message.
    #[cfg(lipctl_shim)]
    #[test]
    fn a_libtorch_error_in_the_shim_is_reported_with_its_message() {
        let p = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let g = Tensor::zeros([3], (Kind::Double, Device::Cpu)); // a gradient of another kind
        let b = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let err = shim::fused_sgd(&[p.as_ptr()], &[g.as_ptr()], &[b.as_ptr()], 0.0, 0.9, 0.1, false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("fused SGD step failed: "), "{msg}");
        assert!(msg.len() > "fused SGD step failed: ".len() + 10, "no message from libtorch: {msg}");
        assert!(msg.len() < "fused SGD step failed: ".len() + crate::failure::ShimError::LEN, "{msg}");
    }
}
