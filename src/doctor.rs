//! `lipctl doctor`: what a bug report needs — versions, device, threads, folders.

use std::io::Write;
use std::path::{Path, PathBuf};

/// libtorch's version, read by build.rs from the wheel's `torch/version.py` at build time.
pub fn libtorch_version() -> String {
    option_env!("LIPCTL_LIBTORCH_VERSION").unwrap_or("unknown").to_string()
}

/// The libtorch this process runs on: the folder `libtorch_cpu.so` was loaded from (read from
/// `/proc/self/maps`) and the `__version__` of the wheel around it (`../version.py`), `None`
/// where either cannot be read. On another machine than the build's (a `make dist` binary with
/// `LD_LIBRARY_PATH`), this is not the build's folder that [`libtorch_version`] describes.
pub fn loaded_libtorch() -> Option<(PathBuf, Option<String>)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).map(Path::new).find(|p| p.file_name().is_some_and(|n| n == "libtorch_cpu.so"))?;
    let dir = lib.parent()?.to_path_buf();
    let version = std::fs::read_to_string(dir.join("..").join("version.py")).ok().and_then(|t| crate::torch_wheel::wheel_version(&t));
    Some((dir, version))
}

/// `doctor`'s libtorch line: the build's version and folder, and where they differ, the loaded ones.
fn libtorch_line() -> String {
    let built_dir = option_env!("LIPCTL_LIBTORCH_LIB").unwrap_or("unknown folder");
    describe_libtorch(&libtorch_version(), built_dir, loaded_libtorch())
}

/// The libtorch line for a build against version `built` in folder `built_dir`, run on `loaded`
/// ([`loaded_libtorch`]'s folder and version): the build's alone when the process loaded it,
/// else the loaded one with the build's beside it, and a warning when the versions differ.
fn describe_libtorch(built: &str, built_dir: &str, loaded: Option<(PathBuf, Option<String>)>) -> String {
    match loaded {
        Some((dir, version)) if dir.canonicalize().ok() != Path::new(built_dir).canonicalize().ok() => {
            let version = version.unwrap_or_else(|| "unknown version".into());
            let warning = if version == built { "" } else { "; not the version lipctl was built against: install that torch" };
            format!("{version} loaded from {} (built against {built} in {built_dir}{warning})", dir.display())
        }
        _ => format!("{built} ({built_dir})"),
    }
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
    let cuda = tch::Cuda::is_available();
    writeln!(out, "libtorch    {}", libtorch_line())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The three cases of the line, with folders made here: the build's own libtorch, another
    /// folder with the same version (a `make dist` binary on the GPU machine), and another
    /// version, which is warned about.
    #[test]
    fn the_libtorch_line_names_another_loaded_libtorch_and_warns_on_another_version() {
        let (built, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let built_dir = built.path().to_str().unwrap();
        let at = |dir: &Path, v: Option<&str>| Some((dir.to_path_buf(), v.map(String::from)));
        assert_eq!(describe_libtorch("2.11.0", built_dir, at(built.path(), Some("2.11.0"))), format!("2.11.0 ({built_dir})"));
        assert_eq!(describe_libtorch("2.11.0", built_dir, None), format!("2.11.0 ({built_dir})"));
        let same = describe_libtorch("2.11.0+cu130", built_dir, at(other.path(), Some("2.11.0+cu130")));
        assert_eq!(same, format!("2.11.0+cu130 loaded from {} (built against 2.11.0+cu130 in {built_dir})", other.path().display()));
        let older = describe_libtorch("2.11.0", built_dir, at(other.path(), Some("2.10.0")));
        assert!(older.starts_with("2.10.0 loaded from ") && older.ends_with("; not the version lipctl was built against: install that torch)"), "{older}");
        let unknown = describe_libtorch("2.11.0", built_dir, at(other.path(), None));
        assert!(unknown.starts_with("unknown version loaded from ") && unknown.contains("not the version"), "{unknown}");
    }

    #[test]
    fn loaded_libtorch_is_the_folder_holding_the_loaded_library() {
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)); // libtorch in use
        let (dir, version) = loaded_libtorch().expect("libtorch_cpu.so in /proc/self/maps");
        assert!(dir.join("libtorch_cpu.so").is_file(), "{}", dir.display());
        // This build runs on the libtorch it was built against (the rpath build.rs embeds).
        if let Some(built) = option_env!("LIPCTL_LIBTORCH_LIB") {
            assert_eq!(dir.canonicalize().unwrap(), Path::new(built).canonicalize().unwrap());
            assert_eq!(version.as_deref(), option_env!("LIPCTL_LIBTORCH_VERSION"));
        }
    }
}
