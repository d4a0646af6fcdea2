//! Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate) through
//! `Layer::call_many`, inside composite layers and summaries; GlobalMaxPooling2D and
//! `keepdims`; Reshape, Permute, RepeatVector; Embedding. Shapes, values, errors,
//! summary rows, parameter counts and gradients (f64 finite differences through a
//! composite layer).

use tapegrad_layers::{
    add, concatenate, subtract, Add, Average, Concatenate, Dense, Embedding, GlobalAveragePooling2D,
    GlobalMaxPooling2D, InputSpec, Layer, Maximum, Minimum, Mode, Multiply, Permute, RepeatVector, Reshape, Result,
    Subtract,
};
use tapegrad_tensor::testing::check_gradients;
use tapegrad_tensor::{DType, Device, GradientTape, Tensor};

fn input(shape: &[usize], seed: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (((i + seed) * 37 % 11) as f32 - 5.0) / 5.0).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn err(r: Result<Tensor>) -> String {
    r.expect_err("an error").to_string()
}

#[test]
fn elementwise_merges_compute_keras_values() -> Result<()> {
    let (a, b, c) = (input(&[2, 3], 0), input(&[2, 3], 4), input(&[2, 3], 7));
    let (va, vb, vc) = (values(&a), values(&b), values(&c));
    let zip3 = |f: &dyn Fn(f32, f32, f32) -> f32| -> Vec<f32> { (0..6).map(|i| f(va[i], vb[i], vc[i])).collect() };
    let m = Mode::Infer;
    assert_eq!(values(&Add::new().call_many(&[&a, &b, &c], m)?), zip3(&|x, y, z| x + y + z));
    assert_eq!(values(&Multiply::new().call_many(&[&a, &b, &c], m)?), zip3(&|x, y, z| x * y * z));
    assert_eq!(values(&Maximum::new().call_many(&[&a, &b, &c], m)?), zip3(&|x, y, z| x.max(y).max(z)));
    assert_eq!(values(&Minimum::new().call_many(&[&a, &b, &c], m)?), zip3(&|x, y, z| x.min(y).min(z)));
    let avg = values(&Average::new().call_many(&[&a, &b, &c], m)?);
    for (got, want) in avg.iter().zip(zip3(&|x, y, z| (x + y + z) / 3.0)) {
        assert!((got - want).abs() < 1e-6);
    }
    assert_eq!(values(&Subtract::new().call_many(&[&a, &b], m)?), zip3(&|x, y, _| x - y));
    assert_eq!(values(&subtract(&[&a, &b])?), zip3(&|x, y, _| x - y));
    assert_eq!(values(&add(&[&a, &b])?), zip3(&|x, y, _| x + y));
    Ok(())
}

#[test]
fn merge_layers_reject_bad_inputs_with_the_layer_named() {
    let (a, b) = (input(&[2, 3], 0), input(&[2, 4], 1));
    let add_layer = Add::new().named("skip_add");
    let e = err(add_layer.call_many(&[&a, &b], Mode::Infer));
    assert!(e.contains("skip_add") && e.contains("[2, 3]") && e.contains("[2, 4]"), "{e}");
    let e = err(add_layer.call(&a, Mode::Infer));
    assert!(e.contains("skip_add") && e.contains("call_many"), "{e}");
    let e = err(add_layer.call_many(&[], Mode::Infer));
    assert!(e.contains("skip_add") && e.contains("at least one"), "{e}");
    let e = err(Subtract::new().named("diff").call_many(&[&a, &a, &a], Mode::Infer));
    assert!(e.contains("diff") && e.contains("exactly two") && e.contains('3'), "{e}");
    let e = err(Multiply::new().named("prod").call_many(&[&a, &a.cast(DType::F64).unwrap()], Mode::Infer));
    assert!(e.contains("prod"), "{e}");
    // A one-input layer called on two inputs through the same entry point.
    let e = err(Dense::new(2).named("head").call_many(&[&a, &a], Mode::Infer));
    assert!(e.contains("head") && e.contains("exactly one input") && e.contains('2'), "{e}");
    assert_eq!(Dense::new(5).call_many(&[&a], Mode::Infer).unwrap().dims(), &[2, 5]);
}

