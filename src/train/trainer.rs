//! The training loop (reference-protocol §6.4), with checkpoints, exact resume and divergence
//! retries (design §7).
//!
//! Work folder layout (all names relative, all writes atomic: temp file + rename):
//!
//! | file | written | content |
//! |---|---|---|
//! | `run.txt` | at the start | the run's fingerprint (configuration and data shapes); another run in the same folder is refused |
//! | `checkpoint.safetensors` | every [`CheckpointCadence`] (default: 10 epochs or 10 minutes, whichever comes first), after the last epoch, and on SIGTERM/SIGINT | model variables (their VarStore names), SGD momentum (`sgd_momentum/<name>`), `meta/attempt`, `meta/epoch`, `meta/seed`, `meta/run` (the run's fingerprint as bytes) |
//! | `stats.csv` | one row appended after every epoch (flushed; synced to disk before each checkpoint) | one row per (attempt, epoch) |
//! | `attempts.json` | when an attempt diverges | the diverged attempts |
//! | `model.safetensors` | at the end | the final model, loadable with `VarStore::load` |
//! | `outcome.json` | at the end, last | the [`TrainOutcome`]; its presence marks the run finished |
//!
//! **Determinism.** Attempt `k` uses seed `attempt_seed(seed, k)` (the configured seed for
//! `k = 0`). torch is seeded with it before the network is built, and with
//! `epoch_seed(attempt seed, e)` at the start of every epoch `e`: shuffling, augmentation and any
//! randomness inside layers depend only on (seed, attempt, epoch) and on the state saved in the
//! checkpoint. A run killed at any point and restarted from its last checkpoint therefore
//! ends with bitwise the same model as an uninterrupted run on the CPU (tested); on CUDA, up to
//! the non-determinism of the kernels themselves.
//!
//! **I/O per epoch is constant.** The statistics row is appended (never the whole file
//! rewritten) and the checkpoint is written at the configured cadence, so a 10⁴-epoch run costs
//! no more per epoch at its end than at its start. A SIGTERM or SIGINT ([`super::interrupt`])
//! stops the run after the current batch; the checkpoint of the last completed epoch is then
//! written (from an on-device snapshot taken at that epoch's end when it was not checkpointed)
//! and `train` returns an error saying so: at most the current epoch is lost.
//!
//! **Divergence.** A non-finite training loss (checked every [`CHECK_EVERY`] batches and at the
//! end of the epoch) or evaluation loss stops the attempt. It is recorded and the run restarts
//! from scratch with the next attempt seed, up to `max_retries` times; an exhausted run ends with
//! status `Diverged` and no model (a result, not an error).
//!
//! **Precision.** The run holds the TF32 switches of `cfg.tf32` ([`crate::precision`]); the
//! per-epoch evaluation runs in full fp32, as `certify` does. The outcome records both.

use super::augment::Augmentation;
use super::interrupt;
use super::schedule::OneCycle;
use super::sgd::Sgd;
use super::step::Step;
use crate::eval::{cra, evaluate, Centering, Evaluation, RADII};
use crate::stats::{median, SplitMix64};
use crate::fsx::write_atomic;
use crate::nn::checkpoint;
use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
use crate::progress::Progress;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind, Tensor};

pub use super::step::CHECK_EVERY;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const STATS_FILE: &str = "stats.csv";
pub const ATTEMPTS_FILE: &str = "attempts.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OUTCOME_FILE: &str = "outcome.json";
pub const RUN_FILE: &str = "run.txt";

/// A trainable network: a training forward and an eval-mode module with cached weight
/// transforms, recomputed by the caller after every optimizer step.
pub trait Network: nn::ModuleT {
    /// Errors when the cached transforms cannot be computed (for a ConvNet, as [`ConvNet::freeze`]).
    fn frozen(&self) -> anyhow::Result<Box<dyn nn::Module + '_>>;
}

impl Network for ConvNet {
    fn frozen(&self) -> anyhow::Result<Box<dyn nn::Module + '_>> {
        Ok(Box::new(self.freeze()?))
    }
}

/// Which split the per-epoch evaluation uses (reference-protocol §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvalSplit {
    /// Random search: train on the 90 % fit split, evaluate on the 10 % validation split.
    Validation,
    /// Final training: train on the whole training set, evaluate on the test set.
    Test,
}

/// Everything that determines a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub method: Method,
    pub size: ModelSize,
    /// Kernel size of the block convolutions (3, or 1).
    pub kernel: i64,
    pub classes: i64,
    pub epochs: usize,
    /// Peak learning rate of the OneCycle schedule.
    pub lr: f64,
    /// Coupled weight decay.
    pub wd: f64,
    pub seed: u64,
    /// 256 in the paper.
    pub batch_size: i64,
    /// Retries with a new seed after a divergence (0: one attempt only).
    pub max_retries: usize,
    pub device: Device,
    pub eval_split: EvalSplit,
    pub augmentation: Augmentation,
    /// TF32 switches of the training passes (the evaluation is always fp32).
    pub tf32: crate::precision::Tf32Mode,
    /// When checkpoints are written (not part of the run's fingerprint: a run may resume with
    /// another cadence).
    pub checkpoint: CheckpointCadence,
}

