//! [`Trainer`]: Keras' `compile` + `fit` / `evaluate` / `predict` over any [`Layer`].

use super::bn_warning::batch_norm_warning;
use super::callback::{Callback, CallbackContext, FitParams};
use super::callbacks::ProgressLogger;
use super::data_parallel::{broadcast_model, data_parallel_step_with};
use super::graphed::{GraphedStep, GraphedStepStats};
use super::metric::LossMean;
use super::step::train_step_with;
use super::{DataSource, FitOptions, History, Logs, Metric};
use crate::mixed_precision::full_precision;
use crate::optimizers::Optimizer;
use crate::{Error, Layer, Mode, Result};
use std::cell::Cell;
use std::sync::Arc;
use tapegrad_distributed::DataParallel;
use tapegrad_tensor::{Device, Tensor, Variable};

/// A loss: `(targets, predictions) -> scalar`, the losses module's argument order.
type LossFn<'m> = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + 'm>;

/// A model with its optimizer, loss and metrics (Keras' compiled model):
///
/// ```
/// use tapegrad_layers::training::{FitOptions, SparseCategoricalAccuracy, TensorDataset, Trainer};
/// use tapegrad_layers::{losses, optimizers::Adam, Activation, Dense, Sequential};
/// use tapegrad_tensor::{Device, Tensor, Variable};
/// # fn main() -> tapegrad_layers::Result<()> {
/// let model = Sequential::new().add(Dense::new(8)).add(Activation::relu()).add(Dense::new(2));
/// let x = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0, 0.9, 0.1, 0.2, 0.8], [4, 2], &Device::Cpu)?;
/// let y = Tensor::from_vec(vec![1i64, 0, 0, 1], [4], &Device::Cpu)?;
/// let data = TensorDataset::new(x, y, 2)?;
///
/// let mut trainer = Trainer::new(&model, Adam::new(1e-2), |y, p| losses::sparse_categorical_crossentropy(y, p, true))
///     .metric(SparseCategoricalAccuracy::new());
/// let history = trainer.fit(&data, FitOptions::new().epochs(3).verbose(0))?;
/// assert_eq!(history.get("loss").unwrap().len(), 3);
/// let scores = trainer.evaluate(&data)?; // loss, accuracy
/// # let _ = scores;
/// # Ok(())
/// # }
/// ```
///
/// Batches go to the trainer's device ([`Trainer::device`], the CPU by default); the
/// model is built by its first call, as in a hand-written loop.
pub struct Trainer<'m> {
    model: &'m dyn Layer,
    optimizer: Box<dyn Optimizer + 'm>,
    loss: LossFn<'m>,
    metrics: Vec<Box<dyn Metric + 'm>>,
    device: Device,
    warned_batch_norm: bool,
    graph_stats: Option<GraphedStepStats>,
    data_parallel: Option<Arc<DataParallel>>,
}

impl<'m> Trainer<'m> {
    /// `model` trained by `optimizer` on `loss(targets, predictions)` (any function
    /// returning a scalar, with the tensor crate's or this crate's errors).
    pub fn new<E: Into<Error>>(
        model: &'m dyn Layer,
        optimizer: impl Optimizer + 'm,
        loss: impl Fn(&Tensor, &Tensor) -> std::result::Result<Tensor, E> + 'm,
    ) -> Self {
        Trainer {
            model,
            optimizer: Box::new(optimizer),
            loss: Box::new(move |y, p| loss(y, p).map_err(Into::into)),
            metrics: Vec::new(),
            device: Device::Cpu,
            warned_batch_norm: false,
            graph_stats: None,
            data_parallel: None,
        }
    }

    /// Trains as one rank of `dp`: before the first step the model is built on the first
    /// batch and rank 0's variables are broadcast ([`broadcast_model`](super::broadcast_model)),
    /// and every step applies gradients averaged over the ranks. Give each rank its shard of
    /// the data (`LoaderConfig::shard`); the logged loss and metrics are this rank's, and
    /// callbacks that write files (checkpoints, logs) belong on rank 0 only.
    pub fn data_parallel(mut self, dp: Arc<DataParallel>) -> Self {
        self.data_parallel = Some(dp);
        self
    }

