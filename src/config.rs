//! Pipeline files (`pipelines/*.yaml`): the schema, its validation, and the errors a user sees.
//!
//! A pipeline names datasets, methods, sizes, seeds and stage options. Parsing is strict
//! (`deny_unknown_fields`), and every error names `file:line:column`, the offending value and the
//! fix, e.g. `pipelines/paper.yaml:14:11: unknown method "Cayly"; expected one of Standard, AOL, …`.
//! Stages never see this YAML: [`crate::pipeline::plan`] turns a [`Pipeline`] into typed tasks.

use crate::budgets::BudgetMode;
use crate::device::DeviceChoice;
use crate::precision::Tf32Mode;
use crate::nn::{Method, ModelSize};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// A parsed, validated pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Short name shown in logs and the report.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default, deserialize_with = "de_device")]
    pub device: DeviceChoice,
    /// TF32 in training, search and `measure`: `on` (default; libtorch's and the paper's PyTorch
    /// 1.12 setting: cuDNN convolutions in TF32, matrix products in fp32) or `off` (full fp32).
    /// Certification and the Lipschitz audit always run in full fp32 (`crate::precision`).
    #[serde(default, deserialize_with = "de_tf32")]
    pub tf32: Tf32Mode,
    pub datasets: Vec<DatasetEntry>,
    /// Method names in the paper's spelling, or `all`.
    #[serde(deserialize_with = "de_methods")]
    pub methods: Vec<Method>,
    #[serde(deserialize_with = "de_sizes")]
    pub sizes: Vec<ModelSize>,
    /// Kernel size of the block convolutions: 3, or 1 for the paper's `_1x1` variant.
    #[serde(default = "default_kernel", deserialize_with = "de_kernel")]
    pub kernel: i64,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    pub train: TrainOptions,
    #[serde(default)]
    pub certify: CertifyOptions,
    #[serde(default)]
    pub measure: Option<MeasureOptions>,
    #[serde(default)]
    pub budgets: Option<BudgetOptions>,
    #[serde(default)]
    pub search: Option<SearchOptions>,
}

/// One dataset of the pipeline; `source` may be overridden by `--data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// cifar10, cifar100, tinyimagenet, imagefolder or synthetic.
    #[serde(deserialize_with = "de_dataset_name")]
    pub name: String,
    /// Archive or folder to read; relative paths are relative to the pipeline file's folder's parent
    /// (the project root) as given on the command line.
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// Keep only the first N training images of each class (a CPU-sized subset).
    #[serde(default, deserialize_with = "de_opt_positive_usize")]
    pub train_per_class: Option<usize>,
    /// Keep only the first N test images of each class.
    #[serde(default, deserialize_with = "de_opt_positive_usize")]
    pub test_per_class: Option<usize>,
}

