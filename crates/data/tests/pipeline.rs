//! The input pipeline: shuffling, batching, scaling, augmentation, prefetching.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;
use tapegrad_data::{
    epoch_permutation, synthetic, Augment, Batch, DataError, DataLoader, Dataset, LoaderConfig, Scaling, Transform,
};

fn tiny(n: usize) -> Dataset {
    synthetic(n, 10, 3).unwrap()
}

fn collect(loader: &DataLoader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).unwrap().collect()
}

#[test]
fn shuffle_is_a_deterministic_permutation_that_changes_per_epoch() {
    let p = epoch_permutation(1000, 42, 0);
    let mut sorted = p.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_ne!(p, (0..1000).collect::<Vec<_>>());
    assert_eq!(p, epoch_permutation(1000, 42, 0));
    assert_ne!(p, epoch_permutation(1000, 42, 1));
    assert_ne!(p, epoch_permutation(1000, 43, 0));
    let epochs: HashSet<Vec<usize>> = (0..10).map(|e| epoch_permutation(50, 7, e)).collect();
    assert_eq!(epochs.len(), 10);
    assert!(epoch_permutation(0, 1, 0).is_empty());
}

#[test]
fn loader_visits_every_example_once_per_epoch() {
    let loader = DataLoader::new(tiny(103), LoaderConfig::new(10).shuffle(5).prefetch(0)).unwrap();
    let first: Vec<usize> = collect(&loader, 0).into_iter().flat_map(|b| b.indices).collect();
    assert_eq!(first, epoch_permutation(103, 5, 0));
    let second: Vec<usize> = collect(&loader, 1).into_iter().flat_map(|b| b.indices).collect();
    assert_eq!(second, epoch_permutation(103, 5, 1));
    assert_ne!(first, second);
}

#[test]
fn unshuffled_loader_keeps_dataset_order_and_labels() {
    let data = tiny(25);
    let loader = DataLoader::new(data.clone(), LoaderConfig::new(8).prefetch(0)).unwrap();
    let batches = collect(&loader, 3);
    let indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(indices, (0..25).collect::<Vec<_>>());
    let labels: Vec<i64> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(labels, data.labels());
}

#[test]
fn last_partial_batch_is_kept_or_dropped() {
    let keep = DataLoader::new(tiny(23), LoaderConfig::new(5).prefetch(0)).unwrap();
    assert_eq!(keep.num_batches(), 5);
    let sizes: Vec<usize> = collect(&keep, 0).iter().map(Batch::len).collect();
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    let batches = keep.epoch(0).unwrap();
    assert_eq!(batches.len(), 5);

    let drop = DataLoader::new(tiny(23), LoaderConfig::new(5).drop_last(true).prefetch(0)).unwrap();
    assert_eq!(drop.num_batches(), 4);
    let sizes: Vec<usize> = collect(&drop, 0).iter().map(Batch::len).collect();
    assert_eq!(sizes, [5, 5, 5, 5]);

    let exact = DataLoader::new(tiny(20), LoaderConfig::new(5).drop_last(true).prefetch(0)).unwrap();
    assert_eq!(collect(&exact, 0).len(), 4);
    let small = DataLoader::new(tiny(3), LoaderConfig::new(5).drop_last(true)).unwrap();
    assert_eq!(collect(&small, 0).len(), 0);
}

#[test]
fn batches_have_nhwc_shape() {
    let loader = DataLoader::new(tiny(12), LoaderConfig::new(5).augment(Augment::standard())).unwrap();
    for batch in loader.epoch(0).unwrap() {
        let [n, h, w, c] = batch.shape();
        assert_eq!([h, w, c], [32, 32, 3]);
        assert_eq!(batch.images.len(), n * 32 * 32 * 3);
        assert_eq!(batch.labels.len(), n);
    }
}

#[test]
fn symmetric_scaling_maps_to_minus_one_one() {
    let data = tiny(4);
    let loader = DataLoader::new(data.clone(), LoaderConfig::new(4).prefetch(0)).unwrap();
    let batch = collect(&loader, 0).remove(0);
    for (&x, &y) in data.images().iter().zip(&batch.images) {
        assert_eq!(y, 2.0 * x as f32 / 255.0 - 1.0);
    }
    let (lo, hi) = batch.images.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(lo >= -1.0 && hi <= 1.0);
}

