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
//!    machine one run of either varies by ±15 %, so the two alternate for several rounds and the
//!    ratio is of the medians.
//!
//! Environment: `SPEED_METHODS=AOL,SLL` picks the methods of part 2 (default Standard, AOL, SLL,
//! CPL); `SPEED_BATCHES=20` the batches per epoch / timed batches; `SPEED_ROUNDS=3` the
//! alternations of part 2; `SPEED_PART=io|step` one part.

use lipctl::measure::{MeasureRequest, CHILD_JOB_ENV, CHILD_SUBCOMMAND};
use lipctl::nn::{checkpoint, ConvNet, Method, ModelSize, NetSpec};
use lipctl::progress::Progress;
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
    Ok(())
}

fn row(epoch: usize) -> EpochStats {
    let split = SplitStats { loss: 0.123456789, accuracy: 0.5, cra: [0.25, 0.125, 0.0625, 0.0], median_margin: 0.0123 };
    EpochStats { attempt: 0, epoch, lr: 0.01, momentum: 0.9, seconds: 1.234, train: split.clone(), eval: split, train_seconds: 1.0, train_batches: 1 }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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
    let (n1, n2) = (median(&mut now[..10].to_vec()), median(&mut now[EPOCHS - 10..].to_vec()));
    let (o1, o2) = (median(&mut old[..10].to_vec()), median(&mut old[EPOCHS - 10..].to_vec()));
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
    let rounds: usize = std::env::var("SPEED_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let batch = 64;
    println!(
        "\nSeconds per training batch, ConvNet XS, batch {batch}, CPU: `measure` (mean of {batches} timed after 3 warm-up) vs \
         `train` (last of 2 epochs of {batches} batches), alternating for {rounds} rounds; medians over the rounds:"
    );
    println!("{:<9} {:>30} {:>30} {:>14}", "method", "measure (each round)", "train (each round)", "train/measure");
    for method in methods {
        let (mut measured, mut trained) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            match measure_and_train(method, batch, batches)? {
                Some((m, t)) => {
                    measured.push(m);
                    trained.push(t);
                }
                None => break,
            }
        }
        if measured.is_empty() {
            continue;
        }
        let each = |v: &[f64]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(" ");
        let (m, t) = (lipctl::stats::median(&measured), lipctl::stats::median(&trained));
        println!("{:<9} {:>30} {:>30} {:>13.3}×", method.name(), each(&measured), each(&trained), t / m);
    }
    Ok(())
}

/// One `measure` (its mean seconds per training batch) then one `train` (seconds per batch of its
/// last epoch's training pass) of `method`; `None` (with a line) when `measure` failed.
fn measure_and_train(method: Method, batch: i64, batches: i64) -> anyhow::Result<Option<(f64, f64)>> {
    let spec = NetSpec::new(method, ModelSize::XS, 32, 10);
    let mut req = MeasureRequest::new(spec, batch, Device::Cpu);
    req.batches = batches as u32;
    req.warmup = 3;
    req.memory_steps = 1;
    let m = lipctl::measure::measure(&req, &Progress::hidden())?;
    let Some(t) = m.train_seconds_per_batch else {
        println!("{:<9} measure failed: {:?}", method.name(), m.error);
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let mut cfg = TrainConfig::paper(method, ModelSize::XS, 10, 2, 0.01, 1e-4, 0, Device::Cpu);
    cfg.batch_size = batch;
    cfg.eval_split = EvalSplit::Test;
    let outcome = train::train(&cfg, synthetic_data(batch * batches, batch), dir.path(), &Progress::hidden())?;
    let last = outcome.last_epoch.ok_or_else(|| anyhow::anyhow!("{method}: no epoch"))?;
    let per_batch = last.train_seconds / last.train_batches as f64;
    Ok(Some((t.mean, per_batch)))
}
