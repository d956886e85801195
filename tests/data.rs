//! Dataset preparation through the library: every reader on small files built here, pixels and
//! labels compared exactly against what was written; every bad-input error names the culprit and
//! leaves nothing in the store.

use image::{ImageFormat, Luma, Rgb, RgbImage};
use lipctl::data::cifar::{self, Variant};
use lipctl::data::{prepare, Dataset, DatasetKind, Images, PrepareRequest, PreparedSummary};
use lipctl::store::Store;
use lipctl::progress::Progress;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// helpers

fn store_in(dir: &Path) -> Store {
    Store::open(dir.join("artifacts")).unwrap().with_progress(Progress::hidden())
}

fn request(kind: DatasetKind, source: Option<&Path>, data_dir: &Path) -> PrepareRequest {
    let mut req = PrepareRequest::new(kind);
    req.source = source.map(Path::to_path_buf);
    req.data_dir = data_dir.to_path_buf();
    req.download = false; // never in tests
    req
}

fn run(req: &PrepareRequest, store: &Store) -> anyhow::Result<PreparedSummary> {
    prepare(req, store, &Progress::hidden())
}

fn error_of(req: &PrepareRequest, store: &Store) -> String {
    let err = run(req, store).expect_err("bad input must be rejected");
    format!("{err:#}")
}

/// Nothing in the store after a failed prepare: no artifact, no temporary folder, no lock file,
/// not even the stage folder.
fn assert_nothing_written(store: &Store) {
    let left: Vec<_> = std::fs::read_dir(store.root()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Image `i` of `side`×`side` whose every channel differs, so a channel or axis swap shows.
fn pattern(i: u32, side: u32) -> RgbImage {
    RgbImage::from_fn(side, side, |x, y| Rgb([(i * 40 + x * 3) as u8, (y * 5 + i) as u8, (200 - x - 2 * y + i) as u8]))
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Png).unwrap();
    buf.into_inner()
}

/// [3, H, W] planes of an RGB image, computed directly from the pixel accessor.
fn planes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    for c in 0..3 {
        for y in 0..img.height() {
            for x in 0..img.width() {
                out.push(img.get_pixel(x, y)[c]);
            }
        }
    }
    out
}

fn image_at(t: &tch::Tensor, i: i64) -> Vec<u8> {
    Vec::<u8>::try_from(&t.get(i).reshape([-1])).unwrap()
}

fn labels(t: &tch::Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t).unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn tar_gz(src: &Path, top: &str, dest: &Path) {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(dest).unwrap(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.append_dir_all(top, src).unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

fn zip_dir(src: &Path, top: &str, dest: &Path) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(dest).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    fn walk(z: &mut zip::ZipWriter<std::fs::File>, opts: zip::write::SimpleFileOptions, dir: &Path, rel: &str) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let name = format!("{rel}/{}", p.file_name().unwrap().to_string_lossy());
            if p.is_dir() {
                z.add_directory(name.clone(), opts).unwrap();
                walk(z, opts, &p, &name);
            } else {
                z.start_file(name, opts).unwrap();
                z.write_all(&std::fs::read(&p).unwrap()).unwrap();
            }
        }
    }
    z.add_directory(top, opts).unwrap();
    walk(&mut z, opts, src, top);
    z.finish().unwrap();
}

// ---------------------------------------------------------------------------------------------
// CIFAR

/// Pixel bytes of synthetic record `n`: position-dependent so planes and rows are distinguishable.
fn record_pixels(n: usize) -> Vec<u8> {
    (0..cifar::PIXELS).map(|k| ((k * 7 + n * 13 + k / 1024) % 256) as u8).collect()
}

/// CIFAR-10 folder: data_batch_b holds 2 records (labels (2(b-1)+r) % 10), test_batch 10 records.
/// Returns the (label, pixels) written, train then test.
fn write_cifar10(dir: &Path) -> (Vec<(i64, Vec<u8>)>, Vec<(i64, Vec<u8>)>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut n = 0;
    for b in 1..=5 {
        let mut bytes = Vec::new();
        for _ in 0..2 {
            let label = (n % 10) as u8;
            let px = record_pixels(n);
            bytes.push(label);
            bytes.extend_from_slice(&px);
            train.push((label as i64, px));
            n += 1;
        }
        write(&dir.join(format!("data_batch_{b}.bin")), &bytes);
    }
    let mut bytes = Vec::new();
    for t in 0..10 {
        let label = (9 - t) as u8;
        let px = record_pixels(100 + t);
        bytes.push(label);
        bytes.extend_from_slice(&px);
        test.push((label as i64, px));
    }
    write(&dir.join("test_batch.bin"), &bytes);
    let names: String = cifar::CIFAR10_CLASSES.iter().map(|c| format!("{c}\n")).collect::<String>() + "\n";
    write(&dir.join("batches.meta.txt"), names.as_bytes());
    (train, test)
}

fn check_cifar(ds: &Dataset, train: &[(i64, Vec<u8>)], test: &[(i64, Vec<u8>)]) {
    assert_eq!(ds.train_images.size(), [train.len() as i64, 3, 32, 32]);
    assert_eq!(labels(&ds.train_labels), train.iter().map(|(l, _)| *l).collect::<Vec<_>>());
    assert_eq!(labels(&ds.test_labels), test.iter().map(|(l, _)| *l).collect::<Vec<_>>());
    for (i, (_, px)) in train.iter().enumerate() {
        assert_eq!(image_at(&ds.train_images, i as i64), *px, "train image {i}");
    }
    for (i, (_, px)) in test.iter().enumerate() {
        assert_eq!(image_at(&ds.test_images, i as i64), *px, "test image {i}");
    }
    // Channel order and row-major planes, spelled out for one pixel: channel G (1), row 2, column 5
    // of the first record is record byte 1024 + 2·32 + 5.
    let v = ds.train_images.int64_value(&[0, 1, 2, 5]);
    assert_eq!(v, train[0].1[1024 + 2 * 32 + 5] as i64);
}

