//! What is known about every (dataset, method, size): training time, peak training memory,
//! inference cost and accuracy/CRA at known budgets — from the paper, from this machine's
//! measurements, or both (measured numbers replace the paper's field by field).
//!
//! # Paper knowledge ([`Knowledge::paper`])
//! * time: Table 8's 2-hour epoch count on one A100 (batch 256); `hours` of budget give
//!   `floor(epochs_2h · hours/2 · speed_vs_a100)` epochs — the paper's own convention (its 10 h and
//!   24 h budgets are 5× and 12× Table 8). The Standard baseline has no Table 8 entry; its time is
//!   Figure 2's (CIFAR only).
//! * memory: Figure 4 (top), peak tensor memory at 32×32, batch 256, in 10⁹ bytes. The paper did
//!   not measure Tiny ImageNet's network (64×64 inputs, half the width); its CIFAR figure is used
//!   as an *estimate* there and marked so.
//! * inference: the paper's inference times (Figure 3) could not be recovered. The relative cost
//!   used instead is `(6 − radar inference-time score) · (width/16)²`: the method factor orders
//!   the methods as the authors' Figure 1 does (AOL and BCOP run like a standard convolution once
//!   their weights are cached, SOC needs 12 convolutions per layer), and the size factor is the
//!   ratio of multiply-accumulates (∝ c²). Unit: a standard convolution network of size XS. Only
//!   the ordering is meaningful.
//! * accuracy and CRA (ε = 36/255): Tables 9–11 at 2, 10 and 24 h, i.e. at 1×, 5× and 12× the
//!   Table 8 epochs. Rows of diverged runs are left out (they are chance level) and remembered
//!   in [`Entry::diverged_hours`].
//!
//! # Measured knowledge: the CSV schema ([`MEASURED_COLUMNS`])
//! `<artifacts>/aggregate/results.csv`, else the newest committed `<artifacts>/aggregate/<key>/results.csv`
//! (or `--measured FILE`), UTF-8, comma-separated, one header
//! row, one row per run or measurement; column order is free, extra columns are ignored, empty
//! cells mean "not known":
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `dataset` | `cifar10`, `cifar100`, `tinyimagenet` | |
//! | `method` | registry name (`AOL`, `CPL`, …) | |
//! | `size` | `XS`, `S`, `M`, `L` | |
//! | `budget_hours` | number > 0 | the budget label of a training run |
//! | `epochs` | integer > 0 | epochs the run trained (required where `accuracy` is given) |
//! | `accuracy` | percent, 0–100 | clean test accuracy |
//! | `cra_36` | percent, 0–100 | certified robust accuracy at ε = 36/255 |
//! | `seconds_per_epoch` | number > 0 | measured training time per epoch on `device` |
//! | `train_peak_bytes` | integer > 0 | peak training memory (bytes) |
//! | `infer_ms_per_batch` | number > 0 | inference time per batch with cached weights |
//! | `status` | `ok`, `oom`, `diverged`, `failed` | outcome of the run or measurement |
//! | `device` | text | the device that produced the numbers |
//!
//! Measured rows are taken to be at the dataset's native input size and the pipeline's batch
//! size. Per (dataset, method, size): accuracy points are the `ok` rows with `epochs`, `accuracy`
//! and `cra_36` (rows with equal `epochs` are averaged); time and inference are the median over
//! rows that have them; memory is the largest peak. An `oom` row with no known peak means "does
//! not fit on that device".

use super::Source;
use crate::nn::{Method, ModelSize};
use crate::paper::{self, Dataset, DatasetKind, PaperData, PaperMethod, TimeSource};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The columns a measured-results CSV must have (see the module doc).
pub const MEASURED_COLUMNS: [&str; 12] = [
    "dataset",
    "method",
    "size",
    "budget_hours",
    "epochs",
    "accuracy",
    "cra_36",
    "seconds_per_epoch",
    "train_peak_bytes",
    "infer_ms_per_batch",
    "status",
    "device",
];

/// The paper's budgets as multiples of Table 8's 2-hour epoch count (reference-protocol §4.4).
const PAPER_BUDGETS: [(u32, u64); 3] = [(2, 1), (10, 5), (24, 12)];