    /// Adds a metric, logged under its name (and `val_<name>` for validation).
    pub fn metric(mut self, metric: impl Metric + 'm) -> Self {
        self.metrics.push(Box::new(metric));
        self
    }

    /// Runs on `device` (batches are moved there).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The model.
    pub fn model(&self) -> &'m dyn Layer {
        self.model
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// How the training steps of the last `fit` with `FitOptions::cuda_graph` ran (eager,
    /// captured, replayed); None if no such `fit` ran.
    pub fn graph_stats(&self) -> Option<GraphedStepStats> {
        self.graph_stats
    }

    /// The optimizer, to change it or load its state.
    pub fn optimizer_mut(&mut self) -> &mut (dyn Optimizer + 'm) {
        self.optimizer.as_mut()
    }

    /// Trains for `options.epochs` (from `options.initial_epoch`), validating after every
    /// epoch when asked, and returns every epoch's logs. Stops early when a callback asks
    /// (the `History` then ends there); fails with [`Error::NonFiniteLoss`] (naming epoch
    /// and step) at the first NaN or infinite training loss unless a callback
    /// (`TerminateOnNaN`) asked to stop at that step.
    pub fn fit(&mut self, train: &dyn DataSource, options: FitOptions<'_>) -> Result<History> {
        options.validate()?;
        if options.cuda_graph && self.data_parallel.is_some() {
            return Err(Error::Invalid(
                "fit: FitOptions::cuda_graph cannot be combined with Trainer::data_parallel (the gradient \
                 all-reduce runs outside a captured step); drop one of them"
                    .into(),
            ));
        }
        let FitOptions { epochs, steps_per_epoch, initial_epoch, validation_data, validation_split, verbose, .. } =
            options;
        let split = validation_split.map(|f| train.split(f)).transpose()?;
        let (train, validation): (&dyn DataSource, Option<&dyn DataSource>) = match &split {
            Some((t, v)) => (t.as_ref(), Some(v.as_ref())),
            None => (train, validation_data),
        };
        let batches = train.num_batches() as u64;
        if batches == 0 {
            return Err(Error::Invalid("fit: the training data has no batches".into()));
        }
        // Checked before the first epoch: an empty validation set would log a NaN val_loss.
        if validation.is_some_and(|v| v.num_batches() == 0) {
            return Err(Error::Invalid("fit: the validation data has no batches".into()));
        }
        let steps = steps_per_epoch.map_or(batches, |s| s.min(batches));
        let sync_every = options.sync_every.unwrap_or(if self.device.is_cpu() { 1 } else { 25 });
        let mut callbacks = options.callbacks;
        if verbose > 0 {
            callbacks.push(Box::new(ProgressLogger::new(verbose)));
        }

        let params = FitParams { epochs, initial_epoch, steps, verbose };
        let Trainer { model, optimizer, loss, metrics, device, warned_batch_norm, graph_stats, data_parallel } = self;
        let model: &dyn Layer = *model;
        let loss: &LossFn<'_> = loss;
        let mut ctx = CallbackContext::new(model, optimizer.as_mut(), params);
        let mut history = History::default();
        each(&mut callbacks, |cb| cb.on_train_begin(&mut ctx))?;
        let mut last_logs = Logs::new();
        let listing_checked = Cell::new(false);
        let forward = |x: &Tensor, y: &Tensor| -> Result<(Tensor, Tensor)> {
            // The first step also checks that the model lists every variable it uses (one
            // it did not would never be trained or saved).
            let predictions = if listing_checked.get() {
                model.call(x, Mode::Train)?
            } else {
                let (predictions, read) = Variable::reads_during(|| model.call(x, Mode::Train));
                let predictions = predictions?;
                crate::layer::check_all_listed(model, &read)?;
                listing_checked.set(true);
                predictions
            };
            // Model outputs go to f32 before the loss and the metrics (mixed precision).
            let predictions = full_precision(&predictions)?;
            Ok((loss(y, &predictions)?, predictions))
        };
        let mut graphed = options.cuda_graph.then(|| GraphedStep::new().verbose(verbose > 0));
        let mut replicas_synced = false;
        for epoch in initial_epoch..epochs {
            each(&mut callbacks, |cb| cb.on_epoch_begin(&mut ctx, epoch))?;
            let mut loss_mean = LossMean::default();
            metrics.iter_mut().for_each(|m| m.reset_state());
            let mut non_finite = None;
            let mut last_step = 0;
            for (step, batch) in train.batches(epoch, device)?.take(steps as usize).enumerate() {
                let step = step as u64;
                last_step = step;
                let (x, y) = batch?;
                each(&mut callbacks, |cb| cb.on_train_batch_begin(&mut ctx, step))?;
                if let (Some(dp), false) = (data_parallel.as_ref(), replicas_synced) {
                    broadcast_model(dp, model, &x)?;
                    replicas_synced = true;
                }
                let (batch_loss, predictions) = match (data_parallel.as_ref(), graphed.as_mut()) {
                    (Some(dp), _) => data_parallel_step_with(dp, model, &mut *ctx.optimizer, || forward(&x, &y))?,
                    (None, Some(step)) => step.run(model, &mut *ctx.optimizer, &x, &y, forward)?,
                    (None, None) => train_step_with(model, &mut *ctx.optimizer, || forward(&x, &y))?,
                };
                *graph_stats = graphed.as_ref().map(GraphedStep::stats);
                loss_mean.update(&batch_loss, y.elem_count())?;
                for m in metrics.iter_mut() {
                    m.update_state(&y, &predictions)?;
                }
                let mut logs = Logs::new();
                logs.insert("batch", step as f64);
                logs.insert("size", x.dims().first().copied().unwrap_or(0) as f64);
                if step.is_multiple_of(sync_every) {
                    let value = batch_loss.to_vec_f64()?[0];
                    logs.insert("loss", value);
                    if !value.is_finite() {
                        non_finite = Some((step, value));
                    }
                }
                each(&mut callbacks, |cb| cb.on_train_batch_end(&mut ctx, step, &logs))?;
                if non_finite.is_some() || ctx.stop_requested() {
                    break;
                }
            }
            if let (Some((step, value)), false) = (non_finite, ctx.stop_requested()) {
                return Err(Error::NonFiniteLoss { epoch, step, value });
            }
            let mut logs = Logs::new();
            let epoch_loss = loss_mean.result()?;
            if !epoch_loss.is_finite() && !ctx.stop_requested() {
                // A GPU run reads the loss every few steps; the epoch's sum shows the rest.
                return Err(Error::NonFiniteLoss { epoch, step: last_step, value: epoch_loss });
            }
            logs.insert("loss", epoch_loss);
            for m in metrics.iter() {
                logs.insert(m.name(), m.result()?);
            }
            if let Some(val) = validation {
                if !*warned_batch_norm {
                    *warned_batch_norm = true;
                    let uncounted = graphed.as_ref().map_or(0, GraphedStep::uncounted_batch_norm_updates);
                    if let Some(warning) = batch_norm_warning(model, uncounted) {
                        eprintln!("{warning}");
                        history.warnings.push(warning);
                    }
                }
                each(&mut callbacks, |cb| cb.on_test_begin(&mut ctx))?;
                let val_logs = evaluate_on(model, loss, metrics, *device, val)?;
                each(&mut callbacks, |cb| cb.on_test_end(&mut ctx, &val_logs))?;
                logs.extend(&val_logs.prefixed("val_"));
            }
            logs.insert("lr", ctx.optimizer.learning_rate());
            each(&mut callbacks, |cb| cb.on_epoch_end(&mut ctx, epoch, &logs))?;
            history.push(epoch, &logs);
            last_logs = logs;
            if ctx.stop_requested() {
                history.stopped_epoch = Some(epoch);
                break;
            }
        }
        each(&mut callbacks, |cb| cb.on_train_end(&mut ctx, &last_logs))?;
        Ok(history)
    }

