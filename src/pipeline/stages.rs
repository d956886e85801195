//! What each task of a [`Plan`] does: the glue between the plan and the stage libraries
//! (`data::prepare`, `train::train`, `certify`). Each stage writes its files into the store's
//! temporary folder, so an artifact appears only when complete (docs/artifacts.md).

use super::plan::{Epochs, Hyper, Plan, TaskSpec, TrainTask};
use crate::budgets::BudgetMode;
use crate::store::{Artifact, Key, ManifestInfo, Store};
use crate::attack::AttackOptions;
use crate::certify::{certify_model_file, AuditOptions, CertifyRecord, CertifyStatus};
use crate::config::{CertifyOptions, DatasetEntry};
use crate::imported::ImportRecord;
use crate::data::{Dataset, DatasetKind, PrepareRequest};
use crate::fsx;
use crate::nn::NetSpec;
use crate::progress::Progress;
use crate::measure::MeasureRecord;
use crate::records::{self, Record};
use crate::train::trainer::{self, EvalSplit, RunStatus, TrainConfig, TrainData, TrainOutcome};
use crate::train::{TrainRecord, Trained};
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Device;

/// File names inside a `train` artifact.
pub const TRAIN_MODEL: &str = crate::train::trainer::MODEL_FILE;
pub const TRAIN_STATS: &str = "epochs.csv";
pub const TRAIN_OUTCOME: &str = TrainRecord::FILE;
pub const MEASUREMENT: &str = MeasureRecord::FILE;
pub const BUDGET: &str = crate::budgets::Budget::FILE;
/// File names inside a `certify` artifact.
pub const CERTIFICATE: &str = CertifyRecord::FILE;
pub const MARGINS: &str = "margins.csv";

/// Resolved settings shared by every task of one run.
pub struct StageRunner {
    device: Device,
    /// `--data` (replaces the source of the pipeline's first dataset) and `--offline`.
    data_choice: super::DataChoice,
    /// Folder where official archives are looked for (`prepare --data`).
    data_dir: PathBuf,
    /// Folder of the pipeline file: relative dataset sources are resolved against it.
    pipeline_dir: PathBuf,
    datasets: HashMap<Key, Dataset>,
}