/// How the number of epochs in a budget is computed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TimeBasis {
    /// Table 8: epochs in 2 h on one A100; scaled by `--speed-vs-a100`.
    PaperEpochs2h { epochs: u32 },
    /// Seconds per epoch on the A100 from Figure 2 (the Standard baseline only).
    PaperSecondsPerEpoch { seconds: f64 },
    /// Seconds per epoch measured on `device`; never rescaled.
    Measured { seconds: f64, device: String },
}

impl TimeBasis {
    /// Seconds per epoch on the device the numbers describe (A100 for the paper).
    pub fn seconds_per_epoch(&self) -> f64 {
        match self {
            TimeBasis::PaperEpochs2h { epochs } => 7200.0 / f64::from(*epochs),
            TimeBasis::PaperSecondsPerEpoch { seconds } | TimeBasis::Measured { seconds, .. } => *seconds,
        }
    }

    /// Epochs that fit in `hours`, with paper timings sped up by `speed_vs_a100` and every timing
    /// slowed by `time_scale` (≥ 1, for inputs larger than the measured ones).
    pub fn epochs_in(&self, hours: f64, speed_vs_a100: f64, time_scale: f64) -> u64 {
        // Tolerance for the floor: 12 × 837 must give 10044, not 10043.999….
        const FLOOR_SLACK: f64 = 1e-6;
        let e = match self {
            TimeBasis::PaperEpochs2h { epochs } => f64::from(*epochs) * hours / 2.0 * speed_vs_a100 / time_scale,
            TimeBasis::PaperSecondsPerEpoch { seconds } => hours * 3600.0 * speed_vs_a100 / (seconds * time_scale),
            TimeBasis::Measured { seconds, .. } => hours * 3600.0 / (seconds * time_scale),
        };
        (e + FLOOR_SLACK).floor().max(0.0) as u64
    }

    /// Hours needed for `epochs` epochs (inverse of [`Self::epochs_in`]).
    pub fn hours_for(&self, epochs: u64, speed_vs_a100: f64, time_scale: f64) -> f64 {
        let speed = match self {
            TimeBasis::Measured { .. } => 1.0,
            _ => speed_vs_a100,
        };
        epochs as f64 * self.seconds_per_epoch() * time_scale / speed / 3600.0
    }

    pub fn source(&self) -> Source {
        match self {
            TimeBasis::Measured { .. } => Source::Measured,
            _ => Source::Paper,
        }
    }
}

/// Accuracy and CRA after a known number of epochs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// The budget label (2, 10, 24 for the paper); measured rows may leave it out.
    pub budget_hours: Option<f64>,
    pub epochs: u64,
    /// Percent.
    pub accuracy: f64,
    /// Percent, ε = 36/255.
    pub cra_36: f64,
}

/// Everything known about one (dataset, method, size).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub dataset: Dataset,
    pub method: Method,
    pub size: ModelSize,
    /// Side of the square input the costs were measured at.
    pub input_side: u32,
    /// Batch size the costs were measured at.
    pub batch: u32,
    pub time: Option<TimeBasis>,
    pub train_peak_bytes: Option<u64>,
    pub memory_source: Source,
    /// Where the memory figure comes from, and whether it is an estimate.
    pub memory_note: String,
    /// The device on which a measurement ran out of memory, if one did.
    pub oom_on: Option<String>,
    pub infer_ms_per_batch: Option<f64>,
    /// Relative inference cost (paper knowledge; see the module doc).
    pub infer_relative: Option<f64>,
    /// Accuracy points, sorted by epochs.
    pub points: Vec<Point>,
    pub accuracy_source: Source,
    /// Budgets at which a run diverged (left out of `points`).
    pub diverged_hours: Vec<f64>,
    /// Why this model has no usable numbers at all (LOT-L: out of memory on the A100).
    pub unavailable: Option<String>,
}

/// The knowledge the engine ranks with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Knowledge {
    pub entries: Vec<Entry>,
    /// One line per source used, for the answer's header.
    pub sources: Vec<String>,
}

