//! `lipctl recommend`: "I have a GPU with 8 GB and two hours. Which layer, which model size?"
//! (design §1). An instant, ranked answer with reasons, from the paper's numbers out of the box
//! and from this machine's measurements once they exist.
//!
//! Three parts, each replaceable on its own:
//! * [`knowledge`]: what is known per (dataset, method, size) — time, memory, inference cost,
//!   accuracy and CRA at known budgets (paper, measured, or both);
//! * [`rules`]: the YAML rule file (`pipelines/recommend-rules.yaml`) and its engine — hard
//!   constraints, the log-time prediction, scoring per objective, the paper's warnings;
//! * this module: the query, the answer, and its rendering (table, Markdown, JSON).
//!
//! Library entry point: [`answer`]`(&Query, &Knowledge, &Rules) -> Answer`; the CLI calls [`run`].
//!
//! # JSON output (`--format json`), schema_version 1
//! A stable interface for scripts: fields are only ever added; a removal or a change of meaning
//! bumps `schema_version`.
//!
//! ```text
//! {
//!   "schema_version": 1,
//!   "query": { "memory_bytes": u64, "hours": f64, "dataset": "cifar10"|"cifar100"|"tinyimagenet",
//!              "objective": "robust"|"clean"|"latency", "input": {"height": u32, "width": u32},
//!              "batch": u32, "top": usize, "speed_vs_a100": f64 },
//!   "knowledge": [ "paper: …", "measured: <file>" ],          // the sources used
//!   "inference_unit": "relative" | "ms_per_batch",            // what ranked `latency`
//!   "notes": [ str, … ],                                      // caveats about the whole answer
//!   "recommendations": [ Candidate, … ],                      // kept candidates, best first, at most `top`
//!   "candidates": [ Candidate, … ],                           // every model evaluated, kept or not
//!   "nothing_fits": null | { "min_memory_bytes": u64|null, "min_memory_model": str|null,
//!                            "min_hours": f64|null, "min_hours_model": str|null,
//!                            "combined": null | { "memory_bytes": u64, "hours": f64, "model": str } }
//! }
//! Candidate = {
//!   "rank": usize|null, "method": "SOC", "size": "M", "kept": bool, "baseline": bool,
//!   "predicted": null | { "cra_36": f64 (%), "accuracy": f64 (%),
//!                         "basis": "at_known_budget"|"interpolated"|"held_at_longest"|"below_shortest" },
//!   "epochs": u64|null, "seconds_per_epoch": f64|null,
//!   "train_peak_bytes": u64|null,           // peak training memory, scaled to the query's input/batch
//!   "required_bytes": u64|null,             // × the rules' safety margin
//!   "infer_ms_per_batch": f64|null, "infer_relative": f64|null,
//!   "sources": { "time": "paper"|"measured"|null, "memory": …, "accuracy": … },
//!   "checks": [ { "rule": str, "passed": bool, "detail": str } ],   // every hard constraint, in file order
//!   "warnings": [ { "id": str, "message": str } ]
//! }
//! ```

pub mod knowledge;
pub mod rules;

pub use knowledge::{Knowledge, KnowledgeMode};
pub use rules::Rules;

use crate::nn::{Method, ModelSize};
use crate::paper::Dataset;
use crate::units::{ByteSize, Hours};
use anyhow::{bail, Result};
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Version of the JSON answer format (see the module doc).
pub const ANSWER_SCHEMA_VERSION: u32 = 1;

/// Where a number comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Paper,
    Measured,
}

/// What to optimise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Certified robust accuracy at ε = 36/255.
    Robust,
    /// Clean accuracy.
    Clean,
    /// Inference time first, ties by CRA.
    Latency,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

/// Input image size, `HxW` (`32x32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct InputSize {
    pub height: u32,
    pub width: u32,
}

impl InputSize {
    pub fn square(side: u32) -> Self {
        InputSize { height: side, width: side }
    }
}

impl fmt::Display for InputSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}