#[test]
fn cifar10_folder_and_tar_gz_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/cifar-10-batches-bin");
    let (train, test) = write_cifar10(&src);
    let store = store_in(dir.path());
    let s = run(&request(DatasetKind::Cifar10, Some(&src), dir.path()), &store).unwrap();
    assert!(!s.cached);
    assert_eq!((s.fit, s.val, s.test, s.classes, s.image_side), (9, 1, 10, 10, 32));
    let ds = Dataset::load(&s.dir).unwrap();
    assert_eq!(ds.classes, cifar::CIFAR10_CLASSES);
    assert_eq!(ds.name, "cifar10");
    check_cifar(&ds, &train, &test);
    // Per-channel mean by hand over the 10 training records.
    for c in 0..3 {
        let sum: u64 = train.iter().map(|(_, px)| px[c * 1024..(c + 1) * 1024].iter().map(|&v| v as u64).sum::<u64>()).sum();
        let want = sum as f64 / (10.0 * 1024.0 * 255.0);
        assert!((ds.channel_mean[c] - want).abs() < 1e-12, "channel {c}");
    }
    // Same files from the official-style .tar.gz (one top-level folder), via the data folder.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let archive = data.join("my-cifar.tar.gz");
    tar_gz(&src, "cifar-10-batches-bin", &archive);
    let s2 = run(&request(DatasetKind::Cifar10, Some(&archive), &data), &store).unwrap();
    assert_ne!(s2.key, s.key, "a different source file is a different key");
    check_cifar(&Dataset::load(&s2.dir).unwrap(), &train, &test);
    // Second run: cached, same folder.
    let again = run(&request(DatasetKind::Cifar10, Some(&archive), &data), &store).unwrap();
    assert!(again.cached);
    assert_eq!(again.dir, s2.dir);
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("cifar-100-binary");
    let mut expect = [Vec::new(), Vec::new()];
    for (f, (file, n)) in [("train.bin", 200usize), ("test.bin", 100)].into_iter().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..n {
            let fine = ((i * 37) % 100) as u8;
            let coarse = (i % 20) as u8;
            let px = record_pixels(i + 1000 * f);
            bytes.extend_from_slice(&[coarse, fine]);
            bytes.extend_from_slice(&px);
            expect[f].push((fine as i64, px));
        }
        write(&src.join(file), &bytes);
    }
    let store = store_in(dir.path());
    let s = run(&request(DatasetKind::Cifar100, Some(&src), dir.path()), &store).unwrap();
    assert_eq!((s.fit, s.val, s.test, s.classes), (180, 20, 100, 100));
    let ds = Dataset::load(&s.dir).unwrap();
    check_cifar(&ds, &expect[0], &expect[1]);
    // Stratified split: 200 images in 100 classes of 2 → at most one validation image per class.
    let val = labels(&ds.val_split);
    let train_labels = labels(&ds.train_labels);
    let mut classes: Vec<i64> = val.iter().map(|&i| train_labels[i as usize]).collect();
    classes.sort();
    classes.dedup();
    assert_eq!(classes.len(), 20);
}

#[test]
fn cifar_truncated_oversized_and_bad_labels_name_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("cifar-10-batches-bin");
    write_cifar10(&src);
    let store = store_in(dir.path());
    let req = request(DatasetKind::Cifar10, Some(&src), dir.path());

    // Truncated: two whole records (6146 bytes) and 100 bytes of a third.
    let path = src.join("data_batch_2.bin");
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad.extend_from_slice(&[0u8; 100]);
    std::fs::write(&path, &bad).unwrap();
    let msg = error_of(&req, &store);
    assert!(msg.contains("data_batch_2.bin") && msg.contains("truncated") && msg.contains("byte offset 6146"), "{msg}");
    assert_nothing_written(&store);

    // Label out of range: record 1 of data_batch_2 (byte offset 3073) gets label 10.
    let mut bad = good.clone();
    bad[3073] = 10;
    std::fs::write(&path, &bad).unwrap();
    let msg = error_of(&req, &store);
    assert!(msg.contains("data_batch_2.bin") && msg.contains("record 1 (byte offset 3073)") && msg.contains("label 10"), "{msg}");
    assert_nothing_written(&store);
    std::fs::write(&path, &good).unwrap();

    // Missing file.
    std::fs::remove_file(src.join("test_batch.bin")).unwrap();
    let msg = error_of(&req, &store);
    assert!(msg.contains("test_batch.bin") && msg.contains("not found"), "{msg}");
    assert_nothing_written(&store);

    // Oversized: more records than the official file (checked on the record parser, with the
    // official maximum lowered to 2 so the test file stays small).
    let mut out = Images::default();
    let three: Vec<u8> = (0..3).flat_map(|n| std::iter::once(1u8).chain(record_pixels(n))).collect();
    let err = cifar::parse_records("x/data_batch_1.bin", &three, Variant::Ten, 2, &mut out).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("x/data_batch_1.bin") && msg.contains("oversized") && msg.contains("byte offset 6146"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// image folders

const CLASSES: [&str; 3] = ["ant", "bee", "cat"];

/// root/{train,test}/<class>/*.png, classes created in non-alphabetical order and files named so
/// that name order differs from creation order. Returns (label, image) in the expected order.
fn write_image_folder(root: &Path, side: u32) -> (Vec<(i64, RgbImage)>, Vec<(i64, RgbImage)>) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut i = 0;
    for (label, class) in CLASSES.iter().enumerate().rev() {
        for file in ["b.png", "a.png"] {
            let img = pattern(i, side);
            write(&root.join("train").join(class).join(file), &png(&img));
            train.push((label as i64, file, img));
            i += 1;
        }
        let img = pattern(i, side);
        write(&root.join("test").join(class).join("x.png"), &png(&img));
        test.push((label as i64, "x.png", img));
        i += 1;
    }
    // A non-image file is ignored, as torchvision's ImageFolder does.
    write(&root.join("train/ant/notes.txt"), b"not an image");
    train.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    test.sort_by_key(|a| a.0);
    (train.into_iter().map(|(l, _, im)| (l, im)).collect(), test.into_iter().map(|(l, _, im)| (l, im)).collect())
}

