//! The train stage (design §2, reference-protocol §6): offset cross-entropy, OneCycle schedule,
//! SGD with momentum and coupled weight decay, on-device augmentation, and a training loop that
//! checkpoints every epoch, resumes exactly, and retries diverged runs with a new seed.

pub mod augment;
pub mod record;
pub mod schedule;
pub mod sgd;
pub mod trainer;

pub use augment::Augmentation;
pub use record::{TrainRecord, Trained};
pub use schedule::OneCycle;
pub use sgd::Sgd;
pub use trainer::{
    train, train_with, Attempt, Divergence, EpochStats, EvalSplit, Network, RunStatus, SplitStats, TrainConfig,
    TrainData, TrainOutcome,
};
