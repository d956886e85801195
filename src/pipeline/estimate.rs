//! A plan's price: device-hours per stage of the tasks still to run, printed by `lipctl run` (and
//! `--dry-run`) before anything runs.
//!
//! Training and search tasks dominate; for each, `epochs × seconds per epoch`:
//! * **epochs**: a fixed count, or the budget's. A measured budget is wall-clock time on this
//!   device by construction, so its hours are the estimate. A paper budget is Table 8's 2-hour
//!   count × hours / 2 (0 for a model that is not trained), capped by `train.max_epochs`.
//! * **seconds per epoch**: this device's measurement where the store holds one for the same
//!   (method, size, kernel, batch size, device kind), × the epoch's batches; else the paper's A100
//!   timing (Figure 2 for 32×32 inputs, 7200 s / Table 8's count for Tiny ImageNet), scaled by the
//!   share of the full training set a subset keeps. Each estimate says which basis it used.
//!
//! Prepare, measure, budget and certify take minutes and are not priced. A task whose time is
//! unknown (a dataset the paper did not use and no measurement) is counted and named as such.

use super::plan::{Epochs, Plan, Stage, TaskSpec, TrainTask};
use super::stages::MEASUREMENT;
use crate::store::Store;
use crate::budgets::BudgetMode;
use crate::paper::{PaperData, PaperMethod, TimeSource};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// Seconds of one training or search task and the basis of the number.
struct TaskEstimate {
    seconds: f64,
    basis: &'static str,
}

const MEASURED_BUDGET: &str = "measured budgets (wall-clock hours on this device)";
const MEASURED_HERE: &str = "this device's measurements";
const PAPER_A100: &str = "the paper's A100 timings";
const NOT_TRAINED: &str = "not trained (no epochs)";

/// The estimate of every stage of `plan` for the tasks not yet in `store`.
pub struct PlanEstimate {
    /// Per stage: tasks, tasks still to run, priced seconds, tasks without an estimate.
    pub stages: BTreeMap<Stage, (usize, usize, f64, usize)>,
    pub bases: BTreeSet<&'static str>,
}

impl PlanEstimate {
    pub fn total_hours(&self) -> f64 {
        self.stages.values().map(|s| s.2).sum::<f64>() / 3600.0
    }
}

/// Prices `plan` against what `store` already holds (module doc).
pub fn estimate(plan: &Plan, store: &Store, device_kind: &str) -> anyhow::Result<PlanEstimate> {
    let paper = PaperData::shipped()?;
    let measured = measurements(store, device_kind);
    let mut est = PlanEstimate { stages: BTreeMap::new(), bases: BTreeSet::new() };
    for task in &plan.tasks {
        let entry = est.stages.entry(task.stage).or_insert((0, 0, 0.0, 0));
        entry.0 += 1;
        if store.artifact_dir(task.stage.name(), &task.key).join(crate::store::MANIFEST).exists() {
            continue;
        }
        entry.1 += 1;
        let (TaskSpec::Train(t) | TaskSpec::Search(t)) = &task.spec else { continue };
        match train_seconds(plan, t, &measured, paper) {
            Some(e) => {
                entry.2 += e.seconds;
                if e.basis != NOT_TRAINED {
                    est.bases.insert(e.basis);
                }
            }
            None => entry.3 += 1,
        }
    }
    Ok(est)
}

fn train_seconds(plan: &Plan, t: &TrainTask, measured: &[(serde_json::Value, f64)], paper: &PaperData) -> Option<TaskEstimate> {
    let dataset: Option<crate::paper::Dataset> = t.dataset.parse().ok();
    let epochs = match &t.epochs {
        Epochs::Fixed(e) => *e as f64,
        Epochs::Budget { task, hours, min_epochs } => match &plan.tasks[*task].spec {
            TaskSpec::Budget { mode: BudgetMode::Measured, .. } => {
                return Some(TaskEstimate { seconds: hours * 3600.0, basis: MEASURED_BUDGET });
            }
            _ => match crate::budgets::paper_epochs_2h(dataset?.kind(), t.method, t.size, t.kernel) {
                Ok(Some(e2)) => ((e2 as f64 * hours / 2.0).floor()).max(*min_epochs as f64),
                _ => return Some(TaskEstimate { seconds: 0.0, basis: NOT_TRAINED }),
            },
        },
    };
    let epochs = t.max_epochs.map_or(epochs, |cap| epochs.min(cap as f64));
    // This device's measurement of the same network and batch size, if the store has one.
    let same = |c: &serde_json::Value| {
        c["method"] == serde_json::json!(t.method)
            && c["size"] == serde_json::json!(t.size)
            && c["kernel"] == serde_json::json!(t.kernel)
            && c["batch_size"] == serde_json::json!(t.batch_size)
    };
    if let Some(&(_, seconds_per_batch)) = measured.iter().find(|(c, _)| same(c)) {
        let images = train_images(t, dataset)?;
        let batches = crate::budgets::batches_per_epoch(images as u64, t.batch_size as u64) as f64;
        return Some(TaskEstimate { seconds: epochs * batches * seconds_per_batch, basis: MEASURED_HERE });
    }
    let dataset = dataset?;
    let source = if dataset.input_side() == 32 { TimeSource::Fig2Digitised } else { TimeSource::DerivedFromTable8 };
    let row = paper.train_time_per_epoch.iter().find(|r| {
        r.method == PaperMethod::Layer(t.method) && r.size == t.size && r.source == source && r.dataset_kind == dataset.kind()
    })?;
    let full = dataset.train_images() as f64;
    let share = train_images(t, Some(dataset))? / full;
    Some(TaskEstimate { seconds: epochs * row.seconds_per_epoch? * share, basis: PAPER_A100 })
}

