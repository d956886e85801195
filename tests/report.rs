//! `aggregate` + `report` on a small artifact tree written here through the store, in the layouts
//! of docs/artifacts.md: a few runs (one diverged), one out-of-memory measurement.

use lipctl::records::Record;
use lipctl::store::{ManifestInfo, Store};
use lipctl::train::{trainer::attempt_seed, Attempt, RunStatus, TrainOutcome, TrainRecord, Trained};
use polars::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

/// Writes one artifact of `stage` with `config`, `inputs` and files `(name, contents)`; returns its key.
fn put(store: &Store, stage: &str, config: Value, inputs: &[String], files: &[(&str, String)]) -> String {
    let mut info = ManifestInfo::new(1, config);
    info.inputs = inputs.iter().map(|k| lipctl::store::Key::parse(k).unwrap()).collect();
    let key = info.key(stage);
    store
        .build(stage, &key, &info, |dir| {
            for (name, text) in files {
                std::fs::write(dir.join(name), text)?;
            }
            Ok(())
        })
        .unwrap();
    key.as_str().to_string()
}

struct Run {
    method: &'static str,
    size: &'static str,
    budget: i64,
    diverged: bool,
    accuracy: f64,
    cra: [f64; 4],
}

const RUNS: [Run; 6] = [
    Run { method: "AOL", size: "XS", budget: 2, diverged: false, accuracy: 0.6612, cra: [0.5203, 0.38, 0.25, 0.02] },
    Run { method: "AOL", size: "XS", budget: 10, diverged: false, accuracy: 0.7034, cra: [0.5671, 0.42, 0.30, 0.03] },
    Run { method: "AOL", size: "XS", budget: 24, diverged: false, accuracy: 0.7212, cra: [0.6004, 0.45, 0.31, 0.04] },
    Run { method: "AOL", size: "S", budget: 24, diverged: false, accuracy: 0.7348, cra: [0.6123, 0.46, 0.33, 0.04] },
    Run { method: "CPL", size: "XS", budget: 24, diverged: false, accuracy: 0.7456, cra: [0.6247, 0.48, 0.35, 0.05] },
    Run { method: "SLL", size: "XS", budget: 24, diverged: true, accuracy: 0.1, cra: [0.0, 0.0, 0.0, 0.0] },
];

