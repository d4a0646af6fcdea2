//! The synthetic dataset: deterministic, balanced, and learnable.

use tapegrad_data::{synthetic, Dataset};

#[test]
fn synthetic_is_deterministic_per_seed() {
    let a = synthetic(50, 10, 1).unwrap();
    assert_eq!(a, synthetic(50, 10, 1).unwrap());
    assert_ne!(a, synthetic(50, 10, 2).unwrap());
    assert_eq!(a.image_shape(), [32, 32, 3]);
    assert_eq!(a.images().len(), 50 * 3072);
    assert_eq!(a.num_classes(), 10);
}

#[test]
fn synthetic_classes_are_balanced() {
    let data = synthetic(1000, 100, 4).unwrap();
    let mut counts = vec![0; 100];
    for &l in data.labels() {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == 10), "{counts:?}");
}

#[test]
fn zero_classes_is_an_error() {
    assert!(synthetic(10, 0, 0).is_err());
    assert_eq!(synthetic(0, 3, 0).unwrap().len(), 0);
}

/// The class means of a training set, per pixel value.
fn centroids(data: &Dataset) -> Vec<Vec<f32>> {
    let mut sums = vec![vec![0f32; data.image_len()]; data.num_classes()];
    let mut counts = vec![0f32; data.num_classes()];
    for i in 0..data.len() {
        let l = data.label(i).unwrap() as usize;
        counts[l] += 1.0;
        for (s, &x) in sums[l].iter_mut().zip(data.image(i).unwrap()) {
            *s += x as f32;
        }
    }
    sums.iter_mut().zip(&counts).for_each(|(s, &c)| s.iter_mut().for_each(|v| *v /= c.max(1.0)));
    sums
}

fn nearest_centroid_accuracy(classes: usize) -> f32 {
    let train = synthetic(classes * 20, classes, 1).unwrap();
    let test = synthetic(500, classes, 2).unwrap();
    let centres = centroids(&train);
    let correct = (0..test.len())
        .filter(|&i| {
            let image = test.image(i).unwrap();
            let dist = |c: &Vec<f32>| c.iter().zip(image).map(|(m, &x)| (m - x as f32).powi(2)).sum::<f32>();
            let best = (0..classes).min_by(|&a, &b| dist(&centres[a]).total_cmp(&dist(&centres[b]))).unwrap();
            best as i64 == test.label(i).unwrap()
        })
        .count();
    correct as f32 / test.len() as f32
}

#[test]
fn synthetic_is_learnable_across_seeds() {
    // A train set and a test set from different seeds share their classes: even a
    // nearest-centroid classifier generalises far above chance.
    let acc10 = nearest_centroid_accuracy(10);
    eprintln!("nearest-centroid accuracy: 10 classes {acc10}");
    assert!(acc10 > 0.9, "10 classes: {acc10}");
    let acc100 = nearest_centroid_accuracy(100);
    eprintln!("nearest-centroid accuracy: 100 classes {acc100}");
    assert!(acc100 > 0.5, "100 classes: {acc100} (chance 0.01)");
}