#[test]
fn per_channel_normalisation_uses_each_channels_mean_and_std() {
    let data = tiny(2);
    let scaling = Scaling::PerChannel { mean: vec![0.1, 0.5, 0.9], std: vec![0.5, 0.25, 2.0] };
    let loader = DataLoader::new(data.clone(), LoaderConfig::new(2).scaling(scaling).prefetch(0)).unwrap();
    let batch = collect(&loader, 0).remove(0);
    let (mean, std) = ([0.1f32, 0.5, 0.9], [0.5f32, 0.25, 2.0]);
    for (i, (&x, &y)) in data.images().iter().zip(&batch.images).enumerate() {
        let c = i % 3;
        assert_eq!(y, (x as f32 / 255.0 - mean[c]) / std[c]);
    }
    let raw = DataLoader::new(data.clone(), LoaderConfig::new(2).scaling(Scaling::Raw)).unwrap();
    let batch = collect(&raw, 0).remove(0);
    assert!(data.images().iter().zip(&batch.images).all(|(&x, &y)| y == x as f32));
}

#[test]
fn invalid_configurations_are_errors() {
    let err = DataLoader::new(tiny(2), LoaderConfig::new(0)).unwrap_err();
    assert!(matches!(err, DataError::InvalidArgument(_)), "{err:?}");
    let bad_std = Scaling::PerChannel { mean: vec![0.0; 3], std: vec![1.0, 0.0, 1.0] };
    assert!(DataLoader::new(tiny(2), LoaderConfig::new(1).scaling(bad_std)).is_err());
    let two_channels = Scaling::PerChannel { mean: vec![0.0; 2], std: vec![1.0; 2] };
    let err = DataLoader::new(tiny(2), LoaderConfig::new(1).scaling(two_channels)).unwrap_err();
    assert!(err.to_string().contains("3-channel"), "{err}");
}

#[test]
fn disabled_augmentation_is_the_identity() {
    let data = tiny(9);
    let plain = LoaderConfig::new(4).shuffle(1).prefetch(0);
    let a = collect(&DataLoader::new(data.clone(), plain.clone()).unwrap(), 2);
    let b = collect(&DataLoader::new(data.clone(), plain.augment(Augment::default())).unwrap(), 2);
    assert_eq!(a, b);
    for batch in &a {
        for (k, &i) in batch.indices.iter().enumerate() {
            let expected: Vec<f32> = data.image(i).unwrap().iter().map(|&x| 2.0 * x as f32 / 255.0 - 1.0).collect();
            assert_eq!(&batch.images[k * 3072..(k + 1) * 3072], &expected[..]);
        }
    }
    assert!(Augment::default().is_identity());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    assert_eq!(Augment::default().draw(&mut rng), Transform::default());
}

#[test]
fn augmentation_is_seeded_and_changes_images() {
    let data = tiny(16);
    let config = LoaderConfig::new(8).shuffle(9).augment(Augment::standard()).prefetch(0);
    let loader = DataLoader::new(data.clone(), config.clone()).unwrap();
    let a = collect(&loader, 0);
    assert_eq!(a, collect(&DataLoader::new(data.clone(), config.clone()).unwrap(), 0));
    assert_ne!(a, collect(&DataLoader::new(data.clone(), config.seed(10)).unwrap(), 0));
    let plain = collect(&DataLoader::new(data, LoaderConfig::new(8).shuffle(9).prefetch(0)).unwrap(), 0);
    assert_eq!(a.len(), plain.len());
    assert_eq!(a[0].indices, plain[0].indices);
    assert_ne!(a[0].images, plain[0].images);
}

