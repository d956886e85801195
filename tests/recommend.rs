//! `lipctl recommend`: the answers the paper's numbers imply, the log-time prediction, measured
//! knowledge, the rule file, and the CLI's handling of malformed budgets.
//!
//! Expected values are the paper's printed numbers (Tables 2, 8–11, Figure 4; see
//! docs/paper-results.md), copied here by hand — not the engine's own output.

use lipctl::nn::{Method, ModelSize};
use lipctl::paper::Dataset;
use lipctl::recommend::{self, knowledge, Knowledge, KnowledgeMode, Objective, PredictionBasis, Query, Rules};
use lipctl::units::{ByteSize, Hours};
use std::path::Path;

/// Percentages printed with one decimal; interpolation is exact arithmetic on them.
const PCT_TOL: f64 = 1e-9;

fn paper() -> Knowledge {
    Knowledge::load(KnowledgeMode::Paper, Path::new("/nonexistent"), None).unwrap()
}

fn q(mem: &str, hours: &str) -> Query {
    Query::new(mem.parse().unwrap(), hours.parse().unwrap())
}

fn ask(query: &Query) -> recommend::Answer {
    recommend::answer(query, &paper(), &Rules::shipped().unwrap())
}

fn best(a: &recommend::Answer) -> (Method, ModelSize, f64) {
    let b = a.best().expect("something fits");
    (b.method, b.size, b.predicted.as_ref().unwrap().cra_36)
}

#[test]
fn eighty_gb_for_a_day_recommends_soc_m() {
    // Table 2, CIFAR-10: SOC-M 66.3 % CRA is the best of all 24 h runs.
    let a = ask(&q("80GB", "24h"));
    assert_eq!(best(&a), (Method::Soc, ModelSize::M, 66.3));
    assert_eq!(a.best().unwrap().predicted.as_ref().unwrap().accuracy, 76.9);
    assert_eq!(a.best().unwrap().epochs, Some(12 * 201), "Table 8: SOC-M 201 epochs per 2 h");
}

#[test]
fn two_hours_recommends_cpl_m() {
    // Table 9, 2 h column: CPL-M 61.6 beats CPL-S 61.1 and SOC-M 60.3.
    let a = ask(&q("80GB", "2h"));
    assert_eq!(best(&a), (Method::Cpl, ModelSize::M, 61.6));
    assert_eq!(a.recommendations[1].method, Method::Cpl);
    assert_eq!(a.recommendations[1].size, ModelSize::S);
}

#[test]
fn latency_objective_prefers_aol_or_bcop() {
    for hours in ["2h", "24h"] {
        let a = ask(&q("80GB", hours).objective(Objective::Latency));
        let m = a.best().unwrap().method;
        assert!(matches!(m, Method::Aol | Method::Bcop), "{hours}: {m}");
        // The two that run like a standard convolution come before the rest.
        assert!(a.recommendations.iter().take(2).all(|c| matches!(c.method, Method::Aol | Method::Bcop)));
    }
}

#[test]
fn two_gb_excludes_every_model_over_two_gb_and_still_answers() {
    let a = ask(&q("2GB", "24h"));
    assert!(a.best().is_some());
    for c in &a.candidates {
        if c.train_peak_bytes.unwrap_or(u64::MAX) > 2_000_000_000 {
            assert!(!c.kept, "{} kept with {:?} bytes", c.name(), c.train_peak_bytes);
        }
    }
    // Figure 4: LOT-XS needs 3.58 GB.
    let lot_xs = a.candidate(Method::Lot, ModelSize::XS).unwrap();
    assert_eq!(lot_xs.train_peak_bytes, Some(3_580_000_000));
    assert!(!lot_xs.kept);
    assert!(lot_xs.checks.iter().any(|c| !c.passed && c.detail.contains("3.58 GB")));
    // Among the XS models that fit, CPL-XS has the best 24 h CRA (62.5, Table 9).
    assert_eq!(best(&a), (Method::Cpl, ModelSize::XS, 62.5));
}