/// How often a training run writes its checkpoint (pipeline YAML `train.checkpoint`): after an
/// epoch when `every_epochs` epochs or `every_minutes` minutes have passed since the last one,
/// whichever comes first; always after the last epoch and on SIGTERM/SIGINT.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointCadence {
    /// Default 10.
    #[serde(default = "default_every_epochs")]
    pub every_epochs: u32,
    /// Default 10.
    #[serde(default = "default_every_minutes")]
    pub every_minutes: f64,
}

fn default_every_epochs() -> u32 {
    10
}
fn default_every_minutes() -> f64 {
    10.0
}

impl Default for CheckpointCadence {
    fn default() -> Self {
        CheckpointCadence { every_epochs: default_every_epochs(), every_minutes: default_every_minutes() }
    }
}

impl CheckpointCadence {
    /// Every epoch (the behaviour before the cadence existed; tests and benchmarks).
    pub const EVERY_EPOCH: CheckpointCadence = CheckpointCadence { every_epochs: 1, every_minutes: f64::INFINITY };

    /// Whether a checkpoint is due `epochs` epochs and `elapsed` after the last one.
    pub fn due(&self, epochs: usize, elapsed: Duration) -> bool {
        epochs >= self.every_epochs.max(1) as usize || elapsed.as_secs_f64() >= self.every_minutes * 60.0
    }
}

impl TrainConfig {
    /// The paper's settings (batch 256, kernel 3, CIFAR augmentation, test-set evaluation,
    /// 2 retries) for the given method, size, classes, epochs, lr, wd and seed.
    #[allow(clippy::too_many_arguments)]
    pub fn paper(method: Method, size: ModelSize, classes: i64, epochs: usize, lr: f64, wd: f64, seed: u64, device: Device) -> Self {
        TrainConfig {
            method,
            size,
            kernel: 3,
            classes,
            epochs,
            lr,
            wd,
            seed,
            batch_size: 256,
            max_retries: 2,
            device,
            eval_split: EvalSplit::Test,
            augmentation: Augmentation::CIFAR,
            tf32: crate::precision::Tf32Mode::default(),
            checkpoint: CheckpointCadence::default(),
        }
    }

    /// What a checkpoint must match to be resumed (the device and the retry count may change).
    fn fingerprint(&self, data: &TrainData) -> String {
        format!(
            "method={} size={} kernel={} classes={} epochs={} lr={:e} wd={:e} seed={} batch={} eval={:?} aug={:?} train={:?} eval_data={:?} mean={:?}",
            self.method, self.size, self.kernel, self.classes, self.epochs, self.lr, self.wd, self.seed,
            self.batch_size, self.eval_split, self.augmentation, data.train_images.size(), data.eval_images.size(),
            data.channel_mean
        )
    }
}

/// The tensors a run trains and evaluates on: uint8 images `[N, 3, H, W]`, int64 labels `[N]`.
#[derive(Debug)]
pub struct TrainData {
    pub train_images: Tensor,
    pub train_labels: Tensor,
    pub eval_images: Tensor,
    pub eval_labels: Tensor,
    pub channel_mean: [f64; 3],
}

impl TrainData {
    /// Picks the training and evaluation tensors for `split` from a prepared dataset: the fit and
    /// validation index splits of the training set, or the whole training set and the test set.
    #[allow(clippy::too_many_arguments)]
    pub fn select(
        train_images: &Tensor,
        train_labels: &Tensor,
        test_images: &Tensor,
        test_labels: &Tensor,
        fit_split: &Tensor,
        val_split: &Tensor,
        channel_mean: [f64; 3],
        split: EvalSplit,
    ) -> anyhow::Result<Self> {
        Ok(match split {
            EvalSplit::Validation => TrainData {
                train_images: train_images.f_index_select(0, fit_split)?,
                train_labels: train_labels.f_index_select(0, fit_split)?,
                eval_images: train_images.f_index_select(0, val_split)?,
                eval_labels: train_labels.f_index_select(0, val_split)?,
                channel_mean,
            },
            EvalSplit::Test => TrainData {
                train_images: train_images.shallow_clone(),
                train_labels: train_labels.shallow_clone(),
                eval_images: test_images.shallow_clone(),
                eval_labels: test_labels.shallow_clone(),
                channel_mean,
            },
        })
    }

