//! `lipctl doctor --selftest`: does every method compute the same network on this device as the
//! float64 reference on the CPU?
//!
//! For every method of the registry, one ConvNet of [`SelftestOptions::size`] (XS) is built in
//! float32 on the device under test and its weights are copied into the same network in float64
//! on the CPU (the reference; `VarStore::double`). On the same small batch both then run
//!
//! 1. the training forward (`forward_t(x, true)`, training iteration counts) and the backward of
//!    the training loss: the largest relative difference of the logits ([`FORWARD_TOL`]) and of
//!    every parameter's gradient ([`GRAD_TOL`], [`GRAD_FLOOR`]);
//! 2. the frozen inference forward ([`ConvNet::freeze`], cached weight transforms): the largest
//!    relative difference of the logits;
//! 3. on the device only: the Lipschitz audit of [`crate::certify`] (every layer's σ̂, reported
//!    as their product; each σ̂ must stay ≤ 1 + [`AUDIT_TOL`] for a Lipschitz method) and the
//!    peak-memory statistics (CUDA: the caching allocator's, through the shim; CPU: the peak
//!    resident set).
//!
//! Before 1–3, the device network's parameters are moved off their initialisation (a seeded random
//! [`PERTURBATION`]: at an initialisation some weight transforms are not differentiable, e.g.
//! AOL's `|WᵀW|` at an orthogonal init), then take two SGD steps under the default training
//! precision ([`Tf32Mode::default`]), whose losses must be finite; the reference copies the
//! weights (and layer state) after them.
//!
//! On a CUDA device this compares GPU float32 against CPU float64, on the CPU float32 against
//! float64: the same checks and tolerances either way. Everything except the two training steps
//! runs in full fp32 ([`crate::precision::Fp32Guard`]): TF32's ~1e-3 relative error would fail
//! [`FORWARD_TOL`] by design.
//!
//! A hidden fault injection ([`SelftestOptions::inject_fault`]) scales the device's frozen head
//! output by [`FAULT_SCALE`] (for a linear head: its kernel and bias by 1.01), so that a test can
//! show the check fails when a layer is wrong.

use crate::certify::{audit, convnet_layers, AuditOptions};
use crate::nn::{ConvNet, Method, ModelSize, NetSpec};
use crate::precision::{Fp32Guard, ModeGuard, Tf32Mode};
use crate::progress::Progress;
use crate::eval::lipschitz_loss;
use crate::train::sgd::Sgd;
use anyhow::Context;
use std::io::Write;
use std::time::Instant;
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

/// Largest allowed relative difference (max |device − reference| / max |reference|) of the logits,
/// training forward and frozen forward. A float32 XS network is 27 layers deep and most methods
/// iterate inside a layer (Björck, Newton, power iteration, Taylor series); measured differences
/// against float64 are 1e-7 to 2e-5 (LOT) on the CPU. 1e-4 leaves a factor 6 for other devices'
/// summation orders while failing TF32 (~1e-3) and any real error (a 1 % fault gives 1e-2).
pub const FORWARD_TOL: f64 = 1e-4;

/// Largest allowed difference of one parameter's gradient: max |device − reference| over
/// max(max |reference|, [`GRAD_FLOOR`] · the largest gradient entry of the network). Backward
/// passes accumulate more rounding than forwards (Cayley's and LOT's complex inverses and
/// Newton iterations most: measured 4e-5 and 1e-4 on the CPU, against ≤ 1e-5 elsewhere);
/// 1e-3 leaves a factor 10 and still fails any real error.
pub const GRAD_TOL: f64 = crate::nn::registry::Tolerances::STRICT.selftest_gradient;

/// A gradient smaller than this fraction of the network's largest is compared in absolute terms
/// (at that fraction): its digits are lost to cancellation, in float32 as in any precision, so a
/// relative difference would measure noise (e.g. LOT's biases of channels the network drops,
/// whose exact gradient is 0).
pub const GRAD_FLOOR: f64 = 1e-2;

/// A Lipschitz method's layers must have audited σ̂ ≤ 1 + AUDIT_TOL: the per-layer tolerance of
/// the layer tests (tests/common `LIPSCHITZ_TOL`), which leaves two orders of magnitude for
/// float32 rounding and none for a real violation.
pub const AUDIT_TOL: f64 = crate::nn::registry::Tolerances::STRICT.selftest_audit;