fn check_folder(ds: &Dataset, train: &[(i64, RgbImage)], test: &[(i64, RgbImage)], side: i64) {
    assert_eq!(ds.classes, CLASSES);
    assert_eq!(ds.image_side(), side);
    assert_eq!(labels(&ds.train_labels), train.iter().map(|(l, _)| *l).collect::<Vec<_>>());
    assert_eq!(labels(&ds.test_labels), test.iter().map(|(l, _)| *l).collect::<Vec<_>>());
    for (i, (_, img)) in train.iter().enumerate() {
        assert_eq!(image_at(&ds.train_images, i as i64), planes(img), "train {i}");
    }
    for (i, (_, img)) in test.iter().enumerate() {
        assert_eq!(image_at(&ds.test_images, i as i64), planes(img), "test {i}");
    }
}

#[test]
fn image_folder_as_folder_zip_and_tar_gz() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pets");
    let (train, test) = write_image_folder(&root, 6);
    let store = store_in(dir.path());
    let s = run(&request(DatasetKind::Imagefolder, Some(&root), dir.path()), &store).unwrap();
    assert_eq!((s.fit + s.val, s.test, s.classes, s.image_side), (6, 3, 3, 6));
    assert_eq!(s.name, "pets");
    check_folder(&Dataset::load(&s.dir).unwrap(), &train, &test, 6);

    let zip = dir.path().join("pets.zip");
    zip_dir(&root, "pets-top", &zip);
    let s = run(&request(DatasetKind::Imagefolder, Some(&zip), dir.path()), &store).unwrap();
    check_folder(&Dataset::load(&s.dir).unwrap(), &train, &test, 6);

    let tgz = dir.path().join("pets.tar.gz");
    tar_gz(&root, "pets-top", &tgz);
    let mut req = request(DatasetKind::Imagefolder, Some(&tgz), dir.path());
    req.name = Some("my-pets".into());
    let s = run(&req, &store).unwrap();
    let ds = Dataset::load(&s.dir).unwrap();
    assert_eq!(ds.name, "my-pets");
    check_folder(&ds, &train, &test, 6);
    assert!(run(&req, &store).unwrap().cached);
}

#[test]
fn image_folder_errors_name_the_culprit_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let fresh = |name: &str| {
        let root = dir.path().join(name);
        write_image_folder(&root, 4);
        root
    };

    // Mixed sizes.
    let root = fresh("mixed");
    write(&root.join("train/bee/c.png"), &png(&pattern(0, 5)));
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&root), dir.path()), &store);
    assert!(msg.contains("train/bee/c.png") && msg.contains("5×5"), "{msg}");
    assert_nothing_written(&store);

    // Unreadable image.
    let root = fresh("unreadable");
    write(&root.join("test/cat/broken.png"), b"\x89PNG\r\n\x1a\nnot really");
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&root), dir.path()), &store);
    assert!(msg.contains("test/cat/broken.png") && msg.contains("cannot decode"), "{msg}");
    assert_nothing_written(&store);

    // Empty class folder.
    let root = fresh("empty");
    std::fs::create_dir_all(root.join("train/dog")).unwrap();
    std::fs::create_dir_all(root.join("test/dog")).unwrap();
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&root), dir.path()), &store);
    assert!(msg.contains("train/dog") && msg.contains("no images"), "{msg}");
    assert_nothing_written(&store);

    // A class present in train but not in test (also inside a .tar.gz).
    let root = fresh("unmatched");
    write(&root.join("train/dog/a.png"), &png(&pattern(1, 4)));
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&root), dir.path()), &store);
    assert!(msg.contains("only in train: [dog]"), "{msg}");
    let tgz = dir.path().join("unmatched.tar.gz");
    tar_gz(&root, "top", &tgz);
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&tgz), dir.path()), &store);
    assert!(msg.contains("only in train: [dog]"), "{msg}");
    assert_nothing_written(&store);

    // No train/test layout at all.
    let root = dir.path().join("flat");
    write(&root.join("a.png"), &png(&pattern(1, 4)));
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&root), dir.path()), &store);
    assert!(msg.contains("no `train/` and `test/` folders"), "{msg}");

    // imagefolder without --source.
    let msg = error_of(&request(DatasetKind::Imagefolder, None, dir.path()), &store);
    assert!(msg.contains("needs --source"), "{msg}");
    assert_nothing_written(&store);
}