    fn validate(&self, classes: i64) -> anyhow::Result<()> {
        for (what, images, labels) in
            [("training", &self.train_images, &self.train_labels), ("evaluation", &self.eval_images, &self.eval_labels)]
        {
            let size = images.size();
            anyhow::ensure!(
                images.kind() == Kind::Uint8 && size.len() == 4 && size[1] == 3,
                "{what} images must be uint8 [N, 3, H, W], got {:?} {size:?}",
                images.kind()
            );
            anyhow::ensure!(labels.size() == [size[0]], "{what}: {} labels for {} images", labels.numel(), size[0]);
            if size[0] > 0 {
                let (lo, hi) = (labels.f_min()?.f_int64_value(&[])?, labels.f_max()?.f_int64_value(&[])?);
                anyhow::ensure!(lo >= 0 && hi < classes, "{what} labels span {lo}..={hi}, outside 0..{classes}");
            }
        }
        anyhow::ensure!(self.train_images.size()[0] > 0, "the training set is empty");
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Completed,
    Diverged,
    /// Not trained: the budget says the model does not fit (out of memory when measured, or the
    /// paper's LOT-L). A committed result, not a failure.
    #[serde(rename = "does_not_fit")]
    DoesNotFit,
    /// Not trained: paper-mode budgets and the paper's Table 8 has no epoch count for the model.
    #[serde(rename = "no_epoch_count")]
    NoEpochCount,
}

/// Where an attempt diverged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    pub epoch: usize,
    /// "train" or "eval".
    pub phase: String,
    /// The non-finite loss seen (NaN or ±inf, as text).
    pub loss: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub index: usize,
    pub seed: u64,
    pub status: RunStatus,
    pub epochs_completed: usize,
    pub divergence: Option<Divergence>,
}

/// Metrics of one pass over a split (reference-protocol §7.2): loss averaged over batches,
/// accuracy and CRA per sample (at [`RADII`], with the theoretical bound L = 1), median margin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    pub loss: f64,
    pub accuracy: f64,
    pub cra: [f64; 4],
    pub median_margin: f64,
}

impl SplitStats {
    fn from_parts(loss: f64, correct: &[bool], margins: &[f64]) -> Self {
        let accuracy = correct.iter().filter(|c| **c).count() as f64 / correct.len().max(1) as f64;
        SplitStats {
            loss,
            accuracy,
            cra: RADII.map(|e| cra(correct, margins, e, 1.0)),
            median_margin: median(margins),
        }
    }

    fn from_evaluation(ev: &Evaluation) -> Self {
        Self::from_parts(ev.loss, &ev.correct, &ev.margins)
    }
}

/// One row of `stats.csv`. `lr` and `momentum` are the values *used* during the epoch (R1 logs
/// the value after the scheduler step, i.e. the next epoch's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub attempt: usize,
    pub epoch: usize,
    pub lr: f64,
    pub momentum: f64,
    pub seconds: f64,
    pub train: SplitStats,
    pub eval: SplitStats,
    /// Seconds of the epoch's training pass alone (its batches, without the summary, evaluation
    /// and I/O); not a column of `stats.csv`. Absent in outcomes written before it was recorded.
    #[serde(default)]
    pub train_seconds: f64,
    /// Training batches of the epoch.
    #[serde(default)]
    pub train_batches: usize,
}

/// Column names are the contract of docs/artifacts.md (`epochs.csv` in a train artifact).
const CSV_HEADER: &str = "attempt,epoch,lr,momentum,seconds,\
train_loss,train_accuracy,train_cra_36,train_cra_72,train_cra_108,train_cra_255,train_margin_median,\
eval_loss,eval_accuracy,eval_cra_36,eval_cra_72,eval_cra_108,eval_cra_255,eval_margin_median";

impl EpochStats {
    fn csv_row(&self) -> String {
        let split = |s: &SplitStats| {
            format!("{},{},{},{},{},{},{}", s.loss, s.accuracy, s.cra[0], s.cra[1], s.cra[2], s.cra[3], s.median_margin)
        };
        format!(
            "{},{},{},{},{:.3},{},{}",
            self.attempt, self.epoch, self.lr, self.momentum, self.seconds, split(&self.train), split(&self.eval)
        )
    }
}

/// The result of `train`: every attempt, and the final model when one completed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub status: RunStatus,
    pub attempts: Vec<Attempt>,
    /// File name (in the work folder) of the final model, when completed.
    pub model_file: Option<String>,
    pub stats_file: String,
    /// The last epoch's statistics of the completed attempt.
    pub last_epoch: Option<EpochStats>,
    /// Device and TF32 switches of the training passes (absent in outcomes written before
    /// lipctl recorded them).
    #[serde(default)]
    pub precision: Option<crate::precision::PrecisionRecord>,
    /// Why a run was not trained (with [`RunStatus::DoesNotFit`] / [`RunStatus::NoEpochCount`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Seed of attempt `k`: the configured seed for the first attempt, a derived one for retries.