/// Power-iteration steps per layer in the self-test's audit: enough for the estimate to settle
/// at initialisation (orthogonal layers converge in one step), cheap enough for 8 methods on a
/// CPU. The estimate is a lower bound either way.
pub const AUDIT_ITERATIONS: usize = 20;

/// The factor by which [`SelftestOptions::inject_fault`] scales the frozen head's output.
pub const FAULT_SCALE: f64 = 1.01;

/// Random move of every parameter away from its initialisation, relative to its RMS, before the
/// comparison. At an initialisation some weight transforms are not differentiable and rounding
/// picks the subgradient: AOL's `|WᵀW|` of an orthogonal head has off-diagonal entries that are
/// rounding noise, so float32 and float64 take different signs (measured: 9e-3 gradient
/// difference after two training steps alone). 10 % keeps every layer well conditioned (LOT's and
/// Cayley's per-frequency inverses) while putting the comparison at a generic point.
const PERTURBATION: f64 = 0.1;

/// Learning rate and momentum of the two training steps (the paper's range; the check is that
/// the loss stays finite, not that it decreases).
const STEP_LR: f64 = 0.01;
const STEP_MOMENTUM: f64 = 0.9;

/// Seed of the weights, the batch and the audit.
const SEED: i64 = 0;

/// What to check.
#[derive(Clone, Debug)]
pub struct SelftestOptions {
    pub device: Device,
    pub methods: Vec<Method>,
    pub size: ModelSize,
    /// Images per batch: a handful is enough to exercise every kernel.
    pub batch: i64,
    pub input_side: i64,
    pub classes: i64,
    /// Test-only: corrupt the device's frozen network (see the module doc).
    pub inject_fault: bool,
}

impl SelftestOptions {
    /// Every method at XS, 32×32 inputs, 10 classes, a batch of 2.
    pub fn new(device: Device) -> Self {
        SelftestOptions {
            device,
            methods: Method::ALL.to_vec(),
            size: ModelSize::XS,
            batch: 2,
            input_side: 32,
            classes: 10,
            inject_fault: false,
        }
    }
}

/// The result of one method.
#[derive(Clone, Debug)]
pub struct MethodCheck {
    pub method: Method,
    /// Relative difference of the training-forward logits.
    pub forward: f64,
    /// Relative difference of the frozen-forward logits.
    pub frozen: f64,
    /// Largest relative gradient difference, and its parameter.
    pub gradient: f64,
    pub gradient_param: String,
    /// Product of the audited per-layer σ̂ on the device.
    pub bound: f64,
    /// Largest audited σ̂ and its layer.
    pub worst_layer: (String, f64),
    /// Peak bytes: the CUDA allocator's over this method's work, or the process's peak resident
    /// set on the CPU (monotone over the run).
    pub peak_bytes: Option<u64>,
    /// Losses of the two training steps.
    pub losses: [f64; 2],
    pub seconds: f64,
    /// What failed, in words; empty when the method passed.
    pub failures: Vec<String>,
}

/// The self-test's result.
#[derive(Clone, Debug)]
pub struct Selftest {
    /// The device under test, in words.
    pub device: String,
    /// What it was compared against.
    pub reference: String,
    pub methods: Vec<MethodCheck>,
    pub seconds: f64,
}

impl Selftest {
    /// Every failure, prefixed with its method.
    pub fn failures(&self) -> Vec<String> {
        self.methods.iter().flat_map(|m| m.failures.iter().map(move |f| format!("{}: {f}", m.method))).collect()
    }

    pub fn passed(&self) -> bool {
        self.methods.iter().all(|m| m.failures.is_empty())
    }

