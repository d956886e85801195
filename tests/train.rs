//! Training-loop tests on a tiny stand-in network and synthetic data: statistics and checkpoint
//! files, divergence retries, and an exact resume after the training process is killed.
//!
//! The resume test runs training in child processes (this test binary re-invoked on the ignored
//! test `training_child`), because torch's random generator is process-global and other tests in
//! this binary use it concurrently.

use lipctl::nn::{Method, ModelSize};
use lipctl::progress::Progress;
use lipctl::train::{self, CheckpointCadence, EvalSplit, Network, RunStatus, TrainConfig, TrainData};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

/// Environment variable telling this binary's `training_child` test to train into that folder.
const CHILD_ENV: &str = "LIPCTL_TRAIN_TEST_CHILD";
/// Environment variable: milliseconds to sleep per training batch in the child (kill window).
const CHILD_SLOW_ENV: &str = "LIPCTL_TRAIN_TEST_SLOW_MS";
/// Environment variable: the child's checkpoint cadence in epochs (default: every epoch).
const CHILD_CKPT_ENV: &str = "LIPCTL_TRAIN_TEST_CKPT_EPOCHS";
const CLASSES: i64 = 3;
/// The schedule's closed form evaluated twice in f64: a few ulps.
const TOL_LR: f64 = 1e-15;

/// conv 3→8 (k3) · ReLU · dropout(0.1) · spatial mean · linear 8→3. Dropout draws random numbers
/// in every training forward, so the resume test also covers randomness inside the network.
#[derive(Debug)]
struct Tiny {
    conv: nn::Conv2D,
    lin: nn::Linear,
    sleep: Duration,
}

impl Tiny {
    fn new(p: &nn::Path, sleep: Duration) -> Self {
        let conv = nn::conv2d(p / "conv", 3, 8, 3, nn::ConvConfig { padding: 1, ..Default::default() });
        let lin = nn::linear(p / "lin", 8, CLASSES, Default::default());
        Tiny { conv, lin, sleep }
    }
}

impl ModuleT for Tiny {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if train && !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        let h = self.conv.forward(x).relu().dropout(0.1, train);
        self.lin.forward(&h.mean_dim(&[2i64, 3][..], false, Kind::Float))
    }
}

/// The evaluation forward of [`Tiny`] over shallow copies of its weights.
#[derive(Debug)]
struct FrozenTiny {
    conv: (Tensor, Tensor),
    lin: (Tensor, Tensor),
}

impl Module for FrozenTiny {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = x.conv2d(&self.conv.0, Some(&self.conv.1), [1, 1], [1, 1], [1, 1], 1).relu();
        h.mean_dim(&[2i64, 3][..], false, Kind::Float).linear(&self.lin.0, Some(&self.lin.1))
    }
}

impl Network for Tiny {
    fn frozen(&self) -> anyhow::Result<Box<dyn nn::Module + '_>> {
        let bias = |b: &Option<Tensor>| b.as_ref().expect("layers are built with a bias").shallow_clone();
        Ok(Box::new(FrozenTiny {
            conv: (self.conv.ws.shallow_clone(), bias(&self.conv.bs)),
            lin: (self.lin.ws.shallow_clone(), bias(&self.lin.bs)),
        }))
    }
}

fn config(epochs: usize, lr: f64, wd: f64, max_retries: usize) -> TrainConfig {
    let mut cfg = TrainConfig::paper(Method::Standard, ModelSize::XS, CLASSES, epochs, lr, wd, 42, Device::Cpu);
    cfg.batch_size = 16;
    cfg.max_retries = max_retries;
    cfg.eval_split = EvalSplit::Validation;
    cfg
}

/// 100 pseudo-random 8×8 images (the last batch of 16 is partial: drop_last = false), labels from
/// the red channel's brightness so there is something to learn; a 90/10 split by index.
fn data() -> TrainData {
    data_of(100, 8)
}

fn data_of(n: i64, side: i64) -> TrainData {
    let pixels = (0..n * 3 * side * side).map(|i| ((i * 7919 + 13) % 256) as u8).collect::<Vec<_>>();
    let images = Tensor::from_slice(&pixels).view([n, 3, side, side]);
    let red = images.narrow(1, 0, 1).to_kind(Kind::Float).mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
    let labels = (red / 86.0).to_kind(Kind::Int64).clamp(0, CLASSES - 1);
    let idx = Tensor::arange(n, (Kind::Int64, Device::Cpu));
    let n_fit = n * 9 / 10;
    let (fit, val) = (idx.narrow(0, 0, n_fit), idx.narrow(0, n_fit, n - n_fit));
    TrainData::select(&images, &labels, &images, &labels, &fit, &val, [0.5, 0.5, 0.5], EvalSplit::Validation).unwrap()
}

