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
    /// List the layer methods with their properties and parameter counts per model size.
    Methods(MethodsArgs),
    /// Time a training step and a cached inference forward of each method's ConvNet.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Exit 0 when CUDA is available and 1 otherwise, printing nothing else (for scripts).
    #[arg(long)]
    pub cuda_available: bool,

    /// Data folder to check (where `prepare` looks for archives by default).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct MethodsArgs {
    /// Model sizes whose trainable parameter counts to show (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["XS", "S", "M", "L"],
          long_help = "Model sizes whose trainable parameter counts to show, comma-separated \
                       (XS, S, M, L). Counts come from building each network on the CPU; L takes \
                       the longest. Example: --sizes XS,S")]
    pub sizes: Vec<lipctl::nn::ModelSize>,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model size (XS, S, M, L).
    #[arg(long, default_value = "XS")]
    pub size: lipctl::nn::ModelSize,

    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,

    /// Methods to measure (comma-separated; default all).
    #[arg(long, value_delimiter = ',',
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

    /// Number of classes (logits kept by the head).
    #[arg(long, default_value_t = 10)]
    pub classes: i64,
}
