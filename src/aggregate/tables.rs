//! Tables: the derived tables of an aggregate (results, settings, Table 2, budgets, cost, ours
//! vs the paper) joined from the raw frames of [`mod@super::collect`], and the paper's numbers as
//! frames ([`Paper`]). Column names and units are in the module doc of [`super`].

use super::{Raw, Tables, RESULT_COLUMNS};
use crate::nn::convnet::ModelSize;
use crate::nn::registry::Method;
use anyhow::{Context, Result};
use polars::prelude::*;

/// Images per training epoch by input side: the paper's datasets ([`Dataset::train_images`]: CIFAR
/// 32×32: 50 000; Tiny ImageNet 64×64: 100 000). Epoch seconds of other input sides are left empty.
///
/// [`Dataset::train_images`]: crate::paper::Dataset::train_images
fn epoch_images() -> [(i64, i64); 2] {
    use crate::paper::Dataset;
    [Dataset::Cifar10, Dataset::TinyImageNet].map(|d| (d.input_side() as i64, d.train_images() as i64))
}

/// The paper's numbers (data/paper/, see its README), as frames.
pub struct Paper {
    /// results.csv: dataset, method, size, kernel, budget_hours, paper_lr, paper_wd, paper_accuracy,
    /// paper_cra_36, note (prefixed so they never collide with our columns in a join).
    pub results: DataFrame,
    /// Figure 2 points (source `fig2_digitised`): method, size, paper_seconds_per_epoch.
    pub time: DataFrame,
    /// Figure 4 top: method, size, peak_train_memory_gb.
    pub train_memory: DataFrame,
    /// Uncertain inference memory: method, size, infer_memory_mb.
    pub infer_memory: DataFrame,
    /// Figure 1: method and the six scores.
    pub radar: DataFrame,
    /// cra_all_radii_cifar10_24h.csv (the authors' CIFAR-10 24 h run logs): dataset (`cifar10`),
    /// method, size, kernel, paper_cra_72, paper_cra_108, paper_cra_255.
    pub all_radii: DataFrame,
    /// SHA-256 over the files read (part of the aggregate key).
    pub checksum: String,
}

impl Paper {
    /// The shipped tables ([`crate::paper::CSV_FILES`], embedded in the binary), as frames.
    pub fn load() -> Result<Paper> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut read = |name: &str| -> Result<DataFrame> {
            let text = crate::paper::csv_text(name)?;
            hasher.update(text.as_bytes());
            CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(None)
                .into_reader_with_file_handle(std::io::Cursor::new(text.as_bytes()))
                .finish()
                .with_context(|| format!("reading the shipped data/paper/{name}"))
        };
        let results = read("results.csv")?
            .lazy()
            .select([
                col("dataset"),
                col("method"),
                col("size"),
                col("kernel").cast(DataType::Int64),
                col("budget_hours").cast(DataType::Float64),
                col("lr").cast(DataType::Float64).alias("paper_lr"),
                col("wd").cast(DataType::Float64).alias("paper_wd"),
                col("accuracy").cast(DataType::Float64).alias("paper_accuracy"),
                col("cra_36").cast(DataType::Float64).alias("paper_cra_36"),
                col("note").cast(DataType::String),
            ])
            .collect()?;
        let time = read("train_time_per_epoch.csv")?
            .lazy()
            .filter(col("source").eq(lit("fig2_digitised")))
            .select([
                col("method"),
                col("size"),
                col("seconds_per_epoch").cast(DataType::Float64).alias("paper_seconds_per_epoch"),
            ])
            .collect()?;
        let train_memory = read("train_memory_gb.csv")?
            .lazy()
            .select([col("method"), col("size"), col("peak_train_memory_gb").cast(DataType::Float64)])
            .collect()?;
        let infer_memory = read("infer_memory_mb_uncertain.csv")?
            .lazy()
            .select([col("method"), col("size"), col("infer_memory_mb").cast(DataType::Float64)])
            .collect()?;
        let radar = read("radar_scores.csv")?;
        let all_radii = read("cra_all_radii_cifar10_24h.csv")?
            .lazy()
            .select([
                lit("cifar10").alias("dataset"),
                col("method"),
                col("size"),
                col("kernel").cast(DataType::Int64),
                col("cra_72").cast(DataType::Float64).alias("paper_cra_72"),
                col("cra_108").cast(DataType::Float64).alias("paper_cra_108"),
                col("cra_255").cast(DataType::Float64).alias("paper_cra_255"),
            ])
            .collect()?;
        let checksum = hex::encode(hasher.finalize());
        Ok(Paper { results, time, train_memory, infer_memory, radar, all_radii, checksum })
    }
}

