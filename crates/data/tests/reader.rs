//! The CIFAR reader: round trips of generated files in both directory layouts, the
//! byte layout of a record, and the errors on bad files.

use std::path::Path;
use tapegrad_data::{
    encode_cifar, find_cifar_dir, load_cifar, read_cifar_file, synthetic, write_synthetic_cifar, CifarKind, DataError,
    LabelKind, Split, CIFAR_IMAGE_BYTES,
};

/// Writes `n` records per file of `kind` into `dir` (flat) from synthetic images, with
/// fine labels `i % classes` and coarse labels `i % 20`; returns per split the images
/// and the (fine, coarse) labels written, in reading order.
fn write_flat(dir: &Path, kind: CifarKind, n: usize) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let classes = if kind == CifarKind::Cifar10 { 10 } else { 100 };
    [Split::Train, Split::Test]
        .iter()
        .map(|&split| {
            let (mut images, mut fine, mut coarse) = (Vec::new(), Vec::new(), Vec::new());
            for (f, name) in kind.files(split).iter().enumerate() {
                let data = synthetic(n, classes, 7 + f as u64).unwrap();
                let fl: Vec<u8> = (0..n).map(|i| ((i * 7 + f) % classes) as u8).collect();
                let cl: Vec<u8> = (0..n).map(|i| ((i * 3 + f) % 20) as u8).collect();
                let coarse_arg = (kind == CifarKind::Cifar100).then_some(&cl[..]);
                let bytes = encode_cifar(kind, data.images(), &fl, coarse_arg).unwrap();
                assert_eq!(bytes.len(), n * kind.record_size());
                std::fs::write(dir.join(name), bytes).unwrap();
                images.extend_from_slice(data.images());
                fine.extend(fl);
                coarse.extend(cl);
            }
            (images, fine, coarse)
        })
        .collect()
}

fn round_trip(kind: CifarKind, nested: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let files_dir = if nested { tmp.path().join(kind.folder()) } else { tmp.path().to_path_buf() };
    std::fs::create_dir_all(&files_dir).unwrap();
    let written = write_flat(&files_dir, kind, 5);
    for (split, (images, fine, coarse)) in [Split::Train, Split::Test].into_iter().zip(written) {
        assert_eq!(find_cifar_dir(tmp.path(), kind, split).unwrap(), files_dir);
        let data = load_cifar(tmp.path(), kind, split, LabelKind::Fine).unwrap();
        assert_eq!(data.len(), 5 * kind.files(split).len());
        assert_eq!(data.image_shape(), [32, 32, 3]);
        assert_eq!(data.images(), &images[..]);
        assert_eq!(data.labels(), &fine.iter().map(|&l| l as i64).collect::<Vec<_>>()[..]);
        if kind == CifarKind::Cifar100 {
            assert_eq!(data.num_classes(), 100);
            let data = load_cifar(tmp.path(), kind, split, LabelKind::Coarse).unwrap();
            assert_eq!(data.num_classes(), 20);
            assert_eq!(data.labels(), &coarse.iter().map(|&l| l as i64).collect::<Vec<_>>()[..]);
        } else {
            assert_eq!(data.num_classes(), 10);
        }
    }
}

#[test]
fn cifar10_round_trip_flat_directory() {
    round_trip(CifarKind::Cifar10, false);
}

#[test]
fn cifar10_round_trip_archive_folder() {
    round_trip(CifarKind::Cifar10, true);
}

#[test]
fn cifar100_round_trip_flat_directory() {
    round_trip(CifarKind::Cifar100, false);
}

#[test]
fn cifar100_round_trip_archive_folder() {
    round_trip(CifarKind::Cifar100, true);
}

#[test]
fn record_planes_become_nhwc() {
    // One CIFAR-100 record written by hand: coarse 3, fine 42, R plane = pixel index
    // mod 251, G plane = 1, B plane = 2 except pixel (row 1, col 2) = 200.
    let mut record = vec![3u8, 42];
    record.extend((0..1024).map(|p| (p % 251) as u8));
    record.extend(std::iter::repeat_n(1u8, 1024));
    let mut blue = vec![2u8; 1024];
    blue[32 + 2] = 200;
    record.extend(blue);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("one.bin");
    std::fs::write(&path, &record).unwrap();

    let data = read_cifar_file(&path, CifarKind::Cifar100, LabelKind::Fine).unwrap();
    assert_eq!(data.labels(), &[42]);
    let image = data.image(0).unwrap();
    assert_eq!(image.len(), CIFAR_IMAGE_BYTES);
    let px = |y: usize, x: usize| &image[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3];
    assert_eq!(px(0, 0), &[0, 1, 2]);
    assert_eq!(px(0, 5), &[5, 1, 2]);
    assert_eq!(px(1, 2), &[34, 1, 200]);
    assert_eq!(px(31, 31), &[(1023 % 251) as u8, 1, 2]);
    let coarse = read_cifar_file(&path, CifarKind::Cifar100, LabelKind::Coarse).unwrap();
    assert_eq!(coarse.labels(), &[3]);
}

