//! Unit tests of the derived tables and the radar rule on hand-made frames.

use super::*;

/// Settings by hand: dataset A at 24 h (plus a 2 h row that must be ignored, a non-Lipschitz
/// Standard row and a diverged LOT row that must not be ranked); dataset B only at 2 h.
fn settings() -> DataFrame {
    let rows: [(&str, i64, &str, &str, &str, f64, f64); 11] = [
        ("A", 24, "SOC", "XS", "ok", 77.0, 60.0),
        ("A", 24, "SOC", "S", "ok", 78.0, 65.0),
        ("A", 24, "CPL", "XS", "ok", 76.0, 62.0),
        ("A", 24, "CPL", "S", "ok", 75.0, 58.0),
        ("A", 24, "AOL", "XS", "ok", 80.0, 50.0),
        ("A", 24, "AOL", "S", "ok", 79.0, 55.0),
        ("A", 24, "Standard", "XS", "ok", 99.0, 99.0),
        ("A", 24, "LOT", "XS", "diverged", 10.0, 0.0),
        ("A", 2, "AOL", "XS", "ok", 90.0, 90.0),
        ("B", 2, "SOC", "XS", "ok", 72.0, 40.0),
        ("B", 2, "CPL", "XS", "ok", 50.0, 40.0),
    ];
    let mut rows = rows.to_vec();
    rows.push(("B", 2, "AOL", "XS", "ok", 70.0, 30.0));
    df!(
        "dataset" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "kernel" => vec![3i64; rows.len()],
        "budget_hours" => rows.iter().map(|r| r.1 as f64).collect::<Vec<_>>(),
        "method" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        "size" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        "status" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        "accuracy" => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        "cra_36" => rows.iter().map(|r| r.6).collect::<Vec<_>>(),
        "runs" => vec![1i64; rows.len()],
        "accuracy_std" => vec![None::<f64>; rows.len()],
        "cra_36_std" => vec![None::<f64>; rows.len()],
        "certificate" => rows.iter().map(|r| if r.2 == "Standard" { "not certifiable" } else { "sound" }).collect::<Vec<_>>()
    )
    .unwrap()
}

/// `results` rows of three seeds of one setting (AOL-XS, 24 h) and one of another (SOC-XS):
/// every column of [`RESULT_COLUMNS`], null where the test does not care.
fn seed_results() -> DataFrame {
    let n = 4;
    let mut cols: Vec<Column> = RESULT_COLUMNS
        .iter()
        .map(|c| Column::full_null((*c).into(), n, &crate::aggregate::tables::typed_dtype(c)))
        .collect();
    let set = |cols: &mut Vec<Column>, name: &str, values: Column| {
        let i = RESULT_COLUMNS.iter().position(|c| *c == name).unwrap();
        cols[i] = values.with_name(name.into());
    };
    set(&mut cols, "stage", Column::new("".into(), vec!["train"; n]));
    set(&mut cols, "dataset", Column::new("".into(), vec!["cifar10"; n]));
    set(&mut cols, "kernel", Column::new("".into(), vec![3i64; n]));
    set(&mut cols, "input_side", Column::new("".into(), vec![32i64; n]));
    set(&mut cols, "budget_hours", Column::new("".into(), vec![24.0; n]));
    set(&mut cols, "method", Column::new("".into(), vec!["AOL", "AOL", "AOL", "SOC"]));
    set(&mut cols, "size", Column::new("".into(), vec!["XS"; n]));
    set(&mut cols, "seed", Column::new("".into(), vec![0i64, 1, 2, 0]));
    set(&mut cols, "status", Column::new("".into(), vec!["ok"; n]));
    set(&mut cols, "accuracy", Column::new("".into(), vec![70.0, 72.0, 74.0, 60.0]));
    set(&mut cols, "cra_36", Column::new("".into(), vec![50.0, 53.0, 56.0, 40.0]));
    set(&mut cols, "certificate", Column::new("".into(), vec!["sound", "unsound", "sound", "sound"]));
    set(&mut cols, "attack_flips", Column::new("".into(), vec![0i64, 3, 0, 0]));
    DataFrame::new(cols).unwrap()
}

