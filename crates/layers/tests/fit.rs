//! The training API (`training::Trainer`): fit learns, History holds every metric per
//! epoch, evaluate and predict agree with hand computations, validation_split is disjoint,
//! steps_per_epoch and initial_epoch, fit equals the hand-written loop bit for bit, a NaN
//! stops with an error naming epoch and step, bad options are errors, the BN warning.

use tapegrad_data::{synthetic, DataLoader, Dataset, LoaderConfig};
use tapegrad_layers::optimizers::{Adam, Optimizer};
use tapegrad_layers::random::set_seed;
use tapegrad_layers::training::{
    split_loader, train_step, Callback, CallbackContext, DataSource, FitOptions, Logs, SparseCategoricalAccuracy,
    TensorDataset, Trainer,
};
use tapegrad_layers::{
    losses, Activation, BatchNormalization, Conv2D, Dense, Dropout, Error, Flatten, InputSpec, Layer, Mode, Padding,
    Result, Sequential,
};
use tapegrad_tensor::{Device, GradientTape, Tensor};

fn cross_entropy(y: &Tensor, p: &Tensor) -> tapegrad_tensor::Result<Tensor> {
    losses::sparse_categorical_crossentropy(y, p, true)
}

/// `n` points in [-1, 1]^2 (a fixed pseudo-random sequence), class 1 where `x0 + x1 > 0`.
fn separable(n: usize) -> (Tensor, Tensor) {
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    };
    let mut xs = Vec::with_capacity(2 * n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = (next(), next());
        xs.extend([a as f32, b as f32]);
        ys.push(i64::from(a + b > 0.0));
    }
    (Tensor::from_vec(xs, [n, 2], &Device::Cpu).unwrap(), Tensor::from_vec(ys, [n], &Device::Cpu).unwrap())
}

fn mlp() -> Sequential {
    Sequential::new().add(Dense::new(16)).add(Activation::relu()).add(Dense::new(2))
}

