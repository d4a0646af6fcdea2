//! Conv2D, pooling and batch-norm layers: shapes, parameter counts, values against direct
//! computations, BN's Train/Infer behaviour, and the PyTorch importer.

use tapegrad_layers::checkpoint::import::{
    import_pytorch, keras_conv_kernel, to_keras_conv_kernel, to_torch_conv_kernel, torch_conv_kernel, TorchNames,
};
use tapegrad_layers::{
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, InputSpec, Layer,
    MaxPool2D, Mode, Padding, Result, Sequential,
};
use tapegrad_tensor::{DType, Device, GradientTape, Tensor};

fn image(shape: [usize; 4], offset: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|i| ((i * 31 % 17) as f64 - 8.0) / 4.0 + offset).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

#[test]
fn conv2d_shapes_params_and_values() -> Result<()> {
    let x = image([2, 7, 7, 3], 0.0);
    let valid = Conv2D::new(5, 3);
    assert_eq!(valid.call(&x, Mode::Infer)?.dims(), &[2, 5, 5, 5]);
    assert_eq!(valid.count_params().trainable, 5 * 3 * 3 * 3 + 5);
    assert_eq!(valid.kernel().unwrap().value_untracked().dims(), &[5, 3, 3, 3], "[out, kh, kw, in]");
    let same = Conv2D::new(4, (3, 1)).strides(2).padding(Padding::Same).use_bias(false);
    assert_eq!(same.call(&x, Mode::Infer)?.dims(), &[2, 4, 4, 4]);
    assert_eq!(same.count_params().trainable, 4 * 3 * 3);
    assert!(same.bias().is_none());

    // Values: y[n, i, j, o] = b[o] + sum k[o, di, dj, c] * x[n, i + di, j + dj, c].
    let conv = Conv2D::new(2, 2).bias_initializer(tapegrad_layers::Initializer::Constant(0.5));
    let y = conv.call(&x, Mode::Infer)?.to_vec::<f64>()?;
    let k = conv.kernel().unwrap().value_untracked().to_vec::<f64>()?;
    let xv = x.to_vec::<f64>()?;
    let xi = |n: usize, i: usize, j: usize, c: usize| xv[((n * 7 + i) * 7 + j) * 3 + c];
    for n in 0..2 {
        for i in 0..6 {
            for j in 0..6 {
                for o in 0..2 {
                    let mut want = 0.5;
                    for di in 0..2 {
                        for dj in 0..2 {
                            for c in 0..3 {
                                want += k[((o * 2 + di) * 2 + dj) * 3 + c] * xi(n, i + di, j + dj, c);
                            }
                        }
                    }
                    let got = y[((n * 6 + i) * 6 + j) * 2 + o];
                    assert!((got - want).abs() < 1e-12, "({n},{i},{j},{o}): {got} vs {want}");
                }
            }
        }
    }
    let err = conv.call(&image([1, 4, 4, 5], 0.0), Mode::Infer).unwrap_err().to_string();
    assert!(err.contains(conv.name()) && err.contains("3 channels") && err.contains("[1, 4, 4, 5]"), "{err}");
    let err = Conv2D::new(2, 3).call(&image([1, 4, 4, 5], 0.0).reshape([16, 5])?, Mode::Infer).unwrap_err();
    assert!(err.to_string().contains("NHWC"), "{err}");
    Ok(())
}

#[test]
fn pooling_layers() -> Result<()> {
    // The seed's stem pool: 2x2, stride 1, 'same' keeps 30x30.
    let x = image([2, 30, 30, 4], 0.0);
    let pool = MaxPool2D::new(2).strides(1).padding(Padding::Same);
    assert_eq!(pool.call(&x, Mode::Infer)?.dims(), &[2, 30, 30, 4]);
    assert_eq!(MaxPool2D::new(2).call(&x, Mode::Infer)?.dims(), &[2, 15, 15, 4]);
    assert_eq!(AveragePooling2D::new(3).strides(2).call(&x, Mode::Infer)?.dims(), &[2, 14, 14, 4]);

    let small = Tensor::from_vec((0..16).map(|v| v as f64).collect(), [1, 4, 4, 1], &Device::Cpu)?;
    assert_eq!(MaxPool2D::new(2).call(&small, Mode::Infer)?.to_vec::<f64>()?, vec![5.0, 7.0, 13.0, 15.0]);
    assert_eq!(AveragePooling2D::new(2).call(&small, Mode::Infer)?.to_vec::<f64>()?, vec![2.5, 4.5, 10.5, 12.5]);
    let gap = GlobalAveragePooling2D::new().call(&x, Mode::Infer)?;
    assert_eq!(gap.dims(), &[2, 4]);
    let xv = x.to_vec::<f64>()?;
    let want: f64 = (0..900).map(|p| xv[p * 4 + 1]).sum::<f64>() / 900.0;
    assert!((gap.to_vec::<f64>()?[1] - want).abs() < 1e-12);
    Ok(())
}

