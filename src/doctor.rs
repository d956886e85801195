//! `lipctl doctor`: what a bug report needs — versions, device, threads, folders.

use std::io::Write;
use std::path::Path;

/// libtorch's version, read by build.rs from the wheel's `torch/version.py` at build time.
pub fn libtorch_version() -> String {
    option_env!("LIPCTL_LIBTORCH_VERSION").unwrap_or("unknown").to_string()
}

/// Whether `dir` exists (or can be created) and accepts a new file.
fn writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create: {e}"))?;
    let probe = dir.join(format!(".lipctl-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| format!("not writable: {e}"))?;
    std::fs::remove_file(&probe).map_err(|e| format!("cannot remove probe file: {e}"))?;
    Ok(())
}

pub fn run(data: &Path, artifacts: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "lipctl      {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "libtorch    {} ({})", libtorch_version(), option_env!("LIPCTL_LIBTORCH_LIB").unwrap_or("unknown folder"))?;
    let cuda = tch::Cuda::is_available();
    if cuda {
        let count = tch::Cuda::device_count();
        writeln!(out, "cuda        available, {count} device(s), cudnn {}", tch::Cuda::cudnn_is_available())?;
        for i in 0..count {
            match crate::device::cuda_device_info(i) {
                Some(d) => writeln!(
                    out,
                    "  cuda:{i}    {}, {:.1} GiB, compute capability {}.{}",
                    d.name,
                    d.total_bytes as f64 / (1u64 << 30) as f64,
                    d.compute_capability.0,
                    d.compute_capability.1
                )?,
                None => writeln!(out, "  cuda:{i}    (name unavailable)")?,
            }
        }
    } else {
        writeln!(out, "cuda        not available (training and measurements run on the CPU)")?;
    }
    let onoff = |b: bool| if b { "on" } else { "off" };
    match crate::precision::current() {
        Ok(t) => writeln!(
            out,
            "tf32        cuDNN {}, cuBLAS {} now; training `tf32: {}` by default, certify and audit always fp32",
            onoff(t.cudnn),
            onoff(t.cublas),
            crate::precision::Tf32Mode::default()
        )?,
        Err(e) => writeln!(out, "tf32        unknown ({e:#})")?,
    }
    writeln!(out, "threads     {} (libtorch intra-op)", tch::get_num_threads())?;
    for (label, dir) in [("data", data), ("artifacts", artifacts)] {
        let state = match writable(dir) {
            Ok(()) => "writable".to_string(),
            Err(e) => e,
        };
        writeln!(out, "{label:<11} {} ({state})", dir.display())?;
    }
    Ok(())
}
