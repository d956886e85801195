//! Hyper-parameter random search: trial sampling and selection (reference-protocol §6.5,
//! paper App. E.5).
//!
//! Each trial draws a peak learning rate `lr = 10^U[−4, −1]`, a weight decay
//! `wd = 10^U[−5.5, −3.5]` and a training seed. The authors drew these from Python's unseeded
//! `random`, so their trials cannot be replayed; here a trial is a pure function of
//! `(search_seed, trial index)` through SplitMix64, so
//! * the same seed and index give the same trial on every machine and Rust release (no
//!   `DefaultHasher`, whose output std does not promise to keep);
//! * trial `i` does not depend on which other trials ran, or in which order (a resumed or
//!   distributed search samples exactly what a single sequential run would).
//!
//! The same `(search_seed, i)` gives the same `(lr, wd)` for every (method, size, dataset): common
//! random numbers, so that differences between methods are not partly differences in luck. A runner
//! that wants independent draws per task folds a task salt into `search_seed`.
//!
//! Selection: the highest final validation CRA at 36/255 over the trials that completed (diverged
//! or unfinished trials are ignored, as R1 `eval_best_lr_wd.py` keeps only `epoch == epochs`).

use crate::stats::SplitMix64;
use serde::{Deserialize, Serialize};

/// Exponent range of the peak learning rate, `lr = 10^U[LR_LOG10.0, LR_LOG10.1]` (§6.5).
pub const LR_LOG10: (f64, f64) = (-4.0, -1.0);
/// Exponent range of the weight decay, `wd = 10^U[WD_LOG10.0, WD_LOG10.1]` (§6.5).
pub const WD_LOG10: (f64, f64) = (-5.5, -3.5);
/// Trials per (method, size, dataset) in the paper (App. E.5).
pub const DEFAULT_TRIALS: u32 = 16;

/// One sampled trial of the search.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0-based index within the search.
    pub trial: u32,
    pub lr: f64,
    pub wd: f64,
    /// Seed for the trial's training run (model init, shuffling); below 2^32 so it fits any integer
    /// type a consumer uses (`tch::manual_seed` takes `i64`).
    pub seed: u64,
}

/// Trial `trial` of the search seeded by `search_seed`.
///
/// The trial's generator starts from the first SplitMix64 output of `search_seed` plus
/// `trial`·γ (γ the golden-ratio increment), i.e. each trial gets its own well-separated stream;
/// its first three draws give the lr exponent, the wd exponent and the seed.
pub fn sample_trial(search_seed: u64, trial: u32) -> Trial {
    let base = SplitMix64::new(search_seed).next_u64();
    let mut rng = SplitMix64::new(base.wrapping_add((trial as u64).wrapping_mul(SplitMix64::GAMMA)));
    let lr_exp = LR_LOG10.0 + (LR_LOG10.1 - LR_LOG10.0) * rng.next_f64();
    let wd_exp = WD_LOG10.0 + (WD_LOG10.1 - WD_LOG10.0) * rng.next_f64();
    let seed = rng.next_u64() >> 32;
    Trial { trial, lr: 10f64.powf(lr_exp), wd: 10f64.powf(wd_exp), seed }
}

/// Trials `0..n` of the search seeded by `search_seed` (see [`sample_trial`]).
pub fn sample_trials(search_seed: u64, n: u32) -> Vec<Trial> {
    (0..n).map(|i| sample_trial(search_seed, i)).collect()
}

/// How a trial's training run ended (`train.json`'s `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Trained for all its epochs.
    Ok,
    /// Stopped on a NaN/Inf loss after its retries.
    Diverged,
    /// Failed or did not finish (out of memory, interrupted, missing artifact).
    Failed,
}

/// A finished trial as the runner read it back from its artifacts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub trial: u32,
    pub lr: f64,
    pub wd: f64,
    pub status: TrialStatus,
    /// Final-epoch validation CRA at ε = 36/255 (a fraction or a percentage; only the order matters).
    pub val_cra_36: Option<f64>,
}

