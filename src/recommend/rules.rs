//! The rule file (`pipelines/recommend-rules.yaml`, or `--rules FILE`) and the small engine that
//! evaluates it: hard constraints, the prediction at the user's budget, scoring per objective,
//! and the paper's warnings as data.
//!
//! The engine knows a fixed vocabulary of constraint kinds, sort keys and warning conditions; the
//! file chooses which apply, their parameters (safety margin, minimum epochs), their order in
//! the explanation and the warning texts. Unknown fields are errors (`deny_unknown_fields`), and
//! every parse error names `FILE:LINE:COLUMN`.
//!
//! # Prediction
//! Accuracy and CRA are known at a few epoch counts (the paper: the 2, 10 and 24 h budgets). At
//! the epochs `E` that fit the user's budget the engine interpolates linearly in `ln E`, i.e.
//! in log-time, between the neighbouring known points. It never extrapolates upward: beyond the
//! longest known budget the value is held at that budget's. Below the shortest, the first
//! segment's slope is continued downward (`below_shortest: log_slope`, floored at 0; only when
//! that slope is positive, so the prediction can only fall) or the shortest value is held
//! (`hold`); either way the candidate says so.

use super::knowledge::{Entry, Knowledge, Point};
use super::{Answer, Candidate, Check, Fired, Objective, Prediction, PredictionBasis, Query, Suggestion};
use crate::nn::{Method, ModelSize};
use crate::paper::Dataset;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::path::Path;

/// The rule-file format version this engine reads.
pub const RULES_SCHEMA_VERSION: u32 = 1;

