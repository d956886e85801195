//! `lipctl slurm PIPELINE`: the plan as Slurm job arrays over a shared artifact folder.
//!
//! One array job per stage wave (prepare, measure, budget, search, train, certify), and one last
//! job that aggregates and renders the report. Waves are chained with `--dependency=afterany`, so a
//! failed task does not cancel the rest; a task whose inputs are missing fails with a message
//! naming them. The artifact store's per-key locks and atomic publishing make it safe for many
//! nodes to share one folder, and a task killed by Slurm (time limit, pre-emption, `scancel`)
//! leaves only a temporary folder, removed by the next build; training resumes from its last
//! checkpoint when the task is requeued (`--requeue`).
//!
//! # Array numbering within Slurm's limits
//!
//! Slurm accepts array indices `0..MaxArraySize-1` (default `MaxArraySize=1001`), and the full
//! study's search wave has 2,112 tasks (16 trials × 3 datasets × 4 sizes × 11 methods). So every
//! wave's array is numbered from 0, each array task runs `lipctl run-task PIPELINE
//! $SLURM_ARRAY_TASK_ID --wave STAGE --offset K`, and lipctl maps the wave position `K +
//! SLURM_ARRAY_TASK_ID` to the plan's task (the wave's tasks in plan order). A wave longer than the
//! limit becomes several array jobs (offsets 0, L, 2L, …), all of which the next wave depends on.
//! The driver script reads the limit from `scontrol show config` when it runs (fallback 1001);
//! `--max-array-size N` fixes it instead. With `--max-parallel N` the arrays of one wave run one
//! after the other, so the whole wave keeps to N tasks at a time.
//!
//! # Resources
//!
//! Only the waves that compute on a device (measure, search, train, certify) ask for GPUs, as
//! `--ntasks=1 --gpus-per-task=G` (Slurm ≥ 23.11 rejects `--gpus-per-task` without a task count);
//! prepare, budget and the report job ask for none. When `sbatch` refuses a job, the script stops
//! with a message naming the wave and how to submit again (finished tasks are cached).

use super::plan::{Plan, Stage};
use crate::config::Pipeline;
use std::fmt::Write as _;
use std::path::Path;

/// Options of the generated script.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub gpus_per_task: u32,
    /// `None`: derived from the budgets (`--time auto`); else `HH:MM:SS`.
    pub time: Option<String>,
    /// Array throttle (`%N`): at most N tasks of a wave at once.
    pub max_parallel: Option<u32>,
    /// `--cpus-per-task` of every array task (`None`: the cluster's default).
    pub cpus_per_task: Option<u32>,
    /// Slurm's `MaxArraySize` (`None`: read from `scontrol show config` when the script runs,
    /// 1001 when that fails).
    pub max_array_size: Option<u32>,
    /// The lipctl executable the jobs run (absolute, visible on the compute nodes).
    pub lipctl: String,
    /// The shared artifact folder (absolute).
    pub artifacts: String,
    /// The pipeline file (absolute).
    pub pipeline: String,
    /// `--data` passed through to every task.
    pub data: Option<String>,
}

/// `HH:MM:SS` for a number of hours (rounded up to whole minutes).
fn hhmmss(hours: f64) -> String {
    let minutes = (hours * 60.0).ceil().max(1.0) as u64;
    format!("{:02}:{:02}:00", minutes / 60, minutes % 60)
}

