//! `lipctl bench`: per method, the median time of a training step (the step of `train` itself,
//! [`crate::train::step`]: augmentation, forward, offset cross-entropy, backward, fused SGD,
//! per-batch metrics) and of a cached inference forward (`freeze()` once, then forward) of a whole ConvNet, with
//! warm-up and device synchronisation (design §8: measure speed as ratios in one run, never by a
//! timed test). This is the quick interactive check; the `measure` stage (with memory, OOM as a
//! result and the artifact store) is the pipeline's.
//!
//! A reference time per training step is printed alongside, with the speed-up, where the run
//! matches a built-in setting ([`builtin_reference`]): the authors' PyTorch code on a 2-core
//! Intel Xeon (XS and S, batch 64; another CPU model needs its own, `scripts/speed.sh`), or on
//! CUDA the paper's A100 times (Figure 2, batch 256, every size). `--reference FILE` replaces them
//! with times measured in the same sitting by `scripts/authors_bench.py` (a JSON object
//! `{method: seconds}`); `scripts/speed.sh` runs both one after the other.

use crate::device::describe;
use crate::measure::{TIMING_LR, TIMING_MOMENTUM, TIMING_WD};
use crate::nn::{Method, ModelSize, NetSpec};
use crate::progress::Progress;
use crate::train::Synthetic;
use anyhow::Context;
use std::io::Write;
use tch::nn::Module;
use tch::Device;

/// Where a bench's reference seconds per training step come from; it decides what the speed-up
/// column means (printed under the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceSource {
    /// `--reference FILE`: the authors' code, run in the same sitting (`scripts/authors_bench.py`).
    SameSitting,
    /// The authors' code on the 2-core Intel Xeon of this project's earlier machines, batch 64
    /// ([`MethodInfo::authors_cpu_b64_train_s`]). Another CPU model moves the two sides
    /// differently: on a 2-core AMD EPYC the authors' steps took 0.5–0.7 of these times, so this
    /// table gave lipctl's Standard-S 1.97× there where six same-sitting runs gave 1.26–1.71×, and
    /// SOC-S 1.91× against 0.83–1.18× (`scripts/speed.sh`, December 2026). The footer says so.
    ///
    /// [`MethodInfo::authors_cpu_b64_train_s`]: crate::nn::MethodInfo::authors_cpu_b64_train_s
    AuthorsCpu,
    /// The paper's Figure 2 (seconds per epoch on an A100, CIFAR-10, batch 256), divided by the
    /// paper's batches per epoch, ⌈50 000 / 256⌉ = 196 (`data/paper/train_time_per_epoch.csv`, source
    /// `fig2_digitised`; data/paper/README.md). Another GPU than the one lipctl runs on.
    PaperA100,
}

/// Reference seconds per training step by method, and where they come from.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub times: Vec<(Method, f64)>,
    pub source: ReferenceSource,
}

/// The built-in reference times for a setting, if there are any:
/// - on the CPU at batch 64, 32×32 inputs, XS and S: the authors' PyTorch seconds per training
///   step on a 2-core Intel Xeon ([`ReferenceSource::AuthorsCpu`]);
/// - on CUDA at batch 256, 32×32 inputs, every size: the paper's A100 seconds per epoch (Figure 2)
///   ÷ 196 batches ([`ReferenceSource::PaperA100`]).
///
/// Methods without a time (not measured, not in the paper, LOT-L out of memory) are left out and
/// print no ratio; pass times measured in the same sitting with `--reference` (`scripts/speed.sh`
/// does). Errors only if the shipped paper tables do not parse.
pub fn builtin_reference(size: ModelSize, batch: i64, device: Device, input_side: i64) -> anyhow::Result<Option<Reference>> {
    if input_side != 32 {
        return Ok(None);
    }
    if device.is_cuda() {
        if batch != 256 {
            return Ok(None);
        }
        let batches = paper_batches_per_epoch() as f64;
        let times = crate::paper::PaperData::shipped()?
            .train_time_per_epoch
            .iter()
            .filter(|r| r.size == size && r.source == crate::paper::TimeSource::Fig2Digitised)
            .filter_map(|r| Some((r.method.layer()?, r.seconds_per_epoch? / batches)))
            .collect();
        return Ok(Some(Reference { times, source: ReferenceSource::PaperA100 }));
    }
    if batch != 64 || device != Device::Cpu {
        return Ok(None);
    }
    let time = |m: Method| {
        let t = m.info().authors_cpu_b64_train_s;
        match size {
            ModelSize::XS => t.xs,
            ModelSize::S => t.s,
            _ => None,
        }
    };
    Ok(match size {
        ModelSize::XS | ModelSize::S => Some(Reference {
            times: Method::ALL.into_iter().filter_map(|m| time(m).map(|s| (m, s))).collect(),
            source: ReferenceSource::AuthorsCpu,
        }),
        _ => None,
    })
}

