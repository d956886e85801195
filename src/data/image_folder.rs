//! Image folders: `root/{train,test}/<class>/*.{jpg,jpeg,png}` as a folder, `.tar.gz` or `.zip`,
//! possibly below one top-level folder (`cifar10-jpeg/train/...`). Class indices follow the
//! alphabetical (byte-wise) order of the class folder names, as torchvision's `ImageFolder`
//! (reference-protocol §5.1). Within a class, images are taken in file-name order, so the result
//! does not depend on archive or file-system order. Files with other extensions are ignored, as
//! `ImageFolder` does; hidden files are skipped. Names keep every byte ([`crate::fsx::name_from_bytes`]) and links are followed
//! (see [`super::archive`]).
//!
//! EXIF orientation tags are ignored: torchvision's loader (`PIL.Image.open(f).convert("RGB")`)
//! does not apply them either, so the pixels lipctl trains on are the ones the reference code
//! trains on (test: `exif_orientation_is_ignored_like_torchvision` in `tests/data.rs`).
//!
//! Also home of [`decode_images`], the parallel decoder Tiny ImageNet shares.

use super::archive::Tree;
use super::{Decoded, Images};
use crate::progress::Progress;
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Extensions read as images (lowercased).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub fn is_image(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

/// The folder holding `train/` and `test/`: the shallowest folder with both, or the root.
fn find_root(tree: &Tree) -> Result<String> {
    let mut candidates: Vec<String> = Vec::new();
    for d in &tree.dirs {
        let (parent, last) = match d.rsplit_once('/') {
            Some((p, l)) => (p.to_string(), l),
            None => (String::new(), d.as_str()),
        };
        if last == "train" {
            let test = if parent.is_empty() { "test".to_string() } else { format!("{parent}/test") };
            if tree.dirs.contains(&test) {
                candidates.push(parent);
            }
        }
    }
    let depth = |s: &String| if s.is_empty() { 0 } else { s.matches('/').count() + 1 };
    let Some(min) = candidates.iter().map(depth).min() else {
        // A literal `\` in a name (`\\` in tree names, see `fsx::name_from_bytes`): Windows
        // separators kept as part of the names by a tool that extracted a Windows archive.
        if let Some(name) = tree.files.keys().chain(tree.dirs.iter()).find(|n| n.contains("\\\\")) {
            bail!(
                "{}: no `train/` and `test/` folders found, but names such as `{}` contain `\\`: the Windows path \
                 separator, kept as part of the name by the tool that extracted the archive; pass the archive itself \
                 (lipctl reads `\\` in zip and tar archives as a separator, as unzip and 7-Zip do) or extract it with \
                 unzip or 7-Zip",
                tree.origin.display(),
                name.replace("\\\\", "\\")
            );
        }
        bail!(
            "{}: no `train/` and `test/` folders found; expected root/train/<class>/*.png and root/test/<class>/*.png \
             (.jpg, .jpeg or .png), optionally inside one top-level folder",
            tree.origin.display()
        );
    };
    let best: Vec<&String> = candidates.iter().filter(|c| depth(c) == min).collect();
    if best.len() > 1 {
        bail!(
            "{}: several folders hold train/ and test/ ({}); pass the one you mean with --source",
            tree.origin.display(),
            best.iter().map(|s| format!("`{s}/`")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(best[0].clone())
}

/// Reads an image-folder source already read into `tree`.
pub fn read(tree: &Tree, progress: &Progress) -> Result<Decoded> {
    let root = find_root(tree)?;
    let prefix = if root.is_empty() { String::new() } else { format!("{root}/") };
    // class -> image names, per split.
    let mut splits: [BTreeMap<String, Vec<&str>>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for (i, split) in ["train", "test"].iter().enumerate() {
        let split_prefix = format!("{prefix}{split}/");
        for d in tree.dirs.range(split_prefix.clone()..) {
            let Some(rest) = d.strip_prefix(&split_prefix) else { break };
            if !rest.contains('/') {
                splits[i].entry(rest.to_string()).or_default();
            }
        }
        for name in tree.files.keys() {
            let Some(rest) = name.strip_prefix(&split_prefix) else { continue };
            if !is_image(name) {
                continue;
            }
            match rest.split_once('/') {
                Some((class, _)) => splits[i].entry(class.to_string()).or_default().push(name.as_str()),
                None => bail!("{}: image is not inside a class folder ({split}/<class>/…)", tree.describe(name)),
            }
        }
        if splits[i].is_empty() {
            bail!("{}: `{split_prefix}` has no class folders", tree.origin.display());
        }
        for (class, images) in &splits[i] {
            if images.is_empty() {
                bail!(
                    "{}: class folder `{split_prefix}{class}` has no images (.jpg, .jpeg, .png); remove it or add images",
                    tree.origin.display()
                );
            }
        }
    }
    let train_classes: BTreeSet<&String> = splits[0].keys().collect();
    let test_classes: BTreeSet<&String> = splits[1].keys().collect();
    if train_classes != test_classes {
        let only_train: Vec<&str> = train_classes.difference(&test_classes).map(|s| s.as_str()).collect();
        let only_test: Vec<&str> = test_classes.difference(&train_classes).map(|s| s.as_str()).collect();
        bail!(
            "{}: train/ and test/ must have the same class folders; only in train: [{}], only in test: [{}]",
            tree.origin.display(),
            only_train.join(", "),
            only_test.join(", ")
        );
    }
    let classes: Vec<String> = splits[0].keys().cloned().collect();
    let mut out: Vec<Images> = Vec::new();
    let mut side = None;
    for (split_name, split) in ["train", "test"].iter().zip(splits.iter()) {
        let mut items: Vec<(&str, &[u8])> = Vec::new();
        let mut labels = Vec::new();
        for (label, images) in split.values().enumerate() {
            for name in images {
                items.push((name, tree.files[*name].as_slice()));
                labels.push(label as i64);
            }
        }
        let (s, pixels) = decode_images(tree, &items, side, progress, &format!("decode {split_name}"))?;
        side = Some(s);
        out.push(Images { pixels, labels });
    }
    let test = out.pop().expect("two splits were decoded");
    let train = out.pop().expect("two splits were decoded");
    Ok(Decoded { classes, side: side.expect("splits are non-empty"), train, test })
}

/// Decodes `items` (name, encoded bytes) into one `[N, 3, S, S]` uint8 buffer (RGB planes,
/// row-major), converting grayscale or RGBA to RGB. Every image must be square and of one size
/// (`expect_side`, or that of the first image); the first that is not, or that does not decode,
/// is an error naming it. Runs on up to 4 threads: decoding dominates preparation time.
pub fn decode_images(
    tree: &Tree,
    items: &[(&str, &[u8])],
    expect_side: Option<usize>,
    progress: &Progress,
    label: &str,
) -> Result<(usize, Vec<u8>)> {
    let Some(first) = items.first() else { bail!("{}: no images to decode", tree.origin.display()) };
    let (first_img, first_name) = (decode_one(tree, first.0, first.1)?, first.0);
    let side = match expect_side {
        Some(s) => s,
        None => first_img.width() as usize,
    };
    let per = 3 * side * side;
    let mut pixels = vec![0u8; items.len() * per];
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    let chunk = items.len().div_ceil(threads);
    let task = Mutex::new(progress.task(label, items.len() as u64));
    let reference = match expect_side {
        Some(_) => "the training images are".to_string(),
        None => format!("`{first_name}` is"),
    };
    let check = |name: &str, img: &image::RgbImage| -> Result<()> {
        if img.width() as usize != side || img.height() as usize != side {
            bail!(
                "{}: image is {}×{}; every image must be square and of one size ({reference} {side}×{side})",
                tree.describe(name),
                img.width(),
                img.height(),
            );
        }
        Ok(())
    };
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .zip(pixels.chunks_mut(chunk * per))
            .map(|(its, out)| {
                let (task, check) = (&task, &check);
                s.spawn(move || -> Result<()> {
                    for (j, (name, bytes)) in its.iter().enumerate() {
                        let img = decode_one(tree, name, bytes)?;
                        check(name, &img)?;
                        let dst = &mut out[j * per..(j + 1) * per];
                        let plane = side * side;
                        for (p, px) in img.pixels().enumerate() {
                            dst[p] = px[0];
                            dst[plane + p] = px[1];
                            dst[2 * plane + p] = px[2];
                        }
                        if j % 512 == 511 {
                            task.lock().unwrap_or_else(|p| p.into_inner()).inc(512);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("internal error: an image decoding thread panicked"))))
            .collect()
    });
    for r in results {
        r?;
    }
    check(first_name, &first_img)?;
    task.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .finish(&format!("{} images", items.len()));
    Ok((side, pixels))
}

fn decode_one(tree: &Tree, name: &str, bytes: &[u8]) -> Result<image::RgbImage> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| anyhow!("{}: cannot decode image: {e}", tree.describe(name)))?;
    Ok(img.to_rgb8())
}
