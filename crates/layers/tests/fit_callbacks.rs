//! The training callbacks: hook order, EarlyStopping (patience, min_delta, baseline,
//! restore_best_weights), ReduceLROnPlateau (the epoch of each reduction, cooldown,
//! min_lr), LearningRateScheduler, ModelCheckpoint (best and last files, resume, never a
//! non-finite state), CSVLogger and JsonlLogger contents, TerminateOnNaN, the progress
//! line, and bad callback options.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tapegrad_layers::checkpoint;
use tapegrad_layers::optimizers::{schedules::StepDecay, Adam, Optimizer, Sgd};
use tapegrad_layers::random::set_seed;
use tapegrad_layers::training::{
    CSVLogger, Callback, CallbackContext, EarlyStopping, FitOptions, JsonlLogger, LearningRateScheduler, Logs, Metric,
    ModelCheckpoint, MonitorMode, ProgressLogger, ReduceLROnPlateau, TensorDataset, TerminateOnNaN, Trainer,
};
use tapegrad_layers::{losses, Activation, Dense, InputSpec, Layer, Result, Sequential};
use tapegrad_tensor::{Device, Tensor};

fn cross_entropy(y: &Tensor, p: &Tensor) -> tapegrad_tensor::Result<Tensor> {
    losses::sparse_categorical_crossentropy(y, p, true)
}

fn mlp() -> Sequential {
    let model = Sequential::new().add(Dense::new(8)).add(Activation::relu()).add(Dense::new(2));
    model.build(&InputSpec::new([1, 2])).unwrap();
    model
}

/// 16 points, 4 batches of 4; `nan_at` puts a NaN into that example.
fn data(nan_at: Option<usize>) -> TensorDataset {
    let mut xs: Vec<f32> = (0..32).map(|i| ((i * 37 % 17) as f32 / 8.5) - 1.0).collect();
    if let Some(i) = nan_at {
        xs[2 * i] = f32::NAN;
    }
    let ys: Vec<i64> = xs.chunks(2).map(|p| i64::from(p[0] + p[1] > 0.0)).collect();
    TensorDataset::new(
        Tensor::from_vec(xs, [16, 2], &Device::Cpu).unwrap(),
        Tensor::from_vec(ys, [16], &Device::Cpu).unwrap(),
        4,
    )
    .unwrap()
}

/// A metric logged as `score` whose value at epoch `e` is `values[e]` (it counts the
/// resets `fit` makes at the start of every epoch; no validation in these runs).
struct Scripted {
    values: Vec<f64>,
    resets: Rc<Cell<usize>>,
}

impl Scripted {
    fn new(values: &[f64]) -> Self {
        Scripted { values: values.to_vec(), resets: Rc::new(Cell::new(0)) }
    }
}

impl Metric for Scripted {
    fn name(&self) -> &str {
        "score"
    }
    fn update_state(&mut self, _: &Tensor, _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn result(&self) -> Result<f64> {
        let i = self.resets.get().saturating_sub(1).min(self.values.len() - 1);
        Ok(self.values[i])
    }
    fn reset_state(&mut self) {
        self.resets.set(self.resets.get() + 1);
    }
}

/// The values of every variable at the end of every epoch.
#[derive(Default)]
struct Snapshots(Vec<Vec<Vec<f32>>>);

fn values(model: &dyn Layer) -> Vec<Vec<f32>> {
    model.variables().iter().map(|v| v.value_untracked().to_vec::<f32>().unwrap()).collect()
}

impl Callback for Snapshots {
    fn on_epoch_end(&mut self, ctx: &mut CallbackContext<'_>, _: u64, _: &Logs) -> Result<()> {
        self.0.push(values(ctx.model));
        Ok(())
    }
}

fn trainer<'m>(model: &'m Sequential, scores: &[f64]) -> Trainer<'m> {
    Trainer::new(model, Adam::new(0.01), cross_entropy).metric(Scripted::new(scores))
}

