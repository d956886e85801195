//! `lipctl measure`: what a (method, size, input shape, batch size, device) costs — seconds per
//! training and per inference batch, peak memory in training and inference, parameter count
//! (reference-protocol §8, paper §4.1 and App. E.7, Figures 2–4).
//!
//! **Timing** (§8.1). A training batch is the training step of `train` itself
//! ([`crate::train::step`]: gather, centring and augmentation of a uint8 batch, forward, offset
//! cross-entropy, backward, the fused SGD with momentum and weight decay, the per-batch metrics
//! and the periodic divergence check), so a measured budget is the wall clock of real training
//! (lr 1e-3, momentum 0.9 as R1's timing; weight decay 1e-4). An inference batch is a forward
//! pass of [`ConvNet::freeze`]'s network under no-grad, so every input-independent weight transform
//! is computed once beforehand (`parametrize.cached()` in the paper). The batch lives on the device
//! before timing starts (lipctl keeps datasets on the device; the authors' data-loader wait was
//! outside their interval too). After `warmup` untimed batches, each of `batches` batches is timed
//! on its own with the device synchronised before and after ([`crate::device::synchronize`];
//! the authors' code never synchronised, design §5). Reported: median, mean and population standard
//! deviation (numpy's default, as the authors) of those batches.
//!
//! **Memory** (§8.2): peak bytes over `memory_steps` (3, as R1) training steps of a freshly built
//! model — weights, gradients, momentum buffers, activations, temporaries and the batch — and over
//! 3 cached forward passes (weights, cached transforms, activations, batch).
//! * On CUDA: libtorch's caching-allocator statistic (peak allocated bytes, reset before each
//!   measurement, minus the bytes already allocated then), i.e. `torch.cuda.max_memory_allocated()`
//!   as in the paper; read through the shim `src/shim/cuda_memory.cpp`.
//! * On the CPU libtorch keeps no such statistic, so each phase runs in an isolated child process
//!   (this executable again; see [`ChildLauncher`]) that reports the growth of its peak resident set
//!   (`VmHWM` of `/proc/self/status`) over its resident set just before the work. The child loads
//!   libtorch and runs a tiny warm-up op first, so the code pages libtorch touches on every op are
//!   in the baseline; a few MB of further code pages and allocator slack remain in the figure, so
//!   CPU numbers are upper bounds on tensor bytes, good for comparisons, not exact.
//!
//! **Out of memory** is a result, not a crash (design §7): a libtorch allocation failure ("out of
//! memory" on CUDA, "not enough memory" on the CPU), or a child killed by SIGKILL (the kernel's
//! OOM killer), gives `status: oom` with the message. Any other failure gives `status: failed`.
//!
//! **Precision**: the work runs under the request's TF32 mode (the training option, since a
//! measurement sets training budgets; [`crate::precision`]) and `measure.json` records it.
//!
//! `measure.json` is [`Measurement`] (docs/artifacts.md).

use crate::device;
use crate::nn::convnet::parameter_counts;
use crate::nn::{ConvNet, NetSpec};
use crate::progress::Progress;
use crate::train::Synthetic;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Timed batches per measurement in the paper (§8.1: batches 2..101 of 101).
pub const DEFAULT_BATCHES: u32 = 100;
/// Untimed batches before timing: the first batches pay for lazy initialisation (cuDNN algorithm
/// search, allocator growth, thread pools); the paper drops only the first.
pub const DEFAULT_WARMUP: u32 = 5;
/// Steps (training) or forward passes (inference) whose peak memory is taken (R1: 3).
pub const DEFAULT_MEMORY_STEPS: u32 = 3;
/// Learning rate and momentum of the timed SGD steps (R1 `batch_times.py`), here and in `bench`.
pub const TIMING_LR: f64 = 1e-3;
pub const TIMING_MOMENTUM: f64 = 0.9;
/// Weight decay of the timed steps (any value but 0 costs the same).
pub const TIMING_WD: f64 = 1e-4;
/// Environment variable through which a memory child receives the path of its job file.
pub const CHILD_JOB_ENV: &str = "LIPCTL_MEASURE_JOB";
/// Hidden `lipctl` subcommand that runs a memory child (see [`child_main`]).
pub const CHILD_SUBCOMMAND: &str = "measure-child";

