//! NumPy archives: generated or exported datasets as `.npz` files (`np.savez`, compressed or not),
//! `lipctl prepare --dataset npz --source train.npz,test.npz` or `--source data.npz`.
//!
//! * **Two files**, one per split (train first): each holds an image array named `x`, `images`,
//!   `image`, `data` or `arr_0` and a label array named `y`, `labels`, `label`, `targets` or
//!   `arr_1` (`np.savez(f, x=…, y=…)`, or `np.savez(f, images, labels)`).
//! * **One file** holding both splits: `x_train`, `y_train`, `x_test`, `y_test` (Keras' names), or
//!   `train_images`, `train_labels`, `test_images`, `test_labels`.
//!
//! Images are uint8, `[N, H, W, 3]` (channels last, as NumPy and PIL keep them) or `[N, 3, H, W]`
//! (channels first, as PyTorch does), square (`H = W`); grayscale `[N, H, W]`, `[N, H, W, 1]` or
//! `[N, 1, H, W]` becomes RGB by repeating the plane, as the image readers convert grayscale files.
//! Labels are integers (any width, signed or unsigned), `[N]` or `[N, 1]`, in `0..K`, where `K` (the
//! class count) is one more than the largest training label and every class must occur in both
//! splits (the check every dataset passes, `prepare::validate`); classes are named `0` … `K-1`. Every
//! rejection exits with code 2 and names the file, the array and the fix. The arrays are read with
//! the `npyz` crate.

use super::{Decoded, Images};
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use npyz::npz::NpzArchive;
use npyz::{DType, Order, TypeChar};
use std::path::{Path, PathBuf};

/// Array names of a one-split file: (images, labels) alternatives.
const SPLIT_IMAGES: [&str; 5] = ["x", "images", "image", "data", "arr_0"];
const SPLIT_LABELS: [&str; 5] = ["y", "labels", "label", "targets", "arr_1"];
/// Array names of a two-split file: train images, train labels, test images, test labels.
const BOTH_SPLITS: [[&str; 4]; 2] =
    [["x_train", "y_train", "x_test", "y_test"], ["train_images", "train_labels", "test_images", "test_labels"]];

/// The `.npz` files of a `--source` value: `train.npz,test.npz` or one file. A path that exists as
/// it is (even with a comma in its name) is one file.
pub fn source_files(source: &Path) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = if source.is_file() {
        vec![source.to_path_buf()]
    } else {
        source.to_string_lossy().split(',').map(|s| PathBuf::from(s.trim())).collect()
    };
    if files.len() > 2 {
        bail!("--source `{}`: give one .npz file or two (train.npz,test.npz), not {}", source.display(), files.len());
    }
    for f in &files {
        if !f.is_file() {
            bail!("source `{}` does not exist (expected a .npz file; --source train.npz,test.npz or data.npz)", f.display());
        }
    }
    Ok(files)
}

/// Reads the split(s) of `files` (see [`source_files`]) into a [`Decoded`].
pub fn read(files: &[PathBuf], progress: &Progress) -> Result<Decoded> {
    let task = progress.task("read npz", files.len() as u64);
    let (train, test) = match files {
        [one] => {
            let mut npz = open(one)?;
            let names = sorted_names(&npz);
            let Some(set) = BOTH_SPLITS.iter().find(|set| set.iter().all(|n| names.iter().any(|m| m == n))) else {
                bail!(
                    "`{}`: holds arrays [{}]; a single file needs the train and test arrays {} (or {}); or pass two files, \
                     --source train.npz,test.npz, each with images and labels",
                    one.display(),
                    names.join(", "),
                    BOTH_SPLITS[0].join(", "),
                    BOTH_SPLITS[1].join(", ")
                );
            };
            let train = split(&mut npz, one, set[0], set[1])?;
            let test = split(&mut npz, one, set[2], set[3])?;
            (train, test)
        }
        [train, test] => (one_split(train)?, one_split(test)?),
        _ => bail!("internal error: {} npz files", files.len()),
    };
    task.finish(&format!("{} + {} images", train.labels.len(), test.labels.len()));
    if train.side != test.side {
        bail!(
            "the training images are {0}×{0} but the test images {1}×{1}; every image must have one size",
            train.side,
            test.side
        );
    }
    let max_label = train.labels.iter().copied().max().unwrap_or(-1);
    if max_label >= train.labels.len() as i64 {
        bail!(
            "`{}`: the largest training label is {max_label}, but there are only {} training images; labels must be class \
             indices 0..K-1 (with K classes, each with images); renumber them, e.g. np.unique(y, return_inverse=True)[1]",
            train.origin,
            train.labels.len()
        );
    }
    let classes = (max_label + 1) as usize;
    if let Some((i, l)) = test.labels.iter().enumerate().find(|(_, &l)| l > max_label) {
        bail!(
            "`{}`: test label {l} (image {i}) is not among the training labels 0..={max_label}; every class needs training images",
            test.origin
        );
    }
    Ok(Decoded {
        classes: (0..classes).map(|c| c.to_string()).collect(),
        side: train.side,
        train: Images { pixels: train.pixels, labels: train.labels },
        test: Images { pixels: test.pixels, labels: test.labels },
    })
}