impl FromStr for InputSize {
    type Err = String;
    /// `32x32`, `64X64`, `32×32`, or `32` for a square.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("invalid input size {s:?}; write HEIGHTxWIDTH with positive integers, e.g. 32x32 or 64x64");
        let t = s.trim().to_ascii_lowercase().replace('×', "x");
        let (h, w) = match t.split_once('x') {
            Some((h, w)) => (h.trim(), w.trim()),
            None => (t.as_str(), t.as_str()),
        };
        let parse = |v: &str| v.parse::<u32>().ok().filter(|n| *n > 0 && v.chars().all(|c| c.is_ascii_digit()));
        match (parse(h), parse(w)) {
            (Some(height), Some(width)) => Ok(InputSize { height, width }),
            _ => Err(bad()),
        }
    }
}

/// A recommendation query, fully typed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Query {
    #[serde(rename = "memory_bytes")]
    pub mem: ByteSize,
    pub hours: Hours,
    pub dataset: Dataset,
    pub objective: Objective,
    pub input: InputSize,
    pub batch: u32,
    pub top: usize,
    /// How much faster than the paper's A100 this device trains (applies to paper timings only).
    pub speed_vs_a100: f64,
}

impl Query {
    /// A query with the CLI's defaults: CIFAR-10, robust, native input, batch 256, top 5.
    pub fn new(mem: ByteSize, hours: Hours) -> Query {
        Query {
            mem,
            hours,
            dataset: Dataset::Cifar10,
            objective: Objective::Robust,
            input: InputSize::square(Dataset::Cifar10.input_side()),
            batch: 256,
            top: 5,
            speed_vs_a100: 1.0,
        }
    }

    /// Same query on another dataset (and its native input size).
    pub fn on(mut self, dataset: Dataset) -> Query {
        self.dataset = dataset;
        self.input = InputSize::square(dataset.input_side());
        self
    }

    pub fn objective(mut self, objective: Objective) -> Query {
        self.objective = objective;
        self
    }
}

/// How a prediction was obtained (see [`rules`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionBasis {
    /// Exactly at a known budget.
    AtKnownBudget,
    /// Between two known budgets, linear in log-time.
    Interpolated,
    /// Beyond the longest known budget: held there, never extrapolated upward.
    HeldAtLongest,
    /// Fewer epochs than the shortest known budget.
    BelowShortest,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Percent.
    pub cra_36: f64,
    /// Percent.
    pub accuracy: f64,
    pub basis: PredictionBasis,
}

/// One hard constraint evaluated on one candidate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub rule: String,
    pub passed: bool,
    pub detail: String,
}

/// A warning that applies to a candidate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fired {
    pub id: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sources {
    pub time: Option<Source>,
    pub memory: Option<Source>,
    pub accuracy: Option<Source>,
}

/// One (method, size), evaluated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub rank: Option<usize>,
    pub method: Method,
    pub size: ModelSize,
    pub kept: bool,
    /// The Standard convolution: shown for comparison, never recommended.
    pub baseline: bool,
    pub predicted: Option<Prediction>,
    pub epochs: Option<u64>,
    pub seconds_per_epoch: Option<f64>,
    pub train_peak_bytes: Option<u64>,
    pub required_bytes: Option<u64>,
    pub infer_ms_per_batch: Option<f64>,
    pub infer_relative: Option<f64>,
    pub sources: Sources,
    pub checks: Vec<Check>,
    pub warnings: Vec<Fired>,
}

