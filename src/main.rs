//! The `lipctl` binary: parse, dispatch, map errors to exit codes — nothing else.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use lipctl::store::Store;
use lipctl::pipeline::DataChoice;
use lipctl::progress::Progress;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Doctor(a) => {
            if a.cuda_available {
                return Ok(if tch::Cuda::is_available() { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            if a.selftest {
                let mut opts = lipctl::selftest::SelftestOptions::new(a.device.resolve()?);
                opts.inject_fault = a.inject_fault;
                if !a.methods.is_empty() {
                    opts.methods = a.methods;
                }
                let report = lipctl::selftest::run(&opts, &Progress::for_stderr())?;
                report.print(&mut out)?;
                return Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            lipctl::doctor::run(&a.data, &cli.artifacts, &mut out)?;
        }
        Command::Measure(a) => {
            let spec = lipctl::nn::NetSpec { method: a.method, size: a.size, kernel: a.kernel, input_side: a.input_side, classes: a.classes };
            let mut req = lipctl::measure::MeasureRequest::new(spec, a.batch_size, a.device.resolve()?);
            req.batches = a.batches;
            req.warmup = a.warmup;
            req.memory_steps = a.memory_steps;
            req.tf32 = a.tf32;
            let m = lipctl::measure::measure(&req, &lipctl::progress::Progress::for_stderr())?;
            print_json(&mut out, &m)?;
        }
        Command::Budgets(a) => {
            let hours: Vec<f64> = a.hours.iter().flat_map(|l| l.hours()).collect();
            let budget = if a.paper {
                let dataset = a.dataset.context("--paper needs --dataset")?;
                let (method, size) = a.method.zip(a.size).context("--paper needs --method and --size")?;
                lipctl::budgets::paper_budget(&hours, dataset.kind(), method, size, 3)?
            } else if let Some(path) = &a.measurement {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                let m: lipctl::measure::Measurement =
                    serde_json::from_str(&text).with_context(|| format!("{}: not a measure.json", path.display()))?;
                lipctl::budgets::budget_from_measurement(&m, &hours, a.batches_per_epoch)?
            } else {
                let t = a.seconds_per_batch.context("give --measurement FILE, --seconds-per-batch S or --paper")?;
                lipctl::budgets::measured_budget(&hours, t, a.batches_per_epoch)?
            };
            print_json(&mut out, &budget)?;
        }
        Command::MeasureChild => {
            let job = std::env::var_os(lipctl::measure::CHILD_JOB_ENV)
                .context("measure-child is internal to `lipctl measure` and needs $LIPCTL_MEASURE_JOB")?;
            lipctl::measure::child_main(std::path::Path::new(&job))?;
        }
        Command::Prepare(a) => {
            let progress = lipctl::progress::Progress::for_stderr();
            let store = lipctl::store::Store::open(&cli.artifacts)?.with_progress(progress.clone());
            let req = lipctl::data::PrepareRequest {
                dataset: a.dataset,
                source: a.source,
                name: a.name,
                data_dir: a.data,
                download: !(a.no_download || cli.offline),
                synthetic: lipctl::data::SyntheticSpec::default(),
            };
            let summary = lipctl::data::prepare(&req, &store, &progress)?;
            writeln!(out, "{summary}")?;
        }
        Command::Status(a) => {
            let progress = Progress::for_stderr();
            let store = Store::open(&cli.artifacts)?.with_progress(progress.clone());
            match &a.pipeline {
                Some(file) => lipctl::pipeline::status(file, DataChoice::new(a.data, cli.offline), a.tasks, &store, &progress, &mut out)?,
                None => lipctl::store::print_status(&store, &mut out)?,
            }
        }
        Command::Aggregate(a) => {
            let scope = lipctl::pipeline::scope(a.pipeline.as_deref(), DataChoice::new(a.data, cli.offline), &Progress::for_stderr())?;
            let art = lipctl::aggregate::run(&cli.artifacts, &scope)?;
            writeln!(out, "{}", art.dir.display())?;
        }
        Command::Report(a) => {
            let progress = Progress::for_stderr();
            let store = Store::open(&cli.artifacts)?.with_progress(progress.clone());
            let (scope, plan) =
                lipctl::pipeline::report_inputs(a.pipeline.as_deref(), DataChoice::new(a.data, cli.offline), &store, &progress)?;
            let art = lipctl::aggregate::run(&cli.artifacts, &scope)?;
            let dest = a.out.unwrap_or_else(|| cli.artifacts.join("report"));
            let mut prov = lipctl::report::Provenance::current(a.pipeline.as_deref());
            if let Some(p) = &plan {
                writeln!(out, "{} of {} tasks done", p.done, p.total)?;
            }
            prov.plan = plan;
            let done = lipctl::report::render(&art.dir, &dest, &prov)?;
            writeln!(out, "{}\n{}", done.html.display(), done.markdown.display())?;
        }
        Command::Run(a) => {
            let devices = a.devices.as_ref().map(|l| l.resolve()).transpose()?;
            if let Some(devices) = devices.as_ref().filter(|d| d.len() > 1 && !a.dry_run) {
                return run_workers(&cli.artifacts, cli.offline, &a, devices);
            }
            let progress = Progress::for_stderr();
            let store = Store::open(&cli.artifacts)?.with_progress(progress.clone());
            let opts =
                lipctl::pipeline::runner::RunOptions { dry_run: a.dry_run, only: a.only, force: a.force, worker: a.worker };
            let mut choice = DataChoice::new(a.data, cli.offline);
            choice.device = a.device.or_else(|| devices.and_then(|d| d.first().copied()));
            if !lipctl::pipeline::run(&a.pipeline, choice, &store, &opts, &progress, &mut out)? {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Train(a) => return single_run(a, false, &cli.artifacts, &mut out),
        Command::RunTask(a) => {
            // Inside a Slurm job, use the CPUs Slurm allocated, not every core of the node
            // (oversubscribed OpenMP threads stall libtorch); OMP_NUM_THREADS still wins.
            if std::env::var_os("OMP_NUM_THREADS").is_none() {
                let allocated = ["SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"]
                    .iter()
                    .find_map(|v| std::env::var(v).ok()?.parse::<i32>().ok().filter(|&n| n > 0));
                if let Some(n) = allocated {
                    tch::set_num_threads(n);
                }
            }
            let progress = Progress::for_stderr();
            let store = Store::open(&cli.artifacts)?.with_progress(progress.clone());
            let task = match a.wave {
                Some(stage) => lipctl::pipeline::TaskRef::Wave(stage, a.offset + a.index),
                None => lipctl::pipeline::TaskRef::Index(a.index),
            };
            if !lipctl::pipeline::run_task(&a.pipeline, task, DataChoice::new(a.data, cli.offline), &store, &progress, &mut out)? {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Slurm(a) => {
            let time = match a.time.as_str() {
                "auto" => None,
                t if t.split(':').count() == 3 && t.split(':').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) => Some(t.to_string()),
                t => anyhow::bail!("--time {t:?}: use `auto` or HH:MM:SS, e.g. 26:00:00"),
            };
            let abs = lipctl::pipeline::slurm::absolute;
            let opts = lipctl::pipeline::slurm::SlurmOptions {
                partition: a.partition,
                gpus_per_task: a.gpus_per_task,
                time,
                max_parallel: a.max_parallel,
                cpus_per_task: a.cpus_per_task,
                max_array_size: a.max_array_size,
                lipctl: abs(&std::env::current_exe()?)?,
                artifacts: abs(&cli.artifacts)?,
                pipeline: abs(&a.pipeline)?,
                data: a.data.as_deref().map(abs).transpose()?,
            };
            let script = lipctl::pipeline::slurm(&a.pipeline, &opts, DataChoice::new(a.data.clone(), cli.offline), &Progress::for_stderr())?;
            if let Some(parent) = a.out.parent() {
                lipctl::fsx::create_dir_all(parent)?;
            }
            lipctl::fsx::write(&a.out, &script)?;
            writeln!(out, "wrote {}", a.out.display())?;
            if a.submit {
                let status = std::process::Command::new("bash")
                    .arg(&a.out)
                    .status()
                    .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", a.out.display()))?;
                if !status.success() {
                    anyhow::bail!("submitting {} failed ({status}); is `sbatch` on PATH?", a.out.display());
                }
            }
        }
        Command::Certify(a) => return single_run(a, true, &cli.artifacts, &mut out),
        Command::Recommend(a) => lipctl::recommend::run(&a, &cli.artifacts, &mut out)?,
        Command::Methods(a) => {
            lipctl::methods::run(&a.sizes, &lipctl::progress::Progress::for_stderr(), &mut out)?;
        }
        Command::Bench(a) => {
            let mut cfg = lipctl::bench::BenchConfig::new(a.size, a.batch, a.device.resolve()?);
            if !a.methods.is_empty() {
                cfg.methods = a.methods;
            }
            cfg.iters = a.iters;
            cfg.warmup = a.warmup;
            cfg.input_side = a.input_side;
            cfg.classes = a.classes;
            cfg.reference = a.reference.as_deref().map(lipctl::bench::read_reference).transpose()?;
            lipctl::bench::run(&cfg, &lipctl::progress::Progress::for_stderr(), &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lipctl train` and `lipctl certify`: the arguments become a one-run pipeline.
/// `lipctl run P --devices D1,D2,…`: one `lipctl run P --device Di --worker i/n` process per
/// device, sharing the store (its per-key locks build each task once). CPU workers split this
/// machine's threads (unless `OMP_NUM_THREADS` is set). Exit 1 when any worker reports a failure.
fn run_workers(artifacts: &std::path::Path, offline: bool, a: &cli::RunArgs, devices: &[lipctl::device::DeviceChoice]) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let n = devices.len();
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1);
    eprintln!("{n} workers: {}", devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
    let mut children = Vec::new();
    for (k, device) in devices.iter().enumerate() {
        let mut c = std::process::Command::new(&exe);
        c.arg("--artifacts").arg(artifacts);
        if offline {
            c.arg("--offline");
        }
        c.arg("run").arg(&a.pipeline).arg("--device").arg(device.to_string()).arg("--worker").arg(format!("{k}/{n}"));
        if let Some(d) = &a.data {
            c.arg("--data").arg(d);
        }
        if let Some(stage) = a.only {
            c.arg("--only").arg(stage.name());
        }
        if a.force {
            c.arg("--force");
        }
        if *device == lipctl::device::DeviceChoice::Cpu && std::env::var_os("OMP_NUM_THREADS").is_none() {
            c.env("OMP_NUM_THREADS", (threads / n).max(1).to_string());
        }
        children.push((device, c.spawn().map_err(|e| anyhow::anyhow!("cannot start worker {k} ({device}): {e}"))?));
    }
    let mut ok = true;
    for (device, mut child) in children {
        let status = child.wait()?;
        if !status.success() {
            eprintln!("worker on {device}: {status}");
            ok = false;
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn single_run(a: cli::SingleRunArgs, certify: bool, artifacts: &std::path::Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let progress = Progress::for_stderr();
    let store = Store::open(artifacts)?.with_progress(progress.clone());
    let yaml = format!(
        "name: {method}-{size}\ndevice: {device:?}\ndatasets:\n  - name: {dataset:?}\n{train_pc}{test_pc}methods: [{method}]\nsizes: [{size}]\n\
         kernel: {kernel}\ntf32: {tf32}\nseeds: [{seed}]\ntrain:\n  epochs: {epochs}\n  lr: {lr:e}\n  wd: {wd:e}\n  batch_size: {batch}\n  max_retries: {retries}\n",
        method = a.method,
        size = a.size,
        device = a.device,
        dataset = a.dataset,
        train_pc = a.train_per_class.map(|n| format!("    train_per_class: {n}\n")).unwrap_or_default(),
        test_pc = a.test_per_class.map(|n| format!("    test_per_class: {n}\n")).unwrap_or_default(),
        kernel = a.kernel,
        tf32 = a.tf32,
        seed = a.seed,
        epochs = a.epochs,
        lr = a.lr,
        wd = a.wd,
        batch = a.batch_size,
        retries = a.max_retries,
    );
    // Validated by the same parser as pipeline files, so the same values are accepted.
    let pipeline = lipctl::config::Pipeline::parse(std::path::Path::new("<command line>"), &yaml)?;
    let ok = lipctl::pipeline::single(pipeline, a.source, certify, &store, &progress, out)?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_json(out: &mut impl std::io::Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