    /// The loss and metrics over every batch of `data` (its epoch 0) in inference mode:
    /// `loss`, then each metric by name.
    pub fn evaluate(&mut self, data: &dyn DataSource) -> Result<Logs> {
        evaluate_on(self.model, &self.loss, &mut self.metrics, self.device, data)
    }

    /// The model's outputs over every batch of `data` (its epoch 0; targets ignored), in
    /// inference mode, concatenated along the first axis on the trainer's device.
    pub fn predict(&self, data: &dyn DataSource) -> Result<Tensor> {
        let mut outputs = Vec::with_capacity(data.num_batches());
        for batch in data.batches(0, &self.device)? {
            let (x, _) = batch?;
            outputs.push(self.model.call(&x, Mode::Infer)?);
        }
        concat(outputs, "predict: the data has no batches")
    }

    /// The model's outputs for `inputs` (examples along the first axis), run in batches of
    /// `batch_size` in inference mode.
    pub fn predict_tensor(&self, inputs: &Tensor, batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(Error::Invalid("predict_tensor: batch_size must be at least 1, got 0".into()));
        }
        let n = inputs.dims().first().copied().unwrap_or(0);
        let mut outputs = Vec::with_capacity(n.div_ceil(batch_size));
        for start in (0..n).step_by(batch_size) {
            let x = inputs.narrow(0, start, batch_size.min(n - start))?.to_device(&self.device)?;
            outputs.push(self.model.call(&x, Mode::Infer)?);
        }
        concat(outputs, "predict_tensor: the input has no examples")
    }
}