/// Method and size order (registry order, XS…L) as join tables, so sorting is by the paper's order
/// and not alphabetical.
pub(super) fn order_frames() -> Result<(DataFrame, DataFrame)> {
    let methods = df!(
        "method" => Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "method_order" => (0..Method::ALL.len() as i64).collect::<Vec<_>>(),
        "lipschitz" => Method::ALL.iter().map(|m| m.is_lipschitz()).collect::<Vec<_>>()
    )?;
    let sizes = df!(
        "size" => ModelSize::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "size_order" => (0..ModelSize::ALL.len() as i64).collect::<Vec<_>>()
    )?;
    Ok((methods, sizes))
}

fn left(keys: &[&str]) -> (Vec<Expr>, Vec<Expr>, JoinArgs) {
    let k: Vec<Expr> = keys.iter().map(|c| col(*c)).collect();
    (k.clone(), k, JoinArgs::new(JoinType::Left))
}

pub(super) fn join_left(a: LazyFrame, b: LazyFrame, keys: &[&str]) -> LazyFrame {
    let (l, r, args) = left(keys);
    a.join(b, l, r, args)
}

/// Sorts by dataset (when present), kernel, method order, size order, then `extra`.
fn in_paper_order(lf: LazyFrame, first: &[&str]) -> Result<LazyFrame> {
    let (methods, sizes) = order_frames()?;
    let lf = join_left(lf, methods.lazy().select([col("method"), col("method_order")]), &["method"]);
    let lf = join_left(lf, sizes.lazy(), &["size"]);
    let mut by: Vec<PlSmallStr> = first.iter().map(|c| PlSmallStr::from(*c)).collect();
    by.push("method_order".into());
    by.push("size_order".into());
    Ok(lf
        .sort(by, SortMultipleOptions::default().with_nulls_last(true).with_maintain_order(true))
        .drop([col("method_order"), col("size_order")]))
}

const JOIN_MEASURE: [&str; 6] = ["method", "size", "kernel", "classes", "input_side", "batch_size"];

/// Builds every derived table from the raw frames and the paper's numbers.
pub fn derive(raw: Raw, paper: &Paper) -> Result<Tables> {
    let measures = newest_measures(&raw.measures)?;
    let results = results_table(&raw, measures.clone())?;
    let settings = settings_table(&results)?;
    let table2 = table2(&settings)?;
    let budgets = budgets_table(&settings)?;
    let cost = cost_table(measures)?;
    let vs_paper = vs_paper(&settings, &cost, paper)?;
    let radar = super::radar::radar_with_paper(&settings, &cost, paper)?;
    let imported = imported_table(&raw.imported, paper)?;
    Ok(Tables {
        results,
        imported,
        settings,
        table2,
        budgets,
        cost,
        vs_paper,
        radar,
        curves: raw.curves,
        provenance: raw.provenance,
    })
}

