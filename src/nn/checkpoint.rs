//! Checkpoints: a [`VarStore`] as a safetensors file, keyed by the parameter paths of the module
//! tree (`first_conv.weight`, `block2.conv5.kernel`, `head.bias`, …; see `convnet.rs`).
//!
//! The names are the format (style guide, "Parameter names are the checkpoint format"), so
//! [`load_strict`] accepts a file only when its tensor names equal the model's exactly and every
//! shape matches; anything else is an error naming the tensor, both shapes and the file, and
//! leaves the model untouched. Values are stored as they are (f32 for models; non-trainable
//! state such as power-iteration vectors included, so a resume is exact).

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn::VarStore, Device, Tensor};

/// Writes every variable of `vs` to `path` (which must end in `.safetensors`), via a temporary
/// file in the same folder and a rename, so a crash never leaves a truncated checkpoint behind.
/// This is the published model file of the train stage (`model.safetensors`).
pub fn save(vs: &VarStore, path: &Path) -> anyhow::Result<()> {
    save_with(vs, Vec::new(), path)
}

/// [`save`] plus `extra` tensors after the model's (a training checkpoint: optimizer state under
/// `sgd_momentum/`, run metadata under `meta/`). Extra names must contain a `/`, which no
/// parameter path has (they use `.`), so they can never be taken for a model tensor.
pub fn save_with(vs: &VarStore, extra: Vec<(String, Tensor)>, path: &Path) -> anyhow::Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("checkpoint path {} must end in .safetensors", path.display());
    }
    if let Some((name, _)) = extra.iter().find(|(n, _)| !n.contains('/')) {
        bail!("extra checkpoint tensor {name:?} needs a `prefix/` (model tensors are named with `.`)");
    }
    // BTreeMap: a stable (sorted) order, independent of construction order and HashMap seeds.
    let named: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let mut named: Vec<(String, Tensor)> = named.into_iter().collect();
    named.extend(extra.into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous())));
    write_safetensors_atomic(&named, path).with_context(|| format!("writing checkpoint {}", path.display()))
}

/// Writes named tensors as safetensors to `path` atomically ([`crate::fsx::write_atomic_with`]).
fn write_safetensors_atomic(named: &[(String, Tensor)], path: &Path) -> anyhow::Result<()> {
    crate::fsx::write_atomic_with(path, |tmp| Tensor::write_safetensors(named, tmp).map_err(anyhow::Error::from))
}

/// The tensors of a checkpoint file whose names start with one of `prefixes` (the extras of
/// [`save_with`]), without loading the model's.
pub fn read_extra(path: &Path, prefixes: &[&str]) -> anyhow::Result<BTreeMap<String, Tensor>> {
    Ok(read(path)?.into_iter().filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p))).collect())
}

/// Names and shapes of the tensors stored in a checkpoint file.
pub fn read_shapes(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
    Ok(read(path)?.into_iter().map(|(n, t)| (n, t.size())).collect())
}

fn read(path: &Path) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("reading checkpoint {} (not a safetensors file, or damaged)", path.display()))?;
    Ok(tensors.into_iter().collect())
}

/// Loads `path` into `vs`: every variable of `vs` must be in the file with the same shape and the
/// file must hold nothing else. Checks everything before copying anything, so on error the model
/// keeps its values. Tensors are converted to each variable's dtype and device.
pub fn load_strict(vs: &mut VarStore, path: &Path) -> anyhow::Result<()> {
    load_strict_with(vs, path, &[]).map(|_| ())
}

