//! Mixed precision (Keras' dtype policies and LossScaleOptimizer), through the public API:
//! a bf16 training step against the f32 one, learning in bf16, dynamic loss scaling under
//! injected overflow, the policy's plumbing, and the loss-scale state in checkpoints.
//!
//! Every model here carries its own policy (`Sequential::dtype_policy` or a layer's), so
//! that the tests do not depend on the process-wide global policy, which only
//! `global_policy_applies_to_layers_without_their_own` sets (and resets).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tapegrad_layers::checkpoint;
use tapegrad_layers::mixed_precision::{global_policy, set_global_policy, LossScaleOptimizer, LossScaleState, Policy};
use tapegrad_layers::models::ResNet;
use tapegrad_layers::optimizers::{Adam, Optimizer, Sgd};
use tapegrad_layers::training::{train_step, FitOptions, SparseCategoricalAccuracy, TensorDataset, Trainer};
use tapegrad_layers::{
    losses, random, Activation, BatchNormalization, Conv2D, Dense, Embedding, Error, GlobalAveragePooling2D, Layer,
    Mode, Padding, Result, Sequential,
};
use tapegrad_tensor::{DType, Device, GradientTape, Tensor, Variable};

/// Relative distance `|a - b| / |b|` (L2 norms) of two equally long vectors.
fn relative_distance(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-30)
}

/// The small CNN of these tests: conv, batch norm, ReLU, global pooling, dense, under `policy`.
fn small_cnn(policy: Policy, classes: usize) -> Sequential {
    Sequential::new()
        .add(Conv2D::new(8, 3).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(Conv2D::new(8, 3).padding(Padding::Same).strides(2))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(classes))
        .dtype_policy(policy)
}

/// Noisy 8x8 RGB images whose class is the brightest quadrant (4 classes).
fn quadrant_images(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.4).unwrap();
    let (mut pixels, mut labels) = (Vec::with_capacity(n * 8 * 8 * 3), Vec::with_capacity(n));
    for _ in 0..n {
        let class = rng.random_range(0..4usize);
        for y in 0..8 {
            for x in 0..8 {
                let quadrant = (y / 4) * 2 + x / 4;
                for _ in 0..3 {
                    let signal = if quadrant == class { 1.0 } else { 0.0 };
                    pixels.push((signal + noise.sample(&mut rng)) as f32);
                }
            }
        }
        labels.push(class as i64);
    }
    (
        Tensor::from_vec(pixels, [n, 8, 8, 3], &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, [n], &Device::Cpu).unwrap(),
    )
}

fn values(variables: &[Variable]) -> Vec<f64> {
    variables.iter().flat_map(|v| v.value_untracked().to_vec_f64().unwrap()).collect()
}

/// One SGD step of the same CNN (same initial weights, same batch) in f32 and under
/// "mixed_bfloat16": the loss and the step's weight update agree within bf16's precision.
///
/// bf16 keeps 8 significant bits (a relative rounding error of at most 2^-9 = 0.2% per
/// value); inputs, weights and activations are each rounded, and the gradient comes back
/// through rounded values, with heavy cancellation behind batch norm (the conv biases'
/// true gradient is 0). Measured on this model and 20 seeds of data and weights
/// (2026-12-06, this CPU): the loss 0.006% to 0.054% apart; the update (relative L2 over
/// every trainable variable) 2.2% to 5.4%, 3.1% for the seed below; the moves of the
/// moving statistics 0.04% to 0.08%. The bounds are about 2x the worst of the 20 (the
/// update) to 4x (loss, statistics): 0.2%, 10% and 0.3%. A bf16 path that lost a factor
/// or a sign, or that normalised in bf16, misses them by far; an update equal to f32's
/// bit for bit would mean nothing ran in bf16.
#[test]
fn bf16_training_step_matches_f32_within_tolerance() -> Result<()> {
    let (x, y) = quadrant_images(32, 7);
    let mut losses_and_updates = Vec::new();
    for policy in [Policy::FLOAT32, Policy::MIXED_BFLOAT16] {
        random::set_seed(42);
        let model = small_cnn(policy, 4);
        model.call(&x, Mode::Infer)?; // builds, from the same draws for both policies
        let before = values(&model.trainable_variables());
        let stats_before = values(&model.non_trainable_variables());
        let mut optimizer = Sgd::new(0.1);
        let loss = train_step(&model, &mut optimizer, || {
            Ok(losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true)?)
        })?;
        assert_eq!(loss.dtype(), DType::F32, "{policy}: the loss is f32");
        let after = values(&model.trainable_variables());
        let update: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        // How far the moving statistics moved (their initial values would hide a difference).
        let stats_after = values(&model.non_trainable_variables());
        let stats: Vec<f64> = stats_after.iter().zip(&stats_before).map(|(a, b)| a - b).collect();
        losses_and_updates.push((loss.to_scalar::<f32>()? as f64, update, stats));
    }
    let (loss32, update32, stats32) = &losses_and_updates[0];
    let (loss16, update16, stats16) = &losses_and_updates[1];
    let loss_gap = (loss16 - loss32).abs() / loss32.abs();
    let update_gap = relative_distance(update16, update32);
    let stats_gap = relative_distance(stats16, stats32);
    eprintln!("bf16 vs f32: loss {loss_gap:.2e}, update {update_gap:.2e}, moving statistics {stats_gap:.2e}");
    assert!(loss_gap < 2e-3, "loss {loss16} (bf16) vs {loss32} (f32): {loss_gap:.2e} apart");
    assert!(update_gap < 1e-1, "the weight updates are {update_gap:.2e} apart (relative L2)");
    assert!(stats_gap < 3e-3, "the moving statistics are {stats_gap:.2e} apart (relative L2)");
    // Not equal either: the bf16 model really computed in bf16.
    assert!(update_gap > 0.0, "the bf16 update equals the f32 one bit for bit: nothing ran in bf16");
    Ok(())
}