/// Where `--knowledge` takes its numbers from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KnowledgeMode {
    /// The paper's published numbers only.
    Paper,
    /// This machine's measured results only.
    Measured,
    /// Measured numbers where they exist, the paper's otherwise.
    Auto,
}

/// Outcome of a measured run or measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    Oom,
    Diverged,
    Failed,
}

impl std::str::FromStr for RunStatus {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ok" => Ok(RunStatus::Ok),
            "oom" => Ok(RunStatus::Oom),
            "diverged" => Ok(RunStatus::Diverged),
            "failed" => Ok(RunStatus::Failed),
            // Not trained by the pipeline's rule (the paper's Table 8 has no count for the model,
            // or says it does not fit an A100): nothing about this device; counted as not usable.
            "does_not_fit" | "no_epoch_count" => Ok(RunStatus::Failed),
            _ => bail!("unknown status {s:?}; expected ok, oom, diverged or failed"),
        }
    }
}

/// One row of the measured-results CSV (see the module doc for the schema).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasuredRow {
    pub dataset: Dataset,
    pub method: Method,
    pub size: ModelSize,
    pub budget_hours: Option<f64>,
    pub epochs: Option<u64>,
    pub accuracy: Option<f64>,
    pub cra_36: Option<f64>,
    pub seconds_per_epoch: Option<f64>,
    pub train_peak_bytes: Option<u64>,
    pub infer_ms_per_batch: Option<f64>,
    pub status: RunStatus,
    pub device: String,
}

/// Paper batch size (reference-protocol §4.3).
const PAPER_BATCH: u32 = 256;

fn positive(name: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => bail!("column {name:?} must be a positive number, got {x}"),
        _ => Ok(v),
    }
}

fn percent(name: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(0.0..=100.0).contains(&x) => bail!("column {name:?} is a percentage (0–100), got {x}"),
        _ => Ok(v),
    }
}

/// Parses a measured-results CSV; `name` (the path) is used in errors (`name:LINE: …`).
pub fn parse_measured_csv(name: &str, text: &str) -> Result<Vec<MeasuredRow>> {
    let header = paper::csv_header(name, text)?;
    let missing: Vec<_> = MEASURED_COLUMNS.iter().filter(|c| !header.iter().any(|h| h.trim() == **c)).collect();
    if !missing.is_empty() {
        bail!("{name}:1: missing column(s) {missing:?}; a measured-results CSV needs {}", MEASURED_COLUMNS.join(","));
    }
    let rows = paper::parse_table(name, text, |r| {
        // Runs on other data (synthetic, an image folder) measured this device's cost for an input
        // shape: their time and memory stand for the paper dataset of that shape (32×32: CIFAR-10,
        // 64×64: Tiny ImageNet); their accuracy says nothing about it and is dropped.
        let (dataset, proxy) = match r.parse::<Dataset>("dataset") {
            Ok(d) => (d, false),
            Err(_) => {
                let synthetic_side = (r.get("dataset")? == "synthetic").then_some(32);
                match r.parse_opt::<i64>("input_side").ok().flatten().or(synthetic_side) {
                    Some(32) => (Dataset::Cifar10, true),
                    Some(64) => (Dataset::TinyImageNet, true),
                    _ => return Ok(None),
                }
            }
        };
        let mut row = MeasuredRow {
            dataset,
            method: r.parse("method")?,
            size: r.parse("size")?,
            budget_hours: positive("budget_hours", r.parse_opt("budget_hours")?)?,
            epochs: r.parse_opt("epochs")?,
            accuracy: percent("accuracy", r.parse_opt("accuracy")?)?,
            cra_36: percent("cra_36", r.parse_opt("cra_36")?)?,
            seconds_per_epoch: positive("seconds_per_epoch", r.parse_opt("seconds_per_epoch")?)?,
            train_peak_bytes: r.parse_opt("train_peak_bytes")?,
            infer_ms_per_batch: positive("infer_ms_per_batch", r.parse_opt("infer_ms_per_batch")?)?,
            status: r.parse("status")?,
            device: r.get("device")?.to_string(),
        };
        if row.accuracy.is_some() && row.epochs.is_none() {
            bail!("a row with an accuracy needs its \"epochs\" (the interpolation runs over epochs)");
        }
        if row.epochs == Some(0) || row.train_peak_bytes == Some(0) {
            bail!("\"epochs\" and \"train_peak_bytes\" must be positive");
        }
        if proxy {
            row.accuracy = None;
            row.cra_36 = None;
            row.device = format!("{} (cost measured on {})", row.device, r.get("dataset")?);
        }
        Ok(Some(row))
    })?;
    Ok(rows.into_iter().flatten().collect())
}

