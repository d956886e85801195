//! Collect: the store's typed records ([`crate::records`]) → the raw per-artifact frames of
//! [`Raw`] (the only per-artifact loop; every join is in [`super::tables`]).
//!
//! Records are read through their stage's type: `meta.json` ([`Meta`]), `measure.json`
//! ([`MeasureRecord`]), `train.json` ([`TrainRecord`]), `certify.json` ([`CertifyRecord`]) and
//! `import.json` ([`ImportRecord`]).
//! Run metadata (method, size, dataset, …) comes from each manifest's key config, read through the
//! views `RunConfig` (train, search and measure keys) and `BudgetConfig`.

use super::{committed, AggregateProvenance, DatasetProvenance, Scope, RADII};
use crate::certify::CertifyRecord;
use crate::data::Meta;
use crate::imported::ImportRecord;
use crate::measure::MeasureRecord;
use crate::precision::PrecisionRecord;
use crate::records;
use crate::store::{Artifact, Key, Store};
use crate::train::TrainRecord;
use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The raw per-artifact frames, before any join.
pub struct Raw {
    /// One row per train artifact (config, train.json, certify.json); `stage` "train".
    pub runs: DataFrame,
    /// One row per certificate of an imported model (one `uncertified` row for an imported model
    /// without one): the columns of `runs` (`stage` "imported"), then `source_file`,
    /// `source_sha256` (of the authors' file), `test_data` (the prepared dataset certified on),
    /// `samples` (test points certified) and `certify_key`.
    pub imported: DataFrame,
    /// One row per measure artifact.
    pub measures: DataFrame,
    /// Every epochs.csv, long.
    pub curves: DataFrame,
    /// Prepared datasets: dataset (name), input_side, classes.
    pub datasets: DataFrame,
    pub provenance: AggregateProvenance,
    /// Every artifact read.
    pub inputs: Inputs,
}

/// The artifacts an aggregate read: each key with the model checksum it stands for (a train
/// artifact's model file, the model a certificate names; empty for the others). A retrained
/// model or a certificate made again for another model keeps its key but changes the checksum,
/// so the aggregate built from it is a new one; wall-clock fields, which differ between two
/// builds of the same model, do not enter.
#[derive(Default)]
pub struct Inputs(BTreeMap<Key, String>);