impl Candidate {
    pub fn name(&self) -> String {
        format!("{}-{}", self.method, self.size)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Combined {
    pub memory_bytes: u64,
    pub hours: f64,
    pub model: String,
}

/// When nothing fits: the smallest budgets that would fit a certifying model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suggestion {
    /// Smallest memory budget that fits a model within the given time budget.
    pub min_memory_bytes: Option<u64>,
    pub min_memory_model: Option<String>,
    /// Smallest time budget (hours) that fits a model within the given memory budget.
    pub min_hours: Option<f64>,
    pub min_hours_model: Option<String>,
    /// Neither budget alone suffices: the model needing the least memory, and the time it needs.
    pub combined: Option<Combined>,
}

impl Suggestion {
    fn new(mem: Option<(u64, String)>, hours: Option<(f64, String)>, both: Option<(u64, f64, String)>) -> Self {
        Suggestion {
            min_memory_bytes: mem.as_ref().map(|m| m.0),
            min_memory_model: mem.map(|m| m.1),
            min_hours: hours.as_ref().map(|h| h.0),
            min_hours_model: hours.map(|h| h.1),
            combined: both.map(|(memory_bytes, hours, model)| Combined { memory_bytes, hours, model }),
        }
    }
}

/// The answer (its JSON form is documented in the module doc).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    pub schema_version: u32,
    pub query: Query,
    pub knowledge: Vec<String>,
    pub inference_unit: &'static str,
    /// Caveats about the whole answer (estimated figures, scaled costs).
    pub notes: Vec<String>,
    pub recommendations: Vec<Candidate>,
    pub candidates: Vec<Candidate>,
    pub nothing_fits: Option<Suggestion>,
}

impl Answer {
    fn new(
        q: &Query,
        k: &Knowledge,
        recommendations: Vec<Candidate>,
        candidates: Vec<Candidate>,
        nothing_fits: Option<Suggestion>,
        inference_unit: &'static str,
    ) -> Answer {
        let mut notes = Vec::new();
        if inference_unit == "relative" {
            notes.push(
                "inference: relative cost (standard-convolution XS = 1); the paper gives no inference times, \
                 so only the order is meaningful"
                    .to_string(),
            );
        }
        if candidates.iter().any(|c| c.sources.memory == Some(Source::Paper)) && q.dataset.kind() == crate::paper::DatasetKind::TinyImageNet {
            notes.push(format!(
                "memory: the paper measured the CIFAR network (32×32) only; for {} its figures are estimates",
                q.dataset
            ));
        }
        if q.input != InputSize::square(q.dataset.input_side()) || q.batch > 256 {
            notes.push(format!(
                "costs were measured at {}×{} inputs, batch 256: time and memory are scaled up to {}, batch {} \
                 (upper bounds); accuracy is that of {}",
                q.dataset.input_side(),
                q.dataset.input_side(),
                q.input,
                q.batch,
                q.dataset
            ));
        }
        Answer {
            schema_version: ANSWER_SCHEMA_VERSION,
            query: q.clone(),
            knowledge: k.sources.clone(),
            inference_unit,
            notes,
            recommendations,
            candidates,
            nothing_fits,
        }
    }

    /// The best candidate, if any fits.
    pub fn best(&self) -> Option<&Candidate> {
        self.recommendations.first()
    }

    pub fn candidate(&self, method: Method, size: ModelSize) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.method == method && c.size == size)
    }
}

/// Ranks every model of the query's dataset (the engine lives in [`rules`]).
pub fn answer(q: &Query, k: &Knowledge, r: &Rules) -> Answer {
    rules::answer(q, k, r)
}

fn parse_speed(s: &str) -> std::result::Result<f64, String> {
    match s.trim().trim_end_matches(['x', '×']).parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("invalid speed {s:?}; write a positive factor, e.g. 0.5 (half an A100) or 2.5")),
    }
}