/// The median of `v`, `None` when `v` is empty.
fn median_of(v: Vec<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| crate::stats::median(&v))
}

impl Knowledge {
    /// The paper's numbers for every dataset × registry method the paper has
    /// ([`MethodInfo::in_paper`](crate::nn::MethodInfo::in_paper)) × size (3×3 kernels). Methods
    /// added since have no entry here: they are ranked only from measured results (a user's own
    /// aggregate, see [`Knowledge::overlay`]), and the sources say so.
    pub fn paper(p: &PaperData) -> Result<Knowledge> {
        let mut entries = Vec::new();
        for dataset in Dataset::ALL {
            for method in Method::in_paper() {
                for size in ModelSize::ALL {
                    entries.push(paper_entry(p, dataset, method, size));
                }
            }
        }
        let mut source = "paper: Prach et al., CVPR 2024 (Tables 8–11, Figures 2 and 4; A100 80GB, batch 256)".to_string();
        let since: Vec<&str> = Method::ALL.iter().filter(|m| !m.info().in_paper).map(|m| m.name()).collect();
        if !since.is_empty() {
            source += &format!(
                "; {} not in the paper: ranked only from measured results (your own aggregate), if any",
                since.join(", ")
            );
        }
        Ok(Knowledge { entries, sources: vec![source] })
    }

    /// Knowledge from measured rows only.
    pub fn measured(rows: &[MeasuredRow], origin: &str) -> Knowledge {
        let mut groups: BTreeMap<(Dataset, Method, ModelSize), Vec<&MeasuredRow>> = BTreeMap::new();
        for r in rows {
            groups.entry((r.dataset, r.method, r.size)).or_default().push(r);
        }
        let entries = groups
            .into_iter()
            .map(|((dataset, method, size), rows)| measured_entry(dataset, method, size, &rows, origin))
            .collect();
        Knowledge { entries, sources: vec![format!("measured: {origin}")] }
    }

    /// `self` (the paper) with every measured field of `measured` put in its place: time,
    /// memory and inference field by field; the accuracy points as a whole set (a measured curve
    /// and the paper's come from different implementations and devices, so they are not mixed).
    pub fn overlay(mut self, measured: Knowledge) -> Knowledge {
        for m in measured.entries {
            let Some(e) = self.entries.iter_mut().find(|e| (e.dataset, e.method, e.size) == (m.dataset, m.method, m.size))
            else {
                self.entries.push(m);
                continue;
            };
            if m.time.is_some() {
                e.time = m.time;
            }
            if m.train_peak_bytes.is_some() {
                e.train_peak_bytes = m.train_peak_bytes;
                e.memory_source = Source::Measured;
                e.memory_note = m.memory_note;
            }
            if m.oom_on.is_some() {
                e.oom_on = m.oom_on;
            }
            if m.infer_ms_per_batch.is_some() {
                e.infer_ms_per_batch = m.infer_ms_per_batch;
            }
            if !m.points.is_empty() {
                e.points = m.points;
                e.accuracy_source = Source::Measured;
                e.diverged_hours = m.diverged_hours;
            } else {
                e.diverged_hours.extend(m.diverged_hours);
            }
        }
        self.sources.extend(measured.sources);
        self
    }

