//! `lipctl aggregate`: every run of the store in one tidy table, and the paper's tables derived
//! from it (design §2, stage "aggregate"; the input layouts are docs/artifacts.md).
//!
//! # What is read
//!
//! Every committed, checksum-verified artifact of the stages `prepare`, `measure`, `budget`,
//! `train` and `certify` ([`Store::lookup`]; a damaged one is reported and skipped). A `certify`
//! artifact belongs to the `train` key that is its first input. A train run is joined to the
//! `measure` artifact of the same (method, size, kernel, classes, input side, batch size); when
//! several device kinds measured it, the most recently committed measure wins. A run's input side
//! comes from its config (`input_side`) when present, else from the `meta.json` of a `prepare`
//! artifact among its inputs, else from a prepared dataset of the same name.
//!
//! # What is written: `artifacts/aggregate/<key>/`
//!
//! The key hashes the sorted keys of every artifact read plus a checksum of the paper's CSVs, so
//! a new run or a changed reference file makes a new aggregate and nothing else does.
//! Each table is written as `<name>.parquet` and `<name>.csv`:
//! * `results`: one row per train run and one per measurement that no run used (for example an
//!   out-of-memory model; its `dataset` is each prepared dataset of the measured input side and
//!   class count), columns [`RESULT_COLUMNS`]. The names and units of `accuracy`, `cra_*` (%),
//!   `seconds_per_epoch`, `train_peak_bytes`, `infer_ms_per_batch`, `status`, `device` are the
//!   measured-results schema `lipctl recommend` reads (src/recommend/knowledge.rs). `status` is `ok`, `diverged`,
//!   `uncertified` (trained, no certify artifact yet), `oom` or `failed`.
//! * `settings`: results grouped by (dataset, kernel, input side, budget, method, size): means
//!   over the ok runs (over all runs when none is ok, so a diverged setting keeps its chance-level
//!   numbers, as the paper prints them). `budget_hours` 0 means a fixed epoch count.
//! * `table2`: the paper's Table 2 layout at each dataset's largest budget: one row per
//!   (kernel, method, size), accuracy and CRA per dataset, and a mark `best` on the size with the
//!   highest CRA of each method (or the run's status when it is not ok).
//! * `budgets`: Tables 9–11: per (dataset, kernel, method, size) the selected lr and wd and the
//!   accuracy / CRA at every budget.
//! * `cost`: Figures 2 and 4 as numbers: time per training and inference batch, seconds per
//!   epoch (a CIFAR epoch of 50 000 images for 32×32 inputs, a Tiny ImageNet epoch of 100 000
//!   for 64×64, at the measured batch size), peak memory for training (GB = 10⁹ B) and inference
//!   (MB = 10⁶ B), parameters; out-of-memory rows keep `status = oom`.
//! * `vs_paper`: ours beside the paper's number (`data/paper/`) wherever both exist, with
//!   `diff = ours − paper` and `ratio = ours / paper`.
//! * `radar`: the six Figure 1 scores computed from our data by [`radar_scores`].
//! * `curves`: every run's `epochs.csv`, long format, with the run key.
//! * `provenance.json`: datasets (name, kind, checksum, source SHA-256), budget modes, devices,
//!   and the numerics each stage ran with (`precisions`, from the `precision` records).
//!
//! `precision` (results) says what a row ran with, from the records of [`crate::precision`]:
//! `train tf32 conv, certify fp32` for a run, `measure fp32` for a measurement; empty for
//! artifacts written before lipctl recorded it.
//!
//! Units: accuracies and CRAs in percent (as the paper prints them), times in seconds or ms,
//! memory in GB (training) and MB (inference), as in the paper's figures.

use crate::nn::convnet::ModelSize;
use crate::nn::registry::Method;
use crate::store::{Artifact, Key, ManifestInfo, Store};
use anyhow::{Context, Result};
use polars::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Stage name in the store.
pub const STAGE: &str = "aggregate";
/// Bump when a table's columns or meaning change.
pub const SCHEMA_VERSION: u32 = 2;
/// The tables written, in the order the report shows them.
pub const TABLES: [&str; 8] = ["results", "settings", "table2", "budgets", "cost", "vs_paper", "radar", "curves"];
/// Columns of `results`, in order.
pub const RESULT_COLUMNS: [&str; 34] = [
    "key",
    "stage",
    "dataset",
    "method",
    "size",
    "kernel",
    "classes",
    "input_side",
    "batch_size",
    "budget_hours",
    "epochs",
    "lr",
    "wd",
    "seed",
    "status",
    "error",
    "accuracy",
    "cra_36",
    "cra_72",
    "cra_108",
    "cra_255",
    "lipschitz_bound",
    "margin_median",
    "train_seconds_per_epoch",
    "seconds_per_epoch",
    "train_ms_per_batch",
    "infer_ms_per_batch",
    "train_peak_bytes",
    "infer_peak_bytes",
    "parameters",
    "device",
    "precision",
    "attempts",
    "memory_source",
];
/// The certified radii, as the artifact JSON spells them, and our column names.
pub const RADII: [(&str, &str); 4] =
    [("36/255", "cra_36"), ("72/255", "cra_72"), ("108/255", "cra_108"), ("1", "cra_255")];

/// Images per training epoch by input side: the paper's datasets (CIFAR 32×32: 50 000; Tiny
/// ImageNet 64×64: 100 000). Epoch seconds of other input sides are left empty.
const EPOCH_IMAGES: [(i64, i64); 2] = [(32, 50_000), (64, 100_000)];

/// Time and memory overhead factor → radar score (1–5). The paper gives no formula for these
/// axes; these bins are ours. Applied to the paper's own Figure 2 numbers they reproduce its
/// training-time scores exactly (AOL 4, BCOP 2, CPL 5, Cayley 2, LOT 1, SLL 4, SOC 3).
pub const COST_SCORE_BINS: [(f64, i64); 4] = [(1.5, 5), (2.5, 4), (5.0, 3), (10.0, 2)];

/// The aggregate's tables, in memory.
pub struct Tables {
    pub results: DataFrame,
    pub settings: DataFrame,
    pub table2: DataFrame,
    pub budgets: DataFrame,
    pub cost: DataFrame,
    pub vs_paper: DataFrame,
    pub radar: DataFrame,
    pub curves: DataFrame,
    pub provenance: Value,
}

impl Tables {
    /// The table called `name` (one of [`TABLES`]).
    pub fn get(&self, name: &str) -> Option<&DataFrame> {
        Some(match name {
            "results" => &self.results,
            "settings" => &self.settings,
            "table2" => &self.table2,
            "budgets" => &self.budgets,
            "cost" => &self.cost,
            "vs_paper" => &self.vs_paper,
            "radar" => &self.radar,
            "curves" => &self.curves,
            _ => return None,
        })
    }

    /// Reads the tables back from an aggregate folder (the Parquet files).
    pub fn load(dir: &Path) -> Result<Tables> {
        let read = |name: &str| -> Result<DataFrame> {
            let path = dir.join(format!("{name}.parquet"));
            let file = crate::fsx::open(&path)?;
            ParquetReader::new(file).finish().with_context(|| format!("reading `{}`", path.display()))
        };
        let prov_path = dir.join("provenance.json");
        let provenance: Value = serde_json::from_str(&crate::fsx::read_to_string(&prov_path)?)
            .with_context(|| format!("parsing `{}`", prov_path.display()))?;
        Ok(Tables {
            results: read("results")?,
            settings: read("settings")?,
            table2: read("table2")?,
            budgets: read("budgets")?,
            cost: read("cost")?,
            vs_paper: read("vs_paper")?,
            radar: read("radar")?,
            curves: read("curves")?,
            provenance,
        })
    }

