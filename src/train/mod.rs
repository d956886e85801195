//! The train stage (design §2, reference-protocol §6): offset cross-entropy, OneCycle schedule,
//! SGD with momentum and coupled weight decay, on-device augmentation, and a training loop that
//! checkpoints every epoch, resumes exactly, and retries diverged runs with a new seed.

pub mod augment;
pub mod loss;
pub mod schedule;
pub mod sgd;
pub mod trainer;

pub use augment::Augmentation;
pub use loss::{lipschitz_loss, offset_cross_entropy};
pub use schedule::OneCycle;
pub use sgd::Sgd;
pub use trainer::{
    train, train_with, Attempt, Divergence, EpochStats, EvalSplit, Network, RunStatus, SplitStats, TrainConfig,
    TrainData, TrainOutcome,
};

use std::path::Path;

/// Atomic file writes live in [`crate::fsx`]; re-exported because training and certification write
/// every file this way.
pub use crate::fsx::write_atomic;

/// Writes named tensors as safetensors to `path` atomically (see [`write_atomic`]).
pub fn write_safetensors_atomic(named: &[(String, tch::Tensor)], path: &Path) -> anyhow::Result<()> {
    crate::fsx::write_atomic_with(path, |tmp| {
        tch::Tensor::write_safetensors(named, tmp).map_err(anyhow::Error::from)
    })
}