/// What to measure. Build with [`MeasureRequest::new`] and adjust the public fields.
#[derive(Clone, Debug)]
pub struct MeasureRequest {
    pub net: NetSpec,
    pub batch_size: i64,
    pub device: Device,
    /// Timed batches, each for training and inference; 0 measures memory only (timings `null`).
    pub batches: u32,
    pub warmup: u32,
    pub memory_steps: u32,
    /// Seed for weights and the random batch (timing and memory do not depend on it in theory).
    pub seed: i64,
    /// How to start a memory child on the CPU; `None`: this executable's `measure-child`.
    pub child: Option<ChildLauncher>,
    /// TF32 switches while measuring (those of the training the measurement budgets).
    pub tf32: crate::precision::Tf32Mode,
}

impl MeasureRequest {
    pub fn new(net: NetSpec, batch_size: i64, device: Device) -> Self {
        MeasureRequest {
            net,
            batch_size,
            device,
            batches: DEFAULT_BATCHES,
            warmup: DEFAULT_WARMUP,
            memory_steps: DEFAULT_MEMORY_STEPS,
            seed: 0,
            child: None,
            tf32: crate::precision::Tf32Mode::default(),
        }
    }
}

/// The program and arguments that run [`child_main`] on the job file named by [`CHILD_JOB_ENV`].
/// The `lipctl` binary does it with its hidden `measure-child` subcommand; a test binary can pass
/// itself with arguments that select an entry-point test.
#[derive(Clone, Debug)]
pub struct ChildLauncher {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl ChildLauncher {
    /// This executable, assumed to be `lipctl`, with `measure-child`.
    pub fn lipctl_current_exe() -> anyhow::Result<Self> {
        let program = std::env::current_exe().context("cannot locate the running lipctl executable")?;
        Ok(ChildLauncher { program, args: vec![CHILD_SUBCOMMAND.into()] })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureStatus {
    Ok,
    /// Training or inference did not fit into the device's memory (the paper's LOT-L).
    Oom,
    Failed,
}

/// Where the peak memory figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// libtorch's CUDA caching allocator: peak bytes allocated to tensors.
    CudaAllocator,
    /// Growth of the peak resident set of an isolated child process.
    CpuRssChild,
}

/// Summary of per-batch times, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimingStats {
    pub median: f64,
    pub mean: f64,
    /// Population standard deviation (divides by n).
    pub std: f64,
    pub n: u32,
}

impl TimingStats {
    /// Median (mean of the two middle values for even n), mean and population std; `None` if empty.
    pub fn from_seconds(seconds: &[f64]) -> Option<Self> {
        if seconds.is_empty() {
            return None;
        }
        let n = seconds.len();
        let median = crate::stats::median(seconds);
        let mean = seconds.iter().sum::<f64>() / n as f64;
        let var = seconds.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / n as f64;
        Some(TimingStats { median, mean, std: var.sqrt(), n: n as u32 })
    }
}

/// `measure.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub status: MeasureStatus,
    pub error: Option<String>,
    /// Trainable parameters.
    pub parameters: i64,
    /// Non-trainable tensors in the VarStore (power-iteration vectors and other state).
    pub non_trainable: i64,
    pub train_seconds_per_batch: Option<TimingStats>,
    pub infer_seconds_per_batch: Option<TimingStats>,
    pub peak_train_bytes: Option<u64>,
    pub peak_infer_bytes: Option<u64>,
    pub memory_source: MemorySource,
    /// The device in words: the GPU's name, or `cpu (N threads)`.
    pub device: String,
    /// Device and TF32 switches the measurement ran with (absent in files written before lipctl
    /// recorded them).
    #[serde(default)]
    pub precision: Option<crate::precision::PrecisionRecord>,
}

/// `measure.json` of a `measure` artifact ([`crate::records`]): the [`Measurement`] and, for a
/// pipeline measurement, the input shape learnt from its dataset (a stand-alone measurement has
/// it in its config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasureRecord {
    /// Time and memory of the model, as `lipctl measure` prints them.
    #[serde(flatten)]
    pub measurement: Measurement,
    /// Image side in pixels (inputs are `[3, side, side]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_side: Option<i64>,
    /// Number of classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<i64>,
}

