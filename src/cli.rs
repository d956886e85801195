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
    /// Read a dataset (CIFAR-10/100, Tiny ImageNet, an image folder or synthetic data) into the
    /// artifact store; a second run with the same source is instant.
    Prepare(PrepareArgs),
    /// Show what the artifact store holds: done, running and partial artifacts per stage.
    Status(StatusArgs),
    /// Gather every run of the store into one table (Parquet + CSV) and derive the paper's
    /// tables from it; prints the aggregate folder.
    Aggregate(AggregateArgs),
    /// Aggregate, then render the HTML + Markdown report (a static folder).
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct AggregateArgs {
    /// Folder of the paper's reference CSVs, compared against ours.
    #[arg(long, default_value = "data/paper")]
    pub paper: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Output folder: index.html (self-contained), report.md and the plots as SVG files; it can
    /// be served as static pages as it is. Default: <artifacts>/report.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Folder of the paper's reference CSVs, compared against ours.
    #[arg(long, default_value = "data/paper")]
    pub paper: PathBuf,

    /// Pipeline file the artifacts came from, named in the report's provenance.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
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
