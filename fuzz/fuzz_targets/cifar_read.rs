//! Any bytes as a CIFAR-10 or CIFAR-100 file: no panic, and what loads is whole records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapegrad_data::{read_cifar_file, CifarKind, LabelKind};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("tapegrad-fuzz-{}.bin", std::process::id()));
    std::fs::write(&path, data).expect("the temporary file is writable");
    for kind in [CifarKind::Cifar10, CifarKind::Cifar100] {
        for labels in [LabelKind::Fine, LabelKind::Coarse] {
            if let Ok(set) = read_cifar_file(&path, kind, labels) {
                assert_eq!(set.len() * kind.record_size(), data.len());
            }
        }
    }
});