fn message(e: DataError) -> String {
    e.to_string()
}

#[test]
fn truncated_file_names_file_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    write_flat(tmp.path(), CifarKind::Cifar100, 4);
    let path = tmp.path().join("test.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_cifar(tmp.path(), CifarKind::Cifar100, Split::Test, LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::PartialRecord { record: 3, .. }), "{err:?}");
    let msg = message(err);
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("record 3"), "{msg}");
    assert!(msg.contains("3074"), "{msg}");
}

#[test]
fn wrong_record_size_is_an_error() {
    // CIFAR-10 records (3073 bytes) read as CIFAR-100 (3074 bytes).
    let tmp = tempfile::tempdir().unwrap();
    write_flat(tmp.path(), CifarKind::Cifar10, 3);
    let path = tmp.path().join("test_batch.bin");
    let err = read_cifar_file(&path, CifarKind::Cifar100, LabelKind::Fine).unwrap_err();
    let msg = message(err);
    assert!(msg.contains("test_batch.bin") && msg.contains("record 2") && msg.contains("CIFAR-100"), "{msg}");
}

#[test]
fn label_out_of_range_names_file_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    write_flat(tmp.path(), CifarKind::Cifar10, 4);
    let path = tmp.path().join("data_batch_3.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * 3073] = 10; // record 2's label
    std::fs::write(&path, bytes).unwrap();
    let err = load_cifar(tmp.path(), CifarKind::Cifar10, Split::Train, LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { record: 2, label: 10, num_classes: 10, .. }), "{err:?}");
    let msg = message(err);
    assert!(msg.contains("data_batch_3.bin") && msg.contains("record 2") && msg.contains("10"), "{msg}");
}

#[test]
fn cifar100_fine_and_coarse_labels_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    write_flat(tmp.path(), CifarKind::Cifar100, 4);
    let path = tmp.path().join("train.bin");
    let good = std::fs::read(&path).unwrap();

    let mut bad = good.clone();
    bad[3074 + 1] = 100; // record 1's fine label
    std::fs::write(&path, &bad).unwrap();
    let err = load_cifar(tmp.path(), CifarKind::Cifar100, Split::Train, LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { record: 1, label: 100, which: "fine", .. }), "{err:?}");

    let mut bad = good;
    bad[3 * 3074] = 20; // record 3's coarse label: corrupt even when reading fine labels
    std::fs::write(&path, &bad).unwrap();
    let err = load_cifar(tmp.path(), CifarKind::Cifar100, Split::Train, LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { record: 3, label: 20, which: "coarse", .. }), "{err:?}");
    assert!(message(err).contains("train.bin"));
}

#[test]
fn missing_files_say_where_they_were_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_cifar(tmp.path(), CifarKind::Cifar100, Split::Train, LabelKind::Fine).unwrap_err();
    let msg = message(err);
    assert!(msg.contains("train.bin") && msg.contains("cifar-100-binary"), "{msg}");
    assert!(msg.contains("cifar-100-binary.tar.gz"), "{msg}");
}

#[test]
fn cifar10_has_no_coarse_labels() {
    let tmp = tempfile::tempdir().unwrap();
    write_flat(tmp.path(), CifarKind::Cifar10, 1);
    let err = load_cifar(tmp.path(), CifarKind::Cifar10, Split::Test, LabelKind::Coarse).unwrap_err();
    assert!(matches!(err, DataError::InvalidArgument(_)), "{err:?}");
}

#[test]
fn synthetic_layout_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = write_synthetic_cifar(tmp.path(), CifarKind::Cifar10, 6, 1).unwrap();
    assert_eq!(folder, tmp.path().join("cifar-10-batches-bin"));
    assert_eq!(load_cifar(tmp.path(), CifarKind::Cifar10, Split::Train, LabelKind::Fine).unwrap().len(), 30);
    assert_eq!(load_cifar(&folder, CifarKind::Cifar10, Split::Test, LabelKind::Fine).unwrap().len(), 6);
}