#[test]
fn one_gb_leaves_at_most_bcop_xs() {
    let a = ask(&q("1GB", "24h"));
    let kept: Vec<_> = a.candidates.iter().filter(|c| c.kept).map(|c| c.name()).collect();
    // BCOP-XS: 0.852 GB × 1.1 = 0.937 GB ≤ 1 GB.
    assert_eq!(kept, vec!["BCOP-XS".to_string()]);
    assert_eq!(best(&a), (Method::Bcop, ModelSize::XS, 58.5));
}

#[test]
fn five_hundred_mb_finds_nothing_and_names_the_smallest_memory_budget() {
    let a = ask(&q("500MB", "24h"));
    assert!(a.recommendations.is_empty());
    let s = a.nothing_fits.as_ref().unwrap();
    // BCOP-XS: 0.852 GB × safety margin 1.1.
    assert_eq!(s.min_memory_bytes, Some(937_200_000));
    assert_eq!(s.min_memory_model.as_deref(), Some("BCOP-XS"));
    let mut out = Vec::new();
    recommend::render(&a, recommend::Format::Table, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Nothing fits") && text.contains("937 MB") && text.contains("BCOP-XS"), "{text}");
}

#[test]
fn nothing_fits_in_time_names_the_smallest_time_budget() {
    // 10 epochs of the fastest certifying model, AOL-XS (837 epochs / 2 h) take 86 s.
    let a = ask(&q("80GB", "30s"));
    assert!(a.recommendations.is_empty());
    let s = a.nothing_fits.as_ref().unwrap();
    let h = s.min_hours.unwrap();
    assert!((h - 10.0 * 2.0 / 837.0).abs() < 1e-9, "{h}");
    assert_eq!(s.min_hours_model.as_deref(), Some("AOL-XS"));
}

#[test]
fn tiny_imagenet_for_a_day_recommends_lot_s() {
    // Table 2, Tiny ImageNet: LOT-S 21.9 %.
    let a = ask(&q("80GB", "24h").on(Dataset::TinyImageNet));
    assert_eq!(best(&a), (Method::Lot, ModelSize::S, 21.9));
    assert_eq!(a.best().unwrap().epochs, Some(12 * 29), "Table 8 Tiny ImageNet: LOT-S 29 epochs per 2 h");
}

#[test]
fn standard_convolution_is_never_recommended_but_shown_as_a_baseline() {
    for dataset in Dataset::ALL {
        for objective in [Objective::Robust, Objective::Clean, Objective::Latency] {
            for (mem, hours) in [("80GB", "24h"), ("2GB", "2h"), ("1GB", "10h")] {
                let mut query = q(mem, hours).on(dataset).objective(objective);
                query.top = 100;
                let a = ask(&query);
                assert!(a.recommendations.iter().all(|c| c.method != Method::Standard));
                let std_xs = a.candidate(Method::Standard, ModelSize::XS).unwrap();
                assert!(std_xs.baseline && !std_xs.kept && std_xs.rank.is_none());
                assert!(std_xs.checks.iter().any(|c| !c.passed && c.detail.contains("certifies nothing")));
            }
        }
    }
}

#[test]
fn at_six_hours_every_prediction_lies_between_its_two_and_ten_hour_values() {
    for dataset in Dataset::ALL {
        let at = |h: &str| ask(&q("80GB", h).on(dataset));
        let (a2, a6, a10) = (at("2h"), at("6h"), at("10h"));
        let mut checked = 0;
        for c6 in a6.candidates.iter().filter(|c| c.predicted.is_some()) {
            let p = |a: &recommend::Answer| a.candidate(c6.method, c6.size).unwrap().predicted.clone();
            let (Some(p2), Some(p10)) = (p(&a2), p(&a10)) else { continue };
            if p2.basis != PredictionBasis::AtKnownBudget || p10.basis != PredictionBasis::AtKnownBudget {
                continue; // a diverged budget is missing (CIFAR-100 CPL-S)
            }
            let p6 = c6.predicted.as_ref().unwrap();
            let (lo, hi) = (p2.cra_36.min(p10.cra_36), p2.cra_36.max(p10.cra_36));
            assert!(lo - PCT_TOL <= p6.cra_36 && p6.cra_36 <= hi + PCT_TOL, "{dataset} {}: {p6:?}", c6.name());
            assert_eq!(p6.basis, PredictionBasis::Interpolated);
            checked += 1;
        }
        assert!(checked >= 26, "{dataset}: only {checked} models checked");
    }
    // By hand, CPL-M on CIFAR-10: E = 3 · 522; t = ln 3 / ln 5; 61.6 + t · (64.7 − 61.6).
    let a = ask(&q("80GB", "6h"));
    let cpl_m = a.candidate(Method::Cpl, ModelSize::M).unwrap().predicted.clone().unwrap();
    let expected = 61.6 + (3f64.ln() / 5f64.ln()) * (64.7 - 61.6);
    assert!((cpl_m.cra_36 - expected).abs() < PCT_TOL, "{} vs {expected}", cpl_m.cra_36);
}

#[test]
fn predictions_are_never_extrapolated_upward() {
    // 48 h: the 24 h value held (SOC-M 66.3), not extended.
    let a = ask(&q("80GB", "2d"));
    let soc_m = a.candidate(Method::Soc, ModelSize::M).unwrap().predicted.clone().unwrap();
    assert_eq!((soc_m.cra_36, soc_m.basis), (66.3, PredictionBasis::HeldAtLongest));
    // Below 2 h the prediction can only fall: CPL-M at 1 h is below its 2 h value, and ≥ 0.
    let a = ask(&q("80GB", "1h"));
    let cpl_m = a.candidate(Method::Cpl, ModelSize::M).unwrap().predicted.clone().unwrap();
    assert_eq!(cpl_m.basis, PredictionBasis::BelowShortest);
    assert!(cpl_m.cra_36 < 61.6 && cpl_m.cra_36 >= 0.0, "{cpl_m:?}");
}

#[test]
fn speed_vs_a100_scales_the_paper_epochs() {
    // Twice an A100 for 1 h = the paper's 2 h budget.
    let mut query = q("80GB", "1h");
    query.speed_vs_a100 = 2.0;
    let a = ask(&query);
    assert_eq!(best(&a), (Method::Cpl, ModelSize::M, 61.6));
    assert_eq!(a.best().unwrap().epochs, Some(522));
}

#[test]
fn larger_inputs_scale_memory_up_by_the_area() {
    let mut query = q("80GB", "24h");
    query.input = "64x64".parse().unwrap();
    let a = ask(&query);
    // SOC-M: 5.53 GB × 4 (area ratio).
    assert_eq!(a.candidate(Method::Soc, ModelSize::M).unwrap().train_peak_bytes, Some(4 * 5_530_000_000));
    // LOT-M: 47.1 GB × 4 × 1.1 > 80 GB.
    assert!(!a.candidate(Method::Lot, ModelSize::M).unwrap().kept);
    query.input = "32x48".parse().unwrap();
    let a = ask(&query);
    assert!(a.recommendations.is_empty(), "non-square inputs do not fit the ConvNet");
}

#[test]
fn the_papers_warnings_fire_where_they_apply() {
    let warn = |a: &recommend::Answer, m, s, id: &str| {
        a.candidate(m, s).unwrap().warnings.iter().any(|w| w.id == id)
    };
    let a24 = ask(&q("80GB", "24h"));
    assert!(warn(&a24, Method::Cpl, ModelSize::M, "cpl-diverges"));
    assert!(!warn(&ask(&q("80GB", "2h")), Method::Cpl, ModelSize::M, "cpl-diverges"));
    assert!(warn(&a24, Method::Cayley, ModelSize::S, "fourier-memory"));
    assert!(!warn(&a24, Method::Aol, ModelSize::S, "fourier-memory"));
    assert!(warn(&a24, Method::Lot, ModelSize::L, "lot-l-out-of-memory"));
    let lot_l = a24.candidate(Method::Lot, ModelSize::L).unwrap();
    assert!(!lot_l.kept && lot_l.checks.iter().any(|c| !c.passed && c.detail.contains("80 GB")));
    // 2 h, CIFAR-10: LOT-XS 59.6 > LOT-S 56.4 > LOT-M 45.7 (Table 9).
    let a2 = ask(&q("80GB", "2h"));
    assert!(warn(&a2, Method::Lot, ModelSize::M, "smaller-beats-larger"));
    assert!(!warn(&a2, Method::Lot, ModelSize::XS, "smaller-beats-larger"));
    // CIFAR-100 CPL-S diverged at 10 h and 24 h (Table 10): those budgets are left out.
    let c100 = ask(&q("80GB", "24h").on(Dataset::Cifar100));
    let cpl_s = c100.candidate(Method::Cpl, ModelSize::S).unwrap();
    assert!(cpl_s.warnings.iter().any(|w| w.id == "diverged-in-data" && w.message.contains("10 h, 24 h")));
    assert_eq!(cpl_s.predicted.as_ref().unwrap().cra_36, 29.8);
    assert_eq!(best(&c100), (Method::Soc, ModelSize::M, 34.9));
}

#[test]
fn clean_objective_ranks_by_accuracy() {
    // Table 9, 24 h: SOC-M and SOC-L both 76.9 %; the tie goes to CRA (66.3 > 65.4).
    let a = ask(&q("80GB", "24h").objective(Objective::Clean));
    let b = a.best().unwrap();
    assert_eq!((b.method, b.size), (Method::Soc, ModelSize::M));
    assert_eq!(b.predicted.as_ref().unwrap().accuracy, 76.9);
}

const MEASURED_CSV: &str = "\
dataset,method,size,budget_hours,epochs,accuracy,cra_36,seconds_per_epoch,train_peak_bytes,infer_ms_per_batch,status,device
cifar10,AOL,XS,1,100,80.0,70.0,10,900000000,2.0,ok,TestGPU
cifar10,AOL,XS,2,200,82.0,72.0,10,900000000,2.0,ok,TestGPU
cifar10,SOC,M,,,,,,,,oom,TestGPU
cifar10,CPL,S,,,,,20,1500000000,3.0,ok,TestGPU
";

fn write_measured(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("results.csv");
    std::fs::write(&p, MEASURED_CSV).unwrap();
    p
}

#[test]
fn measured_knowledge_drives_the_recommendation() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_measured(dir.path());
    let k = Knowledge::load(KnowledgeMode::Measured, dir.path(), Some(&csv)).unwrap();
    let rules = Rules::shipped().unwrap();
    // 1.5 h at 10 s per epoch = 540 epochs > 200: held at the longest measured point.
    let a = recommend::answer(&q("8GB", "90m"), &k, &rules);
    let b = a.best().unwrap();
    assert_eq!((b.method, b.size, b.epochs), (Method::Aol, ModelSize::XS, Some(540)));
    assert_eq!(b.predicted.as_ref().unwrap().cra_36, 72.0);
    // 150 s → 15 epochs is below the measured points: slope continued downward in log-time.
    // By hand: 70 + (72 − 70)/ln 2 · ln(15/100).
    let a = recommend::answer(&q("8GB", "150s"), &k, &rules);
    let p = a.best().unwrap().predicted.clone().unwrap();
    let expected = 70.0 + 2.0 / 2f64.ln() * (15f64 / 100.0).ln();
    assert!((p.cra_36 - expected).abs() < PCT_TOL, "{} vs {expected}", p.cra_36);
    // Only measured models are candidates; the others have no accuracy or ran out of memory.
    let a = recommend::answer(&q("8GB", "2h"), &k, &rules);
    assert_eq!(a.candidates.len(), 3);
    let soc = a.candidate(Method::Soc, ModelSize::M).unwrap();
    assert!(soc.checks.iter().any(|c| !c.passed && c.detail.contains("out of memory") && c.detail.contains("TestGPU")));
    let cpl = a.candidate(Method::Cpl, ModelSize::S).unwrap();
    assert!(!cpl.kept && cpl.checks.iter().any(|c| !c.passed && c.detail.contains("no accuracy")));
    // Explained as measured.
    let mut out = Vec::new();
    recommend::render(&a, recommend::Format::Table, true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("measured: 10.00 s per epoch on TestGPU"), "{text}");
    assert!(text.contains("measured results: 1 h (100 ep): CRA 70.0"), "{text}");
    assert!(text.contains("900 MB") && text.contains("measured on TestGPU"), "{text}");
}

