//! LayerNormalization and GroupNormalization: Keras' defaults, parameter counts and
//! summary rows, the errors for bad axes and group counts, agreement with the tensor ops,
//! identical results in training and inference (no moving statistics), and gradients
//! reaching gamma and beta.

use tapegrad_layers::{
    Conv2D, Dense, Error, GroupNormalization, InputSpec, Layer, LayerNormalization, Mode, Padding, Result, Sequential,
};
use tapegrad_tensor::{Device, GradientTape, Tensor};

/// Deterministic values of a shape (f32), spread over about [-2, 3].
fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.731).sin() * 2.0 + (i % 7) as f32 * 0.15).collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn keras_defaults_variables_and_parameter_counts() -> Result<()> {
    let ln = LayerNormalization::new();
    ln.build(&InputSpec::new([2, 10, 16]))?;
    assert_eq!(ln.count_params().trainable, 32);
    assert_eq!(ln.count_params().non_trainable, 0);
    let names: Vec<String> = ln.named_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["gamma", "beta"]);
    assert_eq!(ln.gamma().unwrap().value().to_vec::<f32>()?, vec![1.0; 16]);
    assert_eq!(ln.beta().unwrap().value().to_vec::<f32>()?, vec![0.0; 16]);
    assert!(ln.gamma().unwrap().name().ends_with("/gamma"));

    // Several trailing axes: the parameters have the shape of those axes (Keras).
    let image = LayerNormalization::new().axes(&[1, -2, 3]);
    image.build(&InputSpec::new([2, 4, 5, 3]))?;
    assert_eq!(image.gamma().unwrap().value().dims(), &[4, 5, 3]);
    assert_eq!(image.count_params().trainable, 2 * 60);

    let gn = GroupNormalization::new(4);
    gn.build(&InputSpec::new([2, 8, 8, 16]))?;
    assert_eq!(gn.count_params().trainable, 32);
    assert_eq!(gn.gamma().unwrap().value().dims(), &[16]);
    assert_eq!(GroupNormalization::default().groups(), Some(32));

    let plain = GroupNormalization::new(2).center(false).scale(false);
    plain.build(&InputSpec::new([1, 4]))?;
    assert_eq!(plain.count_params().total(), 0);
    let scale_only = LayerNormalization::new().center(false);
    scale_only.build(&InputSpec::new([1, 4]))?;
    assert_eq!(scale_only.count_params().trainable, 4);
    Ok(())
}

#[test]
fn summary_rows_as_keras() -> Result<()> {
    let model = Sequential::new()
        .add(Conv2D::new(8, 3).padding(Padding::Same))
        .add(GroupNormalization::new(4).named("gn"))
        .add(LayerNormalization::new().named("ln"))
        .add(Dense::new(3));
    let s = model.summary(&InputSpec::new([1, 6, 6, 2]))?;
    let row = |name: &str| s.rows.iter().find(|r| r.name == name).unwrap().clone();
    let (gn, ln) = (row("gn"), row("ln"));
    assert_eq!(
        (gn.type_name.as_str(), gn.output_shape.as_deref(), gn.params),
        ("GroupNormalization", Some("(None, 6, 6, 8)"), 16)
    );
    assert_eq!(
        (ln.type_name.as_str(), ln.output_shape.as_deref(), ln.params),
        ("LayerNormalization", Some("(None, 6, 6, 8)"), 16)
    );
    assert_eq!(s.params.trainable, (3 * 3 * 2 * 8 + 8) + 16 + 16 + (8 * 3 + 3));
    let text = s.to_string();
    assert!(text.contains("(GroupNormalization)") && text.contains("(LayerNormalization)"), "{text}");
    Ok(())
}

