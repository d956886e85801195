//! `cargo bench --bench speed`: the measurements of issue 15 that are not `lipctl bench`, printed
//! as ratios measured side by side in one run (no timed test asserts them):
//!
//! 1. **Epoch I/O is constant in the epoch number.** The end-of-epoch records of a training run
//!    (append the statistics row; checkpoint at the worst-case cadence, every epoch) of a tiny
//!    model, over 1000 epochs: median cost of epochs 1–10 against epochs 991–1000. Beside it the
//!    former scheme (read and atomically rewrite the whole statistics file each epoch), whose cost
//!    grows with the epoch number.
//! 2. **`measure` and `train` time the same step.** For a few methods (ConvNet XS, batch 64, CPU):
//!    `measure`'s mean seconds per training batch against `train`'s (the training pass of its last
//!    epoch divided by its batches), and their ratio (within 10 % is the goal). On a shared 2-core
//!    machine one run of either varies by ±15 % and the machine's speed drifts over minutes, so
//!    each round runs the two back to back (alternating which goes first) and the ratio reported
//!    is the median of the rounds' paired ratios, which a slow drift cancels out of.
//!
//! 3. **AOL's and SLL's rescaling.** Forward + backward of the kernel autocorrelation that bounds
//!    both layers ([`lipctl::nn::ortho::autocorrelation`]: one-sided product, symmetrised doubled
//!    gradient) against autograd of the product by definition (both arguments differentiated),
//!    for the 3×3 and 1×1 kernels of ConvNet XS–L widths; the two alternate call by call.
//!
//! 4. **MaxMin.** Forward + backward of the activation on each feature-map shape of a ConvNet XS
//!    and S training step (batch 64), the fused CPU kernel (`src/shim/max_min.cpp`) against the
//!    same activation composed from ATen ops (lipctl's former path, still the one off the CPU),
//!    alternating call by call; and the sum over one training step's activations.
//! 5. **Circular padding.** The same for the padding before each 3×3 convolution of Standard,
//!    AOL and BCOP (`src/shim/circular_pad.cpp`, a one-pass backward) against ATen's `pad`
//!    (whose backward runs autograd through five slice copies of the padded gradient).
//!
//! Environment: `SPEED_METHODS=AOL,SLL` picks the methods of part 2 (default Standard, AOL, SLL,
//! CPL); `SPEED_BATCHES=20` the batches per epoch / timed batches; `SPEED_ROUNDS=5` the
//! rounds of part 2; `SPEED_PART=io|step|autocorrelation|maxmin|pad` one part.

use lipctl::measure::{MeasureRequest, CHILD_JOB_ENV, CHILD_SUBCOMMAND};
use lipctl::nn::{checkpoint, ConvNet, Method, ModelSize, NetSpec};
use lipctl::progress::Progress;
use lipctl::stats::median;
use lipctl::train::trainer::{EpochRecords, StatsFile, STATS_FILE};
use lipctl::train::{self, CheckpointCadence, EpochStats, EvalSplit, SplitStats, TrainConfig, TrainData};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    // As the binary does, before libtorch creates its threads.
    lipctl::device::configure_host_process();
    // `measure` on the CPU measures memory in child processes of the running executable.
    if std::env::args().nth(1).as_deref() == Some(CHILD_SUBCOMMAND) {
        let job = std::env::var_os(CHILD_JOB_ENV).ok_or_else(|| anyhow::anyhow!("{CHILD_JOB_ENV} not set"))?;
        return lipctl::measure::child_main(std::path::Path::new(&job));
    }
    let part = std::env::var("SPEED_PART").unwrap_or_default();
    println!("threads: {}", tch::get_num_threads());
    if part.is_empty() || part == "io" {
        epoch_io()?;
    }
    if part.is_empty() || part == "step" {
        measure_vs_train()?;
    }
    if part.is_empty() || part == "autocorrelation" {
        autocorrelation_gradient();
    }
    if part.is_empty() || part == "maxmin" {
        max_min_step();
    }
    if part.is_empty() || part == "pad" {
        circular_pad_step();
    }
    Ok(())
}

fn row(epoch: usize) -> EpochStats {
    let split = SplitStats { loss: 0.123456789, accuracy: 0.5, cra: [0.25, 0.125, 0.0625, 0.0], median_margin: 0.0123 };
    EpochStats { attempt: 0, epoch, lr: 0.01, momentum: 0.9, seconds: 1.234, train: split.clone(), eval: split, train_seconds: 1.0, train_batches: 1 }
}

