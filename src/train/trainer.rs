//! The training loop (reference-protocol §6.4), with checkpoints, exact resume and divergence
//! retries (design §7).
//!
//! Work folder layout (all names relative, all writes atomic: temp file + rename):
//!
//! | file | written | content |
//! |---|---|---|
//! | `run.txt` | at the start | the run's fingerprint (configuration and data shapes); another run in the same folder is refused |
//! | `checkpoint.safetensors` | after every epoch | model variables (their VarStore names), SGD momentum (`sgd_momentum/<name>`), `meta/attempt`, `meta/epoch`, `meta/seed`, `meta/run` (the run's fingerprint as bytes) |
//! | `stats.csv` | after every epoch, before the checkpoint | one row per (attempt, epoch) |
//! | `attempts.json` | when an attempt diverges | the diverged attempts |
//! | `model.safetensors` | at the end | the final model, loadable with `VarStore::load` |
//! | `outcome.json` | at the end, last | the [`TrainOutcome`]; its presence marks the run finished |
//!
//! **Determinism.** Attempt `k` uses seed `attempt_seed(seed, k)` (the configured seed for
//! `k = 0`). torch is seeded with it before the network is built, and with
//! `epoch_seed(attempt seed, e)` at the start of every epoch `e`: shuffling, augmentation and any
//! randomness inside layers depend only on (seed, attempt, epoch) and on the state saved in the
//! checkpoint. A run killed at any point and restarted from its last complete epoch therefore
//! ends with bitwise the same model as an uninterrupted run on the CPU (tested); on CUDA, up to
//! the non-determinism of the kernels themselves.
//!
//! **Divergence.** A non-finite training loss (checked every [`CHECK_EVERY`] batches and at the
//! end of the epoch) or evaluation loss stops the attempt. It is recorded and the run restarts
//! from scratch with the next attempt seed, up to `max_retries` times; an exhausted run ends with
//! status `Diverged` and no model (a result, not an error).
//!
//! **Precision.** The run holds the TF32 switches of `cfg.tf32` ([`crate::precision`]); the
//! per-epoch evaluation runs in full fp32, as `certify` does. The outcome records both.

use super::augment::Augmentation;
use crate::eval::{correct_and_margin, cra, evaluate, lipschitz_loss, Centering, Evaluation, RADII};
use crate::stats::{median, SplitMix64};
use super::schedule::OneCycle;
use super::sgd::Sgd;
use crate::fsx::write_atomic;
use crate::nn::checkpoint;
use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
use crate::progress::Progress;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// How often (in batches) the training loss is read back to detect divergence early and update
/// the progress message; reading it every batch would synchronise the device every batch.
pub const CHECK_EVERY: usize = 16;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const STATS_FILE: &str = "stats.csv";
pub const ATTEMPTS_FILE: &str = "attempts.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OUTCOME_FILE: &str = "outcome.json";
pub const RUN_FILE: &str = "run.txt";

/// A trainable network: a training forward and an eval-mode module with cached weight
/// transforms, recomputed by the caller after every optimizer step.
pub trait Network: nn::ModuleT {
    fn frozen(&self) -> Box<dyn nn::Module + '_>;
}

