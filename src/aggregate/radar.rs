//! Radar: the six Figure 1 scores computed from our data, beside the paper's published ones.

use super::tables::{at_largest_budget, join_left, order_frames, Paper};
use anyhow::Result;
use polars::prelude::*;

/// Time and memory overhead factor → radar score (1–5). The paper gives no formula for these
/// axes; these bins are ours. Applied to the paper's own Figure 2 numbers they reproduce its
/// training-time scores exactly (AOL 4, BCOP 2, CPL 5, Cayley 2, LOT 1, SLL 4, SOC 3).
pub const COST_SCORE_BINS: [(f64, i64); 4] = [(1.5, 5), (2.5, 4), (5.0, 3), (10.0, 2)];

/// The radar scores of Figure 1, computed from our data.
///
/// * Robust accuracy (`ra`) and accuracy (`a`), the paper's rule (§5.3): for each (dataset,
///   kernel), at its largest budget, rank every ok (method, size) of a 1-Lipschitz method by the
///   metric (ties share the better rank); count per method its top-1, top-3 and top-10
///   placements and sum them (a top-1 counts three times). The paper states no mapping from this
///   sum to 1–5, and its published scores are not a function of it (paper-results.md §6.8); we
///   use `score = 1 + round(4 · sum / max sum)`: no placement → 1, the best method → 5.
/// * Training time (`tt`), inference time (`it`), training memory (`tm`), inference memory
///   (`im`): per (size, kernel, input side, batch size, device kind) the cheapest method's value
///   is the reference; a method's factor is the mean of value / reference over its measured
///   settings; [`COST_SCORE_BINS`] map it to 5…2, anything larger to 1. A method that
///   ran out of memory anywhere scores 1 on all four axes ("does not fit").
///
/// Input: `settings` (columns dataset, kernel, budget_hours, method, size, status, accuracy,
/// cra_36) and `cost` (method, size, kernel, input_side, batch_size, device_kind, status,
/// train_ms_per_batch, infer_ms_per_batch, peak_train_gb, peak_infer_mb). Output: one row per
/// 1-Lipschitz method found in either, in registry order.
pub fn radar_scores(settings: &DataFrame, cost: &DataFrame) -> Result<DataFrame> {
    let (methods, _) = order_frames()?;
    let placements = placement_scores(settings, methods.clone().lazy().filter(col("lipschitz")).select([col("method")]));
    let factors = cost_scores(cost);
    let present = concat(
        [settings.clone().lazy().select([col("method")]), cost.clone().lazy().select([col("method")])],
        UnionArgs::default(),
    )?
    .unique_stable(None, UniqueKeepStrategy::First);
    let out = methods
        .lazy()
        .filter(col("lipschitz"))
        .join(present, [col("method")], [col("method")], JoinArgs::new(JoinType::Inner))
        .select([col("method"), col("method_order")]);
    let out = join_left(join_left(out, placements, &["method"]), factors, &["method"])
        .sort(["method_order"], SortMultipleOptions::default())
        .select(RADAR_COLUMNS.map(col));
    Ok(out.collect()?)
}

/// The columns of [`radar_scores`], in order.
const RADAR_COLUMNS: [&str; 20] = [
    "method", "ra_score", "a_score", "tt_score", "it_score", "tm_score", "im_score", "ra_top1", "ra_top3", "ra_top10",
    "ra_sum", "a_top1", "a_top3", "a_top10", "a_sum", "tt_factor", "it_factor", "tm_factor", "im_factor", "any_oom",
];