#[test]
fn transform_shifts_and_flips() {
    // A 2x3 image with 1 channel: [[1, 2, 3], [4, 5, 6]].
    let image = [1u8, 2, 3, 4, 5, 6];
    let mut out = [0u8; 6];
    let apply = |t: Transform, out: &mut [u8]| t.apply(&image, [2, 3, 1], out).unwrap();
    apply(Transform::default(), &mut out);
    assert_eq!(out, image);
    apply(Transform { dy: 0, dx: 0, flip: true }, &mut out);
    assert_eq!(out, [3, 2, 1, 6, 5, 4]);
    apply(Transform { dy: 1, dx: 0, flip: false }, &mut out);
    assert_eq!(out, [4, 5, 6, 0, 0, 0]);
    apply(Transform { dy: 0, dx: -1, flip: false }, &mut out);
    assert_eq!(out, [0, 1, 2, 0, 4, 5]);
    apply(Transform { dy: -1, dx: 1, flip: true }, &mut out);
    assert_eq!(out, [0, 0, 0, 0, 3, 2]);
    assert!(Transform::default().apply(&image, [2, 2, 1], &mut out).is_err());
}

#[test]
fn augment_keeps_shape_and_pads_with_zeros() {
    let data = tiny(1);
    let image = data.image(0).unwrap();
    let mut out = vec![0u8; image.len()];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let aug = Augment { crop_padding: 4, horizontal_flip: true };
    for _ in 0..50 {
        let t = aug.draw(&mut rng);
        assert!(t.dy.abs() <= 4 && t.dx.abs() <= 4);
        t.apply(image, [32, 32, 3], &mut out).unwrap();
        if t.dy > 0 {
            assert!(out[(32 - t.dy as usize) * 96..].iter().all(|&v| v == 0));
        }
    }
    let mut out = vec![0u8; image.len()];
    assert!(aug.apply(image, [32, 32, 3], &mut rng, &mut out).is_ok());
}

#[test]
fn prefetching_gives_the_same_batches() {
    let data = std::sync::Arc::new(tiny(70));
    let config = LoaderConfig::new(8).shuffle(11).augment(Augment::standard());
    let inline = DataLoader::new(data.clone(), config.clone().prefetch(0)).unwrap();
    for depth in [1, 3] {
        let prefetched = DataLoader::new(data.clone(), config.clone().prefetch(depth)).unwrap();
        for epoch in 0..2 {
            let a = collect(&inline, epoch);
            let b = collect(&prefetched, epoch);
            assert_eq!(a.len(), 9);
            assert_eq!(a, b, "depth {depth} epoch {epoch}");
        }
    }
}

#[test]
fn dropping_a_prefetching_iterator_stops_its_thread() {
    let loader = DataLoader::new(tiny(200), LoaderConfig::new(2).prefetch(1)).unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut batches = loader.epoch(0).unwrap();
        let first = batches.next().unwrap();
        assert_eq!(batches.len(), 99);
        drop(batches); // the worker is blocked on a full channel: drop must wake and join it
        done.send(first.len()).unwrap();
    });
    assert_eq!(finished.recv_timeout(Duration::from_secs(10)), Ok(2));
}

#[test]
fn empty_dataset_has_no_batches() {
    let empty = Dataset::new(Vec::new(), Vec::new(), [32, 32, 3], 10).unwrap();
    let loader = DataLoader::new(empty, LoaderConfig::new(4).shuffle(1)).unwrap();
    assert_eq!(loader.num_batches(), 0);
    assert_eq!(loader.epoch(0).unwrap().count(), 0);
}

#[test]
fn batch_converts_to_tensors() {
    use tapegrad_tensor::{DType, Device};
    let loader = DataLoader::new(tiny(6), LoaderConfig::new(4).prefetch(0)).unwrap();
    let batch = collect(&loader, 0).remove(0);
    let (x, y) = batch.to_tensors(&Device::Cpu).unwrap();
    assert_eq!(x.shape().dims(), &[4, 32, 32, 3]);
    assert_eq!(x.dtype(), DType::F32);
    assert_eq!(y.shape().dims(), &[4]);
    assert_eq!(y.dtype(), DType::I64);
    assert_eq!(y.to_vec::<i64>().unwrap(), batch.labels);
    assert_eq!(x.to_vec::<f32>().unwrap(), batch.images);
    let (x2, _) = batch.clone().into_tensors(&Device::Cpu).unwrap();
    assert_eq!(x2.to_vec::<f32>().unwrap(), batch.images);
}