#[test]
fn hooks_run_in_keras_order() -> Result<()> {
    struct Recorder(Rc<RefCell<Vec<String>>>);
    impl Callback for Recorder {
        fn on_train_begin(&mut self, _: &mut CallbackContext<'_>) -> Result<()> {
            self.0.borrow_mut().push("train_begin".into());
            Ok(())
        }
        fn on_train_end(&mut self, _: &mut CallbackContext<'_>, logs: &Logs) -> Result<()> {
            self.0.borrow_mut().push(format!("train_end {}", logs.keys().collect::<Vec<_>>().join(",")));
            Ok(())
        }
        fn on_epoch_begin(&mut self, _: &mut CallbackContext<'_>, e: u64) -> Result<()> {
            self.0.borrow_mut().push(format!("epoch_begin {e}"));
            Ok(())
        }
        fn on_epoch_end(&mut self, _: &mut CallbackContext<'_>, e: u64, logs: &Logs) -> Result<()> {
            self.0.borrow_mut().push(format!("epoch_end {e} {}", logs.keys().collect::<Vec<_>>().join(",")));
            Ok(())
        }
        fn on_train_batch_begin(&mut self, _: &mut CallbackContext<'_>, b: u64) -> Result<()> {
            self.0.borrow_mut().push(format!("batch_begin {b}"));
            Ok(())
        }
        fn on_train_batch_end(&mut self, _: &mut CallbackContext<'_>, b: u64, logs: &Logs) -> Result<()> {
            self.0.borrow_mut().push(format!("batch_end {b} {}", logs.keys().collect::<Vec<_>>().join(",")));
            Ok(())
        }
        fn on_test_begin(&mut self, _: &mut CallbackContext<'_>) -> Result<()> {
            self.0.borrow_mut().push("test_begin".into());
            Ok(())
        }
        fn on_test_end(&mut self, _: &mut CallbackContext<'_>, logs: &Logs) -> Result<()> {
            self.0.borrow_mut().push(format!("test_end {}", logs.keys().collect::<Vec<_>>().join(",")));
            Ok(())
        }
    }
    set_seed(1);
    let model = mlp();
    let events = Rc::new(RefCell::new(Vec::new()));
    let train = data(None);
    let mut t = Trainer::new(&model, Adam::new(0.01), cross_entropy)
        .metric(tapegrad_layers::training::SparseCategoricalAccuracy::new());
    t.fit(
        &train,
        FitOptions::new()
            .epochs(2)
            .steps_per_epoch(2)
            .validation_data(&train)
            .verbose(0)
            .callback(Recorder(events.clone())),
    )?;
    let epoch = |e: u64| {
        vec![
            format!("epoch_begin {e}"),
            "batch_begin 0".into(),
            "batch_end 0 batch,size,loss".into(),
            "batch_begin 1".into(),
            "batch_end 1 batch,size,loss".into(),
            "test_begin".into(),
            "test_end loss,accuracy".into(),
            format!("epoch_end {e} loss,accuracy,val_loss,val_accuracy,lr"),
        ]
    };
    let mut expected = vec!["train_begin".to_string()];
    expected.extend(epoch(0));
    expected.extend(epoch(1));
    expected.push("train_end loss,accuracy,val_loss,val_accuracy,lr".into());
    assert_eq!(*events.borrow(), expected);
    Ok(())
}