/// Measures: the newest per join key ([`JOIN_MEASURE`]), with seconds per epoch from the median
/// batch time ([`epoch_images`]).
fn newest_measures(measures: &DataFrame) -> Result<LazyFrame> {
    let sides = epoch_images();
    let epoch_images = df!(
        "input_side" => sides.iter().map(|e| e.0).collect::<Vec<_>>(),
        "epoch_images" => sides.iter().map(|e| e.1).collect::<Vec<_>>()
    )?;
    let newest = measures
        .clone()
        .lazy()
        .sort(["created"], SortMultipleOptions::default().with_order_descending(true))
        .unique_stable(Some(JOIN_MEASURE.iter().map(|c| PlSmallStr::from(*c)).collect()), UniqueKeepStrategy::First);
    Ok(join_left(newest, epoch_images.lazy(), &["input_side"]).with_columns([((col("epoch_images")
        .cast(DataType::Float64)
        / col("batch_size").cast(DataType::Float64))
    .ceil()
        * col("train_ms_per_batch")
        / lit(1000.0))
    .alias("seconds_per_epoch")]))
}

/// The measure columns a run takes from its measurement, renamed `m_<column>` for the join.
const MEASURE_COLUMNS: [&str; 12] = [
    "key",
    "device",
    "status",
    "error",
    "parameters",
    "train_ms_per_batch",
    "infer_ms_per_batch",
    "train_peak_bytes",
    "infer_peak_bytes",
    "memory_source",
    "seconds_per_epoch",
    "precision",
];

/// `results`: every run joined to its measurement, then every measurement no run used, in the
/// paper's order (train rows first).
fn results_table(raw: &Raw, measures: LazyFrame) -> Result<DataFrame> {
    let mut msel: Vec<Expr> = JOIN_MEASURE.iter().map(|c| col(*c)).collect();
    msel.extend(MEASURE_COLUMNS.iter().map(|c| col(*c).alias(format!("m_{c}"))));
    let measure_sel = measures.clone().select(msel);
    let runs = join_left(raw.runs.clone().lazy(), measure_sel.clone(), &JOIN_MEASURE).with_columns([
        when(col("run_reason").is_not_null()).then(col("run_reason")).otherwise(col("m_error")).alias("error"),
        col("m_parameters").alias("parameters"),
        col("m_train_ms_per_batch").alias("train_ms_per_batch"),
        col("m_infer_ms_per_batch").alias("infer_ms_per_batch"),
        col("m_train_peak_bytes").alias("train_peak_bytes"),
        col("m_infer_peak_bytes").alias("infer_peak_bytes"),
        col("m_memory_source").alias("memory_source"),
        col("m_seconds_per_epoch").alias("seconds_per_epoch"),
        col("device").fill_null(col("m_device")).alias("device"),
    ]);
    // Measurements no run used (an out-of-memory model never trains): their own rows.
    let used_measures = join_left(raw.runs.clone().lazy(), measure_sel, &JOIN_MEASURE)
        .select([col("m_key").alias("key"), col("key").alias("used_by")])
        .filter(col("key").is_not_null());
    let unused = join_left(measures, used_measures, &["key"]).filter(col("used_by").is_null());
    // A measurement holds for every prepared dataset of its shape (one row each; none: no dataset).
    let mut unused = join_left(unused, raw.datasets.clone().lazy(), &["input_side", "classes"])
        .with_columns([lit("measure").alias("stage"), lit(NULL).cast(DataType::Float64).alias("budget_hours")]);
    let mut results = result_columns(runs, &RESULT_COLUMNS).collect()?;
    // A measurement row has the columns its frame has (no epochs, seed or certificate).
    let have = unused.collect_schema()?;
    let measure_columns: Vec<&str> = RESULT_COLUMNS.into_iter().filter(|c| have.contains(c)).collect();
    results.vstack_mut(&result_columns(unused, &measure_columns).collect()?)?;
    // Imported models: no training, no measurement.
    let imported_columns: Vec<&str> = RESULT_COLUMNS.into_iter().filter(|c| *c == "error" || raw.imported.column(c).is_ok()).collect();
    let imported = raw.imported.clone().lazy().with_columns([col("run_reason").alias("error")]);
    results.vstack_mut(&result_columns(imported, &imported_columns).collect()?)?;
    Ok(in_paper_order(results.lazy(), &["stage", "dataset", "kernel", "budget_hours"])?
        .sort(["stage"], SortMultipleOptions::default().with_order_descending(true).with_maintain_order(true))
        .collect()?)
}

