//! Training steps replayed as a CUDA graph (`GraphedStep`, `FitOptions::cuda_graph`) against
//! the same steps run eagerly, on the same device from the same weights and batches: the
//! loss of every step, every variable (batch-norm moving statistics included) and the
//! optimizer's state must be equal bit for bit, for a small CNN with batch norm and for the
//! seed ResNet18 at a tiny batch, with the optimizer's update inside the graph (Adam, AdamW
//! and SGD with momentum, under a learning-rate schedule that changes every step) and
//! after it (an optimizer without graph support). The fallback cases (a partial last
//! batch, check_numerics, an op that reads the device on the host, Dropout's host-drawn
//! mask, the CPU) give their reason and train exactly as eager steps do.
//!
//! Without a usable GPU the tests print `SKIPPED <test>: <reason>` and pass; `REQUIRE_GPU=1`
//! turns that into a failure. In CI they run on the emulated GPU (scripts/cuda-emu), whose
//! graphs replay the recorded kernels.
#![cfg(feature = "cuda")]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapegrad::layers::models::ResNet;
use tapegrad::layers::optimizers::schedules::CosineDecay;
use tapegrad::layers::optimizers::{Adam, AdamW, LearningRate, Optimizer, Sgd, SlotTable};
use tapegrad::layers::training::{
    FitOptions, GraphedStep, GraphedStepStats, History, SparseCategoricalAccuracy, TensorDataset, Trainer,
};
use tapegrad::layers::{
    losses, Activation, BatchNormalization, Conv2D, Dense, Dropout, GlobalAveragePooling2D, InputSpec, Layer,
    MaxPool2D, Mode, Padding, Sequential,
};
use tapegrad::tensor::check_numerics;
use tapegrad::tensor::testing::cuda_or_skip;
use tapegrad::{DType, Device, Tensor};

fn small_cnn() -> Sequential {
    Sequential::new()
        .add(Conv2D::new(8, 3).padding(Padding::Same).use_bias(false))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(MaxPool2D::new(2))
        .add(Conv2D::new(8, 3).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(3))
}

/// A model made by `make` with the weights seed 7 gives, built for `input` on `device`.
fn built<M: Layer>(make: impl Fn() -> M, input: [usize; 4], device: Device) -> M {
    tapegrad::layers::random::set_seed(7);
    let model = make();
    model.build(&InputSpec::new(input).with_device(device)).expect("build");
    model
}

/// `sizes.len()` batches of images `[size, side, side, 3]` and labels in `0..classes`.
fn batches(sizes: &[usize], side: usize, classes: i64, seed: u64) -> Vec<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    sizes
        .iter()
        .map(|&n| {
            let x = Tensor::rand_uniform([n, side, side, 3], -1.0, 1.0, DType::F32, &Device::Cpu, &mut rng).unwrap();
            let labels: Vec<i64> = (0..n).map(|_| rng.random_range(0..classes)).collect();
            (x, Tensor::from_vec(labels, [n], &Device::Cpu).unwrap())
        })
        .collect()
}

/// The loss and outputs of one step (the seed's loss: sparse cross-entropy from logits).
fn seed_loss(model: &dyn Layer, x: &Tensor, y: &Tensor) -> tapegrad::layers::Result<(Tensor, Tensor)> {
    let logits = model.call(x, Mode::Train)?;
    Ok((losses::sparse_categorical_crossentropy(y, &logits, true)?, logits))
}

type StepFn = dyn Fn(&dyn Layer, &Tensor, &Tensor) -> tapegrad::layers::Result<(Tensor, Tensor)>;