#[test]
fn seeds_give_mean_std_and_n_and_one_unsound_run_marks_its_setting() {
    let s = crate::aggregate::tables::settings_table(&seed_results()).unwrap();
    let row = |m: &str| (0..s.height()).find(|&i| s.column("method").unwrap().str().unwrap().get(i) == Some(m)).unwrap();
    let f = |c: &str, i: usize| s.column(c).unwrap().f64().unwrap().get(i);
    let (aol, soc) = (row("AOL"), row("SOC"));
    assert_eq!(s.column("runs").unwrap().i64().unwrap().get(aol), Some(3));
    // Mean 72, sample standard deviation √((4 + 0 + 4)/2) = 2; CRA 53 ± 3.
    assert_eq!((f("accuracy", aol), f("accuracy_std", aol)), (Some(72.0), Some(2.0)));
    assert_eq!((f("cra_36", aol), f("cra_36_std", aol)), (Some(53.0), Some(3.0)));
    // One run: no deviation.
    assert_eq!((f("accuracy", soc), f("accuracy_std", soc)), (Some(60.0), None));
    let cert = s.column("certificate").unwrap().str().unwrap();
    assert_eq!((cert.get(aol), cert.get(soc)), (Some("unsound"), Some("sound")));
    assert_eq!(s.column("attack_flips").unwrap().i64().unwrap().get(aol), Some(3));
}

/// Measurements by hand at sizes XS and S (same configuration); LOT runs out of memory.
fn cost() -> DataFrame {
    // method, size, status, train ms, infer ms, train GB, infer MB
    let rows: [(&str, &str, &str, Option<f64>, Option<f64>, Option<f64>, Option<f64>); 10] = [
        ("Standard", "XS", "ok", Some(10.0), Some(5.0), Some(1.0), Some(100.0)),
        ("Standard", "S", "ok", Some(20.0), Some(8.0), Some(2.0), Some(200.0)),
        ("AOL", "XS", "ok", Some(14.0), Some(4.0), Some(1.2), Some(100.0)),
        ("AOL", "S", "ok", Some(40.0), Some(8.0), Some(2.4), Some(200.0)),
        ("CPL", "XS", "ok", Some(30.0), Some(6.0), Some(2.0), Some(100.0)),
        ("CPL", "S", "ok", Some(50.0), Some(8.0), Some(4.0), Some(200.0)),
        ("SOC", "XS", "ok", Some(120.0), Some(20.0), Some(4.0), Some(300.0)),
        ("SOC", "S", "ok", Some(200.0), Some(80.0), Some(8.0), Some(600.0)),
        ("LOT", "XS", "oom", None, None, None, None),
        ("LOT", "S", "oom", None, None, None, None),
    ];
    df!(
        "method" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "size" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "kernel" => vec![3i64; rows.len()],
        "input_side" => vec![32i64; rows.len()],
        "batch_size" => vec![256i64; rows.len()],
        "device_kind" => vec!["cpu"; rows.len()],
        "status" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        "train_ms_per_batch" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        "infer_ms_per_batch" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        "peak_train_gb" => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        "peak_infer_mb" => rows.iter().map(|r| r.6).collect::<Vec<_>>()
    )
    .unwrap()
}

fn column_i64(df: &DataFrame, c: &str) -> Vec<Option<i64>> {
    df.column(c).unwrap().i64().unwrap().into_iter().collect()
}

#[test]
fn radar_scores_follow_the_rule_on_a_hand_made_table() {
    let r = radar_scores(&settings(), &cost()).unwrap();
    let methods: Vec<&str> = r.column("method").unwrap().str().unwrap().into_iter().flatten().collect();
    // Registry order; Standard (not 1-Lipschitz) and BCOP (no data) absent.
    assert_eq!(methods, ["AOL", "CPL", "LOT", "SOC"]);
    // CRA ranks, A@24h: SOC-S 1, CPL-XS 2, SOC-XS 3, CPL-S 4, AOL-S 5, AOL-XS 6 (the 2 h AOL row,
    // Standard and the diverged LOT are not ranked). B@2h: SOC and CPL tie at 1, AOL 3.
    // top1/top3/top10: AOL 0/1/3 = 4, CPL 1/2/3 = 6, SOC 2/3/3 = 8.
    assert_eq!(column_i64(&r, "ra_top1"), [Some(0), Some(1), None, Some(2)]);
    assert_eq!(column_i64(&r, "ra_top3"), [Some(1), Some(2), None, Some(3)]);
    assert_eq!(column_i64(&r, "ra_sum"), [Some(4), Some(6), None, Some(8)]);
    // 1 + round(4·sum/8): 3, 4, –, 5.
    assert_eq!(column_i64(&r, "ra_score"), [Some(3), Some(4), None, Some(5)]);
    // Accuracy: A: AOL-XS 1, AOL-S 2, SOC-S 3, SOC-XS 4, CPL-XS 5, CPL-S 6; B: SOC 1, AOL 2, CPL 3.
    // AOL 1/3/3 = 7, CPL 0/1/3 = 4, SOC 1/2/3 = 6 → 1 + round(4·sum/7): 5, 3 (2.29), 4 (3.43).
    assert_eq!(column_i64(&r, "a_sum"), [Some(7), Some(4), None, Some(6)]);
    assert_eq!(column_i64(&r, "a_score"), [Some(5), Some(3), None, Some(4)]);
    // Training time factors against Standard: AOL (1.4 + 2)/2 = 1.7 → 4; CPL (3 + 2.5)/2 = 2.75
    // → 3; SOC (12 + 10)/2 = 11 → 1; LOT out of memory → 1.
    assert_eq!(column_i64(&r, "tt_score"), [Some(4), Some(3), Some(1), Some(1)]);
    let tt: Vec<Option<f64>> = r.column("tt_factor").unwrap().f64().unwrap().into_iter().collect();
    const FLOAT_TOL: f64 = 1e-12; // means of two ratios of small numbers
    assert!((tt[0].unwrap() - 1.7).abs() < FLOAT_TOL);
    assert!((tt[3].unwrap() - 11.0).abs() < FLOAT_TOL);
    // Inference time: the reference at XS is AOL (4 ms), not Standard. AOL 1 → 5;
    // CPL (1.5 + 1)/2 = 1.25 → 5; SOC (5 + 10)/2 = 7.5 → 2.
    assert_eq!(column_i64(&r, "it_score"), [Some(5), Some(5), Some(1), Some(2)]);
    // Training memory: AOL 1.2 → 5; CPL 2 → 4; SOC 4 → 3. Inference memory: 1, 1, 3.
    assert_eq!(column_i64(&r, "tm_score"), [Some(5), Some(4), Some(1), Some(3)]);
    assert_eq!(column_i64(&r, "im_score"), [Some(5), Some(5), Some(1), Some(3)]);
}

