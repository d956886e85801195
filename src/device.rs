//! The device is chosen once, here, from `--device auto|cpu|cuda|cuda:N`, and passed down.
//! Nothing else in the crate calls `Device::cuda_if_available()`.

use std::str::FromStr;
use tch::Device;

/// What the user asked for; resolved with [`DeviceChoice::resolve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when available, the CPU otherwise.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| anyhow::anyhow!("unknown device {s:?}; use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    /// The spelling [`DeviceChoice::from_str`] reads back: `auto`, `cpu`, `cuda:N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `lipctl run --devices`: `all` (every visible CUDA device) or a comma-separated list
/// (`cuda:0,cuda:1`; `cpu,cpu` gives two CPU workers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceList {
    All,
    List(Vec<DeviceChoice>),
}

impl FromStr for DeviceList {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(DeviceList::All);
        }
        let list = s.split(',').map(|d| d.parse::<DeviceChoice>()).collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!list.is_empty(), "--devices needs `all` or a list such as cuda:0,cuda:1");
        Ok(DeviceList::List(list))
    }
}

impl DeviceList {
    /// The devices, one worker each; `all` is every CUDA device libtorch sees.
    pub fn resolve(&self) -> anyhow::Result<Vec<DeviceChoice>> {
        match self {
            DeviceList::List(l) => Ok(l.clone()),
            DeviceList::All => {
                let n = tch::Cuda::device_count() as usize;
                anyhow::ensure!(n > 0, "--devices all: no CUDA device is visible; name devices instead, e.g. --devices cpu,cpu");
                Ok((0..n).map(DeviceChoice::Cuda).collect())
            }
        }
    }
}

impl DeviceChoice {
    /// Resolves to a concrete device; asking for a CUDA device that is not there is an error.
    pub fn resolve(self) -> anyhow::Result<Device> {
        match self {
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                let count = tch::Cuda::device_count() as usize;
                if n >= count {
                    anyhow::bail!(
                        "device cuda:{n} requested but {count} CUDA device(s) are available; use --device cpu or auto"
                    );
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// The device in words, for manifests, `measure.json` and failure messages: `cuda:0 NVIDIA H200`
/// (or `cuda:0` where the driver gives no name), `cpu (N threads)` with libtorch's intra-op thread
/// count, or the device kind's name.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(i) => match cuda_device_info(i as i64) {
            Some(d) => format!("cuda:{i} {}", d.name),
            None => format!("cuda:{i}"),
        },
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        other => kind_name(other).to_string(),
    }
}

/// Short, stable name of a device kind for cache keys and reports ("cpu", "cuda").
pub fn kind_name(device: Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Mps => "mps",
        Device::Vulkan => "vulkan",
    }
}

/// The host heap's fixed thresholds, set once per process by [`keep_host_heap`].
pub const HOST_MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// See [`HOST_MMAP_THRESHOLD_BYTES`].
pub const HOST_TRIM_THRESHOLD_BYTES: i32 = 1 << 30;

/// Keeps the memory of CPU tensors in the process between training steps instead of returning it
/// to the kernel after every step. glibc serves an allocation above its mmap threshold (128 KiB,
/// adjusted at run time) with a fresh `mmap`, and gives the top of the heap back once more than
/// the trim threshold is free; a CPU training step allocates and frees megabytes of activations,
/// so every step paid the kernel for zeroed pages again (14 % of a ConvNetXS step in page faults
/// under `perf`). With the thresholds fixed at [`HOST_MMAP_THRESHOLD_BYTES`] (glibc's largest
/// dynamic value) and [`HOST_TRIM_THRESHOLD_BYTES`], the pages stay mapped: 3–8 % off a CPU step
/// (ConvNetXS, batch 64, 2 threads, interleaved runs). The cost is resident memory kept after a
/// peak (at most the trim threshold above what is in use); the peak itself is unchanged. Called
/// by the binary before any work; a library user's process keeps its own allocator settings.
/// Without glibc (or where `mallopt` refuses) this does nothing.
pub fn keep_host_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (under glibc's arena locks); no pointer is passed.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HOST_MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, HOST_TRIM_THRESHOLD_BYTES);
    }
}

/// The CPU process settings of the `lipctl` binary and its benches, in one place:
/// [`keep_host_heap`] and [`flush_denormals`]. Call first, before libtorch creates its threads.
pub fn configure_host_process() {
    keep_host_heap();
    flush_denormals();
}

