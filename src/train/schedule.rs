//! OneCycle learning-rate and momentum schedule with PyTorch's defaults, stepped once per epoch
//! (reference-protocol §6.3).
//!
//! `total_steps = E`, `pct_start = 0.3`, cosine annealing, `div_factor = 25`,
//! `final_div_factor = 1e4`, two phases, momentum cycled between 0.95 and 0.85. The value at step
//! `s` (0 at construction, +1 after every epoch) is what PyTorch's `OneCycleLR.get_lr` returns,
//! including its phase boundaries `e1 = 0.3·E − 1` (a float) and `e2 = E − 1`, and including the
//! overshoot at `s = E` where `pct` is slightly above 1 (PyTorch only rejects `s > E`).

use std::f64::consts::PI;

/// The schedule for `epochs` epochs at peak learning rate `peak`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    pub peak: f64,
    pub epochs: usize,
}

/// PyTorch defaults (`torch.optim.lr_scheduler.OneCycleLR`).
const PCT_START: f64 = 0.3;
const DIV_FACTOR: f64 = 25.0;
const FINAL_DIV_FACTOR: f64 = 1e4;
const BASE_MOMENTUM: f64 = 0.85;
const MAX_MOMENTUM: f64 = 0.95;

/// Cosine interpolation from `start` (pct = 0) to `end` (pct = 1), PyTorch's `_annealing_cos`.
fn anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
}

impl OneCycle {
    pub fn new(peak: f64, epochs: usize) -> Self {
        OneCycle { peak, epochs }
    }

    /// Learning rate at the start (`peak/25`).
    pub fn initial_lr(&self) -> f64 {
        self.peak / DIV_FACTOR
    }

    /// Learning rate at the end (`peak/25/1e4`).
    pub fn min_lr(&self) -> f64 {
        self.initial_lr() / FINAL_DIV_FACTOR
    }

    /// (learning rate, momentum) at scheduler step `s`.
    pub fn at_step(&self, s: usize) -> (f64, f64) {
        let e1 = PCT_START * self.epochs as f64 - 1.0;
        let e2 = self.epochs as f64 - 1.0;
        let s = s as f64;
        if s <= e1 {
            let pct = s / e1;
            (anneal(self.initial_lr(), self.peak, pct), anneal(MAX_MOMENTUM, BASE_MOMENTUM, pct))
        } else {
            let pct = (s - e1) / (e2 - e1);
            (anneal(self.peak, self.min_lr(), pct), anneal(BASE_MOMENTUM, MAX_MOMENTUM, pct))
        }
    }

    /// (learning rate, momentum) used during epoch `epoch` (1-based): the value at `s = epoch − 1`.
    pub fn for_epoch(&self, epoch: usize) -> (f64, f64) {
        self.at_step(epoch.saturating_sub(1))
    }