fn bits(model: &dyn Layer) -> Vec<(String, Vec<u32>)> {
    model
        .named_variables()
        .into_iter()
        .map(|(name, v)| (name, v.value_untracked().to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn fit_learns_a_separable_problem() -> Result<()> {
    set_seed(1);
    let (x, y) = separable(256);
    let data = TensorDataset::new(x, y, 32)?.shuffle(3);
    let model = mlp();
    let mut trainer = Trainer::new(&model, Adam::new(0.02), cross_entropy).metric(SparseCategoricalAccuracy::new());
    let history = trainer.fit(&data, FitOptions::new().epochs(15).verbose(0))?;
    let losses = history.get("loss").unwrap();
    assert!(losses[14] < 0.5 * losses[0], "{losses:?}");
    assert!(history.last("accuracy").unwrap() > 0.95, "{history:?}");
    Ok(())
}

#[test]
fn history_holds_every_metric_per_epoch() -> Result<()> {
    set_seed(2);
    let (x, y) = separable(64);
    let (vx, vy) = separable(16);
    let data = TensorDataset::new(x, y, 16)?;
    let val = TensorDataset::new(vx, vy, 8)?;
    let model = mlp();
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy).metric(SparseCategoricalAccuracy::new());
    let history = trainer.fit(&data, FitOptions::new().epochs(3).validation_data(&val).verbose(0))?;
    assert_eq!(history.epoch, [0, 1, 2]);
    let keys: Vec<&str> = history.history.keys().map(String::as_str).collect();
    assert_eq!(keys, ["accuracy", "loss", "lr", "val_accuracy", "val_loss"]);
    for (name, values) in &history.history {
        assert_eq!(values.len(), 3, "{name}");
        assert!(values.iter().all(|v| v.is_finite()), "{name}: {values:?}");
    }
    assert_eq!(history.get("lr").unwrap(), [0.01, 0.01, 0.01]);
    // The last val_ values are what evaluate says on the same data.
    let scores = trainer.evaluate(&val)?;
    assert_eq!(scores.get("loss"), history.last("val_loss"));
    assert_eq!(scores.get("accuracy"), history.last("val_accuracy"));
    assert!(history.stopped_epoch.is_none() && history.warnings.is_empty());
    Ok(())
}

#[test]
fn evaluate_equals_the_hand_computed_loss_and_accuracy() -> Result<()> {
    set_seed(3);
    let (x, y) = separable(40);
    let model = mlp();
    // Batches of 16, 16 and 8: the mean must weigh each batch by its size.
    let data = TensorDataset::new(x.clone(), y.clone(), 16)?;
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy).metric(SparseCategoricalAccuracy::new());
    let scores = trainer.evaluate(&data)?;
    let logits = model.call(&x, Mode::Infer)?;
    let loss = cross_entropy(&y, &logits)?.to_scalar::<f32>()? as f64;
    let predicted = logits.argmax(-1)?.to_vec::<i64>()?;
    let labels = y.to_vec::<i64>()?;
    let accuracy = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / 40.0;
    assert!((scores.get("loss").unwrap() - loss).abs() < 1e-6, "{scores} vs loss {loss}");
    assert_eq!(scores.get("accuracy"), Some(accuracy));
    assert_eq!(scores.keys().collect::<Vec<_>>(), ["loss", "accuracy"]);
    Ok(())
}

#[test]
fn predict_over_a_loader_equals_the_forward_pass() -> Result<()> {
    set_seed(4);
    let (x, y) = separable(37);
    let model = mlp();
    let trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy);
    let data = TensorDataset::new(x.clone(), y, 8)?;
    let expected = model.call(&x, Mode::Infer)?.to_vec::<f32>()?;
    for predicted in [trainer.predict(&data)?, trainer.predict_tensor(&x, 5)?] {
        assert_eq!(predicted.dims(), [37, 2]);
        for (a, b) in predicted.to_vec::<f32>()?.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
    let err = trainer.predict_tensor(&x, 0).unwrap_err().to_string();
    assert!(err.contains("batch_size") && err.contains('0'), "{err}");
    Ok(())
}

/// A dataset whose image `i` is filled with the byte `i` and labelled `i % 10`.
fn numbered(n: usize) -> Dataset {
    let images: Vec<u8> = (0..n).flat_map(|i| std::iter::repeat_n(i as u8, 2 * 2)).collect();
    Dataset::new(images, (0..n as i64).map(|i| i % 10).collect(), [2, 2, 1], 10).unwrap()
}

#[test]
fn validation_split_is_disjoint_and_takes_the_last_examples() -> Result<()> {
    let loader = DataLoader::new(numbered(50), LoaderConfig::new(8).shuffle(9).prefetch(0))?;
    let (train, val) = split_loader(&loader, 0.2)?;
    // Image i holds the byte i: the split's datasets show which images each part holds.
    let train_ids: Vec<u8> = train.dataset().images().iter().step_by(4).copied().collect();
    let val_ids: Vec<u8> = val.dataset().images().iter().step_by(4).copied().collect();
    assert_eq!(train_ids, (0..40).collect::<Vec<u8>>());
    assert_eq!(val_ids, (40..50).collect::<Vec<u8>>());
    assert!(train.config().shuffle && !val.config().shuffle);
    // Every training epoch visits exactly the first 40 (shuffled), never a validation one.
    for epoch in 0..3 {
        let mut seen: Vec<usize> = train.epoch(epoch)?.flat_map(|b| b.indices).collect();
        seen.sort();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }
    // The same through a TensorDataset: the last 25% held out, in order.
    let x = Tensor::from_vec((0..8).map(|i| i as f32).collect(), [8, 1], &Device::Cpu)?;
    let y = Tensor::from_vec((0..8).collect::<Vec<i64>>(), [8], &Device::Cpu)?;
    let (t, v) = TensorDataset::new(x, y, 3)?.shuffle(1).split(0.25)?;
    let collect = |d: &dyn DataSource| -> Vec<i64> {
        let mut all: Vec<i64> =
            d.batches(0, &Device::Cpu).unwrap().flat_map(|b| b.unwrap().1.to_vec::<i64>().unwrap()).collect();
        all.sort();
        all
    };
    assert_eq!(collect(t.as_ref()), [0, 1, 2, 3, 4, 5]);
    assert_eq!(collect(v.as_ref()), [6, 7]);
    // fit with validation_split reports val_ values.
    set_seed(5);
    let (x, y) = separable(40);
    let model = mlp();
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy);
    let history =
        trainer.fit(&TensorDataset::new(x, y, 8)?, FitOptions::new().epochs(2).validation_split(0.25).verbose(0))?;
    assert_eq!(history.get("val_loss").map(<[f64]>::len), Some(2));
    assert_eq!(trainer.optimizer().iterations(), 2 * 4, "30 training examples in batches of 8");
    Ok(())
}

