//! The pipeline end to end through the real binary: `pipelines/smoke.yaml` runs every stage
//! (prepare, measure, budget, search, train, certify), a second run does no work, the report and
//! the recommender read its artifacts, and bad pipeline files are rejected before anything runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lipctl(artifacts: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lipctl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
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

#[test]
fn smoke_pipeline_runs_every_stage_once_and_feeds_report_and_recommend() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");

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
    assert!(artifacts_of(&root, "prepare").is_empty());
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