#[test]
fn concatenate_checks_axis_and_other_dims() -> Result<()> {
    let (a, b) = (input(&[2, 4, 4, 3], 0), input(&[2, 4, 4, 5], 1));
    let cat = Concatenate::new(-1).named("cat");
    let y = cat.call_many(&[&a, &b], Mode::Infer)?;
    assert_eq!(y.dims(), &[2, 4, 4, 8]);
    assert_eq!(values(&y.narrow(-1, 3, 5)?), values(&b));
    assert_eq!(Concatenate::new(3).call_many(&[&a, &b], Mode::Infer)?.dims(), &[2, 4, 4, 8]);
    assert_eq!(concatenate(&[&a, &a], 1)?.dims(), &[2, 8, 4, 3]);
    for axis in [4, -5] {
        let e = err(Concatenate::new(axis).named("cat_axis").call_many(&[&a, &b], Mode::Infer));
        assert!(
            e.contains("cat_axis")
                && e.contains(&format!("axis {axis}"))
                && e.contains("[2, 4, 4, 3]")
                && e.contains("[2, 4, 4, 5]"),
            "{e}"
        );
    }
    let e = err(Concatenate::new(1).named("cat_mismatch").call_many(&[&a, &b], Mode::Infer));
    assert!(e.contains("cat_mismatch") && e.contains("axis 1") && e.contains("[2, 4, 4, 5]"), "{e}");
    let e = err(cat.call_many(&[&a, &input(&[2, 4, 3], 0)], Mode::Infer));
    assert!(e.contains("cat") && e.contains("[2, 4, 3]"), "{e}");
    let e = err(cat.call(&a, Mode::Infer));
    assert!(e.contains("cat") && e.contains("merge layer"), "{e}");
    Ok(())
}

/// A DenseNet-style block: each Dense sees the concatenation of the input and every
/// earlier output; a residual Add and a Maximum merge the ends.
struct DenseBlock {
    fc1: Dense,
    fc2: Dense,
    concat1: Concatenate,
    concat2: Concatenate,
    proj: Dense,
    add: Add,
    max: Maximum,
}

impl DenseBlock {
    fn new() -> Self {
        DenseBlock {
            fc1: Dense::new(3),
            fc2: Dense::new(3),
            concat1: Concatenate::new(-1),
            concat2: Concatenate::new(-1),
            proj: Dense::new(4),
            add: Add::new(),
            max: Maximum::new(),
        }
    }
}

impl Layer for DenseBlock {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let h1 = self.fc1.call(x, mode)?.tanh()?;
        let c1 = self.concat1.call_many(&[x, &h1], mode)?;
        let h2 = self.fc2.call(&c1, mode)?.tanh()?;
        let c2 = self.concat2.call_many(&[&c1, &h2], mode)?;
        let p = self.proj.call(&c2, mode)?;
        let sum = self.add.call_many(&[x, &p], mode)?;
        self.max.call_many(&[&sum, &p], mode)
    }

    fn visit_sublayers(&self, visit: &mut dyn FnMut(&str, &dyn Layer)) {
        visit("fc1", &self.fc1);
        visit("concat1", &self.concat1);
        visit("fc2", &self.fc2);
        visit("concat2", &self.concat2);
        visit("proj", &self.proj);
        visit("add", &self.add);
        visit("max", &self.max);
    }
}

#[test]
fn merge_layers_in_a_composite_layer_show_in_the_summary_with_no_params() -> Result<()> {
    let block = DenseBlock::new();
    let s = block.summary(&InputSpec::new([1, 4]))?;
    let rows: Vec<(String, String, usize)> =
        s.rows.iter().map(|r| (r.type_name.clone(), r.output_shape.clone().unwrap(), r.params)).collect();
    let expected = [
        ("Dense", "(None, 3)", 4 * 3 + 3),
        ("Concatenate", "(None, 7)", 0),
        ("Dense", "(None, 3)", 7 * 3 + 3),
        ("Concatenate", "(None, 10)", 0),
        ("Dense", "(None, 4)", 10 * 4 + 4),
        ("Add", "(None, 4)", 0),
        ("Maximum", "(None, 4)", 0),
    ];
    let expected: Vec<(String, String, usize)> =
        expected.iter().map(|(t, s, p)| (t.to_string(), s.to_string(), *p)).collect();
    assert_eq!(rows, expected);
    assert_eq!(s.params.trainable, 15 + 24 + 44);
    let names: Vec<String> = block.named_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc1.kernel", "fc1.bias", "fc2.kernel", "fc2.bias", "proj.kernel", "proj.bias"]);
    assert!(s.to_string().contains("(Concatenate)"));
    Ok(())
}

