//! Optimizer steps against the update formulas computed in f64 here, and against PyTorch
//! trajectories (tests/fixtures/make_optimizer_fixtures.py).

use safetensors::SafeTensors;
use tapegrad_layers::optimizers::schedules::StepDecay;
use tapegrad_layers::optimizers::{clip_by_global_norm, Adam, AdamW, Optimizer, Sgd};
use tapegrad_layers::Result;
use tapegrad_tensor::{Device, Tensor, Variable};

const STEPS: usize = 6;

fn grads_at(t: usize, n: usize) -> Vec<f64> {
    (0..n).map(|i| ((t * 7 + i * 3) as f64 * 0.37).sin() + 0.1 * i as f64).collect()
}

fn w0(n: usize) -> Vec<f64> {
    (0..n).map(|i| 0.5 - 0.3 * i as f64).collect()
}

/// Runs `opt` for STEPS steps on one f64 variable with the gradients above; returns the
/// value after each step.
fn run(opt: &mut dyn Optimizer, n: usize) -> Result<Vec<Vec<f64>>> {
    let var = Variable::new("w", Tensor::from_vec(w0(n), [n], &Device::Cpu)?, true);
    let mut out = Vec::new();
    for t in 0..STEPS {
        let g = Tensor::from_vec(grads_at(t, n), [n], &Device::Cpu)?;
        opt.apply_gradients(&[Some(g)], std::slice::from_ref(&var))?;
        out.push(var.value_untracked().to_vec::<f64>()?);
    }
    Ok(out)
}

fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], tol: f64, what: &str) {
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}: step {t}, element {i}: {a} vs {b}");
        }
    }
}

/// Keras' SGD in plain f64.
fn sgd_reference(lr: impl Fn(usize) -> f64, momentum: f64, nesterov: bool, wd: f64, n: usize) -> Vec<Vec<f64>> {
    let mut w = w0(n);
    let mut v = vec![0.0; n];
    let mut out = Vec::new();
    for t in 0..STEPS {
        let g = grads_at(t, n);
        for i in 0..n {
            let gi = g[i] + wd * w[i];
            if momentum == 0.0 {
                w[i] -= lr(t) * gi;
                continue;
            }
            v[i] = momentum * v[i] - lr(t) * gi;
            w[i] += if nesterov { momentum * v[i] - lr(t) * gi } else { v[i] };
        }
        out.push(w.clone());
    }
    out
}

/// Keras' Adam (and AdamW with wd > 0) in plain f64.
fn adam_reference(lr: f64, b1: f64, b2: f64, eps: f64, wd: f64, n: usize) -> Vec<Vec<f64>> {
    let (mut w, mut m, mut v) = (w0(n), vec![0.0; n], vec![0.0; n]);
    let mut out = Vec::new();
    for t in 0..STEPS {
        let g = grads_at(t, n);
        let step = (t + 1) as i32;
        let lr_t = lr * (1.0 - b2.powi(step)).sqrt() / (1.0 - b1.powi(step));
        for i in 0..n {
            w[i] -= lr * wd * w[i];
            m[i] += (g[i] - m[i]) * (1.0 - b1);
            v[i] += (g[i] * g[i] - v[i]) * (1.0 - b2);
            w[i] -= lr_t * m[i] / (v[i].sqrt() + eps);
        }
        out.push(w.clone());
    }
    out
}

#[test]
fn sgd_matches_the_keras_formulas() -> Result<()> {
    let n = 4;
    assert_close(&run(&mut Sgd::new(0.1), n)?, &sgd_reference(|_| 0.1, 0.0, false, 0.0, n), 1e-13, "sgd");
    let mut m = Sgd::new(0.1).momentum(0.9);
    assert_close(&run(&mut m, n)?, &sgd_reference(|_| 0.1, 0.9, false, 0.0, n), 1e-13, "momentum");
    let mut nes = Sgd::new(0.05).momentum(0.8).nesterov(true).weight_decay(0.01);
    assert_close(&run(&mut nes, n)?, &sgd_reference(|_| 0.05, 0.8, true, 0.01, n), 1e-13, "nesterov");
    let schedule = StepDecay { initial: 0.1, factor: 0.5, step_size: 2 };
    let mut sched = Sgd::new(schedule).momentum(0.9);
    let lr = |t: usize| 0.1 * 0.5f64.powi((t / 2) as i32);
    assert_close(&run(&mut sched, n)?, &sgd_reference(lr, 0.9, false, 0.0, n), 1e-13, "scheduled");
    assert_eq!(sched.iterations(), STEPS as u64);
    assert_eq!(sched.learning_rate(), lr(STEPS));
    Ok(())
}

#[test]
fn adam_and_adamw_match_the_keras_formulas() -> Result<()> {
    let n = 5;
    let got = run(&mut Adam::new(0.01), n)?;
    assert_close(&got, &adam_reference(0.01, 0.9, 0.999, 1e-7, 0.0, n), 1e-12, "adam");
    // A large epsilon makes its placement visible: Keras adds it to sqrt(v), not to
    // sqrt(v_hat) as PyTorch does.
    let got = run(&mut Adam::new(0.01).epsilon(0.1).beta_1(0.8).beta_2(0.99), n)?;
    assert_close(&got, &adam_reference(0.01, 0.8, 0.99, 0.1, 0.0, n), 1e-12, "adam eps");
    let torch_placement = {
        let (mut w, mut m, mut v) = (w0(n), vec![0.0; n], vec![0.0; n]);
        let g = grads_at(0, n);
        for i in 0..n {
            m[i] = 0.2 * g[i];
            v[i] = 0.01 * g[i] * g[i];
            w[i] -= 0.01 * (m[i] / 0.2) / ((v[i] / 0.01).sqrt() + 0.1);
        }
        w
    };
    assert!((got[0][1] - torch_placement[1]).abs() > 1e-4, "the test must tell the placements apart");
    let got = run(&mut AdamW::new(0.01).weight_decay(0.1), n)?;
    assert_close(&got, &adam_reference(0.01, 0.9, 0.999, 1e-7, 0.1, n), 1e-12, "adamw");
    Ok(())
}

