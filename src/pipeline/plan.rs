//! Expands a [`Pipeline`] into a static list of tasks over the artifact store.
//!
//! Every task's key is computable before anything runs: a key hashes the task's resolved
//! configuration and the keys of its inputs (design §3), never the *values* inside them. So the
//! plan is the same list, in the same order, for `run`, `status`, `--dry-run` and a Slurm array
//! (task index ↔ task), and a changed learning rate changes exactly the keys downstream of it.
//!
//! Task order is a topological order: every task comes after its dependencies.

use crate::budgets::BudgetMode;
use crate::config::{DatasetEntry, Pipeline};
use crate::nn::{Method, ModelSize};
use crate::store::Key;
use crate::train::Augmentation;
use crate::precision::Tf32Mode;
use serde_json::{json, Value};

/// The stages of design §2, in dependency order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Stage {
    Prepare,
    Measure,
    Budget,
    Search,
    Train,
    Certify,
}

impl Stage {
    pub const ALL: [Stage; 6] = [Stage::Prepare, Stage::Measure, Stage::Budget, Stage::Search, Stage::Train, Stage::Certify];

    /// The store's folder name for the stage.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Measure => "measure",
            Stage::Budget => "budget",
            Stage::Search => "search",
            Stage::Train => "train",
            Stage::Certify => "certify",
        }
    }

    /// The schema version of the stage's record ([`crate::records`]): bump the record's constant
    /// when the stage's output files or their meaning change; it changes every key of the stage
    /// (and, through input keys, everything downstream).
    pub fn schema_version(self) -> u32 {
        use crate::records::Record;
        match self {
            Stage::Prepare => crate::data::Meta::SCHEMA_VERSION,
            Stage::Measure => crate::measure::MeasureRecord::SCHEMA_VERSION,
            Stage::Budget => crate::budgets::Budget::SCHEMA_VERSION,
            Stage::Search | Stage::Train => crate::train::TrainRecord::SCHEMA_VERSION,
            Stage::Certify => crate::certify::CertifyRecord::SCHEMA_VERSION,
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
    /// Time and memory of one network on this device (inputs: the prepared dataset, for its shape).
    Measure { method: Method, size: ModelSize, kernel: i64, batch_size: u32, batches: u32, tf32: Tf32Mode },
    /// Epochs per budget (inputs: the measurement in measured mode, the prepared dataset in paper mode).
    Budget { method: Method, size: ModelSize, kernel: i64, hours: Vec<f64>, mode: BudgetMode, batch_size: u32 },
    /// One random-search trial (a training run on the 90 % split, scored on the 10 % split).
    Search(TrainTask),
    Train(TrainTask),
    Certify { train: usize, audit_iterations: u32, attack: crate::attack::AttackOptions },
}

/// Where a training run's epoch count comes from.
#[derive(Clone, Debug)]
pub enum Epochs {
    Fixed(u32),
    /// `budget.json` of task `task`, at `hours`, at least `min_epochs` when the model fits.
    Budget { task: usize, hours: f64, min_epochs: u32 },
}

/// Where a training run's learning rate and weight decay come from.
#[derive(Clone, Debug)]
pub enum Hyper {
    Fixed { lr: f64, wd: f64 },
    /// The best of these search-trial tasks (highest final validation CRA at 36/255).
    Search { trials: Vec<usize> },
}

/// One training run of the pipeline (a final run, or a search trial).
#[derive(Clone, Debug)]
pub struct TrainTask {
    pub dataset: String,
    pub method: Method,
    pub size: ModelSize,
    pub kernel: i64,
    pub epochs: Epochs,
    pub hyper: Hyper,
    pub seed: u64,
    pub batch_size: u32,
    pub max_retries: u32,
    pub train_per_class: Option<usize>,
    pub test_per_class: Option<usize>,
    /// Search trials evaluate on the 10 % validation split, final runs on the test split.
    pub validation: bool,
    /// TF32 switches of the training passes.
    pub tf32: Tf32Mode,
    /// `train.max_epochs`: cap on the resolved epoch count.
    pub max_epochs: Option<u32>,
    /// `train.checkpoint` (not in the key).
    pub checkpoint: crate::train::CheckpointCadence,
    /// The dataset's training augmentation (`datasets[].augment`, or its default).
    pub augmentation: Augmentation,
}

impl TrainTask {
    /// The part of the task that goes into its key; values read from input artifacts at run time
    /// (budget epochs, searched lr/wd) are represented by those inputs' keys instead.
    fn config(&self) -> Value {
        let epochs = match &self.epochs {
            Epochs::Fixed(e) => json!(e),
            // The floor enters the key only when set, so keys of pipelines without it stay as they were.
            Epochs::Budget { hours, min_epochs: 0, .. } => json!({ "budget_hours": hours }),
            Epochs::Budget { hours, min_epochs, .. } => json!({ "budget_hours": hours, "min_epochs": min_epochs }),
        };
        let (lr, wd) = match &self.hyper {
            Hyper::Fixed { lr, wd } => (json!(lr), json!(wd)),
            Hyper::Search { .. } => (json!("search"), json!("search")),
        };
        let mut config = json!({
            "dataset": self.dataset, "method": self.method, "size": self.size, "kernel": self.kernel,
            "epochs": epochs, "lr": lr, "wd": wd, "seed": self.seed, "batch_size": self.batch_size,
            "max_retries": self.max_retries, "train_per_class": self.train_per_class,
            "test_per_class": self.test_per_class, "eval_split": if self.validation { "val" } else { "test" },
            "budget_hours": match &self.epochs { Epochs::Budget { hours, .. } => json!(hours), Epochs::Fixed(_) => Value::Null },
        });
        // The cap enters the key only when set, so keys of pipelines without it stay as they were.
        if let Some(cap) = self.max_epochs {
            config["max_epochs"] = json!(cap);
        }
        with_tf32(&mut config, self.tf32);
        // Every artifact made before the choice existed was trained with crop and flip: that
        // augmentation leaves the key as it was, any other enters it (so a Tiny ImageNet run made
        // with crop and flip is not taken for a RandAugment one).
        if self.augmentation != Augmentation::CIFAR {
            config["augment"] = json!(self.augmentation);
        }
        config
    }
}

/// Adds the TF32 mode to a task's config when it is not the default, so keys of runs with the
/// default (libtorch's own setting, under which every earlier artifact was made) stay as they were.
fn with_tf32(config: &mut Value, tf32: Tf32Mode) {
    if tf32 != Tf32Mode::default() {
        config["tf32"] = json!(tf32);
    }
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
    /// The plan index of position `pos` of `stage`'s wave (its tasks in plan order): how a Slurm
    /// array task, numbered within its wave, finds its task (see `pipeline::slurm`).
    pub fn wave_task(&self, stage: Stage, pos: usize) -> anyhow::Result<usize> {
        let wave: Vec<usize> = self.tasks.iter().enumerate().filter(|(_, t)| t.stage == stage).map(|(i, _)| i).collect();
        wave.get(pos).copied().ok_or_else(|| {
            anyhow::anyhow!(
                "position {pos} is out of range: the {} wave of `{}` has {} tasks (0..{})",
                stage.name(),
                self.name,
                wave.len(),
                wave.len().saturating_sub(1)
            )
        })
    }

    /// The position of plan task `index` within its stage's wave (the inverse of [`Plan::wave_task`]).
    pub fn wave_position(&self, index: usize) -> usize {
        let stage = self.tasks[index].stage;
        self.tasks[..index].iter().filter(|t| t.stage == stage).count()
    }

    /// Expands `pipeline`; `prepare_keys[i]` is the key of dataset `i`'s prepare artifact (it hashes
    /// the source's content, so the caller computes it: [`crate::data::prepare::prepare_key`]).
    /// `device_kind` ("cpu", "cuda") goes into measurement keys: a measurement is of one device.
    pub fn expand(pipeline: &Pipeline, prepare_keys: &[Key], device_kind: &str) -> anyhow::Result<Plan> {
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
        let mut b = Builder { tasks, device_kind: device_kind.to_string() };
        for (di, d) in pipeline.datasets.iter().enumerate() {
            for &size in &pipeline.sizes {
                for &method in &pipeline.methods {
                    b.method_tasks(pipeline, di, d, method, size);
                }
            }
        }
        let tasks = b.tasks;
        Ok(Plan { name: pipeline.name.clone(), tasks })
    }
}

/// Accumulates tasks; `push` computes each key from the config and the dependencies' keys.
struct Builder {
    tasks: Vec<Task>,
    device_kind: String,
}

impl Builder {
    fn push(&mut self, stage: Stage, label: String, config: Value, deps: Vec<usize>, spec: TaskSpec) -> usize {
        let inputs: Vec<Key> = deps.iter().map(|&d| self.tasks[d].key.clone()).collect();
        let key = Key::compute(stage.name(), stage.schema_version(), &config, &inputs);
        self.tasks.push(Task { stage, label, key, config, deps, spec });
        self.tasks.len() - 1
    }

    /// Measure → budget → search trials → final runs → certificates of one (dataset, method, size).
    /// Long on purpose: the chain is built in dependency order, each task needing the keys above it.
    fn method_tasks(&mut self, p: &Pipeline, di: usize, d: &DatasetEntry, method: Method, size: ModelSize) {
        let name = format!("{} {}-{}", d.name, method, size);
        let batch_size = p.train.batch_size;
        let budget = p.budgets.as_ref().map(|bo| {
            let basis = match bo.mode {
                BudgetMode::Measured => {
                    let batches = p.measure.as_ref().map(|m| m.batches).unwrap_or(crate::measure::DEFAULT_BATCHES);
                    let mut config = json!({ "method": method, "size": size, "kernel": p.kernel, "batch_size": batch_size,
                                             "batches": batches, "device_kind": self.device_kind,
                                             "step_revision": crate::train::step::COST_REVISION });
                    with_tf32(&mut config, p.tf32);
                    self.push(Stage::Measure, format!("measure {name}"), config, vec![di],
                        TaskSpec::Measure { method, size, kernel: p.kernel, batch_size, batches, tf32: p.tf32 })
                }
                BudgetMode::Paper => di,
            };
            let config = json!({ "method": method, "size": size, "kernel": p.kernel, "hours": bo.hours,
                                 "mode": bo.mode, "batch_size": batch_size, "train_per_class": d.train_per_class });
            let task = self.push(Stage::Budget, format!("budget {name}"), config, vec![di, basis],
                TaskSpec::Budget { method, size, kernel: p.kernel, hours: bo.hours.clone(), mode: bo.mode, batch_size });
            (task, bo.hours.clone(), p.train.min_epochs_for(method, bo.min_epochs))
        });
        let base = |epochs: Epochs, hyper: Hyper, seed: u64, validation: bool| TrainTask {
            dataset: d.name.clone(), method, size, kernel: p.kernel, epochs, hyper, seed, batch_size,
            max_retries: p.train.max_retries, train_per_class: d.train_per_class, test_per_class: d.test_per_class, validation,
            tf32: p.tf32,
            max_epochs: p.train.max_epochs,
            checkpoint: p.train.checkpoint,
            augmentation: d.augmentation(),
        };
        // Budgets to train for: every configured one, or the fixed epoch count.
        let runs: Vec<(Epochs, Option<f64>)> = match (&budget, p.train.epochs) {
            (Some((task, hours, min_epochs)), _) => {
                hours.iter().map(|&h| (Epochs::Budget { task: *task, hours: h, min_epochs: *min_epochs }, Some(h))).collect()
            }
            (None, Some(e)) => vec![(Epochs::Fixed(e), None)],
            (None, None) => vec![],
        };
        let hyper = match &p.search {
            None => {
                // None only for a model the paper records as not fitting (checked when the
                // pipeline was read): it is never trained, and its key records lr = wd = 0.
                let (lr, wd) = p.train.hyper_for(&d.name, method, size, p.kernel).unwrap_or((0.0, 0.0));
                Hyper::Fixed { lr, wd }
            }
            Some(so) => {
                // Trials train for the search epochs, else the shortest budget (the paper: 2 h).
                let epochs = match (so.epochs, &budget) {
                    (Some(e), _) => Epochs::Fixed(e),
                    (None, Some((task, hours, min_epochs))) => Epochs::Budget {
                        task: *task,
                        hours: hours.iter().copied().fold(f64::INFINITY, f64::min),
                        min_epochs: *min_epochs,
                    },
                    (None, None) => Epochs::Fixed(p.train.epochs.unwrap_or(1)),
                };
                let mut trials = Vec::new();
                for t in crate::search::sample_trials(so.seed, so.trials) {
                    let task = base(epochs.clone(), Hyper::Fixed { lr: t.lr, wd: t.wd }, t.seed, true);
                    let mut deps = vec![di];
                    if let Epochs::Budget { task: bt, .. } = &epochs {
                        deps.push(*bt);
                    }
                    let mut config = task.config();
                    config["trial"] = json!(t.trial);
                    trials.push(self.push(Stage::Search, format!("search {name} trial {}", t.trial), config, deps, TaskSpec::Search(task)));
                }
                Hyper::Search { trials }
            }
        };
        for (epochs, hours) in runs {
            for &seed in &p.seeds {
                let task = base(epochs.clone(), hyper.clone(), seed, false);
                let mut deps = vec![di];
                if let Epochs::Budget { task: bt, .. } = &epochs {
                    deps.push(*bt);
                }
                if let Hyper::Search { trials } = &hyper {
                    deps.extend(trials);
                }
                let budget_label = hours.map(|h| format!(" {h}h")).unwrap_or_default();
                let label = format!("{name}{budget_label} seed {seed}");
                let train = self.push(Stage::Train, format!("train {label}"), task.config(), deps, TaskSpec::Train(task));
                let (audit_iterations, attack) = (p.certify.audit_iterations, p.certify.attack);
                // `attack_points`: which test points `attack.samples` picks (certify::attacked_points).
                let config = json!({ "split": "test", "audit_iterations": audit_iterations, "attack": attack, "attack_points": "evenly spaced" });
                self.push(Stage::Certify, format!("certify {label}"), config, vec![train], TaskSpec::Certify { train, audit_iterations, attack });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of a pipeline file, with a stand-in prepare key per dataset (a prepare key hashes
    /// the source's content; these keys only need to be fixed).
    fn plan_of(file: &str) -> Plan {
        let p = crate::config::Pipeline::load(std::path::Path::new(file)).unwrap();
        let keys: Vec<Key> = p.datasets.iter().map(|d| Key::compute("prepare", 1, &json!({ "fake": d.name }), &[])).collect();
        Plan::expand(&p, &keys, "cuda").unwrap()
    }

    fn task<'a>(plan: &'a Plan, label: &str) -> &'a Task {
        plan.tasks.iter().find(|t| t.label == label).unwrap_or_else(|| panic!("no task {label:?}"))
    }

    /// Keys computed by the code before the augmentation choice existed (commit fc54927, same
    /// stand-in prepare keys): CIFAR runs, cached under these keys, must be found again. (Certify
    /// keys changed on purpose since: their config gained `certify.attack`, so every cached
    /// certificate is recomputed with the attack check. Measured-budget keys, such as quick.yaml's,
    /// changed on purpose when measurements gained `step_revision` 2: a budget measured on the
    /// composed MaxMin's slower step is not the wall clock of today's. Paper-budget keys did not.)
    #[test]
    fn cifar_keys_did_not_change_with_the_augmentation_option() {
        let quick = plan_of("pipelines/quick.yaml");
        let paper = plan_of("pipelines/paper.yaml");
        for (plan, label, key) in [
            (&quick, "train cifar10 AOL-XS 0.05h seed 0", "84fa0e779e33c41167d0a37dfbbbfe737197c950d31dca7a0e5cb42090032981"),
            (&paper, "train cifar10 SOC-M 24h seed 0", "b2386c7d4a629ebb3880e1bf358baf6dac7b3c6cab8bae26f40cea7a8fe943b0"),
            (&paper, "search cifar100 SOC-S trial 0", "27e0482e6f99df1350c31dbbbbcaf229a2f4fe4135bcfe3ad9655800951dc372"),
        ] {
            assert_eq!(task(plan, label).key.as_str(), key, "{label}");
        }
        // No CIFAR task's hashed config mentions the augmentation.
        for t in quick.tasks.iter().chain(&paper.tasks).filter(|t| t.label.contains("cifar")) {
            assert!(t.config.get("augment").is_none(), "{}: {}", t.label, t.config);
        }
    }

    /// Tiny ImageNet runs were trained with crop and flip before; with RandAugment they are other
    /// runs, so their keys (and their certificates') change.
    #[test]
    fn tiny_imagenet_runs_are_keyed_by_randaugment() {
        let paper = plan_of("pipelines/paper.yaml");
        let train = task(&paper, "train tinyimagenet AOL-XS 2h seed 0");
        assert_ne!(train.key.as_str(), "10d740c0b54db94de9e6821a931e43f708a2cdf38f960c3ebfb5282502889624");
        assert_eq!(train.config["augment"], json!({ "RandAugment": { "ops": 2, "magnitude": 9 } }));
        let TaskSpec::Train(t) = &train.spec else { panic!("not a training task") };
        assert_eq!(t.augmentation, Augmentation::TINY_IMAGENET);
        let certify = task(&paper, "certify tinyimagenet AOL-XS 2h seed 0");
        assert_ne!(certify.key.as_str(), "92e2007a861b5f85c0ef70396dd638c16136b0f8dcb1ea5cbd6cbfa3c9b4a80a");
    }
}