/// The shipped rules, embedded so the binary works from any folder.
pub const SHIPPED_RULES: &str = include_str!("../../pipelines/recommend-rules.yaml");

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub schema_version: u32,
    pub constraints: Vec<Constraint>,
    pub prediction: PredictionRules,
    pub scoring: Scoring,
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// A hard constraint: a candidate failing any of them is dropped.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawConstraint", into = "RawConstraint")]
pub struct Constraint {
    /// Name shown in `--explain`.
    pub id: String,
    pub kind: ConstraintKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstraintKind {
    /// The network is 1-Lipschitz (drops the Standard baseline: it certifies nothing).
    Certifies,
    /// The model exists at the query's input size and has numbers (LOT-L does not).
    ModelExists,
    /// peak training memory × `safety_margin` ≤ memory budget.
    FitsMemory { safety_margin: f64 },
    /// At least `min_epochs` epochs fit in the time budget.
    MinEpochs { min_epochs: u64 },
    /// Accuracy/CRA are known for this model (at some budget).
    PredictionKnown,
}

/// The file form of a constraint: `{id, kind, <parameters of that kind>}`. A plain struct (not
/// an internally tagged enum) so that serde_yaml reports the exact line of an unknown field.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawConstraint {
    id: String,
    kind: KindName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    safety_margin: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_epochs: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum KindName {
    Certifies,
    ModelExists,
    FitsMemory,
    MinEpochs,
    PredictionKnown,
}

impl TryFrom<RawConstraint> for Constraint {
    type Error = String;
    fn try_from(r: RawConstraint) -> std::result::Result<Self, String> {
        let id = r.id;
        let extra = |name: &str| format!("constraint {id:?}: `{name}` does not apply to kind {:?}", r.kind);
        let kind = match r.kind {
            KindName::FitsMemory => ConstraintKind::FitsMemory {
                safety_margin: r.safety_margin.ok_or_else(|| format!("constraint {id:?} (fits_memory) needs `safety_margin`"))?,
            },
            KindName::MinEpochs => ConstraintKind::MinEpochs {
                min_epochs: r.min_epochs.ok_or_else(|| format!("constraint {id:?} (min_epochs) needs `min_epochs`"))?,
            },
            KindName::Certifies => ConstraintKind::Certifies,
            KindName::ModelExists => ConstraintKind::ModelExists,
            KindName::PredictionKnown => ConstraintKind::PredictionKnown,
        };
        if r.safety_margin.is_some() && !matches!(kind, ConstraintKind::FitsMemory { .. }) {
            return Err(extra("safety_margin"));
        }
        if r.min_epochs.is_some() && !matches!(kind, ConstraintKind::MinEpochs { .. }) {
            return Err(extra("min_epochs"));
        }
        Ok(Constraint { id, kind })
    }
}

impl From<Constraint> for RawConstraint {
    fn from(c: Constraint) -> Self {
        let (kind, safety_margin, min_epochs) = match c.kind {
            ConstraintKind::Certifies => (KindName::Certifies, None, None),
            ConstraintKind::ModelExists => (KindName::ModelExists, None, None),
            ConstraintKind::FitsMemory { safety_margin } => (KindName::FitsMemory, Some(safety_margin), None),
            ConstraintKind::MinEpochs { min_epochs } => (KindName::MinEpochs, None, Some(min_epochs)),
            ConstraintKind::PredictionKnown => (KindName::PredictionKnown, None, None),
        };
        RawConstraint { id: c.id, kind, safety_margin, min_epochs }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionRules {
    pub below_shortest: BelowShortest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BelowShortest {
    /// Continue the first segment's slope downward (floored at 0).
    LogSlope,
    /// Hold the shortest known budget's value.
    Hold,
}

/// Sort keys per objective, most important first.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    pub robust: Vec<SortKey>,
    pub clean: Vec<SortKey>,
    pub latency: Vec<SortKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Predicted CRA, higher first.
    Cra,
    /// Predicted clean accuracy, higher first.
    Accuracy,
    /// Inference time (measured ms per batch where every candidate has one, else the relative
    /// cost), lower first.
    Inference,
    /// Peak training memory, lower first.
    Memory,
    /// Epochs that fit, more first.
    Epochs,
}

/// A warning the paper gives, attached to every candidate its `when` matches.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Warning {
    pub id: String,
    #[serde(default)]
    pub when: When,
    /// Text; `{method}`, `{size}`, `{dataset}` and `{diverged_hours}` are filled in.
    pub message: String,
}

/// All given conditions must hold; an empty list means "any".
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    #[serde(default)]
    pub methods: Vec<Method>,
    #[serde(default)]
    pub sizes: Vec<ModelSize>,
    #[serde(default)]
    pub datasets: Vec<Dataset>,
    /// The query's time budget is at least this many hours.
    pub min_hours: Option<f64>,
    /// The query's time budget is at most this many hours.
    pub max_hours: Option<f64>,
    /// The query's input side is at least this.
    pub min_input_side: Option<u32>,
    /// A smaller size of the same method that is also kept is predicted to score higher.
    pub beaten_by_smaller_size: Option<bool>,
    /// The knowledge records diverged runs of this model.
    pub diverged_in_data: Option<bool>,
}

impl Rules {
    /// The rules shipped in `pipelines/recommend-rules.yaml`.
    pub fn shipped() -> Result<Rules> {
        Rules::parse("pipelines/recommend-rules.yaml", SHIPPED_RULES)
    }

    /// Reads a rule file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Rules> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read rules file {}", path.display()))?;
        Rules::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates rules; `name` is used in messages (`name:LINE:COL: …`).
    pub fn parse(name: &str, text: &str) -> Result<Rules> {
        let rules: Rules = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(loc) => anyhow::anyhow!("{name}:{}:{}: {e}", loc.line(), loc.column()),
            None => anyhow::anyhow!("{name}: {e}"),
        })?;
        rules.validate().with_context(|| format!("{name}: invalid rules"))?;
        Ok(rules)
    }

    fn validate(&self) -> Result<()> {
        if self.schema_version != RULES_SCHEMA_VERSION {
            bail!("schema_version {} is not supported; this lipctl reads {RULES_SCHEMA_VERSION}", self.schema_version);
        }
        for c in &self.constraints {
            match c.kind {
                ConstraintKind::FitsMemory { safety_margin } if !(safety_margin.is_finite() && safety_margin >= 1.0) => {
                    bail!("constraint {:?}: safety_margin must be a number ≥ 1, got {safety_margin}", c.id)
                }
                _ => {}
            }
        }
        for (name, keys) in [("robust", &self.scoring.robust), ("clean", &self.scoring.clean), ("latency", &self.scoring.latency)] {
            if keys.is_empty() {
                bail!("scoring.{name} is empty; give at least one sort key (cra, accuracy, inference, memory, epochs)");
            }
        }
        Ok(())
    }

    fn safety_margin(&self) -> f64 {
        self.constraints
            .iter()
            .find_map(|c| match c.kind {
                ConstraintKind::FitsMemory { safety_margin } => Some(safety_margin),
                _ => None,
            })
            .unwrap_or(1.0)
    }

    fn min_epochs(&self) -> u64 {
        self.constraints
            .iter()
            .find_map(|c| match c.kind {
                ConstraintKind::MinEpochs { min_epochs } => Some(min_epochs),
                _ => None,
            })
            .unwrap_or(0)
    }
}

