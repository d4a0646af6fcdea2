//! `Trainer::fit` against the hand-written GradientTape loop it replaces, on the same
//! model (a small CNN: conv-BN-ReLU blocks, pooling, a dense head), the same data (1,024
//! synthetic 32x32 images, batches of 64, 16 steps an epoch) and the same optimizer
//! (Adam). Both keep the loss and correct-count sums on the device and read them at the
//! epoch's end; the loop reads the loss every step on the CPU, as `fit` does. Each round
//! trains one epoch with each, in alternating order; the figure is the ratio of the
//! median epoch times (fit / loop: 1.00 is "no overhead").
//!
//! Run: `cargo bench --bench fit_loop` (threads: `RAYON_NUM_THREADS`; rounds:
//! `FIT_LOOP_ROUNDS`, default 5).

use std::time::Instant;
use tapegrad::data::{synthetic, DataLoader, LoaderConfig};
use tapegrad::layers::losses::CrossEntropy;
use tapegrad::layers::metrics::correct_count_tensor;
use tapegrad::layers::optimizers::{Adam, Optimizer};
use tapegrad::layers::random::set_seed;
use tapegrad::layers::training::{FitOptions, SparseCategoricalAccuracy, Trainer};
use tapegrad::layers::Mode;
use tapegrad::layers::{
    Activation, BatchNormalization, Conv2D, Dense, Flatten, InputSpec, Layer, MaxPool2D, Padding, Sequential,
};
use tapegrad::{Device, GradientTape, Tensor};

fn model() -> Sequential {
    let block = |filters| {
        Sequential::new()
            .add(Conv2D::new(filters, 3).padding(Padding::Same).use_bias(false))
            .add(BatchNormalization::new())
            .add(Activation::relu())
    };
    let m = Sequential::new()
        .add(block(16))
        .add(MaxPool2D::new(2))
        .add(block(32))
        .add(MaxPool2D::new(2))
        .add(Flatten::new())
        .add(Dense::new(10));
    m.build(&InputSpec::new([1, 32, 32, 3])).expect("build");
    m
}

/// One epoch of the hand-written loop (the examples' loop before `fit`).
fn hand_epoch(model: &dyn Layer, optimizer: &mut Adam, loader: &DataLoader, epoch: u64) -> (f64, f64) {
    let loss_fn = CrossEntropy::from_logits();
    let mut sums: Option<(Tensor, Tensor)> = None;
    let mut seen = 0usize;
    for batch in loader.epoch(epoch).expect("epoch") {
        let (x, y) = batch.into_tensors(&Device::Cpu).expect("batch");
        let tape = GradientTape::new();
        let (loss, logits) = tape
            .record(|| {
                let logits = model.call(&x, Mode::Train)?;
                Ok((loss_fn.sparse(&y, &logits)?, logits))
            })
            .expect("forward");
        let variables = model.trainable_variables();
        let grads = tape.gradient(&loss, &variables).expect("gradient");
        optimizer.apply_gradients(&grads, &variables).expect("step");
        assert!(loss.to_scalar::<f32>().expect("loss").is_finite());
        let n = y.elem_count();
        let batch_sums = (loss.mul_scalar(n as f64).expect("sum"), correct_count_tensor(&y, &logits).expect("count"));
        sums = Some(match sums.take() {
            Some((l, k)) => (l.add(&batch_sums.0).expect("add"), k.add(&batch_sums.1).expect("add")),
            None => batch_sums,
        });
        seen += n;
    }
    let (l, k) = sums.expect("batches");
    (
        l.to_scalar::<f32>().expect("loss") as f64 / seen as f64,
        k.to_scalar::<i64>().expect("correct") as f64 / seen as f64,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: u64 = std::env::var("FIT_LOOP_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let loader =
        DataLoader::new(synthetic(1024, 10, 0).expect("data"), LoaderConfig::new(64).shuffle(1)).expect("loader");
    set_seed(3);
    let fit_model = model();
    set_seed(3);
    let loop_model = model();
    let loss_fn = CrossEntropy::from_logits();
    let mut trainer = Trainer::new(&fit_model, Adam::new(1e-3), move |y, p| loss_fn.sparse(y, p))
        .metric(SparseCategoricalAccuracy::new());
    let mut optimizer = Adam::new(1e-3);
    println!(
        "fit_loop: {} images, batch 64, {} steps an epoch, {} threads, {rounds} rounds (+1 warm-up)",
        loader.dataset().len(),
        loader.num_batches(),
        rayon::current_num_threads()
    );
    let (mut fit_times, mut loop_times) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let mut time_fit = || {
            let start = Instant::now();
            let history =
                trainer.fit(&loader, FitOptions::new().epochs(round + 1).initial_epoch(round).verbose(0)).expect("fit");
            (start.elapsed().as_secs_f64(), history.last("loss").unwrap_or(f64::NAN))
        };
        let mut time_loop = || {
            let start = Instant::now();
            let (loss, _) = hand_epoch(&loop_model, &mut optimizer, &loader, round);
            (start.elapsed().as_secs_f64(), loss)
        };
        // Alternate which goes first, so that neither always runs on a warmer cache.
        let ((f, fl), (l, ll)) = if round % 2 == 0 {
            let f = time_fit();
            (f, time_loop())
        } else {
            let l = time_loop();
            (time_fit(), l)
        };
        println!("round {round}: fit {f:.3} s (loss {fl:.4}), loop {l:.3} s (loss {ll:.4}), ratio {:.3}", f / l);
        if round > 0 {
            fit_times.push(f);
            loop_times.push(l);
        }
    }
    let (f, l) = (median(fit_times), median(loop_times));
    println!("median epoch: fit {f:.3} s, loop {l:.3} s, fit / loop = {:.3}", f / l);
}
