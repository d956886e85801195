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

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name a file is written under before it is renamed into place: same folder (so
/// the rename is atomic on POSIX), distinct per process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a reader (or a run resumed after a kill or power loss)
/// sees either the old file or the complete new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Writes named tensors as safetensors to `path` atomically (see [`write_atomic`]).
pub fn write_safetensors_atomic(named: &[(String, tch::Tensor)], path: &Path) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    tch::Tensor::write_safetensors(named, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