/// Counts training steps and records the epochs begun.
#[derive(Default)]
struct Counter {
    steps: u64,
    epochs: Vec<u64>,
}

impl Callback for Counter {
    fn on_epoch_begin(&mut self, _: &mut CallbackContext<'_>, epoch: u64) -> Result<()> {
        self.epochs.push(epoch);
        Ok(())
    }
    fn on_train_batch_end(&mut self, _: &mut CallbackContext<'_>, _: u64, _: &Logs) -> Result<()> {
        self.steps += 1;
        Ok(())
    }
}

#[test]
fn steps_per_epoch_caps_and_initial_epoch_resumes() -> Result<()> {
    set_seed(6);
    let (x, y) = separable(64);
    let data = TensorDataset::new(x, y, 8)?; // 8 batches
    let model = mlp();
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy);
    let mut counter = Counter::default();
    let history = trainer.fit(
        &data,
        FitOptions::new().epochs(5).initial_epoch(2).steps_per_epoch(3).verbose(0).callback(&mut counter),
    )?;
    assert_eq!(history.epoch, [2, 3, 4]);
    assert_eq!(counter.epochs, [2, 3, 4]);
    assert_eq!(counter.steps, 9);
    assert_eq!(trainer.optimizer().iterations(), 9);
    // A cap above the loader's batches is the loader's batches.
    let history = trainer.fit(&data, FitOptions::new().steps_per_epoch(100).verbose(0))?;
    assert_eq!(history.len(), 1);
    assert_eq!(trainer.optimizer().iterations(), 9 + 8);
    Ok(())
}

