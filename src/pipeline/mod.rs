//! The pipeline: the content-addressed artifact store every stage writes into (design §3), the
//! plan that expands a pipeline file into tasks, and the runner that executes them.

pub mod estimate;
pub mod plan;
pub mod runner;
pub mod slurm;
pub mod stages;

use crate::config::Pipeline;
use anyhow::Context;
use crate::progress::Progress;
use plan::Plan;
use stages::StageRunner;
use std::io::Write;
use std::path::{Path, PathBuf};
use crate::store::Store;

/// A pipeline file, loaded, planned and bound to a store and device.
pub struct Loaded {
    pub pipeline: Pipeline,
    pub plan: Plan,
    pub stages: StageRunner,
}

/// Where a pipeline's data comes from, beyond the pipeline file: `--data` (the first dataset's
/// source) and whether an official archive missing from `data/` may be downloaded (`--offline`).
/// Also `--device`: replaces the pipeline's `device` (a worker of `run --devices`).
#[derive(Clone, Debug, Default)]
pub struct DataChoice {
    pub data: Option<PathBuf>,
    pub offline: bool,
    pub device: Option<crate::device::DeviceChoice>,
}

impl DataChoice {
    pub fn new(data: Option<PathBuf>, offline: bool) -> DataChoice {
        DataChoice { data, offline, device: None }
    }
}

impl From<Option<PathBuf>> for DataChoice {
    /// `--data`, downloads allowed.
    fn from(data: Option<PathBuf>) -> DataChoice {
        DataChoice { data, offline: false, device: None }
    }
}

/// Loads `file`, resolves the device and the datasets' keys (hashing their sources; nothing is
/// decoded, but an official archive missing from `data/` is downloaded unless `offline`) and
/// expands the plan.
pub fn load(file: &Path, data_override: impl Into<DataChoice>, progress: &Progress) -> anyhow::Result<Loaded> {
    bind(Pipeline::load(file)?, file, data_override, progress)
}

/// What `aggregate`/`report` read: the task keys of `file`'s plan, or the whole store without one.
pub fn scope(file: Option<&Path>, data_override: impl Into<DataChoice>, progress: &Progress) -> anyhow::Result<crate::aggregate::Scope> {
    let Some(file) = file else { return Ok(crate::aggregate::Scope::All) };
    Ok(plan_scope(&load(file, data_override, progress)?.plan))
}

/// The aggregate scope of exactly `plan`'s tasks.
fn plan_scope(plan: &Plan) -> crate::aggregate::Scope {
    crate::aggregate::Scope::Keys(plan.tasks.iter().map(|t| t.key.as_str().to_string()).collect())
}

/// What `lipctl report --pipeline` needs: the scope of the pipeline's tasks and how far they are
/// (never waiting for a lock the running process holds); the whole store without a pipeline.
pub fn report_inputs(
    file: Option<&Path>,
    data_override: impl Into<DataChoice>,
    store: &Store,
    progress: &Progress,
) -> anyhow::Result<(crate::aggregate::Scope, Option<crate::report::PlanProgress>)> {
    let Some(file) = file else { return Ok((crate::aggregate::Scope::All, None)) };
    let loaded = load(file, data_override, progress)?;
    Ok((plan_scope(&loaded.plan), Some(runner::plan_progress(&loaded.plan, store)?)))
}

