//! CIFAR-10 and CIFAR-100, binary version (reference-protocol §5.1 describes the same data in its
//! Python-pickle form; the binary files hold identical pixels).
//!
//! * CIFAR-10 `cifar-10-batches-bin/`: `data_batch_1..5.bin`, `test_batch.bin`; each record is
//!   1 label byte + 3072 pixel bytes (the R plane, then G, then B, each 32×32 row-major), 10,000
//!   records per file. Class names from `batches.meta.txt`.
//! * CIFAR-100 `cifar-100-binary/`: `train.bin` (50,000 records), `test.bin` (10,000); each record
//!   is coarse label, **fine** label, then the same 3072 bytes. lipctl uses the fine label (100
//!   classes), as the paper does. Class names from `fine_label_names.txt`.
//!
//! Every record is validated: a file that is not a whole number of records (truncated), holds more
//! records than the official file (oversized) or has a label out of range is an error naming the
//! file and the byte offset. Files with fewer whole records than the official ones are accepted
//! (tests and subsets build such files) and reported by the caller's counts.

use super::archive::Tree;
use super::{Decoded, Images};
use anyhow::{bail, Result};

pub const SIDE: usize = 32;
pub const PIXELS: usize = 3 * SIDE * SIDE;

/// Which of the two CIFAR binary layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Ten,
    Hundred,
}

/// CIFAR-10 class names in label order (used when `batches.meta.txt` is absent).
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

impl Variant {
    /// Bytes before the pixels in each record.
    pub fn label_bytes(self) -> usize {
        match self {
            Variant::Ten => 1,
            Variant::Hundred => 2,
        }
    }

    pub fn record_bytes(self) -> usize {
        self.label_bytes() + PIXELS
    }

    pub fn num_classes(self) -> usize {
        match self {
            Variant::Ten => 10,
            Variant::Hundred => 100,
        }
    }

    /// (file name, maximum records = the official count) for the train and test splits.
    pub fn files(self) -> (Vec<(&'static str, usize)>, Vec<(&'static str, usize)>) {
        match self {
            Variant::Ten => (
                vec![
                    ("data_batch_1.bin", 10_000),
                    ("data_batch_2.bin", 10_000),
                    ("data_batch_3.bin", 10_000),
                    ("data_batch_4.bin", 10_000),
                    ("data_batch_5.bin", 10_000),
                ],
                vec![("test_batch.bin", 10_000)],
            ),
            Variant::Hundred => (vec![("train.bin", 50_000)], vec![("test.bin", 10_000)]),
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            Variant::Ten => "batches.meta.txt",
            Variant::Hundred => "fine_label_names.txt",
        }
    }

    pub fn folder(self) -> &'static str {
        match self {
            Variant::Ten => "cifar-10-batches-bin",
            Variant::Hundred => "cifar-100-binary",
        }
    }

    /// Whether a relative name in a source is worth reading (skips e.g. `readme.html`).
    pub fn wants(self, name: &str) -> bool {
        let base = name.rsplit('/').next().unwrap_or(name);
        let (train, test) = self.files();
        base == self.names_file() || train.iter().chain(test.iter()).any(|(f, _)| *f == base)
    }
}

/// Appends the records of one file to `out`; errors name the file and the byte offset.
pub fn parse_records(origin: &str, bytes: &[u8], variant: Variant, max_records: usize, out: &mut Images) -> Result<usize> {
    let rec = variant.record_bytes();
    let whole = bytes.len() / rec;
    if bytes.len() % rec != 0 {
        bail!(
            "{origin}: truncated: the last record starts at byte offset {} but only {} of its {rec} bytes are present \
             (the file is {} bytes; re-extract or re-download the archive)",
            whole * rec,
            bytes.len() - whole * rec,
            bytes.len()
        );
    }
    if whole > max_records {
        bail!(
            "{origin}: oversized: {whole} records where the official file has {max_records}; unexpected data starts at \
             byte offset {} (is this the right file?)",
            max_records * rec
        );
    }
    let classes = variant.num_classes();
    out.pixels.reserve(whole * PIXELS);
    out.labels.reserve(whole);
    for (i, record) in bytes.chunks_exact(rec).enumerate() {
        if variant == Variant::Hundred && record[0] >= 20 {
            bail!("{origin}: record {i} (byte offset {}): coarse label {} out of range 0..=19", i * rec, record[0]);
        }
        let label = record[variant.label_bytes() - 1] as usize;
        if label >= classes {
            bail!(
                "{origin}: record {i} (byte offset {}): label {label} out of range 0..={}",
                i * rec + variant.label_bytes() - 1,
                classes - 1
            );
        }
        out.labels.push(label as i64);
        // The record's layout (R plane, G plane, B plane, each row-major) already is [3, H, W].
        out.pixels.extend_from_slice(&record[variant.label_bytes()..]);
    }
    Ok(whole)
}

/// Reads a CIFAR binary source (folder or archive, already read into `tree`).
pub fn read(tree: &Tree, variant: Variant) -> Result<Decoded> {
    let (train_files, test_files) = variant.files();
    let mut folder: Option<String> = None;
    let mut locate = |base: &str| -> Result<String> {
        let found = tree.find_basename(base);
        match found.as_slice() {
            [] => bail!(
                "{}: `{base}` not found; expected the binary version of the dataset ({}/ as in the official archive; \
                 the Python or MATLAB versions are not supported)",
                tree.origin.display(),
                variant.folder()
            ),
            [one] => {
                let dir = one.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
                if let Some(f) = &folder {
                    if *f != dir {
                        bail!("{}: `{base}` is in `{dir}/` but the other files are in `{f}/`", tree.origin.display());
                    }
                }
                folder = Some(dir);
                Ok(one.to_string())
            }
            many => bail!("{}: `{base}` found more than once ({}); pass the one folder with --source", tree.origin.display(), many.join(", ")),
        }
    };
    let mut train = Images::default();
    let mut test = Images::default();
    for (files, split) in [(&train_files, &mut train), (&test_files, &mut test)] {
        for (base, max) in files.iter() {
            let name = locate(base)?;
            parse_records(&tree.describe(&name), &tree.files[&name], variant, *max, split)?;
        }
    }
    let dir = folder.unwrap_or_default();
    let names_path = if dir.is_empty() { variant.names_file().to_string() } else { format!("{dir}/{}", variant.names_file()) };
    let classes = match tree.files.get(&names_path) {
        Some(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if names.len() != variant.num_classes() {
                bail!(
                    "{}: {} class names where {} are expected",
                    tree.describe(&names_path),
                    names.len(),
                    variant.num_classes()
                );
            }
            names
        }
        None => match variant {
            Variant::Ten => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            Variant::Hundred => (0..100).map(|i| format!("class_{i:02}")).collect(),
        },
    };
    Ok(Decoded { classes, side: SIDE, train, test })
}
