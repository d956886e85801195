//! Runs a [`Plan`]: what is missing, in dependency order; skips what is cached; continues past a
//! failed task and reports every failure at the end.
//!
//! Several processes (or Slurm tasks) may run the same plan at once: the store's per-key lock
//! makes each task build exactly once — a second process waits for the lock, then finds the
//! artifact committed and counts it as cached.

use super::plan::{Plan, Stage, Task, TaskSpec};
use super::stages::StageRunner;
use crate::store::{Key, Store};
use crate::fsx;
use crate::progress::Progress;
use crate::report::{PlanProgress, TaskLine};
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// List what would run; run nothing.
    pub dry_run: bool,
    /// Run only the tasks of this stage (their inputs must be done already).
    pub only: Option<Stage>,
    /// Rebuild the selected tasks even when cached.
    pub force: bool,
    /// `(k, n)`: this process is worker `k` of `n` (`lipctl run --devices`) and runs only the
    /// (dataset, method, size) chains whose number is `k` modulo `n`, plus the shared prepare
    /// tasks (the store's per-key lock builds each once).
    pub worker: Option<(usize, usize)>,
}

/// The chain of task `index`: the number of its (dataset, method, size) in order of first
/// appearance in the plan; `None` for tasks every chain needs (prepare). Chains share nothing but
/// the prepared data, so workers given disjoint chains never wait for each other.
pub fn chains(plan: &Plan) -> Vec<Option<usize>> {
    let mut ids: Vec<Option<usize>> = Vec::with_capacity(plan.tasks.len());
    let mut seen: Vec<(usize, crate::nn::Method, crate::nn::ModelSize)> = Vec::new();
    for task in &plan.tasks {
        let identity = match &task.spec {
            TaskSpec::Prepare { .. } => None,
            TaskSpec::Measure { method, size, .. } | TaskSpec::Budget { method, size, .. } => Some((task.deps[0], *method, *size)),
            TaskSpec::Search(t) | TaskSpec::Train(t) => Some((task.deps[0], t.method, t.size)),
            TaskSpec::Certify { train, .. } => ids[*train].map(|c| seen[c]),
        };
        ids.push(identity.map(|id| match seen.iter().position(|s| *s == id) {
            Some(c) => c,
            None => {
                seen.push(id);
                seen.len() - 1
            }
        }));
    }
    ids
}

/// State of one task, as `lipctl status PIPELINE` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    Done,
    /// Another process holds the task's lock.
    Running,
    Missing,
    /// A certificate is committed, but of a model its train artifact no longer holds (why, from
    /// [`super::stages::stale_reason`]); the next run discards it and certifies again.
    Stale(String),
    /// The last attempt failed with this message (cleared by a later success); an out-of-memory
    /// failure's message starts with [`OOM_PREFIX`].
    Failed(String),
}

/// How a failure marker says that the task ran out of memory (status `oom`).
pub const OOM_PREFIX: &str = "oom: ";

impl TaskState {
    pub fn word(&self) -> &'static str {
        match self {
            TaskState::Done => "done",
            TaskState::Running => "running",
            TaskState::Missing => "missing",
            TaskState::Stale(_) => "stale",
            TaskState::Failed(msg) if msg.starts_with(OOM_PREFIX) => "oom",
            TaskState::Failed(_) => "failed",
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub ran: Vec<String>,
    pub cached: usize,
    pub failed: Vec<(String, String)>,
    /// Tasks not run because an input failed or is missing.
    pub blocked: Vec<String>,
    /// The signal (SIGTERM, SIGINT) that stopped the run before its remaining tasks.
    pub interrupted: Option<i32>,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.blocked.is_empty() && self.interrupted.is_none()
    }
}

/// Where a failed task's message is kept for `status` (beside the stage's artifacts, never inside
/// one: a failure is not an artifact).
fn failure_marker(store: &Store, stage: Stage, key: &Key) -> PathBuf {
    store.stage_dir(stage.name()).join(format!(".failed-{}.txt", key.as_str()))
}

/// Current state of every task of `plan`.
pub fn states(plan: &Plan, store: &Store) -> anyhow::Result<Vec<TaskState>> {
    let running: std::collections::HashSet<(String, Key)> = store
        .status()?
        .into_iter()
        .flat_map(|s| s.running.into_iter().map(move |k| (s.stage.clone(), k)))
        .collect();
    plan.tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if store.artifact_dir(t.stage.name(), &t.key).join(crate::store::MANIFEST).exists() {
                return Ok(match super::stages::stale_reason(store, plan, i)? {
                    Some(why) => TaskState::Stale(why),
                    None => TaskState::Done,
                });
            }
            if running.contains(&(t.stage.name().to_string(), t.key.clone())) {
                return Ok(TaskState::Running);
            }
            let marker = failure_marker(store, t.stage, &t.key);
            if marker.exists() {
                return Ok(TaskState::Failed(fsx::read_to_string(&marker)?.trim().to_string()));
            }
            Ok(TaskState::Missing)
        })
        .collect()
}