pub fn attempt_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        seed
    } else {
        SplitMix64::mix(seed ^ SplitMix64::mix(k as u64)) >> 1
    }
}

/// torch seed for building the network (its initial weights) of an attempt with seed
/// `attempt_seed`: the seed's 64 bits as torch's seed, so distinct seeds give distinct initial
/// weights. (It was `seed >> 1`, which gave seeds 2k and 2k + 1 the same weights; seed 0 maps to
/// 0 either way, so runs with seed 0 are unchanged.)
pub fn init_seed(attempt_seed: u64) -> i64 {
    attempt_seed as i64
}

/// torch seed for epoch `epoch` (1-based) of an attempt with seed `attempt_seed`.
pub fn epoch_seed(attempt_seed: u64, epoch: usize) -> i64 {
    (SplitMix64::mix(SplitMix64::mix(attempt_seed) ^ epoch as u64) >> 1) as i64
}

/// Trains the ConvNet of `cfg` on `data`, in (and resuming from) `work_dir`.
pub fn train(cfg: &TrainConfig, data: TrainData, work_dir: &Path, progress: &Progress) -> anyhow::Result<TrainOutcome> {
    let side = data.train_images.size().get(2).copied().context("training images must be [N, 3, H, W]")?;
    let spec = NetSpec { method: cfg.method, size: cfg.size, kernel: cfg.kernel, input_side: side, classes: cfg.classes };
    train_with(cfg, data, work_dir, progress, &|p: &nn::Path| -> anyhow::Result<Box<dyn Network>> {
        Ok(Box::new(ConvNet::new(p, spec)?))
    })
}

type Builder<'a> = dyn Fn(&nn::Path) -> anyhow::Result<Box<dyn Network>> + 'a;