/// The paper's training steps per CIFAR-10 epoch at batch 256 (the partial batch counted),
/// ⌈50 000 / 256⌉ = 196: the divisor of [`ReferenceSource::PaperA100`].
fn paper_batches_per_epoch() -> u64 {
    crate::budgets::batches_per_epoch(crate::paper::Dataset::Cifar10.train_images(), 256)
}

/// Reads a `{method: seconds}` JSON object (`scripts/authors_bench.py`'s last line).
pub fn read_reference(path: &std::path::Path) -> anyhow::Result<Vec<(Method, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).with_context(|| format!("{}: no JSON object", path.display()))?;
    let map: std::collections::BTreeMap<String, f64> = serde_json::from_str(line).with_context(|| format!("parsing {}", path.display()))?;
    map.into_iter()
        .map(|(name, s)| Ok((name.parse::<Method>().map_err(|e| anyhow::anyhow!("{name}: {e}"))?, s)))
        .collect()
}

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
    /// Reference seconds per training step to compare with; `None`: the built-in table for the
    /// setting ([`builtin_reference`]), if any.
    pub reference: Option<Vec<(Method, f64)>>,
}

impl BenchConfig {
    pub fn new(size: ModelSize, batch: i64, device: Device) -> Self {
        BenchConfig { size, batch, methods: Method::ALL.to_vec(), iters: 10, warmup: 2, device, input_side: 32, classes: 10, reference: None }
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

/// Times `step` `warmup + iters` times ([`crate::measure::time_batches`]) and returns the median
/// in milliseconds.
fn time_ms(device: Device, warmup: usize, iters: usize, step: impl FnMut()) -> f64 {
    let mut task = Progress::hidden().task("bench", 0);
    let seconds = crate::measure::time_batches(device, warmup as u32, iters.max(1) as u32, &mut task, step);
    crate::stats::median(&seconds) * 1e3
}

/// Measures one method. Panics inside libtorch (out of memory) are the caller's to catch.
pub fn measure(cfg: &BenchConfig, method: Method) -> anyhow::Result<BenchRow> {
    let spec = NetSpec::new(method, cfg.size, cfg.input_side, cfg.classes);
    // Random uint8 images and labels: the types, shapes and ranges of real batches.
    let mut model = Synthetic::new(spec, cfg.batch, cfg.device, 0, TIMING_LR, TIMING_MOMENTUM, TIMING_WD)
        .with_context(|| format!("building {method} {}", cfg.size))?;
    let mut failure = None;
    let train_ms = time_ms(cfg.device, cfg.warmup, cfg.iters, || {
        if let Err(e) = model.train_step() {
            failure.get_or_insert(e);
        }
    });
    if let Some(e) = failure {
        return Err(e.context(format!("training step of {method} {}", cfg.size)));
    }
    let infer_ms = {
        let _guard = tch::no_grad_guard();
        let frozen = model.net.freeze()?;
        time_ms(cfg.device, cfg.warmup, cfg.iters, || {
            let _ = frozen.forward(&model.centred);
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
    // On the CPU the model name too: the built-in reference holds for one CPU model.
    let device = match (cfg.device, crate::device::cpu_model_name()) {
        (Device::Cpu, Some(model)) => format!("{}, {model}", describe(cfg.device)),
        _ => describe(cfg.device),
    };
    let reference = match &cfg.reference {
        Some(times) => Some(Reference { times: times.clone(), source: ReferenceSource::SameSitting }),
        None => builtin_reference(cfg.size, cfg.batch, cfg.device, cfg.input_side)?,
    };
    writeln!(
        out,
        "ConvNet{} {}², batch {}, {} ({} timed iterations, median; {} warm-up)",
        cfg.size,
        cfg.input_side,
        cfg.batch,
        device,
        cfg.iters,
        cfg.warmup
    )?;
    writeln!(out, "{:<9} {:>12} {:>12} {:>16} {:>9}", "method", "train ms", "infer ms", "PyTorch train s", "speed-up")?;
    let mut ratios = Vec::new();
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
        if let Some(r) = print_row(&row, reference.as_ref().map(|r| r.times.as_slice()), out)? {
            ratios.push(r);
        }
        out.flush()?;
        rows.push(row);
        task.inc(1);
    }
    task.finish("done");
    if let Some(reference) = &reference {
        let slowest = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        writeln!(out, "{}", footer(reference.source, cfg, &device, slowest))?;
    }
    Ok(rows)
}

/// The line(s) under the table saying what the speed-up column compares, for `cfg` on the
/// device described as `device`; `slowest`: the lowest speed-up in the table (∞ when none).
fn footer(source: ReferenceSource, cfg: &BenchConfig, device: &str, slowest: f64) -> String {
    let lowest = if slowest.is_finite() { format!("{slowest:.2}×") } else { "–".into() };
    let (size, batch) = (cfg.size, cfg.batch);
    match source {
        ReferenceSource::SameSitting => format!(
            "speed-up = the authors' PyTorch seconds per training step, measured in this sitting, / lipctl's ({size}, batch {batch}); lowest {lowest}"
        ),
        ReferenceSource::AuthorsCpu => format!(
            "speed-up = the authors' PyTorch seconds per training step on a 2-core Intel Xeon (built-in) / lipctl's on {device} ({size}, batch {batch}); lowest {lowest}\n\
             a ratio for that CPU only: on another model, measure both sides in one sitting (scripts/speed.sh, or --reference)"
        ),
        ReferenceSource::PaperA100 => format!(
            "speed-up = the paper's A100 seconds per training step (Figure 2 ÷ {} batches of 256, CIFAR-10) / lipctl's on {device} ({size}, batch {batch}); lowest {lowest}\n\
             another GPU than the paper's, and the paper's times come from a digitised plot: a scale, not a like-for-like ratio",
            paper_batches_per_epoch()
        ),
    }
}

/// Prints one row; returns the speed-up when there is a reference time for the method.
fn print_row(r: &BenchRow, reference: Option<&[(Method, f64)]>, out: &mut dyn Write) -> anyhow::Result<Option<f64>> {
    let reference = reference.and_then(|t| t.iter().find(|(m, _)| *m == r.method)).map(|(_, s)| *s).filter(|s| s.is_finite());
    match (&r.error, r.train_ms, r.infer_ms) {
        (None, Some(t), Some(i)) => {
            let (ref_s, ratio) = match reference {
                Some(s) => (format!("{s:.4}"), Some(s * 1e3 / t)),
                None => ("–".to_string(), None),
            };
            let shown = ratio.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into());
            writeln!(out, "{:<9} {t:>12.2} {i:>12.2} {ref_s:>16} {shown:>9}", r.method.name())?;
            Ok(ratio)
        }
        (err, _, _) => {
            writeln!(out, "{:<9} {:>12} {:>12}  {}", r.method.name(), "–", "–", err.as_deref().unwrap_or("no result"))?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_reference_has_the_paper_methods_at_xs_and_s_and_none_elsewhere() {
        let xs = builtin_reference(ModelSize::XS, 64, Device::Cpu, 32).unwrap().unwrap();
        assert_eq!(xs.source, ReferenceSource::AuthorsCpu);
        for m in Method::in_paper() {
            assert!(xs.times.iter().any(|(r, _)| *r == m), "{m}");
        }
        assert_eq!(xs.times.iter().find(|(m, _)| *m == Method::Standard).map(|(_, s)| *s), Some(0.37));
        // S: every paper method but Cayley (the authors' Cayley livelocks at 2 threads), each
        // slower than at XS.
        let s = builtin_reference(ModelSize::S, 64, Device::Cpu, 32).unwrap().unwrap();
        for m in Method::in_paper().into_iter().filter(|&m| m != Method::Cayley) {
            let (at_s, at_xs) = (s.times.iter().find(|(r, _)| *r == m), xs.times.iter().find(|(r, _)| *r == m));
            assert!(matches!((at_s, at_xs), (Some((_, a)), Some((_, b))) if a > b), "{m}: S {at_s:?}, XS {at_xs:?}");
        }
        assert!(builtin_reference(ModelSize::XS, 128, Device::Cpu, 32).unwrap().is_none());
        assert!(builtin_reference(ModelSize::M, 64, Device::Cpu, 32).unwrap().is_none());
        // The CPU times are not a GPU's reference, nor the paper's batch a CPU's.
        assert!(builtin_reference(ModelSize::XS, 64, Device::Cuda(0), 32).unwrap().is_none());
        assert!(builtin_reference(ModelSize::XS, 256, Device::Cpu, 32).unwrap().is_none());
    }

    #[test]
    fn the_cuda_footer_names_the_papers_196_batches_and_the_device() {
        let cfg = BenchConfig::new(ModelSize::S, 256, Device::Cuda(0));
        let text = footer(ReferenceSource::PaperA100, &cfg, "cuda:0 NVIDIA H200", 0.5);
        // ⌈50 000 / 256⌉ = 196, by hand.
        assert!(text.contains("Figure 2 ÷ 196 batches of 256"), "{text}");
        assert!(text.contains("on cuda:0 NVIDIA H200 (S, batch 256); lowest 0.50×"), "{text}");
        assert!(text.contains("a scale, not a like-for-like ratio"), "{text}");
        // No ratio at all: a dash, not "inf×".
        let none = footer(ReferenceSource::AuthorsCpu, &BenchConfig::new(ModelSize::XS, 64, Device::Cpu), "cpu (2 threads), AMD EPYC", f64::INFINITY);
        assert!(none.contains("on cpu (2 threads), AMD EPYC (XS, batch 64); lowest –\n"), "{none}");
        // The built-in CPU times name the CPU they hold for.
        assert!(none.contains("on a 2-core Intel Xeon (built-in)") && none.contains("scripts/speed.sh"), "{none}");
    }

    #[test]
    fn cuda_reference_at_batch_256_is_the_papers_figure_2_per_batch() {
        // Figure 2 as digitised (data/paper/train_time_per_epoch.csv): seconds per epoch on an A100, divided by
        // ⌈50 000 / 256⌉ = 196 batches, by hand.
        let per_batch = |size, method| {
            let r = builtin_reference(size, 256, Device::Cuda(0), 32).unwrap().unwrap();
            assert_eq!(r.source, ReferenceSource::PaperA100);
            r.times.iter().find(|(m, _)| *m == method).map(|(_, s)| *s)
        };
        let close = |a: Option<f64>, b: f64| matches!(a, Some(a) if (a - b).abs() < 1e-12);
        assert!(close(per_batch(ModelSize::XS, Method::Standard), 6.22 / 196.0));
        assert!(close(per_batch(ModelSize::S, Method::Cayley), 34.7 / 196.0));
        assert!(close(per_batch(ModelSize::M, Method::Lot), 615.0 / 196.0));
        assert!(close(per_batch(ModelSize::L, Method::Soc), 93.5 / 196.0));
        // LOT-L ran out of memory on the A100; the methods added since the paper have no time.
        assert_eq!(per_batch(ModelSize::L, Method::Lot), None);
        assert_eq!(per_batch(ModelSize::XS, Method::Bro), None);
        // Every paper method at XS, once (the Table 8-derived rows are not Figure 2's).
        let xs = builtin_reference(ModelSize::XS, 256, Device::Cuda(0), 32).unwrap().unwrap();
        assert_eq!(xs.times.len(), Method::in_paper().count());
        assert!(builtin_reference(ModelSize::XS, 256, Device::Cuda(0), 64).unwrap().is_none());
    }
}