/// `lipctl recommend`: what the user typed.
#[derive(clap::Args, Debug, Clone)]
pub struct RecommendArgs {
    /// GPU memory budget for training, e.g. 8GB, 8GiB, 512MB, 80g.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, long_help = "GPU memory available for training. kB/MB/GB/TB are powers \
        of 1000 (the paper's unit), KiB/MiB/GiB/TiB and k/m/g/t powers of 1024. Examples: 8GB, 8 GB, 8GiB, 512MB, 80g.")]
    pub mem: ByteSize,

    /// Wall-clock training budget, e.g. 2h, 90m, 1h30m, 2d (a bare number means hours).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, long_help = "Wall-clock training time available. Units s, m/min, h, d; \
        parts add up; a bare number means hours. Examples: 2h, 2, 90m, 1.5h, 1h30m, 2d.")]
    pub hours: Hours,

    /// Dataset the model is for.
    #[arg(long, value_enum, default_value_t = Dataset::Cifar10)]
    pub dataset: Dataset,

    /// What to optimise: robust (CRA at 36/255), clean (accuracy), latency (inference time).
    #[arg(long, value_enum, default_value_t = Objective::Robust)]
    pub objective: Objective,

    /// Input size HxW [default: the dataset's, 32x32 or 64x64].
    #[arg(long, value_name = "HxW", long_help = "Input image size HEIGHTxWIDTH. Default: the dataset's own \
        (32x32 for CIFAR, 64x64 for Tiny ImageNet). Other sizes scale time and memory up by the area ratio \
        (an upper bound); accuracy numbers stay those of the dataset.")]
    pub input: Option<InputSize>,

    /// Training batch size (memory above 256 is scaled up from the batch-256 figures).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,

    /// How many recommendations to list.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: u64,

    /// Output format; json is a stable interface (schema_version 1).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Numbers to use: paper, measured (this machine), or auto (measured where available).
    #[arg(long, value_enum, default_value_t = KnowledgeMode::Auto)]
    pub knowledge: KnowledgeMode,

    /// Measured results CSV [default: <artifacts>/aggregate/results.csv].
    #[arg(long, value_name = "FILE")]
    pub measured: Option<PathBuf>,

    /// For every model: the rules that fired and why it was kept or dropped.
    #[arg(long)]
    pub explain: bool,

    /// Rule file [default: the shipped pipelines/recommend-rules.yaml].
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// This device's training speed relative to the paper's A100 (paper timings only).
    #[arg(long, value_name = "X", default_value = "1", value_parser = parse_speed, long_help = "Training speed of \
        this device relative to an NVIDIA A100 80GB, used to turn the paper's A100 epoch budgets into epochs on \
        this device (0.5 = half as fast). Measured timings are used as they are.")]
    pub speed_vs_a100: f64,
}

impl RecommendArgs {
    /// Resolves the arguments into a typed query, the knowledge and the rules.
    pub fn resolve(&self, artifacts: &Path) -> Result<(Query, Knowledge, Rules)> {
        let rules = match &self.rules {
            Some(p) => Rules::load(p)?,
            None => Rules::shipped()?,
        };
        if self.measured.is_some() && self.knowledge == KnowledgeMode::Paper {
            bail!("--measured has no effect with --knowledge paper; use --knowledge measured or auto");
        }
        let knowledge = Knowledge::load(self.knowledge, artifacts, self.measured.as_deref())?;
        let query = Query {
            mem: self.mem,
            hours: self.hours,
            dataset: self.dataset,
            objective: self.objective,
            input: self.input.unwrap_or(InputSize::square(self.dataset.input_side())),
            batch: self.batch,
            top: usize::try_from(self.top).unwrap_or(usize::MAX),
            speed_vs_a100: self.speed_vs_a100,
        };
        Ok((query, knowledge, rules))
    }
}

/// The CLI's `recommend`: resolve, answer, print to `out`.
pub fn run(args: &RecommendArgs, artifacts: &Path, out: &mut dyn Write) -> Result<()> {
    let (q, k, r) = args.resolve(artifacts)?;
    let a = answer(&q, &k, &r);
    render(&a, args.format, args.explain, out)
}

/// Writes the answer in `format`; `explain` adds every candidate's checks (table and Markdown;
/// JSON always carries them).
pub fn render(a: &Answer, format: Format, explain: bool, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, a)?;
            writeln!(out)?;
        }
        Format::Table => render_text(a, explain, false, out)?,
        Format::Markdown => render_text(a, explain, true, out)?,
    }
    Ok(())
}

fn objective_label(o: Objective) -> &'static str {
    match o {
        Objective::Robust => "robust (CRA at ε = 36/255)",
        Objective::Clean => "clean accuracy",
        Objective::Latency => "latency (inference time, then CRA)",
    }
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "–".to_string())
}

fn infer_cell(c: &Candidate, unit: &str) -> String {
    match (unit, c.infer_ms_per_batch, c.infer_relative) {
        ("ms_per_batch", Some(ms), _) => format!("{ms:.1} ms"),
        (_, _, Some(rel)) => format!("{rel:.0}× std-XS"),
        (_, Some(ms), None) => format!("{ms:.1} ms"),
        _ => "–".to_string(),
    }
}

