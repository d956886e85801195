//! The one training step (reference-protocol §6.4 step 1), shared by `train`, `measure` and
//! `bench`, so that a measured budget is the wall clock of real training: the batch is gathered
//! from the uint8 dataset on the device, centred and augmented, the network runs in training mode,
//! the offset cross-entropy is back-propagated, the fused SGD ([`Sgd::step`]) updates every
//! parameter, and the per-batch metrics (loss, correctness, margin of the detached outputs, i.e.
//! before the update) are kept on the device. Every [`CHECK_EVERY`] batches the mean loss and
//! accuracy of the last batches are read back ([`Check`]): the divergence check and progress line.
//!
//! **Host synchronisations.** On CUDA the step itself enqueues kernels only: no `.item()`, no
//! shape that depends on data, the SGD is one fused kernel per parameter group, the Cayley
//! inverses use `linalg_inv_ex` without error checks ([`crate::nn::fft::cayley`]) and the FFT
//! shift matrices are cached. The syncs that remain are, per epoch of `B` batches:
//! * one read of two scalars every [`CHECK_EVERY`] batches ([`Check`]; ⌈B/16⌉ per epoch);
//! * the epoch summary: training loss, correctness and margins copied to the host once;
//! * the evaluation pass ([`crate::eval::evaluate`]: one copy of its results at the end);
//! * the check of the Cayley inverses' status ([`crate::nn::fft::take_singular_inverses`]), once;
//! * a checkpoint, when one is written (the tensors are copied to the host to be saved);
//! * `randperm` of the epoch's order and the augmentation's random numbers are generated on the
//!   device, with no host round trip.
//!
//! On the CPU the code path is the same; there, "synchronisation" costs nothing.

use super::augment::Augmentation;
use super::sgd::Sgd;
use crate::eval::{correct_and_margin, lipschitz_loss, Centering};
use crate::nn::{ConvNet, NetSpec};
use anyhow::Context;
use tch::{nn, Device, Kind, Tensor};

/// Revision of the step's cost: bump it when a change to the step (its kernels, what autograd
/// keeps) changes the time or memory that `measure` reports. It is part of every measurement's key
/// (docs/artifacts.md), so the measured budgets of a store are never the wall clock of a step this
/// binary no longer runs. Without it a cached measurement outlives the code it timed: the fused
/// MaxMin cut Standard-M's training memory at batch 600 from 7.9 to 3.1 GB (peak RSS), and
/// a measurement made before it kept reporting 7.9.
/// * 1 (unrecorded in keys): composed MaxMin (`gather`/`scatter_add` with int64 indices).
/// * 2: on the CPU, fused MaxMin ([`crate::nn::blocks`]) and the one-pass backward of the
///   circular padding ([`crate::nn::ortho::pad_circular`]); SOC's series scales its filter.
pub const COST_REVISION: u32 = 2;

/// How often (in batches) the training loss is read back to detect divergence early and update
/// the progress message; reading it every batch would synchronise the device every batch.
pub const CHECK_EVERY: usize = 16;

/// The mean loss and accuracy of the last [`CHECK_EVERY`] batches, read back from the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Check {
    pub loss: f64,
    pub accuracy: f64,
}

/// Per-batch metrics of the training pass, on the device.
#[derive(Debug, Default)]
pub struct Metrics {
    losses: Vec<Tensor>,
    corrects: Vec<Tensor>,
    margins: Vec<Tensor>,
}

/// The training pass's metrics on the host: mean over batches of the batch-mean loss, and the
/// per-sample correctness and margin.
#[derive(Clone, Debug)]
pub struct Summary {
    pub loss: f64,
    pub correct: Vec<bool>,
    pub margins: Vec<f64>,
}

impl Metrics {
    pub fn batches(&self) -> usize {
        self.losses.len()
    }

    /// Copies the metrics to the host (one synchronisation); `None` when there was no batch.
    pub fn summary(&self) -> anyhow::Result<Option<Summary>> {
        if self.losses.is_empty() {
            return Ok(None);
        }
        let loss = Tensor::f_stack(&self.losses, 0)?.f_mean(Kind::Double)?.f_double_value(&[])?;
        let correct = Vec::<bool>::try_from(Tensor::f_cat(&self.corrects, 0)?.f_to_device(Device::Cpu)?)?;
        let margins = Vec::<f64>::try_from(Tensor::f_cat(&self.margins, 0)?.f_to_device(Device::Cpu)?)?;
        Ok(Some(Summary { loss, correct, margins }))
    }

    fn check(&self) -> anyhow::Result<Check> {
        let from = self.losses.len().saturating_sub(CHECK_EVERY);
        // Both scalars in one tensor: one device-to-host copy.
        let loss = Tensor::f_stack(&self.losses[from..], 0)?.f_mean(Kind::Double)?;
        let acc = Tensor::f_cat(&self.corrects[from..], 0)?.f_to_kind(Kind::Double)?.f_mean(Kind::Double)?;
        let both = Vec::<f64>::try_from(Tensor::f_stack(&[loss, acc], 0)?.f_to_device(Device::Cpu)?)?;
        Ok(Check { loss: both[0], accuracy: both[1] })
    }
}

