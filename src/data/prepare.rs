//! `lipctl prepare`: a source → one `prepare` artifact (design §2).
//!
//! The key is computed before anything is decoded: dataset kind, name, a content checksum of the
//! source ([`archive::source_checksum`]), the split seed and the schema version. A second run of the
//! same source therefore costs one read of the source plus verification of the artifact.
//! Validation happens entirely before anything is written; a failure leaves nothing behind (the
//! store removes its temporary folder).

use super::archive::{self, Tree};
use super::synthetic::SyntheticSpec;
use super::{cifar, image_folder, npz, synthetic, tiny_imagenet};
use super::{channel_mean, split_indices, DatasetKind, Decoded, Images, Meta, DATA_FILE, SPLIT_SEED};
use crate::fsx;
use crate::store::{Key, ManifestInfo, Store};
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::fmt;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const STAGE: &str = "prepare";
/// Bump when the artifact's files or their meaning change (it changes every `prepare` key).
pub const SCHEMA_VERSION: u32 = 1;

/// What to prepare.
#[derive(Clone, Debug)]
pub struct PrepareRequest {
    pub dataset: DatasetKind,
    /// Folder or archive; `None` looks for the official archive in `data_dir` (not for
    /// `imagefolder`, which needs one).
    pub source: Option<PathBuf>,
    /// Display name (default: the dataset kind, or the source's file name for `imagefolder`).
    pub name: Option<String>,
    /// Where official archives are looked for and downloaded to.
    pub data_dir: PathBuf,
    /// Whether a missing official archive may be downloaded (with `curl`).
    pub download: bool,
    pub synthetic: SyntheticSpec,
}

impl PrepareRequest {
    pub fn new(dataset: DatasetKind) -> Self {
        PrepareRequest {
            dataset,
            source: None,
            name: None,
            data_dir: PathBuf::from("data"),
            download: false,
            synthetic: SyntheticSpec::default(),
        }
    }
}

/// What `prepare` reports.
#[derive(Clone, Debug)]
pub struct PreparedSummary {
    pub name: String,
    /// The artifact folder, for [`super::Dataset::load`].
    pub dir: PathBuf,
    pub key: Key,
    pub cached: bool,
    pub classes: usize,
    pub fit: usize,
    pub val: usize,
    pub test: usize,
    pub image_side: usize,
    pub channel_mean: [f64; 3],
    /// Min and max images per class in the training and test splits.
    pub train_per_class: (usize, usize),
    pub test_per_class: (usize, usize),
}

impl fmt::Display for PreparedSummary {
    /// One line: counts per split, classes, image size, per-channel mean, and whether it was cached.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = |(lo, hi): (usize, usize)| if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") };
        write!(
            f,
            "{}: {} train + {} val, {} test; {} classes ({}/{} per class); {}×{}; mean ({:.4}, {:.4}, {:.4}); {}{}",
            self.name,
            self.fit,
            self.val,
            self.test,
            self.classes,
            per(self.train_per_class),
            per(self.test_per_class),
            self.image_side,
            self.image_side,
            self.channel_mean[0],
            self.channel_mean[1],
            self.channel_mean[2],
            self.dir.display(),
            if self.cached { " (cached)" } else { "" }
        )
    }
}

/// An official archive: file name, URL and MD5 (as published by the dataset authors).
pub struct Official {
    pub file: &'static str,
    pub folder: &'static str,
    pub url: &'static str,
    pub md5: &'static str,
}

pub fn official(kind: DatasetKind) -> Option<Official> {
    match kind {
        DatasetKind::Cifar10 => Some(Official {
            file: "cifar-10-binary.tar.gz",
            folder: "cifar-10-batches-bin",
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
        }),
        DatasetKind::Cifar100 => Some(Official {
            file: "cifar-100-binary.tar.gz",
            folder: "cifar-100-binary",
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
        }),
        DatasetKind::Tinyimagenet => Some(Official {
            file: "tiny-imagenet-200.zip",
            folder: "tiny-imagenet-200",
            url: "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            md5: "90528d7ca1a48142e341f4ef8d21d0de",
        }),
        DatasetKind::Imagefolder | DatasetKind::Npz | DatasetKind::Synthetic => None,
    }
}