#[test]
fn early_stopping_waits_patience_epochs_and_restores_the_best_weights() -> Result<()> {
    set_seed(2);
    let model = mlp();
    let mut stop = EarlyStopping::new().monitor("score").patience(2).restore_best_weights(true);
    let mut snapshots = Snapshots::default();
    let history = trainer(&model, &[1.0, 0.9, 0.95, 0.92, 0.5, 0.4])
        .fit(&data(None), FitOptions::new().epochs(6).verbose(0).callback(&mut snapshots).callback(&mut stop))?;
    // Best at epoch 1; epochs 2 and 3 do not improve: the wait reaches 2 at epoch 3.
    assert_eq!(history.epoch, [0, 1, 2, 3]);
    assert_eq!((stop.best_epoch, stop.stopped_epoch, history.stopped_epoch), (Some(1), Some(3), Some(3)));
    assert_eq!(values(&model), snapshots.0[1], "the variables of epoch 1 are back");
    assert_ne!(snapshots.0[3], snapshots.0[1]);

    // min_delta: 0.95 is not 0.1 better than 1.0, so patience 1 stops at epoch 1.
    let model = mlp();
    let mut stop = EarlyStopping::new().monitor("score").patience(1).min_delta(0.1);
    let history = trainer(&model, &[1.0, 0.95, 0.5])
        .fit(&data(None), FitOptions::new().epochs(3).verbose(0).callback(&mut stop))?;
    assert_eq!(history.epoch, [0, 1]);

    // baseline: improvements that do not beat it do not reset the wait, so the first
    // epoch without improvement stops (at epoch 2; epoch 3 without a baseline).
    for (baseline, stopped) in [(Some(0.5), 2), (None, 3)] {
        let model = mlp();
        let mut stop = EarlyStopping::new().monitor("score").patience(2);
        if let Some(b) = baseline {
            stop = stop.baseline(b);
        }
        trainer(&model, &[1.0, 0.9, 0.9, 0.9, 0.9])
            .fit(&data(None), FitOptions::new().epochs(5).verbose(0).callback(&mut stop))?;
        assert_eq!(stop.stopped_epoch, Some(stopped), "baseline {baseline:?}");
    }

    // mode max on an accuracy-like name (auto) keeps going while it rises.
    let model = mlp();
    let mut stop = EarlyStopping::new().monitor("score").mode(MonitorMode::Max).patience(0);
    let history = trainer(&model, &[0.1, 0.2, 0.3, 0.2])
        .fit(&data(None), FitOptions::new().epochs(4).verbose(0).callback(&mut stop))?;
    assert_eq!(history.epoch, [0, 1, 2, 3]);
    assert_eq!(stop.stopped_epoch, Some(3));
    Ok(())
}

