//! The pipeline on a real Slurm (issue #8): a single-node cluster on localhost, configured and
//! started by `tests/slurm/cluster.sh` (Debian's slurm-wlm and munge) and stopped when the test
//! ends, pass or fail. Needs root and the two packages, so the tests are `#[ignore]`d in `cargo test`
//! and run by `make test-slurm` (which installs the packages and which `.ci/run` calls).
//!
//! * `slurm_run_matches_lipctl_run`: `lipctl slurm --submit` runs `pipelines/smoke.yaml` as job
//!   arrays; then `lipctl run` builds the same pipeline locally, and every artifact and the report
//!   are compared file by file. Measurements are observations of the machine, not functions of
//!   their inputs (two `lipctl run`s differ there too), so the local store starts from the Slurm
//!   store's prepared data and measurements; everything downstream (budgets, search, training,
//!   certification, aggregate, report) is rebuilt locally and must be identical, wall-clock seconds
//!   excepted.
//! * `scancel_then_requeue_resumes_and_completes`: a training array task is cancelled with
//!   `scancel` after its first checkpoint and requeued with `scontrol requeue`; it resumes from the
//!   checkpoint, the pipeline completes, and no artifact is partial or damaged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Generous: the smoke pipeline takes about a minute of work; a loaded 2-core CI machine is slower.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(900);

