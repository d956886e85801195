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

/// Stands in for lipctl on a CUDA machine: answers each command of the GPU check the way a
/// working lipctl does, except `measure`, whose memory source comes from `$FAKE_MEMORY_SOURCE`.
const FAKE_CUDA_LIPCTL: &str = r#"#!/bin/sh
case "$*" in
  --version) echo "lipctl 0.1.0" ;;
  "doctor --cuda-available") exit 0 ;;
  *--selftest*) echo "all checks passed" ;;
  doctor*) echo "cuda        available, 1 device(s), cudnn true"; echo "  cuda:0    Fake GPU" ;;
  measure*) printf '{"status": "ok", "memory_source": "%s", "peak_train_bytes": 1024}\n' "$FAKE_MEMORY_SOURCE" ;;
  *certify*) echo '"status": "ok", "precision": {"tf32_cudnn": false, "effective": "fp32"}' ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
"#;

/// The check's own logic, without a GPU: every step runs, its output is checked for the mark of
/// success, and the summary and exit code follow (outside a checkout the CUDA tests are skipped).
#[test]
fn gpu_check_passes_with_a_working_cuda_lipctl_and_fails_when_a_step_lacks_its_mark() {
    use std::os::unix::fs::PermissionsExt;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("lipctl");
    std::fs::write(&fake, FAKE_CUDA_LIPCTL).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |memory_source: &str, work: &str| {
        Command::new(root.join("scripts/gpu-check.sh"))
            .current_dir(dir.path())
            .env("LIPCTL", &fake)
            .env("WORK", dir.path().join(work))
            .env("FAKE_MEMORY_SOURCE", memory_source)
            .output()
            .unwrap()
    };
    let o = run("cuda_allocator", "good");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("gpu-check summary") && out.contains("Fake GPU"), "{out}");
    for step in ["doctor", "selftest", "measure-AOL", "measure-SLL", "certify-AOL", "certify-SLL"] {
        assert!(out.lines().any(|l| l.split_whitespace().take(2).eq([step, "ok"])), "{step} not ok:\n{out}");
    }
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["tests-cuda", "skipped"])), "{out}");

    // A measurement that did not use the CUDA allocator is a failed step, named with the reason.
    let o = run("cpu_rss_child", "bad");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["measure-AOL", "FAILED"])), "{out}");
    assert!(out.contains("measure-AOL: output lacks /\"memory_source\": \"cuda_allocator\"/"), "{out}");
}
