//! Reading a PyTorch state dict (`.pth`) without unpickling in lipctl: the project's own Python
//! (the `.venv` that `make build` creates, holding the torch wheel libtorch comes from) runs
//! `scripts/torch_state_dict.py`, embedded in the binary, which opens the file with
//! `torch.load(weights_only=True, map_location="cpu")` — the restricted unpickler that rebuilds
//! tensors and plain containers only and refuses any pickle that asks to call code — and writes
//! the tensors as safetensors, which libtorch reads here.
//!
//! Knows nothing of lipctl's networks: names and tensors in, names and tensors out.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tch::Tensor;

/// The converter, run as `python - IN.pth OUT.safetensors` with this text on stdin.
const CONVERTER: &str = include_str!("../scripts/torch_state_dict.py");

/// The Python that has torch: `$VIRTUAL_ENV/bin/python`, else `.venv/bin/python` in the current
/// folder, else in a folder above the running binary (`target/release/lipctl` → the checkout).
/// Errors: none of them exists; the message says how to create it.
pub fn find_python() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(venv).join("bin/python"));
    }
    candidates.push(PathBuf::from(".venv/bin/python"));
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|dir| dir.join(".venv/bin/python")));
    }
    candidates.into_iter().find(|p| p.is_file()).context(
        "reading a PyTorch file needs the project's Python with torch, and none was found ($VIRTUAL_ENV/bin/python, \
         .venv/bin/python here or above the lipctl binary); run `make build` in the lipctl checkout (it creates .venv), \
         or set VIRTUAL_ENV to a virtual environment that has torch",
    )
}

/// The tensors of the state dict in `pth`, by name, on the CPU, in their stored dtypes.
///
/// Errors (each names the file): the file is missing, unreadable, truncated or not a state dict; the
/// pickle needs code execution (refused, never run); a value is not a tensor; no Python with torch
/// is found ([`find_python`]).
pub fn read_state_dict(pth: &Path) -> anyhow::Result<BTreeMap<String, Tensor>> {
    if !pth.is_file() {
        bail!("{}: no such file", pth.display());
    }
    let python = find_python()?;
    let dir = tempfile::tempdir().context("creating a temporary folder for the converted state dict")?;
    let out = dir.path().join("state_dict.safetensors");
    let mut child = Command::new(&python)
        .arg("-")
        .arg(pth)
        .arg(&out)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("the converter's stdin")?;
        stdin.write_all(CONVERTER.as_bytes()).with_context(|| format!("sending the converter to {}", python.display()))?;
    }
    let output = child.wait_with_output().with_context(|| format!("running {}", python.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {}
        Some(2) => bail!("{}", last_line(&stderr)),
        _ => bail!(
            "{}: the converter ({} with torch) failed: {}",
            pth.display(),
            python.display(),
            last_line(&stderr)
        ),
    }
    let tensors = Tensor::read_safetensors(&out).with_context(|| format!("reading the tensors converted from {}", pth.display()))?;
    Ok(tensors.into_iter().collect())
}

fn last_line(text: &str) -> &str {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_before_python_is_looked_for() {
        let err = read_state_dict(Path::new("/nonexistent/model.pth")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/model.pth") && err.contains("no such file"), "{err}");
    }

    #[test]
    fn the_embedded_converter_refuses_code_execution() {
        assert!(CONVERTER.contains("weights_only=True"));
    }
}