/// [`train`] with any network: `build` creates it under the given path (used by tests with
/// small stand-in networks). `cfg.method`/`size`/`kernel` only label the run. Long on purpose: the
/// retry loop over attempts and the outcome each one publishes read in sequence.
pub fn train_with(
    cfg: &TrainConfig,
    data: TrainData,
    work_dir: &Path,
    progress: &Progress,
    build: &Builder<'_>,
) -> anyhow::Result<TrainOutcome> {
    anyhow::ensure!(cfg.epochs > 0, "epochs must be at least 1");
    anyhow::ensure!(cfg.batch_size > 0, "batch size must be positive, got {}", cfg.batch_size);
    anyhow::ensure!(cfg.lr > 0.0 && cfg.wd >= 0.0, "learning rate {} / weight decay {} out of range", cfg.lr, cfg.wd);
    data.validate(cfg.classes)?;
    std::fs::create_dir_all(work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let fingerprint = cfg.fingerprint(&data);
    // Every file in the folder belongs to the run recorded in `run.txt`; another run's files
    // (statistics, attempts, checkpoint) must never be mixed into this one.
    let run_path = work_dir.join(RUN_FILE);
    if run_path.exists() {
        let recorded = std::fs::read_to_string(&run_path).with_context(|| format!("reading {}", run_path.display()))?;
        anyhow::ensure!(
            recorded.trim_end() == fingerprint,
            "{} belongs to another run ({}); this run is ({fingerprint}). Delete the folder or use another one",
            work_dir.display(),
            recorded.trim_end()
        );
    } else {
        write_atomic(&run_path, format!("{fingerprint}\n").as_bytes())?;
    }

    let outcome_path = work_dir.join(OUTCOME_FILE);
    if outcome_path.exists() {
        let text = std::fs::read(&outcome_path).with_context(|| format!("reading {}", outcome_path.display()))?;
        return serde_json::from_slice(&text).with_context(|| format!("parsing {}", outcome_path.display()));
    }

    let _tf32 = crate::precision::ModeGuard::new(cfg.tf32)?;
    let precision = Some(crate::precision::PrecisionRecord::observe(cfg.device)?);
    let data = TrainData {
        train_images: data.train_images.f_to_device(cfg.device)?,
        train_labels: data.train_labels.f_to_device(cfg.device)?,
        eval_images: data.eval_images.f_to_device(cfg.device)?,
        eval_labels: data.eval_labels.f_to_device(cfg.device)?,
        channel_mean: data.channel_mean,
    };
    let attempts_path = work_dir.join(ATTEMPTS_FILE);
    let mut attempts: Vec<Attempt> = if attempts_path.exists() {
        let text = std::fs::read(&attempts_path).with_context(|| format!("reading {}", attempts_path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", attempts_path.display()))?
    } else {
        Vec::new()
    };

    let _signals = interrupt::Guard::install();
    loop {
        let k = attempts.len();
        if k > cfg.max_retries {
            let outcome = TrainOutcome {
                status: RunStatus::Diverged,
                attempts,
                model_file: None,
                stats_file: STATS_FILE.into(),
                last_epoch: None,
                precision,
                reason: None,
            };
            write_atomic(&outcome_path, &serde_json::to_vec_pretty(&outcome)?)?;
            return Ok(outcome);
        }
        let seed = attempt_seed(cfg.seed, k);
        let result = run_attempt(cfg, &data, work_dir, progress, build, k, seed, &fingerprint)?;
        match result {
            AttemptResult::Completed { vs, last } => {
                checkpoint::save(&vs, &work_dir.join(MODEL_FILE))?;
                attempts.push(Attempt { index: k, seed, status: RunStatus::Completed, epochs_completed: cfg.epochs, divergence: None });
                let outcome = TrainOutcome {
                    status: RunStatus::Completed,
                    attempts,
                    model_file: Some(MODEL_FILE.into()),
                    stats_file: STATS_FILE.into(),
                    last_epoch: last,
                    precision,
                    reason: None,
                };
                write_atomic(&outcome_path, &serde_json::to_vec_pretty(&outcome)?)?;
                return Ok(outcome);
            }
            AttemptResult::Diverged { epochs_completed, divergence } => {
                progress.println(&format!(
                    "{} {}: attempt {} (seed {seed}) diverged in epoch {} ({} loss {}); {}",
                    cfg.method, cfg.size, k + 1, divergence.epoch, divergence.phase, divergence.loss,
                    if k < cfg.max_retries { "retrying with a new seed" } else { "no retries left" }
                ));
                attempts.push(Attempt { index: k, seed, status: RunStatus::Diverged, epochs_completed, divergence: Some(divergence) });
                write_atomic(&attempts_path, &serde_json::to_vec_pretty(&attempts)?)?;
                let ckpt = work_dir.join(CHECKPOINT_FILE);
                if ckpt.exists() {
                    std::fs::remove_file(&ckpt).with_context(|| format!("removing {}", ckpt.display()))?;
                }
            }
        }
    }
}

enum AttemptResult {
    Completed { vs: nn::VarStore, last: Option<EpochStats> },
    Diverged { epochs_completed: usize, divergence: Divergence },
}

/// Name prefixes of a training checkpoint's tensors that are not the model's: the run metadata
/// and the optimizer's momentum buffers ([`checkpoint::save_with`]).
const META_PREFIX: &str = "meta/";
const EXTRA_PREFIXES: [&str; 2] = [META_PREFIX, crate::train::sgd::STATE_PREFIX];

/// A checkpoint's metadata as read back.
struct Checkpoint {
    attempt: usize,
    epoch: usize,
    fingerprint: String,
}

fn read_checkpoint(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
    if !path.exists() {
        return Ok(None);
    }
    let meta = checkpoint::read_extra(path, &[META_PREFIX])?;
    let get = |name: &str| {
        meta.get(name)
            .map(|t| t.shallow_clone())
            .with_context(|| format!("checkpoint {} lacks {name}; delete it to start over", path.display()))
    };
    let attempt = get("meta/attempt")?.f_int64_value(&[0])? as usize;
    let epoch = get("meta/epoch")?.f_int64_value(&[0])? as usize;
    let fingerprint = String::from_utf8(Vec::<u8>::try_from(get("meta/run")?)?).context("checkpoint fingerprint is not UTF-8")?;
    Ok(Some(Checkpoint { attempt, epoch, fingerprint }))
}

/// Number of columns of a `stats.csv` row.
const CSV_COLUMNS: usize = 19;

/// Keeps the rows of earlier attempts and of this attempt up to `epoch` (rows of epochs after
/// the checkpoint exist when a run was stopped between two checkpoints; a row cut short by a
/// kill is dropped too). Rewrites the file once, at the start of an attempt.
fn truncate_stats(path: &Path, attempt: usize, epoch: usize) -> anyhow::Result<()> {
    let text = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    } else {
        String::new()
    };
    let mut out = format!("{CSV_HEADER}\n");
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let a: Option<usize> = fields.first().and_then(|f| f.parse().ok());
        let e: Option<usize> = fields.get(1).and_then(|f| f.parse().ok());
        if let (Some(a), Some(e), CSV_COLUMNS) = (a, e, fields.len()) {
            if a < attempt || (a == attempt && e <= epoch) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    write_atomic(path, out.as_bytes())
}

/// `stats.csv`, open for appending: one row per epoch, flushed at once (so a kill loses no
/// finished epoch's row), synced to disk before every checkpoint (so no checkpoint is ever on
/// disk ahead of its rows). The bytes are those of [`EpochStats::csv_row`] under [`CSV_HEADER`].
pub struct StatsFile {
    writer: csv::Writer<std::fs::File>,
}

impl StatsFile {
    /// Opens `path` for appending; it must exist with its header ([`truncate_stats`]).
    pub fn append_to(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(StatsFile { writer: csv::WriterBuilder::new().has_headers(false).from_writer(file) })
    }

    /// Creates `path` with only the header (or empties it), then opens it for appending.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        write_atomic(path, format!("{CSV_HEADER}\n").as_bytes())?;
        Self::append_to(path)
    }

    /// Appends one row and flushes it to the operating system.
    pub fn append(&mut self, row: &EpochStats) -> anyhow::Result<()> {
        let line = row.csv_row();
        self.writer.write_record(line.split(','))?;
        self.writer.flush()?;
        Ok(())
    }

    /// Flushes and syncs the file's data to disk.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()?;
        Ok(())
    }
}

/// What ends an epoch: the statistics row, and the checkpoint when it is due. The work per epoch
/// does not grow with the epoch number.
pub struct EpochRecords {
    pub stats: StatsFile,
    pub checkpoint_path: std::path::PathBuf,
    pub cadence: CheckpointCadence,
    /// Epoch of the checkpoint on disk (0: none) and when it was written.
    pub checkpointed: usize,
    pub checkpointed_at: Instant,
}

impl EpochRecords {
    /// Appends `row`; writes the checkpoint if `force` or the cadence says so. Returns whether
    /// it did.
    pub fn end_epoch(&mut self, row: &EpochStats, force: bool, save: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<bool> {
        self.stats.append(row)?;
        let due = force || self.cadence.due(row.epoch - self.checkpointed, self.checkpointed_at.elapsed());
        if due {
            self.stats.sync()?;
            save(&self.checkpoint_path)?;
            self.checkpointed = row.epoch;
            self.checkpointed_at = Instant::now();
        }
        Ok(due)
    }
}

fn non_finite(x: f64) -> Option<String> {
    (!x.is_finite()).then(|| x.to_string())
}

/// Copies, on the device, of the model's variables and the optimizer's buffers at the end of an
/// epoch that was not checkpointed: what an interruption during the next epoch saves.
struct Snapshot {
    epoch: usize,
    variables: Vec<(String, Tensor)>,
    momentum: Vec<(String, Tensor)>,
}

impl Snapshot {
    fn take(vs: &nn::VarStore, opt: &Sgd, epoch: usize, previous: Option<Snapshot>) -> anyhow::Result<Snapshot> {
        let _guard = tch::no_grad_guard();
        // Reuse the previous snapshot's memory (the names and shapes do not change in a run).
        let (mut variables, mut momentum) = match previous {
            Some(s) => (s.variables, s.momentum),
            None => (Vec::new(), Vec::new()),
        };
        let copy_into = |into: &mut Vec<(String, Tensor)>, from: Vec<(String, Tensor)>| -> anyhow::Result<()> {
            let same = into.len() == from.len() && into.iter().zip(&from).all(|(a, b)| a.0 == b.0 && a.1.size() == b.1.size());
            if same {
                for ((_, dst), (_, src)) in into.iter_mut().zip(&from) {
                    dst.f_copy_(src)?;
                }
            } else {
                *into = from.into_iter().map(|(n, t)| Ok((n, t.f_detach_copy()?))).collect::<anyhow::Result<_>>()?;
            }
            Ok(())
        };
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        copy_into(&mut variables, vars)?;
        copy_into(&mut momentum, opt.state())?;
        Ok(Snapshot { epoch, variables, momentum })
    }

    /// Puts the snapshot back into the model and the optimizer.
    fn restore(&self, vs: &nn::VarStore, opt: &mut Sgd) -> anyhow::Result<()> {
        let _guard = tch::no_grad_guard();
        let mut live = vs.variables();
        for (name, t) in &self.variables {
            live.get_mut(name).with_context(|| format!("snapshot variable {name} is not in the model"))?.f_copy_(t)?;
        }
        opt.load_state(&self.momentum)
    }
}

/// One attempt: build, resume from a checkpoint of this attempt, then the epoch loop. Long on
/// purpose: the loop reads top to bottom in the order of an epoch (schedule, batches, statistics,
/// evaluation, divergence, checkpoint cadence, interruption); its parts are in `step` and the
/// helpers above.
#[allow(clippy::too_many_arguments)]
fn run_attempt(
    cfg: &TrainConfig,
    data: &TrainData,
    work_dir: &Path,
    progress: &Progress,
    build: &Builder<'_>,
    attempt: usize,
    seed: u64,
    fingerprint: &str,
) -> anyhow::Result<AttemptResult> {
    let device = cfg.device;
    tch::manual_seed(init_seed(seed));
    let mut vs = nn::VarStore::new(device);
    let net = build(&vs.root()).context("building the network")?;
    let mut opt = Sgd::new(&vs, 0.0, 0.0, cfg.wd);

    let ckpt_path = work_dir.join(CHECKPOINT_FILE);
    let mut start_epoch = 0;
    if let Some(ckpt) = read_checkpoint(&ckpt_path)? {
        anyhow::ensure!(
            ckpt.fingerprint == fingerprint,
            "{} belongs to another run ({}); this run is ({fingerprint}). Delete the folder or use another one",
            ckpt_path.display(),
            ckpt.fingerprint
        );
        if ckpt.attempt == attempt {
            let extra = checkpoint::load_strict_with(&mut vs, &ckpt_path, &EXTRA_PREFIXES)?;
            opt.load_state(&extra.into_iter().collect::<Vec<_>>())?;
            start_epoch = ckpt.epoch;
            progress.println(&format!(
                "{} {}: resuming attempt {} from epoch {start_epoch}/{} ({})",
                cfg.method, cfg.size, attempt + 1, cfg.epochs, ckpt_path.display()
            ));
        }
    }
    let stats_path = work_dir.join(STATS_FILE);
    truncate_stats(&stats_path, attempt, start_epoch)?;
    let mut records = EpochRecords {
        stats: StatsFile::append_to(&stats_path)?,
        checkpoint_path: ckpt_path.clone(),
        cadence: cfg.checkpoint,
        checkpointed: start_epoch,
        checkpointed_at: Instant::now(),
    };

    let mut step = Step::new(opt, cfg.augmentation, Centering::new(data.channel_mean, device)?);
    let schedule = OneCycle::new(cfg.lr, cfg.epochs);
    let n = data.train_images.size()[0];
    let batches = ((n + cfg.batch_size - 1) / cfg.batch_size) as usize;
    let mut last = None;
    let mut snapshot: Option<Snapshot> = None;
    // On SIGTERM/SIGINT: the checkpoint of the last completed epoch, then an error.
    let interrupted = |sig: i32, step: &mut Step, snapshot: &Option<Snapshot>, records: &EpochRecords| -> anyhow::Result<AttemptResult> {
        let mut saved = records.checkpointed;
        if let Some(s) = snapshot.as_ref().filter(|s| s.epoch > records.checkpointed) {
            s.restore(&vs, &mut step.opt)?;
            save_checkpoint(&records.checkpoint_path, &vs, &step.opt, attempt, s.epoch, seed, fingerprint)?;
            saved = s.epoch;
        }
        anyhow::bail!(
            "{} {}: training stopped by {}; the checkpoint holds epoch {saved}/{} ({}); run again to resume",
            cfg.method, cfg.size, interrupt::name(sig), cfg.epochs, records.checkpoint_path.display()
        )
    };
    for epoch in start_epoch + 1..=cfg.epochs {
        if let Some(sig) = interrupt::received() {
            return interrupted(sig, &mut step, &snapshot, &records);
        }
        let started = Instant::now();
        tch::manual_seed(epoch_seed(seed, epoch));
        let (lr, momentum) = schedule.for_epoch(epoch);
        step.opt.lr = lr;
        step.opt.momentum = momentum;
        let mut task = progress.task(&format!("{} {} epoch {epoch}/{}", cfg.method, cfg.size, cfg.epochs), batches as u64);

        // Training pass (§6.4 step 1): the shared step (metrics from the detached outputs, i.e.
        // before the update, kept on the device).
        let perm = Tensor::f_randperm(n, (Kind::Int64, device))?;
        for b in 0..batches {
            let start = b as i64 * cfg.batch_size;
            let idx = perm.f_narrow(0, start, cfg.batch_size.min(n - start))?;
            let check = step.run(&*net, &data.train_images, &data.train_labels, &idx)?;
            task.inc(1);
            if let Some(check) = check {
                if let Some(loss) = non_finite(check.loss) {
                    task.finish("diverged");
                    let divergence = Divergence { epoch, phase: "train".into(), loss };
                    return Ok(AttemptResult::Diverged { epochs_completed: epoch - 1, divergence });
                }
                task.set_message(format!("loss {:.4} acc {:.3}", check.loss, check.accuracy));
            }
            if let Some(sig) = interrupt::received() {
                task.finish("interrupted");
                return interrupted(sig, &mut step, &snapshot, &records);
            }
        }
        let metrics = step.take_metrics();
        let summary = metrics.summary()?.context("an epoch without batches")?;
        let train_seconds = started.elapsed().as_secs_f64();
        if let Some(loss) = non_finite(summary.loss) {
            task.finish("diverged");
            return Ok(AttemptResult::Diverged { epochs_completed: epoch - 1, divergence: Divergence { epoch, phase: "train".into(), loss } });
        }
        crate::nn::fft::take_singular_inverses().with_context(|| format!("{} {} epoch {epoch}", cfg.method, cfg.size))?;
        let train_stats = SplitStats::from_parts(summary.loss, &summary.correct, &summary.margins);

        // Evaluation pass (§6.4 step 2): frozen network, caches recomputed after the last step.
        let eval = {
            let frozen = net.frozen()?;
            evaluate(&*frozen, &data.eval_images, &data.eval_labels, data.channel_mean, cfg.batch_size, device)?
        };
        if !eval.correct.is_empty() {
            if let Some(loss) = non_finite(eval.loss) {
                task.finish("diverged");
                return Ok(AttemptResult::Diverged { epochs_completed: epoch - 1, divergence: Divergence { epoch, phase: "eval".into(), loss } });
            }
        }
        let row = EpochStats {
            attempt,
            epoch,
            lr,
            momentum,
            seconds: started.elapsed().as_secs_f64(),
            train: train_stats,
            eval: SplitStats::from_evaluation(&eval),
            train_seconds,
            train_batches: batches,
        };
        task.finish(&format!(
            "train loss {:.4} acc {:.3} | eval loss {:.4} acc {:.3} cra36 {:.3}",
            row.train.loss, row.train.accuracy, row.eval.loss, row.eval.accuracy, row.eval.cra[0]
        ));
        // The last epoch, and an epoch that ended after a signal arrived, are always saved.
        let force = epoch == cfg.epochs || interrupt::received().is_some();
        let saved = records.end_epoch(&row, force, |path| save_checkpoint(path, &vs, &step.opt, attempt, epoch, seed, fingerprint))?;
        if !saved {
            snapshot = Some(Snapshot::take(&vs, &step.opt, epoch, snapshot.take())?);
        }
        last = Some(row);
    }
    Ok(AttemptResult::Completed { vs, last })
}

fn save_checkpoint(
    path: &Path,
    vs: &nn::VarStore,
    opt: &Sgd,
    attempt: usize,
    epoch: usize,
    seed: u64,
    fingerprint: &str,
) -> anyhow::Result<()> {
    let mut named = opt.state();
    named.push(("meta/attempt".into(), Tensor::from_slice(&[attempt as i64])));
    named.push(("meta/epoch".into(), Tensor::from_slice(&[epoch as i64])));
    named.push(("meta/seed".into(), Tensor::from_slice(&[(seed >> 1) as i64])));
    named.push(("meta/run".into(), Tensor::from_slice(fingerprint.as_bytes())));
    checkpoint::save_with(vs, named, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, x: f64) -> EpochStats {
        let split = |l: f64| SplitStats { loss: l, accuracy: 0.5, cra: [0.25, 0.125, 1.0 / 3.0, 0.0], median_margin: -0.0 };
        EpochStats {
            attempt: 1,
            epoch,
            lr: x,
            momentum: 0.85,
            seconds: 12.3456,
            train: split(f64::NAN),
            eval: split(1e-300),
            train_seconds: 1.0,
            train_batches: 3,
        }
    }

    /// The appended file has exactly the bytes of the former whole-file writer: the header, then
    /// `csv_row()` and a newline per epoch (numbers as Rust prints them, no quoting).
    #[test]
    fn appended_statistics_have_the_published_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATS_FILE);
        let rows = [row(1, 0.1), row(2, 1.0 / 3.0), row(3, 2e-7)];
        {
            let mut f = StatsFile::create(&path).unwrap();
            f.append(&rows[0]).unwrap();
        }
        // Reopened for appending (a resumed run), as the training loop does.
        let mut f = StatsFile::append_to(&path).unwrap();
        f.append(&rows[1]).unwrap();
        f.append(&rows[2]).unwrap();
        f.sync().unwrap();
        let mut want = format!("{CSV_HEADER}\n");
        for r in &rows {
            want.push_str(&r.csv_row());
            want.push('\n');
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        assert!(want.contains(",NaN,") && want.contains(",0.000000000000000") && want.contains(",12.346,"), "{want}");
        assert_eq!(CSV_HEADER.split(',').count(), CSV_COLUMNS);
        // Truncation keeps the rows up to the checkpoint and drops a row cut short by a kill.
        std::fs::write(&path, format!("{want}1,4,0.1,0.8")).unwrap();
        truncate_stats(&path, 1, 2).unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, format!("{CSV_HEADER}\n{}\n{}\n", rows[0].csv_row(), rows[1].csv_row()));
    }

    #[test]
    fn checkpoint_cadence_by_epochs_or_minutes() {
        let c = CheckpointCadence::default();
        assert_eq!((c.every_epochs, c.every_minutes), (10, 10.0));
        assert!(!c.due(9, Duration::from_secs(599)));
        assert!(c.due(10, Duration::ZERO));
        assert!(c.due(1, Duration::from_secs(600)));
        assert!(CheckpointCadence::EVERY_EPOCH.due(1, Duration::ZERO));
        let parsed: CheckpointCadence = serde_yaml::from_str("every_epochs: 3").unwrap();
        assert_eq!(parsed, CheckpointCadence { every_epochs: 3, every_minutes: 10.0 });
        assert!(serde_yaml::from_str::<CheckpointCadence>("every_epoch: 3").is_err(), "a typo is an error");
    }
}
