//! The pipeline end to end through the real binary: `pipelines/smoke.yaml` runs every stage
//! (prepare, measure, budget, search, train, certify), a second run does no work, the report and
//! the recommender read its artifacts, and bad pipeline files are rejected before anything runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lipctl(artifacts: &Path, args: &[&str]) -> Output {
    lipctl_in(Path::new(env!("CARGO_MANIFEST_DIR")), artifacts, args)
}

/// [`lipctl`] with another working folder.
fn lipctl_in(cwd: &Path, artifacts: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lipctl"))
        .current_dir(cwd)
        .arg("--artifacts")
        .arg(artifacts)
        .args(args)
        .output()
        .expect("the lipctl binary runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Committed artifact folders of a stage (names are 64-hex keys).
fn artifacts_of(root: &Path, stage: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join(stage)) else { return vec![] };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().len() == 64 && p.join("manifest.json").is_file())
        .collect()
}

/// No temporary folder of an interrupted or failed build is left anywhere in the store.
fn assert_no_partial(root: &Path) {
    for stage in std::fs::read_dir(root).into_iter().flatten() {
        for entry in std::fs::read_dir(stage.unwrap().path()).into_iter().flatten() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp-"), "partial artifact left: {name}");
        }
    }
}

/// Run from a working folder outside the project (as a user with the binary on their PATH would):
/// nothing may depend on the project's files being in the working folder (the paper's numbers, the
/// templates and the recommender's rules are in the binary).
#[test]
fn smoke_pipeline_runs_every_stage_once_and_feeds_report_and_recommend() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let smoke_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.yaml");
    let smoke = smoke_path.to_str().unwrap();
    let lipctl = |root: &Path, args: &[&str]| {
        let args: Vec<&str> = args.iter().map(|a| if *a == "pipelines/smoke.yaml" { smoke } else { a }).collect();
        lipctl_in(&elsewhere, root, &args)
    };

    // Dry run: lists the 13 tasks, writes no artifact.
    let dry = lipctl(&root, &["run", "pipelines/smoke.yaml", "--dry-run"]);
    let (out, err) = text(&dry);
    assert!(dry.status.success(), "{out}\n{err}");
    assert_eq!(out.matches("would run").count(), 13, "{out}");
    assert!(artifacts_of(&root, "train").is_empty());

    let first = lipctl(&root, &["run", "pipelines/smoke.yaml"]);
    let (out, err) = text(&first);
    assert!(first.status.success(), "{out}\n{err}");
    assert!(out.contains("13 ran, 0 cached, 0 failed, 0 blocked"), "{out}");
    for (stage, n) in [("prepare", 1), ("measure", 2), ("budget", 2), ("search", 4), ("train", 2), ("certify", 2)] {
        assert_eq!(artifacts_of(&root, stage).len(), n, "{stage}: {out}");
    }
    for train in artifacts_of(&root, "train") {
        for file in ["model.safetensors", "epochs.csv", "train.json"] {
            assert!(train.join(file).is_file(), "{} lacks {file}", train.display());
        }
        let outcome: serde_json::Value = serde_json::from_slice(&std::fs::read(train.join("train.json")).unwrap()).unwrap();
        // Epochs come from the measured budget, lr/wd from the better of the two search trials.
        assert!(outcome["epochs"].as_u64().unwrap() >= 1, "{outcome}");
        let lr = outcome["lr"].as_f64().unwrap();
        assert!((1e-4..=1e-1).contains(&lr), "searched lr {lr} outside the search range");
        // Training records its device and switches: `tf32: on` (the default) sets cuDNN's
        // switch, which the CPU ignores.
        let p = &outcome["precision"];
        assert_eq!((p["device"].as_str(), p["dtype"].as_str(), p["effective"].as_str()), (Some("cpu"), Some("float32"), Some("fp32")), "{outcome}");
        assert_eq!((p["tf32_cudnn"].as_bool(), p["tf32_cublas"].as_bool()), (Some(true), Some(false)), "{outcome}");
        assert!(!p["device_name"].as_str().unwrap().is_empty());
        // The binary flushes CPU subnormals (device::flush_denormals) unless told to keep them,
        // and says so.
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) && !lipctl::device::denormals_kept_by_env() {
            assert_eq!(p["subnormals_flushed"].as_bool(), Some(true), "{outcome}");
        }
    }
    for measured in artifacts_of(&root, "measure") {
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(measured.join("measure.json")).unwrap()).unwrap();
        assert_eq!((m["precision"]["device"].as_str(), m["precision"]["tf32_cudnn"].as_bool()), (Some("cpu"), Some(true)), "{m}");
    }
    for cert in artifacts_of(&root, "certify") {
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(cert.join("certify.json")).unwrap()).unwrap();
        assert_eq!(c["status"], "ok");
        assert!(c["lipschitz"]["bound"].as_f64().unwrap() >= 1.0, "{c}");
        // CRA can only shrink as the radius grows, and CRA at radius 0 is the accuracy.
        let cra: Vec<f64> = ["0", "36/255", "72/255", "108/255", "1"].iter().map(|r| c["cra"][r].as_f64().unwrap()).collect();
        assert_eq!(cra[0], c["accuracy"].as_f64().unwrap());
        assert!(cra.windows(2).all(|w| w[0] >= w[1]), "{cra:?}");
        assert!(cert.join("margins.csv").is_file());
        // Certification always runs in full fp32.
        let p = &c["precision"];
        assert_eq!((p["tf32_cudnn"].as_bool(), p["tf32_cublas"].as_bool(), p["effective"].as_str()), (Some(false), Some(false), Some("fp32")), "{c}");
    }
    assert_no_partial(&root);

    let second = lipctl(&root, &["run", "pipelines/smoke.yaml"]);
    let (out, _) = text(&second);
    assert!(second.status.success());
    assert!(out.contains("0 ran, 13 cached"), "second run did work: {out}");

    let status = lipctl(&root, &["status", "pipelines/smoke.yaml"]);
    let (out, _) = text(&status);
    assert!(out.trim_end().ends_with("smoke: 13 done"), "{out}");

    // A run outside the pipeline, in the same store: in the store's report, not in the pipeline's.
    let extra = lipctl(&root, &["train", "--method", "AOL", "--dataset", "synthetic", "--epochs", "1",
        "--train-per-class", "40", "--test-per-class", "20", "--batch-size", "50", "--device", "cpu"]);
    assert!(extra.status.success(), "{:?}", text(&extra));
    let train_rows = |md: &str| md.lines().filter(|l| l.starts_with("| ") && l.contains(" | train | ")).count();
    let report = lipctl(&root, &["report"]);
    assert!(report.status.success(), "{:?}", text(&report));
    let aggregate = lipctl(&root, &["aggregate"]);
    assert!(aggregate.status.success(), "{:?}", text(&aggregate));
    assert!(Path::new(text(&aggregate).0.trim()).join("results.csv").is_file(), "{:?}", text(&aggregate));
    assert_eq!(train_rows(&std::fs::read_to_string(root.join("report/report.md")).unwrap()), 3);

    let report = lipctl(&root, &["report", "--pipeline", "pipelines/smoke.yaml"]);
    let (out, err) = text(&report);
    assert!(report.status.success(), "{out}\n{err}");
    assert_eq!(train_rows(&std::fs::read_to_string(root.join("report/report.md")).unwrap()), 2);
    let html = std::fs::read_to_string(root.join("report/index.html")).unwrap();
    assert!(!html.contains("{{") && !html.contains("{%"), "template placeholders left");
    // The report shows what each stage ran with: a provenance line and a results column.
    let md = std::fs::read_to_string(root.join("report/report.md")).unwrap();
    let line = md.lines().find(|l| l.starts_with("| precision |")).expect("a precision line in the provenance");
    for stage in ["train on cpu", "certify on cpu", "measure on cpu"] {
        assert!(line.contains(stage), "{stage} missing: {line}");
    }
    assert!(line.contains("cuDNN TF32 off") && line.contains("cuDNN TF32 on"), "{line}");
    assert!(md.lines().any(|l| l.contains(" | train | ") && l.contains("train fp32, certify fp32")), "no precision column:\n{md}");
    assert!(html.contains("certify on cpu"), "the HTML report lacks the precision line");
    assert!(html.contains("<svg") && html.contains("AOL") && html.contains("SLL"));

    // The recommender overlays this device's measurements on the paper's knowledge.
    let rec = lipctl(&root, &["recommend", "--mem", "8GB", "--hours", "2", "--explain"]);
    let (out, err) = text(&rec);
    assert!(rec.status.success(), "{out}\n{err}");
    let aol = out.split("\nAOL-XS:").nth(1).expect("AOL-XS is explained");
    assert!(aol.lines().take(6).any(|l| l.contains("measured")), "AOL-XS does not use the measurement:\n{aol}");
}