    fn write(&self, dir: &Path) -> Result<()> {
        for name in TABLES {
            let mut df = self.get(name).expect("every name in TABLES has a table").clone();
            let path = dir.join(format!("{name}.parquet"));
            ParquetWriter::new(crate::fsx::create(&path)?)
                .finish(&mut df)
                .with_context(|| format!("writing `{}`", path.display()))?;
            let path = dir.join(format!("{name}.csv"));
            CsvWriter::new(crate::fsx::create(&path)?)
                .finish(&mut df)
                .with_context(|| format!("writing `{}`", path.display()))?;
        }
        let text = serde_json::to_string_pretty(&self.provenance).context("serialising provenance.json")?;
        crate::fsx::write(&dir.join("provenance.json"), text)
    }
}

/// Which artifacts of the store an aggregate reads.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    /// Every committed artifact (all pipelines and single runs that used the store).
    #[default]
    All,
    /// Only these keys: the tasks of one pipeline, so that runs of an edited or another pipeline
    /// in the same store stay out of its report.
    Keys(BTreeSet<String>),
}

impl Scope {
    fn includes(&self, key: &Key) -> bool {
        match self {
            Scope::All => true,
            Scope::Keys(keys) => keys.contains(key.as_str()),
        }
    }
}

/// Aggregates the store at `store_root` (the artifacts in `scope`) with the paper's numbers (the
/// copy embedded in the binary, [`crate::paper::CSV_FILES`]) into `aggregate/<key>/` and returns
/// that artifact (cached when nothing changed).
pub fn run(store_root: &Path, scope: &Scope) -> Result<Artifact> {
    let store = Store::open(store_root)?;
    let raw = collect(&store, scope)?;
    let paper = Paper::load()?;
    let mut inputs: Vec<Key> = raw.inputs.iter().cloned().collect();
    inputs.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut info = ManifestInfo::new(SCHEMA_VERSION, json!({ "paper_sha256": paper.checksum }));
    info.inputs = inputs;
    let key = info.key(STAGE);
    store.build(STAGE, &key, &info, |dir| derive(raw, &paper)?.write(dir))
}

/// The most recently committed aggregate of the store, if any.
pub fn latest(store_root: &Path) -> Result<Option<PathBuf>> {
    let store = Store::open(store_root)?;
    let mut best: Option<(u64, PathBuf)> = None;
    for art in committed(&store, STAGE)? {
        if best.as_ref().is_none_or(|(t, _)| art.manifest.created_unix >= *t) {
            best = Some((art.manifest.created_unix, art.dir.clone()));
        }
    }
    Ok(best.map(|(_, d)| d))
}

/// Every committed and verified artifact of `stage`.
fn committed(store: &Store, stage: &str) -> Result<Vec<Artifact>> {
    let dir = store.stage_dir(stage);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for path in crate::fsx::read_dir_sorted(&dir)? {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        let Ok(key) = Key::parse(&name) else { continue };
        if let Some(art) = store.lookup(stage, &key)? {
            out.push(art);
        }
    }
    Ok(out)
}

fn read_json(art: &Artifact, file: &str) -> Result<Value> {
    let path = art.path(file);
    serde_json::from_str(&crate::fsx::read_to_string(&path)?).with_context(|| format!("parsing `{}`", path.display()))
}

