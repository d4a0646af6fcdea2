//! f16 mixed precision with dynamic loss scaling through a CUDA graph (`GraphedStep` with a
//! `LossScaleOptimizer`): the skip decision, the scale's halving and growth and the
//! applied-step count live on the device, and replayed steps must equal eager ones bit for
//! bit: every step's loss, loss scale and iteration count, and in the end every variable
//! and every Adam moment. The initial scale overflows f16 (the first steps are skipped
//! until it is small enough), the scale grows every 3 good steps (and overflows again), and
//! one batch holds an Inf in the middle: that step must be skipped the same way. The table
//! of step values holds 4 steps, so the host refills it several times (one run reads the
//! state after every step, the other only at the end).
//!
//! Without a usable GPU the tests print `SKIPPED <test>: <reason>` and pass; `REQUIRE_GPU=1`
//! turns that into a failure. In CI they run on the emulated GPU (scripts/cuda-emu).
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapegrad::layers::mixed_precision::{full_precision, LossScaleOptimizer, LossScaleState, Policy};
use tapegrad::layers::optimizers::schedules::CosineDecay;
use tapegrad::layers::optimizers::{Adam, Optimizer, Sgd};
use tapegrad::layers::training::{train_step_with, GraphedStep};
use tapegrad::layers::{losses, Dense, InputSpec, Layer, Mode, Sequential};
use tapegrad::tensor::testing::cuda_or_skip;
use tapegrad::{Device, Tensor};

/// Steps of every run; batch `INF_STEP` holds an Inf.
const STEPS: usize = 24;
const INF_STEP: usize = 13;
/// The batch that `an_eager_step_between_replays_continues_the_device_state` cuts short
/// (after the first steps, which the initial scale's overflows skip).
const PARTIAL: usize = 16;

fn model(device: Device) -> Sequential {
    tapegrad::layers::random::set_seed(5);
    let model =
        Sequential::new().add(Dense::new(8)).add(Dense::new(8)).add(Dense::new(3)).dtype_policy(Policy::MIXED_FLOAT16);
    model.build(&InputSpec::new([4, 6]).with_device(device)).expect("build");
    model
}

fn batches(device: Device) -> Vec<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(8);
    (0..STEPS)
        .map(|i| {
            let mut x: Vec<f32> = (0..24).map(|_| rng.random_range(-1.0..1.0)).collect();
            if i == INF_STEP {
                x[5] = f32::INFINITY;
            }
            let y: Vec<i64> = (0..4).map(|_| rng.random_range(0..3)).collect();
            (Tensor::from_vec(x, [4, 6], &device).unwrap(), Tensor::from_vec(y, [4], &device).unwrap())
        })
        .collect()
}

fn step(model: &Sequential, x: &Tensor, y: &Tensor) -> tapegrad::layers::Result<(Tensor, Tensor)> {
    let logits = full_precision(&model.call(x, Mode::Train)?)?;
    Ok((losses::sparse_categorical_crossentropy(y, &logits, true)?, logits))
}

/// 2^25 overflows f16 in the backward pass; growth every 3 good steps; a table of 4 steps.
fn adam() -> LossScaleOptimizer<Box<dyn Optimizer>> {
    let inner: Box<dyn Optimizer> = Box::new(Adam::new(CosineDecay::new(0.01, STEPS as u64)));
    LossScaleOptimizer::new(inner).initial_scale(2f64.powi(25)).dynamic_growth_steps(3).graph_sync_steps(4)
}

fn sgd() -> LossScaleOptimizer<Box<dyn Optimizer>> {
    let inner: Box<dyn Optimizer> = Box::new(Sgd::new(CosineDecay::new(0.05, STEPS as u64)).momentum(0.9));
    LossScaleOptimizer::new(inner).initial_scale(2f64.powi(25)).dynamic_growth_steps(3).graph_sync_steps(4)
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().into_iter().map(f64::to_bits).collect()
}

/// What a run leaves: per step the loss's bits and (when read) the optimizer's scale
/// state and iteration count; in the end every variable and every slot, as bits.
#[derive(Debug, PartialEq)]
struct Trace {
    losses: Vec<u32>,
    states: Vec<(LossScaleState, u64)>,
    end: (LossScaleState, u64),
    variables: Vec<Vec<u64>>,
    slots: Vec<Vec<Vec<u64>>>,
}

/// Trains a fresh model on the batches: eagerly (`graphed` None) or through `graphed`,
/// reading the optimizer's state after every step when `read_each_step`.
fn run_all(
    device: Device,
    make: &dyn Fn() -> LossScaleOptimizer<Box<dyn Optimizer>>,
    graphed: Option<&mut GraphedStep>,
    read_each_step: bool,
) -> Trace {
    let model = model(device);
    let mut optimizer = make();
    let mut graphed = graphed;
    let (mut losses, mut states) = (Vec::new(), Vec::new());
    for (x, y) in batches(device) {
        let (loss, _) = match graphed.as_deref_mut() {
            Some(g) => g.run(&model, &mut optimizer, &x, &y, |x, y| step(&model, x, y)).expect("graphed step"),
            None => train_step_with(&model, &mut optimizer, || step(&model, &x, &y)).expect("eager step"),
        };
        losses.push(loss.to_scalar::<f32>().unwrap().to_bits());
        if read_each_step {
            states.push((optimizer.loss_scale().unwrap(), optimizer.iterations()));
        }
    }
    let end = (optimizer.loss_scale().unwrap(), optimizer.iterations());
    let trainable = model.trainable_variables();
    let slots = trainable
        .iter()
        .map(|v| optimizer.slots().get(v).expect("slots").iter().map(|s| bits(s.as_ref().expect("slot"))).collect())
        .collect();
    let variables = model.variables().iter().map(|v| bits(&v.value_untracked())).collect();
    Trace { losses, states, end, variables, slots }
}