impl crate::records::Record for MeasureRecord {
    const FILE: &'static str = "measure.json";
    const SCHEMA_VERSION: u32 = 1;
    const WHAT: &'static str = "a measurement";
    const KEY_ORDER: crate::records::KeyOrder = crate::records::KeyOrder::Sorted;
}

/// A failure while measuring: out of memory (a result) or anything else.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("{0}")]
    Failed(String),
}

impl MeasureError {
    fn classify(message: String) -> Self {
        let message = crate::failure::without_backtrace(&message);
        if crate::failure::is_oom_message(&message) {
            MeasureError::OutOfMemory(message)
        } else {
            MeasureError::Failed(message)
        }
    }
}

/// Runs `f`, turning an error or a panic (tch's infallible ops panic on libtorch errors) into a
/// classified [`MeasureError`].
fn guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, MeasureError> {
    crate::failure::catch(f).map_err(|e| MeasureError::classify(format!("{e:#}")))
}

/// A model, the training step of `train` and one random uint8 batch on the request's device.
struct Bench {
    inner: Synthetic,
}

impl Bench {
    fn new(spec: NetSpec, batch_size: i64, device: Device, seed: i64) -> anyhow::Result<Self> {
        Ok(Bench { inner: Synthetic::new(spec, batch_size, device, seed, TIMING_LR, TIMING_MOMENTUM, TIMING_WD)? })
    }

    /// One training step; a libtorch error panics (as tch's infallible ops do), which
    /// [`guarded`] turns into a classified failure.
    fn train_step(&mut self) {
        if let Err(e) = self.inner.train_step() {
            panic!("{e:#}");
        }
    }

    fn net(&self) -> &ConvNet {
        &self.inner.net
    }

    /// The centred batch of the inference timing.
    fn x(&self) -> &Tensor {
        &self.inner.centred
    }
}

/// Seconds of each of `n` calls of `f` after `warmup` untimed calls, synchronising `device`
/// around each timed call (the one timing loop of `measure` and `bench`); `task` advances per call.
pub fn time_batches(device: Device, warmup: u32, n: u32, task: &mut crate::progress::Task, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
        task.inc(1);
    }
    device::synchronize(device);
    (0..n)
        .map(|_| {
            device::synchronize(device);
            let start = std::time::Instant::now();
            f();
            device::synchronize(device);
            let seconds = start.elapsed().as_secs_f64();
            task.inc(1);
            seconds
        })
        .collect()
}

/// Measures one configuration. Out of memory and other failures of the measured work are
/// returned as a [`Measurement`] with `status` oom / failed; `Err` only for invalid requests and
/// failures of lipctl itself (no temporary folder, child not startable).
pub fn measure(req: &MeasureRequest, progress: &Progress) -> anyhow::Result<Measurement> {
    if req.batch_size < 1 {
        anyhow::bail!("batch size {} is not positive", req.batch_size);
    }
    if req.memory_steps < 1 {
        anyhow::bail!("at least one memory step is needed (got {})", req.memory_steps);
    }
    let (parameters, non_trainable) = count_parameters(req.net)?;
    let _tf32 = crate::precision::ModeGuard::new(req.tf32)?;
    let mut m = Measurement {
        status: MeasureStatus::Ok,
        error: None,
        parameters,
        non_trainable,
        train_seconds_per_batch: None,
        infer_seconds_per_batch: None,
        peak_train_bytes: None,
        peak_infer_bytes: None,
        memory_source: MemorySource::CpuRssChild,
        device: device::describe(req.device),
        precision: Some(crate::precision::PrecisionRecord::observe(req.device)?),
    };
    let label = format!("measure {}-{} b{}", req.net.method, req.net.size, req.batch_size);
    let mut task = progress.task(&label, 2 * u64::from(req.warmup + req.batches));
    let result = match req.device {
        Device::Cuda(i) => {
            m.memory_source = MemorySource::CudaAllocator;
            measure_cuda(req, i, &mut m, &mut task)
        }
        _ => measure_cpu(req, &mut m, &mut task),
    };
    if let Err(e) = result {
        m.status = match e {
            MeasureError::OutOfMemory(_) => MeasureStatus::Oom,
            MeasureError::Failed(_) => MeasureStatus::Failed,
        };
        m.error = Some(e.to_string());
    }
    let summary = match m.status {
        MeasureStatus::Ok => "done",
        MeasureStatus::Oom => "out of memory",
        MeasureStatus::Failed => "failed",
    };
    task.finish(summary);
    Ok(m)
}

