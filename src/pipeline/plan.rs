//! Expands a [`Pipeline`] into a static list of tasks over the artifact store.
//!
//! Every task's key is computable before anything runs: a key hashes the task's resolved
//! configuration and the keys of its inputs (design §3), never the *values* inside them. So the
//! plan is the same list, in the same order, for `run`, `status`, `--dry-run` and a Slurm array
//! (task index ↔ task), and a changed learning rate changes exactly the keys downstream of it.
//!
//! Task order is a topological order: every task comes after its dependencies.

use crate::config::{DatasetEntry, Pipeline};
use crate::nn::{Method, ModelSize};
use crate::pipeline::store::Key;
use serde_json::{json, Value};

/// The stages of design §2, in dependency order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Stage {
    Prepare,
    Train,
    Certify,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Prepare, Stage::Train, Stage::Certify];

    /// The store's folder name for the stage.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Train => "train",
            Stage::Certify => "certify",
        }
    }

    /// Bump when the stage's output files or their meaning change: it changes every key of the
    /// stage (and, through input keys, everything downstream).
    pub fn schema_version(self) -> u32 {
        match self {
            Stage::Prepare => crate::data::prepare::SCHEMA_VERSION,
            Stage::Train => 1,
            Stage::Certify => 1,
        }
    }
}

impl std::str::FromStr for Stage {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL.into_iter().find(|st| st.name() == s.trim().to_ascii_lowercase()).ok_or_else(|| {
            let names: Vec<_> = Stage::ALL.iter().map(|s| s.name()).collect();
            anyhow::anyhow!("unknown stage {s:?}; expected one of {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a task does, with everything it needs resolved.
#[derive(Clone, Debug)]
pub enum TaskSpec {
    Prepare { dataset: DatasetEntry },
    Train(TrainTask),
    Certify { train: usize, audit_iterations: u32 },
}

/// One training run of the pipeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainTask {
    pub dataset: String,
    pub method: Method,
    pub size: ModelSize,
    pub kernel: i64,
    pub epochs: u32,
    pub lr: f64,
    pub wd: f64,
    pub seed: u64,
    pub batch_size: u32,
    pub max_retries: u32,
    pub train_per_class: Option<usize>,
    pub test_per_class: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub stage: Stage,
    /// Human-readable identity, e.g. `train cifar10 AOL-XS seed 0`.
    pub label: String,
    pub key: Key,
    /// Resolved configuration hashed into `key` (also written to the manifest).
    pub config: Value,
    /// Indices of the tasks whose artifacts this one reads.
    pub deps: Vec<usize>,
    pub spec: TaskSpec,
}

/// The expanded pipeline.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub tasks: Vec<Task>,
}

impl Plan {
    /// Expands `pipeline`; `prepare_keys[i]` is the key of dataset `i`'s prepare artifact (it hashes
    /// the source's content, so the caller computes it: [`crate::data::prepare::prepare_key`]).
    pub fn expand(pipeline: &Pipeline, prepare_keys: &[Key]) -> anyhow::Result<Plan> {
        anyhow::ensure!(
            prepare_keys.len() == pipeline.datasets.len(),
            "internal error: {} prepare keys for {} datasets",
            prepare_keys.len(),
            pipeline.datasets.len()
        );
        let mut tasks: Vec<Task> = Vec::new();
        for (d, key) in pipeline.datasets.iter().zip(prepare_keys) {
            tasks.push(Task {
                stage: Stage::Prepare,
                label: format!("prepare {}", d.name),
                key: key.clone(),
                config: json!({ "dataset": d.name }),
                deps: vec![],
                spec: TaskSpec::Prepare { dataset: d.clone() },
            });
        }
        let epochs = pipeline.train.epochs.ok_or_else(|| {
            anyhow::anyhow!(
                "pipeline {}: budget-driven epochs (`budgets`) need the measure and budgets stages; set `train.epochs`",
                pipeline.name
            )
        })?;
        anyhow::ensure!(
            pipeline.search.is_none(),
            "pipeline {}: the `search` section needs the search stage; remove it and set train.lr / train.wd",
            pipeline.name
        );
        for (di, d) in pipeline.datasets.iter().enumerate() {
            for &size in &pipeline.sizes {
                for &method in &pipeline.methods {
                    for &seed in &pipeline.seeds {
                        let t = TrainTask {
                            dataset: d.name.clone(),
                            method,
                            size,
                            kernel: pipeline.kernel,
                            epochs,
                            lr: pipeline.train.lr,
                            wd: pipeline.train.wd,
                            seed,
                            batch_size: pipeline.train.batch_size,
                            max_retries: pipeline.train.max_retries,
                            train_per_class: d.train_per_class,
                            test_per_class: d.test_per_class,
                        };
                        let config = serde_json::to_value(&t)?;
                        let key = Key::compute(Stage::Train.name(), Stage::Train.schema_version(), &config, &[prepare_keys[di].clone()]);
                        let label = format!("train {} {}-{} seed {}", d.name, method, size, seed);
                        tasks.push(Task { stage: Stage::Train, label, key, config, deps: vec![di], spec: TaskSpec::Train(t) });
                        let train_index = tasks.len() - 1;
                        let audit_iterations = pipeline.certify.audit_iterations;
                        let config = json!({ "split": "test", "audit_iterations": audit_iterations });
                        let key = Key::compute(
                            Stage::Certify.name(),
                            Stage::Certify.schema_version(),
                            &config,
                            &[tasks[train_index].key.clone()],
                        );
                        tasks.push(Task {
                            stage: Stage::Certify,
                            label: format!("certify {} {}-{} seed {}", d.name, method, size, seed),
                            key,
                            config,
                            deps: vec![train_index],
                            spec: TaskSpec::Certify { train: train_index, audit_iterations },
                        });
                    }
                }
            }
        }
        Ok(Plan { name: pipeline.name.clone(), tasks })
    }
}