#[test]
fn auto_knowledge_overlays_measured_numbers_on_the_paper() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("aggregate")).unwrap();
    write_measured(&dir.path().join("aggregate"));
    let k = Knowledge::load(KnowledgeMode::Auto, dir.path(), None).unwrap();
    assert_eq!(k.sources.len(), 2);
    let a = recommend::answer(&q("80GB", "24h"), &k, &Rules::shipped().unwrap());
    // Measured AOL-XS (72.0) beats the paper's SOC-M (66.3).
    let b = a.best().unwrap();
    assert_eq!((b.method, b.size), (Method::Aol, ModelSize::XS));
    assert_eq!(b.sources.accuracy, Some(recommend::Source::Measured));
    // CPL-S: measured time (20 s/epoch → 4320 epochs in 24 h) with the paper's accuracy.
    let cpl = a.candidate(Method::Cpl, ModelSize::S).unwrap();
    assert_eq!(cpl.epochs, Some(4320));
    assert_eq!((cpl.sources.time, cpl.sources.accuracy), (Some(recommend::Source::Measured), Some(recommend::Source::Paper)));
    assert_eq!(cpl.train_peak_bytes, Some(1_500_000_000));
    // Untouched models keep the paper's numbers.
    let soc_l = a.candidate(Method::Soc, ModelSize::L).unwrap();
    assert_eq!(soc_l.predicted.as_ref().unwrap().cra_36, 65.4);
    // The ranking of latency uses relative costs: not every kept model has a measured time.
    assert_eq!(a.inference_unit, "relative");
}

