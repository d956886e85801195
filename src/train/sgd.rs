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
use tch::{nn, Tensor};

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

    /// One update of every trainable parameter that has a gradient.
    pub fn step(&mut self) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

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
}