/// [`RESULT_COLUMNS`] of `lf`, typed ([`typed_dtype`]); those not in `have` are null.
fn result_columns(lf: LazyFrame, have: &[&str]) -> LazyFrame {
    lf.select(
        RESULT_COLUMNS
            .iter()
            .map(|c| {
                if have.contains(c) {
                    col(*c).cast(typed_dtype(c))
                } else {
                    lit(NULL).cast(typed_dtype(c)).alias(*c)
                }
            })
            .collect::<Vec<_>>(),
    )
}

/// The columns of `imported`, in order.
pub const IMPORTED_COLUMNS: [&str; 39] = [
    "dataset", "method", "size", "kernel", "source_file", "test_data", "samples", "status", "certificate",
    "attack_flips", "accuracy", "paper_accuracy", "cra_36", "cra_pw_36", "attack_cra_36", "era_36", "paper_cra_36",
    "cra_72", "cra_pw_72", "attack_cra_72", "era_72", "paper_cra_72", "cra_108", "cra_pw_108", "attack_cra_108",
    "era_108", "paper_cra_108", "cra_255", "cra_pw_255", "attack_cra_255", "era_255", "paper_cra_255",
    "lipschitz_bound", "paper_note", "model_sha256", "source_sha256", "key", "certify_key", "device",
];

/// `imported`: every certificate of an imported model ([`Raw::imported`]) beside the paper's
/// published numbers for the same (dataset, method, size, kernel) at the 24 h budget: accuracy
/// and CRA 36/255 from Tables 9–11 (`results.csv`), CRA 72/255, 108/255 and 1 from the authors'
/// CIFAR-10 run logs (`cra_all_radii_cifar10_24h.csv`; none for the other datasets). A model
/// imported without `--dataset` has no paper numbers. Columns [`IMPORTED_COLUMNS`], percent as
/// in `results`.
pub fn imported_table(imported: &DataFrame, paper: &Paper) -> Result<DataFrame> {
    let keys = ["dataset", "method", "size", "kernel"];
    let at_24h = paper.results.clone().lazy().filter(col("budget_hours").eq(lit(24.0))).select([
        col("dataset"),
        col("method"),
        col("size"),
        col("kernel"),
        col("paper_accuracy"),
        col("paper_cra_36"),
        col("note").alias("paper_note"),
    ]);
    let lf = join_left(imported.clone().lazy(), at_24h, &keys);
    let lf = join_left(lf, paper.all_radii.clone().lazy(), &keys);
    let lf = lf.select(IMPORTED_COLUMNS.iter().map(|c| col(*c)).collect::<Vec<_>>());
    Ok(in_paper_order(lf, &["dataset"])?.collect()?)
}

/// `cost`: one row per (newest) measurement, in the paper's order.
fn cost_table(measures: LazyFrame) -> Result<DataFrame> {
    Ok(in_paper_order(
        measures.select([
            col("method"),
            col("size"),
            col("kernel"),
            col("input_side"),
            col("batch_size"),
            col("device_kind"),
            col("device"),
            col("status"),
            col("parameters"),
            col("train_ms_per_batch"),
            col("seconds_per_epoch"),
            col("infer_ms_per_batch"),
            col("peak_train_gb"),
            col("peak_infer_mb"),
            col("memory_source"),
        ]),
        &["kernel", "input_side", "batch_size", "device_kind"],
    )?
    .collect()?)
}