#[test]
fn bad_group_counts_and_axes_are_clear_errors() {
    let gn = GroupNormalization::new(3).named("gn3");
    let err = gn.build(&InputSpec::new([2, 4, 4, 8])).unwrap_err();
    assert!(matches!(err, Error::Layer { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("gn3") && text.contains("groups = 3") && text.contains("8 channels"), "{text}");
    let err = GroupNormalization::new(0).named("gn0").call(&input(&[2, 4]), Mode::Train).unwrap_err().to_string();
    assert!(err.contains("gn0") && err.contains("groups = 0"), "{err}");
    let err = GroupNormalization::new(1).named("gn_rank").build(&InputSpec::new([4])).unwrap_err().to_string();
    assert!(err.contains("gn_rank") && err.contains("[4]"), "{err}");

    let err =
        LayerNormalization::new().axis(1).named("ln_mid").build(&InputSpec::new([2, 3, 4])).unwrap_err().to_string();
    assert!(err.contains("ln_mid") && err.contains("[1]") && err.contains("trailing"), "{err}");
    let err =
        LayerNormalization::new().axis(-4).named("ln_far").build(&InputSpec::new([2, 3, 4])).unwrap_err().to_string();
    assert!(err.contains("ln_far") && err.contains("axis -4") && err.contains("rank 3"), "{err}");

    // Built for 16 trailing values, called with 8: the op's shape error, naming the layer.
    let ln = LayerNormalization::new().named("ln_built");
    ln.build(&InputSpec::new([2, 16])).unwrap();
    let err = ln.call(&input(&[2, 8]), Mode::Infer).unwrap_err().to_string();
    assert!(err.contains("ln_built") && err.contains("[16]") && err.contains("[2, 8]"), "{err}");
}

#[test]
fn layers_compute_the_tensor_ops_and_train_equals_infer() -> Result<()> {
    let x = input(&[3, 5, 5, 8]);
    let gn = GroupNormalization::new(2);
    let train = gn.call(&x, Mode::Train)?;
    let infer = gn.call(&x, Mode::Infer)?;
    assert_eq!(train.to_vec::<f32>()?, infer.to_vec::<f32>()?);
    let gamma = gn.gamma().unwrap().value();
    let beta = gn.beta().unwrap().value();
    let op = x.group_norm(2, Some(&gamma), Some(&beta), 1e-3)?;
    assert_eq!(train.to_vec::<f32>()?, op.to_vec::<f32>()?);

    let ln = LayerNormalization::new().axes(&[-1, -2]);
    let train = ln.call(&x, Mode::Train)?;
    assert_eq!(train.to_vec::<f32>()?, ln.call(&x, Mode::Infer)?.to_vec::<f32>()?);
    // With gamma 1 and beta 0, each [5, 8] slice has mean 0 and variance var / (var + eps).
    let y = train.to_vec::<f32>()?;
    for slice in y.chunks(40) {
        let mean = slice.iter().sum::<f32>() / 40.0;
        assert!(mean.abs() < 1e-5, "{mean}");
    }
    // Instance norm and one group are the two ends of group norm.
    let one = GroupNormalization::new(1).center(false).scale(false).call(&x, Mode::Infer)?;
    let whole = LayerNormalization::new().axes(&[1, 2, 3]).center(false).scale(false).call(&x, Mode::Infer)?;
    assert!(max_abs_diff(&one, &whole) < 1e-6);
    // Keras' groups=-1: one group per channel, for any channel count; each channel of
    // each sample is normalised over its pixels.
    let per_channel = GroupNormalization::per_channel().center(false).scale(false).call(&x, Mode::Infer)?;
    let eight = GroupNormalization::new(8).center(false).scale(false).call(&x, Mode::Infer)?;
    assert_eq!(per_channel.to_vec::<f32>()?, eight.to_vec::<f32>()?);
    let three = GroupNormalization::per_channel().call(&input(&[2, 4, 4, 3]), Mode::Infer)?;
    assert_eq!(three.dims(), &[2, 4, 4, 3]);
    assert_eq!(GroupNormalization::per_channel().groups(), None);
    Ok(())
}

#[test]
fn gradients_reach_gamma_and_beta() -> Result<()> {
    for layer in [&GroupNormalization::new(2) as &dyn Layer, &LayerNormalization::new() as &dyn Layer] {
        let x = input(&[2, 3, 3, 4]);
        layer.build(&InputSpec::from(&x))?;
        let tape = GradientTape::new();
        let loss = tape.record(|| layer.call(&x, Mode::Train)?.mul(&x)?.sum_all())?;
        let vars = layer.trainable_variables();
        assert_eq!(vars.len(), 2);
        let grads = tape.gradient(&loss, &vars)?;
        for (v, g) in vars.iter().zip(&grads) {
            let g = g.as_ref().unwrap_or_else(|| panic!("no gradient for {}", v.name()));
            assert_eq!(g.dims(), v.value().dims());
            assert!(g.to_vec::<f32>()?.iter().any(|&e| e != 0.0), "{}", v.name());
        }
    }
    Ok(())
}
