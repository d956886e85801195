//! The numerics policy, in one place (beyond-the-paper §3).
//!
//! On Ampere and newer GPUs libtorch lets cuDNN run float32 convolutions in TF32 (10-bit
//! mantissa, about 1e-3 relative error) unless told otherwise; cuBLAS matrix products stay in
//! full fp32 unless allowed. lipctl decides, per stage:
//!
//! | computation | TF32 | why |
//! |---|---|---|
//! | certification, the Lipschitz audit, the attack, the per-epoch evaluation, the frozen network's weight transforms ([`crate::nn::ConvNet::freeze`], wherever it is called), `doctor --selftest`, the tests | off ([`Fp32Guard`]) | a certificate's margin and its bound must not carry 1e-3 relative error |
//! | training, search and `measure` (their forward and backward passes; not the transforms of a frozen network) | the pipeline's `tf32: on\|off` ([`Tf32Mode`]; default on) | speed; rounding noise in the weights does not touch soundness, because certify recomputes every weight transform in fp32 from the fp32 parameters |
//!
//! `tf32: on` means libtorch's own defaults, which were also the paper's PyTorch 1.12 defaults:
//! cuDNN convolutions in TF32, cuBLAS matrix products (Björck and Newton iterations, the heads,
//! FFT-domain products) in fp32. `tf32: off` forbids TF32 everywhere. On the CPU and on GPUs
//! before compute capability 8.0 the switches are inert: everything runs in fp32.
//!
//! The switches are process-global (`at::globalContext()`, through the C++ shim
//! `src/shim/precision.cpp`). lipctl runs one stage at a time per process, so a guard's section
//! is the only work in flight; fp32 sections opened concurrently from several threads (the test
//! harness) nest through a counter, so the first to open saves the state and the last to close
//! restores it.

use crate::device;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use tch::Device;

/// The two TF32 switches of libtorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tf32 {
    /// cuDNN may use TF32 for float32 convolutions.
    pub cudnn: bool,
    /// cuBLAS may use TF32 for float32 matrix products.
    pub cublas: bool,
}

impl Tf32 {
    /// Full fp32: TF32 forbidden everywhere.
    pub const OFF: Tf32 = Tf32 { cudnn: false, cublas: false };
}

/// The training option `tf32: on|off` (pipelines, `lipctl train/measure --tf32`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tf32Mode {
    /// libtorch's (and the paper's PyTorch 1.12) defaults: cuDNN convolutions in TF32, cuBLAS
    /// matrix products in fp32.
    #[default]
    On,
    /// Full fp32 everywhere.
    Off,
}

impl Tf32Mode {
    /// The switch positions this mode stands for.
    pub fn switches(self) -> Tf32 {
        match self {
            Tf32Mode::On => Tf32 { cudnn: true, cublas: false },
            Tf32Mode::Off => Tf32::OFF,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tf32Mode::On => "on",
            Tf32Mode::Off => "off",
        }
    }
}

impl std::fmt::Display for Tf32Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tf32Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(Tf32Mode::On),
            "off" | "false" => Ok(Tf32Mode::Off),
            _ => anyhow::bail!("unknown tf32 setting {s:?}; use on or off"),
        }
    }
}

#[cfg(lipctl_shim)]
mod ffi {
    extern "C" {
        pub fn lipctl_tf32_cudnn_get() -> i32;
        pub fn lipctl_tf32_cudnn_set(on: i32) -> i32;
        pub fn lipctl_tf32_cublas_get() -> i32;
        pub fn lipctl_tf32_cublas_set(on: i32) -> i32;
    }
}

/// Serialises every read and write of the switches, and counts open [`Fp32Guard`]s (with the
/// state the first one saved).
static STATE: Mutex<Fp32Sections> = Mutex::new(Fp32Sections { open: 0, saved: None });

struct Fp32Sections {
    open: usize,
    saved: Option<Tf32>,
}