pub(crate) fn typed_dtype(name: &str) -> DataType {
    match name {
        "key" | "stage" | "dataset" | "method" | "size" | "status" | "error" | "device" | "precision"
        | "memory_source" | "certificate" | "model_sha256" => {
            DataType::String
        }
        "kernel" | "classes" | "input_side" | "batch_size" | "epochs" | "seed" | "parameters"
        | "attempts" | "train_peak_bytes" | "infer_peak_bytes" | "attack_flips" => DataType::Int64,
        _ => DataType::Float64,
    }
}

/// Mean over the ok runs of a setting, or over all its runs when none is ok.
fn ok_mean(c: &str) -> Expr {
    let ok = col("status").eq(lit("ok"));
    when(ok.clone().any(true)).then(col(c).filter(ok).mean()).otherwise(col(c).mean()).alias(c)
}

/// Sample standard deviation (n − 1) over the same runs as [`ok_mean`], as `<c>_std`: over seeds
/// when a pipeline lists several; null with one run.
fn ok_std(c: &str) -> Expr {
    let ok = col("status").eq(lit("ok"));
    when(ok.clone().any(true)).then(col(c).filter(ok).std(1)).otherwise(col(c).std(1)).alias(format!("{c}_std"))
}

/// The columns a setting averages over its runs (seeds): mean and standard deviation of each.
pub const SEED_AVERAGED: [&str; 17] = [
    "accuracy", "cra_36", "cra_72", "cra_108", "cra_255", "cra_pw_36", "cra_pw_72", "cra_pw_108", "cra_pw_255", "era_36",
    "era_72", "era_108", "era_255", "attack_cra_36", "attack_cra_72", "attack_cra_108", "attack_cra_255",
];

const SETTING: [&str; 6] = ["dataset", "kernel", "input_side", "budget_hours", "method", "size"];

/// `settings`: one row per (dataset, kernel, input side, budget, method, size) of the train runs.
pub fn settings_table(results: &DataFrame) -> Result<DataFrame> {
    let keys: Vec<Expr> = SETTING.iter().map(|c| col(*c)).collect();
    let lf = results
        .clone()
        .lazy()
        .filter(col("stage").eq(lit("train")))
        .with_columns([col("budget_hours").fill_null(lit(0.0))])
        .group_by_stable(keys)
        .agg([
            len().cast(DataType::Int64).alias("runs"),
            col("status").eq(lit("ok")).sum().cast(DataType::Int64).alias("ok_runs"),
            // "ok" when any run is; otherwise the first run's status (diverged, uncertified, …).
            when(col("status").eq(lit("ok")).any(true))
                .then(lit("ok"))
                .otherwise(col("status").first())
                .alias("status"),
            col("lr").first(),
            col("wd").first(),
            col("epochs").first(),
            col("lipschitz_bound").max(),
            col("train_seconds_per_epoch").mean(),
            col("seconds_per_epoch").first(),
            col("parameters").first(),
            // The worst certificate of the setting's runs: one unsound run marks it.
            when(col("certificate").eq(lit("unsound")).any(true))
                .then(lit("unsound"))
                .otherwise(col("certificate").first())
                .alias("certificate"),
            col("attack_flips").sum(),
        ]
        .into_iter()
        .chain(SEED_AVERAGED.iter().flat_map(|c| [ok_mean(c), ok_std(c)]))
        .collect::<Vec<_>>());
    Ok(in_paper_order(lf, &["dataset", "kernel", "budget_hours"])?.collect()?)
}

/// The settings at each (dataset, kernel)'s largest budget: the paper's Table 2 is at 24 h.
pub(super) fn at_largest_budget(settings: &DataFrame) -> LazyFrame {
    settings
        .clone()
        .lazy()
        .filter(col("budget_hours").eq(col("budget_hours").max().over([col("dataset"), col("kernel")])))
}