/// A method the paper lacks (`MethodInfo::in_paper` false) has no paper entry and is ranked only
/// from the user's own aggregate; the knowledge sources say so.
#[test]
fn methods_not_in_the_paper_are_ranked_only_from_measured_results() {
    let k = paper();
    let since: Vec<Method> = Method::ALL.into_iter().filter(|m| !m.info().in_paper).collect();
    for &m in &since {
        for s in ModelSize::ALL {
            assert!(k.entry(Dataset::Cifar10, m, s).is_none(), "{m}-{s} has paper knowledge");
        }
        assert!(k.sources[0].contains(m.name()) && k.sources[0].contains("not in the paper"), "{:?}", k.sources);
    }
    let Some(&m) = since.first() else { return };
    let header = MEASURED_CSV.lines().next().unwrap();
    let csv = format!(
        "{header}\ncifar10,{m},XS,1,100,85.0,75.0,10,900000000,2.0,ok,TestGPU\ncifar10,{m},XS,2,200,86.0,76.0,10,900000000,2.0,ok,TestGPU\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("aggregate")).unwrap();
    std::fs::write(dir.path().join("aggregate/results.csv"), csv).unwrap();
    let k = Knowledge::load(KnowledgeMode::Auto, dir.path(), None).unwrap();
    let a = recommend::answer(&q("80GB", "24h"), &k, &Rules::shipped().unwrap());
    // Measured 76.0 beats the paper's best (SOC-M, 66.3).
    let b = a.best().unwrap();
    assert_eq!((b.method, b.size), (m, ModelSize::XS));
    assert_eq!(b.sources.accuracy, Some(recommend::Source::Measured));
    assert!(a.candidates.iter().filter(|c| c.method == m).all(|c| c.size == ModelSize::XS));
}

#[test]
fn measured_csv_errors_name_the_file_line_and_column() {
    let err = knowledge::parse_measured_csv("m.csv", "dataset,method,size\ncifar10,AOL,XS\n").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("m.csv:1") && msg.contains("budget_hours"), "{msg}");
    let bad = MEASURED_CSV.replace("cifar10,CPL,S", "cifar10,CPL,XXL");
    let msg = format!("{:#}", knowledge::parse_measured_csv("m.csv", &bad).unwrap_err());
    assert!(msg.contains("m.csv:5") && msg.contains("XXL"), "{msg}");
    let bad = MEASURED_CSV.replace("80.0,70.0", "80.0,170.0");
    let msg = format!("{:#}", knowledge::parse_measured_csv("m.csv", &bad).unwrap_err());
    assert!(msg.contains("m.csv:2") && msg.contains("cra_36") && msg.contains("percentage"), "{msg}");
    let err = Knowledge::load(KnowledgeMode::Measured, Path::new("/nonexistent-artifacts"), None).unwrap_err();
    assert!(format!("{err:#}").contains("--knowledge paper"), "{err:#}");
}