fn lock() -> std::sync::MutexGuard<'static, Fp32Sections> {
    // A panic while holding the lock leaves the counter as valid as before: keep going.
    STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(lipctl_shim)]
fn read_switches() -> anyhow::Result<Tf32> {
    // SAFETY: plain C functions without arguments; they catch every C++ exception.
    let (cudnn, cublas) = unsafe { (ffi::lipctl_tf32_cudnn_get(), ffi::lipctl_tf32_cublas_get()) };
    anyhow::ensure!(cudnn >= 0 && cublas >= 0, "libtorch refused to report its TF32 switches");
    Ok(Tf32 { cudnn: cudnn == 1, cublas: cublas == 1 })
}

#[cfg(lipctl_shim)]
fn write_switches(t: Tf32) -> anyhow::Result<()> {
    // SAFETY: plain C functions taking an int; they catch every C++ exception.
    let (a, b) = unsafe { (ffi::lipctl_tf32_cudnn_set(t.cudnn as i32), ffi::lipctl_tf32_cublas_set(t.cublas as i32)) };
    anyhow::ensure!(a == 0 && b == 0, "libtorch refused to set its TF32 switches to {t:?}");
    Ok(())
}

#[cfg(not(lipctl_shim))]
fn read_switches() -> anyhow::Result<Tf32> {
    anyhow::bail!("this lipctl was built without the libtorch shim (src/shim/); rebuild with libtorch's headers present")
}

#[cfg(not(lipctl_shim))]
fn write_switches(_: Tf32) -> anyhow::Result<()> {
    read_switches().map(|_| ())
}

/// The current position of libtorch's TF32 switches.
pub fn current() -> anyhow::Result<Tf32> {
    let _lock = lock();
    read_switches()
}

/// Sets libtorch's TF32 switches for the rest of the process (prefer the guards, which restore).
pub fn set(t: Tf32) -> anyhow::Result<()> {
    let _lock = lock();
    write_switches(t)
}

/// Full fp32 while it lives: TF32 off on entry, the previous switches back when the last open
/// fp32 section closes. Certification, the audit, the attack, evaluation, the self-test and the
/// weight transforms of a frozen network ([`crate::nn::ConvNet::freeze`]) hold one. A guard
/// opened inside another section where a [`ModeGuard`] has since allowed TF32 turns it off again
/// and gives that mode's switches back when it closes. Errors when the switches cannot be read
/// or set (a build without the C++ shim).
#[must_use = "the switches are restored when the guard is dropped"]
#[derive(Debug)]
pub struct Fp32Guard {
    /// The switches of a training mode entered inside an open section, restored by this guard.
    mode_inside: Option<Tf32>,
}

impl Fp32Guard {
    pub fn new() -> anyhow::Result<Self> {
        let mut sections = lock();
        let mut mode_inside = None;
        if sections.open == 0 {
            let saved = read_switches()?;
            write_switches(Tf32::OFF)?;
            sections.saved = Some(saved);
        } else {
            // A ModeGuard writes its switches whatever sections are open.
            let now = read_switches()?;
            if now != Tf32::OFF {
                write_switches(Tf32::OFF)?;
                mode_inside = Some(now);
            }
        }
        sections.open += 1;
        Ok(Fp32Guard { mode_inside })
    }
}

impl Drop for Fp32Guard {
    fn drop(&mut self) {
        let mut sections = lock();
        sections.open = sections.open.saturating_sub(1);
        // The same calls succeeded when the guard was made; nothing to report from a drop.
        if sections.open == 0 {
            if let Some(saved) = sections.saved.take() {
                let _ = write_switches(saved);
            }
        } else if let Some(mode) = self.mode_inside {
            let _ = write_switches(mode);
        }
    }
}

/// The switches of a training mode while it lives, the previous ones afterwards. Training,
/// search and `measure` hold one.
#[must_use = "the switches are restored when the guard is dropped"]
#[derive(Debug)]
pub struct ModeGuard {
    previous: Tf32,
}