fn epoch_io() -> anyhow::Result<()> {
    const EPOCHS: usize = 1000;
    let dir = tempfile::tempdir()?;
    // A tiny model: ConvNet XS with AOL on 8×8 inputs, its variables and momentum-sized extras.
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = ConvNet::new(&vs.root(), NetSpec::new(Method::Aol, ModelSize::XS, 8, 10))?;
    let momentum: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (format!("sgd_momentum/{n}"), t.zeros_like())).collect();
    let stats_path = dir.path().join(STATS_FILE);
    let mut records = EpochRecords {
        stats: StatsFile::create(&stats_path)?,
        checkpoint_path: dir.path().join("checkpoint.safetensors"),
        cadence: CheckpointCadence::EVERY_EPOCH,
        checkpointed: 0,
        checkpointed_at: Instant::now(),
    };
    let mut now = Vec::with_capacity(EPOCHS);
    for e in 1..=EPOCHS {
        let r = row(e);
        let t = Instant::now();
        records.end_epoch(&r, false, |path| {
            let mut named: Vec<(String, Tensor)> = momentum.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
            named.push(("meta/epoch".into(), Tensor::from_slice(&[e as i64])));
            checkpoint::save_with(&vs, named, path)
        })?;
        now.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // The former scheme: the whole file read and rewritten atomically (with fsync) every epoch.
    let old_path = dir.path().join("old.csv");
    std::fs::write(&old_path, std::fs::read_to_string(&stats_path)?.lines().next().unwrap_or("").to_string() + "\n")?;
    let line = std::fs::read_to_string(&stats_path)?.lines().nth(1).unwrap_or("").to_string();
    let mut old = Vec::with_capacity(EPOCHS);
    for _ in 1..=EPOCHS {
        let t = Instant::now();
        let mut text = std::fs::read_to_string(&old_path)?;
        text.push_str(&line);
        text.push('\n');
        lipctl::fsx::write_atomic(&old_path, text.as_bytes())?;
        old.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (n1, n2) = (median(&now[..10]), median(&now[EPOCHS - 10..]));
    let (o1, o2) = (median(&old[..10]), median(&old[EPOCHS - 10..]));
    println!("\nEnd-of-epoch records, tiny model (AOL XS, 8×8), checkpoint every epoch (worst case), ms per epoch (median of 10):");
    println!("{:<44} {:>12} {:>14} {:>8}", "", "epochs 1–10", "epochs 991–1000", "ratio");
    println!("{:<44} {n1:>12.3} {n2:>14.3} {:>7.2}×", "lipctl: append row + checkpoint", n2 / n1);
    println!("{:<44} {o1:>12.3} {o2:>14.3} {:>7.2}×", "former: rewrite whole stats.csv (no checkpoint)", o2 / o1);
    Ok(())
}

fn synthetic_data(n: i64, n_eval: i64) -> TrainData {
    tch::manual_seed(1);
    let images = Tensor::randint(256, [n + n_eval, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let labels = Tensor::randint(10, [n + n_eval], (Kind::Int64, Device::Cpu));
    TrainData {
        train_images: images.narrow(0, 0, n),
        train_labels: labels.narrow(0, 0, n),
        eval_images: images.narrow(0, n, n_eval),
        eval_labels: labels.narrow(0, n, n_eval),
        channel_mean: [0.5, 0.5, 0.5],
    }
}

fn measure_vs_train() -> anyhow::Result<()> {
    let methods: Vec<Method> = match std::env::var("SPEED_METHODS") {
        Ok(v) => v.split(',').map(|m| m.parse().map_err(|e| anyhow::anyhow!("{m}: {e}"))).collect::<anyhow::Result<_>>()?,
        Err(_) => vec![Method::Standard, Method::Aol, Method::Sll, Method::Cpl],
    };
    let batches: i64 = std::env::var("SPEED_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let rounds: usize = std::env::var("SPEED_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let batch = 64;
    println!(
        "\nSeconds per training batch, ConvNet XS, batch {batch}, CPU: `measure` (mean of {batches} timed after 3 warm-up) vs \
         `train` (last of 2 epochs of {batches} batches), back to back for {rounds} rounds (odd rounds `train` first); \
         the ratio is the median of the rounds' train/measure:"
    );
    println!("{:<9} {:>44} {:>44} {:>14} {:>16}", "method", "measure s (each round)", "train s (each round)", "train/measure", "range");
    for method in methods {
        let (mut measured, mut trained, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (m, t) = if round % 2 == 0 {
                let Some(m) = measure_once(method, batch, batches)? else { break };
                (m, train_once(method, batch, batches)?)
            } else {
                let t = train_once(method, batch, batches)?;
                let Some(m) = measure_once(method, batch, batches)? else { break };
                (m, t)
            };
            measured.push(m);
            trained.push(t);
            ratios.push(t / m);
        }
        if ratios.is_empty() {
            continue;
        }
        let each = |v: &[f64]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(" ");
        let (lo, hi) = ratios.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "{:<9} {:>44} {:>44} {:>13.3}× {:>16}",
            method.name(),
            each(&measured),
            each(&trained),
            median(&ratios),
            format!("{lo:.3}–{hi:.3}")
        );
    }
    Ok(())
}

/// `measure`'s mean seconds per training batch of `method`; `None` (with a line) when it failed.
fn measure_once(method: Method, batch: i64, batches: i64) -> anyhow::Result<Option<f64>> {
    let spec = NetSpec::new(method, ModelSize::XS, 32, 10);
    let mut req = MeasureRequest::new(spec, batch, Device::Cpu);
    req.batches = batches as u32;
    req.warmup = 3;
    req.memory_steps = 1;
    let m = lipctl::measure::measure(&req, &Progress::hidden())?;
    match m.train_seconds_per_batch {
        Some(t) => Ok(Some(t.mean)),
        None => {
            println!("{:<9} measure failed: {:?}", method.name(), m.error);
            Ok(None)
        }
    }
}

/// `train`'s seconds per batch of `method`: the training pass of the last of 2 epochs of
/// `batches` batches, divided by its batches.
fn train_once(method: Method, batch: i64, batches: i64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut cfg = TrainConfig::paper(method, ModelSize::XS, 10, 2, 0.01, 1e-4, 0, Device::Cpu);
    cfg.batch_size = batch;
    cfg.eval_split = EvalSplit::Test;
    let outcome = train::train(&cfg, synthetic_data(batch * batches, batch), dir.path(), &Progress::hidden())?;
    let last = outcome.last_epoch.ok_or_else(|| anyhow::anyhow!("{method}: no epoch"))?;
    Ok(last.train_seconds / last.train_batches as f64)
}

/// Part 3: milliseconds per forward + backward of the autocorrelation of a `[c, c, k, k]` float32
/// kernel, lipctl's against autograd of the definition, alternating call by call (and which goes first); medians.
fn autocorrelation_gradient() {
    const CALLS: usize = 9;
    println!("\nKernel autocorrelation forward + backward, float32, CPU, median of {CALLS} alternating calls:");
    println!("{:<16} {:>16} {:>12} {:>9}", "kernel", "definition ms", "lipctl ms", "speed-up");
    let by_definition = |w: &Tensor| {
        let (kh, kw) = (w.size()[2], w.size()[3]);
        w.conv2d(w, None::<Tensor>, [1, 1], [kh - 1, kw - 1], [1, 1], 1)
    };
    for (c, k) in [(64, 3), (128, 3), (256, 3), (512, 3), (512, 1), (1024, 1)] {
        tch::manual_seed(3);
        let kernel = Tensor::randn([c, c, k, k], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let r = Tensor::randn([c, c, 2 * k - 1, 2 * k - 1], (Kind::Float, Device::Cpu));
        let time = |f: &dyn Fn(&Tensor) -> Tensor| {
            let start = Instant::now();
            (f(&kernel).abs() * &r).sum(Kind::Float).backward();
            let _ = kernel.grad().zero_();
            start.elapsed().as_secs_f64() * 1e3
        };
        let (d, o) = alternating_medians(CALLS, || time(&by_definition), || time(&lipctl::nn::ortho::autocorrelation));
        println!("{:<16} {d:>16.2} {o:>12.2} {:>8.2}×", format!("{c}×{c}×{k}×{k}"), d / o);
    }
}

/// Part 4: milliseconds per forward + backward of MaxMin on the activations of a ConvNet training
/// step (batch 64, float32), the fused kernel against the composed one, alternating call by call
/// (and which goes first); medians per shape, then the sum over the step's activations.
fn max_min_step() {
    use lipctl::nn::blocks::{max_min, max_min_composed};
    // MaxMin follows the first convolution and each of a block's five.
    let maps = |_: &NetSpec, i: i64| if i == 0 { 1 + 5 } else { 5 };
    let output = |shape: &[i64]| shape.to_vec();
    per_shape_kernels("MaxMin", "composed", &maps, &output, &max_min_composed, &max_min);
}

fn circular_pad_step() {
    use lipctl::nn::ortho::pad_circular;
    // Circular padding precedes each of a block's five k×k convolutions, except in the last
    // block (k = 1: no padding) and the first 1×1 convolution.
    let maps = |spec: &NetSpec, i: i64| if i == spec.blocks() - 1 { 0 } else { 5 };
    let output = |shape: &[i64]| {
        let mut s = shape.to_vec();
        s[2] += 2;
        s[3] += 2;
        s
    };
    let aten = |x: &Tensor| x.pad([1, 1, 1, 1], "circular", None);
    per_shape_kernels("Circular padding (p = 1)", "ATen", &maps, &output, &aten, &|x: &Tensor| pad_circular(x, 1));
}

/// Forward + backward of one kernel on each feature-map shape of a ConvNet XS and S training step
/// (batch 64, float32, CPU), lipctl's (`ours`) against `other`, alternating call by call, and
/// the sum over one step: `count(spec, block)` calls per step on block `block`'s maps
/// (`w·2^block` channels on `side/2^block`), whose outputs have the shape `output(input shape)`.
fn per_shape_kernels(
    name: &str,
    other_name: &str,
    count: &dyn Fn(&NetSpec, i64) -> i64,
    output: &dyn Fn(&[i64]) -> Vec<i64>,
    other: &dyn Fn(&Tensor) -> Tensor,
    ours: &dyn Fn(&Tensor) -> Tensor,
) {
    const CALLS: usize = 9;
    const BATCH: i64 = 64;
    println!("\n{name} forward + backward, float32, CPU, batch {BATCH}, median of {CALLS} alternating calls:");
    println!("{:<6} {:<18} {:>6} {:>13} {:>10} {:>9}", "size", "map", "count", format!("{other_name} ms"), "lipctl ms", "speed-up");
    for size in [ModelSize::XS, ModelSize::S] {
        let spec = NetSpec::new(Method::Standard, size, 32, 10);
        let w = spec.base_width();
        let (mut total_other, mut total_ours) = (0.0, 0.0);
        for i in 0..spec.blocks() {
            let (c, side, count) = (w << i, spec.input_side >> i, count(&spec, i));
            if count == 0 {
                continue;
            }
            tch::manual_seed(4);
            let shape = [BATCH, c, side, side];
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let r = Tensor::randn(output(&shape).as_slice(), (Kind::Float, Device::Cpu));
            let time = |f: &dyn Fn(&Tensor) -> Tensor| {
                let start = Instant::now();
                (f(&x) * &r).sum(Kind::Float).backward();
                let _ = x.grad().zero_();
                start.elapsed().as_secs_f64() * 1e3
            };
            let (a, b) = alternating_medians(CALLS, || time(other), || time(ours));
            total_other += a * count as f64;
            total_ours += b * count as f64;
            println!("{:<6} {:<18} {count:>6} {a:>13.2} {b:>10.2} {:>8.2}×", size.to_string(), format!("{c}×{side}×{side}"), a / b);
        }
        println!(
            "{:<6} {:<18} {:>6} {total_other:>13.1} {total_ours:>10.1} {:>8.2}×",
            size.to_string(),
            "one training step",
            "",
            total_other / total_ours
        );
    }
}

/// Medians of `calls` timings of `a` and of `b` (milliseconds, as they return), after one untimed
/// call of each; the two alternate call by call, and which goes first alternates too, so that
/// neither always runs on a warmer cache.
fn alternating_medians(calls: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> (f64, f64) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for i in 0..calls + 1 {
        let (x, y) = if i % 2 == 0 {
            let x = a();
            (x, b())
        } else {
            let y = b();
            (a(), y)
        };
        if i > 0 {
            first.push(x);
            second.push(y);
        }
    }
    (median(&first), median(&second))
}