/// Parameter counts of the network, built on the CPU without a batch (so they are known even when
/// the measured work does not fit).
fn count_parameters(spec: NetSpec) -> anyhow::Result<(i64, i64)> {
    let vs = nn::VarStore::new(Device::Cpu);
    ConvNet::new(&vs.root(), spec).with_context(|| format!("cannot build {}-{}", spec.method, spec.size))?;
    Ok(parameter_counts(&vs))
}

fn measure_cpu(req: &MeasureRequest, m: &mut Measurement, task: &mut crate::progress::Task) -> Result<(), MeasureError> {
    let launcher = match &req.child {
        Some(l) => l.clone(),
        None => ChildLauncher::lipctl_current_exe().map_err(|e| MeasureError::Failed(format!("{e:#}")))?,
    };
    let peak = |phase| {
        let job = ChildJob {
            net: req.net,
            batch_size: req.batch_size,
            phase,
            steps: req.memory_steps,
            seed: req.seed,
            threads: tch::get_num_threads(),
            out: PathBuf::new(),
        };
        run_child(&launcher, job)
    };
    // Inference is measured even when training does not fit: it may still fit (a deployable model).
    let (train, infer) = (peak(Phase::Train), peak(Phase::Infer));
    m.peak_train_bytes = train.as_ref().ok().copied();
    m.peak_infer_bytes = infer.as_ref().ok().copied();
    train?;
    infer?;
    time_in_process(req, m, task)
}

fn time_in_process(req: &MeasureRequest, m: &mut Measurement, task: &mut crate::progress::Task) -> Result<(), MeasureError> {
    if req.batches == 0 {
        return Ok(());
    }
    let dev = req.device;
    guarded(|| {
        let mut bench = Bench::new(req.net, req.batch_size, dev, req.seed)?;
        let train = time_batches(dev, req.warmup, req.batches, task, || bench.train_step());
        m.train_seconds_per_batch = TimingStats::from_seconds(&train);
        let _guard = tch::no_grad_guard();
        let frozen = bench.net().freeze()?;
        let x = bench.x();
        let infer = time_batches(dev, req.warmup, req.batches, task, || {
            let _ = frozen.forward(x);
        });
        m.infer_seconds_per_batch = TimingStats::from_seconds(&infer);
        Ok(())
    })
}

fn measure_cuda(req: &MeasureRequest, index: usize, m: &mut Measurement, task: &mut crate::progress::Task) -> Result<(), MeasureError> {
    let dev = req.device;
    let cuda = cuda_memory::Probe::new(index)?;
    // Training: peak over the first `memory_steps` steps of a fresh model, then the timing.
    let train = guarded(|| {
        let base = cuda.begin()?;
        let mut bench = Bench::new(req.net, req.batch_size, dev, req.seed)?;
        for _ in 0..req.memory_steps {
            bench.train_step();
        }
        let peak = cuda.peak_since(base)?;
        let times = if req.batches == 0 { Vec::new() } else { time_batches(dev, req.warmup, req.batches, task, || bench.train_step()) };
        Ok((peak, times))
    });
    cuda.empty_cache();
    if let Ok((peak, times)) = &train {
        m.peak_train_bytes = Some(*peak);
        m.train_seconds_per_batch = TimingStats::from_seconds(times);
    }
    // Inference: a fresh model, its cached transforms and `memory_steps` forwards; measured even
    // when training does not fit (the model may still be deployable).
    let infer = guarded(|| {
        let base = cuda.begin()?;
        let bench = Bench::new(req.net, req.batch_size, dev, req.seed)?;
        let _guard = tch::no_grad_guard();
        let frozen = bench.net().freeze()?;
        for _ in 0..req.memory_steps {
            let _ = frozen.forward(bench.x());
        }
        let peak = cuda.peak_since(base)?;
        let times = if req.batches == 0 {
            Vec::new()
        } else {
            time_batches(dev, req.warmup, req.batches, task, || {
                let _ = frozen.forward(bench.x());
            })
        };
        Ok((peak, times))
    });
    cuda.empty_cache();
    if let Ok((peak, times)) = &infer {
        m.peak_infer_bytes = Some(*peak);
        m.infer_seconds_per_batch = TimingStats::from_seconds(times);
    }
    train?;
    infer?;
    Ok(())
}

