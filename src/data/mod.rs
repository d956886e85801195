//! Datasets: reading the supported sources ([`prepare`]) and loading prepared ones ([`Dataset`]).
//!
//! A prepared dataset is one artifact of stage `prepare` (design §2–3): `data.safetensors` with
//! uint8 images `[N, 3, S, S]` (RGB planes, row-major), int64 labels and the train/validation split
//! indices, plus `meta.json` (classes, counts, per-channel mean, image side, source checksum).

pub mod archive;
pub mod cifar;
pub mod image_folder;
pub mod npz;
pub mod prepare;
pub mod synthetic;
pub mod tiny_imagenet;

pub use prepare::{prepare, PrepareRequest, PreparedSummary};
pub use synthetic::SyntheticSpec;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use tch::{Kind, Tensor};

/// The dataset kinds `lipctl prepare --dataset` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Cifar10,
    Cifar100,
    Tinyimagenet,
    Imagefolder,
    /// NumPy `.npz` arrays ([`npz`]): `--source train.npz,test.npz` or one file with both splits.
    Npz,
    Synthetic,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Tinyimagenet,
        DatasetKind::Imagefolder,
        DatasetKind::Npz,
        DatasetKind::Synthetic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Tinyimagenet => "tinyimagenet",
            DatasetKind::Imagefolder => "imagefolder",
            DatasetKind::Npz => "npz",
            DatasetKind::Synthetic => "synthetic",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetKind {
    type Err = anyhow::Error;

    /// Accepts the canonical names case-insensitively, with `-`/`_` ignored (`tiny-imagenet`,
    /// `CIFAR-10`, `image_folder`).
    fn from_str(s: &str) -> Result<Self> {
        let folded: String = s.chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_lowercase();
        DatasetKind::ALL.into_iter().find(|k| k.as_str() == folded).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown dataset \"{s}\"; expected one of {}",
                DatasetKind::ALL.map(|k| k.as_str()).join(", ")
            )
        })
    }
}

/// One decoded split, before it becomes tensors: `pixels` is `[N, 3, S, S]` row-major.
#[derive(Clone, Debug, Default)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub labels: Vec<i64>,
}

/// What every reader returns.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub classes: Vec<String>,
    pub side: usize,
    pub train: Images,
    pub test: Images,
}

/// Fraction of each class's training images held out for validation (reference-protocol §5.3/5.4:
/// 45,000/5,000 of CIFAR's 50,000).
pub const VAL_FRACTION_DENOMINATOR: usize = 10;
/// Seed of the split shuffle (R2 uses 1111 for its split; the value itself is arbitrary).
pub const SPLIT_SEED: u64 = 1111;

/// Deterministic, class-stratified 90/10 split of a training set with `labels`, returned as
/// (fit, val) ascending index lists. The indices are shuffled with SplitMix64(`SPLIT_SEED`),
/// stably grouped by class, and every 10th position of that order (positions 9, 19, …) goes to
/// validation: `⌊N/10⌋` validation images in all, each class within one of a tenth of its count.
/// Departure from the reference (an unstratified `random_split`, reseeded per run): a stable split
/// makes searches comparable across methods, and stratification keeps small subsets balanced.
pub fn split_indices(labels: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let n = labels.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = crate::stats::SplitMix64::new(SPLIT_SEED);
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order.sort_by_key(|&i| labels[i]);
    let (mut fit, mut val) = (Vec::with_capacity(n), Vec::with_capacity(n / VAL_FRACTION_DENOMINATOR));
    for (pos, &i) in order.iter().enumerate() {
        if pos % VAL_FRACTION_DENOMINATOR == VAL_FRACTION_DENOMINATOR - 1 {
            val.push(i as i64);
        } else {
            fit.push(i as i64);
        }
    }
    fit.sort_unstable();
    val.sort_unstable();
    (fit, val)
}

/// Per-channel mean of `[N, 3, S, S]` uint8 pixels, in [0, 1] (what centering subtracts,
/// reference-protocol §5.2). Exact: integer sums, one division.
pub fn channel_mean(pixels: &[u8], side: usize) -> [f64; 3] {
    let plane = side * side;
    let mut sums = [0u64; 3];
    let mut count = 0u64;
    for img in pixels.chunks_exact(3 * plane) {
        for (c, sum) in sums.iter_mut().enumerate() {
            *sum += img[c * plane..(c + 1) * plane].iter().map(|&v| v as u64).sum::<u64>();
        }
        count += plane as u64;
    }
    if count == 0 {
        return [0.0; 3];
    }
    sums.map(|s| s as f64 / (count as f64 * 255.0))
}