/// A small CNN with batch norm and dropout (which draws from the global generator).
fn cnn() -> Sequential {
    Sequential::new()
        .add(Conv2D::new(4, 3).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(Flatten::new())
        .add(Dropout::new(0.25))
        .add(Dense::new(10))
}

#[test]
fn fit_equals_the_hand_written_loop_bit_for_bit() -> Result<()> {
    let loader = DataLoader::new(synthetic(48, 10, 1)?, LoaderConfig::new(16).shuffle(4))?;
    let epochs = 2;

    set_seed(11);
    let by_fit = cnn();
    by_fit.build(&InputSpec::new([1, 32, 32, 3]))?;
    let mut trainer = Trainer::new(&by_fit, Adam::new(1e-3), cross_entropy).metric(SparseCategoricalAccuracy::new());
    let history = trainer.fit(&loader, FitOptions::new().epochs(epochs).verbose(0))?;

    set_seed(11);
    let by_hand = cnn();
    by_hand.build(&InputSpec::new([1, 32, 32, 3]))?;
    let mut optimizer = Adam::new(1e-3);
    let mut losses = Vec::new();
    for epoch in 0..epochs {
        let (mut sum, mut n) = (0.0f64, 0usize);
        for batch in loader.epoch(epoch)? {
            let (x, y) = batch.into_tensors(&Device::Cpu)?;
            let tape = GradientTape::new();
            let loss = tape.record(|| cross_entropy(&y, &by_hand.call(&x, Mode::Train)?))?;
            let variables = by_hand.trainable_variables();
            let grads = tape.gradient(&loss, &variables)?;
            optimizer.apply_gradients(&grads, &variables)?;
            sum += loss.to_scalar::<f32>()? as f64 * y.elem_count() as f64;
            n += y.elem_count();
        }
        losses.push(sum / n as f64);
    }
    assert_eq!(bits(&by_fit), bits(&by_hand), "same batches, same steps, same bits");
    assert_eq!(trainer.optimizer().iterations(), optimizer.iterations());
    for (a, b) in history.get("loss").unwrap().iter().zip(&losses) {
        assert!((a - b).abs() < 1e-5 * b.abs(), "epoch loss {a} vs {b}");
    }
    Ok(())
}

#[test]
fn a_nan_in_the_data_stops_fit_with_an_error_naming_epoch_and_step() -> Result<()> {
    set_seed(7);
    let (x, y) = separable(32);
    let mut values = x.to_vec::<f32>()?;
    values[2 * 20] = f32::NAN; // example 20: batch 2 of batches of 8
    let x = Tensor::from_vec(values, [32, 2], &Device::Cpu)?;
    let model = mlp();
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy);
    let err = trainer.fit(&TensorDataset::new(x, y, 8)?, FitOptions::new().epochs(3).verbose(0)).unwrap_err();
    match &err {
        Error::NonFiniteLoss { epoch, step, value } => assert_eq!((*epoch, *step, value.is_nan()), (0, 2, true)),
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
    assert!(err.to_string().contains("epoch 0, step 2"), "{err}");
    // Read only every 4 steps (as on a GPU): found at the epoch's end, still an error.
    let (x, y) = separable(32);
    let mut values = x.to_vec::<f32>()?;
    values[2 * 12] = f32::NAN; // batch 1
    let x = Tensor::from_vec(values, [32, 2], &Device::Cpu)?;
    let err =
        trainer.fit(&TensorDataset::new(x, y, 8)?, FitOptions::new().epochs(1).sync_every(4).verbose(0)).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { epoch: 0, .. }), "{err:?}");
    Ok(())
}

#[test]
fn bad_options_are_errors_naming_the_option_and_the_value() -> Result<()> {
    let (x, y) = separable(16);
    let data = TensorDataset::new(x, y, 4)?;
    let model = mlp();
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy);
    let cases: Vec<(FitOptions<'_>, &[&str])> = vec![
        (FitOptions::new().epochs(0), &["epochs", "0"]),
        (FitOptions::new().epochs(3).initial_epoch(3), &["initial_epoch 3", "epochs 3"]),
        (FitOptions::new().steps_per_epoch(0), &["steps_per_epoch", "0"]),
        (FitOptions::new().validation_split(0.0), &["validation_split", "0"]),
        (FitOptions::new().validation_split(1.5), &["validation_split", "1.5"]),
        (FitOptions::new().validation_split(f64::NAN), &["validation_split", "NaN"]),
        (FitOptions::new().validation_split(0.5).validation_data(&data), &["validation_split 0.5", "validation_data"]),
        (FitOptions::new().verbose(3), &["verbose", "3"]),
        (FitOptions::new().sync_every(0), &["sync_every", "0"]),
        (FitOptions::new().validation_split(0.01), &["validation_split 0.01", "16 examples"]),
    ];
    for (options, expected) in cases {
        let err = trainer.fit(&data, options).unwrap_err().to_string();
        for e in expected {
            assert!(err.contains(e), "{e:?} not in {err:?}");
        }
    }
    assert_eq!(trainer.optimizer().iterations(), 0, "nothing ran");
    let err = TensorDataset::new(Tensor::zeros([3, 2], tapegrad_tensor::DType::F32, &Device::Cpu)?, separable(4).1, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[3, 2]") && err.contains("[4]"), "{err}");
    Ok(())
}