/// The CUDA caching-allocator statistics (`src/shim/cuda_memory.cpp`).
pub(crate) mod cuda_memory {
    use super::MeasureError;
    use tch::{Device, Kind, Tensor};

    #[cfg(lipctl_shim)]
    mod ffi {
        extern "C" {
            pub fn lipctl_cuda_reset_peak(device: i32) -> i32;
            pub fn lipctl_cuda_peak_allocated(device: i32) -> i64;
            pub fn lipctl_cuda_current_allocated(device: i32) -> i64;
            pub fn lipctl_cuda_empty_cache() -> i32;
        }
    }

    /// Peak-memory probe of one CUDA device.
    pub struct Probe {
        index: i32,
    }

    impl Probe {
        /// Initialises the device's allocator (its statistics exist only after a first allocation).
        pub fn new(index: usize) -> Result<Self, MeasureError> {
            if !cfg!(lipctl_shim) {
                return Err(MeasureError::Failed(
                    "this lipctl was built without the CUDA memory shim; rebuild with libtorch's headers present".into(),
                ));
            }
            let _ = Tensor::f_zeros([1], (Kind::Float, Device::Cuda(index)))
                .map_err(|e| MeasureError::Failed(format!("cannot initialise cuda:{index}: {e}")))?;
            Ok(Probe { index: index as i32 })
        }

        /// Frees cached blocks, resets the peak and returns the bytes allocated now.
        pub fn begin(&self) -> anyhow::Result<u64> {
            crate::device::synchronize(Device::Cuda(self.index as usize));
            self.empty_cache();
            if self.reset_peak() != 0 {
                anyhow::bail!("cannot reset the CUDA peak-memory statistics of cuda:{}", self.index);
            }
            self.read(false)
        }

        /// Peak bytes allocated since [`Probe::begin`], above what was allocated then.
        pub fn peak_since(&self, base: u64) -> anyhow::Result<u64> {
            crate::device::synchronize(Device::Cuda(self.index as usize));
            Ok(self.read(true)?.saturating_sub(base))
        }

        fn read(&self, peak: bool) -> anyhow::Result<u64> {
            let v = self.raw(peak);
            u64::try_from(v).map_err(|_| anyhow::anyhow!("cannot read the CUDA allocator statistics of cuda:{}", self.index))
        }

        #[cfg(lipctl_shim)]
        fn raw(&self, peak: bool) -> i64 {
            // SAFETY: plain C functions taking a device index; they catch every C++ exception.
            unsafe {
                if peak {
                    ffi::lipctl_cuda_peak_allocated(self.index)
                } else {
                    ffi::lipctl_cuda_current_allocated(self.index)
                }
            }
        }
        #[cfg(not(lipctl_shim))]
        fn raw(&self, _peak: bool) -> i64 {
            -1
        }

        #[cfg(lipctl_shim)]
        fn reset_peak(&self) -> i32 {
            // SAFETY: as in `raw`.
            unsafe { ffi::lipctl_cuda_reset_peak(self.index) }
        }
        #[cfg(not(lipctl_shim))]
        fn reset_peak(&self) -> i32 {
            -1
        }

        pub fn empty_cache(&self) {
            #[cfg(lipctl_shim)]
            // SAFETY: as in `raw`; a failure only leaves cached blocks in place.
            unsafe {
                ffi::lipctl_cuda_empty_cache();
            }
        }
    }
}