/// Robust accuracy (`ra`) and accuracy (`a`) per method of `lipschitz` (a frame of method
/// names): top-1/3/10 placements, their sum and the score ([`radar_scores`]).
fn placement_scores(settings: &DataFrame, lipschitz: LazyFrame) -> LazyFrame {
    let ranked = at_largest_budget(settings).filter(col("status").eq(lit("ok"))).join(
        lipschitz,
        [col("method")],
        [col("method")],
        JoinArgs::new(JoinType::Inner),
    );
    let group = [col("dataset"), col("kernel")];
    let rank = |c: &str| {
        col(c)
            .rank(RankOptions { method: RankMethod::Min, descending: true }, None)
            .over(group.clone())
            .cast(DataType::Int64)
    };
    ranked
        .with_columns([rank("cra_36").alias("ra_rank"), rank("accuracy").alias("a_rank")])
        .group_by([col("method")])
        .agg(
            ["ra", "a"]
                .iter()
                .flat_map(|p| {
                    let r = col(format!("{p}_rank"));
                    [
                        r.clone().lt_eq(lit(1)).sum().cast(DataType::Int64).alias(format!("{p}_top1")),
                        r.clone().lt_eq(lit(3)).sum().cast(DataType::Int64).alias(format!("{p}_top3")),
                        r.lt_eq(lit(10)).sum().cast(DataType::Int64).alias(format!("{p}_top10")),
                    ]
                })
                .collect::<Vec<_>>(),
        )
        .with_columns(["ra", "a"].map(|p| {
            (col(format!("{p}_top1")) + col(format!("{p}_top3")) + col(format!("{p}_top10"))).alias(format!("{p}_sum"))
        }))
        .with_columns(["ra", "a"].map(|p| {
            let sum = col(format!("{p}_sum")).cast(DataType::Float64);
            let max = col(format!("{p}_sum")).max().cast(DataType::Float64);
            when(max.clone().gt(lit(0.0)))
                .then((lit(1.0) + (lit(4.0) * sum / max).round(0)).cast(DataType::Int64))
                .otherwise(lit(1i64))
                .alias(format!("{p}_score"))
        }))
}

/// Training and inference time and memory per method: the mean overhead factor against the
/// cheapest method of each configuration, binned by [`COST_SCORE_BINS`] ([`radar_scores`]).
fn cost_scores(cost: &DataFrame) -> LazyFrame {
    let cfg = [col("size"), col("kernel"), col("input_side"), col("batch_size"), col("device_kind")];
    let axes =
        [("tt", "train_ms_per_batch"), ("it", "infer_ms_per_batch"), ("tm", "peak_train_gb"), ("im", "peak_infer_mb")];
    let ok = col("status").eq(lit("ok"));
    cost.clone()
        .lazy()
        .with_columns(
            axes.iter()
                .map(|(a, c)| (col(*c) / col(*c).filter(ok.clone()).min().over(cfg.clone())).alias(format!("{a}_f")))
                .collect::<Vec<_>>(),
        )
        .group_by([col("method")])
        .agg({
            let mut v = vec![col("status").eq(lit("oom")).any(true).alias("any_oom")];
            for (a, _) in axes {
                let fcol = col(format!("{a}_f")).filter(ok.clone());
                v.push(fcol.mean().alias(format!("{a}_factor")));
            }
            v
        })
        .with_columns(axes.map(|(a, _)| {
            let fc = col(format!("{a}_factor"));
            let mut e = when(fc.clone().is_not_null()).then(lit(1i64)).otherwise(lit(NULL).cast(DataType::Int64));
            for (limit, score) in COST_SCORE_BINS.iter().rev() {
                e = when(fc.clone().lt(lit(*limit))).then(lit(*score)).otherwise(e);
            }
            when(col("any_oom")).then(lit(1i64)).otherwise(e).alias(format!("{a}_score"))
        }))
}

/// The `radar` table: [`radar_scores`] with the paper's published scores beside them
/// (`paper_ra`, …, `paper_im`).
pub fn radar_with_paper(settings: &DataFrame, cost: &DataFrame, paper: &Paper) -> Result<DataFrame> {
    let radar = radar_scores(settings, cost)?;
    Ok(join_left(
        radar.lazy(),
        paper.radar.clone().lazy().select([
            col("method"),
            col("robust_accuracy").cast(DataType::Int64).alias("paper_ra"),
            col("accuracy").cast(DataType::Int64).alias("paper_a"),
            col("training_time").cast(DataType::Int64).alias("paper_tt"),
            col("inference_time").cast(DataType::Int64).alias("paper_it"),
            col("training_memory").cast(DataType::Int64).alias("paper_tm"),
            col("inference_memory").cast(DataType::Int64).alias("paper_im"),
        ]),
        &["method"],
    )
    .collect()?)
}