#[test]
fn rule_file_errors_point_at_file_and_line() {
    let shipped = recommend::rules::SHIPPED_RULES;
    let bad = shipped.replace("    safety_margin: 1.1", "    safety_margin: 1.1\n    safty: 2");
    let line = bad.lines().position(|l| l.contains("safty")).unwrap() + 1;
    let msg = format!("{:#}", Rules::parse("my-rules.yaml", &bad).unwrap_err());
    assert!(msg.starts_with(&format!("my-rules.yaml:{line}:")) && msg.contains("safty"), "{msg}");
    let bad = shipped.replace("kind: certifies", "kind: certfies");
    let msg = format!("{:#}", Rules::parse("r.yaml", &bad).unwrap_err());
    assert!(msg.starts_with("r.yaml:") && msg.contains("certfies"), "{msg}");
    let bad = shipped.replace("methods: [CPL]", "methods: [CPX]");
    let msg = format!("{:#}", Rules::parse("r.yaml", &bad).unwrap_err());
    assert!(msg.starts_with("r.yaml:") && msg.contains("CPX"), "{msg}");
    let bad = shipped.replace("    min_epochs: 10", "    min_epochs: 10\n    safety_margin: 2.0");
    let msg = format!("{:#}", Rules::parse("r.yaml", &bad).unwrap_err());
    assert!(msg.starts_with("r.yaml:") && msg.contains("does not apply"), "{msg}");
    let bad = shipped.replace("schema_version: 1", "schema_version: 7");
    assert!(format!("{:#}", Rules::parse("r.yaml", &bad).unwrap_err()).contains("schema_version 7"));
    let bad = shipped.replace("safety_margin: 1.1", "safety_margin: 0.5");
    assert!(format!("{:#}", Rules::parse("r.yaml", &bad).unwrap_err()).contains("≥ 1"));
}