    /// The value R1 logs after epoch `epoch` (after `scheduler.step()`): the value at `s = epoch`.
    pub fn logged_after_epoch(&self, epoch: usize) -> (f64, f64) {
        self.at_step(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 evaluation of the same closed form written differently: a few ulps.
    const TOL: f64 = 1e-15;

    #[test]
    fn ten_epochs_by_hand() {
        // E = 10: e1 = 2, e2 = 9. Phase 1 at s = 0, 1, 2 with pct = s/2; phase 2 with pct = (s−2)/7.
        let peak = 0.1;
        let sched = OneCycle::new(peak, 10);
        let lr0 = peak / 25.0;
        let lr_min = lr0 / 1e4;
        let cos_half = |start: f64, end: f64, pct: f64| start * (1.0 + (PI * pct).cos()) / 2.0 + end * (1.0 - (PI * pct).cos()) / 2.0;
        let mut expected = vec![
            (lr0, 0.95),
            ((lr0 + peak) / 2.0, 0.90),
            (peak, 0.85),
        ];
        for s in 3..=10 {
            let pct = (s as f64 - 2.0) / 7.0;
            expected.push((cos_half(peak, lr_min, pct), cos_half(0.85, 0.95, pct)));
        }
        for (s, (lr, mom)) in expected.iter().enumerate() {
            let (got_lr, got_mom) = sched.at_step(s);
            assert!((got_lr - lr).abs() < TOL, "s={s}: lr {got_lr} vs {lr}");
            assert!((got_mom - mom).abs() < TOL, "s={s}: momentum {got_mom} vs {mom}");
        }
        assert!((sched.at_step(9).0 - lr_min).abs() < TOL);
        assert_eq!(sched.for_epoch(1), sched.at_step(0));
        assert_eq!(sched.for_epoch(10), sched.at_step(9));
        assert_eq!(sched.logged_after_epoch(1), sched.at_step(1));
    }

    #[test]
    fn matches_the_logged_values_of_the_paper_runs() {
        // M-BCOP, peak 0.0060244, E = 1128: logs 0.00024… after epoch 1.
        let (lr, _) = OneCycle::new(0.0060244, 1128).logged_after_epoch(1);
        assert!((0.00024..0.00025).contains(&lr), "{lr}");
        // S-CPL, peak 0.0703865, E = 9564: 2.81546e−07 after epoch 9563 (= lr_min at s = E−1),
        // 2.85420e−07 after epoch 9564 (s = E, pct slightly above 1). The logs and the peak carry
        // 6–7 significant digits: the formula gives 2.854208e−07 at s = E, so the last logged
        // digit is matched to ±1 (the log truncates, or the unrounded peak is slightly lower).
        const LOG_DIGIT: f64 = 1e-12;
        let s_cpl = OneCycle::new(0.0703865, 9564);
        let (lr, _) = s_cpl.logged_after_epoch(9563);
        assert!((lr - 2.81546e-7).abs() < LOG_DIGIT, "{lr}");
        assert_eq!(lr, s_cpl.min_lr());
        let (lr, _) = s_cpl.logged_after_epoch(9564);
        assert!((lr - 2.85420e-7).abs() < LOG_DIGIT, "{lr}");
    }

    /// Values printed by PyTorch 2.11 (reference-protocol §9.3 item 5) with:
    ///
    /// ```python
    /// import torch
    /// peak, E = 0.0060244235091987, 1128
    /// p = torch.nn.Parameter(torch.zeros(1))
    /// opt = torch.optim.SGD([p], lr=peak, momentum=0.9)
    /// sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, epochs=E, steps_per_epoch=1)
    /// for s in range(E + 1):
    ///     if s in (0, 1, 338, 1128):
    ///         print(s, repr(opt.param_groups[0]['lr']), repr(opt.param_groups[0]['momentum']))
    ///     if s < E:
    ///         opt.step(); sch.step()
    /// ```
    #[test]
    fn matches_pytorch_one_cycle() {
        // The same closed form in the same evaluation order: equal up to libm's cos (1 ulp).
        const REL_TOL: f64 = 1e-14;
        let expected = [
            (0, 0.00024097694036794796, 0.95),
            (1, 0.00024110229292210843, 0.9499978325631149),
            (338, 0.006024414926150988, 0.8500001424714253),
            (1128, 4.7939473105940567e-08, 0.9499996042463748),
        ];
        let sched = OneCycle::new(0.0060244235091987, 1128);
        for (s, lr, mom) in expected {
            let (got_lr, got_mom) = sched.at_step(s);
            assert!((got_lr - lr).abs() <= REL_TOL * lr, "s={s}: lr {got_lr:e} vs {lr:e}");
            assert!((got_mom - mom).abs() <= REL_TOL * mom, "s={s}: momentum {got_mom} vs {mom}");
        }
    }

    #[test]
    fn r2_optimizer_properties() {
        // R2 test_optimizer: OneCycle(max 0.1, 100 steps): peak ≈ 0.1, first < 0.01, last < 1e−4.
        let sched = OneCycle::new(0.1, 100);
        let lrs: Vec<f64> = (0..100).map(|s| sched.at_step(s).0).collect();
        let max = lrs.iter().cloned().fold(f64::MIN, f64::max);
        assert!((max - 0.1).abs() < 5e-4);
        assert!(lrs[0] < 0.01 && lrs[99] < 1e-4);
    }
}
