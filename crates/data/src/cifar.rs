//! The CIFAR-10 and CIFAR-100 binary formats: kinds, splits, label sets, record layout
//! and the official file names.

use std::fmt;

/// The side of a CIFAR image.
pub const CIFAR_SIDE: usize = 32;
/// The channels of a CIFAR image (R, G, B).
pub const CIFAR_CHANNELS: usize = 3;
/// The pixel bytes of one CIFAR image (`32 * 32 * 3`).
pub const CIFAR_IMAGE_BYTES: usize = CIFAR_SIDE * CIFAR_SIDE * CIFAR_CHANNELS;

/// Which CIFAR dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CifarKind {
    /// CIFAR-10: records of 1 label byte (0..10) and 3072 pixel bytes.
    Cifar10,
    /// CIFAR-100: records of 1 coarse label byte (0..20), 1 fine label byte (0..100) and
    /// 3072 pixel bytes.
    Cifar100,
}

/// Which split of a CIFAR dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (50,000 images).
    Train,
    /// The test split (10,000 images).
    Test,
}

/// Which labels of CIFAR-100 to read. CIFAR-10 has one label set, read as `Fine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LabelKind {
    /// The fine labels: 100 classes for CIFAR-100, the 10 classes of CIFAR-10.
    #[default]
    Fine,
    /// CIFAR-100's coarse labels: 20 superclasses.
    Coarse,
}

impl CifarKind {
    /// The dataset's name, as in error messages ("CIFAR-10", "CIFAR-100").
    pub fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "CIFAR-10",
            CifarKind::Cifar100 => "CIFAR-100",
        }
    }

    /// The folder the official archive extracts to.
    pub fn folder(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-batches-bin",
            CifarKind::Cifar100 => "cifar-100-binary",
        }
    }

    /// The number of label bytes before the pixels of each record.
    pub fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    /// The size of one record in bytes (3073 or 3074).
    pub fn record_size(self) -> usize {
        self.label_bytes() + CIFAR_IMAGE_BYTES
    }

    /// The official file names of a split, in reading order.
    pub fn files(self, split: Split) -> &'static [&'static str] {
        match (self, split) {
            (CifarKind::Cifar10, Split::Train) => {
                &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
            }
            (CifarKind::Cifar10, Split::Test) => &["test_batch.bin"],
            (CifarKind::Cifar100, Split::Train) => &["train.bin"],
            (CifarKind::Cifar100, Split::Test) => &["test.bin"],
        }
    }

    /// All official file names, both splits.
    pub fn all_files(self) -> Vec<&'static str> {
        let mut files = self.files(Split::Train).to_vec();
        files.extend_from_slice(self.files(Split::Test));
        files
    }

    /// The number of classes of a label set, or `None` for a set the dataset lacks
    /// (CIFAR-10 has no coarse labels).
    pub fn num_classes(self, labels: LabelKind) -> Option<usize> {
        match (self, labels) {
            (CifarKind::Cifar10, LabelKind::Fine) => Some(10),
            (CifarKind::Cifar10, LabelKind::Coarse) => None,
            (CifarKind::Cifar100, LabelKind::Fine) => Some(100),
            (CifarKind::Cifar100, LabelKind::Coarse) => Some(20),
        }
    }
}

impl Split {
    /// The number of records of the official split, for CIFAR-10 and CIFAR-100 alike:
    /// 50,000 train, 10,000 test.
    pub fn official_records(self) -> usize {
        match self {
            Split::Train => 50_000,
            Split::Test => 10_000,
        }
    }

    /// "train" or "test".
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for CifarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