/// [`load_strict`] for a file written by [`save_with`]: tensors whose names start with one of
/// `extra_prefixes` are not model tensors and are returned instead; any other unknown name is an
/// error as in [`load_strict`].
pub fn load_strict_with(vs: &mut VarStore, path: &Path, extra_prefixes: &[&str]) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let mut file = read(path)?;
    let extra: BTreeMap<String, Tensor> = {
        let names: Vec<String> = file.keys().filter(|n| extra_prefixes.iter().any(|p| n.starts_with(p))).cloned().collect();
        names.into_iter().filter_map(|n| file.remove_entry(&n)).collect()
    };
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    for (name, var) in &vars {
        match file.get(name) {
            None => bail!(
                "checkpoint {} has no tensor {name:?} (model expects shape {:?}); it was saved from a different model \
                 (method, size, kernel or classes)",
                path.display(),
                var.size()
            ),
            Some(t) if t.size() != var.size() => bail!(
                "checkpoint {}: tensor {name:?} has shape {:?} but the model expects {:?}; it was saved from a \
                 different model (method, size, kernel or classes)",
                path.display(),
                t.size(),
                var.size()
            ),
            Some(_) => {}
        }
    }
    if let Some(extra) = file.keys().find(|n| !vars.contains_key(*n)) {
        bail!(
            "checkpoint {} holds tensor {extra:?} with shape {:?} that the model does not have; it was saved from a \
             different model (method, size, kernel or classes)",
            path.display(),
            file[extra].size()
        );
    }
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vars {
        let src = &file[&name];
        let src = src
            .f_to_kind(var.kind())
            .and_then(|s| s.f_to_device(var.device()))
            .with_context(|| format!("converting {name:?} from {}", path.display()))?;
        var.f_copy_(&src).with_context(|| format!("copying {name:?} from {}", path.display()))?;
    }
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(shape_b: &[i64]) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = root.sub("first_conv").randn_standard("weight", &[2, 3]);
        let _ = root.sub("head").randn_standard("bias", shape_b);
        let _ = root.sub("block1").sub("conv1").zeros_no_train("mask", &[0, 1, 4]);
        vs
    }

    #[test]
    fn round_trip_is_exact_and_includes_empty_and_non_trainable_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a = store(&[4]);
        save(&a, &path).unwrap();
        let shapes = read_shapes(&path).unwrap();
        assert_eq!(shapes["block1.conv1.mask"], vec![0, 1, 4]);
        let mut b = store(&[4]);
        load_strict(&mut b, &path).unwrap();
        for (name, t) in a.variables() {
            let u = &b.variables()[&name];
            assert!(t.equal(u), "{name} differs after load");
        }
        // The temporary file was renamed away.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn mismatches_name_the_tensor_both_shapes_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&store(&[4]), &path).unwrap();
        let mut wrong = store(&[5]);
        let before = wrong.variables()["head.bias"].copy();
        let err = format!("{:#}", load_strict(&mut wrong, &path).unwrap_err());
        assert!(err.contains("head.bias") && err.contains("[4]") && err.contains("[5]") && err.contains("m.safetensors"), "{err}");
        // Nothing was copied.
        assert!(wrong.variables()["head.bias"].equal(&before));
        let mut more = store(&[4]);
        let _ = more.root().zeros("extra", &[1]);
        let err = format!("{:#}", load_strict(&mut more, &path).unwrap_err());
        assert!(err.contains("\"extra\"") && err.contains("no tensor"), "{err}");
        let mut fewer = VarStore::new(Device::Cpu);
        let _ = fewer.root().sub("first_conv").randn_standard("weight", &[2, 3]);
        let _ = fewer.root().sub("block1").sub("conv1").zeros_no_train("mask", &[0, 1, 4]);
        let err = format!("{:#}", load_strict(&mut fewer, &path).unwrap_err());
        assert!(err.contains("does not have") && err.contains("head.bias"), "{err}");
    }

    #[test]
    fn rejects_other_extensions_and_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(save(&store(&[4]), &dir.path().join("m.pt")).unwrap_err().to_string().contains(".safetensors"));
        let bad = dir.path().join("bad.safetensors");
        std::fs::write(&bad, b"not a checkpoint").unwrap();
        let err = format!("{:#}", load_strict(&mut store(&[4]), &bad).unwrap_err());
        assert!(err.contains("bad.safetensors"), "{err}");
    }
}
