//! `GradientTape::gradient_with_ready_hook`: each source is reported once, with the
//! gradient `gradient` returns, as soon as no later rule adds to it — the last layer's
//! weights before the first layer's — and an error from the hook ends the walk.

use tapegrad_tensor::{Device, Error, GradientTape, Tensor, Variable};

fn var(name: &str, v: Vec<f32>, shape: &[usize]) -> Variable {
    Variable::new(name, Tensor::from_vec(v, shape.to_vec(), &Device::Cpu).unwrap(), true)
}

/// A two-layer network: loss = sum(relu(x w1) w2) + sum(b^2), with w1 also read by a
/// second term so its gradient gathers from two rules.
fn two_layers(w1: &Variable, w2: &Variable, b: &Variable, tape: &GradientTape) -> Tensor {
    let x = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 1.5, 0.25, -0.75], [2, 3], &Device::Cpu).unwrap();
    tape.record(|| {
        let h = x.matmul(&w1.value())?.relu()?;
        let y = h.matmul(&w2.value())?.sum_all()?;
        let reg = w1.value().square()?.sum_all()?;
        let bias = b.value().square()?.sum_all()?;
        y.add(&reg)?.add(&bias)
    })
    .unwrap()
}

#[test]
fn sources_are_reported_once_in_backward_order_with_their_final_gradients() {
    let w1 = var("w1", (0..12).map(|i| (i as f32 - 5.0) * 0.1).collect(), &[3, 4]);
    let w2 = var("w2", (0..4).map(|i| i as f32 * 0.3 - 0.4).collect(), &[4, 1]);
    let b = var("b", vec![2.0], &[1]);
    let reference = {
        let tape = GradientTape::new();
        let loss = two_layers(&w1, &w2, &b, &tape);
        tape.gradient(&loss, &[&w1, &w2, &b]).unwrap()
    };
    let tape = GradientTape::new();
    let loss = two_layers(&w1, &w2, &b, &tape);
    let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
    let grads = tape
        .gradient_with_ready_hook(&loss, &[&w1, &w2, &b], &mut |i, g| {
            seen.push((i, g.to_vec::<f32>()?));
            Ok(())
        })
        .unwrap();
    // b's and w2's rules run before the rules reading w1 (recorded first) finish.
    let order: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, vec![2, 1, 0]);
    for (i, g) in &seen {
        assert_eq!(g, &reference[*i].as_ref().unwrap().to_vec::<f32>().unwrap());
        assert_eq!(g, &grads[*i].as_ref().unwrap().to_vec::<f32>().unwrap());
    }
}

#[test]
fn unused_sources_are_not_reported_and_the_target_itself_is_reported_last() {
    let w = var("w", vec![1.0, 2.0], &[2]);
    let unused = var("unused", vec![1.0], &[1]);
    let tape = GradientTape::persistent();
    let loss = tape.record(|| w.value().square()?.sum_all()).unwrap();
    let mut seen = Vec::new();
    let grads = tape
        .gradient_with_ready_hook(&loss, &[&w.value_untracked(), &unused.value_untracked(), &loss], &mut |i, _| {
            seen.push(i);
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, vec![0, 2]);
    assert!(grads[1].is_none());
    assert_eq!(grads[2].as_ref().unwrap().to_vec::<f32>().unwrap(), vec![1.0]);
}

#[test]
fn a_hook_error_ends_the_walk_and_non_scalar_targets_are_refused() {
    let w = var("w", vec![1.0, 2.0], &[2]);
    let tape = GradientTape::persistent();
    let y = tape.record(|| w.value().square()).unwrap();
    let err = tape.gradient_with_ready_hook(&y, &[&w], &mut |_, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("[2]"), "{err}");
    let loss = tape.record(|| y.sum_all()).unwrap();
    let err = tape
        .gradient_with_ready_hook(&loss, &[&w], &mut |_, _| Err(Error::Invalid { op: "hook", msg: "stop".into() }))
        .unwrap_err();
    assert!(err.to_string().contains("hook: stop"), "{err}");
}