/// Everything a run leaves: each step's loss bits, every variable's and every optimizer
/// slot's values (as bits, in the model's variable order).
struct Trace {
    losses: Vec<u32>,
    variables: Vec<(String, Vec<u32>)>,
    slots: Vec<Vec<Vec<u32>>>,
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

fn trace(model: &dyn Layer, optimizer: &dyn Optimizer, losses: Vec<u32>) -> Trace {
    let variables = model.variables();
    let slots = variables
        .iter()
        .filter(|v| v.trainable())
        .map(|v| {
            let slots = optimizer.slots().get(v).expect("a slot per trainable variable");
            slots.iter().map(|s| bits(s.as_ref().expect("slot"))).collect()
        })
        .collect();
    let variables = variables.iter().map(|v| (v.name().to_string(), bits(&v.value_untracked()))).collect();
    Trace { losses, variables, slots }
}

/// Makes the optimizer of a run.
type MakeOptimizer = dyn Fn() -> Box<dyn Optimizer>;

fn adam() -> Box<dyn Optimizer> {
    Box::new(Adam::new(0.01))
}

/// Trains `model` on `data` (moved to `device` per step), eagerly or through a
/// `GraphedStep`; returns the trace and the graphed step (when used).
fn train(
    model: &dyn Layer,
    data: &[(Tensor, Tensor)],
    device: Device,
    graphed: Option<GraphedStep>,
    step: &StepFn,
    make_optimizer: &MakeOptimizer,
) -> (Trace, Option<GraphedStep>) {
    let mut optimizer = make_optimizer();
    let optimizer = optimizer.as_mut();
    let mut graphed = graphed;
    let mut losses = Vec::new();
    for (x, y) in data {
        let (x, y) = (x.to_device(&device).unwrap(), y.to_device(&device).unwrap());
        let (loss, _) = match graphed.as_mut() {
            Some(g) => {
                g.run(model, optimizer, &x, &y, |x: &Tensor, y: &Tensor| step(model, x, y)).expect("graphed step")
            }
            None => tapegrad::layers::training::train_step_with(model, optimizer, || step(model, &x, &y))
                .expect("eager step"),
        };
        losses.push(loss.to_scalar::<f32>().unwrap().to_bits());
    }
    assert_eq!(optimizer.iterations(), data.len() as u64, "every step counted");
    (trace(model, optimizer, losses), graphed)
}

/// Eager and graphed runs of `make`'s model on `data`: equal traces; the graphed step's
/// statistics and last fallback reason.
fn compare<M: Layer>(
    make: impl Fn() -> M,
    input: [usize; 4],
    data: &[(Tensor, Tensor)],
    device: Device,
    step: &StepFn,
) -> (GraphedStepStats, Option<String>) {
    compare_with(make, input, data, device, step, &adam).0
}

/// [`compare`] with the optimizer `make_optimizer` gives; also whether the graph held the
/// update.
fn compare_with<M: Layer>(
    make: impl Fn() -> M,
    input: [usize; 4],
    data: &[(Tensor, Tensor)],
    device: Device,
    step: &StepFn,
    make_optimizer: &MakeOptimizer,
) -> ((GraphedStepStats, Option<String>), bool) {
    let eager_model = built(&make, input, device);
    let (eager, _) = train(&eager_model, data, device, None, step, make_optimizer);
    let graph_model = built(&make, input, device);
    let (graphed, g) = train(&graph_model, data, device, Some(GraphedStep::new()), step, make_optimizer);
    let g = g.unwrap();
    assert_eq!(graphed.losses, eager.losses, "losses, step by step");
    for ((name, a), (_, b)) in graphed.variables.iter().zip(&eager.variables) {
        assert!(a == b, "variable {name} differs");
    }
    assert_eq!(graphed.slots, eager.slots, "optimizer slots");
    assert_eq!(graphed.variables.len(), eager.variables.len());
    ((g.stats(), g.fallback_reason().map(str::to_string)), g.updates_in_graph())
}

fn stats(eager_steps: u64, captures: u64, replays: u64) -> GraphedStepStats {
    GraphedStepStats { eager_steps, captures, replays }
}

#[test]
fn replayed_small_cnn_steps_equal_eager_steps_bit_for_bit() {
    let Some((_gpu, gpu)) = cuda_or_skip("replayed_small_cnn_steps_equal_eager_steps_bit_for_bit") else { return };
    let data = batches(&[8; 6], 8, 3, 1);
    let ((s, reason), in_graph) = compare_with(small_cnn, [8, 8, 8, 3], &data, gpu, &seed_loss, &adam);
    assert_eq!(s, stats(2, 1, 4), "two warm-up steps, capture + replay, then replays");
    assert_eq!(reason, None);
    assert!(in_graph, "Adam's update is captured with the step");
}

/// A learning rate that differs at every step of these tests (cosine decay over 20 steps).
fn schedule() -> LearningRate {
    CosineDecay::new(0.05, 20).into()
}

#[test]
fn captured_updates_with_a_schedule_equal_eager_steps_bit_for_bit() {
    let Some((_gpu, gpu)) = cuda_or_skip("captured_updates_with_a_schedule_equal_eager_steps_bit_for_bit") else {
        return;
    };
    let data = batches(&[8; 7], 8, 3, 11);
    fn adam_schedule() -> Box<dyn Optimizer> {
        Box::new(Adam::new(schedule()))
    }
    fn adamw_schedule() -> Box<dyn Optimizer> {
        Box::new(AdamW::new(schedule()).weight_decay(0.1))
    }
    fn sgd_momentum() -> Box<dyn Optimizer> {
        Box::new(Sgd::new(schedule()).momentum(0.9).weight_decay(1e-3))
    }
    fn sgd_nesterov() -> Box<dyn Optimizer> {
        Box::new(Sgd::new(schedule()).momentum(0.9).nesterov(true))
    }
    let optimizers: [(&str, &MakeOptimizer); 4] = [
        ("adam", &adam_schedule),
        ("adamw", &adamw_schedule),
        ("sgd momentum", &sgd_momentum),
        ("sgd nesterov", &sgd_nesterov),
    ];
    for (name, make_optimizer) in optimizers {
        let ((s, reason), in_graph) = compare_with(small_cnn, [8, 8, 8, 3], &data, gpu, &seed_loss, make_optimizer);
        assert_eq!(s, stats(2, 1, 5), "{name}");
        assert_eq!(reason, None, "{name}");
        assert!(in_graph, "{name}: the update is in the graph");
    }
}

/// Trains `small_cnn` (seed 7) on `data` on `gpu`, eagerly or through `graphed`, starting
/// with `optimizer`; `before(i, optimizer)` runs before step `i` (to swap or edit the
/// optimizer). Returns the model, the optimizer and each step's loss bits.
fn small_cnn_steps(
    data: &[(Tensor, Tensor)],
    gpu: Device,
    mut graphed: Option<&mut GraphedStep>,
    mut optimizer: Box<dyn Optimizer>,
    before: impl Fn(usize, &mut Box<dyn Optimizer>),
) -> (Sequential, Box<dyn Optimizer>, Vec<u32>) {
    let model = built(small_cnn, [8, 8, 8, 3], gpu);
    let mut losses = Vec::new();
    for (i, (x, y)) in data.iter().enumerate() {
        before(i, &mut optimizer);
        let (x, y) = (x.to_device(&gpu).unwrap(), y.to_device(&gpu).unwrap());
        let step = |x: &Tensor, y: &Tensor| seed_loss(&model, x, y);
        let (loss, _) = match graphed.as_deref_mut() {
            Some(g) => g.run(&model, optimizer.as_mut(), &x, &y, step).unwrap(),
            None => tapegrad::layers::training::train_step_with(&model, optimizer.as_mut(), || step(&x, &y)).unwrap(),
        };
        losses.push(loss.to_scalar::<f32>().unwrap().to_bits());
    }
    (model, optimizer, losses)
}

#[test]
fn a_new_optimizer_after_a_capture_is_captured_again_not_replayed_stale() {
    let Some((_gpu, gpu)) = cuda_or_skip("a_new_optimizer_after_a_capture_is_captured_again_not_replayed_stale") else {
        return;
    };
    // Plain SGD keeps no slots, so only the step buffer tells the old optimizer from the
    // new one: a replay of the old graph would read the dropped buffer's learning rate.
    let data = batches(&[8; 9], 8, 3, 17);
    let run = |graphed: Option<&mut GraphedStep>| {
        let (model, _, losses) = small_cnn_steps(&data, gpu, graphed, Box::new(Sgd::new(0.05)), |i, optimizer| {
            if i == 4 {
                *optimizer = Box::new(Sgd::new(0.2));
                optimizer.set_iterations(4);
            }
        });
        let variables: Vec<Vec<u32>> = model.variables().iter().map(|v| bits(&v.value_untracked())).collect();
        (losses, variables)
    };
    let eager = run(None);
    let mut g = GraphedStep::new().verbose(false);
    let graphed = run(Some(&mut g));
    assert_eq!(graphed.0, eager.0, "losses, step by step");
    assert!(graphed.1 == eager.1, "variables");
    // Steps 0-1 warm up, 2 captures and replays, 3 replays; the new optimizer at step 4
    // sends the step back to the start (4 eager, 5-6 warm up), 7 captures again, 7-8 replay.
    assert_eq!(g.stats(), stats(5, 2, 4));
}

#[test]
fn slots_made_by_the_arming_step_are_the_graphs_buffers_and_follow_replacements() {
    let Some((_gpu, gpu)) =
        cuda_or_skip("slots_made_by_the_arming_step_are_the_graphs_buffers_and_follow_replacements")
    else {
        return;
    };
    // The optimizer's state is cleared after the warm-up step, so every slot is made by the
    // arming step; after the capture each slot is replaced by half its value (as a loaded
    // checkpoint would). The replays must update the replacements: an untracked slot would
    // leave the graph updating the old tensor while the optimizer holds the new one.
    let data = batches(&[8; 6], 8, 3, 23);
    let run = |graphed: Option<&mut GraphedStep>| {
        let (model, optimizer, losses) =
            small_cnn_steps(&data, gpu, graphed, Box::new(Adam::new(0.01)), |i, optimizer| {
                if i == 1 {
                    optimizer.slots_mut().clear();
                }
                if i == 4 {
                    let count = optimizer.slot_names().len();
                    let replaced: Vec<_> = optimizer
                        .slots()
                        .iter()
                        .flat_map(|(v, slots)| {
                            let v = v.clone();
                            slots.iter().enumerate().map(move |(k, s)| (v.clone(), k, s.clone().expect("slot")))
                        })
                        .collect();
                    for (variable, k, value) in replaced {
                        optimizer.slots_mut().set(&variable, count, k, value.mul_scalar(0.5).unwrap());
                    }
                }
            });
        trace(&model, optimizer.as_ref(), losses)
    };
    let eager = run(None);
    let mut g = GraphedStep::new().verbose(false);
    let graphed = run(Some(&mut g));
    assert_eq!(g.stats(), stats(2, 1, 4), "steps 0-1 eager, 2 captured, 2-5 replayed");
    assert_eq!(graphed.losses, eager.losses, "losses, step by step");
    assert_eq!(graphed.slots, eager.slots, "optimizer slots");
    for ((name, a), (_, b)) in graphed.variables.iter().zip(&eager.variables) {
        assert!(a == b, "variable {name} differs");
    }
}

/// An optimizer without CUDA-graph support (the trait's defaults): Adam behind a wrapper.
struct HostOnly(Adam);

impl Optimizer for HostOnly {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn apply_gradients(
        &mut self,
        grads: &[Option<Tensor>],
        variables: &[tapegrad::Variable],
    ) -> tapegrad::layers::Result<()> {
        self.0.apply_gradients(grads, variables)
    }
    fn iterations(&self) -> u64 {
        self.0.iterations()
    }
    fn set_iterations(&mut self, iterations: u64) {
        self.0.set_iterations(iterations)
    }
    fn learning_rate(&self) -> f64 {
        self.0.learning_rate()
    }
    fn set_learning_rate(&mut self, learning_rate: LearningRate) {
        self.0.set_learning_rate(learning_rate)
    }
    fn slot_names(&self) -> &'static [&'static str] {
        self.0.slot_names()
    }
    fn slots(&self) -> &SlotTable {
        self.0.slots()
    }
    fn slots_mut(&mut self) -> &mut SlotTable {
        self.0.slots_mut()
    }
}