#[test]
fn gradients_flow_through_merge_layers_in_a_composite_layer() -> Result<()> {
    let block = DenseBlock::new();
    // Shifted off 0, where Maximum(x + p, p) has its kink (finite differences straddle it).
    let x = input(&[3, 4], 2).cast(DType::F64)?.add_scalar(0.1)?;
    block.build(&InputSpec::from(&x))?;
    // Every weight gets a gradient through the concatenations and merges.
    let tape = GradientTape::new();
    let loss = tape.record(|| block.call(&x, Mode::Train)?.square()?.sum_all())?;
    let grads = tape.gradient(&loss, &block.trainable_variables())?;
    assert_eq!(grads.len(), 6);
    assert!(grads.iter().all(|g| g.as_ref().is_some_and(|g| g.to_vec_f64().unwrap().iter().any(|v| *v != 0.0))));
    // And the input gradient matches central finite differences in f64.
    check_gradients(|xs| block.call(&xs[0], Mode::Train)?.square()?.sum_all(), &[x])?;
    let (a, b) = (input(&[2, 3], 1).cast(DType::F64)?, input(&[2, 3], 5).cast(DType::F64)?);
    let average = Average::new();
    let subtract_layer = Subtract::new();
    let cat = Concatenate::new(0);
    check_gradients(
        |xs| {
            let avg = average.call_many(&[&xs[0], &xs[1]], Mode::Train)?;
            let diff = subtract_layer.call_many(&[&avg, &xs[1]], Mode::Train)?;
            cat.call_many(&[&diff, &xs[0]], Mode::Train)?.square()?.sum_all()
        },
        &[a, b],
    )?;
    Ok(())
}