/// One split, checked and converted to `[N, 3, S, S]`.
struct Split {
    origin: String,
    side: usize,
    pixels: Vec<u8>,
    labels: Vec<i64>,
}

/// The archive's array names, sorted (zip order is the writer's; messages should not depend on it).
fn sorted_names<R: std::io::Read + std::io::Seek>(npz: &NpzArchive<R>) -> Vec<String> {
    let mut names: Vec<String> = npz.array_names().map(str::to_string).collect();
    names.sort();
    names
}

fn open(path: &Path) -> Result<NpzArchive<std::io::BufReader<std::fs::File>>> {
    NpzArchive::open(path).with_context(|| format!("`{}` is not a readable .npz (zip) archive", path.display()))
}

fn one_split(path: &Path) -> Result<Split> {
    let mut npz = open(path)?;
    let names = sorted_names(&npz);
    let pick = |choices: &[&str], what: &str| -> Result<String> {
        choices.iter().find(|c| names.iter().any(|n| n == *c)).map(|c| c.to_string()).with_context(|| {
            format!(
                "`{}`: no {what} array; it holds [{}], expected one named {}",
                path.display(),
                names.join(", "),
                choices.join(", ")
            )
        })
    };
    let images = pick(&SPLIT_IMAGES, "image")?;
    let labels = pick(&SPLIT_LABELS, "label")?;
    split(&mut npz, path, &images, &labels)
}

fn split<R: std::io::Read + std::io::Seek>(npz: &mut NpzArchive<R>, path: &Path, images: &str, labels: &str) -> Result<Split> {
    let at = |array: &str| format!("`{}`, array `{array}`", path.display());
    let (side, pixels) = read_images(npz, images, &at(images))?;
    let labels_vec = read_labels(npz, labels, &at(labels))?;
    let n = pixels.len() / (3 * side * side);
    if labels_vec.len() != n {
        bail!("{}: {} labels for {n} images in `{images}`; give one label per image", at(labels), labels_vec.len());
    }
    Ok(Split { origin: at(labels), side, pixels, labels: labels_vec })
}

fn array<'a, R: std::io::Read + std::io::Seek>(
    npz: &'a mut NpzArchive<R>,
    name: &str,
    at: &str,
) -> Result<npyz::NpyFile<impl std::io::Read + 'a>> {
    let file = npz.by_name(name).with_context(|| format!("{at}: cannot be read (truncated or damaged archive?)"))?;
    let file = file.with_context(|| format!("{at}: missing"))?;
    if file.order() == Order::Fortran {
        bail!("{at}: is stored in Fortran order; save it with np.ascontiguousarray(a)");
    }
    Ok(file)
}

/// `<f4`, `|u1`, … (NumPy's type string, without the quotes of `DType::descr`).
fn type_str(dtype: &DType) -> String {
    match dtype {
        DType::Plain(t) => t.to_string(),
        other => other.descr(),
    }
}