fn md5_file(path: &Path) -> Result<String> {
    use md5::Digest;
    use std::io::Read;
    let mut file = fsx::open(path)?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("failed to read `{}`", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The source to read: `--source`, else the official archive or extracted folder in the data
/// folder, else a download (when allowed).
fn resolve_source(req: &PrepareRequest, progress: &Progress) -> Result<Option<PathBuf>> {
    if req.dataset == DatasetKind::Synthetic {
        if let Some(s) = &req.source {
            bail!("--source `{}` given for the synthetic dataset, which has no source", s.display());
        }
        return Ok(None);
    }
    if let Some(s) = &req.source {
        if req.dataset == DatasetKind::Npz {
            npz::source_files(s)?;
        } else if !s.exists() {
            bail!("source `{}` does not exist", s.display());
        }
        return Ok(Some(s.clone()));
    }
    let Some(off) = official(req.dataset) else {
        if req.dataset == DatasetKind::Npz {
            bail!("--dataset npz needs --source train.npz,test.npz (or one .npz holding x_train, y_train, x_test, y_test)");
        }
        bail!("--dataset {} needs --source PATH (a folder, .tar.gz or .zip holding train/<class>/ and test/<class>/)", req.dataset);
    };
    let archive_path = req.data_dir.join(off.file);
    if archive_path.is_file() {
        let md5 = md5_file(&archive_path)?;
        if md5 != off.md5 {
            bail!(
                "`{}` is not the official archive (MD5 {md5}, expected {}); delete it to download again, or pass it \
                 with --source to use it anyway",
                archive_path.display(),
                off.md5
            );
        }
        return Ok(Some(archive_path));
    }
    let folder = req.data_dir.join(off.folder);
    if folder.is_dir() {
        return Ok(Some(folder));
    }
    let hint = format!(
        "put `{}` (from {}) into `{}`, or pass the archive or its extracted `{}/` folder with --source PATH \
         (`lipctl run`: --data PATH; `make reproduce DATA=PATH`)",
        off.file,
        off.url,
        req.data_dir.display(),
        off.folder
    );
    if !req.download {
        bail!("{} not found and downloading is off; {hint}", off.file);
    }
    download(&off, &archive_path, progress).with_context(|| format!("could not download {}; {hint}", off.file))?;
    Ok(Some(archive_path))
}

/// Downloads with `curl` (showing its progress bar) into a temporary name, verifies the MD5, then
/// renames into place.
fn download(off: &Official, dest: &Path, progress: &Progress) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fsx::create_dir_all(parent)?;
    }
    let tmp = dest.with_extension(format!("part-{}", std::process::id()));
    progress.println(&format!("downloading {} …", off.url));
    let status = std::process::Command::new("curl")
        // curl's own progress bar on stderr: the archives are 160 MB to 250 MB.
        .args(["--fail", "--location", "--progress-bar", "--output"])
        .arg(&tmp)
        .arg(off.url)
        .status()
        .context("`curl` is not available")?;
    let result = (|| -> Result<()> {
        if !status.success() {
            bail!("curl failed ({status})");
        }
        let md5 = md5_file(&tmp)?;
        if md5 != off.md5 {
            bail!("downloaded file has MD5 {md5}, expected {}", off.md5);
        }
        fsx::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn default_name(req: &PrepareRequest, source: Option<&Path>) -> String {
    if let Some(n) = &req.name {
        return n.clone();
    }
    match (req.dataset, source) {
        (DatasetKind::Npz, Some(src)) => {
            let first = npz::source_files(src).ok().and_then(|f| f.into_iter().next()).unwrap_or_else(|| src.to_path_buf());
            first.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "npz".into())
        }
        (DatasetKind::Imagefolder, Some(src)) => {
            let file = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let stem = [".tar.gz", ".tgz", ".tar", ".zip"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext))
                .unwrap_or(&file)
                .to_string();
            if stem.is_empty() { "imagefolder".to_string() } else { stem }
        }
        (kind, _) => kind.as_str().to_string(),
    }
}

/// Everything that identifies a prepare artifact, computed without decoding anything: the
/// source is resolved (and, for official archives, located or downloaded) and hashed.
struct Resolved {
    source: Option<PathBuf>,
    name: String,
    source_sha256: String,
    info: ManifestInfo,
    key: Key,
}

fn resolve(req: &PrepareRequest, progress: &Progress) -> Result<Resolved> {
    let source = resolve_source(req, progress)?;
    let name = default_name(req, source.as_deref());
    if name.is_empty() || name.contains(['/', '\\']) {
        bail!("dataset name \"{name}\" must be non-empty and contain no slashes");
    }
    let source_sha256 = match &source {
        Some(s) if req.dataset == DatasetKind::Npz => {
            // Both files, in order: swapping train and test changes the dataset.
            let sums = npz::source_files(s)?.iter().map(|f| archive::source_checksum(f)).collect::<Result<Vec<_>>>()?;
            if sums.len() == 1 { sums[0].clone() } else { hex::encode(sha2::Sha256::digest(sums.join(",").as_bytes())) }
        }
        Some(s) => archive::source_checksum(s)?,
        None => String::new(),
    };
    let mut config = serde_json::json!({
        "dataset": req.dataset.as_str(),
        "name": name,
        "source_sha256": source_sha256,
        "split_seed": SPLIT_SEED,
        "val_fraction_denominator": super::VAL_FRACTION_DENOMINATOR,
    });
    if req.dataset == DatasetKind::Synthetic {
        config["synthetic"] = serde_json::to_value(req.synthetic).context("serialising the synthetic spec")?;
    }
    let info = ManifestInfo::new(SCHEMA_VERSION, config);
    let key = info.key(STAGE);
    Ok(Resolved { source, name, source_sha256, info, key })
}

/// The key `prepare` would give `req`, without decoding (the pipeline plans with it).
pub fn prepare_key(req: &PrepareRequest, progress: &Progress) -> Result<Key> {
    Ok(resolve(req, progress)?.key)
}

/// Prepares `req` into `store` (or finds it there) and summarises it.
pub fn prepare(req: &PrepareRequest, store: &Store, progress: &Progress) -> Result<PreparedSummary> {
    let Resolved { source, name, source_sha256, info, key } = resolve(req, progress)?;
    let artifact = match store.lookup(STAGE, &key)? {
        Some(a) => a,
        None => store.build(STAGE, &key, &info, |tmp| {
            let decoded = decode(req, source.as_deref(), progress)?;
            write_artifact(tmp, decoded, req.dataset, &name, &source_sha256, &key)
        })?,
    };
    let meta: Meta = crate::records::read(&artifact)?;
    let range = |v: &[usize]| (v.iter().copied().min().unwrap_or(0), v.iter().copied().max().unwrap_or(0));
    Ok(PreparedSummary {
        name: meta.name.clone(),
        dir: artifact.dir.clone(),
        key,
        cached: artifact.cached,
        classes: meta.classes.len(),
        fit: meta.fit,
        val: meta.val,
        test: meta.test,
        image_side: meta.image_side,
        channel_mean: meta.channel_mean,
        train_per_class: range(&meta.train_per_class),
        test_per_class: range(&meta.test_per_class),
    })
}

fn read_source(path: &Path, want: &dyn Fn(&str) -> bool, progress: &Progress) -> Result<Tree> {
    let task = progress.task("read source", 1);
    let tree = archive::read_tree(path, want)?;
    task.finish(&format!("{} files", tree.files.len()));
    Ok(tree)
}

/// Reads and validates the source into memory.
fn decode(req: &PrepareRequest, source: Option<&Path>, progress: &Progress) -> Result<Decoded> {
    let need = || source.context("internal error: no source resolved for a dataset that needs one");
    let decoded = match req.dataset {
        DatasetKind::Synthetic => synthetic::generate(&req.synthetic),
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let variant = if req.dataset == DatasetKind::Cifar10 { cifar::Variant::Ten } else { cifar::Variant::Hundred };
            let tree = read_source(need()?, &|n| variant.wants(n) || image_folder::is_image(n), progress)?;
            if tree.files.keys().any(|n| variant.wants(n)) {
                cifar::read(&tree, variant)?
            } else {
                // The same images in the image-folder layout (e.g. the JPEG copy of CIFAR-10):
                // accepted when the class count matches the dataset.
                let decoded = image_folder::read(&tree, progress).with_context(|| {
                    format!(
                        "{}: neither the binary version ({}/) nor an image folder (train/<class>/, test/<class>/)",
                        tree.origin.display(),
                        variant.folder()
                    )
                })?;
                let expected = if req.dataset == DatasetKind::Cifar10 { 10 } else { 100 };
                if decoded.classes.len() != expected {
                    bail!(
                        "{}: an image folder with {} classes, but {} has {expected}; use --dataset imagefolder for other data",
                        tree.origin.display(),
                        decoded.classes.len(),
                        req.dataset.as_str()
                    );
                }
                decoded
            }
        }
        DatasetKind::Npz => npz::read(&npz::source_files(need()?)?, progress)?,
        DatasetKind::Imagefolder => {
            let tree = read_source(need()?, &image_folder::is_image, progress)?;
            image_folder::read(&tree, progress)?
        }
        DatasetKind::Tinyimagenet => {
            let tree = read_source(need()?, &tiny_imagenet::wants, progress)?;
            tiny_imagenet::read(&tree, progress)?
        }
    };
    validate(&decoded, source)?;
    Ok(decoded)
}