#[test]
fn global_max_pooling_and_keepdims() -> Result<()> {
    let x = input(&[2, 3, 4, 5], 0);
    let v = values(&x);
    let y = GlobalMaxPooling2D::new().call(&x, Mode::Infer)?;
    assert_eq!(y.dims(), &[2, 5]);
    let want: Vec<f32> = (0..10)
        .map(|nc| {
            let (n, c) = (nc / 5, nc % 5);
            (0..12).map(|p| v[n * 60 + p * 5 + c]).fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    assert_eq!(values(&y), want);
    let kept = GlobalMaxPooling2D::new().keepdims(true).call(&x, Mode::Infer)?;
    assert_eq!(kept.dims(), &[2, 1, 1, 5]);
    assert_eq!(values(&kept), want);
    assert_eq!(GlobalAveragePooling2D::new().keepdims(true).call(&x, Mode::Infer)?.dims(), &[2, 1, 1, 5]);
    assert_eq!(GlobalAveragePooling2D::new().call(&x, Mode::Infer)?.dims(), &[2, 5]);
    let e = err(GlobalMaxPooling2D::new().named("gmp").call(&input(&[2, 5], 0), Mode::Infer));
    assert!(e.contains("gmp") && e.contains("[2, 5]"), "{e}");
    let xd = x.cast(DType::F64)?;
    let pool = GlobalMaxPooling2D::new().keepdims(true);
    check_gradients(|xs| pool.call(&xs[0], Mode::Train)?.square()?.sum_all(), &[xd])?;
    Ok(())
}

#[test]
fn reshape_permute_and_repeat_vector() -> Result<()> {
    let x = input(&[2, 12], 0);
    assert_eq!(Reshape::new(&[3, 4]).call(&x, Mode::Infer)?.dims(), &[2, 3, 4]);
    let r = Reshape::new(&[2, -1, 3]).call(&x, Mode::Infer)?;
    assert_eq!(r.dims(), &[2, 2, 2, 3]);
    assert_eq!(values(&r), values(&x));
    for (target, part) in [(&[5, -1][..], "does not fit"), (&[-1, -1], "more than one -1"), (&[0, 12], "entry 0")] {
        let e = err(Reshape::new(target).named("rs").call(&x, Mode::Infer));
        assert!(e.contains("rs") && e.contains(part) && e.contains("[2, 12]"), "{target:?}: {e}");
    }
    let x3 = input(&[2, 3, 4], 0);
    let p = Permute::new(&[2, 1]).call(&x3, Mode::Infer)?;
    assert_eq!(p.dims(), &[2, 4, 3]);
    assert_eq!(values(&p), values(&x3.permute(&[0, 2, 1])?));
    for dims in [&[1, 1][..], &[0, 1], &[1, 2, 3]] {
        let e = err(Permute::new(dims).named("perm").call(&x3, Mode::Infer));
        assert!(e.contains("perm") && e.contains("permutation") && e.contains("[2, 3, 4]"), "{dims:?}: {e}");
    }
    let rep = RepeatVector::new(3).call(&input(&[2, 4], 1), Mode::Infer)?;
    assert_eq!(rep.dims(), &[2, 3, 4]);
    let v = values(&input(&[2, 4], 1));
    assert_eq!(values(&rep)[4..8], v[0..4]);
    assert_eq!(values(&rep)[12..16], v[4..8]);
    let e = err(RepeatVector::new(3).named("rv").call(&x3, Mode::Infer));
    assert!(e.contains("rv") && e.contains("[2, 3, 4]"), "{e}");
    let xd = x3.cast(DType::F64)?;
    let (perm, reshape) = (Permute::new(&[2, 1]), Reshape::new(&[-1]));
    let repeat = RepeatVector::new(2);
    check_gradients(
        |xs| {
            let y = reshape.call(&perm.call(&xs[0], Mode::Train)?, Mode::Train)?;
            let weights = Tensor::arange(0.0, 24.0, 1.0, DType::F64, &Device::Cpu)?.reshape([2, 12])?;
            repeat.call(&y.mul(&weights)?, Mode::Train)?.square()?.sum_all()
        },
        &[xd],
    )?;
    Ok(())
}

#[test]
fn embedding_looks_up_rows_counts_params_and_names_bad_ids() -> Result<()> {
    tapegrad_layers::random::set_seed(3);
    let embed = Embedding::new(10, 4).named("embed");
    let ids = Tensor::from_vec(vec![1i64, 9, 1, 0, 3, 3], [2, 3], &Device::Cpu)?;
    let y = embed.call(&ids, Mode::Infer)?;
    assert_eq!(y.dims(), &[2, 3, 4]);
    let table = embed.embeddings().expect("built").value();
    let t = values(&table);
    assert!(t.iter().all(|v| (-0.05..0.05).contains(v)), "Keras' uniform(-0.05, 0.05)");
    assert_eq!(values(&y)[4..8], t[36..40], "id 9 is row 9");
    assert_eq!(embed.count_params().trainable, 40);
    let names: Vec<String> = embed.named_variables().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["embeddings"]);
    let e = err(embed.call(&Tensor::from_vec(vec![2i64, 10], [1, 2], &Device::Cpu)?, Mode::Infer));
    assert!(e.contains("embed") && e.contains("index 10") && e.contains("0..10"), "{e}");
    let e = err(embed.call(&Tensor::from_vec(vec![-1i64], [1, 1], &Device::Cpu)?, Mode::Infer));
    assert!(e.contains("embed") && e.contains("index -1"), "{e}");
    let e = err(Embedding::new(0, 4).named("empty").call(&ids, Mode::Infer));
    assert!(e.contains("empty") && e.contains("input_dim (0)"), "{e}");
    // Float ids are cast, as Keras does; a summary traces them that way.
    assert_eq!(values(&embed.call(&ids.cast(DType::F32)?, Mode::Infer)?), values(&y));
    let fresh = Embedding::new(50, 8);
    let s = fresh.summary(&InputSpec::new([1, 7]))?;
    assert_eq!(s.rows[0].output_shape.as_deref(), Some("(None, 7, 8)"));
    assert_eq!(s.rows[0].params, 400);
    // The gradient adds up over repeated ids.
    let tape = GradientTape::new();
    let loss = tape.record(|| embed.call(&ids, Mode::Train)?.sum_all())?;
    let g = tape.gradient(&loss, &embed.trainable_variables())?.remove(0).expect("gradient");
    let g = values(&g);
    let counts = [1.0f32, 2.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    for (row, &count) in counts.iter().enumerate() {
        assert_eq!(g[row * 4..row * 4 + 4], [count; 4], "row {row}");
    }
    Ok(())
}