impl Inputs {
    fn add(&mut self, art: &Artifact, model_sha256: Option<&str>) {
        self.0.insert(art.key.clone(), model_sha256.unwrap_or_default().to_string());
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Vec<Key> {
        self.0.keys().cloned().collect()
    }

    /// SHA-256 (hex) over every key and its model checksum, in key order.
    pub fn content_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for (key, model) in &self.0 {
            hasher.update(key.as_str().as_bytes());
            hasher.update(model.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// Reads the store's artifacts in `scope` into [`Raw`] frames.
pub fn collect(store: &Store, scope: &Scope) -> Result<Raw> {
    let committed = |stage: &str| -> Result<Vec<Artifact>> {
        Ok(committed(store, stage)?.into_iter().filter(|a| scope.includes(&a.key)).collect())
    };
    let mut inputs = Inputs::default();
    let datasets = Datasets::collect(committed("prepare")?, &mut inputs);
    let mut budget_modes = BTreeSet::new();
    for art in committed("budget")? {
        inputs.add(&art, None);
        if let Some(mode) = config_view::<BudgetConfig>(&art)?.mode {
            budget_modes.insert(mode);
        }
    }
    let mut devices = BTreeSet::new();
    let mut precisions = BTreeSet::new();
    // Certify artifacts by the train key they certify (their first input); those of imported
    // models (config `imported: true`, first input the import key) apart, every one kept.
    let mut certs: BTreeMap<String, CertifyRecord> = BTreeMap::new();
    let mut imported_certs: BTreeMap<String, Vec<Artifact>> = BTreeMap::new();
    for art in committed("certify")? {
        let Some(first) = art.manifest.inputs.first().map(|k| k.as_str().to_string()) else { continue };
        let record: CertifyRecord = records::read(&art)?;
        inputs.add(&art, record.certified.as_ref().and_then(|c| c.model_sha256.as_deref()));
        if art.manifest.config.get("imported") == Some(&Value::Bool(true)) {
            imported_certs.entry(first).or_default().push(art);
        } else {
            certs.insert(first, record);
        }
    }
    let mut runs = RunCols::default();
    let mut curves = Curves::default();
    for art in committed("train")? {
        // A certificate of a model this artifact no longer holds describes nothing: uncertified.
        let model = art.file_sha256(crate::train::trainer::MODEL_FILE);
        inputs.add(&art, model);
        let cert = certs.get(art.key.as_str()).filter(|c| !c.is_stale(model));
        runs.push(&art, cert, &datasets, &mut devices, &mut precisions)?;
        curves.read(&art)?;
    }
    let mut imported = ImportedCols::default();
    for art in committed(crate::imported::STAGE)? {
        inputs.add(&art, None);
        let certified = imported_certs.get(art.key.as_str()).map(Vec::as_slice).unwrap_or_default();
        imported.push(&art, certified, &datasets, &mut devices, &mut precisions)?;
    }
    let mut measures = MeasureCols::default();
    for art in committed("measure")? {
        inputs.add(&art, None);
        measures.push(&art, &mut devices, &mut precisions)?;
    }
    let datasets_frame = datasets.frame()?;
    let provenance = AggregateProvenance {
        datasets: datasets.provenance,
        budget_modes,
        devices,
        precisions,
        artifacts_read: inputs.len(),
    };
    Ok(Raw {
        runs: runs.frame()?,
        imported: imported.frame()?,
        measures: measures.frame()?,
        curves: curves.frame()?,
        datasets: datasets_frame,
        provenance,
        inputs,
    })
}

/// The fields of a train, search or measure task's key config (`manifest.json` `config`, built by
/// `pipeline::plan`; docs/artifacts.md) that the aggregate reads. Values of another JSON type
/// than the field's (`lr: "search"`, `epochs: {"budget_hours": …}`) read as absent: the run's
/// record holds the resolved value.
#[derive(Debug, Default, Deserialize)]
struct RunConfig {
    #[serde(default, deserialize_with = "word")]
    dataset: Option<String>,
    #[serde(default, deserialize_with = "word")]
    method: Option<String>,
    #[serde(default, deserialize_with = "word")]
    size: Option<String>,
    #[serde(default, deserialize_with = "integer")]
    kernel: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    classes: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    input_side: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    batch_size: Option<i64>,
    #[serde(default, deserialize_with = "number")]
    budget_hours: Option<f64>,
    #[serde(default, deserialize_with = "integer")]
    epochs: Option<i64>,
    #[serde(default, deserialize_with = "number")]
    lr: Option<f64>,
    #[serde(default, deserialize_with = "number")]
    wd: Option<f64>,
    #[serde(default, deserialize_with = "integer")]
    seed: Option<i64>,
    /// Measure tasks only.
    #[serde(default, deserialize_with = "word")]
    device_kind: Option<String>,
}

/// The field of a budget task's key config that the aggregate reads.
#[derive(Debug, Default, Deserialize)]
struct BudgetConfig {
    #[serde(default, deserialize_with = "word")]
    mode: Option<String>,
}

/// An artifact's key config through the view `C`.
fn config_view<C: for<'de> Deserialize<'de>>(art: &Artifact) -> Result<C> {
    C::deserialize(&art.manifest.config)
        .with_context(|| format!("the config in `{}` is not an object", art.path(crate::store::MANIFEST).display()))
}

/// A string; another JSON value as its JSON text; `null` as absent.
fn word<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(x) => Some(x),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

/// A number (fractions truncated); anything else as absent.
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

/// A number; anything else as absent.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(Value::deserialize(d)?.as_f64())
}

/// The spelling of a unit enum in its record (`cpu_rss_child`, `oom`, `cifar10`).
fn serde_word<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value).ok()?.as_str().map(str::to_string)
}

/// The prepared datasets: input sides by prepare key and by name, the `datasets` frame's
/// columns, and their provenance.
#[derive(Default)]
struct Datasets {
    side_by_key: BTreeMap<String, i64>,
    name_by_key: BTreeMap<String, String>,
    side_by_name: BTreeMap<String, i64>,
    name: Vec<String>,
    side: Vec<i64>,
    classes: Vec<i64>,
    provenance: Vec<DatasetProvenance>,
}

impl Datasets {
    /// Every `prepare` artifact whose `meta.json` reads (others are skipped, as before records
    /// were typed); their keys are added to `inputs`.
    fn collect(artifacts: Vec<Artifact>, inputs: &mut Inputs) -> Datasets {
        let mut d = Datasets::default();
        for art in artifacts {
            let Ok(meta) = records::read::<Meta>(&art) else { continue };
            inputs.add(&art, None);
            let side = meta.image_side as i64;
            d.side_by_key.insert(art.key.as_str().to_string(), side);
            d.name_by_key.insert(art.key.as_str().to_string(), meta.name.clone());
            d.side_by_name.insert(meta.name.clone(), side);
            d.name.push(meta.name.clone());
            d.side.push(side);
            d.classes.push(meta.classes.len() as i64);
            d.provenance.push(DatasetProvenance {
                name: meta.name,
                kind: serde_word(&meta.dataset).unwrap_or_default(),
                checksum: meta.checksum,
                source_sha256: meta.source_sha256,
                image_side: meta.image_side,
                train: meta.train,
                test: meta.test,
            });
        }
        d
    }

