//! Link-time set-up for libtorch, so `lipctl` runs without `LD_LIBRARY_PATH` and really uses CUDA.
//!
//! * torch-sys finds libtorch (here: the PyPI wheel in `.venv`, via `LIBTORCH_USE_PYTORCH=1`) and
//!   exports its library folder as `DEP_TCH_LIBTORCH_LIB`. We embed that folder as an rpath.
//! * `libtorch_cuda.so` registers the CUDA backend from static initialisers; nothing in our binary
//!   references its symbols, so a default `--as-needed` link drops it and CUDA is silently unused.
//!   We link it between `--no-as-needed` / `--as-needed`.
//! * The C++ shim `src/shim/` wraps what tch does not expose:
//!   - `cuda_memory.cpp` reads the CUDA caching allocator's peak statistics (`lipctl measure`,
//!     reference-protocol §8.2). It needs only the torch headers and libc10 (see the file for why
//!     not the `c10/cuda` headers); without CUDA it is linked and never called.
//!   - `precision.cpp` reads and sets libtorch's TF32 switches (`src/precision.rs`). It needs the
//!     ATen headers and libtorch_cpu, and works without CUDA (the switches are then inert flags).
//!   - `sgd.cpp` runs the SGD update of all parameters as one `at::_fused_sgd_` call
//!     (`src/train/sgd.rs`). It needs the ATen headers and libtorch_cpu.
//!   - `max_min.cpp` is the MaxMin activation on the CPU as one fused pass forward and backward,
//!     a custom autograd function (`src/nn/shim.rs`, used by `src/nn/blocks.rs`). It needs the
//!     torch headers and libtorch_cpu (the autograd engine).
//!   - `circular_pad.cpp` is the circular padding of `conv2d_circular` with a one-pass backward,
//!     a custom autograd function (`src/nn/shim.rs`, used by `src/nn/ortho.rs`); same needs.
//!   - `error.h` is how every one of them reports a C++ exception (`failure::ShimError`).
//!
//!   All are compiled on every machine; `cfg(lipctl_shim)` tells the Rust side they are linked.

use std::path::PathBuf;

#[path = "src/torch_wheel.rs"]
mod torch_wheel;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/torch_wheel.rs");
    println!("cargo::rustc-check-cfg=cfg(lipctl_shim)");
    println!("cargo::rustc-check-cfg=cfg(lipctl_openmp)");
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
        if let Some(v) = torch_wheel::wheel_version(&text) {
            println!("cargo:rustc-env=LIPCTL_LIBTORCH_VERSION={v}");
        }
    }
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    build_shim(&lib_dir);
}

fn build_shim(lib_dir: &std::path::Path) {
    const SHIM: [&str; 5] = [
        "src/shim/cuda_memory.cpp",
        "src/shim/precision.cpp",
        "src/shim/sgd.cpp",
        "src/shim/max_min.cpp",
        "src/shim/circular_pad.cpp",
    ];
    for file in SHIM.iter().chain(&["src/shim/error.h"]) {
        println!("cargo:rerun-if-changed={file}");
    }
    let include = lib_dir.join("..").join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .files(SHIM)
        .include(&include)
        .include(include.join("torch").join("csrc").join("api").join("include"))
        // The string ABI torch-sys also compiles with (PyPI wheels since torch 2.7 use the C++11 one).
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // -Wextra flags unused parameters inside the torch headers; our files are small functions.
        .warnings(false);
    // `at::parallel_for` is inline OpenMP in the headers (the wheel's libtorch is built with
    // AT_PARALLEL_OPENMP): without -fopenmp it silently runs on one thread. Only with libtorch's
    // own OpenMP runtime (the wheel's lib/ has it as libgomp.so.1): a second runtime would keep
    // its own thread pool and ignore libtorch's thread count. Without it the shim stays serial.
    let openmp = lib_dir.join("libgomp.so.1").exists();
    if openmp {
        build.flag("-fopenmp");
    } else {
        println!("cargo:warning=no libgomp.so.1 beside libtorch: the fused MaxMin kernel runs on one thread");
    }
    build.compile("lipctl_shim");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    // c10: the allocator interface; torch_cpu: `at::globalContext()` and the autograd engine.
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    if openmp {
        // The OpenMP runtime libtorch itself uses (only the versioned name is there), so the
        // shim's parallel regions share libtorch's thread pool and thread count.
        println!("cargo:rustc-link-arg=-l:libgomp.so.1");
        println!("cargo:rustc-cfg=lipctl_openmp");
    }
    println!("cargo:rustc-cfg=lipctl_shim");
}