    /// Loads the knowledge `mode` asks for. `measured` overrides the default measured file
    /// (see [`default_measured_path`]); in `auto` mode a missing default file means "paper only".
    pub fn load(mode: KnowledgeMode, artifacts: &Path, measured: Option<&Path>) -> Result<Knowledge> {
        let path: Option<PathBuf> = measured.map(Path::to_path_buf).or_else(|| default_measured_path(artifacts));
        let read = |path: &Path| -> Result<Knowledge> {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read measured results {}; run the pipeline up to `aggregate`, pass --measured FILE, \
                     or use --knowledge paper",
                    path.display()
                )
            })?;
            let rows = parse_measured_csv(&path.display().to_string(), &text)?;
            Ok(Knowledge::measured(&rows, &path.display().to_string()))
        };
        let paper = || -> Result<Knowledge> { Knowledge::paper(PaperData::shipped()?) };
        match (mode, path) {
            (KnowledgeMode::Paper, _) => paper(),
            (KnowledgeMode::Measured, Some(p)) => read(&p),
            (KnowledgeMode::Measured, None) => bail!(
                "no measured results under {}: expected {} or {}; run the pipeline up to `aggregate`, \
                 pass --measured FILE, or use --knowledge paper",
                artifacts.display(),
                artifacts.join("aggregate").join("results.csv").display(),
                artifacts.join("aggregate").join("<key>").join("results.csv").display()
            ),
            (KnowledgeMode::Auto, Some(p)) => Ok(paper()?.overlay(read(&p)?)),
            (KnowledgeMode::Auto, None) => paper(),
        }
    }

    pub fn entry(&self, dataset: Dataset, method: Method, size: ModelSize) -> Option<&Entry> {
        self.entries.iter().find(|e| e.dataset == dataset && e.method == method && e.size == size)
    }
}

/// The measured results of this artifact store: `<artifacts>/aggregate/results.csv` if it exists,
/// else the `results.csv` of the most recently committed `<artifacts>/aggregate/<key>/` (one with a
/// `manifest.json`, the store's commit mark; docs/artifacts.md). `None` when there is neither.
pub fn default_measured_path(artifacts: &Path) -> Option<PathBuf> {
    let dir = artifacts.join("aggregate");
    let flat = dir.join("results.csv");
    if flat.is_file() {
        return Some(flat);
    }
    let committed = std::fs::read_dir(&dir).ok()?.filter_map(|e| e.ok()).filter_map(|e| {
        let key_dir = e.path();
        let name = e.file_name();
        let csv = key_dir.join("results.csv");
        let manifest = key_dir.join("manifest.json");
        if name.to_string_lossy().starts_with('.') || !csv.is_file() {
            return None;
        }
        let modified = std::fs::metadata(&manifest).and_then(|m| m.modified()).ok()?;
        Some((modified, csv))
    });
    committed.max_by_key(|(t, _)| *t).map(|(_, csv)| csv)
}