/// `fit` under "mixed_bfloat16" learns the quadrant task: the loss falls and the
/// accuracy ends far above chance (25%).
#[test]
fn bf16_model_learns_synthetic_data() -> Result<()> {
    random::set_seed(3);
    let (x, y) = quadrant_images(256, 11);
    let model = small_cnn(Policy::MIXED_BFLOAT16, 4);
    let data = TensorDataset::new(x, y, 32)?;
    let mut trainer = Trainer::new(&model, Adam::new(1e-2), |y, p| losses::sparse_categorical_crossentropy(y, p, true))
        .metric(SparseCategoricalAccuracy::new());
    let history = trainer.fit(&data, FitOptions::new().epochs(6).verbose(0))?;
    let loss = history.get("loss").unwrap();
    let accuracy = history.get("accuracy").unwrap();
    eprintln!("bf16 fit: loss {loss:?}, accuracy {accuracy:?}");
    assert!(loss.last().unwrap() < &(loss[0] * 0.5), "the loss did not fall enough: {loss:?}");
    assert!(*accuracy.last().unwrap() > 0.8, "accuracy {accuracy:?} (chance is 0.25)");
    for v in model.variables() {
        assert_eq!(v.value_untracked().dtype(), DType::F32, "{} stays f32", v.name());
    }
    Ok(())
}

/// `fit` with a `LossScaleOptimizer` under "mixed_float16": it scales the loss and the
/// optimizer unscales, so the model learns as in bf16; the scale's counter advanced.
#[test]
fn fit_uses_the_loss_scale_optimizer_under_mixed_float16() -> Result<()> {
    random::set_seed(3);
    let (x, y) = quadrant_images(128, 13);
    let model = small_cnn(Policy::MIXED_FLOAT16, 4);
    let data = TensorDataset::new(x, y, 32)?;
    let optimizer = LossScaleOptimizer::new(Adam::new(1e-2)).dynamic_growth_steps(5);
    let mut trainer = Trainer::new(&model, optimizer, |y, p| losses::sparse_categorical_crossentropy(y, p, true))
        .metric(SparseCategoricalAccuracy::new());
    let history = trainer.fit(&data, FitOptions::new().epochs(6).verbose(0))?;
    let loss = history.get("loss").unwrap();
    let accuracy = history.get("accuracy").unwrap();
    assert!(loss.last().unwrap() < &(loss[0] * 0.6), "the loss did not fall enough: {loss:?}");
    assert!(*accuracy.last().unwrap() > 0.8, "accuracy {accuracy:?} (chance is 0.25)");
    // fit went through the loss-scale optimizer: its state moved from the initial one (2^15,
    // 0) and stays a power of two with a counter below the growth interval.
    let state = trainer.optimizer().loss_scale().expect("a loss-scale optimizer");
    eprintln!("mixed_float16 fit: {state:?}, {} of 24 steps applied", trainer.optimizer().iterations());
    assert_ne!(state, LossScaleState { scale: 32768.0, good_steps: 0 });
    assert!(state.scale.log2().fract() == 0.0 && state.good_steps < 5, "{state:?}");
    assert!(trainer.optimizer().iterations() > 12, "most steps were applied");
    Ok(())
}