fn build_tree(root: &Path) {
    let store = Store::open(root).unwrap();
    let meta = json!({"format": 1, "name": "cifar10", "dataset": "cifar10", "classes": ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"], "image_side": 32,
        "train": 50000, "fit": 45000, "val": 5000, "test": 10000, "train_per_class": [], "test_per_class": [],
        "channel_mean": [0.5, 0.5, 0.5], "source_sha256": "feedbeef", "split_seed": 0, "checksum": "c0ffee"});
    let prep = put(&store, "prepare", json!({"dataset": "cifar10"}), &[], &[("meta.json", meta.to_string())]);
    put(
        &store,
        "budget",
        json!({"method": "AOL", "size": "XS", "dataset": "cifar10", "hours": [2, 10, 24], "mode": "paper", "batches_per_epoch": 196}),
        &[],
        &[("budget.json", json!({"mode": "paper", "epochs": {"2": 837}, "seconds_per_batch": null}).to_string())],
    );
    // Measurements: four that fit, LOT-XS out of memory.
    for (method, size, train_s, infer_s, train_b, infer_b) in [
        ("Standard", "XS", 0.030, 0.010, 0.9e9, 110e6),
        ("AOL", "XS", 0.045, 0.011, 1.2e9, 120e6),
        ("AOL", "S", 0.050, 0.014, 1.8e9, 190e6),
        ("CPL", "XS", 0.044, 0.015, 1.2e9, 111e6),
        ("SLL", "XS", 0.050, 0.016, 1.5e9, 112e6),
    ] {
        let m = json!({"status": "ok", "error": null, "parameters": 1572288, "non_trainable": 0,
            "train_seconds_per_batch": {"median": train_s, "mean": train_s, "std": 0.001, "n": 10},
            "infer_seconds_per_batch": {"median": infer_s, "mean": infer_s, "std": 0.001, "n": 10},
            "peak_train_bytes": train_b as u64, "peak_infer_bytes": infer_b as u64, "memory_source": "cuda_allocator", "device": "Test GPU"});
        put(
            &store,
            "measure",
            json!({"method": method, "size": size, "kernel": 3, "input_side": 32, "classes": 10,
            "batch_size": 256, "device_kind": "cuda", "batches": 10}),
            &[],
            &[("measure.json", m.to_string())],
        );
    }
    let oom = json!({"status": "oom", "error": "CUDA out of memory", "parameters": 1572288, "non_trainable": 0,
        "train_seconds_per_batch": null, "infer_seconds_per_batch": null, "peak_train_bytes": null,
        "peak_infer_bytes": null, "memory_source": "cuda_allocator", "device": "Test GPU"});
    put(
        &store,
        "measure",
        json!({"method": "LOT", "size": "XS", "kernel": 3, "input_side": 32, "classes": 10,
        "batch_size": 256, "device_kind": "cuda", "batches": 10}),
        &[],
        &[("measure.json", oom.to_string())],
    );

    for (n, r) in RUNS.iter().enumerate() {
        let epochs = 4;
        let mut csv = String::from("epoch,train_loss,train_accuracy,train_cra_36,eval_loss,eval_accuracy,eval_cra_36,eval_cra_72,eval_cra_108,eval_cra_255,eval_margin_median,lr,momentum,seconds\n");
        for e in 1..=epochs {
            let (loss, cra) = if r.diverged && e > 2 {
                ("NaN".to_string(), 0.0)
            } else {
                (format!("{}", 2.0 / e as f64), r.cra[0] * e as f64 / epochs as f64)
            };
            csv.push_str(&format!("{e},{loss},0.5,0.3,1.0,0.5,{cra},0.2,0.1,0.01,0.2,0.01,0.9,1.5\n"));
        }
        let status = if r.diverged { "diverged" } else { "ok" };
        let run_status = if r.diverged { RunStatus::Diverged } else { RunStatus::Completed };
        let attempts = vec![Attempt { index: 0, seed: 0, status: run_status, epochs_completed: 3, divergence: None }];
        let tj = train_json(run_status, attempts, epochs, 1.5 + n as f64);
        let cfg = json!({"dataset": "cifar10", "method": r.method, "size": r.size, "kernel": 3, "classes": 10,
            "epochs": epochs, "lr": 0.0573, "wd": 3.68e-5, "seed": 0, "batch_size": 256, "max_retries": 2,
            "train_per_class": null, "test_per_class": null, "eval_split": "test", "budget_hours": r.budget});
        let train = put(&store, "train", cfg, &[prep.clone()], &[("epochs.csv", csv), ("train.json", tj.to_string())]);
        let cert = json!({"status": status, "n": 10000, "accuracy": r.accuracy,
            "cra": {"0": r.accuracy, "36/255": r.cra[0], "72/255": r.cra[1], "108/255": r.cra[2], "1": r.cra[3]},
            "lipschitz": {"bound": 0.9987, "per_layer": [1.0], "method": "power iteration"}, "margin_median": 0.3, "infer_seconds": 1.2});
        put(
            &store,
            "certify",
            json!({"split": "test", "audit_iterations": 100}),
            &[train],
            &[("certify.json", cert.to_string())],
        );
    }
}

/// The `train.json` of a run of `epochs` epochs that ended with `status` after `attempts`, written
/// through the record type the train stage writes it with.
fn train_json(status: RunStatus, attempts: Vec<Attempt>, epochs: u64, seconds_per_epoch: f64) -> String {
    let completed = status == RunStatus::Completed;
    let record = TrainRecord {
        outcome: TrainOutcome {
            status,
            attempts,
            model_file: completed.then(|| "model.safetensors".into()),
            stats_file: "epochs.csv".into(),
            last_epoch: None,
            precision: None,
            reason: None,
        },
        epochs: Some(epochs),
        trained: Some(Trained {
            seconds_per_epoch: Some(seconds_per_epoch),
            lr: 0.0573,
            wd: 3.68e-5,
            input_side: 32,
            classes: 10,
            train_images: 50000,
        }),
    };
    String::from_utf8(lipctl::records::to_json(&record).unwrap()).unwrap()
}

