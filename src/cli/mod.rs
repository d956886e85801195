//! What the user typed (clap derive): every value arrives typed (a method, a dataset kind, a
//! device, a duration), so a bad one is clap's usage error (exit 2) naming the flag, the value and
//! what it accepts. [`commands`] has one handler per subcommand.

pub mod commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::str::FromStr;

/// lipctl — 1-Lipschitz layers compared: train, certify, measure and recommend
/// certifiably robust convolutions (Prach et al., CVPR 2024).
#[derive(Parser, Debug)]
#[command(name = "lipctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Folder of the artifact store (stage outputs, cached by content key).
    #[arg(long, global = true, env = "LIPCTL_ARTIFACTS", default_value = "artifacts")]
    pub artifacts: PathBuf,

    /// Never download: an official dataset archive missing from `data/` is an error that says
    /// where to put it (for machines without internet, such as cluster nodes).
    #[arg(long, global = true, env = "LIPCTL_OFFLINE")]
    pub offline: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print versions, CUDA availability, TF32 switches, threads and whether the folders are
    /// writable; with --selftest, check every method's numerics on the device.
    Doctor(DoctorArgs),
    /// Time and peak memory of one (method, size, batch size) on this device; prints measure.json.
    Measure(MeasureArgs),
    /// Epochs per wall-clock budget, from a measurement or the paper's Table 8; prints budget.json.
    Budgets(BudgetsArgs),
    /// Internal: the isolated child process that measures CPU peak memory (job file in $LIPCTL_MEASURE_JOB).
    #[command(name = "measure-child", hide = true)]
    MeasureChild,
    /// Read a dataset (CIFAR-10/100, Tiny ImageNet, an image folder or synthetic data) into the
    /// artifact store; a second run with the same source is instant.
    Prepare(PrepareArgs),
    /// Show every task of a pipeline (done / running / missing / failed / stale), or, without a pipeline,
    /// what the artifact store holds per stage.
    Status(StatusArgs),
    /// Run a pipeline: everything missing, in dependency order; cached tasks are skipped and a
    /// failed task does not stop the others (exit code 1 when any failed).
    Run(RunArgs),
    /// Train one model (method × size × dataset) into the store; resumes an interrupted run.
    Train(SingleRunArgs),
    /// Run one task of a pipeline by its index (see `lipctl status PIPELINE --tasks`): a Slurm array task.
    RunTask(RunTaskArgs),
    /// Write a Slurm driver script that runs a pipeline as job arrays over a shared artifact folder.
    Slurm(SlurmArgs),
    /// Certify a trained model: accuracy, CRA at 36/72/108/255 of 255 and the Lipschitz audit.
    Certify(SingleRunArgs),
    /// Attack a trained model (L2 PGD with restarts and a targeted margin attack): empirical
    /// robust accuracy per radius, and whether any certified point is flipped inside its
    /// certified radius (exit 1 if so).
    Attack(AttackArgs),
    /// List the layer methods with their properties and parameter counts per model size.
    Methods(MethodsArgs),
    /// Time a training step and a cached inference forward of each method's ConvNet.
    Bench(BenchArgs),
    /// Which layer and model size fit a memory and time budget (ranked, with reasons).
    Recommend(lipctl::recommend::RecommendArgs),
    /// Import a state dict saved by the authors' PyTorch code (training runs or torch.hub) as a
    /// lipctl model artifact, marked imported with the file's SHA-256; prints import.json.
    Import(ImportArgs),
    /// Gather every run of the store into one table (Parquet + CSV) and derive the paper's
    /// tables from it; prints the aggregate folder.
    Aggregate(AggregateArgs),
    /// Aggregate, then render the HTML + Markdown report (a static folder).
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct AttackArgs {
    /// The run whose model to attack (the flags `lipctl train` was given).
    #[command(flatten)]
    pub run: SingleRunArgs,

    /// Attack this model file (a lipctl checkpoint of the run's method and size) instead of the
    /// run's trained model in the store.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,

    /// L2 radius, a positive number in the units of pixels scaled to [0, 1] (repeatable; default:
    /// 36/255, 72/255, 108/255 and 1).
    #[arg(long = "radius", value_name = "EPS", allow_negative_numbers = true, value_parser = rule(lipctl::config::positive_f64))]
    pub radii: Vec<f64>,

    /// Gradient steps per attack run.
    #[arg(long, default_value_t = 10, value_parser = rule(lipctl::config::positive_u32))]
    pub steps: u32,

    /// Untargeted PGD runs from random starts.
    #[arg(long, default_value_t = 1)]
    pub restarts: u32,

    /// Runner-up classes attacked by the targeted margin attack.
    #[arg(long, default_value_t = 1)]
    pub targets: u32,

    /// Attack only N test points, evenly spaced over the test split.
    #[arg(long, value_name = "N", value_parser = rule(lipctl::config::positive_u32))]
    pub samples: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct AggregateArgs {
    /// Only the artifacts of this pipeline's tasks (default: everything in the store).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,

    /// With --pipeline: the `--data` its run was given (the prepared data's key depends on it).
    #[arg(long, value_name = "PATH", requires = "pipeline")]
    pub data: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The authors' state dict (`model_state_dict.pth` of a training run, or a `torch.hub`
    /// release file), read with torch.load(weights_only=True) by the project's .venv Python.
    #[arg(long, value_name = "FILE.pth")]
    pub from_pytorch: PathBuf,

    /// Method of the network (paper spelling, case-insensitive).
    #[arg(long, ignore_case = true)]
    pub method: lipctl::nn::Method,

    /// Model size (XS, S, M, L).
    #[arg(long, ignore_case = true)]
    pub size: lipctl::nn::ModelSize,

    /// Dataset the model was trained on: sets the classes (10, 100, 200) and the input side
    /// (32, 32, 64) and labels the model in reports.
    #[arg(long, conflicts_with_all = ["classes", "input_side"])]
    pub dataset: Option<lipctl::paper::Dataset>,

    /// Classes of the head, without --dataset.
    #[arg(long, default_value_t = 10, value_parser = rule(lipctl::config::positive_u32))]
    pub classes: u32,

    /// Side of the square input images, without --dataset.
    #[arg(long, default_value_t = 32, value_parser = rule(lipctl::config::positive_u32))]
    pub input_side: u32,

    /// Also certify the imported model as a pipeline's certify task does (accuracy, CRA at every
    /// radius by both certificates, the audited L, the attack check) on the test split of
    /// --certify-on, into a `certify` artifact that `aggregate` and `report` show.
    #[arg(long)]
    pub certify: bool,

    /// Test data to certify on: cifar10, cifar100, tinyimagenet, imagefolder, npz or synthetic
    /// (default: --dataset). Its classes and image side must be the network's.
    #[arg(long, value_enum, ignore_case = true, hide_possible_values = true, requires = "certify")]
    pub certify_on: Option<lipctl::data::DatasetKind>,

    /// Folder or archive of that dataset (see `lipctl prepare --help`; default: the official
    /// archive in data/, downloaded unless --offline).
    #[arg(long, value_name = "PATH", requires = "certify")]
    pub source: Option<PathBuf>,

    /// Certify only the first N test images per class.
    #[arg(long, value_name = "N", value_parser = rule(lipctl::config::positive_u32), requires = "certify")]
    pub test_per_class: Option<u32>,

    /// Attack only N test points, evenly spaced over the test split (default: all of them).
    #[arg(long, value_name = "N", value_parser = rule(lipctl::config::positive_u32), requires = "certify")]
    pub attack_samples: Option<u32>,

    /// Device of the certification: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", requires = "certify")]
    pub device: lipctl::device::DeviceChoice,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Output folder: index.html (self-contained), report.md and the plots as SVG files; it can
    /// be served as static pages as it is. Default: <artifacts>/report.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Report on this pipeline only: its tasks' artifacts (not other or older runs in the same
    /// store), with the file named in the provenance. Default: everything in the store.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,

    /// With --pipeline: the `--data` its run was given (the prepared data's key depends on it).
    #[arg(long, value_name = "PATH", requires = "pipeline")]
    pub data: Option<PathBuf>,
}


#[derive(clap::Args, Debug)]
pub struct MeasureArgs {
    /// Convolution method (paper spelling, case-insensitive).
    #[arg(long, ignore_case = true)]
    pub method: lipctl::nn::Method,

    /// Model size.
    #[arg(long, ignore_case = true)]
    pub size: lipctl::nn::ModelSize,

    /// Images per batch (the paper: 256).
    #[arg(long, default_value_t = 256)]
    pub batch_size: i64,

    /// Side of the square input images (32 for CIFAR, 64 for Tiny ImageNet).
    #[arg(long, default_value_t = 32)]
    pub input_side: i64,

    /// Classes kept by the head.
    #[arg(long, default_value_t = 10)]
    pub classes: i64,

    /// Kernel size of the block convolutions: 3, or 1 for the paper's 1×1 variant.
    #[arg(long, default_value_t = 3)]
    pub kernel: i64,

    /// Timed batches, for training and for inference each (the paper: 100); 0: memory only.
    #[arg(long, default_value_t = lipctl::measure::DEFAULT_BATCHES)]
    pub batches: u32,

    /// Untimed warm-up batches before timing.
    #[arg(long, default_value_t = lipctl::measure::DEFAULT_WARMUP)]
    pub warmup: u32,

    /// Training steps / inference passes whose peak memory is taken (the paper: 3).
    #[arg(long, default_value_t = lipctl::measure::DEFAULT_MEMORY_STEPS)]
    pub memory_steps: u32,

    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: lipctl::device::DeviceChoice,

    /// TF32 while measuring: on (cuDNN convolutions in TF32, as training by default) or off.
    #[arg(long, value_enum, default_value_t = lipctl::precision::Tf32Mode::On,
          long_help = "TF32 while measuring, as the training the measurement budgets will use: on \
                       (libtorch's and the paper's default: cuDNN convolutions in TF32, matrix products \
                       in fp32) or off (full fp32). No effect on the CPU or before compute capability 8.0.")]
    pub tf32: lipctl::precision::Tf32Mode,
}