/// The state an overflowing step must leave alone: every value and slot, and the count.
fn snapshot(optimizer: &dyn Optimizer, variables: &[Variable]) -> (Vec<f64>, Vec<f64>, u64) {
    let slots = optimizer
        .slots()
        .iter()
        .flat_map(|(_, slots)| slots.iter().flatten().flat_map(|t| t.to_vec_f64().unwrap()).collect::<Vec<_>>())
        .collect();
    (values(variables), slots, optimizer.iterations())
}

/// Dynamic loss scaling: a step whose gradients hold inf (injected directly, or from a loss
/// so large that its scaled gradient overflows f32) is skipped, leaving the weights and the
/// optimizer's state as they were, and halves the scale; `dynamic_growth_steps` finite
/// steps in a row double it; finite steps apply the unscaled gradients.
#[test]
fn loss_scale_skips_overflowing_steps_and_grows_after_finite_ones() -> Result<()> {
    random::set_seed(5);
    let model = Sequential::new().add(Dense::new(3)).add(Dense::new(2)).dtype_policy(Policy::MIXED_FLOAT16);
    let x = Tensor::from_vec(vec![0.5f32, -1.0, 0.25, 1.0, 0.0, -0.5], [2, 3], &Device::Cpu)?;
    let y = Tensor::from_vec(vec![1i64, 0], [2], &Device::Cpu)?;
    let mut opt = LossScaleOptimizer::new(Adam::new(1e-2)).initial_scale(1024.0).dynamic_growth_steps(3);
    assert_eq!(opt.loss_scale(), Some(LossScaleState { scale: 1024.0, good_steps: 0 }));
    let loss = |m: f64| {
        let (model, x, y) = (&model, &x, &y);
        move || Ok(losses::sparse_categorical_crossentropy(y, &model.call(x, Mode::Train)?, true)?.mul_scalar(m)?)
    };

    // A finite step: applied, and the scale is divided out (same update as plain Adam).
    train_step(&model, &mut opt, loss(1.0))?;
    assert_eq!(opt.iterations(), 1);
    assert_eq!(opt.loss_scale(), Some(LossScaleState { scale: 1024.0, good_steps: 1 }));
    let vars = model.trainable_variables();

    // Injected inf in one gradient: skipped, scale halved.
    let before = snapshot(&opt, &vars);
    let mut grads: Vec<Option<Tensor>> = vars.iter().map(|v| Some(v.value_untracked().ones_like().unwrap())).collect();
    let mut poisoned = vec![1.0f32; vars[1].value_untracked().elem_count()];
    poisoned[0] = f32::INFINITY;
    grads[1] = Some(Tensor::from_vec(poisoned, vars[1].value_untracked().dims().to_vec(), &Device::Cpu)?);
    opt.apply_gradients(&grads, &vars)?;
    assert_eq!(snapshot(&opt, &vars), before, "a skipped step changed the weights or the optimizer state");
    assert_eq!(opt.loss_scale(), Some(LossScaleState { scale: 512.0, good_steps: 0 }));

    // A loss of 1e37 times the scale overflows f32 in the backward pass: skipped too.
    train_step(&model, &mut opt, loss(1e37))?;
    assert_eq!(snapshot(&opt, &vars), before);
    assert_eq!(opt.loss_scale(), Some(LossScaleState { scale: 256.0, good_steps: 0 }));

    // Three finite steps in a row double the scale; the third resets the counter.
    for good in 1..=3u64 {
        train_step(&model, &mut opt, loss(1.0))?;
        let expected = if good < 3 {
            LossScaleState { scale: 256.0, good_steps: good }
        } else {
            LossScaleState { scale: 512.0, good_steps: 0 }
        };
        assert_eq!(opt.loss_scale(), Some(expected), "after {good} finite steps");
    }
    assert_eq!(opt.iterations(), 4, "only finite steps count");
    Ok(())
}