/// The `(lr, wd)` of the completed trial with the highest final validation CRA at 36/255.
///
/// Only `status == Ok` trials with a finite CRA count. Ties go to the lowest trial index, so the
/// choice does not depend on the order in which results were collected. `None` when no trial
/// qualifies (every trial diverged): the caller reports that instead of guessing.
pub fn select_best(trials: &[TrialResult]) -> Option<(f64, f64)> {
    trials
        .iter()
        .filter(|t| t.status == TrialStatus::Ok)
        .filter_map(|t| t.val_cra_36.filter(|c| c.is_finite()).map(|c| (c, t)))
        .fold(None::<(f64, &TrialResult)>, |best, (c, t)| match best {
            Some((bc, bt)) if bc > c || (bc == c && bt.trial < t.trial) => Some((bc, bt)),
            _ => Some((c, t)),
        })
        .map(|(_, t)| (t.lr, t.wd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_are_reproducible_and_independent_of_order() {
        let forward = sample_trials(7, 16);
        let mut backward: Vec<Trial> = (0..16).rev().map(|i| sample_trial(7, i)).collect();
        backward.reverse();
        assert_eq!(forward, backward);
        assert_eq!(forward, sample_trials(7, 16));
        // A longer search extends a shorter one.
        assert_eq!(&sample_trials(7, 20)[..16], &forward[..]);
        // Another seed gives other trials, and trials within a search differ.
        let other = sample_trials(8, 16);
        assert!(forward.iter().zip(&other).all(|(a, b)| a.lr != b.lr && a.wd != b.wd));
        for i in 0..16 {
            for j in i + 1..16 {
                assert_ne!(forward[i].lr, forward[j].lr);
            }
        }
    }

    #[test]
    fn samples_lie_in_the_paper_ranges_and_spread_over_them() {
        let trials = sample_trials(0, 2000);
        let lr_exp: Vec<f64> = trials.iter().map(|t| t.lr.log10()).collect();
        let wd_exp: Vec<f64> = trials.iter().map(|t| t.wd.log10()).collect();
        // log10 of 10^x round-trips to within a few ulps of x.
        const ROUNDTRIP: f64 = 1e-12;
        for (&l, &w) in lr_exp.iter().zip(&wd_exp) {
            assert!((-4.0 - ROUNDTRIP..=-1.0 + ROUNDTRIP).contains(&l), "lr exponent {l}");
            assert!((-5.5 - ROUNDTRIP..=-3.5 + ROUNDTRIP).contains(&w), "wd exponent {w}");
        }
        assert!(trials.iter().all(|t| t.seed < (1u64 << 32)));
        // Log-uniform: the exponents' means are the range midpoints (−2.5, −4.5). The standard
        // error of a mean of 2000 uniforms of width 3 is 3/√12/√2000 ≈ 0.019; allow 5 of them.
        const MEAN_TOL: f64 = 0.1;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean(&lr_exp) + 2.5).abs() < MEAN_TOL, "lr exponent mean {}", mean(&lr_exp));
        assert!((mean(&wd_exp) + 4.5).abs() < MEAN_TOL, "wd exponent mean {}", mean(&wd_exp));
        // Each third of the lr exponent range gets about a third of the samples (±5 %).
        for k in 0..3 {
            let lo = -4.0 + k as f64;
            let share = lr_exp.iter().filter(|&&e| e >= lo && e < lo + 1.0).count() as f64 / 2000.0;
            assert!((share - 1.0 / 3.0).abs() < 0.05, "third {k}: {share}");
        }
    }

    fn result(trial: u32, status: TrialStatus, cra: Option<f64>) -> TrialResult {
        // Stand-in values, exact in binary, that identify the trial: lr = index + 1, wd = (index + 1)/2.
        TrialResult { trial, lr: (trial + 1) as f64, wd: (trial + 1) as f64 / 2.0, status, val_cra_36: cra }
    }

    #[test]
    fn selection_takes_the_best_completed_trial() {
        let trials = [
            result(0, TrialStatus::Ok, Some(0.41)),
            result(1, TrialStatus::Diverged, Some(0.90)), // a diverged run never wins
            result(2, TrialStatus::Ok, Some(0.52)),
            result(3, TrialStatus::Failed, None),
            result(4, TrialStatus::Ok, Some(f64::NAN)),
            result(5, TrialStatus::Ok, Some(0.47)),
        ];
        assert_eq!(select_best(&trials), Some((3.0, 1.5)));
    }

    #[test]
    fn ties_go_to_the_lowest_trial_index_in_any_order() {
        let a = result(3, TrialStatus::Ok, Some(0.5));
        let b = result(1, TrialStatus::Ok, Some(0.5));
        let c = result(2, TrialStatus::Ok, Some(0.4));
        assert_eq!(select_best(&[a, b, c]), Some((2.0, 1.0)));
        assert_eq!(select_best(&[c, b, a]), Some((2.0, 1.0)));
    }

    #[test]
    fn no_completed_trial_selects_nothing() {
        assert_eq!(select_best(&[]), None);
        let all_bad = [result(0, TrialStatus::Diverged, Some(0.1)), result(1, TrialStatus::Failed, None)];
        assert_eq!(select_best(&all_bad), None);
    }
}