#[test]
fn optimizers_match_pytorch_trajectories() -> Result<()> {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optimizers.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let read = |name: &str| -> (Vec<f64>, Vec<usize>) {
        let t = file.tensor(name).unwrap();
        let v = t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        (v, t.shape().to_vec())
    };
    let (w0, w_shape) = read("w0");
    let (grads, g_shape) = read("grads");
    let n = w_shape[0];
    // Epsilon 0 is rejected (a zero gradient would make the update 0/0); the smallest
    // positive f64 leaves the fixture's eps-free trajectory unchanged where v > 0.
    let mut cases: Vec<(&str, Box<dyn Optimizer>)> = vec![
        ("sgd_momentum", Box::new(Sgd::new(0.1).momentum(0.9))),
        ("sgd_nesterov_wd", Box::new(Sgd::new(0.1).momentum(0.9).nesterov(true).weight_decay(0.01))),
        ("adam", Box::new(Adam::new(0.01).epsilon(f64::MIN_POSITIVE))),
        ("adamw", Box::new(AdamW::new(0.01).epsilon(f64::MIN_POSITIVE).weight_decay(0.1))),
    ];
    for (name, opt) in cases.iter_mut() {
        let (want, _) = read(name);
        let var = Variable::new("w", Tensor::from_vec(w0.clone(), [n], &Device::Cpu)?, true);
        for t in 0..g_shape[0] {
            let g = Tensor::from_vec(grads[t * n..(t + 1) * n].to_vec(), [n], &Device::Cpu)?;
            opt.apply_gradients(&[Some(g)], std::slice::from_ref(&var))?;
            let got = var.value_untracked().to_vec::<f64>()?;
            for i in 0..n {
                let w = want[t * n + i];
                assert!((got[i] - w).abs() <= 1e-12 * w.abs().max(1.0), "{name} step {t} [{i}]: {} vs {w}", got[i]);
            }
        }
    }
    Ok(())
}

#[test]
fn none_gradients_are_skipped_and_mismatches_reported() -> Result<()> {
    let a = Variable::new("a", Tensor::from_vec(vec![1.0f32, 2.0], [2], &Device::Cpu)?, true);
    let b = Variable::new("b", Tensor::from_vec(vec![3.0f32], [1], &Device::Cpu)?, true);
    let mut opt = Adam::new(0.1);
    let g = Tensor::from_vec(vec![1.0f32, -1.0], [2], &Device::Cpu)?;
    opt.apply_gradients(&[Some(g.clone()), None], &[a.clone(), b.clone()])?;
    assert_eq!(b.value_untracked().to_vec::<f32>()?, vec![3.0]);
    assert_ne!(a.value_untracked().to_vec::<f32>()?, vec![1.0, 2.0]);
    assert!(opt.slots().get(&b).is_none(), "no state for a variable never updated");
    assert_eq!(opt.slots().get(&a).unwrap().len(), 2);
    let err = opt.apply_gradients(&[Some(g.clone())], &[a.clone(), b.clone()]).unwrap_err().to_string();
    assert!(err.contains("1 gradients given for 2 variables"), "{err}");
    let err = opt.apply_gradients(&[Some(g)], std::slice::from_ref(&b)).unwrap_err().to_string();
    assert!(err.contains("gradient of b") && err.contains("has shape [2]"), "{err}");
    Ok(())
}

#[test]
fn clipping_by_global_norm() -> Result<()> {
    let g1 = Tensor::from_vec(vec![3.0f64, 0.0], [2], &Device::Cpu)?;
    let g2 = Tensor::from_vec(vec![4.0f64], [1], &Device::Cpu)?;
    let (clipped, norm) = clip_by_global_norm(&[Some(g1.clone()), None, Some(g2.clone())], 1.0)?;
    assert_eq!(norm.to_scalar::<f64>()?, 5.0);
    assert!(clipped[1].is_none());
    let c0 = clipped[0].as_ref().unwrap().to_vec::<f64>()?;
    let c2 = clipped[2].as_ref().unwrap().to_vec::<f64>()?;
    assert!((c0[0] - 0.6).abs() < 1e-15 && c0[1] == 0.0 && (c2[0] - 0.8).abs() < 1e-15, "{c0:?} {c2:?}");
    // Below the limit nothing changes.
    let (same, _) = clip_by_global_norm(&[Some(g1.clone())], 10.0)?;
    assert_eq!(same[0].as_ref().unwrap().to_vec::<f64>()?, vec![3.0, 0.0]);
    // As an optimizer option: SGD with lr 1 moves by exactly the clipped gradient.
    let v = Variable::new("v", Tensor::from_vec(vec![0.0f64, 0.0], [2], &Device::Cpu)?, true);
    Sgd::new(1.0).global_clipnorm(1.5).apply_gradients(&[Some(g1)], std::slice::from_ref(&v))?;
    assert_eq!(v.value_untracked().to_vec::<f64>()?, vec![-1.5, 0.0]);
    Ok(())
}
