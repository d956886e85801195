//! The authors' state-dict layout (berndprach/1LipschitzLayersCompared, commit 01e3f2a) mapped to
//! lipctl's checkpoint names, for `lipctl import --from-pytorch`.
//!
//! **Layout.** The network of the paper's training runs (`models/simplified_conv_net.py`,
//! `SimplifiedConvNet`) and the network of the `torch.hub` entry points (`lipnn/lip_conv_net.py`,
//! `LipConvNet`) are the same `nn.Sequential` with the same child names, so one mapping serves
//! both:
//!
//! | lipctl | authors |
//! |---|---|
//! | `first_conv.*` | `FirstConv.*` |
//! | `block{i}.conv{j}.*` | `Block{i}.{2(j−1)}.*` (odd indices are the MaxMin activations) |
//! | `head.*` | `ClassificationHead.0.*` (a 1×1 convolution), or `ClassificationHead.1.*` for the linear heads of Cayley (`CayleyLinear`) and BCOP (`BjorckLinear`) |
//!
//! Leaves keep their names, except the weights the authors wrap in a `torch.nn.utils.parametrize`
//! parametrisation (AOL's `AOLConv2DRescaling`, the `BjorckLinear` head of BCOP), which are stored
//! as `parametrizations.weight.original`, the raw weight lipctl calls `weight`.
//!
//! Checked for both: the committed fixtures (tests/import.rs) are the training runs' networks;
//! `scripts/make_import_fixtures.py --hub` makes the same fixtures from the hub's seven networks,
//! loaded as a hub user loads a release file, and the same test passes on them
//! (`LIPCTL_IMPORT_FIXTURES=DIR`; worst layer 4.2e-5 relative, Cayley). The hub's Cayley loading
//! hook is broken in the authors' code (`nn.Parameter(t, device=…)` is a TypeError in every
//! torch): lipctl reads such a file, their `load_state_dict` does not.
//!
//! **What differs between the two networks, and what is not supported.** Both end in an
//! `AdaptiveMaxPool2d(1)` that is the identity on the 1×1 map the last block leaves (lipctl omits
//! it) and hold no tensors. The `models/` tree of the repository names `BnBLinearBCOP` (weight
//! `ClassificationHead.1.weight`, 20 unscaled Björck iterations) as BCOP's head, but every released
//! BCOP run used `BjorckLinear` (their `dumped_setting.yml`), as the hub does; a state dict with the
//! `BnBLinearBCOP` head is refused (its head key is reported as unexpected). Kernel-1 (`_1x1`) and
//! Tiny ImageNet networks follow the same names.
//!
//! **Layer state outside the trained parameters.**
//! * Imported: CPL's power-iteration vector `u [1, C, n, n]` (a buffer the authors create at the first
//!   forward), SOC's `u1..u4`, `v1..v4` and `correction`, Cayley's `alpha` (the convolution's is
//!   created at the first forward; 0-d, and `[1]` for the head), BCOP's `mask`.
//! * Recomputed: SOC's training-forward counter (lipctl's `step`; the authors keep a plain
//!   attribute that is not saved and restarts at 0 when a model is rebuilt, so lipctl sets 0);
//!   every cached transform (BCOP's kernel, Cayley's and LOT's Fourier weights, CPL's and SLL's
//!   rescalings, the Björck head) is recomputed from the imported tensors by `freeze`, as the
//!   authors' eval mode recomputes it after loading. BCOP's Björck power-iteration start vector is
//!   drawn afresh in both codes (it is not state).

use super::Method;
use anyhow::bail;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// Where one lipctl tensor comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The authors' state-dict key.
    Key(String),
    /// Not in the authors' state dict; set as the text says.
    Recomputed(&'static str),
}

/// What SOC's `step` is set to, in words (it is not saved by the authors).
pub const SOC_STEP_NOTE: &str = "SOC's training-forward counter (not saved by the authors' code): set to 0";