impl StageRunner {
    pub fn new(device: Device, pipeline_file: &Path, data_choice: super::DataChoice) -> Self {
        let pipeline_dir = pipeline_file.parent().map(Path::to_path_buf).unwrap_or_default();
        StageRunner { device, data_choice, data_dir: PathBuf::from("data"), pipeline_dir, datasets: HashMap::new() }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The prepare request of a pipeline dataset. Relative sources in a pipeline file are relative
    /// to the project root (the folder above `pipelines/`), as written in the shipped pipelines.
    pub fn prepare_request(&self, index: usize, d: &DatasetEntry) -> anyhow::Result<PrepareRequest> {
        let dataset: DatasetKind = d.name.parse()?;
        let source = match (&self.data_choice.data, index) {
            (Some(path), 0) => Some(path.clone()),
            _ => d.source.as_ref().map(|s| {
                if s.is_absolute() {
                    s.clone()
                } else {
                    self.pipeline_dir.parent().unwrap_or(Path::new("")).join(s)
                }
            }),
        };
        let mut req = PrepareRequest::new(dataset);
        req.source = source;
        req.data_dir = self.data_dir.clone();
        req.download = !self.data_choice.offline;
        Ok(req)
    }

    /// Runs task `index` of `plan` (its inputs are done). Returns false when another process built
    /// the artifact while this one waited for its lock (then nothing was built here).
    ///
    /// Long on purpose: one match arm per stage, each only the glue from the plan's task to its
    /// stage function (inputs looked up, manifest info, `store.build`); the work is in the stages.
    pub fn execute(&mut self, plan: &Plan, index: usize, store: &Store, progress: &Progress) -> anyhow::Result<bool> {
        let task = &plan.tasks[index];
        let device = self.device;
        match &task.spec {
            TaskSpec::Prepare { dataset } => {
                let req = self.prepare_request(index, dataset)?;
                let summary = crate::data::prepare(&req, store, progress)?;
                let built = !summary.cached;
                anyhow::ensure!(
                    summary.key == task.key,
                    "internal error: prepare produced {} where the plan expected {}",
                    summary.key.short(),
                    task.key.short()
                );
                Ok(built)
            }
            TaskSpec::Measure { method, size, kernel, batch_size, batches, tf32 } => {
                let prepare_key = plan.tasks[task.deps[0]].key.clone();
                let data = self.dataset(store, &prepare_key, None, None)?;
                let net = NetSpec {
                    method: *method,
                    size: *size,
                    kernel: *kernel,
                    input_side: data.image_side(),
                    classes: data.num_classes() as i64,
                };
                let mut req = crate::measure::MeasureRequest::new(net, *batch_size as i64, device);
                req.batches = *batches;
                req.tf32 = *tf32;
                let info = manifest_info(task.stage.schema_version(), &task.config, &[prepare_key], device);
                let artifact = store.build(task.stage.name(), &task.key, &info, |tmp| {
                    let measurement = crate::measure::measure(&req, progress)?;
                    let record = MeasureRecord { measurement, input_side: Some(net.input_side), classes: Some(net.classes) };
                    records::write(tmp, &record)
                })?;
                Ok(!artifact.cached)
            }
            TaskSpec::Budget { method, size, kernel, hours, mode, batch_size } => {
                let TaskSpec::Prepare { dataset: entry } = &plan.tasks[task.deps[0]].spec else {
                    anyhow::bail!("internal error: budget task {} does not follow its dataset", task.label);
                };
                let inputs: Vec<Key> = task.deps.iter().map(|&d| plan.tasks[d].key.clone()).collect();
                let budget = match mode {
                    BudgetMode::Paper => {
                        // Pipelines are checked for this when read (config.rs); kept for in-memory plans.
                        let dataset: crate::paper::Dataset = entry.name.parse().map_err(|_| {
                            anyhow::anyhow!(
                                "paper budgets exist for CIFAR and Tiny ImageNet only, not `{}`; use `budgets: mode: measured`",
                                entry.name
                            )
                        })?;
                        crate::budgets::paper_budget(hours, dataset.kind(), *method, *size, *kernel)?
                    }
                    BudgetMode::Measured => {
                        let measured: MeasureRecord = records::read(&lookup(store, plan, task.deps[1])?)?;
                        let m = measured.measurement;
                        let data = self.dataset(store, &inputs[0], entry.train_per_class, entry.test_per_class)?;
                        let images = data.train_labels.size()[0] as u64;
                        crate::budgets::budget_from_measurement(&m, hours, crate::budgets::batches_per_epoch(images, *batch_size as u64))?
                    }
                };
                let info = manifest_info(task.stage.schema_version(), &task.config, &inputs, device);
                let artifact = store.build(task.stage.name(), &task.key, &info, |tmp| records::write(tmp, &budget))?;
                Ok(!artifact.cached)
            }
            TaskSpec::Train(t) | TaskSpec::Search(t) => {
                let inputs: Vec<Key> = task.deps.iter().map(|&d| plan.tasks[d].key.clone()).collect();
                let info = manifest_info(task.stage.schema_version(), &task.config, &inputs, device);
                let epochs = match resolve_epochs(store, plan, &t.epochs)? {
                    BudgetEpochs::Train(e) => t.max_epochs.map_or(e, |cap| e.min(cap as u64)),
                    BudgetEpochs::NotTrained(status, reason) => {
                        // A committed result with its status (design §7), not a failed task.
                        progress.println(&format!("{}: not trained ({reason})", task.label));
                        let artifact = store.build(task.stage.name(), &task.key, &info, |tmp| publish_not_trained(status, &reason, tmp))?;
                        return Ok(!artifact.cached);
                    }
                };
                let (lr, wd) = resolve_hyper(store, plan, &t.hyper)?;
                let data = self.dataset(store, &inputs[0], t.train_per_class, t.test_per_class)?;
                let cfg = train_config(t, data, epochs, lr, wd, device);
                let split = if t.validation { EvalSplit::Validation } else { EvalSplit::Test };
                let train_data = TrainData::select(
                    &data.train_images,
                    &data.train_labels,
                    &data.test_images,
                    &data.test_labels,
                    &data.fit_split,
                    &data.val_split,
                    data.channel_mean,
                    split,
                )?;
                let work = store.work_dir(task.stage.name(), &task.key);
                let artifact = store.build(task.stage.name(), &task.key, &info, |tmp| {
                    let outcome = trainer::train(&cfg, train_data, &work, progress)?;
                    let resolved = Trained {
                        // Seconds per epoch of the final attempt (its last epoch: steady state, no warm-up).
                        seconds_per_epoch: outcome.last_epoch.as_ref().map(|e| e.seconds),
                        lr,
                        wd,
                        input_side: data.image_side(),
                        classes: data.num_classes() as u64,
                        train_images: data.train_labels.size()[0],
                    };
                    publish_training(outcome, epochs, resolved, &work, tmp)
                })?;
                Ok(!artifact.cached)
            }
            TaskSpec::Certify { train, audit_iterations, attack } => {
                let train_task = &plan.tasks[*train];
                let TaskSpec::Train(t) = &train_task.spec else {
                    anyhow::bail!("internal error: certify task {} does not follow a train task", task.label);
                };
                let trained = store
                    .lookup(train_task.stage.name(), &train_task.key)?
                    .with_context(|| format!("input `{}` is not done", train_task.label))?;
                let prepare_key = plan.tasks[train_task.deps[0]].key.clone();
                let data = self.dataset(store, &prepare_key, t.train_per_class, t.test_per_class)?;
                let spec = net_spec(t, data);
                let info = manifest_info(task.stage.schema_version(), &task.config, &[train_task.key.clone()], device);
                let opts = AuditOptions { max_iterations: *audit_iterations as usize, ..AuditOptions::default() };
                let artifact = store.build(task.stage.name(), &task.key, &info, |tmp| certify_into(&trained, spec, data, device, (&opts, attack), tmp))?;
                Ok(!artifact.cached)
            }
        }
    }

    /// `lipctl attack` (see [`super::attack`]): certifies `model_file` as train task `train` of
    /// `plan` would have been certified (its dataset must be prepared), then attacks it. Returns
    /// the device and the attack summary.
    pub fn attack(
        &mut self,
        store: &Store,
        plan: &Plan,
        train: usize,
        model_file: &Path,
        radii: &[f64],
        opts: &AttackOptions,
    ) -> anyhow::Result<(Device, crate::certify::AttackSummary)> {
        let TaskSpec::Train(t) = &plan.tasks[train].spec else { anyhow::bail!("internal error: task {train} is not a train task") };
        let prepare_key = plan.tasks[plan.tasks[train].deps[0]].key.clone();
        let device = self.device;
        let data = self.dataset(store, &prepare_key, t.train_per_class, t.test_per_class)?;
        let spec = net_spec(t, data);
        let audit = AuditOptions { max_iterations: crate::config::CertifyOptions::default().audit_iterations as usize, ..AuditOptions::default() };
        let model = crate::certify::load_model(spec, model_file, device, &audit)?;
        let (images, labels) = (&data.test_images, &data.test_labels);
        let cert = crate::certify::certify(&model.frozen, images, labels, data.channel_mean, 256, device, model.audit, spec.method.is_lipschitz(), model.head.as_ref())?;
        let summary = crate::certify::attack_certificate_at(&model.frozen, images, labels, data.channel_mean, &cert, radii, opts, 256, device)?;
        Ok((device, summary))
    }

    /// `lipctl import --certify` (see [`super::certify_imported`]): certifies the imported model
    /// `import` on the test split of the prepared dataset `prepare_key` (its first
    /// `test_per_class` images per class) with the audit and attack of a pipeline's certify task,
    /// into a `certify` artifact whose inputs are `[import key, prepare key]` and whose config says
    /// `imported: true`. Returns it (cached when it exists). Error (nothing written): the dataset's
    /// classes or image side differ from the network's.
    pub fn certify_imported(
        &mut self,
        store: &Store,
        prepare_key: &Key,
        test_per_class: Option<usize>,
        (import, record): (&Artifact, &ImportRecord),
        opts: &CertifyOptions,
    ) -> anyhow::Result<Artifact> {
        let device = self.device;
        let data = self.dataset(store, prepare_key, None, test_per_class)?;
        let net = record.net;
        anyhow::ensure!(
            data.num_classes() as i64 == net.classes && data.image_side() == net.input_side,
            "the imported {} {} network ({}) takes {side}×{side} images of {} classes, but the dataset `{}` has {}×{} images of {} classes",
            net.method,
            net.size,
            record.source_file,
            net.classes,
            data.name,
            data.image_side(),
            data.image_side(),
            data.num_classes(),
            side = net.input_side,
        );
        let config = serde_json::json!({
            "split": "test",
            "audit_iterations": opts.audit_iterations,
            "attack": opts.attack,
            "attack_points": "evenly spaced",
            "imported": true,
            "test_per_class": test_per_class,
        });
        let info = manifest_info(CertifyRecord::SCHEMA_VERSION, &config, &[import.key.clone(), prepare_key.clone()], device);
        let audit = AuditOptions { max_iterations: opts.audit_iterations as usize, ..AuditOptions::default() };
        let model = crate::imported::model_path(import);
        let stage = super::plan::Stage::Certify.name();
        store.build(stage, &info.key(stage), &info, |tmp| {
            let (images, labels) = (&data.test_images, &data.test_labels);
            certify_model_file(net, &model, images, labels, data.channel_mean, 256, device, tmp, &audit, Some(&opts.attack)).map(|_| ())
        })
    }

    /// The prepared dataset of `prepare_key`, reduced to the task's subset, loaded once per run.
    fn dataset(&mut self, store: &Store, prepare_key: &Key, train_per_class: Option<usize>, test_per_class: Option<usize>) -> anyhow::Result<&Dataset> {
        let subset_key = Key::compute(
            "subset",
            1,
            &serde_json::json!({ "train": train_per_class, "test": test_per_class }),
            &[prepare_key.clone()],
        );
        if !self.datasets.contains_key(&subset_key) {
            let artifact = store
                .lookup(crate::data::prepare::STAGE, prepare_key)?
                .with_context(|| format!("the prepared dataset {} is missing", prepare_key.short()))?;
            let full = Dataset::load(&artifact.dir)?;
            let data = if train_per_class.is_some() || test_per_class.is_some() {
                full.subset(train_per_class, test_per_class)
            } else {
                full
            };
            self.datasets.insert(subset_key.clone(), data);
        }
        self.datasets.get(&subset_key).context("internal error: dataset cache")
    }
}

fn manifest_info(schema_version: u32, config: &serde_json::Value, inputs: &[Key], device: Device) -> ManifestInfo {
    let mut info = ManifestInfo::new(schema_version, config.clone());
    info.inputs = inputs.to_vec();
    info.device = Some(crate::device::describe(device));
    info
}

fn net_spec(t: &TrainTask, data: &Dataset) -> NetSpec {
    NetSpec { method: t.method, size: t.size, kernel: t.kernel, input_side: data.image_side(), classes: data.num_classes() as i64 }
}

fn train_config(t: &TrainTask, data: &Dataset, epochs: u64, lr: f64, wd: f64, device: Device) -> TrainConfig {
    let mut cfg = TrainConfig::paper(t.method, t.size, data.num_classes() as i64, epochs as usize, lr, wd, t.seed, device);
    cfg.eval_split = if t.validation { EvalSplit::Validation } else { EvalSplit::Test };
    cfg.kernel = t.kernel;
    cfg.batch_size = t.batch_size as i64;
    cfg.max_retries = t.max_retries as usize;
    cfg.tf32 = t.tf32;
    cfg.checkpoint = t.checkpoint;
    cfg.augmentation = t.augmentation;
    cfg
}

/// Copies the final model and statistics of a training run out of its work folder and writes
/// `train.json`: the outcome, the `epochs` it was given, and what it `resolved` (lr/wd from the
/// search, the data's shape).
fn publish_training(mut outcome: TrainOutcome, epochs: u64, resolved: Trained, work: &Path, tmp: &Path) -> anyhow::Result<()> {
    fsx::copy(&work.join(&outcome.stats_file), &tmp.join(TRAIN_STATS))?;
    if let Some(model) = &outcome.model_file {
        fsx::copy(&work.join(model), &tmp.join(TRAIN_MODEL))?;
    }
    // Name the files as published, not as they were called in the work folder.
    outcome.stats_file = TRAIN_STATS.into();
    if outcome.model_file.is_some() {
        outcome.model_file = Some(TRAIN_MODEL.into());
    }
    records::write(tmp, &TrainRecord { outcome, epochs: Some(epochs), trained: Some(resolved) })
}

/// The `train.json` of a run that was not trained (no model, no statistics): its status and why.
fn publish_not_trained(status: RunStatus, reason: &str, tmp: &Path) -> anyhow::Result<()> {
    records::write(tmp, &TrainRecord::not_trained(status, reason, TRAIN_STATS))
}

/// Reads a train (or search) artifact's `train.json`.
pub fn read_outcome(trained: &Artifact) -> anyhow::Result<TrainRecord> {
    records::read(trained)
}

/// Provenance, checked by the runner before it asks the store whether task `index` of `plan` is
/// cached: a certify task's cached certificate that describes a model its train artifact no
/// longer holds ([`stale_reason`]) is discarded, so that the task certifies the current model.
/// Other stages are left alone. The check and the removal hold the certificate's lock
/// ([`Store::discard_if`]), so a concurrent worker's fresh certificate is never removed on the
/// strength of a stale one read just before. Errors: the store or the certificate record cannot
/// be read.
pub fn discard_stale(store: &Store, plan: &Plan, index: usize) -> anyhow::Result<()> {
    let task = &plan.tasks[index];
    // `stale_reason_in` would answer `None` for other stages too, but only after the lock: this
    // keeps a run from locking every cached artifact it passes.
    if !matches!(task.spec, TaskSpec::Certify { .. }) {
        return Ok(());
    }
    // Verified lookups, as before: a damaged train model (`run-task` checks its inputs only after
    // this) counts as no model, so the certificate of it goes too.
    store.discard_if(task.stage.name(), &task.key, || stale_reason_in(plan, index, |stage, key| store.lookup(stage, key)))
}

/// Why the cached certificate of task `index` no longer describes its model, or `None` (not a
/// certify task, nothing cached, or still current). Stale ([`CertifyRecord::is_stale`]): the
/// model was rebuilt (e.g. retrained on a non-deterministic device), the train artifact is gone,
/// or a run that diverged was trained again. Reads only the two manifests and the certificate
/// record ([`Store::peek`]): no model file is hashed and nothing is removed, so `status` and
/// `run --dry-run` stay cheap and read-only; a run verifies both artifacts ([`discard_stale`]).
/// Errors: the store or the certificate record cannot be read.
pub fn stale_reason(store: &Store, plan: &Plan, index: usize) -> anyhow::Result<Option<String>> {
    stale_reason_in(plan, index, |stage, key| store.peek(stage, key))
}

/// [`stale_reason`], opening artifacts with `open` ([`Store::peek`] or [`Store::lookup`]).
fn stale_reason_in(plan: &Plan, index: usize, open: impl Fn(&str, &Key) -> anyhow::Result<Option<Artifact>>) -> anyhow::Result<Option<String>> {
    let task = &plan.tasks[index];
    let TaskSpec::Certify { train, .. } = &task.spec else { return Ok(None) };
    let Some(cached) = open(task.stage.name(), &task.key)? else { return Ok(None) };
    let train_task = &plan.tasks[*train];
    let trained = open(train_task.stage.name(), &train_task.key)?;
    let current = trained.as_ref().and_then(|t| t.file_sha256(TRAIN_MODEL));
    let record: CertifyRecord = records::read(&cached)?;
    if !record.is_stale(current) {
        return Ok(None);
    }
    let short = |s: &str| s.chars().take(12).collect::<String>();
    Ok(Some(match (record.certified.as_ref().and_then(|c| c.model_sha256.as_deref()), current) {
        (Some(certified), Some(now)) => format!("it certified model {}… but `{}` now holds {}…", short(certified), train_task.label, short(now)),
        (Some(certified), None) => format!("it certified model {}… but `{}` holds no model now", short(certified), train_task.label),
        (None, now) => format!(
            "it records a run without a model ({}) but `{}` now holds model {}…",
            record.status.word(),
            train_task.label,
            short(now.unwrap_or_default())
        ),
    }))
}

/// Certifies a trained model on the test split; a diverged run yields a certificate that says so.
fn certify_into(trained: &Artifact, spec: NetSpec, data: &Dataset, device: Device, (audit, attack): (&AuditOptions, &AttackOptions), tmp: &Path) -> anyhow::Result<()> {
    let outcome = read_outcome(trained)?.outcome;
    let not_certified = match outcome.status {
        RunStatus::Completed => None,
        RunStatus::Diverged => {
            let attempts = outcome.attempts.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>()?;
            Some(CertifyRecord::not_certified(CertifyStatus::Diverged, Some(attempts), None))
        }
        RunStatus::DoesNotFit => Some(CertifyRecord::not_certified(CertifyStatus::DoesNotFit, None, outcome.reason)),
        RunStatus::NoEpochCount => Some(CertifyRecord::not_certified(CertifyStatus::NoEpochCount, None, outcome.reason)),
    };
    if let Some(record) = not_certified {
        return records::write(tmp, &record);
    }
    // Writes certify.json (docs/artifacts.md) beside certificate.json and margins.csv.
    certify_model_file(
        spec,
        &trained.path(TRAIN_MODEL),
        &data.test_images,
        &data.test_labels,
        data.channel_mean,
        256,
        device,
        tmp,
        audit,
        Some(attack),
    )?;
    Ok(())
}

/// The committed artifact of task `index` (its inputs are done when it runs).
fn lookup(store: &Store, plan: &Plan, index: usize) -> anyhow::Result<Artifact> {
    let task = &plan.tasks[index];
    store.lookup(task.stage.name(), &task.key)?.with_context(|| format!("input `{}` is not done", task.label))
}

/// What a run's budget says: train for so many epochs, or do not train (with the status and the
/// reason the run's artifact records).
enum BudgetEpochs {
    Train(u64),
    NotTrained(RunStatus, String),
}

/// Why a paper-mode budget task has no epochs: the Standard baseline has no Table 8 row, and a
/// method added since the paper ([`MethodInfo::in_paper`](crate::nn::MethodInfo::in_paper) false)
/// has no paper numbers at all.
fn no_epoch_count_reason(plan: &Plan, task: usize) -> String {
    let t = &plan.tasks[task];
    let method = t.config.get("method").and_then(|m| serde_json::from_value::<crate::nn::Method>(m.clone()).ok());
    match method {
        Some(m) if !m.info().in_paper => format!(
            "{}: {m} is not in the paper, so Table 8 has no epoch count for it; use budgets mode: measured to train it",
            t.label
        ),
        _ => format!("{}: the paper's Table 8 has no epoch count for this model; use budgets mode: measured to train it", t.label),
    }
}

/// A run's epoch count: fixed, or read from its budget artifact.
fn resolve_epochs(store: &Store, plan: &Plan, epochs: &Epochs) -> anyhow::Result<BudgetEpochs> {
    use crate::budgets::BudgetStatus;
    match epochs {
        Epochs::Fixed(e) => Ok(BudgetEpochs::Train(*e as u64)),
        Epochs::Budget { task, hours, min_epochs } => {
            let budget: crate::budgets::Budget = records::read(&lookup(store, plan, *task)?)?;
            let label = &plan.tasks[*task].label;
            Ok(match (budget.status, budget.epochs_for(*hours)) {
                (BudgetStatus::Ok, Some(e)) if e.max(*min_epochs as u64) > 0 => BudgetEpochs::Train(e.max(*min_epochs as u64)),
                (BudgetStatus::NoEpochCount, _) => BudgetEpochs::NotTrained(RunStatus::NoEpochCount, no_epoch_count_reason(plan, *task)),
                (BudgetStatus::DoesNotFit, _) if budget.mode == BudgetMode::Paper => BudgetEpochs::NotTrained(
                    RunStatus::DoesNotFit,
                    format!("{label}: does not fit, as in the paper (out of memory on its 80 GB A100)"),
                ),
                (BudgetStatus::DoesNotFit, _) => BudgetEpochs::NotTrained(
                    RunStatus::DoesNotFit,
                    format!("{label}: does not fit: training ran out of memory when measured on this device"),
                ),
                (_, e) => BudgetEpochs::NotTrained(
                    RunStatus::DoesNotFit,
                    format!("{label}: {} epochs fit into {hours} h on this device; the model is too slow for the budget", e.unwrap_or(0)),
                ),
            })
        }
    }
}

/// A run's (lr, wd): fixed, or the best completed search trial's.
fn resolve_hyper(store: &Store, plan: &Plan, hyper: &Hyper) -> anyhow::Result<(f64, f64)> {
    match hyper {
        Hyper::Fixed { lr, wd } => Ok((*lr, *wd)),
        Hyper::Search { trials } => {
            let mut results = Vec::new();
            for (i, &t) in trials.iter().enumerate() {
                let TaskSpec::Search(trial) = &plan.tasks[t].spec else {
                    anyhow::bail!("internal error: task {} is not a search trial", plan.tasks[t].label);
                };
                let Hyper::Fixed { lr, wd } = trial.hyper else {
                    anyhow::bail!("internal error: search trial {} has no fixed lr/wd", plan.tasks[t].label);
                };
                let outcome = read_outcome(&lookup(store, plan, t)?)?.outcome;
                let (status, cra) = match (outcome.status, &outcome.last_epoch) {
                    (RunStatus::Completed, Some(last)) => (crate::search::TrialStatus::Ok, Some(last.eval.cra[0])),
                    (RunStatus::Diverged, _) => (crate::search::TrialStatus::Diverged, None),
                    _ => (crate::search::TrialStatus::Failed, None),
                };
                results.push(crate::search::TrialResult { trial: i as u32, lr, wd, status, val_cra_36: cra });
            }
            crate::search::select_best(&results).context("no search trial completed; the final run has no learning rate to use")
        }
    }
}
