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
    /// Which layer and model size fit a memory and time budget (ranked, with reasons).
    Recommend(lipctl::recommend::RecommendArgs),
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