#[test]
fn bad_pipeline_files_exit_2_with_file_and_line_and_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.yaml")).unwrap();
    let cases = [
        ("syntax", good.replace("methods: [AOL, SLL]", "methods: [AOL, SLL"), "unterminated"),
        ("method", good.replace("methods: [AOL, SLL]", "methods: [AOL, Cayly]"), "unknown method \"Cayly\""),
        ("epochs", good.replace("  epochs: 1\n", "  epochs: -2\n"), "must be a positive whole number, got -2"),
        ("key", good.replace("  lr: 0.02\n", "  lr: 0.02\n  momentum: 0.9\n"), "unknown field `momentum`"),
        ("hours", good.replace("hours: [0.0025]", "hours: [2h, 9 apples]"), "invalid time budget \"9 apples\""),
        ("augment", good.replace("  - name: synthetic\n", "  - name: synthetic\n    augment: autoaugment\n"),
            "unknown augmentation \"autoaugment\"; expected one of crop_flip, randaugment, none"),
        // The paper published no hyper-parameters for synthetic data, nor for LOT-M with 1×1 kernels.
        ("paper-data", good.replace("  lr: 0.02\n  wd: 1.0e-5\n", "  hyperparameters: paper\n").replace("search:\n  trials: 2\n  epochs: 1\n  seed: 0\n", ""),
            "not `synthetic`"),
        ("paper-combination", good.replace("  lr: 0.02\n  wd: 1.0e-5\n", "  hyperparameters: paper\n").replace("search:\n  trials: 2\n  epochs: 1\n  seed: 0\n", "")
            .replace("  - name: synthetic\n", "  - name: cifar10\n").replace("methods: [AOL, SLL]", "methods: [AOL, LOT]\nkernel: 1").replace("sizes: [XS]", "sizes: [M]"),
            "no learning rate and weight decay for cifar10 LOT-M (kernel 1)"),
    ];
    for (name, yaml, fragment) in cases {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let o = lipctl(&root, &["run", file.to_str().unwrap()]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        let prefix = format!("{}:", file.display());
        assert!(err.contains(&prefix), "{name}: no file name in {err:?}");
        let after = &err[err.find(&prefix).unwrap() + prefix.len()..];
        assert!(after.chars().next().unwrap().is_ascii_digit(), "{name}: no line number in {err:?}");
        if name != "syntax" {
            assert!(err.contains(fragment), "{name}: {err:?} lacks {fragment:?}");
        }
    }
    assert!(artifacts_of(&root, "prepare").is_empty(), "a bad pipeline ran something");
}