impl DatasetEntry {
    /// `kind` as a whole: no `source` (the official archive, or generated data), every image.
    pub fn new(kind: crate::data::DatasetKind) -> DatasetEntry {
        DatasetEntry { name: kind.as_str().to_string(), source: None, train_per_class: None, test_per_class: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Fixed epoch count, used when the pipeline has no `budgets`.
    #[serde(default, deserialize_with = "de_opt_positive_u32")]
    pub epochs: Option<u32>,
    /// Peak learning rate of the OneCycle schedule (used when there is no `search`; required unless
    /// `hyperparameters: paper`).
    #[serde(default, deserialize_with = "de_opt_positive_f64")]
    pub lr: Option<f64>,
    /// Weight decay (coupled L2), ≥ 0 (same rule as `lr`).
    #[serde(default, deserialize_with = "de_opt_nonnegative_f64")]
    pub wd: Option<f64>,
    /// Where learning rate and weight decay come from: `pipeline` (`lr`, `wd`, `per_method`; the
    /// default) or `paper`: the authors' published choice for each (dataset, method, size,
    /// kernel), `data/paper/results.csv` (Tables 9–12; the same values for every budget), 16×
    /// cheaper than a search and exactly the paper's protocol. `per_method` entries still replace
    /// it: the only way to give values for models the paper never trained (Standard).
    #[serde(default)]
    pub hyperparameters: HyperSource,
    /// Cap on every run's epochs, to run a long pipeline's shape in minutes (not the paper's
    /// protocol; unset by default).
    #[serde(default, deserialize_with = "de_opt_positive_u32")]
    pub max_epochs: Option<u32>,
    #[serde(default = "default_batch", deserialize_with = "de_positive_u32")]
    pub batch_size: u32,
    /// Retries with a new seed after a diverged (NaN/inf) run.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Learning rate, weight decay and/or epoch floor of single methods, replacing `lr`/`wd`/
    /// `budgets.min_epochs` for them (the paper's per-method choice, where a pipeline has no
    /// `search` to make it).
    #[serde(default, deserialize_with = "de_per_method")]
    pub per_method: Vec<(Method, MethodOverrides)>,
    /// When training writes its checkpoint: `{every_epochs: 10, every_minutes: 10}` by default,
    /// whichever comes first; always after the last epoch and on SIGTERM/SIGINT. Not part of a
    /// task's key (a run may resume with another cadence).
    #[serde(default)]
    pub checkpoint: crate::train::CheckpointCadence,
}

/// `train.hyperparameters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HyperSource {
    #[default]
    Pipeline,
    Paper,
}

/// `train.per_method.<METHOD>`: what replaces the pipeline-wide settings for one method.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodOverrides {
    #[serde(default, deserialize_with = "de_opt_positive_f64")]
    pub lr: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_nonnegative_f64")]
    pub wd: Option<f64>,
    /// Replaces `budgets.min_epochs` for this method.
    #[serde(default, deserialize_with = "de_opt_positive_u32")]
    pub min_epochs: Option<u32>,
}

impl TrainOptions {
    /// `epochs` epochs at learning rate `lr` and weight decay `wd`, everything else at a file's
    /// defaults (batch size 256, 2 retries).
    pub fn fixed(epochs: u32, lr: f64, wd: f64) -> TrainOptions {
        TrainOptions {
            epochs: Some(epochs),
            lr: Some(lr),
            wd: Some(wd),
            hyperparameters: HyperSource::default(),
            max_epochs: None,
            batch_size: default_batch(),
            max_retries: default_retries(),
            per_method: Vec::new(),
            checkpoint: crate::train::CheckpointCadence::default(),
        }
    }

    /// `(lr, wd)` of `method` at `size` on `dataset` (pipeline dataset name) with `kernel`: its
    /// `per_method` entry where set, else the pipeline-wide values or, with `hyperparameters:
    /// paper`, the paper's published ones. `None` when neither says (checked when the pipeline is
    /// read: only for models the paper records as not fitting, which are never trained).
    pub fn hyper_for(&self, dataset: &str, method: Method, size: ModelSize, kernel: i64) -> Option<(f64, f64)> {
        let o = self.overrides(method);
        let (lr, wd) = match self.hyperparameters {
            HyperSource::Pipeline => (self.lr, self.wd),
            HyperSource::Paper => match paper_hyper(dataset, method, size, kernel) {
                Some((lr, wd)) => (Some(lr), Some(wd)),
                None => (None, None),
            },
        };
        Some((o.lr.or(lr)?, o.wd.or(wd)?))
    }

    /// The epoch floor of `method` under budgets whose pipeline-wide floor is `budget_floor`.
    pub fn min_epochs_for(&self, method: Method, budget_floor: u32) -> u32 {
        self.overrides(method).min_epochs.unwrap_or(budget_floor)
    }

