//! `make dist` and `make gpu-check` without a GPU: the stripped binaries and their archive fit
//! beside the checkout in one 64 MiB transfer and run, and the GPU check run with them exits 2
//! saying there is no CUDA device; with a stand-in for a working CUDA lipctl, every step passes.

use std::path::Path;
use std::process::Command;

/// What a lent GPU machine receives in one transfer: the tracked checkout plus what is carried
/// (the GPU check was sized for it; the unstripped release build alone is ~430 MB).
const TRANSFER_LIMIT_BYTES: u64 = 64 << 20;

/// Bytes of the files git tracks in `root`, or `None` outside a git checkout.
fn tracked_bytes(root: &Path) -> Option<u64> {
    let o = Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output().ok()?;
    if !o.status.success() {
        return None;
    }
    let names = String::from_utf8(o.stdout).ok()?;
    Some(names.split('\0').filter(|n| !n.is_empty()).filter_map(|n| std::fs::metadata(root.join(n)).ok()).map(|m| m.len()).sum())
}

#[test]
fn dist_bundle_fits_beside_the_checkout_and_gpu_check_without_cuda_exits_2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    // Two stand-in test executables with cargo's hash suffix: copies of this test binary, a libtest
    // harness linked like the real ones (which are a tenth of lipctl's size).
    let tests: Vec<_> = ["layers-0123456789abcdef", "networks-fedcba9876543210"].iter().map(|n| dir.path().join(n)).collect();
    for t in &tests {
        std::fs::copy(std::env::current_exe().unwrap(), t).unwrap();
    }
    let o = Command::new(root.join("scripts/dist.sh")).arg(env!("CARGO_BIN_EXE_lipctl")).arg(&dist).args(&tests).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bin = dist.join("lipctl");
    let bytes = std::fs::metadata(&bin).unwrap().len();
    assert!(bytes < TRANSFER_LIMIT_BYTES, "dist/lipctl is {bytes} bytes");
    assert!(std::fs::read_to_string(dist.join("README")).unwrap().contains("LD_LIBRARY_PATH"));
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("lipctl "));
    for name in ["layers", "networks"] {
        let v = Command::new(dist.join("tests").join(name)).arg("--list").output().unwrap();
        let listed = String::from_utf8_lossy(&v.stdout);
        assert!(v.status.success() && listed.contains("dist_bundle_fits_beside_the_checkout"), "dist/tests/{name} does not run:\n{listed}");
    }

    // The archive holds every file, under the names the GPU check looks for, and it (not the
    // 40+ MiB binary) fits beside the tracked checkout in one transfer.
    let archive = dist.join("lipctl-dist.tar.gz");
    let listed = Command::new("tar").arg("-tzf").arg(&archive).output().unwrap();
    let listed: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_string).collect();
    assert_eq!(listed, ["lipctl", "README", "tests/layers", "tests/networks"]);
    let archive_bytes = std::fs::metadata(&archive).unwrap().len();
    if let Some(tree) = tracked_bytes(root) {
        assert!(tree + archive_bytes < TRANSFER_LIMIT_BYTES, "checkout {tree} + archive {archive_bytes} bytes");
    }

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
/// working lipctl does, except `measure`, whose memory source comes from `$FAKE_MEMORY_SOURCE`;
/// records its calls in `$FAKE_CALLS` when set.
const FAKE_CUDA_LIPCTL: &str = r#"#!/bin/sh
# Each call's arguments, tab-separated, one call per line (replayed against the real binary).
[ -n "$FAKE_CALLS" ] && { printf '%s\t' "$@"; echo; } >>"$FAKE_CALLS"
case "$*" in
  --version) echo "lipctl 0.1.0" ;;
  "doctor --cuda-available") exit 0 ;;
  *--selftest*) echo "all checks passed" ;;
  doctor*) echo "cuda        available, 1 device(s), cudnn true"; echo "  cuda:0    Fake GPU" ;;
  measure*) printf '{"status": "ok", "memory_source": "%s", "peak_train_bytes": 1024}\n' "$FAKE_MEMORY_SOURCE" ;;
  "bench --device cuda --size "*" --batch 256 "*)
    echo "ConvNet$5 table"
    [ -n "$FAKE_BENCH_FAIL" ] && echo "LOT                  –            –  out of memory"
    echo "speed-up = the paper's A100 seconds per training step" ;;
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
    let calls = dir.path().join("calls.tsv");
    let run = |memory_source: &str, work: &str| {
        Command::new(root.join("scripts/gpu-check.sh"))
            .current_dir(dir.path())
            .env("FAKE_CALLS", &calls)
            .env_remove("TEST_BINS")
            .env_remove("BENCH_SIZES")
            .env_remove("METHODS")
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
    for step in ["doctor", "bench-XS", "bench-S", "selftest", "measure-AOL", "measure-SLL", "certify-AOL", "certify-SLL"] {
        assert!(out.lines().any(|l| l.split_whitespace().take(2).eq([step, "ok"])), "{step} not ok:\n{out}");
    }
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["tests-cuda", "skipped"])), "{out}");
    // The bench tables come again after the summary, where a short output tail still shows them.
    let summary = out.find("gpu-check summary").unwrap();
    assert!(out[summary..].contains("ConvNetXS table") && out[summary..].contains("ConvNetS table"), "{out}");

    // The real lipctl accepts every command line the check sends to the stand-in: without a GPU
    // each one gets as far as asking for the CUDA device (a flag the CLI does not know would stop
    // it earlier, with clap's usage error).
    let recorded = std::fs::read_to_string(&calls).unwrap();
    let mut replayed = 0;
    for line in recorded.lines() {
        let args: Vec<&str> = line.split('\t').filter(|a| !a.is_empty()).collect();
        if !args.contains(&"cuda") {
            continue; // --version and doctor need no device
        }
        let o = Command::new(env!("CARGO_BIN_EXE_lipctl")).args(&args).env("CUDA_VISIBLE_DEVICES", "").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("requested but 0 CUDA device(s) are available"), "lipctl {line}:\n{err}");
        replayed += 1;
    }
    // bench XS and S, the self-test, measure and certify of two methods each.
    assert_eq!(replayed, 7, "{recorded}");

    // A measurement that did not use the CUDA allocator is a failed step, named with the reason;
    // so is a bench table with a method that could not run.
    let o = run("cpu_rss_child", "bad");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["measure-AOL", "FAILED"])), "{out}");
    assert!(out.contains("measure-AOL: output lacks /\"memory_source\": \"cuda_allocator\"/"), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["bench-XS", "ok"])), "{out}");
    let o = Command::new(root.join("scripts/gpu-check.sh"))
        .current_dir(dir.path())
        .env("LIPCTL", &fake)
        .env("WORK", dir.path().join("oom"))
        .env("FAKE_MEMORY_SOURCE", "cuda_allocator")
        .env("FAKE_BENCH_FAIL", "1")
        .env("BENCH_SIZES", "XS")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["bench-XS", "FAILED"])), "{out}");
    assert!(out.contains("bench-XS: a method could not run"), "{out}");
}