    /// A run's input side: its record's, else its config's, else that of a prepared dataset
    /// among its inputs, else that of a prepared dataset of its name.
    fn input_side(&self, art: &Artifact, record: Option<i64>, cfg: &RunConfig) -> Option<i64> {
        record
            .or(cfg.input_side)
            .or_else(|| art.manifest.inputs.iter().find_map(|k| self.side_by_key.get(k.as_str()).copied()))
            .or_else(|| cfg.dataset.as_ref().and_then(|d| self.side_by_name.get(d).copied()))
    }

    fn frame(&self) -> Result<DataFrame> {
        Ok(df!("dataset" => self.name.clone(), "input_side" => self.side.clone(), "classes" => self.classes.clone())?)
    }
}

/// `<stage> <effective>` of a `precision` record (e.g. `train tf32 conv`); adds the record's
/// long form (`train on NVIDIA H100 …: tf32 conv (cuDNN TF32 on, cuBLAS TF32 off)`) to `all`.
fn precision_words(stage: &str, record: &PrecisionRecord, all: &mut BTreeSet<String>) -> String {
    let onoff = |on: bool| if on { "on" } else { "off" };
    let subnormals = match record.subnormals_flushed {
        Some(true) => ", CPU subnormals flushed",
        Some(false) => ", CPU subnormals kept",
        None => "",
    };
    all.insert(format!(
        "{stage} on {} {}: {} (cuDNN TF32 {}, cuBLAS TF32 {}{subnormals})",
        record.device,
        record.device_name,
        record.effective,
        onoff(record.tf32_cudnn),
        onoff(record.tf32_cublas)
    ));
    format!("{stage} {}", record.effective)
}

/// The status of a run in the tables: the train record's unless it completed, then the
/// certificate's, or `uncertified` without one.
fn run_status(record: &TrainRecord, cert: Option<&CertifyRecord>) -> String {
    match (record.status_word(), cert) {
        ("ok", Some(c)) => c.status.word().to_string(),
        ("ok", None) => "uncertified".to_string(),
        (other, _) => other.to_string(),
    }
}

/// The `certificate` column of a certified run: `unsound` when the attack flipped a certified
/// point, `not certifiable` (no CRA), `sound` (attacked, nothing flipped), or `not attacked`.
fn certificate_word(c: &crate::certify::Certified) -> &'static str {
    match (&c.not_certifiable, &c.attack) {
        (_, Some(a)) if !a.sound => "unsound",
        (Some(_), _) => "not certifiable",
        (None, Some(_)) => "sound",
        (None, None) => "not attacked",
    }
}

/// The columns of `runs`, one row per train artifact (and of `imported`, see [`ImportedCols`]).
#[derive(Default)]
struct RunCols {
    stage: Vec<String>,
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
    cra_pairwise: [Vec<Option<f64>>; 4],
    era: [Vec<Option<f64>>; 4],
    attack_cra: [Vec<Option<f64>>; 4],
    attack_flips: Vec<Option<i64>>,
    certificate: Vec<Option<String>>,
    model_sha256: Vec<Option<String>>,
    lipschitz: Vec<Option<f64>>,
    margin: Vec<Option<f64>>,
    train_spe: Vec<Option<f64>>,
    device: Vec<Option<String>>,
    precision: Vec<Option<String>>,
}