/// Interpolates `value(point)` at `epochs` in log-time (see the module doc). `points` must be
/// sorted by epochs; `None` when it is empty.
pub fn interpolate(
    points: &[Point],
    value: impl Fn(&Point) -> f64,
    epochs: u64,
    below: BelowShortest,
) -> Option<(f64, PredictionBasis)> {
    let first = points.first()?;
    let last = points.last()?;
    let x = (epochs.max(1) as f64).ln();
    if epochs >= last.epochs {
        let basis = if epochs == last.epochs { PredictionBasis::AtKnownBudget } else { PredictionBasis::HeldAtLongest };
        return Some((value(last), basis));
    }
    if epochs < first.epochs {
        let v0 = value(first);
        let held = Some((v0, PredictionBasis::BelowShortest));
        return match (below, points.get(1)) {
            (BelowShortest::LogSlope, Some(second)) => {
                let slope = (value(second) - v0) / ((second.epochs as f64).ln() - (first.epochs as f64).ln());
                if slope > 0.0 {
                    Some(((v0 + slope * (x - (first.epochs as f64).ln())).max(0.0), PredictionBasis::BelowShortest))
                } else {
                    held
                }
            }
            _ => held,
        };
    }
    for w in points.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if epochs == a.epochs {
            return Some((value(a), PredictionBasis::AtKnownBudget));
        }
        if epochs > a.epochs && epochs < b.epochs {
            let (xa, xb) = ((a.epochs as f64).ln(), (b.epochs as f64).ln());
            let t = (x - xa) / (xb - xa);
            return Some((value(a) + t * (value(b) - value(a)), PredictionBasis::Interpolated));
        }
    }
    // Reached only if points are unsorted or duplicated; hold the nearest known value below.
    points.iter().rev().find(|p| p.epochs <= epochs).map(|p| (value(p), PredictionBasis::AtKnownBudget))
}

/// Input area relative to the one the costs were measured at, for scaling memory and time.
fn area_ratio(q: &Query, e: &Entry) -> f64 {
    (f64::from(q.input.height) * f64::from(q.input.width)) / (f64::from(e.input_side) * f64::from(e.input_side))
}

fn fmt_hours(h: f64) -> String {
    crate::units::Hours(h).to_string()
}

/// Evaluates the rules on every model of the query's dataset and ranks the ones that pass.
pub fn answer(q: &Query, k: &Knowledge, rules: &Rules) -> Answer {
    let margin = rules.safety_margin();
    let mut candidates: Vec<Candidate> = Method::ALL
        .iter()
        .flat_map(|&m| ModelSize::ALL.iter().map(move |&s| (m, s)))
        .filter_map(|(m, s)| k.entry(q.dataset, m, s))
        .map(|e| evaluate(q, e, rules, margin))
        .collect();

    // Conditions that depend on other candidates.
    let metric = |c: &Candidate| match q.objective {
        Objective::Clean => c.predicted.as_ref().map(|p| p.accuracy),
        _ => c.predicted.as_ref().map(|p| p.cra_36),
    };
    let beaten: Vec<bool> = candidates
        .iter()
        .map(|c| {
            let own = metric(c);
            candidates
                .iter()
                .any(|o| o.method == c.method && o.size < c.size && o.kept && c.kept && metric(o) > own)
        })
        .collect();
    for (c, beaten) in candidates.iter_mut().zip(beaten) {
        let e = k.entry(q.dataset, c.method, c.size).expect("candidates come from entries");
        c.warnings = rules
            .warnings
            .iter()
            .filter(|w| matches(&w.when, q, e, beaten))
            .map(|w| Fired {
                id: w.id.clone(),
                message: w
                    .message
                    .replace("{method}", c.method.name())
                    .replace("{size}", c.size.name())
                    .replace("{dataset}", q.dataset.name())
                    .replace(
                        "{diverged_hours}",
                        &e.diverged_hours.iter().map(|h| fmt_hours(*h)).collect::<Vec<_>>().join(", "),
                    ),
            })
            .collect();
    }

    // Rank.
    let keys = match q.objective {
        Objective::Robust => &rules.scoring.robust,
        Objective::Clean => &rules.scoring.clean,
        Objective::Latency => &rules.scoring.latency,
    };
    let use_ms = candidates.iter().filter(|c| c.kept).all(|c| c.infer_ms_per_batch.is_some());
    let mut kept: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].kept).collect();
    kept.sort_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        keys.iter()
            .map(|key| compare(*key, ca, cb, use_ms))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then((ca.method, ca.size).cmp(&(cb.method, cb.size)))
    });
    for (rank, &i) in kept.iter().enumerate() {
        candidates[i].rank = Some(rank + 1);
    }
    let recommendations: Vec<Candidate> = kept.iter().take(q.top).map(|&i| candidates[i].clone()).collect();
    let suggestion = if kept.is_empty() { Some(suggest(q, k, &candidates, rules)) } else { None };
    Answer::new(q, k, recommendations, candidates, suggestion, if use_ms { "ms_per_batch" } else { "relative" })
}