fn row_cells(c: &Candidate, unit: &str) -> Vec<String> {
    vec![
        c.rank.map(|r| r.to_string()).unwrap_or_default(),
        c.method.to_string(),
        c.size.to_string(),
        opt(c.predicted.as_ref().map(|p| format!("{:.1}", p.cra_36))),
        opt(c.predicted.as_ref().map(|p| format!("{:.1}", p.accuracy))),
        opt(c.epochs.map(|e| e.to_string())),
        opt(c.train_peak_bytes.map(|b| ByteSize(b).to_string())),
        infer_cell(c, unit),
    ]
}

const HEADER: [&str; 8] = ["rank", "method", "size", "CRA %", "acc %", "epochs", "peak mem", "inference"];

/// The answer as a terminal table or Markdown. Long on purpose: one straight run of `writeln!`s in
/// the order the text reads (query, table, reasons, warnings); splitting it would scatter the layout.
fn render_text(a: &Answer, explain: bool, md: bool, out: &mut dyn Write) -> Result<()> {
    let q = &a.query;
    let title = format!(
        "{} · {} memory · {} · {} input · batch {} · objective {}",
        q.dataset,
        q.mem,
        q.hours,
        q.input,
        q.batch,
        objective_label(q.objective)
    );
    if md {
        writeln!(out, "## lipctl recommend\n\n{title}\n")?;
        for s in &a.knowledge {
            writeln!(out, "- knowledge: {s}")?;
        }
        writeln!(out)?;
    } else {
        writeln!(out, "{title}")?;
        for s in &a.knowledge {
            writeln!(out, "knowledge: {s}")?;
        }
        writeln!(out)?;
    }
    if a.recommendations.is_empty() {
        writeln!(out, "Nothing fits these budgets.")?;
        if let Some(s) = &a.nothing_fits {
            if let (Some(b), Some(m)) = (s.min_memory_bytes, &s.min_memory_model) {
                writeln!(out, "The smallest memory budget that fits a model in {}: {} ({m}).", q.hours, ByteSize(b))?;
            }
            if let (Some(h), Some(m)) = (s.min_hours, &s.min_hours_model) {
                writeln!(out, "The smallest time budget that fits a model in {}: {} ({m}).", q.mem, Hours(h))?;
            }
            if let Some(c) = &s.combined {
                writeln!(out, "The smallest budgets that fit a model: {} and {} ({}).", ByteSize(c.memory_bytes), Hours(c.hours), c.model)?;
            }
            if s.min_memory_bytes.is_none() && s.min_hours.is_none() && s.combined.is_none() {
                writeln!(out, "No larger budget helps: no certifying model has numbers for this dataset and input.")?;
            }
        }
    } else {
        let rows: Vec<Vec<String>> = a.recommendations.iter().map(|c| row_cells(c, a.inference_unit)).collect();
        write_table(&HEADER, &rows, md, out)?;
        writeln!(out)?;
        // One line per distinct warning, naming the models it applies to.
        let mut notes: Vec<(&str, &str, Vec<String>)> = Vec::new();
        for c in &a.recommendations {
            for w in &c.warnings {
                match notes.iter_mut().find(|(id, m, _)| *id == w.id && *m == w.message) {
                    Some((_, _, models)) => models.push(c.name()),
                    None => notes.push((&w.id, &w.message, vec![c.name()])),
                }
            }
        }
        for (id, message, models) in notes {
            writeln!(out, "{}note ({id}) {}: {message}", if md { "- " } else { "" }, models.join(", "))?;
        }
        for n in &a.notes {
            writeln!(out, "{}{n}", if md { "- " } else { "" })?;
        }
    }
    if explain {
        writeln!(out, "{}", if md { "\n### Every candidate\n" } else { "\nEvery candidate:" })?;
        for c in &a.candidates {
            let verdict = match (c.kept, c.rank, c.baseline) {
                (_, _, true) => "baseline only".to_string(),
                (true, Some(r), _) => format!("kept, rank {r}"),
                (true, None, _) => "kept".to_string(),
                (false, _, _) => "dropped".to_string(),
            };
            let pred = c.predicted.as_ref().map(|p| {
                let basis = match p.basis {
                    PredictionBasis::AtKnownBudget => "at a known budget",
                    PredictionBasis::Interpolated => "interpolated in log-time",
                    PredictionBasis::HeldAtLongest => "held at the longest known budget (no upward extrapolation)",
                    PredictionBasis::BelowShortest => "below the shortest known budget",
                };
                format!("predicted CRA {:.1} %, accuracy {:.1} % ({basis})", p.cra_36, p.accuracy)
            });
            let src = |s: Option<Source>| match s {
                Some(Source::Paper) => "paper",
                Some(Source::Measured) => "measured",
                None => "–",
            };
            if md {
                writeln!(out, "- **{}**: {verdict}", c.name())?;
            } else {
                writeln!(out, "{}: {verdict}", c.name())?;
            }
            let ind = if md { "  - " } else { "    " };
            for ch in &c.checks {
                writeln!(out, "{ind}[{}] {}: {}", if ch.passed { "pass" } else { "FAIL" }, ch.rule, ch.detail)?;
            }
            if let Some(p) = pred {
                writeln!(out, "{ind}{p}")?;
            }
            writeln!(
                out,
                "{ind}sources: time {}, memory {}, accuracy {}",
                src(c.sources.time),
                src(c.sources.memory),
                src(c.sources.accuracy)
            )?;
            for w in &c.warnings {
                writeln!(out, "{ind}warning ({}): {}", w.id, w.message)?;
            }
        }
    }
    Ok(())
}