// ---------------------------------------------------------------------------------------------
// Tiny ImageNet

#[test]
fn tiny_imagenet_zip_reads_val_as_test() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiny-imagenet-200");
    // wnids listed out of order: classes are sorted.
    write(&root.join("wnids.txt"), b"n0200\nn0100\n");
    write(&root.join("words.txt"), b"n0100\tant\nn0200\tbee\n");
    let mut train = Vec::new();
    for (label, wnid) in ["n0100", "n0200"].iter().enumerate() {
        for k in 0..2u32 {
            let img = pattern(10 * label as u32 + k, 8);
            // PNG bytes under the official .JPEG name: decoded by content, and lossless.
            write(&root.join(format!("train/{wnid}/images/{wnid}_{k}.JPEG")), &png(&img));
            train.push((label as i64, img));
        }
        write(&root.join(format!("train/{wnid}/{wnid}_boxes.txt")), b"boxes");
    }
    // A grayscale image becomes R = G = B.
    let gray = image::GrayImage::from_fn(8, 8, |x, y| Luma([(x * 30 + y) as u8]));
    let mut buf = Cursor::new(Vec::new());
    gray.write_to(&mut buf, ImageFormat::Png).unwrap();
    write(&root.join("val/images/val_0.JPEG"), &buf.into_inner());
    let val1 = pattern(99, 8);
    write(&root.join("val/images/val_1.JPEG"), &png(&val1));
    write(&root.join("val/val_annotations.txt"), b"val_1.JPEG\tn0100\t0\t0\t7\t7\nval_0.JPEG\tn0200\t1\t1\t6\t6\n");
    // The unlabeled test split is never read (these bytes would not decode).
    write(&root.join("test/images/test_0.JPEG"), b"garbage");
    let zip = dir.path().join("tiny-imagenet-200.zip");
    zip_dir(&root, "tiny-imagenet-200", &zip);

    let store = store_in(dir.path());
    let s = run(&request(DatasetKind::Tinyimagenet, Some(&zip), dir.path()), &store).unwrap();
    let ds = Dataset::load(&s.dir).unwrap();
    assert_eq!(ds.classes, ["n0100", "n0200"]);
    assert_eq!(ds.image_side(), 8);
    assert_eq!(labels(&ds.train_labels), [0, 0, 1, 1]);
    for (i, (_, img)) in train.iter().enumerate() {
        assert_eq!(image_at(&ds.train_images, i as i64), planes(img));
    }
    // Test images in file-name order: val_0 (n0200, grayscale), val_1 (n0100).
    assert_eq!(labels(&ds.test_labels), [1, 0]);
    let g: Vec<u8> = gray.pixels().map(|p| p[0]).collect();
    assert_eq!(image_at(&ds.test_images, 0), [g.clone(), g.clone(), g].concat());
    assert_eq!(image_at(&ds.test_images, 1), planes(&val1));

    // An annotation naming an unknown class is an error naming the line.
    write(&root.join("val/val_annotations.txt"), b"val_1.JPEG\tn0100\nval_0.JPEG\tn0300\n");
    let msg = error_of(&request(DatasetKind::Tinyimagenet, Some(&root), dir.path()), &store);
    assert!(msg.contains("val_annotations.txt:2") && msg.contains("n0300"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// synthetic, subsets, sources, store errors

#[test]
fn synthetic_prepares_caches_and_subsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let mut req = request(DatasetKind::Synthetic, None, dir.path());
    req.synthetic.train_per_class = 20;
    req.synthetic.test_per_class = 5;
    let s = run(&req, &store).unwrap();
    assert_eq!((s.fit, s.val, s.test, s.classes, s.image_side), (180, 20, 50, 10, 32));
    assert!(run(&req, &store).unwrap().cached);
    let ds = Dataset::load(&s.dir).unwrap();
    assert_eq!(ds.checksum, s.key.as_str());

    let sub = ds.subset(Some(3), Some(1));
    assert_eq!(sub.train_images.size(), [30, 3, 32, 32]);
    assert_eq!(labels(&sub.test_labels), (0..10).collect::<Vec<i64>>());
    // First 3 of each class, in stored order: stored train labels are 20×class 0, 20×class 1, …
    assert_eq!(image_at(&sub.train_images, 3), image_at(&ds.train_images, 20));
    assert_eq!(labels(&sub.fit_split).len() + labels(&sub.val_split).len(), 30);
    assert_eq!(labels(&sub.val_split).len(), 3);
    assert_ne!(sub.checksum, ds.checksum);
    assert_eq!(sub.channel_mean, ds.channel_mean);

    // A different seed is a different dataset.
    req.synthetic.seed = 1;
    assert_ne!(run(&req, &store).unwrap().key, s.key);
}

#[test]
fn missing_official_archive_says_where_to_put_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let msg = error_of(&request(DatasetKind::Cifar10, None, &dir.path().join("data")), &store);
    assert!(msg.contains("cifar-10-binary.tar.gz") && msg.contains("--source") && msg.contains("data"), "{msg}");
    // A file under the official name with the wrong MD5 is refused.
    write(&dir.path().join("data/cifar-100-binary.tar.gz"), b"not the archive");
    let msg = error_of(&request(DatasetKind::Cifar100, None, &dir.path().join("data")), &store);
    assert!(msg.contains("not the official archive") && msg.contains("03b5dce01913d631647c71ecec9e9cb8"), "{msg}");
    assert_nothing_written(&store);
}