    /// The table, then the failures (or "all checks passed").
    pub fn print(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        writeln!(out, "self-test on {} against {}", self.device, self.reference)?;
        writeln!(
            out,
            "tolerances: forward/frozen ≤ {FORWARD_TOL:.0e}, gradients ≤ {GRAD_TOL:.0e}, audited layer σ ≤ 1 + {AUDIT_TOL:.0e} (unless the method's registry tolerances say otherwise)"
        )?;
        writeln!(
            out,
            "{:<9} {:>9} {:>9} {:>9}  {:>10} {:>9} {:>19} {:>7}  status",
            "method", "forward", "frozen", "gradient", "bound", "peak MiB", "losses (2 steps)", "s"
        )?;
        for m in &self.methods {
            let peak = m.peak_bytes.map(|b| format!("{:.1}", b as f64 / (1u64 << 20) as f64)).unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{:<9} {:>9.1e} {:>9.1e} {:>9.1e}  {:>10.6} {:>9} {:>9.4} {:>9.4} {:>7.1}  {}",
                m.method.to_string(),
                m.forward,
                m.frozen,
                m.gradient,
                m.bound,
                peak,
                m.losses[0],
                m.losses[1],
                m.seconds,
                if m.failures.is_empty() { "ok" } else { "FAILED" }
            )?;
        }
        let failures = self.failures();
        if failures.is_empty() {
            writeln!(out, "all checks passed ({} methods, {:.1} s)", self.methods.len(), self.seconds)?;
        } else {
            writeln!(out, "{} check(s) failed:", failures.len())?;
            for f in failures {
                writeln!(out, "  {f}")?;
            }
        }
        Ok(())
    }
}

/// Runs the self-test (module doc). `Err` only when a check could not run at all (the device
/// is missing, a network cannot be built); a failed check is a [`MethodCheck::failures`] entry.
pub fn run(opts: &SelftestOptions, progress: &Progress) -> anyhow::Result<Selftest> {
    anyhow::ensure!(opts.batch >= 1, "the self-test needs at least one image per batch, got {}", opts.batch);
    let started = Instant::now();
    let _fp32 = Fp32Guard::new()?;
    let mut task = progress.task(&format!("self-test on {}", crate::device::kind_name(opts.device)), opts.methods.len() as u64);
    let mut methods = Vec::new();
    for &method in &opts.methods {
        task.set_message(method.to_string());
        let check = check_method(method, opts).with_context(|| format!("self-test of {method}"))?;
        methods.push(check);
        task.inc(1);
    }
    task.finish("done");
    let reference = "float64 on the CPU (same weights and inputs)".to_string();
    Ok(Selftest { device: device_words(opts.device), reference, methods, seconds: started.elapsed().as_secs_f64() })
}

fn device_words(device: Device) -> String {
    let record = crate::precision::PrecisionRecord::describe(device, crate::precision::Tf32::OFF);
    format!("{} ({}, float32)", record.device, record.device_name)
}

/// Largest |a − b| over largest |b|, computed in f64 on the CPU.
fn max_relative(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let a = a.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    let b = b.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    let diff = (&a - &b).f_abs()?.f_max()?.f_double_value(&[])?;
    let scale = b.f_abs()?.f_max()?.f_double_value(&[])?;
    Ok(if scale > 0.0 { diff / scale } else { diff })
}

/// A measured difference as a failure when above `tol` (NaN fails too).
fn exceeds(what: &str, value: f64, tol: f64) -> Option<String> {
    let within = value <= tol;
    (!within).then(|| format!("{what} differs from the reference by {value:.2e} (tolerance {tol:.0e})"))
}