fn col_str(df: &DataFrame, c: &str) -> Vec<Option<String>> {
    df.column(c).unwrap().str().unwrap().into_iter().map(|s| s.map(str::to_string)).collect()
}
fn col_f64(df: &DataFrame, c: &str) -> Vec<Option<f64>> {
    df.column(c).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_iter().collect()
}

/// The `<tr>` of the HTML that contains `needle`.
fn row_with<'a>(html: &'a str, needle: &str) -> &'a str {
    let at = html.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the HTML"));
    let start = html[..at].rfind("<tr>").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    &html[start..end]
}

#[test]
fn report_renders_every_table_and_plot_with_the_parquet_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("artifacts");
    build_tree(&root);
    let agg = lipctl::aggregate::run(&root, &lipctl::aggregate::Scope::All).unwrap();
    // Running it again with nothing new is a cache hit on the same key.
    assert!(lipctl::aggregate::run(&root, &lipctl::aggregate::Scope::All).unwrap().cached);
    let out = tmp.path().join("site");
    let prov = lipctl::report::Provenance::current(Some(Path::new("pipelines/smoke.yaml")));
    let done = lipctl::report::render(&agg.dir, &out, &prov).unwrap();
    let html = std::fs::read_to_string(&done.html).unwrap();
    // To look at the page: LIPCTL_KEEP_REPORT=/some/folder cargo test --release --test report
    if let Some(keep) = std::env::var_os("LIPCTL_KEEP_REPORT") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap();
        for entry in std::fs::read_dir(&out).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, keep.join(p.file_name().unwrap())).unwrap();
        }
    }
    let md = std::fs::read_to_string(&done.markdown).unwrap();

    // No template syntax left.
    for text in [&html, &md] {
        assert!(!text.contains("{{") && !text.contains("{%") && !text.contains("%}"), "template placeholder left");
    }
    // Every table is present, with a header and rows.
    for id in ["table2", "budgets", "cost", "radar", "vs_paper", "results"] {
        let at = html.find(&format!("<h2 id=\"{id}\">")).unwrap_or_else(|| panic!("table {id} missing"));
        let table = &html[at..at + html[at..].find("</table>").unwrap()];
        assert!(table.contains("<th>") && table.contains("<td class=\"num\">"), "table {id} has no data");
    }
    // Self-contained: no external resources.
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src=\"http"));
    // Provenance: version, libtorch, dataset checksum, pipeline, budget mode, departures.
    for s in [
        "c0ffee",
        "feedbeef",
        "smoke.yaml",
        "paper",
        "Test GPU",
        env!("CARGO_PKG_VERSION"),
        "Cayley&#x27;s scale alpha",
    ] {
        assert!(html.contains(s), "provenance lacks {s}");
    }

    // The departures: every entry of the one table, in both renderings, nothing else listed.
    let unescaped = html.replace("&#x27;", "'").replace("&#x2F;", "/");
    for d in lipctl::report::DEPARTURES {
        assert!(md.contains(&format!("* **{}.** {}", d.topic, d.text)), "report.md lacks departure {:?}", d.topic);
        assert!(unescaped.contains(&format!("<b>{}.</b>", d.topic)), "index.html lacks departure {:?}", d.topic);
    }
    let section = &md[md.find("## Departures").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    assert_eq!(section.matches("\n* ").count(), lipctl::report::DEPARTURES.len(), "{section}");

    // Every plot is an SVG with data drawn in it, inline in the HTML and a file beside report.md.
    assert!(!done.svgs.is_empty());
    let radars = done.svgs.iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("radar_")).count();
    assert_eq!(radars, 4, "AOL, CPL, LOT, SLL have data");
    let curves = done.svgs.iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("curve_")).count();
    assert_eq!(curves, RUNS.len(), "a learning curve per run");
    for path in &done.svgs {
        let svg = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(svg.trim_start().starts_with("<svg"), "{name} is not an SVG");
        assert!(!svg.contains("no data"), "{name} has no data");
        let drawn = svg.contains("<circle") || svg.contains("<polyline") || svg.contains("<polygon");
        assert!(drawn && svg.contains("points=\"") || svg.contains("cx=\""), "{name} draws nothing");
        assert!(html.contains(svg.trim()), "{name} is not inline in the HTML");
        assert!(md.contains(&format!("]({name})")), "{name} is not linked from report.md");
    }
    for plot in ["pareto_cifar10_k3", "time_vs_size", "train_memory_vs_size", "cra_vs_budget_cifar10_k3", "vs_paper"] {
        assert!(out.join(format!("{plot}.svg")).is_file(), "{plot}.svg missing");
    }

    // Numbers in the HTML equal those in the Parquet file, read back with polars.
    let results = ParquetReader::new(std::fs::File::open(agg.dir.join("results.parquet")).unwrap()).finish().unwrap();
    assert_eq!(
        results.height(),
        RUNS.len() + 2,
        "six runs, and the Standard and out-of-memory LOT measurements no run used"
    );
    let keys = col_str(&results, "key");
    let status = col_str(&results, "status");
    let acc = col_f64(&results, "accuracy");
    let cra = col_f64(&results, "cra_36");
    let spe = col_f64(&results, "seconds_per_epoch");
    let all_runs = &html[html.find("<h2 id=\"results\">").unwrap()..];
    let mut checked = 0;
    for r in 0..results.height() {
        let short: String = keys[r].as_deref().unwrap().chars().take(12).collect();
        let row = row_with(all_runs, &format!(">{short}<"));
        assert!(row.contains(&format!(">{}<", status[r].as_deref().unwrap())), "status of {short}");
        if let (Some(a), Some(c)) = (acc[r], cra[r]) {
            assert!(
                row.contains(&format!(">{a:.1}<")) && row.contains(&format!(">{c:.1}<")),
                "numbers of {short}: {row}"
            );
            checked += 1;
        }
        if let Some(s) = spe[r] {
            // 196 batches of 256 per 50 000-image epoch × the measured median.
            assert!(
                row.contains(&format!(">{}<", lipctl::report::tables::significant(s, 3))),
                "epoch seconds of {short}"
            );
        }
    }
    assert_eq!(checked, RUNS.len());
    // Known values, independent of the code: AOL-XS 24 h accuracy 72.12 % → "72.1", AOL-XS
    // epoch = ceil(50000/256) = 196 batches × 45 ms = 8.82 s.
    assert!(row_with(all_runs, ">72.1<").contains(">8.82<"));

    // Measurements no run used belong to the prepared dataset of their shape (32×32, 10 classes).
    let stage = col_str(&results, "stage");
    let dataset = col_str(&results, "dataset");
    for r in 0..results.height() {
        assert_eq!(dataset[r].as_deref(), Some("cifar10"), "row {r} ({:?})", stage[r]);
    }

    // Diverged and out-of-memory runs are shown as such.
    assert!(row_with(all_runs, ">SLL<").contains("<td class=\"bad\">diverged</td>"));
    assert!(row_with(all_runs, ">LOT<").contains("<td class=\"bad\">oom</td>"));

    // Ours vs paper: AOL-XS CIFAR-10 24 h, paper CRA 59.1 (Table 2), ours 60.04 → diff 0.94.
    let vs = ParquetReader::new(std::fs::File::open(agg.dir.join("vs_paper.parquet")).unwrap()).finish().unwrap();
    let vs = vs
        .lazy()
        .filter(
            col("quantity")
                .eq(lit("CRA 36/255 %"))
                .and(col("method").eq(lit("AOL")))
                .and(col("size").eq(lit("XS")))
                .and(col("budget_hours").eq(lit(24i64))),
        )
        .collect()
        .unwrap();
    assert_eq!(vs.height(), 1);
    const PCT_TOL: f64 = 1e-9; // exact decimal inputs; only float rounding
    assert!((col_f64(&vs, "paper")[0].unwrap() - 59.1).abs() < PCT_TOL);
    assert!((col_f64(&vs, "diff")[0].unwrap() - (60.04 - 59.1)).abs() < PCT_TOL);
    assert!(html.contains(">0.94<"));

    // Markdown: GitHub tables with the same numbers.
    assert!(md.contains("| method |") && md.contains("|---|"));
    assert!(md.contains("| 72.1 |"));
}