#[test]
fn unknown_dataset_and_unwritable_store_are_clear_errors() {
    let msg = "cifar-1000".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(msg.contains("unknown dataset \"cifar-1000\"") && msg.contains("imagefolder"), "{msg}");
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    write(&blocker, b"x");
    let err = Store::open(blocker.join("artifacts")).err().expect("a folder below a file cannot exist");
    let msg = format!("{err:#}");
    assert!(msg.contains("file/artifacts") && msg.contains("--artifacts"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// the real data (runs where ../shared/data holds it, as on the project machines and CI)

fn real_cifar10_jpeg() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    Some(manifest.join("../shared/data/cifar10-jpeg.tar.gz")).filter(|p| p.is_file())
}

/// Tolerance on the channel means against torchvision's CIFAR-10 means (reference-protocol §5.2):
/// the JPEG re-encoding (quality ~75) moves pixel values by ~5–7/255 on average but nearly
/// symmetrically, so the mean shifts by far less than this.
const JPEG_MEAN_TOL: f64 = 0.005;

#[test]
fn real_cifar10_jpeg_archive() {
    let Some(src) = real_cifar10_jpeg() else {
        println!("note: cifar10-jpeg.tar.gz not found under ../shared/data; skipping the real-data test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let req = request(DatasetKind::Imagefolder, Some(&src), dir.path());
    let t0 = Instant::now();
    let s = run(&req, &store).unwrap();
    let first = t0.elapsed();
    let t1 = Instant::now();
    let again = run(&req, &store).unwrap();
    let second = t1.elapsed();
    println!("real CIFAR-10 JPEG: first run {first:.2?}, cached run {second:.2?}: {s}");
    assert!(!s.cached && again.cached);
    assert_eq!((s.fit, s.val, s.test, s.classes, s.image_side), (45_000, 5_000, 10_000, 10, 32));
    assert_eq!((s.train_per_class, s.test_per_class), ((5_000, 5_000), (1_000, 1_000)));
    assert_eq!(s.name, "cifar10-jpeg");
    for (got, want) in s.channel_mean.iter().zip([0.49139968, 0.48215841, 0.44653091]) {
        assert!((got - want).abs() < JPEG_MEAN_TOL, "{:?}", s.channel_mean);
    }
    let ds = Dataset::load(&s.dir).unwrap();
    assert_eq!(ds.classes, cifar::CIFAR10_CLASSES);
    // Stratified split: exactly 500 validation images per class.
    let train_labels = labels(&ds.train_labels);
    let mut per_class = [0usize; 10];
    labels(&ds.val_split).iter().for_each(|&i| per_class[train_labels[i as usize] as usize] += 1);
    assert_eq!(per_class, [500; 10]);
}

// ---------------------------------------------------------------------------------------------
// data as people have it (issue 17): links, byte names, Windows archives, NumPy arrays, EXIF

/// The probe inputs of `../shared/data/probes` (README there), when this machine has them.
fn probe(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/probes").join(name);
    p.is_file().then_some(p)
}

/// Unpacks a tar (gzipped or not) into `dest` as `tar xf` does: links stay links, names stay bytes.
fn untar(archive: &Path, dest: &Path) {
    let file = std::fs::File::open(archive).unwrap();
    let reader: Box<dyn std::io::Read> = if archive.to_string_lossy().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    tar::Archive::new(reader).unpack(dest).unwrap();
}

/// Images per class of split `t` (labels in class order).
fn per_class(t: &tch::Tensor, classes: usize) -> Vec<usize> {
    let mut c = vec![0; classes];
    labels(t).iter().for_each(|&l| c[l as usize] += 1);
    c
}

fn all_images(t: &tch::Tensor) -> Vec<Vec<u8>> {
    (0..t.size()[0]).map(|i| image_at(t, i)).collect()
}

/// root/{train,test}/{a,b} as real folders with 3 images each; class `c` of both splits is a
/// relative link to `shared/{train,test}_c` (the layout of the symlink-class probe).
fn write_linked_classes(top: &Path) {
    let mut i = 0;
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            for f in 0..3 {
                write(&top.join(format!("root/{split}/{class}/{f}.png")), &png(&pattern(i, 4)));
                i += 1;
            }
        }
        for f in 0..3 {
            write(&top.join(format!("shared/{split}_c/{f}.png")), &png(&pattern(i, 4)));
            i += 1;
        }
        std::os::unix::fs::symlink(format!("../../shared/{split}_c"), top.join(format!("root/{split}/c"))).unwrap();
    }
}

fn assert_three_linked_classes(s: &PreparedSummary) {
    let ds = Dataset::load(&s.dir).unwrap();
    assert_eq!(ds.classes, ["a", "b", "c"], "{s}");
    assert_eq!(per_class(&ds.train_labels, 3), [3, 3, 3]);
    assert_eq!(per_class(&ds.test_labels, 3), [3, 3, 3]);
}

#[test]
fn linked_class_folders_are_followed_in_folders_and_archives() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let top = dir.path().join("made");
    write_linked_classes(&top);
    let s = run(&request(DatasetKind::Imagefolder, Some(&top.join("root")), dir.path()), &store).unwrap();
    assert_three_linked_classes(&s);
    let linked_images = all_images(&Dataset::load(&s.dir).unwrap().train_images);

    // The same layout as a tar whose link entries point inside the archive (not followed when
    // writing), and as a zip with symbolic-link entries.
    let tar_path = dir.path().join("made.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", &top).unwrap();
    b.into_inner().unwrap();
    let zip_path = dir.path().join("made.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    for entry in walkdir(&top) {
        let rel = entry.strip_prefix(&top).unwrap().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        if meta.file_type().is_symlink() {
            z.add_symlink(rel, std::fs::read_link(&entry).unwrap().to_string_lossy(), opts).unwrap();
        } else if meta.is_file() {
            z.start_file(rel, opts).unwrap();
            z.write_all(&std::fs::read(&entry).unwrap()).unwrap();
        }
    }
    z.finish().unwrap();
    for archive in [&tar_path, &zip_path] {
        let s = run(&request(DatasetKind::Imagefolder, Some(archive), dir.path()), &store).unwrap();
        assert_three_linked_classes(&s);
        assert_eq!(all_images(&Dataset::load(&s.dir).unwrap().train_images), linked_images, "{}", archive.display());
    }

    // The shared probe, as it is: extracted (links kept) and as the archive itself.
    if let Some(p) = probe("symlink-class.tar") {
        let local = dir.path().join("symlink-class.tar");
        std::fs::copy(&p, &local).unwrap();
        let out = dir.path().join("probe");
        untar(&local, &out);
        for src in [out.join("root"), local] {
            let s = run(&request(DatasetKind::Imagefolder, Some(&src), dir.path()), &store).unwrap();
            assert_eq!((s.classes, s.fit + s.val, s.test), (3, 9, 9), "{}: {s}", src.display());
        }
    }
}

/// Every file below `root` (links not followed), sorted.
fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dangling_and_cyclic_links_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let top = dir.path().join("made");
    write_linked_classes(&top);
    std::fs::remove_dir_all(top.join("shared/test_c")).unwrap();
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&top.join("root")), dir.path()), &store);
    assert!(msg.contains("root/test/c") && msg.contains("does not exist"), "{msg}");
    assert_nothing_written(&store);

    // In an archive: the link's target is not among the entries.
    let tar_path = dir.path().join("dangling.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", &top).unwrap();
    b.into_inner().unwrap();
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&tar_path), dir.path()), &store);
    assert!(msg.contains("root/test/c") && msg.contains("not in the archive"), "{msg}");
    assert_nothing_written(&store);

    // A cycle: a class folder holding a link to its own split.
    std::fs::remove_file(top.join("root/test/c")).unwrap();
    std::os::unix::fs::symlink("..", top.join("root/test/b/up")).unwrap();
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&top.join("root")), dir.path()), &store);
    assert!(msg.contains("root/test/b/up") && msg.contains("cycle"), "{msg}");
    assert_nothing_written(&store);
}