/// Which half of the work a memory child does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Train,
    Infer,
}

/// The job a memory child reads from the file named by [`CHILD_JOB_ENV`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChildJob {
    net: NetSpec,
    batch_size: i64,
    phase: Phase,
    steps: u32,
    seed: i64,
    threads: i32,
    /// Where the child writes its [`ChildReport`].
    out: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChildReport {
    status: MeasureStatus,
    error: Option<String>,
    /// Growth of the peak resident set over the baseline, bytes.
    peak_bytes: Option<u64>,
    baseline_bytes: u64,
}

/// Starts a child on `job` and returns its peak bytes, or the classified failure.
fn run_child(launcher: &ChildLauncher, mut job: ChildJob) -> Result<u64, MeasureError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| MeasureError::Failed(format!("{what}: {e}"));
    let dir = tempfile::tempdir().map_err(|e| fail("cannot create a temporary folder for the memory child", &e))?;
    job.out = dir.path().join("report.json");
    let job_path = dir.path().join("job.json");
    let text = serde_json::to_string(&job).map_err(|e| fail("cannot serialise the child job", &e))?;
    std::fs::write(&job_path, text).map_err(|e| fail(&format!("cannot write {}", job_path.display()), &e))?;
    let mut command = std::process::Command::new(&launcher.program);
    command.args(&launcher.args).env(CHILD_JOB_ENV, &job_path).stdin(std::process::Stdio::null());
    // SAFETY: `prctl` is async-signal-safe. The child dies with its parent, so an interrupted
    // `measure` (Ctrl-C, a timeout) leaves no orphan grinding on.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let output = command
        .output()
        .map_err(|e| fail(&format!("cannot start the memory child {}", launcher.program.display()), &e))?;
    let report = std::fs::read_to_string(&job.out).ok().and_then(|t| serde_json::from_str::<ChildReport>(&t).ok());
    match report {
        Some(r) => match r.status {
            MeasureStatus::Ok => r.peak_bytes.ok_or_else(|| MeasureError::Failed("memory child reported no peak".into())),
            MeasureStatus::Oom => Err(MeasureError::OutOfMemory(r.error.unwrap_or_default())),
            MeasureStatus::Failed => Err(MeasureError::Failed(r.error.unwrap_or_default())),
        },
        None => {
            use std::os::unix::process::ExitStatusExt;
            if output.status.signal() == Some(libc::SIGKILL) {
                return Err(MeasureError::OutOfMemory(
                    "the memory child was killed by SIGKILL (most likely the kernel's out-of-memory killer)".into(),
                ));
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(MeasureError::classify(format!(
                "the memory child ({}) ended with {} and no report: {}",
                launcher.program.display(),
                output.status,
                tail.join(" | ")
            )))
        }
    }
}

