//! `lipctl aggregate`: every run of the store in one tidy table, and the paper's tables derived
//! from it (design §2, stage "aggregate"; the input layouts are docs/artifacts.md).
//!
//! # What is read
//!
//! Every committed, checksum-verified artifact of the stages `prepare`, `measure`, `budget`,
//! `train`, `certify` and `import` ([`Store::lookup`]; a damaged one is reported and skipped). A
//! `certify` artifact belongs to the `train` (or, with `imported: true` in its config, `import`)
//! key that is its first input. A train run is joined to the
//! `measure` artifact of the same (method, size, kernel, classes, input side, batch size); when
//! several device kinds measured it, the most recently committed measure wins. A run's input side
//! comes from its config (`input_side`) when present, else from the `meta.json` of a `prepare`
//! artifact among its inputs, else from a prepared dataset of the same name.
//!
//! # What is written: `artifacts/aggregate/<key>/`
//!
//! The key hashes the sorted keys of every artifact read, the model checksum each train artifact
//! holds and each certificate names, and a checksum of the paper's CSVs, so a new run, a
//! retrained model, a certificate of another model or a changed reference file makes a new
//! aggregate, and nothing else does (two builds of the same model, differing only in wall-clock
//! fields, share it).
//! Each table is written as `<name>.parquet` and `<name>.csv`:
//! * `results`: one row per train run, one per measurement that no run used (for example an
//!   out-of-memory model; its `dataset` is each prepared dataset of the measured input side and
//!   class count) and one per certificate of an imported model (`stage` train, measure or
//!   imported), columns [`RESULT_COLUMNS`]. The names and units of `accuracy`, `cra_*` (%),
//!   `seconds_per_epoch`, `train_peak_bytes`, `infer_ms_per_batch`, `status`, `device` are the
//!   measured-results schema `lipctl recommend` reads (src/recommend/knowledge.rs). `status` is `ok`, `diverged`,
//!   `uncertified` (trained, no certify artifact yet), `oom` or `failed`. `seed` is the seed that
//!   trained (the last attempt's in `train.json`; a diverged attempt is retried with a derived
//!   seed), `device` the train manifest's (else the measurement's).
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
//! * `imported`: the authors' models imported with `lipctl import` ([`crate::imported`]), one row
//!   per certificate (`lipctl import --certify`; a certify artifact whose config says
//!   `imported: true` and whose inputs are the import and the prepared test data): accuracy, CRA
//!   by both certificates and ERA at every radius, attack flips, the audited L, the test data and
//!   how many points, beside the paper's numbers at 24 h (`paper_*`; [`imported_table`]). The same
//!   rows are in `results` with `stage = imported`; they are in no other table (no training run,
//!   no budget, no seed).
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
//!
//! # Where
//!
//! [`mod@collect`] reads the typed records of the store into one row per artifact ([`Raw`]);
//! [`tables`] joins them into the derived tables ([`fn@derive`]); [`radar`] computes Figure 1.

pub mod collect;
pub mod radar;
pub mod tables;
#[cfg(test)]
mod tests;

pub use collect::{collect, Raw};
pub use radar::{radar_scores, COST_SCORE_BINS};
pub use tables::{budgets_table, derive, imported_table, settings_table, table2, vs_paper, Paper, IMPORTED_COLUMNS};

use crate::records::{self, KeyOrder, Record};
use crate::store::{Artifact, Key, ManifestInfo, Store};
use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};


/// Stage name in the store.
pub const STAGE: &str = "aggregate";
/// Bump when a table's columns or meaning change.
pub const SCHEMA_VERSION: u32 = 4;
/// The tables written, in the order the report shows them.
pub const TABLES: [&str; 9] = ["results", "imported", "settings", "table2", "budgets", "cost", "vs_paper", "radar", "curves"];
/// Columns of `results`, in order.
pub const RESULT_COLUMNS: [&str; 49] = [
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
    "cra_pw_36",
    "cra_pw_72",
    "cra_pw_108",
    "cra_pw_255",
    "era_36",
    "era_72",
    "era_108",
    "era_255",
    "attack_cra_36",
    "attack_cra_72",
    "attack_cra_108",
    "attack_cra_255",
    "attack_flips",
    "certificate",
    "model_sha256",
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


/// `provenance.json` of an aggregate: what the tables were made from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregateProvenance {
    /// Every prepared dataset read, in store order.
    pub datasets: Vec<DatasetProvenance>,
    /// The `mode` of every budget artifact read (`measured`, `paper`).
    pub budget_modes: BTreeSet<String>,
    /// Every device that trained or measured (the manifests' and measurements' `device`).
    pub devices: BTreeSet<String>,
    /// Every stage's numerics in words (`train on cpu AMD EPYC: fp32 (cuDNN TF32 on, …)`).
    pub precisions: BTreeSet<String>,
    /// How many artifacts were read.
    pub artifacts_read: usize,
}

/// One prepared dataset in [`AggregateProvenance`] (from its `meta.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetProvenance {
    /// The dataset's name in the pipeline.
    pub name: String,
    /// The dataset kind (`cifar10`, `synthetic`, …).
    pub kind: String,
    /// The prepared data's checksum (the prepare key).
    pub checksum: String,
    /// SHA-256 of the source; empty for `synthetic`.
    pub source_sha256: String,
    /// Image side in pixels.
    pub image_side: usize,
    /// Training images.
    pub train: usize,
    /// Test images.
    pub test: usize,
}

impl Record for AggregateProvenance {
    const FILE: &'static str = "provenance.json";
    const SCHEMA_VERSION: u32 = SCHEMA_VERSION;
    const WHAT: &'static str = "an aggregate's provenance";
    const KEY_ORDER: KeyOrder = KeyOrder::Sorted;
}

/// The aggregate's tables, in memory.
pub struct Tables {
    pub results: DataFrame,
    pub imported: DataFrame,
    pub settings: DataFrame,
    pub table2: DataFrame,
    pub budgets: DataFrame,
    pub cost: DataFrame,
    pub vs_paper: DataFrame,
    pub radar: DataFrame,
    pub curves: DataFrame,
    pub provenance: AggregateProvenance,
}

impl Tables {
    /// The table called `name` (one of [`TABLES`]).
    pub fn get(&self, name: &str) -> Option<&DataFrame> {
        Some(match name {
            "results" => &self.results,
            "imported" => &self.imported,
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
        let provenance: AggregateProvenance = records::read_file(&dir.join(AggregateProvenance::FILE))?;
        Ok(Tables {
            results: read("results")?,
            imported: read("imported")?,
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
        records::write(dir, &self.provenance)
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
    pub(crate) fn includes(&self, key: &Key) -> bool {
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
    let raw = collect::collect(&store, scope)?;
    let paper = Paper::load()?;
    // The models behind the inputs are in the key as well as their keys: a retrained model or a
    // certificate of another model (same keys) makes a new aggregate.
    let config = json!({ "paper_sha256": paper.checksum, "inputs_content_sha256": raw.inputs.content_sha256() });
    let mut info = ManifestInfo::new(SCHEMA_VERSION, config);
    info.inputs = raw.inputs.keys();
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
pub(crate) fn committed(store: &Store, stage: &str) -> Result<Vec<Artifact>> {
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
