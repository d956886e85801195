//! The train stage (design §2, reference-protocol §6): offset cross-entropy, OneCycle schedule,
//! SGD with momentum and coupled weight decay (fused), on-device augmentation, the one training
//! step shared with `measure` and `bench` ([`step`]), and a training loop that appends its
//! statistics, checkpoints at a configurable cadence and on SIGTERM/SIGINT, resumes exactly, and
//! retries diverged runs with a new seed.

pub mod augment;
pub mod interrupt;
pub mod randaugment;
pub mod record;
pub mod schedule;
pub mod sgd;
pub mod step;
pub mod trainer;

pub use augment::Augmentation;
pub use record::{TrainRecord, Trained};
pub use schedule::OneCycle;
pub use sgd::Sgd;
pub use step::{Step, Synthetic};
pub use trainer::{
    train, train_with, Attempt, CheckpointCadence, Divergence, EpochStats, EvalSplit, Network, RunStatus, SplitStats, TrainConfig,
    TrainData, TrainOutcome,
};
