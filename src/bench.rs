//! `lipctl bench`: per method, the median time of a training step (forward, backward, SGD step)
//! and of a cached inference forward (`freeze()` once, then forward) of a whole ConvNet, with
//! warm-up and device synchronisation (design §8: measure speed as ratios in one run, never by a
//! timed test). This is the quick interactive check; the `measure` stage (with memory, OOM as a
//! result and the artifact store) is the pipeline's.
//!
//! The authors' PyTorch seconds per training step, measured with their code on this project's
//! 2-core CPU machine for XS at batch 64, are printed alongside when the run matches that setting.

use crate::device::{kind_name, synchronize};
use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
use crate::progress::Progress;
use anyhow::Context;
use std::io::Write;
use std::time::Instant;
use tch::nn::{Module, ModuleT, OptimizerConfig};
use tch::{nn, Device, Kind, Tensor};

/// The authors' PyTorch code, seconds per training step, ConvNet XS, batch 64, CPU (2 cores).
pub const AUTHORS_CPU_XS_B64_TRAIN_S: [(Method, f64); 8] = [
    (Method::Standard, 0.24),
    (Method::Aol, 0.33),
    (Method::Bcop, 1.0),
    (Method::Cpl, 0.34),
    (Method::Cayley, 1.2),
    (Method::Lot, 7.6),
    (Method::Sll, 0.43),
    (Method::Soc, 0.77),
];

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub size: ModelSize,
    pub batch: i64,
    pub methods: Vec<Method>,
    /// Timed iterations per measurement (the median is reported).
    pub iters: usize,
    /// Untimed iterations first (allocator, cuDNN autotuning, lazily created state).
    pub warmup: usize,
    pub device: Device,
    pub input_side: i64,
    pub classes: i64,
}

impl BenchConfig {
    pub fn new(size: ModelSize, batch: i64, device: Device) -> Self {
        BenchConfig { size, batch, methods: Method::ALL.to_vec(), iters: 10, warmup: 2, device, input_side: 32, classes: 10 }
    }
}

/// One method's result; `error` is set (and the times are `None`) when it could not run, e.g.
/// out of memory or a build error.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub method: Method,
    pub train_ms: Option<f64>,
    pub infer_ms: Option<f64>,
    pub error: Option<String>,
}

/// Times `step` `warmup + iters` times, synchronising the device around each timed call, and
/// returns the median in milliseconds.
fn time_ms(device: Device, warmup: usize, iters: usize, mut step: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        step();
    }
    synchronize(device);
    let times: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            step();
            synchronize(device);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    crate::stats::median(&times)
}

/// Measures one method. Panics inside libtorch (out of memory) are the caller's to catch.
pub fn measure(cfg: &BenchConfig, method: Method) -> anyhow::Result<BenchRow> {
    let vs = nn::VarStore::new(cfg.device);
    let net = ConvNet::new(&vs.root(), NetSpec::new(method, cfg.size, cfg.input_side, cfg.classes))
        .with_context(|| format!("building {method} {}", cfg.size))?;
    let opts = (Kind::Float, cfg.device);
    // Mean-centred pixels in [−½, ½] and random labels: the shapes and ranges of real batches.
    let x = Tensor::rand([cfg.batch, 3, cfg.input_side, cfg.input_side], opts) - 0.5;
    let labels = Tensor::randint(cfg.classes, [cfg.batch], (Kind::Int64, cfg.device));
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }
        .build(&vs, 1e-3)
        .context("building the SGD optimizer")?;
    let train_ms = time_ms(cfg.device, cfg.warmup, cfg.iters, || {
        let loss = net.forward_t(&x, true).cross_entropy_for_logits(&labels);
        opt.backward_step(&loss);
    });
    let infer_ms = {
        let _guard = tch::no_grad_guard();
        let frozen = net.freeze();
        time_ms(cfg.device, cfg.warmup, cfg.iters, || {
            let _ = frozen.forward(&x);
        })
    };
    Ok(BenchRow { method, train_ms: Some(train_ms), infer_ms: Some(infer_ms), error: None })
}

/// A table cell for a failed method: "out of memory", or the first line of the message.
fn short_failure(msg: &str) -> String {
    if msg.contains("out of memory") {
        "out of memory".to_string()
    } else {
        msg.lines().next().unwrap_or("panic").to_string()
    }
}

/// Measures every method of `cfg` and prints the table on `out`, one row as each method finishes
/// (a full run takes minutes on a CPU). A method that fails (build error, out of memory) gets a
/// row with its error; the others still run.
pub fn run(cfg: &BenchConfig, progress: &Progress, out: &mut dyn Write) -> anyhow::Result<Vec<BenchRow>> {
    let compare = cfg.size == ModelSize::XS && cfg.batch == 64 && cfg.device == Device::Cpu && cfg.input_side == 32;
    writeln!(
        out,
        "ConvNet{} {}², batch {}, {} ({} timed iterations, median; {} warm-up)",
        cfg.size,
        cfg.input_side,
        cfg.batch,
        kind_name(cfg.device),
        cfg.iters,
        cfg.warmup
    )?;
    writeln!(out, "{:<9} {:>12} {:>12} {:>16} {:>9}", "method", "train ms", "infer ms", "PyTorch train s", "speed-up")?;
    out.flush()?;
    let mut task = progress.task("bench", cfg.methods.len() as u64);
    let mut rows = Vec::new();
    for &m in &cfg.methods {
        task.set_message(m.name());
        let row = crate::failure::catch(|| measure(cfg, m)).unwrap_or_else(|e| BenchRow {
            method: m,
            train_ms: None,
            infer_ms: None,
            error: Some(short_failure(&format!("{e:#}"))),
        });
        print_row(&row, compare, out)?;
        out.flush()?;
        rows.push(row);
        task.inc(1);
    }
    task.finish("done");
    if compare {
        writeln!(out, "speed-up = authors' PyTorch seconds per training step / lipctl's (same machine, XS, batch 64)")?;
    }
    Ok(rows)
}

fn print_row(r: &BenchRow, compare: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let reference = AUTHORS_CPU_XS_B64_TRAIN_S.iter().find(|(m, _)| *m == r.method).map(|(_, s)| *s);
    match (&r.error, r.train_ms, r.infer_ms) {
        (None, Some(t), Some(i)) => {
            let (ref_s, ratio) = match (compare, reference) {
                (true, Some(s)) => (format!("{s:.2}"), format!("{:.2}×", s * 1e3 / t)),
                _ => ("–".to_string(), "–".to_string()),
            };
            writeln!(out, "{:<9} {t:>12.2} {i:>12.2} {ref_s:>16} {ratio:>9}", r.method.name())?;
        }
        (err, _, _) => {
            writeln!(out, "{:<9} {:>12} {:>12}  {}", r.method.name(), "–", "–", err.as_deref().unwrap_or("no result"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_an_authors_reference_time() {
        for m in Method::ALL {
            assert!(AUTHORS_CPU_XS_B64_TRAIN_S.iter().any(|(r, _)| *r == m), "{m}");
        }
    }
}
