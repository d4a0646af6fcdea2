//! The fused optimizer updates (`tapegrad_tensor::optim`) against the same formulas
//! written with tensor ops (what the layers crate computed before): bit-identical on the
//! CPU, since both evaluate the same operations in the same order and dtype. And their
//! errors.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tapegrad_tensor::optim::{adam_update, sgd_update, AdamStep, SgdStep};
use tapegrad_tensor::{DType, Device, Result, Tensor};

/// SGD written with tensor ops.
fn sgd_reference(w: &Tensor, g: &Tensor, vel: Option<&Tensor>, p: &SgdStep) -> Result<(Tensor, Option<Tensor>)> {
    let g = if p.weight_decay != 0.0 { g.add(&w.mul_scalar(p.weight_decay)?)? } else { g.clone() };
    let lr_g = g.mul_scalar(p.learning_rate)?;
    if p.momentum == 0.0 {
        return Ok((w.sub(&lr_g)?, None));
    }
    let v = match vel {
        Some(v) => v.mul_scalar(p.momentum)?.sub(&lr_g)?,
        None => lr_g.neg()?,
    };
    let w = if p.nesterov { w.add(&v.mul_scalar(p.momentum)?)?.sub(&lr_g)? } else { w.add(&v)? };
    Ok((w, Some(v)))
}

/// Adam written with tensor ops.
fn adam_reference(
    w: &Tensor,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    p: &AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let t = p.step as f64;
    let lr_t = p.learning_rate * (1.0 - p.beta_2.powf(t)).sqrt() / (1.0 - p.beta_1.powf(t));
    let m = match m {
        Some(m) => m.add(&g.sub(m)?.mul_scalar(1.0 - p.beta_1)?)?,
        None => g.mul_scalar(1.0 - p.beta_1)?,
    };
    let g2 = g.square()?;
    let v = match v {
        Some(v) => v.add(&g2.sub(v)?.mul_scalar(1.0 - p.beta_2)?)?,
        None => g2.mul_scalar(1.0 - p.beta_2)?,
    };
    let w = if p.weight_decay != 0.0 { w.mul_scalar(1.0 - p.learning_rate * p.weight_decay)? } else { w.clone() };
    let step = m.div(&v.sqrt()?.add_scalar(p.epsilon)?)?.mul_scalar(lr_t)?;
    Ok((w.sub(&step)?, m, v))
}

fn same(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "{what}");
}

#[test]
fn fused_updates_equal_the_tensor_op_formulas() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(3);
    for dtype in [DType::F32, DType::F64] {
        // Longer than one parallel chunk, and not a multiple of it.
        let mut draw = || Tensor::rand_normal([5, 7001], 0.0, 1.0, dtype, &Device::Cpu, &mut rng);
        let (w, g, s1, s2) = (draw()?, draw()?, draw()?, draw()?.square()?);
        for (momentum, nesterov, weight_decay) in
            [(0.0, false, 0.0), (0.0, false, 0.1), (0.9, false, 0.0), (0.8, true, 0.01)]
        {
            let p = SgdStep { learning_rate: 0.05, momentum, nesterov, weight_decay };
            for vel in [None, Some(&s1)] {
                let (fw, fv) = sgd_update(&w, &g, vel, &p)?;
                let (rw, rv) = sgd_reference(&w, &g, vel, &p)?;
                same(&format!("sgd {dtype} {p:?}"), &fw, &rw);
                assert_eq!(fv.is_some(), rv.is_some());
                if let (Some(fv), Some(rv)) = (fv, rv) {
                    same(&format!("sgd velocity {dtype} {p:?}"), &fv, &rv);
                }
            }
        }
        for (step, weight_decay) in [(1, 0.0), (7, 0.0), (3, 0.004)] {
            let p = AdamStep { learning_rate: 0.01, step, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay };
            for state in [None, Some((&s1, &s2))] {
                let (m, v) = (state.map(|s| s.0), state.map(|s| s.1));
                let f = adam_update(&w, &g, m, v, &p)?;
                let r = adam_reference(&w, &g, m, v, &p)?;
                same(&format!("adam value {dtype} {p:?}"), &f.0, &r.0);
                same(&format!("adam m {dtype} {p:?}"), &f.1, &r.1);
                same(&format!("adam v {dtype} {p:?}"), &f.2, &r.2);
            }
        }
    }
    Ok(())
}

#[test]
fn updates_report_bad_operands() -> Result<()> {
    let w = Tensor::zeros([2, 3], DType::F32, &Device::Cpu)?;
    let sgd = SgdStep { learning_rate: 0.1, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let err = sgd_update(&w, &Tensor::zeros([3, 2], DType::F32, &Device::Cpu)?, None, &sgd).unwrap_err().to_string();
    assert!(err.contains("[3, 2]") && err.contains("[2, 3]"), "{err}");
    let err = sgd_update(&w, &Tensor::zeros([2, 3], DType::F64, &Device::Cpu)?, None, &sgd).unwrap_err().to_string();
    assert!(err.contains("f64") && err.contains("f32"), "{err}");
    let ints = Tensor::zeros([2], DType::I64, &Device::Cpu)?;
    let adam = AdamStep { learning_rate: 0.1, step: 1, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
    let err = adam_update(&ints, &ints, None, None, &adam).unwrap_err().to_string();
    assert!(err.contains("i64"), "{err}");
    let bad_m = Tensor::zeros([6], DType::F32, &Device::Cpu)?;
    let err = adam_update(&w, &w, Some(&bad_m), None, &adam).unwrap_err().to_string();
    assert!(err.contains("first moment") && err.contains("[6]"), "{err}");
    Ok(())
}

#[test]
fn many_updates_check_every_operand_before_computing() {
    use tapegrad_tensor::optim::{adam_update_many, sgd_update_many, AdamOperands, SgdOperands};
    let dev = Device::Cpu;
    let w = Tensor::ones([3], DType::F32, &dev).unwrap();
    let bad = Tensor::ones([4], DType::F32, &dev).unwrap();
    let step = AdamStep { learning_rate: 0.1, step: 1, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay: 0.0 };
    let ok = AdamOperands { param: &w, grad: &w, m: None, v: None };
    let err = adam_update_many(&[ok, AdamOperands { grad: &bad, ..ok }], &step).unwrap_err().to_string();
    assert!(err.contains("gradient") && err.contains("[4]") && err.contains("[3]"), "{err}");
    let err = adam_update_many(&[ok], &AdamStep { beta_1: 1.0, ..step }).unwrap_err().to_string();
    assert!(err.contains("beta_1") && err.contains('1'), "{err}");
    // The CPU path gives each parameter's own update, in order.
    let many = adam_update_many(&[ok, AdamOperands { grad: &w.mul_scalar(2.0).unwrap(), ..ok }], &step).unwrap();
    assert_eq!(many.len(), 2);
    let sgd = SgdStep { learning_rate: 0.5, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
    let out = sgd_update_many(&[SgdOperands { param: &w, grad: &w, velocity: None }], &sgd).unwrap();
    assert_eq!(out[0].0.to_vec::<f32>().unwrap(), vec![0.5; 3]);
    assert!(out[0].1.is_none());
}