/// The paper's Table 2 layout (see the module doc).
pub fn table2(settings: &DataFrame) -> Result<DataFrame> {
    let long = at_largest_budget(settings)
        .with_columns([col("cra_36")
            .eq(col("cra_36").filter(col("status").eq(lit("ok"))).max().over([
                col("dataset"),
                col("kernel"),
                col("method"),
            ]))
            .alias("is_best")])
        .with_columns([when(col("status").neq(lit("ok")))
            .then(col("status"))
            .when(col("certificate").eq(lit("not certifiable")))
            .then(lit("not certifiable"))
            .when(col("certificate").eq(lit("unsound")))
            .then(lit("unsound"))
            .when(col("is_best").fill_null(lit(false)))
            .then(lit("best"))
            .otherwise(lit(""))
            .alias("mark")])
        .collect()?;
    let datasets = distinct_strings(&long, "dataset")?;
    let budget_of =
        long.clone().lazy().group_by_stable([col("dataset")]).agg([col("budget_hours").first()]).collect()?;
    let wide = polars::prelude::pivot::pivot_stable(
        &long,
        ["dataset"],
        Some(["kernel", "method", "size"]),
        Some(["runs", "accuracy", "accuracy_std", "cra_36", "cra_36_std", "mark"]),
        false,
        None,
        Some("|"),
    )?;
    // Columns grouped per dataset: accuracy, CRA, mark; named "<dataset> <budget>h …".
    let mut sel = vec![col("kernel"), col("method"), col("size")];
    for d in &datasets {
        let b = budget_of
            .clone()
            .lazy()
            .filter(col("dataset").eq(lit(d.clone())))
            .collect()?
            .column("budget_hours")?
            .cast(&DataType::Float64)?
            .f64()?
            .get(0)
            .unwrap_or(0.0);
        let label = if b > 0.0 { format!("{d} {b}h") } else { format!("{d} fixed epochs") };
        for (v, name) in [
            ("runs", "n"),
            ("accuracy", "acc %"),
            ("accuracy_std", "acc % std"),
            ("cra_36", "CRA 36 %"),
            ("cra_36_std", "CRA 36 % std"),
            ("mark", "mark"),
        ] {
            sel.push(col(format!("{v}|{d}")).alias(format!("{label} {name}")));
        }
    }
    Ok(in_paper_order(wide.lazy().select(sel), &["kernel"])?.collect()?)
}

fn distinct_strings(df: &DataFrame, c: &str) -> Result<Vec<String>> {
    let u = df.clone().lazy().select([col(c)]).unique_stable(None, UniqueKeepStrategy::First).collect()?;
    Ok(u.column(c)?.str()?.into_iter().flatten().map(str::to_string).collect())
}

/// Tables 9–11: per budget the accuracy and CRA, with the lr and wd of each budget's run.
pub fn budgets_table(settings: &DataFrame) -> Result<DataFrame> {
    let long = settings.clone().lazy().with_columns([col("budget_hours").cast(DataType::String)]).collect()?;
    // The pivot names its columns with polars' own spelling of the budget ("2.0"), so the labels
    // are taken from the cast column itself, in numeric order.
    let budgets: Vec<String> = {
        let mut b: Vec<String> = long.column("budget_hours")?.str()?.into_iter().flatten().map(str::to_string).collect();
        b.sort_by(|x, y| x.parse::<f64>().unwrap_or(0.0).total_cmp(&y.parse::<f64>().unwrap_or(0.0)));
        b.dedup();
        b
    };
    let wide = polars::prelude::pivot::pivot_stable(
        &long,
        ["budget_hours"],
        Some(["dataset", "kernel", "method", "size"]),
        Some(["lr", "wd", "runs", "accuracy", "accuracy_std", "cra_36", "cra_36_std", "status"]),
        false,
        None,
        Some("|"),
    )?;
    let mut sel = vec![col("dataset"), col("kernel"), col("method"), col("size")];
    for b in &budgets {
        let hours: f64 = b.parse().unwrap_or(0.0);
        let label = if hours == 0.0 { "fixed".to_string() } else { format!("{hours}h") };
        for (v, name) in
            [("lr", "lr"), ("wd", "wd"), ("runs", "n"), ("accuracy", "acc %"), ("accuracy_std", "acc % std"), ("cra_36", "CRA 36 %"), ("cra_36_std", "CRA 36 % std"), ("status", "status")]
        {
            sel.push(col(format!("{v}|{b}")).alias(format!("{label} {name}")));
        }
    }
    Ok(in_paper_order(wide.lazy().select(sel), &["dataset", "kernel"])?.collect()?)
}