#[test]
fn an_optimizer_without_graph_support_updates_after_each_replay() {
    let Some((_gpu, gpu)) = cuda_or_skip("an_optimizer_without_graph_support_updates_after_each_replay") else {
        return;
    };
    let data = batches(&[8; 5], 8, 3, 12);
    fn host_only() -> Box<dyn Optimizer> {
        Box::new(HostOnly(Adam::new(schedule())))
    }
    let ((s, reason), in_graph) = compare_with(small_cnn, [8, 8, 8, 3], &data, gpu, &seed_loss, &host_only);
    assert_eq!(s, stats(2, 1, 3));
    assert_eq!(reason, None);
    assert!(!in_graph, "the update runs eagerly after the replay");
}

#[test]
fn a_failed_capture_leaves_dropout_drawing_what_eager_steps_draw() {
    let Some((_gpu, gpu)) = cuda_or_skip("a_failed_capture_leaves_dropout_drawing_what_eager_steps_draw") else {
        return;
    };
    // Dropout draws its mask on the host and uploads it: the capture fails, after the
    // forward pass drew one mask. The eager steps after it must draw what an eager run
    // draws, or the two runs' losses differ.
    let with_dropout = || {
        Sequential::new()
            .add(Conv2D::new(8, 3).padding(Padding::Same))
            .add(BatchNormalization::new())
            .add(Activation::relu())
            .add(Dropout::new(0.5))
            .add(GlobalAveragePooling2D::new())
            .add(Dense::new(3))
    };
    let data = batches(&[8; 5], 8, 3, 13);
    let (s, reason) = compare(with_dropout, [8, 8, 8, 3], &data, gpu, &seed_loss);
    assert_eq!(s, stats(5, 0, 0));
    assert!(reason.expect("a reason").contains("capture failed"));
}

