//! Link-time set-up for libtorch, so `lipctl` runs without `LD_LIBRARY_PATH` and really uses CUDA.
//!
//! * torch-sys finds libtorch (here: the PyPI wheel in `.venv`, via `LIBTORCH_USE_PYTORCH=1`) and
//!   exports its library folder as `DEP_TCH_LIBTORCH_LIB`. We embed that folder as an rpath.
//! * `libtorch_cuda.so` registers the CUDA backend from static initialisers; nothing in our binary
//!   references its symbols, so a default `--as-needed` link drops it and CUDA is silently unused.
//!   We link it between `--no-as-needed` / `--as-needed`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its library folder; no rpath embedded");
        return;
    };
    let lib_dir = PathBuf::from(lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-env=LIPCTL_LIBTORCH_LIB={}", lib_dir.display());
    // The wheel's torch/version.py sits one folder above lib/: report the exact build in `doctor`.
    let version_py = lib_dir.join("..").join("version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    if let Ok(text) = std::fs::read_to_string(&version_py) {
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("__version__ = "))
            .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string());
        if let Some(v) = version {
            println!("cargo:rustc-env=LIPCTL_LIBTORCH_VERSION={v}");
        }
    }
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
