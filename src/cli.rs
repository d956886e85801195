//! What the user typed (clap derive). `main.rs` resolves these into typed inputs and calls one
//! library function per subcommand.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// lipctl — 1-Lipschitz layers compared: train, certify, measure and recommend
/// certifiably robust convolutions (Prach et al., CVPR 2024).
#[derive(Parser, Debug)]
#[command(name = "lipctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Folder of the artifact store (stage outputs, cached by content key).
    #[arg(long, global = true, env = "LIPCTL_ARTIFACTS", default_value = "artifacts")]
    pub artifacts: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print versions, CUDA availability, threads and whether the folders are writable.
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
    /// Show what the artifact store holds: done, running and partial artifacts per stage.
    Status(StatusArgs),
    /// Which layer and model size fit a memory and time budget (ranked, with reasons).
    Recommend(lipctl::recommend::RecommendArgs),
}


#[derive(clap::Args, Debug)]
pub struct MeasureArgs {
    /// Convolution method (paper spelling, case-insensitive).
    #[arg(long)]
    pub method: lipctl::nn::Method,

    /// Model size.
    #[arg(long)]
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
}

#[derive(clap::Args, Debug)]
pub struct BudgetsArgs {
    /// Wall-clock budgets in hours, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = lipctl::budgets::DEFAULT_HOURS)]
    pub hours: Vec<f64>,

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
    #[arg(long)]
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
pub struct StatusArgs {}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Exit 0 when CUDA is available and 1 otherwise, printing nothing else (for scripts).
    #[arg(long)]
    pub cuda_available: bool,

    /// Data folder to check (where `prepare` looks for archives by default).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
}