#[test]
fn replayed_resnet18_steps_equal_eager_steps_bit_for_bit() {
    let Some((_gpu, gpu)) = cuda_or_skip("replayed_resnet18_steps_equal_eager_steps_bit_for_bit") else { return };
    let data = batches(&[2; 4], 32, 100, 2);
    let (s, reason) = compare(|| ResNet::seed([2, 2, 2, 2], 100), [2, 32, 32, 3], &data, gpu, &seed_loss);
    assert_eq!(s, stats(2, 1, 2));
    assert_eq!(reason, None);
}

#[test]
fn a_partial_batch_runs_eagerly_and_the_next_full_one_replays() {
    let Some((_gpu, gpu)) = cuda_or_skip("a_partial_batch_runs_eagerly_and_the_next_full_one_replays") else {
        return;
    };
    let data = batches(&[8, 8, 8, 8, 3], 8, 3, 3);
    let (s, reason) = compare(small_cnn, [8, 8, 8, 3], &data, gpu, &seed_loss);
    assert_eq!(s, stats(3, 1, 2));
    let reason = reason.expect("the partial batch's reason");
    assert!(reason.contains("x [3, 8, 8, 3]") && reason.contains("captured one (x [8, 8, 8, 3]"), "{reason}");
    // A partial batch between the warm-up and the capture: the capture waits for a full one.
    let data = batches(&[8, 8, 3, 8, 8], 8, 3, 4);
    let (s, reason) = compare(small_cnn, [8, 8, 8, 3], &data, gpu, &seed_loss);
    assert_eq!(s, stats(3, 1, 2));
    assert_eq!(reason, None, "the last step replayed");
}