fn check_method(method: Method, opts: &SelftestOptions) -> anyhow::Result<MethodCheck> {
    let started = Instant::now();
    let device = opts.device;
    let spec = NetSpec::new(method, opts.size, opts.input_side, opts.classes);
    let mut failures = Vec::new();

    // Peak-memory statistics: CUDA's allocator over this method's work, or the process's VmHWM.
    let probe = match device {
        Device::Cuda(i) => Some(crate::measure::cuda_memory::Probe::new(i).map_err(|e| anyhow::anyhow!("{e}"))?),
        _ => None,
    };
    let base = match &probe {
        Some(p) => Some(p.begin().context("resetting the CUDA peak-memory statistics")?),
        None => None,
    };

    tch::manual_seed(SEED);
    let vs_dev = nn::VarStore::new(device);
    let net_dev = ConvNet::new(&vs_dev.root(), spec)?;
    let x32 = Tensor::f_rand([opts.batch, 3, opts.input_side, opts.input_side], (Kind::Float, Device::Cpu))? - 0.5;
    let y = Tensor::f_randint(opts.classes, [opts.batch], (Kind::Int64, Device::Cpu))?;
    let (x_dev, y_dev) = (x32.f_to_device(device)?, y.f_to_device(device)?);

    perturb(&vs_dev)?;

    // 1. Two training steps on the device, as training runs them (the default TF32 mode).
    let losses = {
        let _tf32 = ModeGuard::new(Tf32Mode::default())?;
        let mut opt = Sgd::new(&vs_dev, STEP_LR, STEP_MOMENTUM, 0.0);
        let mut losses = [f64::NAN; 2];
        for slot in losses.iter_mut() {
            opt.zero_grad();
            let loss = lipschitz_loss(&net_dev.forward_t(&x_dev, true), &y_dev)?;
            loss.f_backward().context("training step backward")?;
            opt.step()?;
            *slot = loss.f_double_value(&[])?;
        }
        opt.zero_grad();
        losses
    };
    if !losses.iter().all(|l| l.is_finite()) {
        failures.push(format!("training losses {losses:?} are not finite"));
    }

    // The reference: the same weights and state, in f64 on the CPU.
    let mut vs_ref = nn::VarStore::new(Device::Cpu);
    let net_ref = ConvNet::new(&vs_ref.root(), spec)?;
    vs_ref.copy(&vs_dev).context("copying the weights to the reference")?;
    vs_ref.double();
    let x_ref = x32.f_to_kind(Kind::Double)?;

    // 2. Training forward and backward.
    let out_dev = net_dev.forward_t(&x_dev, true);
    let out_ref = net_ref.forward_t(&x_ref, true);
    lipschitz_loss(&out_dev, &y_dev)?.f_backward().context("backward on the device")?;
    lipschitz_loss(&out_ref, &y)?.f_backward().context("backward of the reference")?;
    let forward = max_relative(&out_dev, &out_ref)?;
    failures.extend(exceeds("training forward", forward, FORWARD_TOL));
    let (gradient, gradient_param) = gradient_difference(&vs_dev, &vs_ref, &mut failures)?;
    failures.extend(exceeds(&format!("gradient of {gradient_param}"), gradient, method.info().tolerances.selftest_gradient));

    // 3. Frozen (cached) inference forward.
    let frozen = {
        let _no_grad = tch::no_grad_guard();
        let mut f_dev = net_dev.freeze()?.forward(&x_dev);
        if opts.inject_fault {
            f_dev *= FAULT_SCALE;
        }
        let f_ref = net_ref.freeze()?.forward(&x_ref);
        max_relative(&f_dev, &f_ref)?
    };
    failures.extend(exceeds("frozen forward", frozen, FORWARD_TOL));

    // 4. The audit on the device, once the layers' power-iteration state has caught up with the
    // perturbed weights (the registry's warm-up: CPL's stored vector needs ~100 training
    // forwards; the sound bound shows a stale one as σ ≈ 1.0075).
    tch::no_grad(|| {
        for _ in 0..method.info().tolerances.train_warmup_forwards {
            let _ = net_dev.forward_t(&x_dev, true);
        }
    });
    let (bound, worst) = audit_check(method, &net_dev, device, &mut failures)?;

    // 5. Peak memory of everything above.
    let peak_bytes = peak_memory(probe.as_ref(), base, &mut failures);
    if let Some(p) = &probe {
        p.empty_cache();
    }

    Ok(MethodCheck {
        method,
        forward,
        frozen,
        gradient,
        gradient_param,
        bound,
        worst_layer: worst,
        peak_bytes,
        losses,
        seconds: started.elapsed().as_secs_f64(),
        failures,
    })
}