/// The training step's state: the optimizer, the batch preparation and the metrics.
#[derive(Debug)]
pub struct Step {
    pub opt: Sgd,
    pub augmentation: Augmentation,
    centering: Centering,
    /// RandAugment's device tables, made at the first batch.
    rand_tables: Option<super::randaugment::Tables>,
    metrics: Metrics,
}

impl Step {
    pub fn new(opt: Sgd, augmentation: Augmentation, centering: Centering) -> Self {
        Step { opt, augmentation, centering, rand_tables: None, metrics: Metrics::default() }
    }

    /// One step on the batch `idx` (int64 indices on the device) of the uint8 dataset `images`
    /// `[N, 3, H, W]` with int64 `labels` `[N]`. Returns a [`Check`] after every
    /// [`CHECK_EVERY`]-th batch since the last [`Step::take_metrics`], `None` otherwise.
    pub fn run<N: nn::ModuleT + ?Sized>(&mut self, net: &N, images: &Tensor, labels: &Tensor, idx: &Tensor) -> anyhow::Result<Option<Check>> {
        let x = self.augmentation.apply_cached(&images.f_index_select(0, idx)?, &self.centering, &mut self.rand_tables)?;
        let y = labels.f_index_select(0, idx)?;
        let out = net.forward_t(&x, true);
        let loss = lipschitz_loss(&out, &y)?;
        self.opt.zero_grad();
        loss.f_backward()?;
        self.opt.step()?;
        {
            let _guard = tch::no_grad_guard();
            self.metrics.losses.push(loss.f_detach()?.f_to_kind(Kind::Double)?);
            let (c, m) = correct_and_margin(&out.f_detach()?, &y)?;
            self.metrics.corrects.push(c);
            self.metrics.margins.push(m);
        }
        if self.metrics.batches() % CHECK_EVERY == 0 {
            return Ok(Some(self.metrics.check()?));
        }
        Ok(None)
    }

    /// The metrics since the last call (an epoch's), leaving none.
    pub fn take_metrics(&mut self) -> Metrics {
        std::mem::take(&mut self.metrics)
    }
}

/// A ConvNet with the training step on a random uint8 dataset of one batch, each step taking the
/// whole dataset in a fresh random order: what `measure` and `bench` time. The images and labels
/// have the real data's type, shape and range; the metrics are summarised and dropped every
/// `epoch_batches` steps, as at the end of a training epoch.
pub struct Synthetic {
    _vs: nn::VarStore,
    pub net: ConvNet,
    pub step: Step,
    images: Tensor,
    labels: Tensor,
    /// The dataset centred (no augmentation): the batch of the inference timing.
    pub centred: Tensor,
    epoch_batches: usize,
}

/// Channel mean of the synthetic data (uniform bytes: 127.5/255).
const SYNTHETIC_MEAN: [f64; 3] = [0.5, 0.5, 0.5];

impl Synthetic {
    /// Builds the network of `spec` with torch seeded by `seed`, and an SGD with the given
    /// learning rate, momentum and weight decay, and CIFAR augmentation.
    pub fn new(spec: NetSpec, batch_size: i64, device: Device, seed: i64, lr: f64, momentum: f64, wd: f64) -> anyhow::Result<Self> {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(device);
        let net = ConvNet::new(&vs.root(), spec)?;
        let opt = Sgd::new(&vs, lr, momentum, wd);
        let side = spec.input_side;
        let images = Tensor::f_randint(256, [batch_size, 3, side, side], (Kind::Uint8, device))
            .with_context(|| format!("cannot allocate a batch of {batch_size} images of {side}×{side}"))?;
        let labels = Tensor::f_randint(spec.classes, [batch_size], (Kind::Int64, device)).context("cannot allocate labels")?;
        let centering = Centering::new(SYNTHETIC_MEAN, device)?;
        let centred = centering.apply(&images)?;
        let step = Step::new(opt, Augmentation::CIFAR, centering);
        // CIFAR-10 at batch 256 has 196 batches per epoch.
        Ok(Synthetic { _vs: vs, net, step, images, labels, centred, epoch_batches: 196 })
    }

    /// One training step (see [`Step::run`]).
    pub fn train_step(&mut self) -> anyhow::Result<()> {
        let n = self.images.size()[0];
        let idx = Tensor::f_randperm(n, (Kind::Int64, self.images.device()))?;
        self.step.run(&self.net, &self.images, &self.labels, &idx)?;
        if self.step.metrics.batches() >= self.epoch_batches {
            self.step.take_metrics().summary()?;
        }
        Ok(())
    }
}
