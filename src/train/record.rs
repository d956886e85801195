//! `train.json`, the record of a `train` or `search` artifact (docs/artifacts.md): the trainer's
//! [`TrainOutcome`] and what the run actually used, written by the pipeline's train stage and read
//! by certify, the search's selection and the aggregate ([`crate::records`]).

use super::trainer::{RunStatus, TrainOutcome};
use crate::records::{KeyOrder, Record};
use serde::{Deserialize, Serialize};

/// `train.json`. Its keys are those of [`TrainOutcome`], `epochs`, and (for a run that was
/// trained) those of [`Trained`], all at the top level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// What the trainer returned (status, attempts, last epoch, precision, reason), with the
    /// file names as published.
    #[serde(flatten)]
    pub outcome: TrainOutcome,
    /// Epochs the run was given (fixed, or from its budget); `null` when it was not trained.
    pub epochs: Option<u64>,
    /// What a trained run resolved at run time; absent when it was not trained.
    #[serde(flatten)]
    pub trained: Option<Trained>,
}

/// What a trained run used: resolved at run time (budget epochs, searched lr/wd) and the shape of
/// its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    /// Seconds of the final attempt's last epoch (steady state, no warm-up); `null` when no epoch
    /// completed.
    pub seconds_per_epoch: Option<f64>,
    /// Peak learning rate of the one-cycle schedule.
    pub lr: f64,
    /// Weight decay.
    pub wd: f64,
    /// Image side in pixels (inputs are `[3, side, side]`).
    pub input_side: i64,
    /// Number of classes.
    pub classes: u64,
    /// Training images (before the validation split, when there is one).
    pub train_images: i64,
}

impl Record for TrainRecord {
    const FILE: &'static str = "train.json";
    const SCHEMA_VERSION: u32 = 1;
    const WHAT: &'static str = "a training outcome";
    const KEY_ORDER: KeyOrder = KeyOrder::Sorted;
}

impl TrainRecord {
    /// The record of a run that was not trained (no model, no statistics): its status and why.
    pub fn not_trained(status: RunStatus, reason: &str, stats_file: &str) -> Self {
        let outcome = TrainOutcome {
            status,
            attempts: Vec::new(),
            model_file: None,
            stats_file: stats_file.into(),
            last_epoch: None,
            precision: None,
            reason: Some(reason.to_string()),
        };
        TrainRecord { outcome, epochs: None, trained: None }
    }

    /// The seed that trained: the last attempt's (a diverged attempt is retried with a derived
    /// seed, [`super::trainer::attempt_seed`]); `None` when the run was not trained.
    pub fn seed(&self) -> Option<u64> {
        self.outcome.attempts.last().map(|a| a.seed)
    }

    /// The status word of the tables: `ok` (completed), `diverged`, `does_not_fit`,
    /// `no_epoch_count`.
    pub fn status_word(&self) -> &'static str {
        match self.outcome.status {
            RunStatus::Completed => "ok",
            RunStatus::Diverged => "diverged",
            RunStatus::DoesNotFit => "does_not_fit",
            RunStatus::NoEpochCount => "no_epoch_count",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::trainer::Attempt;

    fn attempt(index: usize, seed: u64, status: RunStatus) -> Attempt {
        Attempt { index, seed, status, epochs_completed: 1, divergence: None }
    }

    /// A trained record reads back equal, with its keys at the top level and sorted.
    #[test]
    fn a_trained_record_round_trips_with_flat_sorted_keys() {
        let record = TrainRecord {
            outcome: TrainOutcome {
                status: RunStatus::Completed,
                attempts: vec![attempt(0, 7, RunStatus::Diverged), attempt(1, 99, RunStatus::Completed)],
                model_file: Some("model.safetensors".into()),
                stats_file: "epochs.csv".into(),
                last_epoch: None,
                precision: None,
                reason: None,
            },
            epochs: Some(3),
            trained: Some(Trained {
                seconds_per_epoch: None,
                lr: 0.1,
                wd: 1e-5,
                input_side: 32,
                classes: 10,
                train_images: 400,
            }),
        };
        let text = String::from_utf8(crate::records::to_json(&record).unwrap()).unwrap();
        let keys: Vec<&str> = text.lines().filter(|l| l.starts_with("  \"")).map(|l| l.trim().split('"').nth(1).unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(keys.contains(&"lr") && keys.contains(&"seconds_per_epoch") && keys.contains(&"status"), "{text}");
        let back: TrainRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.seed(), Some(99));
    }

    /// A run that was not trained has `epochs: null` and none of [`Trained`]'s keys.
    #[test]
    fn a_record_that_was_not_trained_has_no_resolved_fields() {
        let record = TrainRecord::not_trained(RunStatus::DoesNotFit, "too big", "epochs.csv");
        let value = serde_json::to_value(&record).unwrap();
        assert!(value["epochs"].is_null() && value.get("lr").is_none() && value.get("seconds_per_epoch").is_none(), "{value}");
        let back: TrainRecord = serde_json::from_value(value).unwrap();
        assert_eq!(back, record);
        assert_eq!((back.seed(), back.status_word()), (None, "does_not_fit"));
    }
}