/// Set to `keep` to leave subnormal floats as IEEE 754 specifies (see [`flush_denormals`]).
pub const DENORMALS_ENV: &str = "LIPCTL_DENORMALS";

/// Makes this thread's CPU arithmetic, and that of every thread it creates afterwards (libtorch's
/// OpenMP workers inherit the floating-point environment), treat subnormal floats as zero: the
/// x86-64 MXCSR bits FTZ and DAZ, the AArch64 FPCR bit FZ; PyTorch's `torch.set_flush_denormal`.
/// Returns whether flushing is on.
///
/// Why: iterations that converge towards the identity leave entries that decay below the
/// smallest normal float (1.2e-38 in float32), and on the CPU every operation on such a value
/// takes a microcode assist. LOT's Newton–Schulz iteration does this from the second training
/// step on, once SGD has moved its identity-initialised kernels by a little: a ConvNetS LOT step
/// took 40 s instead of 23 s (2 threads, this project's AVX-512 Xeon; `mkl_blas_avx512_cgemm` was
/// 57–75 % of the step under `perf`). TF32 tensor-core products on a GPU flush subnormals too.
///
/// What it changes: a value of magnitude below 1.2e-38 (float32) or 2.2e-308 (float64) reads as
/// zero. That is far below the rounding error of any quantity lipctl reports or certifies. Runs
/// stay deterministic. `LIPCTL_DENORMALS=keep` turns it off (for a numerical experiment that needs
/// gradual underflow). Called by the binary before any work, so libtorch's thread pool is created
/// with it; a library user's process keeps its own setting. On other architectures it does
/// nothing and returns `false`.
pub fn flush_denormals() -> bool {
    if denormals_kept_by_env() {
        return false;
    }
    set_flush_denormals()
}

/// Whether `LIPCTL_DENORMALS=keep` ([`DENORMALS_ENV`], any case) asks to leave subnormals as
/// they are, so that [`flush_denormals`] does nothing.
pub fn denormals_kept_by_env() -> bool {
    std::env::var(DENORMALS_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("keep"))
}

/// x86-64 MXCSR: flush-to-zero (results) and denormals-are-zero (inputs).
#[cfg(target_arch = "x86_64")]
const MXCSR_FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
/// AArch64 FPCR: flush-to-zero (results and inputs).
#[cfg(target_arch = "aarch64")]
const FPCR_FZ: u64 = 1 << 24;

#[cfg(target_arch = "x86_64")]
fn set_flush_denormals() -> bool {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register through a valid
    // local; only the flush-to-zero and denormals-are-zero bits change, no exception is unmasked.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= MXCSR_FTZ_DAZ;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
    }
    true
}

#[cfg(target_arch = "aarch64")]
fn set_flush_denormals() -> bool {
    let mut fpcr: u64;
    // SAFETY: reads and writes this thread's floating-point control register; only FZ changes.
    unsafe {
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
        fpcr |= FPCR_FZ;
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
    }
    true
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn set_flush_denormals() -> bool {
    false
}

/// Whether this thread's CPU arithmetic flushes subnormal floats to zero now (see
/// [`flush_denormals`]): `Some(true)` when both x86-64 MXCSR bits FTZ and DAZ (AArch64: FPCR FZ)
/// are set, `Some(false)` when they are not, `None` on other architectures. Recorded as
/// `subnormals_flushed` in a stage's `precision`.
pub fn denormals_flushed() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr stores this thread's SSE control register into a valid local.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
        Some(csr & MXCSR_FTZ_DAZ == MXCSR_FTZ_DAZ)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let fpcr: u64;
        // SAFETY: reads this thread's floating-point control register.
        unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
        Some(fpcr & FPCR_FZ != 0)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

/// Waits for queued device work, so timings measure the work and not its launch.
pub fn synchronize(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read-back agrees with what the arithmetic does: a product below the smallest normal
    /// float32 (1e-38 × 1e-3) is a subnormal unless flushing is on, and zero once it is. On a
    /// fresh thread (the test harness never flushes), then after [`flush_denormals`].
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn denormals_flushed_reads_what_the_arithmetic_does() {
        std::thread::spawn(|| {
            let tiny = || std::hint::black_box(1e-38f32) * std::hint::black_box(1e-3f32);
            let before = denormals_flushed().unwrap();
            assert_eq!(tiny() == 0.0, before, "flushed {before:?} but 1e-41 reads {}", tiny());
            if denormals_kept_by_env() {
                return;
            }
            assert!(flush_denormals());
            assert_eq!(denormals_flushed(), Some(true));
            assert_eq!(tiny(), 0.0);
        })
        .join()
        .unwrap();
    }

    /// 1e-38 · 0.01 = 1e-40 is subnormal in float32. Each case runs in its own thread (the
    /// control register is per thread) and computes in a thread that thread creates afterwards,
    /// as libtorch's pool is: flushed there it is 0, and in the control case, which leaves the
    /// register alone, 1e-40 stays (the check can fail).
    #[test]
    fn flushing_denormals_reaches_threads_created_afterwards() {
        let product = |flush: bool| {
            std::thread::spawn(move || {
                if flush {
                    assert_eq!(flush_denormals(), cfg!(any(target_arch = "x86_64", target_arch = "aarch64")));
                }
                std::thread::spawn(|| {
                    let t = tch::Tensor::from_slice(&[1e-38f32]) * 0.01;
                    f32::try_from(t).unwrap()
                })
                .join()
                .unwrap()
            })
            .join()
            .unwrap()
        };
        let kept = product(false);
        assert!(kept > 0.0 && kept < f32::MIN_POSITIVE, "control: {kept:e} should be subnormal");
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(product(true), 0.0);
        }
    }

    #[test]
    fn parses_device_spellings() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
        for bad in ["", "tpu", "cuda:x", "cuda:-1"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad:?} accepted");
        }
    }
}