fn s(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(x) => Some(x.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}
fn f(v: &Value, field: &str) -> Option<f64> {
    v.get(field)?.as_f64()
}
fn i(v: &Value, field: &str) -> Option<i64> {
    let x = v.get(field)?;
    x.as_i64().or_else(|| x.as_f64().map(|f| f as i64))
}

/// The raw per-artifact frames, before any join.
pub struct Raw {
    /// One row per train artifact (config, train.json, certify.json).
    pub runs: DataFrame,
    /// One row per measure artifact.
    pub measures: DataFrame,
    /// Every epochs.csv, long.
    pub curves: DataFrame,
    /// Prepared datasets: dataset (name), input_side, classes.
    pub datasets: DataFrame,
    pub provenance: Value,
    /// Keys of every artifact read.
    pub inputs: BTreeSet<Key>,
}

/// Reads the store into [`Raw`] frames (the only per-artifact loop: parsing files).
pub fn collect(store: &Store, scope: &Scope) -> Result<Raw> {
    let committed = |store: &Store, stage: &str| -> Result<Vec<Artifact>> {
        Ok(committed(store, stage)?.into_iter().filter(|a| scope.includes(&a.key)).collect())
    };
    let mut inputs = BTreeSet::new();
    // Prepared datasets: provenance and input sides.
    let mut side_by_key: BTreeMap<String, i64> = BTreeMap::new();
    let mut side_by_name: BTreeMap<String, i64> = BTreeMap::new();
    let mut datasets = Vec::new();
    let (mut ds_name, mut ds_side, mut ds_classes) = (Vec::new(), Vec::new(), Vec::new());
    for art in committed(store, "prepare")? {
        let Ok(meta) = read_json(&art, "meta.json") else { continue };
        inputs.insert(art.key.clone());
        if let Some(side) = i(&meta, "image_side") {
            side_by_key.insert(art.key.as_str().to_string(), side);
            if let Some(name) = s(&meta, "name") {
                side_by_name.insert(name, side);
            }
        }
        ds_name.push(s(&meta, "name"));
        ds_side.push(i(&meta, "image_side"));
        ds_classes.push(meta.get("classes").and_then(|c| c.as_array()).map(|c| c.len() as i64));
        datasets.push(json!({
            "name": s(&meta, "name"), "kind": s(&meta, "dataset"), "checksum": s(&meta, "checksum"),
            "source_sha256": s(&meta, "source_sha256"), "image_side": i(&meta, "image_side"),
            "train": i(&meta, "train"), "test": i(&meta, "test"),
        }));
    }
    let mut budget_modes = BTreeSet::new();
    for art in committed(store, "budget")? {
        inputs.insert(art.key.clone());
        if let Some(m) = s(&art.manifest.config, "mode") {
            budget_modes.insert(m);
        }
    }
    let mut devices = BTreeSet::new();
    let mut precisions = BTreeSet::new();

    // Certify artifacts by the train key they certify.
    let mut certs: BTreeMap<String, Value> = BTreeMap::new();
    for art in committed(store, "certify")? {
        let Some(train_key) = art.manifest.inputs.first() else { continue };
        let cert = read_json(&art, "certify.json")?;
        inputs.insert(art.key.clone());
        certs.insert(train_key.as_str().to_string(), cert);
    }

    let mut r = RunCols::default();
    let mut curves: Option<DataFrame> = None;
    for art in committed(store, "train")? {
        inputs.insert(art.key.clone());
        let cfg = &art.manifest.config;
        let tj = read_json(&art, "train.json")?;
        let key = art.key.as_str().to_string();
        let cert = certs.get(&key);
        // train.json's RunStatus is `Completed` / `Diverged`; the tables say ok / diverged.
        let train_status = match s(&tj, "status").as_deref() {
            None | Some("Completed") | Some("ok") => "ok".to_string(),
            Some("Diverged") | Some("diverged") => "diverged".to_string(),
            Some(other) => other.to_lowercase(),
        };
        let status = if train_status != "ok" {
            train_status
        } else if let Some(c) = cert {
            s(c, "status").unwrap_or_else(|| "ok".into())
        } else {
            "uncertified".into()
        };
        let dataset = s(cfg, "dataset");
        let side = i(&tj, "input_side")
            .or_else(|| i(cfg, "input_side"))
            .or_else(|| art.manifest.inputs.iter().find_map(|k| side_by_key.get(k.as_str()).copied()))
            .or_else(|| dataset.as_ref().and_then(|d| side_by_name.get(d).copied()));
        if let Some(d) = s(&tj, "device").or_else(|| art.manifest.device.clone()) {
            devices.insert(d.clone());
            r.device.push(Some(d));
        } else {
            r.device.push(None);
        }
        r.key.push(key.clone());
        r.dataset.push(dataset);
        r.method.push(s(cfg, "method"));
        r.size.push(s(cfg, "size"));
        r.kernel.push(i(cfg, "kernel").or(Some(3)));
        r.classes.push(i(&tj, "classes").or_else(|| i(cfg, "classes")));
        r.input_side.push(side);
        r.batch_size.push(i(cfg, "batch_size"));
        r.budget_hours.push(f(cfg, "budget_hours"));
        r.epochs.push(i(&tj, "epochs").or_else(|| i(cfg, "epochs")));
        // Budget epochs and searched lr/wd are resolved at run time and recorded in train.json.
        r.lr.push(f(&tj, "lr").or_else(|| f(cfg, "lr")));
        r.wd.push(f(&tj, "wd").or_else(|| f(cfg, "wd")));
        r.seed.push(i(&tj, "final_seed").or_else(|| i(cfg, "seed")));
        r.attempts.push(tj.get("attempts").and_then(|a| a.as_array()).map(|a| a.len() as i64));
        r.status.push(status);
        // Why a run is not ok, where its artifacts say (not trained: train.json's reason).
        r.reason.push(s(&tj, "reason").or_else(|| cert.and_then(|c| s(c, "reason"))));
        let pct = |v: Option<f64>| v.map(|x| x * 100.0);
        r.accuracy.push(pct(cert.and_then(|c| f(c, "accuracy"))));
        for (j, (radius, _)) in RADII.iter().enumerate() {
            r.cra[j].push(pct(cert.and_then(|c| c.get("cra")).and_then(|c| f(c, radius))));
        }
        r.lipschitz.push(cert.and_then(|c| c.get("lipschitz")).and_then(|l| f(l, "bound")));
        r.margin.push(cert.and_then(|c| f(c, "margin_median")));
        r.train_spe.push(f(&tj, "seconds_per_epoch"));
        let stages = [("train", tj.get("precision")), ("certify", cert.and_then(|c| c.get("precision")))];
        let words: Vec<String> = stages.iter().filter_map(|(stage, p)| precision_words(stage, (*p)?, &mut precisions)).collect();
        r.precision.push((!words.is_empty()).then(|| words.join(", ")));

        let epochs_csv = art.path("epochs.csv");
        if epochs_csv.is_file() {
            let df = CsvReadOptions::default()
                .with_has_header(true)
                .try_into_reader_with_file_path(Some(epochs_csv.clone()))
                .and_then(|r| r.finish())
                .with_context(|| format!("reading `{}`", epochs_csv.display()))?;
            let df = df
                .lazy()
                .select([
                    lit(key.clone()).alias("key"),
                    col("epoch").cast(DataType::Int64),
                    col("train_loss").cast(DataType::Float64),
                    (col("eval_accuracy").cast(DataType::Float64) * lit(100.0)).alias("eval_accuracy_pct"),
                    (col("eval_cra_36").cast(DataType::Float64) * lit(100.0)).alias("eval_cra_36_pct"),
                ])
                .collect()
                .with_context(|| format!("`{}` lacks a column of docs/artifacts.md", epochs_csv.display()))?;
            curves = Some(match curves {
                Some(mut all) => {
                    all.vstack_mut(&df)?;
                    all
                }
                None => df,
            });
        }
    }
    let runs = r.frame()?;

    let mut m = MeasureCols::default();
    for art in committed(store, "measure")? {
        inputs.insert(art.key.clone());
        let cfg = &art.manifest.config;
        let mj = read_json(&art, "measure.json")?;
        let ms = |field: &str| mj.get(field).and_then(|t| f(t, "median")).map(|x| x * 1000.0);
        if let Some(d) = s(&mj, "device") {
            devices.insert(d);
        }
        m.key.push(art.key.as_str().to_string());
        m.method.push(s(cfg, "method"));
        m.size.push(s(cfg, "size"));
        m.kernel.push(i(cfg, "kernel").or(Some(3)));
        // Pipeline measurements learn the input shape from their dataset at run time and record it
        // in measure.json; stand-alone ones have it in their config.
        m.classes.push(i(&mj, "classes").or_else(|| i(cfg, "classes")));
        m.input_side.push(i(&mj, "input_side").or_else(|| i(cfg, "input_side")));
        m.batch_size.push(i(cfg, "batch_size"));
        m.device_kind.push(s(cfg, "device_kind"));
        m.device.push(s(&mj, "device"));
        m.status.push(s(&mj, "status").unwrap_or_else(|| "ok".into()));
        m.error.push(s(&mj, "error"));
        m.parameters.push(i(&mj, "parameters"));
        m.train_ms.push(ms("train_seconds_per_batch"));
        m.infer_ms.push(ms("infer_seconds_per_batch"));
        m.peak_train_gb.push(f(&mj, "peak_train_bytes").map(|b| b / 1e9));
        m.peak_infer_mb.push(f(&mj, "peak_infer_bytes").map(|b| b / 1e6));
        m.train_bytes.push(f(&mj, "peak_train_bytes").map(|b| b as i64));
        m.infer_bytes.push(f(&mj, "peak_infer_bytes").map(|b| b as i64));
        m.memory_source.push(s(&mj, "memory_source"));
        m.precision.push(mj.get("precision").and_then(|p| precision_words("measure", p, &mut precisions)));
        m.created.push(art.manifest.created_unix as i64);
    }
    let measures = m.frame()?;
    let curves = match curves {
        Some(c) => c,
        None => df!(
            "key" => Vec::<String>::new(), "epoch" => Vec::<i64>::new(), "train_loss" => Vec::<f64>::new(),
            "eval_accuracy_pct" => Vec::<f64>::new(), "eval_cra_36_pct" => Vec::<f64>::new()
        )?,
    };
    let provenance = json!({
        "datasets": datasets,
        "budget_modes": budget_modes,
        "devices": devices,
        "precisions": precisions,
        "artifacts_read": inputs.len(),
    });
    let datasets = df!("dataset" => ds_name, "input_side" => ds_side, "classes" => ds_classes)?;
    Ok(Raw { runs, measures, curves, datasets, provenance, inputs })
}

/// `<stage> <effective>` of a `precision` record (e.g. `train tf32 conv`); adds the record's
/// long form (`train on NVIDIA H100 …: tf32 conv (cuDNN TF32 on, cuBLAS TF32 off)`) to `all`.
fn precision_words(stage: &str, record: &Value, all: &mut BTreeSet<String>) -> Option<String> {
    let effective = s(record, "effective")?;
    let onoff = |k: &str| if record.get(k).and_then(Value::as_bool).unwrap_or(false) { "on" } else { "off" };
    all.insert(format!(
        "{stage} on {} {}: {effective} (cuDNN TF32 {}, cuBLAS TF32 {})",
        s(record, "device").unwrap_or_default(),
        s(record, "device_name").unwrap_or_default(),
        onoff("tf32_cudnn"),
        onoff("tf32_cublas")
    ));
    Some(format!("{stage} {effective}"))
}

#[derive(Default)]
struct RunCols {
    key: Vec<String>,
    dataset: Vec<Option<String>>,
    method: Vec<Option<String>>,
    size: Vec<Option<String>>,
    kernel: Vec<Option<i64>>,
    classes: Vec<Option<i64>>,
    input_side: Vec<Option<i64>>,
    batch_size: Vec<Option<i64>>,
    budget_hours: Vec<Option<f64>>,
    epochs: Vec<Option<i64>>,
    lr: Vec<Option<f64>>,
    wd: Vec<Option<f64>>,
    seed: Vec<Option<i64>>,
    attempts: Vec<Option<i64>>,
    status: Vec<String>,
    reason: Vec<Option<String>>,
    accuracy: Vec<Option<f64>>,
    cra: [Vec<Option<f64>>; 4],
    lipschitz: Vec<Option<f64>>,
    margin: Vec<Option<f64>>,
    train_spe: Vec<Option<f64>>,
    device: Vec<Option<String>>,
    precision: Vec<Option<String>>,
}

impl RunCols {
    fn frame(self) -> Result<DataFrame> {
        let [c36, c72, c108, c255] = self.cra;
        Ok(df!(
            "key" => self.key, "dataset" => self.dataset, "method" => self.method, "size" => self.size,
            "kernel" => self.kernel, "classes" => self.classes, "input_side" => self.input_side,
            "batch_size" => self.batch_size, "budget_hours" => self.budget_hours, "epochs" => self.epochs,
            "lr" => self.lr, "wd" => self.wd, "seed" => self.seed, "attempts" => self.attempts,
            "status" => self.status, "run_reason" => self.reason, "accuracy" => self.accuracy, "cra_36" => c36,
            "cra_72" => c72, "cra_108" => c108, "cra_255" => c255,
            "lipschitz_bound" => self.lipschitz, "margin_median" => self.margin,
            "train_seconds_per_epoch" => self.train_spe, "device" => self.device,
            "precision" => self.precision
        )?)
    }
}

#[derive(Default)]
struct MeasureCols {
    key: Vec<String>,
    method: Vec<Option<String>>,
    size: Vec<Option<String>>,
    kernel: Vec<Option<i64>>,
    classes: Vec<Option<i64>>,
    input_side: Vec<Option<i64>>,
    batch_size: Vec<Option<i64>>,
    device_kind: Vec<Option<String>>,
    device: Vec<Option<String>>,
    status: Vec<String>,
    error: Vec<Option<String>>,
    parameters: Vec<Option<i64>>,
    train_ms: Vec<Option<f64>>,
    infer_ms: Vec<Option<f64>>,
    peak_train_gb: Vec<Option<f64>>,
    peak_infer_mb: Vec<Option<f64>>,
    train_bytes: Vec<Option<i64>>,
    infer_bytes: Vec<Option<i64>>,
    memory_source: Vec<Option<String>>,
    precision: Vec<Option<String>>,
    created: Vec<i64>,
}

impl MeasureCols {
    fn frame(self) -> Result<DataFrame> {
        Ok(df!(
            "key" => self.key, "method" => self.method, "size" => self.size, "kernel" => self.kernel,
            "classes" => self.classes, "input_side" => self.input_side, "batch_size" => self.batch_size,
            "device_kind" => self.device_kind, "device" => self.device, "status" => self.status,
            "error" => self.error, "parameters" => self.parameters, "train_ms_per_batch" => self.train_ms,
            "infer_ms_per_batch" => self.infer_ms, "peak_train_gb" => self.peak_train_gb,
            "peak_infer_mb" => self.peak_infer_mb,
            "train_peak_bytes" => self.train_bytes,
            "infer_peak_bytes" => self.infer_bytes, "memory_source" => self.memory_source,
            "precision" => self.precision, "created" => self.created
        )?)
    }
}

/// The paper's numbers (data/paper/, see its README), as frames.
pub struct Paper {
    /// results.csv: dataset, method, size, kernel, budget_hours, paper_lr, paper_wd, paper_accuracy,
    /// paper_cra_36, note (prefixed so they never collide with our columns in a join).
    pub results: DataFrame,
    /// Figure 2 points (source `fig2_digitised`): method, size, paper_seconds_per_epoch.
    pub time: DataFrame,
    /// Figure 4 top: method, size, peak_train_memory_gb.
    pub train_memory: DataFrame,
    /// Uncertain inference memory: method, size, infer_memory_mb.
    pub infer_memory: DataFrame,
    /// Figure 1: method and the six scores.
    pub radar: DataFrame,
    /// SHA-256 over the files read (part of the aggregate key).
    pub checksum: String,
}

impl Paper {
    /// The shipped tables ([`crate::paper::CSV_FILES`], embedded in the binary), as frames.
    pub fn load() -> Result<Paper> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut read = |name: &str| -> Result<DataFrame> {
            let text = crate::paper::csv_text(name)?;
            hasher.update(text.as_bytes());
            CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(None)
                .into_reader_with_file_handle(std::io::Cursor::new(text.as_bytes()))
                .finish()
                .with_context(|| format!("reading the shipped data/paper/{name}"))
        };
        let results = read("results.csv")?
            .lazy()
            .select([
                col("dataset"),
                col("method"),
                col("size"),
                col("kernel").cast(DataType::Int64),
                col("budget_hours").cast(DataType::Float64),
                col("lr").cast(DataType::Float64).alias("paper_lr"),
                col("wd").cast(DataType::Float64).alias("paper_wd"),
                col("accuracy").cast(DataType::Float64).alias("paper_accuracy"),
                col("cra_36").cast(DataType::Float64).alias("paper_cra_36"),
                col("note").cast(DataType::String),
            ])
            .collect()?;
        let time = read("train_time_per_epoch.csv")?
            .lazy()
            .filter(col("source").eq(lit("fig2_digitised")))
            .select([
                col("method"),
                col("size"),
                col("seconds_per_epoch").cast(DataType::Float64).alias("paper_seconds_per_epoch"),
            ])
            .collect()?;
        let train_memory = read("train_memory_gb.csv")?
            .lazy()
            .select([col("method"), col("size"), col("peak_train_memory_gb").cast(DataType::Float64)])
            .collect()?;
        let infer_memory = read("infer_memory_mb_uncertain.csv")?
            .lazy()
            .select([col("method"), col("size"), col("infer_memory_mb").cast(DataType::Float64)])
            .collect()?;
        let radar = read("radar_scores.csv")?;
        let checksum = hex::encode(hasher.finalize());
        Ok(Paper { results, time, train_memory, infer_memory, radar, checksum })
    }
}