/// Entry point of a memory child: reads the job at `job_path`, does the work, writes the report.
/// Returns `Err` only when the job cannot be read or the report cannot be written; an allocation
/// failure of the work is a report with status oom.
pub fn child_main(job_path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(job_path).with_context(|| format!("cannot read {}", job_path.display()))?;
    let job: ChildJob = serde_json::from_str(&text).with_context(|| format!("{}: not a measure child job", job_path.display()))?;
    if job.threads > 0 {
        tch::set_num_threads(job.threads);
    }
    // Touch libtorch's common code paths (conv forward/backward, thread pool) before the baseline.
    guarded(|| {
        let w = Tensor::f_ones([2, 2, 3, 3], (Kind::Float, Device::Cpu))?.set_requires_grad(true);
        let x = Tensor::f_ones([1, 2, 4, 4], (Kind::Float, Device::Cpu))?;
        x.f_conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)?.sum(Kind::Float).backward();
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("warm-up failed: {e}"))?;
    let baseline = read_proc_status_kib("VmRSS")? * 1024;
    let work = guarded(|| {
        let mut bench = Bench::new(job.net, job.batch_size, Device::Cpu, job.seed)?;
        match job.phase {
            Phase::Train => {
                for _ in 0..job.steps {
                    bench.train_step();
                }
            }
            Phase::Infer => {
                let _guard = tch::no_grad_guard();
                let frozen = bench.net().freeze()?;
                for _ in 0..job.steps {
                    let _ = frozen.forward(bench.x());
                }
            }
        }
        Ok(())
    });
    let report = match work {
        Ok(()) => {
            let peak = read_proc_status_kib("VmHWM")? * 1024;
            ChildReport { status: MeasureStatus::Ok, error: None, peak_bytes: Some(peak.saturating_sub(baseline)), baseline_bytes: baseline }
        }
        Err(MeasureError::OutOfMemory(msg)) => {
            ChildReport { status: MeasureStatus::Oom, error: Some(msg), peak_bytes: None, baseline_bytes: baseline }
        }
        Err(MeasureError::Failed(msg)) => {
            ChildReport { status: MeasureStatus::Failed, error: Some(msg), peak_bytes: None, baseline_bytes: baseline }
        }
    };
    let text = serde_json::to_string(&report).context("cannot serialise the child report")?;
    std::fs::write(&job.out, text).with_context(|| format!("cannot write {}", job.out.display()))
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`, …); Linux only.
pub(crate) fn read_proc_status_kib(field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status (Linux only)")?;
    parse_status_kib(&text, field).with_context(|| format!("/proc/self/status has no {field} line"))
}

/// The value in KiB of a `Field:   1234 kB` line of `/proc/<pid>/status`.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{is_oom_message, without_backtrace};

    #[test]
    fn timing_stats_match_hand_computation() {
        // Sorted 1, 2, 3, 10: median (2+3)/2, mean 4, deviations −3 −2 −1 6 → var 50/4.
        let s = TimingStats::from_seconds(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(s.mean, 4.0);
        assert!((s.std - 12.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.n, 4);
        let odd = TimingStats::from_seconds(&[5.0, 1.0, 4.0]).unwrap();
        assert_eq!(odd.median, 4.0);
        assert!(TimingStats::from_seconds(&[]).is_none());
    }

    #[test]
    fn parses_proc_status_lines() {
        let status = "Name:\tlipctl\nVmPeak:\t 2000 kB\nVmHWM:\t   123456 kB\nVmRSS:\t   100000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(123456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(100000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert!(read_proc_status_kib("VmHWM").unwrap() > 0);
    }

    #[test]
    fn recognises_libtorch_allocation_failures() {
        assert!(is_oom_message("CUDA out of memory. Tried to allocate 20.00 GiB"));
        assert!(is_oom_message("DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes."));
        assert!(is_oom_message("std::bad_alloc"));
        assert!(is_oom_message("DefaultCPUAllocator: can't allocate memory: you tried to allocate 16 bytes."));
        assert_eq!(without_backtrace("no memory.\nframe #0: c10::f() + 0x6a\nframe #1: g"), "no memory.");
        assert!(!is_oom_message("shape mismatch"));
    }

    #[test]
    fn measurement_json_has_the_documented_shape() {
        let m = Measurement {
            status: MeasureStatus::Oom,
            error: Some("out of memory".into()),
            parameters: 10,
            non_trainable: 0,
            train_seconds_per_batch: TimingStats::from_seconds(&[0.5]),
            infer_seconds_per_batch: None,
            peak_train_bytes: Some(7),
            peak_infer_bytes: None,
            memory_source: MemorySource::CpuRssChild,
            device: "cpu (2 threads)".into(),
            precision: Some(crate::precision::PrecisionRecord::describe(Device::Cpu, crate::precision::Tf32Mode::On.switches())),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["status"], "oom");
        assert_eq!(v["memory_source"], "cpu_rss_child");
        assert_eq!(v["train_seconds_per_batch"]["median"], 0.5);
        assert_eq!(v["train_seconds_per_batch"]["n"], 1);
        assert!(v["infer_seconds_per_batch"].is_null());
        assert_eq!(v["precision"]["effective"], "fp32");
        assert_eq!(serde_json::to_value(MemorySource::CudaAllocator).unwrap(), "cuda_allocator");
        // measure.json written before precision was recorded still reads.
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("precision");
        assert!(serde_json::from_value::<Measurement>(old).unwrap().precision.is_none());
        let back: Measurement = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