#[test]
fn a_users_rule_file_changes_the_answer() {
    // Without the safety margin AOL-S (1.83 GB) and CPL-S (1.87 GB) fit into 2 GB.
    let rules = Rules::parse("r.yaml", &recommend::rules::SHIPPED_RULES.replace("safety_margin: 1.1", "safety_margin: 1.0")).unwrap();
    let a = recommend::answer(&q("2GB", "24h"), &paper(), &rules);
    assert_eq!(best(&a), (Method::Cpl, ModelSize::S, 64.2));
}

#[test]
fn json_answer_is_documented_and_versioned() {
    let a = ask(&q("80GB", "24h"));
    let mut out = Vec::new();
    recommend::render(&a, recommend::Format::Json, false, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["query"]["memory_bytes"], 80_000_000_000u64);
    assert_eq!(v["query"]["hours"], 24.0);
    assert_eq!(v["query"]["dataset"], "cifar10");
    let r0 = &v["recommendations"][0];
    assert_eq!((r0["method"].as_str(), r0["size"].as_str(), r0["rank"].as_u64()), (Some("SOC"), Some("M"), Some(1)));
    assert_eq!(r0["predicted"]["cra_36"], 66.3);
    assert_eq!(r0["predicted"]["basis"], "at_known_budget");
    assert_eq!(r0["train_peak_bytes"], 5_530_000_000u64);
    assert_eq!(r0["sources"]["memory"], "paper");
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("relative cost")));
    for key in ["epochs", "seconds_per_epoch", "required_bytes", "infer_ms_per_batch", "infer_relative", "checks", "warnings", "kept", "baseline"] {
        assert!(r0.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["candidates"].as_array().unwrap().len(), 32);
    assert!(v["nothing_fits"].is_null());
}