/// Method and size order (registry order, XS…L) as join tables, so sorting is by the paper's order
/// and not alphabetical.
fn order_frames() -> Result<(DataFrame, DataFrame)> {
    let methods = df!(
        "method" => Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "method_order" => (0..Method::ALL.len() as i64).collect::<Vec<_>>(),
        "lipschitz" => Method::ALL.iter().map(|m| m.is_lipschitz()).collect::<Vec<_>>()
    )?;
    let sizes = df!(
        "size" => ModelSize::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "size_order" => (0..ModelSize::ALL.len() as i64).collect::<Vec<_>>()
    )?;
    Ok((methods, sizes))
}

fn left(keys: &[&str]) -> (Vec<Expr>, Vec<Expr>, JoinArgs) {
    let k: Vec<Expr> = keys.iter().map(|c| col(*c)).collect();
    (k.clone(), k, JoinArgs::new(JoinType::Left))
}

fn join_left(a: LazyFrame, b: LazyFrame, keys: &[&str]) -> LazyFrame {
    let (l, r, args) = left(keys);
    a.join(b, l, r, args)
}

/// Sorts by dataset (when present), kernel, method order, size order, then `extra`.
fn in_paper_order(lf: LazyFrame, first: &[&str]) -> Result<LazyFrame> {
    let (methods, sizes) = order_frames()?;
    let lf = join_left(lf, methods.lazy().select([col("method"), col("method_order")]), &["method"]);
    let lf = join_left(lf, sizes.lazy(), &["size"]);
    let mut by: Vec<PlSmallStr> = first.iter().map(|c| PlSmallStr::from(*c)).collect();
    by.push("method_order".into());
    by.push("size_order".into());
    Ok(lf
        .sort(by, SortMultipleOptions::default().with_nulls_last(true).with_maintain_order(true))
        .drop([col("method_order"), col("size_order")]))
}

const JOIN_MEASURE: [&str; 6] = ["method", "size", "kernel", "classes", "input_side", "batch_size"];