/// Invariants every reader must have established; checked once more here so that no artifact can
/// violate them.
fn validate(d: &Decoded, source: Option<&Path>) -> Result<()> {
    let origin = source.map(|s| s.display().to_string()).unwrap_or_else(|| "synthetic".into());
    let per = 3 * d.side * d.side;
    for (split, imgs) in [("train", &d.train), ("test", &d.test)] {
        if imgs.labels.is_empty() {
            bail!("{origin}: the {split} split is empty");
        }
        if imgs.pixels.len() != imgs.labels.len() * per {
            bail!("internal error: {split} has {} pixel bytes for {} images of {per}", imgs.pixels.len(), imgs.labels.len());
        }
        if let Some(l) = imgs.labels.iter().find(|&&l| l < 0 || l as usize >= d.classes.len()) {
            bail!("{origin}: {split} label {l} out of range 0..={}", d.classes.len() - 1);
        }
    }
    let counts = |imgs: &Images| {
        let mut c = vec![0usize; d.classes.len()];
        imgs.labels.iter().for_each(|&l| c[l as usize] += 1);
        c
    };
    let (tr, te) = (counts(&d.train), counts(&d.test));
    for (i, class) in d.classes.iter().enumerate() {
        if tr[i] == 0 || te[i] == 0 {
            bail!(
                "{origin}: class `{class}` has {} training and {} test images; every class needs both",
                tr[i],
                te[i]
            );
        }
    }
    Ok(())
}