/// A dist binary on a lent GPU machine: it finds libtorch only through python3's torch (the
/// check puts that on LD_LIBRARY_PATH by itself), and the carried test binaries run on CUDA; a
/// failing test binary fails the step.
#[test]
fn gpu_check_finds_python_torch_and_runs_the_carried_test_binaries() {
    use std::os::unix::fs::PermissionsExt;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    // The working lipctl, behind a loader check: without the torch folder it fails as ld.so does.
    let fake = dir.path().join("lipctl");
    write(&dir.path().join("real-lipctl"), FAKE_CUDA_LIPCTL);
    write(
        &fake,
        &format!(
            "#!/bin/sh\ncase \":$LD_LIBRARY_PATH:\" in *:/fake/torch/lib:*) exec {} \"$@\" ;; esac\n\
             echo \"$0: error while loading shared libraries: libtorch_cpu.so: cannot open shared object file\" >&2; exit 127\n",
            dir.path().join("real-lipctl").display()
        ),
    );
    // python3 answers the check's one question: torch's version and library folder.
    write(&dir.path().join("bin/python3"), "#!/bin/sh\ncase \"$*\" in *__version__*__file__*) echo 2.11.0+cu130 /fake/torch/lib ;; *) exit 1 ;; esac\n");
    // Test binaries that pass only when asked for CUDA, as tests/common/mod.rs does.
    let bins = dir.path().join("bins");
    // (and that find libtorch through the folder the check put on LD_LIBRARY_PATH).
    write(
        &bins.join("layers"),
        "#!/bin/sh\n[ \"$LIPCTL_TEST_DEVICE\" = cuda ] || exit 101\ncase \":$LD_LIBRARY_PATH:\" in *:/fake/torch/lib:*) ;; *) exit 127 ;; esac\n\
         echo 'test result: ok. 3 passed'\n",
    );
    let run = |networks_exit: i32, work: &str| {
        write(&bins.join("networks"), &format!("#!/bin/sh\necho 'test result: ok. 2 passed'\nexit {networks_exit}\n"));
        Command::new(root.join("scripts/gpu-check.sh"))
            .current_dir(dir.path())
            .env("PATH", format!("{}:{}", dir.path().join("bin").display(), std::env::var("PATH").unwrap()))
            .env_remove("LD_LIBRARY_PATH")
            .env("LIPCTL", &fake)
            .env("TEST_BINS", &bins)
            .env("WORK", dir.path().join(work))
            .env("FAKE_MEMORY_SOURCE", "cuda_allocator")
            .env("BENCH_SIZES", "XS")
            .output()
            .unwrap()
    };
    let o = run(0, "good");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("using python3's torch 2.11.0+cu130 in /fake/torch/lib"), "{out}");
    for step in ["doctor", "bench-XS", "tests-cuda"] {
        assert!(out.lines().any(|l| l.split_whitespace().take(2).eq([step, "ok"])), "{step} not ok:\n{out}");
    }
    assert!(!out.contains("bench-S "), "BENCH_SIZES=XS ran S:\n{out}");

    let o = run(101, "bad");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["tests-cuda", "FAILED"])), "{out}");

    // A TEST_BINS folder without the binaries (the archive not unpacked) fails, not skips.
    std::fs::remove_file(bins.join("layers")).unwrap();
    let o = run(0, "missing");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["tests-cuda", "FAILED"])), "{out}");
    assert!(out.contains("no executable layers"), "{out}");
}