/// What the CUDA driver says about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// The product name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Total device memory, bytes.
    pub total_bytes: u64,
    /// Compute capability (major, minor); TF32 tensor cores exist from 8.0 (Ampere) on.
    pub compute_capability: (i32, i32),
}

/// Name, total memory and compute capability of CUDA device `index`, read from the CUDA driver
/// (`libcuda.so.1`, loaded at run time so that CPU-only machines need no driver). `None` when
/// unavailable.
pub fn cuda_device_info(index: i64) -> Option<CudaDeviceInfo> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetName = unsafe extern "C" fn(*mut libc::c_char, i32, i32) -> i32;
    type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, i32) -> i32;
    type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
    // CUdevice_attribute values of cuda.h (stable across CUDA releases).
    const COMPUTE_CAPABILITY_MAJOR: i32 = 75;
    const COMPUTE_CAPABILITY_MINOR: i32 = 76;
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the signature the
    // CUDA driver API documents for it, and only called when it was found.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return None;
        }
        let sym = |name: &std::ffi::CStr| libc::dlsym(lib, name.as_ptr());
        let (init, get, get_name, total, attribute) = (
            sym(c"cuInit"),
            sym(c"cuDeviceGet"),
            sym(c"cuDeviceGetName"),
            sym(c"cuDeviceTotalMem_v2"),
            sym(c"cuDeviceGetAttribute"),
        );
        if init.is_null() || get.is_null() || get_name.is_null() || total.is_null() || attribute.is_null() {
            return None;
        }
        let init: CuInit = std::mem::transmute(init);
        let get: CuDeviceGet = std::mem::transmute(get);
        let get_name: CuDeviceGetName = std::mem::transmute(get_name);
        let total: CuDeviceTotalMem = std::mem::transmute(total);
        let attribute: CuDeviceGetAttribute = std::mem::transmute(attribute);
        let mut dev = 0i32;
        if init(0) != 0 || get(&mut dev, index as i32) != 0 {
            return None;
        }
        let mut name = [0 as libc::c_char; 256];
        let mut bytes = 0usize;
        if get_name(name.as_mut_ptr(), name.len() as i32, dev) != 0 || total(&mut bytes, dev) != 0 {
            return None;
        }
        let (mut major, mut minor) = (0i32, 0i32);
        if attribute(&mut major, COMPUTE_CAPABILITY_MAJOR, dev) != 0 || attribute(&mut minor, COMPUTE_CAPABILITY_MINOR, dev) != 0 {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        Some(CudaDeviceInfo { name, total_bytes: bytes as u64, compute_capability: (major, minor) })
    }
}

/// The CPU's model name (the first `model name` line of `/proc/cpuinfo`), or `None` where that
/// file has none (not Linux, some ARM kernels).
pub fn cpu_model_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("model name")?.trim_start().strip_prefix(':').map(|v| v.trim().to_string()))
        .filter(|v| !v.is_empty())
}
