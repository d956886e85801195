//! Epoch budgets: how many epochs fit into a wall-clock budget (reference-protocol §6.6, paper
//! §4 and Table 8).
//!
//! Two modes ([`BudgetMode`]):
//! * **measured**: `epochs = ⌊hours·3600 / (t_batch · batches_per_epoch)⌋` for each budget, with
//!   `t_batch` this device's median seconds per training batch from `measure` (R2 `step2`;
//!   R1 used the mean of 50 deltas, which on a quiet device differs from the median by noise only);
//! * **paper**: the authors' A100 epoch counts (Table 8, shipped as
//!   `data/paper/epoch_budgets_2h.csv`, read through [`crate::paper`]), scaled as they did: `⌊epochs_2h · hours / 2⌋`, i.e.
//!   ×5 for 10 h and ×12 for 24 h (R2 `step3`: `epochs_2h · hours // 2`). This replicates the
//!   paper's training lengths on any hardware: the paper's "24 h" is an epoch count, not a time.
//!
//! `budget.json` is [`Budget`] (docs/artifacts.md).

use crate::measure::{MeasureStatus, Measurement};
use crate::nn::{Method, ModelSize};
use crate::paper::{DatasetKind, PaperData, PaperMethod};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetMode {
    /// Epochs from this device's measured seconds per batch.
    Measured,
    /// The paper's A100 epoch counts (exact replication on other hardware).
    Paper,
}

/// The budgets of the paper, in hours.
pub const DEFAULT_HOURS: [f64; 3] = [2.0, 10.0, 24.0];

/// Relative slack before flooring, so that an exact quotient such as 7200 s / (0.1 s · 192) = 375
/// is not floored to 374 because `0.1 · 192` is 19.200000000000003 in binary. Far below any
/// meaningful timing precision (a 1e-9 relative change of `t_batch` is sub-nanosecond).
const FLOOR_SLACK: f64 = 1e-9;

/// Whether a model fits the device at all (from `measure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetStatus {
    Ok,
    /// Training ran out of memory (measured), or the paper has no budget because it did (LOT-L):
    /// `epochs` is empty and the model is not trained.
    DoesNotFit,
    /// Paper mode for a model Table 8 has no row for (the Standard baseline, methods added since
    /// the paper): `epochs` is empty and the model is not trained.
    NoEpochCount,
}

/// `budget.json`: epochs per budget, keyed by the hours as written by [`hours_key`] ("2", "10", "24").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub mode: BudgetMode,
    pub status: BudgetStatus,
    pub epochs: BTreeMap<String, u64>,
    /// The measured median seconds per training batch (measured mode), `null` in paper mode.
    pub seconds_per_batch: Option<f64>,
}

impl crate::records::Record for Budget {
    const FILE: &'static str = "budget.json";
    const SCHEMA_VERSION: u32 = 1;
    const WHAT: &'static str = "a budget";
    const KEY_ORDER: crate::records::KeyOrder = crate::records::KeyOrder::Declared;
}

impl Budget {
    /// Epochs for a budget of `hours`, if it was computed.
    pub fn epochs_for(&self, hours: f64) -> Option<u64> {
        self.epochs.get(&hours_key(hours)).copied()
    }
}

/// The JSON key of a budget: `2.0 → "2"`, `1.5 → "1.5"` (Rust's shortest round-trip formatting).
pub fn hours_key(hours: f64) -> String {
    format!("{hours}")
}

/// Batches in one epoch of `train_images` at `batch_size`, the last partial batch included (the
/// authors' loaders keep it: CIFAR's 50 000 images at 256 give 196).
pub fn batches_per_epoch(train_images: u64, batch_size: u64) -> u64 {
    train_images.div_ceil(batch_size.max(1))
}

fn floor_with_slack(x: f64) -> u64 {
    (x * (1.0 + FLOOR_SLACK)).floor() as u64
}

fn check_hours(hours: &[f64]) -> anyhow::Result<()> {
    if hours.is_empty() {
        anyhow::bail!("no budgets given; use e.g. hours: [2, 10, 24]");
    }
    for &h in hours {
        if !(h.is_finite() && h > 0.0) {
            anyhow::bail!("budget of {h} hours is not a positive number of hours");
        }
    }
    Ok(())
}

/// `⌊hours·3600 / (seconds_per_batch · batches_per_epoch)⌋` (§6.6). Zero when not even one epoch
/// fits; the caller decides whether that is an error.
pub fn epochs_for(hours: f64, seconds_per_batch: f64, batches_per_epoch: u64) -> anyhow::Result<u64> {
    check_hours(&[hours])?;
    if !(seconds_per_batch.is_finite() && seconds_per_batch > 0.0) {
        anyhow::bail!("seconds per batch {seconds_per_batch} is not a positive time; re-run `lipctl measure`");
    }
    if batches_per_epoch == 0 {
        anyhow::bail!("an epoch of 0 batches has no duration; check the dataset size and batch size");
    }
    Ok(floor_with_slack(hours * 3600.0 / (seconds_per_batch * batches_per_epoch as f64)))
}