impl RunCols {
    /// Adds the row of train artifact `art` (certified by `cert`); its device and precisions go
    /// into the provenance sets.
    fn push(
        &mut self,
        art: &Artifact,
        cert: Option<&CertifyRecord>,
        datasets: &Datasets,
        devices: &mut BTreeSet<String>,
        precisions: &mut BTreeSet<String>,
    ) -> Result<()> {
        let cfg: RunConfig = config_view(art)?;
        let record: TrainRecord = records::read(art)?;
        let trained = record.trained.as_ref();
        // The device is the manifest's (train.json does not record one; its `precision` does).
        if let Some(d) = &art.manifest.device {
            devices.insert(d.clone());
        }
        self.device.push(art.manifest.device.clone());
        self.stage.push("train".into());
        self.key.push(art.key.as_str().to_string());
        self.input_side.push(datasets.input_side(art, trained.map(|t| t.input_side), &cfg));
        self.status.push(run_status(&record, cert));
        self.kernel.push(cfg.kernel.or(Some(3)));
        self.classes.push(trained.map(|t| t.classes as i64).or(cfg.classes));
        self.batch_size.push(cfg.batch_size);
        self.budget_hours.push(cfg.budget_hours);
        // Budget epochs and searched lr/wd are resolved at run time and recorded in train.json.
        self.epochs.push(record.epochs.map(|e| e as i64).or(cfg.epochs));
        self.lr.push(trained.map(|t| t.lr).or(cfg.lr));
        self.wd.push(trained.map(|t| t.wd).or(cfg.wd));
        // The seed that trained: a diverged attempt is retried with a derived seed.
        self.seed.push(record.seed().map(|s| s as i64).or(cfg.seed));
        self.attempts.push(Some(record.outcome.attempts.len() as i64));
        // Why a run is not ok, where its artifacts say (not trained: train.json's reason).
        self.reason.push(record.outcome.reason.clone().or_else(|| cert.and_then(|c| c.reason.clone())));
        self.train_spe.push(trained.and_then(|t| t.seconds_per_epoch));
        self.push_certificate(cert);
        let words: Vec<String> = [("train", record.outcome.precision.as_ref()), ("certify", cert.and_then(|c| c.certified.as_ref()?.precision.as_ref()))]
            .into_iter()
            .filter_map(|(stage, p)| Some(precision_words(stage, p?, precisions)))
            .collect();
        self.precision.push((!words.is_empty()).then(|| words.join(", ")));
        self.dataset.push(cfg.dataset);
        self.method.push(cfg.method);
        self.size.push(cfg.size);
        Ok(())
    }

    /// The certificate's numbers, in percent where the tables use percent.
    fn push_certificate(&mut self, cert: Option<&CertifyRecord>) {
        let certified = cert.and_then(|c| c.certified.as_ref());
        let pct = |v: Option<f64>| v.map(|x| x * 100.0);
        self.accuracy.push(pct(certified.map(|c| c.accuracy)));
        let attack = certified.and_then(|c| c.attack.as_ref());
        for (j, (radius, _)) in RADII.iter().enumerate() {
            self.cra[j].push(pct(cert.and_then(|c| c.cra(radius))));
            self.cra_pairwise[j].push(pct(cert.and_then(|c| c.cra_pairwise(radius))));
            let attacked = attack.and_then(|a| a.per_radius.get(*radius));
            self.era[j].push(pct(attacked.map(|r| r.era)));
            self.attack_cra[j].push(pct(attacked.and_then(|r| r.cra)));
        }
        self.attack_flips.push(attack.map(|a| (a.flipped_at_certified_radius + a.per_radius.values().map(|r| r.flipped).sum::<usize>()) as i64));
        self.certificate.push(certified.map(|c| certificate_word(c).to_string()));
        self.model_sha256.push(certified.and_then(|c| c.model_sha256.clone()));
        self.lipschitz.push(certified.map(|c| c.lipschitz.bound));
        self.margin.push(certified.map(|c| c.margin_median));
    }