    fn overrides(&self, method: Method) -> MethodOverrides {
        self.per_method.iter().find(|(m, _)| *m == method).map(|(_, h)| *h).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyOptions {
    /// Power-iteration steps per layer in the Lipschitz audit.
    #[serde(default = "default_audit_iters", deserialize_with = "de_positive_u32")]
    pub audit_iterations: u32,
    /// The attack check ([`crate::attack`]): `enabled`, `steps`, `restarts`, `targets`,
    /// `samples`, `seed`; defaults in [`crate::attack::AttackOptions::default`].
    #[serde(default)]
    pub attack: crate::attack::AttackOptions,
}

impl Default for CertifyOptions {
    fn default() -> Self {
        CertifyOptions { audit_iterations: default_audit_iters(), attack: crate::attack::AttackOptions::default() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureOptions {
    /// Timed batches after warm-up (the paper: 100).
    #[serde(default = "default_measure_batches", deserialize_with = "de_positive_u32")]
    pub batches: u32,
    #[serde(default = "default_measure_batch_sizes")]
    pub batch_sizes: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetOptions {
    /// Wall-clock budgets in hours, read with the one duration grammar ([`crate::units::HoursList`]):
    /// `[2, 10, 24]`, `[90min, 1h30m]` or `"2 10 24"`.
    #[serde(deserialize_with = "crate::units::de_hours_list")]
    pub hours: Vec<f64>,
    pub mode: BudgetMode,
    /// Floor on the epochs a budget yields when the model fits (0, the paper's rule, by default).
    /// CPU-sized pipelines use 1 so that a slow layer still trains once under a minutes-long budget.
    #[serde(default)]
    pub min_epochs: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchOptions {
    #[serde(default = "default_trials", deserialize_with = "de_positive_u32")]
    pub trials: u32,
    /// Epochs per trial; defaults to the pipeline's shortest budget.
    #[serde(default, deserialize_with = "de_opt_positive_u32")]
    pub epochs: Option<u32>,
    #[serde(default)]
    pub seed: u64,
}

/// The paper's (lr, wd) for a pipeline dataset name, method, size and kernel (`results.csv`; the
/// values are the same for every budget).
fn paper_hyper(dataset: &str, method: Method, size: ModelSize, kernel: i64) -> Option<(f64, f64)> {
    let dataset: crate::paper::Dataset = dataset.parse().ok()?;
    let data = crate::paper::PaperData::shipped().ok()?;
    data.results
        .iter()
        .find(|r| r.dataset == dataset && r.method == crate::paper::PaperMethod::Layer(method) && r.size == size && r.kernel as i64 == kernel)
        .map(|r| (r.lr, r.wd))
}

/// Whether the paper records that `method`-`size` does not fit its GPU (Table 8 without an epoch
/// count: LOT-L), so that it has no published hyper-parameters and is never trained.
fn paper_says_does_not_fit(dataset: crate::paper::Dataset, method: Method, size: ModelSize) -> bool {
    matches!(crate::budgets::paper_epochs_2h(dataset.kind(), method, size, 3), Ok(None))
}

/// 1-based line of the first `key:` in YAML `text` (for messages about a key's value).
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines().position(|l| l.trim_start().starts_with(&format!("{key}:"))).map(|i| i + 1)
}

fn default_kernel() -> i64 {
    3
}
fn default_seeds() -> Vec<u64> {
    vec![0]
}
fn default_batch() -> u32 {
    256
}
fn default_retries() -> u32 {
    2
}
fn default_audit_iters() -> u32 {
    100
}
fn default_measure_batches() -> u32 {
    100
}
fn default_measure_batch_sizes() -> Vec<u32> {
    vec![256]
}
fn default_trials() -> u32 {
    16
}

/// A dataset kind `prepare` knows ([`crate::data::DatasetKind`]: the same names as
/// `prepare --dataset`, `npz` included), in its canonical spelling.
fn de_dataset_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<crate::data::DatasetKind>().map(|k| k.as_str().to_string()).map_err(|e| serde::de::Error::custom(e.to_string()))
}

fn de_device<'de, D: Deserializer<'de>>(d: D) -> Result<DeviceChoice, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(e.to_string()))
}

/// `on` / `off`, or a YAML boolean (`true` / `false`).
fn de_tf32<'de, D: Deserializer<'de>>(d: D) -> Result<Tf32Mode, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Spelling {
        Bool(bool),
        Word(String),
    }
    match Spelling::deserialize(d)? {
        Spelling::Bool(true) => Ok(Tf32Mode::On),
        Spelling::Bool(false) => Ok(Tf32Mode::Off),
        Spelling::Word(w) => w.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(e.to_string())),
    }
}

/// Deserializes `all`, one name, or a list of names into values parsed with `FromStr`. A visitor
/// rather than an untagged enum: serde_yaml then reports the line of the offending list item.
fn de_name_list<'de, D, T>(d: D, all: &'static [T], what: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Copy + std::str::FromStr<Err = anyhow::Error>,
{
    struct V<T: 'static>(&'static [T], &'static str);
    impl<'de, T: Copy + std::str::FromStr<Err = anyhow::Error>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of {}, or `all`", self.1)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<T>, E> {
            if s.trim().eq_ignore_ascii_case("all") {
                return Ok(self.0.to_vec());
            }
            s.parse::<T>().map(|v| vec![v]).map_err(|e| E::custom(e.to_string()))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                out.push(name.parse::<T>().map_err(|e| serde::de::Error::custom(e.to_string()))?);
            }
            if out.is_empty() {
                return Err(serde::de::Error::custom(format!("no {} listed; name at least one, or `all`", self.1)));
            }
            Ok(out)
        }
    }
    d.deserialize_any(V(all, what))
}