/// Measured-mode budgets for every entry of `hours`.
pub fn measured_budget(hours: &[f64], seconds_per_batch: f64, batches_per_epoch: u64) -> anyhow::Result<Budget> {
    check_hours(hours)?;
    let epochs = hours
        .iter()
        .map(|&h| Ok((hours_key(h), epochs_for(h, seconds_per_batch, batches_per_epoch)?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Budget { mode: BudgetMode::Measured, status: BudgetStatus::Ok, epochs, seconds_per_batch: Some(seconds_per_batch) })
}

/// Measured-mode budgets from a `measure` result: its median training seconds per batch, or
/// [`BudgetStatus::DoesNotFit`] when training ran out of memory. A failed measurement is an error.
pub fn budget_from_measurement(m: &Measurement, hours: &[f64], batches_per_epoch: u64) -> anyhow::Result<Budget> {
    match m.status {
        MeasureStatus::Oom => {
            check_hours(hours)?;
            Ok(Budget { mode: BudgetMode::Measured, status: BudgetStatus::DoesNotFit, epochs: BTreeMap::new(), seconds_per_batch: None })
        }
        MeasureStatus::Failed => anyhow::bail!(
            "the measurement failed ({}); no budget can be computed from it",
            m.error.as_deref().unwrap_or("no message")
        ),
        MeasureStatus::Ok => {
            let t = m
                .train_seconds_per_batch
                .as_ref()
                .context("measurement has status ok but no training time")?
                .median;
            measured_budget(hours, t, batches_per_epoch)
        }
    }
}

/// Table 8's 2-hour epoch count for a dataset family ([`DatasetKind`]: CIFAR-10 and CIFAR-100
/// share one budget, Tiny ImageNet has its own), read from the shipped paper data
/// ([`crate::paper::PaperData`]): `Ok(Some(n))`, or `Ok(None)` where the paper records that the
/// model does not fit (LOT-L). Methods the table does not cover (the Standard baseline) and 1×1
/// kernels are errors that say to use measured mode.
pub fn paper_epochs_2h(dataset: DatasetKind, method: Method, size: ModelSize, kernel: i64) -> anyhow::Result<Option<u64>> {
    if kernel != 3 {
        anyhow::bail!(
            "the shipped paper budgets (data/paper/epoch_budgets_2h.csv) cover 3×3 kernels only, not kernel {kernel}; \
             use budgets mode: measured"
        );
    }
    let data = PaperData::shipped()?;
    let row = data
        .epoch_budgets_2h
        .iter()
        .find(|r| r.dataset_kind == dataset && r.method == PaperMethod::Layer(method) && r.size == size)
        .with_context(|| {
            format!(
                "the paper has no epoch budget for {method}-{size} on {dataset:?} (Table 8 covers the seven \
                 1-Lipschitz methods); use budgets mode: measured"
            )
        })?;
    Ok(row.epochs.map(u64::from))
}

/// Whether the paper's Table 8 has epoch counts for `method` (the seven compared layers; not the
/// Standard baseline, nor methods added since the paper).
pub fn in_table_8(method: Method) -> anyhow::Result<bool> {
    Ok(PaperData::shipped()?.epoch_budgets_2h.iter().any(|r| r.method == PaperMethod::Layer(method)))
}

/// Paper-mode budgets: Table 8's count scaled to each budget as `⌊epochs_2h · hours / 2⌋`;
/// [`BudgetStatus::DoesNotFit`] where the paper records that the model does not fit (LOT-L) and
/// [`BudgetStatus::NoEpochCount`] for a method Table 8 does not cover (Standard): results with a
/// status, not errors. A kernel other than 3 stays an error (a pipeline mistake).
pub fn paper_budget(hours: &[f64], dataset: DatasetKind, method: Method, size: ModelSize, kernel: i64) -> anyhow::Result<Budget> {
    check_hours(hours)?;
    let not_trained = |status| Ok(Budget { mode: BudgetMode::Paper, status, epochs: BTreeMap::new(), seconds_per_batch: None });
    if kernel == 3 && !in_table_8(method)? {
        return not_trained(BudgetStatus::NoEpochCount);
    }
    let Some(e2) = paper_epochs_2h(dataset, method, size, kernel)? else {
        return not_trained(BudgetStatus::DoesNotFit);
    };
    let epochs = hours.iter().map(|&h| (hours_key(h), floor_with_slack(e2 as f64 * h / 2.0))).collect();
    Ok(Budget { mode: BudgetMode::Paper, status: BudgetStatus::Ok, epochs, seconds_per_batch: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_budget_matches_hand_computation() {
        // 0.1 s/batch · 196 batches = 19.6 s/epoch: 7200/19.6 = 367.35, 36000/19.6 = 1836.7,
        // 86400/19.6 = 4408.2.
        let b = measured_budget(&DEFAULT_HOURS, 0.1, 196).unwrap();
        assert_eq!(b.epochs_for(2.0), Some(367));
        assert_eq!(b.epochs_for(10.0), Some(1836));
        assert_eq!(b.epochs_for(24.0), Some(4408));
        assert_eq!(b.status, BudgetStatus::Ok);
        assert_eq!(b.seconds_per_batch, Some(0.1));
    }

    #[test]
    fn exact_quotients_are_not_floored_below() {
        // 7200 / (0.1 · 192) is exactly 375, but 0.1·192 rounds up in binary.
        assert_eq!(epochs_for(2.0, 0.1, 192).unwrap(), 375);
        // 86400 / (0.45 · 384) = 500 exactly.
        assert_eq!(epochs_for(24.0, 0.45, 384).unwrap(), 500);
        // Less than one epoch fits: zero.
        assert_eq!(epochs_for(0.001, 1.0, 196).unwrap(), 0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(epochs_for(2.0, 0.0, 196).is_err());
        assert!(epochs_for(2.0, f64::NAN, 196).is_err());
        assert!(epochs_for(-1.0, 0.1, 196).is_err());
        assert!(epochs_for(2.0, 0.1, 0).is_err());
        assert!(measured_budget(&[], 0.1, 196).is_err());
    }

    #[test]
    fn batches_per_epoch_keeps_the_partial_batch() {
        assert_eq!(batches_per_epoch(50_000, 256), 196);
        assert_eq!(batches_per_epoch(45_000, 256), 176);
        assert_eq!(batches_per_epoch(512, 256), 2);
    }

    #[test]
    fn hours_keys() {
        assert_eq!(hours_key(2.0), "2");
        assert_eq!(hours_key(24.0), "24");
        assert_eq!(hours_key(1.5), "1.5");
    }

    #[test]
    fn paper_mode_returns_table8() {
        use Method::*;
        use ModelSize::*;
        // Values typed from reference-protocol §6.6 / paper Table 8.
        let cases = [
            (DatasetKind::Cifar, Aol, XS, 837),
            (DatasetKind::Cifar, Lot, S, 68),
            (DatasetKind::Cifar, Bcop, M, 94),
            (DatasetKind::Cifar, Cpl, L, 194),
            (DatasetKind::Cifar, Soc, XS, 371),
            (DatasetKind::Cifar, Cayley, L, 17),
            (DatasetKind::Cifar, Sll, M, 353),
            (DatasetKind::TinyImageNet, Lot, M, 5),
            (DatasetKind::TinyImageNet, Aol, XS, 223),
        ];
        for (d, m, s, e2) in cases {
            let b = paper_budget(&DEFAULT_HOURS, d, m, s, 3).unwrap();
            assert_eq!(b.epochs_for(2.0), Some(e2), "{d:?} {m} {s}");
            assert_eq!(b.epochs_for(10.0), Some(5 * e2), "{d:?} {m} {s}");
            assert_eq!(b.epochs_for(24.0), Some(12 * e2), "{d:?} {m} {s}");
            assert_eq!(b.mode, BudgetMode::Paper);
            assert_eq!(b.seconds_per_batch, None);
        }
        // The paper's derived 24 h counts (paper-results §4.4): AOL 10044/9156/4404/996.
        let aol24: Vec<u64> = ModelSize::ALL
            .iter()
            .map(|&s| paper_budget(&[24.0], DatasetKind::Cifar, Aol, s, 3).unwrap().epochs_for(24.0).unwrap())
            .collect();
        assert_eq!(aol24, [10044, 9156, 4404, 996]);
    }

    #[test]
    fn paper_mode_knows_lot_l_does_not_fit_and_rejects_what_it_lacks() {
        let b = paper_budget(&DEFAULT_HOURS, DatasetKind::Cifar, Method::Lot, ModelSize::L, 3).unwrap();
        assert_eq!(b.status, BudgetStatus::DoesNotFit);
        assert!(b.epochs.is_empty());
        // Table 8 has no Standard row: a result with that status, not an error.
        let b = paper_budget(&DEFAULT_HOURS, DatasetKind::Cifar, Method::Standard, ModelSize::XS, 3).unwrap();
        assert_eq!((b.status, b.epochs.len()), (BudgetStatus::NoEpochCount, 0));
        let err = paper_epochs_2h(DatasetKind::Cifar, Method::Standard, ModelSize::XS, 3).unwrap_err();
        assert!(err.to_string().contains("measured"), "{err}");
        assert!(paper_budget(&DEFAULT_HOURS, DatasetKind::Cifar, Method::Aol, ModelSize::XS, 1).is_err());
    }

    #[test]
    fn budget_json_has_the_documented_shape() {
        let b = measured_budget(&DEFAULT_HOURS, 0.1, 196).unwrap();
        let v: serde_json::Value = serde_json::to_value(&b).unwrap();
        assert_eq!(v["mode"], "measured");
        assert_eq!(v["status"], "ok");
        assert_eq!(v["epochs"]["2"], 367);
        assert_eq!(v["seconds_per_batch"], 0.1);
        let back: Budget = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }
}