#[test]
fn reduce_lr_on_plateau_reduces_at_the_right_epochs() -> Result<()> {
    set_seed(3);
    let model = mlp();
    let mut plateau = ReduceLROnPlateau::new().monitor("score").factor(0.5).patience(2).cooldown(1).min_delta(0.0);
    let flat = [1.0; 7];
    let history = Trainer::new(&model, Sgd::new(0.1), cross_entropy)
        .metric(Scripted::new(&flat))
        .fit(&data(None), FitOptions::new().epochs(7).verbose(0).callback(&mut plateau))?;
    // Epoch 0 sets the best; waits 1, 2 -> reduce at epoch 2; cooldown 1 at epoch 3
    // (wait restarts at 1 there, as Keras), wait 2 -> reduce at epoch 4; again at 6.
    assert_eq!(plateau.reductions, [(2, 0.05), (4, 0.025), (6, 0.0125)]);
    // The logged lr is the one the epoch trained with.
    assert_eq!(history.get("lr").unwrap(), [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);

    // min_lr bounds the reductions; improvements reset the wait.
    let model = mlp();
    let mut plateau = ReduceLROnPlateau::new().monitor("score").factor(0.1).patience(1).min_lr(0.02);
    let mut t = Trainer::new(&model, Sgd::new(0.1), cross_entropy).metric(Scripted::new(&[3.0, 2.0, 2.5, 2.5, 2.5]));
    t.fit(&data(None), FitOptions::new().epochs(5).verbose(0).callback(&mut plateau))?;
    assert_eq!(plateau.reductions, [(2, 0.02)]);
    assert_eq!(t.optimizer().learning_rate(), 0.02);
    Ok(())
}

#[test]
fn learning_rate_scheduler_sets_the_rate_of_every_epoch() -> Result<()> {
    set_seed(4);
    let model = mlp();
    let mut scheduler = LearningRateScheduler::from_schedule(StepDecay { initial: 0.1, factor: 0.5, step_size: 2 });
    let history = Trainer::new(&model, Sgd::new(1.0), cross_entropy)
        .fit(&data(None), FitOptions::new().epochs(5).verbose(0).callback(&mut scheduler))?;
    assert_eq!(history.get("lr").unwrap(), [0.1, 0.1, 0.05, 0.05, 0.025]);
    // Keras' form: a function of (epoch, current rate).
    let model = mlp();
    let history = Trainer::new(&model, Sgd::new(0.1), cross_entropy).fit(
        &data(None),
        FitOptions::new()
            .epochs(3)
            .verbose(0)
            .callback(LearningRateScheduler::new(|e, lr| if e == 0 { lr } else { lr * 0.5 })),
    )?;
    assert_eq!(history.get("lr").unwrap(), [0.1, 0.05, 0.025]);
    let model = mlp();
    let err = Trainer::new(&model, Sgd::new(0.1), cross_entropy)
        .fit(&data(None), FitOptions::new().verbose(0).callback(LearningRateScheduler::new(|_, _| f64::NAN)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("LearningRateScheduler") && err.contains("NaN") && err.contains("epoch 0"), "{err}");
    Ok(())
}

#[test]
fn model_checkpoint_keeps_the_best_and_the_last_and_resumes_exactly() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let (best, last) = (dir.path().join("best.safetensors"), dir.path().join("run/last.safetensors"));
    set_seed(5);
    let model = mlp();
    let train = data(None).shuffle(7);
    let mut checkpoint = ModelCheckpoint::new(&best).monitor("score").save_best_only(true).last(&last);
    let mut snapshots = Snapshots::default();
    trainer(&model, &[3.0, 1.0, 2.0])
        .fit(&train, FitOptions::new().epochs(3).verbose(0).callback(&mut snapshots).callback(&mut checkpoint))?;
    assert_eq!(checkpoint.saved_epochs, [0, 1]);
    assert_eq!(checkpoint.best(), Some(1.0));
    assert_eq!(checkpoint::info(&best)?.step, 2, "epochs completed at the best epoch");
    assert_eq!(checkpoint::info(&last)?.step, 3);
    set_seed(99);
    let restored = mlp();
    checkpoint::load(&best, &restored, None)?;
    assert_eq!(values(&restored), snapshots.0[1]);

    // Resume: 2 epochs, then a fresh process (model and optimizer) from `last` to epoch 4,
    // equals 4 uninterrupted epochs bit for bit.
    let run = |epochs: u64, initial: u64, model: &Sequential, optimizer: Adam| -> Result<()> {
        let mut t = Trainer::new(model, optimizer, cross_entropy);
        t.fit(
            &train,
            FitOptions::new().epochs(epochs).initial_epoch(initial).verbose(0).callback(ModelCheckpoint::new(&last)),
        )?;
        Ok(())
    };
    set_seed(6);
    let straight = mlp();
    run(4, 0, &straight, Adam::new(0.01))?;
    set_seed(6);
    let first = mlp();
    run(2, 0, &first, Adam::new(0.01))?;
    set_seed(123); // a different initialisation, overwritten by the checkpoint
    let resumed = mlp();
    let mut optimizer = Adam::new(0.01);
    let initial = ModelCheckpoint::resume(&last, &resumed, &mut optimizer)?;
    assert_eq!((initial, optimizer.iterations()), (2, 8));
    run(4, initial, &resumed, optimizer)?;
    assert_eq!(values(&resumed), values(&straight));
    assert_eq!(ModelCheckpoint::resume(dir.path().join("absent"), &resumed, &mut Adam::new(0.01))?, 0);
    Ok(())
}

#[test]
fn terminate_on_nan_stops_cleanly_and_no_checkpoint_holds_the_nan() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("every.safetensors");
    let jsonl = dir.path().join("log.jsonl");
    set_seed(7);
    let model = mlp();
    let train = data(Some(9)); // batch 2
    let mut terminate = TerminateOnNaN::new();
    let history = Trainer::new(&model, Adam::new(0.01), cross_entropy).fit(
        &train,
        FitOptions::new()
            .epochs(3)
            .verbose(0)
            .callback(&mut terminate)
            .callback(ModelCheckpoint::new(&path))
            .callback(JsonlLogger::new(&jsonl)),
    )?;
    assert_eq!(terminate.stopped_at, Some((0, 2)));
    assert_eq!((history.epoch.clone(), history.stopped_epoch), (vec![0], Some(0)));
    assert!(history.last("loss").unwrap().is_nan());
    assert!(!path.exists(), "the NaN state was not saved");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert!(text.starts_with("{\"epoch\": 0, \"loss\": null, \"lr\": 0.01}"), "{text}");
    Ok(())
}