/// Builds every derived table from the raw frames and the paper's numbers.
pub fn derive(raw: Raw, paper: &Paper) -> Result<Tables> {
    let epoch_images = df!(
        "input_side" => EPOCH_IMAGES.iter().map(|e| e.0).collect::<Vec<_>>(),
        "epoch_images" => EPOCH_IMAGES.iter().map(|e| e.1).collect::<Vec<_>>()
    )?;
    // Measures: newest per join key; seconds per epoch from the median batch time.
    let measures = join_left(
        raw.measures
            .clone()
            .lazy()
            .sort(["created"], SortMultipleOptions::default().with_order_descending(true))
            .unique_stable(
                Some(JOIN_MEASURE.iter().map(|c| PlSmallStr::from(*c)).collect()),
                UniqueKeepStrategy::First,
            ),
        epoch_images.lazy(),
        &["input_side"],
    )
    .with_columns([((col("epoch_images").cast(DataType::Float64) / col("batch_size").cast(DataType::Float64)).ceil()
        * col("train_ms_per_batch")
        / lit(1000.0))
    .alias("seconds_per_epoch")]);

    // Runs joined to their measurement.
    let mcols = [
        "key",
        "device",
        "status",
        "error",
        "parameters",
        "train_ms_per_batch",
        "infer_ms_per_batch",
        "train_peak_bytes",
        "infer_peak_bytes",
        "memory_source",
        "seconds_per_epoch",
        "precision",
    ];
    let mut msel: Vec<Expr> = JOIN_MEASURE.iter().map(|c| col(*c)).collect();
    msel.extend(mcols.iter().map(|c| col(*c).alias(format!("m_{c}"))));
    let measure_sel = measures.clone().select(msel);
    let runs = join_left(raw.runs.clone().lazy(), measure_sel.clone(), &JOIN_MEASURE).with_columns([
        lit("train").alias("stage"),
        when(col("run_reason").is_not_null()).then(col("run_reason")).otherwise(col("m_error")).alias("error"),
        col("m_parameters").alias("parameters"),
        col("m_train_ms_per_batch").alias("train_ms_per_batch"),
        col("m_infer_ms_per_batch").alias("infer_ms_per_batch"),
        col("m_train_peak_bytes").alias("train_peak_bytes"),
        col("m_infer_peak_bytes").alias("infer_peak_bytes"),
        col("m_memory_source").alias("memory_source"),
        col("m_seconds_per_epoch").alias("seconds_per_epoch"),
        col("device").fill_null(col("m_device")).alias("device"),
    ]);
    // Measurements no run used (an out-of-memory model never trains): their own rows.
    let used_measures = join_left(raw.runs.clone().lazy(), measure_sel, &JOIN_MEASURE)
        .select([col("m_key").alias("key"), col("key").alias("used_by")])
        .filter(col("key").is_not_null());
    let unused = join_left(measures.clone(), used_measures, &["key"]).filter(col("used_by").is_null());
    // A measurement holds for every prepared dataset of its shape (one row each; none: no dataset).
    let unused = join_left(unused, raw.datasets.clone().lazy(), &["input_side", "classes"])
        .with_columns([lit("measure").alias("stage"), lit(NULL).cast(DataType::Float64).alias("budget_hours")]);
    let typed = |name: &str| -> Expr { col(name).cast(typed_dtype(name)) };
    let select_all = |lf: LazyFrame, have: &[&str]| -> LazyFrame {
        lf.select(
            RESULT_COLUMNS
                .iter()
                .map(|c| if have.contains(c) { typed(c) } else { lit(NULL).cast(typed_dtype(c)).alias(*c) })
                .collect::<Vec<_>>(),
        )
    };
    let runs_df = select_all(runs, &RESULT_COLUMNS).collect()?;
    let unused_df = select_all(
        unused,
        &[
            "key",
            "stage",
            "dataset",
            "method",
            "size",
            "kernel",
            "classes",
            "input_side",
            "batch_size",
            "budget_hours",
            "status",
            "error",
            "seconds_per_epoch",
            "train_ms_per_batch",
            "infer_ms_per_batch",
            "train_peak_bytes",
            "infer_peak_bytes",
            "parameters",
            "device",
            "precision",
            "memory_source",
        ],
    )
    .collect()?;
    let mut results = runs_df;
    results.vstack_mut(&unused_df)?;
    let results = in_paper_order(results.lazy(), &["stage", "dataset", "kernel", "budget_hours"])?
        .sort(["stage"], SortMultipleOptions::default().with_order_descending(true).with_maintain_order(true))
        .collect()?;

    let settings = settings_table(&results)?;
    let table2 = table2(&settings)?;
    let budgets = budgets_table(&settings)?;
    let cost = in_paper_order(
        measures.select([
            col("method"),
            col("size"),
            col("kernel"),
            col("input_side"),
            col("batch_size"),
            col("device_kind"),
            col("device"),
            col("status"),
            col("parameters"),
            col("train_ms_per_batch"),
            col("seconds_per_epoch"),
            col("infer_ms_per_batch"),
            col("peak_train_gb"),
            col("peak_infer_mb"),
            col("memory_source"),
        ]),
        &["kernel", "input_side", "batch_size", "device_kind"],
    )?
    .collect()?;
    let vs_paper = vs_paper(&settings, &cost, paper)?;
    let radar = radar_scores(&settings, &cost)?;
    let radar = join_left(
        radar.lazy(),
        paper.radar.clone().lazy().select([
            col("method"),
            col("robust_accuracy").cast(DataType::Int64).alias("paper_ra"),
            col("accuracy").cast(DataType::Int64).alias("paper_a"),
            col("training_time").cast(DataType::Int64).alias("paper_tt"),
            col("inference_time").cast(DataType::Int64).alias("paper_it"),
            col("training_memory").cast(DataType::Int64).alias("paper_tm"),
            col("inference_memory").cast(DataType::Int64).alias("paper_im"),
        ]),
        &["method"],
    )
    .collect()?;
    Ok(Tables {
        results,
        settings,
        table2,
        budgets,
        cost,
        vs_paper,
        radar,
        curves: raw.curves,
        provenance: raw.provenance,
    })
}

fn typed_dtype(name: &str) -> DataType {
    match name {
        "key" | "stage" | "dataset" | "method" | "size" | "status" | "error" | "device" | "precision"
        | "memory_source" => {
            DataType::String
        }
        "kernel" | "classes" | "input_side" | "batch_size" | "epochs" | "seed" | "parameters"
        | "attempts" | "train_peak_bytes" | "infer_peak_bytes" => DataType::Int64,
        _ => DataType::Float64,
    }
}

/// Mean over the ok runs of a setting, or over all its runs when none is ok.
fn ok_mean(c: &str) -> Expr {
    let ok = col("status").eq(lit("ok"));
    when(ok.clone().any(true)).then(col(c).filter(ok).mean()).otherwise(col(c).mean()).alias(c)
}

const SETTING: [&str; 6] = ["dataset", "kernel", "input_side", "budget_hours", "method", "size"];

/// `settings`: one row per (dataset, kernel, input side, budget, method, size) of the train runs.
pub fn settings_table(results: &DataFrame) -> Result<DataFrame> {
    let keys: Vec<Expr> = SETTING.iter().map(|c| col(*c)).collect();
    let lf = results
        .clone()
        .lazy()
        .filter(col("stage").eq(lit("train")))
        .with_columns([col("budget_hours").fill_null(lit(0.0))])
        .group_by_stable(keys)
        .agg([
            len().cast(DataType::Int64).alias("runs"),
            col("status").eq(lit("ok")).sum().cast(DataType::Int64).alias("ok_runs"),
            // "ok" when any run is; otherwise the first run's status (diverged, uncertified, …).
            when(col("status").eq(lit("ok")).any(true))
                .then(lit("ok"))
                .otherwise(col("status").first())
                .alias("status"),
            ok_mean("accuracy"),
            ok_mean("cra_36"),
            ok_mean("cra_72"),
            ok_mean("cra_108"),
            ok_mean("cra_255"),
            col("lr").first(),
            col("wd").first(),
            col("epochs").first(),
            col("lipschitz_bound").max(),
            col("train_seconds_per_epoch").mean(),
            col("seconds_per_epoch").first(),
            col("parameters").first(),
        ]);
    Ok(in_paper_order(lf, &["dataset", "kernel", "budget_hours"])?.collect()?)
}