fn paper_entry(p: &PaperData, dataset: Dataset, method: Method, size: ModelSize) -> Entry {
    let pm = PaperMethod::Layer(method);
    let kind = dataset.kind();
    let budget = p.epoch_budgets_2h.iter().find(|r| r.dataset_kind == kind && r.method == pm && r.size == size);
    let time = match budget.and_then(|r| r.epochs) {
        Some(epochs) => Some(TimeBasis::PaperEpochs2h { epochs }),
        None => p
            .train_time_per_epoch
            .iter()
            .find(|r| {
                r.method == pm && r.size == size && r.dataset_kind == kind && r.source == TimeSource::Fig2Digitised
            })
            .and_then(|r| r.seconds_per_epoch)
            .map(|seconds| TimeBasis::PaperSecondsPerEpoch { seconds }),
    };
    let mem = p.train_memory_gb.iter().find(|r| r.method == method && r.size == size);
    let train_peak_bytes = mem.and_then(|r| r.peak_train_memory_gb).map(|gb| (gb * 1e9).round() as u64);
    let memory_note = match kind {
        DatasetKind::Cifar => "paper Figure 4 (32×32, batch 256, A100)".to_string(),
        DatasetKind::TinyImageNet => {
            "estimate: paper Figure 4 measured the CIFAR network (32×32); Tiny ImageNet's (64×64, half width) was not measured"
                .to_string()
        }
    };
    let unavailable = mem
        .filter(|r| r.peak_train_memory_gb.is_none() && !r.note.is_empty())
        .map(|r| r.note.clone());
    let radar = p.radar_scores.iter().find(|r| r.method == method);
    // The baseline has no radar row; after caching, AOL/BCOP run like it (score 5 → factor 1).
    let method_factor = radar.map(|r| 6.0 - f64::from(r.inference_time)).unwrap_or(1.0);
    let width_ratio = size.width_at_32() as f64 / 16.0;
    let infer_relative = Some(method_factor * width_ratio * width_ratio);
    let mut points = Vec::new();
    let mut diverged_hours = Vec::new();
    for r in p.results.iter().filter(|r| r.dataset == dataset && r.method == pm && r.size == size && r.kernel == 3) {
        if r.diverged() {
            diverged_hours.push(f64::from(r.budget_hours));
            continue;
        }
        let multiple = PAPER_BUDGETS.iter().find(|(h, _)| *h == r.budget_hours).map(|(_, m)| *m);
        if let (Some(TimeBasis::PaperEpochs2h { epochs }), Some(multiple)) = (&time, multiple) {
            points.push(Point {
                budget_hours: Some(f64::from(r.budget_hours)),
                epochs: u64::from(*epochs) * multiple,
                accuracy: r.accuracy,
                cra_36: r.cra_36,
            });
        }
    }
    points.sort_by_key(|p| p.epochs);
    Entry {
        dataset,
        method,
        size,
        input_side: dataset.input_side(),
        batch: PAPER_BATCH,
        time,
        train_peak_bytes,
        memory_source: Source::Paper,
        memory_note,
        oom_on: None,
        infer_ms_per_batch: None,
        infer_relative,
        points,
        accuracy_source: Source::Paper,
        diverged_hours,
        unavailable,
    }
}

fn measured_entry(dataset: Dataset, method: Method, size: ModelSize, rows: &[&MeasuredRow], origin: &str) -> Entry {
    let spe = median_of(rows.iter().filter_map(|r| r.seconds_per_epoch).collect());
    let device = rows
        .iter()
        .find(|r| r.seconds_per_epoch.is_some())
        .map(|r| r.device.clone())
        .unwrap_or_default();
    let train_peak_bytes = rows.iter().filter_map(|r| r.train_peak_bytes).max();
    let peak_device = rows
        .iter()
        .find(|r| r.train_peak_bytes.is_some() && r.train_peak_bytes == train_peak_bytes)
        .map(|r| r.device.clone())
        .unwrap_or_default();
    let oom_on = rows.iter().find(|r| r.status == RunStatus::Oom).map(|r| r.device.clone());
    let mut by_epochs: BTreeMap<u64, Vec<&MeasuredRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status == RunStatus::Ok && r.accuracy.is_some() && r.cra_36.is_some()) {
        if let Some(e) = r.epochs {
            by_epochs.entry(e).or_default().push(r);
        }
    }
    let points = by_epochs
        .into_iter()
        .map(|(epochs, rs)| {
            let mean = |f: fn(&MeasuredRow) -> Option<f64>| {
                let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            Point {
                budget_hours: mean(|r| r.budget_hours),
                epochs,
                accuracy: mean(|r| r.accuracy).expect("rows were filtered to have an accuracy"),
                cra_36: mean(|r| r.cra_36).expect("rows were filtered to have a CRA"),
            }
        })
        .collect();
    Entry {
        dataset,
        method,
        size,
        input_side: dataset.input_side(),
        batch: PAPER_BATCH,
        time: spe.map(|seconds| TimeBasis::Measured { seconds, device }),
        train_peak_bytes,
        memory_source: Source::Measured,
        memory_note: format!("measured on {peak_device} ({origin})"),
        oom_on,
        infer_ms_per_batch: median_of(rows.iter().filter_map(|r| r.infer_ms_per_batch).collect()),
        infer_relative: None,
        points,
        accuracy_source: Source::Measured,
        diverged_hours: rows
            .iter()
            .filter(|r| r.status == RunStatus::Diverged)
            .filter_map(|r| r.budget_hours)
            .collect(),
        unavailable: None,
    }
}