/// [`PlanProgress`] of `plan` in `store`.
pub fn plan_progress(plan: &Plan, store: &Store) -> anyhow::Result<PlanProgress> {
    let states = states(plan, store)?;
    let done = states.iter().filter(|s| **s == TaskState::Done).count();
    let not_done = plan
        .tasks
        .iter()
        .zip(&states)
        .filter(|(_, s)| **s != TaskState::Done)
        .map(|(t, s)| TaskLine {
            state: s.word().to_string(),
            label: t.label.clone(),
            message: match s {
                TaskState::Failed(m) => m.strip_prefix(OOM_PREFIX).unwrap_or(m).lines().next().unwrap_or("").to_string(),
                TaskState::Stale(why) => why.clone(),
                _ => String::new(),
            },
        })
        .collect();
    Ok(PlanProgress { done, total: plan.tasks.len(), not_done })
}

/// Runs `plan`; per-task results go to `out` as one line each.
pub fn run(
    plan: &Plan,
    store: &Store,
    stages: &mut StageRunner,
    opts: &RunOptions,
    progress: &Progress,
    out: &mut dyn Write,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    // ok[i]: task i's artifact exists (cached or built in this run).
    let mut ok = vec![false; plan.tasks.len()];
    let chain = chains(plan);
    let mine = |i: usize| match (opts.worker, chain[i]) {
        (Some((k, n)), Some(c)) => c % n == k,
        _ => true,
    };
    // One bar over the tasks to run, with an ETA, above the per-epoch bars (committed artifacts
    // are counted by their commit mark here; `lookup` verifies them in the loop). A stale
    // certificate counts as to run: the loop discards it and certifies again.
    let to_run = plan
        .tasks
        .iter()
        .enumerate()
        .filter(|(i, t)| mine(*i) && opts.only.is_none_or(|s| s == t.stage))
        .filter(|(i, t)| {
            opts.force
                || !store.artifact_dir(t.stage.name(), &t.key).join(crate::store::MANIFEST).exists()
                || super::stages::stale_reason(store, plan, *i).ok().flatten().is_some()
        })
        .count();
    let mut overall = (!opts.dry_run && to_run > 0).then(|| progress.task(&plan.name, to_run as u64));
    for (i, task) in plan.tasks.iter().enumerate() {
        if !mine(i) {
            continue;
        }
        let selected = opts.only.is_none_or(|s| s == task.stage);
        let stale = check_provenance(store, plan, i, opts.dry_run, progress);
        let stale_note = stale.as_ref().map(|why| format!(" (its certificate is stale: {why})")).unwrap_or_default();
        let cached = stale.is_none() && store.lookup(task.stage.name(), &task.key)?.is_some();
        for w in store.take_warnings() {
            progress.println(&format!("warning: {w}"));
        }
        if cached && !(opts.force && selected) {
            ok[i] = true;
            report.cached += 1;
            if selected {
                writeln!(out, "cached   {} [{}]", task.label, task.key.short())?;
            }
            continue;
        }
        if !selected {
            continue;
        }
        if let Some(&d) = task.deps.iter().find(|&&d| !ok[d]) {
            let why = format!("input `{}` is not done", plan.tasks[d].label);
            if opts.dry_run {
                writeln!(out, "would run {} [{}] (after its inputs){stale_note}", task.label, task.key.short())?;
                // Count it as done for the remaining dry-run lines.
                ok[i] = true;
            } else {
                writeln!(out, "blocked  {} ({why})", task.label)?;
                report.blocked.push(task.label.clone());
            }
            continue;
        }
        if opts.dry_run {
            writeln!(out, "would run {} [{}]{stale_note}", task.label, task.key.short())?;
            ok[i] = true;
            continue;
        }
        if let Some(bar) = overall.as_mut() {
            bar.set_message(task.label.clone());
        }
        let result = execute(plan, i, task, store, stages, opts.force, progress);
        ok[i] = record(task, result, stages.device(), store, progress, out, &mut report)?;
        out.flush()?;
        if let Some(bar) = overall.as_mut() {
            bar.inc(1);
        }
        // A SIGTERM (a Slurm time limit or preemption) or Ctrl-C stops the run, not just the task
        // it interrupted: the training task checkpointed; the next run resumes it.
        if let Some(sig) = crate::train::interrupt::received() {
            writeln!(out, "stopped by {}: the remaining tasks were not started; run again to resume", crate::train::interrupt::name(sig))?;
            report.interrupted = Some(sig);
            break;
        }
    }
    if let Some(bar) = overall {
        bar.finish(&format!("{} ran, {} failed, {} blocked, of {to_run} to run", report.ran.len(), report.failed.len(), report.blocked.len()));
    }
    Ok(report)
}