impl ModeGuard {
    pub fn new(mode: Tf32Mode) -> anyhow::Result<Self> {
        let _lock = lock();
        let previous = read_switches()?;
        write_switches(mode.switches())?;
        Ok(ModeGuard { previous })
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        let _lock = lock();
        let _ = write_switches(self.previous);
    }
}

/// What a stage ran with, recorded in `train.json`, `measure.json` and `certify.json` and shown
/// by the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecisionRecord {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The GPU's product name from the driver, or the CPU's model name.
    pub device_name: String,
    /// Element type of weights and activations.
    pub dtype: String,
    /// The cuDNN TF32 switch during the stage.
    pub tf32_cudnn: bool,
    /// The cuBLAS TF32 switch during the stage.
    pub tf32_cublas: bool,
    /// What the switches mean on this device: `fp32`, `tf32 conv` or `tf32 conv+matmul`
    /// (`fp32` on the CPU and before compute capability 8.0, where no TF32 hardware exists).
    pub effective: String,
    /// Whether the CPU flushed subnormal floats to zero ([`device::flush_denormals`]; the
    /// `lipctl` binary does unless `LIPCTL_DENORMALS=keep`), read from the stage's thread. It
    /// changes CPU speed (LOT: up to 2×), not any reported digit. `None` on architectures without
    /// the switch and in files written before lipctl recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnormals_flushed: Option<bool>,
}

impl PrecisionRecord {
    /// The switches as they are now, on `device`. Call it inside the stage's guard.
    pub fn observe(device: Device) -> anyhow::Result<Self> {
        Ok(Self::describe(device, current()?))
    }

    /// The record of `switches` on `device`.
    pub fn describe(device: Device, switches: Tf32) -> Self {
        let (name, device_name, tf32_hardware) = match device {
            Device::Cuda(i) => match device::cuda_device_info(i as i64) {
                Some(d) => (format!("cuda:{i}"), d.name, d.compute_capability.0 >= 8),
                // Unknown hardware: report what the switches allow.
                None => (format!("cuda:{i}"), format!("cuda:{i}"), true),
            },
            other => (
                device::kind_name(other).to_string(),
                device::cpu_model_name().unwrap_or_else(|| device::kind_name(other).to_string()),
                false,
            ),
        };
        let effective = match (tf32_hardware, switches.cudnn, switches.cublas) {
            (false, _, _) | (true, false, false) => "fp32",
            (true, true, false) => "tf32 conv",
            (true, false, true) => "tf32 matmul",
            (true, true, true) => "tf32 conv+matmul",
        };
        PrecisionRecord {
            device: name,
            device_name,
            dtype: "float32".into(),
            tf32_cudnn: switches.cudnn,
            tf32_cublas: switches.cublas,
            effective: effective.into(),
            subnormals_flushed: device::denormals_flushed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tf32_spellings() {
        assert_eq!("on".parse::<Tf32Mode>().unwrap(), Tf32Mode::On);
        assert_eq!(" OFF ".parse::<Tf32Mode>().unwrap(), Tf32Mode::Off);
        assert_eq!("true".parse::<Tf32Mode>().unwrap(), Tf32Mode::On);
        for bad in ["", "tf32", "1", "yes please"] {
            assert!(bad.parse::<Tf32Mode>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(serde_json::to_value(Tf32Mode::Off).unwrap(), "off");
        assert_eq!(Tf32Mode::default(), Tf32Mode::On);
    }

    #[test]
    fn modes_map_to_switches_and_the_cpu_is_always_fp32() {
        assert_eq!(Tf32Mode::On.switches(), Tf32 { cudnn: true, cublas: false });
        assert_eq!(Tf32Mode::Off.switches(), Tf32::OFF);
        let cpu = PrecisionRecord::describe(Device::Cpu, Tf32 { cudnn: true, cublas: true });
        assert_eq!((cpu.device.as_str(), cpu.effective.as_str(), cpu.tf32_cudnn), ("cpu", "fp32", true));
    }
}