#[test]
fn an_op_that_reads_the_device_on_the_host_falls_back_with_its_reason() {
    let Some((_gpu, gpu)) = cuda_or_skip("an_op_that_reads_the_device_on_the_host_falls_back_with_its_reason") else {
        return;
    };
    // gather reads its indices on the host: such a step cannot be captured.
    let ids = Tensor::from_vec(vec![1i64, 0], [2], &gpu).unwrap();
    let with_gather = move |model: &dyn Layer, x: &Tensor, y: &Tensor| {
        let (loss, logits) = seed_loss(model, x, y)?;
        let picked = logits.gather(&ids)?;
        Ok((loss.add(&picked.sum_all()?.mul_scalar(1e-3)?)?, logits))
    };
    let data = batches(&[8; 4], 8, 3, 5);
    let (s, reason) = compare(small_cnn, [8, 8, 8, 3], &data, gpu, &with_gather);
    assert_eq!(s, stats(4, 0, 0));
    let reason = reason.expect("a reason");
    assert!(reason.contains("capture failed") && reason.contains("back to the host"), "{reason}");
}

#[test]
fn check_numerics_and_the_cpu_run_eagerly_with_their_reason() {
    let Some((_gpu, gpu)) = cuda_or_skip("check_numerics_and_the_cpu_run_eagerly_with_their_reason") else { return };
    let data = batches(&[8; 3], 8, 3, 6);
    check_numerics::enable();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        compare(small_cnn, [8, 8, 8, 3], &data, gpu, &seed_loss)
    }));
    check_numerics::disable();
    let (s, reason) = result.expect("check_numerics run");
    assert_eq!(s, stats(3, 0, 0));
    assert!(reason.unwrap().contains("check_numerics is on"));
    let (s, reason) = compare(small_cnn, [8, 8, 8, 3], &data, Device::Cpu, &seed_loss);
    assert_eq!(s, stats(3, 0, 0));
    assert!(reason.unwrap().contains("cpu"));
}

