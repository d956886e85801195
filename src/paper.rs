//! The paper's published numbers (`data/paper/*.csv`, described in `data/paper/README.md`), as
//! typed rows. The CSVs are embedded in the binary with `include_str!`, so every stage that needs
//! the paper's numbers (recommend, aggregate, report) gets the same data from any working folder.
//!
//! Source: Prach, Brau, Buttazzo, Lampert, "1-Lipschitz Layers Compared", CVPR 2024
//! (arXiv:2311.16833 v1 table numbering). Percentages are kept exactly as printed (one decimal,
//! except `cra_all_radii_cifar10_24h.csv` with two). Empty cells become `None`; the row's `note`
//! says why. Rows whose note starts with "diverged" are chance-level results of diverged runs:
//! [`ResultRow::diverged`] tells them apart, and consumers must not treat them as quality.
//!
//! The files are read with the `csv` crate ([`parse_table`]); every error names
//! `data/paper/FILE:LINE` and the column.

use crate::nn::{Method, ModelSize};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A dataset of the study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Cifar10,
    Cifar100,
    #[serde(rename = "tinyimagenet")]
    TinyImageNet,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Cifar10, Dataset::Cifar100, Dataset::TinyImageNet];

    /// The spelling used in the CSVs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
            Dataset::TinyImageNet => "tinyimagenet",
        }
    }

    /// Side of the square input images (reference-protocol §4.6).
    pub fn input_side(self) -> u32 {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => 32,
            Dataset::TinyImageNet => 64,
        }
    }

    /// Training images of the full dataset (CIFAR: 50 000; Tiny ImageNet: 100 000), the `N` of the
    /// paper's "time per epoch = batch time × ⌈N / batch size⌉" (Figure 2; data/paper/README.md).
    pub fn train_images(self) -> u64 {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => 50_000,
            Dataset::TinyImageNet => 100_000,
        }
    }

    /// CIFAR-10 and CIFAR-100 share the architecture and therefore Table 8's epoch budgets.
    pub fn kind(self) -> DatasetKind {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => DatasetKind::Cifar,
            Dataset::TinyImageNet => DatasetKind::TinyImageNet,
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == lower)
            .ok_or_else(|| anyhow::anyhow!("unknown dataset {s:?}; expected one of cifar10, cifar100, tinyimagenet"))
    }
}

impl clap::ValueEnum for Dataset {
    fn value_variants<'a>() -> &'a [Self] {
        &Dataset::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// `cifar` (CIFAR-10 and CIFAR-100, 32×32) or `tinyimagenet` (64×64): the `dataset_kind` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Cifar,
    #[serde(rename = "tinyimagenet")]
    TinyImageNet,
}

impl FromStr for DatasetKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cifar" => Ok(DatasetKind::Cifar),
            "tinyimagenet" => Ok(DatasetKind::TinyImageNet),
            _ => bail!("unknown dataset kind {s:?}; expected cifar or tinyimagenet"),
        }
    }
}

/// A method name in the paper's data: one of the registry's layers, or one of the two extra
/// baselines that appear only in appendix tables (BnB in Table 12, ECO in Table 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaperMethod {
    Layer(Method),
    BnB,
    Eco,
}

impl PaperMethod {
    pub fn layer(self) -> Option<Method> {
        match self {
            PaperMethod::Layer(m) => Some(m),
            _ => None,
        }
    }
}

impl fmt::Display for PaperMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaperMethod::Layer(m) => write!(f, "{m}"),
            PaperMethod::BnB => f.write_str("BnB"),
            PaperMethod::Eco => f.write_str("ECO"),
        }
    }
}

impl Serialize for PaperMethod {
    /// As the paper spells it (`"CPL"`, `"BnB"`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for PaperMethod {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "BnB" => Ok(PaperMethod::BnB),
            "ECO" => Ok(PaperMethod::Eco),
            other => Ok(PaperMethod::Layer(other.parse()?)),
        }
    }
}