#[test]
fn an_empty_store_renders_a_report_that_says_there_is_no_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("artifacts");
    let agg = lipctl::aggregate::run(&root, &lipctl::aggregate::Scope::All).unwrap();
    let prov = lipctl::report::Provenance::current(None);
    let done = lipctl::report::render(&agg.dir, &tmp.path().join("site"), &prov).unwrap();
    let html = std::fs::read_to_string(&done.html).unwrap();
    assert!(!html.contains("{{") && !html.contains("{%"));
    assert!(html.contains("0 training runs"));
    for path in &done.svgs {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.contains("no data"), "{} should say it has no data", path.display());
    }
}

/// A run whose first attempt diverged and whose retry (with the derived seed) completed: its
/// results row, in the Parquet file and in the report, shows the retry's seed, not the
/// configured one.
#[test]
fn a_retried_run_reports_the_seed_that_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("artifacts");
    let store = Store::open(&root).unwrap();
    let meta = json!({"format": 1, "name": "cifar10", "dataset": "cifar10", "classes": ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"], "image_side": 32,
        "train": 50000, "fit": 45000, "val": 5000, "test": 10000, "train_per_class": [], "test_per_class": [],
        "channel_mean": [0.5, 0.5, 0.5], "source_sha256": "feedbeef", "split_seed": 0, "checksum": "c0ffee"});
    let prep = put(&store, "prepare", json!({"dataset": "cifar10"}), &[], &[("meta.json", meta.to_string())]);
    let retry_seed = attempt_seed(0, 1);
    assert_ne!(retry_seed, 0);
    let divergence = lipctl::train::Divergence { epoch: 1, phase: "train".into(), loss: "NaN".into() };
    let attempts = vec![
        Attempt { index: 0, seed: 0, status: RunStatus::Diverged, epochs_completed: 0, divergence: Some(divergence) },
        Attempt { index: 1, seed: retry_seed, status: RunStatus::Completed, epochs_completed: 2, divergence: None },
    ];
    let csv = "epoch,train_loss,eval_accuracy,eval_cra_36\n1,2.0,0.5,0.3\n2,1.0,0.6,0.4\n".to_string();
    let cfg = json!({"dataset": "cifar10", "method": "AOL", "size": "XS", "kernel": 3, "epochs": 2, "lr": 0.0573,
        "wd": 3.68e-5, "seed": 0, "batch_size": 256, "max_retries": 1, "eval_split": "test"});
    let mut info = ManifestInfo::new(TrainRecord::SCHEMA_VERSION, cfg);
    info.inputs = vec![lipctl::store::Key::parse(&prep).unwrap()];
    info.device = Some("cpu (1 threads)".into());
    let key = info.key("train");
    let tj = train_json(RunStatus::Completed, attempts, 2, 1.5);
    store
        .build("train", &key, &info, |dir| {
            std::fs::write(dir.join("epochs.csv"), &csv)?;
            std::fs::write(dir.join(TrainRecord::FILE), &tj)?;
            Ok(())
        })
        .unwrap();
    let agg = lipctl::aggregate::run(&root, &lipctl::aggregate::Scope::All).unwrap();
    let results = ParquetReader::new(std::fs::File::open(agg.dir.join("results.parquet")).unwrap()).finish().unwrap();
    assert_eq!(results.height(), 1, "{results}");
    let seed = results.column("seed").unwrap().i64().unwrap().get(0);
    assert_eq!(seed, Some(retry_seed as i64), "the row shows the seed that trained: {results}");
    assert_eq!(results.column("attempts").unwrap().i64().unwrap().get(0), Some(2));
    // The device is the one the manifest records.
    assert_eq!(col_str(&results, "device"), [Some("cpu (1 threads)".to_string())]);
    let done = lipctl::report::render(&agg.dir, &tmp.path().join("site"), &lipctl::report::Provenance::current(None)).unwrap();
    let html = std::fs::read_to_string(&done.html).unwrap();
    let short: String = key.as_str().chars().take(12).collect();
    let row = row_with(&html[html.find("<h2 id=\"results\">").unwrap()..], &format!(">{short}<"));
    assert!(row.contains(&format!(">{retry_seed}<")), "the report row shows seed {retry_seed}: {row}");
}