#[test]
fn file_names_that_are_not_utf8_are_all_kept_alike_in_folder_and_archive() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    // Built here: class `a` holds three images whose names differ only in one invalid byte.
    let root = dir.path().join("bytes");
    let mut i = 0;
    for split in ["train", "test"] {
        for name in [&b"plain.png"[..], b"img\xfe.png", b"img\xff.png"] {
            let path = root.join(split).join("a").join(std::ffi::OsStr::from_bytes(name));
            write(&path, &png(&pattern(i, 4)));
            i += 1;
        }
        write(&root.join(split).join("b/plain.png"), &png(&pattern(i, 4)));
        i += 1;
    }
    let tgz = dir.path().join("bytes.tar.gz");
    tar_gz(&root, "bytes", &tgz);
    let mut sources = vec![root.clone(), tgz];
    if let Some(p) = probe("nonutf8.tar.gz") {
        let local = dir.path().join("nonutf8.tar.gz");
        std::fs::copy(&p, &local).unwrap();
        untar(&local, &dir.path().join("probe"));
        sources.extend([dir.path().join("probe/root"), local]);
    }
    let mut seen = Vec::new();
    for src in &sources {
        let s = run(&request(DatasetKind::Imagefolder, Some(src), dir.path()), &store).unwrap();
        let ds = Dataset::load(&s.dir).unwrap();
        assert_eq!(per_class(&ds.train_labels, 2), [3, 1], "{}", src.display());
        assert_eq!(per_class(&ds.test_labels, 2), [3, 1], "{}", src.display());
        seen.push(all_images(&ds.train_images));
    }
    // A folder and its archive give the same images in the same order.
    assert_eq!(seen[0], seen[1]);
    if seen.len() == 4 {
        assert_eq!(seen[2], seen[3]);
    }
}