/// Ours beside the paper's numbers (long: one row per quantity and setting).
pub fn vs_paper(settings: &DataFrame, cost: &DataFrame, paper: &Paper) -> Result<DataFrame> {
    let out_cols = |quantity: &str, ours: &str, paper_col: &str| -> Vec<Expr> {
        vec![
            col("dataset").cast(DataType::String),
            col("method"),
            col("size"),
            col("kernel").cast(DataType::Int64),
            col("budget_hours").cast(DataType::Float64),
            lit(quantity).alias("quantity"),
            col(ours).cast(DataType::Float64).alias("ours"),
            col(paper_col).cast(DataType::Float64).alias("paper"),
            col("status").cast(DataType::String).alias("our_status"),
            col("note").cast(DataType::String).alias("paper_note"),
        ]
    };
    let keys = ["dataset", "method", "size", "kernel", "budget_hours"];
    let (l, r, _) = left(&keys);
    let acc = settings.clone().lazy().join(paper.results.clone().lazy(), l, r, JoinArgs::new(JoinType::Inner));
    let mut parts = vec![
        acc.clone().select(out_cols("accuracy %", "accuracy", "paper_accuracy")),
        acc.select(out_cols("CRA 36/255 %", "cra_36", "paper_cra_36")),
    ];
    // Figures 2 and 4 are CIFAR (32×32) at batch 256 on the A100; compare our 32×32 measurements.
    let ours_cost = cost
        .clone()
        .lazy()
        .filter(col("input_side").eq(lit(32i64)).and(col("status").eq(lit("ok"))))
        .with_columns([lit("cifar (32×32)").alias("dataset"), lit(NULL).cast(DataType::Float64).alias("budget_hours")]);
    let inner = |a: LazyFrame, b: &DataFrame| {
        a.join(
            b.clone().lazy(),
            [col("method"), col("size")],
            [col("method"), col("size")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_columns([lit(NULL).cast(DataType::String).alias("note")])
    };
    parts.push(inner(ours_cost.clone(), &paper.time).select(out_cols(
        "seconds per epoch",
        "seconds_per_epoch",
        "paper_seconds_per_epoch",
    )));
    parts.push(inner(ours_cost.clone(), &paper.train_memory).select(out_cols(
        "peak training memory GB",
        "peak_train_gb",
        "peak_train_memory_gb",
    )));
    parts.push(inner(ours_cost, &paper.infer_memory).select(out_cols(
        "peak inference memory MB (paper value uncertain)",
        "peak_infer_mb",
        "infer_memory_mb",
    )));
    let all = concat(parts, UnionArgs::default())?
        .filter(col("ours").is_not_null().and(col("paper").is_not_null()))
        .with_columns([(col("ours") - col("paper")).alias("diff"), (col("ours") / col("paper")).alias("ratio")]);
    Ok(in_paper_order(all, &["quantity", "dataset", "kernel", "budget_hours"])?.collect()?)
}


#[cfg(test)]
mod tests {
    /// The training set sizes of CIFAR-10/100 (32×32) and Tiny ImageNet (64×64), as published.
    #[test]
    fn epoch_images_are_the_paper_datasets_training_sets_by_input_side() {
        assert_eq!(super::epoch_images(), [(32, 50_000), (64, 100_000)]);
    }
}