/// Images as `[N, 3, S, S]` uint8 (module doc for the accepted layouts).
fn read_images<R: std::io::Read + std::io::Seek>(npz: &mut NpzArchive<R>, name: &str, at: &str) -> Result<(usize, Vec<u8>)> {
    let file = array(npz, name, at)?;
    let dtype = file.dtype();
    let is_u8 = matches!(&dtype, DType::Plain(t) if t.type_char() == TypeChar::Uint && t.size_field() == 1);
    if !is_u8 {
        bail!(
            "{at}: images are {}, expected uint8 (0–255); convert with (x * 255).round().clip(0, 255).astype(np.uint8) for \
             floats in [0, 1], or x.astype(np.uint8) for integers already in 0–255",
            type_str(&dtype)
        );
    }
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    // (n, channels, side, channels_last)
    let (n, c, h, w, last) = match shape.as_slice() {
        [n, h, w] => (*n, 1, *h, *w, true),
        [n, h, w, c @ (1 | 3)] if !(matches!(shape[1], 1 | 3) && shape[1] != *c) => (*n, *c, *h, *w, true),
        [n, c @ (1 | 3), h, w] => (*n, *c, *h, *w, false),
        _ => bail!(
            "{at}: images have shape {shape:?}; expected [N, H, W, 3] (channels last), [N, 3, H, W] (channels first) or \
             [N, H, W] (grayscale)"
        ),
    };
    if h != w {
        bail!("{at}: images are {h}×{w}; lipctl's networks take square images: crop or resize them to S×S first");
    }
    if n == 0 || h == 0 {
        bail!("{at}: no images (shape {shape:?})");
    }
    let data: Vec<u8> = file.into_vec().with_context(|| format!("{at}: truncated or unreadable data"))?;
    let plane = h * w;
    let mut out = vec![0u8; n * 3 * plane];
    for (img, dst) in data.chunks_exact(c * plane).zip(out.chunks_exact_mut(3 * plane)) {
        for ch in 0..3 {
            let src_ch = if c == 1 { 0 } else { ch };
            let dst_plane = &mut dst[ch * plane..(ch + 1) * plane];
            if last {
                for (p, v) in dst_plane.iter_mut().enumerate() {
                    *v = img[p * c + src_ch];
                }
            } else {
                dst_plane.copy_from_slice(&img[src_ch * plane..(src_ch + 1) * plane]);
            }
        }
    }
    Ok((h, out))
}

/// Integer labels `[N]` or `[N, 1]` as i64, each ≥ 0.
fn read_labels<R: std::io::Read + std::io::Seek>(npz: &mut NpzArchive<R>, name: &str, at: &str) -> Result<Vec<i64>> {
    let file = array(npz, name, at)?;
    let dtype = file.dtype();
    let shape: Vec<u64> = file.shape().to_vec();
    let DType::Plain(t) = &dtype else {
        bail!("{at}: labels are a structured array ({}); give integer class indices", type_str(&dtype));
    };
    let integer = matches!(t.type_char(), TypeChar::Int | TypeChar::Uint);
    if !integer {
        bail!("{at}: labels are {}, expected integer class indices; convert with y.astype(np.int64)", type_str(&dtype));
    }
    match shape.as_slice() {
        [_] | [_, 1] => {}
        [_, k] => bail!(
            "{at}: labels have shape {shape:?}, which looks one-hot ({k} columns); give class indices, y.argmax(axis=1)"
        ),
        _ => bail!("{at}: labels have shape {shape:?}; expected [N] class indices"),
    }
    // npyz reads each width into the Rust type of exactly that width (either byte order).
    fn widen<T: npyz::Deserialize + TryInto<i64> + Copy, R: std::io::Read>(file: npyz::NpyFile<R>, at: &str) -> Result<Vec<i64>> {
        let v: Vec<T> = file.into_vec().with_context(|| format!("{at}: truncated or unreadable data"))?;
        // Only u64 values above i64::MAX fail; they are no class index either.
        Ok(v.into_iter().map(|x| x.try_into().unwrap_or(i64::MAX)).collect())
    }
    let labels = match (t.type_char(), t.size_field()) {
        (TypeChar::Int, 1) => widen::<i8, _>(file, at)?,
        (TypeChar::Int, 2) => widen::<i16, _>(file, at)?,
        (TypeChar::Int, 4) => widen::<i32, _>(file, at)?,
        (TypeChar::Int, 8) => widen::<i64, _>(file, at)?,
        (TypeChar::Uint, 1) => widen::<u8, _>(file, at)?,
        (TypeChar::Uint, 2) => widen::<u16, _>(file, at)?,
        (TypeChar::Uint, 4) => widen::<u32, _>(file, at)?,
        (TypeChar::Uint, 8) => widen::<u64, _>(file, at)?,
        _ => bail!("{at}: labels are {}, an integer width lipctl does not read; convert with y.astype(np.int64)", type_str(&dtype)),
    };
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l == i64::MAX) {
        bail!("{at}: label {l} (image {i}) is too large for a class index");
    }
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0) {
        bail!("{at}: label {l} (image {i}) is negative; labels are class indices 0..K-1");
    }
    Ok(labels)
}