#[test]
fn the_batch_norm_warning_fires_once_at_the_first_validation() -> Result<()> {
    set_seed(8);
    let (x, y) = separable(32);
    let data = TensorDataset::new(x, y, 8)?; // 4 steps an epoch
    let model = Sequential::new().add(Dense::new(8)).add(BatchNormalization::new()).add(Dense::new(2));
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy);
    let history = trainer.fit(&data, FitOptions::new().epochs(3).validation_data(&data).verbose(0))?;
    assert_eq!(history.warnings.len(), 1, "{:?}", history.warnings);
    let w = &history.warnings[0];
    for part in [
        "layer 1",
        "4 training updates",
        "momentum 0.99",
        "0.99^4 = 96.1%",
        "1/(1 - 0.99) = 100",
        "lower the momentum to at most 0.75 (BatchNormalization::new().momentum(0.75))",
        "train longer",
    ] {
        assert!(w.contains(part), "{part:?} not in {w}");
    }
    // Once per trainer: a second fit does not repeat it.
    let again = trainer.fit(&data, FitOptions::new().validation_data(&data).verbose(0))?;
    assert!(again.warnings.is_empty());
    // Without validation, or with a momentum whose statistics are already settled: none.
    let settled = Sequential::new().add(Dense::new(8)).add(BatchNormalization::new().momentum(0.5)).add(Dense::new(2));
    let history = Trainer::new(&settled, Adam::new(0.01), cross_entropy)
        .fit(&data, FitOptions::new().epochs(2).validation_data(&data).verbose(0))?;
    assert!(history.warnings.is_empty(), "{:?}", history.warnings);
    let model = Sequential::new().add(Dense::new(8)).add(BatchNormalization::new()).add(Dense::new(2));
    let history = Trainer::new(&model, Adam::new(0.01), cross_entropy).fit(&data, FitOptions::new().verbose(0))?;
    assert!(history.warnings.is_empty());
    Ok(())
}

#[test]
fn train_step_is_the_tape_loop_in_one_call() -> Result<()> {
    let (x, y) = separable(16);
    set_seed(9);
    let a = mlp();
    a.build(&InputSpec::new([1, 2]))?;
    let mut opt_a = Adam::new(0.01);
    set_seed(9);
    let b = mlp();
    b.build(&InputSpec::new([1, 2]))?;
    let mut opt_b = Adam::new(0.01);
    for _ in 0..3 {
        let loss_a = train_step(&a, &mut opt_a, || Ok(cross_entropy(&y, &a.call(&x, Mode::Train)?)?))?;
        let tape = GradientTape::new();
        let loss_b = tape.record(|| cross_entropy(&y, &b.call(&x, Mode::Train)?))?;
        let vars = b.trainable_variables();
        opt_b.apply_gradients(&tape.gradient(&loss_b, &vars)?, &vars)?;
        assert_eq!(loss_a.to_scalar::<f32>()?.to_bits(), loss_b.to_scalar::<f32>()?.to_bits());
    }
    assert_eq!(bits(&a), bits(&b));
    // A layer error comes out as the layer error it was.
    let bad = Tensor::zeros([2, 5], tapegrad_tensor::DType::F32, &Device::Cpu)?;
    let err = train_step(&a, &mut opt_a, || Ok(cross_entropy(&y, &a.call(&bad, Mode::Train)?)?)).unwrap_err();
    assert!(matches!(err, Error::Layer { .. } | Error::InLayer { .. }), "{err:?}");
    Ok(())
}