impl Network for ConvNet {
    fn frozen(&self) -> Box<dyn nn::Module + '_> {
        Box::new(self.freeze())
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
/// small stand-in networks). `cfg.method`/`size`/`kernel` only label the run.
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

/// Keeps the rows of earlier attempts and of this attempt up to `epoch` (rows of epochs after
/// the checkpoint may exist when a run was killed between writing them and the checkpoint).
fn truncate_stats(path: &Path, attempt: usize, epoch: usize) -> anyhow::Result<()> {
    let text = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    } else {
        String::new()
    };
    let mut out = format!("{CSV_HEADER}\n");
    for line in text.lines().skip(1) {
        let mut fields = line.split(',');
        let a: Option<usize> = fields.next().and_then(|f| f.parse().ok());
        let e: Option<usize> = fields.next().and_then(|f| f.parse().ok());
        if let (Some(a), Some(e)) = (a, e) {
            if a < attempt || (a == attempt && e <= epoch) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    write_atomic(path, out.as_bytes())
}

fn append_stats(path: &Path, row: &EpochStats) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.push_str(&row.csv_row());
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

fn non_finite(x: f64) -> Option<String> {
    (!x.is_finite()).then(|| x.to_string())
}

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

    let centering = Centering::new(data.channel_mean, device)?;
    let schedule = OneCycle::new(cfg.lr, cfg.epochs);
    let n = data.train_images.size()[0];
    let batches = ((n + cfg.batch_size - 1) / cfg.batch_size) as usize;
    let mut last = None;
    for epoch in start_epoch + 1..=cfg.epochs {
        let started = Instant::now();
        tch::manual_seed(epoch_seed(seed, epoch));
        let (lr, momentum) = schedule.for_epoch(epoch);
        opt.lr = lr;
        opt.momentum = momentum;
        let mut task = progress.task(&format!("{} {} epoch {epoch}/{}", cfg.method, cfg.size, cfg.epochs), batches as u64);

        // Training pass (§6.4 step 1): metrics from the detached outputs, i.e. before the step.
        let perm = Tensor::f_randperm(n, (Kind::Int64, device))?;
        let (mut losses, mut corrects, mut margins) = (Vec::new(), Vec::new(), Vec::new());
        for b in 0..batches {
            let start = b as i64 * cfg.batch_size;
            let idx = perm.f_narrow(0, start, cfg.batch_size.min(n - start))?;
            let x = cfg.augmentation.apply(&data.train_images.f_index_select(0, &idx)?, &centering)?;
            let y = data.train_labels.f_index_select(0, &idx)?;
            let out = net.forward_t(&x, true);
            let loss = lipschitz_loss(&out, &y)?;
            opt.zero_grad();
            loss.f_backward()?;
            opt.step()?;
            {
                let _guard = tch::no_grad_guard();
                losses.push(loss.f_detach()?.f_to_kind(Kind::Double)?);
                let (c, m) = correct_and_margin(&out.f_detach()?, &y)?;
                corrects.push(c);
                margins.push(m);
            }
            task.inc(1);
            if (b + 1) % CHECK_EVERY == 0 {
                let recent = Tensor::f_stack(&losses[losses.len() - CHECK_EVERY..], 0)?.f_mean(Kind::Double)?.f_double_value(&[])?;
                if let Some(loss) = non_finite(recent) {
                    task.finish("diverged");
                    let divergence = Divergence { epoch, phase: "train".into(), loss };
                    return Ok(AttemptResult::Diverged { epochs_completed: epoch - 1, divergence });
                }
                let acc = Tensor::f_cat(&corrects[corrects.len() - CHECK_EVERY..], 0)?.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?.f_double_value(&[])?;
                task.set_message(format!("loss {recent:.4} acc {acc:.3}"));
            }
        }
        let train_loss = Tensor::f_stack(&losses, 0)?.f_mean(Kind::Double)?.f_double_value(&[])?;
        if let Some(loss) = non_finite(train_loss) {
            task.finish("diverged");
            return Ok(AttemptResult::Diverged { epochs_completed: epoch - 1, divergence: Divergence { epoch, phase: "train".into(), loss } });
        }
        let train_correct = Vec::<bool>::try_from(Tensor::f_cat(&corrects, 0)?.f_to_device(Device::Cpu)?)?;
        let train_margins = Vec::<f64>::try_from(Tensor::f_cat(&margins, 0)?.f_to_device(Device::Cpu)?)?;
        let train_stats = SplitStats::from_parts(train_loss, &train_correct, &train_margins);

        // Evaluation pass (§6.4 step 2): frozen network, caches recomputed after the last step.
        let eval = {
            let frozen = net.frozen();
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
        };
        task.finish(&format!(
            "train loss {:.4} acc {:.3} | eval loss {:.4} acc {:.3} cra36 {:.3}",
            row.train.loss, row.train.accuracy, row.eval.loss, row.eval.accuracy, row.eval.cra[0]
        ));
        append_stats(&stats_path, &row)?;
        save_checkpoint(&ckpt_path, &vs, &opt, attempt, epoch, seed, fingerprint)?;
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