/// One row of `results.csv`: Tables 9–12 (accuracy and CRA at ε = 36/255, in %).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResultRow {
    pub dataset: Dataset,
    pub method: PaperMethod,
    pub size: ModelSize,
    /// 3 (Tables 9–11) or 1 (Table 12).
    pub kernel: u32,
    /// 2, 10 or 24: labels of epoch budgets (Table 8 × 1, 5, 12), not wall-clock hours.
    pub budget_hours: u32,
    pub lr: f64,
    pub wd: f64,
    pub accuracy: f64,
    pub cra_36: f64,
    pub note: String,
}

impl ResultRow {
    /// A diverged run: its numbers are chance level, not a measure of the method.
    pub fn diverged(&self) -> bool {
        self.note.starts_with("diverged")
    }
}

/// One row of `epoch_budgets_2h.csv` (Table 8): epochs that fit in 2 h on the A100, batch 256.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochBudgetRow {
    pub dataset_kind: DatasetKind,
    pub method: PaperMethod,
    pub size: ModelSize,
    /// `None` for LOT-L (out of memory).
    pub epochs: Option<u32>,
    pub params_millions: Option<f64>,
    pub note: String,
}

/// Where a training time per epoch comes from (`source` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// Figure 2, digitised from the poster's vector graphics (CIFAR-10 only).
    Fig2Digitised,
    /// 7200 s / Table 8 epochs: an upper bound (Table 8 rounds down).
    DerivedFromTable8,
}

/// One row of `train_time_per_epoch.csv`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainTimeRow {
    pub method: PaperMethod,
    pub size: ModelSize,
    pub seconds_per_epoch: Option<f64>,
    pub source: TimeSource,
    pub dataset_kind: DatasetKind,
    pub note: String,
}

/// One row of `train_memory_gb.csv` (Figure 4 top: 32×32 inputs, batch 256, 10⁹ bytes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainMemoryRow {
    pub method: Method,
    pub size: ModelSize,
    pub peak_train_memory_gb: Option<f64>,
    pub note: String,
}

/// One row of `infer_memory_mb_uncertain.csv` (uncertain: a preliminary poster plot).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InferMemoryRow {
    pub method: Method,
    pub size: ModelSize,
    pub infer_memory_mb: Option<f64>,
    pub note: String,
}

/// One row of `radar_scores.csv` (Figure 1; 1 = worst, 5 = best; for time and memory, higher =
/// faster or leaner). A qualitative summary by the authors, not a measurement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RadarRow {
    pub method: Method,
    pub robust_accuracy: u8,
    pub accuracy: u8,
    pub training_time: u8,
    pub inference_time: u8,
    pub training_memory: u8,
    pub inference_memory: u8,
}

/// One row of `cra_all_radii_cifar10_24h.csv` (authors' run logs, two decimals).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllRadiiRow {
    pub method: PaperMethod,
    pub size: ModelSize,
    pub kernel: u32,
    pub accuracy: Option<f64>,
    pub cra_36: Option<f64>,
    pub cra_72: Option<f64>,
    pub cra_108: Option<f64>,
    pub cra_255: Option<f64>,
    pub epochs: Option<u32>,
    pub note: String,
}

/// All shipped tables.
#[derive(Clone, Debug, Serialize)]
pub struct PaperData {
    pub results: Vec<ResultRow>,
    pub epoch_budgets_2h: Vec<EpochBudgetRow>,
    pub train_time_per_epoch: Vec<TrainTimeRow>,
    pub train_memory_gb: Vec<TrainMemoryRow>,
    pub infer_memory_mb_uncertain: Vec<InferMemoryRow>,
    pub radar_scores: Vec<RadarRow>,
    pub cra_all_radii_cifar10_24h: Vec<AllRadiiRow>,
}

/// The shipped CSVs by file name, the one source of the paper's numbers for every command
/// (recommend, budgets, aggregate, report), whatever the working folder.
pub const CSV_FILES: [(&str, &str); 7] = [
    ("results.csv", RESULTS),
    ("epoch_budgets_2h.csv", EPOCH_BUDGETS),
    ("train_time_per_epoch.csv", TRAIN_TIME),
    ("train_memory_gb.csv", TRAIN_MEMORY),
    ("infer_memory_mb_uncertain.csv", INFER_MEMORY),
    ("radar_scores.csv", RADAR),
    ("cra_all_radii_cifar10_24h.csv", ALL_RADII),
];

