//! The GradientTape's semantics, as TensorFlow's: what is recorded and when, what a
//! gradient call returns and frees, variables, persistence, nesting, stop_recording.

mod common;

use common::*;
use tapegrad_tensor::{DType, Device, GradientTape, Tensor, Variable};

fn grad_values(g: &Option<Tensor>) -> Vec<f64> {
    vals(g.as_ref().expect("a gradient"))
}

#[test]
fn a_chain() {
    // y = exp(2x + 1); dy/dx = 2 exp(2x + 1).
    let x = t64(vec![0.0, 0.5], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.affine(2.0, 1.0)?.exp()?.sum_all()).unwrap();
    assert!(tape.num_recorded_ops() >= 3);
    let g = tape.gradient(&y, &[&x]).unwrap();
    assert_close(&grad_values(&g[0]), &[2.0 * 1.0f64.exp(), 2.0 * 2.0f64.exp()], 1e-15);
}

#[test]
fn a_diamond_sums_both_paths() {
    // a = 3x, y = a * a + a: dy/dx = (2a + 1) * 3.
    let x = t64(vec![1.0, -2.0], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape
        .record(|| {
            let a = x.mul_scalar(3.0)?;
            a.mul(&a)?.add(&a)?.sum_all()
        })
        .unwrap();
    let g = tape.gradient(&y, &[&x]).unwrap();
    assert_eq!(grad_values(&g[0]), [21.0, -33.0]);
}

#[test]
fn gradients_of_several_sources_and_of_intermediates() {
    let (x, w) = (t64(vec![1.0, 2.0], &[2]), t64(vec![3.0, 4.0], &[2]));
    let tape = GradientTape::new();
    tape.watch(&x);
    tape.watch(&w);
    let (h, y) = tape
        .record(|| {
            let h = x.mul(&w)?;
            let y = h.square()?.sum_all()?;
            Ok((h, y))
        })
        .unwrap();
    // The target itself, an intermediate, and both sources, in the order asked.
    let g = tape.gradient(&y, &[&y, &h, &w, &x]).unwrap();
    assert_eq!(grad_values(&g[0]), [1.0]);
    assert_eq!(grad_values(&g[1]), [6.0, 16.0]);
    assert_eq!(grad_values(&g[2]), [6.0, 32.0]);
    assert_eq!(grad_values(&g[3]), [18.0, 64.0]);
}

#[test]
fn unconnected_sources_get_none() {
    let (x, z) = (t64(vec![1.0], &[1]), t64(vec![2.0], &[1]));
    let tape = GradientTape::new();
    tape.watch(&x);
    tape.watch(&z);
    let y = tape.record(|| x.square()?.sum_all()).unwrap();
    let never_seen = t64(vec![5.0], &[1]);
    let g = tape.gradient(&y, &[&x, &z, &never_seen]).unwrap();
    assert!(g[0].is_some());
    assert!(g[1].is_none(), "watched but unused");
    assert!(g[2].is_none(), "never watched");

    // An unwatched operand of a recorded op is a constant to the tape (as in TF), even
    // though the op's gradient rule could compute its gradient.
    let c = t64(vec![4.0], &[1]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.mul(&c)?.sum_all()).unwrap();
    let g = tape.gradient(&y, &[&x, &c]).unwrap();
    assert_eq!(grad_values(&g[0]), [4.0]);
    assert!(g[1].is_none(), "an unwatched operand");
}

#[test]
fn persistent_tapes_answer_repeatedly_and_non_persistent_ones_once() {
    let x = t64(vec![2.0], &[1]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let (y, z) = tape.record(|| Ok((x.powf(3.0)?.sum_all()?, x.exp()?.sum_all()?))).unwrap();
    let first = grad_values(&tape.gradient(&y, &[&x]).unwrap()[0]);
    let second = grad_values(&tape.gradient(&y, &[&x]).unwrap()[0]);
    assert_eq!(first, [12.0]);
    assert_eq!(first, second);
    assert_close(&grad_values(&tape.gradient(&z, &[&x]).unwrap()[0]), &[2.0f64.exp()], 1e-15);
    assert!(tape.num_recorded_ops() >= 4, "a persistent tape keeps its recording");

    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.powf(3.0)?.sum_all()).unwrap();
    tape.gradient(&y, &[&x]).unwrap();
    assert_err("second gradient", tape.gradient(&y, &[&x]), &["already", "persistent"]);
    assert_err("recording after gradient", tape.record(|| x.exp()), &["non-persistent", "new tape"]);
}

#[test]
fn nothing_is_recorded_outside_record_or_for_unwatched_tensors() {
    let x = t64(vec![1.0, 2.0], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let _outside = x.exp().unwrap().sum_all().unwrap();
    assert_eq!(tape.num_recorded_ops(), 0, "ops run outside record");
    let unwatched = t64(vec![3.0, 4.0], &[2]);
    tape.record(|| unwatched.exp()?.mul(&unwatched)?.sum_all()).unwrap();
    assert_eq!(tape.num_recorded_ops(), 0, "ops on unwatched tensors");
    // An integer result is never recorded, even from a watched input.
    tape.record(|| x.argmax(0)).unwrap();
    assert_eq!(tape.num_recorded_ops(), 0, "integer outputs");
    // Recordings of several record() calls add up.
    let a = tape.record(|| x.exp()).unwrap();
    assert_eq!(tape.num_recorded_ops(), 1);
    let b = tape.record(|| a.sum_all()).unwrap();
    assert!(tape.num_recorded_ops() > 1);
    let g = tape.gradient(&b, &[&x]).unwrap();
    assert_close(&grad_values(&g[0]), &[1.0f64.exp(), 2.0f64.exp()], 1e-15);
}

#[test]
fn a_non_persistent_tape_frees_its_recording_in_gradient() {
    // `probe` shares the buffer of exp's output `e`, which exp's and mul's gradient rules
    // keep; the caller drops `e` itself, so only the tape can keep the buffer's count at 2.
    let x = t64(vec![1.0, 2.0, 3.0], &[3]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let (probe, y) = tape
        .record(|| {
            let e = x.exp()?;
            let y = e.mul(&x)?.sum_all()?;
            Ok((e.detach(), y))
        })
        .unwrap();
    assert!(tape.num_recorded_ops() > 0);
    assert_eq!(probe.storage_ref_count(), 2, "the tape holds exp's output");
    let g = tape.gradient(&y, &[&x]).unwrap();
    assert_eq!(tape.num_recorded_ops(), 0);
    assert_eq!(probe.storage_ref_count(), 1, "nothing else holds exp's output after gradient");
    let expect: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp() * (1.0 + v)).collect();
    assert_close(&grad_values(&g[0]), &expect, 1e-15);

    // A persistent tape holds what it saved until it is dropped.
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let (probe, y) = tape.record(|| x.exp().and_then(|e| Ok((e.detach(), e.sum_all()?)))).unwrap();
    let recorded = tape.num_recorded_ops();
    tape.gradient(&y, &[&x]).unwrap();
    assert_eq!(tape.num_recorded_ops(), recorded);
    assert_eq!(probe.storage_ref_count(), 2);
    drop(tape);
    assert_eq!(probe.storage_ref_count(), 1);
}

#[test]
fn trainable_variables_are_watched_when_read() {
    let w = Variable::new("w", t64(vec![3.0], &[1]), true);
    let frozen = Variable::new("frozen", t64(vec![5.0], &[1]), false);
    let tape = GradientTape::new();
    let y = tape.record(|| w.value().mul(&frozen.value())?.sum_all()).unwrap();
    let g = tape.gradient(&y, &[&w, &frozen]).unwrap();
    assert_eq!(grad_values(&g[0]), [5.0]);
    assert!(g[1].is_none(), "a non-trainable variable is not watched");

    // watch_variable makes a non-trainable variable a source.
    let tape = GradientTape::new();
    tape.watch_variable(&frozen);
    let y = tape.record(|| w.value().mul(&frozen.value())?.sum_all()).unwrap();
    let g = tape.gradient(&y, &[&w, &frozen]).unwrap();
    assert_eq!((grad_values(&g[0]), grad_values(&g[1])), (vec![5.0], vec![3.0]));

    // A variable read before recording starts is not watched.
    let tape = GradientTape::new();
    let early = w.value();
    let y = tape.record(|| early.square()?.sum_all()).unwrap();
    assert!(tape.gradient(&y, &[&w]).unwrap()[0].is_none());
}

#[test]
fn a_tape_without_auto_watch_watches_only_what_it_is_told() {
    let w = Variable::new("w", t64(vec![3.0], &[1]), true);
    let tape = GradientTape::with_options(false, false);
    let y = tape.record(|| w.value().square()?.sum_all()).unwrap();
    assert_eq!(tape.num_recorded_ops(), 0);
    assert!(tape.gradient(&y, &[&w]).unwrap()[0].is_none());

    let tape = GradientTape::with_options(false, false);
    tape.watch_variable(&w);
    let y = tape.record(|| w.value().square()?.sum_all()).unwrap();
    assert_eq!(grad_values(&tape.gradient(&y, &[&w]).unwrap()[0]), [6.0]);
}

#[test]
fn an_assigned_variable_is_a_new_value() {
    let w = Variable::new("w", t64(vec![3.0], &[1]), true);
    let tape = GradientTape::persistent();
    let y = tape.record(|| w.value().square()?.sum_all()).unwrap();
    let before = w.value_untracked();
    w.assign(t64(vec![4.0], &[1])).unwrap();
    // Gradients are of the value that was read; the variable now holds another tensor.
    assert!(tape.gradient(&y, &[&w]).unwrap()[0].is_none());
    assert_eq!(grad_values(&tape.gradient(&y, &[&before]).unwrap()[0]), [6.0]);
}

#[test]
fn stop_recording_pauses_the_tape() {
    let x = t64(vec![2.0], &[1]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape
        .record(|| {
            let a = x.square()?;
            let b = tape.stop_recording(|| x.exp())?; // a constant to the tape
            assert_eq!(tape.num_recorded_ops(), 1);
            a.add(&b)?.sum_all()
        })
        .unwrap();
    assert_eq!(grad_values(&tape.gradient(&y, &[&x]).unwrap()[0]), [4.0]);
}

#[test]
fn nested_tapes_give_second_derivatives() {
    // d/dx x^3 = 3x^2, d2/dx2 = 6x.
    let x = t64(vec![2.0, -1.0], &[2]);
    let outer = GradientTape::new();
    outer.watch(&x);
    let dy = outer
        .record(|| {
            let inner = GradientTape::new();
            inner.watch(&x);
            let y = inner.record(|| x.powf(3.0)?.sum_all())?;
            let dy = inner.gradient(&y, &[&x])?[0].clone().expect("x is watched");
            assert_eq!(vals(&dy), [12.0, 3.0]);
            dy.sum_all()
        })
        .unwrap();
    let d2 = outer.gradient(&dy, &[&x]).unwrap();
    assert_eq!(grad_values(&d2[0]), [12.0, -6.0]);

    // The same through a composite: d2/dx2 of sum(x * sigmoid(x)) = s'(2 - 4s) + ... checked
    // against its closed form s(1-s)(2 + x(1 - 2s)).
    let outer = GradientTape::new();
    outer.watch(&x);
    let dy = outer
        .record(|| {
            let inner = GradientTape::new();
            inner.watch(&x);
            let y = inner.record(|| x.mul(&x.sigmoid()?)?.sum_all())?;
            inner.gradient(&y, &[&x])?[0].clone().expect("x is watched").sum_all()
        })
        .unwrap();
    let d2 = grad_values(&outer.gradient(&dy, &[&x]).unwrap()[0]);
    let expect: Vec<f64> = [2.0f64, -1.0]
        .iter()
        .map(|&x| {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
        })
        .collect();
    assert_close(&d2, &expect, 1e-14);
}

#[test]
fn a_non_scalar_target_needs_an_output_gradient() {
    let x = t64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = tape.record(|| x.square()).unwrap();
    assert_err("non-scalar target", tape.gradient(&y, &[&x]), &["[2, 3]", "gradient_with_output_gradient"]);
    let seed = t64(vec![1.0, 0.0, 1.0, 0.0, 2.0, 0.5], &[2, 3]);
    let g = tape.gradient_with_output_gradient(&y, &[&x], &seed).unwrap();
    assert_eq!(grad_values(&g[0]), [2.0, 0.0, 6.0, 0.0, 20.0, 6.0]);
    let wrong = t64(vec![1.0; 3], &[3]);
    assert_err("output gradient shape", tape.gradient_with_output_gradient(&y, &[&x], &wrong), &["[3]", "[2, 3]"]);
    let wrong_dtype = t32(vec![1.0; 6], &[2, 3]);
    assert_err("output gradient dtype", tape.gradient_with_output_gradient(&y, &[&x], &wrong_dtype), &["f64", "f32"]);
    // A one-element target of any shape is a scalar.
    let one = tape.record(|| x.sum(&[0, 1], true)).unwrap();
    assert_eq!(one.dims(), [1, 1]);
    assert_eq!(grad_values(&tape.gradient(&one, &[&x]).unwrap()[0]), [1.0; 6]);
}

#[test]
fn an_integer_target_is_refused() {
    let x = t64(vec![1.0, 2.0], &[2]);
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.argmax(0)).unwrap();
    assert_err("integer target", tape.gradient(&y, &[&x]), &["i64", "not differentiable"]);
}

#[test]
fn detach_stops_gradients() {
    let x = t64(vec![3.0], &[1]);
    let tape = GradientTape::new();
    tape.watch(&x);
    // y = x * stop(x): dy/dx = stop(x) = 3, not 2x = 6.
    let y = tape.record(|| x.mul(&x.detach())?.sum_all()).unwrap();
    assert_eq!(grad_values(&tape.gradient(&y, &[&x]).unwrap()[0]), [3.0]);
}

#[test]
fn variable_assign_checks_shape_and_dtype() {
    let v = Variable::new("kernel", t32(vec![1.0, 2.0], &[2]), true);
    assert_err("assign shape", v.assign(t32(vec![1.0, 2.0, 3.0], &[3])), &["Variable.assign", "[2]", "[3]"]);
    assert_err("assign dtype", v.assign(t64(vec![1.0, 2.0], &[2])), &["Variable.assign", "f32", "f64"]);
    assert_err("assign_add broadcast", v.assign_add(&t32(vec![1.0; 6], &[3, 2])), &["[3, 2]"]);
    assert_eq!(v.value_untracked().to_vec::<f32>().unwrap(), [1.0, 2.0], "a failed assign changes nothing");
    assert!(format!("{v:?}").contains("kernel"));
}

#[test]
fn f32_gradients_have_f32_dtype() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2], &Device::Cpu).unwrap();
    let tape = GradientTape::new();
    tape.watch(&x);
    let y = tape.record(|| x.square()?.mean_all()).unwrap();
    let g = tape.gradient(&y, &[&x]).unwrap()[0].clone().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec::<f32>().unwrap(), [1.0, 2.0]);
}

#[test]
fn recording_on_a_tape_that_already_records_records_once() {
    let x = t64(vec![3.0], &[1]);
    let single = GradientTape::new();
    single.watch(&x);
    single.record(|| x.square()?.sum_all()).unwrap();

    let tape = GradientTape::new();
    tape.watch(&x);
    let (h, y) = tape
        .record(|| {
            tape.record(|| {
                let h = x.square()?;
                let y = h.sum_all()?;
                Ok((h, y))
            })
        })
        .unwrap();
    assert_eq!(tape.num_recorded_ops(), single.num_recorded_ops());
    // With an intermediate among the sources, a doubly recorded op would double x's gradient.
    let g = tape.gradient(&y, &[&h, &x]).unwrap();
    assert_eq!((grad_values(&g[0]), grad_values(&g[1])), (vec![1.0], vec![6.0]));
}
