//! Batch norm fused with its ReLU (and a ResNet block's residual add): Sequential's
//! BatchNormalization-then-ReLU pairs and the ResNet block give the same values, gradients
//! and moving statistics, bit for bit, as the same layers run one after another.

use tapegrad_layers::models::BasicBlock;
use tapegrad_layers::{
    Activation, ActivationFn, BatchNormalization, InputSpec, Layer, LeakyReLU, Mode, ReLU, Result, Sequential,
};
use tapegrad_tensor::{DType, Device, GradientSource, GradientTape, Tensor, Variable};

/// Deterministic values of a shape, spread over about [-2, 3] (so the ReLUs cut).
fn input(shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.731).sin() * 2.0 + (i % 7) as f64 * 0.15).collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap().cast(dtype).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The output's bits and the gradients' (the input's first, then `vars`') of `f` at an
/// output gradient of deterministic values.
fn run(x: &Tensor, vars: &[Variable], f: impl FnOnce(&Tensor) -> Result<Tensor>) -> (Vec<u64>, Vec<Vec<u64>>) {
    let tape = GradientTape::new();
    tape.watch(x);
    let mut y = None;
    tape.record(|| {
        y = Some(f(x).unwrap());
        Ok(())
    })
    .unwrap();
    let y = y.unwrap();
    let w = input(y.dims(), y.dtype()).mul_scalar(-0.7).unwrap();
    let mut sources: Vec<&dyn GradientSource> = vec![x];
    sources.extend(vars.iter().map(|v| v as &dyn GradientSource));
    let grads = tape.gradient_with_output_gradient(&y, &sources, &w).unwrap();
    (bits(&y), grads.into_iter().map(|g| bits(&g.expect("every source gets a gradient"))).collect())
}

fn moving_statistics(bn: &BatchNormalization) -> Vec<Vec<u64>> {
    [bn.moving_mean(), bn.moving_variance()].iter().map(|v| bits(&v.unwrap().value_untracked())).collect()
}

#[test]
fn sequential_fuses_batch_norm_with_a_following_relu() {
    for dtype in [DType::F32, DType::F64] {
        let x = input(&[4, 5, 5, 3], dtype);
        for relu in [Box::new(Activation::relu()) as Box<dyn Layer>, Box::new(ReLU::new())] {
            assert!(relu.is_relu());
            let fused = Sequential::from_layers(vec![Box::new(BatchNormalization::new()), relu]);
            let (bn, act) = (BatchNormalization::new(), Activation::relu());
            fused.build(&InputSpec::from(&x)).unwrap();
            bn.build(&InputSpec::from(&x)).unwrap();
            let (y_f, g_f) = run(&x, &fused.trainable_variables(), |x| fused.call(x, Mode::Train));
            let (y_u, g_u) = run(&x, &bn.trainable_variables(), |x| act.call(&bn.call(x, Mode::Train)?, Mode::Train));
            assert_eq!(y_f, y_u, "{dtype} output");
            assert_eq!(g_f, g_u, "{dtype} gradients");
            let first = fused.layers()[0].as_ref();
            let moving: Vec<Vec<u64>> =
                first.non_trainable_variables().iter().map(|v| bits(&v.value_untracked())).collect();
            assert_eq!(moving, moving_statistics(&bn), "{dtype} moving statistics");
            // Inference takes the unfused path and agrees too.
            let infer = |l: &dyn Layer| bits(&l.call(&x, Mode::Infer).unwrap());
            assert_eq!(infer(&fused), bits(&act.call(&bn.call(&x, Mode::Infer).unwrap(), Mode::Infer).unwrap()));
        }
    }
}

#[test]
fn only_a_plain_relu_is_fused() {
    assert!(!LeakyReLU::new().is_relu());
    assert!(!ReLU::new().max_value(6.0).is_relu());
    assert!(!Activation::new(ActivationFn::Relu6).is_relu());
    // A leaky ReLU after batch norm still computes its own function.
    let x = input(&[6, 4], DType::F64);
    let model = Sequential::new().add(BatchNormalization::new()).add(LeakyReLU::new().negative_slope(0.5));
    let y = model.call(&x, Mode::Train).unwrap().to_vec::<f64>().unwrap();
    assert!(y.iter().any(|&v| v < 0.0), "the negative side must survive a leaky ReLU");
}

#[test]
fn resnet_blocks_equal_their_layers_run_one_by_one() {
    // Stride 2 (projection shortcut) and stride 1 (identity), the seed's and the CIFAR block.
    let blocks = [(BasicBlock::new(4, 2), 3), (BasicBlock::new(3, 1), 3), (BasicBlock::cifar(3, 4, 1), 3)];
    for (block, in_channels) in blocks {
        let x = input(&[2, 6, 6, in_channels], DType::F64);
        block.build(&InputSpec::from(&x)).unwrap();
        let vars = block.trainable_variables();
        let (y_f, g_f) = run(&x, &vars, |x| block.call(x, Mode::Train));
        let (y_u, g_u) = run(&x, &vars, |x| {
            let out = block.conv1.call(x, Mode::Train)?;
            let out = block.relu.call(&block.bn1.call(&out, Mode::Train)?, Mode::Train)?;
            let out = block.bn2.call(&block.conv2.call(&out, Mode::Train)?, Mode::Train)?;
            let shortcut = match &block.shortcut {
                Some(projection) => projection.call(x, Mode::Train)?,
                None => x.clone(),
            };
            Ok(block.add.call_many(&[&shortcut, &out], Mode::Train)?.relu()?)
        });
        assert!(y_f.contains(&0) && y_f.iter().any(|&b| b != 0), "the block's ReLU must cut somewhere");
        assert_eq!(y_f, y_u, "output");
        assert_eq!(g_f, g_u, "gradients of the input and the {} trainable variables", vars.len());
    }
}

#[test]
fn a_residual_of_another_shape_is_an_error_naming_both() {
    let bn = BatchNormalization::new();
    let err = bn.call_add_relu(&input(&[2, 4, 4, 3], DType::F32), &input(&[2, 4, 4, 2], DType::F32), Mode::Train);
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("[2, 4, 4, 2]") && msg.contains("[2, 4, 4, 3]") && msg.contains("residual"), "{msg}");
}