/// The text of a shipped CSV (`results.csv`, …; see [`CSV_FILES`]).
pub fn csv_text(file: &str) -> Result<&'static str> {
    CSV_FILES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, text)| *text)
        .with_context(|| format!("internal error: no shipped paper table `data/paper/{file}`"))
}

const RESULTS: &str = include_str!("../data/paper/results.csv");
const EPOCH_BUDGETS: &str = include_str!("../data/paper/epoch_budgets_2h.csv");
const TRAIN_TIME: &str = include_str!("../data/paper/train_time_per_epoch.csv");
const TRAIN_MEMORY: &str = include_str!("../data/paper/train_memory_gb.csv");
const INFER_MEMORY: &str = include_str!("../data/paper/infer_memory_mb_uncertain.csv");
const RADAR: &str = include_str!("../data/paper/radar_scores.csv");
const ALL_RADII: &str = include_str!("../data/paper/cra_all_radii_cifar10_24h.csv");

impl PaperData {
    /// The embedded CSVs, parsed once per process (≈40 kB of text; the plan checks, budgets and the
    /// price of a 2,000-task plan ask thousands of times). An error here means a shipped file was
    /// edited into an invalid state, and it names the file and line.
    pub fn shipped() -> Result<&'static PaperData> {
        static PARSED: std::sync::OnceLock<PaperData> = std::sync::OnceLock::new();
        if let Some(data) = PARSED.get() {
            return Ok(data);
        }
        let data = PaperData::parse_shipped()?;
        Ok(PARSED.get_or_init(|| data))
    }

    /// One declarative column mapping per shipped file: long because it is a table, not logic.
    fn parse_shipped() -> Result<PaperData> {
        Ok(PaperData {
            results: parse_table("results.csv", RESULTS, |r| {
                Ok(ResultRow {
                    dataset: r.parse("dataset")?,
                    method: r.parse("method")?,
                    size: r.parse("size")?,
                    kernel: r.parse("kernel")?,
                    budget_hours: r.parse("budget_hours")?,
                    lr: r.parse("lr")?,
                    wd: r.parse("wd")?,
                    accuracy: r.parse("accuracy")?,
                    cra_36: r.parse("cra_36")?,
                    note: r.get("note")?.to_string(),
                })
            })?,
            epoch_budgets_2h: parse_table("epoch_budgets_2h.csv", EPOCH_BUDGETS, |r| {
                Ok(EpochBudgetRow {
                    dataset_kind: r.parse("dataset_kind")?,
                    method: r.parse("method")?,
                    size: r.parse("size")?,
                    epochs: r.parse_opt("epochs")?,
                    params_millions: r.parse_opt("params_millions")?,
                    note: r.get("note")?.to_string(),
                })
            })?,
            train_time_per_epoch: parse_table("train_time_per_epoch.csv", TRAIN_TIME, |r| {
                let source = match r.get("source")? {
                    "fig2_digitised" => TimeSource::Fig2Digitised,
                    s if s.starts_with("derived_from_table8") => TimeSource::DerivedFromTable8,
                    s => bail!("unknown source {s:?}"),
                };
                Ok(TrainTimeRow {
                    method: r.parse("method")?,
                    size: r.parse("size")?,
                    seconds_per_epoch: r.parse_opt("seconds_per_epoch")?,
                    source,
                    dataset_kind: r.parse("dataset_kind")?,
                    note: r.get("note")?.to_string(),
                })
            })?,
            train_memory_gb: parse_table("train_memory_gb.csv", TRAIN_MEMORY, |r| {
                Ok(TrainMemoryRow {
                    method: r.parse("method")?,
                    size: r.parse("size")?,
                    peak_train_memory_gb: r.parse_opt("peak_train_memory_gb")?,
                    note: r.get("note")?.to_string(),
                })
            })?,
            infer_memory_mb_uncertain: parse_table("infer_memory_mb_uncertain.csv", INFER_MEMORY, |r| {
                Ok(InferMemoryRow {
                    method: r.parse("method")?,
                    size: r.parse("size")?,
                    infer_memory_mb: r.parse_opt("infer_memory_mb")?,
                    note: r.get("note")?.to_string(),
                })
            })?,
            radar_scores: parse_table("radar_scores.csv", RADAR, |r| {
                Ok(RadarRow {
                    method: r.parse("method")?,
                    robust_accuracy: r.parse("robust_accuracy")?,
                    accuracy: r.parse("accuracy")?,
                    training_time: r.parse("training_time")?,
                    inference_time: r.parse("inference_time")?,
                    training_memory: r.parse("training_memory")?,
                    inference_memory: r.parse("inference_memory")?,
                })
            })?,
            cra_all_radii_cifar10_24h: parse_table("cra_all_radii_cifar10_24h.csv", ALL_RADII, |r| {
                Ok(AllRadiiRow {
                    method: r.parse("method")?,
                    size: r.parse("size")?,
                    kernel: r.parse("kernel")?,
                    accuracy: r.parse_opt("accuracy")?,
                    cra_36: r.parse_opt("cra_36")?,
                    cra_72: r.parse_opt("cra_72")?,
                    cra_108: r.parse_opt("cra_108")?,
                    cra_255: r.parse_opt("cra_255")?,
                    epochs: r.parse_opt("epochs")?,
                    note: r.get("note")?.to_string(),
                })
            })?,
        })
    }
}