fn fit(device: Device, cuda_graph: bool) -> (Sequential, History, Option<GraphedStepStats>) {
    let model = built(small_cnn, [16, 8, 8, 3], device);
    let (x, y) = {
        let all = batches(&[60], 8, 3, 7);
        all.into_iter().next().unwrap()
    };
    let (vx, vy) = batches(&[20], 8, 3, 8).into_iter().next().unwrap();
    // 60 examples in batches of 16: the last batch of each epoch is partial.
    let train = TensorDataset::new(x, y, 16).unwrap().shuffle(3);
    let val = TensorDataset::new(vx, vy, 16).unwrap();
    let loss = |y: &Tensor, p: &Tensor| losses::sparse_categorical_crossentropy(y, p, true);
    let mut trainer =
        Trainer::new(&model, Adam::new(0.01), loss).metric(SparseCategoricalAccuracy::new()).device(device);
    let options = FitOptions::new().epochs(2).validation_data(&val).verbose(0).sync_every(1).cuda_graph(cuda_graph);
    let history = trainer.fit(&train, options).unwrap();
    let stats = trainer.graph_stats();
    drop(trainer);
    (model, history, stats)
}

#[test]
fn fit_with_cuda_graph_equals_fit_without() {
    let Some((_gpu, gpu)) = cuda_or_skip("fit_with_cuda_graph_equals_fit_without") else { return };
    let (eager_model, eager, none) = fit(gpu, false);
    let (graph_model, graphed, stats) = fit(gpu, true);
    assert_eq!(none, None);
    // Per epoch: 3 full batches and a partial one; the first epoch warms up (2 steps) and
    // captures.
    assert_eq!(stats, Some(GraphedStepStats { eager_steps: 4, captures: 1, replays: 4 }));
    for key in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(graphed.get(key), eager.get(key), "{key}");
    }
    for (a, b) in graph_model.variables().iter().zip(eager_model.variables()) {
        assert_eq!(bits(&a.value_untracked()), bits(&b.value_untracked()), "{}", a.name());
    }
}