fn write_table(header: &[&str], rows: &[Vec<String>], md: bool, out: &mut dyn Write) -> Result<()> {
    if md {
        writeln!(out, "| {} |", header.join(" | "))?;
        writeln!(out, "|{}|", header.iter().map(|_| "---").collect::<Vec<_>>().join("|"))?;
        for r in rows {
            writeln!(out, "| {} |", r.join(" | "))?;
        }
        return Ok(());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                // Text columns left-aligned, numbers right-aligned.
                if i == 1 || i == 2 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes() {
        assert_eq!("32x32".parse::<InputSize>(), Ok(InputSize::square(32)));
        assert_eq!("64X64".parse::<InputSize>(), Ok(InputSize::square(64)));
        assert_eq!("32×48".parse::<InputSize>(), Ok(InputSize { height: 32, width: 48 }));
        assert_eq!("32".parse::<InputSize>(), Ok(InputSize::square(32)));
        for bad in ["", "0x32", "32x", "x", "-32x32", "32x32x3", "a x b", "+32x32"] {
            assert!(bad.parse::<InputSize>().is_err(), "{bad}");
        }
    }

    #[derive(clap::Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        args: RecommendArgs,
    }

    #[test]
    fn verify_cli() {
        use clap::{CommandFactory, Parser};
        Wrapper::command().debug_assert();
        let w = Wrapper::try_parse_from(["x", "--mem", "8 GB", "--hours", "1h30m", "--dataset", "tinyimagenet", "--speed-vs-a100", "2"])
            .unwrap();
        assert_eq!(w.args.mem, ByteSize(8_000_000_000));
        assert_eq!(w.args.hours, Hours(1.5));
        assert_eq!(w.args.dataset, Dataset::TinyImageNet);
        assert_eq!((w.args.speed_vs_a100, w.args.batch, w.args.top), (2.0, 256, 5));
        assert_eq!(w.args.knowledge, KnowledgeMode::Auto);
        let err = Wrapper::try_parse_from(["x", "--mem", "8 apples", "--hours", "2"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("unknown unit"), "{err}");
        assert!(Wrapper::try_parse_from(["x", "--mem", "8GB"]).is_err(), "--hours is required");
    }

    #[test]
    fn speeds() {
        assert_eq!(parse_speed("2.5"), Ok(2.5));
        assert_eq!(parse_speed("0.5x"), Ok(0.5));
        for bad in ["0", "-1", "fast", "inf", ""] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }
}