/// A skipped step does not advance the inner optimizer's iterations, so a schedule is
/// evaluated at the iterations of the steps that were applied (Keras evaluates it at the
/// inner optimizer's `iterations`): the step after a skip takes the rate the skipped one
/// would have taken.
#[test]
fn a_skipped_step_does_not_advance_the_schedule() -> Result<()> {
    use tapegrad_layers::optimizers::schedules::StepDecay;
    let w = Variable::new("w", Tensor::ones([1], DType::F32, &Device::Cpu)?, true);
    let halving = StepDecay { initial: 0.1, factor: 0.5, step_size: 1 };
    let mut opt = LossScaleOptimizer::new(Sgd::new(halving)).initial_scale(4.0);
    // Gradients as `scale_loss` makes them: the scale times the true gradient (1).
    let scaled = |opt: &LossScaleOptimizer<Sgd>| -> Result<Tensor> {
        Ok(Tensor::full(opt.loss_scale().unwrap().scale, [1], DType::F32, &Device::Cpu)?)
    };
    let mut expected = 1.0f32;
    opt.apply_gradients(&[Some(scaled(&opt)?)], std::slice::from_ref(&w))?;
    expected -= 0.1f64 as f32;
    assert_eq!(w.value_untracked().to_vec::<f32>()?, [expected]);
    assert_eq!(opt.learning_rate(), 0.05);
    let overflow = Tensor::from_vec(vec![f32::INFINITY], [1], &Device::Cpu)?;
    opt.apply_gradients(&[Some(overflow)], std::slice::from_ref(&w))?;
    assert_eq!((opt.iterations(), opt.learning_rate()), (1, 0.05), "the skipped step counted");
    assert_eq!(w.value_untracked().to_vec::<f32>()?, [expected]);
    opt.apply_gradients(&[Some(scaled(&opt)?)], std::slice::from_ref(&w))?;
    expected -= 0.05f64 as f32;
    assert_eq!(w.value_untracked().to_vec::<f32>()?, [expected], "the step after the skip used lr(1)");
    assert_eq!((opt.iterations(), opt.learning_rate()), (2, 0.025));
    Ok(())
}

/// A finite loss-scaled step equals the plain optimizer's step (the scale, a power of two,
/// divides out exactly up to the f32 rounding of the scaled gradients).
#[test]
fn loss_scaled_step_equals_the_plain_step() -> Result<()> {
    let x = Tensor::from_vec(vec![0.5f32, -1.0, 0.25, 1.0, 0.0, -0.5], [2, 3], &Device::Cpu)?;
    let y = Tensor::from_vec(vec![1i64, 0], [2], &Device::Cpu)?;
    let mut results = Vec::new();
    for scaled in [false, true] {
        random::set_seed(9);
        let model = Sequential::new().add(Dense::new(4)).add(Dense::new(2)).dtype_policy(Policy::FLOAT32);
        let mut opt: Box<dyn Optimizer> =
            if scaled { Box::new(LossScaleOptimizer::new(Sgd::new(0.1))) } else { Box::new(Sgd::new(0.1)) };
        train_step(&model, opt.as_mut(), || {
            Ok(losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true)?)
        })?;
        results.push(values(&model.trainable_variables()));
    }
    assert!(relative_distance(&results[1], &results[0]) < 1e-6);
    Ok(())
}