fn de_methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
    de_name_list(d, &Method::ALL, "methods")
}

fn de_sizes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ModelSize>, D::Error> {
    de_name_list(d, &ModelSize::ALL, "model sizes (XS, S, M, L)")
}

// The rules of single values, shared by pipeline files (the `de_*` functions below) and the
// command-line flags of `lipctl train`/`certify`, so both accept the same values with one message.

/// A block-convolution kernel size: 3, or 1 for the paper's 1×1 variant.
pub fn kernel(k: i64) -> Result<i64, String> {
    if k == 1 || k == 3 {
        Ok(k)
    } else {
        Err(format!("kernel must be 3 or 1, got {k}"))
    }
}

/// A count such as epochs or a batch size: 1 ..= `u32::MAX`.
pub fn positive_u32(v: i64) -> Result<u32, String> {
    u32::try_from(v).ok().filter(|&v| v >= 1).ok_or_else(|| format!("must be a positive whole number, got {v}"))
}

/// A finite number > 0 (a learning rate).
pub fn positive_f64(v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a positive number, got {v}"))
    }
}

/// A finite number ≥ 0 (a weight decay).
pub fn nonnegative_f64(v: f64) -> Result<f64, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a number ≥ 0, got {v}"))
    }
}

fn de_kernel<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    kernel(i64::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    positive_u32(i64::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_positive_u32(d).map(Some)
}

fn de_opt_positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    de_positive_u32(d).map(|v| Some(v as usize))
}

fn de_positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    positive_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    de_positive_f64(d).map(Some)
}

fn de_opt_nonnegative_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    de_nonnegative_f64(d).map(Some)
}

fn de_per_method<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Method, MethodOverrides)>, D::Error> {
    let map = std::collections::BTreeMap::<String, MethodOverrides>::deserialize(d)?;
    map.into_iter()
        .map(|(name, h)| {
            let m = name.parse::<Method>().map_err(|e| serde::de::Error::custom(format!("per_method: {e}")))?;
            Ok((m, h))
        })
        .collect()
}

fn de_nonnegative_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    nonnegative_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Formats a serde_yaml error as `file:line:column: message`.
pub fn yaml_error(path: &Path, err: &serde_yaml::Error) -> anyhow::Error {
    let msg = err.to_string();
    match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let msg = msg.replace(&suffix, "");
            anyhow::anyhow!("{}:{}:{}: {}", path.display(), loc.line(), loc.column(), msg)
        }
        None => anyhow::anyhow!("{}: {}", path.display(), msg),
    }
}