#[test]
fn user_mistakes_in_prepare_exit_2_and_name_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let o = lipctl(&root, &["prepare", "--dataset", "mnist"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("mnist"));
    let missing = dir.path().join("nowhere.tar.gz");
    let o = lipctl(&root, &["prepare", "--dataset", "imagefolder", "--source", missing.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("nowhere.tar.gz"), "{err}");
    // A damaged .npz beside a missing one: each named, exit 2.
    let bad = dir.path().join("train.npz");
    std::fs::write(&bad, b"PK\x03\x04 not really a zip").unwrap();
    for (source, culprit) in [
        (format!("{},{}", bad.display(), dir.path().join("test.npz").display()), "test.npz"),
        (bad.display().to_string(), "train.npz"),
    ] {
        let o = lipctl(&root, &["prepare", "--dataset", "npz", "--source", &source]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(culprit) && err.lines().count() == 1, "{err}");
    }
    // Nothing at all under the artifact folder: no artifact, no lock file, no stage folder.
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Two `lipctl run` processes on one pipeline and store at once: the per-key locks make every
/// task build exactly once (the other process waits, then finds it cached).
#[test]
fn two_concurrent_runs_build_every_task_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_lipctl"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--artifacts")
            .arg(&root)
            .args(["run", "pipelines/smoke.yaml"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (out_a, err_a) = text(&a);
    let (out_b, err_b) = text(&b);
    assert!(a.status.success() && b.status.success(), "{out_a}\n{err_a}\n{out_b}\n{err_b}");
    let done = out_a.lines().chain(out_b.lines()).filter(|l| l.starts_with("done ")).count();
    assert_eq!(done, 13, "tasks built {done} times in total, not once each:\n{out_a}\n{out_b}");
    for (stage, n) in [("prepare", 1), ("measure", 2), ("budget", 2), ("search", 4), ("train", 2), ("certify", 2)] {
        assert_eq!(artifacts_of(&root, stage).len(), n, "{stage}");
    }
    assert_no_partial(&root);

    // `run-task` by index (as a Slurm array task would): a done task is cached, an index past the
    // plan is a user error.
    let o = lipctl(&root, &["run-task", "pipelines/smoke.yaml", "5"]);
    assert!(o.status.success() && text(&o).0.starts_with("cached"), "{:?}", text(&o));
    let o = lipctl(&root, &["run-task", "pipelines/smoke.yaml", "99"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("out of range"), "{:?}", text(&o));
}

/// `run-task` refuses a task whose inputs are not done, naming them, and runs nothing.
#[test]
fn run_task_needs_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    // Task 1 is the first measurement; its input, the prepared dataset (task 0), is missing.
    let o = lipctl(&root, &["run-task", "pipelines/smoke.yaml", "1"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("needs `prepare synthetic` (task 0)"), "{err}");
    assert!(artifacts_of(&root, "measure").is_empty());
}

/// One duration grammar (the one `recommend --hours` reads) for `budgets --hours` and the pipeline
/// key `budgets.hours`; the default `--help` shows (`2 10 24`) is accepted as typed.
#[test]
fn budgets_read_the_same_durations_as_recommend() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let epochs = |args: &[&str]| -> Vec<(String, u64)> {
        let mut all = vec!["budgets", "--seconds-per-batch", "0.1", "--batches-per-epoch", "100"];
        all.extend(args);
        let o = lipctl(&root, &all);
        assert!(o.status.success(), "{args:?}: {:?}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["epochs"].as_object().unwrap().iter().map(|(k, e)| (k.clone(), e.as_u64().unwrap())).collect()
    };
    // 10 s per epoch: 360 epochs an hour.
    let paper = vec![("10".to_string(), 3600), ("2".to_string(), 720), ("24".to_string(), 8640)];
    assert_eq!(epochs(&[]), paper);
    assert_eq!(epochs(&["--hours", "2 10 24"]), paper);
    assert_eq!(epochs(&["--hours", "2,10,24"]), paper);
    assert_eq!(epochs(&["--hours", "2", "10", "24h"]), paper);
    for same in ["1.5h", "90min", "5400s", "1h30m", "1.5"] {
        assert_eq!(epochs(&["--hours", same]), [("1.5".to_string(), 540)], "{same}");
    }
    let o = lipctl(&root, &["budgets", "--seconds-per-batch", "0.1", "--hours", "2x"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("\"2x\"") && err.contains("90m") && err.contains("1h30m"), "{err}");

    // The pipeline key: durations with units plan the same budget as the bare number of hours.
    let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.yaml")).unwrap();
    let file = dir.path().join("units.yaml");
    std::fs::write(&file, good.replace("hours: [0.0025]", "hours: [0.0025, 90min]")).unwrap();
    let o = lipctl(&root, &["run", file.to_str().unwrap(), "--dry-run"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!root.join("budget").exists(), "a dry run wrote a budget");
}

/// A fake `sbatch` and `scontrol` on PATH: `sbatch` logs its arguments (one per line, a `--` line
/// between calls) to `$FAKE_SLURM_LOG` and prints job ids 100, 101, …; it refuses jobs named
/// `$FAKE_SBATCH_REFUSE`. `scontrol show config` reports `$FAKE_MAX_ARRAY` when set, else fails.
fn fake_slurm(bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let sbatch = r#"#!/usr/bin/env bash
for a in "$@"; do
  if [[ -n ${FAKE_SBATCH_REFUSE:-} && $a == --job-name=$FAKE_SBATCH_REFUSE ]]; then
    echo "sbatch: error: Batch job submission failed: Invalid job array specification" >&2; exit 1
  fi
done
n=$(grep -c '^--$' "$FAKE_SLURM_LOG" 2>/dev/null || true)
printf '%s\n' "$@" -- >> "$FAKE_SLURM_LOG"
echo $((100 + ${n:-0}))
"#;
    let scontrol = r#"#!/usr/bin/env bash
[[ -n ${FAKE_MAX_ARRAY:-} ]] || exit 1
printf 'Configuration data as of 2026-11-30T00:00:00\nMaxArraySize            = %s\nMaxJobCount             = 10000\n' "$FAKE_MAX_ARRAY"
"#;
    for (name, text) in [("sbatch", sbatch), ("scontrol", scontrol)] {
        let p = bin.join(name);
        std::fs::write(&p, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The `sbatch` calls the fake logged: each call's arguments.
fn sbatch_calls(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut calls = vec![Vec::new()];
    for line in text.lines() {
        if line == "--" {
            calls.push(Vec::new());
        } else {
            calls.last_mut().unwrap().push(line.to_string());
        }
    }
    calls.pop();
    calls
}

fn arg<'a>(call: &'a [String], flag: &str) -> Option<&'a str> {
    call.iter().find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

/// `lipctl slurm pipelines/paper.yaml` (the full study: a search wave of 16 trials × 3 datasets × 4
/// sizes per method) run against a fake `sbatch`: every array is numbered from 0 and stays below
/// MaxArraySize (as `scontrol` reports it, 1001 when it cannot, or `--max-array-size`); the arrays
/// of a wave cover it exactly at consecutive offsets; each depends on every array of the previous
/// wave; GPUs are asked for (with `--ntasks=1`) on the measure, search, train and certify waves
/// only; a refused `sbatch` stops the script with a message naming the wave.
#[test]
fn slurm_waves_of_the_full_study_stay_within_max_array_size() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny local sources: the extracted-folder layouts `prepare` accepts without a download (only
    // their checksums enter the plan).
    for folder in ["cifar-10-batches-bin", "cifar-100-binary", "tiny-imagenet-200"] {
        std::fs::create_dir_all(dir.path().join("data").join(folder)).unwrap();
        std::fs::write(dir.path().join("data").join(folder).join("placeholder"), folder).unwrap();
    }
    let bin = dir.path().join("bin");
    fake_slurm(&bin);
    let root = dir.path().join("artifacts");
    let paper = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/paper.yaml");
    let paper = paper.to_str().unwrap();

    // Wave sizes from `status --tasks` (each line names the task's wave position).
    let status = lipctl_in(dir.path(), &root, &["status", paper, "--tasks"]);
    assert!(status.status.success(), "{:?}", text(&status));
    let mut per_stage = std::collections::BTreeMap::<String, usize>::new();
    for line in text(&status).0.lines() {
        let Some((stage, _)) = line.split_whitespace().nth(1).and_then(|w| w.split_once('[')) else { continue };
        *per_stage.entry(stage.to_string()).or_default() += 1;
    }
    // Paper-mode budgets need no measurement: no measure wave.
    let waves: Vec<(String, usize)> = ["prepare", "measure", "budget", "search", "train", "certify"]
        .iter()
        .filter_map(|s| per_stage.get(*s).map(|n| (s.to_string(), *n)))
        .collect();
    assert_eq!(waves.len(), 5, "{per_stage:?}");
    assert!(waves.iter().any(|(_, n)| *n > 1001), "{waves:?}");

    let path = std::env::var("PATH").unwrap();
    let submit = |limit_flag: &[&str], max_array_env: Option<&str>, refuse: Option<&str>| {
        let script = dir.path().join("submit.sh");
        let mut args = vec!["slurm", paper, "--gpus-per-task", "2", "--out", script.to_str().unwrap()];
        args.extend_from_slice(limit_flag);
        let o = lipctl_in(dir.path(), &root, &args);
        assert!(o.status.success(), "{:?}", text(&o));
        let log = dir.path().join("sbatch.log");
        let _ = std::fs::remove_file(&log);
        let mut c = Command::new("bash");
        c.arg(&script).env("PATH", format!("{}:{path}", bin.display())).env("FAKE_SLURM_LOG", &log);
        c.env_remove("FAKE_MAX_ARRAY").env_remove("FAKE_SBATCH_REFUSE");
        if let Some(m) = max_array_env {
            c.env("FAKE_MAX_ARRAY", m);
        }
        if let Some(r) = refuse {
            c.env("FAKE_SBATCH_REFUSE", r);
        }
        let out = c.output().unwrap();
        (out, sbatch_calls(&log))
    };

    for (flag, env, limit) in [(&[][..], None, 1001usize), (&[][..], Some("16"), 16), (&["--max-array-size", "700"][..], Some("16"), 700)] {
        let (out, calls) = submit(flag, env, None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut prev_ids: Vec<String> = Vec::new();
        let mut next_id = 100;
        for (wave, count) in &waves {
            let arrays: Vec<&Vec<String>> = calls.iter().filter(|c| arg(c, "--job-name") == Some(&format!("lipctl-{wave}"))).collect();
            assert_eq!(arrays.len(), count.div_ceil(limit), "{wave}: {count} tasks, limit {limit}");
            let mut covered = 0;
            let mut ids = Vec::new();
            for call in arrays {
                let range = arg(call, "--array").unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let (lo, hi): (usize, usize) = (lo.parse().unwrap(), hi.parse().unwrap());
                assert_eq!(lo, 0, "{wave}: arrays are numbered from 0");
                assert!(hi < limit, "{wave}: index {hi} ≥ MaxArraySize {limit}");
                let wrap = arg(call, "--wrap").unwrap();
                assert!(wrap.ends_with(&format!("$SLURM_ARRAY_TASK_ID --wave {wave} --offset {covered}")), "{wrap}");
                covered += hi + 1;
                let deps = arg(call, "--dependency").map(|d| d.trim_start_matches("afterany:").split(':').map(String::from).collect::<Vec<_>>());
                assert_eq!(deps.unwrap_or_default(), prev_ids, "{wave} waits for the whole previous wave");
                let gpu = call.iter().any(|a| a.starts_with("--gpus"));
                let device = ["measure", "search", "train", "certify"].contains(&wave.as_str());
                assert_eq!(gpu, device, "{wave}: GPUs only where computed: {call:?}");
                if gpu {
                    assert!(call.contains(&"--ntasks=1".to_string()) && call.contains(&"--gpus-per-task=2".to_string()), "{call:?}");
                }
                ids.push(next_id.to_string());
                next_id += 1;
            }
            assert_eq!(covered, *count, "{wave}: the arrays cover the wave exactly");
            prev_ids = ids;
        }
        let report = calls.last().unwrap();
        assert_eq!(arg(report, "--job-name"), Some("lipctl-report"));
        assert!(!report.iter().any(|a| a.starts_with("--gpus")), "{report:?}");
        assert_eq!(arg(report, "--dependency").unwrap(), format!("afterany:{}", prev_ids.join(":")));
    }

    // A refused wave: the script stops there, names it and says how to go on.
    let (out, calls) = submit(&[], Some("16"), Some("lipctl-search"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("sbatch refused the search wave") && err.contains("--submit") && err.contains("cached"), "{err}");
    assert!(!calls.iter().any(|c| arg(c, "--job-name") == Some("lipctl-train")), "a wave after the refused one was submitted");

    // The mapping from a wave position to the plan's task is the one `status --tasks` lists.
    let line = text(&status).0.lines().find(|l| l.contains(" search[1500] ")).unwrap().to_string();
    let index = line.split_whitespace().next().unwrap().to_string();
    let o = lipctl_in(dir.path(), &root, &["run-task", paper, "500", "--wave", "search", "--offset", "1000"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // Its inputs are missing here; the refusal names the task it mapped to.
    assert!(err.contains(&format!("task {index} (")) && err.contains("which is not done"), "{index}: {err}");
    // 3 datasets × 4 sizes × 16 trials per registry method; one past the end is refused.
    let search = 3 * 4 * 16 * lipctl::nn::Method::ALL.len();
    let offset = (search - 36).to_string();
    let o = lipctl_in(dir.path(), &root, &["run-task", paper, "36", "--wave", "search", "--offset", &offset]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains(&format!("the search wave of `paper` has {search} tasks")), "{:?}", text(&o));
}

/// CIFAR-10 for the GPU-shaped run: the project machines' JPEG copy, else 10 classes of generated
/// 32×32 images in the image-folder layout (so the test also runs on a clone without `../shared`).
fn cifar10_source(dir: &Path) -> PathBuf {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10-jpeg.tar.gz");
    if real.is_file() {
        return real;
    }
    let root = dir.join("cifar10-like");
    for split in ["train", "test"] {
        for c in 0..10u32 {
            let folder = root.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..3u32 {
                let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8 + c * 20) as u8, (y * 8 + i * 30) as u8, (c * 25) as u8]));
                img.save(folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    root
}

/// `pipelines/gpu.yaml`'s shape on a CPU, minutes long: every method, paper-mode budgets (Table
/// 8), the paper's published lr/wd, on a 20+20-image CIFAR-10 subset at XS with `max_epochs: 1`.
/// Standard (no Table 8 count) is a committed result with status `no_epoch_count`, not a failed
/// task, and the run exits 0; LOT-L (which the paper records as not fitting; a pipeline of its own,
/// since training the other L models is hours on a CPU) is `does_not_fit`. The report lists every
/// status with its reason.
#[test]
fn gpu_shaped_pipeline_runs_to_a_report_listing_every_status() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let data = cifar10_source(dir.path());
    let gpu = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/gpu.yaml")).unwrap();
    for needle in ["sizes: [L]", "  - name: cifar10\n", "  batch_size: 256\n", "audit_iterations: 1000", "hyperparameters: paper", "mode: paper"] {
        assert!(gpu.contains(needle), "gpu.yaml changed ({needle:?}); update this test");
    }
    let shaped = gpu
        .replace("name: gpu\n", "name: gpu-shaped\n")
        .replace("  - name: cifar10\n", "  - name: cifar10\n    train_per_class: 2\n    test_per_class: 2\n")
        .replace("  batch_size: 256\n", "  batch_size: 20\n  max_epochs: 1\n")
        .replace("audit_iterations: 1000", "audit_iterations: 5");
    let xs = dir.path().join("gpu-shaped.yaml");
    std::fs::write(&xs, shaped.replace("sizes: [L]", "sizes: [XS]")).unwrap();
    let lot_l = dir.path().join("gpu-lot-l.yaml");
    std::fs::write(&lot_l, shaped.replace("methods: all", "methods: [LOT]").replace("name: gpu-shaped", "name: gpu-lot-l")).unwrap();
    let data_arg = data.to_str().unwrap();
    // The second pipeline shares the prepared dataset.
    // prepare, then budget, train and certify per method of the registry.
    let all_ran = format!("{} ran, 0 cached", 1 + 3 * lipctl::nn::Method::ALL.len());
    for (file, counts) in [(&xs, all_ran.as_str()), (&lot_l, "3 ran, 1 cached")] {
        let o = lipctl(&root, &["run", file.to_str().unwrap(), "--data", data_arg]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        assert!(out.contains(&format!("{counts}, 0 failed, 0 blocked")), "{out}");
    }
    // The paper's lr/wd (results.csv: CIFAR-10 AOL-XS 6e-2 / 4e-5), one capped epoch.
    let train_json = |label: &str| -> serde_json::Value {
        for t in artifacts_of(&root, "train") {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(t.join("manifest.json")).unwrap()).unwrap();
            if format!("{}-{}", m["config"]["method"].as_str().unwrap(), m["config"]["size"].as_str().unwrap()) == label {
                return serde_json::from_slice(&std::fs::read(t.join("train.json")).unwrap()).unwrap();
            }
        }
        panic!("no train artifact of {label}");
    };
    let aol = train_json("AOL-XS");
    assert_eq!((aol["lr"].as_f64(), aol["wd"].as_f64(), aol["epochs"].as_u64()), (Some(0.06), Some(4e-5), Some(1)), "{aol}");
    let standard = train_json("Standard-XS");
    assert_eq!(standard["status"], "no_epoch_count", "{standard}");
    let lot = train_json("LOT-L");
    assert_eq!(lot["status"], "does_not_fit", "{lot}");
    assert!(lot["reason"].as_str().unwrap().contains("as in the paper"), "{lot}");

    let o = lipctl(&root, &["report"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let md = std::fs::read_to_string(root.join("report/report.md")).unwrap();
    let row = |label: &str| md.lines().find(|l| l.contains(" | train | ") && l.contains(label)).map(str::to_string);
    let standard_row = row("| Standard | XS |").unwrap_or_else(|| panic!("no Standard-XS row:\n{md}"));
    assert!(standard_row.contains("no_epoch_count") && standard_row.contains("Table 8 has no epoch count"), "{standard_row}");
    let lot_row = row("| LOT | L |").unwrap_or_else(|| panic!("no LOT-L row:\n{md}"));
    assert!(lot_row.contains("does_not_fit") && lot_row.contains("out of memory"), "{lot_row}");
    // Trained: the paper's seven layers (Table 8); Standard and the methods added since are
    // `no_epoch_count`, each with the reason.
    for m in lipctl::nn::Method::ALL.into_iter().filter(|m| !m.info().in_paper) {
        let r = row(&format!("| {m} | XS |")).unwrap_or_else(|| panic!("no {m}-XS row:\n{md}"));
        assert!(r.contains("no_epoch_count") && r.contains("not in the paper"), "{r}");
    }
    let ok_rows = md.lines().filter(|l| l.contains(" | train | ") && l.contains(" | ok | ")).count();
    let table_8 = lipctl::nn::Method::in_paper().filter(|m| m.is_lipschitz()).count();
    assert_eq!(ok_rows, table_8, "{md}");
}

/// A pipeline whose dataset has no source, run without `--data` on a machine without the archive
/// (and `--offline`: no download is attempted in tests): exit 2 before anything runs, saying where
/// to put the archive.
#[test]
fn missing_official_archive_offline_says_where_to_put_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let quick = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quick.yaml");
    let o = lipctl_in(dir.path(), &root, &["--offline", "run", quick.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cifar-10-binary.tar.gz") && err.contains("into `data`") && err.contains("--data"), "{err}");
    assert!(!root.exists() || std::fs::read_dir(&root).unwrap().next().is_none(), "something was written");
}

/// A real out-of-memory on the CPU, no mocked allocator: `lipctl run` under a data-size limit
/// (`RLIMIT_DATA` 4.5 GB) on a pipeline whose Standard-XS fits and whose Standard-M, at a
/// 1500-image batch, does not (libtorch's CPU allocator fails: a panic of tch's infallible op).
/// Measured here with `prlimit --data`: XS trains and certifies under 3.5 GB, M fails under
/// 5.5 GB; the limit sits 1 GB from each. (At a 600-image batch M needed 7.9 GB of RSS until
/// MaxMin stopped saving an int64 index per activation for its backward, then 3.1 GB, and fitted.)
/// The M training task is recorded as
/// `oom` with the device and the bytes asked for, its certificate is blocked, the XS tasks are done,
/// the run exits 1, and the report renders and lists the oom task.
#[test]
fn a_real_out_of_memory_is_recorded_and_the_run_goes_on() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let pipeline = dir.path().join("oom.yaml");
    std::fs::write(
        &pipeline,
        "name: oom\ndevice: cpu\ndatasets:\n  - name: synthetic\n    train_per_class: 150\n    test_per_class: 5\n\
         methods: [Standard]\nsizes: [XS, M]\nseeds: [0]\ntrain:\n  epochs: 1\n  lr: 0.01\n  wd: 0\n  batch_size: 1500\n\
         certify:\n  audit_iterations: 5\n",
    )
    .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lipctl"));
    c.arg("--artifacts").arg(&root).arg("run").arg(&pipeline).env("OMP_NUM_THREADS", "1");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 4_500_000_000, rlim_max: 4_500_000_000 };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let oom_line = out.lines().find(|l| l.starts_with("OOM")).unwrap_or_else(|| panic!("no OOM line:\n{out}\n{err}"));
    assert!(oom_line.contains("Standard-M") && oom_line.contains("out of memory on cpu") && oom_line.contains("you tried to allocate"), "{oom_line}");
    assert!(!oom_line.contains("frame #"), "the message keeps libtorch's backtrace: {oom_line}");
    assert!(out.contains("done     train synthetic Standard-XS") && out.contains("done     certify synthetic Standard-XS"), "{out}");
    assert!(out.contains("blocked  certify synthetic Standard-M"), "{out}");

    let status = lipctl(&root, &["status", pipeline.to_str().unwrap(), "--tasks"]);
    let line = text(&status).0.lines().find(|l| l.contains("train synthetic Standard-M")).unwrap().to_string();
    assert!(line.contains(" oom "), "{line}");

    let report = lipctl(&root, &["report", "--pipeline", pipeline.to_str().unwrap()]);
    let (rout, rerr) = text(&report);
    assert!(report.status.success(), "{rout}\n{rerr}");
    assert!(rout.contains("3 of 5 tasks done"), "{rout}");
    let md = std::fs::read_to_string(root.join("report/report.md")).unwrap();
    let row = md.lines().find(|l| l.starts_with("| oom |")).unwrap_or_else(|| panic!("no oom row:\n{md}"));
    assert!(row.contains("train synthetic Standard-M seed 0") && row.contains("out of memory on cpu"), "{row}");
    assert!(md.contains("| missing | certify synthetic Standard-M seed 0 |"), "{md}");
}

/// The plan's price, before anything runs: gpu.yaml trains six L models for Table 8's 2-hour
/// counts, ~2 A100-hours each by the definition of the budget (the paper's own timings: 12 ± 1 h in
/// all; one train task per registry method, those without a Table 8 count cost nothing);
/// quick.yaml's measured budgets are 0.05 h of wall clock on this device per registry method.
#[test]
fn dry_run_prices_the_plan_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let data = cifar10_source(dir.path());
    let price = |pipeline: &str| -> (String, f64) {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines").join(pipeline);
        let o = lipctl(&root, &["--offline", "run", file.to_str().unwrap(), "--dry-run", "--data", data.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        let train = out.lines().find(|l| l.starts_with("train ")).unwrap_or_else(|| panic!("{out}"));
        let hours: f64 = train.split_whitespace().nth(3).unwrap().parse().unwrap();
        (out, hours)
    };
    let (out, hours) = price("gpu.yaml");
    assert!((11.0..=13.0).contains(&hours) && out.contains("from the paper's A100 timings"), "{out}");
    let n = lipctl::nn::Method::ALL.len().to_string();
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["train", &n, &n, &format!("{hours:.1}")]), "{out}");
    let (out, hours) = price("quick.yaml");
    let expected: f64 = format!("{:.1}", lipctl::nn::Method::ALL.len() as f64 * 0.05).parse().unwrap();
    assert_eq!(hours, expected, "{out}");
    assert!(out.contains("measured budgets"), "{out}");
    assert!(!root.join("train").exists(), "a dry run trained something");
}

/// `lipctl run --devices cpu,cpu`: two worker processes (one libtorch thread each here), each
/// taking one of smoke.yaml's two (dataset, method, size) chains, end with the artifacts of one
/// worker. Measurements are observations of the machine, not functions of their inputs, so the
/// two-worker store starts from the one-worker store's prepared data and measurements; every
/// budget, search trial, model and certificate must then be identical.
#[test]
fn two_cpu_workers_build_the_artifacts_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let o = lipctl(&one, &["run", "pipelines/smoke.yaml"]);
    assert!(o.status.success(), "{:?}", text(&o));
    for stage in ["prepare", "measure"] {
        for src in artifacts_of(&one, stage) {
            let dst = two.join(stage).join(src.file_name().unwrap());
            std::fs::create_dir_all(&dst).unwrap();
            for f in std::fs::read_dir(&src).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let o = lipctl(&two, &["run", "pipelines/smoke.yaml", "--devices", "cpu,cpu"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("2 workers: cpu, cpu"), "{err}");
    // Each worker trains its own chain: both final runs are built, once each, by different workers.
    assert_eq!(out.matches("done     train synthetic").count(), 2, "{out}");
    assert_eq!(out.matches("pipeline smoke (13 tasks)").count(), 2, "{out}");
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    for stage in ["budget", "search", "train", "certify"] {
        let mut a: Vec<PathBuf> = artifacts_of(&one, stage);
        let mut b: Vec<PathBuf> = artifacts_of(&two, stage);
        a.sort();
        b.sort();
        assert_eq!(a.iter().map(name).collect::<Vec<_>>(), b.iter().map(name).collect::<Vec<_>>(), "{stage}");
        for (x, y) in a.iter().zip(&b) {
            for file in ["budget.json", "model.safetensors", "epochs.csv"] {
                if x.join(file).is_file() {
                    let (fx, fy) = (std::fs::read(x.join(file)).unwrap(), std::fs::read(y.join(file)).unwrap());
                    if file == "epochs.csv" {
                        // Wall-clock seconds differ; the numbers do not.
                        let strip = |t: Vec<u8>| {
                            let text = String::from_utf8(t).unwrap();
                            let at = text.lines().next().unwrap().split(',').position(|c| c == "seconds").unwrap();
                            text.lines()
                                .map(|l| l.split(',').enumerate().filter(|(i, _)| *i != at).map(|(_, c)| c).collect::<Vec<_>>().join(","))
                                .collect::<Vec<_>>()
                        };
                        assert_eq!(strip(fx), strip(fy), "{stage}/{}/{file}", name(x));
                    } else {
                        assert!(fx == fy, "{stage}/{}/{file} differs", name(x));
                    }
                }
            }
            if x.join("certify.json").is_file() {
                let read = |p: &PathBuf| {
                    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p.join("certify.json")).unwrap()).unwrap();
                    v.as_object_mut().unwrap().remove("seconds");
                    v
                };
                assert_eq!(read(x), read(y), "certify/{}", name(x));
            }
        }
    }
}

/// SIGTERM (a Slurm time limit, a preemption) stops the whole run, not just the training task it
/// interrupts: the task checkpoints, the run says so and exits non-zero, and no later task starts
/// (resuming the checkpoint is tests/train.rs's and tests/slurm.rs's). Before the fix the runner
/// went on to the next method's tasks.
#[test]
fn sigterm_stops_the_run_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let pipeline = dir.path().join("term.yaml");
    std::fs::write(
        &pipeline,
        "name: term\ndevice: cpu\ndatasets:\n  - name: synthetic\n    train_per_class: 40\n    test_per_class: 10\n\
         methods: [AOL, SLL]\nsizes: [XS]\nseeds: [0]\ntrain:\n  epochs: 400\n  lr: 0.02\n  wd: 0\n  batch_size: 40\n\
         \x20 checkpoint: {every_epochs: 1}\ncertify:\n  audit_iterations: 5\n  attack: {enabled: false}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lipctl"))
        .arg("--artifacts")
        .arg(&root)
        .args(["run", pipeline.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first training task has checkpointed once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let checkpointed = || {
        std::fs::read_dir(root.join("train")).into_iter().flatten().flatten().any(|e| e.path().join("checkpoint.safetensors").is_file())
    };
    while !checkpointed() {
        assert!(std::time::Instant::now() < deadline, "the first training task never checkpointed");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("stopped by SIGTERM"), "{out}");
    // Nothing after the interrupted task ran: no train or certify artifact at all.
    assert!(artifacts_of(&root, "train").is_empty() && artifacts_of(&root, "certify").is_empty(), "{out}");
    assert!(!out.contains("SLL"), "a task of the second method started after SIGTERM: {out}");
    assert_no_partial(&root);
}

/// Every file under `root` with its size and modification time: a store that "nothing was written
/// to" compares equal before and after.
fn store_snapshot(root: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files.push((entry.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// The flags of one tiny synthetic run (AOL-XS, one epoch, 20 test points).
const TINY_RUN: [&str; 8] = ["--epochs", "1", "--train-per-class", "20", "--test-per-class", "2", "--device", "cpu"];

/// `lipctl attack --model` on a missing, truncated, foreign (another method's checkpoint) or
/// non-checkpoint file, and `--radius` values that are not positive numbers: exit 2, one message
/// naming the file or the value, and nothing written to the store. The good model attacked the
/// same way succeeds, so each refusal is about the file or value and nothing else.
#[test]
fn attack_refuses_bad_model_files_and_radii_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    for method in ["AOL", "BCOP"] {
        let o = lipctl(&root, &[&["train", "--method", method][..], &TINY_RUN[..]].concat());
        assert!(o.status.success(), "{:?}", text(&o));
    }
    let model_of = |method: &str| {
        artifacts_of(&root, "train")
            .into_iter()
            .find(|a| std::fs::read_to_string(a.join("manifest.json")).unwrap().contains(&format!("\"method\": \"{method}\"")))
            .unwrap()
            .join("model.safetensors")
    };
    let good = model_of("AOL");
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let truncated = files.join("truncated.safetensors");
    std::fs::write(&truncated, &std::fs::read(&good).unwrap()[..1000]).unwrap();
    let foreign = files.join("bcop.safetensors");
    std::fs::copy(model_of("BCOP"), &foreign).unwrap();
    let text_file = files.join("notes.safetensors");
    std::fs::write(&text_file, "not a checkpoint\n").unwrap();
    let missing = files.join("missing.safetensors");

    let attack = |extra: &[&str]| lipctl(&root, &[&["attack", "--method", "AOL", "--samples", "8", "--steps", "2"][..], &TINY_RUN[..], extra].concat());
    let before = store_snapshot(&root);
    for (file, says) in [(&missing, "does not exist"), (&truncated, "damaged"), (&text_file, "damaged"), (&foreign, "different model")] {
        let o = attack(&["--model", file.to_str().unwrap()]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", file.display());
        assert!(err.contains(file.to_str().unwrap()) && err.contains(says), "{}: {err}", file.display());
        assert_eq!(store_snapshot(&root), before, "{} wrote to the store", file.display());
    }
    for radius in ["0", "-0.1", "abc", "nan"] {
        let o = attack(&["--model", good.to_str().unwrap(), "--radius", radius]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "--radius {radius}: {err}");
        assert!(err.contains(&format!("'{radius}'")) && err.contains("--radius"), "--radius {radius}: {err}");
        assert_eq!(store_snapshot(&root), before, "--radius {radius} wrote to the store");
    }
    let o = attack(&["--model", good.to_str().unwrap(), "--radius", "0.1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("flipped: 0"), "{:?}", text(&o));
    assert_no_partial(&root);
}

/// `lipctl aggregate` on `root`: the aggregate's folder name (its key) and the `status` of its one
/// train row in `results.csv`.
fn aggregate_train_status(root: &Path) -> (String, String) {
    let o = lipctl(root, &["aggregate"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let folder = PathBuf::from(text(&o).0.trim());
    let csv = std::fs::read_to_string(folder.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (stage, status) = (header.iter().position(|c| *c == "stage").unwrap(), header.iter().position(|c| *c == "status").unwrap());
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect::<Vec<_>>()).filter(|r| r[stage] == "train").collect();
    assert_eq!(rows.len(), 1, "{csv}");
    (folder.file_name().unwrap().to_string_lossy().into_owned(), rows[0][status].to_string())
}

/// Provenance: a certificate names the SHA-256 of the model file it certified. When the train
/// artifact is rebuilt with a different model (as a non-deterministic device would), the next
/// `certify` discards the old certificate and certifies the new model; without a rebuild the
/// certificate is reused (so the check can tell the two apart). Until it is certified again the
/// aggregate shows the run uncertified, and the new certificate makes a new aggregate. A damaged
/// model in the store is detected by its checksum, retrained and certified again.
#[test]
fn a_rebuilt_model_invalidates_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let certify = |seed: &str| {
        let o = lipctl(&root, &[&["certify", "--method", "AOL", "--seed", seed][..], &TINY_RUN[..]].concat());
        assert!(o.status.success(), "{:?}", text(&o));
        text(&o).0
    };
    let certified_sha = || {
        let [c] = &artifacts_of(&root, "certify")[..] else { panic!("one certificate expected") };
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(c.join("certify.json")).unwrap()).unwrap();
        v["model_sha256"].as_str().unwrap().to_string()
    };
    let sha = |p: &Path| lipctl::fsx::checksum_file(p).unwrap().sha256;

    let out = certify("0");
    assert!(out.lines().any(|l| l.starts_with("done") && l.contains("certify")), "{out}");
    let train = artifacts_of(&root, "train").pop().unwrap();
    let first = sha(&train.join("model.safetensors"));
    assert_eq!(certified_sha(), first);
    let out = certify("0");
    assert!(out.lines().any(|l| l.starts_with("cached") && l.contains("certify")), "{out}");

    // Another model (seed 1) under the seed-0 train key, committed through the store as a rebuild
    // would commit it: a valid artifact whose model differs from the certified one.
    let other_root = dir.path().join("other");
    let o = lipctl(&other_root, &[&["train", "--method", "AOL", "--seed", "1"][..], &TINY_RUN[..]].concat());
    assert!(o.status.success(), "{:?}", text(&o));
    let other = artifacts_of(&other_root, "train").pop().unwrap();
    let files: Vec<_> = ["model.safetensors", "train.json", "epochs.csv"].map(|f| (f, std::fs::read(other.join(f)).unwrap())).into();
    recommit_train(&root, &train, &files);
    let second = sha(&train.join("model.safetensors"));
    assert_ne!(second, first);
    // Before certify runs again, the aggregate is a new one and shows the run uncertified, not
    // with the old model's certificate.
    let (before_key, status) = aggregate_train_status(&root);
    assert_eq!(status, "uncertified");
    let out = certify("0");
    assert!(out.lines().any(|l| l.starts_with("done") && l.contains("certify")), "the stale certificate was reused: {out}");
    assert_eq!(certified_sha(), second);
    let (after_key, status) = aggregate_train_status(&root);
    assert_eq!(status, "ok");
    assert_ne!(after_key, before_key, "a new certificate under the same key must make a new aggregate");

    // A damaged model file: the store notices, retrains (seed 0 again) and certifies that model.
    let model = train.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let o = lipctl(&root, &[&["certify", "--method", "AOL", "--seed", "0"][..], &TINY_RUN[..]].concat());
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).1.contains("damaged"), "{:?}", text(&o));
    assert_eq!(sha(&model), first, "the retrained model is the seed-0 model");
    assert_eq!(certified_sha(), first);
    assert_no_partial(&root);
}

/// Discards train artifact `train` of store `root` and commits `files` (name, bytes) in its place,
/// under the same key, as a rebuild or retrain would commit them.
fn recommit_train(root: &Path, train: &Path, files: &[(&str, Vec<u8>)]) {
    use lipctl::store::{ManifestInfo, Store};
    let store = Store::open(root).unwrap();
    let key = lipctl::store::Key::parse(train.file_name().unwrap().to_str().unwrap()).unwrap();
    let manifest = store.lookup("train", &key).unwrap().unwrap().manifest;
    store.discard("train", &key, "test: rebuilt").unwrap();
    let info = ManifestInfo { schema_version: manifest.schema_version, config: manifest.config, inputs: manifest.inputs, device: manifest.device };
    store
        .build("train", &key, &info, |tmp| {
            for (name, bytes) in files {
                std::fs::write(tmp.join(name), bytes)?;
            }
            Ok(())
        })
        .unwrap();
}

/// A run that diverged is certified as "diverged" (no model, no checksum). When its train artifact
/// later holds a model (trained again), that record is stale: `status` lists it as `stale` with the
/// reason, `run --dry-run` says it would certify again and changes nothing, the aggregate no longer
/// shows the run as diverged, and the next run certifies the model. Before the fix, the diverged
/// record was reused as `cached` for good.
#[test]
fn a_diverged_certificate_goes_stale_when_the_run_is_trained_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let pipeline = dir.path().join("stale.yaml");
    std::fs::write(
        &pipeline,
        "name: stale\ndevice: cpu\ndatasets:\n  - name: synthetic\n    train_per_class: 20\n    test_per_class: 2\n\
         methods: [AOL]\nsizes: [XS]\nseeds: [0]\ntrain:\n  epochs: 1\n  lr: 0.01\n  wd: 0\n  batch_size: 64\n\
         certify:\n  audit_iterations: 5\n",
    )
    .unwrap();
    let p = pipeline.to_str().unwrap();
    let run = |extra: &[&str]| {
        let o = lipctl(&root, &[&["run", p][..], extra].concat());
        assert!(o.status.success(), "{:?}", text(&o));
        text(&o).0
    };
    let certify_line = |out: &str| out.lines().find(|l| l.contains("certify synthetic AOL-XS")).unwrap_or_else(|| panic!("no certify line:\n{out}")).to_string();
    run(&[]);
    let train = artifacts_of(&root, "train").pop().unwrap();
    let read = |name: &'static str| (name, std::fs::read(train.join(name)).unwrap());
    let trained = vec![read("model.safetensors"), read("train.json"), read("epochs.csv")];

    // The same run, diverged: no model, status Diverged.
    let mut record: serde_json::Value = serde_json::from_slice(&trained[1].1).unwrap();
    record["status"] = "Diverged".into();
    record["model_file"] = serde_json::Value::Null;
    let diverged = vec![("train.json", serde_json::to_vec_pretty(&record).unwrap()), ("epochs.csv", trained[2].1.clone())];
    recommit_train(&root, &train, &diverged);
    assert!(certify_line(&run(&[])).starts_with("done"));
    assert_eq!(aggregate_train_status(&root).1, "diverged");
    assert!(certify_line(&run(&[])).starts_with("cached"), "a current record is reused");
    assert!(certify_line(&text(&lipctl(&root, &["status", p, "--tasks"])).0).contains(" done "), "status lists it as done");

    // Trained again: the diverged record is stale.
    recommit_train(&root, &train, &trained);
    let status = text(&lipctl(&root, &["status", p])).0;
    let line = certify_line(&status);
    assert!(line.contains(" stale ") && line.contains("without a model (diverged)"), "{status}");
    let before = store_snapshot(&root);
    let dry = certify_line(&run(&["--dry-run"]));
    assert!(dry.starts_with("would run") && dry.contains("stale"), "{dry}");
    assert_eq!(store_snapshot(&root), before, "a dry run changed the store");
    assert_eq!(aggregate_train_status(&root).1, "uncertified");
    let o = lipctl(&root, &["run", p]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(certify_line(&out).starts_with("done"), "the stale record was reused");
    // The overall bar counted the stale certificate among the tasks to run (it once did not, and
    // ran one task more than its length).
    let ran = out.lines().filter(|l| l.starts_with("done")).count();
    assert!(err.contains(&format!("{ran} ran, 0 failed, 0 blocked, of {ran} to run")), "{ran} done:\n{out}\n{err}");
    assert_eq!(aggregate_train_status(&root).1, "ok");
    assert_no_partial(&root);
}