/// Wall-clock limit of a wave with `--time auto`: a training wave gets its longest budget plus 25 %
/// headroom and 15 minutes for data loading and evaluation; the others a fixed allowance.
fn auto_time(stage: Stage, pipeline: &Pipeline) -> String {
    let hours = pipeline.budgets.as_ref().map(|b| b.hours.clone()).unwrap_or_default();
    let longest = hours.iter().copied().fold(0.0, f64::max);
    let shortest = hours.iter().copied().fold(f64::INFINITY, f64::min);
    match stage {
        Stage::Train if longest > 0.0 => hhmmss(longest * 1.25 + 0.25),
        Stage::Search if shortest.is_finite() => hhmmss(shortest * 1.25 + 0.25),
        // Fixed epoch counts: no basis for an estimate; one day.
        Stage::Train | Stage::Search => "24:00:00".into(),
        Stage::Measure | Stage::Certify => "02:00:00".into(),
        Stage::Prepare | Stage::Budget => "00:30:00".into(),
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `MaxArraySize` when `scontrol` cannot tell (Slurm's default).
pub const DEFAULT_MAX_ARRAY_SIZE: u32 = 1001;

/// Whether a wave's tasks compute on the device (and so get the GPUs asked for).
fn uses_device(stage: Stage) -> bool {
    matches!(stage, Stage::Measure | Stage::Search | Stage::Train | Stage::Certify)
}

/// The driver script (module doc): submits every wave with `sbatch --parsable`, chained by
/// dependencies, and prints `WAVE: job ID` for each array job (`WAVE.K: job ID` for the K-th
/// further array of a split wave).
///
/// Long on purpose: it writes the script top to bottom, so the Rust reads like the bash it emits.
pub fn script(plan: &Plan, pipeline: &Pipeline, o: &SlurmOptions) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(s, "# Generated by `lipctl slurm` for pipeline `{}` ({} tasks).", plan.name, plan.tasks.len());
    let _ = writeln!(s, "# Wave position <-> task: `lipctl status {} --tasks`; array task I of the array", o.pipeline);
    let _ = writeln!(s, "# with --offset K runs the wave's task K+I.");
    let _ = writeln!(s, "set -euo pipefail");
    let data = o.data.as_ref().map(|d| format!(" --data {}", quote(d))).unwrap_or_default();
    let run = format!("{} --artifacts {} run-task {}{data}", quote(&o.lipctl), quote(&o.artifacts), quote(&o.pipeline));
    let mut common = String::from("--parsable --requeue --open-mode=append");
    if let Some(p) = &o.partition {
        let _ = write!(common, " --partition={}", quote(p));
    }
    if let Some(n) = o.cpus_per_task {
        let _ = write!(common, " --cpus-per-task={n}");
    }
    let gpus = if o.gpus_per_task > 0 { format!(" --ntasks=1 --gpus-per-task={}", o.gpus_per_task) } else { String::new() };
    let resubmit = format!(
        "fix the cause, then submit again with `lipctl --artifacts {} slurm {} --submit` (tasks already done are cached)",
        o.artifacts, o.pipeline
    );
    let _ = writeln!(s, "logs={}/slurm-logs", quote(&o.artifacts));
    let _ = writeln!(s, "mkdir -p \"$logs\"");
    let _ = writeln!(s, "run={}", quote(&run));
    match o.max_array_size {
        Some(n) => {
            let _ = writeln!(s, "max_array={n}  # --max-array-size");
        }
        None => {
            let _ = writeln!(s, "# Array indices must stay below the cluster's MaxArraySize.");
            let _ = writeln!(
                s,
                "max_array=$(scontrol show config 2>/dev/null | awk -F= '$1 ~ /^MaxArraySize[[:space:]]*$/ {{gsub(/[[:space:]]/, \"\", $2); print $2}}' || true)"
            );
        }
    }
    let _ = writeln!(s, "[[ $max_array =~ ^[1-9][0-9]*$ ]] || max_array={DEFAULT_MAX_ARRAY_SIZE}");
    let _ = writeln!(s, "throttle={}", o.max_parallel.map(|n| format!("%{n}")).unwrap_or_default());
    let _ = writeln!(s, "prev=\"\"");
    let _ = writeln!(
        s,
        r#"# submit_wave STAGE COUNT TIME [SBATCH OPTION…]: the wave as arrays numbered from 0, at most
# $max_array tasks each; every array waits for the whole previous wave ($prev), and with a
# throttle also for the wave's previous array.
submit_wave() {{
    local stage=$1 count=$2 time=$3
    shift 3
    local ids="" offset=0 k=0 n id after args
    while (( offset < count )); do
        n=$(( count - offset < max_array ? count - offset : max_array ))
        after=$prev
        if [[ -n $throttle && -n $ids ]]; then after=${{after:+$after:}}${{ids##*:}}; fi
        args=({common} "$@" --job-name="lipctl-$stage" --time="$time" --array="0-$((n - 1))$throttle")
        if [[ -n $after ]]; then args+=(--dependency="afterany:$after"); fi
        args+=(--output="$logs/$stage-%A_%a.log" --wrap="$run \$SLURM_ARRAY_TASK_ID --wave $stage --offset $offset")
        if ! id=$(sbatch "${{args[@]}}"); then
            echo "lipctl: sbatch refused the $stage wave (its tasks $offset-$((offset + n - 1)) of $count, array 0-$((n - 1)), MaxArraySize $max_array)${{ids:+; its jobs ${{ids//:/, }} were submitted}}; {resubmit}" >&2
            exit 1
        fi
        if (( k == 0 )); then echo "$stage: job $id"; else echo "$stage.$k: job $id"; fi
        ids=${{ids:+$ids:}}$id
        offset=$((offset + n))
        k=$((k + 1))
    done
    prev=$ids
}}"#,
        resubmit = resubmit.replace('`', "\\`"),
    );
    for stage in Stage::ALL {
        let count = plan.tasks.iter().filter(|t| t.stage == stage).count();
        if count == 0 {
            continue;
        }
        let time = o.time.clone().unwrap_or_else(|| auto_time(stage, pipeline));
        let resources = if uses_device(stage) { gpus.as_str() } else { "" };
        let _ = writeln!(s, "# {} wave: {count} task(s){}", stage.name(), if resources.is_empty() { ", no GPU" } else { "" });
        let _ = writeln!(s, "submit_wave {} {count} {time}{resources}", stage.name());
    }
    let report = format!(
        "{} --artifacts {} report --pipeline {}{data}",
        quote(&o.lipctl),
        quote(&o.artifacts),
        quote(&o.pipeline)
    );
    let _ = writeln!(s, "# aggregate and report once every wave has ended (no GPU)");
    let _ = writeln!(
        s,
        "if ! id=$(sbatch --parsable{} --job-name=lipctl-report --time=01:00:00 ${{prev:+--dependency=afterany:$prev}} \
         --output=\"$logs/report-%j.log\" --wrap={}); then\n    echo \"lipctl: sbatch refused the report job; {}\" >&2\n    exit 1\nfi",
        o.partition.as_ref().map(|p| format!(" --partition={}", quote(p))).unwrap_or_default(),
        quote(&report),
        resubmit.replace('`', "\\`"),
    );
    let _ = writeln!(s, "echo \"report: job $id\"");
    s
}

/// Absolute form of a path for scripts that run elsewhere (compute nodes share the folder).
pub fn absolute(path: &Path) -> anyhow::Result<String> {
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    Ok(abs.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_become_slurm_times() {
        assert_eq!(hhmmss(2.0 * 1.25 + 0.25), "02:45:00");
        assert_eq!(hhmmss(24.0 * 1.25 + 0.25), "30:15:00");
        assert_eq!(hhmmss(0.0001), "00:01:00");
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
