//! `lipctl doctor --selftest` through the real binary on the CPU (float32 against float64, every
//! method), and the same self-test failing when a layer is deliberately wrong.

use std::process::{Command, Output};

fn lipctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lipctl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        // One libtorch thread: the two tests of this file run side by side on a 2-core machine.
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("the lipctl binary runs")
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The table's row of every method, by its first word.
fn rows(out: &str) -> Vec<(String, String)> {
    let names: Vec<String> = lipctl::nn::Method::ALL.iter().map(|m| m.to_string()).collect();
    out.lines()
        .filter_map(|l| {
            let first = l.split_whitespace().next()?;
            names.contains(&first.to_string()).then(|| (first.to_string(), l.to_string()))
        })
        .collect()
}

#[test]
fn selftest_passes_on_the_cpu_for_every_method() {
    let o = lipctl(&["doctor", "--selftest", "--device", "cpu"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("float64 on the CPU") && out.contains("all checks passed"), "{out}");
    let rows = rows(&out);
    assert_eq!(rows.len(), lipctl::nn::Method::ALL.len(), "{out}");
    assert!(rows.iter().all(|(_, r)| r.trim_end().ends_with("ok")), "{out}");
}

#[test]
fn selftest_fails_with_exit_1_when_a_frozen_layer_is_off_by_one_percent() {
    // Three cheap methods (LOT alone takes half a minute on a small CPU); the fault is the same.
    let o = lipctl(&["doctor", "--selftest", "--device", "cpu", "--inject-fault", "--methods", "AOL,SLL,SOC"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    // Every method is caught, by the frozen-forward check, with the size of the fault.
    let rows = rows(&out);
    assert_eq!(rows.len(), 3, "{out}");
    for (method, row) in rows {
        assert!(row.trim_end().ends_with("FAILED"), "{method} passed: {out}");
        assert!(out.contains(&format!("{method}: frozen forward differs from the reference by 1.00e-2")), "{method}: {out}");
    }
    assert!(out.contains("check(s) failed"), "{out}");
}