/// The settings at each (dataset, kernel)'s largest budget: the paper's Table 2 is at 24 h.
fn at_largest_budget(settings: &DataFrame) -> LazyFrame {
    settings
        .clone()
        .lazy()
        .filter(col("budget_hours").eq(col("budget_hours").max().over([col("dataset"), col("kernel")])))
}

/// The paper's Table 2 layout (see the module doc).
pub fn table2(settings: &DataFrame) -> Result<DataFrame> {
    let long = at_largest_budget(settings)
        .with_columns([col("cra_36")
            .eq(col("cra_36").filter(col("status").eq(lit("ok"))).max().over([
                col("dataset"),
                col("kernel"),
                col("method"),
            ]))
            .alias("is_best")])
        .with_columns([when(col("status").neq(lit("ok")))
            .then(col("status"))
            .when(col("is_best").fill_null(lit(false)))
            .then(lit("best"))
            .otherwise(lit(""))
            .alias("mark")])
        .collect()?;
    let datasets = distinct_strings(&long, "dataset")?;
    let budget_of =
        long.clone().lazy().group_by_stable([col("dataset")]).agg([col("budget_hours").first()]).collect()?;
    let wide = polars::prelude::pivot::pivot_stable(
        &long,
        ["dataset"],
        Some(["kernel", "method", "size"]),
        Some(["accuracy", "cra_36", "mark"]),
        false,
        None,
        Some("|"),
    )?;
    // Columns grouped per dataset: accuracy, CRA, mark; named "<dataset> <budget>h …".
    let mut sel = vec![col("kernel"), col("method"), col("size")];
    for d in &datasets {
        let b = budget_of
            .clone()
            .lazy()
            .filter(col("dataset").eq(lit(d.clone())))
            .collect()?
            .column("budget_hours")?
            .cast(&DataType::Float64)?
            .f64()?
            .get(0)
            .unwrap_or(0.0);
        let label = if b > 0.0 { format!("{d} {b}h") } else { format!("{d} fixed epochs") };
        for (v, name) in [("accuracy", "acc %"), ("cra_36", "CRA 36 %"), ("mark", "mark")] {
            sel.push(col(format!("{v}|{d}")).alias(format!("{label} {name}")));
        }
    }
    Ok(in_paper_order(wide.lazy().select(sel), &["kernel"])?.collect()?)
}

fn distinct_strings(df: &DataFrame, c: &str) -> Result<Vec<String>> {
    let u = df.clone().lazy().select([col(c)]).unique_stable(None, UniqueKeepStrategy::First).collect()?;
    Ok(u.column(c)?.str()?.into_iter().flatten().map(str::to_string).collect())
}

/// Tables 9–11: per budget the accuracy and CRA, with the lr and wd of each budget's run.
pub fn budgets_table(settings: &DataFrame) -> Result<DataFrame> {
    let long = settings.clone().lazy().with_columns([col("budget_hours").cast(DataType::String)]).collect()?;
    // The pivot names its columns with polars' own spelling of the budget ("2.0"), so the labels
    // are taken from the cast column itself, in numeric order.
    let budgets: Vec<String> = {
        let mut b: Vec<String> = long.column("budget_hours")?.str()?.into_iter().flatten().map(str::to_string).collect();
        b.sort_by(|x, y| x.parse::<f64>().unwrap_or(0.0).total_cmp(&y.parse::<f64>().unwrap_or(0.0)));
        b.dedup();
        b
    };
    let wide = polars::prelude::pivot::pivot_stable(
        &long,
        ["budget_hours"],
        Some(["dataset", "kernel", "method", "size"]),
        Some(["lr", "wd", "accuracy", "cra_36", "status"]),
        false,
        None,
        Some("|"),
    )?;
    let mut sel = vec![col("dataset"), col("kernel"), col("method"), col("size")];
    for b in &budgets {
        let hours: f64 = b.parse().unwrap_or(0.0);
        let label = if hours == 0.0 { "fixed".to_string() } else { format!("{hours}h") };
        for (v, name) in
            [("lr", "lr"), ("wd", "wd"), ("accuracy", "acc %"), ("cra_36", "CRA 36 %"), ("status", "status")]
        {
            sel.push(col(format!("{v}|{b}")).alias(format!("{label} {name}")));
        }
    }
    Ok(in_paper_order(wide.lazy().select(sel), &["dataset", "kernel"])?.collect()?)
}