/// Writes `data.safetensors` and `meta.json`. Each pixel buffer is dropped as soon as its tensor
/// exists, keeping the peak near two copies of the training images (CIFAR: ~370 MB).
fn write_artifact(dir: &Path, mut d: Decoded, kind: DatasetKind, name: &str, source_sha256: &str, key: &Key) -> Result<()> {
    let s = d.side as i64;
    let count = |imgs: &Images| {
        let mut c = vec![0usize; d.classes.len()];
        imgs.labels.iter().for_each(|&l| c[l as usize] += 1);
        c
    };
    let (fit, val) = split_indices(&d.train.labels);
    let meta = Meta {
        format: SCHEMA_VERSION,
        name: name.to_string(),
        dataset: kind,
        classes: d.classes.clone(),
        image_side: d.side,
        train: d.train.labels.len(),
        fit: fit.len(),
        val: val.len(),
        test: d.test.labels.len(),
        train_per_class: count(&d.train),
        test_per_class: count(&d.test),
        channel_mean: channel_mean(&d.train.pixels, d.side),
        source_sha256: source_sha256.to_string(),
        split_seed: SPLIT_SEED,
        checksum: key.to_string(),
    };
    let images = |imgs: &mut Images| -> Result<Tensor> {
        let t = Tensor::from_slice(&imgs.pixels)
            .f_view([imgs.labels.len() as i64, 3, s, s])
            .context("shaping image tensor")?;
        imgs.pixels = Vec::new();
        Ok(t)
    };
    let tensors = [
        ("train_images", images(&mut d.train)?),
        ("train_labels", Tensor::from_slice(&d.train.labels)),
        ("test_images", images(&mut d.test)?),
        ("test_labels", Tensor::from_slice(&d.test.labels)),
        ("fit_split", Tensor::from_slice(&fit)),
        ("val_split", Tensor::from_slice(&val)),
    ];
    let data_path = dir.join(DATA_FILE);
    Tensor::write_safetensors(&tensors, &data_path).with_context(|| format!("failed to write `{}`", data_path.display()))?;
    crate::records::write(dir, &meta)
}
