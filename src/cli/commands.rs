//! One handler per subcommand: typed arguments in, one library call, an exit code out (0 done,
//! 1 something the command checked failed; errors are the caller's to map to 2).

use super::{
    AggregateArgs, AttackArgs, BenchArgs, BudgetsArgs, Cli, Command, DoctorArgs, ImportArgs, MeasureArgs, MethodsArgs, PrepareArgs, ReportArgs,
    RunArgs,
    RunTaskArgs, SingleRunArgs, SlurmArgs, StatusArgs,
};
use anyhow::Context;
use lipctl::config::{DatasetEntry, Pipeline, TrainOptions};
use lipctl::device::DeviceChoice;
use lipctl::pipeline::DataChoice;
use lipctl::progress::Progress;
use lipctl::store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The global flags, as every handler sees them.
pub struct Globals {
    pub artifacts: PathBuf,
    pub offline: bool,
}

impl Globals {
    /// The artifact store, reporting on `progress`.
    fn store(&self, progress: &Progress) -> anyhow::Result<Store> {
        Ok(Store::open(&self.artifacts)?.with_progress(progress.clone()))
    }

    /// Where a pipeline's data comes from: `--data` and `--offline`.
    fn data(&self, data: Option<PathBuf>) -> DataChoice {
        DataChoice::new(data, self.offline)
    }
}

/// Runs the subcommand `cli` names, printing its results on `out`.
pub fn dispatch(cli: Cli, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    lipctl::device::configure_host_process();
    let g = Globals { artifacts: cli.artifacts, offline: cli.offline };
    match cli.command {
        Command::Doctor(a) => doctor(a, &g, out),
        Command::Measure(a) => measure(a, out),
        Command::Budgets(a) => budgets(a, out),
        Command::MeasureChild => measure_child(),
        Command::Prepare(a) => prepare(a, &g, out),
        Command::Status(a) => status(a, &g, out),
        Command::Run(a) => run(a, &g, out),
        Command::Train(a) => single_run(a, false, &g, out),
        Command::RunTask(a) => run_task(a, &g, out),
        Command::Slurm(a) => slurm(a, &g, out),
        Command::Certify(a) => single_run(a, true, &g, out),
        Command::Attack(a) => attack(a, &g, out),
        Command::Methods(a) => methods(a, out),
        Command::Bench(a) => bench(a, out),
        Command::Recommend(a) => done(lipctl::recommend::run(&a, &g.artifacts, out)),
        Command::Import(a) => import(a, &g, out),
        Command::Aggregate(a) => aggregate(a, &g, out),
        Command::Report(a) => report(a, &g, out),
    }
}