/// The audit of `net` on `device`: the bound (product of the layers' norms) and the worst layer;
/// a non-finite bound, or a Lipschitz method's layer above `1 + AUDIT_TOL`, is a failure.
fn audit_check(method: Method, net: &ConvNet, device: Device, failures: &mut Vec<String>) -> anyhow::Result<(f64, (String, f64))> {
    let audit_opts = AuditOptions { max_iterations: AUDIT_ITERATIONS, tolerance: 1e-6, seed: SEED, random_points: 0 };
    let audited = audit(&convnet_layers(net)?, device, &audit_opts)?;
    let worst = audited
        .layers
        .iter()
        .max_by(|a, b| a.sigma.total_cmp(&b.sigma))
        .map(|l| (l.name.clone(), l.sigma))
        .unwrap_or_default();
    if !audited.product.is_finite() {
        failures.push(format!("audited bound is {}", audited.product));
    } else if method.is_lipschitz() && worst.1 > 1.0 + method.info().tolerances.selftest_audit {
        let tol = method.info().tolerances.selftest_audit;
        failures.push(format!("layer {} audited at σ = {:.6} > 1 + {tol:.0e}", worst.0, worst.1));
    }
    Ok((audited.product, worst))
}

/// Peak memory since `base`: CUDA's allocator where there is a probe, else the process's VmHWM.
/// A reading that fails (or a CUDA peak of 0) is a failure and gives `None`.
fn peak_memory(probe: Option<&crate::measure::cuda_memory::Probe>, base: Option<u64>, failures: &mut Vec<String>) -> Option<u64> {
    match (probe, base) {
        (Some(p), Some(base)) => match p.peak_since(base) {
            Ok(b) if b > 0 => Some(b),
            Ok(_) => {
                failures.push("the CUDA allocator reports no memory used".into());
                None
            }
            Err(e) => {
                failures.push(format!("CUDA peak-memory statistics: {e:#}"));
                None
            }
        },
        _ => match crate::measure::read_proc_status_kib("VmHWM") {
            Ok(kib) => Some(kib * 1024),
            Err(e) => {
                failures.push(format!("peak resident set: {e:#}"));
                None
            }
        },
    }
}

/// Moves every trainable parameter by [`PERTURBATION`] of its RMS in a random direction (zero
/// parameters, i.e. biases at init, stay; the training steps move them).
fn perturb(vs: &nn::VarStore) -> anyhow::Result<()> {
    let _no_grad = tch::no_grad_guard();
    for mut p in vs.trainable_variables() {
        let rms = p.f_square()?.f_mean(Kind::Double)?.f_double_value(&[])?.sqrt();
        if rms > 0.0 {
            let noise = p.f_randn_like()?.f_mul_scalar(PERTURBATION * rms)?;
            let _ = p.f_add_(&noise)?;
        }
    }
    Ok(())
}

/// The largest gradient difference over the trainable parameters (see [`GRAD_TOL`]) and its
/// parameter; a parameter with a gradient on one side only is a failure.
fn gradient_difference(dev: &nn::VarStore, reference: &nn::VarStore, failures: &mut Vec<String>) -> anyhow::Result<(f64, String)> {
    let (dev_vars, ref_vars) = (dev.variables(), reference.variables());
    let mut names: Vec<&String> = ref_vars.iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
    names.sort();
    let mut pairs = Vec::new();
    for name in names {
        let (g_ref, g_dev) = (ref_vars[name].grad(), dev_vars.get(name).map(|t| t.grad()));
        match g_dev {
            Some(g_dev) if g_dev.defined() && g_ref.defined() => {
                let g_dev = g_dev.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
                let diff = (&g_dev - &g_ref).f_abs()?.f_max()?.f_double_value(&[])?;
                let scale = g_ref.f_abs()?.f_max()?.f_double_value(&[])?;
                pairs.push((name.clone(), diff, scale));
            }
            Some(g_dev) if g_dev.defined() == g_ref.defined() => {}
            _ => failures.push(format!("parameter {name} has a gradient on one side only")),
        }
    }
    let largest = pairs.iter().map(|p| p.2).fold(0.0f64, f64::max);
    let mut worst = (0.0f64, String::new());
    for (name, diff, scale) in pairs {
        let floor = (GRAD_FLOOR * largest).max(f64::MIN_POSITIVE);
        let d = diff / scale.max(floor);
        // Keep the worst; a NaN is the worst and stays.
        if !worst.0.is_nan() && (d.is_nan() || d > worst.0) {
            worst = (d, name);
        }
    }
    Ok(worst)
}