/// The authors' name of lipctl tensor `name` (`first_conv.weight`, `block2.conv5.kernel`,
/// `head.alpha`, …) in a `method` network. Errors: a name that is not of lipctl's ConvNet.
pub fn source_of(method: Method, name: &str) -> anyhow::Result<Source> {
    let (module, leaf) = name.rsplit_once('.').ok_or_else(|| anyhow::anyhow!("unexpected lipctl tensor name {name:?}"))?;
    if method == Method::Soc && leaf == "step" {
        return Ok(Source::Recomputed(SOC_STEP_NOTE));
    }
    let prefix = match module.split_once('.') {
        None if module == "first_conv" => "FirstConv".to_string(),
        None if module == "head" => match method {
            Method::Bcop | Method::Cayley => "ClassificationHead.1".to_string(),
            _ => "ClassificationHead.0".to_string(),
        },
        Some((block, conv)) => {
            let i: u32 = block.strip_prefix("block").and_then(|s| s.parse().ok()).unwrap_or(0);
            let j: u32 = conv.strip_prefix("conv").and_then(|s| s.parse().ok()).unwrap_or(0);
            if i == 0 || j == 0 {
                bail!("unexpected lipctl tensor name {name:?}");
            }
            format!("Block{i}.{}", 2 * (j - 1))
        }
        None => bail!("unexpected lipctl tensor name {name:?}"),
    };
    let parametrised = match method {
        Method::Aol => leaf == "weight",
        Method::Bcop => module == "head" && leaf == "weight",
        _ => false,
    };
    let leaf = if parametrised { "parametrizations.weight.original" } else { leaf };
    Ok(Source::Key(format!("{prefix}.{leaf}")))
}

/// Copies the authors' state dict `file` (read from `source`, named in errors) into `vs`, a
/// lipctl ConvNet of `method`: every variable of `vs` must have its key ([`source_of`]) with the
/// same shape, and every key of the file must be used. Everything is checked before anything is
/// copied. Values are converted to each variable's dtype and device. Returns the notes of the
/// tensors that were recomputed rather than imported.
///
/// Errors name the file, the authors' key, the lipctl name and both shapes.
pub fn load_authors(vs: &mut VarStore, method: Method, file: &BTreeMap<String, Tensor>, source: &Path) -> anyhow::Result<Vec<String>> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut plan = Vec::new();
    let mut recomputed = Vec::new();
    let mut used = BTreeSet::new();
    for (name, var) in &vars {
        match source_of(method, name)? {
            Source::Recomputed(note) => recomputed.push((name.clone(), note)),
            Source::Key(key) => {
                let Some(t) = file.get(&key) else {
                    bail!(
                        "{}: missing key {key:?} (lipctl's {name}, shape {:?}); the file is not the state dict of this \
                         network (check --method, --size and --classes/--dataset)",
                        source.display(),
                        var.size()
                    );
                };
                if t.size() != var.size() {
                    bail!(
                        "{}: key {key:?} has shape {:?} but lipctl's {name} needs {:?}; the file is not the state dict of \
                         this network (check --method, --size and --classes/--dataset)",
                        source.display(),
                        t.size(),
                        var.size()
                    );
                }
                used.insert(key);
                plan.push((var.shallow_clone(), t));
            }
        }
    }
    if let Some(extra) = file.keys().find(|k| !used.contains(*k)) {
        bail!(
            "{}: unexpected key {extra:?} (shape {:?}) that a {method} network does not have; the file is not the \
             state dict of this network (check --method, --size and --classes/--dataset)",
            source.display(),
            file[extra].size()
        );
    }
    let _guard = tch::no_grad_guard();
    for (mut var, t) in plan {
        var.f_copy_(&t.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
    }
    for (name, _) in &recomputed {
        let _ = vars[name].shallow_clone().zero_();
    }
    Ok(recomputed.into_iter().map(|(name, note)| format!("{name}: {note}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: Method, name: &str) -> String {
        match source_of(method, name).unwrap() {
            Source::Key(k) => k,
            Source::Recomputed(n) => panic!("{name} recomputed: {n}"),
        }
    }

    /// Hand-written against the authors' `SimplifiedConvNet` child names.
    #[test]
    fn names_map_to_the_authors_sequential() {
        assert_eq!(key(Method::Standard, "first_conv.weight"), "FirstConv.weight");
        assert_eq!(key(Method::Sll, "block1.conv1.q"), "Block1.0.q");
        assert_eq!(key(Method::Cpl, "block5.conv5.u"), "Block5.8.u");
        assert_eq!(key(Method::Lot, "head.bias"), "ClassificationHead.0.bias");
        assert_eq!(key(Method::Cayley, "head.alpha"), "ClassificationHead.1.alpha");
        assert_eq!(key(Method::Bcop, "head.weight"), "ClassificationHead.1.parametrizations.weight.original");
        assert_eq!(key(Method::Bcop, "block2.conv3.param_matrices"), "Block2.4.param_matrices");
        assert_eq!(key(Method::Aol, "block3.conv2.weight"), "Block3.2.parametrizations.weight.original");
        assert_eq!(key(Method::Aol, "head.bias"), "ClassificationHead.0.bias");
        assert_eq!(source_of(Method::Soc, "block1.conv1.step").unwrap(), Source::Recomputed(SOC_STEP_NOTE));
        assert!(source_of(Method::Soc, "block0.conv1.u1").is_err());
    }
}