/// `lipctl import --from-pytorch`: maps, checks and publishes; prints the artifact folder and
/// its `import.json`.
fn import(a: ImportArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let certify = a.certify.then(|| imported_certify(&a)).transpose()?;
    let (classes, input_side) = match a.dataset {
        Some(d) => lipctl::imported::dataset_shape(d),
        None => (a.classes as i64, a.input_side as i64),
    };
    let req = lipctl::imported::ImportRequest {
        source: a.from_pytorch,
        method: a.method,
        size: a.size,
        input_side,
        classes,
        dataset: a.dataset.map(|d| d.name().to_string()),
    };
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    let art = lipctl::imported::import(&req, &store)?;
    let record: lipctl::imported::ImportRecord = lipctl::records::read(&art)?;
    writeln!(out, "{}", art.dir.display())?;
    print_json(out, &record)?;
    if let Some(c) = certify {
        let cert = lipctl::pipeline::certify_imported((&art, &record), &c, g.data(None), &store, &progress)?;
        writeln!(out, "{}", cert.dir.display())?;
        writeln!(out, "{}", lipctl::fsx::read_to_string(&cert.path(lipctl::pipeline::stages::CERTIFICATE))?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `import --certify` certifies on: `--certify-on` (else `--dataset`), `--source`,
/// `--test-per-class`, `--attack-samples`, `--device`. Error: neither dataset flag is given.
fn imported_certify(a: &ImportArgs) -> anyhow::Result<lipctl::pipeline::ImportedCertify> {
    let kind = match (a.certify_on, a.dataset) {
        (Some(kind), _) => kind,
        (None, Some(d)) => d.name().parse()?,
        (None, None) => anyhow::bail!("--certify needs test data: give --certify-on KIND (e.g. synthetic) or --dataset"),
    };
    let mut dataset = lipctl::config::DatasetEntry::new(kind);
    dataset.source = a.source.clone();
    dataset.test_per_class = a.test_per_class.map(|n| n as usize);
    let mut options = lipctl::config::CertifyOptions::default();
    options.attack.samples = a.attack_samples;
    Ok(lipctl::pipeline::ImportedCertify { dataset, device: a.device, options })
}

/// Exit 0 when `ok`, else 1.
fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Exit 0 for a command that either succeeds or fails with an error.
fn done(result: anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    result.map(|()| ExitCode::SUCCESS)
}

/// `lipctl doctor`: the environment report; `--cuda-available` and `--selftest` exit 1 on "no".
fn doctor(a: DoctorArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if a.cuda_available {
        return Ok(exit_code(tch::Cuda::is_available()));
    }
    if a.selftest {
        let mut opts = lipctl::selftest::SelftestOptions::new(a.device.resolve()?);
        opts.inject_fault = a.inject_fault;
        if !a.methods.is_empty() {
            opts.methods = a.methods;
        }
        let report = lipctl::selftest::run(&opts, &Progress::for_stderr())?;
        report.print(out)?;
        return Ok(exit_code(report.passed()));
    }
    done(lipctl::doctor::run(&a.data, &g.artifacts, out))
}

/// `lipctl measure`: prints measure.json.
fn measure(a: MeasureArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let spec = lipctl::nn::NetSpec { method: a.method, size: a.size, kernel: a.kernel, input_side: a.input_side, classes: a.classes };
    let mut req = lipctl::measure::MeasureRequest::new(spec, a.batch_size, a.device.resolve()?);
    req.batches = a.batches;
    req.warmup = a.warmup;
    req.memory_steps = a.memory_steps;
    req.tf32 = a.tf32;
    let m = lipctl::measure::measure(&req, &Progress::for_stderr())?;
    done(print_json(out, &m))
}

/// `lipctl measure-child` (internal): the isolated process of a CPU memory measurement.
fn measure_child() -> anyhow::Result<ExitCode> {
    let job = std::env::var_os(lipctl::measure::CHILD_JOB_ENV)
        .context("measure-child is internal to `lipctl measure` and needs $LIPCTL_MEASURE_JOB")?;
    done(lipctl::measure::child_main(Path::new(&job)))
}

/// `lipctl budgets`: prints budget.json, from the paper, a measurement or seconds per batch.
fn budgets(a: BudgetsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
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
    done(print_json(out, &budget))
}

/// `lipctl prepare`: one dataset into the store; prints its summary.
fn prepare(a: PrepareArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    let req = lipctl::data::PrepareRequest {
        dataset: a.dataset,
        source: a.source,
        name: a.name,
        data_dir: a.data,
        download: !(a.no_download || g.offline),
        synthetic: lipctl::data::SyntheticSpec::default(),
    };
    let summary = lipctl::data::prepare(&req, &store, &progress)?;
    writeln!(out, "{summary}")?;
    Ok(ExitCode::SUCCESS)
}

/// `lipctl status [PIPELINE]`: a pipeline's tasks, or the store per stage.
fn status(a: StatusArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    done(match &a.pipeline {
        Some(file) => lipctl::pipeline::status(file, g.data(a.data), a.tasks, &store, &progress, out),
        None => lipctl::store::print_status(&store, out),
    })
}

/// `lipctl aggregate`: prints the aggregate folder.
fn aggregate(a: AggregateArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let scope = lipctl::pipeline::scope(a.pipeline.as_deref(), g.data(a.data), &Progress::for_stderr())?;
    let art = lipctl::aggregate::run(&g.artifacts, &scope)?;
    writeln!(out, "{}", art.dir.display())?;
    Ok(ExitCode::SUCCESS)
}

/// `lipctl report`: aggregate, then render; prints how far the pipeline is and the two pages.
fn report(a: ReportArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    let (scope, plan) = lipctl::pipeline::report_inputs(a.pipeline.as_deref(), g.data(a.data), &store, &progress)?;
    let art = lipctl::aggregate::run(&g.artifacts, &scope)?;
    let dest = a.out.unwrap_or_else(|| g.artifacts.join("report"));
    let mut prov = lipctl::report::Provenance::current(a.pipeline.as_deref());
    if let Some(p) = &plan {
        writeln!(out, "{} of {} tasks done", p.done, p.total)?;
    }
    prov.plan = plan;
    let rendered = lipctl::report::render(&art.dir, &dest, &prov)?;
    writeln!(out, "{}\n{}", rendered.html.display(), rendered.markdown.display())?;
    Ok(ExitCode::SUCCESS)
}

/// `lipctl run PIPELINE`: here, or with `--devices` over several, by worker processes.
fn run(a: RunArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let devices = a.devices.as_ref().map(|l| l.resolve()).transpose()?;
    if let Some(devices) = devices.as_ref().filter(|d| d.len() > 1 && !a.dry_run) {
        return run_workers(&a, devices, g);
    }
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    let opts = lipctl::pipeline::runner::RunOptions { dry_run: a.dry_run, only: a.only, force: a.force, worker: a.worker };
    let mut choice = g.data(a.data);
    choice.device = a.device.or_else(|| devices.and_then(|d| d.first().copied()));
    Ok(exit_code(lipctl::pipeline::run(&a.pipeline, choice, &store, &opts, &progress, out)?))
}

/// `lipctl run P --devices D1,D2,…`: one `lipctl run P --device Di --worker i/n` process per
/// device, sharing the store (its per-key locks build each task once). CPU workers split this
/// machine's threads (unless `OMP_NUM_THREADS` is set). Exit 1 when any worker reports a failure.
fn run_workers(a: &RunArgs, devices: &[DeviceChoice], g: &Globals) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let n = devices.len();
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1);
    eprintln!("{n} workers: {}", devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
    let mut children = Vec::new();
    for (k, device) in devices.iter().enumerate() {
        let mut c = std::process::Command::new(&exe);
        c.arg("--artifacts").arg(&g.artifacts);
        if g.offline {
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
        if *device == DeviceChoice::Cpu && std::env::var_os("OMP_NUM_THREADS").is_none() {
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
    Ok(exit_code(ok))
}

/// `lipctl run-task PIPELINE INDEX`: one task of the plan (a Slurm array task).
fn run_task(a: RunTaskArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use_slurm_cpus();
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    let task = match a.wave {
        Some(stage) => lipctl::pipeline::TaskRef::Wave(stage, a.offset + a.index),
        None => lipctl::pipeline::TaskRef::Index(a.index),
    };
    Ok(exit_code(lipctl::pipeline::run_task(&a.pipeline, task, g.data(a.data), &store, &progress, out)?))
}

/// Inside a Slurm job, use the CPUs Slurm allocated, not every core of the node (oversubscribed
/// OpenMP threads stall libtorch); `OMP_NUM_THREADS` still wins.
fn use_slurm_cpus() {
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return;
    }
    let allocated = ["SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<i32>().ok().filter(|&n| n > 0));
    if let Some(n) = allocated {
        tch::set_num_threads(n);
    }
}

/// `lipctl slurm PIPELINE`: writes the driver script; with `--submit`, runs it.
fn slurm(a: SlurmArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let abs = lipctl::pipeline::slurm::absolute;
    let opts = lipctl::pipeline::slurm::SlurmOptions {
        partition: a.partition,
        gpus_per_task: a.gpus_per_task,
        time: a.time.0,
        max_parallel: a.max_parallel,
        cpus_per_task: a.cpus_per_task,
        max_array_size: a.max_array_size,
        lipctl: abs(&std::env::current_exe()?)?,
        artifacts: abs(&g.artifacts)?,
        pipeline: abs(&a.pipeline)?,
        data: a.data.as_deref().map(abs).transpose()?,
    };
    let script = lipctl::pipeline::slurm(&a.pipeline, &opts, g.data(a.data), &Progress::for_stderr())?;
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
        anyhow::ensure!(status.success(), "submitting {} failed ({status}); is `sbatch` on PATH?", a.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `lipctl train` and `lipctl certify`: the arguments become a one-run pipeline.
fn single_run(a: SingleRunArgs, certify: bool, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let pipeline = a.pipeline()?;
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    Ok(exit_code(lipctl::pipeline::single(pipeline, g.data(None), certify, &store, &progress, out)?))
}

/// `lipctl attack`: the run's (or `--model`'s) model attacked; exit 1 when a certified point
/// was flipped.
fn attack(a: AttackArgs, g: &Globals, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let radii = if a.radii.is_empty() { lipctl::eval::RADII.to_vec() } else { a.radii.clone() };
    let opts = lipctl::attack::AttackOptions { steps: a.steps, restarts: a.restarts, targets: a.targets, samples: a.samples, ..Default::default() };
    let pipeline = a.run.pipeline()?;
    let progress = Progress::for_stderr();
    let store = g.store(&progress)?;
    let sound = lipctl::pipeline::attack(pipeline, g.data(None), a.model.as_deref(), &radii, &opts, &store, &progress, out)?;
    Ok(exit_code(sound))
}

impl SingleRunArgs {
    /// The one-run pipeline these flags describe; clap checked each value with the rules of the
    /// pipeline keys, [`Pipeline::validate`] checks the combination (e.g. `imagefolder` needs
    /// `--source`).
    fn pipeline(self) -> anyhow::Result<Pipeline> {
        let mut dataset = DatasetEntry::new(self.dataset);
        dataset.source = self.source;
        dataset.train_per_class = self.train_per_class.map(|n| n as usize);
        dataset.test_per_class = self.test_per_class.map(|n| n as usize);
        let mut train = TrainOptions::fixed(self.epochs, self.lr, self.wd);
        train.batch_size = self.batch_size;
        train.max_retries = self.max_retries;
        let name = format!("{}-{}", self.method, self.size);
        let mut pipeline = Pipeline::new(name, vec![dataset], vec![self.method], vec![self.size], train);
        pipeline.device = self.device;
        pipeline.tf32 = self.tf32;
        pipeline.kernel = self.kernel;
        pipeline.seeds = vec![self.seed];
        pipeline.validate(Path::new(lipctl::pipeline::COMMAND_LINE))?;
        Ok(pipeline)
    }
}

/// `lipctl methods`: the layer methods and their parameter counts.
fn methods(a: MethodsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    done(lipctl::methods::run(&a.sizes, &Progress::for_stderr(), out))
}

/// `lipctl bench`: training step and inference forward times per method.
fn bench(a: BenchArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut cfg = lipctl::bench::BenchConfig::new(a.size, a.batch, a.device.resolve()?);
    if !a.methods.is_empty() {
        cfg.methods = a.methods;
    }
    cfg.iters = a.iters;
    cfg.warmup = a.warmup;
    cfg.input_side = a.input_side;
    cfg.classes = a.classes;
    cfg.reference = a.reference.as_deref().map(lipctl::bench::read_reference).transpose()?;
    lipctl::bench::run(&cfg, &Progress::for_stderr(), out)?;
    Ok(ExitCode::SUCCESS)
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The pipeline `train` builds from its flags is the one the YAML text it used to format gave,
    /// so its tasks keep their keys (and cached runs stay cached).
    #[test]
    fn single_run_pipeline_equals_the_former_yaml() {
        let argv = ["lipctl", "train", "--method", "SLL", "--size", "S", "--dataset", "CIFAR100", "--epochs", "3", "--lr", "0.02",
            "--wd", "0", "--seed", "7", "--batch-size", "50", "--kernel", "1", "--train-per-class", "40", "--max-retries", "1",
            "--device", "cpu", "--tf32", "off"];
        let Command::Train(a) = Cli::parse_from(argv).command else { panic!("not train") };
        let yaml = "name: SLL-S\ndevice: \"cpu\"\ndatasets:\n  - name: \"cifar100\"\n    train_per_class: 40\nmethods: [SLL]\nsizes: [S]\n\
                    kernel: 1\ntf32: off\nseeds: [7]\ntrain:\n  epochs: 3\n  lr: 2e-2\n  wd: 0e0\n  batch_size: 50\n  max_retries: 1\n";
        let parsed = Pipeline::parse(Path::new(lipctl::pipeline::COMMAND_LINE), yaml).unwrap();
        assert_eq!(format!("{:?}", a.pipeline().unwrap()), format!("{parsed:?}"));
    }
}