/// Calls `hook` on every callback in order, stopping at the first error.
fn each(callbacks: &mut [Box<dyn Callback + '_>], mut hook: impl FnMut(&mut dyn Callback) -> Result<()>) -> Result<()> {
    callbacks.iter_mut().try_for_each(|cb| hook(cb.as_mut()))
}

/// The outputs of every batch along axis 0.
fn concat(outputs: Vec<Tensor>, empty: &str) -> Result<Tensor> {
    match outputs.len() {
        0 => Err(Error::Invalid(empty.into())),
        1 => Ok(outputs.into_iter().next().expect("one output")),
        _ => Ok(Tensor::concat(&outputs.iter().collect::<Vec<_>>(), 0)?),
    }
}

/// The mean loss and the metrics over `data` in inference mode; resets the metrics first
/// and leaves them holding this pass.
fn evaluate_on(
    model: &dyn Layer,
    loss: &LossFn<'_>,
    metrics: &mut [Box<dyn Metric + '_>],
    device: Device,
    data: &dyn DataSource,
) -> Result<Logs> {
    // No batches would give a NaN loss that reads like a diverged model.
    if data.num_batches() == 0 {
        return Err(Error::Invalid("evaluate: the data has no batches".into()));
    }
    let mut loss_mean = LossMean::default();
    metrics.iter_mut().for_each(|m| m.reset_state());
    for batch in data.batches(0, &device)? {
        let (x, y) = batch?;
        let predictions = full_precision(&model.call(&x, Mode::Infer)?)?;
        loss_mean.update(&loss(&y, &predictions)?, y.elem_count())?;
        for m in metrics.iter_mut() {
            m.update_state(&y, &predictions)?;
        }
    }
    let mut logs = Logs::new();
    logs.insert("loss", loss_mean.result()?);
    for m in metrics.iter() {
        logs.insert(m.name(), m.result()?);
    }
    Ok(logs)
}