/// Orders two kept candidates by one key: `Less` means `a` ranks first.
fn compare(key: SortKey, a: &Candidate, b: &Candidate, use_ms: bool) -> Ordering {
    // Known values first; then by value.
    fn by(a: Option<f64>, b: Option<f64>, higher_first: bool) -> Ordering {
        match (a, b) {
            (Some(x), Some(y)) if higher_first => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    // Predictions are compared at the paper's printed precision (0.1 %), so that an
    // interpolation artefact below it does not decide a tie.
    let round = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
    let infer = |c: &Candidate| if use_ms { c.infer_ms_per_batch } else { c.infer_relative };
    match key {
        SortKey::Cra => by(round(a.predicted.as_ref().map(|p| p.cra_36)), round(b.predicted.as_ref().map(|p| p.cra_36)), true),
        SortKey::Accuracy => {
            by(round(a.predicted.as_ref().map(|p| p.accuracy)), round(b.predicted.as_ref().map(|p| p.accuracy)), true)
        }
        SortKey::Inference => by(infer(a), infer(b), false),
        SortKey::Memory => by(a.train_peak_bytes.map(|v| v as f64), b.train_peak_bytes.map(|v| v as f64), false),
        SortKey::Epochs => by(a.epochs.map(|v| v as f64), b.epochs.map(|v| v as f64), true),
    }
}

fn matches(w: &When, q: &Query, e: &Entry, beaten_by_smaller: bool) -> bool {
    (w.methods.is_empty() || w.methods.contains(&e.method))
        && (w.sizes.is_empty() || w.sizes.contains(&e.size))
        && (w.datasets.is_empty() || w.datasets.contains(&e.dataset))
        && w.min_hours.is_none_or(|h| q.hours.hours() >= h)
        && w.max_hours.is_none_or(|h| q.hours.hours() <= h)
        && w.min_input_side.is_none_or(|s| q.input.height.max(q.input.width) >= s)
        && w.beaten_by_smaller_size.is_none_or(|b| b == beaten_by_smaller)
        && w.diverged_in_data.is_none_or(|b| b == !e.diverged_hours.is_empty())
}

/// One candidate under the rules. Long on purpose: the rules apply in the documented order of
/// `pipelines/recommend-rules.yaml` (fit, epochs, warnings, score), each a few lines that read in sequence.
fn evaluate(q: &Query, e: &Entry, rules: &Rules, margin: f64) -> Candidate {
    let ratio = area_ratio(q, e);
    // Upper bounds (never scale down): activations grow with batch × area, the Fourier-domain
    // weights of Cayley/LOT with the area; time per epoch with the area.
    let time_scale = ratio.max(1.0);
    let mem_scale = ratio.max(1.0) * (f64::from(q.batch) / f64::from(e.batch)).max(1.0);
    let scaled_note = if ratio != 1.0 || q.batch > e.batch {
        format!(
            " — scaled ×{mem_scale:.2} for {}×{} input, batch {} (measured at {}×{}, batch {})",
            q.input.height, q.input.width, q.batch, e.input_side, e.input_side, e.batch
        )
    } else {
        String::new()
    };
    let epochs = e.time.as_ref().map(|t| t.epochs_in(q.hours.hours(), q.speed_vs_a100, time_scale));
    let peak = e.train_peak_bytes.map(|b| (b as f64 * mem_scale).round() as u64);
    let required = peak.map(|b| (b as f64 * margin).round() as u64);
    let predicted = epochs.and_then(|ep| {
        let (cra, basis) = interpolate(&e.points, |p| p.cra_36, ep, rules.prediction.below_shortest)?;
        let (acc, _) = interpolate(&e.points, |p| p.accuracy, ep, rules.prediction.below_shortest)?;
        Some(Prediction { cra_36: cra, accuracy: acc, basis })
    });

    let checks: Vec<Check> = rules
        .constraints
        .iter()
        .map(|c| {
            let (passed, detail) = match &c.kind {
                ConstraintKind::Certifies => {
                    if e.method.is_lipschitz() {
                        (true, format!("{} networks are 1-Lipschitz: margins certify robustness", e.method))
                    } else {
                        (false, "not 1-Lipschitz: certifies nothing (speed and memory baseline only)".to_string())
                    }
                }
                ConstraintKind::ModelExists => model_exists(q, e),
                ConstraintKind::FitsMemory { safety_margin } => match (peak, required) {
                    (Some(p), Some(r)) => (
                        r <= q.mem.bytes(),
                        format!(
                            "peak training memory {} × {safety_margin} = {} {} {} ({}{scaled_note})",
                            crate::units::ByteSize(p),
                            crate::units::ByteSize(r),
                            if r <= q.mem.bytes() { "≤" } else { ">" },
                            q.mem,
                            e.memory_note
                        ),
                    ),
                    _ => (
                        false,
                        match &e.oom_on {
                            Some(dev) => format!("ran out of memory when measured on {dev}"),
                            None => "peak training memory unknown".to_string(),
                        },
                    ),
                },
                ConstraintKind::MinEpochs { min_epochs } => match (&e.time, epochs) {
                    (Some(t), Some(n)) => (
                        n >= *min_epochs,
                        format!(
                            "{n} epochs fit in {} {} {min_epochs} ({})",
                            q.hours,
                            if n >= *min_epochs { "≥" } else { "<" },
                            describe_time(t, q.speed_vs_a100, time_scale)
                        ),
                    ),
                    _ => (false, "training time unknown".to_string()),
                },
                ConstraintKind::PredictionKnown => match &predicted {
                    Some(_) => (true, describe_points(e)),
                    None => (false, "no accuracy or CRA known for this model".to_string()),
                },
            };
            Check { rule: c.id.clone(), passed, detail }
        })
        .collect();
    let kept = checks.iter().all(|c| c.passed);
    Candidate {
        rank: None,
        method: e.method,
        size: e.size,
        kept,
        baseline: !e.method.is_lipschitz(),
        predicted,
        epochs,
        seconds_per_epoch: e.time.as_ref().map(|t| t.seconds_per_epoch() * time_scale),
        train_peak_bytes: peak,
        required_bytes: required,
        infer_ms_per_batch: e.infer_ms_per_batch,
        infer_relative: e.infer_relative,
        sources: super::Sources {
            time: e.time.as_ref().map(|t| t.source()),
            memory: e.train_peak_bytes.map(|_| e.memory_source),
            accuracy: (!e.points.is_empty()).then_some(e.accuracy_source),
        },
        checks,
        warnings: Vec::new(),
    }
}

fn model_exists(q: &Query, e: &Entry) -> (bool, String) {
    let side = q.input.height;
    if q.input.height != q.input.width {
        return (false, format!("the ConvNet needs a square input, got {}×{}", q.input.height, q.input.width));
    }
    if !side.is_power_of_two() || side < 4 {
        return (false, format!("the ConvNet halves the input down to 1×1: the side must be a power of two ≥ 4, got {side}"));
    }
    if let Some(why) = &e.unavailable {
        return (false, format!("no numbers: {why}"));
    }
    if e.time.is_none() {
        return (false, "no training time known".to_string());
    }
    (true, format!("{}-{} exists for {}×{} inputs", e.method, e.size, side, side))
}

fn describe_time(t: &super::knowledge::TimeBasis, speed: f64, time_scale: f64) -> String {
    use super::knowledge::TimeBasis;
    let scale = if time_scale > 1.0 { format!(", ×{time_scale:.2} for the larger input") } else { String::new() };
    match t {
        TimeBasis::PaperEpochs2h { epochs } => {
            let sp = if speed != 1.0 { format!(", this device {speed}× an A100") } else { String::new() };
            format!("paper Table 8: {epochs} epochs per 2 h on an A100{sp}{scale}")
        }
        TimeBasis::PaperSecondsPerEpoch { seconds } => format!("paper Figure 2: {seconds} s per epoch on an A100{scale}"),
        TimeBasis::Measured { seconds, device } => format!("measured: {seconds:.2} s per epoch on {device}{scale}"),
    }
}

fn describe_points(e: &Entry) -> String {
    let src = match e.accuracy_source {
        super::Source::Paper => "paper",
        super::Source::Measured => "measured",
    };
    let pts: Vec<String> = e
        .points
        .iter()
        .map(|p| {
            let label = p.budget_hours.map(|h| format!("{} ", fmt_hours(h))).unwrap_or_default();
            format!("{label}({} ep): CRA {:.1}, acc {:.1}", p.epochs, p.cra_36, p.accuracy)
        })
        .collect();
    format!("{src} results: {}", pts.join("; "))
}

/// Whether `c` passes every check whose constraint is of the kind `is_kind` selects.
fn passes_kind(c: &Candidate, rules: &Rules, is_kind: impl Fn(&ConstraintKind) -> bool) -> bool {
    c.checks
        .iter()
        .filter(|ch| rules.constraints.iter().any(|r| r.id == ch.rule && is_kind(&r.kind)))
        .all(|ch| ch.passed)
}

/// When nothing fits: the smallest budgets that would fit a certifying model.
fn suggest(q: &Query, k: &Knowledge, candidates: &[Candidate], rules: &Rules) -> Suggestion {
    let budget_rules: Vec<&str> = rules
        .constraints
        .iter()
        .filter(|c| matches!(c.kind, ConstraintKind::FitsMemory { .. } | ConstraintKind::MinEpochs { .. }))
        .map(|c| c.id.as_str())
        .collect();
    // Only candidates that nothing but the budgets keep out.
    let fixable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.checks.iter().all(|ch| ch.passed || budget_rules.contains(&ch.rule.as_str())))
        .filter(|c| c.required_bytes.is_some() && c.epochs.is_some())
        .collect();
    let hours_needed = |c: &Candidate| -> Option<f64> {
        let e = k.entry(q.dataset, c.method, c.size)?;
        let t = e.time.as_ref()?;
        let time_scale = area_ratio(q, e).max(1.0);
        Some(t.hours_for(rules.min_epochs(), q.speed_vs_a100, time_scale))
    };
    let name = |c: &Candidate| format!("{}-{}", c.method, c.size);
    let mem_ok = |c: &&&Candidate| passes_kind(c, rules, |k| matches!(k, ConstraintKind::FitsMemory { .. }));
    let time_ok = |c: &&&Candidate| passes_kind(c, rules, |k| matches!(k, ConstraintKind::MinEpochs { .. }));
    let min_memory = fixable
        .iter()
        .filter(time_ok)
        .filter_map(|c| Some((c.required_bytes?, name(c))))
        .min_by_key(|(b, _)| *b);
    let min_hours = fixable
        .iter()
        .filter(mem_ok)
        .filter_map(|c| Some((hours_needed(c)?, name(c))))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    // Neither budget alone helps: the model needing the least memory, with the time it needs.
    let both = if min_memory.is_none() && min_hours.is_none() {
        fixable
            .iter()
            .filter_map(|c| Some((c.required_bytes?, hours_needed(c)?, name(c))))
            .min_by_key(|(b, _, _)| *b)
    } else {
        None
    };
    Suggestion::new(min_memory, min_hours, both)
}