#[test]
fn answering_takes_well_under_a_second() {
    // Loading the paper, the rules and answering: milliseconds; one second is a loose ceiling
    // for a slow, shared CI machine.
    let start = std::time::Instant::now();
    let k = Knowledge::load(KnowledgeMode::Paper, Path::new("/nonexistent"), None).unwrap();
    let r = Rules::shipped().unwrap();
    let a = recommend::answer(&q("8GB", "2h"), &k, &r);
    let mut out = Vec::new();
    recommend::render(&a, recommend::Format::Table, true, &mut out).unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(1), "{:?}", start.elapsed());
}

/// Malformed budgets: (flag, value, the problem the message must name).
const MALFORMED: &[(&str, &str, &str)] = &[
    ("--mem", "", "empty"),
    ("--mem", "0GB", "zero"),
    ("--mem", "0", "zero"),
    ("--mem", "-8GB", "negative"),
    ("--mem", "8 apples", "unknown unit"),
    ("--mem", "8", "unit is missing"),
    ("--mem", "GB", "number"),
    ("--mem", "8GBs", "unknown unit"),
    ("--mem", "1.2.3GB", "number"),
    ("--mem", "inf GB", "number"),
    ("--hours", "", "empty"),
    ("--hours", "0", "zero"),
    ("--hours", "0h", "zero"),
    ("--hours", "-2h", "negative"),
    ("--hours", "2 apples", "unknown unit"),
    ("--hours", "1h30", "no unit"),
    ("--hours", "h", "number"),
    ("--hours", "NaN", "number"),
    ("--hours", "2h-30m", "number"),
];

#[test]
fn malformed_budgets_are_rejected_with_the_accepted_forms() {
    assert!(MALFORMED.len() >= 15);
    for &(flag, value, problem) in MALFORMED {
        let msg = if flag == "--mem" {
            value.parse::<ByteSize>().expect_err(value).to_string()
        } else {
            value.parse::<Hours>().expect_err(value).to_string()
        };
        let forms = if flag == "--mem" { "8GiB, 512MB or 80g" } else { "90m, 1.5h, 1h30m or 2d" };
        assert!(msg.contains(problem) && msg.contains(forms) && msg.contains(&format!("{value:?}")), "{value}: {msg}");
    }
}

#[test]
fn malformed_budgets_are_usage_errors_with_exit_code_2() {
    // The binary's own argument parser (clap, exit code 2 on usage errors), without the process.
    use clap::{Args, FromArgMatches};
    let cmd = recommend::RecommendArgs::augment_args(clap::Command::new("recommend"));
    for &(flag, value, problem) in MALFORMED {
        let mut argv = vec!["recommend", "--mem", "8GB", "--hours", "2h"];
        let i = argv.iter().position(|a| *a == flag).unwrap();
        argv[i + 1] = value;
        let err = cmd.clone().try_get_matches_from(&argv).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{flag} {value:?}");
        assert!(err.to_string().contains(problem), "{flag} {value:?}: {err}");
    }
    let ok = cmd.try_get_matches_from(["recommend", "--mem", "8 GB", "--hours", "1h30m"]).unwrap();
    let args = recommend::RecommendArgs::from_arg_matches(&ok).unwrap();
    assert_eq!((args.mem, args.hours), (ByteSize(8_000_000_000), Hours(1.5)));
}