#[test]
fn the_device_metrics_equal_the_host_ones() -> Result<()> {
    use tapegrad_layers::metrics::{Accuracy, MeanIoU};
    use tapegrad_layers::training::{Metric, SparseMeanIoU};
    // Per-pixel scores [2, 3, 3, 4] and targets [2, 3, 3], over two batches.
    let mut device_iou = SparseMeanIoU::new(4)?;
    let mut host_iou = MeanIoU::new(4)?;
    let mut device_acc = SparseCategoricalAccuracy::new();
    let mut host_acc = Accuracy::new();
    for batch in 0..2u64 {
        let scores: Vec<f32> = (0..72u64).map(|i| ((i * 7919 + batch * 31) % 101) as f32 / 101.0).collect();
        let targets: Vec<i64> = (0..18u64).map(|i| ((i * 13 + batch) % 4) as i64).collect();
        let p = Tensor::from_vec(scores, [2, 3, 3, 4], &Device::Cpu)?;
        let y = Tensor::from_vec(targets, [2, 3, 3], &Device::Cpu)?;
        device_iou.update_state(&y, &p)?;
        host_iou.update_state(&y, &p)?;
        device_acc.update_state(&y, &p)?;
        host_acc.update_state(&y.reshape([18])?, &p.reshape([18, 4])?)?;
    }
    assert_eq!(device_iou.result()?, host_iou.result());
    assert_eq!(device_acc.result()?, host_acc.result());
    assert!(device_iou.result()? > 0.0);
    device_iou.reset_state();
    assert_eq!(device_iou.result()?, 0.0);
    let err = device_iou
        .update_state(
            &Tensor::zeros([2], tapegrad_tensor::DType::I64, &Device::Cpu)?,
            &Tensor::zeros([2, 3], tapegrad_tensor::DType::F32, &Device::Cpu)?,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 classes") && err.contains("[2, 3]"), "{err}");
    Ok(())
}

#[test]
fn an_unusable_device_is_an_error_not_a_panic() -> Result<()> {
    if cfg!(feature = "cuda") {
        return Ok(()); // a GPU may be there: nothing to check
    }
    let (x, y) = separable(8);
    let model = mlp();
    let mut trainer = Trainer::new(&model, Adam::new(0.01), cross_entropy).device(Device::Cuda(0));
    let err = trainer.fit(&TensorDataset::new(x, y, 4)?, FitOptions::new().verbose(0)).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("cuda"), "{err}");
    Ok(())
}

#[test]
fn the_device_mean_iou_ignores_a_class_as_the_host_one() -> Result<()> {
    use tapegrad_layers::metrics::MeanIoU;
    use tapegrad_layers::training::{Metric, SparseMeanIoU};
    // Every pixel is predicted right, except that labels 2 and 255 (a void label outside
    // the classes) are predicted as 0.
    let batch = |targets: Vec<i64>| -> Result<(Tensor, Tensor)> {
        let scores: Vec<f32> = targets
            .iter()
            .map(|&t| if t == 2 || t == 255 { 0 } else { t })
            .flat_map(|c| (0..4).map(move |k| if k == c { 1.0 } else { 0.0 }))
            .collect();
        Ok((Tensor::from_vec(targets, [2, 3, 3], &Device::Cpu)?, Tensor::from_vec(scores, [2, 3, 3, 4], &Device::Cpu)?))
    };
    let (y, p) = batch((0..18u64).map(|i| (i % 4) as i64).collect())?;
    let mut device = SparseMeanIoU::new(4)?.ignore_class(2);
    device.update_state(&y, &p)?;
    // With class 2 ignored every counted pixel is right; without, label 2 costs classes 0 and 2.
    assert_eq!(device.result()?, 1.0);
    let mut plain = SparseMeanIoU::new(4)?;
    plain.update_state(&y, &p)?;
    assert!(plain.result()? < 1.0, "{}", plain.result()?);
    let mut host = MeanIoU::new(4)?.ignore_class(2);
    host.update_state(&y, &p)?;
    assert_eq!(device.result()?, host.result());

    // A void label: ignored, it counts nowhere; not ignored, it is an error.
    let (y, p) = batch((0..18u64).map(|i| if i % 5 == 0 { 255 } else { (i % 4) as i64 }).collect())?;
    let mut device = SparseMeanIoU::new(4)?.ignore_class(255);
    let mut host = MeanIoU::new(4)?.ignore_class(255);
    device.update_state(&y, &p)?;
    host.update_state(&y, &p)?;
    assert_eq!(device.result()?, host.result());
    assert!(SparseMeanIoU::new(4)?.update_state(&y, &p).is_err());
    Ok(())
}