/// [`super::stages::discard_stale`] for task `index`, or in a dry run (which changes nothing)
/// [`super::stages::stale_reason`]: returns why a cached certificate is stale only in a dry run,
/// where it is reported as what the run would do. A failure to check (an unreadable record) is a
/// warning, and the cached artifact stays: one unreadable certificate does not stop a run.
fn check_provenance(store: &Store, plan: &Plan, index: usize, dry_run: bool, progress: &Progress) -> Option<String> {
    let checked = if dry_run {
        super::stages::stale_reason(store, plan, index)
    } else {
        super::stages::discard_stale(store, plan, index).map(|()| None)
    };
    checked.unwrap_or_else(|e| {
        progress.println(&format!("warning: provenance of `{}` not checked: {e:#}", plan.tasks[index].label));
        None
    })
}

fn execute(plan: &Plan, index: usize, task: &Task, store: &Store, stages: &mut StageRunner, force: bool, progress: &Progress) -> anyhow::Result<bool> {
    if force {
        let dir = store.artifact_dir(task.stage.name(), &task.key);
        if dir.exists() {
            fsx::remove_dir_all(&dir)?;
        }
    }
    // A panic (tch's infallible ops panic on libtorch errors, a CUDA out-of-memory among them) is a
    // failed task like an error, never the end of the run; the store removes the partial folder.
    crate::failure::catch(|| stages.execute(plan, index, store, progress))
}

/// Runs task `index` alone (its inputs `deps` must already be done): `lipctl run-task`.
pub fn run_one(
    plan: &Plan,
    index: usize,
    deps: &[usize],
    store: &Store,
    stages: &mut StageRunner,
    progress: &Progress,
    out: &mut dyn Write,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    let task = &plan.tasks[index];
    check_provenance(store, plan, index, false, progress);
    if store.lookup(task.stage.name(), &task.key)?.is_some() {
        writeln!(out, "cached   {} [{}]", task.label, task.key.short())?;
        report.cached += 1;
        return Ok(report);
    }
    for &d in deps {
        if store.lookup(plan.tasks[d].stage.name(), &plan.tasks[d].key)?.is_none() {
            anyhow::bail!("task {index} ({}) needs `{}` (task {d}), which is not done", task.label, plan.tasks[d].label);
        }
    }
    let result = execute(plan, index, task, store, stages, false, progress);
    record(task, result, stages.device(), store, progress, out, &mut report)?;
    Ok(report)
}

/// Reports one executed task (built here, built meanwhile by another process, or failed), keeps
/// or clears its failure marker for `status`, and returns whether its artifact now exists.
fn record(
    task: &Task,
    result: anyhow::Result<bool>,
    stages_device: tch::Device,
    store: &Store,
    progress: &Progress,
    out: &mut dyn Write,
    report: &mut RunReport,
) -> anyhow::Result<bool> {
    let marker = failure_marker(store, task.stage, &task.key);
    match result {
        Ok(built) => {
            let _ = std::fs::remove_file(&marker);
            if built {
                writeln!(out, "done     {} [{}]", task.label, task.key.short())?;
                report.ran.push(task.label.clone());
            } else {
                writeln!(out, "cached   {} [{}] (built by another process)", task.label, task.key.short())?;
                report.cached += 1;
            }
            Ok(true)
        }
        Err(e) => {
            let text = crate::failure::concise(&format!("{e:#}"));
            // Out of memory: status `oom`, with the device (libtorch's message has the size asked for).
            let msg = if crate::failure::is_oom_message(&text) {
                format!("{OOM_PREFIX}out of memory on {}: {text}", crate::device::describe(stages_device))
            } else {
                text
            };
            if let Err(w) = fsx::create_dir_all(&store.stage_dir(task.stage.name())).and_then(|_| fsx::write(&marker, msg.as_bytes())) {
                progress.println(&format!("warning: could not record the failure: {w:#}"));
            }
            let word = if msg.starts_with(OOM_PREFIX) { "OOM     " } else { "FAILED  " };
            writeln!(out, "{word} {}: {msg}", task.label)?;
            report.failed.push((task.label.clone(), msg));
            Ok(false)
        }
    }
}