// ---- The real binary (built by cargo from this tree for integration tests), in a fresh
// temporary folder as artifacts root, so `--knowledge auto` finds no measured results.

fn lipctl(args: &[&str], artifacts: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lipctl"))
        .arg("--artifacts")
        .arg(artifacts)
        .arg("recommend")
        .args(args)
        .current_dir(artifacts)
        .output()
        .unwrap()
}

#[test]
fn binary_answers_and_prints_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = lipctl(&["--mem", "80GB", "--hours", "24"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let first_row = text.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap();
    assert!(first_row.contains("SOC") && first_row.contains(" M ") && first_row.contains("66.3"), "{text}");
    let out = lipctl(&["--mem", "80GB", "--hours", "2h", "--format", "json", "--explain"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recommendations"][0]["method"], "CPL");
    let out = lipctl(&["--mem", "500MB", "--hours", "24h"], dir.path());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("937 MB"));
    let out = lipctl(&["--mem", "8GB", "--hours", "2h", "--format", "markdown", "--explain"], dir.path());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("| rank |") && text.contains("baseline only"), "{text}");
}

#[test]
fn binary_exits_2_on_malformed_budgets() {
    let dir = tempfile::tempdir().unwrap();
    // A sample of the table (each run loads libtorch: about a second); all cases go through
    // the same parser in `malformed_budgets_are_usage_errors_with_exit_code_2`.
    for &(flag, value, problem) in MALFORMED.iter().step_by(4) {
        let mut args = vec!["--mem", "8GB", "--hours", "2h"];
        let i = args.iter().position(|a| *a == flag).unwrap();
        args[i + 1] = value;
        let out = lipctl(&args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{flag} {value:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(problem), "{flag} {value:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn binary_reports_rule_file_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, recommend::rules::SHIPPED_RULES.replace("min_epochs: 10", "min_epochs: 10\n    mni: 3")).unwrap();
    let out = lipctl(&["--mem", "8GB", "--hours", "2h", "--rules", rules.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules.yaml:") && err.contains("mni"), "{err}");
    // --knowledge measured with no measured results: exit 2, a message with the fix.
    let out = lipctl(&["--mem", "8GB", "--hours", "2h", "--knowledge", "measured"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--knowledge paper"));
}

#[test]
fn auto_finds_the_committed_keyed_aggregate() {
    // docs/artifacts.md: aggregate/<key>/results.csv, committed by its manifest.json.
    let dir = tempfile::tempdir().unwrap();
    let agg = dir.path().join("aggregate");
    for (key, manifest) in [("3fa1", true), (".tmp-9c2e-17", true), ("77aa", false)] {
        std::fs::create_dir_all(agg.join(key)).unwrap();
        write_measured(&agg.join(key));
        if manifest {
            std::fs::write(agg.join(key).join("manifest.json"), "{}").unwrap();
        }
    }
    assert_eq!(knowledge::default_measured_path(dir.path()), Some(agg.join("3fa1").join("results.csv")));
    let k = Knowledge::load(KnowledgeMode::Auto, dir.path(), None).unwrap();
    assert!(k.sources.iter().any(|s| s.contains("3fa1")), "{:?}", k.sources);
    // Nothing committed: the paper alone.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(knowledge::default_measured_path(empty.path()), None);
    assert_eq!(Knowledge::load(KnowledgeMode::Auto, empty.path(), None).unwrap().sources.len(), 1);
}