/// Policies: variables f32 under mixed policies, layer outputs in the compute dtype, batch
/// norm in f32 (f32 statistics; its output back in the input's dtype, as Keras), softmax in
/// f32, per-layer overrides, inheritance from a container, gradients in f32.
#[test]
fn policy_plumbing() -> Result<()> {
    random::set_seed(1);
    let x = Tensor::rand_uniform([4, 6, 6, 3], -1.0, 1.0, DType::F32, &Device::Cpu, &mut StdRng::seed_from_u64(2))?;

    // A layer's own policy.
    let conv = Conv2D::new(4, 3).dtype_policy(Policy::MIXED_BFLOAT16);
    let h = conv.call(&x, Mode::Train)?;
    assert_eq!(h.dtype(), DType::BF16);
    assert_eq!(conv.kernel().unwrap().value_untracked().dtype(), DType::F32);
    assert_eq!(conv.policy_override(), Some(Policy::MIXED_BFLOAT16));

    // Batch norm: f32 variables and statistics, normalised in f32, output back to bf16.
    let bn = BatchNormalization::new().dtype_policy(Policy::MIXED_BFLOAT16);
    let out = bn.call(&h, Mode::Train)?;
    assert_eq!(out.dtype(), DType::BF16);
    for v in bn.variables() {
        assert_eq!(v.value_untracked().dtype(), DType::F32, "{}", v.name());
    }
    // The moving mean moved to 1% of the f32 batch mean of the widened input (to f32
    // precision: a bf16 mean would be ~1e-3 off).
    let batch_mean = h.cast(DType::F32)?.mean(&[0, 1, 2], false)?.mul_scalar(0.01)?;
    let moving_mean = bn.moving_mean().unwrap().value_untracked();
    assert_eq!(moving_mean.dtype(), DType::F32);
    let gap = relative_distance(&moving_mean.to_vec_f64()?, &batch_mean.to_vec_f64()?);
    assert!(gap < 1e-5, "moving mean {gap:.2e} from the f32 batch mean: the statistics were not computed in f32");

    // Inheritance: a mixed Sequential's layers compute in bf16, except one with its own
    // float32 policy (Keras' advice for the last layer), and softmax answers in f32.
    let model = Sequential::new()
        .add(Conv2D::new(4, 3))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(3))
        .dtype_policy(Policy::MIXED_BFLOAT16);
    assert_eq!(model.call(&x, Mode::Infer)?.dtype(), DType::BF16);
    let with_f32_head = Sequential::new()
        .add(Conv2D::new(4, 3))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(3).dtype_policy(Policy::FLOAT32))
        .dtype_policy(Policy::MIXED_BFLOAT16);
    assert_eq!(with_f32_head.call(&x, Mode::Infer)?.dtype(), DType::F32);
    let with_softmax =
        Sequential::new().add(Dense::new(3)).add(Activation::softmax()).dtype_policy(Policy::MIXED_FLOAT16);
    let probs = with_softmax.call(&Tensor::ones([2, 5], DType::F32, &Device::Cpu)?, Mode::Infer)?;
    assert_eq!(probs.dtype(), DType::F32);

    // Gradients reach the f32 variables in f32.
    let tape = GradientTape::new();
    let loss = tape.record(|| model.call(&x, Mode::Train)?.cast(DType::F32)?.square()?.mean_all())?;
    let grads = tape.gradient(&loss, &model.trainable_variables())?;
    for (g, v) in grads.iter().zip(model.trainable_variables()) {
        let g = g.as_ref().expect("every variable gets a gradient");
        assert_eq!(g.dtype(), DType::F32, "gradient of {}", v.name());
        assert!(g.to_vec_f64()?.iter().any(|&e| e != 0.0));
    }

    // An embedding's float ids are not rounded to bf16 (1001 would become 1000); its output
    // is in the compute dtype.
    let embedding = Sequential::new().add(Embedding::new(1100, 2)).dtype_policy(Policy::MIXED_BFLOAT16);
    let ids = Tensor::from_vec(vec![1001.0f32], [1], &Device::Cpu)?;
    let looked_up = embedding.call(&ids, Mode::Infer)?;
    assert_eq!(looked_up.dtype(), DType::BF16);
    let table = embedding.variables()[0].value_untracked();
    assert_eq!(looked_up.to_vec_f64()?, table.narrow(0, 1001, 1)?.cast(DType::BF16)?.to_vec_f64()?);

    // Under "float32", an f64 input builds an f64 layer, as before policies.
    let dense = Dense::new(2).dtype_policy(Policy::FLOAT32);
    assert_eq!(dense.call(&Tensor::ones([1, 3], DType::F64, &Device::Cpu)?, Mode::Infer)?.dtype(), DType::F64);
    assert_eq!(dense.kernel().unwrap().value_untracked().dtype(), DType::F64);
    Ok(())
}

