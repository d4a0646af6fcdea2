//! Datasets are what they claim: empty splits and partial records are errors, subsets
//! load with a count warning, a manifest catches changed files, and a bounded mutation
//! fuzz of the reader never panics.

use std::path::PathBuf;
use tapegrad_data::{
    load_cifar, read_cifar_file, record_count_warning, write_manifest, write_synthetic_cifar, CifarKind, DataError,
    LabelKind, Split, MANIFEST_FILE,
};

fn temp_dir(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("tapegrad-data-{test}-")).tempdir().unwrap()
}

#[test]
fn an_empty_split_is_an_error() {
    let dir = temp_dir("empty");
    let folder = write_synthetic_cifar(dir.path(), CifarKind::Cifar100, 0, 1).unwrap();
    let err = load_cifar(dir.path(), CifarKind::Cifar100, Split::Train, LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::EmptySplit { .. }), "{err}");
    assert!(err.to_string().contains("CIFAR-100 train split holds no records"), "{err}");
    let err = read_cifar_file(folder.join("test.bin"), CifarKind::Cifar100, LabelKind::Fine).unwrap_err();
    assert!(err.to_string().contains("test.bin"), "{err}");
}

#[test]
fn a_partial_record_names_the_file_and_its_size() {
    let dir = temp_dir("partial");
    let folder = write_synthetic_cifar(dir.path(), CifarKind::Cifar10, 3, 2).unwrap();
    let path = folder.join("data_batch_4.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&path, &bytes).unwrap();
    let err = load_cifar(dir.path(), CifarKind::Cifar10, Split::Train, LabelKind::Fine).unwrap_err().to_string();
    assert!(err.contains("data_batch_4.bin") && err.contains(&format!("{} bytes", bytes.len())), "{err}");
}

#[test]
fn a_subset_loads_with_a_warning_naming_both_counts() {
    let dir = temp_dir("subset");
    write_synthetic_cifar(dir.path(), CifarKind::Cifar10, 4, 3).unwrap();
    let train = load_cifar(dir.path(), CifarKind::Cifar10, Split::Train, LabelKind::Fine).unwrap();
    assert_eq!(train.len(), 20);
    let warning = record_count_warning(dir.path(), CifarKind::Cifar10, Split::Train, 20).unwrap();
    assert!(warning.contains("holds 20 records, the official one 50000"), "{warning}");
    assert!(record_count_warning(dir.path(), CifarKind::Cifar100, Split::Test, 10_000).is_none());
    assert_eq!((Split::Train.official_records(), Split::Test.official_records()), (50_000, 10_000));
}

#[test]
fn the_manifest_catches_a_changed_file() {
    let dir = temp_dir("manifest");
    let folder = write_synthetic_cifar(dir.path(), CifarKind::Cifar100, 5, 4).unwrap();
    write_manifest(&folder, CifarKind::Cifar100).unwrap();
    let manifest = std::fs::read_to_string(folder.join(MANIFEST_FILE)).unwrap();
    assert_eq!(manifest.lines().count(), 2, "{manifest}");
    load_cifar(dir.path(), CifarKind::Cifar100, Split::Test, LabelKind::Fine).unwrap();
    // A whole record swapped in place: sizes and labels stay valid, the MD5 does not.
    let path = folder.join("train.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_cifar(dir.path(), CifarKind::Cifar100, Split::Train, LabelKind::Fine).unwrap_err();
    assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("train.bin") && err.to_string().contains(MANIFEST_FILE), "{err}");
    // The other split still loads; without a manifest nothing is checksummed.
    load_cifar(dir.path(), CifarKind::Cifar100, Split::Test, LabelKind::Fine).unwrap();
    std::fs::remove_file(folder.join(MANIFEST_FILE)).unwrap();
    load_cifar(dir.path(), CifarKind::Cifar100, Split::Train, LabelKind::Fine).unwrap();
}

/// xorshift64*: reproducible mutations without a dependency.
fn next(state: &mut u64) -> usize {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 16) as usize
}

#[test]
fn mutated_cifar_files_never_panic() {
    let dir = temp_dir("fuzz");
    let mut sources: Vec<(CifarKind, PathBuf)> = Vec::new();
    for kind in [CifarKind::Cifar10, CifarKind::Cifar100] {
        let folder = write_synthetic_cifar(dir.path().join(kind.name()), kind, 3, 5).unwrap();
        sources.push((kind, folder.join(kind.files(Split::Test)[0])));
    }
    let mutant = dir.path().join("mutant.bin");
    let mut rng = 0x0dd_ba11_u64;
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..2_000 {
        let (kind, source) = &sources[i % 2];
        let mut bytes = std::fs::read(source).unwrap();
        for _ in 0..1 + next(&mut rng) % 3 {
            let at = next(&mut rng) % bytes.len().max(1);
            match next(&mut rng) % 4 {
                0 => bytes.truncate(at),
                1 => bytes.insert(at.min(bytes.len()), next(&mut rng) as u8),
                2 => bytes.extend_from_slice(&vec![next(&mut rng) as u8; kind.record_size()]),
                _ => {
                    if let Some(b) = bytes.get_mut(at) {
                        *b = next(&mut rng) as u8;
                    }
                }
            }
        }
        std::fs::write(&mutant, &bytes).unwrap();
        for labels in [LabelKind::Fine, LabelKind::Coarse] {
            match read_cifar_file(&mutant, *kind, labels) {
                Ok(data) => {
                    accepted += 1;
                    assert_eq!(data.len() * kind.record_size(), bytes.len(), "mutant {i}");
                }
                Err(e) => {
                    rejected += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    assert!(accepted > 0 && rejected > 0, "{accepted} accepted, {rejected} rejected");
}