fn check(make: &dyn Fn() -> LossScaleOptimizer<Box<dyn Optimizer>>, test: &str) {
    let Some((_gpu, gpu)) = cuda_or_skip(test) else { return };
    let eager = run_all(gpu, make, None, true);
    // The run exercises what it must: skips at the start (overflow) and at the Inf batch,
    // growth of the scale, and most steps applied.
    let applied: Vec<u64> = eager.states.iter().map(|s| s.1).collect();
    assert_eq!(applied[0], 0, "the first step overflows f16 and is skipped");
    assert_eq!(applied[INF_STEP], applied[INF_STEP - 1], "the Inf batch is skipped");
    assert!(eager.end.1 >= 4 && eager.end.1 < STEPS as u64 - 1, "applied {}", eager.end.1);
    let grew = eager.states.windows(2).any(|w| w[1].0.scale > w[0].0.scale);
    assert!(grew, "the scale grows after 3 good steps: {:?}", eager.states);

    // Read after every step: each read brings the host up to date and refills the table.
    let mut g = GraphedStep::new();
    let graphed = run_all(gpu, make, Some(&mut g), true);
    assert_eq!(g.fallback_reason(), None);
    assert!(g.updates_in_graph(), "the loss-scaled update is captured");
    // Eager until a step is applied (the optimizer has no state to capture before), then
    // one eager arming step, then the capture.
    let first_applied = applied.iter().position(|&n| n > 0).expect("a step is applied") as u64;
    assert_eq!((g.stats().eager_steps, g.stats().captures), (first_applied + 2, 1), "{:?}", g.stats());
    assert_eq!(graphed, eager, "graphed steps, read after each, against eager ones");

    // Read only at the end: the device decides the replayed steps alone, the host refilling the
    // 4-step table as it runs out.
    let mut g = GraphedStep::new();
    let quiet = run_all(gpu, make, Some(&mut g), false);
    assert_eq!(g.stats().replays, STEPS as u64 - first_applied - 2);
    assert_eq!(quiet.losses, eager.losses, "losses");
    assert_eq!(quiet.end, eager.end, "loss scale and iterations");
    assert_eq!(quiet.variables, eager.variables, "variables");
    assert_eq!(quiet.slots, eager.slots, "slots");
}

#[test]
fn loss_scaled_adam_steps_replay_bit_for_bit_with_skips_and_growth() {
    check(&adam, "loss_scaled_adam_steps_replay_bit_for_bit_with_skips_and_growth");
}

#[test]
fn loss_scaled_sgd_steps_replay_bit_for_bit_with_skips_and_growth() {
    check(&sgd, "loss_scaled_sgd_steps_replay_bit_for_bit_with_skips_and_growth");
}

/// A partial batch in the middle runs eagerly from the device's state, and the replays
/// after it continue from the eager step's: equal to an all-eager run.
#[test]
fn an_eager_step_between_replays_continues_the_device_state() {
    let Some((_gpu, gpu)) = cuda_or_skip("an_eager_step_between_replays_continues_the_device_state") else { return };
    let data = batches(gpu);
    let run = |graphed: Option<&mut GraphedStep>| {
        let model = model(gpu);
        let mut optimizer = adam();
        let mut graphed = graphed;
        let mut losses = Vec::new();
        for (i, (x, y)) in data.iter().enumerate() {
            // Batch PARTIAL is cut to 3 rows: a graphed step runs it eagerly.
            let (x, y) = if i == PARTIAL {
                (x.narrow(0, 0, 3).unwrap(), y.narrow(0, 0, 3).unwrap())
            } else {
                (x.clone(), y.clone())
            };
            let (loss, _) = match graphed.as_deref_mut() {
                Some(g) => g.run(&model, &mut optimizer, &x, &y, |x, y| step(&model, x, y)).expect("graphed step"),
                None => train_step_with(&model, &mut optimizer, || step(&model, &x, &y)).expect("eager step"),
            };
            losses.push(loss.to_scalar::<f32>().unwrap().to_bits());
        }
        let variables: Vec<Vec<u64>> = model.variables().iter().map(|v| bits(&v.value_untracked())).collect();
        (losses, optimizer.loss_scale().unwrap(), optimizer.iterations(), variables)
    };
    let eager = run(None);
    let mut g = GraphedStep::new().verbose(false);
    let graphed = run(Some(&mut g));
    // Eager until the first applied step, one arming step, and the partial batch.
    let first_applied = run_all(gpu, &adam, None, true).states.iter().position(|s| s.1 > 0).expect("a step is applied");
    assert!(first_applied + 2 < PARTIAL, "the capture (step {}) comes before the partial batch", first_applied + 2);
    assert_eq!(g.stats().eager_steps, first_applied as u64 + 3, "{:?}", g.stats());
    assert_eq!(graphed, eager);
}