/// Per-channel batch mean and biased variance of an NHWC (or [N, C]) tensor.
fn channel_stats(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let c = *x.dims().last().unwrap();
    let v = x.to_vec::<f64>().unwrap();
    let rows = v.len() / c;
    let mean: Vec<f64> = (0..c).map(|k| (0..rows).map(|r| v[r * c + k]).sum::<f64>() / rows as f64).collect();
    let var: Vec<f64> =
        (0..c).map(|k| (0..rows).map(|r| (v[r * c + k] - mean[k]).powi(2)).sum::<f64>() / rows as f64).collect();
    (mean, var)
}

#[test]
fn batch_norm_train_infer_and_moving_averages() -> Result<()> {
    let bn = BatchNormalization::new();
    let x = image([4, 3, 3, 2], 1.5);
    let (mean, var) = channel_stats(&x);
    let rows = 4.0 * 9.0;

    // Train: normalised with the batch statistics (gamma 1, beta 0 at first).
    let y = bn.call(&x, Mode::Train)?;
    let (ym, yv) = channel_stats(&y);
    for k in 0..2 {
        assert!(ym[k].abs() < 1e-12);
        assert!((yv[k] - var[k] / (var[k] + 1e-3)).abs() < 1e-12);
    }
    assert_eq!(bn.count_params().trainable, 4);
    assert_eq!(bn.count_params().non_trainable, 4);
    // Moving statistics: moving -= (moving - batch) * 0.01, with the unbiased variance.
    let mm = bn.moving_mean().unwrap().value_untracked().to_vec::<f64>()?;
    let mv = bn.moving_variance().unwrap().value_untracked().to_vec::<f64>()?;
    for k in 0..2 {
        assert!((mm[k] - 0.01 * mean[k]).abs() < 1e-12);
        assert!((mv[k] - (1.0 - (1.0 - var[k] * rows / (rows - 1.0)) * 0.01)).abs() < 1e-12);
    }
    // A second Train step moves them again.
    bn.call(&x, Mode::Train)?;
    let mm2 = bn.moving_mean().unwrap().value_untracked().to_vec::<f64>()?;
    assert!((mm2[0] - (mm[0] - (mm[0] - mean[0]) * 0.01)).abs() < 1e-12);

    // Infer: the moving statistics are used, and nothing changes.
    let mv2 = bn.moving_variance().unwrap().value_untracked().to_vec::<f64>()?;
    let yi = bn.call(&x, Mode::Infer)?.to_vec::<f64>()?;
    for (i, (got, xi)) in yi.iter().zip(x.to_vec::<f64>()?).enumerate() {
        let k = i % 2;
        assert!((got - (xi - mm2[k]) / (mv2[k] + 1e-3).sqrt()).abs() < 1e-12);
    }
    assert_eq!(bn.moving_mean().unwrap().value_untracked().to_vec::<f64>()?, mm2);

    // Biased moving variance (Keras 3) and PyTorch-style settings.
    let biased = BatchNormalization::new().unbiased_moving_variance(false).momentum(0.9).epsilon(1e-5);
    biased.call(&x, Mode::Train)?;
    let mv = biased.moving_variance().unwrap().value_untracked().to_vec::<f64>()?;
    assert!((mv[1] - (1.0 - (1.0 - var[1]) * 0.1)).abs() < 1e-12);
    Ok(())
}

#[test]
fn batch_norm_options_ranks_and_gradients() -> Result<()> {
    let plain = BatchNormalization::new().center(false).scale(false);
    plain.build(&InputSpec::new([1, 8, 8, 6]))?;
    assert_eq!((plain.count_params().trainable, plain.count_params().non_trainable), (0, 12));
    let names: Vec<String> = plain.named_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["moving_mean", "moving_variance"]);

    // [N, C] and [N, T, C] inputs are normalised over everything but the last axis.
    let bn = BatchNormalization::new();
    let x3 = image([2, 5, 3, 1], 0.0).reshape([2, 5, 3])?;
    let y3 = bn.call(&x3, Mode::Train)?;
    assert_eq!(y3.dims(), &[2, 5, 3]);
    let (ym, _) = channel_stats(&y3);
    assert!(ym.iter().all(|m| m.abs() < 1e-12));

    // gamma and beta receive gradients; the moving statistics are not trainable.
    let bn = BatchNormalization::new();
    let x = image([2, 2, 2, 3], 0.0);
    let tape = GradientTape::new();
    let loss = tape.record(|| bn.call(&x, Mode::Train)?.mul(&x)?.sum_all())?;
    let grads = tape.gradient(&loss, &bn.trainable_variables())?;
    assert_eq!(bn.trainable_variables().len(), 2);
    assert!(grads.iter().all(Option::is_some));
    let err = bn.call(&image([1, 2, 2, 4], 0.0), Mode::Infer).unwrap_err().to_string();
    assert!(err.contains("3 channels") && err.contains(bn.name()), "{err}");
    Ok(())
}