impl Pipeline {
    /// A pipeline of `methods` × `sizes` on `datasets` with every other key at the default a file
    /// gets when it leaves the key out (device `auto`, TF32 on, kernel 3, seed 0, no measure,
    /// budgets or search). Set fields as needed, then [`Pipeline::validate`] it.
    pub fn new(name: impl Into<String>, datasets: Vec<DatasetEntry>, methods: Vec<Method>, sizes: Vec<ModelSize>, train: TrainOptions) -> Pipeline {
        Pipeline {
            name: name.into(),
            description: String::new(),
            device: DeviceChoice::default(),
            tf32: Tf32Mode::default(),
            datasets,
            methods,
            sizes,
            kernel: default_kernel(),
            seeds: default_seeds(),
            train,
            certify: CertifyOptions::default(),
            measure: None,
            budgets: None,
            search: None,
        }
    }

    /// The cross-field rules [`Pipeline::parse`] applies to a file, for a pipeline built in code
    /// (the single values are the caller's to check, e.g. with [`positive_u32`] or [`kernel`]);
    /// `origin` names it in errors.
    pub fn validate(&self, origin: &Path) -> anyhow::Result<()> {
        self.check(origin)?;
        self.check_hyperparameters(origin, "")
    }

    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> anyhow::Result<Pipeline> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read pipeline {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses pipeline text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Pipeline> {
        let pipeline: Pipeline = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
        pipeline.check(path)?;
        pipeline.check_hyperparameters(path, text)?;
        Ok(pipeline)
    }

    /// Every trained (dataset, method, size) has a learning rate and weight decay: from the pipeline,
    /// or with `hyperparameters: paper` from the paper (or `per_method`). Errors name `file:line`.
    fn check_hyperparameters(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        let at = |key: &str| match line_of(text, key) {
            Some(line) => format!("{}:{line}: `train.{key}`", path.display()),
            None => format!("{}: `train.{key}`", path.display()),
        };
        match self.train.hyperparameters {
            HyperSource::Pipeline => {
                if self.search.is_some() {
                    return Ok(());
                }
                let unset: Vec<String> = self
                    .methods
                    .iter()
                    .filter(|&&m| {
                        let o = self.train.overrides(m);
                        o.lr.or(self.train.lr).is_none() || o.wd.or(self.train.wd).is_none()
                    })
                    .map(|m| m.to_string())
                    .collect();
                if !unset.is_empty() {
                    anyhow::bail!(
                        "{}: no learning rate or weight decay for {}; set `train.lr` and `train.wd`, or `hyperparameters: paper`",
                        path.display(),
                        unset.join(", ")
                    );
                }
            }
            HyperSource::Paper => {
                if self.search.is_some() {
                    anyhow::bail!("{}: the paper's hyper-parameters replace the `search` section; remove one of the two", at("hyperparameters"));
                }
                for d in &self.datasets {
                    let Ok(dataset) = d.name.parse::<crate::paper::Dataset>() else {
                        anyhow::bail!(
                            "{}: the paper published hyper-parameters for cifar10, cifar100 and tinyimagenet only, not `{}`; use `lr` and `wd`",
                            at("hyperparameters"),
                            d.name
                        );
                    };
                    // Models that are never trained need none: those the paper records as not
                    // fitting, and with paper budgets those Table 8 lacks (Standard).
                    let paper_budgets = self.budgets.as_ref().is_some_and(|b| b.mode == BudgetMode::Paper);
                    for &size in &self.sizes {
                        for &method in &self.methods {
                            if self.train.hyper_for(&d.name, method, size, self.kernel).is_some()
                                || paper_says_does_not_fit(dataset, method, size)
                                || (paper_budgets && !crate::budgets::in_table_8(method).unwrap_or(true))
                            {
                                continue;
                            }
                            anyhow::bail!(
                                "{}: the paper published no learning rate and weight decay for {} {method}-{size} (kernel {}); \
                                 give them in `train.per_method.{method}: {{lr: …, wd: …}}` or remove the combination",
                                at("hyperparameters"),
                                d.name,
                                self.kernel
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Cross-field rules that serde cannot express.
    fn check(&self, path: &Path) -> anyhow::Result<()> {
        let at = |key: &str| format!("{}: `{key}`", path.display());
        if self.datasets.is_empty() {
            anyhow::bail!("{}: list at least one dataset", at("datasets"));
        }
        if self.seeds.is_empty() {
            anyhow::bail!("{}: list at least one seed", at("seeds"));
        }
        if self.train.epochs.is_none() && self.budgets.is_none() {
            anyhow::bail!("{}: set `train.epochs`, or add a `budgets` section", at("train"));
        }
        if let Some(b) = &self.budgets {
            if b.hours.is_empty() {
                anyhow::bail!("{}: list at least one budget, e.g. hours: [2, 10, 24] or [90min, 1h30m]", at("budgets.hours"));
            }
        }
        if self.budgets.is_none() && self.train.per_method.iter().any(|(_, o)| o.min_epochs.is_some()) {
            anyhow::bail!("{}: `min_epochs` is a floor on budget epochs; add a `budgets` section or remove it", at("train.per_method"));
        }
        if self.search.is_some() && self.train.per_method.iter().any(|(_, o)| o.lr.is_some() || o.wd.is_some()) {
            anyhow::bail!(
                "{}: `train.per_method` fixes learning rates and weight decays, but the `search` section chooses them; remove one of the two",
                at("train.per_method")
            );
        }
        for (m, _) in &self.train.per_method {
            if !self.methods.contains(m) {
                anyhow::bail!("{}: {m} has settings but is not in `methods`; add it there or remove its entry", at("train.per_method"));
            }
        }
        if self.budgets.as_ref().is_some_and(|b| b.mode == BudgetMode::Paper) {
            if let Some(d) = self.datasets.iter().find(|d| d.name.parse::<crate::paper::Dataset>().is_err()) {
                anyhow::bail!(
                    "{}: `mode: paper` uses the paper's epoch counts, which exist for cifar10, cifar100 and tinyimagenet only, not `{}`; use `mode: measured`",
                    at("budgets.mode"),
                    d.name
                );
            }
        }
        for d in &self.datasets {
            if d.name == "npz" && d.source.is_none() {
                anyhow::bail!("{}: dataset `npz` needs a `source` (train.npz,test.npz, or one .npz with both splits)", at("datasets"));
            }
            if d.name == "imagefolder" && d.source.is_none() {
                anyhow::bail!("{}: dataset `imagefolder` needs a `source` (folder, .zip or .tar.gz)", at("datasets"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: smoke
datasets:
  - name: synthetic
methods: [AOL, sll]
sizes: [XS]
train:
  epochs: 2
  lr: 0.01
  wd: 1.0e-4
";

    fn parse(text: &str) -> anyhow::Result<Pipeline> {
        Pipeline::parse(Path::new("pipelines/t.yaml"), text)
    }

    #[test]
    fn parses_a_valid_pipeline_with_defaults() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.methods, vec![Method::Aol, Method::Sll]);
        assert_eq!(p.sizes, vec![ModelSize::XS]);
        assert_eq!((p.kernel, p.train.batch_size, p.seeds.clone()), (3, 256, vec![0]));
        assert_eq!(p.device, DeviceChoice::Auto);
        let all = parse(&GOOD.replace("[AOL, sll]", "all")).unwrap();
        assert_eq!(all.methods.len(), Method::ALL.len());
    }

    /// Each bad file: (text, expected line, fragments the message must contain).
    #[test]
    fn bad_files_name_file_line_and_fix() {
        let cases: Vec<(String, usize, Vec<&str>)> = vec![
            (GOOD.replace("[AOL, sll]", "[AOL, Cayly]"), 4, vec!["unknown method \"Cayly\"", "Cayley"]),
            (GOOD.replace("epochs: 2", "epochs: -3"), 7, vec!["positive", "-3"]),
            (GOOD.replace("  wd: 1.0e-4", "  wd: 1.0e-4\n  momentum: 0.9"), 10, vec!["unknown field `momentum`"]),
            (GOOD.replace("methods: [AOL, sll]", "methods: [AOL, sll]]"), 4, vec![]),
            (GOOD.replace("name: synthetic", "name: mnist"), 3, vec!["unknown dataset", "cifar10"]),
            (GOOD.replace("sizes: [XS]", "sizes: [XXL]"), 5, vec!["unknown model size", "XS, S, M, L"]),
        ];
        for (text, line, fragments) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("pipelines/t.yaml:{line}:")), "wrong location: {err}");
            for f in fragments {
                assert!(err.contains(f), "{err:?} lacks {f:?}");
            }
        }
    }

    /// `hyperparameters: paper` reads results.csv: CIFAR-10 AOL-XS 6e-2 / 4e-5, CIFAR-100 SOC-M
    /// 4e-2 / 3e-4 (k 3), CIFAR-10 AOL-XS with 1×1 kernels 8e-2 / 7e-6 (Table 12); `per_method`
    /// still wins; Standard needs no value with paper budgets (it is never trained), but does with
    /// measured ones.
    #[test]
    fn paper_hyperparameters_come_from_results_csv() {
        let paper = GOOD
            .replace("name: synthetic", "name: cifar10")
            .replace("  lr: 0.01\n  wd: 1.0e-4\n", "  hyperparameters: paper\n  per_method:\n    SLL: {lr: 0.3}\n")
            .replace("  epochs: 2\n", "");
        let p = parse(&(paper.clone() + "budgets:\n  hours: [2]\n  mode: paper\n")).unwrap();
        assert_eq!(p.train.hyper_for("cifar10", Method::Aol, ModelSize::XS, 3), Some((6e-2, 4e-5)));
        assert_eq!(p.train.hyper_for("cifar100", Method::Soc, ModelSize::M, 3), Some((4e-2, 3e-4)));
        assert_eq!(p.train.hyper_for("cifar10", Method::Aol, ModelSize::XS, 1), Some((8e-2, 7e-6)));
        let (lr, _) = p.train.hyper_for("cifar10", Method::Sll, ModelSize::XS, 3).unwrap();
        assert_eq!(lr, 0.3);
        assert_eq!(p.train.hyper_for("cifar10", Method::Standard, ModelSize::XS, 3), None);
        let with_standard = paper.replace("methods: [AOL, sll]", "methods: [AOL, sll, Standard]");
        assert!(parse(&(with_standard.clone() + "budgets:\n  hours: [2]\n  mode: paper\n")).is_ok());
        let err = parse(&(with_standard + "budgets:\n  hours: [2]\n  mode: measured\n")).unwrap_err().to_string();
        assert!(err.contains("cifar10 Standard-XS") && err.contains("per_method.Standard") && err.starts_with("pipelines/t.yaml:"), "{err}");
    }

    #[test]
    fn per_method_settings_replace_lr_and_wd_of_their_method_only() {
        let p = parse(&GOOD.replace("  wd: 1.0e-4\n", "  wd: 1.0e-4\n  per_method:\n    SLL: {lr: 0.3}\n")).unwrap();
        assert_eq!(p.train.hyper_for("synthetic", Method::Sll, ModelSize::XS, 3), Some((0.3, 1.0e-4)));
        assert_eq!(p.train.hyper_for("synthetic", Method::Aol, ModelSize::XS, 3), Some((0.01, 1.0e-4)));
        assert_eq!(p.train.min_epochs_for(Method::Sll, 1), 1);
        let text = GOOD.replace("  epochs: 2\n", "").replace("  wd: 1.0e-4\n", "  wd: 1.0e-4\n  per_method:\n    SLL: {min_epochs: 3}\n");
        assert!(parse(&text).unwrap_err().to_string().contains("budgets"));
        let p = parse(&(text + "budgets:\n  hours: [1]\n  mode: measured\n")).unwrap();
        assert_eq!((p.train.min_epochs_for(Method::Sll, 1), p.train.min_epochs_for(Method::Aol, 1)), (3, 1));
        let bad = GOOD.replace("  wd: 1.0e-4\n", "  wd: 1.0e-4\n  per_method:\n    CLP: {lr: 0.3}\n");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.starts_with("pipelines/t.yaml:") && err.contains("CLP") && err.contains("CPL"), "{err}");
        let err = parse(&GOOD.replace("  wd: 1.0e-4\n", "  wd: 1.0e-4\n  per_method:\n    SOC: {lr: 0.3}\n")).unwrap_err().to_string();
        assert!(err.contains("SOC") && err.contains("methods"), "{err}");
        let err = parse(&GOOD.replace("  wd: 1.0e-4\n", "  wd: 1.0e-4\n  per_method:\n    SLL: {lr: -1}\n")).unwrap_err().to_string();
        assert!(err.contains("positive"), "{err}");
    }

    #[test]
    fn paper_budgets_only_for_the_papers_datasets() {
        let text = GOOD.replace("  epochs: 2\n", "") + "budgets:\n  hours: [2]\n  mode: paper\n";
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("budgets.mode") && err.contains("synthetic") && err.contains("measured"), "{err}");
        assert!(parse(&text.replace("name: synthetic", "name: cifar10")).is_ok());
    }

    /// Every shipped pipeline parses and validates (a typo in quick.yaml would otherwise surface only
    /// in `make reproduce`).
    #[test]
    fn shipped_pipelines_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // The recommender's rules share the folder but are not a pipeline.
            if !name.ends_with(".yaml") || name == "recommend-rules.yaml" {
                continue;
            }
            Pipeline::load(&path).unwrap_or_else(|e| panic!("{e}"));
            checked.push(name);
        }
        checked.sort();
        assert_eq!(checked, ["gpu.yaml", "paper.yaml", "quick.yaml", "smoke.yaml"]);
    }

    #[test]
    fn tf32_is_on_unless_switched_off() {
        assert_eq!(parse(GOOD).unwrap().tf32, Tf32Mode::On);
        assert_eq!(parse(&format!("tf32: off\n{GOOD}")).unwrap().tf32, Tf32Mode::Off);
        assert_eq!(parse(&format!("tf32: false\n{GOOD}")).unwrap().tf32, Tf32Mode::Off);
        let err = parse(&format!("tf32: fast\n{GOOD}")).unwrap_err().to_string();
        assert!(err.starts_with("pipelines/t.yaml:1:") && err.contains("on or off"), "{err}");
    }

    /// A pipeline built in code is the one a file with the same keys gives (`lipctl train` builds
    /// one; its tasks' keys must not depend on how it was made), and is checked by the same rules.
    #[test]
    fn built_pipeline_equals_the_parsed_file() {
        let mut d = DatasetEntry::new(crate::data::DatasetKind::Synthetic);
        d.train_per_class = Some(40);
        let built = Pipeline::new("smoke", vec![d], vec![Method::Aol, Method::Sll], vec![ModelSize::XS], TrainOptions::fixed(2, 0.01, 1.0e-4));
        built.validate(Path::new("<command line>")).unwrap();
        let parsed = parse(&GOOD.replace("  - name: synthetic\n", "  - name: synthetic\n    train_per_class: 40\n")).unwrap();
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
        let mut folder = built.clone();
        folder.datasets[0] = DatasetEntry::new(crate::data::DatasetKind::Imagefolder);
        let err = folder.validate(Path::new("<command line>")).unwrap_err().to_string();
        assert!(err.starts_with("<command line>:") && err.contains("needs a `source`"), "{err}");
        assert_eq!((positive_u32(0), positive_u32(3)), (Err("must be a positive whole number, got 0".into()), Ok(3)));
        assert!(kernel(5).is_err() && positive_f64(f64::NAN).is_err() && nonnegative_f64(0.0).is_ok());
    }

    /// Pipeline files name the dataset kinds `prepare --dataset` does, `npz` included.
    #[test]
    fn dataset_names_are_prepares() {
        let err = parse(&GOOD.replace("name: synthetic", "name: npz")).unwrap_err().to_string();
        assert!(err.contains("`npz` needs a `source`"), "{err}");
        let p = parse(&GOOD.replace("name: synthetic", "name: NPZ\n    source: train.npz,test.npz")).unwrap();
        assert_eq!(p.datasets[0].name, "npz");
    }

    #[test]
    fn needs_epochs_or_budgets() {
        let err = parse(&GOOD.replace("  epochs: 2\n", "")).unwrap_err().to_string();
        assert!(err.contains("train.epochs") || err.contains("`train`"), "{err}");
    }
}