/// One data row of a CSV, with the header for lookups by column name.
pub struct Record<'a> {
    header: &'a HashMap<String, usize>,
    fields: csv::StringRecord,
}

impl Record<'_> {
    /// The raw text of a column (trimmed); an error if the file has no such column.
    pub fn get(&self, column: &str) -> Result<&str> {
        let i = *self.header.get(column).with_context(|| format!("missing column {column:?}"))?;
        Ok(self.fields.get(i).map(|s| s.trim()).unwrap_or(""))
    }

    /// A required value.
    pub fn parse<T: FromStr>(&self, column: &str) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        let raw = self.get(column)?;
        if raw.is_empty() {
            bail!("column {column:?} is empty");
        }
        raw.parse().map_err(|e| anyhow::anyhow!("column {column:?}: {raw:?}: {e}"))
    }

    /// An optional value: an empty cell is `None`.
    pub fn parse_opt<T: FromStr>(&self, column: &str) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        if self.get(column)?.is_empty() {
            Ok(None)
        } else {
            self.parse(column).map(Some)
        }
    }

    /// Whether the file has this column.
    pub fn has(&self, column: &str) -> bool {
        self.header.contains_key(column)
    }
}

/// The trimmed column names of a CSV text's header row (a leading byte-order mark is ignored).
/// `name` is used in error messages (`name:1: …`).
pub fn csv_header(name: &str, text: &str) -> Result<Vec<String>> {
    let mut reader = csv_reader(text);
    let header = reader.headers().with_context(|| format!("{name}:1"))?;
    Ok(header.iter().map(|h| h.trim().to_string()).collect())
}

fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new().has_headers(true).from_reader(text.trim_start_matches('\u{feff}').as_bytes())
}