    fn frame(self) -> Result<DataFrame> {
        let [c36, c72, c108, c255] = self.cra;
        let [p36, p72, p108, p255] = self.cra_pairwise;
        let [e36, e72, e108, e255] = self.era;
        let [a36, a72, a108, a255] = self.attack_cra;
        Ok(df!(
            "stage" => self.stage, "key" => self.key, "dataset" => self.dataset, "method" => self.method, "size" => self.size,
            "kernel" => self.kernel, "classes" => self.classes, "input_side" => self.input_side,
            "batch_size" => self.batch_size, "budget_hours" => self.budget_hours, "epochs" => self.epochs,
            "lr" => self.lr, "wd" => self.wd, "seed" => self.seed, "attempts" => self.attempts,
            "status" => self.status, "run_reason" => self.reason, "accuracy" => self.accuracy, "cra_36" => c36,
            "cra_72" => c72, "cra_108" => c108, "cra_255" => c255,
            "cra_pw_36" => p36, "cra_pw_72" => p72, "cra_pw_108" => p108, "cra_pw_255" => p255,
            "era_36" => e36, "era_72" => e72, "era_108" => e108, "era_255" => e255,
            "attack_cra_36" => a36, "attack_cra_72" => a72, "attack_cra_108" => a108, "attack_cra_255" => a255,
            "attack_flips" => self.attack_flips, "certificate" => self.certificate, "model_sha256" => self.model_sha256,
            "lipschitz_bound" => self.lipschitz, "margin_median" => self.margin,
            "train_seconds_per_epoch" => self.train_spe, "device" => self.device,
            "precision" => self.precision
        )?)
    }
}

/// The rows of imported models ([`Raw::imported`]).
#[derive(Default)]
struct ImportedCols {
    runs: RunCols,
    source_file: Vec<String>,
    source_sha256: Vec<String>,
    test_data: Vec<Option<String>>,
    samples: Vec<Option<i64>>,
    certify_key: Vec<Option<String>>,
}

impl ImportedCols {
    /// Adds one row per artifact of `certified` (the certify artifacts of import artifact `art`),
    /// or one `uncertified` row when there is none; devices and precisions go into the provenance.
    fn push(
        &mut self,
        art: &Artifact,
        certified: &[Artifact],
        datasets: &Datasets,
        devices: &mut BTreeSet<String>,
        precisions: &mut BTreeSet<String>,
    ) -> Result<()> {
        let record: ImportRecord = records::read(art)?;
        let certs: Vec<Option<&Artifact>> = if certified.is_empty() { vec![None] } else { certified.iter().map(Some).collect() };
        for cert in certs {
            let cert_record: Option<CertifyRecord> = cert.map(records::read).transpose()?;
            self.push_model(art, &record, cert_record.as_ref(), cert.and_then(|c| c.manifest.device.clone()), devices, precisions);
            self.source_file.push(record.source_file.clone());
            self.source_sha256.push(record.source_sha256.clone());
            // The certify artifact's second input is its prepared dataset.
            let prepared = cert.and_then(|c| c.manifest.inputs.get(1));
            self.test_data.push(prepared.and_then(|k| datasets.name_by_key.get(k.as_str()).cloned()));
            self.samples.push(cert_record.as_ref().and_then(|c| c.certified.as_ref()).map(|c| c.n as i64));
            self.certify_key.push(cert.map(|c| c.key.as_str().to_string()));
        }
        Ok(())
    }

    /// The `runs` columns of an imported model: its network, no training, its certificate.
    fn push_model(
        &mut self,
        art: &Artifact,
        record: &ImportRecord,
        cert: Option<&CertifyRecord>,
        device: Option<String>,
        devices: &mut BTreeSet<String>,
        precisions: &mut BTreeSet<String>,
    ) {
        let (r, net) = (&mut self.runs, record.net);
        r.stage.push("imported".into());
        r.key.push(art.key.as_str().to_string());
        r.dataset.push(record.dataset.clone());
        r.method.push(Some(net.method.name().to_string()));
        r.size.push(Some(net.size.name().to_string()));
        r.kernel.push(Some(net.kernel));
        r.classes.push(Some(net.classes));
        r.input_side.push(Some(net.input_side));
        for column in [&mut r.batch_size, &mut r.epochs, &mut r.seed, &mut r.attempts] {
            column.push(None);
        }
        for column in [&mut r.budget_hours, &mut r.lr, &mut r.wd, &mut r.train_spe] {
            column.push(None);
        }
        r.status.push(cert.map_or_else(|| "uncertified".to_string(), |c| c.status.word().to_string()));
        r.reason.push(cert.and_then(|c| c.reason.clone()));
        r.push_certificate(cert);
        let precision = cert.and_then(|c| c.certified.as_ref()?.precision.as_ref());
        r.precision.push(precision.map(|p| precision_words("certify", p, precisions)));
        devices.extend(device.clone());
        r.device.push(device);
    }