#[test]
fn csv_and_jsonl_loggers_write_every_epoch() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let (csv, jsonl) = (dir.path().join("logs/train.csv"), dir.path().join("train.jsonl"));
    set_seed(8);
    let model = mlp();
    let mut t = trainer(&model, &[0.5, 0.25, 0.125]);
    let history = t.fit(
        &data(None),
        FitOptions::new().epochs(2).verbose(0).callback(CSVLogger::new(&csv)).callback(JsonlLogger::new(&jsonl)),
    )?;
    let loss = history.get("loss").unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let expected = format!("epoch,loss,lr,score\n0,{},0.01,0.5\n1,{},0.01,0.25\n", loss[0], loss[1]);
    assert_eq!(text, expected);
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let expected = format!(
        "{{\"epoch\": 0, \"loss\": {}, \"score\": 0.5, \"lr\": 0.01}}\n{{\"epoch\": 1, \"loss\": {}, \"score\": 0.25, \"lr\": 0.01}}\n",
        loss[0], loss[1]
    );
    assert_eq!(text, expected);
    // Resuming with append keeps the rows and the header.
    t.fit(
        &data(None),
        FitOptions::new().epochs(3).initial_epoch(2).verbose(0).callback(CSVLogger::new(&csv).append(true)),
    )?;
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("2,") && text.lines().last().unwrap().ends_with(",0.125"),
        "{text}"
    );
    Ok(())
}

#[test]
fn the_progress_line_reads_as_keras() {
    let logs: Logs =
        [("loss", std::f64::consts::LN_2), ("accuracy", 0.5), ("val_loss", 0.7), ("val_accuracy", 0.25), ("lr", 1e-3)]
            .into_iter()
            .collect();
    assert_eq!(
        ProgressLogger::epoch_line(0, 3, 12.3, &logs),
        "Epoch 1/3 - 12s - loss: 0.6931 - accuracy: 0.5000 - val_loss: 0.7000 - val_accuracy: 0.2500"
    );
    assert_eq!(ProgressLogger::epoch_line(2, 3, 0.25, &Logs::new()), "Epoch 3/3 - 250ms");
}

#[test]
fn bad_callback_options_are_errors_naming_them() {
    set_seed(9);
    let model = mlp();
    let cases: Vec<(Box<dyn Callback>, &[&str])> = vec![
        (Box::new(EarlyStopping::new().monitor("score").min_delta(-1.0)), &["EarlyStopping", "min_delta", "-1"]),
        (Box::new(EarlyStopping::new().monitor("score").baseline(f64::NAN)), &["EarlyStopping", "baseline", "NaN"]),
        (Box::new(ReduceLROnPlateau::new().monitor("score").factor(1.0)), &["ReduceLROnPlateau", "factor", "1"]),
        (Box::new(ReduceLROnPlateau::new().monitor("score").min_lr(-0.5)), &["ReduceLROnPlateau", "min_lr", "-0.5"]),
        (Box::new(EarlyStopping::new()), &["EarlyStopping", "\"val_loss\"", "available: loss, score, lr"]),
        (Box::new(ModelCheckpoint::new("unused").save_best_only(true)), &["ModelCheckpoint", "\"val_loss\""]),
    ];
    for (callback, expected) in cases {
        let err = trainer(&model, &[1.0])
            .fit(&data(None), FitOptions::new().verbose(0).callback(callback))
            .unwrap_err()
            .to_string();
        for e in expected {
            assert!(err.contains(e), "{e:?} not in {err:?}");
        }
    }
}