/// Plans an in-memory pipeline; `file` names it in messages and anchors relative sources.
pub fn bind(pipeline: Pipeline, file: &Path, data_override: impl Into<DataChoice>, progress: &Progress) -> anyhow::Result<Loaded> {
    let choice: DataChoice = data_override.into();
    let device = choice.device.unwrap_or(pipeline.device).resolve()?;
    let stages = StageRunner::new(device, file, choice);
    let keys = pipeline
        .datasets
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let req = stages.prepare_request(i, d)?;
            crate::data::prepare::prepare_key(&req, progress)
                .map_err(|e| e.context(format!("{}: dataset `{}`", file.display(), d.name)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plan = Plan::expand(&pipeline, &keys, crate::device::kind_name(device))
        .map_err(|e| e.context(format!("{}", file.display())))?;
    Ok(Loaded { pipeline, plan, stages })
}

/// `lipctl run PIPELINE`: runs what is missing; returns whether every task is done.
pub fn run(file: &Path, data_override: impl Into<DataChoice>, store: &Store, opts: &runner::RunOptions, progress: &Progress, out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut loaded = load(file, data_override, progress)?;
    writeln!(
        out,
        "pipeline {} ({} tasks) on {}",
        loaded.plan.name,
        loaded.plan.tasks.len(),
        crate::device::describe(loaded.stages.device())
    )?;
    let est = estimate::estimate(&loaded.plan, store, crate::device::kind_name(loaded.stages.device()))?;
    estimate::print(&est, out)?;
    let report = runner::run(&loaded.plan, store, &mut loaded.stages, opts, progress, out)?;
    if !opts.dry_run {
        writeln!(
            out,
            "{} ran, {} cached, {} failed, {} blocked",
            report.ran.len(),
            report.cached,
            report.failed.len(),
            report.blocked.len()
        )?;
        for (label, msg) in &report.failed {
            writeln!(out, "failed: {label}: {msg}")?;
        }
    }
    Ok(report.ok())
}

/// `lipctl status PIPELINE`: every task's state; with `tasks`, also its index (for `run-task`).
pub fn status(file: &Path, data_override: impl Into<DataChoice>, every_task: bool, store: &Store, progress: &Progress, out: &mut dyn Write) -> anyhow::Result<()> {
    let loaded = load(file, data_override, progress)?;
    let states = runner::states(&loaded.plan, store)?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut per_stage = std::collections::BTreeMap::<plan::Stage, std::collections::BTreeMap<&str, usize>>::new();
    for (i, (task, state)) in loaded.plan.tasks.iter().zip(&states).enumerate() {
        *counts.entry(state.word()).or_default() += 1;
        *per_stage.entry(task.stage).or_default().entry(state.word()).or_default() += 1;
        // A failure or a stale certificate is listed even without `--tasks`.
        let notable = matches!(state, runner::TaskState::Failed(_) | runner::TaskState::Stale(_));
        if every_task || notable {
            let detail = match state {
                runner::TaskState::Failed(msg) => format!(" — {}", msg.lines().next().unwrap_or("")),
                runner::TaskState::Stale(why) => format!(" — {why}"),
                _ => String::new(),
            };
            let wave = format!("{}[{}]", task.stage.name(), loaded.plan.wave_position(i));
            writeln!(out, "{i:>4}  {wave:<14} {:<8} {:<44} {}{detail}", state.word(), task.label, task.key.short())?;
        }
    }
    if !every_task {
        for (stage, c) in &per_stage {
            let summary: Vec<String> = c.iter().map(|(w, n)| format!("{n} {w}")).collect();
            writeln!(out, "{:<8} {}", stage.name(), summary.join(", "))?;
        }
        writeln!(out, "(`lipctl status {} --tasks` lists every task with its index)", file.display())?;
    }
    let summary: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    writeln!(out, "{}: {}", loaded.plan.name, summary.join(", "))?;
    Ok(())
}

/// What names a pipeline built from `lipctl train`/`certify` flags in messages.
pub const COMMAND_LINE: &str = "<command line>";

/// `lipctl train` / `lipctl certify`: one run as a one-task pipeline, so it shares the cache, the
/// artifacts and the resume logic of pipeline runs. Prints the task results and the certificate.
pub fn single(pipeline: Pipeline, data: DataChoice, certify: bool, store: &Store, progress: &Progress, out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut loaded = bind(pipeline, Path::new(COMMAND_LINE), data, progress)?;
    let opts = runner::RunOptions { dry_run: false, only: None, force: false, worker: None };
    // Without `certify`, stop after training: drop the certify task from the plan.
    if !certify {
        loaded.plan.tasks.retain(|t| t.stage != plan::Stage::Certify);
    }
    let report = runner::run(&loaded.plan, store, &mut loaded.stages, &opts, progress, out)?;
    for task in &loaded.plan.tasks {
        if let Some(a) = store.lookup(task.stage.name(), &task.key)? {
            writeln!(out, "{:<8} {}", task.stage.name(), a.dir.display())?;
            if task.stage == plan::Stage::Certify {
                let text = crate::fsx::read_to_string(&a.path(stages::CERTIFICATE))?;
                writeln!(out, "{text}")?;
            }
        }
    }
    Ok(report.ok())
}

/// `lipctl attack`: attacks the model of a one-run `pipeline` (its trained model in the store, or
/// `model` when given) at the `radii` (pixel units) on its test split, and at every certified
/// point's own certified radius; prints one line per radius and returns whether no certified
/// point was flipped. Prepares the dataset when missing; writes nothing else.
#[allow(clippy::too_many_arguments)]
pub fn attack(
    pipeline: Pipeline,
    data: DataChoice,
    model: Option<&Path>,
    radii: &[f64],
    opts: &crate::attack::AttackOptions,
    store: &Store,
    progress: &Progress,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let mut loaded = bind(pipeline, Path::new(COMMAND_LINE), data, progress)?;
    let Some(train) = loaded.plan.tasks.iter().position(|t| t.stage == plan::Stage::Train) else {
        anyhow::bail!("internal error: the one-run pipeline has no train task");
    };
    let model_file = match model {
        Some(m) => m.to_path_buf(),
        None => {
            let t = &loaded.plan.tasks[train];
            let artifact = store.lookup(t.stage.name(), &t.key)?.with_context(|| {
                format!("{} is not trained yet: run `lipctl train` with the same flags first, or pass --model FILE", t.label)
            })?;
            artifact.path(stages::TRAIN_MODEL)
        }
    };
    anyhow::ensure!(model_file.is_file(), "model file {} does not exist", model_file.display());
    prepare_datasets(&mut loaded, store, progress)?;
    let (device, summary) = loaded.stages.attack(store, &loaded.plan, train, &model_file, radii, opts)?;
    writeln!(out, "attack of {} on {} ({} test points, {} steps, {} restarts, {} targets)", model_file.display(),
        crate::device::describe(device), summary.samples, opts.steps, opts.restarts, opts.targets)?;
    writeln!(out, "certified points attacked at their certified radius: {}, flipped: {}", summary.attacked_at_certified_radius, summary.flipped_at_certified_radius)?;
    writeln!(out, "{:>10} {:>8} {:>8} {:>8}", "radius", "CRA %", "ERA %", "flipped")?;
    for radius in radii.iter().map(|&r| crate::certify::radius_name(r)) {
        let Some(row) = summary.per_radius.get(&radius) else { continue };
        let cra = row.cra.map_or("–".to_string(), |c| format!("{:.1}", c * 100.0));
        writeln!(out, "{radius:>10} {cra:>8} {:>8.1} {:>8}", row.era * 100.0, row.flipped)?;
    }
    if !summary.sound {
        writeln!(out, "UNSOUND: the attack flipped certified points inside their certified radius")?;
    }
    Ok(summary.sound)
}

/// Runs only the prepare tasks of `loaded`'s plan (its datasets, nothing else); returns the
/// first dataset's prepare key. Error: a dataset could not be prepared (the message says why).
fn prepare_datasets(loaded: &mut Loaded, store: &Store, progress: &Progress) -> anyhow::Result<crate::store::Key> {
    let mut prepare_only = loaded.plan.clone();
    prepare_only.tasks.retain(|t| t.stage == plan::Stage::Prepare);
    let run_opts = runner::RunOptions { dry_run: false, only: None, force: false, worker: None };
    let report = runner::run(&prepare_only, store, &mut loaded.stages, &run_opts, progress, &mut std::io::sink())?;
    if let Some((label, msg)) = report.failed.first() {
        anyhow::bail!("{label}: {msg}");
    }
    prepare_only.tasks.first().map(|t| t.key.clone()).context("internal error: the one-run pipeline has no dataset")
}

/// What `lipctl import --certify` certifies an imported model on, and how.
#[derive(Clone, Debug)]
pub struct ImportedCertify {
    /// The test data: its kind, source and `test_per_class` (no training image is used).
    pub dataset: crate::config::DatasetEntry,
    pub device: crate::device::DeviceChoice,
    /// Audit iterations and the attack check, as a pipeline's `certify:` block.
    pub options: crate::config::CertifyOptions,
}

/// `lipctl import … --certify`: prepares `req.dataset` through a one-run pipeline (as `lipctl
/// attack` does; downloads an official archive unless `data` is offline), then certifies the
/// imported model of `import` on its test split ([`stages::StageRunner::certify_imported`]).
/// Returns the `certify` artifact (cached when it exists).
pub fn certify_imported(
    import: (&crate::store::Artifact, &crate::imported::ImportRecord),
    req: &ImportedCertify,
    data: DataChoice,
    store: &Store,
    progress: &Progress,
) -> anyhow::Result<crate::store::Artifact> {
    let net = import.1.net;
    let name = format!("imported-{}-{}", net.method, net.size);
    let train = crate::config::TrainOptions::fixed(1, 0.01, 0.0);
    let mut pipeline = Pipeline::new(name, vec![req.dataset.clone()], vec![net.method], vec![net.size], train);
    pipeline.device = req.device;
    pipeline.kernel = net.kernel;
    pipeline.certify = req.options.clone();
    pipeline.validate(Path::new(COMMAND_LINE))?;
    let mut loaded = bind(pipeline, Path::new(COMMAND_LINE), data, progress)?;
    let prepare_key = prepare_datasets(&mut loaded, store, progress)?;
    loaded.stages.certify_imported(store, &prepare_key, req.dataset.test_per_class, import, &req.options)
}

/// Which task `lipctl run-task` runs: a plan index, or a position within one stage's wave (a
/// Slurm array task of a wave's array with its offset already added).
#[derive(Clone, Copy, Debug)]
pub enum TaskRef {
    Index(usize),
    Wave(plan::Stage, usize),
}

/// `lipctl run-task PIPELINE INDEX [--wave STAGE --offset K]`: one task of the plan (a Slurm array
/// task). Its inputs must be done; a cached task returns at once.
pub fn run_task(file: &Path, task: TaskRef, data_override: impl Into<DataChoice>, store: &Store, progress: &Progress, out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut loaded = load(file, data_override, progress)?;
    let count = loaded.plan.tasks.len();
    let index = match task {
        TaskRef::Index(i) => i,
        TaskRef::Wave(stage, pos) => loaded.plan.wave_task(stage, pos).with_context(|| file.display().to_string())?,
    };
    anyhow::ensure!(index < count, "{}: task index {index} is out of range; the plan has {count} tasks (0..{})", file.display(), count.saturating_sub(1));
    let deps = loaded.plan.tasks[index].deps.clone();
    let report = runner::run_one(&loaded.plan, index, &deps, store, &mut loaded.stages, progress, out)?;
    Ok(report.ok())
}

/// `lipctl slurm PIPELINE`: writes (and with `submit`, runs) the driver script.
pub fn slurm(file: &Path, opts: &slurm::SlurmOptions, data_override: impl Into<DataChoice>, progress: &Progress) -> anyhow::Result<String> {
    let loaded = load(file, data_override, progress)?;
    Ok(slurm::script(&loaded.plan, &loaded.pipeline, opts))
}