    fn frame(self) -> Result<DataFrame> {
        let mut df = self.runs.frame()?;
        df.hstack_mut(&[
            Column::new("source_file".into(), self.source_file),
            Column::new("source_sha256".into(), self.source_sha256),
            Column::new("test_data".into(), self.test_data),
            Column::new("samples".into(), self.samples),
            Column::new("certify_key".into(), self.certify_key),
        ])?;
        Ok(df)
    }
}

/// The columns of `measures`, one row per measure artifact.
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
    /// Adds the row of measure artifact `art`; its device and precision go into the provenance
    /// sets.
    fn push(&mut self, art: &Artifact, devices: &mut BTreeSet<String>, precisions: &mut BTreeSet<String>) -> Result<()> {
        let cfg: RunConfig = config_view(art)?;
        let record: MeasureRecord = records::read(art)?;
        let m = &record.measurement;
        devices.insert(m.device.clone());
        self.key.push(art.key.as_str().to_string());
        self.kernel.push(cfg.kernel.or(Some(3)));
        // Pipeline measurements learn the input shape from their dataset at run time and record it
        // in measure.json; stand-alone ones have it in their config.
        self.classes.push(record.classes.or(cfg.classes));
        self.input_side.push(record.input_side.or(cfg.input_side));
        self.batch_size.push(cfg.batch_size);
        self.device.push(Some(m.device.clone()));
        self.status.push(serde_word(&m.status).unwrap_or_else(|| "ok".into()));
        self.error.push(m.error.clone());
        self.parameters.push(Some(m.parameters));
        let ms = |t: &Option<crate::measure::TimingStats>| t.as_ref().map(|t| t.median * 1000.0);
        self.train_ms.push(ms(&m.train_seconds_per_batch));
        self.infer_ms.push(ms(&m.infer_seconds_per_batch));
        self.peak_train_gb.push(m.peak_train_bytes.map(|b| b as f64 / 1e9));
        self.peak_infer_mb.push(m.peak_infer_bytes.map(|b| b as f64 / 1e6));
        self.train_bytes.push(m.peak_train_bytes.map(|b| b as i64));
        self.infer_bytes.push(m.peak_infer_bytes.map(|b| b as i64));
        self.memory_source.push(serde_word(&m.memory_source));
        self.precision.push(m.precision.as_ref().map(|p| precision_words("measure", p, precisions)));
        self.created.push(art.manifest.created_unix as i64);
        self.method.push(cfg.method);
        self.size.push(cfg.size);
        self.device_kind.push(cfg.device_kind);
        Ok(())
    }

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

/// Every run's `epochs.csv`, long, with the run key.
#[derive(Default)]
struct Curves(Option<DataFrame>);

impl Curves {
    /// Appends the `epochs.csv` of train artifact `art`, if it has one (not-trained runs do not).
    fn read(&mut self, art: &Artifact) -> Result<()> {
        let epochs_csv = art.path("epochs.csv");
        if !epochs_csv.is_file() {
            return Ok(());
        }
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .try_into_reader_with_file_path(Some(epochs_csv.clone()))
            .and_then(|r| r.finish())
            .with_context(|| format!("reading `{}`", epochs_csv.display()))?;
        let df = df
            .lazy()
            .select([
                lit(art.key.as_str().to_string()).alias("key"),
                col("epoch").cast(DataType::Int64),
                col("train_loss").cast(DataType::Float64),
                (col("eval_accuracy").cast(DataType::Float64) * lit(100.0)).alias("eval_accuracy_pct"),
                (col("eval_cra_36").cast(DataType::Float64) * lit(100.0)).alias("eval_cra_36_pct"),
            ])
            .collect()
            .with_context(|| format!("`{}` lacks a column of docs/artifacts.md", epochs_csv.display()))?;
        match &mut self.0 {
            Some(all) => {
                all.vstack_mut(&df)?;
            }
            None => self.0 = Some(df),
        }
        Ok(())
    }

    fn frame(self) -> Result<DataFrame> {
        Ok(match self.0 {
            Some(c) => c,
            None => df!(
                "key" => Vec::<String>::new(), "epoch" => Vec::<i64>::new(), "train_loss" => Vec::<f64>::new(),
                "eval_accuracy_pct" => Vec::<f64>::new(), "eval_cra_36_pct" => Vec::<f64>::new()
            )?,
        })
    }
}
