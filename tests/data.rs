//! Dataset preparation through the library: every reader on small files built here, pixels and
//! labels compared exactly against what was written; every bad-input error names the culprit and
//! leaves nothing in the store.

use image::{ImageFormat, Luma, Rgb, RgbImage};
use lipctl::data::cifar::{self, Variant};
use lipctl::data::{prepare, Dataset, DatasetKind, Images, PrepareRequest, PreparedSummary};
use lipctl::pipeline::store::Store;
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

/// Nothing partial in the store after a failed prepare: no artifact, no temporary folder.
fn assert_nothing_written(store: &Store) {
    for st in store.status().unwrap() {
        assert!(st.done.is_empty() && st.partial == 0 && st.running.is_empty(), "{st:?}");
    }
    let stage = store.stage_dir("prepare");
    if stage.exists() {
        for entry in std::fs::read_dir(stage).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(name.starts_with(".lock-"), "left behind: {name}");
        }
    }
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
    [PathBuf::from("/work/shared/data/cifar10-jpeg.tar.gz"), manifest.join("../shared/data/cifar10-jpeg.tar.gz")]
        .into_iter()
        .find(|p| p.is_file())
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