/// A running single-node cluster; dropping it stops the daemons.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, &[])
    }

    /// With `cluster.sh`'s settings (`MAX_ARRAY_SIZE`, `GPUS`).
    fn start_with(dir: &Path, settings: &[(&str, &str)]) -> Cluster {
        let mut c = Command::new(Path::new(ROOT).join("tests/slurm/cluster.sh"));
        c.arg("start").arg(dir).envs(settings.iter().copied());
        let out = c.output().expect("cluster.sh runs");
        assert!(out.status.success(), "starting Slurm failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        Cluster { dir: dir.to_path_buf(), conf: dir.join("slurm.conf") }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf).current_dir(ROOT);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// `lipctl --artifacts ARTIFACTS ARGS…` under this cluster's configuration, one libtorch
    /// thread (the array tasks inherit the environment, so both sides compute alike).
    fn lipctl(&self, artifacts: &Path, args: &[&str]) -> Output {
        let mut c = self.command(env!("CARGO_BIN_EXE_lipctl"));
        c.env("OMP_NUM_THREADS", "1").arg("--artifacts").arg(artifacts).args(args);
        c.output().expect("lipctl runs")
    }

    /// Submits PIPELINE with `lipctl slurm --submit`; returns the job id of every wave, by name.
    fn submit(&self, artifacts: &Path, pipeline: &Path, extra: &[&str]) -> BTreeMap<String, String> {
        let script = artifacts.parent().unwrap().join("submit.sh");
        let mut args = vec!["slurm", pipeline.to_str().unwrap(), "--gpus-per-task", "0", "--submit", "--out", script.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.lipctl(artifacts, &args);
        assert!(out.status.success(), "lipctl slurm --submit failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        // The driver prints `<wave>: job <id>` for every wave it submits.
        let jobs: BTreeMap<String, String> = text(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(": job ").map(|(w, id)| (w.trim().to_string(), id.trim().to_string())))
            .collect();
        for wave in ["prepare", "measure", "budget", "search", "train", "certify", "report"] {
            assert!(jobs.contains_key(wave), "no `{wave}` wave submitted:\n{}", text(&out.stdout));
        }
        jobs
    }

    /// Waits until the queue is empty, then checks that every job and array task COMPLETED.
    fn wait_all_completed(&self, jobs: &BTreeMap<String, String>, artifacts: &Path) {
        let started = Instant::now();
        while !self.run("squeue", &["-h", "-o", "%i"]).trim().is_empty() {
            if started.elapsed() > PIPELINE_TIMEOUT {
                panic!("Slurm jobs still queued after {PIPELINE_TIMEOUT:?}:\n{}\n{}", self.run("squeue", &[]), logs(artifacts));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for (wave, id) in jobs {
            let records = self.run("scontrol", &["-o", "show", "job", id]);
            for record in records.lines() {
                let state = field(record, "JobState").unwrap_or("?");
                assert_eq!(state, "COMPLETED", "{wave} job {id}: {record}\n{}", logs(artifacts));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(ROOT).join("tests/slurm/cluster.sh")).arg("stop").arg(&self.dir).status();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `Key=value` of a one-line `scontrol -o` record.
fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Every Slurm log of the run, for failure messages.
fn logs(artifacts: &Path) -> String {
    let mut s = String::new();
    for entry in std::fs::read_dir(artifacts.join("slurm-logs")).into_iter().flatten() {
        let path = entry.unwrap().path();
        s += &format!("--- {}\n{}\n", path.display(), std::fs::read_to_string(&path).unwrap_or_default());
    }
    s
}

/// Committed artifact folders (64-hex names) of one stage, by key.
fn committed(root: &Path, stage: &str) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(root.join(stage))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 64 && p.join("manifest.json").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Wall-clock measurements: their names contain `seconds` (JSON keys, CSV columns, report
/// columns), plus the time an artifact or report was made.
fn is_wall_clock(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("seconds") || name.ends_with("_unix") || name == "rendered"
}

fn strip_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !is_wall_clock(k));
            map.values_mut().for_each(strip_json);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_json),
        _ => {}
    }
}

/// Removes the columns whose header names a wall-clock quantity from `sep`-separated rows: a CSV
/// file (one table, header first) or the tables of a Markdown file (blocks of `|` lines, header
/// first), and Markdown rows whose first cell names one (the provenance table's `rendered`).
fn strip_columns(text: &str, sep: char) -> String {
    let mut out = String::new();
    let mut dropped: Option<Vec<usize>> = None; // Some inside a table, from its header
    for line in text.lines() {
        if sep == '|' && !line.starts_with('|') {
            dropped = None;
            out += line;
            out.push('\n');
            continue;
        }
        let cells: Vec<&str> = line.split(sep).collect();
        let drop = dropped.get_or_insert_with(|| cells.iter().enumerate().filter(|(_, c)| is_wall_clock(c.trim())).map(|(i, _)| i).collect());
        let kept: Vec<&str> = cells.iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, c)| *c).collect();
        if sep == '|' && kept.get(1).is_some_and(|c| is_wall_clock(c.trim())) {
            continue;
        }
        out += &kept.join(&sep.to_string());
        out.push('\n');
    }
    out
}

/// A file's content with its wall-clock measurements removed, or `None` for files that are compared
/// through an equivalent (Parquet tables: their CSV twins; the HTML report: its Markdown twin,
/// rendered from the same aggregate).
fn comparable(path: &Path) -> Option<String> {
    let name = path.file_name().unwrap().to_string_lossy();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = std::fs::read(path).unwrap();
    match ext.as_str() {
        "parquet" | "html" => None,
        "json" => {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if name == "manifest.json" {
                // File checksums: the files themselves are compared.
                v.as_object_mut().unwrap().remove("files");
            }
            strip_json(&mut v);
            Some(serde_json::to_string_pretty(&v).unwrap())
        }
        "csv" => Some(strip_columns(&text(&bytes), ',')),
        "md" => Some(strip_columns(&text(&bytes), '|')),
        // Checkpoints, plots and everything else: byte for byte (hex keeps failures readable).
        _ => Some(format!("{} bytes, sha256 {}", bytes.len(), sha256_hex(&bytes))),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(fa, fb, "different files in {} and {}", a.display(), b.display());
    for f in fa {
        let (ca, cb) = (comparable(&a.join(&f)), comparable(&b.join(&f)));
        assert!(ca == cb, "{} differs between {} and {}:\n--- slurm\n{}\n--- lipctl run\n{}", f.display(), a.display(), b.display(), ca.unwrap_or_default(), cb.unwrap_or_default());
    }
}

/// No temporary folder of an interrupted build is left, and every committed artifact's files match
/// the checksums in its manifest.
fn assert_store_intact(root: &Path) {
    for stage in std::fs::read_dir(root).unwrap() {
        let stage = stage.unwrap().path();
        if !stage.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&stage).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp-"), "partial artifact left: {}/{name}", stage.display());
        }
        let stage_name = stage.file_name().unwrap().to_string_lossy().into_owned();
        for (key, dir) in committed(root, &stage_name) {
            let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            let listed = manifest["files"].as_object().unwrap_or_else(|| panic!("{stage_name}/{key}: manifest lists no files"));
            for (file, meta) in listed {
                let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{stage_name}/{key}/{file}: {e}"));
                assert_eq!(sha256_hex(&bytes), meta["sha256"].as_str().unwrap(), "{stage_name}/{key}/{file} is damaged");
            }
        }
    }
}

const STAGES: [&str; 7] = ["prepare", "measure", "budget", "search", "train", "certify", "aggregate"];

/// Also the waves longer than the cluster's `MaxArraySize`: the cluster accepts arrays of at most
/// 4 tasks, and the smoke pipeline with 5 search trials per model has a search wave of 10, which
/// `lipctl slurm` submits as three arrays (4, 4 and 2 tasks).
#[test]
#[ignore = "needs root and Debian's slurm-wlm + munge; run by `make test-slurm`"]
fn slurm_run_matches_lipctl_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(&tmp.path().join("cluster"), &[("MAX_ARRAY_SIZE", "4")]);
    let smoke = std::fs::read_to_string(Path::new(ROOT).join("pipelines/smoke.yaml")).unwrap();
    assert!(smoke.contains("  trials: 2\n"), "smoke.yaml's search changed; update this test");
    let pipeline = tmp.path().join("smoke-wide.yaml");
    std::fs::write(&pipeline, smoke.replace("  trials: 2\n", "  trials: 5\n")).unwrap();

    let on_slurm = tmp.path().join("slurm/artifacts");
    std::fs::create_dir_all(&on_slurm).unwrap();
    let jobs = cluster.submit(&on_slurm, &pipeline, &[]);
    let search: Vec<&String> = jobs.keys().filter(|w| w.starts_with("search")).collect();
    assert_eq!(search, ["search", "search.1", "search.2"], "the search wave is not split in three arrays: {jobs:?}");
    cluster.wait_all_completed(&jobs, &on_slurm);
    let status = cluster.lipctl(&on_slurm, &["status", pipeline.to_str().unwrap()]);
    let status_text = text(&status.stdout);
    assert!(status.status.success() && status_text.contains("smoke: 19 done"), "{status_text}\n{}", text(&status.stderr));
    assert!(on_slurm.join("report/report.md").is_file() && on_slurm.join("report/index.html").is_file(), "{}", logs(&on_slurm));
    assert_store_intact(&on_slurm);

    // The same pipeline with `lipctl run`, from the Slurm run's data and measurements.
    let local = tmp.path().join("local/artifacts");
    for stage in ["prepare", "measure"] {
        for (key, dir) in committed(&on_slurm, stage) {
            copy_dir(&dir, &local.join(stage).join(key));
        }
    }
    let run = cluster.lipctl(&local, &["run", pipeline.to_str().unwrap()]);
    assert!(run.status.success(), "{}{}", text(&run.stdout), text(&run.stderr));
    assert!(text(&run.stdout).contains("16 ran, 3 cached, 0 failed"), "{}", text(&run.stdout));
    let report = cluster.lipctl(&local, &["report", "--pipeline", pipeline.to_str().unwrap()]);
    assert!(report.status.success(), "{}", text(&report.stderr));

    for stage in STAGES {
        let (s, l) = (committed(&on_slurm, stage), committed(&local, stage));
        assert!(!s.is_empty(), "no {stage} artifact from Slurm");
        assert_eq!(s.keys().collect::<Vec<_>>(), l.keys().collect::<Vec<_>>(), "{stage}: different artifact keys");
        for (key, dir) in &s {
            assert_same_tree(dir, &l[key]);
        }
    }
    assert_same_tree(&on_slurm.join("report"), &local.join("report"));
}

#[test]
#[ignore = "needs root and Debian's slurm-wlm + munge; run by `make test-slurm`"]
fn scancel_then_requeue_resumes_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&tmp.path().join("cluster"));
    // The smoke pipeline with 36 s of training per model instead of 9 s, so that a training task
    // is still running after its first checkpoint; one task of a wave at a time, so the training
    // wave (and the certify wave waiting on it) is not over while its cancelled task is requeued.
    let smoke = std::fs::read_to_string(Path::new(ROOT).join("pipelines/smoke.yaml")).unwrap();
    assert!(smoke.contains("hours: [0.0025]"), "smoke.yaml's budget changed; update this test");
    let pipeline = tmp.path().join("smoke-longer.yaml");
    std::fs::write(&pipeline, smoke.replace("hours: [0.0025]", "hours: [0.01]")).unwrap();
    let artifacts = tmp.path().join("slurm/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let jobs = cluster.submit(&artifacts, &pipeline, &["--max-parallel", "1"]);

    // The first training task to run, once its first epoch's checkpoint is published.
    let started = Instant::now();
    let task = loop {
        assert!(started.elapsed() < PIPELINE_TIMEOUT, "no training checkpoint appeared:\n{}", logs(&artifacts));
        let running = cluster.run("squeue", &["-h", "-t", "R", "-j", &jobs["train"], "-o", "%i"]);
        let checkpointed = std::fs::read_dir(artifacts.join("train"))
            .into_iter()
            .flatten()
            .any(|e| e.unwrap().path().join("checkpoint.safetensors").is_file());
        if let (Some(id), true) = (running.lines().next(), checkpointed) {
            break id.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    cluster.run("scancel", &[&task]);
    let started = Instant::now();
    loop {
        let record = cluster.run("scontrol", &["-o", "show", "job", &task]);
        if field(&record, "JobState") == Some("CANCELLED") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{task} not cancelled: {record}");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.run("scontrol", &["requeue", &task]);
    // A requeued job waits out a begin-time delay (about two minutes); it may start now.
    cluster.run("scontrol", &["update", &format!("jobid={task}"), "StartTime=now"]);
    cluster.wait_all_completed(&jobs, &artifacts);

    let record = cluster.run("scontrol", &["-o", "show", "job", &task]);
    assert_eq!(field(&record, "Restarts"), Some("1"), "{record}");
    let log = std::fs::read_to_string(artifacts.join(format!("slurm-logs/train-{}.log", task))).unwrap();
    assert!(log.contains("CANCELLED"), "{log}");
    assert!(log.contains("resuming") && log.contains("from epoch"), "the requeued task did not resume:\n{log}");
    let status = cluster.lipctl(&artifacts, &["status", pipeline.to_str().unwrap()]);
    assert!(text(&status.stdout).contains("smoke: 13 done"), "{}", text(&status.stdout));
    assert_store_intact(&artifacts);
    assert!(artifacts.join("report/report.md").is_file());

    // The resumed model is the model of an uninterrupted run: train again locally from the same
    // data, measurements, budgets and search.
    let local = tmp.path().join("local/artifacts");
    for stage in ["prepare", "measure", "budget", "search"] {
        for (key, dir) in committed(&artifacts, stage) {
            copy_dir(&dir, &local.join(stage).join(key));
        }
    }
    let run = cluster.lipctl(&local, &["run", pipeline.to_str().unwrap(), "--only", "train"]);
    assert!(run.status.success(), "{}{}", text(&run.stdout), text(&run.stderr));
    let (resumed, uninterrupted) = (committed(&artifacts, "train"), committed(&local, "train"));
    assert_eq!(resumed.len(), 2);
    for (key, dir) in &resumed {
        let a = std::fs::read(dir.join("model.safetensors")).unwrap();
        let b = std::fs::read(uninterrupted[key].join("model.safetensors")).unwrap();
        assert!(a == b, "train {key}: the Slurm model differs from an uninterrupted run's");
    }
}

/// The driver script of the full study (`pipelines/paper.yaml`: a search wave of 3 datasets × 4
/// sizes × 16 trials per registry method, 2,112 with eleven methods, so three arrays) passes
/// `sbatch --test-only` on a cluster with Slurm's default `MaxArraySize` (1001) and two GPUs
/// declared as a generic resource (`cluster.sh` GPUS=2: device files that are plain files, so
/// requests are validated and scheduled for real). A wrapper on PATH sends each request to the real
/// `sbatch` with `--test-only`, without the dependency on jobs that `--test-only` never creates.
/// The same script with `--max-array-size 2000` is refused at the search wave, naming it: the check
/// can fail.
#[test]
#[ignore = "needs root and Debian's slurm-wlm + munge; run by `make test-slurm`"]
fn full_study_script_is_accepted_by_sbatch_test_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_with(&tmp.path().join("cluster"), &[("MAX_ARRAY_SIZE", "1001"), ("GPUS", "2")]);
    // Tiny local sources in the layouts `prepare` accepts without a download.
    let work = tmp.path().join("work");
    for folder in ["cifar-10-batches-bin", "cifar-100-binary", "tiny-imagenet-200"] {
        std::fs::create_dir_all(work.join("data").join(folder)).unwrap();
        std::fs::write(work.join("data").join(folder).join("placeholder"), folder).unwrap();
    }
    let real = String::from_utf8(Command::new("bash").args(["-c", "PATH=$PATH:/usr/sbin command -v sbatch"]).output().unwrap().stdout).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("sbatch");
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/usr/bin/env bash
args=()
for a in "$@"; do case $a in --dependency=*|--parsable) ;; *) args+=("$a") ;; esac; done
if out=$({} --test-only "${{args[@]}}" 2>&1); then
    printf '%s\n' "$out" >>"$TEST_ONLY_LOG"
    echo $((1000 + $(wc -l <"$TEST_ONLY_LOG")))
else
    printf '%s\n' "$out" >&2
    exit 1
fi
"#,
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let paper = Path::new(ROOT).join("pipelines/paper.yaml");
    let artifacts = tmp.path().join("artifacts");
    let submit = |extra: &[&str]| {
        let script = tmp.path().join("submit.sh");
        let mut c = cluster.command(env!("CARGO_BIN_EXE_lipctl"));
        c.current_dir(&work).arg("--artifacts").arg(&artifacts).args(["slurm", paper.to_str().unwrap(), "--gpus-per-task", "1", "--out"]);
        c.arg(&script).args(extra);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let log = tmp.path().join("test-only.log");
        let _ = std::fs::remove_file(&log);
        let path = format!("{}:{}:/usr/sbin", bin.display(), std::env::var("PATH").unwrap());
        let out = cluster.command("bash").arg(&script).env("PATH", path).env("TEST_ONLY_LOG", &log).output().unwrap();
        (out, std::fs::read_to_string(&log).unwrap_or_default())
    };
    let (out, accepted) = submit(&[]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let waves: Vec<&str> = stdout.lines().filter_map(|l| l.split_once(": job ").map(|(w, _)| w)).collect();
    // 3 datasets × 4 sizes × 16 trials per registry method, in arrays of at most 1001 tasks.
    let search = 3 * 4 * 16 * lipctl::nn::Method::ALL.len();
    let chunks = search.div_ceil(lipctl::pipeline::slurm::DEFAULT_MAX_ARRAY_SIZE as usize);
    let mut expected = vec!["prepare".to_string(), "budget".into(), "search".into()];
    expected.extend((1..chunks).map(|i| format!("search.{i}")));
    expected.extend(["train".into(), "certify".into(), "report".into()]);
    assert_eq!(waves, expected, "{stdout}");
    assert_eq!(accepted.lines().filter(|l| l.contains("to start at")).count(), expected.len(), "{accepted}");

    let (out, _) = submit(&["--max-array-size", "2000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("Invalid job array specification") && err.contains("sbatch refused the search wave"), "{err}");
    assert!(!text(&out.stdout).contains("train: job"), "{}", text(&out.stdout));
}
