//! `lipctl measure` on the CPU: the child-process memory measurement grows where the arithmetic
//! says it must, an impossible allocation is a recorded `oom`, and the timings are well formed.
//!
//! The memory children are this test binary again, running the ignored entry-point test
//! [`measure_child_entry`] (see `ChildLauncher`); the real `lipctl` uses its hidden `measure-child`.

use lipctl::budgets::{budget_from_measurement, BudgetStatus, DEFAULT_HOURS};
use lipctl::measure::{measure, ChildLauncher, MeasureRequest, MeasureStatus, Measurement, MemorySource, CHILD_JOB_ENV};
use lipctl::nn::{Method, ModelSize, NetSpec};
use lipctl::progress::Progress;
use tch::Device;

/// Bytes of one float32 activation of the first block (16 channels of 32×32 for XS) per image.
const XS_BLOCK1_ACTIVATION_BYTES: u64 = 16 * 32 * 32 * 4;
/// Parameters of ConvNet XS and S (paper Table 8: 1.57 M and 6.28 M).
const XS_PARAMS: f64 = 1.57e6;
const S_PARAMS: f64 = 6.28e6;
/// The RSS figures carry a few MB of code pages and allocator slack that differ between runs;
/// each lower bound below is required up to this factor.
const RSS_SLACK: f64 = 0.8;

#[test]
#[ignore = "entry point of the memory child processes the other tests start; not a test by itself"]
fn measure_child_entry() {
    let job = std::env::var_os(CHILD_JOB_ENV).expect("run only as a child of the measure tests");
    lipctl::measure::child_main(std::path::Path::new(&job)).unwrap();
}

/// A CPU request kept cheap for a 2-core CI machine: memory only (`batches = 0`) unless a test
/// sets timed batches, and one training step (after it, weights, gradients and momentum buffers
/// all exist, so the peak of later steps is the same).
fn request(method: Method, size: ModelSize, batch: i64) -> MeasureRequest {
    let mut req = MeasureRequest::new(NetSpec::new(method, size, 32, 10), batch, Device::Cpu);
    req.batches = 0;
    req.warmup = 0;
    req.memory_steps = 1;
    req.child = Some(ChildLauncher {
        program: std::env::current_exe().unwrap(),
        args: ["--ignored", "--exact", "measure_child_entry", "--nocapture", "--test-threads=1", "-q"]
            .map(Into::into)
            .to_vec(),
    });
    req
}

fn measured(req: MeasureRequest) -> Measurement {
    let (method, size, batch) = (req.net.method, req.net.size, req.batch_size);
    let m = measure(&req, &Progress::hidden()).unwrap();
    assert_eq!(m.status, MeasureStatus::Ok, "{method}-{size} b{batch}: {:?}", m.error);
    assert_eq!(m.memory_source, MemorySource::CpuRssChild);
    m
}

#[test]
fn cpu_peak_memory_grows_with_batch_size_and_model_size() {
    let xs8 = measured(request(Method::Standard, ModelSize::XS, 8));
    let xs64 = measured(request(Method::Standard, ModelSize::XS, 64));
    let s8 = measured(request(Method::Standard, ModelSize::S, 8));
    assert!(xs8.train_seconds_per_batch.is_none(), "batches = 0 measures memory only");
    let peaks = |m: &Measurement| (m.peak_train_bytes.unwrap() as f64, m.peak_infer_bytes.unwrap() as f64);
    let ((xs8_t, xs8_i), (xs64_t, xs64_i), (s8_t, s8_i)) = (peaks(&xs8), peaks(&xs64), peaks(&s8));

    // Training keeps at least the inputs of block 1's five convolutions for the backward pass:
    // 56 more images need ≥ 5 · 56 · 64 KiB more.
    let batch_bound = 5.0 * 56.0 * XS_BLOCK1_ACTIVATION_BYTES as f64;
    assert!(xs64_t - xs8_t >= RSS_SLACK * batch_bound, "train b64 {xs64_t} vs b8 {xs8_t}, bound {batch_bound}");
    // Inference holds at least a block-1 activation and the next one at once.
    let infer_bound = 2.0 * 56.0 * XS_BLOCK1_ACTIVATION_BYTES as f64;
    assert!(xs64_i - xs8_i >= RSS_SLACK * infer_bound, "infer b64 {xs64_i} vs b8 {xs8_i}, bound {infer_bound}");

    // S has 4.71 M more parameters: training holds weights, gradients and momentum (12 bytes
    // each), inference at least the weights (4 bytes each).
    let delta = S_PARAMS - XS_PARAMS;
    assert!(s8_t - xs8_t >= RSS_SLACK * 12.0 * delta, "train S {s8_t} vs XS {xs8_t}");
    assert!(s8_i - xs8_i >= RSS_SLACK * 4.0 * delta, "infer S {s8_i} vs XS {xs8_i}");
    // Parameter counts as in Table 8 (to its two decimals).
    assert!((xs8.parameters as f64 - XS_PARAMS).abs() < 0.005e6, "{}", xs8.parameters);
    assert!((s8.parameters as f64 - S_PARAMS).abs() < 0.005e6, "{}", s8.parameters);
}

#[test]
fn an_impossible_batch_is_recorded_as_oom() {
    // 2^37 images of 3×32×32 float32 are 1.7 PB: no machine can allocate them.
    let m = measure(&request(Method::Standard, ModelSize::XS, 1 << 37), &Progress::hidden()).unwrap();
    assert_eq!(m.status, MeasureStatus::Oom, "{m:?}");
    assert!(m.error.as_deref().unwrap().contains("memory"), "{m:?}");
    assert!(m.train_seconds_per_batch.is_none() && m.peak_train_bytes.is_none());
    assert!(m.parameters > 0, "the parameter count is known without the batch");
    // Budgets then record that the model does not fit, rather than inventing epochs.
    let b = budget_from_measurement(&m, &DEFAULT_HOURS, 196).unwrap();
    assert_eq!(b.status, BudgetStatus::DoesNotFit);
    assert!(b.epochs.is_empty());
}

#[test]
fn timings_are_well_formed_and_inference_is_cheaper_than_a_training_step() {
    let mut req = request(Method::Standard, ModelSize::XS, 16);
    req.batches = 3;
    let m = measured(req);
    let train = m.train_seconds_per_batch.unwrap();
    let infer = m.infer_seconds_per_batch.unwrap();
    assert_eq!((train.n, infer.n), (3, 3));
    assert!(train.median > 0.0 && infer.median > 0.0 && train.std >= 0.0);
    // A training step is a forward pass plus a backward pass (about twice its cost) plus the
    // update; the inference forward has no autograd bookkeeping.
    assert!(train.median > infer.median, "train {train:?} infer {infer:?}");
    assert!(m.device.starts_with("cpu ("), "{}", m.device);
}