/// `ResNet::dtype_policy` and `Embedding::dtype_policy`: the container's policy reaches the
/// layers inside it (the head, two containers down, casts its input to bf16 and so answers
/// in bf16), an inner layer's own policy still wins, and the variables stay f32 and get f32
/// gradients.
#[test]
fn resnet_and_embedding_policies_reach_their_layers() -> Result<()> {
    random::set_seed(3);
    let x = Tensor::rand_uniform([2, 8, 8, 3], -1.0, 1.0, DType::F32, &Device::Cpu, &mut StdRng::seed_from_u64(4))?;
    let model = ResNet::cifar([1, 1, 1, 1], 5).dtype_policy(Policy::MIXED_BFLOAT16);
    assert_eq!(model.policy_override(), Some(Policy::MIXED_BFLOAT16));
    let tape = GradientTape::new();
    let (logits, loss) = tape.record(|| {
        let logits = model.call(&x, Mode::Train).map_err(tapegrad_tensor::Error::from)?;
        let loss = logits.cast(DType::F32)?.square()?.mean_all()?;
        Ok((logits, loss))
    })?;
    assert_eq!(logits.dtype(), DType::BF16);
    let variables = model.trainable_variables();
    let grads = tape.gradient(&loss, &variables)?;
    for (g, v) in grads.iter().zip(&variables) {
        assert_eq!(v.value_untracked().dtype(), DType::F32, "{}", v.name());
        assert_eq!(g.as_ref().expect("every variable gets a gradient").dtype(), DType::F32, "{}", v.name());
    }
    for v in model.variables() {
        assert_eq!(v.value_untracked().dtype(), DType::F32, "{}", v.name());
    }

    // An inner layer's own policy wins over the model's.
    let mut with_f32_head = ResNet::cifar([1, 1, 1, 1], 5).dtype_policy(Policy::MIXED_FLOAT16);
    with_f32_head.fc = Dense::new(5).dtype_policy(Policy::FLOAT32);
    assert_eq!(with_f32_head.call(&x, Mode::Infer)?.dtype(), DType::F32);

    // Embedding: its own policy gives 16-bit vectors from an f32 table, ids untouched.
    let embedding = Embedding::new(1100, 3).dtype_policy(Policy::MIXED_FLOAT16);
    assert_eq!(embedding.policy_override(), Some(Policy::MIXED_FLOAT16));
    let ids = Tensor::from_vec(vec![1001.0f32, 7.0], [2], &Device::Cpu)?;
    let looked_up = embedding.call(&ids, Mode::Infer)?;
    assert_eq!(looked_up.dtype(), DType::F16);
    let table = embedding.embeddings().expect("built").value_untracked();
    assert_eq!(table.dtype(), DType::F32);
    assert_eq!(looked_up.to_vec_f64()?[..3], table.narrow(0, 1001, 1)?.cast(DType::F16)?.to_vec_f64()?[..]);
    // ... and its own float32 wins inside a container with another policy.
    let in_bf16 =
        Sequential::new().add(Embedding::new(10, 2).dtype_policy(Policy::FLOAT32)).dtype_policy(Policy::MIXED_BFLOAT16);
    assert_eq!(in_bf16.call(&ids.narrow(0, 1, 1)?, Mode::Infer)?.dtype(), DType::F32);
    Ok(())
}

#[test]
fn policy_names_are_keras_and_bad_names_are_clear_errors() {
    for (name, compute, variable) in [
        ("float32", DType::F32, DType::F32),
        ("mixed_bfloat16", DType::BF16, DType::F32),
        ("mixed_float16", DType::F16, DType::F32),
        ("bfloat16", DType::BF16, DType::BF16),
        ("float16", DType::F16, DType::F16),
        ("float64", DType::F64, DType::F64),
    ] {
        let p: Policy = name.parse().unwrap();
        assert_eq!((p.name(), p.compute_dtype(), p.variable_dtype()), (name, compute, variable));
        assert_eq!(p.to_string(), name);
    }
    let err = Policy::new("mixed_bf16").unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    let msg = err.to_string();
    assert!(msg.contains("\"mixed_bf16\"") && msg.contains("\"mixed_bfloat16\""), "{msg}");
}

/// The global policy (Keras' `set_global_policy`) applies to layers with no policy of their
/// own, inside no container that has one; reset to "float32" at the end.
#[test]
fn global_policy_applies_to_layers_without_their_own() -> Result<()> {
    assert_eq!(global_policy(), Policy::FLOAT32);
    set_global_policy(Policy::MIXED_BFLOAT16);
    let dense = Dense::new(2);
    let ones = Tensor::ones([1, 3], DType::F32, &Device::Cpu)?;
    let out = dense.call(&ones, Mode::Infer);
    let own = Dense::new(2).dtype_policy(Policy::FLOAT32);
    let own_out = own.call(&ones, Mode::Infer);
    set_global_policy(Policy::FLOAT32);
    assert_eq!(out?.dtype(), DType::BF16);
    assert_eq!(dense.kernel().unwrap().value_untracked().dtype(), DType::F32);
    assert_eq!(own_out?.dtype(), DType::F32);
    Ok(())
}