#[derive(clap::Args, Debug)]
pub struct BudgetsArgs {
    /// Wall-clock budgets, e.g. `2 10 24`, `2,10,24`, `90min`, `1h30m` (a bare number means hours).
    #[arg(long, num_args = 1.., default_value = "2 10 24", value_name = "DURATIONS",
          long_help = "Wall-clock budgets: durations separated by commas or spaces, as one argument \
                       (`--hours \"2 10 24\"`, `--hours 2,10,24`) or several (`--hours 2 10 24`). Units s, \
                       m/min, h, d; parts add up (1h30m); a bare number means hours. The same grammar as \
                       `recommend --hours` and the pipeline key `budgets.hours`.")]
    pub hours: Vec<lipctl::units::HoursList>,

    /// A measure.json whose median training seconds per batch sets the budgets.
    #[arg(long, conflicts_with_all = ["seconds_per_batch", "paper"])]
    pub measurement: Option<PathBuf>,

    /// Seconds per training batch (instead of --measurement).
    #[arg(long, conflicts_with = "paper")]
    pub seconds_per_batch: Option<f64>,

    /// Batches per epoch (CIFAR's 50 000 images at batch 256: 196).
    #[arg(long, default_value_t = 196)]
    pub batches_per_epoch: u64,

    /// Use the paper's A100 epoch counts (Table 8; ×5 for 10 h, ×12 for 24 h); needs --dataset,
    /// --method and --size.
    #[arg(long, requires_all = ["dataset", "method", "size"])]
    pub paper: bool,

    /// Dataset for --paper (CIFAR-10 and CIFAR-100 share Table 8's budgets).
    #[arg(long)]
    pub dataset: Option<lipctl::paper::Dataset>,

    /// Method for --paper.
    #[arg(long)]
    pub method: Option<lipctl::nn::Method>,

    /// Model size for --paper.
    #[arg(long, ignore_case = true)]
    pub size: Option<lipctl::nn::ModelSize>,
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// Which dataset reader to use.
    #[arg(long, value_enum)]
    pub dataset: lipctl::data::DatasetKind,

    /// Folder or archive (.tar.gz, .tgz, .tar, .zip) to read.
    #[arg(long, value_name = "PATH", long_help = "Folder or archive (.tar.gz, .tgz, .tar, .zip) to read. \
        cifar10/cifar100: the binary version (cifar-10-batches-bin/, cifar-100-binary/ or the official .tar.gz); \
        tinyimagenet: tiny-imagenet-200/ or its .zip; imagefolder: root/{train,test}/<class>/*.{jpg,jpeg,png}. \
        Without it, cifar10/cifar100/tinyimagenet look for the official archive in --data and download it \
        when missing (unless --no-download).")]
    pub source: Option<PathBuf>,

    /// Name shown in reports (default: the dataset kind, or the source's file name).
    #[arg(long)]
    pub name: Option<String>,

    /// Folder where official archives are looked for and downloaded to.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,

    /// Never download a missing official archive.
    #[arg(long)]
    pub no_download: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Pipeline file; without it, a summary of the store per stage.
    pub pipeline: Option<PathBuf>,

    /// List every task with its index and its wave position (`lipctl run-task` INDEX, or the
    /// Slurm array task: position = --offset + array index), not only the
    /// counts per stage and the tasks that failed.
    #[arg(long, requires = "pipeline")]
    pub tasks: bool,

    /// Replace the source of the pipeline's first dataset (as `run --data`).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Pipeline file, e.g. pipelines/quick.yaml.
    pub pipeline: PathBuf,

    /// List what would run, run nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Run only the tasks of this stage (prepare, train, certify); their inputs must be done.
    #[arg(long, value_name = "STAGE")]
    pub only: Option<lipctl::pipeline::plan::Stage>,

    /// Rebuild the selected tasks even when they are cached.
    #[arg(long)]
    pub force: bool,

    /// Replace the source of the pipeline's first dataset (folder or archive).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,

    /// Run on this device instead of the pipeline's `device` (auto, cpu, cuda, cuda:N).
    #[arg(long, conflicts_with = "devices")]
    pub device: Option<lipctl::device::DeviceChoice>,

    /// Run on several devices at once, one worker process per device, each taking its share of
    /// the independent (dataset, method, size) chains: `all` (every CUDA device) or a list such as
    /// `cuda:0,cuda:1`; `cpu,cpu` gives two CPU workers, which split the CPU threads.
    #[arg(long, value_name = "LIST")]
    pub devices: Option<lipctl::device::DeviceList>,

    /// Internal: this process is worker K of N (`K/N`) of `--devices`.
    #[arg(long, hide = true, value_parser = parse_worker)]
    pub worker: Option<(usize, usize)>,
}

/// `K/N` with K < N.
fn parse_worker(s: &str) -> Result<(usize, usize), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N")?;
    let (k, n) = (k.parse::<usize>().map_err(|e| e.to_string())?, n.parse::<usize>().map_err(|e| e.to_string())?);
    if k >= n {
        return Err(format!("worker {k} of {n}: K must be below N"));
    }
    Ok((k, n))
}

#[derive(clap::Args, Debug)]
pub struct RunTaskArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Task index, as `lipctl status PIPELINE --tasks` lists them; with --wave, the position within
    /// that stage's wave (Slurm: $SLURM_ARRAY_TASK_ID).
    pub index: usize,
    /// Count INDEX within this stage's wave (prepare, measure, budget, search, train, certify)
    /// rather than the whole plan: `lipctl slurm` numbers each wave's array from 0.
    #[arg(long, value_name = "STAGE")]
    pub wave: Option<lipctl::pipeline::plan::Stage>,
    /// With --wave: added to INDEX, the wave position of this array's task 0 (a wave longer than
    /// Slurm's MaxArraySize is split into arrays at offsets 0, L, 2L, …).
    #[arg(long, value_name = "K", default_value_t = 0, requires = "wave")]
    pub offset: usize,
    /// Replace the source of the pipeline's first dataset.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Slurm partition for every job.
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per array task (0: none).
    #[arg(long, default_value_t = 1)]
    pub gpus_per_task: u32,
    /// Time limit per task: `auto` (from the budgets, with headroom) or HH:MM:SS.
    #[arg(long, default_value = "auto", value_parser = parse_time_limit)]
    pub time: TimeLimit,
    /// At most this many tasks of one wave at once.
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<u32>,
    /// CPU cores per array task (Slurm's default otherwise, usually 1); lipctl uses as many
    /// libtorch threads.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus_per_task: Option<u32>,
    /// Largest array size the cluster accepts (Slurm's MaxArraySize: indices 0..N-1). Default:
    /// read from `scontrol show config` when the script runs, 1001 when that fails.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_array_size: Option<u32>,
    /// Submit the script with sbatch (prints the job ids) instead of only writing it.
    #[arg(long)]
    pub submit: bool,
    /// Where to write the driver script.
    #[arg(long, default_value = "artifacts/slurm-submit.sh")]
    pub out: PathBuf,
    /// Replace the source of the pipeline's first dataset.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
}

/// `slurm --time`: `None` for `auto`, else the `HH:MM:SS` limit as typed.
#[derive(Clone, Debug)]
pub struct TimeLimit(pub Option<String>);

fn parse_time_limit(s: &str) -> Result<TimeLimit, String> {
    let hhmmss = s.split(':').count() == 3 && s.split(':').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    match s {
        "auto" => Ok(TimeLimit(None)),
        _ if hhmmss => Ok(TimeLimit(Some(s.to_string()))),
        _ => Err("use `auto` or HH:MM:SS, e.g. 26:00:00".to_string()),
    }
}

/// A clap value parser: the text read as `T`, then checked by one of the value rules pipeline files
/// obey (`lipctl::config::positive_u32`, …), so a flag accepts what the pipeline key accepts.
fn rule<T, U>(check: fn(T) -> Result<U, String>) -> impl Fn(&str) -> Result<U, String> + Clone + Send + Sync + 'static
where
    T: FromStr + 'static,
    T::Err: std::fmt::Display,
    U: 'static,
{
    move |s: &str| s.trim().parse::<T>().map_err(|e| e.to_string()).and_then(check)
}

/// One training run, outside a pipeline file (the same task, cache and artifacts as in one).
#[derive(clap::Args, Debug)]
pub struct SingleRunArgs {
    /// Method: a name listed by `lipctl methods` (Standard, AOL, …, SN, BRO, AOC); any case.
    #[arg(long, ignore_case = true)]
    pub method: lipctl::nn::Method,

    /// Model size: XS, S, M or L (base width 16, 32, 64, 128 at 32×32 input).
    #[arg(long, ignore_case = true, default_value = "XS")]
    pub size: lipctl::nn::ModelSize,

    /// Dataset: cifar10, cifar100, tinyimagenet, imagefolder, npz or synthetic (imagefolder and npz
    /// need --source).
    #[arg(long, value_enum, ignore_case = true, hide_possible_values = true, default_value_t = lipctl::data::DatasetKind::Synthetic)]
    pub dataset: lipctl::data::DatasetKind,

    /// Folder or archive of the dataset (see `lipctl prepare --help`).
    #[arg(long, value_name = "PATH")]
    pub source: Option<PathBuf>,

    /// Number of epochs.
    #[arg(long, default_value_t = 10, value_parser = rule(lipctl::config::positive_u32))]
    pub epochs: u32,

    /// Peak learning rate of the OneCycle schedule.
    #[arg(long, default_value_t = 0.01, value_parser = rule(lipctl::config::positive_f64))]
    pub lr: f64,

    /// Weight decay (coupled L2).
    #[arg(long, default_value_t = 1e-4, value_parser = rule(lipctl::config::nonnegative_f64))]
    pub wd: f64,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    #[arg(long, default_value_t = 256, value_parser = rule(lipctl::config::positive_u32))]
    pub batch_size: u32,

    /// Kernel size of the block convolutions (3, or 1 for the 1×1 variant).
    #[arg(long, default_value_t = 3, value_parser = rule(lipctl::config::kernel))]
    pub kernel: i64,

    /// Keep only the first N training images per class.
    #[arg(long, value_name = "N", value_parser = rule(lipctl::config::positive_u32))]
    pub train_per_class: Option<u32>,

    /// Keep only the first N test images per class.
    #[arg(long, value_name = "N", value_parser = rule(lipctl::config::positive_u32))]
    pub test_per_class: Option<u32>,

    /// Retries with a new seed after a diverged (NaN/inf loss) run.
    #[arg(long, default_value_t = 2)]
    pub max_retries: u32,

    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: lipctl::device::DeviceChoice,

    /// TF32 in training: on (default; cuDNN convolutions in TF32) or off (full fp32).
    #[arg(long, value_enum, default_value_t = lipctl::precision::Tf32Mode::On,
          long_help = "TF32 in the training passes: on (default: libtorch's and the paper's PyTorch 1.12 \
                       setting, cuDNN convolutions in TF32 and matrix products in fp32) or off (full fp32). \
                       Evaluation, certification and the Lipschitz audit always run in full fp32. No effect \
                       on the CPU or before compute capability 8.0. Example: --tf32 off")]
    pub tf32: lipctl::precision::Tf32Mode,
}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Exit 0 when CUDA is available and 1 otherwise, printing nothing else (for scripts).
    #[arg(long)]
    pub cuda_available: bool,

    /// Data folder to check (where `prepare` looks for archives by default).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,

    /// Check every method's numerics on the device against a float64 CPU reference; exit 1 when
    /// a check fails.
    #[arg(long, conflicts_with = "cuda_available",
          long_help = "Check every method's numerics on the device: for each method at size XS, one \
                       network's training forward and backward and its frozen inference forward on \
                       the device are compared with the same network in float64 on the CPU (largest \
                       relative difference of logits and gradients); the Lipschitz audit runs on the \
                       device; the device's peak-memory statistics are read; two training steps must \
                       give finite losses. Prints a table; exits 1 listing the failures when any check \
                       fails. Tolerances: src/selftest.rs. Takes seconds on a GPU, a few minutes on a \
                       small CPU. Example: lipctl doctor --selftest --device cuda")]
    pub selftest: bool,

    /// With --selftest: the device to check (auto, cpu, cuda or cuda:N).
    #[arg(long, default_value = "auto", requires = "selftest")]
    pub device: lipctl::device::DeviceChoice,

    /// With --selftest: the methods to check (comma-separated; default all).
    #[arg(long, value_delimiter = ',', ignore_case = true, requires = "selftest",
          long_help = "With --selftest: the methods to check, comma-separated, in the paper's spelling \
                       (case-insensitive). Default: every method of the registry. Example: --methods LOT,SOC")]
    pub methods: Vec<lipctl::nn::Method>,

    /// Test-only: with --selftest, scale the device's frozen head output by 1.01 (a deliberate
    /// fault the self-test must catch).
    #[arg(long, hide = true, requires = "selftest")]
    pub inject_fault: bool,
}

#[derive(clap::Args, Debug)]
pub struct MethodsArgs {
    /// Model sizes whose trainable parameter counts to show (comma-separated).
    #[arg(long, ignore_case = true, value_delimiter = ',', default_values = ["XS", "S", "M", "L"],
          long_help = "Model sizes whose trainable parameter counts to show, comma-separated \
                       (XS, S, M, L). Counts come from building each network on the CPU; L takes \
                       the longest. Example: --sizes XS,S")]
    pub sizes: Vec<lipctl::nn::ModelSize>,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model size (XS, S, M, L).
    #[arg(long, ignore_case = true, default_value = "XS")]
    pub size: lipctl::nn::ModelSize,

    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,

    /// Methods to measure (comma-separated; default all).
    #[arg(long, value_delimiter = ',', ignore_case = true,
          long_help = "Methods to measure, comma-separated, in the paper's spelling (case-insensitive). \
                       Default: every method. Example: --methods AOL,SLL")]
    pub methods: Vec<lipctl::nn::Method>,

    /// Timed iterations per measurement; the median is reported.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,

    /// Untimed warm-up iterations before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,

    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: lipctl::device::DeviceChoice,

    /// Side of the square input images (32 for CIFAR, 64 for Tiny ImageNet).
    #[arg(long, default_value_t = 32)]
    pub input_side: i64,

    /// Reference seconds per training step to compare with, measured in the same sitting:
    /// the JSON printed by scripts/authors_bench.py. Default: built-in times, on the CPU at batch 64
    /// (XS and S) the authors' code on this project's 2-core machine, on CUDA at batch 256 (every
    /// size) the paper's A100 time per epoch (Figure 2) ÷ 196 batches.
    #[arg(long)]
    pub reference: Option<std::path::PathBuf>,

    /// Number of classes (logits kept by the head).
    #[arg(long, default_value_t = 10)]
    pub classes: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Method names are case-insensitive on the command line, as the help says (clap matches a
    /// value enum's spelling exactly unless told otherwise); an unknown name is still refused.
    #[test]
    fn method_names_parse_in_any_case() {
        let bench = Cli::try_parse_from(["lipctl", "bench", "--methods", "aol,sll,Cpl"]).unwrap();
        let Command::Bench(args) = bench.command else { panic!("not bench: {bench:?}") };
        assert_eq!(args.methods, vec![lipctl::nn::Method::Aol, lipctl::nn::Method::Sll, lipctl::nn::Method::Cpl]);
        let measure = Cli::try_parse_from(["lipctl", "measure", "--method", "lot", "--size", "XS"]).unwrap();
        let Command::Measure(args) = measure.command else { panic!("not measure: {measure:?}") };
        assert_eq!(args.method, lipctl::nn::Method::Lot);
        assert!(Cli::try_parse_from(["lipctl", "bench", "--methods", "aol,nope"]).is_err());
    }

    #[test]
    fn model_sizes_parse_in_any_case() {
        use lipctl::nn::ModelSize;
        let bench = Cli::try_parse_from(["lipctl", "bench", "--size", "xs"]).unwrap();
        let Command::Bench(args) = bench.command else { panic!("not bench: {bench:?}") };
        assert_eq!(args.size, ModelSize::XS);
        let measure = Cli::try_parse_from(["lipctl", "measure", "--method", "AOL", "--size", "s"]).unwrap();
        let Command::Measure(args) = measure.command else { panic!("not measure: {measure:?}") };
        assert_eq!(args.size, ModelSize::S);
        let methods = Cli::try_parse_from(["lipctl", "methods", "--sizes", "xs,m,L"]).unwrap();
        let Command::Methods(args) = methods.command else { panic!("not methods: {methods:?}") };
        assert_eq!(args.sizes, vec![ModelSize::XS, ModelSize::M, ModelSize::L]);
        assert!(Cli::try_parse_from(["lipctl", "bench", "--size", "xxs"]).is_err());
    }
}