/// Ours beside the paper's numbers (long: one row per quantity and setting).
pub fn vs_paper(settings: &DataFrame, cost: &DataFrame, paper: &Paper) -> Result<DataFrame> {
    let out_cols = |quantity: &str, ours: &str, paper_col: &str| -> Vec<Expr> {
        vec![
            col("dataset").cast(DataType::String),
            col("method"),
            col("size"),
            col("kernel").cast(DataType::Int64),
            col("budget_hours").cast(DataType::Float64),
            lit(quantity).alias("quantity"),
            col(ours).cast(DataType::Float64).alias("ours"),
            col(paper_col).cast(DataType::Float64).alias("paper"),
            col("status").cast(DataType::String).alias("our_status"),
            col("note").cast(DataType::String).alias("paper_note"),
        ]
    };
    let keys = ["dataset", "method", "size", "kernel", "budget_hours"];
    let (l, r, _) = left(&keys);
    let acc = settings.clone().lazy().join(paper.results.clone().lazy(), l, r, JoinArgs::new(JoinType::Inner));
    let mut parts = vec![
        acc.clone().select(out_cols("accuracy %", "accuracy", "paper_accuracy")),
        acc.select(out_cols("CRA 36/255 %", "cra_36", "paper_cra_36")),
    ];
    // Figures 2 and 4 are CIFAR (32×32) at batch 256 on the A100; compare our 32×32 measurements.
    let ours_cost = cost
        .clone()
        .lazy()
        .filter(col("input_side").eq(lit(32i64)).and(col("status").eq(lit("ok"))))
        .with_columns([lit("cifar (32×32)").alias("dataset"), lit(NULL).cast(DataType::Float64).alias("budget_hours")]);
    let inner = |a: LazyFrame, b: &DataFrame| {
        a.join(
            b.clone().lazy(),
            [col("method"), col("size")],
            [col("method"), col("size")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_columns([lit(NULL).cast(DataType::String).alias("note")])
    };
    parts.push(inner(ours_cost.clone(), &paper.time).select(out_cols(
        "seconds per epoch",
        "seconds_per_epoch",
        "paper_seconds_per_epoch",
    )));
    parts.push(inner(ours_cost.clone(), &paper.train_memory).select(out_cols(
        "peak training memory GB",
        "peak_train_gb",
        "peak_train_memory_gb",
    )));
    parts.push(inner(ours_cost, &paper.infer_memory).select(out_cols(
        "peak inference memory MB (paper value uncertain)",
        "peak_infer_mb",
        "infer_memory_mb",
    )));
    let all = concat(parts, UnionArgs::default())?
        .filter(col("ours").is_not_null().and(col("paper").is_not_null()))
        .with_columns([(col("ours") - col("paper")).alias("diff"), (col("ours") / col("paper")).alias("ratio")]);
    Ok(in_paper_order(all, &["quantity", "dataset", "kernel", "budget_hours"])?.collect()?)
}

/// The radar scores of Figure 1, computed from our data.
///
/// * Robust accuracy (`ra`) and accuracy (`a`), the paper's rule (§5.3): for each (dataset,
///   kernel), at its largest budget, rank every ok (method, size) of a 1-Lipschitz method by the
///   metric (ties share the better rank); count per method its top-1, top-3 and top-10
///   placements and sum them (a top-1 counts three times). The paper states no mapping from this
///   sum to 1–5, and its published scores are not a function of it (paper-results.md §6.8); we
///   use `score = 1 + round(4 · sum / max sum)`: no placement → 1, the best method → 5.
/// * Training time (`tt`), inference time (`it`), training memory (`tm`), inference memory
///   (`im`): per (size, kernel, input side, batch size, device kind) the cheapest method's value
///   is the reference; a method's factor is the mean of value / reference over its measured
///   settings; [`COST_SCORE_BINS`] map it to 5…2, anything larger to 1. A method that
///   ran out of memory anywhere scores 1 on all four axes ("does not fit").
///
/// Input: `settings` (columns dataset, kernel, budget_hours, method, size, status, accuracy,
/// cra_36) and `cost` (method, size, kernel, input_side, batch_size, device_kind, status,
/// train_ms_per_batch, infer_ms_per_batch, peak_train_gb, peak_infer_mb). Output: one row per
/// 1-Lipschitz method found in either, in registry order.
pub fn radar_scores(settings: &DataFrame, cost: &DataFrame) -> Result<DataFrame> {
    let (methods, _) = order_frames()?;
    let lip = methods.clone().lazy().filter(col("lipschitz")).select([col("method")]);
    let ranked = at_largest_budget(settings).filter(col("status").eq(lit("ok"))).join(
        lip.clone(),
        [col("method")],
        [col("method")],
        JoinArgs::new(JoinType::Inner),
    );
    let group = [col("dataset"), col("kernel")];
    let rank = |c: &str| {
        col(c)
            .rank(RankOptions { method: RankMethod::Min, descending: true }, None)
            .over(group.clone())
            .cast(DataType::Int64)
    };
    let placements = ranked
        .with_columns([rank("cra_36").alias("ra_rank"), rank("accuracy").alias("a_rank")])
        .group_by([col("method")])
        .agg(
            ["ra", "a"]
                .iter()
                .flat_map(|p| {
                    let r = col(format!("{p}_rank"));
                    [
                        r.clone().lt_eq(lit(1)).sum().cast(DataType::Int64).alias(format!("{p}_top1")),
                        r.clone().lt_eq(lit(3)).sum().cast(DataType::Int64).alias(format!("{p}_top3")),
                        r.lt_eq(lit(10)).sum().cast(DataType::Int64).alias(format!("{p}_top10")),
                    ]
                })
                .collect::<Vec<_>>(),
        )
        .with_columns(["ra", "a"].map(|p| {
            (col(format!("{p}_top1")) + col(format!("{p}_top3")) + col(format!("{p}_top10"))).alias(format!("{p}_sum"))
        }))
        .with_columns(["ra", "a"].map(|p| {
            let sum = col(format!("{p}_sum")).cast(DataType::Float64);
            let max = col(format!("{p}_sum")).max().cast(DataType::Float64);
            when(max.clone().gt(lit(0.0)))
                .then((lit(1.0) + (lit(4.0) * sum / max).round(0)).cast(DataType::Int64))
                .otherwise(lit(1i64))
                .alias(format!("{p}_score"))
        }));

    let cfg = [col("size"), col("kernel"), col("input_side"), col("batch_size"), col("device_kind")];
    let axes =
        [("tt", "train_ms_per_batch"), ("it", "infer_ms_per_batch"), ("tm", "peak_train_gb"), ("im", "peak_infer_mb")];
    let ok = col("status").eq(lit("ok"));
    let factors = cost
        .clone()
        .lazy()
        .with_columns(
            axes.iter()
                .map(|(a, c)| (col(*c) / col(*c).filter(ok.clone()).min().over(cfg.clone())).alias(format!("{a}_f")))
                .collect::<Vec<_>>(),
        )
        .group_by([col("method")])
        .agg({
            let mut v = vec![col("status").eq(lit("oom")).any(true).alias("any_oom")];
            for (a, _) in axes {
                let fcol = col(format!("{a}_f")).filter(ok.clone());
                v.push(fcol.mean().alias(format!("{a}_factor")));
            }
            v
        })
        .with_columns(axes.map(|(a, _)| {
            let fc = col(format!("{a}_factor"));
            let mut e = when(fc.clone().is_not_null()).then(lit(1i64)).otherwise(lit(NULL).cast(DataType::Int64));
            for (limit, score) in COST_SCORE_BINS.iter().rev() {
                e = when(fc.clone().lt(lit(*limit))).then(lit(*score)).otherwise(e);
            }
            when(col("any_oom")).then(lit(1i64)).otherwise(e).alias(format!("{a}_score"))
        }));
    let present = concat(
        [settings.clone().lazy().select([col("method")]), cost.clone().lazy().select([col("method")])],
        UnionArgs::default(),
    )?
    .unique_stable(None, UniqueKeepStrategy::First);
    let out = methods
        .lazy()
        .filter(col("lipschitz"))
        .join(present, [col("method")], [col("method")], JoinArgs::new(JoinType::Inner))
        .select([col("method"), col("method_order")]);
    let out = join_left(join_left(out, placements, &["method"]), factors, &["method"])
        .sort(["method_order"], SortMultipleOptions::default())
        .select([
            col("method"),
            col("ra_score"),
            col("a_score"),
            col("tt_score"),
            col("it_score"),
            col("tm_score"),
            col("im_score"),
            col("ra_top1"),
            col("ra_top3"),
            col("ra_top10"),
            col("ra_sum"),
            col("a_top1"),
            col("a_top3"),
            col("a_top10"),
            col("a_sum"),
            col("tt_factor"),
            col("it_factor"),
            col("tm_factor"),
            col("im_factor"),
            col("any_oom"),
        ]);
    Ok(out.collect()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings by hand: dataset A at 24 h (plus a 2 h row that must be ignored, a non-Lipschitz
    /// Standard row and a diverged LOT row that must not be ranked); dataset B only at 2 h.
    fn settings() -> DataFrame {
        let rows: [(&str, i64, &str, &str, &str, f64, f64); 11] = [
            ("A", 24, "SOC", "XS", "ok", 77.0, 60.0),
            ("A", 24, "SOC", "S", "ok", 78.0, 65.0),
            ("A", 24, "CPL", "XS", "ok", 76.0, 62.0),
            ("A", 24, "CPL", "S", "ok", 75.0, 58.0),
            ("A", 24, "AOL", "XS", "ok", 80.0, 50.0),
            ("A", 24, "AOL", "S", "ok", 79.0, 55.0),
            ("A", 24, "Standard", "XS", "ok", 99.0, 99.0),
            ("A", 24, "LOT", "XS", "diverged", 10.0, 0.0),
            ("A", 2, "AOL", "XS", "ok", 90.0, 90.0),
            ("B", 2, "SOC", "XS", "ok", 72.0, 40.0),
            ("B", 2, "CPL", "XS", "ok", 50.0, 40.0),
        ];
        let mut rows = rows.to_vec();
        rows.push(("B", 2, "AOL", "XS", "ok", 70.0, 30.0));
        df!(
            "dataset" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "kernel" => vec![3i64; rows.len()],
            "budget_hours" => rows.iter().map(|r| r.1 as f64).collect::<Vec<_>>(),
            "method" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "size" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            "status" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            "accuracy" => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
            "cra_36" => rows.iter().map(|r| r.6).collect::<Vec<_>>()
        )
        .unwrap()
    }

    /// Measurements by hand at sizes XS and S (same configuration); LOT runs out of memory.
    fn cost() -> DataFrame {
        // method, size, status, train ms, infer ms, train GB, infer MB
        let rows: [(&str, &str, &str, Option<f64>, Option<f64>, Option<f64>, Option<f64>); 10] = [
            ("Standard", "XS", "ok", Some(10.0), Some(5.0), Some(1.0), Some(100.0)),
            ("Standard", "S", "ok", Some(20.0), Some(8.0), Some(2.0), Some(200.0)),
            ("AOL", "XS", "ok", Some(14.0), Some(4.0), Some(1.2), Some(100.0)),
            ("AOL", "S", "ok", Some(40.0), Some(8.0), Some(2.4), Some(200.0)),
            ("CPL", "XS", "ok", Some(30.0), Some(6.0), Some(2.0), Some(100.0)),
            ("CPL", "S", "ok", Some(50.0), Some(8.0), Some(4.0), Some(200.0)),
            ("SOC", "XS", "ok", Some(120.0), Some(20.0), Some(4.0), Some(300.0)),
            ("SOC", "S", "ok", Some(200.0), Some(80.0), Some(8.0), Some(600.0)),
            ("LOT", "XS", "oom", None, None, None, None),
            ("LOT", "S", "oom", None, None, None, None),
        ];
        df!(
            "method" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "size" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "kernel" => vec![3i64; rows.len()],
            "input_side" => vec![32i64; rows.len()],
            "batch_size" => vec![256i64; rows.len()],
            "device_kind" => vec!["cpu"; rows.len()],
            "status" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "train_ms_per_batch" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            "infer_ms_per_batch" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            "peak_train_gb" => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
            "peak_infer_mb" => rows.iter().map(|r| r.6).collect::<Vec<_>>()
        )
        .unwrap()
    }

    fn column_i64(df: &DataFrame, c: &str) -> Vec<Option<i64>> {
        df.column(c).unwrap().i64().unwrap().into_iter().collect()
    }

    #[test]
    fn radar_scores_follow_the_rule_on_a_hand_made_table() {
        let r = radar_scores(&settings(), &cost()).unwrap();
        let methods: Vec<&str> = r.column("method").unwrap().str().unwrap().into_iter().flatten().collect();
        // Registry order; Standard (not 1-Lipschitz) and BCOP (no data) absent.
        assert_eq!(methods, ["AOL", "CPL", "LOT", "SOC"]);
        // CRA ranks, A@24h: SOC-S 1, CPL-XS 2, SOC-XS 3, CPL-S 4, AOL-S 5, AOL-XS 6 (the 2 h AOL row,
        // Standard and the diverged LOT are not ranked). B@2h: SOC and CPL tie at 1, AOL 3.
        // top1/top3/top10: AOL 0/1/3 = 4, CPL 1/2/3 = 6, SOC 2/3/3 = 8.
        assert_eq!(column_i64(&r, "ra_top1"), [Some(0), Some(1), None, Some(2)]);
        assert_eq!(column_i64(&r, "ra_top3"), [Some(1), Some(2), None, Some(3)]);
        assert_eq!(column_i64(&r, "ra_sum"), [Some(4), Some(6), None, Some(8)]);
        // 1 + round(4·sum/8): 3, 4, –, 5.
        assert_eq!(column_i64(&r, "ra_score"), [Some(3), Some(4), None, Some(5)]);
        // Accuracy: A: AOL-XS 1, AOL-S 2, SOC-S 3, SOC-XS 4, CPL-XS 5, CPL-S 6; B: SOC 1, AOL 2, CPL 3.
        // AOL 1/3/3 = 7, CPL 0/1/3 = 4, SOC 1/2/3 = 6 → 1 + round(4·sum/7): 5, 3 (2.29), 4 (3.43).
        assert_eq!(column_i64(&r, "a_sum"), [Some(7), Some(4), None, Some(6)]);
        assert_eq!(column_i64(&r, "a_score"), [Some(5), Some(3), None, Some(4)]);
        // Training time factors against Standard: AOL (1.4 + 2)/2 = 1.7 → 4; CPL (3 + 2.5)/2 = 2.75
        // → 3; SOC (12 + 10)/2 = 11 → 1; LOT out of memory → 1.
        assert_eq!(column_i64(&r, "tt_score"), [Some(4), Some(3), Some(1), Some(1)]);
        let tt: Vec<Option<f64>> = r.column("tt_factor").unwrap().f64().unwrap().into_iter().collect();
        const FLOAT_TOL: f64 = 1e-12; // means of two ratios of small numbers
        assert!((tt[0].unwrap() - 1.7).abs() < FLOAT_TOL);
        assert!((tt[3].unwrap() - 11.0).abs() < FLOAT_TOL);
        // Inference time: the reference at XS is AOL (4 ms), not Standard. AOL 1 → 5;
        // CPL (1.5 + 1)/2 = 1.25 → 5; SOC (5 + 10)/2 = 7.5 → 2.
        assert_eq!(column_i64(&r, "it_score"), [Some(5), Some(5), Some(1), Some(2)]);
        // Training memory: AOL 1.2 → 5; CPL 2 → 4; SOC 4 → 3. Inference memory: 1, 1, 3.
        assert_eq!(column_i64(&r, "tm_score"), [Some(5), Some(4), Some(1), Some(3)]);
        assert_eq!(column_i64(&r, "im_score"), [Some(5), Some(5), Some(1), Some(3)]);
    }

    /// Our time rule applied to the paper's own Figure 2 numbers gives the paper's published
    /// training-time scores (radar_scores.csv), an independent check of the bins.
    #[test]
    fn cost_rule_reproduces_the_papers_training_time_scores_from_figure_2() {
        let paper = Paper::load().unwrap();
        let cost = paper
            .time
            .clone()
            .lazy()
            .select([
                col("method"),
                col("size"),
                lit(3i64).alias("kernel"),
                lit(32i64).alias("input_side"),
                lit(256i64).alias("batch_size"),
                lit("A100").alias("device_kind"),
                when(col("paper_seconds_per_epoch").is_null()).then(lit("oom")).otherwise(lit("ok")).alias("status"),
                col("paper_seconds_per_epoch").alias("train_ms_per_batch"),
                lit(NULL).cast(DataType::Float64).alias("infer_ms_per_batch"),
                lit(NULL).cast(DataType::Float64).alias("peak_train_gb"),
                lit(NULL).cast(DataType::Float64).alias("peak_infer_mb"),
            ])
            .collect()
            .unwrap();
        let empty = settings().clear();
        let ours = radar_scores(&empty, &cost).unwrap();
        let joined = ours
            .lazy()
            .join(paper.radar.clone().lazy(), [col("method")], [col("method")], JoinArgs::new(JoinType::Inner))
            .select([col("method"), col("tt_score"), col("training_time").cast(DataType::Int64)])
            .collect()
            .unwrap();
        assert_eq!(joined.height(), 7, "{joined}");
        assert_eq!(column_i64(&joined, "tt_score"), column_i64(&joined, "training_time"), "{joined}");
    }

    #[test]
    fn table2_marks_the_best_size_and_non_ok_statuses() {
        let t = table2(&settings()).unwrap();
        let marks: Vec<Option<&str>> = t.column("A 24h mark").unwrap().str().unwrap().into_iter().collect();
        let methods: Vec<Option<&str>> = t.column("method").unwrap().str().unwrap().into_iter().collect();
        let sizes: Vec<Option<&str>> = t.column("size").unwrap().str().unwrap().into_iter().collect();
        let mark = |m: &str, s: &str| {
            (0..t.height()).find(|&i| methods[i] == Some(m) && sizes[i] == Some(s)).and_then(|i| marks[i])
        };
        assert_eq!(mark("SOC", "S"), Some("best"));
        assert_eq!(mark("SOC", "XS"), Some(""));
        assert_eq!(mark("CPL", "XS"), Some("best"));
        assert_eq!(mark("AOL", "S"), Some("best"), "the 2 h AOL-XS row is not at the largest budget");
        assert_eq!(mark("LOT", "XS"), Some("diverged"));
        // Dataset B's largest budget is 2 h.
        assert!(t.column("B 2h CRA 36 %").is_ok());
    }
}