/// Training images of a paper dataset (all, or the subset the task keeps).
fn train_images(t: &TrainTask, dataset: Option<crate::paper::Dataset>) -> Option<f64> {
    let dataset = dataset?;
    let classes = match dataset {
        crate::paper::Dataset::Cifar10 => 10.0,
        crate::paper::Dataset::Cifar100 => 100.0,
        crate::paper::Dataset::TinyImageNet => 200.0,
    };
    Some(match t.train_per_class {
        Some(k) => (k as f64 * classes).min(dataset.train_images() as f64),
        None => dataset.train_images() as f64,
    })
}

/// Every committed measurement on this device kind, of the step this binary runs
/// ([`crate::train::step::COST_REVISION`]), that has a training time: (its manifest's config,
/// median training seconds per batch). Read once per estimate.
fn measurements(store: &Store, device_kind: &str) -> Vec<(serde_json::Value, f64)> {
    let read = |key: &crate::store::Key| -> Option<(serde_json::Value, f64)> {
        let dir = store.artifact_dir("measure", key);
        let manifest: serde_json::Value = serde_json::from_str(&crate::fsx::read_to_string(&dir.join(crate::store::MANIFEST)).ok()?).ok()?;
        let config = manifest.get("config")?.clone();
        if config["device_kind"] != serde_json::json!(device_kind)
            || config["step_revision"] != serde_json::json!(crate::train::step::COST_REVISION)
        {
            return None;
        }
        let m: crate::measure::MeasureRecord = crate::records::read_file(&dir.join(MEASUREMENT)).ok()?;
        Some((config, m.measurement.train_seconds_per_batch?.median))
    };
    store.list("measure").unwrap_or_default().iter().filter_map(read).collect()
}

/// The estimate as a table: tasks and tasks to run per stage, device-hours, and the bases used.
pub fn print(est: &PlanEstimate, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{:<8} {:>6} {:>7} {:>15}", "stage", "tasks", "to run", "device-hours")?;
    for (stage, (tasks, to_run, seconds, unknown)) in &est.stages {
        let hours = match stage {
            Stage::Train | Stage::Search if *unknown > 0 => format!("{:.1} (+{unknown} unknown)", seconds / 3600.0),
            Stage::Train | Stage::Search => format!("{:.1}", seconds / 3600.0),
            _ => "minutes".to_string(),
        };
        writeln!(out, "{:<8} {:>6} {:>7} {:>15}", stage.name(), tasks, to_run, hours)?;
    }
    let bases: Vec<&str> = est.bases.iter().copied().collect();
    writeln!(
        out,
        "estimate: {:.1} device-hours of training and search to run{}",
        est.total_hours(),
        if bases.is_empty() { String::new() } else { format!(", from {}", bases.join("; ")) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{MeasureRecord, MeasureStatus, Measurement, MemorySource, TimingStats};
    use crate::store::ManifestInfo;

    /// Commits a measurement of `seconds` per training batch with the given step revision.
    fn commit(store: &Store, revision: serde_json::Value, seconds: f64) {
        let config = serde_json::json!({"method": "AOL", "size": "XS", "kernel": 3, "batch_size": 64,
                                        "batches": 10, "device_kind": "cpu", "step_revision": revision});
        let info = ManifestInfo::new(1, config);
        let record = MeasureRecord {
            measurement: Measurement {
                status: MeasureStatus::Ok,
                error: None,
                parameters: 1,
                non_trainable: 0,
                train_seconds_per_batch: TimingStats::from_seconds(&[seconds]),
                infer_seconds_per_batch: None,
                peak_train_bytes: None,
                peak_infer_bytes: None,
                memory_source: MemorySource::CpuRssChild,
                device: "cpu".into(),
                precision: None,
            },
            input_side: Some(32),
            classes: Some(10),
        };
        store.build("measure", &info.key("measure"), &info, |tmp| crate::records::write(tmp, &record)).unwrap();
    }

    /// A measurement of an older step (a cached artifact of an earlier binary) is not priced in:
    /// only the one of this binary's step is read.
    #[test]
    fn measurements_of_an_older_step_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        commit(&store, serde_json::json!(crate::train::step::COST_REVISION - 1), 7.0);
        commit(&store, serde_json::Value::Null, 5.0);
        assert!(measurements(&store, "cpu").is_empty(), "{:?}", measurements(&store, "cpu"));
        commit(&store, serde_json::json!(crate::train::step::COST_REVISION), 0.25);
        let found = measurements(&store, "cpu");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1, 0.25);
        assert!(measurements(&store, "cuda").is_empty());
    }
}