/// Parses a CSV text with a header row (RFC 4180 quoting, read by the `csv` crate), calling `row`
/// for each data record. `name` is used in error messages (`name:LINE: …`); a record with another
/// field count than the header is an error. Blank lines are skipped.
pub fn parse_table<T>(name: &str, text: &str, mut row: impl FnMut(&Record) -> Result<T>) -> Result<Vec<T>> {
    if text.trim().is_empty() {
        bail!("{name}: the file is empty; expected a header row");
    }
    let header: HashMap<String, usize> = csv_header(name, text)?.into_iter().enumerate().map(|(i, h)| (h, i)).collect();
    let mut out = Vec::new();
    for fields in csv_reader(text).records() {
        let fields = fields.map_err(|e| match e.kind() {
            csv::ErrorKind::UnequalLengths { pos, expected_len, len } => anyhow::anyhow!(
                "{name}:{}: {len} fields, but the header has {expected_len}",
                pos.as_ref().map_or(0, |p| p.line())
            ),
            _ => anyhow::anyhow!("{name}: {e}"),
        })?;
        let line = fields.position().map_or(0, |p| p.line());
        let rec = Record { header: &header, fields };
        out.push(row(&rec).with_context(|| format!("{name}:{line}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tables_parse_with_the_documented_row_counts() {
        // Counts from data/paper/README.md.
        let p = PaperData::shipped().unwrap();
        assert_eq!(p.results.len(), 333);
        assert_eq!(p.results.iter().filter(|r| r.kernel == 3).count(), 243);
        assert_eq!(p.epoch_budgets_2h.len(), 64);
        assert_eq!(p.train_time_per_epoch.len(), 96);
        assert_eq!(p.train_memory_gb.len(), 32);
        assert_eq!(p.infer_memory_mb_uncertain.len(), 32);
        assert_eq!(p.infer_memory_mb_uncertain.iter().filter(|r| r.infer_memory_mb.is_some()).count(), 26);
        assert_eq!(p.radar_scores.len(), 7);
        assert_eq!(p.cra_all_radii_cifar10_24h.len(), 58);
    }

    #[test]
    fn spot_values_match_the_paper_tables() {
        let p = PaperData::shipped().unwrap();
        // Table 2: CIFAR-10 SOC-M 24 h = 76.9 / 66.3.
        let soc_m = p
            .results
            .iter()
            .find(|r| {
                r.dataset == Dataset::Cifar10
                    && r.method == PaperMethod::Layer(Method::Soc)
                    && r.size == ModelSize::M
                    && r.kernel == 3
                    && r.budget_hours == 24
            })
            .unwrap();
        assert_eq!((soc_m.accuracy, soc_m.cra_36), (76.9, 66.3));
        // Table 8: CIFAR CPL-M 522 epochs; LOT-L empty.
        let e = |m, s| {
            p.epoch_budgets_2h
                .iter()
                .find(|r| r.dataset_kind == DatasetKind::Cifar && r.method == PaperMethod::Layer(m) && r.size == s)
                .unwrap()
                .epochs
        };
        assert_eq!(e(Method::Cpl, ModelSize::M), Some(522));
        assert_eq!(e(Method::Lot, ModelSize::L), None);
        // Figure 4: BCOP-XS 0.852 GB.
        let bcop = p.train_memory_gb.iter().find(|r| r.method == Method::Bcop && r.size == ModelSize::XS).unwrap();
        assert_eq!(bcop.peak_train_memory_gb, Some(0.852));
        // Table 10: CIFAR-100 CPL-S 24 h diverged.
        let cpl_s = p
            .results
            .iter()
            .find(|r| r.dataset == Dataset::Cifar100 && r.method == PaperMethod::Layer(Method::Cpl) && r.size == ModelSize::S && r.budget_hours == 24 && r.kernel == 3)
            .unwrap();
        assert!(cpl_s.diverged());
    }

    #[test]
    fn csv_fields_with_quotes() {
        let rows = parse_table("q.csv", "w,x,y,z\na,\"b, c\",,\"d \"\"e\"\"\"\n", |r| {
            Ok(["w", "x", "y", "z"].map(|c| r.get(c).unwrap().to_string()))
        })
        .unwrap();
        assert_eq!(rows, vec![["a", "b, c", "", r#"d "e""#]]);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let err = parse_table("x.csv", "a,b\n1,2\n3,zz\n", |r| Ok(r.parse::<u32>("b")?)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("x.csv:3") && msg.contains("\"b\"") && msg.contains("zz"), "{msg}");
        let err = parse_table("x.csv", "a,b\n1\n", |r| Ok(r.parse::<u32>("a")?)).unwrap_err();
        assert!(format!("{err:#}").contains("x.csv:2"), "{err:#}");
    }
}
