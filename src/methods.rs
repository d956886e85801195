//! `lipctl methods`: the registry as a table — each method's properties ([`MethodInfo`]) and its
//! trainable parameter count at each model size.
//!
//! Counts come from building the real network on the CPU under no-grad and summing the VarStore
//! (tch has no `meta` device, so nothing cheaper is exact for every layer's own parametrisation).
//! Building is fast up to M; L allocates 70–100M parameters per method and runs the methods'
//! initialisations (QR of 4096² matrices for BCOP, SOC's initial power iterations), hence the
//! `--sizes` option. `tests/networks.rs` checks these counts against reference-protocol §4.4.

use crate::nn::convnet::parameter_counts;
use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
use crate::progress::Progress;
use anyhow::Context;
use std::io::Write;
use tch::{nn, Device};

/// Trainable and non-trainable (buffers, power-iteration state, masks) parameter counts of the
/// CIFAR network (32², 10 classes, k = 3) of `method` at `size`.
pub fn parameter_count(method: Method, size: ModelSize) -> anyhow::Result<(i64, i64)> {
    let _guard = tch::no_grad_guard();
    let vs = nn::VarStore::new(Device::Cpu);
    ConvNet::new(&vs.root(), NetSpec::new(method, size, 32, 10))
        .with_context(|| format!("building the {method} {size} network"))?;
    Ok(parameter_counts(&vs))
}

/// Prints the properties of every method and its trainable parameter counts at `sizes`.
/// A method that cannot be built shows its error in place of the counts.
pub fn run(sizes: &[ModelSize], progress: &Progress, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut task = progress.task("counting parameters", (Method::ALL.len() * sizes.len()) as u64);
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for m in Method::ALL {
        let mut counts = Vec::new();
        for &size in sizes {
            task.set_message(format!("{m} {size}"));
            counts.push(match parameter_count(m, size) {
                Ok((trainable, _)) => group_thousands(trainable),
                Err(e) => {
                    errors.push(format!("{m} {size}: {e:#}"));
                    "n/a".to_string()
                }
            });
            task.inc(1);
        }
        rows.push((m, counts));
    }
    task.finish("done");

    let size_header: Vec<String> = sizes.iter().map(|s| format!("{:>13}", format!("params {s}"))).collect();
    writeln!(out, "{:<9} {:<10} {:<4} {:<6} {}", "method", "orthogonal", "FFT", "paper", size_header.join(" "))?;
    for (m, counts) in &rows {
        let info = m.info();
        let counts: Vec<String> = counts.iter().map(|c| format!("{c:>13}")).collect();
        writeln!(
            out,
            "{:<9} {:<10} {:<4} {:<6} {}",
            m.name(),
            if info.orthogonal { "yes" } else { "no" },
            if info.fft_based { "yes" } else { "no" },
            if info.in_paper { "yes" } else { "no" },
            counts.join(" ")
        )?;
    }
    writeln!(out, "paper: whether the paper (Prach et al., CVPR 2024) has results for the method; the others were added since.")?;
    writeln!(out)?;
    for (m, _) in &rows {
        let info = m.info();
        writeln!(out, "{}: cached at inference: {}; guarantee: {}", m.name(), info.cached_at_inference, info.guarantee)?;
    }
    for e in errors {
        writeln!(out, "error: {e}")?;
    }
    Ok(())
}

/// `1572288` → `1,572,288` (the spelling of reference-protocol §4.4).
pub fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    if n < 0 {
        s.insert(0, '-');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1_572_288), "1,572,288");
        assert_eq!(group_thousands(-100_457_984), "-100,457,984");
    }
}