/// The loss scale and its step counter are saved and restored with the optimizer; a file
/// with loss-scale state does not load into an optimizer without it, nor the reverse, and
/// nothing changes when loading fails.
#[test]
fn checkpoint_round_trips_the_loss_scale() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.safetensors");
    let x = Tensor::from_vec(vec![0.5f32, -1.0, 0.25, 1.0, 0.0, -0.5], [2, 3], &Device::Cpu)?;
    let y = Tensor::from_vec(vec![1i64, 0], [2], &Device::Cpu)?;
    let make = || Sequential::new().add(Dense::new(2)).dtype_policy(Policy::MIXED_FLOAT16);
    let model = make();
    let mut opt = LossScaleOptimizer::new(Adam::new(1e-2)).initial_scale(4096.0);
    let step = |model: &Sequential, opt: &mut dyn Optimizer| {
        train_step(model, opt, || Ok(losses::sparse_categorical_crossentropy(&y, &model.call(&x, Mode::Train)?, true)?))
    };
    step(&model, &mut opt)?;
    step(&model, &mut opt)?;
    let inf = Tensor::from_vec(vec![f32::NAN; 6], [3, 2], &Device::Cpu)?;
    opt.apply_gradients(&[Some(inf), None], &model.trainable_variables())?; // halves
    step(&model, &mut opt)?;
    let saved = LossScaleState { scale: 2048.0, good_steps: 1 };
    assert_eq!(opt.loss_scale(), Some(saved));
    checkpoint::save(&path, &model, Some(&opt), 7)?;
    assert_eq!(checkpoint::info(&path)?.loss_scale, Some(saved));

    let restored = make();
    restored.call(&x, Mode::Infer)?;
    let mut fresh = LossScaleOptimizer::new(Adam::new(1e-2));
    let info = checkpoint::load(&path, &restored, Some(&mut fresh))?;
    assert_eq!((info.step, fresh.loss_scale(), fresh.iterations()), (7, Some(saved), 3));
    assert_eq!(values(&restored.variables()), values(&model.variables()));

    // Into a plain Adam: refused, naming the loss scale; nothing changes.
    let mut plain = Adam::new(1e-2);
    let err = checkpoint::load(&path, &restored, Some(&mut plain)).unwrap_err().to_string();
    assert!(err.contains("loss-scale") && err.contains("LossScaleOptimizer"), "{err}");
    assert_eq!(plain.iterations(), 0);

    // A plain Adam's file into a LossScaleOptimizer: refused too.
    let plain_path = dir.path().join("plain.safetensors");
    checkpoint::save(&plain_path, &model, Some(opt.inner()), 7)?;
    assert_eq!(checkpoint::info(&plain_path)?.loss_scale, None);
    let mut other = LossScaleOptimizer::new(Adam::new(1e-2));
    let err = checkpoint::load(&plain_path, &restored, Some(&mut other)).unwrap_err().to_string();
    assert!(err.contains("no loss-scale state"), "{err}");
    assert_eq!(other.loss_scale(), Some(LossScaleState { scale: 32768.0, good_steps: 0 }));
    Ok(())
}

/// The options are validated at use, naming the option and the value.
#[test]
fn loss_scale_options_are_validated() {
    let w = Variable::new("w", Tensor::ones([2], DType::F32, &Device::Cpu).unwrap(), true);
    let g = Some(Tensor::ones([2], DType::F32, &Device::Cpu).unwrap());
    let mut bad = LossScaleOptimizer::new(Sgd::new(0.1)).initial_scale(f64::NAN);
    let msg = bad.apply_gradients(std::slice::from_ref(&g), std::slice::from_ref(&w)).unwrap_err().to_string();
    assert!(msg.contains("initial_scale") && msg.contains("NaN"), "{msg}");
    let bad = LossScaleOptimizer::new(Sgd::new(0.1)).dynamic_growth_steps(0);
    let msg = bad.scale_loss(&w.value_untracked()).unwrap_err().to_string();
    assert!(msg.contains("dynamic_growth_steps"), "{msg}");
    // A list mismatch is an error even when the step would be skipped.
    let mut opt = LossScaleOptimizer::new(Sgd::new(0.1));
    assert!(opt.apply_gradients(&[g.clone(), g], &[w]).is_err());
}
