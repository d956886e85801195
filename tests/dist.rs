//! `make dist` and `make gpu-check` without a GPU: the stripped binary stays under 64 MiB and
//! runs, and the GPU check run with it exits 2 saying there is no CUDA device.

use std::path::Path;
use std::process::Command;

/// The size the issue allows a distributable binary (the unstripped release build is ~430 MB).
const DIST_LIMIT_BYTES: u64 = 64 << 20;

#[test]
fn dist_binary_is_small_and_gpu_check_without_cuda_exits_2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    let o = Command::new(root.join("scripts/dist.sh")).arg(env!("CARGO_BIN_EXE_lipctl")).arg(&dist).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bin = dist.join("lipctl");
    let bytes = std::fs::metadata(&bin).unwrap().len();
    assert!(bytes < DIST_LIMIT_BYTES, "dist/lipctl is {bytes} bytes");
    assert!(std::fs::read_to_string(dist.join("README")).unwrap().contains("LD_LIBRARY_PATH"));
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("lipctl "));

    // Hide every GPU, so the check behaves as on a CPU-only machine wherever the test runs.
    let o = Command::new(root.join("scripts/gpu-check.sh"))
        .current_dir(dir.path())
        .env("LIPCTL", &bin)
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}\n{err}", String::from_utf8_lossy(&o.stdout));
    assert!(err.contains("no CUDA device"), "{err}");

    // A binary that cannot run is exit 2 too, with the reason.
    let o = Command::new(root.join("scripts/gpu-check.sh")).env("LIPCTL", dir.path().join("missing")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot run lipctl"));
}