#[test]
fn keras_and_torch_kernel_layouts() -> Result<()> {
    // A Keras kernel (kh, kw, in, out) whose value encodes its index.
    let (kh, kw, cin, cout) = (2, 3, 4, 5);
    let keras: Vec<f64> = (0..kh * kw * cin * cout).map(|i| i as f64).collect();
    let keras = Tensor::from_vec(keras, [kh, kw, cin, cout], &Device::Cpu)?;
    let ours = keras_conv_kernel(&keras)?;
    assert_eq!(ours.dims(), &[cout, kh, kw, cin]);
    let (kv, ov) = (keras.to_vec::<f64>()?, ours.to_vec::<f64>()?);
    for o in 0..cout {
        for i in 0..kh {
            for j in 0..kw {
                for c in 0..cin {
                    assert_eq!(ov[((o * kh + i) * kw + j) * cin + c], kv[((i * kw + j) * cin + c) * cout + o]);
                }
            }
        }
    }
    assert_eq!(to_keras_conv_kernel(&ours)?.to_vec::<f64>()?, kv);
    let torch = to_torch_conv_kernel(&ours)?;
    assert_eq!(torch.dims(), &[cout, cin, kh, kw]);
    assert_eq!(torch_conv_kernel(&torch)?.to_vec::<f64>()?, ov);
    Ok(())
}

#[test]
fn pytorch_state_dict_import_reproduces_the_output() -> Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let model = Sequential::new()
        .add(Conv2D::new(4, 3).padding(Padding::Same))
        .add(BatchNormalization::new().epsilon(1e-5).momentum(0.9))
        .add(Activation::relu())
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(3));
    model.build(&InputSpec::new([1, 5, 5, 3]))?;
    let names = TorchNames::new(&model);
    let report = import_pytorch(format!("{dir}torch_import.safetensors"), &model, &|n| names.map(n))?;
    assert_eq!(report.imported.len(), 8);
    assert_eq!(report.skipped, ["1.num_batches_tracked"]);
    assert!(report.imported.contains(&("1.running_var".into(), "1.moving_variance".into())));

    let io = std::fs::read(format!("{dir}torch_import_io.safetensors")).unwrap();
    let io = safetensors::SafeTensors::deserialize(&io).unwrap();
    let read = |name: &str| {
        let t = io.tensor(name).unwrap();
        let v: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap()
    };
    let y = model.call(&read("x_nhwc"), Mode::Infer)?.to_vec::<f32>()?;
    let want = read("y").to_vec::<f32>()?;
    for (a, b) in y.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{y:?} vs {want:?}");
    }

    // A model that does not fit: every problem is named.
    let wrong = Sequential::new()
        .add(Conv2D::new(4, 3).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::relu())
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(7))
        .add(Dense::new(2));
    wrong.build(&InputSpec::new([1, 5, 5, 3]).with_dtype(DType::F32))?;
    let names = TorchNames::new(&wrong);
    let err = import_pytorch(format!("{dir}torch_import.safetensors"), &wrong, &|n| names.map(n)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("4.weight: shape [3, 4]") && text.contains("4.kernel of shape [4, 7]"), "{text}");
    assert!(text.contains("5.kernel: no PyTorch tensor maps to it"), "{text}");
    Ok(())
}

#[test]
fn conv2d_with_relu_runs_the_fused_op_with_the_unfused_bits() -> Result<()> {
    use tapegrad_layers::{ActivationFn, Initializer};
    // Bias -0.25 puts outputs on both sides of the ReLU.
    let fused = Conv2D::new(4, 3).padding(Padding::Same).activation(ActivationFn::Relu);
    let fused = fused.bias_initializer(Initializer::Constant(-0.25));
    let x = image([2, 6, 6, 3], 0.1).cast(DType::F32)?;
    let tape = GradientTape::new();
    let y = tape.record(|| Ok(fused.call(&x, Mode::Train)?))?;
    let loss = tape.record(|| y.square()?.sum_all())?;
    let (kernel, bias) = (fused.kernel().unwrap(), fused.bias().unwrap());
    let grads = tape.gradient(&loss, &[kernel, bias])?;
    // The same layer's weights through conv2d and relu, unfused.
    let (k, b) = (kernel.value_untracked(), bias.value_untracked());
    let tape = GradientTape::new();
    tape.watch(&k);
    tape.watch(&b);
    let params = tapegrad_tensor::Conv2dParams { padding: Padding::Same, ..Default::default() };
    let y2 = tape.record(|| x.conv2d(&k, Some(&b), &params)?.relu())?;
    let loss2 = tape.record(|| y2.square()?.sum_all())?;
    let grads2 = tape.gradient(&loss2, &[&k, &b])?;
    let values = y.to_vec::<f32>()?;
    assert!(values.contains(&0.0) && values.iter().any(|v| *v > 0.0));
    let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y), bits(&y2));
    for (g, g2) in grads.iter().zip(&grads2) {
        assert_eq!(bits(g.as_ref().unwrap()), bits(g2.as_ref().unwrap()));
    }
    Ok(())
}
