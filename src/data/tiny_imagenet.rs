//! Tiny ImageNet-200 in its official layout (reference-protocol §5.1): `tiny-imagenet-200/` (or
//! `tiny-imagenet-200.zip`) with `wnids.txt`, `train/<wnid>/images/*.JPEG` (500 per class) and
//! `val/images/*.JPEG` labelled by `val/val_annotations.txt` (`file<TAB>wnid<TAB>box…`), which is
//! the test split, as in the paper. The unlabeled `test/` folder is not read. Classes are the
//! wnids in alphabetical order (R1 runs `ImageFolder` on per-wnid folders). A few images are
//! grayscale and are converted to RGB, as PIL's `.convert("RGB")` does.

use super::archive::Tree;
use super::image_folder::{decode_images, is_image};
use super::{Decoded, Images};
use crate::progress::Progress;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Whether a relative name in the source is read (skips the unused `test/` split and box files).
pub fn wants(name: &str) -> bool {
    if name.ends_with("wnids.txt") || name.ends_with("val_annotations.txt") {
        return true;
    }
    is_image(name) && (name.contains("train/") || name.contains("val/images/"))
}

/// Reads the official Tiny ImageNet layout (`wnids.txt`, `train/<wnid>/images/*.JPEG`,
/// `val/images/*.JPEG` with `val/val_annotations.txt`). Long on purpose: each step validates one
/// file of the layout and names it in its error, in the order a user would check them.
pub fn read(tree: &Tree, progress: &Progress) -> Result<Decoded> {
    let wnids_file = match tree.find_basename("wnids.txt").as_slice() {
        [one] => one.to_string(),
        [] => bail!(
            "{}: `wnids.txt` not found; expected the official Tiny ImageNet layout (tiny-imagenet-200/ with wnids.txt, \
             train/ and val/)",
            tree.origin.display()
        ),
        many => bail!("{}: several `wnids.txt` ({}); pass one folder with --source", tree.origin.display(), many.join(", ")),
    };
    let root = wnids_file.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
    let mut wnids: Vec<String> = String::from_utf8_lossy(&tree.files[&wnids_file])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    wnids.sort();
    if let Some(w) = wnids.windows(2).find(|w| w[0] == w[1]) {
        bail!("{}: class `{}` listed twice", tree.describe(&wnids_file), w[0]);
    }
    let index: BTreeMap<&str, i64> = wnids.iter().enumerate().map(|(i, w)| (w.as_str(), i as i64)).collect();

    // Train: train/<wnid>/images/*.
    let mut train_items: Vec<(&str, &[u8])> = Vec::new();
    let mut train = Images::default();
    let train_prefix = format!("{root}train/");
    let mut per_class = vec![0usize; wnids.len()];
    for (name, bytes) in tree.files.range(train_prefix.clone()..) {
        let Some(rest) = name.strip_prefix(&train_prefix) else { break };
        if !is_image(name) {
            continue;
        }
        let wnid = rest.split('/').next().unwrap_or_default();
        let Some(&label) = index.get(wnid) else {
            bail!("{}: class folder `{wnid}` is not listed in wnids.txt", tree.describe(name));
        };
        train_items.push((name, bytes));
        train.labels.push(label);
        per_class[label as usize] += 1;
    }
    if let Some(i) = per_class.iter().position(|&c| c == 0) {
        bail!("{}: class `{}` (wnids.txt) has no training images in `{train_prefix}{}/images/`", tree.origin.display(), wnids[i], wnids[i]);
    }

    // Test: val/images/* labelled by val/val_annotations.txt.
    let ann_name = format!("{root}val/val_annotations.txt");
    let Some(ann) = tree.files.get(&ann_name) else {
        bail!("{}: `{ann_name}` not found (it labels the validation images used as the test split)", tree.origin.display());
    };
    let mut test_items: Vec<(&str, &[u8])> = Vec::new();
    let mut test = Images::default();
    let mut test_per_class = vec![0usize; wnids.len()];
    let ann_text = String::from_utf8_lossy(ann);
    let mut labelled: Vec<(String, i64)> = Vec::new();
    for (lineno, line) in ann_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
            bail!("{}:{}: expected `file<TAB>wnid<TAB>…`, found `{line}`", tree.describe(&ann_name), lineno + 1);
        };
        let Some(&label) = index.get(wnid.trim()) else {
            bail!("{}:{}: class `{wnid}` is not listed in wnids.txt", tree.describe(&ann_name), lineno + 1);
        };
        labelled.push((format!("{root}val/images/{}", file.trim()), label));
    }
    labelled.sort();
    for (name, label) in &labelled {
        let Some((key, bytes)) = tree.files.get_key_value(name) else {
            bail!("{}: listed in val_annotations.txt but missing", tree.describe(name));
        };
        test_items.push((key.as_str(), bytes.as_slice()));
        test.labels.push(*label);
        test_per_class[*label as usize] += 1;
    }
    let val_prefix = format!("{root}val/images/");
    for name in tree.files.range(val_prefix.clone()..).map(|(k, _)| k).take_while(|k| k.starts_with(&val_prefix)) {
        if labelled.binary_search_by(|(n, _)| n.as_str().cmp(name)).is_err() {
            bail!("{}: validation image without a line in val_annotations.txt", tree.describe(name));
        }
    }
    if let Some(i) = test_per_class.iter().position(|&c| c == 0) {
        bail!("{}: class `{}` has training images but no validation (test) images", tree.origin.display(), wnids[i]);
    }
    let (side, px) = decode_images(tree, &train_items, None, progress, "decode train")?;
    train.pixels = px;
    let (_, px) = decode_images(tree, &test_items, Some(side), progress, "decode test")?;
    test.pixels = px;
    Ok(Decoded { classes: wnids, side, train, test })
}