#[test]
fn windows_separators_in_zip_and_tar_are_read_as_folders() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let mut files = Vec::new();
    let mut i = 0;
    for split in ["train", "test"] {
        for class in ["cat", "dog"] {
            files.push((format!("pets\\{split}\\{class}\\{i}.png"), png(&pattern(i, 4))));
            i += 1;
        }
    }
    let zip_path = dir.path().join("windows.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    z.add_directory("pets\\train\\", opts).unwrap();
    for (name, data) in &files {
        z.start_file(name.as_str(), opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
    let tar_path = dir.path().join("windows.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    for (name, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap();
    for archive in [&zip_path, &tar_path] {
        let s = run(&request(DatasetKind::Imagefolder, Some(archive), dir.path()), &store).unwrap();
        let ds = Dataset::load(&s.dir).unwrap();
        assert_eq!(ds.classes, ["cat", "dog"], "{}", archive.display());
        assert_eq!((s.fit + s.val, s.test), (2, 2));
    }
    // Extracted by a tool that kept `\` inside the names: the error names the separator.
    let store = store_in(&dir.path().join("fresh"));
    let flat = dir.path().join("flat");
    for (name, data) in &files {
        write(&flat.join(name), data);
    }
    let msg = error_of(&request(DatasetKind::Imagefolder, Some(&flat), dir.path()), &store);
    assert!(msg.contains("contain `\\`") && msg.contains("Windows path separator") && msg.contains("`pets\\"), "{msg}");
    assert_nothing_written(&store);
}

/// An `.npy` file (format 1.0, C order) of `descr` and `shape` holding `data`, as NumPy writes it.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// An `.npz` (zip of `NAME.npy`), deflated as `np.savez_compressed` or stored as `np.savez`.
fn npz(path: &Path, arrays: &[(&str, Vec<u8>)], compressed: bool) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let method = if compressed { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in arrays {
        z.start_file(format!("{name}.npy"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

/// `n` images of side `s` as NHWC bytes (pixel (y, x, c) of image i), and the same as NCHW planes.
fn nhwc_and_planes(n: usize, s: usize, seed: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let v = |i: usize, y: usize, x: usize, c: usize| ((i * 31 + y * 7 + x * 3 + c * 101 + seed) % 256) as u8;
    let mut nhwc = Vec::new();
    let mut planes = Vec::new();
    for i in 0..n {
        for y in 0..s {
            for x in 0..s {
                for c in 0..3 {
                    nhwc.push(v(i, y, x, c));
                }
            }
        }
        let mut p = Vec::new();
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    p.push(v(i, y, x, c));
                }
            }
        }
        planes.push(p);
    }
    (nhwc, planes)
}

#[test]
fn npz_arrays_in_either_layout_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let (train_x, train_planes) = nhwc_and_planes(6, 4, 0);
    let (test_x, test_planes) = nhwc_and_planes(3, 4, 50);
    let train_y: Vec<u8> = [2i32, 0, 1, 2, 1, 0].iter().flat_map(|l| l.to_le_bytes()).collect();
    let test_y = vec![1u8, 0, 2];
    // Two files, NHWC uint8 images, int32 and uint8 labels, one compressed.
    let (train_f, test_f) = (dir.path().join("train.npz"), dir.path().join("test.npz"));
    npz(&train_f, &[("x", npy("|u1", &[6, 4, 4, 3], &train_x)), ("y", npy("<i4", &[6], &train_y))], true);
    npz(&test_f, &[("images", npy("|u1", &[3, 4, 4, 3], &test_x)), ("labels", npy("|u1", &[3], &test_y))], false);
    let two = PathBuf::from(format!("{},{}", train_f.display(), test_f.display()));
    let s = run(&request(DatasetKind::Npz, Some(&two), dir.path()), &store).unwrap();
    assert_eq!((s.classes, s.fit + s.val, s.test, s.image_side), (3, 6, 3, 4), "{s}");
    let ds = Dataset::load(&s.dir).unwrap();
    assert_eq!(ds.classes, ["0", "1", "2"]);
    assert_eq!(labels(&ds.train_labels), [2, 0, 1, 2, 1, 0]);
    assert_eq!(labels(&ds.test_labels), [1, 0, 2]);
    assert_eq!(all_images(&ds.train_images), train_planes);
    assert_eq!(all_images(&ds.test_images), test_planes);

    // One file, NCHW images (PyTorch's layout), int64 labels: the same dataset.
    let nchw = |planes: &[Vec<u8>]| planes.concat();
    let i64s = |v: &[i64]| v.iter().flat_map(|l| l.to_le_bytes()).collect::<Vec<u8>>();
    let one = dir.path().join("both.npz");
    npz(
        &one,
        &[
            ("x_train", npy("|u1", &[6, 3, 4, 4], &nchw(&train_planes))),
            ("y_train", npy("<i8", &[6], &i64s(&[2, 0, 1, 2, 1, 0]))),
            ("x_test", npy("|u1", &[3, 3, 4, 4], &nchw(&test_planes))),
            ("y_test", npy("<i8", &[3], &i64s(&[1, 0, 2]))),
        ],
        true,
    );
    let s = run(&request(DatasetKind::Npz, Some(&one), dir.path()), &store).unwrap();
    let ds1 = Dataset::load(&s.dir).unwrap();
    assert_eq!(all_images(&ds1.train_images), train_planes);
    assert_eq!(all_images(&ds1.test_images), test_planes);
    assert_eq!(labels(&ds1.test_labels), [1, 0, 2]);
}

#[test]
fn npz_mistakes_name_the_array_and_the_fix_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let (x, _) = nhwc_and_planes(4, 4, 0);
    let y: Vec<u8> = [0i64, 1, 0, 1].iter().flat_map(|l| l.to_le_bytes()).collect();
    let good_test = dir.path().join("test.npz");
    npz(&good_test, &[("x", npy("|u1", &[4, 4, 4, 3], &x)), ("y", npy("<i8", &[4], &y))], false);
    let floats: Vec<u8> = (0..4 * 4 * 4 * 3).flat_map(|_| 0.5f32.to_le_bytes()).collect();
    let y_f: Vec<u8> = [0.0f64, 1.0, 0.0, 1.0].iter().flat_map(|l| l.to_le_bytes()).collect();
    let y_gap: Vec<u8> = [0i64, 7, 0, 7].iter().flat_map(|l| l.to_le_bytes()).collect();
    let one_hot: Vec<u8> = [1i64, 0, 0, 1, 1, 0, 0, 1].iter().flat_map(|l| l.to_le_bytes()).collect();
    let (rect, _) = nhwc_and_planes(4, 4, 0);
    let cases: Vec<(&str, Vec<(&str, Vec<u8>)>, &str)> = vec![
        ("float images", vec![("x", npy("<f4", &[4, 4, 4, 3], &floats)), ("y", npy("<i8", &[4], &y))], "array `x`: images are <f4, expected uint8"),
        ("float labels", vec![("x", npy("|u1", &[4, 4, 4, 3], &x)), ("y", npy("<f8", &[4], &y_f))], "array `y`: labels are <f8, expected integer"),
        ("label count", vec![("x", npy("|u1", &[4, 4, 4, 3], &x)), ("y", npy("<i8", &[3], &y[..24]))], "array `y`: 3 labels for 4 images"),
        ("gaps", vec![("x", npy("|u1", &[4, 4, 4, 3], &x)), ("y", npy("<i8", &[4], &y_gap))], "largest training label is 7, but there are only 4"),
        ("one-hot", vec![("x", npy("|u1", &[4, 4, 4, 3], &x)), ("y", npy("<i8", &[4, 2], &one_hot))], "one-hot"),
        ("not square", vec![("x", npy("|u1", &[4, 2, 8, 3], &rect)), ("y", npy("<i8", &[4], &y))], "images are 2×8"),
        ("bad shape", vec![("x", npy("|u1", &[4, 48], &x)), ("y", npy("<i8", &[4], &y))], "images have shape [4, 48]"),
        ("names", vec![("pixels", npy("|u1", &[4, 4, 4, 3], &x)), ("y", npy("<i8", &[4], &y))], "no image array; it holds [pixels, y], expected one named x, images"),
    ];
    for (what, arrays, want) in cases {
        let f = dir.path().join(format!("{}.npz", what.replace(' ', "_")));
        npz(&f, &arrays, false);
        let src = PathBuf::from(format!("{},{}", f.display(), good_test.display()));
        let msg = error_of(&request(DatasetKind::Npz, Some(&src), dir.path()), &store);
        assert!(msg.contains(want) && msg.contains(&f.display().to_string()), "{what}: {msg}");
        assert_nothing_written(&store);
    }
    // A test label the training set never saw.
    let y_big: Vec<u8> = [0i64, 1, 2, 1].iter().flat_map(|l| l.to_le_bytes()).collect();
    let bad_test = dir.path().join("bad_test.npz");
    npz(&bad_test, &[("x", npy("|u1", &[4, 4, 4, 3], &x)), ("y", npy("<i8", &[4], &y_big))], false);
    let src = PathBuf::from(format!("{},{}", good_test.display(), bad_test.display()));
    let msg = error_of(&request(DatasetKind::Npz, Some(&src), dir.path()), &store);
    assert!(msg.contains("test label 2 (image 2) is not among the training labels 0..=1"), "{msg}");
    // A truncated file, a missing file, a single file without both splits.
    let bytes = std::fs::read(&good_test).unwrap();
    let cut = dir.path().join("cut.npz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let msg = error_of(&request(DatasetKind::Npz, Some(&PathBuf::from(format!("{},{}", cut.display(), good_test.display()))), dir.path()), &store);
    assert!(msg.contains("cut.npz"), "{msg}");
    let msg = error_of(&request(DatasetKind::Npz, Some(&dir.path().join("nope.npz")), dir.path()), &store);
    assert!(msg.contains("nope.npz") && msg.contains("does not exist"), "{msg}");
    let msg = error_of(&request(DatasetKind::Npz, Some(&good_test), dir.path()), &store);
    assert!(msg.contains("x_train, y_train, x_test, y_test") && msg.contains("holds arrays [x, y]"), "{msg}");
    assert_nothing_written(&store);
}

/// EXIF orientation is ignored, as torchvision's loader (PIL's `Image.open(f).convert("RGB")`)
/// ignores it: the stored pixels are what the network sees, whatever the camera's tag says, so
/// lipctl and the reference code train on the same arrays.
#[test]
fn exif_orientation_is_ignored_like_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    // Left half white, right half black: a rotation by 90° (orientation 6) would move the white
    // half to the top.
    let img = RgbImage::from_fn(16, 16, |x, _| if x < 8 { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) });
    let mut jpeg = Cursor::new(Vec::new());
    img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    // APP1 "Exif": little-endian TIFF header, one IFD entry Orientation (0x0112) SHORT = 6.
    let mut tiff = b"II\x2a\x00\x08\x00\x00\x00\x01\x00".to_vec();
    tiff.extend([0x12, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00]);
    tiff.extend([0, 0, 0, 0]);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(tiff);
    let mut tagged = jpeg[..2].to_vec();
    tagged.extend([0xFF, 0xE1]);
    tagged.extend(((app1.len() + 2) as u16).to_be_bytes());
    tagged.extend(app1);
    tagged.extend(&jpeg[2..]);
    // The tag is really there: the image crate's decoder reads it.
    use image::ImageDecoder;
    let mut dec = image::codecs::jpeg::JpegDecoder::new(Cursor::new(&tagged)).unwrap();
    assert_eq!(dec.orientation().unwrap(), image::metadata::Orientation::Rotate90);
    let root = dir.path().join("exif");
    for split in ["train", "test"] {
        write(&root.join(split).join("a/photo.jpg"), &tagged);
    }
    let s = run(&request(DatasetKind::Imagefolder, Some(&root), dir.path()), &store).unwrap();
    let px = image_at(&Dataset::load(&s.dir).unwrap().train_images, 0);
    // Red plane, row 0: bright on the left, dark on the right (JPEG rounding aside).
    let row0 = &px[..16];
    assert!(row0[..6].iter().all(|&v| v > 200) && row0[10..].iter().all(|&v| v < 55), "{row0:?}");
}