fn try_run(cfg: &TrainConfig, dir: &Path, sleep: Duration) -> anyhow::Result<train::TrainOutcome> {
    train::train_with(cfg, data(), dir, &Progress::hidden(), &|p: &nn::Path| -> anyhow::Result<Box<dyn Network>> {
        Ok(Box::new(Tiny::new(p, sleep)))
    })
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lipctl-train-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stats_rows(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(train::trainer::STATS_FILE)).unwrap_or_default();
    text.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect()
}

#[test]
fn training_writes_statistics_checkpoints_and_a_loadable_model() {
    let dir = fresh_dir("basic");
    let cfg = config(3, 0.05, 1e-4, 0);
    let outcome = try_run(&cfg, &dir, Duration::ZERO).unwrap();
    assert_eq!(outcome.status, RunStatus::Completed);
    assert_eq!(outcome.attempts.len(), 1);
    assert_eq!(outcome.attempts[0].seed, 42, "the first attempt uses the configured seed");
    let rows = stats_rows(&dir);
    assert_eq!(rows.len(), 3);
    // OneCycle for E = 3 by hand: e1 = 0.3·3 − 1 = −0.1, e2 = 2, so every step is in phase 2 with
    // pct = (s + 0.1)/2.1 from peak to peak/25/1e4; epoch e uses s = e − 1.
    for (e, row) in rows.iter().enumerate() {
        assert_eq!(row[0], "0");
        assert_eq!(row[1], (e + 1).to_string());
        let pct = (e as f64 + 0.1) / 2.1;
        let (peak, min) = (0.05, 0.05 / 25.0 / 1e4);
        let lr = min + (peak - min) * (1.0 + (std::f64::consts::PI * pct).cos()) / 2.0;
        let got: f64 = row[2].parse().unwrap();
        assert!((got - lr).abs() < TOL_LR, "epoch {}: lr {got} vs {lr}", e + 1);
        for v in &row[5..] {
            assert!(v.parse::<f64>().unwrap().is_finite(), "{row:?}");
        }
    }
    // The model file loads strictly into a fresh network.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _net = Tiny::new(&vs.root(), Duration::ZERO);
    vs.load(dir.join(outcome.model_file.as_ref().unwrap())).unwrap();
    // The checkpoint records the epoch and a momentum buffer for each of the 4 parameters.
    let ckpt = Tensor::read_safetensors(dir.join(train::trainer::CHECKPOINT_FILE)).unwrap();
    let get = |n: &str| ckpt.iter().find(|(k, _)| k == n).map(|(_, t)| t.shallow_clone()).unwrap();
    assert_eq!(get("meta/epoch").int64_value(&[0]), 3);
    assert_eq!(ckpt.iter().filter(|(k, _)| k.starts_with("sgd_momentum/")).count(), 4);
    // Running again finds the finished run and does not train (the statistics are unchanged).
    let before = std::fs::read_to_string(dir.join(train::trainer::STATS_FILE)).unwrap();
    let again = try_run(&cfg, &dir, Duration::ZERO).unwrap();
    assert_eq!(again, outcome);
    assert_eq!(std::fs::read_to_string(dir.join(train::trainer::STATS_FILE)).unwrap(), before);
    // A different configuration in the same folder is refused, naming the folder's run.
    let err = try_run(&config(3, 0.07, 1e-4, 0), &dir, Duration::ZERO).unwrap_err();
    assert!(format!("{err:#}").contains("belongs to another run"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn absurd_learning_rate_diverges_and_is_retried_with_new_seeds() {
    let dir = fresh_dir("diverge");
    let cfg = config(3, 1e6, 1e-2, 2);
    let outcome = try_run(&cfg, &dir, Duration::ZERO).unwrap();
    assert_eq!(outcome.status, RunStatus::Diverged);
    assert_eq!(outcome.attempts.len(), 3, "{:?}", outcome.attempts);
    assert!(outcome.model_file.is_none());
    let seeds: std::collections::BTreeSet<u64> = outcome.attempts.iter().map(|a| a.seed).collect();
    assert_eq!(seeds.len(), 3, "every retry has its own seed");
    for a in &outcome.attempts {
        assert_eq!(a.status, RunStatus::Diverged);
        let d = a.divergence.as_ref().unwrap();
        assert!(d.loss == "NaN" || d.loss.contains("inf"), "{d:?}");
    }
    assert!(!dir.join(train::trainer::MODEL_FILE).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

const RESUME_EPOCHS: usize = 5;

/// Not a test on its own: the training process that `resume_after_kill_is_exact` starts (and
/// kills). Does nothing unless `CHILD_ENV` is set.
#[test]
#[ignore]
fn training_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let ms: u64 = std::env::var(CHILD_SLOW_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let every: u32 = std::env::var(CHILD_CKPT_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut cfg = config(RESUME_EPOCHS, 0.05, 5e-4, 0);
    cfg.checkpoint = CheckpointCadence { every_epochs: every, every_minutes: f64::INFINITY };
    let outcome = try_run(&cfg, Path::new(&dir), Duration::from_millis(ms)).unwrap();
    assert_eq!(outcome.status, RunStatus::Completed);
}

fn spawn_child(dir: &Path, slow_ms: u64) -> Child {
    spawn_child_with(dir, slow_ms, 1)
}

fn spawn_child_with(dir: &Path, slow_ms: u64, checkpoint_every: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["training_child", "--exact", "--ignored", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .env(CHILD_SLOW_ENV, slow_ms.to_string())
        .env(CHILD_CKPT_ENV, checkpoint_every.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn resume_after_kill_is_exact() {
    let uninterrupted = fresh_dir("uninterrupted");
    let interrupted = fresh_dir("interrupted");
    let reference = spawn_child(&uninterrupted, 0);

    // Kill the slowed-down child once it has published two epochs, in the middle of the third.
    let mut child = spawn_child(&interrupted, 25);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats_rows(&interrupted).len() < 2 {
        assert!(Instant::now() < deadline, "the child never finished two epochs");
        assert!(child.try_wait().unwrap().is_none(), "the child exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(60));
    child.kill().unwrap(); // SIGKILL: no chance to clean up.
    child.wait().unwrap();
    assert!(!interrupted.join(train::trainer::OUTCOME_FILE).exists(), "killed too late: the run had finished");
    let done = stats_rows(&interrupted).len();
    assert!((2..RESUME_EPOCHS).contains(&done), "{done} epochs done at the kill");

    // Restart: it resumes from the last checkpoint and finishes.
    let status = spawn_child(&interrupted, 0).wait().unwrap();
    assert!(status.success());
    assert!(reference.wait_with_output().unwrap().status.success());

    let read = |d: &Path| {
        let mut v = Tensor::read_safetensors(d.join(train::trainer::CHECKPOINT_FILE)).unwrap();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (a, b) = (read(&uninterrupted), read(&interrupted));
    assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name} differs between the interrupted and the uninterrupted run");
    }
    // The statistics agree too (except the timing column), one row per epoch.
    let (ra, rb) = (stats_rows(&uninterrupted), stats_rows(&interrupted));
    assert_eq!(ra.len(), RESUME_EPOCHS);
    assert_eq!(rb.len(), RESUME_EPOCHS);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!((&x[..4], &x[5..]), (&y[..4], &y[5..]));
    }
    let _ = std::fs::remove_dir_all(&uninterrupted);
    let _ = std::fs::remove_dir_all(&interrupted);
}

fn read_sorted_checkpoint(d: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(d.join(train::trainer::CHECKPOINT_FILE)).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Waits until the child has published `rows` epochs, then signals it with `signal` (SIGKILL via
/// `Child::kill`, or SIGTERM) and reaps it; returns the rows published at that point.
fn stop_after(child: &mut Child, dir: &Path, rows: usize, sigterm: bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats_rows(dir).len() < rows {
        assert!(Instant::now() < deadline, "the child never finished {rows} epochs");
        assert!(child.try_wait().unwrap().is_none(), "the child exited early");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(60));
    let done = stats_rows(dir).len();
    if sigterm {
        // SAFETY: a plain kill(2) of our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    } else {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child finished instead of stopping");
    done
}

/// SIGTERM (a Slurm time limit) with a sparse checkpoint cadence: the run writes the checkpoint
/// of its last completed epoch before it stops, and the resumed run ends bit-identical to an
/// uninterrupted one. The same stop by SIGKILL leaves no checkpoint (the cadence is sparse), so
/// the check can tell the two apart.
#[test]
fn sigterm_checkpoints_the_last_completed_epoch_and_resumes_exactly() {
    let uninterrupted = fresh_dir("term-uninterrupted");
    let killed = fresh_dir("term-killed");
    let terminated = fresh_dir("term-terminated");
    let reference = spawn_child_with(&uninterrupted, 0, 100);

    let mut child = spawn_child_with(&killed, 25, 100);
    stop_after(&mut child, &killed, 2, false);
    assert!(!killed.join(train::trainer::CHECKPOINT_FILE).exists(), "SIGKILL: no checkpoint before the cadence's first");

    let mut child = spawn_child_with(&terminated, 25, 100);
    let done = stop_after(&mut child, &terminated, 2, true);
    assert!(!terminated.join(train::trainer::OUTCOME_FILE).exists(), "stopped too late: the run had finished");
    let ckpt = read_sorted_checkpoint(&terminated);
    let epoch = ckpt.iter().find(|(n, _)| n == "meta/epoch").unwrap().1.int64_value(&[0]) as usize;
    // The last completed epoch when the signal came (a row may have been appended after `done`
    // was read and before the signal arrived).
    assert!(epoch == done || epoch == done + 1, "checkpoint of epoch {epoch}, {done} epochs published");
    assert!(epoch < RESUME_EPOCHS);

    let status = spawn_child_with(&terminated, 0, 100).wait().unwrap();
    assert!(status.success());
    assert!(reference.wait_with_output().unwrap().status.success());
    let (a, b) = (read_sorted_checkpoint(&uninterrupted), read_sorted_checkpoint(&terminated));
    assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name} differs between the terminated and the uninterrupted run");
    }
    let (ra, rb) = (stats_rows(&uninterrupted), stats_rows(&terminated));
    assert_eq!(rb.len(), RESUME_EPOCHS);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!((&x[..4], &x[5..]), (&y[..4], &y[5..]));
    }
    for d in [&uninterrupted, &killed, &terminated] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The real ConvNet path: `train` builds the network of the configuration, and the certify
/// stage loads the model file, audits every layer and writes the per-sample margins.
#[test]
fn convnet_trains_then_certifies_with_an_audited_bound() {
    use lipctl::certify::{self, AuditOptions};
    use lipctl::eval::EPSILONS;
    use lipctl::nn::NetSpec;
    for method in [Method::Aol, Method::Standard] {
        let dir = fresh_dir(&format!("convnet-{method}"));
        let mut cfg = config(1, 0.01, 1e-4, 0);
        cfg.method = method;
        // 4×4 inputs keep the XS network small (2 blocks; width 128, as C·H is constant).
        let d = data_of(30, 4);
        let (eval_images, eval_labels) = (d.eval_images.shallow_clone(), d.eval_labels.shallow_clone());
        let outcome = train::train(&cfg, d, &dir, &Progress::hidden()).unwrap();
        assert_eq!(outcome.status, RunStatus::Completed, "{method}");
        let spec = NetSpec { method, size: ModelSize::XS, kernel: 3, input_side: 4, classes: CLASSES };
        // Few iterations: enough for the bound logic under test, and an AOL layer's estimate
        // cannot exceed its true norm (≤ 1) however early the iteration stops.
        let opts = AuditOptions { max_iterations: 10, tolerance: 1e-5, random_points: 0, ..Default::default() };
        let model = dir.join(outcome.model_file.as_ref().unwrap());
        let cert = certify::certify_model_file(spec, &model, &eval_images, &eval_labels, [0.5; 3], 4, Device::Cpu, &dir.join("cert"), &opts, None)
            .unwrap();
        // first_conv, 2 blocks × 5 convs (4×4 input), head.
        assert_eq!(cert.audit.layers.len(), 12, "{method}");
        assert_eq!(cert.audit.layers[6].name, "block2.conv1");
        assert_eq!(cert.audit.layers[6].input_shape, vec![1, 256, 2, 2]);
        assert_eq!(cert.audit.layers[11].input_shape, vec![1, 512, 1, 1]);
        assert_eq!(cert.lipschitz, cert.audit.product.max(1.0));
        if method == Method::Aol {
            assert!(cert.audit.layers.iter().all(|l| l.sigma <= 1.0 + 1e-5), "{:?}", cert.audit.layers);
            assert!(cert.lipschitz <= 1.0 + 1e-5, "{}", cert.lipschitz);
        } else {
            // The baseline is not Lipschitz by construction: accuracy, but no CRA.
            assert!(cert.not_certifiable.is_some() && cert.cra.is_empty(), "{:?}", cert.cra);
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        // CRA can only fall as ε grows, and at ε = 0 it is at most the accuracy.
        assert_eq!(cert.cra.iter().map(|c| c.0).collect::<Vec<_>>(), EPSILONS.to_vec());
        assert!(cert.cra.windows(2).all(|w| w[1].1 <= w[0].1));
        assert!(cert.cra[0].1 <= cert.accuracy);
        let csv = std::fs::read_to_string(dir.join("cert/margins.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 3);
        assert!(dir.join("cert/certificate.json").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every method's frozen layers through both audit paths: the closed-form bounds their declared
/// structures give (no layer of the paper's methods is left to an estimate), and the power
/// iteration, which differentiates every layer twice (double backward for `J·u`). A freshly built
/// Lipschitz network must audit to `L ≈ 1` either way. (The slowest test here: freezing LOT and
/// BCOP networks dominates.)
#[test]
fn every_method_can_be_audited() {
    use lipctl::certify::{self, AuditOptions, BoundKind};
    use lipctl::nn::{ConvNet, NetSpec, Structure};
    /// A few iterations only: the estimate is then a lower bound on each layer's norm (≤ 1 in
    /// theory); SOC's truncated series and LOT's regulariser allow this much above 1.
    const ORTHO_SLACK: f64 = 1e-3;
    /// CPL's rescaling divides by a 100-step power-iteration estimate of ‖K‖², which from a random
    /// vector has not converged at initialisation: the sound bound max(1, r·‖K‖² − 1) exceeds 1 by
    /// the estimate's shortfall. Over seeds 0–59 (this net) a tenth of the layers exceeded 1.02 and
    /// the worst reached 1.042; CI once drew 1.028 (the head). Which draw this test gets is not
    /// fixed by its seed: torch's generator is process-global, and the other tests in this binary
    /// draw from it (and `audit` reseeds it) concurrently. A wrong rescaling (`r·‖K‖`, or no `r`)
    /// is off by O(1), which this limit still catches; training keeps iterating the same vector.
    const CPL_INIT_SLACK: f64 = 0.25;
    /// f32 rounding of a 3-step power iteration on a map of norm ~1.
    const ESTIMATE_F32: f64 = 1e-4;
    let opts = AuditOptions { max_iterations: 3, tolerance: 1e-5, random_points: 0, ..Default::default() };
    for method in Method::ALL {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let spec = NetSpec { method, size: ModelSize::XS, kernel: 3, input_side: 4, classes: CLASSES };
        let net = ConvNet::new(&vs.root(), spec).unwrap_or_else(|e| panic!("{method}: {e:#}"));
        let bounds = certify::audit(&certify::convnet_layers(&net).unwrap(), Device::Cpu, &opts).unwrap_or_else(|e| panic!("{method}: {e:#}"));
        let slack = if method == Method::Cpl { CPL_INIT_SLACK } else { ORTHO_SLACK };
        for l in &bounds.layers {
            assert!(l.kind != BoundKind::Estimate, "{method} {}: no closed-form bound", l.name);
            if method.is_lipschitz() {
                assert!(l.sigma <= 1.0 + slack, "{method} {}: bound {}", l.name, l.sigma);
            }
        }
        let mut layers = certify::convnet_layers(&net).unwrap();
        for l in &mut layers {
            l.structure = Structure::Opaque;
        }
        let audit = certify::audit(&layers, Device::Cpu, &opts).unwrap_or_else(|e| panic!("{method}: {e:#}"));
        assert_eq!(audit.layers.len(), 12, "{method}");
        assert!(audit.lipschitz >= 1.0);
        assert!(audit.layers.iter().all(|l| l.kind == BoundKind::Estimate));
        // Two independent paths: the power iteration only ever approaches a layer's norm from
        // below, so a sound closed-form bound can never fall under its estimate (whatever the draw).
        for (closed, est) in bounds.layers.iter().zip(&audit.layers) {
            assert!(
                est.sigma <= closed.sigma * (1.0 + ESTIMATE_F32),
                "{method} {}: closed-form bound {} is below the power-iteration estimate {}",
                closed.name,
                closed.sigma,
                est.sigma
            );
        }
        if method.is_lipschitz() {
            for l in &audit.layers {
                assert!(l.sigma <= 1.0 + ORTHO_SLACK, "{method} {}: σ = {}", l.name, l.sigma);
            }
        }
    }
}