/// `meta.json` of a prepared dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub name: String,
    pub dataset: DatasetKind,
    pub classes: Vec<String>,
    pub image_side: usize,
    pub train: usize,
    pub fit: usize,
    pub val: usize,
    pub test: usize,
    pub train_per_class: Vec<usize>,
    pub test_per_class: Vec<usize>,
    pub channel_mean: [f64; 3],
    /// SHA-256 of the source (archive bytes, or folder listing and contents; see
    /// [`archive::source_checksum`]); empty for `synthetic`.
    pub source_sha256: String,
    pub split_seed: u64,
    /// The dataset checksum downstream keys use (the `prepare` artifact key).
    pub checksum: String,
}

impl crate::records::Record for Meta {
    const FILE: &'static str = META_FILE;
    /// `format` in the file states the same number.
    const SCHEMA_VERSION: u32 = prepare::SCHEMA_VERSION;
    const WHAT: &'static str = "a dataset description";
    const KEY_ORDER: crate::records::KeyOrder = crate::records::KeyOrder::Declared;
}

pub const DATA_FILE: &str = "data.safetensors";
pub const META_FILE: &str = "meta.json";

/// A prepared dataset in memory (CPU tensors; callers move them to their device).
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    pub classes: Vec<String>,
    /// uint8 `[N, 3, S, S]`.
    pub train_images: Tensor,
    /// int64 `[N]`.
    pub train_labels: Tensor,
    pub test_images: Tensor,
    pub test_labels: Tensor,
    /// int64 ascending indices into train: the validation 10% (for the hyper-parameter search).
    pub val_split: Tensor,
    /// int64 ascending indices into train: the other 90%.
    pub fit_split: Tensor,
    /// Per-channel mean of the full training set, in [0, 1].
    pub channel_mean: [f64; 3],
    /// Content checksum for downstream keys: the `prepare` artifact key, or for a subset a hash
    /// of that and the subset sizes.
    pub checksum: String,
}

impl Dataset {
    /// Loads a prepared dataset folder (a `prepare` artifact), checking shapes and kinds.
    pub fn load(dir: &Path) -> Result<Dataset> {
        let meta_path = dir.join(META_FILE);
        let meta: Meta = crate::records::read_file(&meta_path)?;
        let data_path = dir.join(DATA_FILE);
        let tensors = Tensor::read_safetensors(&data_path)
            .with_context(|| format!("failed to read tensors from `{}`", data_path.display()))?;
        let get = |name: &str, kind: Kind| -> Result<Tensor> {
            let pos = tensors
                .iter()
                .position(|(n, _)| n == name)
                .with_context(|| format!("`{}` has no tensor `{name}`", data_path.display()))?;
            let t = tensors[pos].1.shallow_clone();
            if t.kind() != kind {
                bail!("`{}`: tensor `{name}` is {:?}, expected {kind:?}", data_path.display(), t.kind());
            }
            Ok(t)
        };
        let ds = Dataset {
            name: meta.name.clone(),
            classes: meta.classes.clone(),
            train_images: get("train_images", Kind::Uint8)?,
            train_labels: get("train_labels", Kind::Int64)?,
            test_images: get("test_images", Kind::Uint8)?,
            test_labels: get("test_labels", Kind::Int64)?,
            val_split: get("val_split", Kind::Int64)?,
            fit_split: get("fit_split", Kind::Int64)?,
            channel_mean: meta.channel_mean,
            checksum: meta.checksum.clone(),
        };
        let s = meta.image_side as i64;
        let checks = [
            ("train_images", ds.train_images.size(), vec![meta.train as i64, 3, s, s]),
            ("train_labels", ds.train_labels.size(), vec![meta.train as i64]),
            ("test_images", ds.test_images.size(), vec![meta.test as i64, 3, s, s]),
            ("test_labels", ds.test_labels.size(), vec![meta.test as i64]),
            ("fit_split", ds.fit_split.size(), vec![meta.fit as i64]),
            ("val_split", ds.val_split.size(), vec![meta.val as i64]),
        ];
        for (name, got, want) in checks {
            if got != want {
                bail!("`{}`: tensor `{name}` has shape {got:?}, meta.json says {want:?}", data_path.display());
            }
        }
        Ok(ds)
    }