/// Our time rule applied to the paper's own Figure 2 numbers gives the paper's published
/// training-time scores (radar_scores.csv), an independent check of the bins.
#[test]
fn cost_rule_reproduces_the_papers_training_time_scores_from_figure_2() {
    let paper = Paper::load().unwrap();
    let cost = paper
        .time
        .clone()
        .lazy()
        .select([
            col("method"),
            col("size"),
            lit(3i64).alias("kernel"),
            lit(32i64).alias("input_side"),
            lit(256i64).alias("batch_size"),
            lit("A100").alias("device_kind"),
            when(col("paper_seconds_per_epoch").is_null()).then(lit("oom")).otherwise(lit("ok")).alias("status"),
            col("paper_seconds_per_epoch").alias("train_ms_per_batch"),
            lit(NULL).cast(DataType::Float64).alias("infer_ms_per_batch"),
            lit(NULL).cast(DataType::Float64).alias("peak_train_gb"),
            lit(NULL).cast(DataType::Float64).alias("peak_infer_mb"),
        ])
        .collect()
        .unwrap();
    let empty = settings().clear();
    let ours = radar_scores(&empty, &cost).unwrap();
    let joined = ours
        .lazy()
        .join(paper.radar.clone().lazy(), [col("method")], [col("method")], JoinArgs::new(JoinType::Inner))
        .select([col("method"), col("tt_score"), col("training_time").cast(DataType::Int64)])
        .collect()
        .unwrap();
    assert_eq!(joined.height(), 7, "{joined}");
    assert_eq!(column_i64(&joined, "tt_score"), column_i64(&joined, "training_time"), "{joined}");
}

#[test]
fn table2_marks_the_best_size_and_non_ok_statuses() {
    let t = table2(&settings()).unwrap();
    let marks: Vec<Option<&str>> = t.column("A 24h mark").unwrap().str().unwrap().into_iter().collect();
    let methods: Vec<Option<&str>> = t.column("method").unwrap().str().unwrap().into_iter().collect();
    let sizes: Vec<Option<&str>> = t.column("size").unwrap().str().unwrap().into_iter().collect();
    let mark = |m: &str, s: &str| {
        (0..t.height()).find(|&i| methods[i] == Some(m) && sizes[i] == Some(s)).and_then(|i| marks[i])
    };
    assert_eq!(mark("SOC", "S"), Some("best"));
    assert_eq!(mark("SOC", "XS"), Some(""));
    assert_eq!(mark("CPL", "XS"), Some("best"));
    assert_eq!(mark("AOL", "S"), Some("best"), "the 2 h AOL-XS row is not at the largest budget");
    assert_eq!(mark("LOT", "XS"), Some("diverged"));
    // The baseline's 99 % would be "best" by CRA, but it is not certifiable.
    assert_eq!(mark("Standard", "XS"), Some("not certifiable"));
    // Dataset B's largest budget is 2 h.
    assert!(t.column("B 2h CRA 36 %").is_ok());
}