    /// Side length S of the square images.
    pub fn image_side(&self) -> i64 {
        self.train_images.size()[3]
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The first `train_per_class` training and `test_per_class` test images of each class (in
    /// stored order; `None` keeps all), with the fit/val split recomputed by [`split_indices`]. The
    /// channel mean stays the full dataset's, so a subset run centres exactly as a full run does.
    pub fn subset(&self, train_per_class: Option<usize>, test_per_class: Option<usize>) -> Dataset {
        let device = self.train_images.device();
        let pick = |labels: &Tensor, k: Option<usize>| -> Vec<i64> {
            let labels: Vec<i64> =
                Vec::<i64>::try_from(&labels.to_device(tch::Device::Cpu)).expect("labels are an int64 vector (checked on load)");
            let mut seen = vec![0usize; self.classes.len()];
            let mut out = Vec::new();
            for (i, &l) in labels.iter().enumerate() {
                let c = &mut seen[l as usize];
                if k.is_none_or(|k| *c < k) {
                    out.push(i as i64);
                }
                *c += 1;
            }
            out
        };
        let train_pick = pick(&self.train_labels, train_per_class);
        let train_idx = Tensor::from_slice(&train_pick).to_device(device);
        let test_idx = Tensor::from_slice(&pick(&self.test_labels, test_per_class)).to_device(self.test_images.device());
        let train_labels = self.train_labels.index_select(0, &train_idx.to_device(self.train_labels.device()));
        let all_labels = Vec::<i64>::try_from(&self.train_labels.to_device(tch::Device::Cpu)).expect("labels are an int64 vector");
        let labels_vec: Vec<i64> = train_pick.iter().map(|&i| all_labels[i as usize]).collect();
        let (fit, val) = split_indices(&labels_vec);
        let fmt_k = |k: Option<usize>| k.map(|k| k.to_string()).unwrap_or_else(|| "all".into());
        let checksum = hex::encode(Sha256::digest(
            format!("{}:subset:train={}:test={}", self.checksum, fmt_k(train_per_class), fmt_k(test_per_class)).as_bytes(),
        ));
        Dataset {
            name: self.name.clone(),
            classes: self.classes.clone(),
            train_images: self.train_images.index_select(0, &train_idx),
            train_labels,
            test_images: self.test_images.index_select(0, &test_idx),
            test_labels: self.test_labels.index_select(0, &test_idx.to_device(self.test_labels.device())),
            fit_split: Tensor::from_slice(&fit).to_device(self.fit_split.device()),
            val_split: Tensor::from_slice(&val).to_device(self.val_split.device()),
            channel_mean: self.channel_mean,
            checksum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_parse_with_a_helpful_error() {
        assert_eq!("CIFAR-10".parse::<DatasetKind>().unwrap(), DatasetKind::Cifar10);
        assert_eq!("tiny_imagenet".parse::<DatasetKind>().unwrap(), DatasetKind::Tinyimagenet);
        let msg = "cifar1O".parse::<DatasetKind>().unwrap_err().to_string();
        assert!(msg.contains("unknown dataset \"cifar1O\"") && msg.contains("cifar10, cifar100, tinyimagenet"), "{msg}");
    }

    #[test]
    fn split_is_stratified_and_a_partition() {
        // 3 classes of 20, 10 and 5 images, interleaved.
        let labels: Vec<i64> = (0..35).map(|i| if i < 20 { 0 } else if i < 30 { 1 } else { 2 }).collect();
        let (fit, val) = split_indices(&labels);
        assert_eq!(val.len(), 3, "floor(35/10)");
        assert_eq!(fit.len() + val.len(), 35);
        let mut all: Vec<i64> = fit.iter().chain(val.iter()).copied().collect();
        all.sort();
        assert_eq!(all, (0..35).collect::<Vec<i64>>());
        // Class-grouped positions 9, 19 (class 0: 0..20) and 29 (class 1: 20..30).
        let per_class: Vec<usize> = (0..3).map(|c| val.iter().filter(|&&i| labels[i as usize] == c).count()).collect();
        assert_eq!(per_class, [2, 1, 0]);
        assert_eq!(split_indices(&labels), (fit, val), "deterministic");
    }

    #[test]
    fn channel_mean_by_hand() {
        // Two 1×1 images: (255, 0, 51) and (0, 0, 153) → means (0.5, 0, 0.4).
        let m = channel_mean(&[255, 0, 51, 0, 0, 153], 1);
        assert_eq!(m, [0.5, 0.0, 0.4]);
    }
}
